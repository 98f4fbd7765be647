"""Lightning's fixed cost per training step on the CPU: ``self.log`` and the batch transfer, interleaved.

    OMP_NUM_THREADS=1 python benchmarks/step_cost.py [--repeats 5] [--steps 200]

A linear model on batches of 64 16-dimensional inputs (a step of well under a millisecond, so what is measured is
Lightning's machinery), ``Trainer.fit`` for one epoch of ``--steps`` steps without logger, checkpoint or progress
bar, in three variants per repeat, in turn: no ``self.log``; ``self.log`` of the step loss every step (what every
method did before ``methods.steps.log_step``); ``log_step`` (only on the steps the loggers write, the default
``log_every_n_steps=50``). Prints ms per step (min and median over the repeats) and the difference per call, and
the time of Lightning's ``move_data_to_device`` on a batch already on the CPU (what the transfer costs).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import move_data_to_device
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_unlearn.methods.steps import log_step


class _Net(pl.LightningModule):
    def __init__(self, mode: str) -> None:
        super().__init__()
        self.net, self.mode = nn.Linear(16, 10), mode

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        if self.mode == "self.log":
            self.log("train/loss", loss, batch_size=len(y))
        elif self.mode == "log_step":
            log_step(self, "train/loss", loss, len(y))
        return loss

    def configure_optimizers(self):  # noqa: ANN201
        return torch.optim.SGD(self.parameters(), lr=0.01)


def one(mode: str, loader: DataLoader) -> float:
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    t0 = time.perf_counter()
    trainer.fit(_Net(mode), train_dataloaders=loader)
    return (time.perf_counter() - t0) / len(loader) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    torch.manual_seed(0)
    loader = DataLoader(TensorDataset(torch.randn(64 * args.steps, 16), torch.randint(0, 10, (64 * args.steps,))),
                        batch_size=64)
    modes = ("no log", "self.log", "log_step")
    times: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.repeats):
        for m in modes:
            times[m].append(one(m, loader))
    x, y = next(iter(loader))
    t0 = time.perf_counter()
    for _ in range(2000):
        move_data_to_device((x, y), torch.device("cpu"))
    print(f"move_data_to_device of a batch already on the CPU: {(time.perf_counter() - t0) / 2000 * 1e6:.1f} us")
    base = min(times["no log"])
    for m in modes:
        print(f"{m:9s} min {min(times[m]):.3f} ms/step, median {statistics.median(times[m]):.3f}; "
              f"min - no log: {min(times[m]) - base:+.3f} ms/step")


if __name__ == "__main__":
    main()
