"""TMU's generalization-label predictor: feature scaling, the easy/hard MLP, its grouped held-out split.

Reference: Hu et al., "Towards Aligned Data Removal via Twin Machine Unlearning" (TMU; arXiv 2408.11433), sec. 4.4:
an MLP with two hidden layers (64, 32) on the concatenated features, trained with SGD (lr 0.01, momentum 0.9) for
100 epochs on the twin problem's generalization labels (easy = the twin's gold model, the original, classifies the
sample correctly).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_unlearn.methods.optim import make_optimizer

__all__ = [
    "EasyHardMLP",
    "HardRule",
    "Standardizer",
    "decide_hard",
    "group_holdout_split",
    "hard_set_agreement",
    "scale_features",
    "train_easy_hard_classifier",
]

HardRule = Literal["twin_rate", "paper"]


class Standardizer:
    """``(v - mean) / std`` per feature column, with statistics from the data passed to :meth:`fit`."""

    def __init__(self) -> None:
        self.mean: Tensor | None = None
        self.std: Tensor | None = None

    def fit(self, features: Tensor) -> Standardizer:
        self.mean = features.mean(dim=0)
        std = features.std(dim=0, unbiased=False) if features.shape[0] > 1 else torch.ones_like(self.mean)
        self.std = torch.where(std > 1e-12, std, torch.ones_like(std))
        return self

    def transform(self, features: Tensor) -> Tensor:
        if self.mean is None or self.std is None:
            raise RuntimeError("Standardizer.fit must be called before transform.")
        return (features - self.mean.to(features.device)) / self.std.to(features.device)


Scaling = Literal["twin", "per_set"]


def scale_features(feat_e: Tensor, feat_f: Tensor, fit_rows: Tensor, scaling: Scaling) -> tuple[Tensor, Tensor]:
    """The classifier's inputs for D_e and D_f. ``"twin"``: both standardised with D_e's statistics (``fit_rows``: the
    rows the classifier trains on); ``"per_set"``: each set with its own (the code min-max scales each set on its own).
    """
    if scaling == "twin":
        scaler = Standardizer().fit(feat_e[fit_rows])
        return scaler.transform(feat_e), scaler.transform(feat_f)
    if scaling == "per_set":
        return Standardizer().fit(feat_e[fit_rows]).transform(feat_e), Standardizer().fit(feat_f).transform(feat_f)
    raise ValueError(f"standardize must be 'twin' or 'per_set', got {scaling!r}.")


class EasyHardMLP(nn.Module):
    """The generalization-label predictor: ``in -> 64 -> ReLU -> 32 -> ReLU -> 1`` (logit of "easy")."""

    def __init__(self, in_features: int, hidden: Sequence[int] = (64, 32)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(-1)

    @torch.no_grad()
    def predict_easy(self, x: Tensor) -> Tensor:
        """Boolean "easy" prediction: ``sigmoid(logit) > 0.5``."""
        return self(x) > 0


def train_easy_hard_classifier(
    features: Tensor,
    easy: Tensor,
    epochs: int = 100,
    lr: float = 0.01,
    momentum: float = 0.9,
    batch_size: int = 128,
    hidden: Sequence[int] = (64, 32),
    seed: int = 0,
    balanced: bool = False,
) -> EasyHardMLP:
    """Train :class:`EasyHardMLP` with BCE on (standardised) features and 0/1 generalization labels.

    Paper: 100 epochs, SGD lr 0.01, momentum 0.9, unweighted. ``balanced`` weighs each class by the inverse of its
    frequency (``pos_weight = n_hard / n_easy`` on the "easy" logit: both classes contribute equally to the loss).
    Initialisation and shuffling are seeded by ``seed``.
    """
    if features.ndim != 2 or features.shape[0] != easy.shape[0]:
        raise ValueError(f"features must be (N, F) with N labels; got {tuple(features.shape)}, {tuple(easy.shape)}.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mlp = EasyHardMLP(features.shape[1], hidden)
    mlp = mlp.to(features.device)
    if features.shape[0] == 0:
        return mlp.eval()
    gen = torch.Generator().manual_seed(seed)
    opt = make_optimizer(mlp.parameters(), "sgd", lr, momentum=momentum)
    target = easy.float().to(features.device)
    n_easy = int(easy.sum())
    pos_weight = None
    if balanced and 0 < n_easy < len(easy):
        pos_weight = torch.tensor((len(easy) - n_easy) / n_easy, device=features.device)
    mlp.train()
    with torch.enable_grad(), _one_cpu_thread(features.device):
        for _ in range(epochs):
            order = torch.randperm(features.shape[0], generator=gen).to(features.device)
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                loss = F.binary_cross_entropy_with_logits(mlp(features[idx]), target[idx], pos_weight=pos_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return mlp.eval()


@contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """One intra-op thread while training the tiny MLP on the CPU: its matrices are so small that thread start-up
    and spinning cost far more than they save (x40 slower with 2 threads on a busy 2-core machine)."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def group_holdout_split(groups: Sequence[int] | np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Boolean mask of held-out samples: a random ``fraction`` of the *groups* (all copies of one source sample share
    a group, so an augmented copy never lands on the other side of its original). At least one group stays in
    training; ``fraction=0`` holds out nothing."""
    groups = np.asarray(groups)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}.")
    unique = np.unique(groups)
    n_out = min(int(math.floor(fraction * len(unique) + 0.5)), max(len(unique) - 1, 0))
    if n_out == 0:
        return np.zeros(len(groups), dtype=bool)
    held = np.random.default_rng(seed).permutation(unique)[:n_out]
    return np.isin(groups, held)


def decide_hard(easy_logit: Tensor, labels: Tensor, rule: HardRule, hard_rates: dict[int, float] | None = None
                ) -> Tensor:
    """Which D_f samples are predicted hard, from the classifier's "easy" logits.

    ``rule="paper"``: ``sigmoid(logit) <= 0.5`` (TMU's classifier as published). ``rule="twin_rate"``: within each
    class ``c``, the ``round(q_c * n_c)`` samples with the lowest logits, ``q_c = hard_rates[c]`` the twin problem's
    hard rate of the class (ties broken by position). The classifier then only has to *rank* D_f; its calibration,
    which does not transfer from D_e under the twin to D_f under the original, no longer matters.
    """
    if rule == "paper":
        return easy_logit <= 0
    if rule != "twin_rate":
        raise ValueError(f"rule must be 'twin_rate' or 'paper', got {rule!r}.")
    if hard_rates is None:
        raise ValueError("rule='twin_rate' needs the twin problem's hard rate per class.")
    hard = torch.zeros(len(easy_logit), dtype=torch.bool)
    logit, labels = easy_logit.detach().cpu(), labels.cpu()
    for c in labels.unique().tolist():
        rows = torch.nonzero(labels == c).flatten()
        k = int(round(float(hard_rates.get(int(c), 0.0)) * len(rows)))
        if k:
            order = torch.sort(logit[rows], stable=True).indices
            hard[rows[order[:k]]] = True
    return hard


def hard_set_agreement(pred_hard: Tensor, gold_hard: Tensor) -> dict[str, Any]:
    """Precision and recall of a predicted hard set against the gold model's (hard = the gold model misclassifies it),
    with the base rate (the gold hard rate: the precision of a hard set drawn at random) beside them."""
    pred_hard, gold_hard = pred_hard.bool().cpu(), gold_hard.bool().cpu()
    tp = int((pred_hard & gold_hard).sum())
    n_pred, n_gold, n = int(pred_hard.sum()), int(gold_hard.sum()), len(gold_hard)
    return {
        "predicted_hard": n_pred,
        "gold_hard": n_gold,
        "true_hard": tp,
        "precision": tp / n_pred if n_pred else None,
        "recall": tp / n_gold if n_gold else None,
        "base_rate": n_gold / n if n else None,
        "predicted_hard_rate": n_pred / n if n else None,
    }
