"""The benchmark pieces the audit reuses (configuration types, method checks, content hashes, digests), imported in
one place from the benchmark package."""

from __future__ import annotations

from lightning_unlearn.benchmark.cache import file_sha256
from lightning_unlearn.benchmark.plan import build_backbone_for, config_hash, trainer_kwargs
from lightning_unlearn.benchmark.plan import import_class as _import_class
from lightning_unlearn.benchmark.progress import quiet
from lightning_unlearn.benchmark.specs import (
    BenchmarkConfigError,
    MethodSpec,
    TrainerSettings,
    TrainingSettings,
    _check_method_args,
    _method_spec,
    class_spec,
)

__all__ = ["BenchmarkConfigError", "MethodSpec", "TrainerSettings", "TrainingSettings", "_check_method_args",
           "_import_class", "_method_spec", "build_backbone_for", "class_spec", "config_hash", "file_sha256", "quiet",
           "trainer_kwargs"]  # fmt: skip
