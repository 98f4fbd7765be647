"""Memorisation proxies and the memorisation bins of :class:`~lightning_unlearn.methods.rum.RUM` (pure functions).

RUM (Zhao, Kurmanji, Bărbulescu, Triantafillou & Triantafillou, "What makes unlearning hard and what to do about it",
NeurIPS 2024; code github.com/kairanzhao/RUM ``memorization_proxy/``) ranks forget samples by memorisation. The exact
score (Feldman & Zhang's) needs many retrained models; the code's cheap proxies are tracked *during* the original's
training (learning events: running means of the true-class confidence, max confidence, entropy, accuracy; the input
loss curvature) or need a fine-tuned copy (held-out retrain). Here every proxy is computed from the trained original
model and the data alone, once, when unlearning starts; every score is "higher = more memorised":

- ``confidence``: ``CE(f(x), y) = -log p_y(x)`` of the original: the learning-event confidence proxy, read at the end
  of training instead of averaged over it (cross-entropy rather than ``1 - p_y``: same order, and it does not saturate
  at ``p_y = 1`` in float32).
- ``holdout_retrain``: symmetric KL between the original and a copy fine-tuned on held-out data (the code's
  ``heldout_retrain.py``, which fine-tunes on the test set; here the DataModule's ``holdout`` split).
- ``curvature``: the input-space loss curvature of CURE (Moosavi-Dezfooli et al. 2019) as the code's
  ``loss_curvature.py`` measures it, ``||grad_x l(x + z) - grad_x l(x)||``, ``z = h sign(grad_x l) / ||sign(.)||``,
  at the original's final weights instead of averaged over training.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_unlearn.data.datasets import batch_indices, unpack_batch
from lightning_unlearn.methods.optim import make_optimizer
from lightning_unlearn.utils import eval_mode

__all__ = [
    "PROXIES",
    "accuracy_per_bin",
    "bin_names",
    "confidence_score",
    "curvature_score",
    "finetune_copy",
    "memorisation_bins",
    "score_batches",
    "symmetric_kl_score",
]

#: The proxies :class:`~lightning_unlearn.methods.rum.RUM` computes.
PROXIES = ("confidence", "holdout_retrain", "curvature")


@torch.no_grad()
def confidence_score(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """``CE(f(x), y)`` per sample (eval mode, fp32): higher = less confident = more memorised."""
    with eval_mode(model), torch.autocast(device_type=x.device.type, enabled=False):
        return F.cross_entropy(model(x.float()).float(), y, reduction="none")


@torch.no_grad()
def symmetric_kl_score(model: nn.Module, reference: nn.Module, x: Tensor, eps: float = 1e-10) -> Tensor:
    """``(KL(p || q) + KL(q || p)) / 2`` per sample, ``p``, ``q`` the two models' softmax clamped at ``eps``, as the
    code's ``calculate_kl``."""
    with eval_mode(model), eval_mode(reference), torch.autocast(device_type=x.device.type, enabled=False):
        p = F.softmax(model(x.float()).float(), dim=1).clamp(min=eps)
        q = F.softmax(reference(x.float()).float(), dim=1).clamp(min=eps)
        return ((p * (p.log() - q.log())).sum(1) + (q * (q.log() - p.log())).sum(1)) / 2


def curvature_score(model: nn.Module, x: Tensor, y: Tensor, h: float = 0.01) -> Tensor:
    """CURE's per-sample curvature ``||grad_x l(x + z) - grad_x l(x)||_2`` with ``z = h sign(g) / ||sign(g)||``,
    ``g = grad_x l(x)`` (the code's ``find_z`` and ``regularizer``; eval mode, fp32, the model's weights untouched)."""
    with eval_mode(model), torch.enable_grad(), torch.autocast(device_type=x.device.type, enabled=False):
        frozen = [p.requires_grad for p in model.parameters()]
        model.requires_grad_(False)
        try:
            x0 = x.detach().float().requires_grad_(True)
            g0 = torch.autograd.grad(F.cross_entropy(model(x0).float(), y, reduction="sum"), x0)[0]
            s = torch.sign(g0) + 1e-7
            z = h * s / (s.flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1))) + 1e-7)
            x1 = (x.detach().float() + z).requires_grad_(True)
            g1 = torch.autograd.grad(F.cross_entropy(model(x1).float(), y, reduction="sum"), x1)[0]
        finally:
            for p, r in zip(model.parameters(), frozen):
                p.requires_grad_(r)
    return (g1 - g0).flatten(1).norm(dim=1).detach()


def finetune_copy(model: nn.Module, batches: Iterable[Iterable[tuple[Tensor, Tensor]]], lr: float,
                  device: torch.device) -> nn.Module:
    """A copy of ``model`` fine-tuned with cross-entropy (SGD, momentum 0.9, weight decay 5e-4: the code's
    ``finetune``), one inner iterable of ``(x, y)`` per epoch, in train mode and fp32; returned in eval mode."""
    tuned = copy.deepcopy(model).to(device).train().requires_grad_(True)
    opt = make_optimizer(tuned.parameters(), "sgd", lr, momentum=0.9, weight_decay=5e-4)
    with torch.enable_grad(), torch.autocast(device_type=device.type, enabled=False):
        for epoch in batches:
            for x, y in epoch:
                loss = F.cross_entropy(tuned(x.to(device).float()).float(), y.to(device))
                if not torch.isfinite(loss):
                    raise FloatingPointError("RUM: the held-out fine-tuning of the proxy diverged; lower `proxy_lr`.")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return tuned.eval().requires_grad_(False)


def score_batches(proxy: str, model: nn.Module, batches: Iterable[Any], device: torch.device,
                  reference: nn.Module | None = None, h: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """``(sample indices, scores)`` of ``proxy`` over batches of ``(x, y, index)``, sorted by index."""
    idx, scores = [], []
    for batch in batches:
        x, y = (t.to(device) for t in unpack_batch(batch))
        if proxy == "confidence":
            s = confidence_score(model, x, y)
        elif proxy == "curvature":
            s = curvature_score(model, x, y, h)
        elif proxy == "holdout_retrain" and reference is not None:
            s = symmetric_kl_score(model, reference, x)
        else:
            raise ValueError(f"Unknown proxy {proxy!r} (or holdout_retrain without its fine-tuned reference).")
        found = batch_indices(batch)
        if found is None:
            raise ValueError("RUM needs sample indices in each batch: items (x, y, index).")
        idx.append(found.cpu())
        scores.append(s.cpu())
    indices, values = torch.cat(idx).numpy(), torch.cat(scores).double().numpy()
    order = np.argsort(indices, kind="stable")
    return indices[order], values[order]


def memorisation_bins(scores: np.ndarray, indices: np.ndarray, quantiles: Sequence[float]) -> np.ndarray:
    """The bin of each sample (0 = least memorised): samples ranked by score (ties by index, so the split is
    deterministic), rank ``r`` of ``n`` in bin ``#{q : round(q n) <= r}``. Every sample gets exactly one bin."""
    scores, indices = np.asarray(scores, dtype=np.float64), np.asarray(indices)
    if scores.shape != indices.shape or scores.ndim != 1:
        raise ValueError(f"scores and indices must be 1-d of one length, got {scores.shape} and {indices.shape}.")
    if np.isnan(scores).any():
        raise ValueError("RUM: a memorisation score is NaN; the original model's outputs are not finite.")
    n = len(scores)
    order = np.lexsort((indices, scores))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    cuts = np.array([int(round(q * n)) for q in quantiles], dtype=np.int64)
    return np.searchsorted(cuts, rank, side="right").astype(np.int64)


def bin_names(num_bins: int) -> list[str]:
    """``low``/``medium``/``high`` for three bins (the paper's), ``low``/``high`` for two, else ``bin0``, ..."""
    return {1: ["all"], 2: ["low", "high"], 3: ["low", "medium", "high"]}.get(
        num_bins, [f"bin{i}" for i in range(num_bins)]
    )


def accuracy_per_bin(correct: Sequence[bool], bins: Sequence[int], names: Sequence[str],
                     scores: Sequence[float] | None = None) -> dict[str, Any]:
    """How a split compares with a reference (gold) model's easy/hard labels (easy = the reference classifies the
    sample correctly): its accuracy on all of D_f and on each bin; ``agreement_top_bin_hard``, the fraction of D_f
    where "in the most memorised bin" equals "hard" (comparable with TMU's ``vs_gold.agreement``); and with ``scores``,
    ``score_auc_gold_hard``, the ROC AUC of the score for "hard" (``None`` when D_f is all easy or all hard)."""
    from sklearn.metrics import roc_auc_score

    hit, b = np.asarray(correct, dtype=bool), np.asarray(bins)
    per_bin = [{"name": n, "size": int((b == k).sum()), "gold_accuracy": float(hit[b == k].mean()) if (b == k).any()
                else None} for k, n in enumerate(names)]
    out: dict[str, Any] = {"gold_forget_accuracy": float(hit.mean()) if len(hit) else None, "per_bin": per_bin}
    out["agreement_top_bin_hard"] = float(((b == len(names) - 1) == ~hit).mean()) if len(hit) else None
    if scores is not None:
        both = 0 < int(hit.sum()) < len(hit)
        out["score_auc_gold_hard"] = float(roc_auc_score(~hit, np.asarray(scores, dtype=float))) if both else None
    return out
