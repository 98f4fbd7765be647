"""Does a method forget by the outputs but not by the features? A pure function on a benchmark's rows.

The output metrics (accuracies, MIA, activation distance) can call a model forgotten whose penultimate features still
hold D_f (Gao, Unal, Rangamani & Zhu, "An Illusion of Unlearning?", AISTATS 2026): a linear probe reads it back or a
few fine-tuning steps bring it back. :func:`feature_check` names, per scenario, the methods of which both are true
(``docs/benchmarks.md``, "Forgetting by the outputs, not by the features"):

* *by the outputs*: the mean over the scenario's runs of ``|ΔAcc D_f|`` (``gold/forget_acc_gap``) is at most
  :data:`OUTPUT_TOLERANCE` (2 points) or one sample of D_f (``1 / n/forget``), whichever is larger;
* *not by the features*: the 95% Student-t interval of the mean ``probe_excess`` lies above 0, or that of the mean
  ``relearn_ratio`` lies below 1 with no censored attack draw of the method (a censored draw makes its ratio a lower
  bound). Both are per-run comparisons with the gold model of the same (scenario, target, seed), so each interval is
  the paired one over the (target, seed) pairs; with a single run there is no interval and nothing is claimed.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from lightning_unlearn.benchmark.stats import RELEARN_MIN_GOLD_STEPS, finite_float, t_interval

__all__ = ["OUTPUT_TOLERANCE", "feature_check"]

#: Largest mean |ΔAcc D_f| (a fraction) at which a method counts as forgetting by the outputs (or one sample of D_f).
OUTPUT_TOLERANCE = 0.02
_REFERENCES = ("Original", "Retrain")


def _values(rows: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [v for v in (finite_float(r.get(key)) for r in rows) if v is not None]


def _interval(values: Sequence[float]) -> dict[str, Any] | None:
    """``{"mean", "n", "ci"}`` of ``values`` (``ci``: the 95% t-interval of the mean, ``None`` for fewer than 2)."""
    if not values:
        return None
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    ci = t_interval(mean, std, len(values))
    return {"mean": mean, "n": len(values), "ci": None if ci is None else [ci[0], ci[1]]}


def feature_check(rows: Sequence[dict[str, Any]], scenario: str) -> dict[str, Any] | None:
    """The methods of ``scenario`` that forget by the outputs but not by the features (rule: module docstring), from
    rows carrying ``probe_excess``/``relearn_ratio`` (:func:`~.stats.add_feature_columns`).

    Returns ``None`` when no row of the scenario has a probe or relearning value (the components were off), else
    ``{"rule", "tolerance", "gold_relearn_steps", "methods": {name: {...}}, "by_outputs": [...], "flagged": [...],
    "untestable": [...], "relearn_undefined": {"runs", "of", "gold_steps"}}``: per method its mean |ΔAcc D_f| and the
    intervals of its probe excess and relearn ratio, ``by_outputs`` the methods within the tolerance, ``flagged`` those
    of them whose features keep D_f, ``untestable`` those of them with no interval (one run); in ``runs`` of the
    ``of`` (target, seed) groups the gold model needed fewer than :data:`~.stats.RELEARN_MIN_GOLD_STEPS` steps
    (``gold_steps`` on average there), so they have no ratio."""
    sub = [r for r in rows if r.get("scenario") == scenario]
    if not any(finite_float(r.get(k)) is not None for r in sub for k in ("probe/forget_acc", "relearn/steps")):
        return None
    sizes = _values(sub, "n/forget")
    tolerance = max(OUTPUT_TOLERANCE, 1.0 / statistics.median(sizes)) if sizes and min(sizes) > 0 else OUTPUT_TOLERANCE
    per_group: dict[tuple[str, Any], float] = {}  # the gold model's attack steps, one value per (target, seed)
    for r in sub:
        v = finite_float(r.get("gold/relearn/steps"))
        if v is not None:
            per_group.setdefault((str(r.get("target_spec", r.get("target"))), r.get("seed")), v)
    gold_steps = list(per_group.values())
    out: dict[str, Any] = {
        "rule": f"mean |ΔAcc D_f| <= {100 * tolerance:.2f} points, and the 95% interval of the probe excess above 0 "
        "or of the relearn ratio (no censored draw) below 1",
        "tolerance": tolerance,
        "gold_relearn_steps": statistics.fmean(gold_steps) if gold_steps else None,
        "methods": {}, "by_outputs": [], "flagged": [], "untestable": [],
    }
    names = sorted({str(r.get("method")) for r in sub} - set(_REFERENCES))
    for m in names:
        mine = [r for r in sub if r.get("method") == m]
        gaps = _values(mine, "gold/forget_acc_gap")
        if not gaps:
            continue
        censored = _values(mine, "relearn/censored")
        info = {"forget_acc_gap": statistics.fmean(gaps), "probe_excess": _interval(_values(mine, "probe_excess")),
                "relearn_ratio": _interval(_values(mine, "relearn_ratio")),
                "relearn_censored": statistics.fmean(censored) if censored else None}
        probe, ratio = info["probe_excess"], info["relearn_ratio"]
        info["probe_keeps"] = bool(probe and probe["ci"] and probe["ci"][0] > 0)
        info["relearn_keeps"] = bool(ratio and ratio["ci"] and ratio["ci"][1] < 1 and not info["relearn_censored"])
        out["methods"][m] = info
        if info["forget_acc_gap"] > tolerance:
            continue
        out["by_outputs"].append(m)
        if info["probe_keeps"] or info["relearn_keeps"]:
            out["flagged"].append(m)
        elif not (probe and probe["ci"]) and not (ratio and ratio["ci"]):
            out["untestable"].append(m)
    low = [v for v in gold_steps if v < RELEARN_MIN_GOLD_STEPS]
    out["relearn_undefined"] = {"runs": len(low), "of": len(gold_steps),
                                "gold_steps": statistics.fmean(low) if low else None}
    return out
