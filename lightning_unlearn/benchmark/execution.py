"""Running a benchmark: :func:`train_model` (original and gold models), :func:`run_method` (one method on one group),
:func:`run_reference` (the Original and Retrain rows), :func:`run_benchmark` (all of it, resumed from disk) and
:func:`main` (the ``lightning_unlearn benchmark`` command)."""

from __future__ import annotations

import inspect
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_unlearn.benchmark.cache import (
    base_row,
    cache_problem,
    file_sha256,
    finite,
    group_original,
    now,
    read_json,
    read_result,
    run_hash,
    scalars,
    write_config,
    write_json,
)
from lightning_unlearn.benchmark.config import BenchmarkConfig, build_parser, config_from_namespace
from lightning_unlearn.benchmark.plan import (
    Group,
    ModelJob,
    Plan,
    build_backbone_for,
    build_datamodule,
    eval_device,
    make_plan,
    trainer_kwargs,
)
from lightning_unlearn.benchmark.progress import Progress, hms, quiet, short_summary
from lightning_unlearn.benchmark.specs import (
    BASELINE_METHODS,
    ORIGINAL,
    RESULT_FILE,
    RETRAIN,
    BenchmarkConfigError,
    MethodSpec,
)
from lightning_unlearn.executors import is_interrupt
from lightning_unlearn.provenance import run_stamp

__all__ = ["main", "run_benchmark", "run_method", "run_reference", "train_model"]


def train_model(cfg: BenchmarkConfig, job: ModelJob) -> float:
    """Train ``job``'s model (a ``Classifier`` on D for the original, on D_r for the gold) and save it with
    ``trainer.save_checkpoint``; for the original, one ``AmnesiacRecorder`` per forget set that needs it. Returns the
    training time recorded in the checkpoint (``train_time_s``)."""
    import lightning.pytorch as pl

    from lightning_unlearn.methods import AmnesiacRecorder, Classifier

    g = job.group
    if job.dir.exists():
        shutil.rmtree(job.dir)  # an unfinished earlier attempt (no info.json) or a partial recording
    job.dir.mkdir(parents=True)
    dm = build_datamodule(cfg, g.target, g.seed, train_on="all" if job.role == "original" else "retain")
    pl.seed_everything(g.seed, workers=True, verbose=False)
    model = Classifier(build_backbone_for(cfg, dm), **cfg.training.classifier_kwargs())
    recorders = [
        AmnesiacRecorder(sensitive=[int(i) for i in idx], path=str(job.updates_path(h)))
        for h, idx in sorted(job.record_forget.items())
    ]
    trainer = pl.Trainer(max_epochs=cfg.training.epochs(job.role), callbacks=recorders, **trainer_kwargs(cfg, job.dir))
    trainer.fit(model, datamodule=dm)
    tmp = job.dir / "model.ckpt.tmp"
    trainer.save_checkpoint(tmp)
    os.replace(tmp, job.ckpt)
    train_time = float(model.train_time_s())
    digests = {f.name: file_sha256(f) for f in (job.ckpt, *(job.updates_path(h) for h in job.record_forget))}
    write_json(
        job.dir / "info.json",
        {"role": job.role, "key": job.key, "key_content": job.key_content, "train_time_s": train_time,
         "epochs": cfg.training.epochs(job.role), "first_group": g.describe(),
         "recorded_forget_sets": sorted(job.record_forget), "finished_at": now(), "sha256": digests},
    )  # fmt: skip
    return train_time


def run_method(cfg: BenchmarkConfig, group: Group, spec: MethodSpec, original: Path, gold: Path, run_dir: Path,
               dm: Any, updates: Path | None, cache: Any = None) -> dict[str, Any]:  # fmt: skip
    """One method on one group, through ``UnlearnTrainer.unlearn`` with an ``UnlearningEvaluator``; returns the row.
    ``cache``: the group's ``evaluation.ReferenceCache`` (reference outputs and gold metrics computed once)."""
    import lightning.pytorch as pl

    from lightning_unlearn.trainer import UnlearnTrainer
    from lightning_unlearn.evaluation import UnlearningEvaluator

    cls = spec.resolve()
    kwargs = dict(spec.init_args)
    params = inspect.signature(cls).parameters
    if "seed" in params and "seed" not in kwargs:
        kwargs["seed"] = group.seed
    if updates is not None:
        kwargs["updates"] = str(updates)
    pl.seed_everything(group.seed, workers=True, verbose=False)
    method = cls(**kwargs)
    evaluator = UnlearningEvaluator(output_dir=str(run_dir), **cfg.evaluator)
    evaluator.reference_cache = cache
    run_kwargs = {**trainer_kwargs(cfg, run_dir), **spec.trainer}
    trainer = UnlearnTrainer(max_epochs=spec.max_epochs, callbacks=[evaluator], **run_kwargs)
    out = run_dir / "unlearned.ckpt"
    # a benchmark measures methods: a model a method destroyed is a result (its D_r accuracy is in the table), not an
    # error; NaN/inf weights still fail the row (docs/safety.md)
    summary = trainer.unlearn(method, dm, original_ckpt=str(original), gold_ckpt=str(gold), output=str(out),
                              retain_collapse=None)  # fmt: skip
    if not cfg.keep_checkpoints and out.exists():
        out.unlink()
    row = base_row(group, spec.name, "method", spec.class_path)
    row.update(scalars(evaluator.results))
    row["unlearn_time_s"] = finite(float(summary["unlearn_time_s"]))
    return row


def run_reference(cfg: BenchmarkConfig, group: Group, which: str, original: Path, gold: Path, run_dir: Path,
                  dm: Any, cache: Any = None) -> dict[str, Any]:  # fmt: skip
    """Evaluate the original ("Original") or the gold model ("Retrain", its training time as its cost)."""
    from lightning_unlearn.checkpoints import load_backbone
    from lightning_unlearn.evaluation import UnlearningEvaluator

    path = original if which == ORIGINAL else gold
    backbone, meta = load_backbone(path, dm, what=f"{which.lower()} checkpoint {path}")
    evaluator = UnlearningEvaluator(gold=str(gold), output_dir=str(run_dir), **cfg.evaluator)
    evaluator.reference_cache = cache
    t = float(meta["train_time_s"]) if which == RETRAIN and meta.get("train_time_s") is not None else None
    results = evaluator.evaluate(backbone, dm, device=eval_device(cfg), unlearn_time_s=t)
    row = base_row(group, which, "reference", None)
    row.update(scalars(results))
    row["unlearn_time_s"] = t
    return row


def run_benchmark(cfg: BenchmarkConfig, stream: Any = None) -> dict[str, Any]:
    """Run (or resume) the benchmark and write every output. Returns ``{"rows", "failed", "output_dir", "files"}``."""
    from lightning_unlearn.benchmark import report

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_config(cfg, out)
    plan = make_plan(cfg)
    from lightning_unlearn.tune.apply import check_tuned_targets

    check_tuned_targets(cfg.methods, plan.groups, BenchmarkConfigError)  # no tuned row on a tuning target
    names = [ORIGINAL, RETRAIN, *(m.name for m in cfg.methods)]
    specs = {m.name: m for m in cfg.methods}
    progress = Progress([], stream=stream)
    if cfg.report_only:
        rows, failed = [], []
        for g in plan.groups:
            for _, d in plan.run_dirs(g, cfg.rows_for(g.scenario)):
                row = read_json(d / RESULT_FILE)
                err = read_json(d / "error.json") if row is None else None
                if row is not None:
                    rows.append(row)
                elif err is not None:
                    failed.append(err)
        files = report.write_all(rows, out, cfg, failed=failed)
        missing = sum(len(cfg.rows_for(g.scenario)) for g in plan.groups) - len(rows) - len(failed)
        progress.log(
            f"report rebuilt from {len(rows)} finished runs ({len(failed)} failed, {missing} not run): "
            f"{out / 'report.md'}"
        )
        return {"rows": rows, "failed": failed, "output_dir": str(out), "files": files}

    if cfg.trainer.num_threads:
        import torch

        torch.set_num_threads(int(cfg.trainer.num_threads))
    to_train = [j for j in plan.models.values() if cache_problem(j) is not None]
    steps: list[tuple[str, str]] = [("train", j.role) for j in to_train]
    for g in plan.groups:
        for m in cfg.rows_for(g.scenario):
            steps.append(("eval", "reference") if m in BASELINE_METHODS else ("method", m))
    progress = Progress(steps, stream=stream)
    n_runs = sum(len(cfg.rows_for(g.scenario)) for g in plan.groups)
    progress.log(
        f"{len(cfg.scenarios)} scenario(s), {len(plan.groups)} (scenario, target, seed) groups x <= {len(names)} rows "
        f"({', '.join(names)}) = {n_runs} runs; {len(plan.models)} models ({len(to_train)} to train, "
        f"{len(plan.models) - len(to_train)} cached) -> {out}"
    )

    rows: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    try:
        _run_groups(cfg, plan, names, specs, progress, rows, failed)
    except (KeyboardInterrupt, SystemExit) as err:
        if not is_interrupt(err):
            raise
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning ignores SIGINT after catching one
        report.write_all(rows, out, cfg, failed=failed)
        progress.log(
            f"interrupted: the {len(rows)} finished runs are in {out / 'results.csv'} and {out / 'report.md'}; run "
            "the same command again to resume (finished runs and trained models are reused)"
        )
        raise KeyboardInterrupt from None
    files = report.write_all(rows, out, cfg, failed=failed)
    progress.log(
        f"done in {hms(time.perf_counter() - progress.start)}: {len(rows)} runs"
        + (f", {len(failed)} FAILED (see error.json in their run directories)" if failed else "")
        + f". Report: {out / 'report.md'}"
    )
    return {"rows": rows, "failed": failed, "output_dir": str(out), "files": files}


def _run_groups(
    cfg: BenchmarkConfig,
    plan: Plan,
    names: list[str],
    specs: dict[str, MethodSpec],
    progress: Progress,
    rows: list[dict[str, Any]],
    failed: list[dict[str, Any]],
) -> None:
    """Every group in turn: its models (unless cached), then each row (unless finished); appends to ``rows``/``failed``."""
    from lightning_unlearn.benchmark import report

    out = Path(cfg.output_dir)
    with quiet(cfg.quiet):
        for group in plan.groups:
            ojob, gjob = plan.models[group.original_key], plan.models[group.gold_key]
            for job in (ojob, gjob):
                problem = cache_problem(job)
                if problem is None:
                    continue
                if problem != "not trained":
                    progress.log(f"cached {job.role} model {job.dir.name} is unusable ({problem}); retraining it")
                progress.log(f"training the {job.role} model for {group.describe()} ({cfg.training.epochs(job.role)} "
                             f"epochs) ...")  # fmt: skip
                t0 = time.perf_counter()
                train_model(cfg, job)
                progress.finish("train", job.role, f"{job.role} model ({group.describe()})",
                                time.perf_counter() - t0)  # fmt: skip
            dm = build_datamodule(cfg, group.target, group.seed)
            dm.setup("fit")
            from lightning_unlearn.evaluation import ReferenceCache

            refs = ReferenceCache()  # one per group: its runs share the gold/original/random outputs and gold metrics
            original = group_original(cfg, group, ojob, dm)
            reused = 0
            for name, run_dir in plan.run_dirs(group, cfg.rows_for(group.scenario)):
                spec = specs.get(name)
                family, kind = ("eval", "reference") if spec is None else ("method", name)
                what = f"{group.describe()} / {name}"
                rhash = run_hash(cfg, group, name, spec)
                done = read_result(run_dir, rhash)
                if done is not None:
                    rows.append(done)
                    reused += 1
                    progress.finish(family, kind, what, None, show=False)
                    continue
                if run_dir.exists():
                    shutil.rmtree(run_dir)  # unfinished or made with another configuration
                run_dir.mkdir(parents=True)
                t0 = time.perf_counter()
                try:
                    if spec is None:
                        row = run_reference(cfg, group, name, original, gjob.ckpt, run_dir, dm, cache=refs)
                    else:
                        updates = ojob.updates_path(group.forget_hash) if spec.needs_recorded_updates else None
                        row = run_method(cfg, group, spec, original, gjob.ckpt, run_dir, dm, updates, cache=refs)
                except Exception as err:  # noqa: BLE001 - recorded, reported, and retried on the next start
                    wall = time.perf_counter() - t0
                    info = {**base_row(group, name, "reference" if spec is None else "method",
                                        spec.class_path if spec else None),  # fmt: skip
                            "status": "failed", "error": f"{type(err).__name__}: {err}", "wall_s": wall,
                            "traceback": traceback.format_exc(), "run_dir": str(run_dir)}  # fmt: skip
                    write_json(run_dir / "error.json", info)
                    failed.append(info)
                    progress.finish(family, kind, what, wall, note=f"FAILED ({type(err).__name__}: {err})"[:300])
                    if cfg.fail_fast:
                        raise
                    continue
                wall = time.perf_counter() - t0
                row.update({"status": "ok", "wall_s": wall, "run_dir": str(run_dir.relative_to(out)),
                            "config_hash": rhash, "finished_at": now(), **run_stamp()})  # fmt: skip
                write_json(run_dir / RESULT_FILE, row)
                rows.append(row)
                progress.finish(family, kind, what, wall, note=short_summary(row))
            if reused:
                progress.log(f"[{progress.done}/{progress.total}] {group.describe()}: {reused} finished run(s) reused "
                             "from disk (cached)")  # fmt: skip
            report.write_results(rows, out, cfg)  # partial tables after every group
            del dm


def main(args: Sequence[str] | None = None) -> None:
    """``lightning_unlearn benchmark -c configs/benchmark/<name>.yaml [--key value ...]``."""
    argv = list(sys.argv[1:] if args is None else args)
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        cfg = config_from_namespace(ns, parser)
    except BenchmarkConfigError as err:
        print(f"lightning_unlearn benchmark: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        result = run_benchmark(cfg)
    except BenchmarkConfigError as err:
        print(f"lightning_unlearn benchmark: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None  # run_benchmark wrote what finished and said how to resume
    if result["failed"] and not cfg.report_only:
        raise SystemExit(1)

