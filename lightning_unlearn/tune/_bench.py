"""The benchmark pieces the tuner reuses (plan, model cache and training, one method run, one reference row, the
report's average gap), in one place so that the tuner's modules name them alike."""

from __future__ import annotations

from lightning_unlearn.benchmark.cache import cache_problem, evaluator_settings, group_original
from lightning_unlearn.benchmark.config import BenchmarkConfig, load_config, validate_config
from lightning_unlearn.benchmark.execution import run_benchmark, run_method, run_reference, train_model
from lightning_unlearn.benchmark.plan import Group, ModelJob, Plan, build_datamodule, config_hash, make_plan
from lightning_unlearn.benchmark.progress import quiet
from lightning_unlearn.benchmark.report import add_gaps
from lightning_unlearn.benchmark.specs import (
    ORIGINAL,
    RETRAIN,
    BenchmarkConfigError,
    MethodSpec,
    Scenario,
    _check_method_args,
    slug,
    target_slug,
)

__all__ = [
    "ORIGINAL",
    "RETRAIN",
    "BenchmarkConfig",
    "BenchmarkConfigError",
    "Group",
    "MethodSpec",
    "ModelJob",
    "Plan",
    "Scenario",
    "_check_method_args",
    "add_gaps",
    "build_datamodule",
    "cache_problem",
    "config_hash",
    "evaluator_settings",
    "group_original",
    "load_config",
    "make_plan",
    "quiet",
    "run_benchmark",
    "run_method",
    "run_reference",
    "slug",
    "target_slug",
    "train_model",
    "validate_config",
]
