"""Sharded HDF5 feature stores.

A store is a directory with one HDF5 file per clip under ``entries/`` plus ``index.parquet``.
One file per clip makes every write independent (any worker, any machine) and lets a
re-run extract only the clips whose entry is missing or stale. Every entry records its
lineage (see :mod:`pipeline.store.lineage`): its key, what it was made from and why it was
(re)made, and its outcome note (e.g. "no face detected"), so the index, the failures table
and any re-run's report can be rebuilt from the entries alone.

Every file (entries, index, ``failures.csv``) is written under a temporary name and renamed
(:mod:`pipeline.store.files`), so a kill or a full disk never leaves a half-written one; an
index or failures file that cannot be read anyway (written by an older version, damaged by
hand) is rebuilt from the entries with a warning.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from pipeline.store.files import atomic_write, read_parquet, remove_abandoned, write_parquet, write_text_if_changed
from pipeline.store.lineage import config_hash  # noqa: F401  (re-exported: the store's hash of a config)

# Per entry: where it is, its length, its lineage (key ... made_because), which stage made it,
# its outcome note, the duration its media decoded to (faces and audio entries) and a JSON
# summary of per-clip figures (e.g. the faces detection report's).
INDEX_COLUMNS = [
    "clip_id", "file", "num_frames",
    "key", "config_hash", "version", "source_kind", "source_key", "made_because",
    "stage", "note", "decoded_s", "summary",
]
_LINEAGE_ATTRS = ("key", "config_hash", "version", "source_kind", "source_key", "made_because", "stage", "note")
# h5py filter of each image_compression setting.
IMAGE_COMPRESSIONS = {"none": None, "lzf": "lzf", "gzip": "gzip"}
FAILURE_COLUMNS = ["clip_id", "stage", "reason"]
# The store's own failures file adds the kind of each row and, for a clip whose processing
# failed (it has no entry), the lineage it failed with, so an unchanged clip is not retried.
OUTCOME_KINDS = ("known", "failed", "note", "partial")
STORE_FAILURE_COLUMNS = FAILURE_COLUMNS + ["outcome", "lineage"]


def failure_kind(reason: str) -> str:
    """What a failures row's reason says, without the clip's own path it starts with (e.g.
    "data/a.wav: no video stream" -> "no video stream") and with numbers as N, so that rows
    of one cause group together."""
    head, separator, rest = reason.partition(": ")
    if separator and ("/" in head or "." in head):
        reason = rest
    return re.sub(r"\d+(\.\d+)?", "N", reason)


def summarise_failures(failures: Iterable[dict[str, str]], examples: int = 3,
                       tag: Any = None) -> list[str]:
    """One line per cause (most frequent first): its count, the first clip's reason, and a few
    example clips, instead of one line per clip (an audio-only corpus has thousands of "no
    video stream" rows). ``tag(row)`` puts a word in front of a row's cause (e.g. kept / left out)."""
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in failures:
        prefix = tag(row) if tag is not None else ""
        groups.setdefault((prefix, failure_kind(row["reason"])), []).append(row)
    lines = []
    for (prefix, _), rows in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
        head, separator, rest = rows[0]["reason"].partition(": ")
        cause = rest if separator and ("/" in head or "." in head) else rows[0]["reason"]
        shown = ", ".join(r["clip_id"] for r in rows[:examples]) + (f" and {len(rows) - examples} more" if len(rows) > examples else "")
        lines.append(f"  {prefix + ' ' if prefix else ''}{len(rows)} clip{'s' if len(rows) != 1 else ''}: {cause} (e.g. {shown})")
    return lines


class StoreRepairWarning(UserWarning):
    """A store file could not be read and was rebuilt from the entries."""


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


def _h5py():
    """h5py, imported on first use: a stage whose index answers for every entry never opens
    one, and does not pay for the import."""
    import h5py

    return h5py


def _row(clip_id: str, file: str, handle) -> dict[str, Any]:
    """The index row of an open entry."""
    attrs = handle.attrs
    row = {"clip_id": clip_id, "file": file, "num_frames": int(handle["timestamps"].shape[0]) if "timestamps" in handle else 0}
    for name in _LINEAGE_ATTRS:
        value = attrs.get(name, "")
        row[name] = value.item() if isinstance(value, np.generic) else value
    row["version"] = int(row["version"]) if row["version"] != "" else -1
    decoded = attrs.get("decoded_s")
    row["decoded_s"] = float(decoded) if decoded is not None else math.nan
    row["summary"] = str(attrs.get("summary", ""))
    return row


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN included (a missing decoded duration)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


# A store's augmented copies (pipeline/extractors/augment.py) live in stores of their own, one
# per augmentation, under <store>/augmented/<augmentation>: no reader of the store itself (its
# index, its failures, evaluation, prediction) ever meets a copy.
AUGMENTED_DIR = "augmented"


def augmented_store(root: str | Path, augmentation: str) -> "FeatureStore":
    """The store of the copies augmentation ``augmentation`` made of store ``root``'s clips."""
    return FeatureStore(Path(root) / AUGMENTED_DIR / augmentation)


def augmented_id(clip_id: str, augmentation: str) -> str:
    """The entry name of a clip's copy: its clip id and the augmentation's name."""
    return f"{clip_id}~{augmentation}"


class FeatureStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.entries_dir = self.root / "entries"
        self.index_path = self.root / "index.parquet"
        self.failures_path = self.root / "failures.csv"
        self._index_cache: tuple[tuple[int, int, int], pd.DataFrame] | None = None

    # -- writing -------------------------------------------------------------------------
    def write(
        self, clip_id: str, arrays: dict[str, np.ndarray], attrs: dict[str, Any], image_compression: str = "none"
    ) -> Path:
        """Atomically write one clip's entry; safe to call from several processes at once.
        ``image_compression`` (none, lzf, gzip) applies to uint8 image stacks."""
        if image_compression not in IMAGE_COMPRESSIONS:
            raise ValueError(f"image_compression must be one of {sorted(IMAGE_COMPRESSIONS)}, got {image_compression!r}")

        def write_entry(temporary: Path) -> None:
            # The entry is built in memory (HDF5's core driver, no backing file) and written with
            # one plain file write: a full disk then fails that write with OSError and leaves
            # HDF5 nothing half-written to flush at exit (a file whose close failed with ENOSPC
            # crashes the interpreter at exit with SIGSEGV).
            with _h5py().File(str(temporary), "w", driver="core", backing_store=False) as handle:
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
                handle.flush()
                image = handle.id.get_file_image()
            with open(temporary, "wb") as file:
                file.write(image)

        return atomic_write(self.entries_dir / entry_file_name(clip_id), write_entry)

    def write_index(self, clip_ids: Iterable[str]) -> pd.DataFrame:
        """Index the entries of ``clip_ids`` that exist; entries of other clips are deleted,
        so clips removed from the dataset also leave the store. An entry not written since
        the previous index keeps its row, so an incremental run opens only the new entries.
        Temporary files whose writer is gone are removed; those of a live writer stay. The
        index is rewritten only when a row changed."""
        wanted = {entry_file_name(clip_id): clip_id for clip_id in clip_ids}
        previous, indexed_at, readable = self._previous_index()
        rows = []
        for path in sorted(self.entries_dir.glob("*.h5")) if self.entries_dir.exists() else []:
            clip_id = wanted.get(path.name)
            if clip_id is None:
                path.unlink()
                continue
            row = previous.get(clip_id)
            if row is None or row["file"] != path.name or not written_before(path, indexed_at):
                with _h5py().File(path, "r") as handle:
                    row = _row(clip_id, path.name, handle)
            rows.append(row)
        remove_abandoned(self.entries_dir)
        index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
        unchanged = readable and len(previous) == len(rows) and all(
            clip_id in previous and all(_same(previous[clip_id][column], value) for column, value in row.items())
            for row in rows
            for clip_id in [row["clip_id"]]
        )
        if not unchanged:
            write_parquet(index, self.index_path)
        return index

    def write_failures(self, failures: list[dict[str, str]]) -> None:
        """The failures table (FAILURE_COLUMNS, plus ``outcome`` and ``lineage`` where known);
        rewritten only when it changed."""
        table = pd.DataFrame(failures, columns=STORE_FAILURE_COLUMNS).fillna("")
        write_text_if_changed(self.failures_path, table.to_csv(index=False))

    # -- reading -------------------------------------------------------------------------
    def index(self) -> pd.DataFrame:
        if not self.index_path.exists():
            raise FileNotFoundError(f"{self.index_path}: feature store index missing (run the stage that writes it)")
        table = self._read_index()
        return table if table is not None else self._rebuilt_index()

    def _read_index(self) -> pd.DataFrame | None:
        """The index as written, or None (with a warning) if it cannot be read. A stage reads
        it several times (skip check, indexing, report): the table is kept while the file is
        the same one."""
        try:
            stat = self.index_path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            if self._index_cache is not None and self._index_cache[0] == stamp:
                return self._index_cache[1].copy()
            table = read_parquet(self.index_path)
            self._index_cache = (stamp, table)
            return table.copy()
        except FileNotFoundError:
            raise
        except Exception as error:  # ArrowInvalid, OSError, ...: whatever a damaged file raises
            warnings.warn(
                f"{self.index_path}: cannot be read ({type(error).__name__}: {error}); rebuilt from the entries in {self.entries_dir}",
                StoreRepairWarning,
                stacklevel=3,
            )
            return None

    def _rebuilt_index(self) -> pd.DataFrame:
        """Every readable entry's row (an entry that cannot be opened is left out)."""
        rows = []
        for path in sorted(self.entries_dir.glob("*.h5")) if self.entries_dir.exists() else []:
            try:
                with _h5py().File(path, "r") as handle:
                    rows.append(_row(str(handle.attrs.get("clip_id", path.stem)), path.name, handle))
            except OSError:
                continue
        return pd.DataFrame(rows, columns=INDEX_COLUMNS)

    def _previous_index(self) -> tuple[dict[str, dict], int, bool]:
        """The index's rows by clip id, when they were read from the entries (ns: the index's
        mtime; 0 if there is none, or it predates some column, so that no row of it is trusted),
        and whether the file itself is a current, readable index."""
        if not self.index_path.exists():
            return {}, 0, False
        table = self._read_index()
        if table is None:
            started = time.time_ns()
            return {row["clip_id"]: row for row in self._rebuilt_index().to_dict("records")}, started, False
        if any(column not in table.columns for column in INDEX_COLUMNS):
            return {}, 0, False
        rows = {row["clip_id"]: row for row in table[INDEX_COLUMNS].to_dict("records")}
        return rows, self.index_path.stat().st_mtime_ns, True

    def entry_rows(self, clip_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The index row (INDEX_COLUMNS) of each of ``clip_ids`` that has an entry. The index
        answers for the entries not written since it was; only the others (new clips, or
        entries written by a run that stopped before indexing) are opened, so a large store
        costs one table read."""
        previous, indexed_at, _ = self._previous_index()
        rows = {}
        for clip_id in clip_ids:
            path = self.path_of(clip_id)
            row = previous.get(clip_id)
            if row is not None and written_before(path, indexed_at):
                rows[clip_id] = row
                continue
            try:
                with _h5py().File(path, "r") as handle:
                    rows[clip_id] = _row(clip_id, path.name, handle)
            except (FileNotFoundError, OSError):
                continue  # no entry, or one that cannot be read: made again
        return rows

    def keys(self, clip_ids: Iterable[str] | None = None) -> dict[str, str]:
        """The lineage key of each indexed entry (of ``clip_ids``, or all): what an entry derived
        from it records as its source."""
        index = self.index()
        keys = dict(zip(index["clip_id"], index["key"] if "key" in index.columns else [""] * len(index)))
        return keys if clip_ids is None else {clip_id: keys[clip_id] for clip_id in clip_ids if clip_id in keys}

    def clip_ids(self) -> list[str]:
        return self.index()["clip_id"].tolist()

    def failures(self) -> pd.DataFrame:
        """The failures table (at least FAILURE_COLUMNS); one that cannot be read is rebuilt,
        with a warning, from the notes the indexed entries keep."""
        if not self.failures_path.exists():
            return pd.DataFrame(columns=STORE_FAILURE_COLUMNS)
        try:
            table = pd.read_csv(self.failures_path, dtype=str, keep_default_na=False)
            missing = [column for column in FAILURE_COLUMNS if column not in table.columns]
            if missing:
                raise ValueError(f"columns {missing} missing")
        except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as error:  # EmptyDataError is a ValueError
            warnings.warn(
                f"{self.failures_path}: cannot be read ({type(error).__name__}: {error}); rebuilt from the entries' notes",
                StoreRepairWarning,
                stacklevel=2,
            )
            table = self._notes()
        for column in STORE_FAILURE_COLUMNS:
            if column not in table.columns:
                table[column] = ""
        return table

    def _notes(self) -> pd.DataFrame:
        """Failure rows of the indexed entries that carry an outcome note."""
        try:
            index = self.index()
        except FileNotFoundError:
            return pd.DataFrame(columns=STORE_FAILURE_COLUMNS)
        if "note" not in index.columns:
            return pd.DataFrame(columns=STORE_FAILURE_COLUMNS)
        noted = index[index["note"].astype(str) != ""]
        return pd.DataFrame(
            {"clip_id": noted["clip_id"], "stage": noted["stage"], "reason": noted["note"], "outcome": "note", "lineage": ""},
            columns=STORE_FAILURE_COLUMNS,
        ).reset_index(drop=True)

    def path_of(self, clip_id: str) -> Path:
        return self.entries_dir / entry_file_name(clip_id)

    def attrs(self, clip_id: str) -> dict[str, Any] | None:
        """Attributes of the clip's entry, None if there is none (cheap: no arrays read)."""
        path = self.path_of(clip_id)
        if not path.exists():
            return None
        try:
            with _h5py().File(path, "r") as handle:
                return dict(handle.attrs)
        except OSError:
            return None

    def read(self, clip_id: str, keys: Iterable[str] | None = None) -> Entry:
        path = self.path_of(clip_id)
        try:
            with _h5py().File(path, "r") as handle:
                names = list(handle.keys()) if keys is None else list(keys)
                missing = [name for name in names if name not in handle]
                if missing:
                    raise KeyError(f"{path}: entry has no dataset(s) {missing}")
                arrays = {name: handle[name][()] for name in names}
                attrs = dict(handle.attrs)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no entry for clip {clip_id!r} in {self.root}") from None
        return Entry(clip_id, arrays, attrs)
