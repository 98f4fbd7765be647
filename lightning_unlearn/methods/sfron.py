"""SFR-on: Saliency Forgetting in the Remain-preserving manifold, online (Huang, Cheng, Zhang, Tian, Zhang, Li & Li,
"Unified Gradient-Based Machine Unlearning with Remain Geometry Enhancement", NeurIPS 2024; reference code
github.com/K1nght/Unified-Unlearning-w-Remain-Geometry, ``Classification/unlearn/sfron.py``).

Alternate a few adaptively weighted gradient-ascent steps on D_f, restricted to the weights far more important to D_f
than to D_r (a ratio of diagonal Fishers) and norm-clipped, with plain descent steps on D_r.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler

from lightning_unlearn.backbones import Backbone
from lightning_unlearn.data.datasets import unpack_batch
from lightning_unlearn.methods.base import OptimizerName, forget_split, loss_gradient, sharded_loader
from lightning_unlearn.methods.finetune import TrainModeMethod, check_finite, split_or_error
from lightning_unlearn.methods.steps import log_step
from lightning_unlearn.search_space import FloatRange, IntRange, SearchSpace

__all__ = ["SFRon", "adaptive_forget_loss", "fisher_ratio_mask"]


def adaptive_forget_loss(logits: Tensor, targets: Tensor, lam: float) -> Tensor:
    """``sum_i p_i CE_i`` with ``p_i = CE_i^-lam / sum_j CE_j^-lam`` (weights detached): the reference's
    ``AdaptiveLoss``. Samples still fitted (small CE) weigh most; ``lam = 0`` is the plain mean CE."""
    ce = F.cross_entropy(logits.float(), targets, reduction="none")
    coef = 1.0 / (ce.detach().pow(lam) + 1e-15)
    return (coef / coef.sum() * ce).sum()


def fisher_ratio_mask(fisher_forget: dict[str, Tensor], fisher_retain: dict[str, Tensor], threshold: float
                      ) -> dict[str, Tensor]:
    """``(F_f + 1e-15) / (F_r + 1e-15) >= threshold`` per entry (the reference's ``get_weight_saliency_mask``)."""
    return {n: (fisher_forget[n] + 1e-15) / (fisher_retain[n] + 1e-15) >= threshold for n in fisher_forget}


class _Interleaved:
    """One epoch: the D_r batches in order, each ``forget_every``-th one (from the first) preceded by a D_f batch; D_f
    is cycled across the whole run, as the reference's ``cycle(forget_loader)``. Batches come as ``{split: batch}``."""

    def __init__(self, forget: DataLoader, retain: DataLoader, forget_every: int, epoch: Callable[[], int]) -> None:
        self.forget, self.retain, self.every, self.epoch = forget, retain, forget_every, epoch
        self._forget_iter: Iterator[Any] | None = None
        self._forget_pass = 0

    def __len__(self) -> int:
        return len(self.retain) + math.ceil(len(self.retain) / self.every)

    def _next_forget(self) -> Any:
        while True:
            if self._forget_iter is None:
                if isinstance(getattr(self.forget, "sampler", None), DistributedSampler):
                    self.forget.sampler.set_epoch(self._forget_pass)
                self._forget_pass += 1
                self._forget_iter = iter(self.forget)
            try:
                return next(self._forget_iter)
            except StopIteration:
                self._forget_iter = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if isinstance(getattr(self.retain, "sampler", None), DistributedSampler):
            self.retain.sampler.set_epoch(int(self.epoch()))
        for i, batch in enumerate(self.retain):
            if i % self.every == 0:
                yield {"forget": self._next_forget()}
            yield {"retain": batch}


class SFRon(TrainModeMethod):
    """SFR-on (the reference ``SFRon``)::

        F_S  = mean over batches B of S of (grad_w CE(f_w; B))^2          at the original weights (diagonal Fisher)
        m    = 1[ (F_Df + 1e-15) / (F_Dr + 1e-15) >= gamma ]                                    (gamma = threshold)
        forget step (before every forget_every-th D_r batch):  w <- w - eta_k clip_c( m * grad_w [-alpha_k L_ada(B_f)] )
        retain step (every D_r batch):                          w <- w - eta_k grad_w CE(f_w; B_r)
        L_ada(B) = sum_i p_i CE_i,  p_i ∝ CE_i^-lambda (detached);  alpha_k = alpha (1 + cos(pi k / K)) / 2

    with ``eta_k`` the learning rate under the same cosine (``K`` the run's optimizer steps, forget steps included)
    and ``clip_c`` gradient-norm clipping at ``max_grad_norm`` (forget steps only, after masking, as the reference).
    The Fishers are computed once when ``fit`` starts (no augmentation, BatchNorm in eval mode, fp32 gradients through
    ``torch.func`` outside autocast); under DDP each rank takes every ``world``-th batch and the sums are all-reduced,
    so every rank holds the one-process mask. An epoch is one pass over D_r (:class:`_Interleaved`, each batch one
    optimizer step: ``{"forget": ...}`` or ``{"retain": ...}``), in train mode; masking and clipping happen in
    :meth:`on_before_optimizer_step`, before the Trainer's own ``gradient_clip_val`` (left alone) applies.

    Defaults and their source: the reference's CIFAR-10 10% setting (``SFRon.__init__``): SGD lr 0.01, momentum 0.9,
    weight decay 5e-4, ``forget_every=5``, ``forget_alpha=25``, ``max_grad_norm=7``, ``adaptive_lambda=0.5``
    (lambda), ``threshold=1`` (gamma), batch 128 (``scripts/unlearn.sh``); its 1,500 iterations are about 4 passes
    over CIFAR-10's 45,000 retained images (``configs/unlearn/sfron.yaml``: ``max_epochs: 4``).

    Args:
        backbone: the trained model to unlearn (from the CLI: ``--original_ckpt``).
        lr, momentum, weight_decay, optimizer, batch_size: optimizer and loader settings (both sets, and the Fishers).
        forget_every: a D_f step before every ``forget_every``-th D_r step.
        forget_alpha: initial weight ``alpha`` of the ascent term (cosine-decayed to 0).
        adaptive_lambda: ``lambda`` of the adaptive weights (0: plain gradient ascent).
        threshold: ``gamma``, the Fisher-ratio threshold of the mask (0: every weight ascends).
        max_grad_norm: gradient-norm bound of the forget steps (``None``: no clipping).
    """

    #: ``lightning_unlearn tune``'s search space (docs/tuning.md); overridable from YAML.
    search_space: ClassVar[SearchSpace] = {
        "lr": FloatRange(1e-4, 1e-1, log=True),
        "forget_alpha": FloatRange(1.0, 100.0, log=True),
        "threshold": FloatRange(0.1, 10.0, log=True),
        "max_epochs": IntRange(1, 10),
    }

    train_splits = ("forget", "retain")

    def __init__(
        self,
        backbone: Backbone | None = None,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        optimizer: OptimizerName = "sgd",
        batch_size: int | None = 128,
        forget_every: int = 5,
        forget_alpha: float = 25.0,
        adaptive_lambda: float = 0.5,
        threshold: float = 1.0,
        max_grad_norm: float | None = 7.0,
    ) -> None:
        if forget_every < 1:
            raise ValueError(f"forget_every must be >= 1 (a D_f step every that many D_r steps), got {forget_every}.")
        if forget_alpha < 0 or adaptive_lambda < 0 or threshold < 0:
            raise ValueError(
                f"forget_alpha, adaptive_lambda and threshold must be >= 0, got {forget_alpha}, {adaptive_lambda}, "
                f"{threshold}."
            )
        if max_grad_norm is not None and max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm must be positive or None, got {max_grad_norm}.")
        super().__init__(
            backbone=backbone, lr=lr, momentum=momentum, weight_decay=weight_decay, optimizer=optimizer,
            batch_size=batch_size,
        )
        #: ``{parameter name: bool tensor}``: the weights the forget steps move (True).
        self.saliency: dict[str, Tensor] = {}
        self._phase = "retain"

    # -- data --------------------------------------------------------------------------------------------------------
    def build_train_dataloader(self, datamodule: Any) -> _Interleaved:
        name, bs = type(self).__name__, self.method_batch_size
        forget = split_or_error(datamodule, "forget", augment=datamodule.augment, method=name)
        retain = split_or_error(datamodule, "retain", augment=datamodule.augment, method=name)
        return _Interleaved(
            sharded_loader(self, datamodule, forget, shuffle=True, batch_size=bs),
            sharded_loader(self, datamodule, retain, shuffle=True, batch_size=bs),
            int(self.hparams.forget_every),
            lambda: self.current_epoch,
        )

    # -- the mask ----------------------------------------------------------------------------------------------------
    def batch_fishers(self, datamodule: Any) -> dict[str, dict[str, Tensor]]:
        """``{"forget": F_Df, "retain": F_Dr}``: mean over batches of squared batch-mean gradients (every rank)."""
        model = self._require_model()
        device = next(model.parameters()).device
        trainer = self._trainer
        world = int(trainer.world_size) if trainer is not None else 1
        rank = int(trainer.global_rank) if trainer is not None else 0
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        splits = {"forget": forget_split(datamodule), "retain": split_or_error(datamodule, "retain", False, "SFRon")}
        sums, counts = [], []
        with torch.random.fork_rng(devices=[]):  # iterating a loader draws a seed: leave the training's RNG as is
            for ds in splits.values():
                acc = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in model.named_parameters() if n in names}
                count = 0
                for b, batch in enumerate(datamodule.loader(ds, batch_size=self.method_batch_size)):
                    if b % world != rank:
                        continue
                    x, y = unpack_batch(batch)
                    for n, g in loss_gradient(model, x.to(device), y.to(device)).items():
                        acc[n] += g.pow(2)
                    count += 1
                sums.append(acc)
                counts.append(count)
        flat = torch.cat([s[n].flatten() for s in sums for n in names] + [torch.tensor(counts, device=device).float()])
        if world > 1:
            flat = trainer.strategy.reduce(flat, reduce_op="sum")
        out, offset = {}, 0
        for key, acc, n_batches in zip(splits, sums, flat[-len(splits):].tolist()):
            out[key] = {}
            for n in names:
                out[key][n] = flat[offset : offset + acc[n].numel()].view_as(acc[n]) / max(n_batches, 1.0)
                offset += acc[n].numel()
        return out

    def on_fit_start(self) -> None:
        super().on_fit_start()
        fishers = self.batch_fishers(self.datamodule)
        self.saliency = fisher_ratio_mask(fishers["forget"], fishers["retain"], float(self.hparams.threshold))
        kept = sum(int(m.sum()) for m in self.saliency.values())
        total = sum(m.numel() for m in self.saliency.values())
        rank_zero_info(f"SFR-on: the forget steps move {kept} of {total} weights ({kept / max(total, 1):.1%}).")

    # -- optimisation ------------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        opt = super().configure_optimizers()
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: (1 + math.cos(math.pi * min(k, total) / total)) / 2)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def forget_weight(self) -> float:
        """``alpha_k``: the ascent weight at the current optimizer step (cosine over the run, as the learning rate)."""
        total = max(1, int(self.trainer.estimated_stepping_batches))
        k = min(int(self.global_step), total)
        return float(self.hparams.forget_alpha) * (1 + math.cos(math.pi * k / total)) / 2

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        (split, data), = batch.items()
        x, y = unpack_batch(data)
        logits = self._require_model()(x)
        self._phase = split
        if split == "forget":
            ascent = adaptive_forget_loss(logits, y, float(self.hparams.adaptive_lambda))
            loss = -self.forget_weight() * ascent
            log_step(self, "train/forget_loss", ascent.detach(), len(y))
        else:
            loss = F.cross_entropy(logits, y)
            log_step(self, "train/retain_loss", loss.detach(), len(y))
        check_finite(loss, self)
        return loss

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        if self._phase != "forget":
            return
        params = [(n, p) for n, p in self._require_model().named_parameters() if p.grad is not None]
        for n, p in params:
            if n in self.saliency:
                p.grad.mul_(self.saliency[n].to(p.grad.dtype))
        if self.hparams.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_([p for _, p in params], float(self.hparams.max_grad_norm))

    def method_config(self) -> dict[str, Any]:
        config = super().method_config()
        if self.saliency:
            kept = sum(int(m.sum()) for m in self.saliency.values())
            config["salient_fraction"] = kept / max(sum(m.numel() for m in self.saliency.values()), 1)
        return config
