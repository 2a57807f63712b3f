"""extract@<name> with waveform augmentations: one cached copy per clip and augmentation, in
stores of their own, each keyed by its extractor, its augmentation and its input entry."""
import numpy as np
import pandas as pd

from pipeline.config import ExtractorParams, from_dict
from pipeline.extraction import extract_features
from pipeline.store import FeatureStore, augmented_id, augmented_store

RATE = 16000
CLIPS = ["a", "b", "c"]


def audio_store(root):
    """Decoded audio entries of three tones (as the audio stage writes them)."""
    store = FeatureStore(root / "audio")
    for i, clip_id in enumerate(CLIPS):
        seconds = 0.5 + 0.25 * i
        samples = (0.2 * np.sin(2 * np.pi * (150 + 50 * i) * np.arange(int(seconds * RATE)) / RATE)).astype(np.float32)
        attrs = {"key": f"audio-key-{clip_id}", "sample_rate": RATE, "stage": "audio", "note": ""}
        store.write(clip_id, {"samples": samples, "timestamps": np.array([0.0, seconds]), "mask": np.ones(2, np.uint8)}, attrs)
    store.write_index(CLIPS)
    return pd.DataFrame({"clip_id": CLIPS, "path": [f"{c}.wav" for c in CLIPS]})


def spec(augmentations):
    return from_dict(ExtractorParams, {"type": "logmel", "input": "audio", "options": {"n_mels": 16}, "device": "cpu",
                                       "augmentations": augmentations}, "extractors.logmel")


SPEED = {"name": "speed0.8", "type": "speed", "factor": 0.8}
NOISE = {"name": "noise10", "type": "noise", "snr_db": 10}


def test_copies_are_extracted_once_into_their_own_stores_and_redone_only_when_their_augmentation_changes(tmp_path, capsys):
    clips = audio_store(tmp_path)
    extract_features("logmel", spec([SPEED, NOISE]), clips, tmp_path)
    main = FeatureStore(tmp_path / "logmel")
    assert main.clip_ids() == CLIPS and main.failures().empty  # no copy is a clip of the store
    speed, noise = augmented_store(main.root, "speed0.8"), augmented_store(main.root, "noise10")
    assert speed.clip_ids() == [augmented_id(c, "speed0.8") for c in CLIPS] == ["a~speed0.8", "b~speed0.8", "c~speed0.8"]
    original, slower = main.read("b"), speed.read("b~speed0.8")
    assert abs(len(slower.arrays["data"]) - len(original.arrays["data"]) / 0.8) <= 2  # 0.8 times as fast: 1.25 times as long
    assert not np.allclose(noise.read("b~noise10").arrays["data"], original.arrays["data"])
    keys = {name: store.keys() for name, store in (("main", main), ("speed", speed), ("noise", noise))}
    every = [key for by_clip in keys.values() for key in by_clip.values()]
    assert len(set(every)) == 9  # every copy has a key of its own
    assert all(speed.read(f"{c}~speed0.8").attrs["source_key"] == f"audio-key-{c}" for c in CLIPS)  # made from the clip's audio entry

    capsys.readouterr()
    extract_features("logmel", spec([SPEED, NOISE]), clips, tmp_path)
    out = capsys.readouterr().out
    assert "extract@logmel:speed0.8: 0 of 3 clips to process" in out and "extract@logmel:noise10: 0 of 3 clips to process" in out
    assert "extract@logmel: 0 of 3 clips to process" in out
    assert speed.keys() == keys["speed"]

    # A changed augmentation redoes its own copies only; a new one adds its copies; a removed one leaves.
    louder = {"name": "gain6", "type": "gain", "db": 6}
    extract_features("logmel", spec([{**SPEED, "factor": 1.2}, louder]), clips, tmp_path)
    out = capsys.readouterr().out
    assert "extract@logmel: 0 of 3 clips to process" in out
    assert "extract@logmel:speed0.8: 3 of 3 clips to process: 0 new, 3 stale (config 3)" in out
    assert "extract@logmel:gain6: 3 of 3 clips to process: 3 new" in out
    assert "removed the copies of augmentation 'noise10'" in out and not noise.root.exists()
    assert set(speed.keys().values()).isdisjoint(keys["speed"].values())
    assert main.keys() == keys["main"]


def test_a_prediction_run_makes_no_copies(tmp_path):
    clips = audio_store(tmp_path)
    extract_features("logmel", spec([SPEED]), clips, tmp_path, augment=False)
    assert FeatureStore(tmp_path / "logmel").clip_ids() == CLIPS
    assert not (tmp_path / "logmel" / "augmented").exists()


def speech_like_corpus(root, speakers=3, per_speaker=4):
    """Tones whose pitch is the class, decoded into an audio store, and their manifest."""
    store = FeatureStore(root / "audio")
    rows = []
    rng = np.random.default_rng(0)
    for speaker in range(speakers):
        for i in range(per_speaker):
            clip_id, label = f"s{speaker}_{i}", ["low", "high"][i % 2]
            t = np.arange(int(0.4 * RATE)) / RATE
            samples = (0.2 * np.sin(2 * np.pi * (200 if label == "low" else 900) * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
            store.write(clip_id, {"samples": samples, "timestamps": np.array([0.0, 0.4]), "mask": np.ones(2, np.uint8)},
                        {"key": f"k-{clip_id}", "sample_rate": RATE, "stage": "audio", "note": ""})
            rows.append({"clip_id": clip_id, "path": f"{clip_id}.wav", "label": label, "speaker": f"s{speaker}",
                         "fold": speaker if speaker < speakers - 1 else -1})
    manifest = pd.DataFrame(rows)
    store.write_index(manifest["clip_id"])
    return manifest


def test_a_branch_trains_on_its_copies_and_scores_exactly_the_manifests_clips(tmp_path):
    from pipeline.config import Params
    from pipeline.members import train_branch

    manifest = speech_like_corpus(tmp_path)
    raw = {
        "data": {"labels": ["low", "high"]},
        "extractors": {"logmel": {"type": "logmel", "input": "audio", "options": {"n_mels": 16}, "device": "cpu",
                                  "augmentations": [SPEED, NOISE]}},
        "branches": {"mel": {"features": "logmel", "head": {"type": "svm", "options": {"C": [0.01, 1.0]}}, "augment": ["speed0.8", "noise10"]}},
        "train": {"workers": 1},
    }
    params = from_dict(Params, raw, "")
    extract_features("logmel", params.extractors["logmel"], manifest, tmp_path)
    run = train_branch(params, "mel", features=tmp_path, manifest=manifest)
    scores = run.result.scores
    assert sorted(scores["clip_id"]) == sorted(manifest["clip_id"])  # held-out folds and the test split, never a copy
    assert run.missing.empty
    trained = (manifest["fold"] >= 0).sum()  # the test split's copies are not even read
    assert run.meta["augment"] == ["speed0.8", "noise10"] and run.meta["augmented_copies"] == 2 * trained == 16
    assert "16 augmented copies (speed0.8, noise10) for training" in run.message
    accuracy = (scores[["p_low", "p_high"]].to_numpy().argmax(1) == scores["label"].map(["low", "high"].index)).mean()
    assert accuracy == 1.0  # the pitch is the class: the copies (0.8x pitch, noise) do not blur it
