"""An output directory belongs to one run of one command (issue 26): :func:`claim_output_dir` holds it for the run and
refuses, in one line and before anything is written, a directory that another run holds, that holds a symbolic link
or a special file, that another command wrote, or that holds a file the command would write but did not write itself.

What a command writes at the top of its directory (``config.yaml``, ``report.md``, ``results.csv``, ``tune.md``,
``audit.json``, the plots, ...) goes through :func:`write_output`, which records the file's sha256 in
``.lightning_unlearn.json``; a file there that is not recorded, or whose digest differs (the user's own, or one
edited since), is never written over. A file a library writes in place (Optuna's SQLite ``studies.db``) is recorded
as the command's by :func:`record_output` when it is created. The caches below (``models/``, ``runs/``, ...) are the
store's (:mod:`~.store`): written atomically into directories of their own, their records validated when read.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from filelock import FileLock, Timeout

from lightning_unlearn.experiment.errors import ConfigError
from lightning_unlearn.experiment.store import read_json, write_atomic, write_json
from lightning_unlearn.filecache import file_sha256

__all__ = [
    "LOCK_FILE",
    "RECORD_FILE",
    "check_output_dir",
    "claim_output_dir",
    "is_recorded",
    "record_output",
    "write_output",
]

#: Held (``flock``) by the run that owns the directory; a second run on it is refused.
LOCK_FILE = ".lightning_unlearn.lock"
#: Which command owns the directory and the sha256 of every file it wrote at the top (``null``: written in place).
RECORD_FILE = ".lightning_unlearn.json"
_MISSING = object()


#: The directories this process holds, and for which command (the record names it when the first file is written).
_HELD: dict[Path, str] = {}


@contextlib.contextmanager
def claim_output_dir(path: str | Path, command: str, outputs: Sequence[str] = ()) -> Iterator[Path]:
    """Hold ``path`` for one run of ``lightning_unlearn <command>`` until the block ends: :func:`check_output_dir`
    first (it writes nothing: a refused directory is left as it was, or not created), then the directory is created
    and locked; another run holding it is refused (:class:`~.errors.ConfigError`). ``outputs``: the names (glob
    patterns, relative to ``path``) the command writes through :func:`write_output`."""
    out = Path(path)
    if os.path.lexists(out) and not out.is_dir():
        raise ConfigError(f"output_dir {out} exists and is not a directory; choose another output_dir.")
    if out.is_dir():
        check_output_dir(out, command, outputs)
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ConfigError(
            f"output_dir {out} is in use by another run of lightning_unlearn (it holds {out / LOCK_FILE}); wait for "
            "it to end, or choose another output_dir."
        ) from None
    except OSError as err:  # a directory at the lock's name, ... (a link there was refused by the check)
        raise ConfigError(f"cannot lock output_dir {out}: {out / LOCK_FILE}: {err.strerror}; remove it.") from None
    key = out.resolve()
    _HELD[key] = command
    try:
        yield out
    finally:
        _HELD.pop(key, None)
        lock.release()


def check_output_dir(out: Path, command: str, outputs: Sequence[str] = ()) -> None:
    """Refuse (:class:`~.errors.ConfigError`, one line naming the file) an output directory that holds a symbolic
    link or a special file anywhere (nothing is ever written through one), whose record names another command, or
    where a file of ``outputs`` exists that the command did not write (or that changed since it did)."""
    for root, dirs, files in os.walk(out):
        for name in (*dirs, *files):
            p = Path(root, name)
            mode = os.lstat(p).st_mode
            if stat.S_ISLNK(mode):
                raise ConfigError(f"{p} is a symbolic link: lightning_unlearn never writes through one, so output_dir "
                                  f"{out} may hold none; remove it (a linked output_dir itself is fine).")
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise ConfigError(f"{p} is not a regular file or directory; remove it from output_dir {out}.")
    record = _record(out)
    if record.get("command") not in (None, command):
        raise ConfigError(f"output_dir {out} holds the outputs of `lightning_unlearn {record['command']}`; give "
                          f"`lightning_unlearn {command}` another output_dir.")
    foreign = [p.relative_to(out).as_posix() for pattern in outputs for p in sorted(out.glob(pattern))
               if not _ours(p, record["files"].get(p.relative_to(out).as_posix(), _MISSING))]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ConfigError(
            f"output_dir {out} holds {shown}, which lightning_unlearn {command} did not write (or which changed since "
            "it did), and it never writes over them: move them away or choose another output_dir (the tables of a "
            "run by an earlier version: delete them; its models and finished runs are reused)."
        )


def write_output(out: str | Path, name: str, data: str | bytes | Callable[[BinaryIO], Any]) -> Path:
    """Write ``out/name`` atomically (:func:`~.store.write_atomic`) and record its sha256; a file there that was not
    written so (or changed since) is refused (``FileExistsError``), never written over."""
    out = Path(out)
    path = out / name
    record = _record(out)
    if os.path.lexists(path) and not _ours(path, record["files"].get(name, _MISSING)):
        raise FileExistsError(f"{path} was not written by lightning_unlearn (or changed since); it is not written "
                              "over: move it away, then run the same command again.")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)
    record["files"][name] = file_sha256(path)
    write_json(out / RECORD_FILE, record)
    return path


def record_output(out: str | Path, name: str) -> None:
    """Record ``out/name``, a file a library creates and writes in place (``studies.db``), as the command's own."""
    out = Path(out)
    record = _record(out)
    if name not in record["files"]:
        record["files"][name] = None
        write_json(out / RECORD_FILE, record)


def is_recorded(out: str | Path, name: str) -> bool:
    """Whether ``out/name`` is recorded as written by the command that owns ``out``."""
    return name in _record(Path(out))["files"]


def _record(out: Path) -> dict[str, Any]:
    record = read_json(out / RECORD_FILE) or {}
    files = record.get("files")
    command = record.get("command") or _HELD.get(out.resolve())
    return {**record, "command": command, "files": dict(files) if isinstance(files, dict) else {}}


def _ours(path: Path, digest: Any) -> bool:
    """Whether ``path`` is the file recorded with ``digest``: the same sha256, or for a file written in place
    (``None``) a regular file with no other name (a hard link would be written through)."""
    if digest is _MISSING:
        return False
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        return False
    return st.st_nlink == 1 if digest is None else file_sha256(path) == digest
