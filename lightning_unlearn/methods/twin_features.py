"""Pure building blocks of Twin Machine Unlearning (TMU): the twin set, the three per-sample features, the easy/hard
classifier and the unlearning loss. Each works on tensors (or a model and tensors) and is testable alone;
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

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_unlearn.methods.optim import make_optimizer
from lightning_unlearn.utils import eval_mode

__all__ = [
    "FEATURE_NAMES",
    "EasyHardMLP",
    "Standardizer",
    "TwinSelection",
    "adversarial_feature",
    "draw_other_labels",
    "group_holdout_split",
    "nearest_distance",
    "per_sample_loss",
    "select_twin_set",
    "train_easy_hard_classifier",
    "train_from_scratch",
    "twin_set_size",
    "twin_unlearning_loss",
]

FeatureName = Literal["nf", "af", "cf"]
FEATURE_NAMES: tuple[str, ...] = ("nf", "af", "cf")


# -- 1. the twin set D_e -----------------------------------------------------------------------------------------------
def twin_set_size(n_forget: int, n_retain: int, n_twin_retain: int | None = None) -> int:
    """Size of D_e that keeps the twin problem's forgetting ratio equal to the original one.

    ``|D_e| / |D_r^twin| = |D_f| / |D_r|``, so ``|D_e| = round(|D_f| * |D_r^twin| / |D_r|)``. TMU's twin problem
    retains ``D_r^twin = D_r ∪ D_f`` (``TwinUnlearning`` passes ``n_twin_retain = |D_r| + |D_f|``); the default
    ``n_twin_retain = n_retain`` gives ``|D_e| = |D_f|``.
    """
    if n_forget < 0 or n_retain <= 0:
        raise ValueError(f"Need n_forget >= 0 and n_retain > 0, got {n_forget} and {n_retain}.")
    n_twin_retain = n_retain if n_twin_retain is None else n_twin_retain
    return int(round(n_forget * n_twin_retain / n_retain))


@dataclass(frozen=True)
class TwinSelection:
    """The twin set as positions into the candidate pool.

    Attributes:
        positions: position of each D_e sample in the candidate arrays (a position repeats for augmented copies).
        is_copy: True where the sample is an extra, augmented copy (drawn because the pool of that class was short).
    """

    positions: np.ndarray
    is_copy: np.ndarray

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def num_copies(self) -> int:
        return int(self.is_copy.sum())


def select_twin_set(
    candidate_labels: Sequence[int] | np.ndarray,
    forget_labels: Sequence[int] | np.ndarray,
    seed: int = 0,
    size: int | None = None,
    augment: bool = True,
) -> TwinSelection:
    """Choose D_e from a candidate pool (held-out data) so that it matches D_f class by class.

    For each class ``c`` in D_f, ``n_c`` = the number of D_f samples of class ``c`` (scaled to ``size`` when given, by
    largest remainders) candidates of class ``c`` are drawn without replacement. When the pool has fewer than ``n_c``,
    all of them are taken once and the rest are augmented copies (``is_copy``) cycling through a random permutation of
    the pool (``augment=False``: no copies, D_e is then smaller than D_f). Classes absent from D_f are never drawn, so
    for sub-class forgetting D_e holds only samples of the forgotten class (TMU's setting). Deterministic in ``seed``.

    Raises:
        ValueError: a class of D_f has no candidate at all.
    """
    cand = np.asarray(candidate_labels, dtype=np.int64)
    forget = np.asarray(forget_labels, dtype=np.int64)
    classes, counts = np.unique(forget, return_counts=True)
    if size is not None and len(forget):
        counts = _apportion(counts, size)
    rng = np.random.default_rng(seed)
    positions, copies = [], []
    for c, n in zip(classes.tolist(), counts.tolist()):
        pool = np.flatnonzero(cand == c)
        if n == 0:
            continue
        if len(pool) == 0:
            raise ValueError(
                f"No held-out sample of class {c} to build the twin set D_e from (D_f has {n} samples of it). Raise "
                "the DataModule's `holdout_fraction`."
            )
        perm = rng.permutation(pool)
        if len(pool) >= n:
            positions.append(np.sort(perm[:n]))
            copies.append(np.zeros(n, dtype=bool))
        else:
            extra = n - len(pool) if augment else 0
            positions.append(np.concatenate([np.sort(pool), perm[np.arange(extra) % len(pool)]]))
            copies.append(np.concatenate([np.zeros(len(pool), dtype=bool), np.ones(extra, dtype=bool)]))
    if not positions:
        return TwinSelection(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool))
    return TwinSelection(np.concatenate(positions).astype(np.int64), np.concatenate(copies))


def _apportion(counts: np.ndarray, total: int) -> np.ndarray:
    """Scale ``counts`` to sum to ``total`` (largest remainders; ties to the first class)."""
    exact = counts * (total / counts.sum())
    out = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - out), kind="stable")
    out[order[: total - int(out.sum())]] += 1
    return out


# -- 2. features -------------------------------------------------------------------------------------------------------
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


# -- 3. the easy/hard classifier ---------------------------------------------------------------------------------------
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
) -> EasyHardMLP:
    """Train :class:`EasyHardMLP` with BCE on (standardised) features and 0/1 generalization labels.

    Paper: 100 epochs, SGD lr 0.01, momentum 0.9. Initialisation and shuffling are seeded by ``seed``.
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
    mlp.train()
    with torch.enable_grad(), _one_cpu_thread(features.device):
        for _ in range(epochs):
            order = torch.randperm(features.shape[0], generator=gen).to(features.device)
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                loss = F.binary_cross_entropy_with_logits(mlp(features[idx]), target[idx])
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


# -- 4. the unlearning loss --------------------------------------------------------------------------------------------
def draw_other_labels(labels: Tensor, num_classes: int, generator: torch.Generator | None = None) -> Tensor:
    """A uniformly random label different from each true label (``r + (r >= y)``, ``r ~ U{0..C-2}``)."""
    labels = torch.as_tensor(labels, dtype=torch.long).cpu()
    r = torch.randint(0, num_classes - 1, labels.shape, generator=generator)
    return r + (r >= labels).long()


def twin_unlearning_loss(
    logits: Tensor,
    targets: Tensor,
    hard: Tensor,
    mode: Literal["negative_gradient", "random_labels"] = "negative_gradient",
    random_targets: Tensor | None = None,
    hard_weight: float = 1.0,
    max_hard_loss: float | None = None,
) -> tuple[Tensor, Tensor]:
    """TMU's unlearning objective on a batch mixing D_r, easy D_f and predicted-hard D_f samples.

    With ``l_i = CE(f(x_i), y_i)`` and ``h_i = 1`` for predicted-hard forget samples (``hard``)::

        negative_gradient:  L = (1/B) [ sum_{h_i=0} l_i  -  hard_weight * sum_{h_i=1} min(l_i, max_hard_loss) ]
        random_labels:      L = (1/B) [ sum_{h_i=0} l_i  +  hard_weight * sum_{h_i=1} CE(f(x_i), y~_i) ]

    i.e. retained and predicted-easy samples keep their true labels (their accuracy is preserved) and only the
    predicted-hard samples are unlearnt, by gradient ascent (paper) or by fitting random labels ``y~ != y`` (code).
    The clamp (``max_hard_loss``, ``None``: off) stops the ascent on a sample once its loss passes the bound.

    Returns:
        ``(loss, mean CE of the hard samples under their true labels)`` (the second is 0 when the batch has none).
    """
    hard = hard.to(device=logits.device, dtype=torch.bool)
    ce = F.cross_entropy(logits, targets, reduction="none")
    keep = ce.masked_fill(hard, 0.0).sum()
    if mode == "negative_gradient":
        hard_ce = ce if max_hard_loss is None else ce.clamp(max=max_hard_loss)
        forget = -hard_ce.masked_fill(~hard, 0.0).sum()
    elif mode == "random_labels":
        if random_targets is None:
            raise ValueError("mode='random_labels' needs random_targets.")
        ce_rand = F.cross_entropy(logits, random_targets.to(logits.device), reduction="none")
        forget = ce_rand.masked_fill(~hard, 0.0).sum()
    else:
        raise ValueError(f"mode must be 'negative_gradient' or 'random_labels', got {mode!r}.")
    loss = (keep + hard_weight * forget) / max(logits.shape[0], 1)
    n_hard = int(hard.sum())
    hard_mean = ce.detach()[hard].mean() if n_hard else ce.new_zeros(())
    return loss, hard_mean
