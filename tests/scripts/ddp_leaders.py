"""Run SFR-on's mask pass and RUM under DDP and save, per rank, what the test compares with one process.

Run by ``tests/test_leaders.py``: ``python tests/scripts/ddp_leaders.py --devices 2 --out results.pt``. Lightning's
``strategy="ddp"`` re-launches this script for rank 1 (so it must be a standalone script); rank r writes
``results.pt.r<r>``. The test imports :func:`run` for the one-process reference.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lightning_unlearn.backbones import AllCNN  # noqa: E402
from lightning_unlearn.data import DigitsDataModule, ForgetSpec  # noqa: E402
from lightning_unlearn.methods import RUM, SFRon  # noqa: E402


def datamodule() -> DigitsDataModule:
    return DigitsDataModule(forget=ForgetSpec(indices=list(range(64))), image_size=8, augment=False, batch_size=16)


def backbone(dm: DigitsDataModule) -> AllCNN:
    torch.manual_seed(0)
    return AllCNN(num_classes=10, in_channels=1, image_size=8, width=0.1, mean=list(dm.mean), std=list(dm.std))


def run(sfron_trainer: pl.Trainer, rum_trainer: pl.Trainer) -> dict:
    """SFR-on's mask pass (two steps) and RUM (null, Finetune, SalUn bins); what the test compares."""
    dm = datamodule()
    sfron = SFRon(backbone(dm), batch_size=16)
    sfron_trainer.fit(sfron, datamodule=dm)
    dm = datamodule()
    ft = {"class_path": "Finetune", "init_args": {"lr": 0.05}, "max_epochs": 1}
    rum = RUM(backbone(dm), methods=[None, ft, {"class_path": "SalUn", "max_epochs": 1}])
    rum_trainer.fit(rum, datamodule=dm)
    return {
        "sfron_mask": {k: v.cpu() for k, v in sfron.saliency.items()},
        "rum_split": rum.rum_report["split"],
        "rum_state": {k: v.detach().cpu().clone() for k, v in rum.model.state_dict().items()},
        "init_state": backbone(dm).state_dict(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)

    def trainer(**kwargs) -> pl.Trainer:
        return pl.Trainer(accelerator="cpu", devices=args.devices, strategy="ddp" if args.devices > 1 else "auto",
                          logger=False, enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                          **kwargs)

    t = trainer(max_epochs=1, limit_train_batches=2)
    result = run(t, trainer(max_epochs=1, limit_train_batches=2))
    torch.save({**result, "world_size": t.world_size}, f"{args.out}.r{t.global_rank}")


if __name__ == "__main__":
    main()
