"""The one interface every backbone implements.

Input is in [0, 1] pixel space; the dataset's normalisation lives inside the model (so attacks can clamp to [0, 1]),
``features(x)`` is the penultimate vector, ``head`` is an ``nn.Linear`` and ``forward(x) = head(features(x))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn


class Backbone(nn.Module):
    """Base class: normalisation buffers, ``features``/``head``/``forward`` and a rebuildable ``config``.

    Subclasses build their trunk in ``__init__``, set ``self.head = nn.Linear(feature_dim, num_classes)`` and implement
    :meth:`forward_features` on *normalised* input. They call ``self._record_config(...)`` with their init arguments so
    that a checkpoint can rebuild the same architecture (``config()``).
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

    # -- configuration ---------------------------------------------------------------------------------------------
    def _record_config(self, **init_args: Any) -> None:
        init_args.pop("weights", None)  # a rebuilt model takes its weights from the checkpoint, not the file
        for key in ("mean", "std"):
            if init_args.get(key) is not None:
                init_args[key] = [float(v) for v in init_args[key]]
        self._config = {"class_path": f"{type(self).__module__}.{type(self).__qualname__}", "init_args": init_args}

    def config(self) -> dict[str, Any]:
        """``{"class_path": ..., "init_args": ...}`` that :func:`build_backbone` turns back into this architecture."""
        if not self._config:
            raise RuntimeError(f"{type(self).__name__} did not call _record_config in __init__.")
        return {"class_path": self._config["class_path"], "init_args": dict(self._config["init_args"])}


def _per_channel(values: Sequence[float] | None, channels: int, default: float, name: str) -> Tensor:
    if values is None:
        values = [default] * channels
    values = [float(v) for v in values]
    if len(values) == 1 and channels > 1:
        values = values * channels
    if len(values) != channels:
        raise ValueError(f"{name} has {len(values)} values but the model takes {channels} input channels.")
    return torch.tensor(values, dtype=torch.float32).view(1, channels, 1, 1)
