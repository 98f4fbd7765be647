"""Convolution Transpose (CT): the NeurIPS 2023 Machine Unlearning Challenge solution that the DeepUnlearn study found,
with tuned settings, among the two best of 18 methods (Cadet, Borovykh, Malekzadeh, Ahmadi-Abhari & Haddadi, "Deep
Unlearn: Benchmarking Machine Unlearning for Image Classification", arXiv 2410.01276; port:
github.com/xcadet/deepunlearn ``munl/unlearning/kgltop5.py``, ``KGLTop5``, named "CT" in its ``settings.py``).

Transpose the spatial axes of every convolution kernel (``weight.swapaxes(2, 3)``: each learned filter is mirrored
along its diagonal, the same values in another order), then fine-tune on D_r. D_f is never read.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lightning_unlearn.backbones import Backbone
from lightning_unlearn.methods.base import OptimizerName
from lightning_unlearn.methods.finetune import Finetune
from lightning_unlearn.search_space import FloatRange, IntRange, SearchSpace

__all__ = ["ConvolutionTranspose", "transpose_conv_kernels"]


@torch.no_grad()
def transpose_conv_kernels(model: nn.Module) -> list[str]:
    """Swap the two spatial axes of every ``nn.Conv2d`` weight in place (``w[o, i, a, b] <- w[o, i, b, a]``); returns
    the names of the layers changed. Only square kernels can be transposed without changing the layer's output shape:
    a non-square one is an error (the reference would silently change the architecture)."""
    changed = []
    for name, m in model.named_modules():
        if not isinstance(m, nn.Conv2d):
            continue
        kh, kw = m.weight.shape[-2:]
        if kh != kw:
            raise ValueError(
                f"ConvolutionTranspose transposes convolution kernels, but layer {name!r} has a {kh}x{kw} kernel; "
                "transposing it would change the layer's output shape. CT needs square kernels."
            )
        m.weight.copy_(m.weight.transpose(2, 3).clone())
        changed.append(name)
    return changed


class ConvolutionTranspose(Finetune):
    """CT (DeepUnlearn's ``KGLTop5``)::

        W_l[o, i, a, b] <- W_l[o, i, b, a]      for every Conv2d layer l                     (once, when fit starts)
        then min_w CE(f_w; D_r) for max_epochs epochs, SGD with a cosine learning rate per epoch (T_max = max_epochs)

    The transposition is done in place on every rank (deterministic, no communication) when ``fit`` starts, inside
    the timed region. Biases, BatchNorm and the head are left as they are; 1x1 kernels are unchanged by it. Training is
    :class:`Finetune` (D_r, the DataModule's augmentation, train mode) with ``CosineAnnealingLR(T_max=max_epochs)``
    stepped per epoch, as the reference.

    Defaults and their source (DeepUnlearn ``KGLTop5.ORIGINAL_*``): SGD lr 1e-3, momentum 0.9, weight decay 5e-4,
    batch 64, 3 epochs (``configs/unlearn/conv_transpose.yaml``).

    Args:
        backbone: the trained model to unlearn (from the CLI: ``--original_ckpt``).
        lr, momentum, weight_decay, optimizer, batch_size: as Finetune.
    """

    #: ``lightning_unlearn tune``'s search space (docs/tuning.md); overridable from YAML.
    search_space: ClassVar[SearchSpace] = {
        "lr": FloatRange(1e-4, 1e-1, log=True),
        "max_epochs": IntRange(1, 10),
    }

    def __init__(
        self,
        backbone: Backbone | None = None,
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        optimizer: OptimizerName = "sgd",
        batch_size: int | None = 64,
    ) -> None:
        super().__init__(
            backbone=backbone, lr=lr, momentum=momentum, weight_decay=weight_decay, optimizer=optimizer,
            batch_size=batch_size,
        )
        #: Names of the convolution layers whose kernels were transposed (set when ``fit`` starts).
        self.transposed: list[str] = []

    def on_fit_start(self) -> None:
        super().on_fit_start()
        model = self._require_model()
        if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
            raise ValueError(
                f"ConvolutionTranspose transposes convolution kernels, but {type(model).__name__} has no nn.Conv2d "
                "layer: it would be plain Finetune. Use Finetune, or another method."
            )
        self.transposed = transpose_conv_kernels(model)
        rank_zero_info(f"CT: transposed the kernels of {len(self.transposed)} convolution layers.")

    def configure_optimizers(self) -> Any:
        opt = super().configure_optimizers()
        t_max = max(1, int(self.trainer.max_epochs or 1))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def method_config(self) -> dict[str, Any]:
        config = super().method_config()
        config["transposed_layers"] = len(self.transposed)
        return config
