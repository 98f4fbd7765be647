"""What one job of the benchmark runs, in whichever process the executor puts it (:mod:`lightning_unlearn.executors`):
:func:`train_job` trains an original or gold model (:func:`train_model`), :func:`row_job` produces one row of a group
(:func:`run_method` for a method, :func:`run_reference` for Original and Retrain) and writes it to ``result.json``.
In a sequential scenario a method's row of request ``k >= 2`` starts from the method's own unlearned model of request
``k - 1`` (:func:`request_input`), whose ledger says what it forgot already.

A job is self-contained: it rebuilds its DataModule (one per process and group is kept, as the sequential benchmark
kept one per group), writes only into its own directory, and sets the process's torch threads when told to. The
group's copy of its original is made once, under a file lock, by the first of its rows to need it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from filelock import FileLock

from lightning_unlearn.benchmark.cache import base_row, group_original, import_given, read_result, run_hash
from lightning_unlearn.benchmark.config import BenchmarkConfig
from lightning_unlearn.benchmark.plan import (
    Group,
    ModelJob,
    eval_device,
    group_datamodule_for,
    trainer_kwargs,
)
from lightning_unlearn.benchmark.specs import RESULT_FILE, RETRAIN
from lightning_unlearn.checkpoints import load_backbone
from lightning_unlearn.evaluation import ReferenceCache, UnlearningEvaluator
from lightning_unlearn.executors import Job, JobResult, run_job
from lightning_unlearn.experiment import (
    ORIGINAL,
    MethodSpec,
    config_hash,
    finite,
    fresh_dir,
    now,
    quiet,
    scalars,
    set_threads,
    slug,
    train_classifier,
    unlearn,
    write_json,
    write_model_info,
)
from lightning_unlearn.methods import AmnesiacRecorder
from lightning_unlearn.provenance import run_stamp

__all__ = [
    "finished_row",
    "group_datamodule",
    "group_references",
    "group_rows_job",
    "request_input",
    "row_job",
    "run_method",
    "run_reference",
    "train_job",
    "train_model",
]

_DATAMODULES: dict[str, Any] = {}  # this process's DataModule of the group it ran last
_REFERENCES: dict[str, Any] = {}  # and that group's ReferenceCache (gold/original/random outputs, gold metrics)


def _group_key(cfg: BenchmarkConfig, group: Group) -> str:
    return config_hash({"data": cfg.data, "dir": str(group.dir), "seed": group.seed})


def group_datamodule(cfg: BenchmarkConfig, group: Group) -> Any:
    """The group's DataModule, set up for ``fit``; the last one is kept, so the rows of a group share one, as before."""
    key = _group_key(cfg, group)
    dm = _DATAMODULES.get(key)
    if dm is None:
        _DATAMODULES.clear()
        dm = group_datamodule_for(cfg, group)
        dm.setup("fit")
        _DATAMODULES[key] = dm
    return dm


def group_references(cfg: BenchmarkConfig, group: Group) -> ReferenceCache:
    """The group's :class:`~lightning_unlearn.evaluation.ReferenceCache`, kept like its DataModule: the rows a process
    runs for one group compute the gold/original/random outputs and the gold metrics once (keys are content digests,
    so a cache is never wrong, only missed, when a worker of another executor runs the group's next row)."""
    key = _group_key(cfg, group)
    refs = _REFERENCES.get(key)
    if refs is None:
        _REFERENCES.clear()
        refs = _REFERENCES[key] = ReferenceCache()
    return refs


def train_job(cfg: BenchmarkConfig, job: ModelJob, threads: int | None = None) -> float:
    """A job: :func:`train_model` with Lightning's messages silenced (``cfg.quiet``); returns the training time."""
    set_threads(threads)
    with quiet(cfg.quiet):
        return train_model(cfg, job)


def row_job(cfg: BenchmarkConfig, group: Group, name: str, original: ModelJob, gold: ModelJob,
            threads: int | None = None) -> dict[str, Any]:
    """A job: one row (``name``: a method, Original or Retrain) of ``group`` from scratch in its own directory, written
    to ``result.json`` last (a directory without it is unfinished and is redone); returns the row."""
    set_threads(threads)
    spec = cfg.method(name, group.scenario)
    run_dir = fresh_dir(group.dir / slug(name))  # unfinished, failed, or made with another configuration
    with quiet(cfg.quiet):
        dm = group_datamodule(cfg, group)
        with FileLock(str(group.dir / ".original.lock")):
            original_ckpt = group_original(cfg, group, original, dm)
        refs = group_references(cfg, group)
        t0 = time.perf_counter()
        if spec is None:
            row = run_reference(cfg, group, name, original_ckpt, gold.ckpt, run_dir, dm, cache=refs)
        else:
            updates = original.updates_path(group.forget_hash) if spec.needs_recorded_updates else None
            source = original_ckpt if group.before is None else request_input(group, name)
            row = run_method(cfg, group, spec, source, gold.ckpt, run_dir, dm, updates, cache=refs)
    row.update({"status": "ok", "wall_s": time.perf_counter() - t0,
                "run_dir": str(run_dir.relative_to(Path(cfg.output_dir))), "config_hash": run_hash(cfg, group, name, spec),
                "finished_at": now(), **run_stamp()})
    write_json(run_dir / RESULT_FILE, row)
    return row


def group_rows_job(cfg: BenchmarkConfig, group: Group, names: list[str], original: ModelJob, gold: ModelJob,
                   threads: int | None = None, max_retries: int = 0) -> list[JobResult]:
    """A job: the rows ``names`` of ``group``, one after the other in this process (so they share its DataModule and
    :class:`~lightning_unlearn.evaluation.ReferenceCache`); each row is :func:`row_job` with its own retries and its
    own :class:`~lightning_unlearn.executors.JobResult`, so one failing row does not stop the others. A row already
    finished with this configuration (a rerun of this job after its worker died) is read back, not redone."""
    results = []
    for name in names:
        done = finished_row(cfg, group, name)
        if done is not None:
            results.append(done)
            continue
        kwargs = {"cfg": cfg, "group": group, "name": name, "original": original, "gold": gold, "threads": threads}
        results.append(run_job(Job(name, row_job, kwargs), max_retries))
    return results


def request_input(group: Group, name: str) -> Path:
    """The model method ``name`` starts from at request ``k >= 2`` of a sequence: its own unlearned checkpoint of
    request ``k - 1`` (with the ledger of what it forgot). One line when it is not there."""
    assert group.before is not None
    path = group.before.dir / slug(name) / "unlearned.ckpt"
    if not path.is_file():
        raise FileNotFoundError(
            f"{name}'s unlearned model of request {group.request - 1} ({path}) is missing, so request {group.request} "
            "cannot start from it: its run failed or the file was removed; run the benchmark again to redo both."
        )
    return path


def finished_row(cfg: BenchmarkConfig, group: Group, name: str) -> JobResult | None:
    """The row ``name`` of ``group`` as a successful ``JobResult`` if it is finished with this configuration, else
    ``None``."""
    spec = cfg.method(name, group.scenario)
    done = read_result(group.dir / slug(name), run_hash(cfg, group, name, spec))
    return None if done is None else JobResult(name, True, value=done, wall_s=float(done.get("wall_s") or 0.0))


def train_model(cfg: BenchmarkConfig, job: ModelJob) -> float:
    """Train ``job``'s model (a ``Classifier`` on D for the original, on D_r for the gold) and save it with
    ``trainer.save_checkpoint``; for the original, one ``AmnesiacRecorder`` per forget set that needs it. Returns the
    training time recorded in the checkpoint (``train_time_s``)."""
    if job.given is not None:  # the user's model: imported, never trained (nor overwritten)
        t = import_given(cfg, job)
        return float("nan") if t is None else float(t)
    g = job.group
    fresh_dir(job.dir)  # an unfinished earlier attempt (no info.json) or a partial recording
    dm = group_datamodule_for(cfg, g, train_on="all" if job.role == "original" else "retain")
    recorders = [AmnesiacRecorder(sensitive=[int(i) for i in idx], path=str(job.updates_path(h)))
                 for h, idx in sorted(job.record_forget.items())]
    train_time = train_classifier(dm, cfg.backbone, cfg.training, job.role, g.seed, job.ckpt,
                                  trainer_kwargs(cfg, job.dir), recorders)
    write_model_info(
        job.dir,
        {"role": job.role, "key": job.key, "key_content": job.key_content, "train_time_s": train_time,
         "epochs": cfg.training.epochs(job.role), "first_group": g.describe(),
         "recorded_forget_sets": sorted(job.record_forget), "finished_at": now()},
        job.files,
    )
    return train_time


def run_method(cfg: BenchmarkConfig, group: Group, spec: MethodSpec, original: Path, gold: Path, run_dir: Path,
               dm: Any, updates: Path | None, cache: ReferenceCache | None = None) -> dict[str, Any]:
    """One method on one group, through ``UnlearnTrainer.unlearn`` with an ``UnlearningEvaluator``; returns the row.
    ``original``: the model it starts from (the group's original, or at request ``k >= 2`` of a sequence the method's
    model of request ``k - 1``: then the evaluator's original, the model before this request, is that one too);
    ``cache``: the group's ``evaluation.ReferenceCache`` (reference outputs and gold metrics computed once)."""
    evaluator = UnlearningEvaluator(output_dir=str(run_dir), **cfg.evaluator)
    evaluator.reference_cache = cache
    out = run_dir / "unlearned.ckpt"
    summary = unlearn(spec, dm, group.seed, original, gold, out, trainer_kwargs(cfg, run_dir), updates=updates,
                      callbacks=[evaluator])
    if not cfg.keep_checkpoints and not group.followed and out.exists():  # a next request's input is kept
        out.unlink()
    row = base_row(group, spec.name, "method", spec.class_path)
    row.update(scalars(evaluator.results))
    row["unlearn_time_s"] = finite(float(summary["unlearn_time_s"]))
    return row


def run_reference(cfg: BenchmarkConfig, group: Group, which: str, original: Path, gold: Path, run_dir: Path,
                  dm: Any, cache: ReferenceCache | None = None) -> dict[str, Any]:
    """Evaluate the original ("Original") or the gold model ("Retrain", its training time as its cost), against the
    gold model and with the original as the relearning attack's target, as a method's row is: the Original row is the
    reference of "not forgotten" (relearns at once), Retrain's probe excess is 0 and its relearn ratio 1."""
    path = original if which == ORIGINAL else gold
    backbone, meta = load_backbone(path, dm, what=f"{which.lower()} checkpoint {path}")
    evaluator = UnlearningEvaluator(gold=str(gold), original=str(original), output_dir=str(run_dir), **cfg.evaluator)
    evaluator.reference_cache = cache
    t = float(meta["train_time_s"]) if which == RETRAIN and meta.get("train_time_s") is not None else None
    results = evaluator.evaluate(backbone, dm, device=eval_device(cfg), unlearn_time_s=t)
    row = base_row(group, which, "reference", None)
    row.update(scalars(results))
    row["unlearn_time_s"] = t
    return row
