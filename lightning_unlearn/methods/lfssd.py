"""Label-free Selective Synaptic Dampening (LFSSD; Foster, Schoepf & Brintrup, "Loss-Free Machine Unlearning", ICLR
2024 Tiny Papers, arXiv 2402.19308; reference: the "Implementing LFSSD" snippet of the README of
github.com/if-loops/selective-synaptic-dampening, a change to that repository's ``calc_importance``).

SSD (:mod:`lightning_unlearn.methods.ssd`) with importances from the sensitivity of the model's output instead of the
loss's (Aljundi et al.'s Memory Aware Synapses): no label is read, so D_f and D need no labels.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad

from lightning_unlearn.backbones import Backbone
from lightning_unlearn.methods.ssd import FullOrder, SelectiveSynapticDampening
from lightning_unlearn.search_space import SearchSpace
from lightning_unlearn.utils import eval_mode

__all__ = ["LabelFreeSSD", "output_norm_gradient"]


def output_norm_gradient(model: nn.Module, x: Tensor) -> dict[str, Tensor]:
    """``grad_w (1/|B|) sum_{x in B} ||f_w(x)||_2^2`` for every parameter with ``requires_grad``, ``{name: fp32
    tensor}`` (the reference's ``torch.norm(out, p="fro", dim=1).pow(2).mean()``). As ``methods.base.loss_gradient``:
    through ``torch.func``, fp32 outside autocast, the model in eval mode (modes restored)."""
    with eval_mode(model), torch.autocast(device_type=x.device.type, enabled=False):
        all_params = {n: p.detach().float() for n, p in model.named_parameters()}
        params = {n: all_params[n] for n, p in model.named_parameters() if p.requires_grad}
        frozen = {n: p for n, p in all_params.items() if n not in params}
        buffers = {n: (b.detach().float() if b.is_floating_point() else b) for n, b in model.named_buffers()}
        inputs = x.detach().float()

        def squared_norm(p: dict[str, Tensor]) -> Tensor:
            out = functional_call(model, ({**p, **frozen}, buffers), (inputs,)).float()
            return out.pow(2).sum(dim=1).mean()

        return grad(squared_norm)(params)


class LabelFreeSSD(SelectiveSynapticDampening):
    """LFSSD: SSD's selection and dampening on label-free importances (paper sec. 2, after Aljundi et al. 2018)::

        Omega_S = mean over batches B of S of | grad_w (1/|B|) sum_{x in B} ||f_w(x)||_2^2 |
        w_i    <- w_i * min(lambda * Omega_D,i / Omega_Df,i, 1)   if Omega_Df,i > alpha * Omega_D,i,   else w_i

    (``f_w(x)`` the logits; absolute values of mini-batch gradients where SSD squares them). Everything else is
    :class:`SelectiveSynapticDampening`'s (imported, not copied): D's batches (``full_order="reference"``: D_r's then
    D_f's own, so Omega_Df / Omega_D <= (n_r + n_f) / n_f), no augmentation, eval mode, fp32, whole batches dealt to
    DDP ranks and all-reduced, one pass whatever ``max_epochs`` says. No label is read: D_r stays in the training set's
    stored order (SSD sorts it by class for class-wise and sub-class forgetting, as the reference scripts do; a
    label-free method cannot).

    Defaults and their source: ``alpha=10``, ``lambda=1``, batch 64: SSD's reference scripts, into which the reference
    LFSSD snippet is dropped (the snippet changes only the importance). Cost: SSD's (one forward+backward pass over D_f
    and one over D_r).

    Args:
        backbone: the trained model (from the CLI: ``--original_ckpt``).
        alpha: selection weighting (the paper's alpha).
        lam: dampening constant (the paper's lambda).
        batch_size: batch size of both importance passes (per rank; the reference: 64).
        full_order: how D is cut into batches: ``"reference"`` or ``"interleaved"`` (SSD's).
    """

    #: ``lightning_unlearn tune``'s search space (docs/tuning.md): SSD's; overridable from YAML.
    search_space: ClassVar[SearchSpace] = dict(SelectiveSynapticDampening.search_space)
    uses_labels: ClassVar[bool] = False

    def __init__(
        self,
        backbone: Backbone | None = None,
        alpha: float = 10.0,
        lam: float = 1.0,
        batch_size: int | None = 64,
        full_order: FullOrder = "reference",
    ) -> None:
        super().__init__(backbone=backbone, alpha=alpha, lam=lam, batch_size=batch_size, full_order=full_order)
        self.hparams.pop("importance", None)  # SSD's loss-based choice; LFSSD has one importance

    def batch_importance(self, model: nn.Module, x: Tensor, y: Any) -> dict[str, Tensor]:
        """One batch's contribution: ``|grad_w mean ||f_w(x)||^2|`` (``y`` is ignored)."""
        return {n: g.abs() for n, g in output_norm_gradient(model, x).items()}
