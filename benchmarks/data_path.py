"""A ``Classifier`` training epoch against a bare in-memory tensor loop, interleaved (the machine may be shared).

    python benchmarks/data_path.py [--data digits|synthetic|both] [--repeats 3] [--epochs 3] [--threads 1]

Per repeat, in turn: (1) the bare loop: the split's uint8 images as one tensor, a random permutation per epoch,
batches by slicing, ``/255``, the same batched random crop (``BatchAugment``), forward, cross-entropy, backward and an
SGD step (momentum 0.9, weight decay 5e-4: ``Classifier``'s optimizer); (2) ``Trainer.fit`` of a ``Classifier`` on
the DataModule's in-memory path (``TensorLoader``); (3) the same on the per-sample ``DataLoader`` path
(``dm.in_memory = False``), all on the same data, batch size and model (a fresh copy of one initialisation).

The time is per epoch in the steady state: epochs 2..E (the first epoch, with Lightning's setup, is timed apart and
printed as ``setup``). No logger, checkpoint, progress bar or validation. Prints min and median of each and the
ratios Lightning / bare (min/min and median/median).

``digits``: the quickstart's data (sklearn digits at 4x4, batch 64) and model (All-CNN width 0.25).
``synthetic``: 20,000 random 1x16x16 uint8 images in 10 classes, batch 128, All-CNN width 0.25.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from lightning_unlearn.backbones import AllCNN
from lightning_unlearn.data import DigitsDataModule, ForgetSpec, UnlearningDataModule
from lightning_unlearn.data.datasets import InMemoryImages
from lightning_unlearn.data.tensor_loader import BatchAugment
from lightning_unlearn.methods import Classifier


class SyntheticDataModule(UnlearningDataModule):
    """``n`` random uint8 images ``(1, size, size)`` in 10 classes, a 10% test part; crop augmentation."""

    name = "synthetic"
    num_classes = 10
    in_channels = 1
    mean = (0.5,)
    std = (0.29,)

    def __init__(self, n: int = 20000, image_size: int = 16, **kwargs: Any) -> None:
        super().__init__(image_size=image_size, **kwargs)
        self.n = n

    def load_datasets(self) -> tuple[InMemoryImages, InMemoryImages]:
        gen = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (self.n, 1, self.image_size, self.image_size), generator=gen, dtype=torch.uint8)
        targets = torch.randint(0, 10, (self.n,), generator=gen).numpy()
        cut = self.n * 9 // 10
        return InMemoryImages(images[:cut], targets[:cut]), InMemoryImages(images[cut:], targets[cut:])

    def train_transform(self) -> Any:
        from torchvision.transforms import v2

        return v2.RandomCrop(self.image_size, padding=max(1, self.image_size // 8))

    def batch_augment(self) -> BatchAugment | None:
        return BatchAugment(pad=max(1, self.image_size // 8))


def make(data: str) -> tuple[UnlearningDataModule, AllCNN]:
    if data == "digits":
        dm: UnlearningDataModule = DigitsDataModule(forget=ForgetSpec(classes=[3]), image_size=4, batch_size=64)
    else:
        dm = SyntheticDataModule(forget=ForgetSpec(fraction=0.1), batch_size=128, holdout_fraction=0.0)
    dm.setup()
    net = AllCNN(num_classes=dm.num_classes, in_channels=dm.in_channels, image_size=dm.image_size, width=0.25,
                 mean=list(dm.mean), std=list(dm.std))
    return dm, net


class EpochTimer(pl.Callback):
    def __init__(self) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.starts.append(time.perf_counter())

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.ends.append(time.perf_counter())


def lightning_epochs(dm: UnlearningDataModule, net: AllCNN, epochs: int, in_memory: bool) -> tuple[float, float]:
    """(steady-state seconds per epoch, first epoch incl. setup)."""
    dm.in_memory = in_memory
    timer = EpochTimer()
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
        callbacks=[timer],
    )
    t0 = time.perf_counter()
    trainer.fit(Classifier(copy.deepcopy(net), scheduler="none"), datamodule=dm)
    steady = [e - s for s, e in zip(timer.starts[1:], timer.ends[1:], strict=True)]
    return statistics.mean(steady), timer.ends[0] - t0


def bare_epochs(dm: UnlearningDataModule, net: AllCNN, epochs: int) -> float:
    """Seconds per epoch of the bare in-memory loop (epochs 2..E)."""
    model = copy.deepcopy(net).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    base = dm.train_set
    idx = torch.as_tensor(dm.indices("train"))
    images, labels = base.images, torch.as_tensor(base.targets)  # type: ignore[attr-defined]
    augment, bs = dm.batch_augment(), dm.batch_size
    times = []
    for _ in range(epochs):
        t = time.perf_counter()
        order = idx[torch.randperm(len(idx))]
        for pos in order.split(bs):
            x = images[pos].float().div_(255.0)
            if augment is not None:
                x = augment(x)
            loss = F.cross_entropy(model(x), labels[pos])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t)
    return statistics.mean(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=["digits", "synthetic", "both"], default="both")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for data in (["digits", "synthetic"] if args.data == "both" else [args.data]):
        dm, net = make(data)
        t: dict[str, list[float]] = {"bare": [], "tensor": [], "per_sample": []}
        setup: dict[str, list[float]] = {"tensor": [], "per_sample": []}
        for r in range(args.repeats):
            pl.seed_everything(r, verbose=False)
            t["bare"].append(bare_epochs(dm, net, args.epochs))
            for name, fast in (("tensor", True), ("per_sample", False)):
                pl.seed_everything(r, verbose=False)
                steady, first = lightning_epochs(dm, net, args.epochs, fast)
                t[name].append(steady)
                setup[name].append(first)
        n = len(dm.indices("train"))
        print(f"\n{data}: {n} training samples, batch {dm.batch_size}, {args.epochs} epochs x {args.repeats} repeats, "
              f"{args.threads} thread(s)")
        for name, vals in t.items():
            print(f"  {name:10s} epoch min {min(vals):.3f} s  median {statistics.median(vals):.3f} s")
        for name in ("tensor", "per_sample"):
            ratio_min = min(t[name]) / min(t["bare"])
            ratio_med = statistics.median(t[name]) / statistics.median(t["bare"])
            print(f"  Classifier ({name}) / bare: {ratio_min:.2f}x min/min, {ratio_med:.2f}x median/median; "
                  f"first epoch incl. setup median {statistics.median(setup[name]):.2f} s")


if __name__ == "__main__":
    main()
