"""Sharded HDF5 feature stores.

A store is a directory with one HDF5 file per clip under ``entries/`` plus ``index.parquet``.
One file per clip makes every write independent (any worker, any machine) and lets a
re-run extract only the clips whose entry is missing or was made with another config.
Each file is written under a temporary name and renamed, so an interrupted stage never
leaves a half-written entry behind. ``failures.csv`` keeps the clips that could not be
processed, with the reason.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import h5py
import numpy as np
import pandas as pd

INDEX_COLUMNS = ["clip_id", "file", "num_frames", "config_hash"]
# h5py filter of each image_compression setting.
IMAGE_COMPRESSIONS = {"none": None, "lzf": "lzf", "gzip": "gzip"}
FAILURE_COLUMNS = ["clip_id", "stage", "reason"]


def config_hash(config: Any) -> str:
    """Stable short hash of a JSON-serialisable config."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def entry_file_name(clip_id: str) -> str:
    """A file name for any clip id: safe characters kept, a hash added when some were replaced."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", clip_id)
    if safe != clip_id:
        safe = f"{safe}-{hashlib.sha1(clip_id.encode()).hexdigest()[:8]}"
    return f"{safe}.h5"


def written_before(path: Path, moment_ns: int) -> bool:
    """True if ``path`` exists and was last written strictly before ``moment_ns`` (an mtime).
    Strictly: on a filesystem with coarse timestamps an entry written in the same tick as the
    index is read again rather than trusted."""
    try:
        return path.stat().st_mtime_ns < moment_ns
    except FileNotFoundError:
        return False


@dataclass
class Entry:
    clip_id: str
    arrays: dict[str, np.ndarray]
    attrs: dict[str, Any]

    @property
    def timestamps(self) -> np.ndarray:
        return self.arrays["timestamps"]

    @property
    def mask(self) -> np.ndarray:
        return self.arrays["mask"]


class FeatureStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.entries_dir = self.root / "entries"
        self.index_path = self.root / "index.parquet"
        self.failures_path = self.root / "failures.csv"

    # -- writing -------------------------------------------------------------------------
    def write(
        self, clip_id: str, arrays: dict[str, np.ndarray], attrs: dict[str, Any], image_compression: str = "none"
    ) -> Path:
        """Atomically write one clip's entry; safe to call from several processes at once.
        ``image_compression`` (none, lzf, gzip) applies to uint8 image stacks."""
        if image_compression not in IMAGE_COMPRESSIONS:
            raise ValueError(f"image_compression must be one of {sorted(IMAGE_COMPRESSIONS)}, got {image_compression!r}")
        self.entries_dir.mkdir(parents=True, exist_ok=True)
        final = self.entries_dir / entry_file_name(clip_id)
        temporary = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
        try:
            with h5py.File(temporary, "w") as handle:
                handle.attrs["clip_id"] = clip_id
                for key, value in attrs.items():
                    handle.attrs[key] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
                for key, array in arrays.items():
                    array = np.asarray(array)
                    is_image_stack = array.dtype == np.uint8 and array.ndim >= 3 and array.size > 0
                    compression = IMAGE_COMPRESSIONS[image_compression] if is_image_stack else None
                    # Compressed image stacks are chunked per frame, so reading a few frames
                    # decompresses only those.
                    handle.create_dataset(
                        key,
                        data=array,
                        compression=compression,
                        chunks=(1, *array.shape[1:]) if compression else None,
                    )
            os.replace(temporary, final)
        finally:
            temporary.unlink(missing_ok=True)
        return final

    def write_index(self, clip_ids: Iterable[str]) -> pd.DataFrame:
        """Index the entries of ``clip_ids`` that exist; entries of other clips are deleted,
        so clips removed from the dataset also leave the store. An entry not written since
        the previous index keeps its row, so an incremental run opens only the new entries."""
        wanted = {entry_file_name(clip_id): clip_id for clip_id in clip_ids}
        previous, indexed_at = self._previous_index()
        rows = []
        for path in sorted(self.entries_dir.glob("*.h5")) if self.entries_dir.exists() else []:
            clip_id = wanted.get(path.name)
            if clip_id is None:
                path.unlink()
                continue
            row = previous.get(clip_id)
            if row is None or row[1] != path.name or not written_before(path, indexed_at):
                with h5py.File(path, "r") as handle:
                    num_frames = int(handle["timestamps"].shape[0]) if "timestamps" in handle else 0
                    row = (clip_id, path.name, num_frames, str(handle.attrs.get("config_hash", "")))
            rows.append(row)
        for stale in self.entries_dir.glob(".*.tmp") if self.entries_dir.exists() else []:
            stale.unlink()
        index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
        self.root.mkdir(parents=True, exist_ok=True)
        index.to_parquet(self.index_path, index=False)
        return index

    def up_to_date(self, clip_ids: Iterable[str], digest: str) -> set[str]:
        """The clips whose entry was made with config ``digest``. The index answers for the
        entries not written since it was; only the others (new clips, or entries written by a
        run that stopped before indexing) are opened, so a large store costs one table read."""
        previous, indexed_at = self._previous_index()
        current = set()
        for clip_id in clip_ids:
            path = self.path_of(clip_id)
            row = previous.get(clip_id)
            if row is not None and written_before(path, indexed_at):
                known = row[3]
            else:
                known = (self.attrs(clip_id) or {}).get("config_hash")
            if known == digest:
                current.add(clip_id)
        return current

    def _previous_index(self) -> tuple[dict[str, tuple], int]:
        """The index's rows by clip id, and when it was written (ns; 0 if there is none)."""
        if not self.index_path.exists():
            return {}, 0
        index = self.index()[INDEX_COLUMNS]
        return {row[0]: row for row in index.itertuples(index=False, name=None)}, self.index_path.stat().st_mtime_ns

    def write_failures(self, failures: list[dict[str, str]]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(failures, columns=FAILURE_COLUMNS).to_csv(self.failures_path, index=False)

    # -- reading -------------------------------------------------------------------------
    def index(self) -> pd.DataFrame:
        if not self.index_path.exists():
            raise FileNotFoundError(f"{self.index_path}: feature store index missing (run the stage that writes it)")
        return pd.read_parquet(self.index_path)

    def clip_ids(self) -> list[str]:
        return self.index()["clip_id"].tolist()

    def failures(self) -> pd.DataFrame:
        if not self.failures_path.exists():
            return pd.DataFrame(columns=FAILURE_COLUMNS)
        return pd.read_csv(self.failures_path, dtype=str, keep_default_na=False)

    def path_of(self, clip_id: str) -> Path:
        return self.entries_dir / entry_file_name(clip_id)

    def attrs(self, clip_id: str) -> dict[str, Any] | None:
        """Attributes of the clip's entry, None if there is none (cheap: no arrays read)."""
        path = self.path_of(clip_id)
        if not path.exists():
            return None
        try:
            with h5py.File(path, "r") as handle:
                return dict(handle.attrs)
        except OSError:
            return None

    def read(self, clip_id: str, keys: Iterable[str] | None = None) -> Entry:
        path = self.path_of(clip_id)
        try:
            with h5py.File(path, "r") as handle:
                names = list(handle.keys()) if keys is None else list(keys)
                missing = [name for name in names if name not in handle]
                if missing:
                    raise KeyError(f"{path}: entry has no dataset(s) {missing}")
                arrays = {name: handle[name][()] for name in names}
                attrs = dict(handle.attrs)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no entry for clip {clip_id!r} in {self.root}") from None
        return Entry(clip_id, arrays, attrs)
