"""What a head, fusion, task or late-fusion method can do is declared, and a combination that
cannot work stops params validation naming the keys involved, before any training."""
from pathlib import Path

import pytest
import yaml

from pipeline.config import ParamsError, load_params
from pipeline.fusion.cross_modal import FUSIONS
from pipeline.heads import HEADS, capabilities

REPO = Path(__file__).resolve().parents[2]
FINETUNE = {"type": "finetune_mini_xception", "options": {}}


def params_file(tmp_path, mutate):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["extractors"]["crops"] = {"type": "gray_crops", "input": "faces"}
    mutate(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def head(branch, spec, features=None):
    def mutate(params):
        params["branches"][branch]["head"] = spec
        if features:
            params["branches"][branch]["features"] = features
    return mutate


def combined(*mutations):
    def mutate(params):
        for m in mutations:
            m(params)
    return mutate


@pytest.mark.parametrize(
    "mutate, keys",
    [
        # A classical head has neither a per-step output nor a place in a torch model.
        (combined(lambda p: p.update(task="continuous"), head("voice", {"type": "svm"})), ["branches.voice.head.type", "task"]),
        (combined(lambda p: p.update(task="continuous"), head("face", FINETUNE, "crops")), ["branches.face.head.type", "task", "per-step"]),
        # Pixels for a fine-tuned CNN must reach it unstandardised.
        (combined(lambda p: p["train"].update(speaker_standardization=True), head("face", FINETUNE, "crops")),
         ["branches.face.head.type", "train.speaker_standardization"]),
        (combined(lambda p: p["train"].update(speaker_standardization="train-speakers"), head("face", FINETUNE, "crops")),
         ["branches.face.head.type", "train.speaker_standardization", "train-speakers"]),
        (combined(lambda p: p["train"].update(feature_normalization="utterance"), head("face", FINETUNE, "crops")),
         ["branches.face.head.type", "train.feature_normalization"]),
        # A sequence fusion reads per-step outputs: a pooled head has none, nor does the fine-tuned CNN.
        (combined(lambda p: p.update(fusion="cross_attention"), head("prosody", {"type": "svm"})), ["cross_modal.branches", "prosody", "svm"]),
        (combined(lambda p: p.update(fusion="leader_follower"), head("face", FINETUNE, "crops")), ["fusion", "branches.face.head.type"]),
        # Stacking needs class probabilities.
        (combined(lambda p: p.update(task="continuous"), lambda p: p["late_fusion"].update(method="stacking")), ["late_fusion.method", "task"]),
        (lambda p: p.update(task="regression"), ["task", "unknown task 'regression'", "classification"]),
        (lambda p: p["late_fusion"].update(method="vote"), ["late_fusion.method", "unknown late-fusion method 'vote'", "stacking"]),
    ],
)
def test_invalid_combinations_fail_in_validation_naming_the_keys(tmp_path, mutate, keys):
    with pytest.raises(ParamsError) as error:
        load_params(params_file(tmp_path, mutate))
    for key in keys:
        assert key in str(error.value)


def test_the_same_heads_are_accepted_where_they_fit(tmp_path):
    fine = combined(head("face", FINETUNE, "crops"), head("voice", {"type": "svm"}), lambda p: p.update(fusion="concat"))
    params = load_params(params_file(tmp_path, fine))
    assert params.branches["face"].head.type == "finetune_mini_xception"


def test_task_and_method_checks_run_where_the_task_is_used(tmp_path):
    """late_fusion and evaluate load params without the component checks and check the task
    and method themselves; the extraction stages check neither (no head code in their deps)."""
    from pipeline.config import validate_task_choices

    path = params_file(tmp_path, combined(lambda p: p.update(task="continuous"), lambda p: p["late_fusion"].update(method="stacking")))
    with pytest.raises(ParamsError, match="late_fusion.method"):
        load_params(path)
    params = load_params(path, check_components=False)
    with pytest.raises(ParamsError, match=f"{path}: late_fusion.method"):
        validate_task_choices(params, path)


def test_declared_capabilities_match_what_the_classes_do():
    import torch

    from pipeline.heads.neural import TemporalHead

    for name in HEADS.names():
        declared, cls = capabilities(name), HEADS.get(name)
        assert declared.neural == issubclass(cls, torch.nn.Module), name
        if declared.neural:  # a per-step output is an encode() of its own
            assert (cls.encode is not TemporalHead.encode) == declared.per_step, name
    assert not capabilities("svm").per_step and not capabilities("finetune_mini_xception").per_step
    assert capabilities("finetune_mini_xception").raw_input
    assert [n for n in FUSIONS.names() if FUSIONS.get(n).sequential] == ["cross_attention", "leader_follower"]
