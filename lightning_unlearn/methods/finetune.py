"""Finetune (FT): keep training the original model on the retained data D_r only.

The oldest and simplest baseline (Golatkar, Achille & Soatto, "Eternal Sunshine of the Spotless Net", CVPR 2020; used
as "FT" by Fan et al., "SalUn", ICLR 2024 and by Kurmanji et al., "Towards Unbounded Machine Unlearning" (SCRUB),
NeurIPS 2023): forgetting relies on catastrophic forgetting of D_f while the model keeps fitting D_r.

This file also holds the small helpers the other baselines share (loss guard, loader batch size, data sets).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from lightning_unlearn.backbones import Backbone
from lightning_unlearn.data.datasets import SplitView, unpack_batch
from lightning_unlearn.methods.base import OptimizerName, UnlearningMethod
from lightning_unlearn.methods.guards import watch_step
from lightning_unlearn.methods.steps import log_step
from lightning_unlearn.search_space import FloatRange, IntRange, SearchSpace

__all__ = ["Finetune"]


class TrainModeMethod(UnlearningMethod):
    """Puts the model being unlearned in train mode when ``fit`` starts.

    Lightning (>= 2.2) keeps the train/eval mode a module already has, and ``load_backbone`` returns the original in
    eval mode, so without this the model would be "trained" with frozen BatchNorm statistics and no dropout. The
    baselines' reference code all train in train mode (``model.train()``). Frozen reference copies stay in eval mode.
    """

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self._require_model().train()


# -- helpers shared by the baselines in this package ------------------------------------------------------------------
def loader_batch_size(method: UnlearningMethod, datamodule: Any) -> int:
    """The method's ``batch_size`` if set, else the DataModule's training batch size."""
    return int(method.hparams.get("batch_size") or datamodule.batch_size)


def split_or_error(datamodule: Any, name: str, augment: bool, method: str) -> SplitView:
    """A non-empty split as a dataset, or a clear error naming what is missing."""
    ds = datamodule.dataset(name, augment=augment)
    if len(ds) == 0:
        hint = (
            "give the DataModule a `forget` spec (e.g. `ForgetSpec(classes=[3])`)"
            if name == "forget"
            else "the forget spec covers the whole training set; keep some data to retain"
        )
        raise ValueError(f"{method} needs a non-empty {name!r} split but it is empty: {hint}.")
    return ds


def check_finite(loss: Tensor, method: UnlearningMethod, what: str = "loss") -> None:
    """Stop with advice when a training loss is inf/NaN (instead of silently writing NaN weights).

    The check records the step on the device (:func:`~lightning_unlearn.methods.guards.watch_step`, no host sync per
    step); the method's :class:`~lightning_unlearn.methods.guards.FiniteWeightsGuard` raises within
    ``WATCH_EVERY_N_STEPS`` steps, at the epoch's end and before any checkpoint, naming the first bad step.
    """
    name, lr = type(method).__name__, method.hparams.get("lr")

    def message(step: int, epoch: int, values: list[float]) -> str:
        return (
            f"{name}: the {what} became {values[0]} at step {step} (epoch {epoch}); the weights would turn to NaN. "
            f"Lower `lr` (now {lr}) or the number of epochs."
        )

    watch_step(method, ~torch.isfinite(loss), message, loss, key=what)


def forget_mask(indices: Tensor, forget_sorted: Tensor) -> tuple[Tensor, Tensor]:
    """For each sample index, whether it is in D_f (``forget_sorted``: sorted D_f indices) and its position there."""
    forget_sorted = forget_sorted.to(indices.device)
    if forget_sorted.numel() == 0:
        return torch.zeros_like(indices, dtype=torch.bool), torch.zeros_like(indices)
    pos = torch.searchsorted(forget_sorted, indices).clamp_(max=forget_sorted.numel() - 1)
    return forget_sorted[pos] == indices, pos


class Finetune(TrainModeMethod):
    """Finetune on D_r: ``min_theta  E_{(x, y) in D_r} CE(f_theta(x), y)``, starting from the original weights.

    The model trains in train mode (BatchNorm statistics update). One epoch is one shuffled pass over D_r (with the
    DataModule's training augmentation when its ``augment`` is on); D_f is never read. The number of epochs is the
    Trainer's ``max_epochs`` (``configs/unlearn/finetune.yaml``: 10).

    Defaults and their source: SGD, ``lr=0.01``, 10 epochs are the FT settings of the SalUn code (README command
    ``--unlearn FT --unlearn_lr 0.01 --unlearn_epochs 10``) and of the ``finetune(..., lr=0.01, epochs=10)`` baseline
    in the SCRUB notebooks (inherited from Golatkar et al.'s SelectiveForgetting code); ``momentum=0.9`` and
    ``weight_decay=5e-4`` are the SalUn code's optimizer defaults (SCRUB uses plain SGD without momentum).

    Args:
        backbone: the trained model to unlearn (from the CLI: ``--original_ckpt``).
        lr, momentum, weight_decay, optimizer: optimizer settings (see above).
        batch_size: batch size of the D_r loader (default: the DataModule's).
    """

    #: ``lightning_unlearn tune``'s search space (docs/tuning.md); overridable from YAML.
    search_space: ClassVar[SearchSpace] = {
        "lr": FloatRange(1e-4, 1e-1, log=True),
        "max_epochs": IntRange(1, 10),
    }

    train_splits = ("retain",)

    def __init__(
        self,
        backbone: Backbone | None = None,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        optimizer: OptimizerName = "sgd",
        batch_size: int | None = None,
    ) -> None:
        super().__init__(
            backbone=backbone,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            optimizer=optimizer,
            batch_size=batch_size,
        )

    def build_train_dataloader(self, datamodule: Any) -> DataLoader:
        ds = split_or_error(datamodule, "retain", augment=datamodule.augment, method=type(self).__name__)
        return datamodule.loader(ds, shuffle=True, batch_size=loader_batch_size(self, datamodule), train=True)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = unpack_batch(batch)
        loss = F.cross_entropy(self._require_model()(x), y)
        check_finite(loss, self)
        log_step(self, "train/loss", loss, len(y))
        return loss
