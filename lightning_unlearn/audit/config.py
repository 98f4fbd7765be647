"""The audit's configuration: a jsonargparse parser (``-c configs/audit/<name>.yaml``) and a validated dataclass."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lightning_unlearn.experiment import (
    ORIGINAL,
    RETRAIN,
    ConfigError,
    ExecutorSettings,
    ExperimentConfig,
    TrainerSettings,
    TrainingSettings,
    add_experiment_arguments,
    add_run_arguments,
    check_methods,
    class_spec,
    command_parser,
    config_args,
    executor_settings,
    method_spec,
    parse_command,
    parsed_values,
)

__all__ = ["AuditConfig", "AuditConfigError", "build_parser", "config_from_namespace", "load_config", "validate_config"]

EVALUATIONS = ("ulira", "challenge")
DATA_SKIP = frozenset({"forget", "seed", "train_on", "holdout_fraction"})  # the audit sets them per shadow model
#: The audit's configuration errors are :class:`~lightning_unlearn.experiment.ConfigError` (the older name).
AuditConfigError = ConfigError


@dataclass(kw_only=True)
class AuditConfig(ExperimentConfig):
    """A parsed audit configuration (see ``docs/audit.md`` for every key): the fields every application has
    (:class:`~lightning_unlearn.experiment.ExperimentConfig`) and the audit's own."""

    shadow_models: int = 16
    targets: int = 100
    forget_per_model: int = 50
    target_classes: list[int] | None = None
    seed: int = 0
    baselines: list[str] = field(default_factory=lambda: [ORIGINAL, RETRAIN])
    evaluations: list[str] = field(default_factory=lambda: list(EVALUATIONS))
    delta: float = 1e-5
    variance: Literal["auto", "per_example", "global"] = "auto"
    bootstrap: int = 200
    num_cpus: float | None = None  # the older spelling of executor.resources.num_cpus
    num_gpus: float | None = None  # ... and of executor.resources.num_gpus

    @property
    def rows(self) -> list[str]:
        """Every audited row: the baselines, then the configured methods."""
        return [*self.baselines, *(m.name for m in self.methods)]

    def scale_out(self) -> ExecutorSettings:
        """Where the jobs run: ``executor`` as every application reads it (``num_cpus``/``num_gpus``, if given, are
        the defaults of ``executor.resources``)."""
        defaults = {k: v for k, v in (("num_cpus", self.num_cpus), ("num_gpus", self.num_gpus)) if v is not None}
        return executor_settings(self.executor, self.trainer, defaults)


def build_parser() -> Any:
    """The jsonargparse parser of ``lightning_unlearn audit``."""
    p = command_parser(
        "audit",
        "Privacy audit of unlearning methods with shadow models: U-LiRA (Hayes et al. 2024) and the NeurIPS 2023 "
        "unlearning challenge's forgetting score. Writes audit.json, audit.md and audit.png into output_dir; trained "
        "models are cached and reused. See docs/audit.md.",
        "configs/audit/*.yaml",
        "runs/audit",
    )
    add_experiment_arguments(
        p, data_skip=DATA_SKIP, methods_required=False,
        data_help="The pool: the DataModule's training set (forget/seed/holdout set per shadow).",
        methods_help="List of {name, class_path, init_args, max_epochs, trainer}: the methods under audit.",
    )
    p.add_argument("--shadow_models", type=int, default=16, help="N: shadow originals (each on a random half).")
    p.add_argument("--targets", type=int, default=100, help="Size of the target set T drawn from the pool.")
    p.add_argument("--forget_per_model", type=int, default=50, help="Forget set size per shadow (drawn from T).")
    p.add_argument("--target_classes", type=list[int] | None, default=None,
                   help="Draw T from these classes only (sub-class forgetting); default: the whole pool (random).")
    p.add_argument("--seed", type=int, default=0, help="Seed of T, the forget sets and shadow k's seed (seed + k).")
    p.add_argument("--baselines", type=list[str], default=[ORIGINAL, RETRAIN],
                   help="Reference rows: Original (no unlearning) and Retrain (independent retraining on D_r).")
    p.add_argument("--evaluations", type=list[str], default=list(EVALUATIONS), help="ulira and/or challenge.")
    p.add_argument("--delta", type=float, default=1e-5, help="The challenge's delta (its scoring code's 1e-5).")
    p.add_argument("--variance", type=Literal["auto", "per_example", "global"], default="auto",
                   help="U-LiRA Gaussians: per-example or pooled std (auto: per example with >= 8 samples).")
    p.add_argument("--bootstrap", type=int, default=200, help="Bootstrap resamples for the 95% intervals.")
    add_run_arguments(p)
    p.add_argument("--num_cpus", type=float | None, default=None, help="Older spelling of executor.resources.num_cpus.")
    p.add_argument("--num_gpus", type=float | None, default=None, help="Older spelling of executor.resources.num_gpus.")
    return p


def load_config(source: str | Path | Sequence[str] | None = None, **overrides: Any) -> AuditConfig:
    """Parse an audit config: a YAML path or command-line arguments; ``overrides`` are dotted keys applied after."""
    return config_from_namespace(parse_command(build_parser(), config_args(source, overrides)))


def config_from_namespace(ns: Any) -> AuditConfig:
    """A validated :class:`AuditConfig` from a parsed namespace."""
    d, source = parsed_values(ns)
    methods = [method_spec(i, m) for i, m in enumerate(d.get("methods") or [])]
    cfg = AuditConfig(
        output_dir=str(d["output_dir"]), data=class_spec(d["data"]), backbone=class_spec(d["backbone"]),
        training=TrainingSettings(**d["training"]), methods=methods, trainer=TrainerSettings(**d["trainer"]),
        shadow_models=int(d["shadow_models"]), targets=int(d["targets"]), forget_per_model=int(d["forget_per_model"]),
        target_classes=None if d.get("target_classes") is None else [int(c) for c in d["target_classes"]],
        seed=int(d["seed"]), baselines=list(d["baselines"]), evaluations=list(d["evaluations"]),
        delta=float(d["delta"]), variance=d["variance"], bootstrap=int(d["bootstrap"]), executor=d["executor"],
        num_cpus=d.get("num_cpus"), num_gpus=d.get("num_gpus"), quiet=bool(d["quiet"]), source=source,
    )
    validate_config(cfg)
    return cfg


def validate_config(cfg: AuditConfig) -> None:
    """Every check possible before training (sizes, names, methods' classes and arguments)."""
    if cfg.shadow_models < 4:
        raise ConfigError(
            f"shadow_models={cfg.shadow_models}: U-LiRA fits two Gaussians per example on the other shadows and the "
            "challenge score needs two outputs of each kind per example; use at least 4 (16 or more for stable "
            "numbers)."
        )
    if cfg.targets < 1 or not 1 <= cfg.forget_per_model <= cfg.targets:
        raise ConfigError(f"need 1 <= forget_per_model ({cfg.forget_per_model}) <= targets ({cfg.targets}).")
    bad = sorted(set(cfg.baselines) - {ORIGINAL, RETRAIN})
    if bad:
        raise ConfigError(f"baselines {bad} unknown: choose among {ORIGINAL} and {RETRAIN}.")
    bad = sorted(set(cfg.evaluations) - set(EVALUATIONS))
    if bad or not cfg.evaluations:
        raise ConfigError(f"evaluations {bad or '[]'}: choose one or more of {list(EVALUATIONS)}.")
    if not cfg.rows:
        raise ConfigError("nothing to audit: list `methods` (or keep the baselines).")
    check_methods(cfg.methods, "a baseline")
    for m in cfg.methods:
        if m.needs_recorded_updates:
            raise ConfigError(f"method {m.name!r} needs updates recorded during training; the audit does not record "
                              "them yet: remove it from `methods`.")
    if not 0 < cfg.delta < 1:
        raise ConfigError(f"delta must be in (0, 1), got {cfg.delta}.")
    if cfg.trainer.devices != 1:
        raise ConfigError(
            "trainer.devices must be 1: each job runs on one device (use the ray executor for more)."
        )
    cfg.scale_out()  # its errors, before anything runs
