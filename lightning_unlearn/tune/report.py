"""What ``tune`` writes at the end: ``best/<method>.yaml`` and ``tune.md`` (best value, trials, Optuna's history and
importance plots per method, drawn with its matplotlib backend)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from lightning_unlearn.experiment import json_text, now, write_best, write_output
from lightning_unlearn.search_space import EPOCHS_KEY

__all__ = ["OUTPUT_FILES", "PLOTS", "summarise", "write_best_file", "write_report"]

#: Where the plots go, under output_dir.
PLOTS = "plots"
#: What the tuner writes at the top of its output_dir (through ``experiment.write_output``: never over a file it did
#: not write); ``best/<method>.yaml`` has its own rule (its tuning record, ``experiment.check_writable``).
OUTPUT_FILES = ("config.yaml", "tune.md", "tune.json", f"{PLOTS}/*.png")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def summarise(study: Any, mt: Any, contexts: list[dict[str, Any]], cfg: Any) -> dict[str, Any]:
    """The study's trials, its best trial (lowest gap; with [gap, time], the lowest-gap trial of the Pareto front) and
    the trial at the benchmark's configured settings."""
    from optuna.trial import TrialState  # deferred: start-up (optuna only once studies run)

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = front = None
    if complete:
        front = study.best_trials if len(cfg.objectives) > 1 else [study.best_trial]
        best = min(front, key=lambda t: t.values[0])
    default = next((t for t in complete if t.user_attrs.get("default")), None)
    rows = [{"number": t.number, "state": t.state.name.lower(), "values": t.values, "params": t.params,
             "seconds": (t.datetime_complete - t.datetime_start).total_seconds()
             if t.datetime_complete and t.datetime_start else None,
             "default": bool(t.user_attrs.get("default")), "error": t.user_attrs.get("error"),
             "interrupted": bool(t.user_attrs.get("interrupted"))} for t in trials]
    gaps = [c["original_gap"] for c in contexts if c.get("original_gap") is not None]
    return {
        "method": mt.name, "class_path": mt.spec.class_path, "study": study.study_name,
        "space": {k: p.describe() for k, p in mt.space.items()}, "n_trials": mt.n_trials,
        "counts": {s: sum(r["state"] == s for r in rows) for s in ("complete", "pruned", "fail", "running", "waiting")},
        "best": None if best is None else {"number": best.number, "values": best.values, "params": best.params},
        "front": [{"number": t.number, "values": t.values, "params": t.params} for t in (front or [])],
        "default": None if default is None else {"number": default.number, "values": default.values,
                                                 "params": default.params},
        "trials": rows, "tuning_groups": [c["record"] for c in contexts],
        "original_gap": sum(gaps) / len(gaps) if gaps else None, "_study": study,
    }


def write_best_file(path: Path, summary: dict[str, Any], mt: Any, cfg: Any) -> Path:
    """``best/<method>.yaml`` of a finished study: its best trial's settings and the tuning record."""
    best = summary["best"]
    params = dict(best["params"])
    init = {**mt.spec.init_args, **{k: v for k, v in params.items() if k != EPOCHS_KEY}}
    epochs = int(params.get(EPOCHS_KEY, mt.spec.max_epochs))
    default = summary["default"]
    record = {
        "method": mt.name, "class_path": mt.spec.class_path, "study": summary["study"], "trial": best["number"],
        "objectives": cfg.objectives, "values": best["values"], "params": params,
        "default_values": None if default is None else default["values"],
        "benchmark": cfg.benchmark_path, "tuning_groups": summary["tuning_groups"],
        "written_at": now(),
    }
    dv = "" if default is None else f" (configured settings: {default['values'][0]:.2f})"
    header = [
        f"Average gap to Retrain {best['values'][0]:.2f}{dv} over {len(summary['tuning_groups'])} tuning target(s) "
        f"(study {summary['study']}, trial {best['number']}).",
        "unlearn: lightning_unlearn unlearn -c <data.yaml> -c THIS_FILE --original_ckpt <original.ckpt>",
        "benchmark: `tuned: {dir: <this best/ directory>, mode: both}` (docs/tuning.md)",
    ]
    return write_best(path, method=mt.name, class_path=mt.spec.class_path, init_args=init, max_epochs=epochs,
                      trainer=mt.spec.trainer, record=record, header=header)


def _plots(study: Any, out: Path, stem: str, multi: bool) -> tuple[list[str], list[str]]:
    """Optuna's optimisation history and parameter importances (matplotlib backend) in ``out/plots/``; returns
    (files, notes)."""
    import matplotlib  # deferred: start-up (matplotlib and optuna's plots only when the report is written)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    files, notes = [], []
    target = (lambda t: t.values[0]) if multi else None
    kw = {"target": target, "target_name": "average gap"} if multi else {}
    for kind, fn in (("history", ovm.plot_optimization_history), ("importance", ovm.plot_param_importances)):
        name = f"{stem}-{kind}.png"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = fn(study, **kw)
                fig = (ax if not hasattr(ax, "__len__") else ax[0]).figure
                fig.set_size_inches(7, 4)
                fig.tight_layout()
                write_output(out, f"{PLOTS}/{name}", lambda f, fig=fig: fig.savefig(f, format="png", dpi=90))
                plt.close(fig)
            files.append(name)
        except Exception as err:  # noqa: BLE001 - a plot that cannot be drawn (e.g. < 2 finished trials) is noted
            notes.append(f"no {kind} plot ({type(err).__name__}: {str(err)[:120]})")
    return files, notes


def write_report(out: Path, summaries: dict[str, dict[str, Any]], cfg: Any, contexts: list[dict[str, Any]],
                 seconds: float) -> Path:
    """``tune.md`` (and ``tune.json`` without the study objects, ``plots/``)."""
    objs = " and ".join(cfg.objectives)
    lines = [
        "# Tuning", "",
        f"Benchmark `{cfg.benchmark_path}`; objective: {objs} (average gap to Retrain as in the benchmark report: the "
        "mean over Acc D_r, Acc D_f, Acc test_r, Acc test_f and MIA-efficacy of |metric - Retrain's|, in points, "
        f"averaged over the tuning targets). Sampler {cfg.sampler} (seed {cfg.seed}), pruner {cfg.pruner}. "
        f"This start: {seconds:.0f} s.", "",
        "## Tuning targets (disjoint from the evaluation targets)", "",
        "| scenario | target | seed | forget sha256 | Original's gap |", "|---|---|---:|---|---:|",
    ]
    for c in contexts:
        r = c["record"]
        lines.append(f"| {r['scenario']} | `{json.dumps(r['target'], sort_keys=True)}` | {r['seed']} | "
                     f"`{r['hashes']['forget'][:12]}` | {_fmt(c['original_gap'])} |")
    lines += ["", f"Evaluation targets of the benchmark ({len(cfg.evaluation_hashes)} groups), none of whose forget "
              "sets is a tuning one: " + ", ".join(f"`{e['hashes']['forget'][:8]}`" for e in cfg.evaluation_hashes), "",
              "## Summary", "",
              "| Method | configured settings | tuned | best trial | trials (complete/pruned/failed) |",
              "|---|---:|---:|---|---:|"]
    for name, s in summaries.items():
        best, dflt, c = s["best"], s["default"], s["counts"]
        d_val = _fmt(dflt["values"][0]) if dflt else "-"
        b_val, b_par = (_fmt(best["values"][0]), _params(best["params"])) if best else ("-", "-")
        lines.append(f"| {name} | {d_val} | {b_val} | {b_par} | {c['complete']}/{c['pruned']}/{c['fail']} |")
    for name, s in summaries.items():
        lines += ["", f"## {name}", "", f"Study `{s['study']}`; search space: "
                  + ", ".join(f"{k} {_space(v)}" for k, v in s["space"].items()) + "."]
        if s["best"] is None:
            lines += ["", "No complete trial."]
        else:
            lines += ["", f"Best: trial {s['best']['number']}, {objs} "
                      + ", ".join(_fmt(v) for v in s["best"]["values"]) + f" with {_params(s['best']['params'])}."]
        if len(cfg.objectives) > 1 and s["front"]:
            lines += ["", "Pareto front (gap, unlearning time s): " + "; ".join(
                f"trial {t['number']} ({_fmt(t['values'][0])}, {_fmt(t['values'][1])})" for t in s["front"]) + "."]
        files, notes = _plots(s["_study"], out, name.replace(" ", "_"), len(cfg.objectives) > 1)
        lines += [""] + [f"![{f}]({PLOTS}/{f})" for f in files] + [f"*{n}*" for n in notes]
        lines += ["", "| trial | state | " + " | ".join(cfg.objectives) + " | params | s |",
                  "|---:|---|" + "---:|" * len(cfg.objectives) + "---|---:|"]
        for r in s["trials"]:
            vals = r["values"] or [None] * len(cfg.objectives)
            state = r["state"] + (" (configured)" if r["default"] else "")
            state += " (interrupted)" if r["interrupted"] else ""
            lines.append(f"| {r['number']} | {state} | " + " | ".join(_fmt(v) if v is not None else "-" for v in vals)
                         + f" | {_params(r['params'])} | {_fmt(r['seconds']) if r['seconds'] is not None else '-'} |")
    path = write_output(out, "tune.md", "\n".join(lines) + "\n")
    clean = {k: {kk: vv for kk, vv in v.items() if kk != "_study"} for k, v in summaries.items()}
    write_output(out, "tune.json", json_text(clean))
    return path


def _params(p: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in p.items())


def _space(d: dict[str, Any]) -> str:
    if d["type"] == "categorical":
        return "{" + ", ".join(map(str, d["choices"])) + "}"
    return f"[{_fmt(d['low'])}, {_fmt(d['high'])}]" + (" log" if d.get("log") else "")
