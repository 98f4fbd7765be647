"""Running a benchmark: :func:`run_benchmark` (all of it, resumed from disk) and :func:`main` (the
``lightning_unlearn benchmark`` command).

Every independent piece of work is a job of an executor (:mod:`lightning_unlearn.executors`; ``executor:`` in the
config): phase A trains every model that is not cached (:func:`~.jobs.train_job`), phase B produces every row that is
not finished (:func:`~.jobs.row_job`); both are one batch, each row job declared ``after`` the trainings of its two
models. Results are collected here as the jobs finish, so the files on disk (one
directory per model and per row) are the same whichever executor ran them, and a rerun, ``--report_only`` or another
executor picks them up. ``local`` (the default) runs the jobs one after the other in this process, in the order of the
sequential benchmark: the models group by group, then the rows group by group.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lightning_unlearn.benchmark.cache import (
    base_row,
    cache_problem,
    import_given,
    read_json,
    read_result,
    run_hash,
    write_config,
    write_json,
)
from lightning_unlearn.benchmark.config import (
    BenchmarkConfig,
    build_parser,
    config_from_namespace,
    executor_settings,
    group_rows,
)
from lightning_unlearn.benchmark.jobs import (
    finished_row,
    group_rows_job,
    row_job,
    run_method,
    run_reference,
    train_job,
    train_model,
)
from lightning_unlearn.benchmark.plan import Plan, make_plan
from lightning_unlearn.benchmark.progress import Progress, hms, quiet, short_summary
from lightning_unlearn.benchmark.specs import BASELINE_METHODS, ORIGINAL, RESULT_FILE, RETRAIN, BenchmarkConfigError
from lightning_unlearn.executors import Executor, Job, JobResult, is_interrupt, make_executor

__all__ = ["BenchmarkRunError", "main", "run_benchmark", "run_method", "run_reference", "train_model"]


class BenchmarkRunError(RuntimeError):
    """A model could not be trained (its rows cannot run), or a row failed under ``fail_fast``."""


def run_benchmark(cfg: BenchmarkConfig, stream: Any = None, executor: Executor | None = None) -> dict[str, Any]:
    """Run (or resume) the benchmark and write every output. Returns ``{"rows", "failed", "output_dir", "files"}``.

    ``executor``: run the jobs there instead of on the one ``cfg.executor`` describes (which is then not started).
    """
    from lightning_unlearn.benchmark import report

    out = Path(cfg.output_dir)
    plan = make_plan(cfg)  # every split and every given model checked before anything is written
    from lightning_unlearn.tune.apply import check_tuned_targets

    check_tuned_targets(cfg.methods, plan.groups, BenchmarkConfigError)  # no tuned row on a tuning target
    out.mkdir(parents=True, exist_ok=True)
    names = [ORIGINAL, RETRAIN, *(m.name for m in cfg.methods)]
    progress = Progress([], stream=stream)
    if cfg.report_only:  # the rows made with this configuration; one made with other settings is not its result
        rows, failed, stale = [], [], 0
        specs = {m.name: m for m in cfg.methods}
        for g in plan.groups:
            for name, d in plan.run_dirs(g, cfg.rows_for(g.scenario)):
                row = read_result(d, run_hash(cfg, g, name, specs.get(name)))
                err = read_json(d / "error.json") if row is None else None
                if row is not None:
                    rows.append(row)
                elif err is not None:
                    failed.append(err)
                elif (d / RESULT_FILE).is_file():
                    stale += 1
        files = report.write_all(rows, out, cfg, failed=failed)
        missing = sum(len(cfg.rows_for(g.scenario)) for g in plan.groups) - len(rows) - len(failed)
        note = f", of which {stale} made with other settings (left out; rerun without --report_only)" if stale else ""
        progress.log(
            f"report rebuilt from {len(rows)} finished runs ({len(failed)} failed, {missing} not run{note}): "
            f"{out / 'report.md'}"
        )
        return {"rows": rows, "failed": failed, "output_dir": str(out), "files": files}

    write_config(cfg, out)
    spec, resources, threads = executor_settings(cfg)
    if spec["name"] == "local" and cfg.trainer.num_threads:
        import torch

        torch.set_num_threads(int(cfg.trainer.num_threads))
    given = [j for j in plan.models.values() if j.given is not None]
    for job in given:  # the user's models: imported into models/ (their file only read), never trained
        import_given(cfg, job)
    n_given = len(given)
    to_train = _models_to_train(plan)
    steps: list[tuple[str, str]] = [("train", j.role) for j in to_train]
    for g in plan.groups:
        for m in cfg.rows_for(g.scenario):
            steps.append(("eval", "reference") if m in BASELINE_METHODS else ("method", m))
    progress = Progress(steps, stream=stream)
    n_runs = sum(len(cfg.rows_for(g.scenario)) for g in plan.groups)
    progress.log(
        f"{len(cfg.scenarios)} scenario(s), {len(plan.groups)} (scenario, target, seed) groups x <= {len(names)} rows "
        f"({', '.join(names)}) = {n_runs} runs; {len(plan.models)} models ({len(to_train)} to train, "
        f"{len(plan.models) - len(to_train) - n_given} cached{f', {n_given} given' if n_given else ''}) -> {out} "
        f"[executor: {spec['name']}]"
    )

    rows: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    own = executor is None
    ex = make_executor(spec) if own else executor
    try:
        with quiet(cfg.quiet), progress:
            train_jobs, trained = _training_jobs(cfg, to_train, progress, resources, threads)
            training = {j.key for j in train_jobs}
            row_jobs, finished = _row_jobs(cfg, plan, ex, progress, resources, threads, training, rows, failed)
            ex.map(train_jobs + row_jobs, on_done=lambda res: (trained if res.key in training else finished)(res))
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
    finally:
        if own:
            ex.close()
    files = report.write_all(rows, out, cfg, failed=failed)
    progress.log(
        f"done in {hms(time.perf_counter() - progress.start)}: {len(rows)} runs"
        + (f", {len(failed)} FAILED (see error.json in their run directories)" if failed else "")
        + f". Report: {out / 'report.md'}"
    )
    return {"rows": rows, "failed": failed, "output_dir": str(out), "files": files}


def _models_to_train(plan: Plan) -> list[Any]:
    """The models whose cache cannot be used, in the order the groups need them (each group's original, then gold)."""
    seen: dict[str, Any] = {}
    for g in plan.groups:
        for key in (g.original_key, g.gold_key):
            job = plan.models[key]
            if key not in seen and cache_problem(job) is not None:
                seen[key] = job
    return list(seen.values())


def _training_jobs(cfg: BenchmarkConfig, to_train: list[Any], progress: Progress, resources: Any,
                   threads: int | None) -> tuple[list[Job], Callable[[JobResult], None]]:  # fmt: skip
    """Phase A: every model to train, one job each; a failed training stops the benchmark (its rows cannot run)."""
    jobs = []
    for job in to_train:
        problem = cache_problem(job)
        if problem is not None and problem != "not trained":
            progress.log(f"cached {job.role} model {job.dir.name} is unusable ({problem}); retraining it")
        progress.log(f"training the {job.role} model for {job.group.describe()} ({cfg.training.epochs(job.role)} "
                     f"epochs) ...")  # fmt: skip
        jobs.append(Job(job.dir.name, train_job, {"cfg": cfg, "job": job, "threads": threads}, resources,
                        f"{job.role} model ({job.group.describe()})"))  # fmt: skip
    by_key = {j.key: j for j in jobs}

    def done(res: JobResult) -> None:
        what = by_key[res.key].description
        if not res.ok:
            raise BenchmarkRunError(f"training the {what} failed after {res.attempts} attempt(s): {res.error}")
        progress.finish("train", by_key[res.key].kwargs["job"].role, what, res.wall_s)

    return jobs, done


def _row_jobs(cfg: BenchmarkConfig, plan: Plan, ex: Executor, progress: Progress, resources: Any, threads: int | None,
              training: set[str], rows: list[dict[str, Any]],
              failed: list[dict[str, Any]]) -> tuple[list[Job], Callable[[JobResult], None]]:  # fmt: skip
    """Phase B: every row not finished with this configuration, one job each (or one job per group,
    :func:`~.config.group_rows`), each after the trainings (``training``: their keys) of its group's two models, so an
    executor with free workers starts a group once its models exist, before phase A ends; finished rows are read
    back here."""
    from lightning_unlearn.benchmark import report

    out = Path(cfg.output_dir)
    specs = {m.name: m for m in cfg.methods}
    todo: list[tuple[Any, list[tuple[str, Path]]]] = []
    for group in plan.groups:
        reused, names = 0, []
        for name, run_dir in plan.run_dirs(group, cfg.rows_for(group.scenario)):
            spec = specs.get(name)
            done = read_result(run_dir, run_hash(cfg, group, name, spec))
            if done is not None:
                rows.append(done)
                reused += 1
                progress.finish(*_family(name, spec), f"{group.describe()} / {name}", None, show=False)
            else:
                names.append((name, run_dir))
        if reused:
            progress.log(f"[{progress.done}/{progress.total}] {group.describe()}: {reused} finished run(s) reused "
                         "from disk (cached)")  # fmt: skip
        if names:
            todo.append((group, names))
    pending = {group.describe(): len(names) for group, names in todo}

    def finished(group: Any, name: str, run_dir: Path, res: JobResult) -> None:
        spec = specs.get(name)
        what = f"{group.describe()} / {name}"
        if res.ok:
            rows.append(res.value)
            progress.finish(*_family(name, spec), what, res.value["wall_s"], note=short_summary(res.value))
        else:
            info = {**base_row(group, name, "reference" if spec is None else "method", spec.class_path if spec else None),
                    "status": "failed", "error": res.error, "wall_s": res.wall_s, "attempts": res.attempts,
                    "traceback": res.traceback, "run_dir": str(run_dir)}  # fmt: skip
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json(run_dir / "error.json", info)
            failed.append(info)
            progress.finish(*_family(name, spec), what, res.wall_s, note=f"FAILED ({res.error})"[:300])
            if cfg.fail_fast:
                raise BenchmarkRunError(f"{what} failed (fail_fast): {res.error}")
        pending[group.describe()] -= 1
        if not pending[group.describe()]:
            report.write_results(rows, out, cfg)  # partial tables after every group

    models = {g.describe(): (plan.models[g.original_key], plan.models[g.gold_key]) for g, _ in todo}
    meta: dict[str, tuple[Any, list[tuple[str, Path]]]] = {}
    jobs: list[Job] = []
    grouped = group_rows(cfg)
    for group, names in todo:
        original, gold = models[group.describe()]
        common = {"cfg": cfg, "group": group, "original": original, "gold": gold, "threads": threads}
        after = tuple(m.dir.name for m in (original, gold) if m.dir.name in training)
        if grouped:
            key = str(group.dir.relative_to(out))
            meta[key] = (group, names)
            kwargs = {**common, "names": [n for n, _ in names], "max_retries": ex.max_retries}
            jobs.append(Job(key, group_rows_job, kwargs, resources, f"{group.describe()} ({len(names)} rows)", after))
        else:
            for name, run_dir in names:
                key = str(run_dir.relative_to(out))
                meta[key] = (group, [(name, run_dir)])
                jobs.append(Job(key, row_job, {**common, "name": name}, resources, f"{group.describe()} / {name}",
                                after))  # fmt: skip

    def on_done(res: JobResult) -> None:
        group, names = meta[res.key]
        if not grouped:
            finished(group, *names[0], res)
            return
        inner = res.value if res.ok else [_after_failed_group(cfg, group, n, res) for n, _ in names]
        for (name, run_dir), r in zip(names, inner, strict=True):
            finished(group, name, run_dir, r)

    return jobs, on_done


def _after_failed_group(cfg: BenchmarkConfig, group: Any, name: str, res: JobResult) -> JobResult:
    """A row of a group job that failed as a whole (its worker died, Ray's retries spent): finished if it had
    written its result before, else failed with the group job's error."""
    done = finished_row(cfg, group, name)
    if done is not None:
        return done
    return JobResult(name, False, error=res.error, traceback=res.traceback, wall_s=res.wall_s, attempts=res.attempts)


def _family(name: str, spec: Any) -> tuple[str, str]:
    return ("eval", "reference") if spec is None else ("method", name)


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
    except (BenchmarkConfigError, BenchmarkRunError) as err:
        print(f"lightning_unlearn benchmark: error: {err}", file=sys.stderr)
        raise SystemExit(2 if isinstance(err, BenchmarkConfigError) else 1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None  # run_benchmark wrote what finished and said how to resume
    if result["failed"] and not cfg.report_only:
        raise SystemExit(1)
