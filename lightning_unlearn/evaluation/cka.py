"""Representation similarity to the gold model: linear CKA of the penultimate features.

Kornblith, Norouzi, Lee & Hinton, "Similarity of Neural Network Representations Revisited", ICML 2019, Eq. (5)
(linear kernel): for features ``X`` (N, D1) and ``Y`` (N, D2) of the same N samples, column-centred,

    CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F * ||Y^T Y||_F)

in [0, 1]; 1 for representations equal up to an orthogonal transform and an isotropic scaling (to which it is
invariant), whatever their widths. ``docs/metrics.md`` ("Representation similarity") says how to read it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lightning_unlearn.evaluation.component import Component, EvalContext, Needs, register_component
from lightning_unlearn.evaluation.outputs import has_features

__all__ = ["RepresentationCKA", "linear_cka", "require_features"]


def linear_cka(x: Tensor | np.ndarray, y: Tensor | np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019, Eq. 5) of ``x`` (N, D1) and ``y`` (N, D2), rows the same samples, in float64.
    ``nan`` for fewer than 2 samples or a representation that is constant over them."""
    a = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x).detach().cpu().double()
    b = torch.as_tensor(np.asarray(y) if not isinstance(y, Tensor) else y).detach().cpu().double()
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"linear_cka needs (N, D) features of the same N samples, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}.")
    if a.shape[0] < 2:
        return math.nan
    a = a - a.mean(dim=0, keepdim=True)
    b = b - b.mean(dim=0, keepdim=True)
    cross = torch.linalg.matrix_norm(b.T @ a) ** 2
    norm = torch.linalg.matrix_norm(a.T @ a) * torch.linalg.matrix_norm(b.T @ b)
    if not norm > 0:
        return math.nan
    return float((cross / norm).clamp(0.0, 1.0))


def require_features(nets: Mapping[str, nn.Module], roles: tuple[str, ...], what: str) -> None:
    """Refuse, in one line, a network without the ``features(x)`` / ``head`` interface a feature metric reads."""
    for role in roles:
        net = nets.get(role)
        if net is not None and not has_features(net):
            raise ValueError(
                f"{what} reads the penultimate features, but the {role} network ({type(net).__name__}) has no "
                "`features(x)` method and `head` module; wrap it with lightning_unlearn.byo.AdaptedBackbone or turn "
                f"{what} off."
            )


@register_component("cka")
class RepresentationCKA(Component):
    """``gold/cka_forget`` and ``gold/cka_test``: :func:`linear_cka` of the evaluated and the gold model's penultimate
    features on D_f and on the test set."""

    keys = ("gold/cka_forget", "gold/cka_test")
    reads = ("model", "gold")

    def needs(self, nets: Mapping[str, nn.Module], dm: Any) -> Needs:
        if not self.active(nets):
            return {}
        require_features(nets, self.reads, "cka")
        return {role: {"forget": True, "test": True} for role in self.reads}

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        res = {}
        for split in ("forget", "test"):
            a, b = ctx.view("model", split), ctx.view("gold", split)
            assert a is not None and b is not None and a.features is not None and b.features is not None
            res[f"gold/cka_{split}"] = linear_cka(a.features, b.features)
        return res
