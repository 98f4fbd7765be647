"""Unlearning metrics as pure functions on tensors (testable without a Trainer).

Conventions: ``logits``/``probs`` are ``(N, C)`` tensors, ``preds``/``targets`` are ``(N,)`` integer tensors. Every
function accepts numpy arrays as well. A mean over an empty set is ``nan`` (never an error), so a split that is empty
for the chosen forget spec (e.g. ``test_forget`` outside class-wise forgetting) yields ``nan``.

Definitions follow the papers named in each docstring; ``docs/metrics.md`` collects them and says what a good value is
(for every metric measured on D_f: close to the gold, retrained model's value, not simply high or low).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

ArrayLike = Tensor | np.ndarray

__all__ = [
    "accuracy",
    "activation_distance",
    "agreement",
    "cross_entropy_per_sample",
    "entropy",
    "forget_acc_gap",
    "js_divergence",
    "per_class_accuracy",
    "random_init_like",
    "random_references",
    "reference_seeds",
    "speedup_vs_retrain",
    "to_preds",
    "zrf",
]


def _tensor(x: ArrayLike) -> Tensor:
    return x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))


def to_preds(outputs: ArrayLike) -> Tensor:
    """Predicted classes: ``argmax`` of ``(N, C)`` logits/probabilities, or ``(N,)`` predictions unchanged."""
    t = _tensor(outputs)
    if t.ndim == 2:
        return t.argmax(dim=1)
    if t.ndim != 1:
        raise ValueError(f"Expected (N, C) scores or (N,) predictions, got shape {tuple(t.shape)}.")
    return t.long()


def accuracy(outputs: ArrayLike, targets: ArrayLike) -> float:
    """Top-1 accuracy ``Acc(D) = (1/|D|) sum_i 1[argmax_c f(x_i)_c = y_i]``.

    Args:
        outputs: ``(N, C)`` logits or probabilities, or ``(N,)`` predicted classes.
        targets: ``(N,)`` labels.

    Returns:
        A float in [0, 1]; ``nan`` when ``N == 0`` (an empty split has no accuracy).
    """
    preds, y = to_preds(outputs), _tensor(targets).long()
    if preds.shape != y.shape:
        raise ValueError(f"{preds.shape[0]} predictions for {y.shape[0]} targets.")
    if y.numel() == 0:
        return math.nan
    return (preds.cpu() == y.cpu()).double().mean().item()


def per_class_accuracy(outputs: ArrayLike, targets: ArrayLike, num_classes: int) -> np.ndarray:
    """Accuracy of each class ``c``: ``Acc_c = mean_{i: y_i = c} 1[pred_i = c]``; ``nan`` for a class with no sample."""
    preds, y = to_preds(outputs).cpu().numpy(), _tensor(targets).long().cpu().numpy()
    out = np.full(num_classes, np.nan)
    for c in range(num_classes):
        mask = y == c
        if mask.any():
            out[c] = float((preds[mask] == c).mean())
    return out


def forget_acc_gap(acc: float, acc_gold: float) -> float:
    """``|Acc(D_f) - Acc_gold(D_f)|``: distance of the forget accuracy from the gold (retrained) model's, the alignment
    criterion of Twin Machine Unlearning (TMU): an unlearned model should be as accurate on D_f as a model that never
    saw D_f, neither more nor less. 0 is ideal."""
    return abs(float(acc) - float(acc_gold))


def _probs(p: ArrayLike) -> Tensor:
    t = _tensor(p).double()
    if t.ndim != 2:
        raise ValueError(f"Expected (N, C) probabilities, got shape {tuple(t.shape)}.")
    return t


def activation_distance(a: ArrayLike, b: ArrayLike, p: float = 2) -> float:
    """Activation distance ``(1/N) sum_i || softmax f(x_i) - softmax f_gold(x_i) ||_p`` on the same samples.

    ``p=2`` (default) is the L2 distance of Chundawat et al. 2023 (Bad Teacher, ``actv_dist`` in their ``metrics.py``);
    ``p=1`` is the L1 distance of Golatkar et al. 2020 ("Eternal Sunshine of the Spotless Net", their code's
    activation distance between the scrubbed and the retrained model).

    Args:
        a, b: ``(N, C)`` probabilities of the two models on the same samples (the evaluator uses D_f).
        p: the norm, 1 or 2 (any ``p >= 1`` is accepted).

    Returns:
        Mean distance in [0, 2^(1/p)]; 0 when the models agree exactly; ``nan`` for ``N == 0``.
    """
    if not p >= 1:
        raise ValueError(f"activation distance p must be >= 1 (1: Golatkar's L1, 2: Bad Teacher's L2), got {p}.")
    x, y = _probs(a), _probs(b)
    if x.shape != y.shape:
        raise ValueError(f"Shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}.")
    if x.shape[0] == 0:
        return math.nan
    return torch.linalg.vector_norm(x - y, ord=float(p), dim=1).mean().item()


def js_divergence(
    p: ArrayLike, q: ArrayLike, reduction: Literal["mean", "none"] = "mean"
) -> Tensor | float:
    """Jensen-Shannon divergence in nats (natural logarithm):
    ``JS(p, q) = 0.5 KL(p || m) + 0.5 KL(q || m)``, ``m = (p + q) / 2``, ``KL(p || m) = sum_c p_c ln(p_c / m_c)``
    with ``0 ln 0 = 0``. Bounded by ``ln 2`` (disjoint supports); 0 for identical distributions.

    Args:
        p, q: ``(N, C)`` probabilities.
        reduction: ``"mean"`` over samples (a float, ``nan`` for ``N == 0``) or ``"none"`` (an ``(N,)`` tensor).
    """
    a, b = _probs(p), _probs(q)
    if a.shape != b.shape:
        raise ValueError(f"Shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}.")
    m = 0.5 * (a + b)
    kl_am = (torch.xlogy(a, a) - torch.xlogy(a, m)).sum(dim=1)
    kl_bm = (torch.xlogy(b, b) - torch.xlogy(b, m)).sum(dim=1)
    js = (0.5 * kl_am + 0.5 * kl_bm).clamp_min(0.0)
    if reduction == "none":
        return js
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}.")
    return js.mean().item() if js.numel() else math.nan


def agreement(preds_a: ArrayLike, preds_b: ArrayLike) -> float:
    """Prediction agreement ``(1/N) sum_i 1[argmax f_a(x_i) = argmax f_b(x_i)]`` (``nan`` for ``N == 0``).

    Accepts ``(N, C)`` scores or ``(N,)`` predictions."""
    a, b = to_preds(preds_a).cpu(), to_preds(preds_b).cpu()
    if a.shape != b.shape:
        raise ValueError(f"Shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}.")
    if a.numel() == 0:
        return math.nan
    return (a == b).double().mean().item()


def zrf(p_model: ArrayLike, p_random: ArrayLike | Sequence[ArrayLike]) -> float:
    """Zero Retrain Forgetting score (Chundawat et al. 2023, "Can Bad Teaching Induce Forgetting? Unlearning in Deep
    Networks using an Incompetent Teacher", Eq. 9): ``ZRF = 1 - (1/N) sum_{x in D_f} JS(f(x), T_d(x))`` where ``T_d``
    is a randomly initialised model of the same architecture, JS in nats as in :func:`js_divergence`.

    With several random models (a list of probability tensors, one per initialisation ``T_1 .. T_K``) the score is the
    mean over them, ``1 - (1/K) sum_k (1/N) sum_x JS(f(x), T_k(x))``: one random initialisation is one draw of the
    reference, and its ZRF moves with it (see ``docs/metrics.md``).

    The paper's code computes JS with ``F.kl_div`` argument order and element-mean reduction that differ from the
    definition; we follow the paper. ZRF is 1 when the model behaves exactly like the random model on D_f.

    Args:
        p_model: ``(N, C)`` probabilities of the model on D_f.
        p_random: ``(N, C)`` probabilities of the random model on D_f, or a sequence of them.
    """
    refs = list(p_random) if isinstance(p_random, (list, tuple)) else [p_random]
    if not refs:
        raise ValueError("zrf needs at least one random model's probabilities.")
    return 1.0 - float(np.mean([float(js_divergence(p_model, r)) for r in refs]))


#: Entropy mixed into the ZRF reference seeds, so that they never coincide with a method's ``torch.manual_seed(seed)``.
_REFERENCE_STREAM = 0x5A52_465F_5245_46  # "ZRF_REF"


def reference_seeds(seed: int, count: int) -> list[int]:
    """``count`` seeds for the random reference networks of ZRF, drawn from their own ``torch.Generator`` whose seed
    mixes ``seed`` with a fixed stream constant (``numpy.random.SeedSequence``): independent of every method's
    randomness (Bad Teacher builds its incompetent teacher under ``torch.manual_seed(seed)`` with a small ``seed``) and
    of the global RNG, which is not touched."""
    if count < 1:
        raise ValueError(f"The number of random reference networks must be >= 1, got {count}.")
    state = int(np.random.SeedSequence([int(seed), _REFERENCE_STREAM]).generate_state(1, dtype=np.uint64)[0])
    gen = torch.Generator().manual_seed(state)
    return [int(s) for s in torch.randint(0, 2**62, (count,), generator=gen)]


def random_references(model: nn.Module, seed: int = 0, count: int = 5) -> list[nn.Module]:
    """``count`` randomly initialised copies of ``model``'s architecture (ZRF's references), from
    :func:`reference_seeds`; the global RNG is left untouched."""
    return [random_init_like(model, s) for s in reference_seeds(seed, count)]


def random_init_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """A randomly initialised model of the same architecture, built under ``torch.manual_seed(seed)`` (use
    :func:`random_references` for the evaluator's ZRF references, whose seeds are independent of any method's).

    A lightning_unlearn ``Backbone`` is rebuilt from its ``config()`` (its constructor's initialisation); any other
    module is deep-copied and every submodule with ``reset_parameters()`` is re-initialised. The global RNG state is
    left untouched. Normalisation buffers (mean/std) are kept; the result is in eval mode without gradients.
    """
    with torch.random.fork_rng(devices=[]), torch.inference_mode(False), torch.no_grad():
        torch.manual_seed(seed)
        config = getattr(model, "config", None)
        fresh: nn.Module | None = None
        if callable(config):
            try:
                from lightning_unlearn.backbones import build_backbone

                fresh = build_backbone(config())
            except (RuntimeError, ValueError, TypeError):
                fresh = None
        if fresh is None:
            fresh = copy.deepcopy(model)
            for module in fresh.modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()
        param = next(model.parameters(), None)
        if param is not None:
            fresh = fresh.to(device=param.device, dtype=param.dtype)
    return fresh.eval().requires_grad_(False)


def cross_entropy_per_sample(logits: ArrayLike, targets: ArrayLike) -> Tensor:
    """Per-sample cross-entropy ``-ln softmax(f(x_i))_{y_i}`` (natural log), shape ``(N,)``."""
    z, y = _tensor(logits).float(), _tensor(targets).long()
    if z.shape[0] == 0:
        return z.new_zeros(0)
    return F.cross_entropy(z, y.to(z.device), reduction="none")


def entropy(probs: ArrayLike) -> Tensor:
    """Shannon entropy of each row in nats: ``H(p) = -sum_c p_c ln p_c`` with ``0 ln 0 = 0``, shape ``(N,)``."""
    p = _probs(probs)
    return -torch.xlogy(p, p).sum(dim=1)


def speedup_vs_retrain(retrain_time_s: float | None, unlearn_time_s: float | None) -> float:
    """``retrain time / unlearning time`` (wall clock): how many times faster than retraining from scratch on D_r.
    ``nan`` when either time is unknown or the unlearning time is not positive."""
    if retrain_time_s is None or unlearn_time_s is None or not unlearn_time_s > 0:
        return math.nan
    return float(retrain_time_s) / float(unlearn_time_s)


def as_float(value: Any) -> float:
    """A plain Python float (``nan`` for ``None``), for JSON and loggers."""
    if value is None:
        return math.nan
    if isinstance(value, Tensor):
        return float(value.item())
    return float(value)
