"""The NeurIPS 2023 challenge's forgetting score on constructed outputs with known answers, rule by rule as its
released scoring code (google-deepmind/unlearning_evaluation, metric.py) applies them, and its bootstrap interval."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lightning_unlearn.audit import AuditError, challenge_score, epsilon_from_rates, per_example_epsilon
from lightning_unlearn.audit.challenge import (
    DELTA,
    EPSILON_CAP,
    bin_index,
    example_epsilon,
    forgetting_quality,
    forgetting_quality_from_scores,
    max_epsilon,
    threshold_attack_rates,
)


def test_delta_and_the_epsilon_of_one_attack() -> None:
    assert DELTA == 1e-5 and EPSILON_CAP == 50.0
    # eps = max(log(1 - delta - FPR) - log FNR, log(1 - delta - FNR) - log FPR), clipped at 0
    assert epsilon_from_rates([0.1], [0.2]) == pytest.approx(math.log((1 - 1e-5 - 0.2) / 0.1))
    assert epsilon_from_rates([0.2], [0.1]) == pytest.approx(math.log((1 - 1e-5 - 0.2) / 0.1))  # symmetric
    assert epsilon_from_rates([0.5], [0.5]) == 0.0  # a coin flip
    # delta = 1e-5 keeps the tail attacks that delta = 0.01 silenced: FPR 1/512, FNR 1 - 3/512
    assert epsilon_from_rates([1 / 512], [1 - 3 / 512]) == pytest.approx(math.log(3 - 512e-5), rel=1e-6)
    assert epsilon_from_rates([1 / 512], [1 - 3 / 512], delta=0.01) == 0.0
    # one zero rate: discarded (too few models to estimate it); both zero: perfect separation, infinite
    assert epsilon_from_rates([0.0, 0.3], [0.5, 0.3]) == pytest.approx(math.log((0.7 - 1e-5) / 0.3))
    assert epsilon_from_rates([0.0, 0.3], [0.0, 0.3]) == math.inf
    assert math.isnan(epsilon_from_rates([0.0, 1.0], [1.0, 0.0]))  # nothing left to estimate from


def test_perfect_separation_scores_zero_not_full_marks() -> None:
    """The challenge turns a perfectly separating threshold into eps = inf, capped at 50: 0 points (the old rule here
    discarded it, eps 0 and full marks)."""
    assert example_epsilon(np.arange(16) + 100.0, np.arange(16.0)) == EPSILON_CAP
    assert example_epsilon(np.arange(16.0), np.arange(16) + 0.5) < 1.0  # interleaved: no separation
    eps = per_example_epsilon([np.arange(16) + 100.0] * 3, [np.arange(16.0)] * 3)
    assert forgetting_quality(eps, 16) == 0.0


def test_a_much_narrower_distribution_gets_the_cap() -> None:
    """Range under 1% of the other's: eps = 50 whatever the overlap (a deterministic unlearner's outputs)."""
    rng = np.random.default_rng(0)
    retrained = rng.normal(0, 1, 64)
    assert example_epsilon(np.full(64, 0.0) + rng.normal(0, 1e-4, 64), retrained) == EPSILON_CAP
    assert example_epsilon(rng.normal(0, 0.1, 64), retrained) < EPSILON_CAP  # ratio above 1%: the attacks decide
    assert example_epsilon(np.full(8, 2.0), np.full(8, 2.0)) == 0.0  # two equal constants: no attack, indistinguishable


def test_double_thresholds_catch_a_narrow_distribution_inside_a_wide_one() -> None:
    """Narrow outputs at 0 (range 0.5), wide ones split at -10 and +10: no single threshold separates them, the
    interval [min, max] of the narrow ones does (FPR = FNR = 0): eps = 50."""
    narrow = np.linspace(-0.25, 0.25, 10)
    wide = np.r_[np.linspace(-10.5, -10, 5), np.linspace(10, 10.5, 5)]
    assert example_epsilon(narrow, wide) == EPSILON_CAP
    fpr, fnr = threshold_attack_rates(wide, narrow)
    assert np.any((fpr == 0) & (fnr == 0))


def _naive_rates(pos: np.ndarray, neg: np.ndarray) -> set[tuple[float, float]]:
    """Every attack of the released code enumerated one by one (single grid, then each r's row of l's)."""
    out = set()
    lo, hi = min(pos.min(), neg.min()), max(pos.max(), neg.max())
    for t in np.linspace(lo, hi, int(np.ceil((hi - lo) * 100))):
        out.add((float(np.mean(neg >= t)), float(np.mean(pos < t))))
    narrow, wide = (neg, pos) if np.ptp(pos) >= np.ptp(neg) else (pos, neg)
    w = np.ptp(narrow)
    lo, hi = narrow.min() + w - 2.0, narrow.max() + 2.0
    for r in np.linspace(lo, hi, int(np.ceil((hi - lo) * 100))):
        for lft in np.linspace(r - w - 2.0, r - w + 2.0, 400):
            out.add((float(np.mean((lft <= wide) & (wide <= r))), float(np.mean(~((lft <= narrow) & (narrow <= r))))))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_attack_rates_match_the_attacks_enumerated_one_by_one(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pos = np.round(rng.normal(0.3, 1.0, int(rng.integers(4, 9))), 1)  # rounded: ties with grid points and each other
    neg = np.round(rng.normal(0.0, rng.uniform(0.3, 2.0), int(rng.integers(4, 9))), 1)
    fpr, fnr = threshold_attack_rates(pos, neg)
    got = {(round(a, 12), round(b, 12)) for a, b in zip(fpr.tolist(), fnr.tolist(), strict=True)}
    assert got == {(round(a, 12), round(b, 12)) for a, b in _naive_rates(pos, neg)}


def test_model_count_dependent_buckets() -> None:
    """Points 2^-b for eps in [b/2, (b+1)/2), only below ceil(log(n - 1)): 3 for 16 models, 2 for 8, 7 for 512."""
    assert max_epsilon(np.array([2, 3, 8, 16, 512])).tolist() == [0.0, 1.0, 2.0, 3.0, 7.0]
    assert bin_index(np.array([0.0, 0.49, 0.5, 2.9, 50.0])).tolist() == [1, 1, 2, 6, 101]
    eps = np.array([0.3, 0.7, 2.9])
    assert forgetting_quality(eps, 16) == pytest.approx((1 + 0.5 + 2**-5) / 3)
    assert forgetting_quality(eps, 8) == pytest.approx((1 + 0.5) / 3)  # 2.9 >= ceil(log 7) = 2: no points
    assert forgetting_quality(eps, np.array([16, 8, 8])) == pytest.approx((1 + 0.5) / 3)  # n per example
    assert forgetting_quality(np.array([0.1]), 2) == 0.0  # two models: nothing can be told apart, nothing scored
    s = challenge_score(np.array([0.1, 0.2]), 16, ra_u=0.9, ra_r=1.0, ta_u=0.8, ta_r=0.8)
    assert s["F"] == 1.0 and s["score"] == pytest.approx(0.9)
    with pytest.raises(AuditError):
        forgetting_quality(np.array([]), 16)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_perfect_unlearner_with_512_models_scores_far_below_one(seed: int) -> None:
    """Unlearned and retrained outputs from one N(0, 1): the released code's F is ~0.14-0.2, not ~1: the maximum
    over thousands of attacks on 512 samples finds eps ~1.6 by chance. Measured over seeds 0-4 (20 examples): F
    0.163-0.194, median eps 1.61; with this module before (delta 0.01, no double thresholds) 0.68-0.94."""
    rng = np.random.default_rng(seed)
    eps = per_example_epsilon([rng.normal(0, 1, 512) for _ in range(20)], [rng.normal(0, 1, 512) for _ in range(20)])
    assert 0.1 < forgetting_quality(eps, 512) < 0.3
    assert 1.2 < np.median(eps) < 2.0


def test_bootstrap_interval_over_shadows_and_examples() -> None:
    rng = np.random.default_rng(0)
    k, m = 16, 30
    mu = rng.normal(0, 2, m)
    forgotten = rng.random((k, m)) < 0.5
    same = forgetting_quality_from_scores(rng.normal(mu, 1, (k, m)), rng.normal(mu, 1, (k, m)), forgotten,
                                          bootstrap=50)
    lo, hi = same["ci95"]
    assert lo <= same["F"] <= hi and hi - lo > 0.01
    assert same["num_models"].tolist() == forgotten[:, same["examples"]].sum(0).tolist()
    apart = forgetting_quality_from_scores(rng.normal(mu + 30, 1, (k, m)), rng.normal(mu, 1, (k, m)), forgotten,
                                           bootstrap=50)
    assert apart["F"] == 0.0 and apart["ci95"] == (0.0, 0.0)
    with pytest.raises(AuditError, match="shadow models"):
        forgetting_quality_from_scores(np.zeros((3, 2)), np.zeros((3, 2)), np.eye(3, 2, dtype=bool))


def test_tpr_at_fpr_is_the_best_tpr_within_the_fpr_not_an_interpolation() -> None:
    """10 negatives at 0..9; positives: 3 above every negative, 5 tied with the top negative, 2 below all. The ROC
    goes (0, 0.3) -> (0.1, 0.8): at FPR <= 5% an attacker gets TPR 0.3 (interpolating the curve said 0.55)."""
    from lightning_unlearn.audit.ulira import attack_metrics

    scores = np.r_[[100.0] * 3, [9.0] * 5, [-1.0] * 2, np.arange(10.0)]
    labels = np.r_[np.ones(10, bool), np.zeros(10, bool)]
    m = attack_metrics(scores, labels)
    assert m["tpr@5%fpr"] == 0.3 and m["tpr@1%fpr"] == 0.3 and m["auc"] == pytest.approx(0.775)


def test_report_reads_f_against_retraining() -> None:
    from lightning_unlearn.audit.report import audit_markdown

    def row(f: float, ci: list[float]) -> dict:
        return {"models": 16, "RA": 0.99, "TA": 0.97, "FA": 0.5, "MIA": 0.1, "MIA_std": 0.01,
                "challenge": {"F": f, "F_ci95": ci, "score": f, "epsilon_median": 1.6}}

    result = {"shadow_models": 16, "pool_size": 1000, "forget_per_model": 50, "targets": 100, "failures": [],
              "reference": {"RA_r": 0.99, "TA_r": 0.97, "MIA_r": 0.1},
              "rows": {"Original": row(0.02, [0.0, 0.05]), "Retrain": row(0.264, [0.2, 0.33])}}
    text = audit_markdown(result)
    assert "1 = indistinguishable" not in text
    assert "| 0.264 [0.200, 0.330] |" in text and "| 0.020 [0.000, 0.050] |" in text
    assert "the F of retraining itself (row Retrain) is 0.264 [0.200, 0.330]" in text
    del result["rows"]["Retrain"]
    assert "no Retrain row was audited, so F has no reference" in audit_markdown(result)
