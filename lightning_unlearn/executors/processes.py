"""The ``processes`` executor: the jobs in a pool of worker processes on this machine (standard library only).

``executor: {name: processes, workers: 2}`` runs up to ``workers`` jobs at once (default: the cores this process may
use, ``len(os.sched_getaffinity(0))``), each in a ``spawn``-ed worker process of a
:class:`concurrent.futures.ProcessPoolExecutor` that is kept for the executor's life (a worker pays the imports once).
A job holds ``job.resources.num_cpus`` of the ``workers`` CPUs while it runs (a job asking for more runs alone) and its
worker sets ``torch.set_num_threads`` to that number before running it. GPU jobs share the first visible GPU (a job's
``devices: 1`` Trainer takes it; at most ``num_gpus: 1`` in total at once); several GPUs are Ray's
(:mod:`lightning_unlearn.executors.ray`).

Jobs start in the batch's order as soon as the jobs they come ``after`` have succeeded (one that failed: the job is
not run, its result says why); ``on_done`` runs in this process as each ends. An exception is retried in the worker by
:func:`~lightning_unlearn.executors.run_job` (``max_retries``). A worker that dies (killed by the system for lack of
memory, a crash) breaks the pool: the workers left are killed and the pool rebuilt; the job whose worker died (its
exit status read before the others are stopped) is run again up to ``max_retries`` times, then failed with a line
saying how its worker ended; the jobs stopped with it run again. Ctrl-C (ignored by the workers, which never see it)
or an exception in ``on_done`` kills the workers and is raised here. ``close`` lets idle workers exit.

As with any ``spawn`` pool, a script that starts a benchmark with this executor must guard its entry point with
``if __name__ == "__main__":`` (the workers import the script's module).
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from multiprocessing.connection import wait as wait_for
from typing import Any

from lightning_unlearn.executors.base import Executor, Job, JobResult, check_keys, run_job

__all__ = ["ProcessExecutor", "usable_cores"]

#: A job stopped this many times by worker deaths that no job could be blamed for is failed (no endless loop).
MAX_STOPS = 3
#: Set in each worker by :func:`_init_worker`: where it says which job it starts (``(key, pid)``).
_STARTED: Any = None


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), the default number of workers."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _init_worker(started: Any) -> None:
    """In each worker, once: Ctrl-C is the parent's to handle (it kills the workers), and a channel to say which job
    this process starts, so that a dead worker's job is known."""
    global _STARTED
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked by the parent while it spawned us
    _STARTED = started


def _work(key: str, payload: bytes, max_retries: int) -> JobResult:
    """In a worker: say that this process runs ``key``, load the job, set its threads and run it (with retries)."""
    if _STARTED is not None:
        _STARTED.put((key, os.getpid()))
    try:
        job = pickle.loads(payload)  # noqa: S301 - pickled by this executor's own process, not read from a file
    except Exception as err:  # noqa: BLE001 - e.g. its function cannot be imported in a fresh process
        return JobResult(key, False, error=f"the worker could not load the job: {type(err).__name__}: {err}",
                         traceback=traceback.format_exc(), attempts=0)
    _set_threads(max(1, int(job.resources.num_cpus)))
    return run_job(job, max_retries)


def _set_threads(n: int) -> None:
    """``torch.set_num_threads(n)`` in this worker; before torch is imported, ``OMP_NUM_THREADS``, which torch reads
    when a job imports it (a job without torch does not pay for importing it)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    else:
        os.environ["OMP_NUM_THREADS"] = str(n)


def _how_it_ended(code: int | None) -> str:
    if code is None:
        return "it ended without an exit status"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        why = " (e.g. by the system for lack of memory)" if -code == signal.SIGKILL else ""
        return f"it was killed by {name}{why}"
    return f"it exited with status {code}"


def _lost(fut: Future) -> bool:
    """Whether the pool broke (a worker died) before this job's result came back."""
    return fut.cancelled() or isinstance(fut.exception(), BrokenProcessPool)


@contextmanager
def _sigint_blocked() -> Any:
    """Block Ctrl-C in this thread while workers are spawned: they inherit the mask and so never see one before
    :func:`_init_worker` ignores it; one that arrives meanwhile is delivered here when the block ends."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class ProcessExecutor(Executor):
    """Runs each job in a worker process of a ``spawn`` process pool on this machine.

    Args:
        workers: processes, and CPUs the running jobs may hold together (default: the usable cores).
        max_retries: retries of a job that raised (in its worker) and of a job whose worker died.
    """

    name = "processes"

    def __init__(self, workers: int | None = None, max_retries: int = 0) -> None:
        super().__init__(max_retries)
        if workers is None:
            workers = usable_cores()
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._started: Any = None
        self._gpu: bool | None = None

    # -- the pool --------------------------------------------------------------------------------------------------
    def _submit(self, job: Job, payload: bytes) -> Future | None:
        """The job handed to a worker (``None``: the pool broke since the last look, e.g. an idle worker died)."""
        if self._pool is None:
            ctx = multiprocessing.get_context("spawn")
            self._started = ctx.SimpleQueue()
            self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                             initargs=(self._started,))
        with _sigint_blocked():  # submit spawns a worker when none is idle
            try:
                return self._pool.submit(_work, job.key, payload, self.max_retries)
            except BrokenProcessPool:
                return None

    def _started_jobs(self) -> list[tuple[str, int]]:
        """``(key, pid)`` of the jobs the workers said they started since the last call."""
        out = []
        while self._started is not None and not self._started.empty():
            out.append(self._started.get())
        return out

    def _processes(self) -> dict[int, Any]:
        # The pool's worker processes: Python < 3.14 has no public way to reach them (3.14 adds kill_workers()).
        return dict(getattr(self._pool, "_processes", None) or {})

    def _exit_codes(self) -> dict[int, int | None]:
        """``pid -> exit status`` of the workers that have ended (a dead one's pipe closes a moment before it can be
        waited for, hence the join)."""
        procs = self._processes()
        ended = set(wait_for([p.sentinel for p in procs.values()], timeout=0))
        codes = {}
        for pid, p in procs.items():
            if p.sentinel in ended:
                p.join(timeout=10)
                codes[pid] = p.exitcode
        return codes

    def _kill(self) -> None:
        """Kill every worker now (SIGKILL: Lightning turns a SIGTERM inside ``fit`` into an exception that a retry
        would catch) and drop the pool; the next job starts a new one."""
        pool, procs = self._pool, self._processes()
        self._pool, self._started = None, None
        if pool is None:
            return
        for p in procs.values():
            if p.exitcode is None:
                p.kill()
        for p in procs.values():
            p.join(timeout=30)
        # not wait=True: with its workers killed, the pool's manager thread finds them dead and ends on its own;
        # waiting for it here could only add a way to hang on Ctrl-C
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stop the workers (idle between batches: no job is lost; killing them spares Python's own exit after torch
        and Lightning, which takes seconds per worker) and wait for them."""
        self._kill()

    # -- a batch ---------------------------------------------------------------------------------------------------
    def _check_gpus(self, jobs: Sequence[Job]) -> None:
        asking = [j for j in jobs if j.resources.num_gpus > 0]
        if not asking:
            return
        if self._gpu is None:
            import torch  # here: only a batch with GPU jobs needs to know

            self._gpu = torch.cuda.is_available()
        worst = max(asking, key=lambda j: j.resources.num_gpus)
        if not self._gpu or worst.resources.num_gpus > 1:
            have = "sees no GPU" if not self._gpu else "shares one GPU among its jobs"
            raise ValueError(f"job {worst.key!r} asks for {worst.resources.num_gpus:g} GPU(s) and the processes "
                             f"executor {have}; set executor.resources.num_gpus to 0 (CPU) or at most 1, or use "
                             "the ray executor for several GPUs")

    def map(self, jobs: Sequence[Job], on_done: Callable[[JobResult], None] | None = None) -> list[JobResult]:
        check_keys(jobs)
        self._check_gpus(jobs)
        results: dict[str, JobResult] = {}
        waiting = list(range(len(jobs)))  # not started, in the batch's order
        running: dict[Future, int] = {}
        deaths, stops = [0] * len(jobs), [0] * len(jobs)
        pid_of: dict[str, int] = {}

        def finish(res: JobResult) -> None:
            results[res.key] = res
            if on_done is not None:
                on_done(res)

        def start_ready() -> bool:
            """Start what is ready and fits, in the batch's order; ``False``: the pool refused (it is broken)."""
            cpus = sum(jobs[i].resources.num_cpus for i in running.values())
            gpus = sum(jobs[i].resources.num_gpus for i in running.values())
            for i in list(waiting):
                job = jobs[i]
                if not all(k in results for k in job.after):
                    continue
                needs = [results[k] for k in job.after]
                if not all(r.ok for r in needs):
                    waiting.remove(i)
                    finish(run_job(job, 0, needs))  # not run: the result names the job it needed
                    continue
                fits = (cpus + job.resources.num_cpus <= self.workers and gpus + job.resources.num_gpus <= 1
                        and len(running) < self.workers)
                if running and not fits:
                    return True  # the batch's order: a job that does not fit yet is not overtaken
                try:
                    payload = pickle.dumps(job)
                except Exception as err:  # noqa: BLE001 - a function or argument another process cannot receive
                    waiting.remove(i)
                    finish(JobResult(job.key, False, error=f"the job cannot be sent to a worker process: "
                                     f"{type(err).__name__}: {err}", traceback=traceback.format_exc(), attempts=0))
                    continue
                fut = self._submit(job, payload)
                if fut is None:
                    return False
                waiting.remove(i)
                running[fut] = i
                cpus, gpus = cpus + job.resources.num_cpus, gpus + job.resources.num_gpus
            return True

        def ended(fut: Future) -> None:
            i = running.pop(fut)
            pid_of.pop(jobs[i].key, None)
            err = fut.exception()
            if isinstance(err, KeyboardInterrupt):
                raise KeyboardInterrupt
            if err is not None:  # from the pool itself (e.g. a result it could not send back)
                finish(JobResult(jobs[i].key, False, error=f"{type(err).__name__}: {err}",
                                 traceback="".join(traceback.format_exception(err)), attempts=1))
            else:
                res = fut.result()
                res.attempts += deaths[i]  # the tries its dead workers made
                finish(res)

        def broken() -> None:
            """A worker died: keep what finished, find whose job the dead worker ran, kill the other workers and
            put their jobs back."""
            codes = self._exit_codes()  # before the others are stopped
            pid_of.update(self._started_jobs())
            self._kill()
            for fut in [f for f in running if not _lost(f)]:
                ended(fut)  # finished before the pool broke
            stopped = {i: codes.get(pid_of.pop(jobs[i].key, -1)) for i in running.values()}
            running.clear()
            # whose worker died: an exit status, and not the SIGTERM with which the pool stops the others
            dead = {i: code for i, code in stopped.items() if code is not None and code != -signal.SIGTERM}
            for i in stopped:
                job = jobs[i]
                if i in dead:
                    deaths[i] += 1
                    if deaths[i] > self.max_retries:
                        finish(JobResult(job.key, False, error=f"WorkerDied: the worker process running it died: "
                                         f"{_how_it_ended(dead[i])}", attempts=deaths[i]))
                        continue
                elif not dead:  # no job to blame (an idle worker died, or one was stopped from outside)
                    stops[i] += 1
                    if stops[i] >= MAX_STOPS:
                        finish(JobResult(job.key, False, error=f"WorkerDied: stopped {stops[i]} times when a worker "
                                         "process died and no job could be blamed", attempts=deaths[i] + stops[i]))
                        continue
                waiting.append(i)
            waiting.sort()

        try:
            while waiting or running:
                if not start_ready() and not running:
                    self._kill()  # broken with nothing of ours running (an idle worker died): a new pool
                if not running:
                    continue  # everything left was decided without running (failed dependencies), or a new pool
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                pid_of.update(self._started_jobs())
                if any(_lost(f) for f in done):
                    broken()
                    continue
                for fut in done:
                    ended(fut)
        except BaseException:
            self._kill()  # Ctrl-C, or on_done stopped the batch: no worker goes on
            raise
        return [results[j.key] for j in jobs]
