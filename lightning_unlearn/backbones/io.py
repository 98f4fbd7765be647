"""Rebuilding backbones from their ``config()`` and loading local weight files.

``build_backbone({"class_path": ..., "init_args": {...}})`` instantiates the architecture named by ``class_path``: the
short or dotted name of a built-in backbone (``"ResNet18"``, ``"lightning_unlearn.backbones.ResNet18"``) or of an
architecture in the registry: one the user registered with :func:`register_backbone`, listed in
``$LIGHTNING_UNLEARN_BACKBONES``, or named themselves (``--arch pkg.module.Class``, ``--arch pkg.module:factory``:
:func:`import_architecture`). An architecture is a :class:`Backbone` subclass, or any ``nn.Module`` class or factory
function returning a classifier network, which is wrapped by :class:`~lightning_unlearn.backbones.AdaptedBackbone`.
A ``class_path`` is often read from a checkpoint, which is untrusted: :func:`build_backbone` never imports anything;
only :func:`import_architecture`, called with what the user typed, does. ``load_weights(backbone, path)`` loads a file
written by ``torch.save(model.state_dict(), path)`` or a Lightning checkpoint whose module holds the backbone as
``self.model`` (keys ``model.*``; other prefixes, e.g. a frozen ``original.*`` copy, are ignored).
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Mapping
from typing import Any

from torch import nn

from .adapters import AdaptedBackbone, TimmBackbone, TorchvisionBackbone, check_untrusted_model_kwargs
from .allcnn import AllCNN
from .base import Backbone
from .resnet18 import ResNet18
from .vit import ViT
from .weights import load_weights  # re-exported: `backbones.io.load_weights` stays importable

__all__ = ["build_backbone", "import_architecture", "load_weights", "register_backbone"]

_BUILTIN_BACKBONES = {
    "resnet18": "lightning_unlearn.backbones.resnet18.ResNet18",
    "allcnn": "lightning_unlearn.backbones.allcnn.AllCNN",
    "vit": "lightning_unlearn.backbones.vit.ViT",
}
#: Environment variable: comma-separated dotted paths of the user's own Backbone classes (trusted: set by the user).
BACKBONES_ENV = "LIGHTNING_UNLEARN_BACKBONES"
#: Architectures by every name they are known by: Backbone subclasses, nn.Module classes and factory functions.
_REGISTERED: dict[str, Any] = {}
#: Init arguments that come from the data (linked from the DataModule), not from the network's own constructor.
DATA_ARGS = ("num_classes", "in_channels", "image_size", "mean", "std")


def register_backbone(arch: Any, name: str | None = None) -> Any:
    """Allow :func:`build_backbone` (and so checkpoints) to name ``arch``; usable as a class or function decorator.

    ``arch`` is a :class:`Backbone` subclass, any ``nn.Module`` class, or a function returning a network (a plain
    network is wrapped by :class:`~lightning_unlearn.backbones.AdaptedBackbone`). It is known as ``module.QualName``
    and ``module:QualName`` (and ``name``, if given). Checkpoints record that name; only built-in and registered
    architectures are rebuilt from one. From the command line, name it (``--arch pkg.mod.MyNet``) or list it in
    ``$LIGHTNING_UNLEARN_BACKBONES`` (``pkg.mod.MyNet,pkg.mod:factory``).
    """
    if not _is_architecture(arch):
        raise TypeError(
            f"register_backbone takes a Backbone subclass, an nn.Module class or a function returning a network, got "
            f"{arch!r}."
        )
    for key in (f"{arch.__module__}.{arch.__qualname__}", f"{arch.__module__}:{arch.__qualname__}", name):
        if key:
            _REGISTERED[key] = arch
    return arch


def import_architecture(path: str) -> Any:
    """Import the architecture ``path`` names (``pkg.module.Class`` or ``pkg.module:factory``) and register it.

    For names the user typed (``--arch``), as ``--data`` imports a DataModule class: never call it with a name read
    from a file. A built-in or registered name is returned without importing anything.
    """
    found = _lookup(path)
    if found is not None:
        return found
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(
            f"--arch {path}: not a built-in backbone ({_known()}), torchvision:NAME / timm:NAME, nor an importable "
            "name (pkg.module.Class or pkg.module:factory)."
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(
            f"--arch {path}: cannot import {module_name!r} ({err}); is your project on the PYTHONPATH?"
        ) from None
    for part in attr.split("."):
        obj = getattr(obj, part, None)
    if not _is_architecture(obj):
        what = "nothing" if obj is None else f"a {type(obj).__name__}"
        raise ValueError(
            f"--arch {path}: {module_name} has {what} there, not a Backbone subclass, an nn.Module class or a function "
            "returning a network."
        )
    register_backbone(obj, name=path)
    return obj


def _is_architecture(obj: Any) -> bool:
    if isinstance(obj, type):
        return issubclass(obj, nn.Module)
    return inspect.isfunction(obj) or inspect.ismethod(obj)


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
    arch = _resolve_backbone_class(class_path)
    if untrusted:
        _check_no_file_named(init_args, f"backbone {class_path}")
    if not (isinstance(arch, type) and issubclass(arch, Backbone)):
        return _adapt(arch, class_path, init_args)
    if untrusted and issubclass(arch, AdaptedBackbone):
        check_untrusted_model_kwargs(init_args, f"backbone {class_path}")
    try:
        inspect.signature(arch).bind(**init_args)
    except TypeError as e:
        raise TypeError(f"init_args do not fit {class_path}{inspect.signature(arch)}: {e}.") from None
    return arch(**init_args)


def _adapt(arch: Any, class_path: str, init_args: dict[str, Any]) -> Backbone:
    """Build a plain network (class or factory) and wrap it: ``init_args`` holds the data arguments (passed to the
    network where its signature names them), ``head`` (the adapter's, unless the network takes one) and the network's
    own arguments. The backbone records ``class_path`` and ``init_args`` as its config."""
    config = {"class_path": class_path, "init_args": dict(init_args)}
    params = inspect.signature(arch).parameters
    data = {k: init_args.pop(k) for k in DATA_ARGS if k in init_args}
    head = init_args.pop("head", None) if "head" not in params else None
    net_args = dict(init_args)
    for key in ("num_classes", "in_channels", "image_size"):
        if key in params and key in data:
            net_args.setdefault(key, data[key])
    try:
        inspect.signature(arch).bind(**net_args)
    except TypeError as e:
        raise TypeError(
            f"{class_path}{inspect.signature(arch)} cannot be called with {net_args}: {e}; give its arguments with "
            "--arch_args '{...}' (Python: init_args)."
        ) from None
    net = arch(**net_args)
    if isinstance(net, Backbone):
        backbone = net
    elif isinstance(net, nn.Module):
        backbone = AdaptedBackbone(
            net, data.get("num_classes"), data.get("in_channels"), int(data.get("image_size") or 32),
            data.get("mean"), data.get("std"), head=head, copy_net=False,
        )
    else:
        raise TypeError(f"{class_path} returned a {type(net).__name__}, not a network (an nn.Module).")
    for key in ("mean", "std"):
        if config["init_args"].get(key) is not None:
            config["init_args"][key] = [float(v) for v in config["init_args"][key]]
    backbone._config = config
    return backbone


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


def _env_registered() -> dict[str, Any]:
    """Architectures named in ``$LIGHTNING_UNLEARN_BACKBONES`` (the user's environment, not a file, names them)."""
    out: dict[str, Any] = {}
    for path in filter(None, (p.strip() for p in os.environ.get(BACKBONES_ENV, "").split(","))):
        try:
            arch = import_architecture(path)
        except ValueError as e:
            raise ValueError(f"${BACKBONES_ENV} names '{path}': {e}") from None
        out[path] = arch
        out[f"{arch.__module__}.{arch.__qualname__}"] = arch
    return out


def _lookup(class_path: str) -> Any:
    """The built-in or registered architecture ``class_path`` names, or ``None`` (nothing imported)."""
    builtin = _builtin_classes()
    return builtin.get(class_path.lower()) or builtin.get(class_path) or _REGISTERED.get(class_path)


def _known() -> str:
    builtin = _builtin_classes()
    return ", ".join(
        c.__name__ for c in (builtin[n] for n in ("resnet18", "allcnn", "vit", "torchvisionbackbone", "timmbackbone"))
    )


def _resolve_backbone_class(class_path: str) -> Any:
    """The architecture ``class_path`` names in the registry (built-in, registered, ``$LIGHTNING_UNLEARN_BACKBONES``).

    Nothing is imported on behalf of ``class_path``: it may come from an untrusted checkpoint.
    """
    arch = _lookup(class_path)
    if arch is None and os.environ.get(BACKBONES_ENV):
        arch = _env_registered().get(class_path)
    if arch is None:
        raise ValueError(
            f"Unknown backbone '{class_path}': not a built-in backbone ({_known()}) nor a registered one, so it is "
            "refused (nothing was imported). For your own architecture call "
            f"lightning_unlearn.backbones.register_backbone(cls) or list it in ${BACKBONES_ENV}; from the command "
            f"line naming it yourself is enough: --arch {class_path}."
        )
    return arch

