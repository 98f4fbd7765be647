"""Does a finished benchmark have something to unlearn? The protocol targets of ``docs/benchmarks.md``, checked on its
rows (``results.json``)::

    python benchmarks/check_protocol.py runs/benchmark/fashion_mnist_memorise      # or .../results.json

In a benchmark where the original does not memorise its training data, doing nothing (the ``Original`` row) is as close
to retraining as any method in random and sub-class forgetting, and the comparison says nothing. The targets:

* the original memorises: train accuracy (on D = D_r + D_f) >= 99.5% and train - test accuracy >= 3 points, every seed;
* in every random and sub-class scenario: the Original's |ΔAcc D_f| to Retrain >= 3 points (mean over runs); the best
  method's mean average gap <= half the Original's; the Original's and Retrain's MIA-efficacy differ by >= 10 points,
  each with a standard deviation over runs <= 5 points;
* at least 3 seeds.

Each check prints ``HELD``, ``FAILED`` or ``N/A`` (not in the results) with the measured numbers; the exit status is 0
when every applicable check held.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_unlearn.benchmark.cache import read_results
from lightning_unlearn.benchmark.stats import add_gaps

__all__ = ["Check", "Targets", "main", "protocol_checks", "scenario_kind"]


@dataclass
class Targets:
    """The thresholds (points, i.e. percent)."""

    min_train_acc: float = 99.5
    min_train_test_gap: float = 3.0
    min_forget_gap: float = 3.0
    best_gap_ratio: float = 0.5
    min_mia_difference: float = 10.0
    max_mia_std: float = 5.0
    min_seeds: int = 3


@dataclass
class Check:
    """One target: its name, whether it held (``None``: not applicable, e.g. no such scenario) and what was measured."""

    name: str
    held: bool | None
    detail: str

    def line(self) -> str:
        word = "N/A" if self.held is None else ("HELD" if self.held else "FAILED")
        return f"{word:6s} {self.name}: {self.detail}"


def scenario_kind(rows: Sequence[Mapping[str, Any]], scenario: str) -> str:
    """``"random"``, ``"sub-class"``, ``"class-wise"`` or ``"other"`` from the scenario's forget specs; ``"other"``
    for a request of a sequential scenario (the targets are set for a single request on the trained original)."""
    if any(r.get("scenario") == scenario and r.get("request") is not None for r in rows):
        return "other"
    specs = {str(r.get("target_spec")) for r in rows if r.get("scenario") == scenario}
    kinds = set()
    for s in specs:
        try:
            d = json.loads(s)
        except (TypeError, ValueError):
            d = {}
        kinds.add("random" if "fraction" in d else "sub-class" if "per_class" in d else
                  "class-wise" if "classes" in d else "other")
    return kinds.pop() if len(kinds) == 1 else "other"


def _vals(rows: Sequence[Mapping[str, Any]], scenario: str, method: str, key: str, scale: float = 100.0) -> list[float]:
    out = []
    for r in rows:
        if r.get("scenario") == scenario and r.get("method") == method and r.get(key) is not None:
            out.append(float(r[key]) * scale)
    return out


def _ms(v: Sequence[float]) -> str:
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{statistics.fmean(v):.2f} ± {sd:.2f} (n={len(v)})"


def protocol_checks(rows: Sequence[Mapping[str, Any]], targets: Targets | None = None) -> list[Check]:
    """Every target of the module docstring on ``rows`` (with ``avg_gap``; see ``benchmark.stats.add_gaps``)."""
    t = targets or Targets()
    checks: list[Check] = []
    seeds = sorted({int(r.get("seed", 0)) for r in rows})
    checks.append(Check(f"seeds >= {t.min_seeds}", len(seeds) >= t.min_seeds, f"seeds {seeds}"))

    originals = [r for r in rows if r.get("method") == "Original"]
    train, gaps = [], []
    for r in originals:
        n_r, n_f = r.get("n/retain"), r.get("n/forget")
        if None in (n_r, n_f, r.get("acc/retain"), r.get("acc/forget"), r.get("acc/test")) or n_r + n_f == 0:
            continue
        acc = (float(r["acc/retain"]) * n_r + float(r["acc/forget"]) * n_f) / (n_r + n_f)
        train.append(100 * acc)
        gaps.append(100 * (acc - float(r["acc/test"])))
    if train:
        checks.append(Check(f"original train accuracy >= {t.min_train_acc:g}% (every run)", min(train) >= t.min_train_acc,
                            f"min {min(train):.2f}, mean {_ms(train)}"))
        checks.append(Check(f"original train - test accuracy >= {t.min_train_test_gap:g} points (every run)",
                            min(gaps) >= t.min_train_test_gap, f"min {min(gaps):.2f}, mean {_ms(gaps)}"))
    else:
        checks.append(Check("original memorises", None, "no Original row with accuracies and split sizes"))

    scenarios = list(dict.fromkeys(str(r.get("scenario")) for r in rows))
    for kind in ("random", "sub-class"):
        matching = [s for s in scenarios if scenario_kind(rows, s) == kind]
        if not matching:
            checks.append(Check(f"{kind} scenario", None, "no such scenario in the results"))
        for s in matching:
            checks += _scenario_checks(rows, s, t)
    return checks


def _scenario_checks(rows: Sequence[Mapping[str, Any]], s: str, t: Targets) -> list[Check]:
    out = []
    dacc = _vals(rows, s, "Original", "gold/forget_acc_gap")
    out.append(Check(f"{s}: Original |ΔAcc D_f| >= {t.min_forget_gap:g} points", None if not dacc else
                     statistics.fmean(dacc) >= t.min_forget_gap, _ms(dacc) if dacc else "no value"))
    orig_gap = _vals(rows, s, "Original", "avg_gap", 1.0)
    methods = sorted({str(r.get("method")) for r in rows if r.get("scenario") == s} - {"Original", "Retrain"})
    means = {m: statistics.fmean(v) for m in methods if (v := _vals(rows, s, m, "avg_gap", 1.0))}
    if orig_gap and means:
        best = min(means, key=lambda m: (means[m], m))
        o = statistics.fmean(orig_gap)
        out.append(Check(f"{s}: best method's average gap <= {t.best_gap_ratio:g} x Original's",
                         means[best] <= t.best_gap_ratio * o, f"best {best} {means[best]:.2f}, Original {o:.2f}"))
    else:
        out.append(Check(f"{s}: best method's average gap", None, "no average gaps (Original or methods missing)"))
    mo, mr = _vals(rows, s, "Original", "mia/efficacy"), _vals(rows, s, "Retrain", "mia/efficacy")
    if mo and mr:
        diff = abs(statistics.fmean(mo) - statistics.fmean(mr))
        out.append(Check(f"{s}: Original vs Retrain MIA-efficacy differ by >= {t.min_mia_difference:g} points",
                         diff >= t.min_mia_difference, f"|difference| {diff:.2f}; Original {_ms(mo)}, Retrain {_ms(mr)}"))
        sds = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in (mo, mr)]
        out.append(Check(f"{s}: MIA-efficacy std <= {t.max_mia_std:g} points (Original and Retrain)",
                         max(sds) <= t.max_mia_std and min(len(mo), len(mr)) > 1,
                         f"Original {sds[0]:.2f}, Retrain {sds[1]:.2f}"))
    else:
        out.append(Check(f"{s}: MIA-efficacy", None, "no MIA-efficacy for Original and Retrain"))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Print every check for ``argv[0]`` (a benchmark's ``output_dir`` or its ``results.json``); 0 if all held."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python benchmarks/check_protocol.py OUTPUT_DIR_OR_RESULTS_JSON", file=sys.stderr)
        return 2
    path = Path(args[0])
    if not (path / "results.json" if path.is_dir() else path).is_file():
        print(f"check_protocol: no results.json at {path}; run the benchmark first.", file=sys.stderr)
        return 2
    rows, prov = read_results(path)
    rows = [dict(r) for r in rows if r.get("status", "ok") == "ok"]
    if any("avg_gap" not in r for r in rows):  # results.json has them; rows from elsewhere may not
        rows = add_gaps(rows)
    if prov:
        print(f"results of commit {prov.get('git_commit')} ({prov.get('date')}, {prov.get('device')})")
    checks = protocol_checks(rows)
    for c in checks:
        print(c.line())
    failed = [c for c in checks if c.held is False]
    print(f"{sum(c.held is True for c in checks)} held, {len(failed)} failed, {sum(c.held is None for c in checks)} N/A")
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
