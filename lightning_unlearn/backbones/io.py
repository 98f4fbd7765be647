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
from collections.abc import Mapping
from typing import Any

from .adapters import AdaptedBackbone, TimmBackbone, TorchvisionBackbone, check_untrusted_model_kwargs
from .allcnn import AllCNN
from .base import Backbone
from .resnet18 import ResNet18
from .vit import ViT
from .weights import load_weights  # re-exported: `backbones.io.load_weights` stays importable

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
    if untrusted:
        _check_no_file_named(init_args, f"backbone {class_path}")
    if untrusted and issubclass(cls, AdaptedBackbone):
        check_untrusted_model_kwargs(init_args, f"backbone {class_path}")
    try:
        inspect.signature(cls).bind(**init_args)
    except TypeError as e:
        raise TypeError(f"init_args do not fit {class_path}{inspect.signature(cls)}: {e}.") from None
    return cls(**init_args)


#: Words of an argument name that names a file or a place to fetch from (``weights``, ``checkpoint_path``, ...).
_FILE_WORDS = ("weight", "path", "file", "dir", "checkpoint", "ckpt", "url", "pretrained")


def _check_no_file_named(init_args: Mapping[str, Any], what: str) -> None:
    """Refuse an untrusted config's argument that would make the backbone open a file or download (``weights``, or
    any argument named like a path): ``Backbone.config()`` never records one, so only a crafted file holds it."""
    bad = [k for k, v in init_args.items() if v not in (None, False, "") and any(w in k.lower() for w in _FILE_WORDS)]
    if bad:
        raise ValueError(
            f"{what} gives {bad[0]}={init_args[bad[0]]!r}, which would open a file or download; a checkpoint's "
            "recorded config may not, so it is refused (nothing was opened or built)."
        )


def _builtin_classes() -> dict[str, type[Backbone]]:
    """Every name a built-in backbone is known by: short (any case), package-level and module-level dotted paths."""
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
