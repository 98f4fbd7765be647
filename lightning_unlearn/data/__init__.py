"""DataModules, the forget specification and the splits."""

from lightning_unlearn.data.base import UnlearningDataModule
from lightning_unlearn.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from lightning_unlearn.data.datasets import InMemoryImages, SplitView, batch_indices, unpack_batch
from lightning_unlearn.data.digits import DigitsDataModule
from lightning_unlearn.data.fashion_mnist import FashionMNISTDataModule
from lightning_unlearn.data.forget import (
    SPLIT_NAMES,
    ForgetSpec,
    SplitMismatchError,
    Splits,
    index_hash,
    make_splits,
    sequential_splits,
)
from lightning_unlearn.data.image_folder import ImageFolderDataModule
from lightning_unlearn.data.indexed import DatasetsDataModule, IndexedDataset
from lightning_unlearn.data.requests import PreviousRequests

__all__ = [
    "SPLIT_NAMES",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "DatasetsDataModule",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ForgetSpec",
    "ImageFolderDataModule",
    "IndexedDataset",
    "InMemoryImages",
    "PreviousRequests",
    "SplitMismatchError",
    "SplitView",
    "Splits",
    "UnlearningDataModule",
    "batch_indices",
    "index_hash",
    "make_splits",
    "sequential_splits",
    "unpack_batch",
]
