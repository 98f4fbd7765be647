"""Amnesiac Machine Learning (Graves, Nagisetty & Ganesh, AAAI 2021): both of the paper's methods.

* :class:`AmnesiacRelabel` -- the paper's "unlearning" by relabelling: D_f gets random incorrect labels and the model
  trains a few epochs on D_r + relabelled D_f. This is what most later papers call the "Amnesiac" baseline.
* :class:`Amnesiac` with :class:`AmnesiacRecorder` -- the paper's "amnesiac unlearning": while the original model is
  trained, the recorder stores the parameter updates of every batch that held a sensitive sample; unlearning subtracts
  them (``theta_u = theta_T - sum_{b touches D_f} Delta theta_b``), optionally followed by a short repair on D_r.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from lightning_unlearn.backbones import Backbone
from lightning_unlearn.methods.amnesiac_updates import (
    HOW_TO_RECORD,
    UPDATES_FILENAME,
    AmnesiacRecorder,
    AmnesiacUpdatesError,
    load_updates,
    weights_fingerprint,
)
from lightning_unlearn.methods.base import OptimizerName
from lightning_unlearn.methods.finetune import Finetune
from lightning_unlearn.methods.random_labels import RandomLabels
from lightning_unlearn.search_space import FloatRange, IntRange, SearchSpace

__all__ = ["Amnesiac", "AmnesiacRecorder", "AmnesiacRelabel", "AmnesiacUpdatesError", "UPDATES_FILENAME"]

# -- relabelling variant -----------------------------------------------------------------------------------------------
class AmnesiacRelabel(RandomLabels):
    """Graves et al.'s relabelling "unlearning": train on D_r + D_f with fixed random *incorrect* labels on D_f.

    Same mechanism as :class:`RandomLabels` (concatenated, shuffled ``D_f + D_r``; labels applied by sample index) with
    the Amnesiac baseline's settings: labels drawn once among the other classes and kept for the whole run
    (``redraw_each_epoch=False``, ``include_true=False``, as in the authors' notebook, which relabels the dataset once),
    Adam ``lr=1e-4`` for 3 epochs (``configs/unlearn/amnesiac_relabel.yaml``). Steps and learning rate follow the
    setting used for this baseline by the Bad Teacher authors' code and reused by Foster et al.'s SSD code
    (``fit_one_unlearning_cycle(3, ..., lr=0.0001)`` with Adam, batch size 128); Graves et al.'s notebook instead
    continues the original Adam optimizer for several epochs. The batch size defaults to the DataModule's.
    """

    #: ``lightning_unlearn tune``'s search space (docs/tuning.md); overridable from YAML.
    search_space: ClassVar[SearchSpace] = {
        "lr": FloatRange(1e-5, 1e-2, log=True),
        "max_epochs": IntRange(1, 10),
    }

    def __init__(
        self,
        backbone: Backbone | None = None,
        lr: float = 1e-4,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        optimizer: OptimizerName = "adam",
        batch_size: int | None = None,
        include_true: bool = False,
        redraw_each_epoch: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(
            backbone=backbone,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            optimizer=optimizer,
            batch_size=batch_size,
            include_true=include_true,
            redraw_each_epoch=redraw_each_epoch,
            seed=seed,
        )



class Amnesiac(Finetune):
    """Amnesiac unlearning: subtract the recorded updates of the batches that held D_f, then optionally repair on D_r.

    ::

        theta_u = theta_T - sum_{steps s whose batch held a sensitive sample} (theta_s - theta_{s-1})

    At the start of ``fit`` (so also with ``max_epochs=0``) the updates file written by :class:`AmnesiacRecorder` is
    read and checked: the recorded sensitive set must cover the DataModule's D_f (samples of D_f in unrecorded batches
    would be left learned), the training set must be the same one (dataset name and size) and, with
    ``verify_weights``, the model must be the one the recording ended with (the last checkpoint of that run, not e.g.
    a best-validation checkpoint from an earlier epoch, whose later updates are not in the sum). Then the summed updates
    (and, with ``subtract_buffers``, the recorded buffer deltas: BatchNorm running statistics, with running variances
    clamped at 0) are subtracted. A recording whose sensitive set is larger than D_f subtracts more than needed (all
    batches that held any sensitive sample); the repair makes up for it.

    Repair: the Trainer's ``max_epochs`` passes of cross-entropy on D_r (augmented, shuffled), as :class:`Finetune`;
    ``max_epochs=0`` (or ``limit_train_batches=0``) only subtracts. Graves et al.'s notebook repairs by training on the
    retained data with the original Adam optimizer (default ``lr=1e-3``); hence Adam ``lr=1e-3`` here, for 1 epoch in
    ``configs/unlearn/amnesiac.yaml`` (the notebook trains several epochs; fewer keep the method cheap).

    Limits (from the paper): later updates depend on the subtracted ones (momentum, and the loss landscape they moved
    through), so subtraction is exact only in the sense that ``sum of all recorded updates = theta_T - theta_0``; the
    more batches hold D_f (class-wise forgetting touches nearly every batch), the closer the result is to the initial
    weights and the more repair it needs.

    Args:
        backbone: the trained model to unlearn (from the CLI: ``--original_ckpt``).
        updates: the :class:`AmnesiacRecorder` file (required; a clear error says how to record one).
        lr, momentum, weight_decay, optimizer, batch_size: repair optimizer and loader settings.
        subtract_buffers: also subtract the recorded buffer deltas (BatchNorm running statistics).
        verify_weights: check that the model is the one the recording ended with.
    """

    #: ``lightning_unlearn tune``'s search space (docs/tuning.md); overridable from YAML.
    search_space: ClassVar[SearchSpace] = {
        "lr": FloatRange(1e-5, 1e-2, log=True),
        "max_epochs": IntRange(0, 10),
    }

    train_splits = ("retain",)

    def __init__(
        self,
        backbone: Backbone | None = None,
        updates: str | None = None,
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        optimizer: OptimizerName = "adam",
        batch_size: int | None = None,
        subtract_buffers: bool = True,
        verify_weights: bool = True,
    ) -> None:
        super().__init__(
            backbone=backbone,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            optimizer=optimizer,
            batch_size=batch_size,
        )
        self.subtraction: dict[str, Any] | None = None

    # -- subtraction -----------------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.subtraction is None:
            self.subtraction = self.subtract_updates(getattr(self.trainer, "datamodule", None))

    @torch.no_grad()
    def subtract_updates(self, datamodule: Any = None) -> dict[str, Any]:
        """Check the recorded updates against the model and ``datamodule`` and subtract them (in place)."""
        if not self.hparams.updates:
            raise AmnesiacUpdatesError(
                "Amnesiac needs the parameter updates recorded while the original model was trained, and none were "
                f"given (`updates` is not set). {HOW_TO_RECORD}"
            )
        data = load_updates(self.hparams.updates)
        model = self._require_model()
        self._check_data(data, datamodule)
        if self.hparams.verify_weights:
            recorded = data.get("fingerprint")
            here = weights_fingerprint(model)
            same = recorded is not None and recorded.shape == here.shape
            if not same or not torch.allclose(recorded, here, rtol=1e-5, atol=1e-6):
                raise AmnesiacUpdatesError(
                    f"Amnesiac: the model being unlearned is not the one {self.hparams.updates} was recorded up "
                    "to. The recorder sums updates until the end of training, so unlearn the checkpoint written at the "
                    "end of that run (not one from an earlier epoch, e.g. a best-validation checkpoint), or set "
                    "`verify_weights: false` if you know they match."
                )
        params = dict(model.named_parameters())
        buffers = dict(model.named_buffers())
        sums: dict[str, Tensor] = data["param_sum"]
        missing = sorted(set(params) - set(sums))
        unexpected = sorted(set(sums) - set(params))
        if missing or unexpected:
            raise AmnesiacUpdatesError(
                f"Amnesiac: {self.hparams.updates} was recorded for another architecture (missing {missing[:5]}, "
                f"unexpected {unexpected[:5]})."
            )
        for n, p in params.items():
            if sums[n].shape != p.shape:
                raise AmnesiacUpdatesError(
                    f"Amnesiac: recorded update {n} has shape {tuple(sums[n].shape)}, not {tuple(p.shape)}."
                )
            p.sub_(sums[n].to(device=p.device, dtype=p.dtype))
        n_buffers = 0
        if self.hparams.subtract_buffers:
            for n, delta in data.get("buffer_sum", {}).items():
                if n in buffers and buffers[n].shape == delta.shape:
                    buffers[n].sub_(delta.to(device=buffers[n].device, dtype=buffers[n].dtype))
                    if n.endswith("running_var"):
                        buffers[n].clamp_(min=0.0)
                    n_buffers += 1
        steps = int(len(data.get("steps", [])))
        total = int(data.get("total_steps", steps))
        stats = {
            "subtracted_steps": steps,
            "recorded_total_steps": total,
            "subtracted_fraction": steps / total if total else 0.0,
            "subtracted_buffers": n_buffers,
            "updates": str(self.hparams.updates),
        }
        rank_zero_info(
            f"Amnesiac: subtracted the updates of {steps} of {total} training steps "
            f"({stats['subtracted_fraction']:.0%})."
        )
        if total and steps / total > 0.5:
            rank_zero_warn(
                f"Amnesiac: {steps} of {total} training steps held samples of D_f, so subtracting them undoes most "
                "of training (D_f is spread over nearly every batch); expect to need the repair epochs (Trainer "
                "`max_epochs`)."
            )
        return stats

    def _check_data(self, data: dict[str, Any], datamodule: Any) -> None:
        if datamodule is None or not hasattr(datamodule, "splits"):
            return
        where = self.hparams.updates
        if data.get("dataset") not in (None, datamodule.name) or (
            data.get("train_size") is not None and int(data["train_size"]) != len(datamodule.train_set)
        ):
            raise AmnesiacUpdatesError(
                f"Amnesiac: {where} was recorded on dataset {data.get('dataset')!r} with {data.get('train_size')} "
                f"training samples, but the DataModule is {datamodule.name!r} with {len(datamodule.train_set)}."
            )
        forget = np.asarray(datamodule.splits.forget, dtype=np.int64)
        sensitive = data.get("sensitive")
        if sensitive is not None:
            uncovered = np.setdiff1d(forget, sensitive.numpy())
            if len(uncovered):
                raise AmnesiacUpdatesError(
                    f"Amnesiac: the sensitive set recorded in {where} does not cover the DataModule's forget set: "
                    f"{len(uncovered)} of {len(forget)} D_f samples (e.g. {uncovered[:5].tolist()}) were not marked, "
                    "so the updates of their batches were not recorded and cannot be removed. Record again with the "
                    "forget spec you unlearn (the default `sensitive` is the DataModule's D_f) or `sensitive: all`. "
                    + HOW_TO_RECORD
                )
            extra = len(np.setdiff1d(sensitive.numpy(), forget))
            if extra:
                rank_zero_info(
                    f"Amnesiac: the recording marked {extra} samples outside D_f as sensitive; their batches are "
                    "subtracted as well."
                )

    # -- repair: Finetune's loader (D_r, augmented, shuffled) and cross-entropy step ---------------------------------
    def method_config(self) -> dict[str, Any]:
        config = super().method_config()
        config["subtraction"] = self.subtraction
        return config
