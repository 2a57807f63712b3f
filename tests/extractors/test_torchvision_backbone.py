"""torchvision backbones load user checkpoints (never downloading) and compute the
torchvision model's penultimate features."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from pipeline.extractors import EXTRACTORS
from pipeline.extractors.checkpoints import read_state_dict
from pipeline.extractors.mini_xception import file_sha256
from pipeline.extractors.torchvision_backbone import IMAGENET_MEAN, IMAGENET_STD, build_backbone
from pipeline.store import Entry

Backbone = EXTRACTORS.get("torchvision_backbone")
INPUT_SIZE = 64  # small input keeps the test fast; the architectures accept it


@pytest.fixture(scope="module")
def resnet50() -> torchvision.models.ResNet:
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None, num_classes=8631)  # a VGGFace2-sized classifier
    # Random but non-trivial BN statistics, so a BN left at its defaults would show.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _entry(count: int = 4, mask=(1, 0, 1, 1)) -> Entry:
    rgb = np.random.default_rng(0).integers(0, 256, size=(count, 112, 112, 3), dtype=np.uint8)
    return Entry("clip", {"crop_rgb": rgb, "mask": np.array(mask, np.uint8), "timestamps": np.arange(count) * 0.2}, {})


def _reference_features(model: torchvision.models.ResNet, rgb: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255.0
    x = torch.nn.functional.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    trunk = torch.nn.Sequential(*list(model.children())[:-1])  # everything up to the classifier
    with torch.no_grad():
        return trunk(x).flatten(1).numpy()


def test_resnet50_from_wrapped_dataparallel_checkpoint_matches_torchvision(resnet50, tmp_path: Path) -> None:
    checkpoint = tmp_path / "vggface2_resnet50.pth"
    wrapped = {"module." + key: value for key, value in resnet50.state_dict().items()}
    torch.save({"state_dict": wrapped, "epoch": 3}, checkpoint)
    extractor = Backbone(Backbone.Config(arch="resnet50", checkpoint=str(checkpoint), input_size=INPUT_SIZE), batch_size=2)
    entry = _entry()

    features = extractor.extract(entry)

    assert features.data.shape == (4, 2048)
    visible = entry.mask.astype(bool)
    np.testing.assert_allclose(features.data[visible], _reference_features(resnet50, entry.arrays["crop_rgb"][visible]), rtol=1e-4, atol=1e-4)
    assert not features.data[~visible].any()
    np.testing.assert_array_equal(features.mask, entry.mask)
    assert extractor.weights_sha256 == file_sha256(checkpoint)
    assert str(checkpoint) in extractor.weights_origin


def test_standard_file_in_torch_hub_cache_is_found(resnet50, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    cached.parent.mkdir(parents=True)
    state = {k: v for k, v in resnet50.state_dict().items() if not k.startswith("fc.")}
    torch.save(state, cached)  # a plain state_dict, as torchvision saves it (classifier left out here)

    extractor = Backbone(Backbone.Config(arch="resnet50", input_size=INPUT_SIZE))

    assert extractor.checkpoint == cached
    assert "IMAGENET1K_V2" in extractor.weights_origin
    entry = _entry(2, (1, 1))
    np.testing.assert_allclose(extractor.extract(entry).data, _reference_features(resnet50, entry.arrays["crop_rgb"]), rtol=1e-4, atol=1e-4)


def test_missing_checkpoint_says_where_to_put_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    with pytest.raises(FileNotFoundError, match="never downloads") as error:
        Backbone(Backbone.Config(arch="vgg16"))
    assert str(expected) in str(error.value) and "options.checkpoint" in str(error.value)
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        Backbone(Backbone.Config(arch="resnet50", checkpoint=str(tmp_path / "nowhere.pth")))


def test_checkpoint_of_another_architecture_is_rejected(tmp_path: Path) -> None:
    checkpoint = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), checkpoint)
    with pytest.raises(ValueError, match="wrong shape"):
        Backbone(Backbone.Config(arch="resnet50", checkpoint=str(checkpoint)))


def test_read_state_dict_unwraps_model_key(tmp_path: Path) -> None:
    path = tmp_path / "wrapped.pth"
    torch.save({"model": {"module.weight": torch.ones(2)}, "optimizer": {}}, path)
    assert list(read_state_dict(path)) == ["weight"]


def test_vgg16_features_are_fc7() -> None:
    torch.manual_seed(0)
    model, dim = build_backbone("vgg16")
    model.eval()
    x = torch.randn(1, 3, INPUT_SIZE, INPUT_SIZE)
    with torch.no_grad():
        fc7 = model.classifier[:6](torch.flatten(model.avgpool(model.features(x)), 1))
        assert dim == 4096
        torch.testing.assert_close(model(x), fc7)


def test_input_keys_follow_the_crop_option() -> None:
    assert Backbone.input_keys_for({}) == ("crop_rgb", "mask", "timestamps")
    assert Backbone.input_keys_for({"crop": "crop_rgb_224"})[0] == "crop_rgb_224"
