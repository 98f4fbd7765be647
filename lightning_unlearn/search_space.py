"""Search-space specs that methods declare next to their arguments (``search_space`` class attribute) for ``tune``.

Three kinds, each checked when it is built (an empty or inverted range, a log range reaching 0, no choices: one
``ValueError`` line)::

    search_space: ClassVar[SearchSpace] = {
        "lr": FloatRange(1e-4, 1e-1, log=True),     # log-uniform
        "mask_fraction": FloatRange(0.1, 0.9),      # uniform
        "max_epochs": IntRange(1, 10),              # the run's epochs (the benchmark's ``max_epochs``), not an argument
        "optimizer": Choice(["sgd", "adam"]),       # categorical
    }

YAML (``configs/tune/*.yaml``) writes the same as mappings: ``{low: 1e-4, high: 0.1, log: true}`` (float unless both
bounds are integers; ``type: float|int`` forces it), ``{choices: [sgd, adam]}``; ``null`` removes a key from the space
(the method's configured value is then used). This module imports nothing of the package (the methods import it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

__all__ = ["EPOCHS_KEY", "Choice", "FloatRange", "IntRange", "Param", "SearchSpace", "parse_param", "parse_space"]

#: The search-space key for the number of epochs of a run (``MethodSpec.max_epochs``, ``trainer.max_epochs``).
EPOCHS_KEY = "max_epochs"


def _number(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    return float(v)


@dataclass(frozen=True)
class FloatRange:
    """A float in ``[low, high]``, uniform or (``log=True``) log-uniform."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        lo, hi = _number("low", self.low), _number("high", self.high)
        if lo >= hi:
            raise ValueError(f"empty or inverted range [{self.low}, {self.high}]: low must be < high")
        if self.log and lo <= 0:
            raise ValueError(f"log range [{self.low}, {self.high}] must have low > 0")

    def describe(self) -> dict[str, Any]:
        return {"type": "float", "low": self.low, "high": self.high, "log": self.log}

    def bounds(self) -> list[Any]:
        return [float(self.low), float(self.high)]


@dataclass(frozen=True)
class IntRange:
    """An integer in ``[low, high]`` (both included), by ``step``, or log-uniform (``log=True``, step 1)."""

    low: int
    high: int
    step: int = 1
    log: bool = False

    def __post_init__(self) -> None:
        for name in ("low", "high", "step"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"integer range: {name} must be an integer, got {v!r}")
        if self.low >= self.high:
            raise ValueError(f"empty or inverted range [{self.low}, {self.high}]: low must be < high")
        if self.step < 1 or (self.log and self.step != 1):
            raise ValueError(f"integer range [{self.low}, {self.high}]: step must be >= 1 (and 1 with log=True)")
        if self.log and self.low <= 0:
            raise ValueError(f"log range [{self.low}, {self.high}] must have low > 0")

    def describe(self) -> dict[str, Any]:
        return {"type": "int", "low": self.low, "high": self.high, "step": self.step, "log": self.log}

    def bounds(self) -> list[Any]:
        return [int(self.low), int(self.high)]


@dataclass(frozen=True)
class Choice:
    """One of ``choices`` (strings, numbers, booleans or null)."""

    choices: tuple[Any, ...]

    def __init__(self, choices: Any) -> None:
        if isinstance(choices, (str, bytes)) or not hasattr(choices, "__iter__"):
            raise ValueError(f"choices must be a list, got {choices!r}")
        values = tuple(choices)
        if not values:
            raise ValueError("choices is empty: list at least one value")
        if len(set(map(repr, values))) != len(values):
            raise ValueError(f"choices {list(values)} lists a value twice")
        for v in values:
            if v is not None and not isinstance(v, (str, int, float, bool)):
                raise ValueError(f"choice {v!r} is not a string, number, boolean or null")
        object.__setattr__(self, "choices", values)

    def describe(self) -> dict[str, Any]:
        return {"type": "categorical", "choices": list(self.choices)}

    def bounds(self) -> list[Any]:
        return list(self.choices)


Param: TypeAlias = FloatRange | IntRange | Choice
SearchSpace: TypeAlias = dict[str, Param]

_FIELDS = {"type", "low", "high", "log", "step", "choices"}


def parse_param(spec: Any) -> Param:
    """A :data:`Param` from a YAML mapping (or a ``Param``); raises ``ValueError`` with one readable line."""
    if isinstance(spec, (FloatRange, IntRange, Choice)):
        return spec
    if not isinstance(spec, Mapping):
        raise ValueError(f"a search-space entry is a mapping ({{low, high, log}} or {{choices}}), got {spec!r}")
    unknown = sorted(set(spec) - _FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown} in {dict(spec)}; use {sorted(_FIELDS)}")
    kind = spec.get("type")
    if "choices" in spec or kind in ("categorical", "choice"):
        extra = sorted(set(spec) - {"type", "choices"})
        if extra:
            raise ValueError(f"a categorical entry takes only `choices`, got {extra} too")
        return Choice(spec.get("choices") or [])
    if "low" not in spec or "high" not in spec:
        raise ValueError(f"a range needs `low` and `high`, got {dict(spec)}")
    low, high, log = spec["low"], spec["high"], bool(spec.get("log", False))
    if kind is None:
        kind = "int" if all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)) else "float"
    if kind == "int":
        return IntRange(low, high, step=spec.get("step", 1), log=log)
    if kind == "float":
        if "step" in spec:
            raise ValueError("`step` applies to integer ranges only")
        return FloatRange(_number("low", low), _number("high", high), log=log)
    raise ValueError(f"unknown type {kind!r}; use float, int or categorical")


def parse_space(spec: Mapping[str, Any] | None) -> dict[str, Param | None]:
    """A whole space from YAML: ``{name: entry or null}`` (``null``: take the key out of the method's space)."""
    out: dict[str, Param | None] = {}
    for name, entry in dict(spec or {}).items():
        if entry is None:
            out[str(name)] = None
            continue
        try:
            out[str(name)] = parse_param(entry)
        except ValueError as err:
            raise ValueError(f"search_space.{name}: {err}") from None
    return out
