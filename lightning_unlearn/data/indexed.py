"""Any torchvision-style dataset (items ``(image, label)``, a ``targets`` attribute) as an unlearning dataset.

:class:`IndexedDataset` turns each item into ``(image in [0, 1] as (C, H, W) float, label, index)`` -- the item every
:class:`~lightning_unlearn.data.UnlearningDataModule` serves -- converting PIL images, uint8/float tensors and numpy
arrays, resizing to ``image_size`` and matching ``channels``. :class:`DatasetsDataModule` is the DataModule over a
training and a test dataset of yours; the recipe for a subclass of your own is in ``docs/data.md`` ("Bring your own
data").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from lightning_unlearn.data.base import UnlearningDataModule
from lightning_unlearn.data.datasets import InMemoryImages


class IndexedDataset(Dataset):
    """``dataset[i] = (image, label)`` -> ``(x, label, i)`` with ``x`` a ``(channels, image_size, image_size)`` float
    tensor in [0, 1]; ``targets`` is the dataset's own, as an int64 array (the splits are drawn from it).

    Args:
        dataset: a map-style dataset with a ``targets`` attribute (torchvision's MNIST, CIFAR10, ImageFolder, ...) and
            no tensor-producing ``transform`` of its own beyond ``ToTensor`` (normalisation lives in the backbone).
        image_size: side of the square images served.
        channels: channels served (1 -> 3 repeats a grey channel, 3 -> 1 averages).
    """

    def __init__(self, dataset: Any, image_size: int, channels: int) -> None:
        targets = getattr(dataset, "targets", None)
        if targets is None:
            raise TypeError(
                f"{type(dataset).__name__} has no `targets` attribute: the splits are drawn from the labels, so give it "
                "one (a list of int labels, one per item), as torchvision's datasets have."
            )
        self.dataset = dataset
        self.targets = np.asarray(targets, dtype=np.int64).reshape(-1)
        if len(self.targets) != len(dataset):
            raise ValueError(f"{type(dataset).__name__} has {len(dataset)} items but {len(self.targets)} targets.")
        self.image_size = int(image_size)
        self.channels = int(channels)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int, int]:
        image, label = self.dataset[index][:2]
        return to_unit_tensor(image, self.image_size, self.channels), int(label), int(index)


def to_unit_tensor(image: Any, size: int, channels: int) -> Tensor:
    """A PIL image, numpy array or tensor (HW, HWC or CHW; uint8 or float in [0, 1]) as a ``(channels, size, size)``
    float tensor in [0, 1]."""
    hwc = not torch.is_tensor(image) and not isinstance(image, np.ndarray)  # a PIL image is always HWC
    if not torch.is_tensor(image):
        image = torch.from_numpy(np.ascontiguousarray(np.asarray(image)))
    if image.ndim == 3 and (hwc or _is_hwc(tuple(image.shape))):
        image = image.permute(2, 0, 1)  # HWC -> CHW
    x = image.float().div(255.0) if image.dtype == torch.uint8 else image.float()
    if image.dtype != torch.uint8 and x.numel():
        lo, hi = float(x.min()), float(x.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(
                f"Image values in [{lo:.2f}, {hi:.2f}], not [0, 1] (float images must be in [0, 1], integer ones "
                "uint8): if the dataset's transform normalises them, give it without Normalize, since the network "
                "normalises its input itself (mean/std)."
            )
    if x.ndim == 2:
        x = x.unsqueeze(0)
    x = x[:3]
    if x.shape[0] != channels:
        x = x.mean(0, keepdim=True) if channels == 1 else x.expand(channels, -1, -1) if x.shape[0] == 1 else x
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x.unsqueeze(0), size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return x.clamp_(0.0, 1.0)


def _is_hwc(shape: tuple[int, ...]) -> bool:
    """Whether a 3-d array/tensor is HWC: channels (1, 3 or 4) last and not first; with both ends such a size, the
    square side decides ((3, 4, 4) is CHW, (4, 4, 3) HWC); else one readable error."""
    first, last = shape[0] in (1, 3, 4), shape[-1] in (1, 3, 4)
    if first and last and shape[0] != shape[-1]:
        if shape[1] == shape[2]:
            return False
        if shape[0] == shape[1]:
            return True
    if first and last:
        raise ValueError(
            f"Image of shape {shape} could be CHW or HWC; give (C, H, W) tensors (e.g. image.permute(2, 0, 1) of an "
            "HWC one) from a dataset with such small images."
        )
    return last


class DatasetsDataModule(UnlearningDataModule):
    """Your training and test datasets (items ``(image, label)``, a ``targets`` attribute) as an unlearning DataModule.

    The datasets must give the images as they are (PIL, uint8 or [0, 1] tensors): no ``Normalize`` in their
    transform, since the network normalises inside (with ``mean``/``std``), and no random augmentation. The holdout is
    your validation split when you give it (``holdout_indices``, positions in ``train``), so that the non-members are
    the samples your model never saw.

    Datasets whose images fit in ``in_memory_max_bytes`` (4 GiB) as uint8 are read once and held in memory
    (``InMemoryImages``: the fast batch path every built-in DataModule uses; images quantised to 1/255 as theirs);
    ``cache=False`` reads every item from your datasets each time.

    Args:
        train, test: the datasets.
        image_size: side of the square images the network takes (no default: it must be the network's).
        in_channels: channels the network takes (grey images are repeated for 3, RGB averaged for 1).
        num_classes: default: the largest label + 1.
        mean, std: the normalisation your network was trained with (recorded, and given to the adapted backbone).
        **kwargs: as for :class:`UnlearningDataModule` (``forget``, ``holdout_indices``, ``batch_size``, ...).
    """

    name = "datasets"

    def __init__(
        self,
        train: Dataset,
        test: Dataset,
        *,
        image_size: int,
        in_channels: int,
        num_classes: int | None = None,
        mean: Sequence[float] = (),
        std: Sequence[float] = (),
        cache: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(image_size=image_size, **kwargs)
        self.train_dataset, self.test_dataset = train, test
        self.cache = cache
        self.in_channels = int(in_channels)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        if num_classes is None:
            targets = [np.asarray(getattr(d, "targets", [0]), dtype=np.int64).reshape(-1) for d in (train, test)]
            num_classes = int(max(int(t.max()) if len(t) else 0 for t in targets)) + 1
        self.num_classes = int(num_classes)

    def load_datasets(self) -> tuple[Dataset, Dataset]:
        out = []
        for dataset in (self.train_dataset, self.test_dataset):
            indexed = IndexedDataset(dataset, self.image_size, self.in_channels)
            size = len(indexed) * self.in_channels * self.image_size**2
            out.append(in_memory(indexed) if self.cache and size <= self.in_memory_max_bytes else indexed)
        return out[0], out[1]


def in_memory(dataset: IndexedDataset) -> InMemoryImages:
    """Every image of ``dataset`` read once, as uint8 (``round(255 x)``), with its targets."""
    images = torch.empty((len(dataset), dataset.channels, dataset.image_size, dataset.image_size), dtype=torch.uint8)
    for i in range(len(dataset)):
        images[i] = dataset[i][0].mul(255.0).round_().to(torch.uint8)
    return InMemoryImages(images, dataset.targets)
