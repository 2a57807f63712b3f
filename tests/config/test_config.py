from pathlib import Path

import pytest
import yaml

from pipeline.config import ParamsError, load_params

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path, mutate):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    mutate(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_repository_params_load_into_typed_objects():
    params = load_params(REPO / "params.yaml")
    assert params.fusion in ("concat", "fbp")
    assert params.extractors["fer"].type == "fer_mini_xception"
    assert params.branches["face"].head.type == "attention"
    assert isinstance(params.train.lr, float)
    assert params.demo.identities >= 4


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda p: p["train"].update(lr="fast"), r"train\.lr: expected float, got 'fast'"),
        (lambda p: p["train"].update(epochs=True), r"train\.epochs: expected int"),
        (lambda p: p["faces"].update(fsp=5), r"faces: unknown key\(s\) \['fsp'\]"),
        (lambda p: p.update(fusoin="fbp"), r"unknown key\(s\) \['fusoin'\]"),
        (lambda p: p.update(fusion="sum"), r"unknown fusion 'sum'; available: \[.*'concat'.*'fbp'"),
        (lambda p: p["faces"].update(detector="tiny"), r"faces\.detector: 'tiny' is not one of"),
        (lambda p: p["branches"]["face"].update(features="vggface"), r"branches\.face\.features: 'vggface' is not an extractor"),
        (lambda p: p["branches"]["face"]["head"]["options"].update(hiden=3), r"branches\.face\.head\.options: unknown key\(s\) \['hiden'\]"),
        (lambda p: p["extractors"]["logmel"]["options"].update(n_mels="64"), r"extractors\.logmel\.options\.n_mels: expected int"),
        (lambda p: p["extractors"]["logmel"].update(input="faces"), r"extractors\.logmel\.input: logmel reads 'audio'"),
        (lambda p: p["late_fusion"].update(members=["face", "lips"]), r"late_fusion\.members: 'lips'"),
        (lambda p: p["demo"].update(identities="six"), r"demo\.identities: expected int"),
        # An unknown name is reported at the key that holds it, not at its options.
        (lambda p: p["extractors"].update(bad={"type": "nosuch", "input": "faces"}),
         r"extractors\.bad\.type: unknown extractor 'nosuch'; available: \["),
        (lambda p: p["branches"]["face"]["head"].update(type="nosuch"), r"branches\.face\.head\.type: unknown head 'nosuch'"),
        (lambda p: p.update(fusion="nosuch"), r"params\.yaml: fusion: unknown fusion 'nosuch'"),
        (lambda p: p["data"].update(dataset="nosuch"), r"data\.dataset: unknown dataset 'nosuch'"),
        # The option blocks of fusions not in use are checked too.
        (lambda p: p["cross_modal"]["options"]["fbp"].update(factros=4), r"cross_modal\.options\.fbp: unknown key\(s\) \['factros'\]"),
        (lambda p: p["cross_modal"]["options"].update(fpb={}), r"cross_modal\.options\.fpb: unknown fusion 'fpb'"),
        (lambda p: p["data"].update(labels=["happy"]), r"data\.labels: a classification experiment needs at least two classes, got \['happy'\]"),
    ],
)
def test_bad_params_are_rejected_naming_the_key(tmp_path, mutate, message):
    with pytest.raises(ParamsError, match=message):
        load_params(write(tmp_path, mutate))


def test_the_continuous_task_needs_no_class_labels(tmp_path):
    params = load_params(write(tmp_path, lambda p: (p.update(task="continuous"), p["data"].update(labels=[]))))
    assert params.task == "continuous" and params.data.labels == []


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "params.yaml")
