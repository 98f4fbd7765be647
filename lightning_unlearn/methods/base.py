"""What every unlearning method shares: the trained backbone to start from, frozen reference copies, the optimizer, the
splits it trains on, and timing.

A method is a plain ``LightningModule``: ``Trainer(...).fit(method, datamodule=dm)`` runs it, ``trainer.test`` and
``trainer.predict`` evaluate and apply the current network. Each method builds its own training loader from the
DataModule's splits (:meth:`UnlearningMethod.build_train_dataloader`; the DataModule's ``train_dataloader`` defers to
it), so an epoch costs what the method needs and no more. The network is anything that follows the
:class:`~lightning_unlearn.backbones.Network` protocol; methods use nothing else of it.
"""

from __future__ import annotations

import copy
import time
from typing import Any, ClassVar, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad
from torch.utils.data import DataLoader, Dataset

from lightning_unlearn.backbones import Backbone
from lightning_unlearn.backbones.protocol import check_network, num_classes
from lightning_unlearn.methods.guards import (
    FiniteWeightsGuard,
    UnlearningFailedError,
    check_fit_data,
    check_retain_collapse,
    retain_probe,
    warn_at_chance,
)
from lightning_unlearn.data.datasets import unpack_batch
from lightning_unlearn.methods.loaders import PhasedLoader, forget_split, sharded_loader
from lightning_unlearn.methods.optim import OptimizerName, make_optimizer
from lightning_unlearn.methods.steps import EpochMeans
from lightning_unlearn.quiet import MethodNotices
from lightning_unlearn.search_space import SearchSpace
from lightning_unlearn.utils import accuracy, eval_mode

#: Also importable from here (the method files do): the optimizer names, the failure, the loader helpers.
__all__ = [
    "OptimizerName",
    "PhasedLoader",
    "UnlearningFailedError",
    "UnlearningMethod",
    "forget_split",
    "loss_gradient",
    "set_training_mode",
    "sharded_loader",
]


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
    """Base class. Subclasses implement :meth:`build_train_dataloader` and ``training_step``, and pass ``backbone``
    on to this constructor, which attaches it (:meth:`attach`, then :meth:`on_attach`) once the hyper-parameters are
    saved: an ``on_attach`` may read ``self.hparams`` but no attribute the subclass sets after ``super().__init__``.

    Args:
        backbone: the trained model to unlearn from: any network of the :class:`~lightning_unlearn.backbones.Network`
            protocol (checked). From the CLI it comes from ``--original_ckpt``, attached later by the trainer.
        lr: learning rate. momentum, weight_decay: optimizer settings (SGD; Adam ignores momentum).
        optimizer: ``"sgd"`` or ``"adam"``.
        batch_size: batch size of the method's own loaders (default: the DataModule's).
    """

    #: Splits the method trains on, for docs and reports.
    train_splits: tuple[str, ...] = ()
    #: ``lightning_unlearn tune``'s search space: ``{argument or "max_epochs": FloatRange | IntRange | Choice}``.
    search_space: ClassVar[SearchSpace] = {}
    #: Whether :meth:`attach` keeps a frozen copy of the original model as ``self.original``.
    keeps_original: bool = False
    #: False for a method that edits the weights without an optimizer (``configure_optimizers`` returns ``None``).
    uses_optimizer: bool = True
    #: Retained-accuracy collapse guard: ``fit`` fails (:class:`UnlearningFailedError`) when the unlearned model's
    #: accuracy on (a sample of) D_r ends below ``chance + retain_collapse * (original - chance)``; ``None``: off.
    retain_collapse: float | None = 0.1
    #: How many D_r samples (evenly spaced) the guard evaluates, before and after unlearning.
    retain_probe_samples: int = 512
    #: Batches from this package's DataModule carry the sample index (``(x, y, index)``).
    takes_indexed_batches: bool = True

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
        check_network(backbone, f"The network given to {type(self).__name__} ({type(backbone).__name__})")
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
        return make_optimizer(self.trainable_parameters(), hp.optimizer, hp.lr, hp.momentum, hp.weight_decay)

    # -- optional early stop on D_f accuracy --------------------------------------------------------------------------
    def forget_accuracy(self) -> float:
        """Accuracy of the current model (``self(x)``, eval mode, no augmentation) on all of D_f.

        Every rank evaluates the whole of D_f with the same weights, so every rank gets the same number. The modules'
        train/eval modes are restored afterwards.
        """
        return self.accuracy_on("forget")

    @torch.no_grad()
    def accuracy_on(self, data: str | Dataset) -> float:
        """Accuracy of the current model (eval mode, modes restored) on a split name or a dataset, on every rank."""
        model = self._require_model()
        loader = self.datamodule.loader(data, augment=False) if isinstance(data, str) else self.datamodule.loader(data)
        return accuracy(model, loader, forward=self)

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
        """A :class:`FiniteWeightsGuard` (a run whose weights become NaN/inf stops, and is never checkpointed), the
        epoch means of the logged losses (:class:`~lightning_unlearn.methods.steps.EpochMeans`: ``EarlyStopping``/
        ``ModelCheckpoint`` can monitor ``train/loss``) and the framework notices every method makes true dropped
        for this run (:class:`~lightning_unlearn.quiet.MethodNotices`)."""
        return [FiniteWeightsGuard(), EpochMeans(), MethodNotices(self)]

    # -- evaluation and prediction, as for any LightningModule -----------------------------------------------------
    def test_step(self, batch: Any, batch_idx: int) -> None:
        """``test/acc`` and ``test/loss`` of the current network (batches ``(x, y)`` or ``(x, y, index)``)."""
        x, y = unpack_batch(batch)
        logits = self(x)
        n = len(y)
        self.log("test/acc", (logits.argmax(1) == y).float().mean(), batch_size=n, sync_dist=True)
        self.log("test/loss", F.cross_entropy(logits.float(), y), batch_size=n, sync_dist=True)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """The current network's logits for a batch of images (``x``, or ``(x, ...)``/``{"image": x, ...}``)."""
        if isinstance(batch, Tensor):
            return self(batch)
        return self(batch["image"] if isinstance(batch, dict) else batch[0])

    # -- timing ----------------------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        self._require_model()
        check_fit_data(self)
        self._retain_before = retain_probe(self) if self.retain_collapse is not None else None
        if self._retain_before is not None:
            name = f"The network {type(self).__name__} starts from ({type(self._require_model()).__name__})"
            warn_at_chance(self._retain_before, num_classes(self._require_model()), name)
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


# -- helpers for methods ----------------------------------------------------------------------------------------------
_BATCHNORM = nn.modules.batchnorm._BatchNorm


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


def loss_gradient(
    model: nn.Module, x: Tensor, y: Tensor, reduction: Literal["mean", "sum"] = "mean"
) -> dict[str, Tensor]:
    """``grad_w CE(f_w(x), y)`` for every parameter with ``requires_grad``: ``{name: fp32 tensor}``.

    Computed as Fisher's :func:`~lightning_unlearn.methods.fisher.diagonal_fisher` does: through ``torch.func``
    (``grad`` of a ``functional_call``), so no ``.grad`` is touched and no DDP gradient hook fires; in fp32 outside
    autocast; with the model in eval mode (BatchNorm uses its running statistics; the modes are restored).
    """
    with eval_mode(model), torch.autocast(device_type=x.device.type, enabled=False):
        all_params = {n: p.detach().float() for n, p in model.named_parameters()}
        params = {n: all_params[n] for n, p in model.named_parameters() if p.requires_grad}
        frozen = {n: p for n, p in all_params.items() if n not in params}
        buffers = {n: (b.detach().float() if b.is_floating_point() else b) for n, b in model.named_buffers()}
        inputs, targets = x.detach().float(), y.long()

        def loss(p: dict[str, Tensor]) -> Tensor:
            out = functional_call(model, ({**p, **frozen}, buffers), (inputs,))
            return F.cross_entropy(out.float(), targets, reduction=reduction)

        return grad(loss)(params)
