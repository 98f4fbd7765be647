"""A method's search space as the tuner uses it: the class's ``search_space`` attribute with the config's overrides
(:func:`resolve_space`), every key an argument of the method (or its epochs) and every bound a value the method
accepts, checked before any trial; and whether settings lie inside a space (:func:`in_space`)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from lightning_unlearn.experiment import ConfigError, MethodSpec, check_method_args
from lightning_unlearn.search_space import EPOCHS_KEY, Choice, FloatRange, IntRange, Param, parse_space

__all__ = ["in_space", "resolve_space"]


def resolve_space(spec: MethodSpec, override: Mapping[str, Any] | None) -> dict[str, Param]:
    """The method class's ``search_space`` with the YAML ``override`` applied, every key and bound checked."""
    cls = spec.resolve()
    try:
        parsed = parse_space(override)
    except ValueError as err:
        raise ConfigError(f"{spec.name}: {err}") from None
    space: dict[str, Param | None] = {**dict(getattr(cls, "search_space", {}) or {}), **parsed}
    space = {k: v for k, v in space.items() if v is not None}
    params = inspect.signature(cls).parameters
    allowed = {k for k in params if k not in ("backbone", "updates", "self")} | {EPOCHS_KEY}
    for key in space:
        if key not in allowed:
            raise ConfigError(f"{spec.name}: search space key {key!r} is not an argument of {cls.__name__} "
                              f"({', '.join(sorted(allowed))})")
    if not space:
        raise ConfigError(f"{spec.name}: empty search space ({cls.__name__} declares none); give one under "
                          f"search_space.{spec.name}, or leave the method out of `methods`")
    for key, param in space.items():
        _check_values(spec, key, param)  # type: ignore[arg-type]
    return dict(space)  # type: ignore[arg-type]


def _check_values(spec: MethodSpec, key: str, param: Param) -> None:
    """The bounds (or choices) of ``param`` are values ``key`` of the method accepts."""
    values = param.bounds()
    if key == EPOCHS_KEY:
        if isinstance(param, FloatRange) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                      for v in values):
            raise ConfigError(f"{spec.name}: {EPOCHS_KEY} must be an integer range or choices of integers >= 0, got "
                              f"{param.describe()}")
        return
    for v in values:
        try:
            check_method_args(replace(spec, init_args={**spec.init_args, key: v}), spec.resolve())
        except ConfigError as err:
            raise ConfigError(f"{spec.name}: search space {key}={param.describe()}: the value {v!r} is not accepted "
                              f"({str(err)[:300]})") from None


def in_space(params: Mapping[str, Any], space: Mapping[str, Param]) -> bool:
    """Whether every key of ``space`` has a value in ``params`` that lies in its range or among its choices."""
    for k, p in space.items():
        v = params.get(k)
        if isinstance(p, Choice):
            if v not in p.choices:
                return False
        elif isinstance(p, (FloatRange, IntRange)):
            if v is None or isinstance(v, bool) or not (p.low <= v <= p.high):
                return False
    return True
