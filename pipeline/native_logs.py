"""Keeps MediaPipe's native start-up chatter off the terminal.

MediaPipe's C++ graphs log through absl, which before ``absl::InitializeLog()`` writes every
message through a buffered C stream to file descriptor 2 (``W0000 00:00:...
landmark_projection_calculator.cc:186] Using NORM_RECT without IMAGE_DIMENSIONS ...``), and
TensorFlow Lite prints its delegate line there too. Neither absl nor this mediapipe build
reads an environment variable that lowers the level (``GLOG_minloglevel`` reaches only the
glog copy, which these lines do not go through), and Python's ``sys.stderr`` never sees them.
So the calls that emit them (a graph's construction and its frames: some lines come only
with the first face found) run with descriptor 2 pointed at a temporary file, C's streams
flushed before it is restored; then every line of it except MediaPipe's informational and
warning lines is written back to the real stderr, so errors (``E``/``F`` lines, Python
output) still show. A process killed inside such a call loses what it wrote to stderr
during that call.
"""
from __future__ import annotations

import ctypes
import os
import re
import sys
import tempfile
import threading
from contextlib import contextmanager
from typing import Iterator

# absl's INFO and WARNING prefix (severity letter, MMDD, time: before initialisation
# "00:00:<seconds since the epoch>", thread id, file:line]) and the two start-up lines
# that come with them.
NATIVE_CHATTER = re.compile(
    rb"^(?:[IW]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w./-]+:\d+\] .*"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.)\r?$"
)


# Descriptor 2 is the process's: two threads swapping it at once could leave it pointing at
# one of their files, so the swaps are serialised (re-entrant: a nested filter is harmless).
_SWAP = threading.RLock()


def _flush_c_streams() -> None:
    """fflush(NULL): without it, lines still in a C stream's buffer would be written after the
    descriptor is restored, unfiltered."""
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None)
    _LIBC.fflush(None)


_LIBC: ctypes.CDLL | None = None


def without_chatter(text: bytes) -> bytes:
    return b"".join(line for line in text.splitlines(keepends=True) if not NATIVE_CHATTER.match(line))


class NativeChatterFilter:
    """``with chatter_filter:`` runs the body with descriptor 2 pointed at a temporary file and
    then writes what is not chatter back to the real stderr. Reusable: the file is kept and
    emptied, so a filter around every frame costs two ``dup2`` and an ``fstat`` when nothing
    was logged."""

    def __init__(self) -> None:
        self._captured = tempfile.TemporaryFile()
        self._saved: int | None = None

    def __enter__(self) -> "NativeChatterFilter":
        _SWAP.acquire()
        sys.stderr.flush()
        self._saved = os.dup(2)
        os.dup2(self._captured.fileno(), 2)
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            sys.stderr.flush()
            _flush_c_streams()
            os.dup2(self._saved, 2)
            os.close(self._saved)
            self._saved = None
            if os.fstat(self._captured.fileno()).st_size:
                self._captured.seek(0)
                kept = without_chatter(self._captured.read())
                self._captured.seek(0)
                self._captured.truncate()
                if kept:
                    os.write(2, kept)
        finally:
            _SWAP.release()

    def close(self) -> None:
        self._captured.close()


@contextmanager
def native_chatter_filtered() -> Iterator[None]:
    """Run the body once with MediaPipe's native INFO/WARNING lines dropped from stderr."""
    chatter_filter = NativeChatterFilter()
    try:
        with chatter_filter:
            yield
    finally:
        chatter_filter.close()
