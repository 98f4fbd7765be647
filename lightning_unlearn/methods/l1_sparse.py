"""l1-sparse unlearning (Jia, Liu, Ram, Yao, Liu, Liu, Sharma & Liu, "Model Sparsity Can Simplify Machine Unlearning",
NeurIPS 2023, "sparsity-aware unlearning"; reference code github.com/OPTML-Group/Unlearn-Sparse, ``unlearn/FT.py``).

Finetune on D_r with an L1 penalty on the weights whose weight decays linearly over the run: sparsity pushes the
model towards weights that D_r alone supports. The penalty is relative to the original's L1 norm by default, so that
its weight means the same on a small model as on a ResNet-18.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_unlearn.backbones import Backbone
from lightning_unlearn.data.datasets import unpack_batch
from lightning_unlearn.methods.base import OptimizerName
from lightning_unlearn.methods.finetune import Finetune, check_finite
from lightning_unlearn.methods.steps import log_step
from lightning_unlearn.search_space import FloatRange, IntRange, SearchSpace

__all__ = ["L1Sparse", "PenaltyScale", "l1_norm", "l1_weight"]

PenaltyScale = Literal["relative", "sum"]


def l1_weight(epoch: int, max_epochs: int, alpha: float, no_l1_epochs: int = 0) -> float:
    """The L1 weight of ``epoch`` (0-based), as the reference ``FT_iter``::

        gamma_e = alpha * (1 - e / (E - n))   for e < E - n        (E = max_epochs, n = no_l1_epochs)
        gamma_e = 0                           for e >= E - n       (the last n epochs: plain fine-tuning)
        gamma_e = alpha                       if E - n == 0        (the reference's special case)

    Constant within an epoch; ``alpha`` in epoch 0, ``alpha / (E - n)`` in the last L1 epoch.
    """
    active = max_epochs - no_l1_epochs
    if active == 0:
        return float(alpha)
    if epoch < active:
        return float(alpha) * (1.0 - epoch / active)
    return 0.0


def l1_norm(params: list[nn.Parameter] | list[Tensor]) -> Tensor:
    """``sum_i |w_i|`` over all entries of ``params`` (the reference ``l1_regularization``), in fp32."""
    return torch.stack([p.float().abs().sum() for p in params]).sum()


class L1Sparse(Finetune):
    """Fine-tune on D_r with a linearly decaying L1 penalty::

        min_w  E_{(x, y) in D_r} CE(f_w(x), y)  +  gamma_e * ||w||_1 / s,     gamma_e = alpha * (1 - e / (E - n))

    (:func:`l1_weight`; ``e`` the epoch, ``E`` the Trainer's ``max_epochs``, ``n = no_l1_epochs``). ``penalty``
    sets ``s``: ``"relative"`` (default) ``s = ||w_0||_1``, the original's L1 norm when ``fit`` starts, so the penalty
    starts at ``alpha`` nats whatever the model's size and weight scale and ``alpha`` compares with the cross-entropy;
    ``"sum"`` ``s = 1``, the reference's ``l1_regularization(model)``, whose ``alpha`` means something else on every
    model (its per-weight pull is ``alpha`` whatever the number and size of the weights). The norm covers every
    trainable parameter (biases, BatchNorm affine and the head included), as the reference's over
    ``model.parameters()``. Data and step are :class:`Finetune`'s: one shuffled pass over D_r per epoch, train mode;
    D_f is never read. The weight in use is ``self.l1_weight`` (gamma_e, logged as ``train/l1_weight``).

    Defaults and their source: SGD ``lr=0.01``, 10 epochs, momentum 0.9, weight decay 5e-4, ``no_l1_epochs=0``
    (reference README command ``--unlearn FT_prune --unlearn_lr 0.01 --unlearn_epochs 10`` and ``arg_parser``). The
    reference leaves ``--alpha`` to the user (its parser default 0.2 is another method's noise level); the one public
    setting found, Scissorhands' scripts built on the reference (``--unlearn FT_prune --alpha 0.0001 --unlearn_lr 0.01
    --unlearn_epochs 10`` on a CIFAR-10 ResNet-18), is ``penalty="sum", alpha=1e-4``; on a ResNet-18, whose
    ``||w_0||_1`` is about 2.2e5 at initialisation, that is ``penalty="relative", alpha`` about 20: the default.

    Args:
        backbone: the trained model to unlearn (from the CLI: ``--original_ckpt``).
        alpha: initial L1 weight (nats of penalty at the start with ``penalty="relative"``).
        no_l1_epochs: final epochs without the penalty.
        penalty: ``"relative"`` (the L1 norm divided by the original's) or ``"sum"`` (the reference's raw norm).
        lr, momentum, weight_decay, optimizer, batch_size: as Finetune.
    """

    #: ``lightning_unlearn tune``'s search space (docs/tuning.md); overridable from YAML. ``alpha`` is relative: with
    #: ``penalty: sum`` override it (the reference's scale on a ResNet-18: around 1e-4).
    search_space: ClassVar[SearchSpace] = {
        "lr": FloatRange(1e-4, 1e-1, log=True),
        "alpha": FloatRange(1.0, 100.0, log=True),
        "max_epochs": IntRange(1, 10),
    }

    def __init__(
        self,
        backbone: Backbone | None = None,
        alpha: float = 20.0,
        no_l1_epochs: int = 0,
        penalty: PenaltyScale = "relative",
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        optimizer: OptimizerName = "sgd",
        batch_size: int | None = None,
    ) -> None:
        if alpha < 0:
            raise ValueError(f"alpha (the L1 weight) must be >= 0, got {alpha}.")
        if no_l1_epochs < 0:
            raise ValueError(f"no_l1_epochs must be >= 0, got {no_l1_epochs}.")
        if penalty not in ("relative", "sum"):
            raise ValueError(f"Unknown penalty {penalty!r}; choose 'relative' or 'sum'.")
        super().__init__(
            backbone=backbone,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            optimizer=optimizer,
            batch_size=batch_size,
        )
        self.l1_weight = 0.0
        #: ``1 / s``: what the L1 norm is multiplied by besides ``l1_weight`` (set when ``fit`` starts; a run resumed
        #: from a checkpoint keeps the one it started with).
        self.l1_scale = 1.0
        self._resumed_scale: float | None = None

    def on_fit_start(self) -> None:
        super().on_fit_start()
        max_epochs = self.trainer.max_epochs
        if max_epochs is None or max_epochs < 1:
            raise ValueError(
                "L1Sparse decays its L1 weight linearly over the run, so it needs a finite Trainer `max_epochs` "
                f"(got {max_epochs}); set e.g. `trainer.max_epochs: 10`."
            )
        if self.hparams.no_l1_epochs > max_epochs:
            raise ValueError(
                f"no_l1_epochs={self.hparams.no_l1_epochs} exceeds max_epochs={max_epochs}; lower it or raise "
                "max_epochs."
            )
        self.l1_scale = 1.0
        if self._resumed_scale is not None:
            self.l1_scale = self._resumed_scale
        elif self.hparams.get("penalty", "sum") == "relative":
            with torch.no_grad():
                norm = float(l1_norm(self.trainable_parameters()))
            if not norm > 0:
                raise ValueError("penalty='relative' divides by the original's L1 norm, which is 0; use penalty='sum'.")
            self.l1_scale = 1.0 / norm

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["l1_scale"] = self.l1_scale

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._resumed_scale = checkpoint.get("l1_scale")

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        hp = self.hparams
        x, y = unpack_batch(batch)
        self.l1_weight = l1_weight(int(self.current_epoch), int(self.trainer.max_epochs), hp.alpha, hp.no_l1_epochs)
        ce = F.cross_entropy(self._require_model()(x), y)
        if self.l1_weight > 0:
            loss = ce + (self.l1_weight * self.l1_scale) * l1_norm(self.trainable_parameters())
        else:
            loss = ce
        check_finite(loss, self)
        log_step(self, "train/loss", loss, len(y))
        log_step(self, "train/ce", ce, len(y))
        if batch_idx == 0:  # constant within an epoch: logged once per epoch, not per step
            self.log("train/l1_weight", self.l1_weight, on_step=False, on_epoch=True, batch_size=1)
        return loss
