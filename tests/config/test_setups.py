from pathlib import Path

import pytest
import yaml

from pipeline import setups
from pipeline.config import ParamsError, load_params

REPO = Path(__file__).resolve().parents[2]


def test_merge_patch_merges_mappings_replaces_values_and_removes_nulls():
    target = {"a": {"x": 1, "y": 2}, "b": [1, 2], "c": 3}
    patch = {"a": {"y": 20, "z": 30}, "b": [9], "c": None, "d": {"e": None, "f": 1}}
    assert setups.merge_patch(target, patch) == {"a": {"x": 1, "y": 20, "z": 30}, "b": [9], "d": {"f": 1}}
    assert target == {"a": {"x": 1, "y": 2}, "b": [1, 2], "c": 3}  # not modified in place


def test_a_component_with_a_type_replaces_the_old_one_whole():
    target = {"head": {"type": "attention", "options": {"hidden": 64}}}
    patch = {"head": {"type": "tcn", "options": {"levels": 3}}}
    assert setups.merge_patch(target, patch) == patch


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "setups").glob("*.yaml")))
def test_every_setup_validates_against_the_default_params(name, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    params = setups.patched_params(name, root=str(tmp_path))
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    loaded = load_params(path)
    assert loaded.data.root == str(tmp_path)
    # Every late-fusion member and fused branch exists after the patch.
    assert set(loaded.late_fusion.members) <= set(loaded.branches) | {"fusion"}


def test_a_setup_that_does_not_validate_leaves_params_untouched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "setups").mkdir()
    (tmp_path / "setups" / "broken.yaml").write_text("train: {epochs: many}\n")
    original = (REPO / "params.yaml").read_text()
    (tmp_path / "params.yaml").write_text(original)
    with pytest.raises(ParamsError, match="train.epochs"):
        setups.apply("broken")
    assert (tmp_path / "params.yaml").read_text() == original
    assert not list(tmp_path.glob(".params*"))


def test_the_speech_recipe_on_emodb_is_the_emodb_setup(monkeypatch):
    monkeypatch.chdir(REPO)
    emodb = setups.patched_params("emodb", root="/corpora/emodb")
    speech = setups.patched_params("speech", root="/corpora/emodb", dataset="emodb")
    assert speech == emodb
    assert emodb["data"]["labels"] == ["anger", "boredom", "disgust", "fear", "happiness", "neutral", "sadness"]
    assert emodb["train"]["speaker_standardization"] == "transductive"


def test_a_recipe_on_another_corpus_takes_its_adapters_defaults_and_plain_option_overrides(tmp_path, monkeypatch):
    from dvc.utils.hydra import apply_overrides

    monkeypatch.chdir(REPO)
    params = setups.patched_params("speech", root=str(tmp_path), dataset="ravdess")
    assert params["data"]["dataset"] == "ravdess" and params["data"]["folds"] == 5
    assert params["data"]["options"] == {"modalities": ["01"], "vocal_channels": ["01"]}
    assert len(params["data"]["labels"]) == 8 and params["branches"] == setups.patched_params("emodb")["branches"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    # What `dvc exp run -S 'data.options.modalities=[03]'` does to params.yaml, with no '+'.
    apply_overrides(str(path), ["data.options.modalities=[03]"])
    assert load_params(path).data.options == {"modalities": ["03"], "vocal_channels": ["01"]}
    # Another setup's options do not leak into the next adapter's block.
    monkeypatch.setattr(setups, "PARAMS", path)
    assert setups.patched_params(None, root=str(tmp_path), dataset="emodb")["data"]["options"] == {}


def test_a_dataset_without_a_root_or_labels_is_refused(monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit, match="--root"):
        setups.patched_params("speech", dataset="ravdess")
    with pytest.raises(SystemExit, match="--labels"):
        setups.patched_params(None, root="/x", dataset="csv")
    assert setups.patched_params(None, root="/x", dataset="csv", labels=["a", "b"])["data"]["labels"] == ["a", "b"]
