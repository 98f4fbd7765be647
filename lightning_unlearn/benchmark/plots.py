"""The benchmark's figures: ``gap_to_gold.png`` (average gap per method and scenario) and ``time_vs_gap.png`` (cost
against distance to the gold model, Pareto fronts ringed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_unlearn.benchmark.stats import add_gaps, aggregate, methods_in, pareto_front, scenarios_in

__all__ = ["write_plots"]


def write_plots(rows: Sequence[dict[str, Any]], out: str | Path, cfg: Any = None) -> list[Path]:
    """``gap_to_gold.png`` (average gap per method and scenario) and ``time_vs_gap.png`` (unlearning time against the
    average gap, one point per method and scenario, each scenario's Pareto front ringed and joined by a dashed step
    line). Uses matplotlib's object API (no global backend change)."""
    from matplotlib.figure import Figure

    out = Path(out)
    rows = add_gaps([dict(r) for r in rows])
    methods = [m for m in methods_in(rows, cfg) if m != "Retrain"]
    scenarios = scenarios_in(rows, cfg)
    gap = aggregate(rows, "avg_gap")
    tim = aggregate(rows, "time/unlearn_s")
    written: list[Path] = []
    if not methods or not any(gap.get((s, m)) for s in scenarios for m in methods):
        return written

    fig = Figure(figsize=(max(6.0, 0.9 * len(methods) + 2), 4.2), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(scenarios))
    for i, s in enumerate(scenarios):
        xs, ys, es = [], [], []
        for j, m in enumerate(methods):
            st = gap.get((s, m))
            if st:
                xs.append(j + (i - (len(scenarios) - 1) / 2) * width)
                ys.append(st[0])
                es.append(st[1])
        ax.bar(xs, ys, width=width, yerr=es, capsize=2, label=s)
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels(methods, rotation=30, ha="right")
    ax.set_ylabel("average gap to Retrain (points, lower is better)")
    ax.set_title("Distance to the gold (retrained) model")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    path = out / "gap_to_gold.png"
    fig.savefig(path, dpi=120)
    written.append(path)

    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    markers = "osD^vP*X"
    labelled_retrain = False
    for i, s in enumerate(scenarios):
        pts = [(m, tim.get((s, m)), gap.get((s, m))) for m in [*methods, "Retrain"]]
        pts = [(m, t[0], g[0]) for m, t, g in pts if t and g and t[0] > 0]
        if not pts:
            continue
        sc = ax.scatter([p[1] for p in pts], [p[2] for p in pts], marker=markers[i % len(markers)], label=s)
        front = pareto_front({m: (t, g) for m, t, g in pts})
        if front:
            fx, fy = [t for m, t, g in pts if m in front], [g for m, t, g in pts if m in front]
            order = sorted(range(len(fx)), key=lambda k: fx[k])
            colour = sc.get_facecolor()[0]
            ax.step([fx[k] for k in order], [fy[k] for k in order], where="post", linestyle="--", linewidth=0.8,
                    color=colour)  # fmt: skip
            ax.scatter(fx, fy, s=160, facecolors="none", edgecolors=[colour], linewidths=1.2)
        for m, t, g in pts:
            if m == "Retrain":
                if labelled_retrain:
                    continue  # at gap 0 in every scenario: one label
                labelled_retrain = True
            ax.annotate(m, (t, g), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("unlearning time (s, log scale; Retrain: training time)")
    ax.set_ylabel("average gap to Retrain (points)")
    ax.set_title("Cost against distance to the gold model (ringed: Pareto front)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    path = out / "time_vs_gap.png"
    fig.savefig(path, dpi=120)
    written.append(path)
    return written
