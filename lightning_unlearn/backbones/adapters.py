"""Adapters that give a torchvision or timm classifier (or any network with a linear classifier) the backbone interface.

The network's own classifier (torchvision ``resnet18.fc``, timm's ``get_classifier()``, or the attribute named by
``head``) becomes ``self.head``; it is replaced by ``nn.Identity`` inside the network, so ``features(x)`` is the
network's output without it (the penultimate vector) and ``forward(x) == head(features(x))``. Architectures are built
by name from torchvision's and timm's own registries (``torchvision.models.get_model``, ``timm.create_model``), always
without pretrained weights (nothing is downloaded): the weights come from the user's file.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .base import Backbone

#: ``model_kwargs`` keys that make timm or torchvision read a local file or download weights; a config read from a
#: checkpoint (untrusted) may not name them (:func:`check_untrusted_model_kwargs`), the user's own config may.
LOADING_KWARGS = (
    "checkpoint_path",
    "pretrained",
    "pretrained_cfg",
    "pretrained_cfg_overlay",
    "pretrained_strict",
    "cache_dir",
    "weights",
    "weights_backbone",
    "progress",
)


def check_untrusted_model_kwargs(init_args: Mapping[str, Any], what: str = "the backbone config") -> None:
    """Refuse (``ValueError``, one line naming the key) ``model_kwargs`` of an untrusted config (one a checkpoint
    recorded) that would load a file or download: :data:`LOADING_KWARGS`. Called before the network is built."""
    kwargs = init_args.get("model_kwargs")
    if kwargs is None:
        return
    if not isinstance(kwargs, Mapping):
        raise ValueError(f"{what}: model_kwargs must be a dict, got {type(kwargs).__name__}.")
    bad = [k for k in kwargs if str(k) in LOADING_KWARGS]
    if bad:
        raise ValueError(
            f"{what} gives model_kwargs[{bad[0]!r}], which would make timm/torchvision load a file or download "
            "weights; a checkpoint's recorded config may not, so it is refused (nothing was built). Rebuild the "
            "backbone in your own code (its weights are in the checkpoint: lightning_unlearn.backbones.load_weights)."
        )


#: Attribute names tried, in order, when neither ``head`` nor ``get_classifier()`` says where the classifier is.
HEAD_NAMES = ("fc", "head", "classifier", "last_linear")


class NoClassifierHeadError(ValueError):
    """The wrapped network has no single ``nn.Linear`` classifier to become the backbone's ``head``."""


def find_head(net: nn.Module, head: str | None = None) -> str:
    """The dotted name of ``net``'s classifier: ``head`` if given, else timm's ``get_classifier()``, else the first of
    :data:`HEAD_NAMES`, else the last layer of an ``nn.Sequential`` network; it must be an ``nn.Linear`` (or a
    ``Sequential`` ending in one, e.g. torchvision's VGG)."""
    modules = dict(net.named_modules())
    if head is None and callable(getattr(net, "get_classifier", None)):
        classifier = net.get_classifier()
        head = next((name for name, m in modules.items() if m is classifier and name), None)
    if head is None:
        head = next((name for name in HEAD_NAMES if name in modules), None)
    if head is None and isinstance(net, nn.Sequential) and len(net) and isinstance(net[-1], nn.Linear):
        head = str(len(net) - 1)  # a plain nn.Sequential classifier: its last layer
    if head is None or head not in modules:
        linears = [name for name, m in modules.items() if isinstance(m, nn.Linear)]
        raise NoClassifierHeadError(
            f"{type(net).__name__} has no classifier head "
            + (f"named {head!r}" if head else f"(none of {', '.join(HEAD_NAMES)}, no get_classifier())")
            + (f"; its nn.Linear layers are: {', '.join(linears[-3:])}. Pass `head=NAME`" if linears else
               "; it has no nn.Linear layer at all. Pass a classifier network (one ending in nn.Linear)")
            + " (CLI: --arch_args '{\"head\": \"NAME\"}')."
        )
    module = modules[head]
    if isinstance(module, nn.Sequential) and len(module) and isinstance(module[-1], nn.Linear):
        head = f"{head}.{len(module) - 1}" if head else str(len(module) - 1)
        module = module[-1]
    if not isinstance(module, nn.Linear):
        raise NoClassifierHeadError(
            f"The classifier {head!r} of {type(net).__name__} is a {type(module).__name__}, not an nn.Linear, so it "
            "cannot be the backbone's head; pass `head=` the name of its final nn.Linear layer."
        )
    return head


class AdaptedBackbone(Backbone):
    """Any classifier network with a final ``nn.Linear`` as a :class:`Backbone` (see the module docstring).

    The network you pass is never changed: the backbone holds a deep copy (``copy_net=False`` takes the network
    itself, whose classifier is then replaced inside it), so your ``LightningModule`` keeps its trained weights and its
    ``forward``. The unlearned weights come back in your network's own keys with :meth:`to_native_state_dict`.

    ``config()`` names the network's class (``module.QualName``) with the data arguments, so a checkpoint of it is
    rebuilt by calling that class (``num_classes``, ``in_channels``, ``image_size`` passed where its constructor takes
    them); a class that needs other arguments is best named by a factory: ``--arch pkg.module:factory``
    (:func:`~lightning_unlearn.backbones.build_backbone`). A checkpoint's class is rebuilt only once registered
    (``register_backbone``, ``$LIGHTNING_UNLEARN_BACKBONES``) or named by you with ``--arch``.

    Args:
        net: the network, taking normalised input of ``in_channels`` channels (a 3-channel network given 1-channel
            data gets the channel repeated).
        num_classes: its classes (default: its classifier's outputs).
        in_channels: channels of the data (default: its first convolution's input channels).
        image_size: side of the square images it takes.
        mean, std: the normalisation it was trained with (applied inside; the data stays in [0, 1]).
        head: dotted name of its classifier; default: ``get_classifier()`` (timm), then ``fc``, ``head``, ``classifier``.
        copy_net: hold a copy of ``net`` (default) rather than ``net`` itself.
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int | None = None,
        in_channels: int | None = None,
        image_size: int = 32,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        head: str | None = None,
        copy_net: bool = True,
    ) -> None:
        head_name = find_head(net, head)
        first_conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
        net_channels = first_conv.in_channels if first_conv is not None else None
        in_channels = int(in_channels if in_channels is not None else net_channels or 3)
        linear = net.get_submodule(head_name)
        assert isinstance(linear, nn.Linear)  # find_head checked it
        num_classes = int(num_classes if num_classes is not None else linear.out_features)
        super().__init__(num_classes, in_channels, image_size, mean, std)
        if linear.out_features != num_classes:
            raise ValueError(
                f"The classifier {head_name!r} of {type(net).__name__} has {linear.out_features} outputs but "
                f"num_classes={num_classes}; build the network with num_classes={num_classes}."
            )
        self.net_channels = net_channels if net_channels is not None else in_channels
        if self.net_channels != in_channels and in_channels != 1:
            raise ValueError(
                f"{type(net).__name__} takes {self.net_channels}-channel input but the data has {in_channels} channels."
            )
        if copy_net:
            net = copy.deepcopy(net)
        self.head_name = head_name
        self.head_given = head
        parent_name, _, leaf = head_name.rpartition(".")
        parent = net.get_submodule(parent_name) if parent_name else net
        self.head = net.get_submodule(head_name)  # type: ignore[assignment]
        if leaf.isdigit():
            parent[int(leaf)] = nn.Identity()  # type: ignore[index]
        else:
            setattr(parent, leaf, nn.Identity())
        self.net = net

    def forward_features(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1 and self.net_channels != 1:
            x = x.expand(-1, self.net_channels, -1, -1)
        return torch.flatten(self.net(x), 1)

    @property
    def config_is_exact(self) -> bool:
        """Whether :meth:`config` rebuilds exactly this network (not for a network passed in as an object, whose own
        constructor arguments are unknown)."""
        return bool(self._config)

    def config(self) -> dict[str, Any]:
        """The recorded config (named architectures), else the network's class with the data arguments."""
        if self._config:
            return super().config()
        cls = type(self.net)
        init_args: dict[str, Any] = {
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "mean": [float(v) for v in self.mean.flatten()],
            "std": [float(v) for v in self.std.flatten()],
        }
        if self.head_given is not None:
            init_args["head"] = self.head_given
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": init_args}

    def native_key_map(self) -> dict[str, str]:
        """``{key in the network's own state_dict: key in this backbone's}``: ``fc.weight -> head.weight``, ...."""
        own = self.state_dict()
        mapping = {}
        for key in own:
            if key.startswith("head."):
                mapping[f"{self.head_name}.{key[5:]}"] = key
            elif key.startswith("net."):
                mapping[key[4:]] = key
        return mapping

    def from_native(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """A state dict of the bare network (``model.state_dict()`` of the torchvision/timm model) in this backbone's
        keys; the normalisation buffers are kept from this backbone (a network's file has none)."""
        mapping = self.native_key_map()
        out = {mapping.get(k, k): v for k, v in state.items()}
        for key in ("mean", "std"):
            out.setdefault(key, getattr(self, key).clone())
        return out

    def to_native_state_dict(self, prefix: str = "") -> dict[str, Tensor]:
        """This backbone's weights in the network's own keys (``fc.weight``, ...), each under ``prefix``: what
        ``net.load_state_dict`` takes (``prefix="net."``: what the ``LightningModule`` holding it as ``self.net``
        takes). The normalisation buffers are left out (the network has none)."""
        own = self.state_dict()
        return {prefix + native: own[key].detach().clone() for native, key in self.native_key_map().items()}


class TorchvisionBackbone(AdaptedBackbone):
    """A torchvision classification model by name (``resnet18``, ``mobilenet_v3_small``, ...), built with
    ``weights=None``; its classifier (``fc``, ``classifier``, ``head``) becomes ``head``."""

    def __init__(
        self,
        arch: str,
        num_classes: int,
        in_channels: int = 3,
        image_size: int = 32,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        head: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        import torchvision

        known = torchvision.models.list_models(module=torchvision.models)
        if arch not in known:
            raise ValueError(
                f"torchvision has no classification model {arch!r}; choose one of {', '.join(known[:8])}, ..."
            )
        net = torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **(model_kwargs or {}))
        super().__init__(net, num_classes, in_channels, image_size, mean, std, head, copy_net=False)
        self._record_config(
            arch=arch, num_classes=num_classes, in_channels=in_channels, image_size=image_size, mean=mean, std=std,
            head=head, model_kwargs=model_kwargs,
        )


class TimmBackbone(AdaptedBackbone):
    """A timm model by name (``resnet10t``, ``vit_tiny_patch16_224``, ...), built with ``pretrained=False`` and
    ``in_chans``; its ``get_classifier()`` becomes ``head``."""

    def __init__(
        self,
        arch: str,
        num_classes: int,
        in_channels: int = 3,
        image_size: int = 32,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        head: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        import timm

        if not timm.list_models(arch):
            raise ValueError(f"timm has no model {arch!r} (timm.list_models('{arch}') is empty).")
        kwargs = {"num_classes": num_classes, "in_chans": in_channels, **(model_kwargs or {})}
        net = timm.create_model(arch, pretrained=False, **kwargs)
        super().__init__(net, num_classes, in_channels, image_size, mean, std, head, copy_net=False)
        self._record_config(
            arch=arch, num_classes=num_classes, in_channels=in_channels, image_size=image_size, mean=mean, std=std,
            head=head, model_kwargs=model_kwargs,
        )
