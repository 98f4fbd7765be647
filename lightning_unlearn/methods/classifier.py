"""Plain supervised training: the original model (on D = D_r + D_f) and the gold, retrained model (on D_r)."""

from __future__ import annotations

import time
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from lightning_unlearn.backbones import Backbone
from lightning_unlearn.backbones.protocol import num_classes
from lightning_unlearn.checkpoints import META_KEY, load_backbone
from lightning_unlearn.data.datasets import unpack_batch
from lightning_unlearn.methods.guards import WATCH_EVERY_N_STEPS, check_step_watch, reset_step_watch, watch_step
from lightning_unlearn.methods.optim import make_optimizer
from lightning_unlearn.methods.steps import log_epoch_means, log_step
from lightning_unlearn.quiet import MethodNotices


class Classifier(pl.LightningModule):
    """Cross-entropy training of a backbone; what ``lightning_unlearn fit`` runs.

    Its checkpoints record, under ``"lightning_unlearn"``, the backbone config, the DataModule's splits (hashes of every
    index set) and ``train_time_s``, the wall time from the start of ``fit`` to the checkpoint: for the gold model this
    is the retraining cost that unlearning speed-ups are measured against. Resuming (``ckpt_path``) checks the splits.

    Args:
        backbone: the network (``num_classes``/``in_channels``/``image_size``/``mean``/``std`` are linked from the
            DataModule by the CLI).
        lr, momentum, weight_decay: SGD settings (Adam ignores momentum). Defaults are the usual CIFAR ResNet recipe.
        optimizer: ``"sgd"`` or ``"adam"``; ``--optimizer`` on the CLI replaces this whole choice.
        scheduler: ``"cosine"`` (annealed to 0 over ``max_epochs``) or ``"none"``.
        label_smoothing: passed to the cross-entropy.
    """

    #: Batches from this package's DataModule carry the sample index (``(x, y, index)``).
    takes_indexed_batches: bool = True

    def __init__(
        self,
        backbone: Backbone,
        lr: float = 0.05,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        optimizer: Literal["sgd", "adam"] = "sgd",
        scheduler: Literal["cosine", "none"] = "cosine",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        self.model = backbone
        n = num_classes(backbone)
        # validate_args reads the labels back to the host on every update: off on the training path
        self.train_acc = MulticlassAccuracy(num_classes=n, average="micro", validate_args=False)
        self.val_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self._fit_start: float | None = None
        self._prior_time = 0.0

    @classmethod
    def from_checkpoint(cls, path: str, datamodule: Any = None, **kwargs: Any) -> Classifier:
        """Rebuild from any lightning_unlearn checkpoint (weights only), checking it against ``datamodule``."""
        backbone, _ = load_backbone(path, datamodule)
        return cls(backbone, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    # -- steps -----------------------------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = unpack_batch(batch)
        logits = self.model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        # no host sync per step: the step is recorded on the device and read back every WATCH_EVERY_N_STEPS steps,
        # at epoch end and before a checkpoint (on_train_batch_end, on_train_epoch_end, on_save_checkpoint)
        watch_step(self, ~torch.isfinite(loss), _loss_message, loss)
        self.train_acc(logits.detach(), y)
        # the progress bar turns a logged value into a Python float (a sync) at every step, so the step loss goes to
        # the logger only, and only on the steps the logger writes (log_step: self.log's bookkeeping costs as much as
        # a small model's step on the CPU)
        log_step(self, "train/loss", loss, len(y))
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        check_step_watch(self, WATCH_EVERY_N_STEPS, batch_idx + 1)

    def on_train_epoch_end(self) -> None:
        check_step_watch(self)  # runs before ModelCheckpoint's epoch-end save
        log_epoch_means(self)  # `train/loss` of the epoch, for EarlyStopping/ModelCheckpoint

    def configure_callbacks(self) -> list[pl.Callback]:
        """The framework notices the CLI drops, dropped for this run (:class:`~lightning_unlearn.quiet.MethodNotices`).
        """
        return [MethodNotices()]

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = unpack_batch(batch)
        logits = self.model(x)
        self.val_acc(logits, y)
        self.log("val/loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log("val/acc", self.val_acc, prog_bar=True)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = unpack_batch(batch)
        logits = self.model(x)
        self.test_acc(logits, y)
        self.log("test/acc", self.test_acc)

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt = make_optimizer(self.parameters(), hp.optimizer, hp.lr, hp.momentum, hp.weight_decay)
        if hp.scheduler == "none":
            return opt
        t_max = max(1, int(self.trainer.max_epochs or 1)) if self._trainer is not None else 1
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    # -- provenance ------------------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        reset_step_watch(self)
        self._fit_start = time.perf_counter()

    def train_time_s(self) -> float:
        running = time.perf_counter() - self._fit_start if self._fit_start is not None else 0.0
        return self._prior_time + running

    def provenance(self) -> dict[str, Any]:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        splits = dm.splits_info() if dm is not None and hasattr(dm, "splits_info") else None
        train_on = getattr(dm, "train_on", None)
        return {
            "version": 1,
            "role": {"all": "original", "retain": "gold"}.get(str(train_on), "model"),
            "backbone": self.model.config() if callable(getattr(self.model, "config", None)) else None,
            "splits": splits,
            "train_time_s": self.train_time_s(),
            "epochs": int(self.current_epoch) + 1 if self._trainer is not None else 0,
            "hparams": dict(self.hparams),
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_step_watch(self)  # no checkpoint of a run whose loss went non-finite
        checkpoint[META_KEY] = self.provenance()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint.get(META_KEY) or {}
        self._prior_time = float(meta.get("train_time_s") or 0.0)
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and meta.get("splits") and hasattr(dm, "verify_splits"):
            dm.verify_splits(meta["splits"], "the checkpoint being resumed")


def _loss_message(step: int, epoch: int, values: list[float]) -> str:
    return f"Training loss became {values[0]} at step {step} (epoch {epoch}); lower `lr` or check the data."
