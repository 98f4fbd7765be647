"""The parts of a benchmark configuration that are the benchmark's own: the scenarios and forget targets as written
(independent targets, or a sequence of deletion requests), the checkpoints a user brings (:func:`given_paths`), the
reference rows, and the names of a forget target's directory (:func:`target_slug`) and of a request's rows
(:func:`request_scenario`). The settings, method entries and errors shared with the tuner and the audit are
:mod:`lightning_unlearn.experiment`'s."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_unlearn.data.forget import ForgetSpec
from lightning_unlearn.experiment import ORIGINAL, RETRAIN, ConfigError, slug

__all__ = [
    "BASELINE_METHODS",
    "DATA_SKIP",
    "RESULT_FILE",
    "BenchmarkConfigError",
    "GivenPaths",
    "OUTPUT_FILES",
    "Scenario",
    "ScenarioEntry",
    "TargetEntry",
    "given_paths",
    "request_scenario",
    "target_slug",
]

#: Written last into every finished run's directory; its presence means "done" on a rerun.
RESULT_FILE = "result.json"
#: What the benchmark writes at the top of its output_dir (through ``experiment.write_output``: never over a file it
#: did not write).
OUTPUT_FILES = ("config.yaml", "results.csv", "results.json", "report.md", "gap_to_gold.png", "time_vs_gap.png")
#: Names of the two reference rows of every group (reserved: a method may not use them).
BASELINE_METHODS: tuple[str, str] = (ORIGINAL, RETRAIN)
#: DataModule arguments the benchmark sets per run (a config's ``data:`` does not give them).
DATA_SKIP = frozenset({"forget", "seed", "train_on"})
#: The benchmark's configuration errors are :class:`~lightning_unlearn.experiment.ConfigError` (the older name).
BenchmarkConfigError = ConfigError


#: A checkpoint the user brings (``original_ckpt``, a target's ``gold_ckpt``): one path for every seed, or
#: ``{seed: path}``.
GivenPaths = str | dict[int, str] | None


@dataclass
class Scenario:
    """A forgetting scenario (a table of the report): a name and the forget targets it averages over; ``gold_ckpt``:
    the gold models the user brings, ``{target slug: {seed: path}}`` (a target not in it gets a trained gold).

    A *sequential* scenario has ``requests`` instead of ``targets``: deletion requests made one after the other on the
    same model (request ``k`` forgets among what requests 1..k-1 left; every method continues from its own model of
    request ``k - 1``; the gold model of request ``k`` is retrained without everything forgotten so far), one table
    per request (:func:`request_scenario`)."""

    name: str
    targets: list[ForgetSpec]
    gold_ckpt: dict[str, dict[int, str]] = field(default_factory=dict)
    requests: list[ForgetSpec] = field(default_factory=list)

    @property
    def report_names(self) -> list[str]:
        """The scenario names of its rows: its own, or one per request of a sequence."""
        return [request_scenario(self.name, k) for k in range(1, len(self.requests) + 1)] if self.requests else [
            self.name]


def request_scenario(name: str, request: int) -> str:
    """The ``scenario`` of the rows of request ``request`` of the sequential scenario ``name``: each request is
    reported (table, comparison, summary column) as a scenario of its own, ``"<name>: request <k>"``."""
    return f"{name}: request {request}"


@dataclass
class TargetEntry:
    """A forget target as written in the config: a :class:`ForgetSpec`'s fields, plus ``gold_ckpt``, the user's gold
    model of this target (trained on its D_r; one path for every seed, or ``{seed: path}``) instead of a trained one."""

    classes: list[int] | None = None
    per_class: int | None = None
    fraction: float | None = None
    indices: list[int] | None = None
    indices_file: str | None = None
    gold_ckpt: GivenPaths = None


@dataclass
class ScenarioEntry:
    """A scenario as written in the config: ``{name, targets: [{classes: [3], gold_ckpt: ...}, ...]}``, or a sequence
    of deletion requests on one model, ``{name, requests: [{fraction: 0.03}, {fraction: 0.03}, ...]}``."""

    name: str
    targets: list[TargetEntry] | None = None
    requests: list[TargetEntry] | None = None


def given_paths(value: Any, seeds: list[int], where: str) -> dict[int, str]:
    """``{seed: path}`` of a given checkpoint (``None``: none given; one path: the same file for every seed). Refuses
    a mapping that misses a configured seed or names another one, and empty paths."""
    if value is None:
        return {}
    if isinstance(value, (str, Path)):
        value = {s: str(value) for s in seeds}
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a path or a mapping {{seed: path}}, got {value!r}.")
    try:
        paths = {int(k): str(v) for k, v in value.items()}
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: the keys of {{seed: path}} must be seeds (integers), got {list(value)}.")
    missing = [s for s in seeds if s not in paths]
    if missing:
        raise ConfigError(
            f"{where} gives no checkpoint for seed(s) {missing} (seeds: {seeds}): add `{missing[0]}: PATH` to the "
            "mapping, give one path for every seed, or drop those seeds."
        )
    extra = sorted(set(paths) - set(seeds))
    if extra:
        raise ConfigError(f"{where} names seed(s) {extra} that are not in `seeds` {seeds}: remove them.")
    empty = [s for s, v in paths.items() if not v.strip()]
    if empty:
        raise ConfigError(f"{where}: the path of seed {empty[0]} is empty.")
    return {s: paths[s] for s in seeds}


def target_slug(spec: ForgetSpec) -> str:
    """A directory name for a forget target: ``classes-3``, ``classes-3_per-class-40``, ``fraction-0.1``, ..."""
    d = spec.describe()
    if "classes" in d:
        s = "classes-" + "-".join(str(c) for c in d["classes"])
        return s + (f"_per-class-{d['per_class']}" if "per_class" in d else "")
    if "fraction" in d:
        return f"fraction-{d['fraction']:g}"
    if "indices" in d:
        return "indices-" + hashlib.sha256(json.dumps(sorted(d["indices"])).encode()).hexdigest()[:10]
    return "file-" + slug(Path(str(d.get("indices_file"))).stem)
