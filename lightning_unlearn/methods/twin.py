"""Twin Machine Unlearning (TMU): forget only the part of D_f that the gold (retrained) model would get wrong.

Hu et al., "Towards Aligned Data Removal via Twin Machine Unlearning" (arXiv 2408.11433; released code
github.com/abc321123444/TWIN-unlearning, titled "Towards Aligned Data Forgetting via Twin Machine Unlearning").

An aligned unlearning method should match the gold model's accuracy on D_f, not drive it to zero: when part of a class
is forgotten the gold model still classifies many of those samples correctly ("easy"). TMU predicts which D_f samples
are "hard" by solving a *twin* unlearning problem whose gold model is known, and unlearns only those::

    original problem                          twin problem
    f_o trained on D = D_r ∪ D_f              f_t = f_o fine-tuned on D ∪ D_e     (D_e: held-out data f_o never saw)
    gold: retrain on D_r (unknown)            gold: f_o (known!) -> easy(x) = [argmax f_o(x) = y] on D_e
    features of D_f under f_o   --- MLP trained on twin features/labels --->  predicted easy/hard for D_f

See :mod:`lightning_unlearn.methods.twin_features` for the features and ``docs/methods/twin.md`` for the details.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, TensorDataset

from lightning_unlearn.backbones import Backbone, fresh_network
from lightning_unlearn.data.datasets import SplitView, batch_indices, unpack_batch
from lightning_unlearn.methods.base import OptimizerName, UnlearningMethod
from lightning_unlearn.methods.guards import watch_step
from lightning_unlearn.methods.optim import make_optimizer
from lightning_unlearn.methods.steps import log_step
from lightning_unlearn.methods.twin_features import (
    FEATURE_NAMES,
    FeatureName,
    Standardizer,
    adversarial_feature,
    draw_other_labels,
    group_holdout_split,
    nearest_distance,
    per_sample_loss,
    select_twin_set,
    train_easy_hard_classifier,
    train_from_scratch,
    twin_set_size,
    twin_unlearning_loss,
)
from lightning_unlearn.search_space import FloatRange, IntRange, SearchSpace
from lightning_unlearn.utils import eval_mode

__all__ = ["TwinUnlearning"]


class _XY(Dataset):
    """``(x, y)`` items of a dataset of ``(x, y, index)`` (so it concatenates with a ``TensorDataset(x, y)``)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x, y, *_ = self.dataset[i]
        return x, torch.as_tensor(int(y))


def _subset(view: SplitView, fraction: float, rng: np.random.Generator) -> SplitView:
    """A random ``fraction`` of a split (sorted, at least one sample when the split is not empty)."""
    if fraction >= 1.0 or len(view) == 0:
        return view
    if fraction <= 0.0:
        return SplitView(view.base, view.indices[:0], view.transform)
    n = max(1, int(round(fraction * len(view))))
    keep = np.sort(rng.choice(len(view), size=n, replace=False))
    return SplitView(view.base, view.indices[keep], view.transform, None if view.labels is None else view.labels[keep])


def _optimizer(name: str, params: Any, lr: float) -> torch.optim.Optimizer:
    return make_optimizer(params, name, lr, momentum=0.9)


class TwinUnlearning(UnlearningMethod):
    """Twin Machine Unlearning (Hu et al., TMU): predict which forget samples the gold model gets wrong ("hard") and
    unlearn only those, keeping the rest ("easy") and D_r.

    Precomputation, once at the start of ``fit`` (counted in ``unlearn_time_s``; every DDP rank repeats it, it is
    deterministic and needs no communication):

    1. **Twin problem.** D_e = held-out samples (``datamodule.dataset("holdout")``) of the classes in D_f, matched to
       D_f class by class, of size ``|D_e| = |D_f| (|D_r| + |D_f|) / |D_r|``: the twin problem retains ``D_r ∪ D_f``
       and forgets D_e, so this keeps its forgetting ratio equal to ``|D_f| / |D_r|`` (paper, Eq. 3); a class short of
       held-out samples is filled with
       augmented copies (the DataModule's training augmentation; random crop if it has none). The twin model
       ``f_t`` = the original ``f_o`` fine-tuned on ``D ∪ D_e`` (``twin_*``). In the twin problem ``f_o`` is the gold
       model, so D_e's generalization labels are known: ``easy(x) = [argmax f_o(x) = y]``.
    2. **Features** (:mod:`~lightning_unlearn.methods.twin_features`), on D_e under ``f_t`` and on D_f under ``f_o``:
       NF (mean of the ``nf_k`` nearest feature distances to D_r of the same class), AF (soft cross-entropy between
       the clean output and the output on a small PGD perturbation), CF (loss under a model of the same architecture
       trained from scratch for ``cf_epochs``).
    3. **Classifier.** MLP 64-32 (ReLU) on standardised features with BCE, SGD (``classifier_*``);
       ``classifier_holdout`` of D_e (grouped: copies stay with their source) measures its accuracy. It predicts
       easy/hard for D_f.

    Unlearning, ``max_epochs`` epochs over ``D_f ∪ (retain_fraction of D_r)``, shuffled together::

        L = (1/B) [ sum_{D_r, easy D_f} CE(f(x), y)  -  hard_weight * sum_{hard D_f} min(CE(f(x), y), max_hard_loss) ]
                                                       (unlearn_loss="negative_gradient", paper)
        hard term = + hard_weight * sum_{hard D_f} CE(f(x), y~),  y~ != y random    (unlearn_loss="random_labels", code)

    Results: :attr:`tmu_report` (``method_config()["tmu"]``, hence ``unlearn.json``) holds the predicted split
    (``split.forget_indices`` with ``split.predicted_easy``), the classifier's held-out accuracy, the twin set's size
    and the stage timings; with a gold model (``--gold_ckpt``) also ``vs_gold``: the agreement of the predicted split
    with the gold model's actual easy/hard labels (diagnostic only, computed after the timer stops).

    Defaults and their sources (``docs/methods/twin.md``): MLP 64-32, 100 epochs, SGD lr 0.01 momentum 0.9 (paper);
    NF k=5, AF epsilon 4/255, alpha epsilon/3, 5 steps, twin fine-tuning Adam lr 1e-4 for 10 epochs, CF 2 epochs Adam
    lr 1e-4, unlearning SGD lr 0.01 momentum 0.9 weight decay 5e-4 batch 64 for 5 epochs (TMU code).

    Args:
        backbone: the trained original model (from the CLI: ``--original_ckpt``).
        features: which of ``"nf"``, ``"af"``, ``"cf"`` the classifier uses (paper: all three; code: NF and CF).
        unlearn_loss: ``"negative_gradient"`` (paper: maximise the loss on hard samples) or ``"random_labels"``
            (code: fit random other labels on hard samples).
        start_from: unlearn from the ``"original"`` (paper) or from the ``"twin"`` model (code). The twin was
            fine-tuned on held-out data, which then is no longer a clean non-member set for membership inference.
        twin_epochs, twin_lr, twin_optimizer, twin_batch_size: fine-tuning of the twin model.
        twin_retain_fraction: fraction of D = D_r ∪ D_f that the twin fine-tunes on together with D_e (1.0: all of
            it, as the code).
        twin_augment: fill D_e with augmented copies when the held-out pool of a class is smaller than D_f's share.
        nf_k: neighbours averaged by NF. nf_normalize: L2-normalise features first (code). bank_per_class: cap on
            retained samples per class in the NF bank (``None``: all of D_r).
        af_epsilon, af_alpha, af_steps: PGD budget of AF in [0, 1] pixel units (``af_alpha`` default epsilon/3).
        af_target: ``"soft"``: ``CE(softmax(f(x)), f(x_adv))``; ``"hard"``: ``CE(f(x_adv), argmax f(x))``.
        cf_epochs, cf_lr, cf_optimizer, cf_batch_size: training of the curriculum model from scratch.
        cf_fraction: fraction of ``cf_data`` it trains on. cf_data: ``"retain"`` (D_r: neither D_f nor D_e seen, so
            CF is comparable between them) or ``"train"`` (D = D_r ∪ D_f, the code).
        classifier_epochs, classifier_lr, classifier_momentum, classifier_batch_size: MLP training.
        classifier_holdout: fraction of D_e's (grouped) samples held out to measure the classifier.
        standardize: ``"twin"``: D_f's features are standardised with D_e's statistics; ``"per_set"``: each set with
            its own (closer to the code, which min-max scales D_e and D_f separately).
        retain_fraction: fraction of D_r mixed into the unlearning epochs (drawn once).
        hard_weight: weight of the hard term. max_hard_loss: clamp of the ascent per sample (``None``: no clamp).
        augment: the DataModule's training augmentation on the unlearning batches.
        lr, momentum, weight_decay, optimizer, batch_size: unlearning optimizer and batch size.
        seed: seed of every random choice of the method (D_e, subsets, initialisations, shuffles, random labels).
        split_file: also write the predicted split and the classifier's accuracy to this JSON file.
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
        hard_weight: float = 1.0,
        max_hard_loss: float | None = 5.0,
        augment: bool = False,
        lr: float = 0.01,
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
        if unlearn_loss not in ("negative_gradient", "random_labels"):
            raise ValueError(f"unlearn_loss must be 'negative_gradient' or 'random_labels', got {unlearn_loss!r}.")
        if start_from not in ("original", "twin"):
            raise ValueError(f"start_from must be 'original' or 'twin', got {start_from!r}.")
        for name, value in (("twin_retain_fraction", twin_retain_fraction), ("cf_fraction", cf_fraction),
                            ("retain_fraction", retain_fraction)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}.")
        if nf_k < 1 or af_steps < 0 or af_epsilon < 0:
            raise ValueError(f"Need nf_k >= 1, af_steps >= 0, af_epsilon >= 0 (got {nf_k}, {af_steps}, {af_epsilon}).")
        super().__init__(
            backbone=backbone,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            optimizer=optimizer,
            batch_size=batch_size,
        )
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
    @property
    def _work_device(self) -> torch.device:
        if self.original is None:
            raise RuntimeError("TwinUnlearning has no original model: attach a backbone first.")
        return next(self.original.parameters()).device

    def _materialise(self, datamodule: Any, dataset: Dataset) -> tuple[Tensor, Tensor, Tensor]:
        xs, ys, idx = [], [], []
        for batch in datamodule.loader(dataset, shuffle=False):
            x, y = unpack_batch(batch)
            xs.append(x.float())
            ys.append(y.long())
            i = batch_indices(batch)
            idx.append(i.long() if i is not None else torch.full_like(y, -1))
        if not xs:
            return torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
        return torch.cat(xs), torch.cat(ys), torch.cat(idx)

    def _batched(self, fn: Any, x: Tensor, y: Tensor, batch_size: int) -> Tensor:
        device = self._work_device
        out = [
            fn(x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)) for i in range(0, len(x), batch_size)
        ]
        return torch.cat(out) if out else torch.empty(0, device=device)

    def _augment_copies(self, datamodule: Any, x: Tensor, is_copy: np.ndarray, seed: int) -> Tensor:
        """Apply the DataModule's training augmentation (random crop if it has none) to the copies, seeded."""
        if not is_copy.any():
            return x
        transform = datamodule.train_transform()
        if transform is None:
            from torchvision.transforms import v2

            size = int(x.shape[-1])
            transform = v2.RandomCrop(size, padding=max(1, size // 8))
        x = x.clone()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for i in np.flatnonzero(is_copy):
                x[i] = transform(x[i])
        return x

    def _loader_fn(self, dataset: Dataset, batch_size: int, seed: int, num_workers: int = 0) -> Any:
        def batches(epoch: int) -> DataLoader:
            gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
            return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=gen, num_workers=num_workers)

        return batches

    def compute_split(self, datamodule: Any) -> dict[str, Any]:
        """Steps 1-3 (twin model, features, classifier): predict easy/hard for every D_f sample.

        Fills :attr:`tmu_report` and the per-sample tables the training step reads, and returns the report. Runs on
        the original model's device; deterministic in ``seed``. Called by ``fit``; callable without a Trainer.
        """
        hp = self.hparams
        seed = int(hp.seed)
        device = self._work_device
        assert self.original is not None
        original = self.original
        ebs = int(datamodule.eval_batch_size)
        t_start = time.perf_counter()

        forget_ds = datamodule.dataset("forget")
        retain_ds = datamodule.dataset("retain")
        holdout_ds = datamodule.dataset("holdout")
        if len(forget_ds) == 0:
            raise ValueError("TwinUnlearning: the forget set D_f is empty; give the DataModule a `forget` spec.")
        if len(retain_ds) == 0:
            raise ValueError("TwinUnlearning needs retained data D_r (it is empty).")
        if len(holdout_ds) == 0:
            raise ValueError(
                "TwinUnlearning builds its twin set D_e from the held-out split, which is empty: set the DataModule's "
                "`holdout_fraction` > 0."
            )
        x_f, y_f, idx_f = self._materialise(datamodule, forget_ds)

        # 1. the twin set D_e and the twin model f_t = f_o fine-tuned on D ∪ D_e
        # The twin problem retains D = D_r ∪ D_f (paper, Eq. 3): |D_e| / |D| = |D_f| / |D_r|.
        size = twin_set_size(len(forget_ds), len(retain_ds), len(retain_ds) + len(forget_ds))
        sel = select_twin_set(holdout_ds.targets, y_f.numpy(), seed=seed, size=size, augment=bool(hp.twin_augment))
        pool = SplitView(holdout_ds.base, holdout_ds.indices[np.unique(sel.positions)])
        x_pool, y_pool, idx_pool = self._materialise(datamodule, pool)
        where = {int(i): j for j, i in enumerate(idx_pool.tolist())}
        rows = torch.as_tensor([where[int(holdout_ds.indices[p])] for p in sel.positions], dtype=torch.long)
        x_e = self._augment_copies(datamodule, x_pool[rows], sel.is_copy, seed)
        y_e = y_pool[rows]
        groups_e = idx_pool[rows].numpy()

        rng = np.random.default_rng(seed)
        train_views = [_subset(retain_ds, float(hp.twin_retain_fraction), rng), forget_ds]
        twin_data = ConcatDataset([*(_XY(v) for v in train_views), TensorDataset(x_e, y_e)])
        twin = copy.deepcopy(original.module).requires_grad_(True).to(device)
        train_from_scratch(
            twin,
            self._loader_fn(twin_data, int(hp.twin_batch_size), seed, datamodule.num_workers),
            int(hp.twin_epochs),
            _optimizer(hp.twin_optimizer, twin.parameters(), float(hp.twin_lr)),
            device,
        )
        twin.requires_grad_(False).eval()
        t_twin = time.perf_counter()

        # generalization labels of D_e: the twin problem's gold model is the original
        with torch.no_grad():
            logits_e = self._batched(lambda x, y: original(x).float(), x_e, y_e, ebs)
            easy_e = (logits_e.argmax(1).cpu() == y_e)
            original_forget_correct = self._batched(lambda x, y: original(x).argmax(1) == y, x_f, y_f, ebs).cpu()

        # 2. features: D_e under the twin model, D_f under the original model
        cols_e: dict[str, Tensor] = {}
        cols_f: dict[str, Tensor] = {}
        feats = list(hp.features)
        if "nf" in feats:
            bank_view = retain_ds
            if hp.bank_per_class is not None:
                bank_view = self._per_class_subset(retain_ds, int(hp.bank_per_class), rng)
            bank_t, bank_o, bank_y = [], [], []
            with torch.no_grad():
                for batch in datamodule.loader(bank_view, shuffle=False):
                    x, y = unpack_batch(batch)
                    x = x.to(device)
                    bank_t.append(twin.features(x).float())
                    bank_o.append(original.features(x).float())
                    bank_y.append(y.to(device))
                phi_e = self._batched(lambda x, y: twin.features(x).float(), x_e, y_e, ebs)
                phi_f = self._batched(lambda x, y: original.features(x).float(), x_f, y_f, ebs)
            by = torch.cat(bank_y)
            kw = dict(k=int(hp.nf_k), normalize=bool(hp.nf_normalize))
            cols_e["nf"] = nearest_distance(phi_e, y_e.to(device), torch.cat(bank_t), by, **kw).cpu()
            cols_f["nf"] = nearest_distance(phi_f, y_f.to(device), torch.cat(bank_o), by, **kw).cpu()
            if set(y_f.tolist()) - set(by.tolist()):
                rank_zero_warn(
                    "TwinUnlearning: D_r holds no sample of some forgotten class (class-wise forgetting), so NF of "
                    "those samples is measured against all retained samples. TMU is meant for sub-class forgetting."
                )
        if "af" in feats:
            af = dict(epsilon=float(hp.af_epsilon), alpha=hp.af_alpha, steps=int(hp.af_steps), target=hp.af_target)
            gen = torch.Generator().manual_seed(seed)
            cols_e["af"] = self._batched(lambda x, y: adversarial_feature(twin, x, y, generator=gen, **af), x_e, y_e,
                                         ebs).cpu()
            cols_f["af"] = self._batched(lambda x, y: adversarial_feature(original, x, y, generator=gen, **af), x_f,
                                         y_f, ebs).cpu()
        if "cf" in feats:
            curriculum = self._train_curriculum_model(datamodule, retain_ds, forget_ds, rng)
            cols_e["cf"] = self._batched(lambda x, y: per_sample_loss(curriculum, x, y), x_e, y_e, ebs).cpu()
            cols_f["cf"] = self._batched(lambda x, y: per_sample_loss(curriculum, x, y), x_f, y_f, ebs).cpu()
            del curriculum
        feat_e = torch.stack([cols_e[f] for f in feats], dim=1)
        feat_f = torch.stack([cols_f[f] for f in feats], dim=1)
        t_feat = time.perf_counter()

        # 3. the easy/hard classifier, trained on D_e (minus a grouped held-out part), applied to D_f
        held = torch.as_tensor(group_holdout_split(groups_e, float(hp.classifier_holdout), seed))
        scaler = Standardizer().fit(feat_e[~held])
        z_e = scaler.transform(feat_e)
        z_f = scaler.transform(feat_f) if hp.standardize == "twin" else Standardizer().fit(feat_f).transform(feat_f)
        mlp = train_easy_hard_classifier(
            z_e[~held],
            easy_e[~held],
            epochs=int(hp.classifier_epochs),
            lr=float(hp.classifier_lr),
            momentum=float(hp.classifier_momentum),
            batch_size=int(hp.classifier_batch_size),
            seed=seed,
        )
        pred_e = mlp.predict_easy(z_e)
        pred_f = mlp.predict_easy(z_f)
        t_clf = time.perf_counter()
        self.feature_table = {
            "twin_features": feat_e, "twin_easy": easy_e, "twin_heldout": held, "twin_predicted_easy": pred_e,
            "forget_features": feat_f, "forget_indices": idx_f, "forget_predicted_easy": pred_f,
        }

        # tables for the training step, in sorted D_f index order
        order = torch.argsort(idx_f)
        self._forget_sorted = idx_f[order].clone()
        self._hard_sorted = (~pred_f)[order].clone()
        gen = torch.Generator().manual_seed(seed + 1)
        num_classes = int(self._require_model().head.out_features)
        self._random_sorted = draw_other_labels(y_f[order], num_classes, gen)
        self._retain_indices = _subset(retain_ds, float(hp.retain_fraction), np.random.default_rng(seed + 2)).indices
        if hp.start_from == "twin":
            self._require_model().load_state_dict(twin.state_dict())

        def acc(pred: Tensor, truth: Tensor) -> float | None:
            return float((pred == truth).float().mean()) if len(truth) else None

        def balanced(pred: Tensor, truth: Tensor) -> float | None:
            parts = [float((pred[truth == v] == v).float().mean()) for v in (True, False) if (truth == v).any()]
            return float(np.mean(parts)) if parts else None

        self.tmu_report = {
            "features": feats,
            "twin": {
                "size": len(sel),
                "augmented_copies": sel.num_copies,
                "real_samples": len(sel) - sel.num_copies,
                "forget_size": len(forget_ds),
                "retain_size": len(retain_ds),
                "easy_rate": float(easy_e.float().mean()),
                "finetune_samples": len(twin_data),
            },
            "classifier": {
                "heldout_accuracy": acc(pred_e[held], easy_e[held]),
                "heldout_balanced_accuracy": balanced(pred_e[held], easy_e[held]),
                "heldout_size": int(held.sum()),
                "heldout_easy_rate": float(easy_e[held].float().mean()) if held.any() else None,
                "train_accuracy": acc(pred_e[~held], easy_e[~held]),
                "train_size": int((~held).sum()),
                "hidden": [64, 32],
            },
            "feature_means": {
                "twin_easy": {f: float(cols_e[f][easy_e].mean()) if easy_e.any() else None for f in feats},
                "twin_hard": {f: float(cols_e[f][~easy_e].mean()) if (~easy_e).any() else None for f in feats},
                "forget": {f: float(cols_f[f].mean()) for f in feats},
            },
            "split": {
                "forget_indices": self._forget_sorted.tolist(),
                "predicted_easy": (~self._hard_sorted).tolist(),
                "num_easy": int((~self._hard_sorted).sum()),
                "num_hard": int(self._hard_sorted.sum()),
                "predicted_easy_rate": float((~self._hard_sorted).float().mean()),
            },
            "original_forget_accuracy": float(original_forget_correct.float().mean()),
            "timings_s": {
                "twin": t_twin - t_start,
                "features": t_feat - t_twin,
                "classifier": t_clf - t_feat,
                "total": t_clf - t_start,
            },
        }
        self._split_key = np.asarray(datamodule.indices("forget"), dtype=np.int64).tobytes()
        rank_zero_info(
            f"TwinUnlearning: D_e {len(sel)} samples ({sel.num_copies} augmented copies, easy rate "
            f"{self.tmu_report['twin']['easy_rate']:.1%}); classifier held-out accuracy "
            f"{self.tmu_report['classifier']['heldout_accuracy']}; D_f predicted easy "
            f"{self.tmu_report['split']['num_easy']}/{len(forget_ds)} ({t_clf - t_start:.1f} s)."
        )
        return self.tmu_report

    def _per_class_subset(self, view: SplitView, per_class: int, rng: np.random.Generator) -> SplitView:
        targets = np.asarray(view.targets)
        keep = []
        for c in np.unique(targets):
            members = np.flatnonzero(targets == c)
            keep.append(members if len(members) <= per_class else rng.choice(members, per_class, replace=False))
        keep_arr = np.sort(np.concatenate(keep))
        return SplitView(view.base, view.indices[keep_arr], view.transform)

    def _train_curriculum_model(
        self, datamodule: Any, retain_ds: SplitView, forget_ds: SplitView, rng: np.random.Generator
    ) -> nn.Module:
        """CF's model: the original's architecture, freshly initialised (seeded), trained ``cf_epochs`` from scratch."""
        hp = self.hparams
        model = fresh_network(self._require_model(), int(hp.seed)).to(self._work_device)
        views = [retain_ds] if hp.cf_data == "retain" else [retain_ds, forget_ds]
        data = ConcatDataset([_XY(_subset(v, float(hp.cf_fraction), rng)) for v in views])
        train_from_scratch(
            model,
            self._loader_fn(data, int(hp.cf_batch_size), int(hp.seed) + 1, datamodule.num_workers),
            int(hp.cf_epochs),
            _optimizer(hp.cf_optimizer, model.parameters(), float(hp.cf_lr)),
            self._work_device,
        )
        return model.requires_grad_(False).eval()

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
        loss, hard_ce = twin_unlearning_loss(
            logits,
            y,
            hard,
            mode=hp.unlearn_loss,
            random_targets=random,
            hard_weight=float(hp.hard_weight),
            max_hard_loss=hp.max_hard_loss,
        )
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
        """Agreement of the predicted easy/hard split with the gold model's (easy = gold classifies it correctly)."""
        device = self._work_device
        gold = gold.to(device)
        x_f, y_f, idx_f = self._materialise(datamodule, datamodule.dataset("forget"))
        with eval_mode(gold):
            correct = self._batched(lambda x, y: gold(x).argmax(1) == y, x_f, y_f, int(datamodule.eval_batch_size))
        correct = correct.cpu()
        gold_easy = correct[torch.argsort(idx_f)]
        pred_easy = ~self._hard_sorted
        return {
            "gold_forget_accuracy": float(gold_easy.float().mean()),
            "predicted_easy_rate": float(pred_easy.float().mean()),
            "agreement": float((gold_easy == pred_easy).float().mean()),
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
