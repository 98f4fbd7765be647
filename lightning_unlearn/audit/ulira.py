"""U-LiRA (Hayes et al. 2024, "Inexact Unlearning Needs More Careful Evaluations to Avoid a False Sense of Privacy",
sec. 4): a per-example likelihood-ratio test telling an unlearned model that forgot ``x`` from a retrained model that
never saw it.

Inputs are ``(K, M)`` arrays over K shadow models and M target examples: the logit-scaled confidence
:func:`logit_confidence` of each shadow's unlearned and retrained model on each example, and masks saying in which
shadows the example was forgotten. For every example, Gaussians are fitted to its "unlearned, forgotten" scores
(``in``) and its "retrained, never seen" scores (``out``) of the *other* shadows (leave-one-out), and the
log-likelihood ratio ``log N(phi; mu_in, s_in) - log N(phi; mu_out, s_out)`` is applied to the held-out shadow's
unlearned model (positive) and retrained model (negative). Ideal: accuracy and AUC 0.5, TPR at a FPR equal to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

__all__ = ["AuditError", "GaussianFit", "ULiRAResult", "attack_metrics", "fit_gaussians", "logit_confidence",
           "model_confidences", "tpr_at_fpr", "ulira"]

Variance = Literal["auto", "per_example", "global"]
_MIN_STD = 1e-3


class AuditError(ValueError):
    """The audit cannot produce the requested statistics from these inputs (the message says what to change)."""


def logit_confidence(logits: Tensor | np.ndarray, labels: Tensor | np.ndarray) -> np.ndarray:
    """``phi = log(p_y / (1 - p_y))`` of the true class, computed stably as ``z_y - logsumexp_{j != y} z_j``
    (Carlini et al. 2022, eq. 4; the statistic of U-LiRA). Returns float64 of shape ``(n,)``."""
    z = torch.as_tensor(logits).detach().to(torch.float64).cpu()
    y = torch.as_tensor(labels).detach().to(torch.long).cpu()
    if z.ndim != 2 or y.shape != (z.shape[0],):
        raise AuditError(f"logits must be (n, classes) and labels (n,); got {tuple(z.shape)} and {tuple(y.shape)}")
    if z.shape[1] < 2:
        raise AuditError("logit_confidence needs at least two classes")
    true = z.gather(1, y[:, None])[:, 0]
    others = z.scatter(1, y[:, None], float("-inf"))
    return (true - torch.logsumexp(others, dim=1)).numpy()


def model_confidences(models: Any, inputs: Tensor, labels: Tensor, batch_size: int = 1024,
                      device: str = "cpu") -> np.ndarray:
    """``(K, M)`` :func:`logit_confidence` of each of your K models (``nn.Module`` returning logits, put in eval mode)
    on M examples: the input of :func:`ulira` and :func:`~lightning_unlearn.audit.evaluate_scores`."""
    rows = []
    for net in models:
        net = net.to(device).eval()
        with torch.no_grad():
            z = torch.cat([net(inputs[i : i + batch_size].to(device)).float().cpu()
                           for i in range(0, len(inputs), batch_size)])
        rows.append(logit_confidence(z, labels))
    return np.stack(rows)


@dataclass
class GaussianFit:
    """Per-example means and standard deviations, and the number of samples each was fitted on."""

    mean: np.ndarray
    std: np.ndarray
    count: np.ndarray


def _moments(x: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    m = m.astype(np.float64)
    xm = np.where(m > 0, x, 0.0)
    return m.sum(0), (xm * m).sum(0), (xm * xm * m).sum(0)


def _fit(n: np.ndarray, s: np.ndarray, ss: np.ndarray, variance: str) -> GaussianFit:
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s / n
        var = (ss - n * mean**2) / (n - 1)  # unbiased per example
    var = np.where(n >= 2, np.maximum(var, 0.0), np.nan)
    if variance == "global":
        # pooled within-example variance over all examples with >= 2 samples (Carlini et al.'s fixed variance)
        ok = n >= 2
        dof = (n[ok] - 1).sum()
        pooled = float(((n[ok] - 1) * var[ok]).sum() / dof) if dof > 0 else np.nan
        var = np.full_like(mean, pooled)
    std = np.maximum(np.sqrt(var), _MIN_STD)
    return GaussianFit(mean=mean, std=std, count=n)


def fit_gaussians(
    scores: np.ndarray, mask: np.ndarray, variance: Literal["per_example", "global"] = "per_example"
) -> GaussianFit:
    """Fit one Gaussian per column of ``scores`` (K, M) to the entries where ``mask`` is true (``nan`` where a
    column has fewer than 2 samples; the standard deviation is floored at 1e-3)."""
    scores, mask = np.asarray(scores, dtype=np.float64), np.asarray(mask, dtype=bool)
    if scores.shape != mask.shape:
        raise AuditError(f"scores {scores.shape} and mask {mask.shape} differ in shape")
    mask = mask & np.isfinite(scores)
    return _fit(*_moments(scores, mask), variance)


def _log_normal(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return -0.5 * ((x - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)


def _roc(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve (FPR, TPR) at every distinct threshold, from (0, 0), as ``sklearn.metrics.roc_curve`` gives it."""
    order = np.argsort(-scores, kind="mergesort")
    s, lab = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last position of each distinct score
    tps, fps = np.cumsum(lab)[last], np.cumsum(~lab)[last]
    return np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, max_fpr: float) -> float:
    """The largest TPR among the thresholds whose FPR is at most ``max_fpr`` (an attacker's best at that FPR, as
    Carlini et al.'s LiRA code reads it off ``roc_curve``: ``tpr[np.where(fpr < x)[0][-1]]``, there with ``<``);
    ``(fpr, tpr)`` from :func:`_roc`, which starts at (0, 0)."""
    return float(np.max(tpr[fpr <= max_fpr]))


def attack_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float = 0.0) -> dict[str, float]:
    """Accuracy at ``threshold`` (predict positive above it), ROC AUC (trapezoids, as scikit-learn's) and TPR at 1%
    and 5% FPR (:func:`tpr_at_fpr`: the best TPR with FPR <= 1% / 5%, not interpolated) of ``scores`` with boolean
    ``labels``."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    acc = float(np.mean((scores > threshold) == labels))
    if labels.all() or not labels.any():
        return {"accuracy": acc, "auc": float("nan"), "tpr@1%fpr": float("nan"), "tpr@5%fpr": float("nan")}
    fpr, tpr = _roc(scores, labels)
    return {
        "accuracy": acc,
        "auc": float(np.trapezoid(tpr, fpr)),
        "tpr@1%fpr": tpr_at_fpr(fpr, tpr, 0.01),
        "tpr@5%fpr": tpr_at_fpr(fpr, tpr, 0.05),
    }


@dataclass
class ULiRAResult:
    """Attack metrics with bootstrap CIs, and every game's per-example log-likelihood ratio."""

    metrics: dict[str, float]
    ci: dict[str, tuple[float, float]]
    games: int
    examples: int
    variance: str
    llr_unlearned: np.ndarray = field(repr=False)  # LLR of the held-out unlearned model, one per game
    llr_retrained: np.ndarray = field(repr=False)  # LLR of the held-out retrained model, one per game
    game_example: np.ndarray = field(repr=False)  # which target example each game is about

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "ci95": {k: list(v) for k, v in self.ci.items()}, "games": self.games,
                "examples": self.examples, "variance": self.variance}


def ulira(
    unlearned: np.ndarray,
    retrained: np.ndarray,
    forgotten: np.ndarray,
    never_seen: np.ndarray | None = None,
    *,
    variance: Variance = "auto",
    min_samples: int = 2,
    bootstrap: int = 200,
    seed: int = 0,
) -> ULiRAResult:
    """U-LiRA with leave-one-shadow-out target models.

    Args:
        unlearned, retrained: ``(K, M)`` logit-scaled confidences of shadow k's unlearned / retrained model on example j
            (``nan`` for a missing model, e.g. a failed unlearning run).
        forgotten: ``(K, M)`` bool, example j is in shadow k's forget set.
        never_seen: ``(K, M)`` bool, shadow k's retrained model did not train on j (default: ``forgotten``).
        variance: ``per_example`` std, ``global`` (pooled) std, or ``auto``: per example when the median example has
            >= 8 ``in`` samples, else global (Carlini et al. 2022 recommend a fixed variance for few shadows).
        min_samples: fewest ``in`` and ``out`` fit samples an example needs (other shadows only) to be attacked.
        bootstrap: two-way resamples (target examples x shadow models) for the 95% percentile intervals.
    """
    u, r = np.asarray(unlearned, dtype=np.float64), np.asarray(retrained, dtype=np.float64)
    f = np.asarray(forgotten, dtype=bool)
    ns = f if never_seen is None else np.asarray(never_seen, dtype=bool)
    if not (u.shape == r.shape == f.shape == ns.shape) or u.ndim != 2:
        raise AuditError(f"unlearned, retrained, forgotten, never_seen must share one (K, M) shape; got "
                         f"{u.shape}, {r.shape}, {f.shape}, {ns.shape}")
    if (f & ~ns).any():
        raise AuditError(
            "an example is marked forgotten but seen by the retrained model: never_seen must include forgotten"
        )
    k_models = u.shape[0]
    if k_models < min_samples + 1:
        raise AuditError(f"U-LiRA needs at least {min_samples + 1} shadow models (min_samples={min_samples} to fit "
                         f"on, one held out); got {k_models}. Raise `shadow_models`.")
    in_mask = f & np.isfinite(u)
    out_mask = ns & np.isfinite(r)
    n_in, s_in, ss_in = _moments(u, in_mask)
    n_out, s_out, ss_out = _moments(r, out_mask)
    if variance == "auto":
        variance = "per_example" if np.median(n_in) >= 8 else "global"
    llr_u, llr_r, which, shadow_of = [], [], [], []
    for k in range(k_models):
        mi, mo = in_mask[k].astype(float), out_mask[k].astype(float)
        ui, ro = np.where(in_mask[k], u[k], 0.0), np.where(out_mask[k], r[k], 0.0)
        fin = _fit(n_in - mi, s_in - mi * ui, ss_in - mi * ui * ui, variance)
        fout = _fit(n_out - mo, s_out - mo * ro, ss_out - mo * ro * ro, variance)
        game = f[k] & np.isfinite(u[k]) & np.isfinite(r[k]) & (fin.count >= min_samples) & (fout.count >= min_samples)
        game &= np.isfinite(fin.std) & np.isfinite(fout.std)
        j = np.flatnonzero(game)
        llr_u.append(_log_normal(u[k, j], fin.mean[j], fin.std[j]) - _log_normal(u[k, j], fout.mean[j], fout.std[j]))
        llr_r.append(_log_normal(r[k, j], fin.mean[j], fin.std[j]) - _log_normal(r[k, j], fout.mean[j], fout.std[j]))
        which.append(j)
        shadow_of.append(np.full(len(j), k))
    lu, lr, ex = np.concatenate(llr_u), np.concatenate(llr_r), np.concatenate(which)
    if len(lu) == 0:
        need = int(np.ceil((min_samples + 1) / max(f.mean(), 1e-9)))
        raise AuditError(
            f"no target example has {min_samples} forgotten and {min_samples} never-seen samples in the other shadow "
            f"models ({k_models} shadows, an example is forgotten in {f.mean():.0%} of them); use about {need} or more "
            "shadow models, or forget a larger share of the targets per shadow"
        )
    scores, labels = np.concatenate([lu, lr]), np.concatenate([np.ones(len(lu), bool), np.zeros(len(lr), bool)])
    metrics = attack_metrics(scores, labels)
    rng = np.random.default_rng(seed)
    boots: dict[str, list[float]] = {k: [] for k in metrics}
    # two-way bootstrap: resample the target examples and the shadow models (games sharing an example or a model are
    # correlated); each game keeps its unlearned and its retrained model
    examples, ex_of_game = np.unique(ex, return_inverse=True)
    sh = np.concatenate(shadow_of)
    for _ in range(bootstrap):
        ce = np.bincount(rng.integers(0, len(examples), len(examples)), minlength=len(examples))
        cs = np.bincount(rng.integers(0, k_models, k_models), minlength=k_models)
        idx = np.repeat(np.arange(len(lu)), ce[ex_of_game] * cs[sh])
        if len(idx) == 0:
            continue
        m = attack_metrics(np.concatenate([lu[idx], lr[idx]]), np.r_[np.ones(len(idx), bool), np.zeros(len(idx), bool)])
        for key, v in m.items():
            boots[key].append(v)
    ci = {k: (float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))) if bootstrap else (np.nan, np.nan)
          for k, v in boots.items()}
    g = len(lu)
    return ULiRAResult(metrics=metrics, ci=ci, games=g, examples=int(len(np.unique(ex))), variance=str(variance),
                       llr_unlearned=lu, llr_retrained=lr, game_example=ex)
