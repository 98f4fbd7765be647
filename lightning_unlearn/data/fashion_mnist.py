"""Fashion-MNIST (Xiao et al. 2017): 70,000 28x28 grey images of 10 clothing classes."""

from __future__ import annotations

import gzip
import os
from collections.abc import Hashable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from lightning_unlearn.data.base import UnlearningDataModule
from lightning_unlearn.data.datasets import InMemoryImages, Transform, resize_uint8
from lightning_unlearn.data.forget import ForgetSpec
from lightning_unlearn.data.shared import dataset_key
from lightning_unlearn.data.tensor_loader import BatchAugment
from lightning_unlearn.filecache import versions

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped), the format of MNIST and Fashion-MNIST."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:  # type: ignore[operator]
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file.")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: expected {int(np.prod(shape))} values, found {arr.size}.")
    return arr.reshape(shape)


def find_fashion_mnist(candidates: list[Path]) -> dict[str, Path] | None:
    """The first directory holding all four IDX files (plain or .gz)."""
    for directory in candidates:
        found = {}
        for key, stem in FILES.items():
            for name in (stem, stem + ".gz"):
                if (directory / name).is_file():
                    found[key] = directory / name
                    break
        if len(found) == len(FILES):
            return found
    return None


class FashionMNISTDataModule(UnlearningDataModule):
    """Fashion-MNIST. Looks in ``data_dir`` (also ``data_dir/FashionMNIST/raw``, torchvision's layout), then in Debian's
    ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``), then downloads with torchvision if
    ``download`` is true. Offline with nothing found, it stops with a message saying how to get the files."""

    name = "fashion_mnist"
    num_classes = 10
    in_channels = 1
    mean = (0.2860,)
    std = (0.3530,)

    def __init__(
        self,
        data_dir: str | None = None,
        download: bool = False,
        forget: ForgetSpec | None = None,
        holdout_fraction: float = 0.1,
        holdout_indices: list[int] | str | None = None,
        previous_ckpt: str | None = None,
        seed: int = 0,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        augment: bool = True,
        train_on: str = "all",
        image_size: int = 28,
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
        self.data_dir = data_dir
        self.download = download

    @property
    def class_names(self) -> list[str]:
        return list(CLASSES)

    def _candidates(self) -> list[Path]:
        dirs = []
        if self.data_dir:
            root = Path(self.data_dir)
            dirs += [root, root / "FashionMNIST" / "raw", root / "fashion-mnist"]
        env = os.environ.get("FASHION_MNIST_DIR")
        if env:
            dirs.append(Path(env))
        dirs.append(Path(DEBIAN_DIR))
        return dirs

    def prepare_data(self) -> None:
        if find_fashion_mnist(self._candidates()) is None and self.download:
            from torchvision.datasets import FashionMNIST

            root = self.data_dir or "data"
            FashionMNIST(root, train=True, download=True)
            FashionMNIST(root, train=False, download=True)
            self.data_dir = root

    def dataset_key(self) -> Hashable | None:
        files = find_fashion_mnist(self._candidates())
        found = versions(files[k] for k in sorted(files)) if files is not None else None
        return None if found is None else dataset_key(self, found, self.image_size)

    def load_datasets(self) -> tuple[Dataset, Dataset]:
        files = find_fashion_mnist(self._candidates())
        if files is None:
            self.prepare_data()
            files = find_fashion_mnist(self._candidates())
        if files is None:
            looked = ", ".join(str(p) for p in self._candidates())
            raise FileNotFoundError(
                f"Fashion-MNIST not found (looked in: {looked}). Offline, install Debian's package "
                "(`apt-get install dataset-fashion-mnist`) or put train-images-idx3-ubyte(.gz), "
                "train-labels-idx1-ubyte(.gz), t10k-images-idx3-ubyte(.gz), t10k-labels-idx1-ubyte(.gz) in `data_dir`; "
                "with network access, pass `download=True`."
            )

        def images(key: str) -> torch.Tensor:
            arr = torch.from_numpy(read_idx(files[key]).copy())[:, None]
            return resize_uint8(arr, self.image_size).contiguous()

        return (
            InMemoryImages(images("train_images"), read_idx(files["train_labels"])),
            InMemoryImages(images("test_images"), read_idx(files["test_labels"])),
        )

    def train_transform(self) -> Transform | None:
        from torchvision.transforms import v2

        return v2.RandomCrop(self.image_size, padding=max(1, self.image_size // 14))

    def batch_augment(self) -> BatchAugment | None:
        return BatchAugment(pad=max(1, self.image_size // 14))
