"""Executors by name: ``executor: local`` or ``{name: ray, ...}`` in a config. The built-in backends other than ``local``
are loaded only when named (the ``ray`` module imports Ray), by their module path, so nothing here imports them."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from lightning_unlearn.executors.base import Executor
from lightning_unlearn.executors.local import LocalExecutor

__all__ = ["executor_names", "make_executor", "register_executor"]

#: Factories registered in this process (``local`` and what :func:`register_executor` added).
_FACTORIES: dict[str, Callable[..., Executor]] = {"local": LocalExecutor}
#: Built-in backends loaded by name when first used: ``name -> (module, class)``.
_LAZY: dict[str, tuple[str, str]] = {"ray": ("lightning_unlearn.executors.ray", "RayExecutor"),
                                      "processes": ("lightning_unlearn.executors.processes", "ProcessExecutor")}
#: What to install for a lazy backend whose library is missing.
_EXTRAS = {"ray": "pip install 'lightning_unlearn[ray]'"}


def register_executor(name: str, factory: Callable[..., Executor]) -> None:
    """Make ``executor: {name: <name>, ...}`` in a config build ``factory(**options)``."""
    _FACTORIES[name] = factory


def executor_names() -> list[str]:
    """Every name :func:`make_executor` accepts (registered and built-in, loaded or not), sorted."""
    return sorted({*_FACTORIES, *_LAZY})


def _factory(name: str) -> Callable[..., Executor]:
    if name not in _FACTORIES and name in _LAZY:
        module, attr = _LAZY[name]
        try:
            _FACTORIES[name] = getattr(importlib.import_module(module), attr)
        except ImportError as err:
            raise ValueError(f"the {name} executor needs {name.capitalize()} ({err}); install it with: "
                             f"{_EXTRAS[name]}") from None
    if name not in _FACTORIES:
        raise ValueError(f"unknown executor {name!r}; choose one of: {', '.join(executor_names())}")
    return _FACTORIES[name]


def make_executor(spec: str | Mapping[str, Any] | Executor | None = None) -> Executor:
    """``None``/``"local"`` -> :class:`~.local.LocalExecutor`; ``{"name": "ray", "address": "auto", ...}`` -> that
    executor, built with the other keys as its options."""
    if isinstance(spec, Executor):
        return spec
    if spec is None:
        spec = "local"
    options: dict[str, Any] = {}
    if isinstance(spec, Mapping):
        options = dict(spec)
        name = str(options.pop("name", "local"))
    else:
        name = str(spec)
    factory = _factory(name)
    try:
        return factory(**options)
    except TypeError as err:
        raise ValueError(f"bad options for the {name} executor: {err}") from None
