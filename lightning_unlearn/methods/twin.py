"""Twin Machine Unlearning (TMU): forget only the part of D_f that the gold (retrained) model would get wrong.

Hu et al., "Towards Aligned Data Removal via Twin Machine Unlearning" (arXiv 2408.11433; released code
github.com/abc321123444/TWIN-unlearning, titled "Towards Aligned Data Forgetting via Twin Machine Unlearning").
An aligned method matches the gold model's accuracy on D_f instead of driving it to zero. TMU predicts which D_f samples
are "hard" (misclassified by the gold model) from a *twin* problem whose gold model is known
(:mod:`~.twin_problem`), with a classifier on three per-sample features (:mod:`~.twin_features`,
:mod:`~.twin_classifier`), and unlearns only those (:mod:`~.twin_loss`). ``docs/methods/twin.md`` has the details.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.utils.data import ConcatDataset, DataLoader

from lightning_unlearn.backbones import Backbone
from lightning_unlearn.data.datasets import SplitView, batch_indices, unpack_batch
from lightning_unlearn.methods.base import OptimizerName, UnlearningMethod
from lightning_unlearn.methods.guards import watch_step
from lightning_unlearn.methods.steps import log_step
from lightning_unlearn.methods.twin_classifier import HardRule, hard_set_agreement
from lightning_unlearn.methods.twin_features import FEATURE_NAMES, FeatureName
from lightning_unlearn.methods.twin_loss import twin_unlearning_loss
from lightning_unlearn.methods.twin_problem import materialise, subset
from lightning_unlearn.methods.twin_split import predict_split
from lightning_unlearn.search_space import FloatRange, IntRange, SearchSpace
from lightning_unlearn.utils import eval_mode

__all__ = ["TwinUnlearning"]


class TwinUnlearning(UnlearningMethod):
    """Twin Machine Unlearning (Hu et al., TMU): predict which forget samples the gold model gets wrong ("hard") and
    unlearn only those, keeping the rest ("easy") and D_r.

    Precomputation, once at the start of ``fit`` (counted in ``unlearn_time_s``; every DDP rank repeats it, it is
    deterministic): D_e = held-out samples of D_f's classes, ``|D_e| = |D_f| (|D_r| + |D_f|) / |D_r|`` (paper Eq. 3),
    augmented copies when short; the twin ``f_t`` = ``f_o`` fine-tuned on ``D ∪ D_e`` (``twin_*``); D_e's labels
    ``easy = [argmax f_o(x) = y]``; features NF/AF/CF of D_e under ``f_t`` and of D_f under ``f_o``; an MLP 64-32 on the
    standardised features (``classifier_*``). Then the hard set of D_f (``hard_rule``):

    * ``"twin_rate"`` (default): per class, the ``q_c`` fraction of D_f the MLP finds least easy, ``q_c`` = the twin
      problem's hard rate (the original's error on the class's held-out samples, ``hard_rate_source``). The predicted
      hard rate follows the twin's; the MLP only ranks.
    * ``"paper"``: ``sigmoid(MLP) <= 0.5``. On memorising originals this says "easy" for every D_f sample
      (``docs/methods/twin.md``: the MLP's calibration does not transfer from D_e under f_t to D_f under f_o).

    Unlearning, ``max_epochs`` epochs over ``D_f ∪ (retain_fraction of D_r)`` (:func:`~.twin_loss.twin_unlearning_loss`)::

        L = mean_{D_r, easy D_f} CE(f(x), y)  -  hard_weight * mean_{hard D_f} min(CE(f(x), y), max_hard_loss)

    each mean over that group's samples in the batch (``unlearn_loss="random_labels"``, the code: ``+ hard_weight *
    CE(f(x), y~)``, ``y~ != y`` random), until D_f's accuracy is down to the predicted easy rate (``stop_at_split``).

    :attr:`tmu_report` (``unlearn.json["tmu"]``) holds the split, the hard rates, the classifier's held-out accuracy,
    sizes and timings; with a gold model also ``vs_gold``: the predicted hard set's precision and recall against the
    gold model's and the base rate (computed after the timer stops, never used for training).

    Args:
        backbone: the trained original model (from the CLI: ``--original_ckpt``).
        features: which of ``"nf"``, ``"af"``, ``"cf"`` the classifier uses (paper: all three; code: NF and CF).
        hard_rule: ``"twin_rate"`` or ``"paper"`` (above).
        hard_rate_source: ``"holdout"``: ``q_c`` measured on up to ``hard_rate_samples`` held-out samples of the class;
            ``"twin_set"``: on D_e only (the paper's twin problem as is; noisier).
        class_weight: ``"none"`` (paper) or ``"balanced"`` BCE for the MLP.
        unlearn_loss: ``"negative_gradient"`` (paper) or ``"random_labels"`` (code).
        start_from: unlearn from the ``"original"`` (paper) or the ``"twin"`` (code; D_e is then no clean non-member).
        twin_epochs, twin_lr, twin_optimizer, twin_batch_size, twin_retain_fraction, twin_augment: the twin model.
        nf_k, nf_normalize, bank_per_class: NF. af_epsilon, af_alpha, af_steps, af_target: AF (pixel-space PGD).
        cf_epochs, cf_lr, cf_optimizer, cf_batch_size, cf_fraction, cf_data: CF's model trained from scratch.
        classifier_epochs, classifier_lr, classifier_momentum, classifier_batch_size, classifier_holdout: the MLP.
        standardize: ``"twin"`` (D_f scaled with D_e's statistics) or ``"per_set"`` (each with its own, as the code).
        retain_fraction: fraction of D_r in the unlearning epochs. hard_weight, max_hard_loss: the hard term.
        loss_reduction: ``"group"``: the kept and the hard samples of a batch averaged separately (the hard ones weigh
            ``hard_weight`` together); ``"batch"``: both summed over the batch size (too weak on memorised samples).
        stop_at_split: end after the first epoch whose D_f accuracy is at most the predicted easy rate (every
            predicted-hard sample unlearnt); ``False``: the fixed ``max_epochs``.
        augment, lr, momentum, weight_decay, optimizer, batch_size: unlearning. seed: every random choice.
        split_file: also write :attr:`tmu_report` to this JSON file.
    """

    #: ``lightning_unlearn tune``'s search space (docs/tuning.md); overridable from YAML.
    search_space: ClassVar[SearchSpace] = {
        "lr": FloatRange(1e-4, 1e-1, log=True),
        "hard_weight": FloatRange(0.1, 10.0, log=True),
        "max_epochs": IntRange(1, 5),
    }

    train_splits = ("forget", "retain")
    keeps_original = True

    def __init__(
        self,
        backbone: Backbone | None = None,
        features: Sequence[FeatureName] = ("nf", "af", "cf"),
        hard_rule: HardRule = "twin_rate",
        hard_rate_source: Literal["holdout", "twin_set"] = "holdout",
        hard_rate_samples: int | None = 5000,
        class_weight: Literal["none", "balanced"] = "none",
        unlearn_loss: Literal["negative_gradient", "random_labels"] = "negative_gradient",
        start_from: Literal["original", "twin"] = "original",
        twin_epochs: int = 10,
        twin_lr: float = 1e-4,
        twin_optimizer: OptimizerName = "adam",
        twin_batch_size: int = 64,
        twin_retain_fraction: float = 1.0,
        twin_augment: bool = True,
        nf_k: int = 5,
        nf_normalize: bool = False,
        bank_per_class: int | None = None,
        af_epsilon: float = 4 / 255,
        af_alpha: float | None = None,
        af_steps: int = 5,
        af_target: Literal["soft", "hard"] = "soft",
        cf_epochs: int = 2,
        cf_lr: float = 1e-4,
        cf_optimizer: OptimizerName = "adam",
        cf_batch_size: int = 64,
        cf_fraction: float = 1.0,
        cf_data: Literal["retain", "train"] = "retain",
        classifier_epochs: int = 100,
        classifier_lr: float = 0.01,
        classifier_momentum: float = 0.9,
        classifier_batch_size: int = 128,
        classifier_holdout: float = 0.2,
        standardize: Literal["twin", "per_set"] = "twin",
        retain_fraction: float = 0.2,
        hard_weight: float = 0.3,
        max_hard_loss: float | None = 1.0,
        loss_reduction: Literal["group", "batch"] = "group",
        stop_at_split: bool = True,
        augment: bool = False,
        lr: float = 0.001,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        optimizer: OptimizerName = "sgd",
        batch_size: int | None = 64,
        seed: int = 0,
        split_file: str | None = None,
    ) -> None:
        feats = list(features)
        if not feats or any(f not in FEATURE_NAMES for f in feats) or len(set(feats)) != len(feats):
            raise ValueError(f"features must be a non-empty list of distinct names from {FEATURE_NAMES}, got {feats}.")
        for name, value, allowed in (
            ("hard_rule", hard_rule, ("twin_rate", "paper")),
            ("hard_rate_source", hard_rate_source, ("holdout", "twin_set")),
            ("class_weight", class_weight, ("none", "balanced")),
            ("unlearn_loss", unlearn_loss, ("negative_gradient", "random_labels")),
            ("start_from", start_from, ("original", "twin")),
            ("standardize", standardize, ("twin", "per_set")),
            ("loss_reduction", loss_reduction, ("group", "batch")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}.")
        for name, frac in (("twin_retain_fraction", twin_retain_fraction), ("cf_fraction", cf_fraction),
                           ("retain_fraction", retain_fraction)):
            if not 0.0 <= frac <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {frac}.")
        if nf_k < 1 or af_steps < 0 or af_epsilon < 0 or (hard_rate_samples is not None and hard_rate_samples < 1):
            raise ValueError(
                f"Need nf_k >= 1, af_steps >= 0, af_epsilon >= 0, hard_rate_samples >= 1 or null (got {nf_k}, "
                f"{af_steps}, {af_epsilon}, {hard_rate_samples})."
            )
        super().__init__(backbone=backbone, lr=lr, momentum=momentum, weight_decay=weight_decay, optimizer=optimizer,
                         batch_size=batch_size)
        self.hparams["features"] = feats
        #: What the precomputation found (``method_config()["tmu"]``); empty until ``fit`` (or :meth:`compute_split`).
        self.tmu_report: dict[str, Any] = {}
        #: Per-sample raw features (columns in ``features`` order) and labels of D_e and D_f, for analysis.
        self.feature_table: dict[str, Tensor] = {}
        self._split_key: bytes | None = None
        self._forget_sorted = torch.empty(0, dtype=torch.long)
        self._hard_sorted = torch.empty(0, dtype=torch.bool)
        self._random_sorted = torch.empty(0, dtype=torch.long)
        self._retain_indices: np.ndarray | None = None

    # -- precomputation ----------------------------------------------------------------------------------------------
    def compute_split(self, datamodule: Any) -> dict[str, Any]:
        """Predict easy/hard for every D_f sample (twin problem, features, classifier, ``hard_rule``).

        Fills :attr:`tmu_report` and the per-sample tables the training step reads, and returns the report. Runs on
        the original model's device; deterministic in ``seed``. Called by ``fit``; callable without a Trainer.
        """
        if self.original is None:
            raise RuntimeError("TwinUnlearning has no original model: attach a backbone first.")
        for name in ("forget", "retain", "holdout"):
            if len(datamodule.dataset(name)) == 0:
                raise ValueError(
                    f"TwinUnlearning needs a non-empty `{name}` split"
                    + (": set the DataModule's `holdout_fraction` > 0 (D_e is drawn from it)." if name == "holdout"
                       else ".")
                )
        split = predict_split(self.original, datamodule, self.hparams, int(self._require_model().head.out_features))
        self.feature_table = split.table
        self._forget_sorted, self._hard_sorted, self._random_sorted = split.forget, split.hard, split.random_labels
        seed = int(self.hparams.seed)
        retain = datamodule.dataset("retain")
        self._retain_indices = subset(retain, float(self.hparams.retain_fraction), np.random.default_rng(seed + 2)).indices
        if self.hparams.start_from == "twin":
            self._require_model().load_state_dict(split.twin_state)
        self.tmu_report = split.report
        self._split_key = np.asarray(datamodule.indices("forget"), dtype=np.int64).tobytes()
        r = self.tmu_report
        rank_zero_info(
            f"TwinUnlearning: D_e {r['twin']['size']} samples (easy rate {r['twin']['easy_rate']:.1%}), twin hard "
            f"rate {r['decision']['hard_rate']:.1%}; D_f predicted hard {r['split']['num_hard']}/"
            f"{len(self._forget_sorted)} ({r['timings_s']['total']:.1f} s)."
        )
        return self.tmu_report

    def _ensure_split(self, datamodule: Any) -> None:
        key = np.asarray(datamodule.indices("forget"), dtype=np.int64).tobytes()
        if self._split_key != key or not self.tmu_report:
            self.compute_split(datamodule)

    # -- Lightning -----------------------------------------------------------------------------------------------------
    def build_train_dataloader(self, datamodule: Any) -> DataLoader:
        self._ensure_split(datamodule)
        augment = bool(self.hparams.augment)
        forget = datamodule.dataset("forget", augment=augment)
        retain = datamodule.dataset("retain", augment=augment)
        assert self._retain_indices is not None
        retain = SplitView(retain.base, self._retain_indices, retain.transform)
        # the shuffle has its own seeded generator, so the run does not depend on the global seed (under DDP
        # Lightning's DistributedSampler, seeded too, takes over); augmentation (``augment``) follows the global seed
        workers = int(datamodule.num_workers)
        return DataLoader(
            ConcatDataset([forget, retain]),
            batch_size=self.method_batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(int(self.hparams.seed) + 3),
            num_workers=workers,
            persistent_workers=workers > 0,
        )

    def on_train_start(self) -> None:
        self._require_model().train()  # BatchNorm in train mode, as the TMU code (batches mix D_r and D_f)

    def on_train_epoch_end(self) -> None:
        n = len(self._hard_sorted)
        if self.hparams.stop_at_split and n:  # done once D_f's accuracy is down to the predicted easy rate
            self.stop_when_forgotten((int((~self._hard_sorted).sum()) + 0.5) / n)  # half a sample: float rounding

    def hard_mask(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """For a batch's sample indices: ``(is predicted-hard forget sample, its random label)``.

        Non-forget samples and predicted-easy forget samples are never hard; the random label is only meaningful
        where the mask is True (elsewhere it is 0).
        """
        sorted_idx = self._forget_sorted.to(indices.device)
        if sorted_idx.numel() == 0:
            zeros = torch.zeros_like(indices)
            return zeros.bool(), zeros
        pos = torch.searchsorted(sorted_idx, indices).clamp_(max=sorted_idx.numel() - 1)
        hard = (sorted_idx[pos] == indices) & self._hard_sorted.to(indices.device)[pos]
        random = torch.where(hard, self._random_sorted.to(indices.device)[pos], torch.zeros_like(indices))
        return hard, random

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        hp = self.hparams
        x, y = unpack_batch(batch)
        idx = batch_indices(batch)
        if idx is None:
            raise ValueError("TwinUnlearning needs sample indices in each batch: items (x, y, index).")
        hard, random = self.hard_mask(idx.long())
        logits = self._require_model()(x)
        loss, hard_ce = twin_unlearning_loss(logits, y, hard, mode=hp.unlearn_loss, random_targets=random,
                                             hard_weight=float(hp.hard_weight), max_hard_loss=hp.max_hard_loss,
                                             reduction=hp.loss_reduction)
        watch_step(self, ~torch.isfinite(loss), _loss_message, loss)  # no host sync per step (guards.StepWatch)
        log_step(self, "train/loss", loss, len(y))
        log_step(self, "train/hard_ce", hard_ce, len(y))
        return loss

    def on_fit_end(self) -> None:
        super().on_fit_end()  # the timer stops here; what follows is diagnostics
        trainer = self._trainer
        gold = getattr(trainer, "gold_model", None) if trainer is not None else None
        dm = getattr(trainer, "datamodule", None) if trainer is not None else None
        if gold is not None and dm is not None and self.tmu_report:
            self.tmu_report["vs_gold"] = self.compare_with_gold(gold, dm)
        path = self.hparams.split_file
        if path and self.tmu_report and (trainer is None or trainer.is_global_zero):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(json.dumps(self.tmu_report, indent=1))

    @torch.no_grad()
    def compare_with_gold(self, gold: nn.Module, datamodule: Any) -> dict[str, Any]:
        """The predicted split against the gold model's (easy = the gold model classifies the sample correctly): the
        hard set's precision and recall, the base rate (gold hard rate) and the confusion counts."""
        device = next(self._require_model().parameters()).device
        x_f, y_f, idx_f = materialise(datamodule, datamodule.dataset("forget"))
        gold = gold.to(device)
        with eval_mode(gold):
            correct = torch.cat([gold(x_f[i : i + 512].to(device)).argmax(1).cpu() == y_f[i : i + 512]
                                 for i in range(0, len(x_f), 512)])
        gold_easy = correct[torch.argsort(idx_f)]
        pred_easy = ~self._hard_sorted
        return {
            "gold_forget_accuracy": float(gold_easy.float().mean()),
            "predicted_easy_rate": float(pred_easy.float().mean()),
            "agreement": float((gold_easy == pred_easy).float().mean()),
            **hard_set_agreement(~pred_easy, ~gold_easy),
            "gold_easy_predicted_easy": int((gold_easy & pred_easy).sum()),
            "gold_easy_predicted_hard": int((gold_easy & ~pred_easy).sum()),
            "gold_hard_predicted_easy": int((~gold_easy & pred_easy).sum()),
            "gold_hard_predicted_hard": int((~gold_easy & ~pred_easy).sum()),
        }

    def method_config(self) -> dict[str, Any]:
        config = super().method_config()
        config["tmu"] = copy.deepcopy(self.tmu_report)
        return config


def _loss_message(step: int, epoch: int, values: list[float]) -> str:
    return f"TwinUnlearning loss became {values[0]} at step {step} (epoch {epoch}); lower `lr` or set `max_hard_loss`."
