"""A toy with a known answer for SSD-style importances: class k lights only its own block of pixels, so the head's
weights on block k get gradient from class k's samples alone ("class-specific" weights), whatever the loss.

With D_f = one class of 128 samples (2 batches of 64) and D_r = 9 classes of 128 (18 batches), the reference order
(D_r's batches, then D_f's) gives every class-specific weight I_Df / I_D = (18 + 2) / 2 = 10 exactly; D in index
order (classes cycling) puts ~6 D_f samples in each of D's batches, which shrinks their batch gradient ~10x and the
squared one ~100x, so the ratio is ~100.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from lightning_unlearn.backbones.base import Backbone
from lightning_unlearn.data import ForgetSpec, InMemoryImages, UnlearningDataModule

SIDE, PER_CLASS, CLASSES = 10, 128, 10  # 10x10 images: class k owns pixel row k


class BlockImages(UnlearningDataModule):
    """A user DataModule as users write one: ``load_datasets`` only. Sample i has class i % 10 (classes cycle)."""

    name = "blocks"
    num_classes = CLASSES
    in_channels = 1
    mean = (0.0,)
    std = (1.0,)

    def __init__(self, forget: ForgetSpec | None = None, permute_labels: int | None = None, **kwargs) -> None:
        kwargs.setdefault("holdout_fraction", 0.0)
        kwargs.setdefault("augment", False)
        super().__init__(forget=forget, image_size=SIDE, **kwargs)
        self.permute_labels = permute_labels

    def load_datasets(self) -> tuple[InMemoryImages, InMemoryImages]:
        def make(n: int, seed: int) -> InMemoryImages:
            g = torch.Generator().manual_seed(seed)
            y = torch.arange(n) % CLASSES
            x = torch.zeros(n, 1, SIDE, SIDE, dtype=torch.uint8)
            x[torch.arange(n), 0, y] = torch.randint(20, 120, (n, SIDE), generator=g, dtype=torch.uint8)
            targets = y.numpy()
            if self.permute_labels is not None:  # the same images under other labels (a label-free method ignores them)
                targets = np.random.default_rng(self.permute_labels).permutation(targets)
            return InMemoryImages(x, targets)

        return make(PER_CLASS * CLASSES, 0), make(10 * CLASSES, 1)


class Linear(Backbone):
    """features = the flattened image; head = one linear layer (a plain model, built by hand)."""

    def __init__(self) -> None:
        super().__init__(num_classes=CLASSES, in_channels=1, image_size=SIDE, mean=[0.0], std=[1.0])
        self.head = nn.Linear(SIDE * SIDE, CLASSES)
        self._record_config()
        with torch.no_grad():  # a model that classifies every sample: class k's score is the sum of row k
            self.head.weight.zero_()
            self.head.bias.zero_()
            for k in range(CLASSES):
                self.head.weight[k, k * SIDE : (k + 1) * SIDE] = 1.0

    def forward_features(self, x: Tensor) -> Tensor:
        return x.flatten(1)


def class_specific(forget_class: int) -> Tensor:
    """Mask of the head weights that only class ``forget_class``'s samples move."""
    mask = torch.zeros(CLASSES, SIDE * SIDE, dtype=torch.bool)
    mask[:, forget_class * SIDE : (forget_class + 1) * SIDE] = True
    return mask
