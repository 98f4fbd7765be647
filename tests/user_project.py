"""A user's own Lightning project, written as such a user writes it (issue 25), knowing nothing of lightning_unlearn.

A torchvision-style ``Dataset`` returning ``(image, label)`` with the normalisation in its transform, an own
``LightningDataModule`` with its own validation split, a ``LightningModule`` holding its network as ``self.net`` (a
small CNN, or a torchvision ResNet-18 with a grey 3x3 stem) whose steps unpack ``x, y = batch``. The data are
scikit-learn's digits at 16 px (the tests' usual data set).
"""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms import v2

MEAN, STD = (0.3053,), (0.3189,)  # of the digits images in [0, 1]
IMAGE_SIZE = 16


class DigitsImages(Dataset):
    """Digits as a torchvision dataset: ``(image, label)`` items (``image`` a uint8 (1, 8, 8) tensor before the
    transform), a ``targets`` list; 80/20 train/test split by a fixed permutation."""

    def __init__(self, train: bool = True, transform=None) -> None:  # noqa: ANN001 - as torchvision's
        from sklearn.datasets import load_digits

        digits = load_digits()
        order = np.random.default_rng(0).permutation(len(digits.target))
        cut = int(0.8 * len(order))
        keep = order[:cut] if train else order[cut:]
        self.images = torch.from_numpy(np.round(digits.images[keep] * (255 / 16)).astype(np.uint8))[:, None]
        self.targets = [int(t) for t in digits.target[keep]]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):  # noqa: ANN204
        x = self.images[i]
        return (self.transform(x) if self.transform is not None else x), self.targets[i]


def transform(size: int = IMAGE_SIZE) -> v2.Compose:
    """The user's transform: resize, to float, normalise."""
    return v2.Compose([v2.Resize(size, antialias=True), v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])


class DigitsData(pl.LightningDataModule):
    """The user's DataModule: a random 10% validation split of the training set (``val_indices``)."""

    def __init__(self, batch_size: int = 64, val_fraction: float = 0.1, seed: int = 0) -> None:
        super().__init__()
        self.batch_size, self.val_fraction, self.seed = batch_size, val_fraction, seed
        full = DigitsImages(train=True)
        perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(seed)).tolist()
        n_val = int(val_fraction * len(full))
        self.val_indices, self.train_indices = sorted(perm[:n_val]), sorted(perm[n_val:])

    def setup(self, stage: str | None = None) -> None:
        full = DigitsImages(train=True, transform=transform())
        self.train_set, self.val_set = Subset(full, self.train_indices), Subset(full, self.val_indices)
        self.test_set = DigitsImages(train=False, transform=transform())

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=256)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=256)


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        )
        self.fc = nn.Linear(2 * width * 16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


def grey_resnet18(num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet-18 with a grey 3x3 stem (no max-pool), as small-image projects build it."""
    net = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    net.conv1 = nn.Conv2d(1, 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


class LitClassifier(pl.LightningModule):
    def __init__(self, arch: str = "small", lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = SmallCNN() if arch == "small" else grey_resnet18()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y).float().mean())

    def test_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        x, y = batch
        self.log("test_acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):  # noqa: ANN201
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)


# -- what the user adds to unlearn from the command line: the recipe of docs/data.md over the same dataset -------------
from lightning_unlearn.data import IndexedDataset, UnlearningDataModule  # noqa: E402


class DigitsForUnlearning(UnlearningDataModule):
    """The user's dataset as an unlearning DataModule: the images as they are (no transform), mean/std declared."""

    name = "user_digits"
    num_classes = 10
    in_channels = 1
    mean = MEAN
    std = STD

    def load_datasets(self):  # noqa: ANN201
        return (
            IndexedDataset(DigitsImages(train=True), self.image_size, self.in_channels),
            IndexedDataset(DigitsImages(train=False), self.image_size, self.in_channels),
        )
