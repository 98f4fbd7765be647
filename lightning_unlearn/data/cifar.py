"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009), read from torchvision's on-disk layout (the pickled python batches)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from lightning_unlearn.data.base import UnlearningDataModule
from lightning_unlearn.data.datasets import InMemoryImages, Transform, resize_uint8
from lightning_unlearn.data.forget import ForgetSpec


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


class _CIFARDataModule(UnlearningDataModule):
    folder: str = ""
    train_files: tuple[str, ...] = ()
    test_files: tuple[str, ...] = ()
    label_key: str = "labels"
    meta_file: str = ""
    names_key: str = ""
    torchvision_class: str = ""
    in_channels = 3

    def __init__(
        self,
        data_dir: str = "data",
        download: bool = False,
        forget: ForgetSpec | None = None,
        holdout_fraction: float = 0.1,
        seed: int = 0,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        augment: bool = True,
        train_on: str = "all",
        image_size: int = 32,
    ) -> None:
        super().__init__(
            forget=forget,
            holdout_fraction=holdout_fraction,
            seed=seed,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            augment=augment,
            train_on=train_on,  # type: ignore[arg-type]
            image_size=image_size,
        )
        self.data_dir = data_dir
        self.download = download

    @property
    def root(self) -> Path:
        return Path(self.data_dir) / self.folder

    def _missing(self) -> list[Path]:
        return [self.root / f for f in (*self.train_files, *self.test_files) if not (self.root / f).is_file()]

    def prepare_data(self) -> None:
        if self._missing() and self.download:
            import torchvision.datasets as tvd

            cls = getattr(tvd, self.torchvision_class)
            cls(self.data_dir, train=True, download=True)
            cls(self.data_dir, train=False, download=True)

    def _read(self, files: tuple[str, ...]) -> InMemoryImages:
        xs, ys = [], []
        for name in files:
            entry = _unpickle(self.root / name)
            xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.extend(entry[self.label_key])
        images = resize_uint8(torch.from_numpy(np.concatenate(xs)), self.image_size).contiguous()
        return InMemoryImages(images, np.asarray(ys, dtype=np.int64))

    def load_datasets(self) -> tuple[Dataset, Dataset]:
        if self._missing():
            self.prepare_data()
        missing = self._missing()
        if missing:
            raise FileNotFoundError(
                f"{type(self).__name__}: {len(missing)} file(s) missing under {self.root} (e.g. {missing[0].name}). "
                f"Put torchvision's extracted `{self.folder}/` folder in `data_dir` ({self.data_dir}), or pass "
                "`download=True` where the network allows."
            )
        return self._read(self.train_files), self._read(self.test_files)

    @property
    def class_names(self) -> list[str]:
        meta = self.root / self.meta_file
        if meta.is_file():
            return list(_unpickle(meta)[self.names_key])
        return super().class_names

    def train_transform(self) -> Transform | None:
        from torchvision.transforms import v2

        return v2.Compose(
            [v2.RandomCrop(self.image_size, padding=self.image_size // 8), v2.RandomHorizontalFlip()]
        )


class CIFAR10DataModule(_CIFARDataModule):
    """CIFAR-10: 50,000 + 10,000 32x32 colour images, 10 classes (torchvision layout ``data_dir/cifar-10-batches-py``)."""

    name = "cifar10"
    num_classes = 10
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)
    folder = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)
    label_key = "labels"
    meta_file = "batches.meta"
    names_key = "label_names"
    torchvision_class = "CIFAR10"


class CIFAR100DataModule(_CIFARDataModule):
    """CIFAR-100: 50,000 + 10,000 32x32 colour images, 100 fine classes (``data_dir/cifar-100-python``)."""

    name = "cifar100"
    num_classes = 100
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)
    folder = "cifar-100-python"
    train_files = ("train",)
    test_files = ("test",)
    label_key = "fine_labels"
    meta_file = "meta"
    names_key = "fine_label_names"
    torchvision_class = "CIFAR100"
