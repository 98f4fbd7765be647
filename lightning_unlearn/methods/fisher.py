"""Fisher Forgetting (Golatkar, Achille & Soatto, "Eternal Sunshine of the Spotless Net: Selective Forgetting in Deep
Networks", CVPR 2020, "Fisher forgetting"; reference code github.com/AdityaGolatkar/SelectiveForgetting).

The diagonal of the Fisher information of the retain set D_r measures how much each weight matters for D_r; Gaussian
noise with variance inversely proportional to it is added to the weights, destroying the information the weights hold
beyond what D_r needs.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.data import DataLoader, Dataset

from lightning_unlearn.backbones import Backbone
from lightning_unlearn.data.datasets import batch_indices, unpack_batch
from lightning_unlearn.methods.base import UnlearningMethod, sharded_loader
from lightning_unlearn.methods.fisher_diagonal import FisherBackend, FisherType, diagonal_fisher
from lightning_unlearn.search_space import FloatRange, SearchSpace
from lightning_unlearn.utils import eval_mode

__all__ = ["FisherBackend", "FisherForgetting", "FisherType", "diagonal_fisher", "fisher_noise_variance"]

#: Reference ``get_mean_var``: variance of the forgotten classes' head rows (before the x10 of the head).
_FORGOTTEN_ROW_VAR = 1e-4
#: Reference ``get_mean_var``: the head and every 1-D parameter (BatchNorm, biases) get 10x the variance.
_REFERENCE_BOOST = 10.0


def fisher_noise_variance(
    fisher: Tensor,
    alpha: float,
    cap: float = 1e3,
    exponent: float = 1.0,
    is_head: bool = False,
    head_cap: float = 1e2,
    reference_scaling: bool = True,
    forget_rows: list[int] | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Noise variance of one parameter from its (normalised) Fisher diagonal, as the reference ``get_mean_var``.

    ``var = alpha * min((F + 1e-8)^(-exponent), cap)`` with ``cap = head_cap`` for the head; with
    ``reference_scaling``: averaged over dim 1 (fan-in) for parameters with ``ndim > 1`` and multiplied by 10 for the
    head and for 1-D parameters; ``forget_rows`` (head only) get variance ``1e-4`` (x10) and mean 0.

    Returns ``(var, zero_mask)``: ``zero_mask`` marks entries whose mean is 0 instead of the trained weight (or None).
    """
    inv = (fisher.float() + 1e-8).pow(-exponent).clamp(max=cap)
    if is_head:
        inv = inv.clamp(max=head_cap)
    var = alpha * inv
    if reference_scaling and var.ndim > 1:
        var = var.mean(dim=1, keepdim=True).expand_as(var).clone()
    zero_mask = None
    if is_head and forget_rows:
        rows = torch.as_tensor(forget_rows, dtype=torch.long, device=var.device)
        var[rows] = _FORGOTTEN_ROW_VAR
        zero_mask = torch.zeros_like(var, dtype=torch.bool)
        zero_mask[rows] = True
    if reference_scaling and (is_head or var.ndim == 1):
        var = var * _REFERENCE_BOOST
    return var, zero_mask


class _PaddedIndices(Dataset):
    """``base`` padded to ``length`` items; padding items repeat item 0 with index -1 (weight 0 in the Fisher)."""

    def __init__(self, base: Dataset, length: int) -> None:
        self.base = base
        self.n = len(base)  # type: ignore[arg-type]
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        x, y, idx = self.base[i if i < self.n else 0]
        return x, y, (idx if i < self.n else -1)


class FisherForgetting(UnlearningMethod):
    """Fisher Forgetting: Gaussian weight noise shaped by the inverse diagonal Fisher of D_r.

    One training epoch over D_r (no optimizer: ``automatic_optimization=False``) accumulates the diagonal Fisher with
    :func:`diagonal_fisher` (``fisher_type="expected"``, the reference code's choice: every class ``k`` weighted by the
    model's own ``p_k``; exact expectation over labels), averaged over the samples. ``fisher_type="sampled"`` is its
    Monte-Carlo estimate (one label per sample drawn from ``p``: unbiased, ``C - 1`` times fewer gradients).
    At the end of the epoch the sum and the sample count are all-reduced across ranks (so DDP gives the result of one
    process) and every weight ``w`` becomes::

        w <- mu + sqrt(var) * n,   n ~ N(0, I),   var = alpha * min(1 / (F + 1e-8), cap)    (reference get_mean_var)

    with ``mu = w``, ``cap = 1e3`` (``1e2`` for the head), and, as in the reference code (``reference_scaling``): the
    variance of a weight tensor with ``ndim > 1`` is averaged over its input dimension (one variance per output unit /
    filter), and the head and every 1-D parameter (BatchNorm affine, biases) get 10x the variance. For class-wise
    forgetting (``classwise_head``), the head rows (weight and bias) of the forgotten classes get ``mu = 0`` and
    ``var = 1e-4`` (x10 = ``1e-3``), as the reference does. The paper writes the scrubbing noise as
    ``(lambda sigma_h^2)^{1/4} F^{-1/4}`` (variance ``propto F^{-1/2}``): ``exponent=0.5`` gives that shape (with
    ``alpha = sqrt(lambda sigma_h^2)``); the default ``exponent=1`` is the reference code.

    The noise is drawn on the CPU from a generator seeded with ``seed``, in ``named_parameters`` order, so it is the
    same on every rank and device. Defaults: ``alpha=1e-6`` (reference notebook), ``cap=1e3``, ``head_cap=1e2``.
    Cost: one forward and ``C - 1`` backward cotangents per retain sample (``expected``), or one (``sampled``/
    ``empirical``), batched (docs/methods/fisher.md, docs/performance.md).

    Args:
        backbone: the trained model (from the CLI: ``--original_ckpt``).
        alpha: noise scale (``0``: no noise except the forgotten head rows).
        cap, head_cap: upper bounds of ``1/F`` for all parameters and for the head.
        exponent: ``var = alpha * min((F + 1e-8)^(-exponent), cap)``; 1 = reference code, 0.5 = paper.
        fisher_type: ``"expected"`` (reference), ``"sampled"`` or ``"empirical"``.
        classwise_head: zero-mean, small-variance head rows for the forgotten classes (class-wise forgetting only).
        forget_classes: classes whose head rows to reset (default: the DataModule's ``ForgetSpec.classes`` when the
            spec is class-wise; none otherwise).
        reference_scaling: the reference's fan-in averaging and x10 for the head and 1-D parameters.
        seed: seed of the noise.
        batch_size: batch size of the Fisher pass (per rank).
        chunk_size: samples per Fisher chunk; ``None``: as many as ``memory_budget_mb`` allows.
        backend: how per-sample gradients are formed: ``auto`` (``layerwise`` for Conv2d/Linear/BatchNorm2d models,
            else ``vmap``), ``layerwise``, ``vmap`` or ``loop`` (see :func:`diagonal_fisher`); same result up to float
            rounding.
        memory_budget_mb: memory for the per-sample, per-class intermediate tensors of one chunk.
    """

    #: ``lightning_unlearn tune``'s search space (docs/tuning.md); overridable from YAML.
    search_space: ClassVar[SearchSpace] = {
        "alpha": FloatRange(1e-9, 1e-4, log=True),
    }

    train_splits = ("retain",)
    uses_optimizer = False  # one pass edits the weights; configure_optimizers returns None

    def __init__(
        self,
        backbone: Backbone | None = None,
        alpha: float = 1e-6,
        cap: float = 1e3,
        head_cap: float = 1e2,
        exponent: float = 1.0,
        fisher_type: FisherType = "expected",
        classwise_head: bool = True,
        forget_classes: list[int] | None = None,
        reference_scaling: bool = True,
        seed: int = 0,
        batch_size: int | None = 64,
        chunk_size: int | None = None,
        backend: FisherBackend = "auto",
        memory_budget_mb: float = 512.0,
    ) -> None:
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}.")
        if fisher_type not in ("expected", "sampled", "empirical"):
            raise ValueError(f"Unknown fisher_type {fisher_type!r}; choose 'expected', 'sampled' or 'empirical'.")
        if backend not in ("auto", "layerwise", "vmap", "loop"):
            raise ValueError(f"Unknown backend {backend!r}; choose 'auto', 'layerwise', 'vmap' or 'loop'.")
        if memory_budget_mb <= 0:
            raise ValueError(f"memory_budget_mb must be > 0, got {memory_budget_mb}.")
        super().__init__(backbone=backbone, lr=0.0, batch_size=batch_size)
        self.automatic_optimization = False
        #: Normalised diagonal Fisher ``{name: tensor}`` (CPU, fp32), set at the end of the Fisher epoch.
        self.fisher_diagonal: dict[str, Tensor] | None = None
        #: Number of retain samples the Fisher was averaged over (all ranks).
        self.fisher_num_samples: int = 0
        self._acc: dict[str, Tensor] | None = None
        self._count: Tensor | None = None
        self._applied = False

    # -- data ------------------------------------------------------------------------------------------------------
    def build_train_dataloader(self, datamodule: Any) -> DataLoader:
        ds = datamodule.dataset("retain", augment=False)
        n = len(ds)
        if n == 0:
            raise ValueError("The retain set D_r is empty: Fisher forgetting needs D_r.")
        world = int(self.trainer.world_size) if self._trainer is not None else 1
        bs = self.method_batch_size
        if world > 1:
            # Every rank must run the same number of steps (DDP syncs buffers in each forward), and no sample may
            # count twice: pad D_r to a multiple of world_size * batch_size with index -1 items that weigh 0, so the
            # DistributedSampler deals out whole, equal shards without repeating real samples.
            ds = _PaddedIndices(ds, math.ceil(n / (world * bs)) * world * bs)
        return sharded_loader(self, datamodule, ds, shuffle=False, batch_size=bs)

    def configure_optimizers(self) -> Any:
        return None

    # -- the Fisher epoch ------------------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        model = self._require_model()
        params = model.named_parameters()
        self._acc = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params if p.requires_grad}
        self._count = torch.zeros((), dtype=torch.float32, device=self.device)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        if self._applied:
            return None
        assert self._acc is not None and self._count is not None
        x, y = unpack_batch(batch)
        idx = batch_indices(batch)
        weight = (idx >= 0).float() if idx is not None else torch.ones(x.shape[0], device=x.device)
        model = self._require_model()
        fisher_type = self.hparams.fisher_type
        if fisher_type == "sampled":
            # One label per sample from the model's own predictive distribution, drawn from a stream keyed by the
            # sample's index so that the draw does not depend on batching or on the number of ranks.
            y = self._sample_labels(model, x, idx)
            fisher_type = "empirical"
        fisher = diagonal_fisher(
            model,
            x,
            y,
            fisher_type=fisher_type,
            weight=weight,
            chunk_size=self.hparams.chunk_size,
            backend=self.hparams.backend,
            memory_budget_mb=float(self.hparams.memory_budget_mb),
        )
        for n, f in fisher.items():
            self._acc[n] += f
        self._count += weight.sum()
        return None

    @torch.no_grad()
    def _sample_labels(self, model: nn.Module, x: Tensor, idx: Tensor | None) -> Tensor:
        with eval_mode(model), torch.autocast(device_type=x.device.type, enabled=False):
            params = {n: p.detach().float() for n, p in model.named_parameters()}
            buffers = {n: (b.detach().float() if b.is_floating_point() else b) for n, b in model.named_buffers()}
            probs = F.softmax(functional_call(model, (params, buffers), (x.float(),)).float(), dim=1).cpu()
        ids = idx.cpu().tolist() if idx is not None else list(range(x.shape[0]))
        seed = int(self.hparams.seed)
        u = torch.tensor(
            [torch.rand((), generator=torch.Generator().manual_seed(seed * 1_000_003 + max(int(i), 0))) for i in ids]
        )
        cdf = probs.cumsum(dim=1)
        labels = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1)).squeeze(1).clamp(max=probs.shape[1] - 1)
        return labels.to(x.device)

    def on_train_epoch_end(self) -> None:
        if self._applied or self._acc is None or self._count is None:
            return
        names = list(self._acc)
        flat = torch.cat([self._acc[n].flatten() for n in names] + [self._count.float().view(1)])
        flat = self.trainer.strategy.reduce(flat, reduce_op="sum")
        count = float(flat[-1].item())
        if count <= 0:
            raise RuntimeError("The Fisher pass saw no retain samples (is `limit_train_batches` 0?).")
        fisher, offset = {}, 0
        for n in names:
            numel = self._acc[n].numel()
            fisher[n] = (flat[offset : offset + numel] / count).view_as(self._acc[n])
            offset += numel
        self.fisher_diagonal = {n: f.detach().cpu() for n, f in fisher.items()}
        self.fisher_num_samples = int(round(count))
        self._acc = None
        self.apply_noise(fisher)
        self._applied = True
        self.trainer.should_stop = True

    # -- the noise -------------------------------------------------------------------------------------------------
    def resolved_forget_classes(self) -> list[int]:
        """The classes whose head rows are reset (empty unless class-wise forgetting and ``classwise_head``)."""
        if not self.hparams.classwise_head:
            return []
        if self.hparams.forget_classes is not None:
            return [int(c) for c in self.hparams.forget_classes]
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        spec = getattr(dm, "forget", None)
        if spec is not None and getattr(spec, "mode", None) == "classwise":
            return [int(c) for c in spec.classes]
        return []

    @torch.no_grad()
    def apply_noise(self, fisher: dict[str, Tensor]) -> None:
        """``w <- mu + sqrt(var) * n`` for every parameter in ``fisher`` (seeded, identical on every rank)."""
        hp = self.hparams
        model = self._require_model()
        head_ids = {id(p) for p in model.head.parameters()}
        forget_rows = self.resolved_forget_classes()
        gen = torch.Generator().manual_seed(int(hp.seed))
        for name, p in model.named_parameters():
            if name not in fisher:
                continue
            is_head = id(p) in head_ids
            var, zero_mask = fisher_noise_variance(
                fisher[name].to(p.device),
                alpha=float(hp.alpha),
                cap=float(hp.cap),
                exponent=float(hp.exponent),
                is_head=is_head,
                head_cap=float(hp.head_cap),
                reference_scaling=bool(hp.reference_scaling),
                forget_rows=forget_rows if is_head else None,
            )
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.device)
            mu = p.detach().float()
            if zero_mask is not None:
                mu = mu.masked_fill(zero_mask, 0.0)
            new = mu + var.sqrt() * noise
            if not torch.isfinite(new).all():
                raise FloatingPointError(f"Fisher noise made {name} non-finite; lower `alpha` or `cap`.")
            p.copy_(new.to(p.dtype))
        rank_zero_info(
            f"FisherForgetting: noise applied (alpha={hp.alpha}, Fisher over {self.fisher_num_samples} retain samples"
            + (f", head rows {forget_rows} reset" if forget_rows else "")
            + ")."
        )

    def method_config(self) -> dict[str, Any]:
        config = super().method_config()
        config["fisher_num_samples"] = self.fisher_num_samples
        if self.fisher_diagonal is not None:
            allf = torch.cat([f.flatten() for f in self.fisher_diagonal.values()])
            config["fisher_stats"] = {
                "mean": float(allf.mean()),
                "median": float(allf.median()),
                "max": float(allf.max()),
                "fraction_capped": float(np.mean((1.0 / (allf.numpy() + 1e-8)) > float(self.hparams.cap))),
            }
        return config
