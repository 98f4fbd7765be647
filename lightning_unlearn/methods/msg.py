"""Masked Small Gradients (MSG): the NeurIPS 2023 Machine Unlearning Challenge solution that the DeepUnlearn study
found, with tuned settings, among the two best of 18 methods (Cadet, Borovykh, Malekzadeh, Ahmadi-Abhari & Haddadi,
"Deep Unlearn: Benchmarking Machine Unlearning for Image Classification", arXiv 2410.01276; port:
github.com/xcadet/deepunlearn ``munl/unlearning/kgltop2.py``, ``KGLTop2``, named "MSG" in its ``settings.py``).

Re-initialise, in every convolution, the weights whose gradient (D_r loss minus D_f loss, at the original model) is
smallest in magnitude, then fine-tune on D_r with the other convolution weights' gradients scaled down.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from lightning_unlearn.backbones import Backbone
from lightning_unlearn.data.datasets import SplitView, unpack_batch
from lightning_unlearn.methods.base import OptimizerName, forget_split, loss_gradient
from lightning_unlearn.methods.finetune import Finetune, split_or_error
from lightning_unlearn.search_space import FloatRange, IntRange, SearchSpace

__all__ = ["MaskedSmallGradients", "conv_weights", "small_gradient_masks", "triangular_lr"]


def conv_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """``{parameter name: weight}`` of every ``nn.Conv2d`` (subclasses included) in ``model``, in module order."""
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    return {f"{name}.weight" if name else "weight": m.weight for name, m in convs}


def small_gradient_masks(gradients: dict[str, Tensor], fraction: float) -> dict[str, Tensor]:
    """Per tensor: the ``round(fraction * numel)`` entries with the *smallest* ``|gradient|`` (True = re-initialise).

    One threshold per layer, as the reference ``re_init_model_snip_ver2_little_grad`` (``topk`` of ``-|g|``).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"reinit_fraction must be in [0, 1], got {fraction}.")
    masks = {}
    for name, g in gradients.items():
        flat = g.detach().abs().flatten().float()
        k = int(round(fraction * flat.numel()))
        mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
        if k > 0:
            mask[torch.topk(-flat, k, sorted=False).indices] = True
        masks[name] = mask.view(g.shape)
    return masks


def triangular_lr(epoch: int, max_epochs: int) -> float:
    """The reference ``LinearAnnealingLR`` stepped once per epoch: the factor of epoch ``e`` (0-based) is
    ``(e+1)/A`` while ``e+1 <= A``, then ``(T-e-1)/(T-A)``, with ``A = (E+1)//2``, ``T = E+1``."""
    step, warm, total = epoch + 1, (max_epochs + 1) // 2, max_epochs + 1
    return step / warm if step <= warm else (total - step) / (total - warm)


class MaskedSmallGradients(Finetune):
    """MSG (DeepUnlearn's ``KGLTop2``)::

        g   = grad_w [ sum_{D_r'} CE(f_w(x), y) - sum_{D_f} CE(f_w(x), y) ]   at the original w_o
              (D_r' a random subset of D_r with |D_r'| = |D_f|)
        M_l = the round(rho * N_l) entries of conv layer l with the smallest |g|           (rho = reinit_fraction)
        w_l <- M_l * w_init + (1 - M_l) * w_o,l,    w_init ~ kaiming_normal(fan_out, relu)
        then min_w CE(f_w; D_r) for max_epochs epochs, conv-weight gradients x1 on M_l and x kept_grad_scale off it

    The mask is computed once when ``fit`` starts, on every rank over the same data (D_f and a seeded random D_r' of
    |D_f| samples, no augmentation, BatchNorm in eval mode, fp32 gradients through ``torch.func`` outside autocast),
    so every rank re-initialises the same weights with the same seeded values. Only ``nn.Conv2d`` weights are masked;
    biases, BatchNorm and the head are fine-tuned with their full gradient, as in the reference. The gradients are
    scaled in ``on_before_optimizer_step`` (before any clipping; weight decay still acts on every weight, as the
    reference's autograd mask does). Training is :class:`Finetune` (D_r, the DataModule's augmentation, train mode)
    with the reference's triangular learning rate per epoch (:func:`triangular_lr`).

    Defaults and their source (DeepUnlearn ``KGLTop2.ORIGINAL_*``): ``reinit_fraction=0.3``, SGD lr 1e-3, momentum
    0.9, weight decay 5e-4, batch 64, 5 epochs (``configs/unlearn/msg.yaml``); ``kept_grad_scale=0.1`` is the
    reference's hard-coded ``grad_mask[grad_mask == 0] += 0.1``.

    Args:
        backbone: the trained model to unlearn (from the CLI: ``--original_ckpt``).
        reinit_fraction: fraction of each convolution's weights re-initialised (the reference's ``init_rate``).
        kept_grad_scale: gradient factor of the convolution weights that keep their original values.
        lr, momentum, weight_decay, optimizer, batch_size: as Finetune (``batch_size`` also batches the mask pass).
        seed: seed of the D_r' draw and of the re-initialised values.
    """

    #: ``lightning_unlearn tune``'s search space (docs/tuning.md); overridable from YAML.
    search_space: ClassVar[SearchSpace] = {
        "lr": FloatRange(1e-4, 1e-1, log=True),
        "reinit_fraction": FloatRange(0.05, 0.9),
        "max_epochs": IntRange(1, 10),
    }

    train_splits = ("forget", "retain")

    def __init__(
        self,
        backbone: Backbone | None = None,
        reinit_fraction: float = 0.3,
        kept_grad_scale: float = 0.1,
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        optimizer: OptimizerName = "sgd",
        batch_size: int | None = 64,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= reinit_fraction <= 1.0:
            raise ValueError(f"reinit_fraction must be in [0, 1] (a fraction of each conv layer): {reinit_fraction}.")
        if kept_grad_scale < 0:
            raise ValueError(f"kept_grad_scale must be >= 0, got {kept_grad_scale}.")
        super().__init__(
            backbone=backbone, lr=lr, momentum=momentum, weight_decay=weight_decay, optimizer=optimizer,
            batch_size=batch_size,
        )
        #: ``{conv weight name: bool tensor}``: True = re-initialised (full gradient), False = kept (scaled gradient).
        self.reinit_masks: dict[str, Tensor] = {}

    # -- the mask ----------------------------------------------------------------------------------------------------
    def mask_gradient(self, datamodule: Any) -> dict[str, Tensor]:
        """``g`` of the docstring for every conv weight, at the current weights (what ``fit`` uses)."""
        model = self._require_model()
        forget = forget_split(datamodule, augment=False)
        retain = split_or_error(datamodule, "retain", augment=False, method=type(self).__name__)
        rng = np.random.default_rng(int(self.hparams.seed))
        rows = np.sort(rng.choice(len(retain), size=min(len(forget), len(retain)), replace=False))
        subset = SplitView(retain.base, retain.indices[rows])
        names = conv_weights(model)
        if not names:
            raise ValueError(
                f"MaskedSmallGradients re-initialises convolution weights, but {type(model).__name__} has no "
                "nn.Conv2d layer; use Finetune (the rest of MSG) or another method."
            )
        device = next(model.parameters()).device
        bs = int(self.hparams.batch_size or datamodule.batch_size)
        total = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in names.items()}
        with torch.random.fork_rng(devices=[]):  # iterating a loader draws a seed: leave the training's RNG as is
            for sign, ds in ((1.0, subset), (-1.0, forget)):
                for batch in datamodule.loader(ds, batch_size=bs):
                    x, y = unpack_batch(batch)
                    g = loss_gradient(model, x.to(device), y.to(device), reduction="sum")
                    for n in total:
                        total[n] += sign * g[n]
        return total

    def on_fit_start(self) -> None:
        super().on_fit_start()
        model = self._require_model()
        gradient = self.mask_gradient(self.datamodule)
        self.reinit_masks = small_gradient_masks(gradient, float(self.hparams.reinit_fraction))
        gen = torch.Generator().manual_seed(int(self.hparams.seed))
        for name, w in conv_weights(model).items():
            fresh = torch.empty(w.shape, dtype=torch.float32)
            nn.init.kaiming_normal_(fresh, mode="fan_out", nonlinearity="relu", generator=gen)
            with torch.no_grad():
                w.copy_(torch.where(self.reinit_masks[name], fresh.to(w.device, w.dtype), w))
        n = sum(int(m.sum()) for m in self.reinit_masks.values())
        total = sum(m.numel() for m in self.reinit_masks.values())
        rank_zero_info(f"MSG: re-initialised {n} of {total} convolution weights ({n / max(total, 1):.1%}).")

    def configure_optimizers(self) -> Any:
        opt = super().configure_optimizers()
        max_epochs = self.trainer.max_epochs
        if max_epochs is None or max_epochs < 1:
            raise ValueError(
                "MaskedSmallGradients' learning rate rises and falls over the run (the reference's triangular "
                f"schedule), so it needs a finite Trainer `max_epochs` (got {max_epochs}); set e.g. `max_epochs: 5`."
            )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: triangular_lr(e, int(max_epochs)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        if not self.reinit_masks:
            return
        scale = float(self.hparams.kept_grad_scale)
        for name, w in conv_weights(self._require_model()).items():
            if w.grad is not None:
                w.grad.mul_(torch.where(self.reinit_masks[name], 1.0, scale).to(w.grad.dtype))

    def method_config(self) -> dict[str, Any]:
        config = super().method_config()
        if self.reinit_masks:
            n = sum(int(m.sum()) for m in self.reinit_masks.values())
            config["reinit_fraction_actual"] = n / max(sum(m.numel() for m in self.reinit_masks.values()), 1)
        return config

