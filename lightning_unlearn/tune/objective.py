"""The tuning objective: one trial = one method with the trial's settings on every tuning group, scored by the average
gap to Retrain exactly as the benchmark report defines it (:func:`lightning_unlearn.benchmark.add_gaps`: mean over
Acc D_r, Acc D_f, Acc test_r, Acc test_f and MIA-efficacy of ``|metric - Retrain's|``, in points), averaged over the
groups. The groups' original and gold models come from the benchmark's training and model cache; their Original and
Retrain rows are evaluated once (:func:`prepare`) and reused by every trial.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from lightning_unlearn.benchmark import BenchmarkConfig, Group, add_gaps, build_datamodule, run_method, run_reference
from lightning_unlearn.benchmark.cache import cache_problem, group_original
from lightning_unlearn.benchmark.jobs import train_job
from lightning_unlearn.benchmark.stats import GAP_COLUMNS
from lightning_unlearn.executors import Executor, Job
from lightning_unlearn.experiment import (
    ORIGINAL,
    RETRAIN,
    MethodSpec,
    RunError,
    fresh_dir,
    quiet,
    read_json,
    row_key,
    set_threads,
    slug,
    write_json,
)
from lightning_unlearn.search_space import EPOCHS_KEY
from lightning_unlearn.tune.config import TuneConfig, group_record
from lightning_unlearn.tune.study import make_pruner, open_trial

__all__ = ["TuneRunError", "prepare", "reference_key", "run_trial", "trial_spec"]

#: A step the tuning cannot go on without failed (training a tuning group's model): the older name of
#: :class:`~lightning_unlearn.experiment.RunError`.
TuneRunError = RunError


def reference_key(cfg: BenchmarkConfig, group: Group, which: str) -> str:
    """The cache key of a group's Original or Retrain row: a changed evaluator or trainer setting evaluates it anew."""
    return row_key(which=which, original=group.original_key, gold=group.gold_key, hashes=group.hashes,
                   evaluator=cfg.evaluator, trainer=cfg.trainer)


def _reference(cfg: BenchmarkConfig, group: Group, which: str, original: Path, gold: Path, dm: Any) -> dict[str, Any]:
    run_dir = group.dir / slug(which)
    key = reference_key(cfg, group, which)
    path = run_dir / "reference.json"
    data = read_json(path)
    if isinstance(data, dict) and data.get("key") == key and isinstance(data.get("row"), dict):
        return dict(data["row"])
    fresh_dir(run_dir)
    row = run_reference(cfg, group, which, original, gold, run_dir, dm)
    write_json(path, {"key": key, "row": row})
    return row


def prepare(cfg: TuneConfig, executor: Executor, threads: int | None, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Train the tuning groups' missing models (as executor jobs, ``threads`` torch threads each), evaluate their
    Original and Retrain rows once, and return one context per group for the trials."""
    bench, plan = cfg.bench, cfg.plan
    todo = [j for j in plan.models.values() if cache_problem(j) is not None]
    if todo:
        log(f"training {len(todo)} model(s) of the tuning targets ({len(plan.models) - len(todo)} cached) ...")
        jobs = [Job(key=j.dir.name, fn=train_job, kwargs={"cfg": bench, "job": j, "threads": threads},
                    description=f"{j.role} model of {j.group.describe()}") for j in todo]
        for res in executor.map(jobs):
            if not res.ok:
                raise RunError(f"training model {res.key} failed: {res.error}; fix the cause and run the same "
                               "command again (models and trials already finished are reused)")
    set_threads(bench.trainer.num_threads)
    contexts = []
    with quiet(bench.quiet):
        for g in plan.groups:
            ojob, gjob = plan.models[g.original_key], plan.models[g.gold_key]
            dm = build_datamodule(bench, g.target, g.seed)
            dm.setup("fit")
            original = group_original(bench, g, ojob, dm)
            rows = {w: _reference(bench, g, w, original, gjob.ckpt, dm) for w in (ORIGINAL, RETRAIN)}
            gap = add_gaps([dict(rows[RETRAIN]), dict(rows[ORIGINAL])])[1]["avg_gap"]
            contexts.append({
                "group": g, "record": group_record(g), "original": str(original), "gold": str(gjob.ckpt),
                "updates": str(ojob.updates_path(g.forget_hash)) if ojob.record_forget else None,
                "retrain_row": rows[RETRAIN], "original_gap": gap,
            })
            log(f"{g.describe()}: Original's gap to Retrain {gap:.2f}")
    return contexts


def trial_spec(spec: MethodSpec, params: dict[str, Any]) -> MethodSpec:
    """The benchmark's method entry with a trial's parameters (``max_epochs`` is the run's epochs)."""
    init = {**spec.init_args, **{k: v for k, v in params.items() if k != EPOCHS_KEY}}
    return replace(spec, init_args=init, max_epochs=int(params.get(EPOCHS_KEY, spec.max_epochs)))


def run_trial(
    bench: BenchmarkConfig,
    spec: MethodSpec,
    params: dict[str, Any],
    contexts: Sequence[dict[str, Any]],
    trial_dir: str,
    objectives: Sequence[str] = ("gap",),
    study_name: str | None = None,
    storage: str | None = None,
    trial_id: int | None = None,
    pruner: str = "none",
    threads: int | None = None,
) -> dict[str, Any]:
    """A job: the method with ``params`` on every group in turn; after each, the running mean gap is reported to the
    trial (step = groups done) and a pruned trial stops there. Returns ``{"values", "groups"}`` or ``{"pruned"}``."""
    set_threads(threads)
    run_spec = trial_spec(spec, params)
    trial = None
    if pruner != "none" and storage and study_name and trial_id is not None and len(objectives) == 1:
        trial = open_trial(study_name, storage, trial_id, make_pruner(pruner))
    out = fresh_dir(trial_dir)  # an interrupted attempt of this trial
    groups: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with quiet(bench.quiet):
        for step, ctx in enumerate(contexts):
            g = ctx["group"]
            dm = build_datamodule(bench, g.target, g.seed)
            dm.setup("fit")
            run_dir = out / slug(g.scenario) / g.slug / f"seed{g.seed}"
            run_dir.mkdir(parents=True)
            updates = Path(ctx["updates"]) if ctx["updates"] and run_spec.needs_recorded_updates else None
            row = run_method(bench, g, run_spec, Path(ctx["original"]), Path(ctx["gold"]), run_dir, dm, updates)
            gap = add_gaps([dict(ctx["retrain_row"]), dict(row)])[1]["avg_gap"]
            groups.append({**ctx["record"], "used_hashes": dict(dm.splits.hashes()), "gap": gap,
                           "unlearn_time_s": row.get("unlearn_time_s"),
                           "row": {k: row.get(k) for k in (*GAP_COLUMNS, "unlearn_time_s")}})
            del dm
            if gap is None:
                raise RuntimeError(f"{g.describe()}: no average gap (a metric of the gap is missing)")
            running = sum(x["gap"] for x in groups) / len(groups)
            if trial is not None and step < len(contexts) - 1:
                trial.report(running, step)
                if trial.should_prune():
                    write_json(out / "trial.json", {"params": params, "pruned_at": step, "groups": groups})
                    return {"pruned": True, "step": step, "groups": groups}
    gap_mean = sum(x["gap"] for x in groups) / len(groups)
    times = [float(x["unlearn_time_s"] or 0.0) for x in groups]
    values = [gap_mean] if list(objectives) == ["gap"] else [gap_mean, sum(times) / len(times)]
    result = {"values": values, "groups": groups, "wall_s": time.perf_counter() - t0}
    write_json(out / "trial.json", {"params": params, **result})
    return result
