"""Membership-inference attacks (MIA) used to evaluate unlearning, as pure, seeded functions on per-sample arrays.

Three attacks, each following the code of the paper that introduced it as an unlearning metric:

* :func:`mia_efficacy` -- "MIA-Efficacy" of Jia et al. 2023 ("Model Sparsity Can Simplify Machine Unlearning",
  l1-sparse) and Fan et al. 2024 (SalUn): an RBF ``SVC(C=3, gamma="auto")`` trained on the prediction confidence
  ``p(y|x)`` of members (a D_r subset the size of the non-member set) vs non-members (the test set); the score is the
  fraction of D_f the attack predicts as **non-member**.
* :func:`entropy_mia` -- the entropy attack on the softmax entropy, all of D_r vs the test set; the score is the mean
  predicted **membership** of D_f. Golatkar et al. 2020 and Chundawat et al. 2023 (Bad Teacher) fit an RBF
  ``SVC(C=3, gamma="auto")`` (``attack="svc"``); Kurmanji et al. 2023 (SCRUB) a
  ``LogisticRegression(class_weight="balanced")`` (``attack="logreg"``).
* :func:`loss_mia` -- the population loss attack of the NeurIPS 2023 Machine Unlearning Challenge starting kit: a
  logistic regression on the per-sample cross-entropy of D_f (label 1) vs an equal-size random test subset (label 0),
  cross-validated; reports accuracy and ROC AUC (0.5 = indistinguishable).

All randomness (member subsets, balancing, cross-validation folds) comes from ``seed``: the same inputs give the same
score. Inputs are numpy arrays or tensors; an empty set gives ``nan``. See ``docs/metrics.md`` for how to read them:
a good unlearned model scores close to the gold (retrained) model, not at an extreme.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from torch import Tensor

ArrayLike = Tensor | np.ndarray
EfficacyFeature = Literal["confidence", "entropy", "m_entropy", "correctness", "prob"]
EntropyAttack = Literal["svc", "logreg"]

__all__ = [
    "balanced_subset",
    "bounded_attack_set",
    "entropy_mia",
    "loss_mia",
    "m_entropy",
    "mia_efficacy",
    "mia_feature",
]

_EPS = 1e-30


def _np(x: ArrayLike, dtype: type = np.float64) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def balanced_subset(n: int, k: int, seed: int) -> np.ndarray:
    """Sorted positions of a seeded random subset of ``min(n, k)`` out of ``range(n)`` (all of them if ``k >= n``)."""
    if k >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=k, replace=False))


def bounded_attack_set(
    x_in: np.ndarray, x_out: np.ndarray, max_samples: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_samples`` training samples for an attack: beyond it, a seeded random subset of each of the two
    sets, in their proportion (so the attack sees the same member : non-member ratio). The RBF SVC's fit costs
    O(n^1.8-2); the subsample bounds it. ``None``: all."""
    n_in, n_out = len(x_in), len(x_out)
    if max_samples is None or n_in + n_out <= max_samples:
        return x_in, x_out
    if max_samples < 2:
        raise ValueError(f"max_samples must be >= 2 or None, got {max_samples}.")
    k_in = min(max(1, round(max_samples * n_in / (n_in + n_out))), max_samples - 1)
    k_out = max_samples - k_in
    return x_in[balanced_subset(n_in, k_in, seed + 2)], x_out[balanced_subset(n_out, k_out, seed + 3)]


def _entropy(p: np.ndarray) -> np.ndarray:
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)


def m_entropy(probs: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """Modified entropy of Song & Mittal 2021 ("Systematic Evaluation of Privacy Risks of ML Models"):
    ``-(1 - p_y) ln p_y - sum_{c != y} p_c ln(1 - p_c)`` per sample (logs clamped at ``ln 1e-30``).

    The SalUn/l1-sparse code indexes ``p[:, labels]`` (whole columns, not one entry per row); we use the definition."""
    p, y = _np(probs), _np(labels, np.int64)
    rows = np.arange(len(y))
    log_p = np.log(np.maximum(p, _EPS))
    log_1mp = np.log(np.maximum(1.0 - p, _EPS))
    terms = -p * log_1mp
    terms[rows, y] = -(1.0 - p[rows, y]) * log_p[rows, y]
    return terms.sum(axis=1)


def mia_feature(probs: ArrayLike, labels: ArrayLike | None, feature: EfficacyFeature) -> np.ndarray:
    """The attack's input, ``(N, d)``, from softmax probabilities (the five features of the SalUn/l1-sparse code):

    * ``confidence``: ``p(y|x)``, the probability of the true class (the paper's MIA-Efficacy);
    * ``entropy``: ``-sum_c p_c ln p_c``; ``m_entropy``: :func:`m_entropy`;
    * ``correctness``: ``1[argmax p = y]``; ``prob``: the whole probability vector.
    """
    p = _np(probs)
    if p.ndim != 2:
        raise ValueError(f"Expected (N, C) probabilities, got shape {p.shape}.")
    if feature == "prob":
        return p
    if feature == "entropy":
        return _entropy(p)[:, None]
    if labels is None:
        raise ValueError(f"The {feature!r} feature needs the labels.")
    y = _np(labels, np.int64)
    if feature == "confidence":
        return p[np.arange(len(y)), y][:, None]
    if feature == "correctness":
        return (p.argmax(axis=1) == y).astype(np.float64)[:, None]
    if feature == "m_entropy":
        return m_entropy(p, y)[:, None]
    raise ValueError(f"Unknown feature {feature!r}; choose confidence, entropy, m_entropy, correctness or prob.")


def mia_efficacy(
    member_probs: ArrayLike,
    member_labels: ArrayLike,
    nonmember_probs: ArrayLike,
    nonmember_labels: ArrayLike,
    target_probs: ArrayLike,
    target_labels: ArrayLike,
    *,
    feature: EfficacyFeature = "confidence",
    balance: bool = True,
    seed: int = 0,
    max_samples: int | None = None,
) -> float:
    """MIA-Efficacy (Jia et al. 2023, l1-sparse, ``SVC_MIA``; Fan et al. 2024, SalUn): the fraction of the target set
    (D_f) that a membership classifier predicts as **non-member**.

    The attack is ``sklearn.svm.SVC(C=3, gamma="auto", kernel="rbf")`` fitted on ``mia_feature(member) -> 1`` and
    ``mia_feature(nonmember) -> 0``; efficacy ``= 1 - mean(clf.predict(mia_feature(target)))``. Their evaluation uses
    members = the first ``|test|`` samples of D_r and non-members = the test set; with ``balance`` we draw the members
    as a seeded random subset of size ``|nonmembers|`` (when there are more). The paper reports the ``confidence``
    feature. ``max_samples`` bounds the SVC's training set (:func:`bounded_attack_set`; ``None``: all of it).

    Higher = more of D_f looks unseen. On D_f the gold model's value is the target: a perfect unlearner matches it.

    Returns:
        A float in [0, 1]; ``nan`` if any of the three sets is empty.
    """
    from sklearn.svm import SVC

    x_in = mia_feature(member_probs, member_labels, feature)
    x_out = mia_feature(nonmember_probs, nonmember_labels, feature)
    x_t = mia_feature(target_probs, target_labels, feature)
    if not len(x_in) or not len(x_out) or not len(x_t):
        return math.nan
    if balance:
        x_in = x_in[balanced_subset(len(x_in), len(x_out), seed)]
    x_in, x_out = bounded_attack_set(x_in, x_out, max_samples, seed)
    x = np.concatenate([x_in, x_out])
    y = np.concatenate([np.ones(len(x_in)), np.zeros(len(x_out))])
    clf = SVC(C=3, gamma="auto", kernel="rbf")
    clf.fit(x, y)
    return float(1.0 - clf.predict(x_t).mean())


def entropy_mia(
    member_probs: ArrayLike,
    nonmember_probs: ArrayLike,
    target_probs: ArrayLike,
    *,
    attack: EntropyAttack = "svc",
    balance: bool = False,
    seed: int = 0,
    max_samples: int | None = None,
) -> float:
    """Entropy membership attack: the mean predicted membership of the target set (D_f).

    Feature: the softmax entropy ``H(p) = -sum_c p_c ln p_c``, fitted on ``H(member) -> 1``, ``H(nonmember) -> 0``
    with members = all of D_r and non-members = the test set; score ``= mean(clf.predict(H(target)))``. Two attacks:

    * ``attack="svc"``: ``sklearn.svm.SVC(C=3, gamma="auto", kernel="rbf")``, the attack of Golatkar et al. 2020
      ("Eternal Sunshine of the Spotless Net") and of Chundawat et al. 2023 (Bad Teacher,
      ``get_membership_attack_prob``);
    * ``attack="logreg"``: ``sklearn.linear_model.LogisticRegression(class_weight="balanced", solver="lbfgs")``, the
      attack of Kurmanji et al. 2023 (SCRUB, "Towards Unbounded Machine Unlearning"), whose class weights compensate
      the |D_r| : |test| imbalance (with two classes multinomial and one-vs-rest coincide).

    With ``balance`` the members are a seeded random subset of size ``|nonmembers|`` (as for :func:`mia_efficacy`), a
    cheaper variant for large D_r; the papers use all of D_r. ``max_samples`` bounds the SVC's training set
    (:func:`bounded_attack_set`; the logistic regression, linear in n, always fits on all).

    Higher = more of D_f looks like training data (the opposite direction of MIA-efficacy). The gold model's value is
    the target.

    Returns:
        A float in [0, 1]; ``nan`` if any set is empty.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    if attack not in ("svc", "logreg"):
        raise ValueError(f"entropy attack must be 'svc' (Golatkar, Bad Teacher) or 'logreg' (SCRUB), got {attack!r}.")
    h_in = mia_feature(member_probs, None, "entropy")
    h_out = mia_feature(nonmember_probs, None, "entropy")
    h_t = mia_feature(target_probs, None, "entropy")
    if not len(h_in) or not len(h_out) or not len(h_t):
        return math.nan
    if balance:
        h_in = h_in[balanced_subset(len(h_in), len(h_out), seed)]
    if attack == "svc":
        h_in, h_out = bounded_attack_set(h_in, h_out, max_samples, seed)
    x = np.concatenate([h_in, h_out])
    y = np.concatenate([np.ones(len(h_in)), np.zeros(len(h_out))])
    if attack == "svc":
        clf: Any = SVC(C=3, gamma="auto", kernel="rbf")
    else:
        clf = LogisticRegression(class_weight="balanced", solver="lbfgs")
    clf.fit(x, y)
    return float(clf.predict(h_t).mean())


def loss_mia(
    target_losses: ArrayLike,
    nonmember_losses: ArrayLike,
    *,
    n_splits: int = 5,
    seed: int = 0,
) -> dict[str, float]:
    """Population loss attack of the NeurIPS 2023 Machine Unlearning Challenge starting kit (``simple_mia``).

    Samples: the per-sample cross-entropy losses of the target set (D_f, label 1) and of non-members (the test set,
    label 0), the larger set subsampled (seeded) to the size of the smaller so the task is balanced. Attack:
    ``sklearn.linear_model.LogisticRegression()`` on the scalar loss, evaluated by ``n_splits``-fold stratified
    cross-validation (``StratifiedKFold(shuffle=True, random_state=seed)``); returns the mean held-out accuracy and
    ROC AUC. The kit uses 10 ``StratifiedShuffleSplit`` splits and reports accuracy only.

    0.5 means D_f cannot be told apart from unseen data by its loss. After random-sample forgetting the gold model
    scores about 0.5; after class-wise forgetting the gold model's D_f losses are *higher* than the test set's, so its
    score is high too -- compare with the gold model's value, not with 0.5.

    Returns:
        ``{"acc": ..., "auc": ...}``; both ``nan`` if either class has fewer than ``n_splits`` samples.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    lt, ln = _np(target_losses).reshape(-1), _np(nonmember_losses).reshape(-1)
    k = min(len(lt), len(ln))
    if k < n_splits:
        return {"acc": math.nan, "auc": math.nan}
    rng = np.random.default_rng(seed)
    lt = lt[np.sort(rng.choice(len(lt), size=k, replace=False))]
    ln = ln[np.sort(rng.choice(len(ln), size=k, replace=False))]
    x = np.concatenate([lt, ln])[:, None]
    y = np.concatenate([np.ones(k, dtype=np.int64), np.zeros(k, dtype=np.int64)])
    cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    # What ``cross_validate(LogisticRegression(), x, y, cv=cv, scoring=("accuracy", "roc_auc"))`` computes, bit for
    # bit (the "accuracy" scorer is the mean of ``predict == y``, "roc_auc" reads ``decision_function``), without its
    # per-call joblib and scorer machinery: a third of this function's time on the quickstart (issue 29).
    acc, auc = [], []
    for train, test in cv.split(x, y):
        clf = LogisticRegression().fit(x[train], y[train])
        acc.append(float(np.average(clf.predict(x[test]) == y[test])))
        auc.append(float(roc_auc_score(y[test], clf.decision_function(x[test]))))
    return {"acc": float(np.mean(acc)), "auc": float(np.mean(auc))}
