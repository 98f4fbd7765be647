"""The forgetting score of the NeurIPS 2023 Machine Unlearning Challenge (Triantafillou et al. 2024, "Are we making
progress in unlearning? Findings from the first NeurIPS unlearning competition", sec. 2 and app. A).

Per forget example, the outputs of many unlearned models are compared with the outputs of many retrained models by a
family of threshold attacks; each attack's false-positive and false-negative rates give an (epsilon, delta) estimate

    eps = max( log(1 - delta - FPR) - log(FNR),  log(1 - delta - FNR) - log(FPR) ),

the example's epsilon is the largest over the attacks, epsilons are binned (width 0.5, 13 bins) and the forgetting
quality is ``F = mean_examples 2 / 2**bin`` (1 when every example's epsilon is below 0.5). The final score is
``F * (RA_u / RA_r) * (TA_u / TA_r)`` with the retain and test accuracies of the unlearned and retrained models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lightning_unlearn.audit.ulira import AuditError

__all__ = ["bin_index", "challenge_score", "epsilon_from_rates", "forgetting_quality", "per_example_epsilon",
           "threshold_attack_rates"]  # fmt: skip

DELTA = 0.01  #: the challenge's delta
BIN_WIDTH = 0.5  #: the challenge's bin width
NUM_BINS = 13  #: bins at 0, 0.5, ..., 6.0: an epsilon >= 6 is in the last one


def threshold_attack_rates(unlearned: np.ndarray, retrained: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, FNR) of every single-threshold attack on a scalar output, in both directions ("unlearned" above the
    threshold, and below it); positives are the unlearned models' outputs. Thresholds: every observed value."""
    u = np.asarray(unlearned, dtype=np.float64)
    r = np.asarray(retrained, dtype=np.float64)
    u, r = u[np.isfinite(u)], r[np.isfinite(r)]
    if len(u) == 0 or len(r) == 0:
        raise AuditError("threshold attacks need at least one unlearned and one retrained output")
    t = np.unique(np.concatenate([u, r]))
    fpr_hi = (r[None, :] > t[:, None]).mean(1)  # predict "unlearned" when output > t
    fnr_hi = (u[None, :] <= t[:, None]).mean(1)
    return np.concatenate([fpr_hi, 1.0 - fpr_hi]), np.concatenate([fnr_hi, 1.0 - fnr_hi])


def epsilon_from_rates(fpr: np.ndarray, fnr: np.ndarray, delta: float = DELTA, floor: float | None = None) -> float:
    """The largest (epsilon, delta) estimate over attacks with these FPR/FNR (>= 0).

    ``floor=None`` is the challenge's rule: an attack with a zero FPR or FNR is discarded (a perfectly separating
    attack only makes sense with many models). A positive ``floor`` instead raises zero rates to it (e.g. ``1/(2n)``,
    half a count), which keeps a perfectly separating attack on few models as a large, finite epsilon.
    """
    fpr, fnr = np.asarray(fpr, dtype=np.float64), np.asarray(fnr, dtype=np.float64)
    if floor is not None and floor > 0:
        fpr, fnr = np.maximum(fpr, floor), np.maximum(fnr, floor)
    keep = (fpr > 0) & (fnr > 0)
    fpr, fnr = fpr[keep], fnr[keep]
    with np.errstate(invalid="ignore", divide="ignore"):
        e1 = np.log(1.0 - delta - fpr) - np.log(fnr)
        e2 = np.log(1.0 - delta - fnr) - np.log(fpr)
    eps = np.fmax(e1, e2)
    eps = eps[np.isfinite(eps)]
    return float(max(0.0, eps.max())) if len(eps) else 0.0


def per_example_epsilon(
    unlearned: Sequence[np.ndarray],
    retrained: Sequence[np.ndarray],
    delta: float = DELTA,
    floor: str | float | None = "half",
) -> np.ndarray:
    """One epsilon per example from its unlearned-model and retrained-model outputs (one array per example).
    ``floor="half"`` raises zero rates to half a count (``1/(2 n)`` of that class); ``None``: the challenge's
    discarding; a float: that rate."""
    if len(unlearned) != len(retrained):
        raise AuditError(f"{len(unlearned)} unlearned but {len(retrained)} retrained output sets")
    out = np.empty(len(unlearned))
    for i, (u, r) in enumerate(zip(unlearned, retrained, strict=True)):
        fpr, fnr = threshold_attack_rates(u, r)
        nu, nr = np.isfinite(np.asarray(u, float)).sum(), np.isfinite(np.asarray(r, float)).sum()
        if floor == "half":
            fpr, fnr = np.maximum(fpr, 0.5 / nr), np.maximum(fnr, 0.5 / nu)
            out[i] = epsilon_from_rates(fpr, fnr, delta)
        else:
            out[i] = epsilon_from_rates(fpr, fnr, delta, floor=None if floor is None else float(floor))
    return out


def bin_index(eps: np.ndarray, width: float = BIN_WIDTH, bins: int = NUM_BINS) -> np.ndarray:
    """Bin of each epsilon: 1 for [0, width), 2 for [width, 2 width), ..., ``bins`` for >= (bins - 1) width."""
    return np.digitize(np.asarray(eps, dtype=np.float64), np.arange(bins) * width)


def forgetting_quality(eps: np.ndarray, width: float = BIN_WIDTH, bins: int = NUM_BINS) -> float:
    """``F = mean 2 / 2**bin`` over examples (1: every epsilon below ``width``; at least 2**(1 - bins))."""
    eps = np.asarray(eps, dtype=np.float64)
    if eps.size == 0:
        raise AuditError("forgetting quality needs at least one example's epsilon")
    return float(np.mean(2.0 / 2.0 ** bin_index(eps, width, bins)))


def challenge_score(eps: np.ndarray, ra_u: float, ra_r: float, ta_u: float, ta_r: float, width: float = BIN_WIDTH,
                    bins: int = NUM_BINS) -> dict[str, Any]:  # fmt: skip
    """``F * (RA_u / RA_r) * (TA_u / TA_r)`` and its parts (accuracies: means over the unlearned / retrained models)."""
    f = forgetting_quality(eps, width, bins)
    if ra_r <= 0 or ta_r <= 0:
        raise AuditError(f"the retrained models' retain/test accuracy must be > 0, got {ra_r}, {ta_r}")
    ra, ta = ra_u / ra_r, ta_u / ta_r
    return {"F": f, "RA_ratio": ra, "TA_ratio": ta, "score": f * ra * ta, "epsilon_median": float(np.median(eps)),
            "epsilon_mean": float(np.mean(eps)), "examples": int(len(eps))}  # fmt: skip
