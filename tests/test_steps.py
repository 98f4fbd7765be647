"""Issue 17 (per-step cost): ``log_step`` writes to the loggers exactly what ``self.log`` every step wrote."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_unlearn.methods.steps import log_step


class _Net(pl.LightningModule):
    def __init__(self, every_step: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(4, 3)
        self.every_step = every_step
        self.calls = 0

    def log(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        self.calls += 1
        super().log(*args, **kwargs)

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        if self.every_step:
            self.log("train/loss", loss, batch_size=len(y))
        else:
            log_step(self, "train/loss", loss, len(y))
        return loss

    def configure_optimizers(self):  # noqa: ANN201
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _batches() -> DataLoader:
    g = torch.Generator().manual_seed(1)
    return DataLoader(TensorDataset(torch.randn(56, 4, generator=g), torch.randint(0, 3, (56,), generator=g)),
                      batch_size=8)


def _logged(tmp_path: Path, every_step: bool, every_n: int) -> tuple[list[dict[str, str]], int]:
    logger = CSVLogger(tmp_path, name=f"run{int(every_step)}", version=0)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=logger, log_every_n_steps=every_n,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    net = _Net(every_step)
    trainer.fit(net, train_dataloaders=_batches())
    with open(Path(logger.log_dir) / "metrics.csv") as fh:
        return list(csv.DictReader(fh)), net.calls


@pytest.mark.parametrize("every_n", [1, 3])
def test_log_step_writes_what_logging_every_step_writes(tmp_path: Path, every_n: int) -> None:
    (plain, n_plain), (sparse, n_sparse) = _logged(tmp_path, True, every_n), _logged(tmp_path, False, every_n)
    assert plain == sparse
    assert len(plain) == 14 // every_n  # the logger writes on steps every_n, 2 every_n, ... of the 14 steps
    assert n_plain == 14 and n_sparse == 14 // every_n  # and self.log is called on those steps only


def test_log_step_outside_a_trainer_logs() -> None:
    net = _Net(False)
    calls = []
    net.log = lambda *a, **k: calls.append((a, k))  # type: ignore[method-assign]
    log_step(net, "train/loss", torch.tensor(1.0), 4)
    assert calls == [(("train/loss", torch.tensor(1.0)), {"batch_size": 4})]
