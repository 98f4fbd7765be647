"""Small helpers about modules' state that attacks, feature extractors and methods share."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
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


@torch.no_grad()
def accuracy(
    model: nn.Module, loader: Iterable, forward: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> float:
    """Top-1 accuracy over ``loader``'s ``(x, y, ...)`` batches with ``model`` in eval mode (modes restored), inputs
    moved to its device and parameter dtype; predictions from ``forward`` (default: ``model`` itself, e.g. a
    LightningModule whose forward wraps ``model``); 0.0 for an empty loader."""
    forward = model if forward is None else forward
    device, dtype = next(model.parameters()).device, param_dtype(model)
    correct = total = 0
    with eval_mode(model):
        for batch in loader:
            x, y = batch[0].to(device, dtype), batch[1].to(device)
            correct += int((forward(x).argmax(1) == y).sum())
            total += len(y)
    return correct / max(total, 1)
