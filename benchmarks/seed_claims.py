"""Issue 23's targets for the seed methods (TMU, Boundary Shrink, Boundary Expanding) on a finished benchmark.

    python benchmarks/seed_claims.py runs/fm [--tmu TwinUnlearning] [--bs BoundaryShrink] [--be BoundaryExpanding]
        [--baseline BadTeacher]

Reads ``<dir>/results.json`` and, for the TMU rows, every run's ``unlearn.json`` (``tmu.vs_gold``), and prints each
target as HELD / FAILED / N/A with the numbers behind it: mean ± std, the 95% t-interval, n, and paired p-values
over the (target, seed) pairs (``lightning_unlearn.benchmark.stats``). Targets (docs/reproduction.md):

* sub-class: TMU's |ΔAcc D_f| <= 0.5 x the Original's and < the baseline's (Bad Teacher); TMU's average gap < the
  Original's; TMU's predicted hard set more precise than the base rate (the gold hard rate);
* class-wise: BE's average gap <= 2 points, D_f accuracy <= 5%, test-retain within 3 points of the Original's; BS's
  and BE's speed-up over retraining >= 17x;
* random: BS's and BE's average gap < the Original's.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from lightning_unlearn.benchmark.cache import read_results
from lightning_unlearn.benchmark.stats import add_gaps, finite_float, paired_p_value, t_interval

GAP = "gold/forget_acc_gap"


def per_group(rows: list[dict[str, Any]], scenario: str, method: str, key: str, scale: float = 100.0
              ) -> dict[tuple[str, int], float]:
    out = {}
    for r in rows:
        if r.get("scenario") == scenario and r.get("method") == method:
            v = finite_float(r.get(key))
            if v is not None:
                out[(str(r.get("target_spec", r.get("target"))), int(r.get("seed", 0)))] = v * scale
    return out


def describe(values: list[float]) -> str:
    if not values:
        return "no runs"
    m = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    ci = t_interval(m, sd, len(values))
    ci_s = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
    return f"{m:.2f} ± {sd:.2f}{ci_s} (n={len(values)})"


def paired(a: dict[Any, float], b: dict[Any, float]) -> tuple[list[float], list[float]]:
    keys = sorted(set(a) & set(b))
    return [a[k] for k in keys], [b[k] for k in keys]


def check(name: str, ok: bool | None, detail: str) -> bool | None:
    print(f"{'N/A   ' if ok is None else 'HELD  ' if ok else 'FAILED'} {name}: {detail}")
    return ok


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float] | None:
    if n == 0:
        return None
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def hard_set(out_dir: Path, rows: list[dict[str, Any]], scenario: str, method: str) -> list[dict[str, Any]]:
    """``tmu.vs_gold`` of every run of ``method`` in ``scenario``, from its ``unlearn.json``."""
    found = []
    for r in rows:
        if r.get("scenario") != scenario or r.get("method") != method or not r.get("run_dir"):
            continue
        path = out_dir / r["run_dir"] / "unlearn.json"
        if not path.is_file():
            hits = list((out_dir / r["run_dir"]).rglob("unlearn.json"))
            path = hits[0] if hits else path
        if path.is_file():
            tmu = json.loads(path.read_text()).get("tmu", {})
            if "vs_gold" in tmu:
                found.append({"seed": r.get("seed"), **tmu["vs_gold"], "hard_rate": tmu.get("decision", {}).get("hard_rate")})
    return found


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out_dir")
    p.add_argument("--tmu", default="TwinUnlearning")
    p.add_argument("--bs", default="BoundaryShrink")
    p.add_argument("--be", default="BoundaryExpanding")
    p.add_argument("--baseline", default="BadTeacher")
    p.add_argument("--subclass", default="sub-class")
    p.add_argument("--classwise", default="class-wise")
    p.add_argument("--random", default="random")
    args = p.parse_args(argv)
    out_dir = Path(args.out_dir)
    rows, prov = read_results(out_dir)
    add_gaps(rows)
    print(f"results of commit {prov.get('git_commit', '?')} ({prov.get('finished_at', prov.get('date', '?'))})")
    scen = {r.get("scenario") for r in rows}
    methods = {r.get("method") for r in rows}
    results: list[bool | None] = []

    def have(s: str, *ms: str) -> bool:
        return s in scen and all(m in methods for m in ms)

    s = args.subclass
    if have(s, args.tmu):
        tmu_d, orig_d = per_group(rows, s, args.tmu, GAP), per_group(rows, s, "Original", GAP)
        a, b = paired(tmu_d, orig_d)
        ratio = statistics.fmean(a) / statistics.fmean(b) if b and statistics.fmean(b) else math.nan
        results.append(check(f"{s}: {args.tmu} |ΔAcc D_f| <= 0.5 x Original's",
                             None if not a else ratio <= 0.5,
                             f"{args.tmu} {describe(a)}, Original {describe(b)}, ratio {ratio:.2f}, "
                             f"paired p {paired_p_value(a, b):.3g}"))
        if args.baseline in methods:
            a, c = paired(tmu_d, per_group(rows, s, args.baseline, GAP))
            results.append(check(f"{s}: {args.tmu} |ΔAcc D_f| < {args.baseline}'s",
                                 None if not a else statistics.fmean(a) < statistics.fmean(c),
                                 f"{describe(a)} vs {describe(c)}, paired p {paired_p_value(a, c):.3g}"))
        a, b = paired(per_group(rows, s, args.tmu, "avg_gap", 1.0), per_group(rows, s, "Original", "avg_gap", 1.0))
        results.append(check(f"{s}: {args.tmu} average gap < Original's",
                             None if not a else statistics.fmean(a) < statistics.fmean(b),
                             f"{describe(a)} vs {describe(b)}, paired p {paired_p_value(a, b):.3g}"))
        hs = hard_set(out_dir, rows, s, args.tmu)
        prec = [h["precision"] for h in hs if h.get("precision") is not None]
        base = [h["base_rate"] for h in hs if h.get("precision") is not None]
        tp, npred = sum(h.get("true_hard", 0) for h in hs), sum(h.get("predicted_hard", 0) for h in hs)
        ngold = sum(h.get("gold_hard", 0) for h in hs)
        w = wilson(tp, npred)
        diff = [x - y for x, y in zip(prec, base)]
        pooled_base = statistics.fmean([h["base_rate"] for h in hs]) if hs else math.nan
        results.append(check(
            f"{s}: {args.tmu} predicted hard set more precise than the base rate",
            None if not npred else (w is not None and w[0] > pooled_base),
            f"pooled precision {tp}/{npred} = {tp / max(npred, 1):.3f}, Wilson 95% [{w[0]:.3f}, {w[1]:.3f}]"
            if w else "no predicted hard sample",
        ))
        print(f"       per run: precision {describe([100 * x for x in prec])} %, base rate "
              f"{describe([100 * x for x in base])} %, precision - base {describe([100 * x for x in diff])} points, "
              f"recall {describe([100 * h['recall'] for h in hs if h.get('recall') is not None])} %; runs without a "
              f"predicted hard sample: {len(hs) - len(prec)} of {len(hs)}; gold hard {ngold} in all, mean base rate "
              f"{pooled_base:.3f}; predicted hard rate "
              f"{describe([100 * h['predicted_hard_rate'] for h in hs if h.get('predicted_hard_rate') is not None])} %")
    s = args.classwise
    if have(s, args.be):
        gap = per_group(rows, s, args.be, "avg_gap", 1.0)
        results.append(check(f"{s}: {args.be} average gap <= 2 points", None if not gap else
                             statistics.fmean(gap.values()) <= 2.0, describe(list(gap.values()))))
        df = per_group(rows, s, args.be, "acc/forget")
        results.append(check(f"{s}: {args.be} D_f accuracy <= 5%", None if not df else
                             statistics.fmean(df.values()) <= 5.0, describe(list(df.values()))))
        a, b = paired(per_group(rows, s, args.be, "acc/test_retain"), per_group(rows, s, "Original", "acc/test_retain"))
        d = [x - y for x, y in zip(a, b)]
        results.append(check(f"{s}: {args.be} test-retain within 3 points of the Original's", None if not d else
                             abs(statistics.fmean(d)) <= 3.0,
                             f"difference {describe(d)}; {args.be} {describe(a)}, Original {describe(b)}"))
    if s in scen:
        for m in (args.bs, args.be):
            sp = per_group(rows, s, m, "time/speedup_vs_retrain", 1.0)
            if sp:
                results.append(check(f"{s}: {m} speed-up over retraining >= 17x",
                                     statistics.fmean(sp.values()) >= 17.0, describe(list(sp.values()))))
    s = args.random
    if s in scen:
        for m in (args.bs, args.be):
            if m not in methods:
                continue
            a, b = paired(per_group(rows, s, m, "avg_gap", 1.0), per_group(rows, s, "Original", "avg_gap", 1.0))
            results.append(check(f"{s}: {m} average gap < Original's", None if not a else
                                 statistics.fmean(a) < statistics.fmean(b),
                                 f"{describe(a)} vs {describe(b)}, paired p {paired_p_value(a, b):.3g}"))
    held = sum(r is True for r in results)
    failed = sum(r is False for r in results)
    print(f"{held} held, {failed} failed, {sum(r is None for r in results)} N/A")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
