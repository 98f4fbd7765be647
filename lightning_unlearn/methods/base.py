"""What every unlearning method shares: the trained backbone to start from, frozen reference copies, the optimizer, the
splits it trains on, and timing.

A method is a plain ``LightningModule``: ``Trainer(...).fit(method, datamodule=dm)`` runs it. Each method builds its own
training loader from the DataModule's splits (:meth:`UnlearningMethod.build_train_dataloader`; the DataModule's
``train_dataloader`` defers to it), so an epoch costs what the method needs and no more.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lightning_unlearn.backbones import Backbone
from lightning_unlearn.methods.guards import FiniteWeightsGuard, UnlearningFailedError, check_retain_collapse, retain_probe
from lightning_unlearn.data.datasets import SplitView
from lightning_unlearn.utils import eval_mode, param_dtype

OptimizerName = Literal["sgd", "adam"]


class Frozen(nn.Module):
    """A reference copy that stays in eval mode with no gradients, whatever ``.train()`` is called on its parent."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        self.training = False  # the wrapper too, so `.training` anywhere in a frozen copy reads False

    def train(self, mode: bool = True) -> Frozen:
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x)

    def features(self, x: Tensor) -> Tensor:
        return self.module.features(x)  # type: ignore[operator]


class UnlearningMethod(pl.LightningModule):
    """Base class. Subclasses implement :meth:`build_train_dataloader` and ``training_step``.

    Args:
        backbone: the trained model to unlearn from (from Python). From the CLI it comes from ``--original_ckpt``
            through :meth:`attach`.
        lr: learning rate. momentum, weight_decay: optimizer settings (SGD; Adam ignores momentum).
        optimizer: ``"sgd"`` or ``"adam"``.
        batch_size: batch size of the method's own loaders (default: the DataModule's).
    """

    #: Splits the method trains on, for docs and reports.
    train_splits: tuple[str, ...] = ()
    #: Whether :meth:`attach` keeps a frozen copy of the original model as ``self.original``.
    keeps_original: bool = False
    #: Retained-accuracy collapse guard: ``fit`` fails (:class:`UnlearningFailedError`) when the unlearned model's
    #: accuracy on (a sample of) D_r ends below ``chance + retain_collapse * (original - chance)``; ``None``: off.
    retain_collapse: float | None = 0.1
    #: How many D_r samples (evenly spaced) the guard evaluates, before and after unlearning.
    retain_probe_samples: int = 512

    def __init__(
        self,
        backbone: Backbone | None = None,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        optimizer: OptimizerName = "sgd",
        batch_size: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        self.model: Backbone | None = None
        self.original: Frozen | None = None
        self.unlearn_time_s: float | None = None
        #: Epochs run when :meth:`stop_when_forgotten` ended ``fit`` early (``None``: ran the whole schedule).
        self.stopped_epoch: int | None = None
        self._t0: float | None = None
        self._retain_before: float | None = None
        if backbone is not None:
            self.attach(backbone)

    # -- model ---------------------------------------------------------------------------------------------------
    def attach(self, backbone: Backbone) -> None:
        """Start from ``backbone`` (the trained original). Builds the frozen copies the method needs."""
        if not hasattr(backbone, "features") or not isinstance(getattr(backbone, "head", None), nn.Linear):
            raise TypeError(
                "The backbone must follow the lightning_unlearn interface (`features(x)`, an nn.Linear `head`); "
                f"got {type(backbone).__name__}. Wrap it or use a model from lightning_unlearn.backbones."
            )
        self.model = backbone
        if self.keeps_original:
            self.original = Frozen(backbone)
        self.on_attach(backbone)

    def on_attach(self, backbone: Backbone) -> None:
        """Hook for subclasses: build further frozen copies or buffers from the original backbone."""

    def _require_model(self) -> Backbone:
        if self.model is None:
            raise RuntimeError(
                f"{type(self).__name__} has no model to unlearn: pass `backbone=` (Python) or `--original_ckpt` (CLI)."
            )
        return self.model

    def forward(self, x: Tensor) -> Tensor:
        return self._require_model()(x)

    def unlearned_backbone(self) -> Backbone:
        """The result, with the original architecture and class count."""
        return self._require_model()

    # -- data ------------------------------------------------------------------------------------------------------
    @property
    def datamodule(self) -> Any:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None or not hasattr(dm, "splits"):
            raise RuntimeError(
                f"{type(self).__name__} needs an UnlearningDataModule (it reads the forget/retain splits): "
                "call `trainer.fit(method, datamodule=dm)`."
            )
        return dm

    @property
    def method_batch_size(self) -> int:
        return int(self.hparams.get("batch_size") or self.datamodule.batch_size)

    def build_train_dataloader(self, datamodule: Any) -> DataLoader | Any:  # pragma: no cover - abstract
        """The loader (or ``CombinedLoader``) of one unlearning epoch, built from ``datamodule``'s splits."""
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader | Any:
        return self.build_train_dataloader(self.datamodule)

    # -- optimisation ----------------------------------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self._require_model().parameters() if p.requires_grad]

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        params = self.trainable_parameters()
        if hp.optimizer == "adam":
            return torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.optimizer == "sgd":
            return torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        raise ValueError(f"Unknown optimizer {hp.optimizer!r}; choose 'sgd' or 'adam'.")

    # -- optional early stop on D_f accuracy --------------------------------------------------------------------------
    @torch.no_grad()
    def forget_accuracy(self) -> float:
        """Accuracy of the current model (``self(x)``, eval mode, no augmentation) on all of D_f.

        Every rank evaluates the whole of D_f with the same weights, so every rank gets the same number. The modules'
        train/eval modes are restored afterwards.
        """
        model = self._require_model()
        device, dtype = next(model.parameters()).device, param_dtype(model)
        correct = total = 0
        with eval_mode(model):
            for batch in self.datamodule.loader("forget", augment=False):
                x, y = batch[0].to(device, dtype), batch[1].to(device)
                correct += int((self(x).argmax(1) == y).sum())
                total += len(y)
        return correct / max(total, 1)

    @staticmethod
    def check_forget_acc_target(target: float | None) -> None:
        """Validate a ``stop_at_forget_acc`` argument: ``None`` or an accuracy in [0, 1]."""
        if target is not None and not 0.0 <= target <= 1.0:
            raise ValueError(f"stop_at_forget_acc must be in [0, 1] or None, got {target}.")

    def stop_when_forgotten(self, target: float | None) -> None:
        """End ``fit`` after this epoch when the D_f accuracy is at most ``target`` (``None``: never check).

        The accuracy is logged as ``unlearn/forget_acc`` whenever it is checked.

        For methods that fine-tune on D_f alone for a fixed number of epochs (Boundary Shrink/Expanding): on a small
        forget set the fixed schedule overshoots and costs retained accuracy once D_f is already forgotten.
        """
        if target is None:
            return
        acc = self.forget_accuracy()
        self.log("unlearn/forget_acc", acc, on_step=False, on_epoch=True, rank_zero_only=True)
        if acc <= target:
            self.stopped_epoch = int(self.current_epoch) + 1
            self.trainer.should_stop = True

    def configure_callbacks(self) -> list[pl.Callback]:
        """A :class:`FiniteWeightsGuard`: a run whose weights become NaN/inf stops, and is never checkpointed."""
        return [FiniteWeightsGuard()]

    # -- timing ----------------------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self._require_model()
        self._retain_before = retain_probe(self) if self.retain_collapse is not None else None
        self._t0 = time.perf_counter()

    def on_fit_end(self) -> None:
        if self._t0 is not None:
            self.unlearn_time_s = time.perf_counter() - self._t0
        check_retain_collapse(self, self._retain_before)

    def method_config(self) -> dict[str, Any]:
        """Name and hyper-parameters, for reports and the output checkpoint."""
        config = {"method": type(self).__name__, "hparams": dict(self.hparams), "train_splits": list(self.train_splits)}
        if self.stopped_epoch is not None:
            config["stopped_epoch"] = self.stopped_epoch
        return config


# -- helpers for methods that build their own loaders ------------------------------------------------------------------
_BATCHNORM = nn.modules.batchnorm._BatchNorm


def forget_split(datamodule: Any, augment: bool = False) -> SplitView:
    """D_f as a dataset, with a clear error when it is empty (nothing to unlearn)."""
    ds = datamodule.dataset("forget", augment=augment)
    if len(ds) == 0:
        raise ValueError(
            "The forget set D_f is empty: give the DataModule a `forget` spec (e.g. `ForgetSpec(classes=[3])`)."
        )
    return ds


def sharded_loader(
    module: UnlearningMethod, datamodule: Any, dataset: Dataset, *, shuffle: bool, batch_size: int
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


def set_training_mode(model: nn.Module, train_bn: bool) -> None:
    """Train mode for ``model``, with its BatchNorm layers in eval mode unless ``train_bn``.

    Lightning (>= 2.2) keeps whatever mode a module is in when ``fit`` starts, and checkpoints load in eval mode, so a
    method sets the mode it trains in explicitly. BatchNorm in train mode on D_f-only batches (a single class in
    class-wise forgetting) normalises with, and moves its running statistics towards, that class's statistics.
    """
    model.train()
    if not train_bn:
        for m in model.modules():
            if isinstance(m, _BATCHNORM):
                m.eval()
