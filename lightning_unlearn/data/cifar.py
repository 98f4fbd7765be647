"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009), read from torchvision's on-disk layout (the pickled python batches).

The batches are pickles, and a pickle can run any code when it is loaded. They are read with :class:`CIFARUnpickler`,
which admits only what the format holds (dicts, lists, str/bytes, numbers and numpy arrays with their reconstructors);
a file that needs anything else is refused with its name (see ``docs/safety.md``).
"""

from __future__ import annotations

import pickle
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


class UnsafePickleError(pickle.UnpicklingError):
    """A CIFAR file that needs more than the format holds to be unpickled (refused, nothing of it was run)."""


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # protocol-2 pickles written by Python 3 rebuild ``bytes`` as _codecs.encode(str, "latin1"); only that is allowed
    if encoding.replace("-", "").lower() not in ("latin1", "iso88591"):
        raise UnsafePickleError(f"_codecs.encode with encoding {encoding!r} is not part of the CIFAR format.")
    return text.encode(encoding, errors)


class CIFARUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals a CIFAR batch/meta file uses (numpy arrays, dtypes, bytes)."""

    def find_class(self, module: str, name: str) -> object:
        obj = _ALLOWED_GLOBALS.get((module, name))
        if obj is None:
            raise UnsafePickleError(
                f"global '{module}.{name}' is not part of the CIFAR format (only numpy arrays, lists, dicts and strings "
                "are); the file is refused and nothing in it was run"
            )
        return obj


def _numpy_globals() -> dict[tuple[str, str], object]:
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    reconstruct = multiarray._reconstruct
    scalar = multiarray.scalar
    out: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(mod, "_reconstruct")] = reconstruct
        out[(mod, "scalar")] = scalar
    out[("_codecs", "encode")] = _latin1_encode
    return out


_ALLOWED_GLOBALS = _numpy_globals()


def _unpickle(path: Path) -> dict:
    """Read a CIFAR batch or meta file with :class:`CIFARUnpickler`; refuse anything that is not a dict."""
    try:
        with open(path, "rb") as f:
            obj = CIFARUnpickler(f, encoding="latin1").load()
    except UnsafePickleError as err:
        raise UnsafePickleError(f"Refusing to read {path}: {err}. Replace it with torchvision's original file.") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(
            f"Could not read {path} as a CIFAR python batch ({type(err).__name__}: {err}); replace it with "
            "torchvision's original file."
        ) from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a CIFAR batch (a dict), found {type(obj).__name__}.")
    return obj


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
        holdout_indices: list[int] | str | None = None,
        previous_ckpt: str | None = None,
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
            path = self.root / name
            entry = _unpickle(path)
            data, labels = entry.get("data"), entry.get(self.label_key)
            if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.size % 3072 or not isinstance(
                labels, list
            ) or len(labels) * 3072 != data.size or not all(type(v) is int for v in labels):
                raise ValueError(
                    f"{path} is not a CIFAR batch: expected a uint8 'data' array of N x 3072 values and a list of N "
                    f"integer '{self.label_key}'. Replace it with torchvision's original file."
                )
            xs.append(data.reshape(-1, 3, 32, 32))
            ys.extend(labels)
        images = resize_uint8(torch.from_numpy(np.concatenate(xs)), self.image_size).contiguous()
        return InMemoryImages(images, np.asarray(ys, dtype=np.int64))

    def dataset_key(self) -> Hashable | None:
        found = versions(self.root / f for f in (*self.train_files, *self.test_files))
        return None if found is None else dataset_key(self, found, self.label_key, self.image_size)

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
            names = _unpickle(meta).get(self.names_key)
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError(f"{meta} has no list of class names under {self.names_key!r}; replace the file.")
            return names
        return super().class_names

    def train_transform(self) -> Transform | None:
        from torchvision.transforms import v2

        return v2.Compose(
            [v2.RandomCrop(self.image_size, padding=self.image_size // 8), v2.RandomHorizontalFlip()]
        )

    def batch_augment(self) -> BatchAugment | None:
        return BatchAugment(pad=self.image_size // 8, flip=True)


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
