"""The fine-tuned face branch: freezing schedule, gradients, learning rates, and agreement with
the frozen FER extractor while nothing is unfrozen."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import skimage.data
import torch

from pipeline.config import TrainParams
from pipeline.extractors import EXTRACTORS
from pipeline.faces import FaceAnalyzer
from pipeline.heads import HEADS
from pipeline.heads.finetune import FinetuneMiniXception
from pipeline.models import ModelSpec, branch_spec
from pipeline.store import Entry
from pipeline.tasks.classification import ClassificationTask
from pipeline.training import cross_validate, parameter_groups


def head(**options) -> FinetuneMiniXception:
    return HEADS.get("finetune_mini_xception")(4096, FinetuneMiniXception.Config(**options))


@pytest.fixture(scope="module")
def face_entry() -> Entry:
    """Real aligned gray crops: the astronaut drifting over 4 frames, the third frame masked."""
    image = skimage.data.astronaut()
    with FaceAnalyzer() as analyzer:
        crops = np.stack([analyzer.analyze(np.ascontiguousarray(image[20 + 3 * i : 276 + 3 * i, 100:356])).crop_gray for i in range(4)])
    mask = np.array([1, 1, 0, 1], np.uint8)
    crops[2] = 0
    return Entry("astronaut", {"crop_gray": crops, "mask": mask, "timestamps": np.arange(4) * 0.2}, {})


def extractor(name: str, **options):
    return EXTRACTORS.get(name)(EXTRACTORS.config(name, options, name), "cpu", 8)


def test_frozen_head_reproduces_the_fer_extractor(face_entry):
    frozen = extractor("fer_mini_xception").extract(face_entry)
    crops = extractor("gray_crops").extract(face_entry)
    assert crops.data.shape == (4, 4096) and crops.data.min() >= -1 and crops.data.max() <= 1
    model = head()
    model.on_epoch_start(0)
    model.train()  # training mode: frozen CNN still uses FER2013 BatchNorm statistics
    visible = face_entry.arrays["mask"].astype(bool)
    with torch.no_grad():
        features = model.frame_features(torch.from_numpy(crops.data[visible]))
    np.testing.assert_allclose(features.numpy(), frozen.data[visible], rtol=1e-5, atol=1e-5)
    assert (frozen.data[~visible] == 0).all() and (crops.data[~visible] == 0).all()


def test_schedule_unfreezes_from_the_top_and_gradients_reach_only_unfrozen_stages():
    model = head(trainable_blocks=2, unfreeze_from_epoch=2, unfreeze_every=2)
    x = torch.rand(2, 5, 4096) * 2 - 1
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False

    def grads_after_step(epoch: int) -> dict[str, bool]:
        model.on_epoch_start(epoch)
        model.train()
        model.zero_grad(set_to_none=True)
        model(x, mask).sum().backward()
        parts = {"block3": model.cnn.blocks[3], "classifier": model.cnn.classifier, "block2": model.cnn.blocks[2],
                 "block1": model.cnn.blocks[1], "stem": model.cnn.conv1}
        return {name: any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters()) for name, part in parts.items()}

    assert grads_after_step(0) == {"block3": False, "classifier": False, "block2": False, "block1": False, "stem": False}
    assert model.project[1].weight.grad is not None  # the head itself always trains
    assert grads_after_step(2) == {"block3": True, "classifier": True, "block2": False, "block1": False, "stem": False}
    assert grads_after_step(4) == {"block3": True, "classifier": True, "block2": True, "block1": False, "stem": False}
    assert grads_after_step(30) == {"block3": True, "classifier": True, "block2": True, "block1": False, "stem": False}
    # Frozen stages and (train_batchnorm off) all BatchNorm layers stay in eval mode.
    assert not model.cnn.blocks[1].training and not model.cnn.blocks[3].bn1.training
    assert model.cnn.blocks[3].sep1.training and model.project.training


def test_unfrozen_batchnorm_trains_only_when_asked():
    model = head(trainable_blocks=1, unfreeze_from_epoch=0, train_batchnorm=True)
    model.on_epoch_start(0)
    model.train()
    assert model.cnn.blocks[3].bn1.training and not model.cnn.blocks[2].bn1.training


def test_backbone_gets_its_own_learning_rate_and_the_model_skips_standardisation():
    spec = branch_spec("face", "finetune_mini_xception", {"backbone_lr_scale": 0.1}, 4096)
    model = ModelSpec([spec], outputs=3).build()
    groups = parameter_groups(model, 0.01)
    cnn = {id(p) for p in model.heads["face"].cnn.parameters()}
    assert [g["lr"] for g in groups] == [0.01, pytest.approx(0.001)]
    assert {id(p) for p in groups[1]["params"]} == cnn
    assert not cnn & {id(p) for p in groups[0]["params"]}
    # Standardisation statistics that would wreck the pixels have no effect on this head.
    model.standardize["face"].mean.fill_(5.0)
    model.standardize["face"].std.fill_(100.0)
    model.eval()
    x, mask = torch.rand(1, 3, 4096) * 2 - 1, torch.ones(1, 3, dtype=torch.bool)
    with torch.no_grad():
        logits = model({"face": (x, mask)})
        expected = model.classifier(model.heads["face"](x, mask))
    torch.testing.assert_close(logits, expected)


def test_rejects_other_inputs():
    with pytest.raises(ValueError, match="gray_crops"):
        HEADS.get("finetune_mini_xception")(135, FinetuneMiniXception.Config())


def test_cross_validation_runs_with_unfreezing_on_the_cpu(face_entry):
    crops = extractor("gray_crops").extract(face_entry)
    rng = np.random.default_rng(0)
    sequences, rows = {}, []
    for i in range(8):
        noisy = np.clip(crops.data + rng.normal(0, 0.05, crops.data.shape).astype(np.float32), -1, 1) * crops.mask[:, None]
        sequences[f"c{i}"] = (noisy.astype(np.float32), crops.mask.astype(bool))
        rows.append({"clip_id": f"c{i}", "label": "a" if i % 2 else "b", "fold": i % 2, "speaker": str(i % 2)})
    spec = branch_spec("face", "finetune_mini_xception", {"unfreeze_from_epoch": 1, "unfreeze_every": 1, "trainable_blocks": 2}, 4096)
    params = TrainParams(epochs=3, patience=5, batch_size=4, workers=1)
    result = cross_validate(ModelSpec([spec], 2), {"face": sequences}, pd.DataFrame(rows), ClassificationTask(ClassificationTask.Config(["a", "b"])), params)
    assert len(result.scores) == 8 and np.isfinite(result.scores[["p_a", "p_b"]].to_numpy()).all()
    assert len(result.fold_states) == 2 and any(k.startswith("heads.face.cnn.") for k in result.fold_states[0])
