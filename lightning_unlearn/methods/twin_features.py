"""Pure building blocks of Twin Machine Unlearning (TMU): the three per-sample features (NF, AF, CF) and the plain
training loop of its helper models. Each works on tensors (or a model and tensors) and is testable alone; the twin
set is in :mod:`~.twin_set`, the easy/hard predictor in :mod:`~.twin_classifier`,
:class:`~lightning_unlearn.methods.twin.TwinUnlearning` wires them to a DataModule.

Reference: Hu et al., "Towards Aligned Data Removal via Twin Machine Unlearning" (TMU; arXiv 2408.11433, also titled
"Towards Aligned Data Forgetting via Twin Machine Unlearning"). Notation: D_r retained data, D_f forget data, D_e the
extra ("twin") data the original model never saw, f_o the original model, f_t the twin model (f_o fine-tuned on
D ∪ D_e), f_c the curriculum model (trained from scratch for a couple of epochs).

Features of a sample (x, y) under a model f with penultimate features phi:

* NF, nearest distance: ``NF(x) = (1/k) sum_{j=1..k} d_(j)``, the mean of the k smallest Euclidean distances
  ``||phi(x) - phi(x_r)||_2`` over retained samples x_r in D_r of the same class y (:func:`nearest_distance`).
* AF, adversarial: ``AF(x) = CE(softmax(f(x)), f(x_adv)) = -sum_c softmax(f(x))_c log softmax(f(x_adv))_c`` where
  x_adv is a small-budget L-inf PGD attack on ``CE(f(x), y)`` in [0, 1] pixel space (:func:`adversarial_feature`).
  ``target="hard"`` uses ``CE(f(x_adv), argmax_c f(x)_c)`` instead.
* CF, curriculum loss: ``CF(x) = CE(f_c(x), y)`` under a model trained from scratch for 1-2 epochs
  (:func:`per_sample_loss`, :func:`train_from_scratch`).

Samples easy for the gold model (classified correctly) tend to sit close to retained samples of their class (small
NF), far from the decision boundary (small AF) and to be learnt early (small CF).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_unlearn.utils import eval_mode

__all__ = [
    "FEATURE_NAMES",
    "adversarial_feature",
    "nearest_distance",
    "per_sample_loss",
    "train_from_scratch",
]

FeatureName = Literal["nf", "af", "cf"]
FEATURE_NAMES: tuple[str, ...] = ("nf", "af", "cf")


def nearest_distance(
    features: Tensor,
    labels: Tensor,
    bank_features: Tensor,
    bank_labels: Tensor,
    k: int = 5,
    normalize: bool = False,
    same_class: bool = True,
    chunk_elements: int = 2**24,
) -> Tensor:
    """NF: mean of the ``k`` smallest Euclidean distances from each sample to the bank samples of its class.

    ``NF(x) = (1/k') sum_{j<=k'} d_(j)`` with ``d_(1) <= d_(2) <= ...`` the distances ``||phi(x) - phi(x_r)||_2`` to
    the bank (D_r) samples of class ``y`` and ``k' = min(k, number of them)``. ``normalize`` L2-normalises every
    feature vector first (the TMU code's choice). A class with no bank sample (class-wise forgetting) is measured
    against the whole bank instead; so is every sample with ``same_class=False``. Computed on the features' device in
    chunks of ``chunk_elements`` distances (64 MiB of fp32 by default), so memory is bounded; the time is linear in
    queries x bank, and the TMU option ``bank_per_class`` bounds the bank.

    Args:
        features: ``(N, D)`` query features; labels: ``(N,)`` their classes.
        bank_features: ``(M, D)`` features of retained samples; bank_labels: ``(M,)``.

    Returns:
        ``(N,)`` float tensor.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    if bank_features.shape[0] == 0:
        raise ValueError("The feature bank is empty: NF needs retained samples.")
    q, bank = features.float(), bank_features.float().to(features.device)
    if normalize:
        q, bank = F.normalize(q, dim=1), F.normalize(bank, dim=1)
    labels, bank_labels = labels.to(q.device), bank_labels.to(q.device)
    out = torch.empty(q.shape[0], dtype=torch.float32, device=q.device)
    groups: Iterable[int | None] = labels.unique().tolist() if same_class else [None]
    for c in groups:
        rows = torch.ones_like(labels, dtype=torch.bool) if c is None else labels == c
        ref = bank if c is None else bank[bank_labels == c]
        if ref.shape[0] == 0:
            ref = bank
        out[rows] = _knn_mean(q[rows], ref, min(k, ref.shape[0]), chunk_elements)
    return out


def _knn_mean(q: Tensor, ref: Tensor, k: int, chunk_elements: int) -> Tensor:
    """Mean of the ``k`` smallest distances from each row of ``q`` to ``ref``, on their device, ``chunk_elements``
    distances (queries x bank) at a time, so memory stays bounded whatever the number of queries."""
    rows = max(1, chunk_elements // max(ref.shape[0], 1))
    parts = [torch.cdist(c, ref).topk(k, dim=1, largest=False).values.mean(dim=1) for c in q.split(rows)]
    return torch.cat(parts) if parts else q.new_zeros(0)


def adversarial_feature(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilon: float = 4 / 255,
    alpha: float | None = None,
    steps: int = 5,
    random_start: bool = False,
    target: Literal["soft", "hard"] = "soft",
    generator: torch.Generator | None = None,
) -> Tensor:
    """AF: how much a small-budget PGD attack changes the model's output on each sample.

    ``x_adv = PGD(f, x, y; epsilon, alpha, steps)`` (L-inf, [0, 1] pixel space, untargeted on the true label, fp32
    outside autocast, model in eval mode: :func:`lightning_unlearn.attacks.pgd`), then per sample

        target="soft":  AF(x) = CE(softmax(f(x)), f(x_adv)) = -sum_c softmax(f(x))_c * log softmax(f(x_adv))_c
        target="hard":  AF(x) = CE(f(x_adv), argmax_c f(x)_c)

    The soft form equals ``H(p) + KL(p || q)`` with ``p = softmax(f(x))``, ``q = softmax(f(x_adv))``: large near the
    boundary (uncertain ``p``, and the attack moves ``q`` far). ``alpha`` defaults to ``epsilon / 3`` (TMU code).

    Returns:
        ``(N,)`` float tensor (detached).
    """
    from lightning_unlearn.attacks import pgd

    alpha = epsilon / 3 if alpha is None else alpha
    with torch.autocast(device_type=x.device.type, enabled=False):
        x_adv = pgd(model, x, y, epsilon=epsilon, alpha=alpha, steps=steps, random_start=random_start,
                    generator=generator)
        with eval_mode(model), torch.no_grad():
            clean = model(x.float()).float()
            adv = model(x_adv).float()
    if target == "soft":
        return F.cross_entropy(adv, clean.softmax(dim=1), reduction="none")
    if target == "hard":
        return F.cross_entropy(adv, clean.argmax(dim=1), reduction="none")
    raise ValueError(f"target must be 'soft' or 'hard', got {target!r}.")


@torch.no_grad()
def per_sample_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """CF (with the curriculum model as ``model``): ``CE(f(x), y)`` per sample, in eval mode, fp32. ``(N,)``."""
    with eval_mode(model), torch.autocast(device_type=x.device.type, enabled=False):
        return F.cross_entropy(model(x.float()).float(), y.to(x.device).long(), reduction="none")


def train_from_scratch(
    model: nn.Module,
    batches: Callable[[int], Iterable[tuple[Tensor, Tensor]]],
    epochs: int,
    optimizer: torch.optim.Optimizer,
    device: torch.device | str = "cpu",
) -> nn.Module:
    """A plain supervised loop (train mode, CE): the curriculum model (CF) and the twin fine-tuning both use it.

    ``batches(epoch)`` returns the epoch's iterable of ``(x, y)`` (so shuffling can be seeded per epoch).
    """
    model.train()
    with torch.enable_grad(), torch.autocast(device_type=torch.device(device).type, enabled=False):
        for epoch in range(epochs):
            bad = torch.zeros((), dtype=torch.bool, device=device)  # read back once per epoch, not per step
            for x, y in batches(epoch):
                x, y = x.to(device), y.to(device)
                loss = F.cross_entropy(model(x), y)
                bad |= ~torch.isfinite(loss.detach())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            if bool(bad):
                raise FloatingPointError(
                    f"Loss became non-finite in epoch {epoch} training a TMU helper model; lower its lr."
                )
    model.eval()
    return model
