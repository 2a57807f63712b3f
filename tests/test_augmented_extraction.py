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
