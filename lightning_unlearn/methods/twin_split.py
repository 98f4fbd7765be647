"""TMU's predicted split of D_f into easy and hard: the twin problem, the classifier and the decision, with its report.

Hu et al., "Towards Aligned Data Removal via Twin Machine Unlearning" (TMU; arXiv 2408.11433), sec. 4: the predictor
trained on the twin problem (:mod:`~.twin_problem`, :mod:`~.twin_classifier`) is transferred to D_f.
:func:`predict_split` is what :meth:`~lightning_unlearn.methods.twin.TwinUnlearning.compute_split` runs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lightning_unlearn.methods.twin_classifier import (
    decide_hard,
    group_holdout_split,
    scale_features,
    train_easy_hard_classifier,
)
from lightning_unlearn.methods.twin_loss import draw_other_labels
from lightning_unlearn.methods.gold_estimate import unseen_accuracy_per_class
from lightning_unlearn.methods.twin_problem import build_twin_problem

__all__ = ["TwinSplit", "predict_split"]


@dataclass
class TwinSplit:
    """The predicted split, in sorted D_f sample-index order (``forget``), with what the training step needs.

    Attributes:
        forget: D_f's sample indices, sorted. hard: predicted hard, aligned with ``forget``. random_labels: a random
        other label per sample (``unlearn_loss="random_labels"``). twin_state: the twin's ``state_dict``.
        report: ``tmu_report`` (JSON-ready). table: per-sample features and labels, for analysis.
    """

    forget: Tensor
    hard: Tensor
    random_labels: Tensor
    twin_state: dict[str, Tensor]
    report: dict[str, Any]
    table: dict[str, Tensor]


def _rates(hp: Mapping[str, Any], original: nn.Module, datamodule: Any, y_f: Tensor, easy_e: Tensor, y_e: Tensor
           ) -> tuple[dict[int, float], dict[str, Any]]:
    """The twin problem's hard rate per class of D_f (``hard_rate_source``), and what it was measured on. Its gold
    model is the original and its forget data held-out data, so ``"holdout"`` measures the same rate as D_e does, on
    the whole held-out pool of the class (up to ``hard_rate_samples``) instead of D_e's few samples."""
    classes = sorted(set(y_f.tolist()))
    if hp["hard_rate_source"] == "holdout":
        measured = unseen_accuracy_per_class(original, datamodule, classes, hp["hard_rate_samples"], int(hp["seed"]))
        rates = {c: 1.0 - measured[c][0] for c in measured}
        counts = {c: measured[c][1] for c in measured}
    else:
        rates = {c: float((~easy_e[y_e == c]).float().mean()) for c in classes if (y_e == c).any()}
        counts = {c: int((y_e == c).sum()) for c in classes}
    n_f = {c: int((y_f == c).sum()) for c in classes}
    overall = sum(rates.get(c, 0.0) * n for c, n in n_f.items()) / max(len(y_f), 1)
    info = {"source": hp["hard_rate_source"], "hard_rate": overall,
            "per_class": {str(c): {"hard_rate": rates.get(c), "measured_on": counts.get(c, 0)} for c in classes}}
    return rates, info


def predict_split(original: nn.Module, datamodule: Any, hp: Mapping[str, Any], num_classes: int) -> TwinSplit:
    """Run TMU's precomputation on ``original`` (frozen) and ``datamodule``; ``hp``: the method's settings."""
    seed = int(hp["seed"])
    device = next(original.parameters()).device
    t0 = time.perf_counter()
    data = build_twin_problem(original, datamodule, hp, device)
    rates, rate_info = _rates(hp, original, datamodule, data.y_f, data.easy_e, data.y_e)
    t_feat = time.perf_counter()

    held = torch.as_tensor(group_holdout_split(data.groups_e, float(hp["classifier_holdout"]), seed))
    z_e, z_f = scale_features(data.feat_e, data.feat_f, ~held, hp["standardize"])
    mlp = train_easy_hard_classifier(
        z_e[~held], data.easy_e[~held], epochs=int(hp["classifier_epochs"]), lr=float(hp["classifier_lr"]),
        momentum=float(hp["classifier_momentum"]), batch_size=int(hp["classifier_batch_size"]), seed=seed,
        balanced=hp["class_weight"] == "balanced",
    )
    with torch.no_grad():
        logit_e, logit_f = mlp(z_e), mlp(z_f)
    pred_e = logit_e > 0
    hard_f = decide_hard(logit_f, data.y_f, hp["hard_rule"], rates)
    t_clf = time.perf_counter()

    order = torch.argsort(data.idx_f)
    gen = torch.Generator().manual_seed(seed + 1)
    random_labels = draw_other_labels(data.y_f[order], num_classes, gen)
    forget, hard = data.idx_f[order].clone(), hard_f[order].clone()
    easy_e, feats = data.easy_e, list(hp["features"])

    def acc(pred: Tensor, truth: Tensor) -> float | None:
        return float((pred == truth).float().mean()) if len(truth) else None

    def balanced(pred: Tensor, truth: Tensor) -> float | None:
        parts = [float((pred[truth == v] == v).float().mean()) for v in (True, False) if (truth == v).any()]
        return float(np.mean(parts)) if parts else None

    report = {
        "features": feats,
        "twin": {**data.sizes, "easy_rate": float(easy_e.float().mean()) if len(easy_e) else None},
        "decision": {"rule": hp["hard_rule"], **rate_info},
        "classifier": {
            "heldout_accuracy": acc(pred_e[held], easy_e[held]),
            "heldout_balanced_accuracy": balanced(pred_e[held], easy_e[held]),
            "heldout_size": int(held.sum()),
            "heldout_easy_rate": float(easy_e[held].float().mean()) if held.any() else None,
            "train_accuracy": acc(pred_e[~held], easy_e[~held]),
            "train_size": int((~held).sum()),
            "class_weight": hp["class_weight"],
            "hidden": [64, 32],
            "forget_easy_rate_at_0.5": float((logit_f > 0).float().mean()),
        },
        "feature_means": {
            "twin_easy": {f: float(data.cols_e[f][easy_e].mean()) if easy_e.any() else None for f in feats},
            "twin_hard": {f: float(data.cols_e[f][~easy_e].mean()) if (~easy_e).any() else None for f in feats},
            "forget": {f: float(data.cols_f[f].mean()) for f in feats},
        },
        "split": {
            "forget_indices": forget.tolist(),
            "predicted_easy": (~hard).tolist(),
            "num_easy": int((~hard).sum()),
            "num_hard": int(hard.sum()),
            "predicted_easy_rate": float((~hard).float().mean()),
        },
        "original_forget_accuracy": float(data.forget_correct.float().mean()),
        "timings_s": {**data.timings, "hard_rates": t_feat - t0 - sum(data.timings.values()),
                      "classifier": t_clf - t_feat, "total": t_clf - t0},
    }
    table = {"twin_features": data.feat_e, "twin_easy": easy_e, "twin_heldout": held, "twin_predicted_easy": pred_e,
             "twin_logit": logit_e, "forget_features": data.feat_f, "forget_indices": data.idx_f,
             "forget_logit": logit_f, "forget_predicted_easy": ~hard_f}
    return TwinSplit(forget, hard, random_labels, data.twin.state_dict(), report, table)
