"""Where the benchmark's jobs run: the ``executor`` key of its config (:func:`executor_settings`: the executor, each
job's resources and torch threads; :func:`group_rows`: one job per row or per group). See docs/scale-out.md."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lightning_unlearn.benchmark.specs import BenchmarkConfigError
from lightning_unlearn.executors import Resources, executor_names

if TYPE_CHECKING:
    from lightning_unlearn.benchmark.config import BenchmarkConfig

__all__ = ["executor_settings", "group_rows"]


def executor_settings(cfg: BenchmarkConfig) -> tuple[dict[str, Any], Resources, int | None]:
    """``(executor spec for make_executor, resources of every job, torch threads per job)`` from ``cfg.executor``.

    Resources default to ``trainer.num_threads`` (else 1) CPUs and, on a GPU accelerator, 1 GPU per job. Threads: the
    local executor keeps today's rule (``trainer.num_threads`` if set, else PyTorch's choice); any other one gives
    each job ``trainer.num_threads`` or its whole CPUs, so that jobs side by side do not oversubscribe the cores.
    """
    raw = cfg.executor
    spec = {"name": raw} if isinstance(raw, str) else dict(raw or {})
    spec.setdefault("name", "local")
    res = dict(spec.pop("resources", None) or {})
    spec.pop("group_rows", None)  # the benchmark's own choice (group_rows()), not the executor's
    unknown = sorted(set(res) - {"num_cpus", "num_gpus"})
    if unknown:
        raise BenchmarkConfigError(f"executor.resources: unknown key(s) {unknown}; it takes num_cpus and num_gpus.")
    acc = str(cfg.trainer.accelerator).lower()
    gpu = acc in ("gpu", "cuda") or (acc == "auto" and spec["name"] != "local" and _cuda_here())
    cpus = float(res.get("num_cpus", cfg.trainer.num_threads or 1))
    gpus = float(res.get("num_gpus", 1.0 if gpu else 0.0))
    if cpus <= 0 or gpus < 0:
        raise BenchmarkConfigError(f"executor.resources: num_cpus must be > 0 and num_gpus >= 0, got {res}.")
    known = executor_names()
    if spec["name"] not in known:
        raise BenchmarkConfigError(f"unknown executor {spec['name']!r}; choose one of: {', '.join(known)}.")
    threads = cfg.trainer.num_threads if spec["name"] == "local" else (cfg.trainer.num_threads or max(1, int(cpus)))
    return spec, Resources(num_cpus=cpus, num_gpus=gpus), threads


def group_rows(cfg: BenchmarkConfig) -> bool:
    """Whether a group's unfinished rows are one executor job (``executor.group_rows``; default: yes for every
    executor but ``local``). One job per group keeps the group's DataModule and reference outputs (the gold's and the
    original's outputs and attacks, :class:`~lightning_unlearn.evaluation.ReferenceCache`) in one worker, computed
    once, instead of once per worker that happens to run one of its rows; ``local`` runs in one process anyway and
    keeps a progress line per row as it finishes."""
    raw = cfg.executor
    spec = {"name": raw} if isinstance(raw, str) else dict(raw or {})
    value = spec.get("group_rows")
    if value is None:
        return str(spec.get("name", "local")) != "local"
    if not isinstance(value, bool):
        raise BenchmarkConfigError(f"executor.group_rows must be true or false, got {value!r}.")
    return value


def _cuda_here() -> bool:
    """``accelerator: auto`` resolved where the jobs are planned: Ray hides the GPUs from a task that asks for none
    (``CUDA_VISIBLE_DEVICES=""``), so its jobs would train on the CPU where a local run of the same config uses one."""
    import torch

    return torch.cuda.is_available()
