"""SalUn (Fan, Liu, Zhang, Wei, Wong & Liu, "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in
Both Image Classification and Generation", ICLR 2024; reference code github.com/OPTML-Group/Unlearn-Saliency).

A weight-saliency mask keeps the weights whose forgetting-loss gradient on D_f is largest in magnitude; Random Labels
then trains only those weights, the others stay exactly at the original's values.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from lightning_unlearn.backbones import Backbone
from lightning_unlearn.data.datasets import unpack_batch
from lightning_unlearn.methods.base import OptimizerName, forget_split, loss_gradient
from lightning_unlearn.methods.random_labels import RandomLabels
from lightning_unlearn.search_space import FloatRange, IntRange, SearchSpace

__all__ = ["SalUn", "forgetting_gradient", "saliency_mask"]


def forgetting_gradient(model: nn.Module, batches: Any) -> dict[str, Tensor]:
    """``grad_w sum_{(x, y) in D_f} CE(f_w(x), y)`` over ``batches`` of ``(x, y, ...)`` (eval mode, fp32).

    The sign of the forgetting loss (``-CE`` in the reference code) does not matter: only magnitudes are used.
    """
    device = next(model.parameters()).device
    total: dict[str, Tensor] | None = None
    for batch in batches:
        x, y = unpack_batch(batch)
        g = loss_gradient(model, x.to(device), y.to(device), reduction="sum")
        total = g if total is None else {n: total[n] + g[n] for n in total}
    if total is None:
        raise ValueError("SalUn: the forget set D_f gave no batches to compute the saliency mask from.")
    return total


def saliency_mask(gradients: dict[str, Tensor], fraction: float) -> dict[str, Tensor]:
    """Boolean masks selecting the ``int(N * fraction)`` entries with the largest ``|gradient|`` over *all* ``N``
    entries of all parameters together (one global threshold, as the reference ``generate_mask.py``)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"mask_fraction must be in (0, 1], got {fraction}.")
    flat = torch.cat([g.detach().abs().flatten().float().cpu() for g in gradients.values()])
    k = int(flat.numel() * fraction)
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[torch.topk(flat, k, sorted=False).indices] = True
    masks, offset = {}, 0
    for name, g in gradients.items():
        masks[name] = keep[offset : offset + g.numel()].view(g.shape).to(g.device)
        offset += g.numel()
    return masks


class SalUn(RandomLabels):
    """Random Labels restricted to the salient weights::

        m     = 1[ |grad_w l_f(w_o; D_f)| >= top-(mask_fraction) quantile ],   l_f = CE on D_f, at the original w_o
        min_w  sum_{D_f} CE(f_w(x), y~) + sum_{D_r} CE(f_w(x), y)   over w = m * w + (1 - m) * w_o

    The mask is computed once when ``fit`` starts, on every rank over all of D_f (no augmentation, BatchNorm in eval
    mode, fp32): the gradient of the summed cross-entropy, then one global threshold over all parameters (biases and
    BatchNorm affine included) keeping ``int(N * mask_fraction)`` entries (:func:`saliency_mask`). Training is
    :class:`RandomLabels` (same loader, labels and step); before every optimizer step the gradients outside the mask
    are zeroed, and after every step the weights outside the mask are reset to the original values (the reference's
    ``_restore_masked_params``), so weight decay and momentum cannot move them either: they stay bit-identical.
    BatchNorm running statistics are buffers, not weights, and still update in train mode (as in the reference).

    Defaults and their source: ``mask_fraction=0.5`` (the reference README's ``mask/with_0.5.pt``), SGD
    ``lr=0.013``, 10 epochs (the README's SalUn command for CIFAR-10, 10% random forgetting), momentum 0.9, weight
    decay 5e-4 (reference ``arg_parser``). Labels: as :class:`RandomLabels` (``include_true=True`` is the code's draw).

    Args:
        backbone: the trained model to unlearn (from the CLI: ``--original_ckpt``).
        mask_fraction: fraction of all weights that are salient (trained).
        lr, momentum, weight_decay, optimizer, batch_size, include_true, redraw_each_epoch, seed: as RandomLabels.
        mask_batch_size: batch size of the saliency pass over D_f (default: ``batch_size`` or the DataModule's).
    """

    #: ``lightning_unlearn tune``'s search space (docs/tuning.md); overridable from YAML.
    search_space: ClassVar[SearchSpace] = {
        "lr": FloatRange(1e-4, 1e-1, log=True),
        "mask_fraction": FloatRange(0.1, 0.9),
        "max_epochs": IntRange(1, 10),
    }

    def __init__(
        self,
        backbone: Backbone | None = None,
        mask_fraction: float = 0.5,
        lr: float = 0.013,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        optimizer: OptimizerName = "sgd",
        batch_size: int | None = None,
        include_true: bool = False,
        redraw_each_epoch: bool = True,
        seed: int = 0,
        mask_batch_size: int | None = None,
    ) -> None:
        if not 0.0 < mask_fraction <= 1.0:
            raise ValueError(f"mask_fraction must be in (0, 1] (the fraction of weights trained), got {mask_fraction}.")
        super().__init__(
            backbone=backbone,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            optimizer=optimizer,
            batch_size=batch_size,
            include_true=include_true,
            redraw_each_epoch=redraw_each_epoch,
            seed=seed,
        )
        #: ``{parameter name: bool tensor}``: True = salient (trained), False = kept at the original value.
        self.saliency: dict[str, Tensor] | None = None
        self._theta0: dict[str, Tensor] = {}

    # -- the mask --------------------------------------------------------------------------------------------------
    def compute_mask(self, datamodule: Any) -> dict[str, Tensor]:
        """The saliency mask of the current model over all of D_f (what ``fit`` uses)."""
        forget = forget_split(datamodule, augment=False)
        bs = int(self.hparams.mask_batch_size or self.hparams.batch_size or datamodule.batch_size)
        with torch.random.fork_rng(devices=[]):  # iterating a DataLoader draws a seed: leave the training's RNG as is
            gradients = forgetting_gradient(self._require_model(), datamodule.loader(forget, batch_size=bs))
        return saliency_mask(gradients, float(self.hparams.mask_fraction))

    def on_fit_start(self) -> None:
        super().on_fit_start()
        model = self._require_model()
        self.saliency = self.compute_mask(self.datamodule)
        params = dict(model.named_parameters())
        self._theta0 = {n: params[n].detach().clone() for n in self.saliency}
        kept = sum(int(m.sum()) for m in self.saliency.values())
        total = sum(m.numel() for m in self.saliency.values())
        rank_zero_info(f"SalUn: {kept} of {total} weights salient ({kept / max(total, 1):.1%}); the rest stay fixed.")

    # -- masked updates --------------------------------------------------------------------------------------------
    def on_before_optimizer_step(self, optimizer: Any) -> None:
        if self.saliency is None:
            return
        for name, p in self._require_model().named_parameters():
            if p.grad is not None and name in self.saliency:
                p.grad.mul_(self.saliency[name].to(p.grad.dtype))

    @torch.no_grad()
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.saliency is None:
            return
        for name, p in self._require_model().named_parameters():
            if name in self.saliency:
                p.copy_(torch.where(self.saliency[name], p, self._theta0[name]))

    def method_config(self) -> dict[str, Any]:
        config = super().method_config()
        if self.saliency is not None:
            kept = sum(int(m.sum()) for m in self.saliency.values())
            config["salient_fraction"] = kept / max(sum(m.numel() for m in self.saliency.values()), 1)
        return config
