"""The benchmark's side of tuning: run each method at its configured settings, at its tuned ones (``best/``), or both.

``tuned: {dir: runs/tune/quickstart/best, mode: both}`` in a benchmark config adds, after each method ``X``, a method
``X (tuned)`` built from ``<dir>/<X>.yaml`` (``mode: tuned`` replaces ``X`` by it). Before anything runs, the split
hashes of every evaluation target are compared with the tuning targets recorded in that file: a result on a target the
settings were tuned on cannot be called tuned, and the benchmark stops
(:class:`~lightning_unlearn.experiment.TuningOverlapError`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from lightning_unlearn.experiment import ConfigError, MethodSpec, check_not_tuned_on, method_spec, read_best, slug

__all__ = ["TUNED_SUFFIX", "TunedSource", "check_tuned_targets", "expand_tuned"]

TUNED_SUFFIX = " (tuned)"


@dataclass
class TunedSource:
    """Where tuned settings come from and how they are used.

    Args:
        dir: a ``best/`` directory written by ``lightning_unlearn tune`` (one ``<method>.yaml`` per method).
        mode: ``default`` (ignore ``dir``), ``tuned`` (each method at its tuned settings only) or ``both`` (a row at
            its configured settings and a row ``<method> (tuned)``).
        methods: the names of the methods ``dir`` has settings for (``None``: every method); the others keep their
            configured settings only.
    """

    dir: str | None = None
    mode: Literal["default", "tuned", "both"] = "both"
    methods: list[str] | None = None


def _source(tuned: Any) -> TunedSource:
    if tuned is None:
        return TunedSource()
    if isinstance(tuned, TunedSource):
        return tuned
    return TunedSource(**dict(tuned))


def expand_tuned(methods: Sequence[MethodSpec], tuned: Any, scenarios: Sequence[str] = ()) -> list[MethodSpec]:
    """``methods`` with the tuned variants added or substituted, each carrying its file's ``tuned_record``.

    ``<dir>/<method>.yaml`` gives one setting for every scenario; without it, ``<dir>/<scenario>/<method>.yaml`` (what
    ``lightning_unlearn tune`` writes with ``per_scenario: true``) gives each scenario of ``scenarios`` that the method
    runs in its own setting: one variant per scenario, same name, ``scenarios: [that one]``."""
    src = _source(tuned)
    if src.dir is None or src.mode == "default":
        return list(methods)
    root = Path(src.dir)
    if not root.is_dir():
        raise ConfigError(f"tuned.dir {root} is not a directory; run `lightning_unlearn tune` first (it writes best/)")
    names = [m.name for m in methods]
    unknown = [n for n in (src.methods or []) if n not in names]
    if unknown:
        raise ConfigError(f"tuned.methods names {unknown}, which are not methods of this benchmark: {names}")
    out: list[MethodSpec] = []
    for i, m in enumerate(methods):
        if src.methods is not None and m.name not in src.methods:
            out.append(m)
            continue
        whole = root / f"{slug(m.name)}.yaml"
        if whole.is_file():
            files = {None: whole}
        else:
            mine = [sc for sc in scenarios if m.runs_in(sc)]
            files = {sc: root / slug(sc) / f"{slug(m.name)}.yaml" for sc in mine}
            missing = [str(p) for p in files.values() if not p.is_file()]
            if not mine or missing:
                raise ConfigError(f"Method {m.name!r}: no tuned settings {whole} nor {', '.join(missing) or 'per scenario'}; "
                                  "tune it, or leave it out of `methods`, or use tuned.mode: default")
        variants = []
        for sc, path in files.items():
            try:
                best = read_best(path)
            except (OSError, ValueError) as err:
                raise ConfigError(f"Method {m.name!r}: {err}") from None
            if best["class_path"] != m.class_path:
                raise ConfigError(f"Method {m.name!r}: {path} tunes {best['class_path']}, not {m.class_path}")
            entry = {"name": m.name + TUNED_SUFFIX, "class_path": m.class_path, "init_args": best["init_args"],
                     "max_epochs": best["max_epochs"], "trainer": best["trainer"],
                     "scenarios": m.scenarios if sc is None else [sc]}
            try:  # the rules of a config's methods (e.g. no `trainer` key the benchmark sets itself)
                variants.append(replace(method_spec(i, entry), tuned_record=best["record"]))
            except ConfigError as err:
                raise ConfigError(f"{path}: {err}") from None
        out.extend(variants if src.mode == "tuned" else [m, *variants])
    return out


def check_tuned_targets(methods: Sequence[MethodSpec], groups: Sequence[Any]) -> None:
    """Refuse (:class:`~lightning_unlearn.experiment.TuningOverlapError`, a ``ConfigError``) to run a tuned method on a
    group whose forget set was one of its tuning targets (split hashes)."""
    for m in methods:
        if m.tuned_record is None:
            continue
        evals = [{"scenario": g.scenario, "target": g.target.describe(), "seed": g.seed, "hashes": g.hashes}
                 for g in groups if m.runs_in(g.scenario)]
        check_not_tuned_on({"record": m.tuned_record}, evals, what=m.name)
