"""Evaluation of unlearning: metrics and membership-inference attacks as pure functions, each wrapped by a registered
component (``component.py``), and the ``UnlearningEvaluator`` callback that computes every network's outputs once,
runs the enabled components, and writes reports (``metrics.json``/``metrics.md``) and plots.

Definitions and references: ``docs/metrics.md``.
"""

from lightning_unlearn.evaluation.cache import ReferenceCache
from lightning_unlearn.evaluation.cka import RepresentationCKA, linear_cka
from lightning_unlearn.evaluation.component import COMPONENTS, Component, EvalContext, register_component
from lightning_unlearn.evaluation.evaluator import (
    METRIC_KEYS,
    REPRESENTATION_KEYS,
    UnlearningEvaluator,
    evaluated_backbone,
    evaluator_settings,
    rng_isolated,
)
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
from lightning_unlearn.evaluation.outputs import Outputs
from lightning_unlearn.evaluation.plots import plot_decision_space, plot_per_class_accuracy, project_2d
from lightning_unlearn.evaluation.probe import LinearProbe, linear_probe
from lightning_unlearn.evaluation.relearn import RelearnAttack, relearn_steps
from lightning_unlearn.evaluation.report import metrics_to_json, metrics_to_markdown, write_reports

__all__ = [
    "COMPONENTS",
    "METRIC_KEYS",
    "REPRESENTATION_KEYS",
    "Component",
    "EvalContext",
    "LinearProbe",
    "Outputs",
    "ReferenceCache",
    "RelearnAttack",
    "RepresentationCKA",
    "UnlearningEvaluator",
    "accuracy",
    "activation_distance",
    "agreement",
    "cross_entropy_per_sample",
    "entropy",
    "entropy_mia",
    "evaluated_backbone",
    "evaluator_settings",
    "forget_acc_gap",
    "js_divergence",
    "linear_cka",
    "linear_probe",
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
    "register_component",
    "relearn_steps",
    "rng_isolated",
    "speedup_vs_retrain",
    "write_reports",
    "zrf",
]
