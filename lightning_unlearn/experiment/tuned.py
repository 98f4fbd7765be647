"""``best/<method>.yaml``: a method's tuned settings as an ``unlearn -c`` config, with the tuning record in it.

The file is an ordinary ``unlearn`` config (``model: {class_path, init_args}``, ``trainer: {max_epochs, ...}``); the
record (study, objective value, and the split hashes of every tuning target) is one ``# tuning-record: {json}`` comment
line, so ``unlearn -c`` reads the file unchanged and the benchmark can still refuse to call a result *tuned* when its
evaluation targets are among the tuning ones (:func:`check_not_tuned_on`). The tuner writes these files, the benchmark
reads them (``tuned:``).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from lightning_unlearn.experiment.errors import ConfigError
from lightning_unlearn.experiment.store import to_json, write_atomic

__all__ = [
    "RECORD_PREFIX",
    "TunedSettings",
    "TuningOverlapError",
    "check_not_tuned_on",
    "check_writable",
    "read_best",
    "write_best",
]

RECORD_PREFIX = "# tuning-record: "


class TuningOverlapError(ConfigError):
    """A result would be called tuned although its evaluation target was a tuning target (found before anything
    runs)."""


class TunedSettings(dict):
    """``read_best``'s result: ``class_path``, ``init_args``, ``max_epochs``, ``trainer`` and ``record``."""


def check_writable(path: str | Path) -> None:
    """Raise ``FileExistsError`` when ``path`` exists and is not a file the tuner wrote (it never overwrites one, nor
    reads or writes through a link or a special file)."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    if not stat.S_ISREG(os.lstat(path).st_mode) or RECORD_PREFIX not in path.read_text(errors="replace"):
        raise FileExistsError(f"{path} exists and was not written by the tuner; move it or choose another output_dir")


def write_best(path: str | Path, *, method: str, class_path: str, init_args: Mapping[str, Any], max_epochs: int,
               trainer: Mapping[str, Any], record: Mapping[str, Any], header: Iterable[str] = ()) -> Path:
    """Write ``path`` (a new file, or the tuner's own earlier one: a file without a record is never overwritten)."""
    path = Path(path)
    check_writable(path)
    body = yaml.safe_dump(
        {"model": {"class_path": class_path, "init_args": dict(init_args)},
         "trainer": {"max_epochs": int(max_epochs), **dict(trainer)}},
        sort_keys=False,
    )
    lines = [f"# {method}: settings found by `lightning_unlearn tune` (docs/tuning.md).", *(f"# {h}" for h in header)]
    lines.append(RECORD_PREFIX + json.dumps(to_json(record), sort_keys=True, allow_nan=False))
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, "\n".join(lines) + "\n" + body)


def read_best(path: str | Path) -> TunedSettings:
    """Read a ``best/<method>.yaml`` (``yaml.safe_load``); a file without a tuning record is refused."""
    path = Path(path)
    text = path.read_text()
    record = None
    for line in text.splitlines():
        if line.startswith(RECORD_PREFIX):
            try:
                record = json.loads(line[len(RECORD_PREFIX):])
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: unreadable tuning record ({err})") from None
    if not isinstance(record, dict) or not isinstance(record.get("tuning_groups"), list):
        raise ValueError(f"{path} has no tuning record (`{RECORD_PREFIX.strip()}` line): it cannot be shown as tuned "
                         "because its tuning targets are unknown; write it with `lightning_unlearn tune`")
    data = yaml.safe_load(text) or {}
    model = data.get("model") or {}
    trainer = dict(data.get("trainer") or {})
    if not isinstance(model, dict) or not model.get("class_path"):
        raise ValueError(f"{path}: no model.class_path")
    return TunedSettings(class_path=str(model["class_path"]), init_args=dict(model.get("init_args") or {}),
                         max_epochs=int(trainer.pop("max_epochs", 1)), trainer=trainer, record=record)


def check_not_tuned_on(settings: Mapping[str, Any], evaluation: Iterable[Mapping[str, Any]], what: str = "") -> None:
    """Raise :class:`TuningOverlapError` when an evaluation group's forget-set hash is one the settings were tuned on.

    ``evaluation``: ``{"hashes": {"forget": ...}, ...}`` records (or anything with those keys) of the groups evaluated.
    """
    tuned = {g["hashes"]["forget"]: g for g in settings["record"]["tuning_groups"]}
    for e in evaluation:
        hit = tuned.get(e["hashes"]["forget"])
        if hit is not None:
            raise TuningOverlapError(
                f"{what or settings['record'].get('method', 'method')}: the evaluation target {_describe(e)} is the "
                f"tuning target {_describe(hit)} (same forget-set sha256 {e['hashes']['forget'][:12]}); a result on it "
                "cannot be called tuned. Tune on other classes or seeds, or evaluate on other targets."
            )


def _describe(g: Mapping[str, Any]) -> str:
    return f"{g.get('scenario')} / {json.dumps(g.get('target'), sort_keys=True)} / seed {g.get('seed')}"
