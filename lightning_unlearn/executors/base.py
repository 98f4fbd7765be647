"""What every executor shares: a :class:`Job`, its :class:`JobResult`, :func:`run_job` (one job in this process, with
its retries) and the :class:`Executor` interface."""

from __future__ import annotations

import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Executor", "Job", "JobResult", "Resources", "check_keys", "is_interrupt", "run_job"]


@dataclass(frozen=True)
class Resources:
    """What one job needs: CPU cores and GPUs (fractions allowed, as in Ray)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0


@dataclass
class Job:
    """One unit of work: ``fn(**kwargs)``; ``key`` is unique within a batch and names it in records.

    ``after``: keys of jobs earlier in the same batch that must end successfully before this one starts (a model
    training before the runs that use the model); when one of them fails, this job is not run and its result says
    why. Independent jobs have none.
    """

    key: str
    fn: Callable[..., Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    description: str = ""
    after: tuple[str, ...] = ()


@dataclass
class JobResult:
    """How a job ended: its return value, or the error (one line) and traceback of its last attempt."""

    key: str
    ok: bool
    value: Any = None
    error: str | None = None
    traceback: str | None = None
    wall_s: float = 0.0
    attempts: int = 1


def is_interrupt(err: BaseException) -> bool:
    """Ctrl-C: a ``KeyboardInterrupt``, or the ``SystemExit(1)`` Lightning raises for one caught inside ``fit``."""
    if isinstance(err, KeyboardInterrupt):
        return True
    return isinstance(err, SystemExit) and isinstance(err.__context__, KeyboardInterrupt)


def run_job(job: Job, max_retries: int = 0, needs: Sequence[JobResult] = ()) -> JobResult:
    """Run one job in this process, up to ``1 + max_retries`` times; a Ctrl-C is never caught. ``needs``: the results
    of the jobs it comes after; if one of them failed, the job is not run (a failed result that names it)."""
    failed = next((r for r in needs if not r.ok), None)
    if failed is not None:
        return JobResult(job.key, False, error=f"not run: {failed.key} failed ({failed.error})", attempts=0)
    t0 = time.perf_counter()
    for attempt in range(1, max_retries + 2):
        try:
            value = job.fn(**job.kwargs)
        except (KeyboardInterrupt, SystemExit) as err:
            if is_interrupt(err) or isinstance(err, KeyboardInterrupt):
                raise
            err_line, tb = f"SystemExit: {err}", traceback.format_exc()
        except Exception as err:  # noqa: BLE001 - recorded in the result; the caller decides what a failure means
            err_line, tb = f"{type(err).__name__}: {err}", traceback.format_exc()
        else:
            return JobResult(job.key, True, value=value, wall_s=time.perf_counter() - t0, attempts=attempt)
    return JobResult(job.key, False, error=err_line, traceback=tb, wall_s=time.perf_counter() - t0, attempts=attempt)


class Executor(ABC):
    """Runs a batch of jobs (independent, or ordered by their ``after``); ``on_done`` is called in the caller's
    process as each one finishes."""

    name: str = "executor"

    def __init__(self, max_retries: int = 0) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.max_retries = int(max_retries)

    @abstractmethod
    def map(self, jobs: Sequence[Job], on_done: Callable[[JobResult], None] | None = None) -> list[JobResult]:
        """Run every job; return their results in the order of ``jobs`` (a failed job is a result, not an error)."""

    def close(self) -> None:
        """Release what the executor started (nothing for ``local``)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def check_keys(jobs: Sequence[Job]) -> None:
    """Refuse a batch where two jobs share a key, or a job comes ``after`` one that is not earlier in the batch."""
    seen: set[str] = set()
    for job in jobs:
        if job.key in seen:
            raise ValueError(f"two jobs share the key {job.key!r}; give every job of a batch its own key")
        unknown = [k for k in job.after if k not in seen]
        if unknown:
            raise ValueError(f"job {job.key!r} comes after {unknown}, which are not earlier jobs of the batch; "
                             "put the jobs it needs before it")
        seen.add(job.key)
