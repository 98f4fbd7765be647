"""Guards every unlearning method shares: a run whose weights become NaN/inf, or whose accuracy on the retained data
collapses to chance, ends with :class:`UnlearningFailedError` and writes no model (see ``docs/safety.md``).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from lightning_unlearn.checkpoints import non_finite_tensors
from lightning_unlearn.data.datasets import SplitView
from lightning_unlearn.utils import accuracy

__all__ = ["FiniteWeightsGuard", "UnlearningFailedError", "check_retain_collapse", "retain_probe"]


class UnlearningFailedError(FloatingPointError):
    """The unlearning run destroyed the model (NaN/inf weights, or retained accuracy collapsed); nothing was saved."""


def non_finite_names(module: nn.Module) -> list[str]:
    """Names of ``module``'s floating-point parameters and buffers that hold NaN/inf (a single host sync)."""
    return non_finite_tensors(module.state_dict())


def non_finite_message(method: Any, bad: list[str], when: str) -> str:
    """The error of a run whose weights became NaN/inf: where, what, and what to change."""
    hp = getattr(method, "hparams", {}) or {}
    return (
        f"{type(method).__name__} produced NaN/inf weights {when} ({len(bad)} tensors, e.g. "
        f"{', '.join(bad[:3])}); the run is stopped and no model was written. Lower the learning rate "
        f"(`lr`, now {hp.get('lr')}) or the number of epochs, or bound the updates (e.g. NegativeGradient "
        "`on_divergence: stop`, `max_grad_norm`)."
    )


class FiniteWeightsGuard(pl.Callback):
    """Ends ``fit`` when the weights stop being finite, and keeps any checkpoint of NaN/inf weights from being written.

    Checked at the end of every training epoch (one host sync per epoch, none per step) and in ``on_save_checkpoint``,
    which Lightning calls before a checkpoint file is written (``ModelCheckpoint``, ``trainer.save_checkpoint``).
    Every :class:`UnlearningMethod` adds one through ``configure_callbacks``.
    """

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        model = getattr(pl_module, "model", None)
        bad = non_finite_names(model) if isinstance(model, nn.Module) else []
        if bad:
            raise UnlearningFailedError(non_finite_message(pl_module, bad, f"in epoch {trainer.current_epoch}"))

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        bad = non_finite_tensors(checkpoint.get("state_dict") or {})
        if bad:
            raise UnlearningFailedError(non_finite_message(pl_module, bad, "when a checkpoint was to be saved"))


@torch.no_grad()
def retain_probe(method: Any) -> float | None:
    """Accuracy of ``method.unlearned_backbone()`` on up to ``method.retain_probe_samples`` evenly spaced samples of
    D_r (eval mode, no augmentation; modes restored). ``None`` without a DataModule or with D_r empty."""
    dm = getattr(method._trainer, "datamodule", None) if method._trainer is not None else None
    if dm is None or not hasattr(dm, "splits") or len(dm.splits.retain) == 0:
        return None
    retain = dm.splits.retain
    picks = retain[np.linspace(0, len(retain) - 1, min(len(retain), method.retain_probe_samples)).astype(int)]
    return accuracy(method.unlearned_backbone(), dm.loader(SplitView(dm.train_set, picks)))


def check_retain_collapse(method: Any, before: float | None) -> None:
    """Raise :class:`UnlearningFailedError` when D_r accuracy fell below ``chance + retain_collapse * (before -
    chance)`` (``before``: the original's, from :func:`retain_probe` at the start of ``fit``)."""
    fraction = method.retain_collapse
    if fraction is None or before is None:
        return
    chance = 1.0 / max(int(getattr(method.unlearned_backbone(), "num_classes", 0) or 0), 1)
    if before - chance < 0.2:
        return  # the original model itself is close to chance on D_r: nothing to collapse from
    after = retain_probe(method)
    floor = chance + fraction * (before - chance)
    if after is not None and after < floor:
        raise UnlearningFailedError(
            f"{type(method).__name__} destroyed the model: accuracy on the retained data D_r fell from "
            f"{100 * before:.1f}% to {100 * after:.1f}% (chance {100 * chance:.1f}%, collapse threshold "
            f"{100 * floor:.1f}%), so no model was written. Lower the learning rate (`lr`, now "
            f"{method.hparams.get('lr')}) or the number of epochs, or add a retain term; set "
            "`--retain_collapse null` (Python: `method.retain_collapse = None`) to keep such a model anyway."
        )
