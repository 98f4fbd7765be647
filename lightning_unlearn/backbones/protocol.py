"""What an unlearning method needs from a network: one protocol, checked in one place.

A network a method can unlearn from is an ``nn.Module`` that

* takes images in [0, 1] of shape ``(N, in_channels, image_size, image_size)`` and normalises them itself,
* has ``features(x)``, the penultimate vector ``(N, D)``, and an ``nn.Linear`` ``head`` with
  ``forward(x) == head(features(x))`` (the class count is ``head.out_features``),
* states its input: integer attributes ``in_channels`` and ``image_size``.

Every :class:`~lightning_unlearn.backbones.Backbone` does; any other network becomes one with
:class:`~lightning_unlearn.backbones.AdaptedBackbone` (or a wrapper of your own with these members).
:func:`check_network` refuses anything else in one line naming what is missing. Methods use nothing else of a network:
a fresh copy of its architecture comes from :func:`fresh_network`, its class count from :func:`num_classes`.
"""

from __future__ import annotations

import copy
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

__all__ = [
    "Network",
    "NetworkProtocolError",
    "check_batch",
    "check_input",
    "check_network",
    "fresh_network",
    "num_classes",
    "protocol_problems",
]


@runtime_checkable
class Network(Protocol):
    """The members a method uses (see the module docstring). ``isinstance(net, Network)`` checks that they exist;
    :func:`check_network` also checks their types."""

    head: nn.Linear
    in_channels: int
    image_size: int

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features of [0, 1] input, shape ``(N, head.in_features)``."""
        ...

    def __call__(self, x: Tensor) -> Tensor:
        """Logits ``head(features(x))``."""
        ...


class NetworkProtocolError(TypeError):
    """A network lacks a member of the :class:`Network` protocol."""


def protocol_problems(net: Any) -> list[str]:
    """What ``net`` lacks of the :class:`Network` protocol, one phrase each (empty: it follows it)."""
    if not isinstance(net, nn.Module):
        return [f"it is a {type(net).__name__}, not an nn.Module"]
    problems = []
    if not callable(getattr(net, "features", None)):
        problems.append("no `features(x)` (the penultimate vector)")
    head = getattr(net, "head", None)
    if head is None:
        problems.append("no `head` (its final nn.Linear)")
    elif not isinstance(head, nn.Linear):
        problems.append(f"its `head` is a {type(head).__name__}, not an nn.Linear")
    missing = [
        key for key in ("in_channels", "image_size")
        if not isinstance(getattr(net, key, None), int) or isinstance(getattr(net, key), bool) or getattr(net, key) < 1
    ]
    if missing:
        problems.append(
            f"no integer {' / '.join(f'`{k}`' for k in missing)} (the input description: images in [0, 1] of shape "
            "(in_channels, image_size, image_size))"
        )
    return problems


def check_network(net: Any, what: str | None = None) -> Network:
    """Return ``net`` if it follows the :class:`Network` protocol, else raise :class:`NetworkProtocolError` (one line
    naming every missing member and how to adapt the network)."""
    problems = protocol_problems(net)
    if problems:
        raise NetworkProtocolError(
            f"{what or type(net).__name__} cannot be unlearned from: {'; '.join(problems)}. A network needs "
            "`features(x)`, an nn.Linear `head`, `in_channels` and `image_size` (lightning_unlearn.backbones.Network); "
            "wrap yours: AdaptedBackbone(net, num_classes=..., in_channels=..., image_size=..., mean=..., std=...)."
        )
    return net  # type: ignore[no-any-return]


def num_classes(net: Network) -> int:
    """The number of classes of a network: its head's outputs."""
    return int(net.head.out_features)


def fresh_network(net: Network, seed: int) -> nn.Module:
    """A newly initialised network of ``net``'s architecture, drawn under ``torch.manual_seed(seed)`` (the global RNG
    is left as it was).

    A backbone that records a rebuildable ``config()`` is rebuilt from it (the same draws as constructing it anew:
    its own class, or the registered architecture it names); any other network is deep-copied and every submodule with
    ``reset_parameters()`` re-initialised. Either way it is trainable and in training mode, as a new construction is.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        config = _exact_config(net)
        if config is not None:
            cls = type(net)
            if config["class_path"] == f"{cls.__module__}.{cls.__qualname__}":
                return cls(**config["init_args"])  # the object's own class: nothing to look up
            from .io import build_backbone

            return build_backbone(config)
        fresh = copy.deepcopy(net)
        for module in fresh.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
        return fresh.requires_grad_(True).train()  # as constructed, not as frozen or in eval mode as ``net`` may be


def _exact_config(net: Any) -> dict[str, Any] | None:
    """``net.config()`` when it rebuilds exactly this architecture, else ``None``."""
    if not getattr(net, "config_is_exact", True):
        return None
    get = getattr(net, "config", None)
    if not callable(get) or not getattr(net, "_config", None):
        return None
    return get()  # type: ignore[no-any-return]


def check_input(net: Network, datamodule: Any, what: str | None = None) -> None:
    """Refuse (``ValueError``, one line) a DataModule whose images do not have the shape ``net`` takes.

    A fully convolutional network runs on any image size, so without this a 16-px model is silently evaluated on
    32-px images (an ``UnlearningDataModule`` subclass that does not set ``image_size`` serves 32 px).
    """
    name = what or type(net).__name__
    dm_name = type(datamodule).__name__
    for key in ("image_size", "in_channels"):
        want, given = getattr(net, key, None), getattr(datamodule, key, None)
        if want is not None and given is not None and int(given) and int(want) != int(given):
            default = " (the UnlearningDataModule default)" if key == "image_size" and int(given) == 32 else ""
            raise ValueError(
                f"{name} takes {key}={want} but the DataModule ({dm_name}) serves {key}={given}{default}: pass "
                f"{key}={want} to the DataModule, or use the model trained on this input."
            )


def check_batch(net: Network, x: Tensor, source: str) -> None:
    """Refuse images that are not what ``net`` takes: another shape, or values outside [0, 1] (normalised twice).

    ``x`` is a batch from ``source`` (named in the message). One host read of its extremes."""
    want = (int(net.in_channels), int(net.image_size), int(net.image_size))
    if tuple(x.shape[1:]) != want:
        raise ValueError(
            f"{source} serves images of shape {tuple(x.shape[1:])} but the network takes {want} (in_channels, "
            "image_size, image_size): set the DataModule's image_size/in_channels to the network's."
        )
    lo, hi = (float(v) for v in torch.stack([x.min(), x.max()]).float().cpu())
    tol = 1e-3
    if lo < -tol or hi > 1 + tol:
        raise ValueError(
            f"{source} serves images with values in [{lo:.2f}, {hi:.2f}], not [0, 1]: the network normalises its "
            "input itself (its mean/std), so data normalised by the dataset's transform is normalised twice. Remove "
            "Normalize from the dataset's transform and give the DataModule the mean/std instead."
        )

