"""Executors: how the independent jobs of the benchmark, the tuner and the audit are run.

A *job* is one model training, one unlearning run, one evaluation or one tuning trial: a module-level function and its
keyword arguments (so that a process pool or Ray can ship it by reference), with the resources it needs. A job writes
its own result files; the executor only runs it, records how it ended, and retries it when asked to. ``local`` runs
the jobs one after the other in this process (the default, and exactly the behaviour of a plain loop); ``processes``
(:mod:`lightning_unlearn.executors.processes`, standard library, loaded only when named) in worker processes of this
machine; ``ray`` (the ``lightning_unlearn[ray]`` extra, :mod:`lightning_unlearn.executors.ray`, loaded only when
named) runs each as a Ray task.
"""

from lightning_unlearn.executors.base import Executor, Job, JobResult, Resources, check_keys, is_interrupt, run_job
from lightning_unlearn.executors.local import LocalExecutor
from lightning_unlearn.executors.registry import executor_names, make_executor, register_executor

__all__ = [
    "Executor",
    "Job",
    "JobResult",
    "LocalExecutor",
    "Resources",
    "check_keys",
    "executor_names",
    "is_interrupt",
    "make_executor",
    "register_executor",
    "run_job",
]
