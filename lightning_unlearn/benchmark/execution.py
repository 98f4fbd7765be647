"""Running a benchmark: :func:`run_benchmark` (all of it, resumed from disk) and :func:`main` (the
``lightning_unlearn benchmark`` command).

Every independent piece of work is a job of an executor (:mod:`lightning_unlearn.executors`; ``executor:`` in the
config): phase A trains every model that is not cached (:func:`~.jobs.train_job`), phase B produces every row that is
not finished (:func:`~.jobs.row_job`); both are one batch (:mod:`~.batch`), each row job declared ``after`` the
trainings of its two models. Results are collected here as the jobs finish, so the files on disk (one directory per
model and per row) are the same whichever executor ran them, and a rerun, ``--report_only`` or another executor picks
them up. ``local`` (the default) runs the jobs one after the other in this process, in the order of the sequential
benchmark: the models group by group, then the rows group by group.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning_unlearn.benchmark import report
from lightning_unlearn.benchmark.batch import models_to_train, row_jobs, training_jobs
from lightning_unlearn.benchmark.cache import import_given, read_result, run_hash, write_config
from lightning_unlearn.benchmark.config import BenchmarkConfig, build_parser, config_from_namespace
from lightning_unlearn.benchmark.plan import Plan, make_plan
from lightning_unlearn.benchmark.scaleout import scale_out
from lightning_unlearn.benchmark.specs import BASELINE_METHODS, OUTPUT_FILES, RESULT_FILE
from lightning_unlearn.benchmark.tuned import check_tuned_targets
from lightning_unlearn.executors import Executor, is_interrupt, make_executor
from lightning_unlearn.experiment import (
    ORIGINAL,
    RETRAIN,
    Progress,
    RunError,
    claim_output_dir,
    hms,
    parse_command,
    quiet,
    read_json,
    run_command,
    set_threads,
)

__all__ = ["BenchmarkRunError", "main", "run_benchmark"]

#: A model could not be trained (its rows cannot run), or a row failed under ``fail_fast``: the older name of
#: :class:`~lightning_unlearn.experiment.RunError`.
BenchmarkRunError = RunError


def run_benchmark(cfg: BenchmarkConfig, stream: Any = None, executor: Executor | None = None) -> dict[str, Any]:
    """Run (or resume) the benchmark and write every output. Returns ``{"rows", "failed", "output_dir", "files"}``.

    ``executor``: run the jobs there instead of on the one ``cfg.executor`` describes (which is then not started).
    """
    plan = make_plan(cfg)  # every split and every given model checked before anything is written
    check_tuned_targets(cfg.methods, plan.groups)  # no tuned row on a tuning target
    with claim_output_dir(cfg.output_dir, "benchmark", OUTPUT_FILES):  # this run's alone, nothing of others in it
        if cfg.report_only:
            return _report_only(cfg, plan, Progress([], stream=stream))
        return _run(cfg, plan, stream, executor)


def _run(cfg: BenchmarkConfig, plan: Plan, stream: Any, executor: Executor | None) -> dict[str, Any]:
    out = Path(cfg.output_dir)
    write_config(cfg, out)
    settings = scale_out(cfg)
    if settings.spec["name"] == "local":
        set_threads(cfg.trainer.num_threads)
    given = [j for j in plan.models.values() if j.given is not None]
    for job in given:  # the user's models: imported into models/ (their file only read), never trained
        import_given(cfg, job)
    to_train = models_to_train(plan)
    steps: list[tuple[str, str]] = [("train", j.role) for j in to_train]
    for g in plan.groups:
        for m in cfg.rows_for(g.scenario):
            steps.append(("eval", "reference") if m in BASELINE_METHODS else ("method", m))
    progress = Progress(steps, stream=stream)
    names = [ORIGINAL, RETRAIN, *cfg.method_names()]
    n_runs = sum(len(cfg.rows_for(g.scenario)) for g in plan.groups)
    n_given = len(given)
    progress.log(
        f"{len(cfg.scenarios)} scenario(s), {len(plan.groups)} (scenario, target, seed) groups x <= {len(names)} rows "
        f"({', '.join(names)}) = {n_runs} runs; {len(plan.models)} models ({len(to_train)} to train, "
        f"{len(plan.models) - len(to_train) - n_given} cached{f', {n_given} given' if n_given else ''}) -> {out} "
        f"[executor: {settings.spec['name']}]"
    )

    rows: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    own = executor is None
    ex = make_executor(settings.spec) if own else executor
    try:
        with quiet(cfg.quiet), progress:
            train, trained = training_jobs(cfg, to_train, progress, settings.resources, settings.threads)
            training = {j.key for j in train}
            rest, finished = row_jobs(cfg, plan, ex, progress, settings.resources, settings.threads,
                                      settings.group_rows, training, rows, failed)
            ex.map(train + rest, on_done=lambda res: (trained if res.key in training else finished)(res))
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


def _report_only(cfg: BenchmarkConfig, plan: Plan, progress: Progress) -> dict[str, Any]:
    """The tables, report and plots of the rows made with this configuration (one made with other settings is not its
    result); nothing is trained or run."""
    out = Path(cfg.output_dir)
    rows, failed, stale = [], [], 0
    for g in plan.groups:
        for name, d in plan.run_dirs(g, cfg.rows_for(g.scenario)):
            row = read_result(d, run_hash(cfg, g, name, cfg.method(name, g.scenario)))
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


def main(args: Sequence[str] | None = None) -> None:
    """``lightning_unlearn benchmark -c configs/benchmark/<name>.yaml [--key value ...]``."""
    argv = list(sys.argv[1:] if args is None else args)

    def command() -> int:
        cfg = config_from_namespace(parse_command(build_parser(), argv))
        result = run_benchmark(cfg)  # after Ctrl-C it has written what finished and said how to resume
        return 1 if result["failed"] and not cfg.report_only else 0

    run_command("benchmark", command)
