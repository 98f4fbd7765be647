"""What a process may keep of the files it read: a file's version (path, device, inode, size, modification time) and
whether that version can be trusted to tell a rewrite (:func:`racy`). Used by the per-process caches of decoded
checkpoints (:func:`lightning_unlearn.checkpoints.read_checkpoint`) and datasets (:mod:`lightning_unlearn.data.shared`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from pathlib import Path

__all__ = ["file_sha256", "file_version", "racy", "versions"]

Version = tuple[str, int, int, int, int]


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_version(path: str | Path) -> Version | None:
    """``(resolved path, device, inode, size, mtime_ns)`` of a regular file; ``None`` when there is none."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return None
    if not path.is_file():
        return None
    return (str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def racy(version: Version, read_at: float | None = None) -> bool:
    """Whether the file may have been rewritten without its size and mtime changing (git's "racy" entries): it was
    modified within the file system's timestamp granularity before ``read_at`` (default: now). A whole-second mtime
    suggests a file system with 1 s (or 2 s) timestamps."""
    mtime_ns = version[-1]
    window = 2.0 if mtime_ns % 1_000_000_000 == 0 else 0.05
    return (time.time() if read_at is None else read_at) - mtime_ns / 1e9 < window


def versions(paths: Iterable[str | Path]) -> tuple[Version, ...] | None:
    """The versions of every file in ``paths``; ``None`` if one is missing."""
    out = tuple(file_version(p) for p in paths)
    return None if any(v is None for v in out) else out  # type: ignore[return-value]
