import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from pipeline.store import FeatureStore, StoreRepairWarning, config_hash, entry_file_name
from pipeline.store.files import FOREIGN_TEMPORARY_AGE_S, abandoned, temporary_path


def arrays(frames=5):
    return {
        "data": np.arange(frames * 3, dtype=np.float32).reshape(frames, 3),
        "timestamps": np.linspace(0, 1, frames),
        "mask": np.ones(frames, np.uint8),
    }


def test_write_read_roundtrip_with_attributes(tmp_path):
    store = FeatureStore(tmp_path / "fer")
    store.write("clip/1", arrays(), {"extractor": "fer", "config_hash": "abc", "weights_sha256": "00ff"})
    entry = store.read("clip/1")
    np.testing.assert_array_equal(entry.arrays["data"], arrays()["data"])
    assert entry.attrs["extractor"] == "fer" and entry.attrs["weights_sha256"] == "00ff"
    assert store.attrs("clip/1")["config_hash"] == "abc"
    assert store.attrs("other") is None


@pytest.mark.parametrize("compression", ["none", "lzf", "gzip"])
def test_image_stacks_are_stored_with_the_chosen_compression(tmp_path, compression):
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    crops[:, :8] = 0  # compressible half, so a filter shows in the file size
    store = FeatureStore(tmp_path / "faces")
    path = store.write("a", {**arrays(6), "crop_rgb": crops}, {}, image_compression=compression)
    with h5py.File(path) as handle:
        expected = None if compression == "none" else compression
        assert handle["crop_rgb"].compression == expected
        assert handle["data"].compression is None  # float arrays are never compressed
        if expected:
            assert handle["crop_rgb"].chunks == (1, 16, 16, 3)
    np.testing.assert_array_equal(store.read("a").arrays["crop_rgb"], crops)


def test_an_unknown_image_compression_is_refused_before_writing(tmp_path):
    store = FeatureStore(tmp_path / "faces")
    with pytest.raises(ValueError, match="image_compression must be one of"):
        store.write("a", arrays(), {}, image_compression="zstd")
    assert not store.path_of("a").exists()


def test_write_is_atomic_when_interrupted(tmp_path, monkeypatch):
    store = FeatureStore(tmp_path / "s")
    store.write("a", arrays(), {"config_hash": "v1"})

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(h5py.Group, "create_dataset", explode)
    with pytest.raises(KeyboardInterrupt):
        store.write("a", arrays(7), {"config_hash": "v2"})
    with pytest.raises(KeyboardInterrupt):
        store.write("b", arrays(), {"config_hash": "v2"})
    monkeypatch.undo()
    assert store.attrs("a")["config_hash"] == "v1"  # old entry intact
    assert store.read("a").arrays["data"].shape == (5, 3)
    assert not store.path_of("b").exists()
    assert list(store.entries_dir.glob("*.tmp")) == []


def test_index_lists_wanted_entries_and_drops_removed_clips(tmp_path):
    store = FeatureStore(tmp_path / "s")
    for clip in ["a", "b", "c"]:
        store.write(clip, arrays(4), {"config_hash": "h"})
    index = store.write_index(["a", "c", "never-extracted"])
    assert index["clip_id"].tolist() == ["a", "c"]
    assert index["num_frames"].tolist() == [4, 4]
    assert not store.path_of("b").exists()
    assert store.clip_ids() == ["a", "c"]


def test_entry_file_names_are_safe_and_distinct():
    assert entry_file_name("abc_1") == "abc_1.h5"
    assert "/" not in entry_file_name("Actor_01/clip")
    assert entry_file_name("a/b") != entry_file_name("a_b")


def test_config_hash_is_order_independent():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def _set_mtime(path, moment_ns):
    os.utime(path, ns=(moment_ns, moment_ns))


def test_an_incremental_index_opens_only_entries_written_since_the_last_one(tmp_path):
    store = FeatureStore(tmp_path / "s")
    for clip in ["a", "b"]:
        store.write(clip, arrays(4), {"config_hash": "h"})
    store.write_index(["a", "b"])
    indexed_at = store.index_path.stat().st_mtime_ns
    # An entry not written since the index keeps its row without being opened: this
    # corrupted file (dated before the index) would raise if it were read.
    store.path_of("a").write_bytes(b"not hdf5")
    _set_mtime(store.path_of("a"), indexed_at - 10**9)
    store.write("b", arrays(6), {"config_hash": "h2"})
    store.write("c", arrays(2), {"config_hash": "h2"})
    for clip in ["b", "c"]:
        _set_mtime(store.path_of(clip), indexed_at + 10**9)
    index = store.write_index(["a", "b", "c"])
    assert index.set_index("clip_id")["num_frames"].to_dict() == {"a": 4, "b": 6, "c": 2}
    assert index.set_index("clip_id")["config_hash"].to_dict() == {"a": "h", "b": "h2", "c": "h2"}


def test_entry_rows_trust_the_index_only_for_entries_not_written_since(tmp_path):
    store = FeatureStore(tmp_path / "s")
    for clip in ["a", "b", "r"]:
        store.write(clip, arrays(4), {"config_hash": "h"})
    store.write_index(["a", "b", "r"])
    indexed_at = store.index_path.stat().st_mtime_ns
    store.path_of("a").write_bytes(b"not hdf5")  # indexed with "h" and older than the index: not opened
    _set_mtime(store.path_of("a"), indexed_at - 10**9)
    store.write("r", arrays(4), {"config_hash": "other"})  # rewritten by a run that stopped before indexing
    store.write("c", arrays(2), {"config_hash": "h"})  # written, never indexed
    store.write("d", arrays(2), {"config_hash": "old"})
    for clip in ["r", "c", "d"]:
        _set_mtime(store.path_of(clip), indexed_at + 10**9)
    store.path_of("b").unlink()  # indexed, but the file is gone
    rows = store.entry_rows(["a", "b", "c", "d", "e", "r"])
    assert {clip: row["config_hash"] for clip, row in rows.items()} == {"a": "h", "c": "h", "d": "old", "r": "other"}


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_write_index_removes_only_temporary_files_whose_writer_is_gone(tmp_path):
    store = FeatureStore(tmp_path / "s")
    store.write("a", arrays(), {})
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())
    live = store.entries_dir / f".b.h5.{os.getpid()}@{host}.aaaa.tmp"  # another writer, still at work
    dead = store.entries_dir / f".c.h5.{_dead_pid()}@{host}.bbbb.tmp"  # its writer was killed
    foreign_recent = store.entries_dir / f".d.h5.123@otherhost.cccc.tmp"  # another machine, still changing
    foreign_old = store.entries_dir / f".e.h5.123@otherhost.dddd.tmp"
    unnamed_old = store.entries_dir / ".f.h5.0123abcd.tmp"  # an older version's name: age only
    for path in (live, dead, foreign_recent, foreign_old, unnamed_old):
        path.write_bytes(b"partial")
    for path in (foreign_old, unnamed_old):
        stale = time.time() - 2 * FOREIGN_TEMPORARY_AGE_S
        os.utime(path, (stale, stale))
    store.write_index(["a", "b", "c", "d", "e", "f"])
    assert sorted(p.name for p in store.entries_dir.glob(".*.tmp")) == sorted([live.name, foreign_recent.name])
    assert store.clip_ids() == ["a"]


def test_a_temporary_name_says_which_process_writes_it(tmp_path):
    path = temporary_path(tmp_path / "a.h5")
    assert path.name.startswith(f".a.h5.{os.getpid()}@") and path.name.endswith(".tmp")
    assert not abandoned(path)


def test_an_unreadable_index_is_rebuilt_from_the_entries_with_a_warning(tmp_path):
    store = FeatureStore(tmp_path / "s")
    for clip in ["a", "b"]:
        store.write(clip, arrays(3), {"key": f"k-{clip}", "note": "no face" if clip == "b" else ""})
    store.write_index(["a", "b"])
    store.index_path.write_bytes(store.index_path.read_bytes()[:40])  # truncated
    with pytest.warns(StoreRepairWarning, match="index.parquet: cannot be read"):
        assert store.clip_ids() == ["a", "b"]
    with pytest.warns(StoreRepairWarning):
        index = store.write_index(["a", "b"])
    assert index.set_index("clip_id")["key"].to_dict() == {"a": "k-a", "b": "k-b"}
    assert pd.read_parquet(store.index_path)["clip_id"].tolist() == ["a", "b"]  # readable again


def test_an_unreadable_failures_file_is_rebuilt_from_the_entries_notes(tmp_path):
    store = FeatureStore(tmp_path / "s")
    store.write("a", arrays(3), {"stage": "faces", "note": "a.mp4: no face detected in any of 3 sampled frames"})
    store.write("b", arrays(3), {"stage": "faces", "note": ""})
    store.write_index(["a", "b"])
    store.failures_path.write_bytes(b"")  # what a kill between the index and failures writes left
    with pytest.warns(StoreRepairWarning, match="failures.csv: cannot be read"):
        failures = store.failures()
    assert failures[["clip_id", "stage", "reason"]].to_dict("records") == [
        {"clip_id": "a", "stage": "faces", "reason": "a.mp4: no face detected in any of 3 sampled frames"}
    ]


def test_an_interrupted_index_write_keeps_the_previous_index(tmp_path, monkeypatch):
    store = FeatureStore(tmp_path / "s")
    store.write("a", arrays(), {})
    store.write_index(["a"])
    store.write("b", arrays(), {})

    def die_half_way(table, path, *args, **kwargs):
        Path(path).write_bytes(b"PAR1 half")
        raise KeyboardInterrupt

    monkeypatch.setattr("pyarrow.parquet.write_table", die_half_way)
    with pytest.raises(KeyboardInterrupt):
        store.write_index(["a", "b"])
    monkeypatch.undo()
    assert store.clip_ids() == ["a"]
    assert list(store.root.glob(".*.tmp")) == []


def test_an_unchanged_index_is_not_rewritten(tmp_path):
    store = FeatureStore(tmp_path / "s")
    store.write("a", arrays(), {"key": "k"})
    store.write_index(["a"])
    written = store.index_path.stat().st_mtime_ns
    time.sleep(0.01)
    store.write_index(["a"])
    assert store.index_path.stat().st_mtime_ns == written
