"""Image-classifier backbones with a shared interface (see :class:`Backbone`).

Every backbone takes [0, 1] images, normalises them internally, exposes ``features(x)`` (penultimate vector), an
``nn.Linear`` ``head`` and a ``config()`` that :func:`build_backbone` turns back into the same architecture. What a
method needs of a network is the :class:`Network` protocol (:func:`check_network`); any classifier network gets it
from :class:`AdaptedBackbone`.
"""

from .adapters import AdaptedBackbone, NoClassifierHeadError, TimmBackbone, TorchvisionBackbone
from .allcnn import AllCNN, allcnn
from .base import Backbone
from .io import build_backbone, import_architecture, register_backbone
from .protocol import Network, NetworkProtocolError, check_network, fresh_network
from .resnet18 import ResNet18, resnet18
from .vit import ViT, vit
from .weights import load_weights

__all__ = [
    "AdaptedBackbone",
    "AllCNN",
    "NoClassifierHeadError",
    "TimmBackbone",
    "TorchvisionBackbone",
    "Backbone",
    "Network",
    "NetworkProtocolError",
    "ResNet18",
    "ViT",
    "allcnn",
    "build_backbone",
    "check_network",
    "fresh_network",
    "import_architecture",
    "load_weights",
    "register_backbone",
    "resnet18",
    "vit",
]
