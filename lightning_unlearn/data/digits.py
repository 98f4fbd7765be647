"""scikit-learn's handwritten digits: 1,797 real 8x8 images shipped with scikit-learn, the embedded default."""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
import torch
from torch.utils.data import Dataset

from lightning_unlearn.data.base import UnlearningDataModule
from lightning_unlearn.data.datasets import InMemoryImages, Transform, resize_uint8
from lightning_unlearn.data.forget import ForgetSpec, stratified_split
from lightning_unlearn.data.shared import dataset_key
from lightning_unlearn.data.tensor_loader import BatchAugment


class DigitsDataModule(UnlearningDataModule):
    """``sklearn.datasets.load_digits`` (10 classes, ~180 images each), upsampled to ``image_size``.

    The dataset has no test split: a stratified ``test_fraction`` is set aside with a fixed ``split_seed`` (independent
    of ``seed``, so every forget seed shares one test set). Needs no network.
    """

    name = "digits"
    num_classes = 10
    in_channels = 1
    mean = (0.3053,)
    std = (0.3189,)

    def __init__(
        self,
        forget: ForgetSpec | None = None,
        holdout_fraction: float = 0.1,
        holdout_indices: list[int] | str | None = None,
        previous_ckpt: str | None = None,
        seed: int = 0,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        augment: bool = True,
        train_on: str = "all",
        image_size: int = 16,
        test_fraction: float = 0.2,
        split_seed: int = 0,
    ) -> None:
        super().__init__(
            forget=forget,
            holdout_fraction=holdout_fraction,
            holdout_indices=holdout_indices,
            previous_ckpt=previous_ckpt,
            seed=seed,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            augment=augment,
            train_on=train_on,  # type: ignore[arg-type]
            image_size=image_size,
        )
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
        self.test_fraction = test_fraction
        self.split_seed = split_seed

    def dataset_key(self) -> Hashable | None:
        import sklearn

        return dataset_key(self, sklearn.__version__, self.image_size, self.test_fraction, self.split_seed)

    def load_datasets(self) -> tuple[Dataset, Dataset]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.from_numpy(np.round(digits.images * (255.0 / 16.0)).astype(np.uint8))[:, None]
        images = resize_uint8(images, self.image_size)
        targets = digits.target.astype(np.int64)
        train_idx, test_idx = stratified_split(targets, self.test_fraction, self.split_seed)
        return (
            InMemoryImages(images[train_idx].contiguous(), targets[train_idx]),
            InMemoryImages(images[test_idx].contiguous(), targets[test_idx]),
        )

    def train_transform(self) -> Transform | None:
        from torchvision.transforms import v2

        return v2.RandomCrop(self.image_size, padding=max(1, self.image_size // 8))

    def batch_augment(self) -> BatchAugment | None:
        return BatchAugment(pad=max(1, self.image_size // 8))
