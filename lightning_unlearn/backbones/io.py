"""Rebuilding backbones from their ``config()`` and loading local weight files.

``build_backbone({"class_path": ..., "init_args": {...}})`` instantiates the class named by ``class_path``: the short or
dotted name of a built-in backbone (``"ResNet18"``, ``"lightning_unlearn.backbones.ResNet18"``) or of a class the user
registered with :func:`register_backbone` (or listed in ``$LIGHTNING_UNLEARN_BACKBONES``). A ``class_path`` is often read
from a checkpoint, which is untrusted: nothing else is ever imported. ``load_weights(backbone, path)`` loads a file
written by ``torch.save(model.state_dict(), path)`` or a Lightning checkpoint whose module holds the backbone as
``self.model`` (keys ``model.*``; other prefixes, e.g. a frozen ``original.*`` copy, are ignored).
"""

from __future__ import annotations

import importlib
import inspect
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .adapters import AdaptedBackbone, check_untrusted_model_kwargs
from .base import Backbone

__all__ = ["build_backbone", "load_weights", "register_backbone"]

_BUILTIN_BACKBONES = {
    "resnet18": "lightning_unlearn.backbones.resnet18.ResNet18",
    "allcnn": "lightning_unlearn.backbones.allcnn.AllCNN",
    "vit": "lightning_unlearn.backbones.vit.ViT",
}
#: Environment variable: comma-separated dotted paths of the user's own Backbone classes (trusted: set by the user).
BACKBONES_ENV = "LIGHTNING_UNLEARN_BACKBONES"
_REGISTERED: dict[str, type[Backbone]] = {}


def register_backbone(cls: type[Backbone]) -> type[Backbone]:
    """Allow :func:`build_backbone` (and so checkpoints) to name ``cls``; usable as a class decorator.

    Checkpoints record their backbone's ``module.QualName``; only built-in and registered classes are rebuilt from
    one. From the command line, list the classes in ``$LIGHTNING_UNLEARN_BACKBONES`` (``pkg.mod.MyNet,pkg.Other``).
    """
    if not (isinstance(cls, type) and issubclass(cls, Backbone)):
        raise TypeError(f"register_backbone takes a Backbone subclass, got {cls!r}.")
    _REGISTERED[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return cls
_MODEL_PREFIX = "model."
_MAX_LISTED = 5


def build_backbone(config: Mapping[str, Any], *, untrusted: bool = False) -> Backbone:
    """Instantiate a backbone from ``{"class_path": ..., "init_args": {...}}`` (the format of ``Backbone.config()``).

    Args:
        config: ``class_path`` is a dotted import path to a :class:`Backbone` subclass or a built-in short name
            (``ResNet18``, ``AllCNN``, ``ViT``, case-insensitive); ``init_args`` (optional) its keyword arguments.
        untrusted: ``config`` was read from a file (a checkpoint's recorded backbone): a torchvision/timm adapter's
            ``model_kwargs`` that would load a file or download (``checkpoint_path``, ``pretrained``, ...) are refused
            before anything is built. The user's own config (``False``) may give them.

    Returns:
        The new backbone. Weights are freshly initialised unless ``init_args`` contains ``weights``.

    Raises:
        ValueError: malformed config, or a ``class_path`` that does not name a ``Backbone`` subclass.
        TypeError: ``init_args`` that the class does not accept.
    """
    if not isinstance(config, Mapping) or not isinstance(config.get("class_path"), str):
        raise ValueError(
            f"build_backbone expects {{'class_path': str, 'init_args': dict}} as returned by Backbone.config(), "
            f"got {config!r}."
        )
    class_path = config["class_path"]
    init_args = dict(config.get("init_args") or {})
    cls = _resolve_backbone_class(class_path)
    if untrusted and issubclass(cls, AdaptedBackbone):
        check_untrusted_model_kwargs(init_args, f"backbone {class_path}")
    try:
        inspect.signature(cls).bind(**init_args)
    except TypeError as e:
        raise TypeError(f"init_args do not fit {class_path}{inspect.signature(cls)}: {e}.") from None
    return cls(**init_args)


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


def _builtin_classes() -> dict[str, type[Backbone]]:
    """Every name a built-in backbone is known by: short (any case), package-level and module-level dotted paths."""
    from . import AllCNN, ResNet18, TimmBackbone, TorchvisionBackbone, ViT

    out: dict[str, type[Backbone]] = {}
    for cls in (ResNet18, AllCNN, ViT, TorchvisionBackbone, TimmBackbone):
        names = (cls.__name__.lower(), f"lightning_unlearn.backbones.{cls.__name__}", f"{cls.__module__}.{cls.__name__}")
        for name in names:
            out[name] = cls
    return out


def _env_registered() -> dict[str, type[Backbone]]:
    """Classes named in ``$LIGHTNING_UNLEARN_BACKBONES`` (the user's environment, not a file, names them)."""
    out: dict[str, type[Backbone]] = {}
    for path in filter(None, (p.strip() for p in os.environ.get(BACKBONES_ENV, "").split(","))):
        module_name, _, name = path.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), name, None) if module_name else None
        except ImportError as e:
            raise ValueError(f"${BACKBONES_ENV} names '{path}', which cannot be imported ({e}).") from None
        if not (isinstance(cls, type) and issubclass(cls, Backbone)):
            raise ValueError(f"${BACKBONES_ENV} names '{path}', which is not a Backbone subclass.")
        out[path] = cls
        out[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return out


def _resolve_backbone_class(class_path: str) -> type[Backbone]:
    """The class ``class_path`` names in the registry (built-in, registered, ``$LIGHTNING_UNLEARN_BACKBONES``).

    Nothing is imported on behalf of ``class_path``: it may come from an untrusted checkpoint.
    """
    builtin = _builtin_classes()
    cls = builtin.get(class_path.lower()) or builtin.get(class_path) or _REGISTERED.get(class_path)
    if cls is None and os.environ.get(BACKBONES_ENV):
        cls = _env_registered().get(class_path)
    if cls is None:
        known = ", ".join(
            c.__name__ for c in (builtin[n] for n in ("resnet18", "allcnn", "vit", "torchvisionbackbone", "timmbackbone"))
        )
        raise ValueError(
            f"Unknown backbone '{class_path}': not a built-in backbone ({known}) nor a registered one, so it is "
            "refused (nothing was imported). For your own Backbone class call "
            f"lightning_unlearn.backbones.register_backbone(cls) or list it in ${BACKBONES_ENV}."
        )
    return cls


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
            f"The checkpoint was probably made for another backbone or another configuration (width, depth, "
            f"in_channels, ...); rebuild the model with the config it was trained with (build_backbone(config))."
        )
