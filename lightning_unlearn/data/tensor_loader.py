"""The in-memory data path: a split held as tensors (on the training device when it fits), batches by index slicing,
augmentation per batch as tensor ops.

A per-sample ``DataLoader`` calls ``Dataset.__getitem__`` and a per-image transform for every sample and collates the
results; on small images that costs more than the model (docs/performance.md). :class:`TensorLoader` serves the same
batches (``[x, y, index]``, ``x`` float in [0, 1]) from a uint8 tensor of the whole parent set: one gather, one
conversion and one batched crop/flip per batch.

Same seeds, same batches: on the CPU it draws from the global torch generator at the points and in the order a
``DataLoader`` with ``RandomSampler``/``SequentialSampler`` and a per-sample ``RandomCrop``/``RandomHorizontalFlip``
does (the loader's base seed when an iterator starts, the sampler's seed at the first batch, then per sample the crop
offsets and the flip coin), so a CPU run gives bit-identical batches, hence the same weights. Wherever the images are
(the GPU when they fit in its free memory, else the CPU), every draw (order, crops, flips) is made on the CPU
generator and only the small index tensors move to the images' device: results never depend on what else is in
memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import BatchSampler, ConcatDataset, Dataset, RandomSampler, Sampler, SequentialSampler

from lightning_unlearn.data.datasets import InMemoryImages, SplitView

__all__ = ["BatchAugment", "TensorLoader", "as_tensor_split", "batch_augment_in_effect"]


@dataclass(frozen=True)
class BatchAugment:
    """Random crop of the zero-padded image (torchvision ``RandomCrop(size, padding=pad)``) and, with ``flip``, a
    horizontal flip with probability 1/2 (``RandomHorizontalFlip()``), on a whole batch ``(B, C, H, W)`` at once."""

    pad: int
    flip: bool = False

    def draws(self, n: int) -> tuple[Tensor | None, Tensor | None]:
        """Crop offsets ``(n, 2)`` (top, left) and flip flags ``(n,)``, drawn in the per-sample order from the global
        CPU generator wherever the images are, so that the draws (hence the weights) never depend on the placement."""
        span = 2 * self.pad + 1
        if not self.flip:  # one batched call gives what n pairs of scalar calls give (same generator stream)
            offsets = torch.randint(0, span, (2 * n,)).view(n, 2) if self.pad else None
            return offsets, None
        if not self.pad:
            return None, torch.rand(n) < 0.5
        # Per sample: randint(0, span) twice (one 32-bit word w each, value w % span), then rand(1) < 0.5 (one word,
        # true iff bit 23 of w is 0). One full-range int64 draw reads the next two words (high, low) of the same
        # stream, so 3n words come in one call (an odd last word, a flip, by rand). Tested against the scalar draws.
        words = 3 * n
        pairs = torch.empty(words // 2, dtype=torch.int64).random_(-(2**63), None)
        w = torch.stack([(pairs >> 32) & 0xFFFFFFFF, pairs & 0xFFFFFFFF], 1).view(-1)
        if words % 2:
            w = torch.cat([w, torch.where(torch.rand(1) < 0.5, 0, 1 << 23)])
        w = w.view(n, 3)
        return w[:, :2] % span, ((w[:, 2] >> 23) & 1) == 0

    def __call__(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        offsets, flips = self.draws(n)  # on the CPU generator; the small tensors then go to the images' device
        if offsets is not None:
            offsets = offsets.to(x.device)
            padded = F.pad(x, (self.pad, self.pad, self.pad, self.pad))
            rows = offsets[:, :1] + torch.arange(h, device=x.device)  # (n, h)
            cols = offsets[:, 1:] + torch.arange(w, device=x.device)  # (n, w)
            batch = torch.arange(n, device=x.device)[:, None, None]
            x = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        if flips is not None:
            x = torch.where(flips.to(x.device)[:, None, None, None], x.flip(-1), x)
        # the strides a collated batch has: with one channel, (H*W, 1, W, 1) would also count as contiguous, but a
        # convolution may take another (channels-last) kernel for it and round differently
        return x.clone(memory_format=torch.contiguous_format)


def _owner(cls: type, name: str) -> type:
    return next(k for k in cls.__mro__ if name in vars(k))


def batch_augment_in_effect(dm: Any) -> BatchAugment | None:
    """``dm.batch_augment()`` when it is the twin of the ``train_transform`` in effect, i.e. that transform is defined
    by the class defining ``batch_augment`` or by one of its bases; ``None`` (the per-sample path with the user's
    transform) when a subclass, or the instance, overrides ``train_transform`` below the ``batch_augment``."""
    if "train_transform" in vars(dm):
        return None
    if not issubclass(_owner(type(dm), "batch_augment"), _owner(type(dm), "train_transform")):
        return None
    return dm.batch_augment()


@dataclass
class TensorSplit:
    """A split as tensors: the parent's uint8 images, the split's positions in it, labels, and its augmentation."""

    images: Tensor
    indices: Tensor
    labels: Tensor
    augment: BatchAugment | None

    def __len__(self) -> int:
        return int(self.indices.numel())


def _view_parts(view: SplitView) -> tuple[Any, np.ndarray, np.ndarray, Any] | None:
    if not isinstance(view.base, InMemoryImages):
        return None
    if view.transform is not None and getattr(view, "batch_augment", None) is None:
        return None  # a per-sample transform with no batched equivalent
    labels = view.labels if view.labels is not None else view.base.targets[view.indices]
    return view.base, view.indices, np.asarray(labels, dtype=np.int64), getattr(view, "batch_augment", None)


def as_tensor_split(dataset: Dataset) -> TensorSplit | None:
    """The split as a :class:`TensorSplit` when it can be served from memory: a :class:`SplitView` (or a
    ``ConcatDataset`` of them over one parent with one augmentation) of :class:`InMemoryImages`; else ``None``."""
    views = dataset.datasets if isinstance(dataset, ConcatDataset) else [dataset]
    parts = [_view_parts(v) if isinstance(v, SplitView) else None for v in views]
    if not parts or any(p is None for p in parts):
        return None
    bases = {id(p[0]) for p in parts}  # type: ignore[index]
    augments = {p[3] for p in parts}  # type: ignore[index]
    if len(bases) != 1 or len(augments) != 1:
        return None
    base = parts[0][0]  # type: ignore[index]
    indices = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)  # type: ignore[index]
    labels = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, np.int64)  # type: ignore[index]
    return TensorSplit(base.images, torch.as_tensor(indices), torch.as_tensor(labels), augments.pop())


class _Sized:
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


class TensorLoader:
    """Batches ``[x, y, index]`` of a :class:`TensorSplit` by index slicing; a drop-in for the training and evaluation
    ``DataLoader`` of a single process (``len``, ``sampler``, ``batch_size``, ``dataset``, ``drop_last``).

    ``images`` may live on any device (the DataModule puts them on the training device when they fit); batches are
    made there. ``sampler`` defaults to a ``RandomSampler`` (``shuffle``) or ``SequentialSampler`` over the split, and
    any index sampler (e.g. a ``DistributedSampler``) may be given instead.
    """

    num_workers = 0
    persistent_workers = False

    def __init__(
        self,
        split: TensorSplit,
        batch_size: int,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        dataset: Dataset | None = None,
        sampler: Sampler[int] | None = None,
        images: Tensor | None = None,
    ) -> None:
        self.split = split
        self.dataset = dataset if dataset is not None else _Sized(len(split))
        self.batch_size = int(batch_size)
        self.drop_last = bool(drop_last)
        self.shuffle = bool(shuffle)
        source = _Sized(len(split))
        self.sampler = sampler or (RandomSampler(source) if shuffle else SequentialSampler(source))  # type: ignore[arg-type]
        self.batch_sampler = BatchSampler(self.sampler, self.batch_size, self.drop_last)
        self.images = images if images is not None else split.images
        device = self.images.device
        self._indices = split.indices.to(device)
        self._labels = split.labels.to(device)
        self._augment = split.augment

    @property
    def device(self) -> torch.device:
        return self.images.device

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[list[Tensor]]:
        return self._batches()

    def _batches(self) -> Iterator[list[Tensor]]:
        # What a DataLoader draws from the global generator when its iterator starts (its workers' base seed, even
        # with no workers). Drawn at the first batch, not in iter(): Lightning calls iter() once on any training
        # iterable that is not a DataLoader to check it is one, and that must not move the generator.
        torch.empty((), dtype=torch.int64).random_()
        device = self.device
        # the epoch's batches at the first step (where a DataLoader's sampler draws its seed), copied to the device once
        batches = list(self.batch_sampler)
        if not batches:
            return
        sizes = [len(b) for b in batches]
        flat = torch.as_tensor([i for b in batches for i in b], dtype=torch.long).to(device)
        for pos in flat.split(sizes):
            index = self._indices[pos]
            x = self.images[index].float().div_(255.0)
            if self._augment is not None:
                x = self._augment(x)
            yield [x, self._labels[pos], index]


def fits_on(images: Tensor, device: torch.device, max_bytes: int) -> bool:
    """Whether ``images`` may be copied to ``device``: within ``max_bytes`` and, on CUDA, half the free memory."""
    size = images.numel() * images.element_size()
    if size > max_bytes:
        return False
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return size <= free // 2
    return True

