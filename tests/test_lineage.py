"""Lineage keys: an entry is reused only while everything it was made from (its component's
config and version, its media file or input entry) is unchanged, and a stage says why it
redoes what it redoes. The chain runs as the stages run it (extraction.extract_*), on a few
small generated clips."""
from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skimage.data

from pipeline.config import AudioParams, ExtractorParams, FacesParams
from pipeline.extraction import extract_audio, extract_faces, extract_features
from pipeline.extractors import EXTRACTORS
from pipeline.store import FeatureStore
from pipeline.store.lineage import CONFIG, INPUT, MEDIA, VERSION, FileHashes, Lineage, stale_reasons

REPO = Path(__file__).resolve().parents[1]
FACES = FacesParams(workers=1)
FER = ExtractorParams(type="fer_mini_xception", input="faces", device="cpu", batch_size=16)
LOGMEL = ExtractorParams(type="logmel", input="audio", options={"n_mels": 32})
SPECTROGRAM = ExtractorParams(type="spectrogram", input="audio")


def face_frame(i: int) -> np.ndarray:
    image = skimage.data.astronaut()
    return np.ascontiguousarray(image[20 + i % 5 : 276 + i % 5, 100:356])


def manifest(paths: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({
        "clip_id": list(paths), "path": list(paths.values()), "audio_path": "", "duration_s": 0.6,
        "has_video": True, "has_audio": True,
    })


@pytest.fixture
def clips(clip_factory):
    """Three 0.6 s clips with a face and a tone, and one more to swap in under another's name."""
    paths = {name: str(clip_factory(f"{name}.mp4", seconds=0.6, size=256, frame=lambda i, k=k: face_frame(i + k)))
             for k, name in enumerate(["a", "b", "c"])}
    other = clip_factory("other.mp4", seconds=0.6, size=256, frame=lambda i: np.flipud(face_frame(i)))
    return paths, str(other)


def made(store: FeatureStore) -> dict[str, str]:
    index = store.index()
    return dict(zip(index["clip_id"], index["made_because"]))


def assert_same_stores(left: FeatureStore, right: FeatureStore) -> None:
    assert left.clip_ids() == right.clip_ids()
    for clip_id in left.clip_ids():
        a, b = left.read(clip_id), right.read(clip_id)
        assert sorted(a.arrays) == sorted(b.arrays)
        for key in a.arrays:
            np.testing.assert_array_equal(a.arrays[key], b.arrays[key], err_msg=f"{clip_id} {key}")
        assert a.attrs["key"] == b.attrs["key"]


def test_a_faces_config_change_re_extracts_every_derived_entry(tmp_path, clips, capsys):
    # The scenario: faces.fps 5 -> 10. Every fer entry was made from a faces entry that
    # is now another one, so fer redoes all of them and equals a clean run at fps 10.
    paths, _ = clips
    table = manifest({name: paths[name] for name in ("a", "b")})
    root = tmp_path / "features"
    extract_faces(FACES, table, root / "faces")
    extract_features("fer", FER, table, root)
    assert FeatureStore(root / "fer").read("a").arrays["data"].shape[0] == 3
    capsys.readouterr()

    faster = replace(FACES, fps=10.0)
    redone = extract_faces(faster, table, root / "faces").results
    assert sorted(r.clip_id for r in redone) == ["a", "b"]
    redone = extract_features("fer", FER, table, root).results
    output = capsys.readouterr().out
    assert sorted(r.clip_id for r in redone) == ["a", "b"]
    assert "faces: 2 of 2 clips to process: 0 new, 2 stale (config 2)" in output
    assert "extract@fer: 2 of 2 clips to process: 0 new, 2 stale (input entry 2)" in output
    assert set(made(FeatureStore(root / "faces")).values()) == {CONFIG}
    assert set(made(FeatureStore(root / "fer")).values()) == {INPUT}

    clean = tmp_path / "clean"
    extract_faces(faster, table, clean / "faces")
    extract_features("fer", FER, table, clean)
    assert FeatureStore(root / "fer").read("a").arrays["data"].shape[0] == 6
    assert_same_stores(FeatureStore(root / "faces"), FeatureStore(clean / "faces"))
    assert_same_stores(FeatureStore(root / "fer"), FeatureStore(clean / "fer"))

    # Nothing changed: nothing is redone, and the stage says so; in a fresh interpreter the
    # keys come from the extractor class alone (weights located and hashed, not loaded).
    assert extract_features("fer", FER, table, root).results == []
    assert "extract@fer: 0 of 2 clips to process: 0 new, 0 stale; 2 up to date" in capsys.readouterr().out
    table.to_parquet(tmp_path / "clips.parquet")
    script = f"""
import sys
import pandas as pd
from pipeline.config import ExtractorParams
from pipeline.extraction import extract_features
spec = ExtractorParams(type="fer_mini_xception", input="faces", device="cpu", batch_size=16)
outcome = extract_features("fer", spec, pd.read_parquet({str(tmp_path / 'clips.parquet')!r}), {str(root)!r})
assert outcome.results == [], outcome.results
heavy = [name for name in ("torch", "torchvision", "mediapipe", "librosa", "opensmile") if name in sys.modules]
assert not heavy, heavy
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stdout + result.stderr


def test_a_replaced_video_re_extracts_that_clip_and_what_derives_from_it_only(tmp_path, clips, capsys):
    paths, other = clips
    table = manifest(paths)
    root = tmp_path / "features"
    extract_faces(FACES, table, root / "faces")
    extract_audio(AudioParams(workers=1), table, root / "audio")
    extract_features("fer", FER, table, root)
    extract_features("logmel", LOGMEL, table, root)
    before = {name: {c: FeatureStore(root / name).attrs(c)["key"] for c in "abc"} for name in ("faces", "audio", "fer", "logmel")}

    shutil.copyfile(other, paths["b"])  # another video under b's name
    capsys.readouterr()
    for name, run in [("faces", lambda: extract_faces(FACES, table, root / "faces")),
                      ("audio", lambda: extract_audio(AudioParams(workers=1), table, root / "audio")),
                      ("fer", lambda: extract_features("fer", FER, table, root)),
                      ("logmel", lambda: extract_features("logmel", LOGMEL, table, root))]:
        assert [r.clip_id for r in run().results] == ["b"], name
        store = FeatureStore(root / name)
        assert made(store)["b"] == (MEDIA if name in ("faces", "audio") else INPUT)
        assert {c: store.attrs(c)["key"] for c in "ac"} == {c: before[name][c] for c in "ac"}
        assert store.attrs("b")["key"] != before[name]["b"]
    output = capsys.readouterr().out
    assert "faces: 1 of 3 clips to process: 0 new, 1 stale (media file 1)" in output
    assert "extract@fer: 1 of 3 clips to process: 0 new, 1 stale (input entry 1)" in output


def test_bumping_an_extractor_version_re_extracts_that_store_only(tmp_path, clips, monkeypatch, capsys):
    paths, _ = clips
    table = manifest(paths)
    root = tmp_path / "features"
    extract_audio(AudioParams(workers=1), table, root / "audio")
    extract_features("logmel", LOGMEL, table, root)
    extract_features("spectrogram", SPECTROGRAM, table, root)

    monkeypatch.setattr(EXTRACTORS.get("logmel"), "version", EXTRACTORS.get("logmel").version + 1)
    capsys.readouterr()
    assert extract_audio(AudioParams(workers=1), table, root / "audio").results == []
    assert sorted(r.clip_id for r in extract_features("logmel", LOGMEL, table, root).results) == ["a", "b", "c"]
    assert extract_features("spectrogram", SPECTROGRAM, table, root).results == []
    assert "extract@logmel: 3 of 3 clips to process: 0 new, 3 stale (version 3)" in capsys.readouterr().out
    assert set(made(FeatureStore(root / "logmel")).values()) == {VERSION}
    assert FeatureStore(root / "logmel").attrs("a")["version"] == EXTRACTORS.get("logmel").version


def test_a_stale_entry_names_every_reason_that_applies():
    stored = Lineage("config-1", 1, "entry", "input-1").attrs()
    assert stale_reasons(stored, Lineage("config-1", 1, "entry", "input-1")) == []
    assert stale_reasons(stored, Lineage("config-2", 1, "entry", "input-1")) == [CONFIG]
    assert stale_reasons(stored, Lineage("config-1", 2, "entry", "input-2")) == [VERSION, INPUT]
    assert stale_reasons(Lineage("c", 1, "media", "sha").attrs(), Lineage("c", 1, "media", "other")) == [MEDIA]
    # An entry made before keys were recorded: its code and its input are unknown.
    assert stale_reasons({"config_hash": "config-1"}, Lineage("config-1", 1, "entry", "input-1")) == [VERSION, INPUT]


def test_media_hashes_are_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    media = tmp_path / "clip.mp4"
    media.write_bytes(b"one")
    cache = tmp_path / "hashes.json"
    hashes = FileHashes(cache)
    first = hashes.sha256(media)
    hashes.save()

    def read_again(path):
        raise AssertionError(f"{path} was read again")

    monkeypatch.setattr("pipeline.store.lineage.file_sha256", read_again)
    assert FileHashes(cache).sha256(media) == first  # answered by the cache
    monkeypatch.undo()
    media.write_bytes(b"two")  # same name and size, new content
    assert FileHashes(cache).sha256(media) != first
