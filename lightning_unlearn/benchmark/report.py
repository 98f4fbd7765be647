"""Tables, report and plots of ``lightning_unlearn benchmark`` from its per-run rows.

A *row* is one run's flat result (what ``result.json`` holds): ``scenario``, ``target``, ``seed``, ``method``, ``kind``
(``method`` or ``reference``), every metric of the :class:`~lightning_unlearn.evaluation.UnlearningEvaluator`
(``acc/retain``, ``mia/efficacy``, ``gold/forget_acc_gap``, ``time/speedup_vs_retrain``, ...), ``unlearn_time_s`` and
``wall_s``. This module adds ``avg_gap`` and writes ``results.csv``, ``results.json``, ``report.md``,
``gap_to_gold.png`` and ``time_vs_gap.png``.

**Average gap** (SalUn, Fan et al. 2024): for one run, the mean over the accuracy columns (D_r, D_f, test_retain,
test_forget where defined) and MIA-efficacy of ``|metric - metric of Retrain|``, in percentage points, Retrain being the
gold model of the same scenario, forget target and seed. The report averages it (mean ± std) over seeds and targets,
like every other column; 0 is the gold model itself.

**Uncertainty** (:mod:`lightning_unlearn.benchmark.stats`): every cell also shows the 95% Student-t confidence interval
of its mean; per scenario the report names the method closest to Retrain, the methods not significantly further from
it (paired t-test over (target, seed) pairs) and the Pareto front of unlearning time against average gap.
**Provenance** (:mod:`lightning_unlearn.provenance`): ``results.json`` and ``report.md`` record the package version, git
commit, library versions, device, threads and date; every row carries the ``git_commit`` that produced it.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_unlearn.benchmark.cache import read_results
from lightning_unlearn.benchmark.plots import write_plots
from lightning_unlearn.benchmark.features import feature_check
from lightning_unlearn.benchmark.report_lines import comparison_lines, feature_lines, marks, provenance_lines
from lightning_unlearn.benchmark.stats import (
    ALPHA,
    GAP_COLUMNS,
    LEVEL,
    add_feature_columns,
    add_gaps,
    aggregate,
    finite_float,
    methods_in,
    results_frame,
    row_commits,
    scenarios_in,
    summaries,
    t_interval,
)
from lightning_unlearn.experiment import json_text, write_output
from lightning_unlearn.provenance import collect_provenance

__all__ = [
    "GAP_COLUMNS",
    "add_gaps",
    "aggregate",
    "read_results",
    "render_report",
    "results_frame",
    "summaries",
    "write_all",
    "write_plots",
    "write_results",
]

#: (header, key, scale, decimals) of the per-scenario table; scale 100 shows a fraction in percent.
_TABLE: tuple[tuple[str, str, float, int], ...] = (
    ("Acc D_r", "acc/retain", 100.0, 2),
    ("Acc D_f", "acc/forget", 100.0, 2),
    ("Acc test_r", "acc/test_retain", 100.0, 2),
    ("Acc test_f", "acc/test_forget", 100.0, 2),
    ("MIA-eff.", "mia/efficacy", 100.0, 2),
    ("Avg. gap ↓", "avg_gap", 1.0, 2),
    ("\\|ΔAcc D_f\\|", "gold/forget_acc_gap", 100.0, 2),
    ("Act. dist.", "gold/activation_distance", 1.0, 4),
    ("Probe exc.", "probe_excess", 100.0, 2),
    ("Relearn ratio", "relearn_ratio", 1.0, 2),
    ("CKA D_f", "gold/cka_forget", 1.0, 3),
    ("Time (s)", "time/unlearn_s", 1.0, 2),
    ("Speed-up", "time/speedup_vs_retrain", 1.0, 1),
)


def _provenance(cfg: Any = None) -> dict[str, Any]:
    t = getattr(cfg, "trainer", None)
    return collect_provenance(getattr(t, "accelerator", None), getattr(t, "num_threads", None))


def write_results(
    rows: Sequence[dict[str, Any]], out: str | Path, cfg: Any = None, provenance: dict[str, Any] | None = None
) -> list[Path]:
    """``results.csv`` (one row per finished run, every metric, ``avg_gap`` included) and ``results.json``:
    ``{"provenance", "row_commits", "summary", "rows"}`` (what produced it, per scenario the comparison with the best
    method and the Pareto front, and the same rows as the CSV, ``null`` where a run has no value), both from one
    :func:`results_frame` and each written atomically."""
    out = Path(out)
    frame = results_frame(rows, cfg)
    records = frame.to_dict(orient="records")
    csv_path, json_path = out / "results.csv", out / "results.json"
    write_output(out, csv_path.name, frame.to_csv(index=False, na_rep=""))
    doc = {
        "provenance": provenance if provenance is not None else _provenance(cfg),
        "row_commits": row_commits(records),
        "summary": _summaries(records, cfg),
        "rows": records,
    }
    write_output(out, json_path.name, json_text(doc))  # numpy scalars as numbers, nan/inf as null
    return [csv_path, json_path]


def _summaries(rows: Sequence[dict[str, Any]], cfg: Any) -> dict[str, dict[str, Any]]:
    """Per scenario :func:`summaries` and, where the representation metrics were measured, ``features``:
    :func:`~.features.feature_check` (rows with ``avg_gap`` and the feature columns)."""
    out = summaries(rows, cfg)
    for s, summary in out.items():
        check = feature_check(rows, s)
        if check is not None:
            summary["features"] = check
    return out


def _censoring(stats: dict[str, dict], scenario: str, method: str) -> str:
    """`` (cens. a% / b%)``: the mean share of censored relearning draws of the model and of the gold model, when
    either is above 0 (a censored draw counts as the step cap: the model's ratio is then a lower bound, the gold's
    an upper one)."""
    own, gold = (stats[k].get((scenario, method)) for k in ("relearn/censored", "gold/relearn/censored"))
    if not (own and own[0] > 0) and not (gold and gold[0] > 0):
        return ""
    pct = lambda s: "-" if not s else f"{100 * s[0]:.0f}%"  # noqa: E731
    return f" (cens. {pct(own)} / {pct(gold)})"


def _fmt(stat: tuple[float, float, int] | None, scale: float, decimals: int, suffix: str = "") -> str:
    if stat is None:
        return "-"
    mean, std, n = stat
    text = f"{mean * scale:.{decimals}f}"
    if n > 1:
        text += f" ± {std * scale:.{decimals}f}"
    text += suffix
    ci = t_interval(mean, std, n)
    if ci is not None:
        text += f" [{ci[0] * scale:.{decimals}f}, {ci[1] * scale:.{decimals}f}]"
    return text


def _scenario_table(rows: Sequence[dict[str, Any]], scenario: str, methods: Sequence[str]) -> list[str]:
    sub = [r for r in rows if r.get("scenario") == scenario]
    cols = [c for c in _TABLE if any(finite_float(r.get(c[1])) is not None for r in sub)]
    stats = {key: aggregate(sub, key) for key in [c[1] for c in cols] + ["relearn/censored", "gold/relearn/censored"]}
    lines = ["| Method | " + " | ".join(c[0] for c in cols) + " |", "|---|" + "---:|" * len(cols)]
    for m in methods:
        if not any(r.get("method") == m for r in sub):
            continue
        cells = []
        for header, key, scale, dec in cols:
            cell = _fmt(stats[key].get((scenario, m)), scale, dec, "×" if key.endswith("speedup_vs_retrain") else "")
            cells.append(cell + (_censoring(stats, scenario, m) if key == "relearn_ratio" else ""))
        name = f"**{m}**" if m == "Retrain" else m
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def render_report(
    rows: Sequence[dict[str, Any]],
    cfg: Any = None,
    failed: Sequence[dict[str, Any]] = (),
    plots: Sequence[Path] = (),
    out: Path | None = None,
    provenance: dict[str, Any] | None = None,
) -> str:
    """The Markdown report: what produced it, a summary, then per scenario a table of every method (mean ± std and
    95% confidence interval over seeds and targets), the best method and those tied with it, the Pareto front, the
    column definitions, failures and plots."""
    rows = add_feature_columns(add_gaps([dict(r) for r in rows]))
    methods = methods_in(rows, cfg)
    scenarios = scenarios_in(rows, cfg)
    summary = _summaries(rows, cfg)
    lines = ["# Unlearning benchmark", ""]
    if cfg is not None:
        data = cfg.data["class_path"].rsplit(".", 1)[-1]
        bb = cfg.backbone["class_path"].rsplit(".", 1)[-1]
        bb_args = ", ".join(f"{k}={v}" for k, v in cfg.backbone["init_args"].items() if v is not None)
        lines += [
            f"- data: `{data}` {_kv(cfg.data['init_args'])}",
            f"- backbone: `{bb}`" + (f" ({bb_args})" if bb_args else ""),
            f"- original / gold training: {cfg.training.epochs('original')} / {cfg.training.epochs('gold')} epochs, "
            f"{cfg.training.optimizer} lr {cfg.training.lr}",
            f"- seeds: {', '.join(str(s) for s in cfg.seeds)}; trainer: {cfg.trainer.accelerator}, "
            f"precision {cfg.trainer.precision}",
            "- methods: " + ", ".join(f"{m.name} ({m.max_epochs} ep.)" for m in cfg.methods),
            "",
        ]
    lines += provenance_lines(provenance if provenance is not None else _provenance(cfg), rows)
    lines += [
        f"Each cell: mean ± std [{100 * LEVEL:g}% confidence interval of the mean, Student's t] over seeds and forget",
        "targets. Accuracies, MIA-efficacy, |ΔAcc D_f| and the average gap are in percent (points); the best method is",
        "the one closest to **Retrain** (the gold model, retrained on D_r), not the one with the lowest D_f accuracy.",
        "Time: unlearning wall time (Retrain: its training time); speed-up: retrain time / unlearning time, per run.",
        "Definitions below the tables, in `docs/benchmarks.md` and `docs/metrics.md`.",
        "",
    ]
    gap = aggregate(rows, "avg_gap")
    speed = aggregate(rows, "time/speedup_vs_retrain")
    lines += ["## Summary: average gap to Retrain (↓) per scenario", ""]
    lines += ["| Method | " + " | ".join(scenarios) + " | mean | speed-up |", "|---|" + "---:|" * (len(scenarios) + 2)]
    for m in methods:
        if m == "Retrain":
            continue
        cells = [_fmt(gap.get((s, m)), 1.0, 2) + marks(summary.get(s), m) for s in scenarios]
        means = [gap[(s, m)][0] for s in scenarios if gap.get((s, m))]
        sp = [speed[(s, m)][0] for s in scenarios if speed.get((s, m))]
        mean = f"{statistics.fmean(means):.2f}" if means else "-"
        spd = f"{statistics.fmean(sp):.1f}×" if sp else "-"
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {mean} | {spd} |")
    lines += [
        "",
        f"**\\*** lowest average gap of the scenario, or not significantly different from it (two-sided paired t-test "
        f"over the (target, seed) pairs, α = {ALPHA:g}); **†** on the Pareto front of unlearning time against average "
        "gap (no other method is both faster and closer to Retrain). Speed-up: mean over scenarios of the mean per-run "
        "speed-up.",
        "",
    ]
    lines += _sequence_lines(rows)
    for s in scenarios:
        sub = [r for r in rows if r.get("scenario") == s]
        targets = sorted({str(r.get("target")) for r in sub})
        seeds = sorted({int(r.get("seed", 0)) for r in sub})
        lines += [f"## {s}", "", f"Forget targets: {'; '.join(targets)}. Seeds: {', '.join(map(str, seeds))}.", ""]
        lines += _scenario_table(rows, s, methods)
        lines.append("")
        lines += comparison_lines(summary.get(s))
        lines += feature_lines(summary.get(s, {}).get("features"))
        figs = [r for r in sub if out is not None and r.get("run_dir")
                and (out / str(r["run_dir"]) / "decision_space.png").is_file()]
        if figs:
            links = [f"[{r['method']}, {r['target']}, seed {r['seed']}]({Path(str(r['run_dir'])).as_posix()}"
                     "/decision_space.png)" for r in figs]
            lines += ["Decision space (penultimate features before/after unlearning): " + ", ".join(links), ""]
    lines += [
        "## Columns",
        "",
        "| column | meaning |",
        "|---|---|",
        "| Acc D_r, Acc D_f | accuracy on the retained / forgotten training samples |",
        "| Acc test_r, Acc test_f | test accuracy on the retained classes / on the forgotten classes (class-wise only) |",
        "| MIA-eff. | MIA-efficacy (SalUn): share of D_f that a confidence-based membership attack, trained on D_r vs "
        "test, calls non-member |",
        "| Avg. gap | mean over the Acc and MIA-eff. columns of \\|metric - Retrain's\\|, per run (SalUn's average gap) |",
        "| \\|ΔAcc D_f\\| | \\|Acc(D_f) - Acc_gold(D_f)\\| (TMU's forget-accuracy gap) |",
        "| Act. dist. | mean over D_f of the L2 distance between the softmax outputs of the model and the gold model |",
        "| Probe exc. | linear-probe accuracy on the unseen part of D_f (penultimate features, a share of D_f shown to "
        "the probe) minus the gold model's, in points: 0 is retraining's, above 0 the features still hold D_f |",
        "| Relearn ratio | fine-tuning steps on a few D_f samples until D_f is back near the original's accuracy, over "
        "the gold model's steps (below 1: relearns faster than a retrained model; empty where the gold model needs "
        "< 1 step); (cens. a% / b%): draws of the model / the gold model that hit the step cap |",
        "| CKA D_f | linear CKA of the penultimate features of the model and the gold model on D_f (1: the same up to "
        "rotation and scale; two retrainings are not 1) |",
        "| Time (s) | unlearning wall time (evaluation excluded); for Retrain, the gold model's training time |",
        "| Speed-up | Retrain time / unlearning time of the same run |",
        "",
    ]
    if failed:
        lines += ["## Failed runs", "", "| scenario | target | seed | method | error |", "|---|---|---|---|---|"]
        for f in failed:
            err = str(f.get("error", "")).replace("|", "\\|").replace("\n", " ")[:300]
            lines.append(f"| {f.get('scenario')} | {f.get('target')} | {f.get('seed')} | {f.get('method')} | {err} |")
        lines += ["", "Failed runs are retried when the benchmark is started again.", ""]
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{p.stem}]({p.name})" for p in plots]
        lines.append("")
    return "\n".join(lines)


def _sequence_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """What the columns of a sequential scenario are (one per deletion request)."""
    seqs = sorted({str(r["sequence"]) for r in rows if r.get("sequence") is not None})
    if not seqs:
        return []
    names = ", ".join(f"`{s}`" for s in seqs)
    return [
        f"Sequential scenario(s) {names}: deletion requests one after the other on the same model. The column (and "
        "table) `<name>: request k` is the gap to the gold model of request k, retrained without everything forgotten "
        "by requests 1..k; each method starts request k from its own unlearned model of request k - 1 (the Original "
        "row is the trained original, never unlearned). `sequence_gap.png` plots the gap after each request.",
        "",
    ]


def _kv(d: dict[str, Any]) -> str:
    keep = {k: v for k, v in d.items() if v is not None and k not in ("num_workers", "eval_batch_size")}
    return "(" + ", ".join(f"{k}={v}" for k, v in keep.items()) + ")" if keep else ""


def write_all(
    rows: Sequence[dict[str, Any]], out: str | Path, cfg: Any = None, failed: Sequence[dict[str, Any]] = ()
) -> list[Path]:
    """Write ``results.csv``, ``results.json``, the plots and ``report.md``; returns the paths."""
    out = Path(out)
    prov = _provenance(cfg)
    files = write_results(rows, out, cfg, provenance=prov)
    plots = write_plots(rows, out, cfg)
    report = write_output(out, "report.md", render_report(rows, cfg, failed=failed, plots=plots, out=out, provenance=prov))
    return [*files, *plots, report]
