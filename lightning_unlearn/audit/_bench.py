"""The benchmark pieces the audit reuses (configuration types, method checks, content hashes, digests), imported in
one place so that the benchmark's move into a package changes one file."""

from __future__ import annotations

from lightning_unlearn.benchmark import (  # noqa: F401 - re-exported for the audit
    BenchmarkConfigError,
    MethodSpec,
    TrainerSettings,
    TrainingSettings,
    _check_method_args,
    _import_class,
    _method_spec,
    build_backbone_for,
    config_hash,
    file_sha256,
)

__all__ = ["BenchmarkConfigError", "MethodSpec", "TrainerSettings", "TrainingSettings", "_check_method_args",
           "_import_class", "_method_spec", "build_backbone_for", "config_hash", "file_sha256"]  # fmt: skip
