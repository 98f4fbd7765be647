"""The tuning objective: one trial = one method with the trial's settings on every tuning group, scored by the average
gap to Retrain exactly as the benchmark report defines it (:func:`lightning_unlearn.benchmark.report.add_gaps`: mean
over Acc D_r, Acc D_f, Acc test_r, Acc test_f and MIA-efficacy of ``|metric - Retrain's|``, in points), averaged over
the groups. The groups' original and gold models come from the benchmark's training and model cache; their Original
and Retrain rows are evaluated once (:func:`prepare`) and reused by every trial.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from lightning_unlearn.search_space import EPOCHS_KEY

__all__ = ["TuneRunError", "prepare", "reference_key", "run_trial", "trainer_key", "trial_spec"]


class TuneRunError(RuntimeError):
    """A step the tuning cannot go on without failed (training a tuning group's model): ``main`` prints one line."""


def _threads(cfg: Any) -> None:
    if cfg.trainer.num_threads:
        import torch

        torch.set_num_threads(int(cfg.trainer.num_threads))


def train_cached_model(cfg: Any, job: Any) -> float:
    """A job: train one original or gold model into the benchmark's cache (quietly, with the configured threads)."""
    from lightning_unlearn.tune import _bench as B

    _threads(cfg)
    with B.quiet(cfg.quiet):
        return float(B.train_model(cfg, job))


def trainer_key(cfg: Any) -> dict[str, Any]:
    """The benchmark's trainer settings a run's result depends on (precision, accelerator, deterministic, ...), as the
    benchmark's ``run_hash`` keys them: every field but ``num_threads``."""
    return {k: v for k, v in asdict(cfg.trainer).items() if k != "num_threads"}


def reference_key(cfg: Any, group: Any, which: str) -> str:
    """The cache key of a group's Original or Retrain row: a changed evaluator or trainer setting evaluates it anew."""
    from lightning_unlearn.tune import _bench as B

    return B.config_hash({"which": which, "original": group.original_key, "gold": group.gold_key,
                          "hashes": group.hashes, "evaluator": B.evaluator_settings(cfg.evaluator),
                          "trainer": trainer_key(cfg)})  # fmt: skip


def _reference(cfg: Any, group: Any, which: str, original: Path, gold: Path, dm: Any) -> dict[str, Any]:
    from lightning_unlearn.tune import _bench as B

    run_dir = group.dir / B.slug(which)
    key = reference_key(cfg, group, which)
    path = run_dir / "reference.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            if data.get("key") == key:
                return dict(data["row"])
        except (json.JSONDecodeError, KeyError, TypeError):
            pass
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    row = B.run_reference(cfg, group, which, original, gold, run_dir, dm)
    _write_json(path, {"key": key, "row": row})
    return row


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    tmp.replace(path)


def prepare(cfg: Any, executor: Any, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Train the tuning groups' missing models (as executor jobs), evaluate their Original and Retrain rows once, and
    return one context per group for the trials."""
    from lightning_unlearn.executors import Job
    from lightning_unlearn.tune import _bench as B
    from lightning_unlearn.tune.config import group_record

    bench, plan = cfg.bench, cfg.plan
    todo = [j for j in plan.models.values() if B.cache_problem(j) is not None]
    if todo:
        log(f"training {len(todo)} model(s) of the tuning targets ({len(plan.models) - len(todo)} cached) ...")
        jobs = [Job(key=j.dir.name, fn=train_cached_model, kwargs={"cfg": bench, "job": j},
                    description=f"{j.role} model of {j.group.describe()}") for j in todo]  # fmt: skip
        for res in executor.map(jobs):
            if not res.ok:
                raise TuneRunError(f"training model {res.key} failed: {res.error}; fix the cause and run the same "
                                   "command again (models and trials already finished are reused)")
    _threads(bench)
    contexts = []
    with B.quiet(bench.quiet):
        for g in plan.groups:
            ojob, gjob = plan.models[g.original_key], plan.models[g.gold_key]
            dm = B.build_datamodule(bench, g.target, g.seed)
            dm.setup("fit")
            original = B.group_original(bench, g, ojob, dm)
            rows = {w: _reference(bench, g, w, original, gjob.ckpt, dm) for w in (B.ORIGINAL, B.RETRAIN)}
            gap = B.add_gaps([dict(rows[B.RETRAIN]), dict(rows[B.ORIGINAL])])[1]["avg_gap"]
            contexts.append({
                "group": g, "record": group_record(g), "original": str(original), "gold": str(gjob.ckpt),
                "updates": str(ojob.updates_path(g.forget_hash)) if ojob.record_forget else None,
                "retrain_row": rows[B.RETRAIN], "original_gap": gap,
            })  # fmt: skip
            log(f"{g.describe()}: Original's gap to Retrain {gap:.2f}")
    return contexts


def trial_spec(spec: Any, params: dict[str, Any]) -> Any:
    """The benchmark's method entry with a trial's parameters (``max_epochs`` is the run's epochs)."""
    init = {**spec.init_args, **{k: v for k, v in params.items() if k != EPOCHS_KEY}}
    return replace(spec, init_args=init, max_epochs=int(params.get(EPOCHS_KEY, spec.max_epochs)))


def run_trial(
    bench: Any,
    spec: Any,
    params: dict[str, Any],
    contexts: Sequence[dict[str, Any]],
    trial_dir: str,
    objectives: Sequence[str] = ("gap",),
    study_name: str | None = None,
    storage: str | None = None,
    trial_id: int | None = None,
    pruner: str = "none",
) -> dict[str, Any]:
    """A job: the method with ``params`` on every group in turn; after each, the running mean gap is reported to the
    trial (step = groups done) and a pruned trial stops there. Returns ``{"values", "groups"}`` or ``{"pruned"}``."""
    from lightning_unlearn.tune import _bench as B
    from lightning_unlearn.tune.study import make_pruner, open_trial

    _threads(bench)
    run_spec = trial_spec(spec, params)
    trial = None
    if pruner != "none" and storage and study_name and trial_id is not None and len(objectives) == 1:
        trial = open_trial(study_name, storage, trial_id, make_pruner(pruner))
    out = Path(trial_dir)
    if out.exists():
        shutil.rmtree(out)  # an interrupted attempt of this trial
    out.mkdir(parents=True)
    groups: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with B.quiet(bench.quiet):
        for step, ctx in enumerate(contexts):
            g = ctx["group"]
            dm = B.build_datamodule(bench, g.target, g.seed)
            dm.setup("fit")
            run_dir = out / B.slug(g.scenario) / g.slug / f"seed{g.seed}"
            run_dir.mkdir(parents=True)
            updates = Path(ctx["updates"]) if ctx["updates"] and run_spec.needs_recorded_updates else None
            row = B.run_method(bench, g, run_spec, Path(ctx["original"]), Path(ctx["gold"]), run_dir, dm, updates)
            gap = B.add_gaps([dict(ctx["retrain_row"]), dict(row)])[1]["avg_gap"]
            groups.append({**ctx["record"], "used_hashes": dict(dm.splits.hashes()), "gap": gap,
                           "unlearn_time_s": row.get("unlearn_time_s"),
                           "row": {k: row.get(k) for k in (*B_GAP_KEYS, "unlearn_time_s")}})  # fmt: skip
            del dm
            if gap is None:
                raise RuntimeError(f"{g.describe()}: no average gap (a metric of the gap is missing)")
            running = sum(x["gap"] for x in groups) / len(groups)
            if trial is not None and step < len(contexts) - 1:
                trial.report(running, step)
                if trial.should_prune():
                    _write_json(out / "trial.json", {"params": params, "pruned_at": step, "groups": groups})
                    return {"pruned": True, "step": step, "groups": groups}
    gap_mean = sum(x["gap"] for x in groups) / len(groups)
    times = [float(x["unlearn_time_s"] or 0.0) for x in groups]
    values = [gap_mean] if list(objectives) == ["gap"] else [gap_mean, sum(times) / len(times)]
    result = {"values": values, "groups": groups, "wall_s": time.perf_counter() - t0}
    _write_json(out / "trial.json", {"params": params, **result})
    return result


B_GAP_KEYS = ("acc/retain", "acc/forget", "acc/test_retain", "acc/test_forget", "mia/efficacy")
