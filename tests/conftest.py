"""Shared fixtures: small digits DataModules and an original + gold All-CNN trained once per test session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml

from lightning_unlearn.backbones import AllCNN
from lightning_unlearn.data import DigitsDataModule, ForgetSpec
from lightning_unlearn.methods import Classifier

# One thread: these models are tiny, and a second thread only adds contention on a shared 2-core machine.
torch.set_num_threads(1)

FORGET_CLASS = 3


def quiet_trainer(**kwargs) -> pl.Trainer:
    """A CPU Trainer without progress bars, loggers or checkpoints (tests pass their own settings on top)."""
    defaults = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    defaults.update(kwargs)
    return pl.Trainer(**defaults)


def digits_dm(forget: ForgetSpec | None = None, **kwargs) -> DigitsDataModule:
    kwargs.setdefault("image_size", 16)
    kwargs.setdefault("batch_size", 64)
    return DigitsDataModule(forget=forget if forget is not None else ForgetSpec(classes=[FORGET_CLASS]), **kwargs)


def small_allcnn(dm: DigitsDataModule, width: float = 0.25) -> AllCNN:
    return AllCNN(
        num_classes=dm.num_classes,
        in_channels=dm.in_channels,
        image_size=dm.image_size,
        width=width,
        mean=list(dm.mean),
        std=list(dm.std),
    )


def train_classifier(dm: DigitsDataModule, epochs: int, path: Path, width: float = 0.25, seed: int = 0) -> Path:
    """Train a Classifier on ``dm`` and save a lightning_unlearn checkpoint at ``path``."""
    pl.seed_everything(seed, verbose=False)
    model = Classifier(small_allcnn(dm, width), lr=0.05)
    trainer = quiet_trainer(max_epochs=epochs, limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(path)
    return path


@dataclass
class TrainedDigits:
    original_ckpt: Path
    gold_ckpt: Path
    forget_class: int

    def datamodule(self, **kwargs) -> DigitsDataModule:
        return digits_dm(**kwargs)


@pytest.fixture(scope="session")
def trained_digits(tmp_path_factory) -> TrainedDigits:
    """Original (trained on D) and gold (trained on D_r) small All-CNNs on digits, class 3 forgotten (~97% test acc)."""
    root = tmp_path_factory.mktemp("trained_digits")
    original = train_classifier(digits_dm(), epochs=12, path=root / "original.ckpt")
    gold = train_classifier(digits_dm(train_on="retain"), epochs=12, path=root / "gold.ckpt")
    for p in (original, gold):
        p.chmod(0o444)  # inputs are read-only: a test that writes over them fails
    return TrainedDigits(original, gold, FORGET_CLASS)


@pytest.fixture()
def digits() -> DigitsDataModule:
    return digits_dm()


def digits_bench_yaml(tmp_path: Path) -> Path:
    """The smallest two-scenario benchmark config (digits 4x4, class 3 and a random 10%, seed 0, Finetune), as a file."""
    cfg = {
        "output_dir": str(tmp_path / "bench"),
        "data": {"class_path": "lightning_unlearn.data.DigitsDataModule",
                 "init_args": {"image_size": 4, "batch_size": 64, "holdout_fraction": 0.5, "augment": False}},
        "training": {"max_epochs": 2, "lr": 0.05},
        "backbone": {"class_path": "lightning_unlearn.backbones.AllCNN", "init_args": {"width": 0.25}},
        "scenarios": [{"name": "class-wise", "targets": [{"classes": [3]}]},
                      {"name": "random", "targets": [{"fraction": 0.1}]}],
        "seeds": [0],
        "methods": [{"name": "Finetune", "class_path": "lightning_unlearn.methods.Finetune",
                     "init_args": {"lr": 0.01}, "max_epochs": 1}],
        "trainer": {"accelerator": "cpu", "devices": 1, "num_threads": 1},
        "evaluator": {"mia": False, "zrf": False, "plots": False},  # the gap: accuracies only
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def tiny(seed: int = 0) -> AllCNN:
    """A 0.1-width All-CNN for 8x8 digits, seeded: the small methods' tests unlearn from it."""
    torch.manual_seed(seed)
    return AllCNN(num_classes=10, in_channels=1, image_size=8, width=0.1, mean=[0.3], std=[0.3])


def tiny_dm(**kwargs) -> DigitsDataModule:
    """8x8 digits, batch 32, forgetting class ``FORGET_CLASS`` unless ``forget`` is given."""
    kwargs.setdefault("forget", ForgetSpec(classes=[FORGET_CLASS]))
    return DigitsDataModule(image_size=8, batch_size=32, **kwargs)


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def accuracy(model: torch.nn.Module, dm: DigitsDataModule, split: str) -> float:
    """``model``'s accuracy on a split of ``dm`` (eval mode)."""
    model.eval()
    with torch.no_grad():
        return float(torch.cat([(model(b[0]).argmax(1) == b[1]).float() for b in dm.loader(split)]).mean())
