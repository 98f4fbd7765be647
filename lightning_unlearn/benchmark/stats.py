"""Uncertainty of a benchmark's results, as pure functions on its rows (``results.json``'s ``rows``).

* :func:`t_interval`: the 95% confidence interval of a mean over runs (Student's t).
* :func:`compare_to_best`: per scenario, the method closest to Retrain and which methods are not significantly further
  from it (two-sided paired t-test over the (target, seed) pairs).
* :func:`pareto_front`: the methods no other method beats on both unlearning time and average gap.
* :func:`add_gaps`: SalUn's average gap to Retrain of every row; :func:`add_feature_columns`: the probe excess and
  the relearn ratio of every row (the representation metrics against the gold model's); :func:`aggregate`: mean, std
  and n per (scenario, method).

Definitions and the reasons for the choices are in ``docs/metrics.md`` ("Uncertainty of benchmark results").
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lightning_unlearn.evaluation import METRIC_KEYS, REPRESENTATION_KEYS
from lightning_unlearn.experiment import finite

__all__ = [
    "ALPHA",
    "GAP_COLUMNS",
    "LEVEL",
    "FEATURE_COLUMNS",
    "RELEARN_MIN_GOLD_STEPS",
    "add_feature_columns",
    "add_gaps",
    "aggregate",
    "compare_to_best",
    "finite_float",
    "methods_in",
    "ordered",
    "paired_p_value",
    "pareto_front",
    "results_frame",
    "row_commits",
    "scenario_summary",
    "scenarios_in",
    "summaries",
    "t_interval",
]

#: Confidence level of every interval in the report.
LEVEL = 0.95
#: Significance level of the comparisons with the best method.
ALPHA = 0.05
_REFERENCE = "Retrain"  # the gold model: gap 0 by definition, never a candidate for "best"


def finite_float(v: Any) -> float | None:
    """``v`` as a finite float; ``None`` for missing, boolean, non-numeric, NaN or infinite values."""
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def t_interval(mean: float, std: float, n: int, level: float = LEVEL) -> tuple[float, float] | None:
    """``mean ± t_{(1+level)/2, n-1} · std / √n``: the Student-t confidence interval of a mean of ``n`` independent runs
    with sample standard deviation ``std`` (``None`` for ``n < 2``, where it is undefined)."""
    if n < 2:
        return None
    from scipy.stats import t  # deferred: start-up (scipy only when a report is written)

    half = float(t.ppf((1.0 + level) / 2.0, n - 1)) * std / math.sqrt(n)
    return mean - half, mean + half


def paired_p_value(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of the paired t-test (``scipy.stats.ttest_rel``) that ``a`` and ``b`` have the same mean.

    Degenerate cases, where the t statistic is 0/0 or x/0: every difference zero gives 1 (no evidence of a difference);
    identical non-zero differences give 0 (the same difference in every pair). ``nan`` with fewer than 2 pairs.
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples need equal lengths, got {len(a)} and {len(b)}.")
    if len(a) < 2:
        return math.nan
    d = [x - y for x, y in zip(a, b, strict=True)]
    if all(abs(v) <= 1e-12 for v in d):
        return 1.0
    if max(d) - min(d) <= 1e-12 * max(1.0, max(abs(v) for v in d)):
        return 0.0
    from scipy.stats import ttest_rel  # deferred: start-up (scipy only when a report is written)

    return float(ttest_rel(a, b).pvalue)


def _group(row: Mapping[str, Any]) -> tuple[str, int]:
    return str(row.get("target_spec", row.get("target"))), int(row.get("seed", 0))


def compare_to_best(
    rows: Sequence[Mapping[str, Any]], scenario: str, key: str = "avg_gap", alpha: float = ALPHA
) -> dict[str, Any] | None:
    """The method of ``scenario`` with the lowest mean ``key`` (Retrain excluded, Original included: a method not
    better than doing nothing has removed nothing measurable) and, for every other one, the paired t-test
    (:func:`paired_p_value`) of its ``key`` against the best's over the (target, seed) pairs both have.

    Returns ``{"best", "best_mean", "tied": [names], "different": [names], "untested": [names], "p_values": {name: p},
    "pairs": {name: n}, "alpha", "test"}`` (``None`` without any value). ``tied``: not significantly different from
    the best (p ≥ ``alpha``), the best itself first; ``untested``: fewer than 2 pairs.
    """
    per: dict[str, dict[tuple[str, int], float]] = {}
    for r in rows:
        if r.get("scenario") != scenario or r.get("method") == _REFERENCE:
            continue
        v = finite_float(r.get(key))
        if v is not None:
            per.setdefault(str(r.get("method")), {})[_group(r)] = v
    if not per:
        return None
    means = {m: statistics.fmean(v.values()) for m, v in per.items()}
    best = min(means, key=lambda m: (means[m], m))
    out: dict[str, Any] = {"best": best, "best_mean": means[best], "tied": [best], "different": [], "untested": [],
                           "p_values": {}, "pairs": {}, "alpha": alpha, "test": "paired t-test, two-sided"}
    for m in sorted(per, key=lambda m: (means[m], m)):
        if m == best:
            continue
        common = sorted(set(per[m]) & set(per[best]))
        out["pairs"][m] = len(common)
        if len(common) < 2:
            out["untested"].append(m)
            continue
        p = paired_p_value([per[m][g] for g in common], [per[best][g] for g in common])
        out["p_values"][m] = p
        out["tied" if p >= alpha else "different"].append(m)
    return out


def pareto_front(points: Mapping[str, tuple[float, float]]) -> list[str]:
    """Names whose ``(time, gap)`` no other point dominates (another with time ≤ and gap ≤, one of them strictly
    less): the methods worth their cost. Sorted by time."""
    front = []
    for m, (t, g) in points.items():
        dominated = any(
            (t2 <= t and g2 <= g) and (t2 < t or g2 < g) for m2, (t2, g2) in points.items() if m2 != m
        )
        if not dominated:
            front.append(m)
    return sorted(front, key=lambda m: (points[m][0], points[m][1], m))


def _mean_of(rows: Sequence[Mapping[str, Any]], scenario: str, method: str, key: str) -> float | None:
    vals = [finite_float(r.get(key)) for r in rows if r.get("scenario") == scenario and r.get("method") == method]
    vals = [v for v in vals if v is not None]
    return statistics.fmean(vals) if vals else None


def scenario_summary(rows: Sequence[Mapping[str, Any]], scenario: str) -> dict[str, Any]:
    """``{"comparison": compare_to_best(...), "pareto_front": [...], "points": {method: [time, gap]}}`` of one
    scenario; the Pareto points are the methods' and Retrain's mean ``time/unlearn_s`` and mean ``avg_gap`` (Original
    has no unlearning time and is left out)."""
    methods = sorted({str(r.get("method")) for r in rows if r.get("scenario") == scenario} - {"Original"})
    points = {}
    for m in methods:
        t, g = _mean_of(rows, scenario, m, "time/unlearn_s"), _mean_of(rows, scenario, m, "avg_gap")
        if t is not None and g is not None and t > 0:
            points[m] = (t, g)
    return {
        "comparison": compare_to_best(rows, scenario),
        "pareto_front": pareto_front(points),
        "points": {m: list(p) for m, p in points.items()},
    }

#: Columns whose distance to Retrain makes the average gap (accuracies and MIA-efficacy, as in SalUn).
GAP_COLUMNS: tuple[str, ...] = ("acc/retain", "acc/forget", "acc/test_retain", "acc/test_forget", "mia/efficacy")


def _group_key(row: dict[str, Any]) -> tuple[str, str, int]:
    return (str(row.get("scenario")), str(row.get("target_spec", row.get("target"))), int(row.get("seed", 0)))


def add_gaps(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Set ``avg_gap`` on every row (``None`` when the group's Retrain row is missing). Returns ``rows``."""
    retrain = {_group_key(r): r for r in rows if r.get("method") == "Retrain"}
    for r in rows:
        ref = retrain.get(_group_key(r))
        gaps = []
        if ref is not None:
            for c in GAP_COLUMNS:
                a, b = finite_float(r.get(c)), finite_float(ref.get(c))
                if a is not None and b is not None:
                    gaps.append(abs(a - b) * 100.0)
        r["avg_gap"] = sum(gaps) / len(gaps) if gaps else None
    return rows


#: The representation columns derived from the evaluator's keys (:func:`add_feature_columns`).
FEATURE_COLUMNS: tuple[str, ...] = ("probe_excess", "relearn_ratio")
#: The relearn ratio is defined only where the gold model needs at least this many attack steps (mean over the draws):
#: below it the gold model is at the attack's target (almost) before any step and the ratio divides by ~0.
RELEARN_MIN_GOLD_STEPS = 1.0


def add_feature_columns(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Set, on every row that has the evaluator's keys, ``probe_excess`` = ``probe/forget_acc - gold/probe/forget_acc``
    (a fraction: 0 is the gold model's, above 0 the features still separate D_f) and ``relearn_ratio`` =
    ``relearn/steps / gold/relearn/steps`` (below 1: relearns faster than a retrained model; defined only where the
    gold model needs at least :data:`RELEARN_MIN_GOLD_STEPS` steps). Both compare with the gold model of the row's own
    (scenario, target, seed), so they are paired by construction. Returns ``rows``."""
    for r in rows:
        probe, gold_probe = finite_float(r.get("probe/forget_acc")), finite_float(r.get("gold/probe/forget_acc"))
        if probe is not None and gold_probe is not None:
            r["probe_excess"] = probe - gold_probe
        steps, gold_steps = finite_float(r.get("relearn/steps")), finite_float(r.get("gold/relearn/steps"))
        if steps is not None and gold_steps is not None:
            r["relearn_ratio"] = steps / gold_steps if gold_steps >= RELEARN_MIN_GOLD_STEPS else None
    return rows


def row_commits(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """How many rows each ``git_commit`` produced (``"unknown"``: rows without a stamp, e.g. from older versions)."""
    counts: dict[str, int] = {}
    for r in rows:
        c = str(r.get("git_commit") or "unknown")
        counts[c] = counts.get(c, 0) + 1
    return counts


def aggregate(rows: Sequence[dict[str, Any]], key: str) -> dict[tuple[str, str], tuple[float, float, int] | None]:
    """``{(scenario, method): (mean, std, n)}`` of ``key`` over seeds and targets (std: sample std, 0 for n = 1;
    ``None`` where no run has a finite value), by a pandas group-by."""
    import pandas as pd  # deferred: start-up (pandas only when tables are written)

    frame = pd.DataFrame({"scenario": [str(r.get("scenario")) for r in rows],
                          "method": [str(r.get("method")) for r in rows],
                          "v": pd.Series([finite_float(r.get(key)) for r in rows], dtype=float)})
    stats = frame.groupby(["scenario", "method"], sort=False)["v"].agg(["mean", "std", "count"])
    out: dict[tuple[str, str], tuple[float, float, int] | None] = {}
    for (scenario, method), s in stats.iterrows():
        n = int(s["count"])
        out[(scenario, method)] = None if n == 0 else (float(s["mean"]), float(s["std"]) if n > 1 else 0.0, n)
    return out


def methods_in(rows: Sequence[dict[str, Any]], cfg: Any = None) -> list[str]:
    order = ["Original", "Retrain", *cfg.method_names()] if cfg is not None else ["Original", "Retrain"]
    seen = [m for m in order if any(r.get("method") == m for r in rows)]
    seen += sorted({str(r.get("method")) for r in rows} - set(seen))
    return seen


def _scenario_names(cfg: Any) -> list[str]:
    """The configured scenarios' row names in order (a sequential scenario's: one per request)."""
    if cfg is None:
        return []
    return [n for s in cfg.scenarios for n in getattr(s, "report_names", [s.name])]


def scenarios_in(rows: Sequence[dict[str, Any]], cfg: Any = None) -> list[str]:
    order = _scenario_names(cfg)
    seen = [s for s in order if any(r.get("scenario") == s for r in rows)]
    for r in rows:
        if r.get("scenario") not in seen:
            seen.append(str(r.get("scenario")))
    return seen


def ordered(rows: Iterable[dict[str, Any]], cfg: Any = None) -> list[dict[str, Any]]:
    """``rows`` in report order: scenarios and methods as configured (others after them), then target and seed."""
    scen = _scenario_names(cfg)
    meth = ["Original", "Retrain", *cfg.method_names()] if cfg is not None else ["Original", "Retrain"]

    def pos(seq: list[str], v: Any) -> int:
        return seq.index(v) if v in seq else len(seq)

    return sorted(
        rows,
        key=lambda r: (pos(scen, r.get("scenario")), str(r.get("scenario")), str(r.get("target")),
                       int(r.get("seed", 0)), pos(meth, r.get("method")), str(r.get("method"))),
    )


def summaries(rows: Sequence[dict[str, Any]], cfg: Any = None) -> dict[str, dict[str, Any]]:
    """Per scenario :func:`~lightning_unlearn.benchmark.stats.scenario_summary` (best method, methods tied with it,
    p-values, Pareto front) of rows that have ``avg_gap`` (:func:`add_gaps`)."""
    return {s: scenario_summary(rows, s) for s in scenarios_in(rows, cfg)}


_ID_COLUMNS = ("scenario", "target", "seed", "method", "kind", "status", "avg_gap")
_TAIL_COLUMNS = ("unlearn_time_s", "wall_s", "class_path", "target_spec", "run_dir", "config_hash", "finished_at",
                 "package_version", "git_commit")
_SKIP_COLUMNS = {"traceback"}


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    seen: set[str] = set()
    for r in rows:
        seen.update(r)
    fixed = [*_ID_COLUMNS, *(k for k in (*FEATURE_COLUMNS, *METRIC_KEYS, *REPRESENTATION_KEYS) if k in seen)]
    tail = [k for k in _TAIL_COLUMNS if k in seen]
    rest = sorted(k for k in seen if k not in fixed and k not in tail and k not in _SKIP_COLUMNS)
    return [*fixed, *rest, *tail]


def results_frame(rows: Sequence[dict[str, Any]], cfg: Any = None) -> Any:
    """The rows as a pandas ``DataFrame`` in report order, ``avg_gap`` (and, where the evaluator measured them,
    ``probe_excess`` and ``relearn_ratio``) added, columns ordered (identification, the derived columns, the
    evaluator's metrics, the rest, then cost and provenance); object dtype, so integers stay integers and a value a
    row does not have is ``None``."""
    import pandas as pd  # deferred: start-up (pandas only when tables are written)

    rows = ordered(add_feature_columns(add_gaps([dict(r) for r in rows])), cfg)
    clean = [{k: finite(v) for k, v in r.items()} for r in rows]
    frame = pd.DataFrame(clean, columns=_columns(rows), dtype=object)
    return frame.where(frame.notna(), None)
