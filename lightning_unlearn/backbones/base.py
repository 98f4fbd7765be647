"""The one interface every backbone implements.

Input is in [0, 1] pixel space; the dataset's normalisation lives inside the model (so attacks can clamp to [0, 1]),
``features(x)`` is the penultimate vector, ``head`` is an ``nn.Linear`` and ``forward(x) = head(features(x))``.
What a method needs of a network is the :class:`~lightning_unlearn.backbones.protocol.Network` protocol; a
``Backbone`` follows it and adds the normalisation buffers and a rebuildable ``config()``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn


class Backbone(nn.Module):
    """Base class: normalisation buffers, ``features``/``head``/``forward`` and a rebuildable ``config``.

    Subclasses build their trunk in ``__init__``, set ``self.head = nn.Linear(feature_dim, num_classes)`` and implement
    :meth:`forward_features` on *normalised* input. The arguments a subclass was constructed with are recorded
    automatically (``config()``), so that a checkpoint can rebuild the same architecture; they must be plain values
    (numbers, strings, lists, dicts). A ``weights`` argument (a file to load) is never recorded.
    """

    head: nn.Linear
    min_image_size: int = 1

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}.")
        if image_size < self.min_image_size:
            raise ValueError(
                f"{type(self).__name__} cannot take {image_size}x{image_size} images: the smallest it supports is "
                f"{self.min_image_size}x{self.min_image_size}. Resize the data (the DataModule's `image_size`)."
            )
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.image_size = image_size
        mean_t = _per_channel(mean, in_channels, 0.0, "mean")
        std_t = _per_channel(std, in_channels, 1.0, "std")
        if (std_t <= 0).any():
            raise ValueError(f"std must be positive, got {list(std_t.flatten().tolist())}.")
        self.register_buffer("mean", mean_t, persistent=True)
        self.register_buffer("std", std_t, persistent=True)
        self._config: dict[str, Any] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Wrap the subclass's ``__init__`` so that the outermost constructor's arguments become ``config()``."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None or getattr(init, "_records_config", False):
            return

        @functools.wraps(init)
        def __init__(self: Backbone, *args: Any, **kw: Any) -> None:
            stack = self.__dict__.setdefault("_init_stack", [])
            stack.append(cls)
            try:
                init(self, *args, **kw)
            finally:
                stack.pop()
            # the class actually built records its own arguments, unless its own __init__ recorded them explicitly
            if type(self) is cls and self.__dict__.get("_config_owner") is not cls:
                self._auto_record(init, args, kw)
            if not stack:
                self.__dict__.pop("_init_stack", None)

        __init__._records_config = True  # type: ignore[attr-defined]
        cls.__init__ = __init__  # type: ignore[method-assign]

    def _auto_record(self, init: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            bound = inspect.signature(init).bind(self, *args, **kwargs)
        except TypeError:  # pragma: no cover - the call itself succeeded with these arguments
            return
        bound.apply_defaults()
        init_args: dict[str, Any] = {}
        for name, param in list(bound.signature.parameters.items())[1:]:
            value = bound.arguments.get(name)
            if param.kind is param.VAR_POSITIONAL:
                if value:
                    self._config_error = f"its __init__ takes *{name}, which a config cannot name"
                    return
            elif param.kind is param.VAR_KEYWORD:
                init_args.update(value or {})
            else:
                init_args[name] = value
        bad = next((k for k, v in init_args.items() if k != "weights" and not _plain(v)), None)
        if bad is not None:
            self._config_error = (
                f"its init argument `{bad}` is a {type(init_args[bad]).__name__}, not a plain value (number, string, "
                "list, dict), so a checkpoint could not rebuild it"
            )
            return
        self._record_config(**init_args)
    # -- interface -------------------------------------------------------------------------------------------------
    def normalize(self, x: Tensor) -> Tensor:
        """Map [0, 1] pixels to the normalised space the trunk was trained in."""
        return (x - self.mean) / self.std

    def forward_features(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Penultimate features of *normalised* input, shape ``(N, feature_dim)``."""
        raise NotImplementedError

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features of [0, 1] input, shape ``(N, feature_dim)``."""
        return self.forward_features(self.normalize(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    @property
    def feature_dim(self) -> int:
        return self.head.in_features

    def to_native_state_dict(self, prefix: str = "") -> dict[str, Tensor]:
        """The weights in the network's own keys, each under ``prefix`` (a backbone of this package: its own
        ``state_dict``; :class:`~lightning_unlearn.backbones.AdaptedBackbone`: the wrapped network's keys)."""
        return {prefix + k: v.detach().clone() for k, v in self.state_dict().items()}

    # -- configuration ---------------------------------------------------------------------------------------------
    def _record_config(self, **init_args: Any) -> None:
        """Record ``init_args`` as this backbone's config (done automatically for subclasses; explicit calls still
        work and win over the automatic record of the class that makes them)."""
        stack = self.__dict__.get("_init_stack") or [None]
        self.__dict__["_config_owner"] = stack[-1]
        init_args.pop("weights", None)  # a rebuilt model takes its weights from the checkpoint, not the file
        for key in ("mean", "std"):
            if init_args.get(key) is not None:
                init_args[key] = [float(v) for v in init_args[key]]
        self._config = {"class_path": f"{type(self).__module__}.{type(self).__qualname__}", "init_args": init_args}

    def config(self) -> dict[str, Any]:
        """``{"class_path": ..., "init_args": ...}`` that :func:`build_backbone` turns back into this architecture."""
        if not self._config:
            why = self.__dict__.get("_config_error") or "it records no config (Backbone.__init__ was not called?)"
            raise RuntimeError(
                f"{type(self).__name__} cannot be rebuilt from a checkpoint: {why}. Give it plain init arguments, or "
                "override config() to return {'class_path': ..., 'init_args': {...}}."
            )
        return {"class_path": self._config["class_path"], "init_args": dict(self._config["init_args"])}


def _plain(value: Any) -> bool:
    """Whether ``value`` is a config value (what ``torch.load(weights_only=True)`` and YAML both read back)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def _per_channel(values: Sequence[float] | None, channels: int, default: float, name: str) -> Tensor:
    if values is None:
        values = [default] * channels
    values = [float(v) for v in values]
    if len(values) == 1 and channels > 1:
        values = values * channels
    if len(values) != channels:
        raise ValueError(f"{name} has {len(values)} values but the model takes {channels} input channels.")
    return torch.tensor(values, dtype=torch.float32).view(1, channels, 1, 1)
