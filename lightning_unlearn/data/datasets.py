"""Dataset containers. Every item is ``(image, label, index)``: a float image in [0, 1] of shape ``(C, H, W)``, an int
label and the sample's index in its parent dataset (so methods and callbacks can tell which samples a batch holds)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

Transform = Callable[[Tensor], Tensor]


class InMemoryImages(Dataset):
    """Images held as a uint8 tensor ``(N, C, H, W)`` with integer ``targets``."""

    def __init__(self, images: Tensor, targets: Sequence[int] | np.ndarray | Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be a uint8 tensor (N, C, H, W), got {images.dtype} {tuple(images.shape)}.")
        self.images = images
        self.targets = np.asarray(targets, dtype=np.int64)
        if len(self.targets) != len(images):
            raise ValueError(f"{len(images)} images but {len(self.targets)} targets.")

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int, int]:
        return self.images[index].float().div_(255.0), int(self.targets[index]), int(index)


class FileImages(Dataset):
    """Images read from files on access (e.g. an image folder), converted to ``channels`` and resized."""

    def __init__(self, paths: Sequence[str], targets: Sequence[int], image_size: int, channels: int = 3) -> None:
        from torchvision.transforms import v2

        self.paths = list(paths)
        self.targets = np.asarray(targets, dtype=np.int64)
        self.channels = channels
        self.transform = v2.Compose(
            [
                v2.ToImage(),
                v2.Resize((image_size, image_size), antialias=True),
                v2.ToDtype(torch.float32, scale=True),
            ]
        )

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int, int]:
        from PIL import Image

        with Image.open(self.paths[index]) as img:
            img = img.convert("L" if self.channels == 1 else "RGB")
            x = self.transform(img)
        return x, int(self.targets[index]), int(index)


class SplitView(Dataset):
    """A subset of ``base`` (by ``indices``), optionally transformed, optionally relabelled.

    ``labels`` (same length as ``indices``) replaces the labels, e.g. Boundary Shrink's neighbour labels or random labels;
    the returned index stays the index in ``base``. ``batch_augment`` is the batched equivalent of ``transform``
    (``data.tensor_loader.BatchAugment``), which lets the in-memory path serve the view.
    """

    def __init__(
        self,
        base: Dataset,
        indices: Sequence[int] | np.ndarray,
        transform: Transform | None = None,
        labels: Sequence[int] | np.ndarray | Tensor | None = None,
        batch_augment: Any = None,
    ) -> None:
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.transform = transform
        self.batch_augment = batch_augment if transform is not None else None
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        if self.labels is not None and len(self.labels) != len(self.indices):
            raise ValueError(f"{len(self.labels)} labels for {len(self.indices)} samples.")

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def targets(self) -> np.ndarray:
        if self.labels is not None:
            return self.labels
        return np.asarray(getattr(self.base, "targets"))[self.indices]

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        x, y, idx = self.base[int(self.indices[i])]
        if self.transform is not None:
            x = self.transform(x)
        if self.labels is not None:
            y = int(self.labels[i])
        return x, y, idx

    def with_labels(self, labels: Sequence[int] | np.ndarray | Tensor) -> SplitView:
        return SplitView(self.base, self.indices, self.transform, labels, self.batch_augment)

    def with_transform(self, transform: Transform | None) -> SplitView:
        return SplitView(self.base, self.indices, transform, self.labels)

    def subset(self, positions: Sequence[int] | np.ndarray) -> SplitView:
        """The samples at ``positions`` of this view (same parent, transform and labels)."""
        positions = np.asarray(positions, dtype=np.int64)
        labels = None if self.labels is None else self.labels[positions]
        return SplitView(self.base, self.indices[positions], self.transform, labels, self.batch_augment)


def unpack_batch(batch: Any) -> tuple[Tensor, Tensor]:
    """``(x, y)`` from a batch of ``(x, y)`` or ``(x, y, index)`` (so modules also accept plain user loaders)."""
    if isinstance(batch, dict):
        return batch["image"], batch["label"]
    return batch[0], batch[1]


def batch_indices(batch: Any) -> Tensor | None:
    """The sample indices of a batch, or None if the loader does not provide them."""
    if isinstance(batch, dict):
        return batch.get("index")
    return batch[2] if len(batch) > 2 else None


def resize_uint8(images: Tensor, size: int) -> Tensor:
    """Resize a uint8 ``(N, C, H, W)`` tensor with antialiasing (once, at load time)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    import torch.nn.functional as F

    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)
