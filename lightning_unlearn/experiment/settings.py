"""One vocabulary for the settings the benchmark, the tuner and the audit share: how the original and gold models are
trained (:class:`TrainingSettings`), the Lightning Trainer of every job (:class:`TrainerSettings`), where the jobs run
(``executor:``, read by :func:`executor_settings`), what the evaluator measures (:func:`evaluator_settings`), and
the torch threads of a job (:func:`set_threads`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from lightning_unlearn.evaluation import evaluator_settings as core_evaluator_settings
from lightning_unlearn.executors import Resources, executor_names
from lightning_unlearn.experiment.errors import ConfigError

__all__ = [
    "EVALUATOR_PER_RUN",
    "EVALUATOR_SKIP",
    "ExecutorSettings",
    "TrainerSettings",
    "TrainingSettings",
    "cuda_available",
    "evaluator_settings",
    "executor_settings",
    "set_threads",
    "trainer_key",
]


@dataclass
class TrainingSettings:
    """How the original (on D) and the gold model (on D_r) are trained: a :class:`~lightning_unlearn.methods.Classifier`.

    Args:
        max_epochs: epochs of the original model.
        gold_max_epochs: epochs of the gold model (default: ``max_epochs``, the usual "retrain from scratch").
        lr, momentum, weight_decay, optimizer, scheduler, label_smoothing: the ``Classifier``'s settings.
    """

    max_epochs: int = 30
    gold_max_epochs: int | None = None
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    optimizer: Literal["sgd", "adam"] = "sgd"
    scheduler: Literal["cosine", "none"] = "cosine"
    label_smoothing: float = 0.0

    def classifier_kwargs(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("max_epochs")
        d.pop("gold_max_epochs")
        return d

    def epochs(self, role: str) -> int:
        if role == "gold" and self.gold_max_epochs is not None:
            return int(self.gold_max_epochs)
        return int(self.max_epochs)


@dataclass
class TrainerSettings:
    """Lightning Trainer settings shared by every training and unlearning run of an experiment.

    Args:
        accelerator: ``"cpu"``, ``"gpu"``, ``"auto"``, ...
        devices: must be 1: every job is one Trainer on one device (several GPUs: several jobs side by side, through
            the ``ray`` executor).
        precision: e.g. ``"32-true"``, ``"bf16-mixed"``, ``"16-mixed"``.
        deterministic: ``Trainer(deterministic=...)``.
        num_threads: ``torch.set_num_threads`` for CPU runs (default: PyTorch's choice).
    """

    accelerator: str = "auto"
    devices: int = 1
    precision: str = "32-true"
    deterministic: bool = False
    num_threads: int | None = None


def trainer_key(trainer: TrainerSettings) -> dict[str, Any]:
    """The Trainer settings a result depends on, as cache keys name them: every field but ``num_threads``."""
    return {k: v for k, v in asdict(trainer).items() if k != "num_threads"}


#: ``UnlearningEvaluator`` arguments set per run (not settings of a config).
EVALUATOR_PER_RUN = frozenset({"gold", "original", "output_dir", "unlearn_time_s", "retrain_time_s"})
#: ... and those a config's ``evaluator:`` may not set (periodic evaluation is a Trainer-level choice of ``unlearn``).
EVALUATOR_SKIP = EVALUATOR_PER_RUN | {"every_n_epochs"}


def evaluator_settings(configured: Mapping[str, Any]) -> dict[str, Any]:
    """The evaluator's effective settings (:func:`lightning_unlearn.evaluation.evaluator_settings`: its signature's
    defaults overridden by ``configured``, optional components that are off left out). A row's key holds these, so
    that a changed default (e.g. the SVC's ``svc_max_samples``) invalidates the rows it measured, as a changed config
    does."""
    return core_evaluator_settings(dict(configured))


@dataclass(frozen=True)
class ExecutorSettings:
    """Where an experiment's jobs run, from its ``executor:`` key (:func:`executor_settings`).

    Attributes:
        spec: what :func:`~lightning_unlearn.executors.make_executor` builds (``{"name", **options}``).
        resources: what each job asks for.
        threads: the torch threads each job sets (``None``: the process's setting is left alone).
        group_rows: the benchmark's rows per job (``executor.group_rows``): ``True`` a group's rows in one job,
            ``False`` one job per row, an integer ``n`` a group's rows cut into jobs of at most ``n`` rows.
    """

    spec: dict[str, Any]
    resources: Resources
    threads: int | None
    group_rows: bool | int


def cuda_available() -> bool:
    """``accelerator: auto`` resolved where the jobs are planned: Ray hides the GPUs from a task that asks for none
    (``CUDA_VISIBLE_DEVICES=""``), so its jobs would train on the CPU where a local run of the same config uses one."""
    return torch.cuda.is_available()


def executor_settings(raw: Any, trainer: TrainerSettings, resources: Mapping[str, Any] | None = None) -> ExecutorSettings:
    """Read ``executor:``: ``local``, ``ray`` or ``{name, resources: {num_cpus, num_gpus}, group_rows, **options}``.

    Resources default to ``resources`` (an application's own defaults), then to ``trainer.num_threads`` (else 1) CPUs
    and, on a GPU accelerator, 1 GPU per job. Threads: the local executor keeps the process's rule
    (``trainer.num_threads`` if set, else PyTorch's choice); any other one gives each job ``trainer.num_threads`` or
    its whole CPUs, so that jobs side by side do not oversubscribe the cores. ``group_rows`` (``true``: one job per group,
    the default of every executor but ``local``; ``false``: one per row; ``n``: a group cut into jobs of at most ``n``
    rows) is not an option of the executor and is taken out of ``spec``.
    """
    spec = {"name": raw} if isinstance(raw, str) else dict(raw or {})
    spec.setdefault("name", "local")
    res = {**dict(resources or {}), **dict(spec.pop("resources", None) or {})}
    grouped = spec.pop("group_rows", None)
    unknown = sorted(set(res) - {"num_cpus", "num_gpus"})
    if unknown:
        raise ConfigError(f"executor.resources: unknown key(s) {unknown}; it takes num_cpus and num_gpus.")
    acc = str(trainer.accelerator).lower()
    gpu = acc in ("gpu", "cuda") or (acc == "auto" and spec["name"] != "local" and cuda_available())
    cpus = float(res.get("num_cpus", trainer.num_threads or 1))
    gpus = float(res.get("num_gpus", 1.0 if gpu else 0.0))
    if cpus <= 0 or gpus < 0:
        raise ConfigError(f"executor.resources: num_cpus must be > 0 and num_gpus >= 0, got {res}.")
    known = executor_names()
    if spec["name"] not in known:
        raise ConfigError(f"unknown executor {spec['name']!r}; choose one of: {', '.join(known)}.")
    if grouped is not None and not isinstance(grouped, bool) and not (isinstance(grouped, int) and grouped >= 1):
        raise ConfigError(f"executor.group_rows must be true, false or a number of rows per job >= 1, got {grouped!r}.")
    threads = trainer.num_threads if spec["name"] == "local" else (trainer.num_threads or max(1, int(cpus)))
    group_rows = spec["name"] != "local" if grouped is None else grouped
    return ExecutorSettings(spec, Resources(num_cpus=cpus, num_gpus=gpus), threads, group_rows)


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` (``None``: leave the process's setting alone)."""
    if threads:
        torch.set_num_threads(int(threads))
