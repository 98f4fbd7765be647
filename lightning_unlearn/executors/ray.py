"""The ``ray`` executor (extra ``lightning_unlearn[ray]``): every job a Ray task with its declared resources.

``executor: {name: ray}`` starts a Ray instance on this machine for the run (``num_cpus``/``num_gpus`` size it; default:
all of them) and stops it at the end, also when the run's process is killed (a :mod:`~.watchdog` stops what Ray left
running: its agents outlive a SIGKILL of the driver otherwise); ``address: auto`` (or ``ray://host:10001``, ``host:6379``) joins a running cluster
(``ray start --head`` on one node, ``ray start --address=<head>:6379`` on the others) and leaves it running. Each job is
``run_job(job)`` in a worker, with ``num_cpus``/``num_gpus`` from ``job.resources`` (Ray sets ``CUDA_VISIBLE_DEVICES``
of a task to the GPUs it was given). Retries: an exception is retried in the worker by :func:`run_job`
(``max_retries``), a worker that dies (killed, out of memory, node lost) by Ray's own task retries (``max_retries``
too); a job that still fails is a failed :class:`~lightning_unlearn.executors.JobResult`. ``on_done`` runs in this
process as each job finishes (``ray.wait``); an exception there, or Ctrl-C, cancels the jobs not finished. A job's
``after`` are Ray dependencies (the results of those jobs are its task's arguments), so Ray starts it as soon as they
have ended, while other jobs still run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import ray

from lightning_unlearn.executors import watchdog
from lightning_unlearn.executors.base import Executor, Job, JobResult, check_keys, run_job

__all__ = ["RayExecutor"]


def _run_remote(job: Job, max_retries: int, *needs: JobResult) -> JobResult:
    return run_job(job, max_retries, needs)  # Ray starts it once the jobs it comes after (``needs``) have ended


def _error_line(err: BaseException) -> str:
    """``Type: first line`` of what went wrong in the worker (a task error's cause, else Ray's own error)."""
    cause = getattr(err, "cause", None)
    shown = cause if isinstance(cause, BaseException) else err
    text = str(shown).strip().splitlines()
    return f"{type(shown).__name__}: {text[0] if text else ''}".rstrip(": ")


class RayExecutor(Executor):
    """Runs each job as a Ray task.

    Args:
        address: ``None`` starts a local Ray for the run; ``"auto"`` or an address joins an existing cluster.
        max_retries: retries of a job that raised (in the worker) and of a job whose worker died (by Ray).
        num_cpus, num_gpus: size of the local Ray started for the run (default: the whole machine); ignored with an
            ``address``.
        log_to_driver: show the workers' output here (off: it would interleave with the progress lines; it stays
            in Ray's session logs, ``/tmp/ray/session_latest/logs``).
        runtime_env: Ray's ``runtime_env`` (e.g. ``{working_dir: ., pip: [...]}`` for a cluster without the package).
        init_kwargs: any other ``ray.init`` arguments.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        max_retries: int = 0,
        num_cpus: int | None = None,
        num_gpus: int | None = None,
        log_to_driver: bool = False,
        runtime_env: dict[str, Any] | None = None,
        init_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(max_retries)
        self.address = address
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.log_to_driver = bool(log_to_driver)
        self.runtime_env = runtime_env
        self.init_kwargs = dict(init_kwargs or {})
        self._started = False
        self._watchdog: watchdog.Watchdog | None = None

    def _ensure_ray(self) -> None:
        if ray.is_initialized():
            return  # the caller's Ray (a test, a notebook, a driver on the cluster): used as it is, left running
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": self.log_to_driver, **self.init_kwargs}
        if self.runtime_env is not None:
            kwargs["runtime_env"] = self.runtime_env
        if self.address:
            kwargs["address"] = self.address
        else:
            kwargs.update({k: v for k, v in (("num_cpus", self.num_cpus), ("num_gpus", self.num_gpus)) if v is not None})
        if self.address:
            ray.init(**kwargs)
        else:  # a local Ray of this run: its processes stop with it, however it ends
            before = watchdog.children(os.getpid()) if watchdog.supported() else set()
            self._watchdog = watchdog.start()
            try:
                ray.init(**kwargs)
            except BaseException:
                self.close()
                raise
            if self._watchdog is not None:
                self._watchdog.guard(watchdog.children(os.getpid()) - before - {self._watchdog.proc.pid})
        self._started = True

    def map(self, jobs: Sequence[Job], on_done: Callable[[JobResult], None] | None = None) -> list[JobResult]:
        check_keys(jobs)
        if not jobs:
            return []
        self._ensure_ray()
        task = ray.remote(_run_remote)
        index: dict[Any, int] = {}
        refs: dict[str, Any] = {}
        for i, job in enumerate(jobs):
            ref = refs[job.key] = task.options(
                num_cpus=job.resources.num_cpus, num_gpus=job.resources.num_gpus, max_retries=self.max_retries,
                retry_exceptions=False, name=job.key[-100:],
            ).remote(job, self.max_retries, *(refs[k] for k in job.after))
            index[ref] = i
        results: list[JobResult | None] = [None] * len(jobs)
        pending = list(index)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    i = index[ref]
                    try:
                        res = ray.get(ref)
                    except ray.exceptions.RayError as err:  # the worker died and Ray's retries ran out, or cancelled
                        res = JobResult(jobs[i].key, False, error=_error_line(err), traceback=str(err),
                                        attempts=self.max_retries + 1)
                    results[i] = res
                    if on_done is not None:
                        on_done(res)
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        return [r for r in results if r is not None]

    def close(self) -> None:
        """Stop the Ray this executor started (a cluster it joined, or the caller's Ray, keeps running)."""
        if self._started and ray.is_initialized():
            ray.shutdown()
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        self._started = False

