"""The forgetting score of the NeurIPS 2023 Machine Unlearning Challenge, as its released scoring code computes it
(Triantafillou et al. 2024, "Are we making progress in unlearning? Findings from the first NeurIPS unlearning
competition", sec. 2 and app. A; code: github.com/google-deepmind/unlearning_evaluation, ``metric.py``).

Per forget example, the outputs of n unlearned and n retrained models are compared by two families of threshold
attacks on a grid of 100 thresholds per unit (single thresholds, and intervals around the narrower distribution); each
attack's rates give ``eps = max(log(1 - delta - FPR) - log FNR, log(1 - delta - FNR) - log FPR)`` with
``delta = 1e-5``; a perfectly separating attack gives eps = inf, an attack with one zero rate is discarded, and the
example's eps (largest over attacks) is capped at 50 — also when one distribution's range is under 1% of the other's.
Points ``2**-b`` for eps in ``[b/2, (b+1)/2)``, only for buckets below ``ceil(log(n - 1))`` (0 beyond); F is the mean
over examples; the final score ``F * (RA_u / RA_r) * (TA_u / TA_r)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lightning_unlearn.audit.ulira import AuditError

__all__ = ["bin_index", "challenge_score", "epsilon_from_rates", "example_epsilon", "forgetting_quality",
           "forgetting_quality_from_scores", "max_epsilon", "per_example_epsilon",
           "threshold_attack_rates"]

DELTA = 1e-5  #: the challenge's delta (``metric.DELTA``)
EPSILON_CAP = 50.0  #: the largest epsilon (``metric.EPSILON_CAP``): 0 points
THRESHOLDS_PER_UNIT = 100  #: threshold grid density (``metric.NUM_THRESHOLDS_PER_UNIT``)
PEAKY_RATIO = 0.01  #: a range under this share of the other distribution's range gets EPSILON_CAP
BUFFER = 2.0  #: the double-threshold grid's reach beyond the narrower distribution
BUCKET_WIDTH = 0.5  #: points halve every half unit of epsilon


def _grid(lo: float, hi: float) -> np.ndarray:
    return np.linspace(lo, hi, int(np.ceil((hi - lo) * THRESHOLDS_PER_UNIT)))


def _distinct(n_pos: int, n_neg: int, pos_count: np.ndarray, neg_count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, FNR) of each distinct pair (positives predicted positive, negatives predicted positive)."""
    code = pos_count.astype(np.int64) * (n_neg + 1) + neg_count.astype(np.int64)
    code = np.flatnonzero(np.bincount(code.ravel(), minlength=(n_pos + 1) * (n_neg + 1)))
    return (code % (n_neg + 1)) / n_neg, 1.0 - (code // (n_neg + 1)) / n_pos


def _lefts_at_or_below(x: np.ndarray, start: np.ndarray, stop: np.ndarray, num: int) -> np.ndarray:
    """``[k, m] -> #{j : l_kj <= x_m}`` for the rows ``l_k = np.linspace(start_k, stop_k, num)``, computed from
    linspace's own formula (``j * step + start``, the last point ``stop``) without forming the rows; exact."""
    step = (stop - start) / (num - 1)

    def at(j: np.ndarray) -> np.ndarray:
        return np.where(j >= num - 1, stop[:, None], j * step[:, None] + start[:, None])

    with np.errstate(invalid="ignore"):
        j = np.clip(np.floor((x[None, :] - start[:, None]) / step[:, None]), -1, num - 1)  # last j with l <= x, ~
    j = np.where((j >= 0) & (at(np.maximum(j, 0)) > x[None, :]), j - 1, j)  # one too far
    j = np.where((j < num - 1) & (at(np.minimum(j + 1, num - 1)) <= x[None, :]), j + 1, j)  # one short
    return (j + 1).astype(np.int64)


def _count_below(sorted_rows: np.ndarray, keys: np.ndarray, bound: int) -> np.ndarray:
    """``[k, c] -> #{m : sorted_rows[k, m] <= keys[k, c]}`` for integers in ``[0, bound]``: one searchsorted over all
    rows (each row shifted into its own integer range)."""
    shift = (bound + 2) * np.arange(len(sorted_rows))[:, None]
    found = np.searchsorted((sorted_rows + shift).ravel(), (keys + shift).ravel(), "right").reshape(keys.shape)
    return found - sorted_rows.shape[1] * np.arange(len(sorted_rows))[:, None]


def threshold_attack_rates(positive: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, FNR) of the challenge's attacks on one example (``metric._get_single_threshold_rates`` and
    ``_get_double_threshold_rates``), each distinct pair once, ``positive`` being the outputs with the larger median:

    * single thresholds t on ``linspace(min, max)`` of both, 100 per unit: "positive" iff output >= t;
    * double thresholds [l, r] around the narrower distribution N (range w = max(N) - min(N)): r on
      ``linspace(max(N) - 2, max(N) + 2)`` (100 per unit), for each r, l on ``linspace(r - w - 2, r - w + 2, 400)``:
      "N" iff l <= output <= r (rates with N as the positive class; epsilon is symmetric in the two rates).

    The 400 x 400 double thresholds are not enumerated: along a row (one r) the counts change only where l passes an
    output, so every distinct count is reached at l's first grid point or at one of those crossings.
    """
    pos, neg = np.sort(np.asarray(positive, np.float64)), np.sort(np.asarray(negative, np.float64))
    t = _grid(min(pos[0], neg[0]), max(pos[-1], neg[-1]))
    above = [len(x) - np.searchsorted(x, t, "left") for x in (pos, neg)]  # outputs >= t
    fpr_s, fnr_s = _distinct(len(pos), len(neg), *above)
    narrow, wide = (neg, pos) if pos[-1] - pos[0] >= neg[-1] - neg[0] else (pos, neg)
    width = narrow[-1] - narrow[0]
    right = _grid(narrow[0] + width - BUFFER, narrow[-1] + BUFFER)
    n_left = int(np.ceil(2 * BUFFER * THRESHOLDS_PER_UNIT))
    # in [l_kj, r_k]: #(x <= r_k) - #(x < l_kj), and #(x < l_kj) = #{m : #{j' : l_kj' <= x_m} <= j}
    lo, hi = right - width - BUFFER, right - width + BUFFER
    at_or_below = [_lefts_at_or_below(x, lo, hi, n_left) for x in (narrow, wide)]
    js = np.minimum(np.concatenate([np.zeros((len(right), 1), np.int64), *at_or_below], axis=1), n_left - 1)
    inside = [np.maximum(np.searchsorted(x, right, "right")[:, None] - _count_below(a, js, n_left), 0)
              for x, a in zip((narrow, wide), at_or_below, strict=True)]
    fpr_d, fnr_d = _distinct(len(narrow), len(wide), inside[0], inside[1])
    return np.concatenate([fpr_d, fpr_s]), np.concatenate([fnr_d, fnr_s])


def epsilon_from_rates(fpr: np.ndarray, fnr: np.ndarray, delta: float = DELTA) -> float:
    """The largest epsilon over attacks with these rates (``metric._get_epsilons``): an attack with FPR = FNR = 0
    separates perfectly (inf); one with only one of them 0 is discarded (too few models to estimate it); the others
    give ``max(log(1 - delta - FPR) - log FNR, log(1 - delta - FNR) - log FPR)`` clipped at 0 (a term whose log
    argument is negative is ignored). ``nan`` when no attack is left (the released code stops with an assertion)."""
    fpr, fnr = np.asarray(fpr, np.float64), np.asarray(fnr, np.float64)
    if np.any((fpr == 0) & (fnr == 0)):
        return math.inf
    keep = (fpr > 0) & (fnr > 0)
    fpr, fnr = fpr[keep], fnr[keep]
    with np.errstate(invalid="ignore", divide="ignore"):
        eps = np.fmax(np.log(1.0 - delta - fpr) - np.log(fnr), np.log(1.0 - delta - fnr) - np.log(fpr))
    eps = eps[~np.isnan(eps)]
    return float(max(eps.max(), 0.0)) if len(eps) else math.nan


def example_epsilon(unlearned: np.ndarray, retrained: np.ndarray, delta: float = DELTA) -> float:
    """One example's epsilon from its unlearned and retrained models' outputs (the finite ones), in [0, 50]:
    positive = the set with the larger median (unlearned on a tie: ``metric.compute_forget_score_from_confs``),
    EPSILON_CAP when one range is under 1% of the other, else the largest over :func:`threshold_attack_rates`,
    capped. Two constant, equal sets (no attack left) give 0."""
    u, r = np.asarray(unlearned, np.float64), np.asarray(retrained, np.float64)
    u, r = u[np.isfinite(u)], r[np.isfinite(r)]
    if len(u) == 0 or len(r) == 0:
        raise AuditError("an example needs at least one unlearned and one retrained output")
    pos, neg = (r, u) if np.median(r) > np.median(u) else (u, r)
    spans = sorted([np.ptp(pos), np.ptp(neg)])
    if spans[1] > 0 and spans[0] / spans[1] < PEAKY_RATIO:
        return EPSILON_CAP
    eps = epsilon_from_rates(*threshold_attack_rates(pos, neg), delta=delta)
    return 0.0 if math.isnan(eps) else min(eps, EPSILON_CAP)


def per_example_epsilon(
    unlearned: Sequence[np.ndarray], retrained: Sequence[np.ndarray], delta: float = DELTA
) -> np.ndarray:
    """:func:`example_epsilon` of each example (one array of outputs per example and side)."""
    if len(unlearned) != len(retrained):
        raise AuditError(f"{len(unlearned)} unlearned but {len(retrained)} retrained output sets")
    return np.array([example_epsilon(u, r, delta) for u, r in zip(unlearned, retrained, strict=True)], dtype=float)


def max_epsilon(num_models: int | np.ndarray) -> np.ndarray:
    """``ceil(log(n - 1))``: the released code's bound on a meaningful epsilon with n models per side (0 for n <= 2);
    epsilons at or above it score 0."""
    n = np.asarray(num_models, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 2, np.ceil(np.log(np.maximum(n - 1, 1))), 0.0)


def bin_index(eps: np.ndarray, width: float = BUCKET_WIDTH) -> np.ndarray:
    """Bucket of each epsilon, from 1: 1 for [0, width), 2 for [width, 2 width), ... (unbounded)."""
    return np.floor(np.asarray(eps, dtype=np.float64) / width).astype(np.int64) + 1


def _points(eps: np.ndarray, num_models: int | np.ndarray) -> np.ndarray:
    buckets = np.floor(max_epsilon(num_models) / BUCKET_WIDTH)  # buckets [b/2, (b+1)/2) with (b+1)/2 <= max_epsilon
    b = bin_index(eps)
    return np.where(b <= buckets, 2.0 / 2.0 ** b.astype(np.float64), 0.0)


def forgetting_quality(eps: np.ndarray, num_models: int | np.ndarray) -> float:
    """``F = mean over examples of 2**-(bin - 1)``, 0 for an epsilon at or above :func:`max_epsilon` of the example's
    number of models per side (a scalar, or one per example). 1: every epsilon below 0.5."""
    eps = np.asarray(eps, dtype=np.float64)
    if eps.size == 0:
        raise AuditError("forgetting quality needs at least one example's epsilon")
    return float(np.mean(_points(eps, num_models)))


def challenge_score(eps: np.ndarray, num_models: int | np.ndarray, ra_u: float, ra_r: float, ta_u: float,
                    ta_r: float) -> dict[str, Any]:
    """``F * (RA_u / RA_r) * (TA_u / TA_r)`` and its parts (accuracies: means over the unlearned / retrained models)."""
    f = forgetting_quality(eps, num_models)
    if ra_r <= 0 or ta_r <= 0:
        raise AuditError(f"the retrained models' retain/test accuracy must be > 0, got {ra_r}, {ta_r}")
    ra, ta = ra_u / ra_r, ta_u / ta_r
    return {"F": f, "RA_ratio": ra, "TA_ratio": ta, "score": f * ra * ta, "epsilon_median": float(np.median(eps)),
            "epsilon_mean": float(np.mean(eps)), "examples": int(len(eps))}


def _columns(u: np.ndarray, r: np.ndarray, f: np.ndarray, weight: np.ndarray | None = None) -> tuple[list, list]:
    us, rs = [], []
    for j in range(u.shape[1]):
        ok = f[:, j] & np.isfinite(u[:, j]) & np.isfinite(r[:, j])
        rows = np.flatnonzero(ok) if weight is None else np.repeat(np.flatnonzero(ok), weight[ok])
        us.append(u[rows, j])
        rs.append(r[rows, j])
    return us, rs


def forgetting_quality_from_scores(
    unlearned: np.ndarray,
    retrained: np.ndarray,
    forgotten: np.ndarray,
    *,
    delta: float = DELTA,
    bootstrap: int = 200,
    seed: int = 0,
    min_models: int = 2,
) -> dict[str, Any]:
    """F over the examples forgotten in at least ``min_models`` shadow models (with both outputs), from ``(K, M)``
    arrays of shadow k's unlearned / retrained model's output on example j (the challenge compares, per example,
    models of the same forget sets). Each example's n is its number of such shadows. ``ci95``: a two-way bootstrap
    (shadow models and examples resampled with replacement, each example's epsilon recomputed from the resampled
    shadows, as U-LiRA's intervals resample both): the resamples' 2.5-97.5% spread around their median, placed at F.
    Resampled shadows repeat models, and repeated outputs raise the best attack's epsilon, so the resamples' F sits
    below F (by ~0.03 in docs/metrics.md's simulation); centring the spread on F removes that artefact and keeps the
    spread, which is wider than F's sampling spread there (conservative, as two-way bootstraps of crossed designs
    are). Returns ``F``, ``ci95``, ``epsilons``, ``num_models`` (per example) and ``examples`` (their columns)."""
    u, r, f = np.asarray(unlearned, float), np.asarray(retrained, float), np.asarray(forgotten, bool)
    if not u.shape == r.shape == f.shape or u.ndim != 2:
        raise AuditError(f"unlearned, retrained, forgotten must share one (K, M) shape; got {u.shape}, {r.shape}, "
                         f"{f.shape}")
    ok = f & np.isfinite(u) & np.isfinite(r)
    cols = np.flatnonzero(ok.sum(0) >= min_models)
    if len(cols) == 0:
        raise AuditError(f"no example is forgotten in {min_models} or more of the {u.shape[0]} shadow models with both "
                         "outputs; use more shadow models or larger forget sets")
    u, r, f = u[:, cols], r[:, cols], ok[:, cols]
    eps = per_example_epsilon(*_columns(u, r, f), delta=delta)
    n = f.sum(0)
    quality = forgetting_quality(eps, n)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(bootstrap):
        cs = np.bincount(rng.integers(0, u.shape[0], u.shape[0]), minlength=u.shape[0])
        ce = np.bincount(rng.integers(0, len(cols), len(cols)), minlength=len(cols))
        picked = np.flatnonzero(ce)
        weight = (f[:, picked] * cs[:, None]).sum(0)
        keep = weight >= min_models  # as in the estimate: an example needs min_models drawn shadows to be scored
        if not keep.any():
            continue
        us, rs = _columns(u[:, picked[keep]], r[:, picked[keep]], f[:, picked[keep]], cs)
        pts = _points(per_example_epsilon(us, rs, delta=delta), weight[keep])
        boots.append(float(np.average(pts, weights=ce[picked[keep]])))
    ci = (math.nan, math.nan)
    if boots:  # the resamples' spread around their median, placed at the estimate (see the docstring)
        lo, mid, hi = np.percentile(boots, [2.5, 50.0, 97.5])
        ci = (float(max(quality - (mid - lo), 0.0)), float(min(quality + (hi - mid), 1.0)))
    return {"F": quality, "ci95": ci, "epsilons": eps, "num_models": n, "examples": cols}
