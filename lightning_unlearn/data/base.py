"""The DataModule every dataset shares: loading, splits, and loaders for any split by name."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lightning_unlearn.data.datasets import SplitView, Transform
from lightning_unlearn.data.shared import shared_datasets
from lightning_unlearn.data.tensor_loader import BatchAugment, TensorLoader, as_tensor_split, batch_augment_in_effect
from lightning_unlearn.data.tensor_loader import fits_on
from lightning_unlearn.data.forget import (
    SPLIT_NAMES,
    ForgetSpec,
    SplitMismatchError,
    Splits,
    check_hashes,
    make_splits,
    read_indices,
)
from lightning_unlearn.data.requests import NEXT_KEY, PreviousRequests

TrainOn = Literal["all", "retain"]


class InputMismatchError(ValueError):
    """A checkpoint was trained on input shaped differently from what this DataModule serves."""


class UnlearningDataModule(pl.LightningDataModule):
    """Base DataModule: a training and a test set, a :class:`ForgetSpec`, and the splits it induces.

    Subclasses implement :meth:`load_datasets` (returning datasets whose items are ``(x in [0,1], y, index)`` and which
    expose ``targets``) and may override :meth:`train_transform`. Split names: ``retain``, ``forget``, ``holdout``,
    ``test``, ``test_retain``, ``test_forget``, plus ``train`` (what ``train_on`` says: D = D_r + D_f, or D_r alone
    for the gold model) and, for a further deletion request (:meth:`continue_from`), ``forgotten``.

    Batches are ``(x, y, index)`` for this package's modules (methods, ``Classifier``: they read ``index``) and ``(x,
    y)`` for any other ``LightningModule`` (your own ``training_step``/``test_step`` unpack two values); a module
    with ``takes_indexed_batches = True`` gets the index too.

    Args:
        forget: what to forget; ``None`` forgets nothing (D_f empty).
        holdout_fraction: stratified fraction of the training set held out (validation, MIA non-members, TMU twin data).
        holdout_indices: the held-out training indices themselves (a list, or a file like ``indices_file``), e.g. your
            own validation split: then the model's non-members are the samples it really never saw, and
            ``holdout_fraction`` is not used.
        previous_ckpt: the unlearned checkpoint of the last deletion request: this DataModule then describes the next
            request on that model (:meth:`continue_from`), e.g. to train the gold model of request ``k`` without
            everything forgotten so far (``train_on: retain``).
        seed: seed of every random choice in the splits.
        batch_size: training batch size; evaluation loaders use ``eval_batch_size`` (default: 2x).
        num_workers: DataLoader workers.
        augment: apply the dataset's training augmentation to training loaders.
        train_on: ``"all"`` trains the original model on D; ``"retain"`` trains the gold (retrained) model on D_r.
    """

    name: str = "dataset"
    #: Serve in-memory datasets through :class:`~lightning_unlearn.data.tensor_loader.TensorLoader` (whole batches by
    #: index slicing, batched augmentation) in a single process; ``False``: the per-sample ``DataLoader`` path.
    in_memory: bool = True
    #: Largest image tensor (bytes, uint8) copied to the training device; larger ones stay on the CPU (on CUDA, also
    #: at most half the free memory).
    in_memory_max_bytes: int = 4 * 2**30
    num_classes: int = 0
    in_channels: int = 0
    mean: Sequence[float] = ()
    std: Sequence[float] = ()

    def __init__(
        self,
        forget: ForgetSpec | None = None,
        holdout_fraction: float = 0.1,
        seed: int = 0,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        augment: bool = True,
        train_on: TrainOn = "all",
        image_size: int = 32,
        holdout_indices: list[int] | str | None = None,
        previous_ckpt: str | None = None,
    ) -> None:
        super().__init__()
        if isinstance(forget, dict):
            forget = ForgetSpec(**forget)
        if train_on not in ("all", "retain"):
            raise ValueError(f"train_on must be 'all' or 'retain', got {train_on!r}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.forget = forget
        self.holdout_fraction = holdout_fraction
        self.seed = seed
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or 2 * batch_size
        self.num_workers = num_workers
        self.augment = augment
        self.train_on = train_on
        self.image_size = image_size
        self.holdout_indices = holdout_indices
        self.previous_ckpt = previous_ckpt
        #: Earlier deletion requests on the model this DataModule serves (:meth:`continue_from`, ``previous_ckpt``).
        self.previous: PreviousRequests | None = None
        self._train: Dataset | None = None
        self._test: Dataset | None = None
        self._splits: Splits | None = None
        self._device_images: dict[tuple[int, str], torch.Tensor] = {}

    # -- to implement ----------------------------------------------------------------------------------------------
    def load_datasets(self) -> tuple[Dataset, Dataset]:  # pragma: no cover - abstract
        """Return ``(train, test)``; both yield ``(x, y, index)`` and have a ``targets`` array."""
        raise NotImplementedError

    def dataset_key(self) -> Hashable | None:
        """What :meth:`load_datasets` depends on (e.g. :func:`~lightning_unlearn.data.shared.dataset_key` of the
        files' versions and the image size): DataModules with one key share one decoded copy per process
        (:mod:`lightning_unlearn.data.shared`). ``None`` (the default): every DataModule loads its own."""
        return None

    def train_transform(self) -> Transform | None:
        """Per-sample augmentation of [0, 1] tensors for training loaders (``None``: no augmentation)."""
        return None

    def batch_augment(self) -> BatchAugment | None:
        """The batched twin of :meth:`train_transform` (same draws), or ``None`` (augmented loaders go per sample); used
        only where ``train_transform`` is defined by the same class or a base (a subclass's own transform wins)."""
        return None

    @property
    def class_names(self) -> list[str]:
        return [str(i) for i in range(self.num_classes)]

    # -- Lightning hooks -------------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._train is None or self._test is None:
            self._train, self._test = shared_datasets(self.dataset_key(), self.load_datasets)
        if self._splits is None:
            if self.previous is None and self.previous_ckpt is not None:
                self.previous = PreviousRequests.from_checkpoint(self.previous_ckpt)
            prev = self.previous
            history: dict[str, Any] = {}
            if prev is not None:
                history = {
                    "forgotten": prev.forgotten, "forgotten_classes": prev.forgotten_classes, "request": prev.request
                }
                given = self._given_holdout()
                if given is not None and not np.array_equal(np.unique(given), np.unique(prev.holdout)):
                    raise ValueError(
                        "holdout_indices differ from the holdout of the model's first deletion request (its ledger): "
                        "the non-members stay those of the first request; leave holdout_indices out or give those."
                    )
            self._splits = make_splits(
                self._train.targets,  # type: ignore[attr-defined]
                self._test.targets,  # type: ignore[attr-defined]
                self.forget,
                holdout_fraction=self.holdout_fraction,
                seed=self.seed,
                num_classes=self.num_classes,
                holdout=prev.holdout if prev is not None else self._given_holdout(),
                **history,
            )

    def _given_holdout(self) -> np.ndarray | None:
        given = self.holdout_indices
        if given is None:
            return None
        if isinstance(given, str):
            return read_indices(given, "Holdout indices file", "the holdout would be empty")
        return np.asarray(given, dtype=np.int64)

    def continue_from(self, meta: dict[str, Any] | PreviousRequests | None) -> None:
        """Make this DataModule describe a new deletion request on the unlearned model whose checkpoint record is
        ``meta`` (or on top of ``PreviousRequests``): the first request's holdout, D_f among the samples not forgotten
        yet, D_r without anything forgotten so far. ``None`` (or a trained model's record): a first request."""
        prev = meta if isinstance(meta, PreviousRequests) or meta is None else PreviousRequests.from_meta(meta)
        self.previous = prev
        self._splits = None

    def train_dataloader(self) -> DataLoader:
        # An unlearning method decides which splits an epoch iterates (BS: D_f only, Finetune: D_r, ...). Lightning
        # prefers a DataModule's hook over the module's, so the DataModule defers to the method explicitly.
        module = self._module()
        build = getattr(module, "build_train_dataloader", None)
        if callable(build):
            return build(self)
        return self._hook_loader("train", shuffle=True, augment=self.augment, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._hook_loader("holdout" if len(self.splits.holdout) else "test")

    def test_dataloader(self) -> DataLoader:
        return self._hook_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._hook_loader("test")

    def _module(self) -> Any:
        trainer = self.trainer if self._has_trainer() else None
        return getattr(trainer, "lightning_module", None) if trainer is not None else None

    def _hook_loader(self, name: str, **kwargs: Any) -> DataLoader:
        """A Lightning hook's loader: ``(x, y, index)`` batches for a module that reads the index, else ``(x, y)``."""
        module = self._module()
        if module is None or getattr(module, "takes_indexed_batches", False):
            return self.loader(name, **kwargs)
        augment = bool(kwargs.pop("augment", False))
        return self.loader(PairView(self.dataset(name, augment=augment)), **kwargs)

    # -- splits and loaders ----------------------------------------------------------------------------------------
    @property
    def splits(self) -> Splits:
        if self._splits is None:
            self.setup()
        assert self._splits is not None
        return self._splits

    @property
    def train_set(self) -> Dataset:
        self.splits  # noqa: B018 - triggers setup
        assert self._train is not None
        return self._train

    @property
    def test_set(self) -> Dataset:
        self.splits  # noqa: B018 - triggers setup
        assert self._test is not None
        return self._test

    def indices(self, name: str) -> np.ndarray:
        """Indices of a split (``train`` resolves through ``train_on``)."""
        if name == "train":
            s = self.splits
            return s.retain if self.train_on == "retain" else np.sort(np.concatenate([s.retain, s.forget]))
        return self.splits[name]

    def dataset(self, name: str, augment: bool = False) -> SplitView:
        """The split as a dataset of ``(x, y, index)``; ``augment`` applies :meth:`train_transform`."""
        if name not in (*SPLIT_NAMES, "train", "forgotten"):
            raise KeyError(f"Unknown split {name!r}; choose from train, {', '.join(SPLIT_NAMES)}, forgotten.")
        base = self.test_set if name.startswith("test") else self.train_set
        if not augment:
            return SplitView(base, self.indices(name))
        return SplitView(base, self.indices(name), self.train_transform(), batch_augment=batch_augment_in_effect(self))

    def loader(
        self,
        name: str | Dataset,
        *,
        shuffle: bool = False,
        augment: bool = False,
        batch_size: int | None = None,
        train: bool = False,
        drop_last: bool = False,
    ) -> DataLoader:
        """A DataLoader over a split name (or any dataset). ``train`` picks the training batch size.

        In a single process, a split of an in-memory dataset comes as a :class:`TensorLoader` (same batches, see
        ``data/tensor_loader.py``), its images on the training device when they fit (``in_memory_max_bytes``).
        """
        ds = self.dataset(name, augment=augment) if isinstance(name, str) else name
        if batch_size is None:
            batch_size = self.batch_size if train else self.eval_batch_size
        fast = self.tensor_loader(ds, shuffle=shuffle, batch_size=batch_size, drop_last=drop_last)
        if fast is not None:
            return fast  # type: ignore[return-value]
        return DataLoader(
            ds,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=drop_last and len(ds) > batch_size,
        )

    def tensor_loader(
        self, ds: Dataset, *, shuffle: bool, batch_size: int, drop_last: bool = False
    ) -> TensorLoader | None:
        """A :class:`TensorLoader` over ``ds``, or ``None`` where the per-sample path must serve it (in-memory path
        off, a dataset not held in memory, a per-sample transform without a batched equivalent, several processes:
        Lightning shards only ``DataLoader``s)."""
        if not self.in_memory or _distributed(self.trainer if self._has_trainer() else None):
            return None
        split = as_tensor_split(ds)
        if split is None:
            return None
        device = self._device()
        key = (id(split.images), str(device))
        images = self._device_images.get(key)
        if images is None:
            images = split.images.to(device) if fits_on(split.images, device, self.in_memory_max_bytes) else split.images
            self._device_images[key] = images
        return TensorLoader(
            split, batch_size, shuffle=shuffle, drop_last=drop_last and len(ds) > batch_size, dataset=ds, images=images
        )

    def _has_trainer(self) -> bool:
        return getattr(self, "trainer", None) is not None

    def _device(self) -> torch.device:
        trainer = self.trainer if self._has_trainer() else None
        strategy = getattr(trainer, "strategy", None)
        try:
            return torch.device(strategy.root_device) if strategy is not None else torch.device("cpu")
        except Exception:  # a strategy without a device yet
            return torch.device("cpu")

    # -- provenance ------------------------------------------------------------------------------------------------
    def splits_info(self) -> dict[str, Any]:
        """What a checkpoint records about the data: dataset, spec, seed, sizes and the hash of every split."""
        extra: dict[str, Any] = {}
        if self.previous is not None:
            extra["request"] = self.previous.request
        elif self.holdout_indices is not None:
            extra["holdout"] = "given"
        return self.splits.to_dict(
            self.forget,
            dataset=self.name,
            num_classes=self.num_classes,
            holdout_fraction=self.holdout_fraction,
            seed=self.seed,
            train_on=self.train_on,
            input=self.input_info(),
            **extra,
        )

    def input_info(self) -> dict[str, Any]:
        """Everything that shapes what a network sees: the DataModule class, image size, channels, normalisation
        statistics and class count. Recorded in checkpoints (``splits["input"]``) and checked on load, since split
        hashes do not change when, e.g., the same digits are served at 8x8 instead of 16x16."""
        cls = type(self)
        return {
            "datamodule": f"{cls.__module__}.{cls.__qualname__}",
            "image_size": int(self.image_size),
            "in_channels": int(self.in_channels),
            "mean": [float(m) for m in self.mean],
            "std": [float(s) for s in self.std],
            "num_classes": int(self.num_classes),
        }

    def verify_input(self, recorded: dict[str, Any] | None, what: str) -> None:
        """Stop with :class:`InputMismatchError` when ``recorded`` (a checkpoint's ``splits["input"]``) differs from
        :meth:`input_info` in any entry; a checkpoint that records none (older files) is not checked here."""
        if not recorded:
            return
        actual = self.input_info()
        for key, value in actual.items():
            if key not in recorded:
                continue
            given = recorded[key]
            same = (
                np.allclose(np.asarray(given, dtype=float), np.asarray(value, dtype=float), rtol=0, atol=1e-6)
                if key in ("mean", "std") and len(given) == len(value)
                else given == value
            )
            if not same:
                raise InputMismatchError(
                    f"{what} was trained on input with {key}={given!r} but this DataModule gives {key}={value!r}. "
                    "Configure the data as it was for training (same DataModule class, image_size, channels, "
                    "normalisation and classes), or use a checkpoint trained on this input."
                )

    def verify_splits(self, recorded: dict[str, Any], what: str, names: Sequence[str] = SPLIT_NAMES) -> None:
        """Stop with :class:`InputMismatchError` when ``recorded`` (a checkpoint's splits) was made on differently
        shaped input (:meth:`verify_input`), and with :class:`SplitMismatchError` when its splits differ from ours.

        An unlearned model's record also fits the DataModule of the next deletion request on it (:meth:`continue_from`:
        the same holdout and test set, everything it forgot as ``forgotten``)."""
        self.verify_input(recorded.get("input"), what)
        ours = self.splits.hashes()
        names = tuple(names) + (("forgotten",) if "forgotten" not in names else ())
        nxt = recorded.get(NEXT_KEY)
        if isinstance(nxt, dict) and "forgotten" in ours and ours.get("forgotten") == nxt.get("forgotten"):
            recorded_hashes = recorded.get("hashes", {})
            check_hashes(recorded_hashes, ours, names=("holdout", "test"), what=what, against="this DataModule")
            return
        try:
            check_hashes(recorded.get("hashes", {}), ours, names=names, what=what, against="this DataModule")
        except SplitMismatchError as err:
            if isinstance(nxt, dict) and self.previous is None:
                raise SplitMismatchError(
                    f"{what} is an unlearned model and this DataModule describes neither its request nor a new one "
                    "after it: for a new deletion request, tell the DataModule what the model forgot already, "
                    "dm.continue_from(meta) with the checkpoint's record (`unlearn` does it). " + str(err)
                ) from None
            raise


class PairView(Dataset):
    """A dataset of ``(x, y, index)`` items served as ``(x, y)``: the batches a user's own ``LightningModule``
    unpacks (``x, y = batch``)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        x, y = self.dataset[i][:2]
        return x, y


def _distributed(trainer: Any) -> bool:
    """Whether more than one process trains (then Lightning's DistributedSampler shards the DataLoaders)."""
    if trainer is not None and int(getattr(trainer, "world_size", 1) or 1) > 1:
        return True
    dist = torch.distributed
    return bool(dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)
