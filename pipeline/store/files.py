"""Writing store files so that a kill, a full disk or a second writer never leaves one half
written: every file is written under a temporary name that says who writes it, then renamed.

A temporary name carries the writer's host and pid (``.<final name>.<pid>@<host>.<token>.tmp``),
so a store can tell a file whose writer is gone (removed when the store is next indexed) from
one another process is still writing (left alone). A temporary file of another host cannot be
checked that way; it counts as abandoned only once it has not changed for
:data:`FOREIGN_TEMPORARY_AGE_S` (no writer pauses that long between two writes of an entry).
"""
from __future__ import annotations

import os
import re
import socket
import time
import uuid
from pathlib import Path
from typing import Callable

FOREIGN_TEMPORARY_AGE_S = 3600.0
_TEMPORARY = re.compile(r"^\.(?P<final>.+)\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9_-]+)\.(?P<token>[0-9a-f]+)\.tmp$")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def temporary_path(final: Path) -> Path:
    """Where ``final`` is written before its rename: a name no other writer uses."""
    return final.with_name(f".{final.name}.{os.getpid()}@{_host()}.{uuid.uuid4().hex[:12]}.tmp")


def atomic_write(final: Path, write: Callable[[Path], None]) -> Path:
    """``write(temporary)`` then rename onto ``final``; the temporary file never outlives a failure."""
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(final)
    try:
        write(temporary)
        os.replace(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)
    return final


def atomic_write_text(final: Path, text: str) -> Path:
    return atomic_write(final, lambda temporary: temporary.write_text(text))


def write_text_if_changed(final: Path, text: str) -> bool:
    """Atomically write ``text`` unless ``final`` already holds it (so an unchanged table keeps
    its mtime); True if written."""
    try:
        if final.read_text() == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass  # missing or unreadable: written
    atomic_write_text(final, text)
    return True


def read_parquet(path: str | Path):
    """A parquet file as a DataFrame, read by Arrow from its path.

    Not pandas.read_parquet: it hands Arrow a Python file object, whose reads run on Arrow's
    IO threads (read-ahead) and take the GIL. A thread still doing so while the interpreter
    shuts down is stopped by Python with pthread_exit inside C++ code, which aborts the whole
    process ("terminate called without an active exception", exit code -6) after the stage's
    work is done (apache/arrow#34314, #36389).
    """
    import pyarrow.parquet as pq

    return pq.read_table(str(path)).to_pandas()


def write_parquet(table, final: Path) -> Path:
    """Atomically write a DataFrame as parquet, Arrow writing to the path itself (see read_parquet)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow_table = pa.Table.from_pandas(table, preserve_index=False)
    return atomic_write(final, lambda temporary: pq.write_table(arrow_table, str(temporary)))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def abandoned(path: Path, now: float | None = None) -> bool:
    """True if the temporary file ``path`` provably has no writer any more: its writer's process
    on this host is gone, or (another host's, or an unnamed one) it has not changed for
    FOREIGN_TEMPORARY_AGE_S."""
    match = _TEMPORARY.match(path.name)
    if match and match["host"] == _host():
        return not _process_alive(int(match["pid"]))
    try:
        age = (time.time() if now is None else now) - path.stat().st_mtime
    except FileNotFoundError:
        return False  # renamed or removed by its writer meanwhile
    return age > FOREIGN_TEMPORARY_AGE_S


def remove_abandoned(directory: Path) -> list[Path]:
    """Delete the abandoned temporary files in ``directory``; returns them."""
    removed = []
    for path in directory.glob(".*.tmp") if directory.exists() else []:
        if abandoned(path):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
