"""All-CNN-C with batch normalisation.

Springenberg, Dosovitskiy, Brox & Riedmiller, "Striving for Simplicity: The All Convolutional Net", ICLR 2015
workshop, https://arxiv.org/abs/1412.6806 (model C, table 2): max-pooling is replaced by stride-2 convolutions and the
classifier by a 1x1 convolution followed by global average pooling.

Differences from the paper, all common in the machine-unlearning literature (Golatkar et al. 2020, "Eternal
Sunshine of the Spotless Net"; Chen et al. 2023, "Boundary Unlearning"):

* every convolution is followed by ``BatchNorm2d`` and ReLU (conv -> BN -> ReLU);
* stride-2 convolutions are padded, so any input of at least 4x4 works (the paper used valid padding at 32x32);
* the final ``1x1 conv -> num_classes`` + average pool is replaced by average pool -> ``nn.Linear(c2, num_classes)``
  so that the model exposes the shared ``features``/``head`` interface (a 1x1 conv followed by a global average is
  the same linear map, applied before instead of after the pooling);
* the paper's 20% input dropout is not used; ``dropout`` (the paper used 0.5) is applied after each stride-2 layer.

``width`` scales the channel counts (96/192 at ``width=1``). The Boundary Unlearning authors' code uses half width
(``width=0.5``, i.e. 48/96 channels).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import Backbone
from .weights import load_weights

__all__ = ["AllCNN", "allcnn"]


class ConvBnAct(nn.Sequential):
    """``Conv2d`` (no bias, 'same'-style padding) -> ``BatchNorm2d`` -> ``ReLU``."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=(kernel_size - 1) // 2, bias=False),
            nn.BatchNorm2d(out_chs),
            nn.ReLU(inplace=True),
        )


class AllCNN(Backbone):
    """All-CNN-C (Springenberg et al. 2015) with BatchNorm and a linear head; features are ``c2``-d.

    Layers (``c1 = round(96 * width)``, ``c2 = round(192 * width)``)::

        conv3x3(c1) conv3x3(c1) conv3x3/2(c1) [dropout]
        conv3x3(c2) conv3x3(c2) conv3x3/2(c2) [dropout]
        conv3x3(c2) conv1x1(c2) global-avg-pool -> features (c2) -> Linear(c2, num_classes)

    Two padded stride-2 convolutions need at least a 4x4 input (``min_image_size = 4``).

    Args:
        num_classes: Number of output classes of ``head``.
        in_channels: Image channels.
        image_size: Side of the (square) input images; only validated.
        width: Channel multiplier; 1.0 is the paper (96/192), 0.5 the Boundary Unlearning code (48/96).
        dropout: Dropout probability after each stride-2 convolution (0 disables it; the paper used 0.5).
        mean: Per-channel mean of the training data (normalisation is applied inside the model); ``None`` = 0.
        std: Per-channel standard deviation of the training data; ``None`` = 1.
        weights: Optional path to a local state dict / Lightning checkpoint loaded after construction.
    """

    min_image_size = 4

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        width: float = 1.0,
        dropout: float = 0.0,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        weights: str | None = None,
    ) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, image_size=image_size, mean=mean, std=std)
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        c1 = max(1, round(96 * width))
        c2 = max(1, round(192 * width))

        self.block1 = nn.Sequential(
            ConvBnAct(in_channels, c1, 3),
            ConvBnAct(c1, c1, 3),
            ConvBnAct(c1, c1, 3, stride=2),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
        )
        self.block2 = nn.Sequential(
            ConvBnAct(c1, c2, 3),
            ConvBnAct(c2, c2, 3),
            ConvBnAct(c2, c2, 3, stride=2),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
        )
        self.block3 = nn.Sequential(
            ConvBnAct(c2, c2, 3),
            ConvBnAct(c2, c2, 1),
        )
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = c2
        self.head = nn.Linear(c2, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

        self._record_config(
            num_classes=num_classes,
            in_channels=in_channels,
            image_size=image_size,
            width=width,
            dropout=dropout,
            mean=mean,
            std=std,
        )
        if weights is not None:
            load_weights(self, weights)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.block1(x)
        x = self.block2(x)
        x = self.block3(x)
        return torch.flatten(self.global_pool(x), 1)


def allcnn(**kwargs: Any) -> AllCNN:
    """Build an :class:`AllCNN`; keyword arguments as for the class."""
    return AllCNN(**kwargs)
