"""The result store of the applications: cache keys, files written atomically with one NaN policy, and trained models
recorded with the sha256 digests of their files.

**Keys** (:func:`config_hash` of a canonical JSON; they name no module path and no directory, so a results directory
stays valid when the code moves): a model's (:func:`model_key_content`: data, backbone, training settings, role, epochs,
seed and the sha256 of its training indices) and a row's (:func:`row_key`: the method, its two models, the split
hashes, the evaluator's effective settings and the Trainer's).

**Files**: every file goes through :func:`write_atomic` (or :func:`atomic_path` for writers that want a path): a
``<name>.tmp`` beside the target, created new (``O_EXCL``, never through a symbolic link: ``O_NOFOLLOW``), then renamed
over the target, which replaces a link instead of writing through it. JSON (:func:`write_json`) holds only finite
numbers: NaN and infinities are written as ``null`` (:func:`to_json`), numpy scalars and arrays as plain numbers and
lists. Every cache file is read back through :func:`read_json`: a missing one is ``None``, and one that is not a JSON
object (truncated, a list, pickle bytes, ...) is named on stderr, moved aside to ``<name>.corrupt-<n>`` (:func:`set_aside`,
kept by :func:`fresh_dir`) and read as ``None``, so the step that wrote it is made again. A model directory's
``info.json`` records the sha256 of its files (:func:`write_model_info`), which :func:`model_problem` checks before the
model is reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import numbers
import os
import re
import shutil
import stat
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from lightning_unlearn.experiment.settings import TrainerSettings, TrainingSettings, evaluator_settings, trainer_key
from lightning_unlearn.filecache import file_sha256

__all__ = [
    "CACHE_IRRELEVANT_DATA_ARGS",
    "INFO_FILE",
    "atomic_path",
    "config_hash",
    "data_for_key",
    "finite",
    "fresh_dir",
    "json_text",
    "model_key_content",
    "model_problem",
    "now",
    "read_json",
    "row_key",
    "scalars",
    "set_aside",
    "to_json",
    "write_atomic",
    "write_json",
    "write_model_info",
]

#: DataModule arguments that do not change what a model learns (left out of its key).
CACHE_IRRELEVANT_DATA_ARGS = frozenset({"num_workers", "eval_batch_size"})
#: DataModule arguments added after the keys were fixed, with the value that behaves as before: at that value they are
#: left out of a key, so that the models and rows of existing results directories stay valid (what they change when
#: set, the training indices, is in the key through their sha256 anyway).
DATA_ARGS_ADDED = {"holdout_indices": None, "previous_ckpt": None}
#: A model directory's record: what determines the model, and the sha256 of its files.
INFO_FILE = "info.json"
#: The name a corrupt cache file is moved to (``<name>.corrupt-<n>``), kept for the user to look at.
_SET_ASIDE = re.compile(r".+\.corrupt-[0-9]+$")


# -- keys ----------------------------------------------------------------------------------------------------------
def config_hash(obj: Any, length: int = 16) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys, no spaces, ``str`` of anything else), first ``length``
    hex digits."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def data_for_key(data: Mapping[str, Any], **init_args: Any) -> dict[str, Any]:
    """The ``data:`` entry as model keys hold it: without the arguments that do not change what a model learns, with
    ``init_args`` an application sets itself (the audit's ``holdout_fraction``)."""
    kept = {k: v for k, v in data["init_args"].items()
            if k not in CACHE_IRRELEVANT_DATA_ARGS and not (k in DATA_ARGS_ADDED and v == DATA_ARGS_ADDED[k])}
    return {"class_path": data["class_path"], "init_args": {**kept, **init_args}}


def model_key_content(data: Mapping[str, Any], backbone: Mapping[str, Any], training: TrainingSettings, role: str,
                      seed: int, **split: Any) -> dict[str, Any]:
    """What determines a trained model: ``data`` (:func:`data_for_key`), the backbone, the training settings, its
    role and epochs, the seed and ``split`` (the sha256 of its training indices, and the gold model's forget set)."""
    return {"data": dict(data), "backbone": backbone, "training": asdict(training), "role": role,
            "epochs": training.epochs(role), "seed": seed, **split}


def row_key(*, original: str, gold: str, hashes: Mapping[str, str], evaluator: Mapping[str, Any],
            trainer: TrainerSettings, **identity: Any) -> str:
    """The key of a row (a method run or a reference row evaluated): ``identity`` (which row), its original and gold
    models, the split hashes, the evaluator's effective settings and the Trainer settings."""
    return config_hash({**identity, "original": original, "gold": gold, "hashes": dict(hashes),
                        "evaluator": evaluator_settings(evaluator), "trainer": trainer_key(trainer)})


# -- files ---------------------------------------------------------------------------------------------------------
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)


def _tmp(path: Path) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    if os.path.lexists(tmp):
        tmp.unlink()  # an interrupted write's leftover (unlink removes a link itself, never what it points to)
    return tmp


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Where every file of the store is written: yields a fresh ``<name>.tmp`` beside ``path`` (a leftover or a link
    there is removed first) for the caller to write, then renames it over ``path`` if it is a regular file (never a
    link); on an error the ``.tmp`` is removed and ``path`` is left as it was. Writers that take a path
    (``Trainer.save_checkpoint``) use it directly; the others go through :func:`write_atomic`."""
    path = Path(path)
    tmp = _tmp(path)
    try:
        yield tmp
        if not stat.S_ISREG(os.lstat(tmp).st_mode):
            raise OSError(f"{tmp} is not a regular file; refusing to move it to {path}")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_atomic(path: str | Path, data: str | bytes | Callable[[BinaryIO], Any]) -> Path:
    """Replace ``path`` with ``data`` (text as UTF-8, bytes, or a function writing to a binary file) in one rename
    (:func:`atomic_path`): a reader sees the old file or the new one, never a part; the temporary file is created new
    (``O_EXCL``) and never through a link (``O_NOFOLLOW``), and a link at ``path`` is replaced, not followed."""
    with atomic_path(path) as tmp, os.fdopen(os.open(tmp, _NEW_FILE, 0o666), "wb") as f:
        if callable(data):
            data(f)
        else:
            f.write(data.encode() if isinstance(data, str) else data)
    return Path(path)


def to_json(obj: Any) -> Any:
    """``obj`` with JSON's types only: mappings (keys as ``str``), lists, ``str``, ``bool``, ``int``, finite
    ``float`` and ``None`` -- NaN and infinities become ``None`` (the one NaN policy of every file written), numpy
    scalars and arrays plain numbers and lists, anything else its ``str``."""
    if isinstance(obj, Mapping):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_json(obj.tolist())
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        return finite(float(obj))
    return str(obj)


def json_text(obj: Any) -> str:
    """``obj`` as the store's JSON text (:func:`to_json`, indented)."""
    return json.dumps(to_json(obj), indent=1, allow_nan=False)


def write_json(path: str | Path, obj: Any) -> Path:
    """``obj`` as JSON (:func:`json_text`) in ``path``, atomically (:func:`write_atomic`)."""
    return write_atomic(path, json_text(obj))


def read_json(path: str | Path) -> dict[str, Any] | None:
    """The JSON object a cache file holds, or ``None``: when ``path`` is missing, and when it holds anything else (not
    JSON, not UTF-8, not an object, not a regular file), which is moved aside (:func:`set_aside`) so that what wrote it
    is made again."""
    path = Path(path)
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return _corrupt(path, "not a regular file")
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return _corrupt(path, f"{type(err).__name__}: {err}")
    return data if isinstance(data, dict) else _corrupt(path, f"a JSON {type(data).__name__}, not an object")


def _corrupt(path: Path, why: str) -> None:
    set_aside(path, why)
    return None


def set_aside(path: str | Path, why: str) -> Path | None:
    """Move the corrupt cache file ``path`` to ``<name>.corrupt-<n>`` (the first free ``n``), saying so on stderr with
    both names and ``why``; returns the new path (``None``: it was gone already, e.g. set aside by another process)."""
    path = Path(path)
    n = 1
    while os.path.lexists(path.with_name(f"{path.name}.corrupt-{n}")):
        n += 1
    aside = path.with_name(f"{path.name}.corrupt-{n}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return None
    print(f"lightning_unlearn: {path} is corrupt ({' '.join(why.split())[:200]}); moved to {aside.name}, and what it "
          "recorded is made again", file=sys.stderr, flush=True)
    return aside


def fresh_dir(path: str | Path) -> Path:
    """``path`` as an empty directory: what an unfinished earlier attempt left there is removed, except the corrupt
    files set aside there (:func:`set_aside`), kept for the user to look at."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()  # a link is removed, never followed
    elif path.is_dir():
        for child in path.iterdir():
            if _SET_ASIDE.match(child.name) and not child.is_symlink():
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


def finite(v: Any) -> Any:
    """``None`` for a NaN or infinite float, else ``v``."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def scalars(results: Mapping[str, Any]) -> dict[str, Any]:
    """The evaluator's numeric results as plain ``int``/``float`` (numpy scalars included; nan/inf -> None)."""
    out: dict[str, Any] = {}
    for k, v in results.items():
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            continue
        out[k] = int(v) if isinstance(v, numbers.Integral) else finite(float(v))
    return out


def now() -> str:
    """The time, UTC, to the second (ISO 8601): when a row or a model was finished."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- models --------------------------------------------------------------------------------------------------------
def write_model_info(directory: Path, info: Mapping[str, Any], files: Sequence[Path]) -> Path:
    """``directory/info.json``: ``info`` and the sha256 of ``files`` (written last: a model directory without it is
    unfinished)."""
    return write_json(directory / INFO_FILE, {**info, "sha256": {f.name: file_sha256(f) for f in files}})


def model_problem(directory: Path, files: Sequence[Path]) -> str | None:
    """Why the model in ``directory`` cannot be reused (``None``: it can): a missing file or ``info.json``, an
    ``info.json`` that is not a JSON object (set aside), or a file whose sha256 is not the one recorded (a corrupt or
    replaced cache is trained again). A record from before digests were kept is reused if its checkpoint
    (``files[0]``) loads."""
    info_path = directory / INFO_FILE
    if not info_path.is_file() or not all(f.is_file() for f in files):
        return "not trained"
    info = read_json(info_path)
    if info is None:  # set aside as corrupt: a truncated record never turns the digest check off
        return f"{info_path} is corrupt"
    digests = info.get("sha256")
    if not isinstance(digests, dict):
        try:
            torch.load(files[0], map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - a cache that cannot be read is retrained
            return f"{files[0]} cannot be read ({type(err).__name__})"
        return None
    for f in files:
        if digests.get(f.name) != file_sha256(f):
            return f"{f} does not match the sha256 recorded in {info_path}"
    return None
