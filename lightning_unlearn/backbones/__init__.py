"""Image-classifier backbones with a shared interface (see :class:`Backbone`).

Every backbone takes [0, 1] images, normalises them internally, exposes ``features(x)`` (penultimate vector), an
``nn.Linear`` ``head`` and a ``config()`` that :func:`build_backbone` turns back into the same architecture.
"""

from .adapters import AdaptedBackbone, NoClassifierHeadError, TimmBackbone, TorchvisionBackbone
from .allcnn import AllCNN, allcnn
from .base import Backbone
from .io import build_backbone, register_backbone
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
    "ResNet18",
    "ViT",
    "allcnn",
    "build_backbone",
    "load_weights",
    "register_backbone",
    "resnet18",
    "vit",
]
