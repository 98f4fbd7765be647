"""Run Boundary Shrink, Boundary Expanding, Fisher Forgetting, SalUn, l1-sparse and SSD on one process or under DDP and
save the results.

Run by ``tests/test_ddp_precision.py``: ``python tests/scripts/ddp_methods.py --devices N --out results.pt``. With
``--devices 2`` Lightning's ``strategy="ddp"`` re-launches this script for rank 1 (so it must be a standalone script);
only rank 0 writes ``--out``.

Both runs see the same global batches: no shuffle, no augmentation, per-rank batch = global batch / devices, a forget
set whose size is a multiple of the global batch, and BatchNorm in eval mode (train mode would normalise per rank).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lightning_unlearn.backbones import AllCNN  # noqa: E402
from lightning_unlearn.data import DigitsDataModule, ForgetSpec  # noqa: E402
from lightning_unlearn.methods import (  # noqa: E402
    SCRUB,
    UNSIR,
    BoundaryExpanding,
    BoundaryShrink,
    FisherForgetting,
    L1Sparse,
    SalUn,
    SelectiveSynapticDampening,
)

GLOBAL_BATCH = 32
FORGET_SIZE = 64  # a multiple of GLOBAL_BATCH: every global batch is the same set of samples in both runs


def datamodule() -> DigitsDataModule:
    # Explicit forget indices are never held out, so D_f has exactly FORGET_SIZE samples.
    return DigitsDataModule(
        forget=ForgetSpec(indices=list(range(FORGET_SIZE))), image_size=8, augment=False, holdout_fraction=0.1
    )


def backbone(dm: DigitsDataModule) -> AllCNN:
    torch.manual_seed(0)
    return AllCNN(
        num_classes=dm.num_classes,
        in_channels=dm.in_channels,
        image_size=dm.image_size,
        width=0.1,
        mean=list(dm.mean),
        std=list(dm.std),
    )


class Seen(pl.Callback):
    """Records (epoch, pass, sample indices) of every training batch of a PhasedLoader method (SCRUB, UNSIR)."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, str, list[int]]] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: dict, batch_idx: int):
        ((phase, data),) = batch.items()
        self.seen.append((int(trainer.current_epoch), phase, data[2].tolist()))


def _params(method: pl.LightningModule) -> dict[str, torch.Tensor]:
    """The trained parameters (BatchNorm running statistics differ per rank in train mode; DDP syncs parameters)."""
    return {k: v.detach().clone() for k, v in method.model.named_parameters()}


def trainer(
    devices: int, max_epochs: int, limit_train_batches: int | None = None, callbacks: list | None = None
) -> pl.Trainer:
    extra = {"strategy": "ddp"} if devices > 1 else {}
    return pl.Trainer(
        accelerator="cpu",
        devices=devices,
        max_epochs=max_epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        limit_train_batches=limit_train_batches,
        callbacks=callbacks,
        **extra,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    per_rank = GLOBAL_BATCH // args.devices
    results: dict[str, object] = {"devices": args.devices}

    dm = datamodule()
    results["init_state"] = {k: v.detach().clone() for k, v in backbone(dm).state_dict().items()}
    bs = BoundaryShrink(backbone(dm), lr=0.05, batch_size=per_rank, shuffle=False, train_bn=False)
    t = trainer(args.devices, max_epochs=2)
    t.fit(bs, datamodule=dm)
    results["bs_labels"] = torch.as_tensor(bs.neighbour_labels)
    results["bs_stats"] = dict(bs.neighbour_stats)
    results["bs_state"] = {k: v.detach().clone() for k, v in bs.unlearned_backbone().state_dict().items()}

    dm = datamodule()
    be = BoundaryExpanding(backbone(dm), lr=0.05, batch_size=per_rank, shuffle=False, train_bn=False)
    t = trainer(args.devices, max_epochs=2)
    t.fit(be, datamodule=dm)
    results["be_state"] = {k: v.detach().clone() for k, v in be.unlearned_backbone().state_dict().items()}

    dm = datamodule()
    fi = FisherForgetting(backbone(dm), alpha=1e-6, batch_size=per_rank, seed=3)
    t = trainer(args.devices, max_epochs=1)
    t.fit(fi, datamodule=dm)
    results["fisher_diag"] = {k: v.clone() for k, v in (fi.fisher_diagonal or {}).items()}
    results["fisher_n"] = fi.fisher_num_samples
    results["fisher_state"] = {k: v.detach().clone() for k, v in fi.unlearned_backbone().state_dict().items()}
    results["world_size"] = t.world_size

    def state(method) -> dict:
        return {k: v.detach().clone() for k, v in method.unlearned_backbone().state_dict().items()}

    dm = datamodule()
    sa = SalUn(backbone(dm), lr=0.05, batch_size=per_rank, mask_batch_size=GLOBAL_BATCH)
    pl.seed_everything(0, verbose=False)
    trainer(args.devices, max_epochs=1, limit_train_batches=4).fit(sa, datamodule=dm)
    results["salun_mask"] = {k: v.cpu() for k, v in (sa.saliency or {}).items()}
    results["salun_state"] = state(sa)

    dm = datamodule()
    l1 = L1Sparse(backbone(dm), alpha=1e-3, lr=0.05, batch_size=per_rank)
    trainer(args.devices, max_epochs=2, limit_train_batches=4).fit(l1, datamodule=dm)
    results["l1_state"] = state(l1)
    results["l1_last_weight"] = l1.l1_weight

    dm = datamodule()
    ssd = SelectiveSynapticDampening(backbone(dm), alpha=3.0, lam=0.7, batch_size=GLOBAL_BATCH)
    trainer(args.devices, max_epochs=1).fit(ssd, datamodule=dm)
    results["ssd_importances"] = ssd.importances
    results["ssd_selected"] = ssd.selected
    results["ssd_state"] = state(ssd)

    if t.is_global_zero:
        torch.save(results, args.out)

    # SCRUB and UNSIR: each rank saves what it saw and its parameters (compared across ranks by the test)
    mine: dict[str, object] = {}
    seen = Seen()
    sc = SCRUB(backbone(dm), lr=0.05, msteps=1, forget_batch_size=per_rank, batch_size=4 * per_rank)
    trainer(args.devices, max_epochs=2, callbacks=[seen]).fit(sc, datamodule=dm)
    mine["scrub_seen"], mine["scrub_state"] = seen.seen, _params(sc)
    dm_c = DigitsDataModule(forget=ForgetSpec(classes=[3]), image_size=8, augment=False, holdout_fraction=0.1)
    seen = Seen()
    un = UNSIR(backbone(dm_c), noise_batch_size=8, noise_steps=3, noise_copies=2, retain_per_class=20,
               batch_size=4 * per_rank)
    t = trainer(args.devices, max_epochs=2, callbacks=[seen])
    t.fit(un, datamodule=dm_c)
    mine["unsir_seen"], mine["unsir_state"] = seen.seen, _params(un)
    mine["unsir_noise"] = {int(c): n.clone() for c, n in un.noise.items()}
    name = Path(args.out).stem.split(".")[0]
    torch.save(mine, Path(args.out).with_name(f"{name}.rank{t.global_rank}.pt"))
    print(f"rank {os.environ.get('LOCAL_RANK', '0')} done", flush=True)


if __name__ == "__main__":
    main()
