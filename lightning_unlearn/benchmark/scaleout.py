"""Where the benchmark's jobs run: the ``executor`` key of its config, read as every application reads it
(:func:`lightning_unlearn.experiment.executor_settings`): the executor, each job's resources and torch threads
(:func:`executor_settings`), and one job per row or per group (:func:`group_rows`). See docs/scale-out.md."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lightning_unlearn.executors import Resources
from lightning_unlearn.experiment import ExecutorSettings
from lightning_unlearn.experiment import executor_settings as read_executor

if TYPE_CHECKING:
    from lightning_unlearn.benchmark.config import BenchmarkConfig

__all__ = ["executor_settings", "group_rows", "scale_out"]


def scale_out(cfg: BenchmarkConfig) -> ExecutorSettings:
    """Everything ``cfg.executor`` says (raises :class:`~lightning_unlearn.experiment.ConfigError` for a bad key)."""
    return read_executor(cfg.executor, cfg.trainer)


def executor_settings(cfg: BenchmarkConfig) -> tuple[dict[str, Any], Resources, int | None]:
    """``(executor spec for make_executor, resources of every job, torch threads per job)`` from ``cfg.executor``.

    Resources default to ``trainer.num_threads`` (else 1) CPUs and, on a GPU accelerator, 1 GPU per job. Threads: the
    local executor keeps today's rule (``trainer.num_threads`` if set, else PyTorch's choice); any other one gives
    each job ``trainer.num_threads`` or its whole CPUs, so that jobs side by side do not oversubscribe the cores.
    """
    s = scale_out(cfg)
    return s.spec, s.resources, s.threads


def group_rows(cfg: BenchmarkConfig) -> bool | int:
    """Whether a group's unfinished rows are one executor job (``executor.group_rows``; default: yes for every
    executor but ``local``), or, an integer ``n``, jobs of at most ``n`` of its rows. One job per group keeps the
    group's DataModule and reference outputs (the gold's and the original's outputs and attacks,
    :class:`~lightning_unlearn.evaluation.ReferenceCache`) in one worker, computed once, instead of once per worker
    that happens to run one of its rows; ``local`` runs in one process anyway and keeps a progress line per row as
    it finishes. Parts shorten the last job, which runs while other workers idle, at the price of one reference
    computation per part (docs/scale-out.md)."""
    return scale_out(cfg).group_rows
