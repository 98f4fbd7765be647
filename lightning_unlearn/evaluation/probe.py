"""Linear-probe recovery: how much of D_f a linear classifier on the frozen penultimate features still recovers.

Many unlearning methods move mostly the last layer: the outputs forget, the features do not, and a linear readout
trained on a few forgotten samples brings them back (Gao, Unal, Rangamani & Zhu, "An Illusion of Unlearning? Assessing
Machine Unlearning Through Internal Representations", AISTATS 2026, arXiv:2604.08271; the linear-probe recovery of Yu
et al. 2026, arXiv:2605.20282; probes after Alain & Bengio 2017). A model retrained without D_f (the gold model) sets
the baseline: its features hold only what D_r and generalisation give.

Protocol (:func:`probe_split`, :func:`linear_probe`): the probe is fitted on the features of D_r (a seeded subset of at
most ``max_retain``) plus a seeded ``forget_share`` of D_f, with their labels; it is scored on the rest of D_f and on
``test_forget``. ``docs/metrics.md`` ("Linear-probe recovery") says how to read it per forgetting mode.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor, nn

from lightning_unlearn.evaluation.cka import require_features
from lightning_unlearn.evaluation.component import Component, EvalContext, Needs, register_component
from lightning_unlearn.evaluation.mia import balanced_subset

__all__ = ["LinearProbe", "linear_probe", "probe_split"]

#: Entropy mixed into the probe's seeds, so that its draws are not the MIA's (``seed``, ``seed + 1``, ...).
_PROBE_STREAM = 0x50524F4245  # "PROBE"

ArrayLike = Tensor | np.ndarray


def _np(x: ArrayLike, dtype: Any = np.float64) -> np.ndarray:
    return np.asarray(x.detach().cpu().numpy() if isinstance(x, Tensor) else x, dtype=dtype)


def probe_split(n_forget: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted positions of D_f for the probe's training set (``round(share * n)``, at least 1 and at most ``n - 1``)
    and the rest (scored), drawn with ``numpy.random.default_rng([seed, stream])``. ``n < 2``: nothing to train on."""
    if n_forget < 2:
        return np.zeros(0, np.int64), np.arange(n_forget)
    k = min(max(1, round(share * n_forget)), n_forget - 1)
    chosen = np.random.default_rng([int(seed), _PROBE_STREAM]).choice(n_forget, size=k, replace=False)
    mask = np.zeros(n_forget, dtype=bool)
    mask[chosen] = True
    return np.flatnonzero(mask), np.flatnonzero(~mask)


def linear_probe(
    train_features: ArrayLike,
    train_labels: ArrayLike,
    eval_sets: Sequence[tuple[ArrayLike, ArrayLike]],
    *,
    max_iter: int = 1000,
) -> list[float]:
    """Fit a linear probe and return its accuracy on each ``(features, labels)`` of ``eval_sets`` (``nan`` for an empty
    one).

    The probe is ``StandardScaler`` followed by ``sklearn.linear_model.LogisticRegression(class_weight="balanced",
    max_iter=max_iter)`` (multinomial, L2, ``C=1``, lbfgs: deterministic). The class weights give a class with few
    training samples (a forgotten class, of which the probe sees a small share) the weight of any other."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _np(train_features), _np(train_labels, np.int64)
    if x.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"linear_probe needs (N, D) training features with N labels, got {x.shape} and {y.shape}.")
    if len(np.unique(y)) < 2:
        return [math.nan for _ in eval_sets]
    clf = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=max_iter))
    clf.fit(x, y)
    out = []
    for feats, labels in eval_sets:
        f, t = _np(feats), _np(labels, np.int64)
        out.append(float((clf.predict(f) == t).mean()) if len(t) else math.nan)
    return out


@register_component("probe")
class LinearProbe(Component):
    """``<role>/probe/forget_acc`` (the rest of D_f) and ``<role>/probe/test_forget_acc`` (``nan`` outside class-wise
    forgetting) of :func:`linear_probe` on ``role``'s penultimate features (``probe/*`` for the evaluated model,
    ``gold/probe/*`` for the gold model)."""

    keys = ("probe/forget_acc", "probe/test_forget_acc", "gold/probe/forget_acc", "gold/probe/test_forget_acc")

    def __init__(self, role: str = "model", seed: int = 0, forget_share: float = 0.2,
                 max_retain: int | None = 5000) -> None:
        if not 0.0 < forget_share < 1.0:
            raise ValueError(f"probe_forget_share must be in (0, 1) (the share of D_f the probe trains on), got "
                             f"{forget_share}.")
        if max_retain is not None and max_retain < 1:
            raise ValueError(f"probe_max_retain must be >= 1 or None, got {max_retain}.")
        self.role, self.seed, self.forget_share, self.max_retain = role, int(seed), float(forget_share), max_retain
        self.reads = (role,)

    def needs(self, nets: Mapping[str, nn.Module], dm: Any) -> Needs:
        if not self.active(nets):
            return {}
        require_features(nets, self.reads, "probe")
        splits = {"retain": True, "forget": True}
        if len(dm.splits["test_forget"]):
            splits["test"] = True
        return {self.role: splits}

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        retain, forget = ctx.view(self.role, "retain"), ctx.view(self.role, "forget")
        assert retain is not None and forget is not None and retain.features is not None
        if self.max_retain is not None and len(retain) > self.max_retain:
            retain = retain.select(balanced_subset(len(retain), self.max_retain, self.seed + _PROBE_STREAM))
        train_pos, eval_pos = probe_split(len(forget), self.forget_share, self.seed)
        shown, held = forget.select(train_pos), forget.select(eval_pos)
        test_forget = ctx.view(self.role, "test_forget") if len(ctx.splits["test_forget"]) else None
        sets = [(held.features, held.targets)]
        if test_forget is not None:
            sets.append((test_forget.features, test_forget.targets))
        x = np.concatenate([_np(retain.features), _np(shown.features)])
        y = np.concatenate([_np(retain.targets, np.int64), _np(shown.targets, np.int64)])
        accs = linear_probe(x, y, sets) if len(held) else [math.nan] * len(sets)
        p = "" if self.role == "model" else f"{self.role}/"
        return {f"{p}probe/forget_acc": accs[0], f"{p}probe/test_forget_acc": accs[1] if len(accs) > 1 else math.nan}
