"""The networks an evaluation looks at, and the guard that keeps it from changing them: which network of a
LightningModule is evaluated, loading the gold/original checkpoints (once per file version with a ``ReferenceCache``,
split hashes checked against every DataModule), and :func:`rng_isolated`."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lightning_unlearn.evaluation.cache import ReferenceCache

__all__ = ["ReferenceModels", "evaluated_backbone", "load_reference", "require_datamodule", "rng_isolated"]


def evaluated_backbone(module: nn.Module) -> nn.Module:
    """The network an evaluation looks at: ``unlearned_backbone()`` of an unlearning method, ``.model`` of a
    ``Classifier`` (any module with an ``nn.Module`` attribute ``model``), else the module itself."""
    get = getattr(module, "unlearned_backbone", None)
    if callable(get):
        return get()
    inner = getattr(module, "model", None)
    if isinstance(inner, nn.Module):
        return inner
    return module


def load_reference(
    path: str, datamodule: Any, cache: ReferenceCache | None, *, what: str, trained_on: str | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """A lightning_unlearn checkpoint's network and meta (``checkpoints.load_backbone``: weights only, split hashes and
    input checked against ``datamodule``; a gold model must record ``trained_on``). With a ``cache`` the file is read
    once per version and its splits checked against each DataModule."""
    from lightning_unlearn.checkpoints import load_backbone

    kwargs: dict[str, Any] = {"what": what}
    if trained_on is not None:
        kwargs["trained_on"] = trained_on
    read = lambda: load_backbone(path, datamodule, **kwargs)  # noqa: E731
    if cache is None:
        return read()
    model, meta = cache.checkpoint(path, read)
    if meta.get("splits"):
        datamodule.verify_splits(meta["splits"], what)
    return model, meta


def require_datamodule(dm: Any) -> Any:
    if dm is None or not hasattr(dm, "splits") or not hasattr(dm, "dataset"):
        raise TypeError(
            "UnlearningEvaluator needs a lightning_unlearn UnlearningDataModule (it reads the retain/forget/test "
            f"splits), got {type(dm).__name__}. Pass `datamodule=dm` to the Trainer call."
        )
    return dm


@contextlib.contextmanager
def rng_isolated() -> Iterator[None]:
    """Restore every global RNG afterwards: torch's CPU and (when initialised) CUDA generators, numpy's legacy global
    state and Python's ``random``. What runs inside may draw from them; what runs after sees the same states as if it
    had not run."""
    py_state, np_state = random.getstate(), np.random.get_state()
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    devices = list(range(torch.cuda.device_count())) if cuda else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class ReferenceModels:
    """The gold and original models of an evaluator: modules, or checkpoint paths loaded at the next evaluation."""

    def set_gold(self, gold: nn.Module | str | Path | None) -> None:
        """Set the gold model (a module, or a checkpoint path loaded at the next evaluation)."""
        self.gold_model: nn.Module | None = None
        self.gold_path: str | None = None
        self.gold_meta: dict[str, Any] = {}
        if isinstance(gold, nn.Module):
            self.gold_model = gold
        elif gold is not None:
            self.gold_path = str(gold)

    def set_original(self, original: nn.Module | str | Path | None) -> None:
        """Set the original (pre-unlearning) model, a module or a checkpoint path."""
        self.original_model: nn.Module | None = None
        self.original_path: str | None = None
        if isinstance(original, nn.Module):
            self.original_model = original
        elif original is not None:
            self.original_path = str(original)

    @property
    def has_gold(self) -> bool:
        return self.gold_model is not None or self.gold_path is not None

    @property
    def has_original(self) -> bool:
        return self.original_model is not None or self.original_path is not None

    def load_references(self, datamodule: Any, cache: ReferenceCache | None = None) -> None:
        """Load the models given as paths (:func:`load_reference`; a gold checkpoint must record training on D_r)."""
        if self.gold_model is None and self.gold_path is not None:
            what = f"gold checkpoint {self.gold_path}"
            self.gold_model, self.gold_meta = load_reference(self.gold_path, datamodule, cache, what=what,
                                                             trained_on="retain")
        if self.original_model is None and self.original_path is not None:
            what = f"original checkpoint {self.original_path}"
            self.original_model, _ = load_reference(self.original_path, datamodule, cache, what=what)
