"""Loading a local weight file into a backbone (:func:`load_weights`): what the backbones' ``weights`` argument and
:mod:`~.io` use. Apart from the registry in :mod:`~.io`, so that the backbone classes, which load weights, and the
registry, which names the backbone classes, do not import each other."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .base import Backbone

__all__ = ["load_weights"]

_MODEL_PREFIX = "model."
_MAX_LISTED = 5


def load_weights(backbone: Backbone, path: str | Path) -> Backbone:
    """Load a local weight file into ``backbone`` (in place) and return it.

    The file is read with ``torch.load(path, map_location="cpu", weights_only=True)`` and may hold a raw state dict or
    a dict with a ``"state_dict"`` entry (a Lightning checkpoint). If the keys carry the ``model.`` prefix of a
    LightningModule that stores the backbone as ``self.model``, only those keys are used, with the prefix stripped.
    The checkpoint's ``mean``/``std`` buffers replace the ones the backbone was built with.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a state dict, its head has a different number of classes, or its keys/shapes do
            not match the backbone's (e.g. a checkpoint of another architecture or width).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"Weights file not found: '{path}'.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"Could not read '{path}' with torch.load(weights_only=True): {e}\nOnly tensors and plain containers can "
            f"be loaded safely; save the weights with torch.save(model.state_dict(), path)."
        ) from None
    state_dict = _extract_state_dict(obj, backbone, path)
    _check_compatible(backbone, state_dict, path)
    backbone.load_state_dict(state_dict)
    return backbone


def _extract_state_dict(obj: Any, backbone: Backbone, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(
            f"'{path}' does not hold a state dict (got {type(obj).__name__}); expected the output of "
            f"model.state_dict() or a Lightning checkpoint with a 'state_dict' entry."
        )
    state_dict = dict(obj)
    own_keys = backbone.state_dict().keys()
    if any(k.startswith(_MODEL_PREFIX) for k in state_dict) and not any(k.startswith(_MODEL_PREFIX) for k in own_keys):
        state_dict = {k[len(_MODEL_PREFIX):]: v for k, v in state_dict.items() if k.startswith(_MODEL_PREFIX)}
    return state_dict


def _check_compatible(backbone: Backbone, state_dict: Mapping[str, Tensor], path: Path) -> None:
    own = backbone.state_dict()
    name = type(backbone).__name__
    head = state_dict.get("head.weight")
    own_head = own["head.weight"]
    if head is not None and head.shape[1:] == own_head.shape[1:] and head.shape[0] != own_head.shape[0]:
        raise ValueError(
            f"'{path}': checkpoint head has {head.shape[0]} outputs but the model has num_classes="
            f"{backbone.num_classes}. Build the {name} with num_classes={head.shape[0]} to load it, or remove the "
            f"'head.*' entries from the state dict to load only the trunk and train a new head."
        )
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        problems = [
            f"{label} ({len(items)}): {', '.join(items[:_MAX_LISTED])}{', ...' if len(items) > _MAX_LISTED else ''}"
            for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("mismatched shapes", mismatched))
            if items
        ]
        init_args = backbone._config.get("init_args", {})
        raise ValueError(
            f"'{path}' does not fit this {name} ({init_args}): " + "; ".join(problems) + ". "
            "The checkpoint was probably made for another backbone or another configuration (width, depth, "
            "in_channels, ...); rebuild the model with the config it was trained with (build_backbone(config))."
        )
