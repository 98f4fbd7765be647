"""TMU's twin problem on a DataModule: the twin set D_e, the twin model, the features of D_e and D_f, the labels.

Hu et al., "Towards Aligned Data Removal via Twin Machine Unlearning" (TMU; arXiv 2408.11433), sec. 4.1-4.3::

    original problem                          twin problem
    f_o trained on D = D_r ∪ D_f              f_t = f_o fine-tuned on D ∪ D_e     (D_e: held-out data f_o never saw)
    gold: retrain on D_r (unknown)            gold: f_o (known!) -> easy(x) = [argmax f_o(x) = y] on D_e

:func:`build_twin_problem` computes everything the easy/hard predictor (:mod:`~.twin_classifier`) needs: the raw
features of D_e under f_t and of D_f under f_o, and D_e's generalization labels.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, TensorDataset

from lightning_unlearn.backbones import fresh_network
from lightning_unlearn.data.datasets import SplitView, batch_indices, unpack_batch
from lightning_unlearn.methods.optim import make_optimizer
from lightning_unlearn.methods.twin_features import adversarial_feature, nearest_distance, per_sample_loss
from lightning_unlearn.methods.twin_features import train_from_scratch
from lightning_unlearn.methods.twin_set import select_twin_set, twin_set_size

__all__ = ["TwinData", "build_twin_problem", "materialise", "subset"]


@dataclass
class TwinData:
    """The twin problem's outputs. Rows of ``feat_f``/``y_f``/``idx_f`` are D_f in the DataModule's order.

    Attributes:
        feat_e, feat_f: ``(n_e, F)`` / ``(n_f, F)`` raw features (columns in ``features`` order).
        easy_e: D_e's generalization labels; groups_e: D_e's source sample (augmented copies share it).
        y_f, idx_f: D_f's labels and sample indices. cols_e, cols_f: the same features by name.
        twin: the twin model (eval mode, frozen). sizes: counts for the report. timings: seconds per stage.
    """

    feat_e: Tensor
    easy_e: Tensor
    y_e: Tensor
    groups_e: np.ndarray
    forget_correct: Tensor
    feat_f: Tensor
    y_f: Tensor
    idx_f: Tensor
    twin: nn.Module
    cols_e: dict[str, Tensor] = field(default_factory=dict)
    cols_f: dict[str, Tensor] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


class _XY(Dataset):
    """``(x, y)`` items of a dataset of ``(x, y, index)`` (so it concatenates with a ``TensorDataset(x, y)``)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x, y, *_ = self.dataset[i]
        return x, torch.as_tensor(int(y))


def subset(view: SplitView, fraction: float, rng: np.random.Generator) -> SplitView:
    """A random ``fraction`` of a split (sorted, at least one sample when the split is not empty)."""
    if fraction >= 1.0 or len(view) == 0:
        return view
    if fraction <= 0.0:
        return SplitView(view.base, view.indices[:0], view.transform)
    n = max(1, int(round(fraction * len(view))))
    keep = np.sort(rng.choice(len(view), size=n, replace=False))
    return SplitView(view.base, view.indices[keep], view.transform, None if view.labels is None else view.labels[keep])


def _per_class_subset(view: SplitView, per_class: int, rng: np.random.Generator) -> SplitView:
    targets = np.asarray(view.targets)
    keep = []
    for c in np.unique(targets):
        members = np.flatnonzero(targets == c)
        keep.append(members if len(members) <= per_class else rng.choice(members, per_class, replace=False))
    return SplitView(view.base, view.indices[np.sort(np.concatenate(keep))], view.transform)


def _optimizer(name: str, params: Any, lr: float) -> torch.optim.Optimizer:
    return make_optimizer(params, name, lr, momentum=0.9)


def materialise(datamodule: Any, dataset: Dataset) -> tuple[Tensor, Tensor, Tensor]:
    """``(x, y, index)`` of a whole split as CPU tensors, in the DataModule's (unshuffled, unaugmented) order."""
    xs, ys, idx = [], [], []
    for batch in datamodule.loader(dataset, shuffle=False):
        x, y = unpack_batch(batch)
        xs.append(x.float().cpu())
        ys.append(y.long().cpu())
        i = batch_indices(batch)
        idx.append(i.long().cpu() if i is not None else torch.full_like(y.cpu(), -1))
    if not xs:
        return torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    return torch.cat(xs), torch.cat(ys), torch.cat(idx)


def _batched(fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor, batch_size: int, device: Any) -> Tensor:
    out = [fn(x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)) for i in range(0, len(x), batch_size)]
    return torch.cat(out).cpu() if out else torch.empty(0)


def _augment_copies(datamodule: Any, x: Tensor, is_copy: np.ndarray, seed: int) -> Tensor:
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


def _loader_fn(dataset: Dataset, batch_size: int, seed: int, num_workers: int = 0) -> Callable[[int], DataLoader]:
    def batches(epoch: int) -> DataLoader:
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=gen, num_workers=num_workers)

    return batches


def build_twin_problem(original: nn.Module, datamodule: Any, hp: Mapping[str, Any], device: Any) -> TwinData:
    """Steps 1-2 of TMU: D_e and the twin model ``f_t`` (``f_o`` fine-tuned on D ∪ D_e), D_e's labels, and the
    features (``hp["features"]``) of D_e under ``f_t`` and of D_f under ``f_o``. ``hp``: the method's settings.
    Deterministic in ``hp["seed"]``; runs on ``device``."""
    seed = int(hp["seed"])
    ebs = int(datamodule.eval_batch_size)
    t0 = time.perf_counter()
    forget_ds, retain_ds = datamodule.dataset("forget"), datamodule.dataset("retain")
    holdout_ds = datamodule.dataset("holdout")
    x_f, y_f, idx_f = materialise(datamodule, forget_ds)

    # 1. D_e (ratio rule, paper Eq. 3: the twin problem retains D = D_r ∪ D_f) and f_t
    size = twin_set_size(len(forget_ds), len(retain_ds), len(retain_ds) + len(forget_ds))
    sel = select_twin_set(holdout_ds.targets, y_f.numpy(), seed=seed, size=size, augment=bool(hp["twin_augment"]))
    pool = SplitView(holdout_ds.base, holdout_ds.indices[np.unique(sel.positions)])
    x_pool, y_pool, idx_pool = materialise(datamodule, pool)
    where = {int(i): j for j, i in enumerate(idx_pool.tolist())}
    rows = torch.as_tensor([where[int(holdout_ds.indices[p])] for p in sel.positions], dtype=torch.long)
    x_e = _augment_copies(datamodule, x_pool[rows], sel.is_copy, seed)
    y_e, groups_e = y_pool[rows], idx_pool[rows].numpy()
    rng = np.random.default_rng(seed)
    train_views = [subset(retain_ds, float(hp["twin_retain_fraction"]), rng), forget_ds]
    twin_data = ConcatDataset([*(_XY(v) for v in train_views), TensorDataset(x_e, y_e)])
    twin = copy.deepcopy(getattr(original, "module", original)).requires_grad_(True).to(device)
    train_from_scratch(twin, _loader_fn(twin_data, int(hp["twin_batch_size"]), seed, datamodule.num_workers),
                       int(hp["twin_epochs"]), _optimizer(hp["twin_optimizer"], twin.parameters(), float(hp["twin_lr"])),
                       device)
    twin.requires_grad_(False).eval()
    t_twin = time.perf_counter()
    with torch.no_grad():  # the twin problem's gold model is the original
        easy_e = _batched(lambda x, y: original(x).argmax(1) == y, x_e, y_e, ebs, device).bool()
        forget_correct = _batched(lambda x, y: original(x).argmax(1) == y, x_f, y_f, ebs, device).bool()

    # 2. features: D_e under the twin, D_f under the original
    feats = list(hp["features"])
    cols_e: dict[str, Tensor] = {}
    cols_f: dict[str, Tensor] = {}
    if "nf" in feats:
        bank_view = retain_ds
        if hp["bank_per_class"] is not None:
            bank_view = _per_class_subset(retain_ds, int(hp["bank_per_class"]), rng)
        bank_t, bank_o, bank_y = [], [], []
        with torch.no_grad():
            for batch in datamodule.loader(bank_view, shuffle=False):
                x, y = unpack_batch(batch)
                x = x.to(device)
                bank_t.append(twin.features(x).float())
                bank_o.append(original.features(x).float())
                bank_y.append(y.to(device))
            phi_e = _batched(lambda x, y: twin.features(x).float(), x_e, y_e, ebs, device).to(device)
            phi_f = _batched(lambda x, y: original.features(x).float(), x_f, y_f, ebs, device).to(device)
        by = torch.cat(bank_y)
        kw = dict(k=int(hp["nf_k"]), normalize=bool(hp["nf_normalize"]))
        cols_e["nf"] = nearest_distance(phi_e, y_e.to(device), torch.cat(bank_t), by, **kw).cpu()
        cols_f["nf"] = nearest_distance(phi_f, y_f.to(device), torch.cat(bank_o), by, **kw).cpu()
        if set(y_f.tolist()) - set(by.tolist()):
            rank_zero_warn(
                "TwinUnlearning: D_r holds no sample of some forgotten class (class-wise forgetting), so NF of those "
                "samples is measured against all retained samples. TMU is meant for sub-class forgetting."
            )
    if "af" in feats:
        af = dict(epsilon=float(hp["af_epsilon"]), alpha=hp["af_alpha"], steps=int(hp["af_steps"]),
                  target=hp["af_target"])
        gen = torch.Generator().manual_seed(seed)
        cols_e["af"] = _batched(lambda x, y: adversarial_feature(twin, x, y, generator=gen, **af), x_e, y_e, ebs, device)
        cols_f["af"] = _batched(lambda x, y: adversarial_feature(original, x, y, generator=gen, **af), x_f, y_f, ebs,
                                device)
    if "cf" in feats:
        curriculum = _curriculum_model(original, datamodule, retain_ds, forget_ds, hp, rng, device)
        cols_e["cf"] = _batched(lambda x, y: per_sample_loss(curriculum, x, y), x_e, y_e, ebs, device)
        cols_f["cf"] = _batched(lambda x, y: per_sample_loss(curriculum, x, y), x_f, y_f, ebs, device)
        del curriculum
    sizes = {"size": len(sel), "augmented_copies": sel.num_copies, "real_samples": len(sel) - sel.num_copies,
             "forget_size": len(forget_ds), "retain_size": len(retain_ds), "finetune_samples": len(twin_data)}
    return TwinData(
        feat_e=torch.stack([cols_e[f] for f in feats], dim=1), easy_e=easy_e, y_e=y_e, groups_e=groups_e,
        forget_correct=forget_correct,
        feat_f=torch.stack([cols_f[f] for f in feats], dim=1), y_f=y_f, idx_f=idx_f, twin=twin,
        cols_e=cols_e, cols_f=cols_f, sizes=sizes,
        timings={"twin": t_twin - t0, "features": time.perf_counter() - t_twin},
    )


def _curriculum_model(original: nn.Module, datamodule: Any, retain_ds: SplitView, forget_ds: SplitView,
                      hp: Mapping[str, Any], rng: np.random.Generator, device: Any) -> nn.Module:
    """CF's model: the original's architecture, freshly initialised (seeded), trained ``cf_epochs`` from scratch."""
    model = fresh_network(getattr(original, "module", original), int(hp["seed"])).to(device)
    views = [retain_ds] if hp["cf_data"] == "retain" else [retain_ds, forget_ds]
    data = ConcatDataset([_XY(subset(v, float(hp["cf_fraction"]), rng)) for v in views])
    train_from_scratch(model, _loader_fn(data, int(hp["cf_batch_size"]), int(hp["seed"]) + 1, datamodule.num_workers),
                       int(hp["cf_epochs"]), _optimizer(hp["cf_optimizer"], model.parameters(), float(hp["cf_lr"])),
                       device)
    return model.requires_grad_(False).eval()
