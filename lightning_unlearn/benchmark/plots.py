"""The benchmark's figures: ``gap_to_gold.png`` (average gap per method and scenario), ``time_vs_gap.png`` (cost
against distance to the gold model, Pareto fronts ringed) and, with a sequential scenario, ``sequence_gap.png`` (the
gap after each deletion request)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_unlearn.benchmark.stats import add_gaps, aggregate, methods_in, pareto_front, scenarios_in
from lightning_unlearn.experiment import write_output

__all__ = ["write_plots"]


def write_plots(rows: Sequence[dict[str, Any]], out: str | Path, cfg: Any = None) -> list[Path]:
    """``gap_to_gold.png`` (average gap per method and scenario) and ``time_vs_gap.png`` (one panel per scenario:
    unlearning time against the average gap, one colour and marker per method named in a shared legend, error bars of
    one std clipped at 0, the Pareto front ringed and joined by a dashed step line). Uses matplotlib's object API (no
    global backend change)."""
    from matplotlib.figure import Figure  # deferred: start-up (matplotlib only when plots are drawn)

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
        ax.bar(xs, ys, width=width, yerr=_clipped(ys, es), capsize=2, label=s)
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels(methods, rotation=30, ha="right")
    ax.set_ylabel("average gap to Retrain (points, lower is better)")
    ax.set_title("Distance to the gold (retrained) model")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    written.append(_save(fig, out / "gap_to_gold.png"))

    fig = _time_vs_gap(Figure, methods, scenarios, tim, gap)
    if fig is not None:
        written.append(_save(fig, out / "time_vs_gap.png"))
    fig = _sequence_gap(Figure, rows, methods, gap)
    if fig is not None:
        written.append(_save(fig, out / "sequence_gap.png"))
    return written


def _sequence_gap(figure: Any, rows: Sequence[dict[str, Any]], methods: Sequence[str], gap: dict) -> Any:
    """One panel per sequential scenario: the average gap to the gold model of each request (mean ± std over seeds)
    after requests 1, 2, ..., one line per method (Original: never unlearned)."""
    steps: dict[str, dict[int, str]] = {}  # sequence -> request -> the rows' scenario name
    for r in rows:
        if r.get("sequence") is not None and r.get("request") is not None:
            steps.setdefault(str(r["sequence"]), {})[int(r["request"])] = str(r.get("scenario"))
    if not steps:
        return None
    style = _style(methods)
    fig = figure(figsize=(4.6 * len(steps) + 2.4, 4.2), layout="constrained")
    axes = fig.subplots(1, len(steps), squeeze=False, sharey=True)[0]
    for ax, (name, by_request) in zip(axes, sorted(steps.items()), strict=True):
        for m in methods:
            pts = [(k, gap.get((by_request[k], m))) for k in sorted(by_request)]
            pts = [(k, g) for k, g in pts if g]
            if pts:
                colour, marker = style[m]
                ax.errorbar([k for k, _ in pts], [g[0] for _, g in pts], yerr=_clipped([g[0] for _, g in pts],
                            [g[1] for _, g in pts]), fmt=f"-{marker}", color=colour, capsize=2, label=m)
        ax.set_xticks(sorted(by_request))
        ax.set_xlabel("deletion request")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("average gap to that request's Retrain (points)")
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.legend(handles.values(), handles.keys(), loc="outside right upper", fontsize=8, title="method")
    fig.suptitle("Gap to the gold model after each deletion request")
    return fig


def _save(fig: Any, path: Path) -> Path:
    return write_output(path.parent, path.name, lambda f: fig.savefig(f, format="png", dpi=120))


def _clipped(means: Sequence[float], stds: Sequence[float]) -> list[list[float]]:
    """Asymmetric error bars ``mean - std .. mean + std`` cut at 0 (a gap, a time, cannot be negative)."""
    return [[min(float(e), max(0.0, float(m))) for m, e in zip(means, stds, strict=True)], [float(e) for e in stds]]


def _style(methods: Sequence[str]) -> dict[str, tuple[Any, str]]:
    """One colour and marker per method, the same in every panel (Retrain last, black)."""
    import matplotlib  # deferred: start-up (matplotlib only when plots are drawn)

    cmap = matplotlib.colormaps["tab10"]
    markers = "osD^vPXhp<>d"  # 10 colours x 11 markers: (colour, marker) pairs differ for 110 methods
    out = {m: (cmap(i % 10), markers[i % len(markers)]) for i, m in enumerate(methods)}
    out["Retrain"] = ("black", "*")
    return out


def _time_vs_gap(figure: Any, methods: Sequence[str], scenarios: Sequence[str], tim: dict, gap: dict) -> Any:
    """One panel per scenario: each method one point (its own colour and marker, named in one shared legend, so no
    labels overlap), error bars of one std over seeds clipped at 0, the Pareto front ringed and joined."""
    style = _style(methods)
    panels = []
    for s in scenarios:
        pts = [(m, tim.get((s, m)), gap.get((s, m))) for m in [*methods, "Retrain"]]
        pts = [(m, t, g) for m, t, g in pts if t and g and t[0] > 0]
        if pts:
            panels.append((s, pts))
    if not panels:
        return None
    fig = figure(figsize=(4.2 * len(panels) + 2.4, 4.4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, (s, pts) in zip(axes, panels, strict=True):
        for m, t, g in pts:
            colour, marker = style[m]
            ax.errorbar(t[0], g[0], xerr=[[min(t[1], t[0] * 0.999)], [t[1]]], yerr=_clipped([g[0]], [g[1]]),
                        fmt=marker, color=colour, markersize=7, capsize=2, elinewidth=0.8, label=m)
        front = pareto_front({m: (t[0], g[0]) for m, t, g in pts})
        on_front = sorted((t[0], g[0]) for m, t, g in pts if m in front)
        if on_front:
            ax.step(*zip(*on_front), where="post", linestyle="--", linewidth=0.8, color="grey")
            ax.scatter(*zip(*on_front), s=220, facecolors="none", edgecolors="grey", linewidths=1.0)
        ax.set_xscale("log")
        ax.set_title(s)
        ax.set_xlabel("unlearning time (s, log; Retrain: training)")
        ax.grid(alpha=0.3)
    top = max(g[0] + g[1] for _, pts in panels for _, _, g in pts)
    axes[0].set_ylim(0, 1.05 * top if top > 0 else 1.0)  # shared: gaps compare across scenarios
    axes[0].set_ylabel("average gap to Retrain (points, lower is better)")
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.legend(handles.values(), handles.keys(), loc="outside right upper", fontsize=8, title="method (ringed: Pareto)")
    fig.suptitle("Cost against distance to the gold model")
    return fig
