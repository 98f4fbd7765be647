"""SCRUB (Kurmanji, Triantafillou, Hayes & Triantafillou, "Towards Unbounded Machine Unlearning", NeurIPS 2023) and
its rewinding variant SCRUB+R.

A student, initialised as the original model, moves away from the frozen original (the teacher) on D_f (max-steps)
and stays close to it, and correct, on D_r (min-steps). Reference code: github.com/meghdadk/SCRUB
(``thirdparty/repdistiller/helper/loops.py::train_distill``, ``distiller_zoo/KD.py::DistillKL`` and the notebooks).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_unlearn.backbones import Backbone
from lightning_unlearn.data.datasets import SplitView, unpack_batch
from lightning_unlearn.methods.base import OptimizerName, PhasedLoader, sharded_loader
from lightning_unlearn.methods.finetune import TrainModeMethod, check_finite, split_or_error
from lightning_unlearn.methods.steps import log_step
from lightning_unlearn.search_space import FloatRange, IntRange, SearchSpace

__all__ = ["SCRUB", "distill_kl", "rewind_index", "scrub_loss"]

RewindReference = Literal["holdout", "test"]


def distill_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``T^2 * (1/N) sum_i KL(softmax(t_i/T) || softmax(s_i/T))``: the reference code's ``DistillKL`` (in fp32)."""
    t = temperature
    log_s = F.log_softmax(student_logits.float() / t, dim=1)
    p_t = F.softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_s, p_t, reduction="sum") * (t * t) / student_logits.shape[0]


def scrub_loss(
    phase: Literal["max", "min"],
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor | None = None,
    alpha: float = 0.001,
    gamma: float = 0.99,
    temperature: float = 4.0,
) -> Tensor:
    """The loss each SCRUB step minimises::

        max-step (D_f):  - KL_T(teacher || student)
        min-step (D_r):  alpha * KL_T(teacher || student) + gamma * CE(student, y)

    with ``KL_T`` from :func:`distill_kl` (temperature ``T``, scaled by ``T^2``); the cross-entropy is at temperature 1.
    """
    kl = distill_kl(student_logits, teacher_logits, temperature)
    if phase == "max":
        return -kl
    if phase != "min" or targets is None:
        raise ValueError(f"phase must be 'max' or 'min' (with targets), got {phase!r}.")
    return alpha * kl + gamma * F.cross_entropy(student_logits.float(), targets)


def rewind_index(forget_errors: Sequence[float], reference_error: float) -> int:
    """SCRUB+R: the checkpoint whose D_f error is closest to the reference (first one on ties, as ``min``)."""
    if not forget_errors:
        raise ValueError("rewind_index needs at least one recorded D_f error.")
    return min(range(len(forget_errors)), key=lambda k: abs(forget_errors[k] - reference_error))


class SCRUB(TrainModeMethod):
    """SCRUB: for the first ``msteps`` epochs one max-pass over D_f then one min-pass over D_r, afterwards min-passes
    only (:func:`scrub_loss`); one optimizer for both, its learning rate decayed by ``lr_decay_rate`` after each epoch
    in ``lr_decay_epochs`` (the code's ``adjust_learning_rate``). The teacher is ``self.original`` (:class:`Frozen`).
    An epoch's batches come from a :class:`PhasedLoader`: ``{"forget": batch}`` (max-step) or ``{"retain": batch}``.

    SCRUB+R (``rewind=True``): the D_f error of the original and of the model after every epoch is recorded with a
    copy of the weights; at the end the weights are rewound to the epoch whose D_f error is closest to the reference
    error: the final model's error on held-out samples of the classes in D_f (``rewind_reference="holdout"``, the
    code's validation set restricted to the forget classes; ``"test"``: test samples of those classes), or a given
    number. ``self.rewind_info`` records the errors, the reference and the chosen epoch (0: the original).

    Defaults (``configs/unlearn/scrub.yaml``): the reference code's CIFAR-10 setting (``large_scale_unlearning.ipynb``):
    SGD lr 5e-4, momentum 0.9, weight decay 5e-4, ``msteps=2``, 3 epochs, ``alpha=0.001``, ``gamma=0.99``, ``T=4``,
    D_f batch 512, D_r batch 256, decay x0.1 after epochs 3, 5, 9.

    Args:
        backbone: the trained model (from the CLI: ``--original_ckpt``).
        lr, momentum, weight_decay, optimizer: optimizer settings.
        batch_size: D_r (min-step) batch size. forget_batch_size: D_f (max-step) batch size.
        msteps: number of leading epochs with a max-pass. alpha, gamma, temperature: :func:`scrub_loss`.
        lr_decay_epochs, lr_decay_rate: the step schedule (``MultiStepLR`` per epoch).
        rewind: SCRUB+R. rewind_reference: ``"holdout"``, ``"test"`` or a D_f error in [0, 1].
    """

    #: ``lightning_unlearn tune``'s search space (docs/tuning.md); overridable from YAML.
    search_space: ClassVar[SearchSpace] = {
        "lr": FloatRange(1e-4, 1e-1, log=True),
        "alpha": FloatRange(1e-4, 1.0, log=True),
        "gamma": FloatRange(0.5, 1.0),
        "msteps": IntRange(1, 3),
        "max_epochs": IntRange(2, 8),
    }

    keeps_original = True
    train_splits = ("forget", "retain")

    def __init__(
        self,
        backbone: Backbone | None = None,
        lr: float = 5e-4,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        optimizer: OptimizerName = "sgd",
        batch_size: int | None = 256,
        forget_batch_size: int = 512,
        msteps: int = 2,
        alpha: float = 0.001,
        gamma: float = 0.99,
        temperature: float = 4.0,
        lr_decay_epochs: Sequence[int] = (3, 5, 9),
        lr_decay_rate: float = 0.1,
        rewind: bool = False,
        rewind_reference: RewindReference | float = "holdout",
    ) -> None:
        if msteps < 0:
            raise ValueError(f"msteps must be >= 0, got {msteps}.")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        if forget_batch_size < 1 or (batch_size is not None and batch_size < 1):
            raise ValueError(f"batch sizes must be >= 1, got {batch_size} (D_r) and {forget_batch_size} (D_f).")
        if isinstance(rewind_reference, str) and rewind_reference not in ("holdout", "test"):
            raise ValueError(f"rewind_reference: 'holdout', 'test' or a D_f error in [0, 1], not {rewind_reference!r}.")
        if not isinstance(rewind_reference, str) and not 0.0 <= float(rewind_reference) <= 1.0:
            raise ValueError(f"rewind_reference as a number is a D_f error in [0, 1], got {rewind_reference}.")
        super().__init__(
            backbone=backbone,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            optimizer=optimizer,
            batch_size=batch_size,
        )
        self._snapshots: list[dict[str, Tensor]] = []
        self._forget_errors: list[float] = []
        self.rewind_info: dict[str, Any] | None = None

    # -- data ------------------------------------------------------------------------------------------------------
    def epoch_plan(self, epoch: int) -> tuple[str, ...]:
        """Passes of ``epoch`` (0-based): ``("forget", "retain")`` while ``epoch < msteps``, else ``("retain",)``."""
        return ("forget", "retain") if epoch < int(self.hparams.msteps) else ("retain",)

    def build_train_dataloader(self, datamodule: Any) -> PhasedLoader:
        name, hp = type(self).__name__, self.hparams
        forget = split_or_error(datamodule, "forget", augment=datamodule.augment, method=name)
        retain = split_or_error(datamodule, "retain", augment=datamodule.augment, method=name)
        bs = int(hp.batch_size or datamodule.batch_size)
        loaders = {
            "forget": sharded_loader(self, datamodule, forget, shuffle=True, batch_size=int(hp.forget_batch_size)),
            "retain": sharded_loader(self, datamodule, retain, shuffle=True, batch_size=bs),
        }
        return PhasedLoader(loaders, self.epoch_plan, lambda: self.current_epoch, horizon=int(hp.msteps) + 1)

    # -- optimisation ----------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        opt = super().configure_optimizers()
        hp = self.hparams
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(hp.lr_decay_epochs), gamma=hp.lr_decay_rate)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        (split, data), = batch.items()
        x, y = unpack_batch(data)
        assert self.original is not None
        with torch.no_grad():
            teacher = self.original(x)
        hp = self.hparams
        phase = "max" if split == "forget" else "min"
        loss = scrub_loss(phase, self._require_model()(x), teacher, y, hp.alpha, hp.gamma, hp.temperature)
        check_finite(loss, self)
        log_step(self, f"train/{phase}_loss", loss, len(y))
        return loss

    # -- SCRUB+R ---------------------------------------------------------------------------------------------------
    def _record(self) -> None:
        self._forget_errors.append(1.0 - self.forget_accuracy())
        state = self._require_model().state_dict()
        self._snapshots.append({k: v.detach().to("cpu", copy=True) for k, v in state.items()})

    def on_train_start(self) -> None:
        self._snapshots, self._forget_errors, self.rewind_info = [], [], None
        if self.hparams.rewind:
            self._record()  # epoch 0: the original

    def on_train_epoch_end(self) -> None:
        if self.hparams.rewind:
            self._record()

    def reference_error(self) -> float:
        """SCRUB+R's reference: the current model's error on held-out samples of D_f's classes (or the given number)."""
        ref = self.hparams.rewind_reference
        if not isinstance(ref, str):
            return float(ref)
        dm = self.datamodule
        classes = np.unique(dm.dataset("forget").targets)
        view = dm.dataset(ref)
        keep = np.isin(view.targets, classes)
        if not keep.any():
            raise ValueError(
                f"SCRUB+R: the {ref!r} split has no samples of the forgotten classes {classes.tolist()} to give the "
                "reference error; use rewind_reference='test' or 'holdout' (a DataModule with holdout_fraction > 0)."
            )
        return 1.0 - self.accuracy_on(SplitView(view.base, view.indices[keep], None))

    def on_train_end(self) -> None:
        if not self.hparams.rewind or not self._snapshots:
            return
        reference = self.reference_error()
        k = rewind_index(self._forget_errors, reference)
        self._require_model().load_state_dict(self._snapshots[k])
        self.rewind_info = {"forget_errors": list(self._forget_errors), "reference_error": reference, "epoch": k}
        self._snapshots = []

    def method_config(self) -> dict[str, Any]:
        config = super().method_config()
        if self.rewind_info is not None:
            config["rewind"] = copy.deepcopy(self.rewind_info)
        return config
