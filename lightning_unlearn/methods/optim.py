"""The optimizers methods and training use, built in one place."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch

__all__ = ["OptimizerName", "make_optimizer"]

OptimizerName = Literal["sgd", "adam"]


def make_optimizer(
    params: Iterable[Any],
    name: str,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """``torch.optim.SGD(params, lr, momentum, weight_decay)`` for ``"sgd"``, ``torch.optim.Adam(params, lr,
    weight_decay)`` for ``"adam"`` (which has no momentum argument); anything else is refused in one line."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"Unknown optimizer {name!r}; choose 'sgd' or 'adam'.")
