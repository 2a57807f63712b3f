"""Lineage keys: what an entry was made from, in one hash.

An entry is made by one *component* (the faces processor, the audio decoder, an extractor)
from one *source*: a media file (faces and audio entries) or an entry of another store (every
derived store). Its key chains the two, like a Hugging Face datasets fingerprint: the hash of
the component's identity (its config, weights, ...), the component's version (bumped by its
author whenever its output changes) and the source's key (the media file's content hash, or
the input entry's own key). An entry is reused only while its key is the one the current
params, code and inputs give; when it is not, :func:`stale_reasons` says which of the three
changed.

Keys never depend on a store's location or a clip's id, so the same chain run into another
store (a prediction cache) gives the same keys for the same inputs.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from pipeline.store.files import atomic_write_text

# Why an entry was (re)made. "new": there was none. The others are stale reasons.
NEW = "new"
VERSION, CONFIG, MEDIA, INPUT = "version", "config", "media file", "input entry"
STALE_REASONS = (CONFIG, INPUT, MEDIA, VERSION)
SOURCE_KINDS = ("media", "entry")


def config_hash(config: Any) -> str:
    """Stable short hash of a JSON-serialisable config."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def identity_parts(identity: dict[str, Any]) -> tuple[str, int | None]:
    """(hash of the identity without its version, the version): kept apart so that a stale
    entry can say whether its config or its code changed."""
    rest = {key: value for key, value in identity.items() if key != "version"}
    version = identity.get("version")
    return config_hash(rest), None if version is None else int(version)


@dataclass(frozen=True)
class Lineage:
    """What one entry is made from; ``source_kind`` is "media" (a file's content hash) or
    "entry" (the key of the input store's entry), ``source_key`` "" when unknown."""

    config_hash: str
    version: int | None
    source_kind: str
    source_key: str
    made_because: str = NEW

    @property
    def key(self) -> str:
        blob = json.dumps([self.config_hash, self.version, self.source_kind, self.source_key]).encode()
        return hashlib.sha256(blob).hexdigest()[:32]

    def attrs(self) -> dict[str, Any]:
        """The entry attributes that record it (an HDF5 attribute cannot be None: -1 stands for no version)."""
        return {
            "key": self.key,
            "config_hash": self.config_hash,
            "version": -1 if self.version is None else self.version,
            "source_kind": self.source_kind,
            "source_key": self.source_key,
            "made_because": self.made_because,
        }


def stale_reasons(stored: dict[str, Any], expected: Lineage) -> list[str]:
    """Why an entry recorded as ``stored`` (its attributes or index row) is not ``expected``;
    empty if its key is the expected one. An entry made before keys were recorded has no
    version: its code is unknown, hence "version"."""
    if stored.get("key") == expected.key:
        return []
    reasons = []
    version = stored.get("version")
    version = None if version in (None, "", -1) or version != version else int(version)  # NaN from a parquet gap
    if version != expected.version or not stored.get("key"):
        reasons.append(VERSION)
    if stored.get("config_hash") != expected.config_hash:
        reasons.append(CONFIG)
    if stored.get("source_key", "") != expected.source_key or stored.get("source_kind", expected.source_kind) != expected.source_kind:
        reasons.append(MEDIA if expected.source_kind == "media" else INPUT)
    return reasons or [VERSION]


class FileHashes:
    """sha256 of files (media, weights), cached in a JSON file by path, size, mtime, inode and
    ctime, so that an unchanged corpus is not read again. A file replaced under the same name
    changes at least one of them (a copy keeping the mtime still gets a new ctime)."""

    threads = 4  # hashlib releases the GIL on large reads: a few threads overlap reading and hashing

    def __init__(self, cache_path: str | Path | None) -> None:
        self.cache_path = Path(cache_path) if cache_path else None
        self._cache: dict[str, list] | None = None
        self._changed = False

    def _load(self) -> dict[str, list]:
        if self._cache is None:
            self._cache = {}
            if self.cache_path is not None and self.cache_path.exists():
                try:
                    self._cache = json.loads(self.cache_path.read_text())
                except (ValueError, OSError):
                    self._cache = {}  # an unreadable cache is only a cache: everything is hashed again
        return self._cache

    def sha256(self, path: str | Path) -> str:
        return self.sha256_many([path])[str(path)]

    def sha256_many(self, paths: Iterable[str | Path]) -> dict[str, str]:
        """{path: sha256} for ``paths`` (as given); a missing file hashes to ""."""
        cache = self._load()
        result, misses = {}, []
        for path in dict.fromkeys(str(p) for p in paths):
            try:
                stat = os.stat(path)
            except OSError:
                result[path] = ""
                continue
            stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns]
            known = cache.get(os.path.abspath(path))
            if known is not None and known[:4] == stamp:
                result[path] = known[4]
            else:
                misses.append((path, stamp))
        if misses:
            with ThreadPoolExecutor(min(self.threads, len(misses))) as pool:
                digests = list(pool.map(lambda miss: file_sha256(miss[0]), misses))
            for (path, stamp), digest in zip(misses, digests):
                result[path] = digest
                cache[os.path.abspath(path)] = [*stamp, digest]
            self._changed = True
        return result

    def save(self) -> None:
        """Write the cache if it changed (atomically: a kill leaves the old one)."""
        if self._changed and self.cache_path is not None:
            atomic_write_text(self.cache_path, json.dumps(self._cache, sort_keys=True))
            self._changed = False


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
