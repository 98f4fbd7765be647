"""The loaders a method builds from a DataModule's splits: D_f with a clear error when empty, a training loader that
keeps its ``shuffle`` under DDP, and an epoch made of passes over named loaders (:class:`PhasedLoader`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lightning_unlearn.data.datasets import SplitView

__all__ = ["PhasedLoader", "forget_split", "sharded_loader"]


def forget_split(datamodule: Any, augment: bool = False) -> SplitView:
    """D_f as a dataset, with a clear error when it is empty (nothing to unlearn)."""
    ds = datamodule.dataset("forget", augment=augment)
    if len(ds) == 0:
        raise ValueError(
            "The forget set D_f is empty: give the DataModule a `forget` spec (e.g. `ForgetSpec(classes=[3])`)."
        )
    return ds


def sharded_loader(
    module: Any, datamodule: Any, dataset: Dataset, *, shuffle: bool, batch_size: int
) -> DataLoader:
    """A training loader over ``dataset`` that keeps ``shuffle`` under DDP.

    Lightning replaces a training loader's sampler with a *shuffling* ``DistributedSampler`` whatever the loader's own
    setting; a loader that already has a ``DistributedSampler`` is left alone. So under DDP this builds one with the
    method's ``shuffle`` (rank ``r`` of ``W`` then takes samples ``r, r+W, ...``: with ``shuffle=False`` and per-rank
    batch ``b``, the ``W`` ranks' step-``t`` batches together are the single-process batch ``t`` of size ``W*b``).
    """
    loader = datamodule.loader(dataset, shuffle=shuffle, batch_size=batch_size, train=True)
    trainer = module._trainer
    world = int(trainer.world_size) if trainer is not None else 1
    if world <= 1:
        return loader
    sampler = DistributedSampler(dataset, num_replicas=world, rank=int(trainer.global_rank), shuffle=shuffle, seed=0)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=loader.num_workers,
        persistent_workers=loader.persistent_workers,
        drop_last=loader.drop_last,
    )


class PhasedLoader:
    """One training epoch as passes over named loaders one after another, the passes chosen per epoch.

    ``plan(epoch)`` names the loaders of that epoch, in order; each batch comes out as ``{name: batch}``, so the step
    knows which pass it is in (SCRUB: max-steps over D_f then min-steps over D_r; UNSIR: impair then repair).
    Lightning's ``CombinedLoader(mode="sequential")`` would do this but ``fit`` refuses it, and Lightning builds the
    training loader once (unless the user sets ``reload_dataloaders_every_n_epochs``), so the plan is read when each
    epoch's iterator starts (``epoch()``, the module's ``current_epoch``). Lightning also sizes an epoch once: ``len``
    is the longest planned epoch (over the first ``horizon`` epochs; later ones repeat the last), and a shorter epoch
    ends on its last batch, which Lightning detects by prefetching. Inner loaders with a ``DistributedSampler``
    (:func:`sharded_loader`) get ``set_epoch`` here, which Lightning cannot do through this wrapper.
    """

    def __init__(
        self,
        loaders: dict[str, DataLoader],
        plan: Callable[[int], Sequence[str]],
        epoch: Callable[[], int],
        horizon: int = 1,
    ) -> None:
        unknown = {n for e in range(max(horizon, 1)) for n in plan(e)} - set(loaders)
        if unknown:
            raise KeyError(f"PhasedLoader: the plan names loaders {sorted(unknown)} that were not given.")
        self.loaders, self.plan, self.epoch, self.horizon = loaders, plan, epoch, max(horizon, 1)

    def epoch_length(self, epoch: int) -> int:
        return sum(len(self.loaders[name]) for name in self.plan(epoch))

    def __len__(self) -> int:
        return max(self.epoch_length(e) for e in range(self.horizon))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._batches(int(self.epoch()))  # the epoch is read now, when Lightning starts the epoch's iterator

    def _batches(self, epoch: int) -> Iterator[dict[str, Any]]:
        for name in self.plan(epoch):
            loader = self.loaders[name]
            if isinstance(getattr(loader, "sampler", None), DistributedSampler):
                loader.sampler.set_epoch(epoch)
            for batch in loader:
                yield {name: batch}
