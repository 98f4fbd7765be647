"""Small helpers about modules' state that attacks, feature extractors and methods share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["eval_mode", "param_dtype"]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the duration; afterwards every submodule gets back exactly the mode it had.

    ``model.train(mode)`` would not do: it sets one mode on every submodule, and a model being unlearned may have some
    in eval mode on purpose (e.g. frozen BatchNorm layers, :class:`~lightning_unlearn.methods.base.Frozen` copies).
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def param_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter (fp32 if it has none), to cast inputs to."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32
