"""The jobs of one start of the benchmark, as one executor batch: every model whose cache cannot be used
(:func:`training_jobs`, phase A), and every row not finished with this configuration (:func:`row_jobs`, phase B), each
``after`` the trainings of its group's two models; with what is done in this process as each job ends (progress lines,
``error.json`` of a failed row, partial tables after every group)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning_unlearn.benchmark import report
from lightning_unlearn.benchmark.cache import base_row, cache_problem, read_result, run_hash
from lightning_unlearn.benchmark.config import BenchmarkConfig
from lightning_unlearn.benchmark.jobs import finished_row, group_rows_job, row_job, train_job
from lightning_unlearn.benchmark.plan import ModelJob, Plan
from lightning_unlearn.executors import Executor, Job, JobResult, Resources
from lightning_unlearn.experiment import Progress, RunError, write_json

__all__ = ["chunks", "family", "models_to_train", "row_after_failed_group", "row_jobs", "short_summary", "training_jobs"]


def models_to_train(plan: Plan) -> list[ModelJob]:
    """The models whose cache cannot be used, in the order the groups need them (each group's original, then gold)."""
    seen: dict[str, ModelJob] = {}
    for g in plan.groups:
        for key in (g.original_key, g.gold_key):
            job = plan.models[key]
            if key not in seen and cache_problem(job) is not None:
                seen[key] = job
    return list(seen.values())


def training_jobs(cfg: BenchmarkConfig, to_train: list[ModelJob], progress: Progress, resources: Resources,
                  threads: int | None) -> tuple[list[Job], Callable[[JobResult], None]]:
    """Phase A: every model to train, one job each; a failed training stops the benchmark (its rows cannot run)."""
    jobs = []
    for job in to_train:
        problem = cache_problem(job)
        if problem is not None and problem != "not trained":
            progress.log(f"cached {job.role} model {job.dir.name} is unusable ({problem}); retraining it")
        progress.log(f"training the {job.role} model for {job.group.describe()} ({cfg.training.epochs(job.role)} "
                     f"epochs) ...")
        jobs.append(Job(job.dir.name, train_job, {"cfg": cfg, "job": job, "threads": threads}, resources,
                        f"{job.role} model ({job.group.describe()})"))
    by_key = {j.key: j for j in jobs}

    def done(res: JobResult) -> None:
        what = by_key[res.key].description
        if not res.ok:
            raise RunError(f"training the {what} failed after {res.attempts} attempt(s): {res.error}")
        progress.finish("train", by_key[res.key].kwargs["job"].role, what, res.wall_s)

    return jobs, done


def row_jobs(cfg: BenchmarkConfig, plan: Plan, ex: Executor, progress: Progress, resources: Resources,
             threads: int | None, grouped: bool | int, training: set[str], rows: list[dict[str, Any]],
             failed: list[dict[str, Any]]) -> tuple[list[Job], Callable[[JobResult], None]]:
    """Phase B: every row not finished with this configuration, one job each (``grouped`` false), one job per group
    (true) or a group's rows cut into :func:`chunks` of at most ``grouped`` rows, each job after the trainings
    (``training``: their keys) of its group's two models, so an executor with free workers starts a group once its
    models exist, before phase A ends; finished rows are read back into ``rows`` here."""
    out = Path(cfg.output_dir)
    method_names = set(cfg.method_names())  # the rows of methods (not Original, Retrain)
    todo: list[tuple[Any, list[tuple[str, Path]]]] = []
    redone: set[tuple[Path, str]] = set()  # (group dir, method) run now: a sequence's next request must follow
    for group in plan.groups:
        reused, names = 0, []
        for name, run_dir in plan.run_dirs(group, cfg.rows_for(group.scenario)):
            spec = cfg.method(name, group.scenario)
            done = read_result(run_dir, run_hash(cfg, group, name, spec))
            if done is not None and spec is not None and (getattr(group.before, "dir", None), name) in redone:
                done = None  # its input, the method's model of the request before, is made again
            if done is not None:
                rows.append(done)
                reused += 1
                progress.finish(*family(name, spec), f"{group.describe()} / {name}", None, show=False)
            else:
                names.append((name, run_dir))
                redone.add((group.dir, name))
        if reused:
            progress.log(f"[{progress.done}/{progress.total}] {group.describe()}: {reused} finished run(s) reused "
                         "from disk (cached)")
        if names:
            todo.append((group, names))
    pending = {group.describe(): len(names) for group, names in todo}

    def finished(group: Any, name: str, run_dir: Path, res: JobResult) -> None:
        spec = cfg.method(name, group.scenario)
        what = f"{group.describe()} / {name}"
        if res.ok:
            rows.append(res.value)
            progress.finish(*family(name, spec), what, res.value["wall_s"], note=short_summary(res.value))
        else:
            info = {**base_row(group, name, "reference" if spec is None else "method", spec.class_path if spec else None),
                    "status": "failed", "error": res.error, "wall_s": res.wall_s, "attempts": res.attempts,
                    "traceback": res.traceback, "run_dir": str(run_dir)}
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json(run_dir / "error.json", info)
            failed.append(info)
            progress.finish(*family(name, spec), what, res.wall_s, note=f"FAILED ({res.error})"[:300])
            if cfg.fail_fast:
                raise RunError(f"{what} failed (fail_fast): {res.error}")
        pending[group.describe()] -= 1
        if not pending[group.describe()]:
            report.write_results(rows, out, cfg)  # partial tables after every group

    meta: dict[str, tuple[Any, list[tuple[str, Path]], bool]] = {}  # key -> (group, rows, a group_rows_job)
    jobs: list[Job] = []
    key_of: dict[tuple[Path, str], str] = {}  # (group dir, method) -> the key of the job that runs it
    for group, names in todo:
        original, gold = plan.models[group.original_key], plan.models[group.gold_key]
        common = {"cfg": cfg, "group": group, "original": original, "gold": gold, "threads": threads}
        after = tuple(m.dir.name for m in (original, gold) if m.dir.name in training)
        size = len(names) if grouped is True else 1 if grouped is False else int(grouped)
        if size > 1:
            parts = chunks(names, size)
            for i, part in enumerate(parts):
                key = str(group.dir.relative_to(out)) + (f"#{i + 1}" if len(parts) > 1 else "")
                meta[key] = (group, part, True)
                kwargs = {**common, "names": [n for n, _ in part], "max_retries": ex.max_retries}
                before = _request_before(group, [n for n, _ in part], method_names, key_of)
                key_of.update({(group.dir, n): key for n, _ in part})
                part_of = f", part {i + 1} of {len(parts)}" if len(parts) > 1 else ""
                jobs.append(Job(key, group_rows_job, kwargs, resources,
                                f"{group.describe()} ({len(part)} rows{part_of})", after + before))
        else:
            for name, run_dir in names:
                key = str(run_dir.relative_to(out))
                meta[key] = (group, [(name, run_dir)], False)
                before = _request_before(group, [name], method_names, key_of)
                key_of[(group.dir, name)] = key
                jobs.append(Job(key, row_job, {**common, "name": name}, resources, f"{group.describe()} / {name}",
                                after + before))

    def on_done(res: JobResult) -> None:
        group, names, as_group = meta[res.key]
        if not as_group:
            finished(group, *names[0], res)
            return
        inner = res.value if res.ok else [row_after_failed_group(cfg, group, n, res) for n, _ in names]
        for (name, run_dir), r in zip(names, inner, strict=True):
            finished(group, name, run_dir, r)

    return jobs, on_done


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    """``items`` in order, cut into the fewest consecutive parts of at most ``size`` items, of sizes differing by at
    most one (33 rows at ``size`` 17: 16 and 17; at 10: 8, 8, 8 and 9)."""
    k = -(-len(items) // size)
    return [items[len(items) * i // k:len(items) * (i + 1) // k] for i in range(k)]


def _request_before(group: Any, names: list[str], methods: set[str], key_of: dict[tuple[Path, str], str]
                    ) -> tuple[str, ...]:
    """The jobs of this batch that make the inputs of ``names`` at request ``k >= 2`` of a sequence: each method's run
    of request ``k - 1`` (its unlearned model); none for the reference rows or a request 1."""
    if group.before is None:
        return ()
    keys = [key_of.get((group.before.dir, n)) for n in names if n in methods]
    return tuple(dict.fromkeys(k for k in keys if k is not None))


def row_after_failed_group(cfg: BenchmarkConfig, group: Any, name: str, res: JobResult) -> JobResult:
    """A row of a group job that failed as a whole (its worker died, Ray's retries spent): finished if it had
    written its result before, else failed with the group job's error."""
    done = finished_row(cfg, group, name)
    if done is not None:
        return done
    return JobResult(name, False, error=res.error, traceback=res.traceback, wall_s=res.wall_s, attempts=res.attempts)


def family(name: str, spec: Any) -> tuple[str, str]:
    """The progress estimate's ``(family, kind)`` of a row: a reference row's evaluation, or the method's run."""
    return ("eval", "reference") if spec is None else ("method", name)


def short_summary(row: dict[str, Any]) -> str:
    """The accuracies and MIA-efficacy of a finished row, for its progress line."""

    def pct(k: str) -> str:
        v = row.get(k)
        return "-" if v is None else f"{100 * v:.1f}"

    return f"(acc D_f {pct('acc/forget')}, test {pct('acc/test')}, MIA-eff {pct('mia/efficacy')})"
