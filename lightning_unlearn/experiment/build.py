"""What a job builds from the settings it needs: the DataModule (:func:`build_datamodule`), the backbone with the
input description taken from the DataModule (:func:`build_backbone`), the Trainer's arguments (:func:`trainer_kwargs`,
with the per-run logger of :func:`run_logger`) and the device an evaluation outside a Trainer uses (:func:`eval_device`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import loggers

from lightning_unlearn.data.base import UnlearningDataModule
from lightning_unlearn.data.forget import ForgetSpec
from lightning_unlearn.experiment.settings import TrainerSettings
from lightning_unlearn.experiment.specs import import_class

__all__ = ["LINKED_BACKBONE_ARGS", "build_backbone", "build_datamodule", "eval_device", "run_logger", "trainer_kwargs"]

#: Backbone arguments taken from the DataModule (a config's ``backbone:`` does not give them).
LINKED_BACKBONE_ARGS = ("num_classes", "in_channels", "image_size", "mean", "std")


def build_datamodule(data: Mapping[str, Any], forget: ForgetSpec | None, seed: int, train_on: str = "all",
                     **init_args: Any) -> UnlearningDataModule:
    """The ``data:`` entry's DataModule with an experiment's forget set, seed, ``train_on`` and ``init_args`` of its
    own (the audit's ``holdout_fraction``)."""
    cls = import_class(data["class_path"])
    return cls(**data["init_args"], forget=forget, seed=seed, train_on=train_on, **init_args)


def build_backbone(backbone: Mapping[str, Any], dm: Any) -> Any:
    """The ``backbone:`` entry with ``num_classes``, ``in_channels``, ``image_size``, ``mean``, ``std`` from ``dm``
    (those its class takes)."""
    cls = import_class(backbone["class_path"])
    params = inspect.signature(cls).parameters
    linked = {
        "num_classes": int(dm.num_classes),
        "in_channels": int(dm.in_channels),
        "image_size": int(dm.image_size),
        "mean": [float(v) for v in dm.mean],
        "std": [float(v) for v in dm.std],
    }
    kwargs = {k: v for k, v in linked.items() if k in params}
    kwargs.update(backbone["init_args"])
    return cls(**kwargs)


def run_logger(kind: str, run_dir: Path, output_dir: str | Path) -> Any:
    """The Lightning logger of one training or run, writing into ``run_dir/logs``: ``csv``, ``tensorboard``,
    ``wandb`` (one W&B run per job, named by its directory under ``output_dir`` and grouped by ``output_dir``) or
    ``none`` (``False``)."""
    if kind == "none":
        return False
    if kind == "csv":
        return loggers.CSVLogger(save_dir=str(run_dir), name="logs", version="")
    if kind == "tensorboard":
        return loggers.TensorBoardLogger(save_dir=str(run_dir), name="logs", version="")
    out = Path(output_dir)
    name = str(run_dir.relative_to(out)) if run_dir.is_relative_to(out) else run_dir.name
    return loggers.WandbLogger(save_dir=str(run_dir / "logs"), name=name, group=out.name, project="lightning_unlearn")


def trainer_kwargs(trainer: TrainerSettings, run_dir: Path, logger: Any = False) -> dict[str, Any]:
    """The Trainer arguments of every training and run of an experiment: the settings, no checkpointing, no
    validation loop, no progress bar or summary, ``logger``, and ``run_dir`` as the root directory."""
    return {
        "accelerator": trainer.accelerator,
        "devices": trainer.devices,
        "precision": trainer.precision,
        "deterministic": trainer.deterministic,
        "logger": logger,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "limit_val_batches": 0,
        "default_root_dir": str(run_dir),
    }


def eval_device(accelerator: str) -> str:
    """The device an evaluation made outside a Trainer uses for ``accelerator`` (``cuda`` on ``gpu``/``cuda``, or on
    ``auto`` when there is one; ``mps`` when asked and present; else ``cpu``)."""
    acc = str(accelerator).lower()
    if acc in ("gpu", "cuda") or (acc == "auto" and torch.cuda.is_available()):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if acc == "mps" and torch.backends.mps.is_available():
        return "mps"
    return "cpu"
