"""Evaluation of unlearning: metrics and membership-inference attacks as pure functions, the ``UnlearningEvaluator``
callback that runs them on every split, reports (``metrics.json``/``metrics.md``) and plots.

Definitions and references: ``docs/metrics.md``.
"""

from lightning_unlearn.evaluation.cache import ReferenceCache
from lightning_unlearn.evaluation.evaluator import METRIC_KEYS, UnlearningEvaluator, evaluated_backbone
from lightning_unlearn.evaluation.metrics import (
    accuracy,
    activation_distance,
    agreement,
    cross_entropy_per_sample,
    entropy,
    forget_acc_gap,
    js_divergence,
    per_class_accuracy,
    random_init_like,
    random_references,
    speedup_vs_retrain,
    zrf,
)
from lightning_unlearn.evaluation.mia import entropy_mia, loss_mia, m_entropy, mia_efficacy, mia_feature
from lightning_unlearn.evaluation.plots import plot_decision_space, plot_per_class_accuracy, project_2d
from lightning_unlearn.evaluation.report import metrics_to_json, metrics_to_markdown, write_reports

__all__ = [
    "METRIC_KEYS",
    "ReferenceCache",
    "UnlearningEvaluator",
    "accuracy",
    "activation_distance",
    "agreement",
    "cross_entropy_per_sample",
    "entropy",
    "entropy_mia",
    "evaluated_backbone",
    "forget_acc_gap",
    "js_divergence",
    "loss_mia",
    "m_entropy",
    "metrics_to_json",
    "metrics_to_markdown",
    "mia_efficacy",
    "mia_feature",
    "per_class_accuracy",
    "plot_decision_space",
    "plot_per_class_accuracy",
    "project_2d",
    "random_init_like",
    "random_references",
    "speedup_vs_retrain",
    "write_reports",
    "zrf",
]
