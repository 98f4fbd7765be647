"""Negative Gradient (NegGrad / gradient ascent, "GA") and NegGrad+.

NegGrad maximises the loss on the forget set D_f (Golatkar et al., CVPR 2020; "GA" in Fan et al., SalUn, ICLR 2024).
NegGrad+ (Kurmanji, Triantafillou, Hayes & Triantafillou, "Towards Unbounded Machine Unlearning" (SCRUB), NeurIPS
2023) adds a descent term on the retained data D_r. Gradient ascent has no minimum: the cross-entropy on D_f grows
without bound, so this module guards against divergence (``on_divergence``).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.combined_loader import CombinedLoader
from torch import Tensor

from lightning_unlearn.backbones import Backbone
from lightning_unlearn.data.datasets import unpack_batch
from lightning_unlearn.methods.base import OptimizerName
from lightning_unlearn.methods.finetune import TrainModeMethod, loader_batch_size, split_or_error
from lightning_unlearn.methods.guards import watch_step
from lightning_unlearn.methods.steps import log_step
from lightning_unlearn.search_space import FloatRange, IntRange, SearchSpace

__all__ = ["NegativeGradient", "UnlearningDivergedError", "negative_gradient_loss"]


class UnlearningDivergedError(FloatingPointError):
    """Gradient ascent diverged (inf/NaN loss, or the forget loss passed ``max_forget_loss``)."""


def negative_gradient_loss(
    forget_logits: Tensor,
    forget_targets: Tensor,
    retain_logits: Tensor | None = None,
    retain_targets: Tensor | None = None,
    retain_weight: float = 0.0,
    max_forget_loss: float | None = None,
) -> tuple[Tensor, Tensor]:
    """``(loss, mean forget CE)`` with ``loss = retain_weight * CE_r - (1 - retain_weight) * CE_f``.

    With ``max_forget_loss`` each sample's forget cross-entropy is clamped at that value before averaging, so samples
    already past the bound give no gradient (the "clip" guard). The returned mean forget CE is the unclamped one.
    """
    ce_f = F.cross_entropy(forget_logits, forget_targets, reduction="none")
    ascent = ce_f.clamp(max=max_forget_loss) if max_forget_loss is not None else ce_f
    loss = -(1.0 - retain_weight) * ascent.mean()
    if retain_weight > 0:
        if retain_logits is None or retain_targets is None:
            raise ValueError("retain_weight > 0 needs retain logits and targets.")
        loss = loss + retain_weight * F.cross_entropy(retain_logits, retain_targets)
    return loss, ce_f.detach().mean()


class NegativeGradient(TrainModeMethod):
    """Gradient ascent on D_f, optionally with gradient descent on D_r (NegGrad+)::

        NegGrad  (retain_weight = 0):  min_theta  - CE(f_theta; D_f)
        NegGrad+ (retain_weight = a):  min_theta  a * CE(f_theta; D_r) - (1 - a) * CE(f_theta; D_f)

    Data: ``retain_weight == 0`` iterates D_f only (one epoch = one pass over D_f). ``retain_weight > 0`` iterates a
    ``CombinedLoader({"forget": D_f, "retain": D_r}, mode="max_size_cycle")``: one epoch = one pass over the longer set
    (D_r in practice) with the shorter one cycled, as SCRUB's ``zip(retain_loader, cycle(forget_loader))``.

    Divergence guard (the loss is unbounded below): ``on_divergence="stop"`` raises :class:`UnlearningDivergedError`
    as soon as the loss is inf/NaN or the batch's mean forget cross-entropy exceeds ``max_forget_loss`` (default 50:
    a probability of e^-50 on the true class, far past forgetting). ``"clip"`` instead clamps each sample's forget CE
    at ``max_forget_loss`` (no gradient beyond it), clips the gradient norm to ``max_grad_norm`` in
    :meth:`on_before_optimizer_step` (the Trainer's own ``gradient_clip_val`` is left alone and still applies after),
    and skips any step whose loss is not finite.

    Defaults and their source: NegGrad uses SGD ``lr=1e-4``, 5 epochs (``configs/unlearn/negative_gradient.yaml``) --
    the SalUn code's GA command (``--unlearn GA --unlearn_lr 0.0001 --unlearn_epochs 5``) with its momentum 0.9 and
    weight decay 5e-4. NegGrad+ in the SCRUB notebooks uses ``alpha=0.95`` (our ``retain_weight``), SGD ``lr=0.01``
    without momentum, 10 epochs. ``max_forget_loss=50`` and ``max_grad_norm=5`` are this package's choices.

    Args:
        backbone: the trained model to unlearn (from the CLI: ``--original_ckpt``).
        lr, momentum, weight_decay, optimizer, batch_size: optimizer and loader settings.
        retain_weight: ``a`` in NegGrad+; 0 gives plain NegGrad (D_r is then not read).
        on_divergence: ``"stop"`` (raise) or ``"clip"`` (bound the ascent and the gradient norm).
        max_forget_loss: bound on the forget cross-entropy (both modes).
        max_grad_norm: gradient-norm bound in ``"clip"`` mode (``None``: no norm clipping).
    """

    #: ``lightning_unlearn tune``'s search space (docs/tuning.md); overridable from YAML.
    search_space: ClassVar[SearchSpace] = {
        "lr": FloatRange(1e-5, 1e-2, log=True),
        "max_epochs": IntRange(1, 10),
    }

    train_splits = ("forget", "retain")

    def __init__(
        self,
        backbone: Backbone | None = None,
        lr: float = 1e-4,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        optimizer: OptimizerName = "sgd",
        batch_size: int | None = None,
        retain_weight: float = 0.0,
        on_divergence: Literal["stop", "clip"] = "stop",
        max_forget_loss: float = 50.0,
        max_grad_norm: float | None = 5.0,
    ) -> None:
        if not 0.0 <= retain_weight < 1.0:
            raise ValueError(
                f"retain_weight must be in [0, 1) (loss = a*CE_r - (1-a)*CE_f), got {retain_weight}."
            )
        if on_divergence not in ("stop", "clip"):
            raise ValueError(f"on_divergence must be 'stop' or 'clip', got {on_divergence!r}.")
        if max_forget_loss <= 0:
            raise ValueError(f"max_forget_loss must be positive, got {max_forget_loss}.")
        super().__init__(
            backbone=backbone,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            optimizer=optimizer,
            batch_size=batch_size,
        )
        self.train_splits = ("forget", "retain") if retain_weight > 0 else ("forget",)
        self.skipped_steps = 0

    def build_train_dataloader(self, datamodule: Any) -> CombinedLoader:
        name = type(self).__name__
        bs = loader_batch_size(self, datamodule)
        forget = split_or_error(datamodule, "forget", augment=datamodule.augment, method=name)
        loaders = {"forget": datamodule.loader(forget, shuffle=True, batch_size=bs, train=True)}
        if self.hparams.retain_weight > 0:
            retain = split_or_error(datamodule, "retain", augment=datamodule.augment, method=name)
            loaders["retain"] = datamodule.loader(retain, shuffle=True, batch_size=bs, train=True)
        return CombinedLoader(loaders, mode="max_size_cycle")

    def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        hp = self.hparams
        model = self._require_model()
        xf, yf = unpack_batch(batch["forget"])
        clip = hp.on_divergence == "clip"
        if "retain" in batch and hp.retain_weight > 0:
            xr, yr = unpack_batch(batch["retain"])
            lf, lr_ = model(xf), model(xr)  # two forwards (BatchNorm batch statistics per set), as SCRUB's code
        else:
            lf, lr_, yr = model(xf), None, None
        loss, ce_f = negative_gradient_loss(
            lf, yf, lr_, yr, retain_weight=hp.retain_weight, max_forget_loss=hp.max_forget_loss if clip else None
        )
        if clip:
            # skipping a step is a host decision, so "clip" mode reads the loss back every step (one sync per step)
            if not torch.isfinite(loss):
                self.skipped_steps += 1
                rank_zero_warn(
                    f"NegativeGradient: non-finite loss at step {self.global_step}; step skipped "
                    "(on_divergence='clip')."
                )
                return None
        else:
            # "stop" mode records the first diverged step on the device (no sync per step); the FiniteWeightsGuard
            # reads it back every few steps, at epoch end and before a checkpoint, and raises the message below
            bad = ~torch.isfinite(loss) | ~torch.isfinite(ce_f) | (ce_f > hp.max_forget_loss)
            watch_step(self, bad, self._divergence_message, loss, ce_f, error=UnlearningDivergedError)
        log_step(self, "train/loss", loss, len(yf))
        log_step(self, "train/forget_ce", ce_f, len(yf))
        return loss

    def _divergence_message(self, step: int, epoch: int, values: list[float]) -> str:
        hp = self.hparams
        loss, ce_f = values
        what = (
            f"the loss became {loss}"
            if not math.isfinite(loss)
            else f"the forget batch's mean cross-entropy reached {ce_f:.3g} > max_forget_loss={hp.max_forget_loss}"
        )
        return (
            f"NegativeGradient diverged at step {step} (epoch {epoch}): {what}. Gradient "
            "ascent has no minimum, so it runs away once D_f is forgotten and then destroys the rest of the model. "
            f"Lower `lr` (now {hp.lr}) or the number of epochs (Trainer `max_epochs`), add a retain term "
            "(`retain_weight`, e.g. 0.95 as in SCRUB's NegGrad+), or set `on_divergence: clip` to bound the ascent "
            "instead of stopping."
        )

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        hp = self.hparams
        if hp.on_divergence == "clip" and hp.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), float(hp.max_grad_norm))
