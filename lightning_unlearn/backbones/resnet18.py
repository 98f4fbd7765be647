"""ResNet-18 with the CIFAR stem.

The trunk is torchvision's ``resnet18`` (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016,
https://arxiv.org/abs/1512.03385) adapted to small images as is usual for CIFAR-10/100: the 7x7 stride-2 ``conv1`` is
replaced by a 3x3 stride-1 convolution and the stem max-pool is removed, so a 32x32 input reaches ``layer4`` at 4x4.
The torchvision ``fc`` is dropped; ``features`` is the flattened global-average-pool output (512-d) and ``head`` is
``nn.Linear(512, num_classes)``.

The module layout (``conv1``, ``bn1``, ``layer1`` .. ``layer4``) follows torchvision, so a torchvision CIFAR-stem
state dict maps over by renaming ``fc.*`` to ``head.*`` (plus the ``mean``/``std`` buffers).
"""

from __future__ import annotations

from typing import Any

import torch
import torchvision
from torch import Tensor, nn

from .base import Backbone
from .weights import load_weights

__all__ = ["ResNet18", "resnet18"]


class ResNet18(Backbone):
    """ResNet-18 (He et al. 2016) with a CIFAR stem: 3x3 stride-1 ``conv1``, no max-pool, 512-d features.

    Three stride-2 stages take an ``s x s`` input to ``s/8 x s/8`` before pooling, hence ``min_image_size = 8``.

    Args:
        num_classes: Number of output classes of ``head``.
        in_channels: Image channels (1 for MNIST-like data, 3 for RGB).
        image_size: Side of the (square) input images; only validated, the network is size agnostic above 8.
        mean: Per-channel mean of the training data (normalisation is applied inside the model); ``None`` = 0.
        std: Per-channel standard deviation of the training data; ``None`` = 1.
        weights: Optional path to a local state dict / Lightning checkpoint loaded after construction.
    """

    min_image_size = 8

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        weights: str | None = None,
    ) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, image_size=image_size, mean=mean, std=std)
        net = torchvision.models.resnet18(weights=None)

        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision does
        self.bn1 = net.bn1
        self.relu = net.relu
        self.maxpool = nn.Identity()
        self.layer1 = net.layer1
        self.layer2 = net.layer2
        self.layer3 = net.layer3
        self.layer4 = net.layer4
        self.avgpool = net.avgpool
        self.num_features = net.fc.in_features  # 512
        self.head = nn.Linear(self.num_features, num_classes)

        self._record_config(
            num_classes=num_classes,
            in_channels=in_channels,
            image_size=image_size,
            mean=mean,
            std=std,
        )
        if weights is not None:
            load_weights(self, weights)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.maxpool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        return torch.flatten(self.avgpool(x), 1)


def resnet18(**kwargs: Any) -> ResNet18:
    """Build a :class:`ResNet18` (CIFAR stem); keyword arguments as for the class."""
    return ResNet18(**kwargs)
