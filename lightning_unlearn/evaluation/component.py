"""The unit the evaluator is made of: a :class:`Component` reads the per-sample outputs computed once per split
(``evaluation.outputs``) and returns flat results; its formula is a pure function beside it (``metrics.py``,
``mia.py``, ``probe.py``, ``relearn.py``, ``cka.py``), as torchmetrics pairs ``functional.accuracy`` with
``Accuracy``.

A component says which outputs it reads (:meth:`Component.needs`: role -> split -> with penultimate features), may add
networks of its own (:meth:`Component.networks`, e.g. ZRF's random references) and computes its results from an
:class:`EvalContext` (:meth:`Component.compute`). Components are registered by name (:func:`register_component`), so
``UnlearningEvaluator(components=["my_metric"])`` runs one of your own after the built-in ones.

Roles: ``"model"`` (the evaluated network), ``"gold"`` (retrained on D_r), ``"original"`` (before unlearning), and
whatever :meth:`Component.networks` adds. A component whose :attr:`Component.reads` does not include ``"model"``
depends on reference networks only: the evaluator shares its results through the ``ReferenceCache``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from lightning_unlearn.evaluation.cache import ReferenceCache
from lightning_unlearn.evaluation.metrics import accuracy
from lightning_unlearn.evaluation.outputs import Outputs

__all__ = [
    "COMPONENTS",
    "Component",
    "EvalContext",
    "Needs",
    "base_split",
    "component_class",
    "merge_needs",
    "register_component",
]

#: ``{role: {split: with_features}}``: the outputs a component reads.
Needs = dict[str, dict[str, bool]]

#: Every registered component class by name.
COMPONENTS: dict[str, type[Component]] = {}

C = TypeVar("C", bound="type[Component]")


def register_component(name: str) -> Callable[[C], C]:
    """Class decorator: register a :class:`Component` subclass under ``name`` (its :attr:`Component.name`)."""

    def wrap(cls: C) -> C:
        if name in COMPONENTS and COMPONENTS[name] is not cls:
            raise ValueError(f"An evaluation component named {name!r} is already registered ({COMPONENTS[name]}).")
        cls.name = name
        COMPONENTS[name] = cls
        return cls

    return wrap


def component_class(name: str) -> type[Component]:
    """The component class registered as ``name``; a readable error naming the registered ones otherwise."""
    try:
        return COMPONENTS[name]
    except KeyError:
        raise ValueError(
            f"Unknown evaluation component {name!r}; registered: {', '.join(sorted(COMPONENTS))} "
            "(register your own with lightning_unlearn.evaluation.register_component)."
        ) from None


def base_split(split: str) -> str:
    """The split that is forwarded for ``split``: ``test`` for ``test_retain`` / ``test_forget``."""
    return "test" if split.startswith("test") else split


def merge_needs(*parts: Needs) -> Needs:
    """Union of several components' needs (features where any of them wants features)."""
    out: Needs = {}
    for part in parts:
        for role, splits in part.items():
            mine = out.setdefault(role, {})
            for split, feats in splits.items():
                mine[split] = mine.get(split, False) or bool(feats)
    return out


@dataclass
class EvalContext:
    """What a component computes from: the gathered outputs, the networks by role, the data and the run's facts."""

    outputs: dict[tuple[str, str], Outputs]
    nets: dict[str, nn.Module]
    dm: Any
    seed: int
    device: torch.device
    cache: ReferenceCache | None = None
    data_key: str = ""
    unlearn_time_s: float | None = None
    retrain_time_s: float | None = None

    @property
    def splits(self) -> Any:
        return self.dm.splits

    def view(self, role: str, split: str) -> Outputs | None:
        """``role``'s outputs on ``split`` (``test_retain`` / ``test_forget`` selected from ``test``); ``None`` when
        they were not computed."""
        if split in ("test_retain", "test_forget"):
            test = self.outputs.get((role, "test"))
            if test is None:
                return None
            return test.select(np.isin(test.index.cpu().numpy(), self.splits[split]))
        return self.outputs.get((role, split))


class Component:
    """A metric of the evaluation (see the module docstring). Subclasses set :attr:`reads`, implement
    :meth:`needs` and :meth:`compute`, and validate their options in ``__init__`` (one readable line per bad value)."""

    #: The registered name (set by :func:`register_component`).
    name: ClassVar[str] = ""
    #: The keys a full computation returns (documentation and report columns; ``compute`` may return fewer).
    keys: ClassVar[tuple[str, ...]] = ()
    #: The roles whose networks/outputs the results depend on.
    reads: tuple[str, ...] = ("model",)

    def needs(self, nets: Mapping[str, nn.Module], dm: Any) -> Needs:
        """The outputs read, ``{role: {split: with_features}}``, given the networks present by role."""
        return {}

    def networks(self, model: nn.Module, dm: Any, seed: int, cache: ReferenceCache | None) -> dict[str, nn.Module]:
        """Networks this component adds (by role name), built without touching the global RNGs."""
        return {}

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        """The results, flat keys to floats, from the outputs and networks in ``ctx`` (abstract)."""
        raise NotImplementedError(f"{type(self).__name__} must implement compute(ctx).")

    def options(self) -> dict[str, Any]:
        """The settings the results depend on (part of the reference cache key)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def active(self, nets: Mapping[str, Any]) -> bool:
        """Whether every role this component reads is present (else it returns nothing)."""
        return all(r in nets for r in self.reads)


def accuracy_or_nan(o: Outputs | None) -> float:
    """``metrics.accuracy`` of ``o``, ``nan`` when the outputs were not computed."""
    return accuracy(o.logits, o.targets) if o is not None else math.nan


def needs_of(roles: Mapping[str, Collection[str]], features: bool = False) -> Needs:
    """``{role: {base_split(s): features}}`` for the given ``{role: splits}``."""
    return {role: {base_split(s): features for s in splits} for role, splits in roles.items()}
