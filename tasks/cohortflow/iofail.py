"""File-system failures said plainly: what ran out or failed, and where."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Below this much free space a failed write is put down to a full disk (engines often report only "write failed").
LOW_SPACE_BYTES = 1 << 20
_NO_SPACE_WORDS = ("no space left on device", "disk full", "disk quota exceeded", "could not extend file")


class OutputError(Exception):
    """An output (snapshot, reader copy, marker) could not be written; the message names the path and the cause."""


def free_bytes(path: Path) -> int | None:
    """Free space of the file system that holds ``path`` (or its nearest existing parent)."""
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def is_no_space(exc: BaseException, path: Path | None = None) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc).lower()
    if any(word in text for word in _NO_SPACE_WORDS):
        return True
    if path is not None:
        free = free_bytes(path)
        return free is not None and free < LOW_SPACE_BYTES
    return False


def describe(exc: BaseException, path: Path, what: str) -> str:
    """One line: ``no space left on device writing <what> <path> (N bytes free): <engine text>`` or the cause."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    if is_no_space(exc, path):
        free = free_bytes(path)
        room = f"{free:,} bytes free" if free is not None else "free space unknown"
        return f"no space left on device writing {what} {path} ({room}): {text}"
    return f"cannot write {what} {path}: {text}"


@contextlib.contextmanager
def scratch_folder(target: Path, prefix: str) -> Iterator[Path]:
    """A folder for a task's scratch files under the target folder (sized for the warehouse, unlike a small /tmp),
    named ``<prefix><pid>-...`` and removed when the block ends; the folders of the same prefix that a killed process
    left behind (their process is gone) are removed first."""
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob(prefix + "*"):
        pid = old.name[len(prefix):].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=f"{prefix}{os.getpid()}-", dir=target) as folder:
        yield Path(folder)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # (PermissionError: alive, another user's)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
