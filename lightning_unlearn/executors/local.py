"""``local``: the jobs one after the other in this process, in the given order (the default executor)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lightning_unlearn.executors.base import Executor, Job, JobResult, check_keys, run_job

__all__ = ["LocalExecutor"]


class LocalExecutor(Executor):
    """In process, one job after the other, in the given order: a plain loop."""

    name = "local"

    def map(self, jobs: Sequence[Job], on_done: Callable[[JobResult], None] | None = None) -> list[JobResult]:
        check_keys(jobs)
        results: list[JobResult] = []
        by_key: dict[str, JobResult] = {}
        for job in jobs:
            res = by_key[job.key] = run_job(job, self.max_retries, [by_key[k] for k in job.after])
            results.append(res)
            if on_done is not None:
                on_done(res)
        return results
