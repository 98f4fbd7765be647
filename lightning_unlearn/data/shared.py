"""Datasets decoded once per process: a benchmark builds one DataModule per group (forget set and seed), and each
used to read and resize its raw files again. :func:`shared_datasets` keeps the ``(train, test)`` a DataModule's
``load_datasets`` returned, keyed by its :meth:`~lightning_unlearn.data.base.UnlearningDataModule.dataset_key` (the
DataModule class, the files' versions and the preprocessing arguments), and hands every DataModule of that key new
dataset objects over the same arrays.

Nothing is shared that a DataModule changes: its splits live on the DataModule, every DataModule gets its own copy of
the targets (small), and the images (large) are shared because nothing in the package writes into them (batches are
gathered copies, ``images[index].float()``; relabelling makes new label arrays).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from torch.utils.data import Dataset

from lightning_unlearn.data.datasets import InMemoryImages

__all__ = ["MAX_SHARED", "clear_shared_datasets", "dataset_key", "shared_datasets"]

#: How many datasets (keys) a process keeps, least recently used first out (a benchmark uses one).
MAX_SHARED = 2
_SHARED: OrderedDict[Hashable, tuple[InMemoryImages, InMemoryImages]] = OrderedDict()


def shared_datasets(key: Hashable | None, load: Callable[[], tuple[Dataset, Dataset]]) -> tuple[Dataset, Dataset]:
    """``load()``, once per ``key`` and process (``None``: not shared). Only in-memory datasets are kept."""
    if key is None:
        return load()
    found = _SHARED.get(key)
    if found is None:
        train, test = load()
        if not (isinstance(train, InMemoryImages) and isinstance(test, InMemoryImages)):
            return train, test  # files read on access (an image folder): nothing decoded to keep
        found = (train, test)
        _SHARED[key] = found
        while len(_SHARED) > MAX_SHARED:
            _SHARED.popitem(last=False)
    else:
        _SHARED.move_to_end(key)
    return tuple(InMemoryImages(ds.images, ds.targets.copy()) for ds in found)  # type: ignore[return-value]


def clear_shared_datasets() -> None:
    """Forget every dataset kept by :func:`shared_datasets`."""
    _SHARED.clear()


def dataset_key(datamodule: Any, *parts: Any) -> tuple[Any, ...]:
    """A key for :func:`shared_datasets`: the DataModule's class (a subclass may load differently) and ``parts``."""
    cls = type(datamodule)
    return (f"{cls.__module__}.{cls.__qualname__}", *parts)
