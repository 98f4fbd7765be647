"""The audit's configuration: a jsonargparse parser (``-c configs/audit/<name>.yaml``) and a validated dataclass."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lightning_unlearn.audit._bench import (
    BenchmarkConfigError,
    MethodSpec,
    TrainerSettings,
    TrainingSettings,
    _check_method_args,
    _method_spec,
    class_spec,
)

__all__ = ["AuditConfig", "AuditConfigError", "build_parser", "config_from_namespace", "load_config"]

#: Reserved method names: the original unchanged (no unlearning) and an independent retraining on D_r.
ORIGINAL, RETRAIN = "Original", "Retrain"
EVALUATIONS = ("ulira", "challenge")
_DATA_SKIP = {"forget", "seed", "train_on", "holdout_fraction"}  # the audit sets them per shadow model
_BACKBONE_LINKED = ("num_classes", "in_channels", "image_size", "mean", "std")


class AuditConfigError(ValueError):
    """The audit configuration cannot run (raised before anything is trained)."""


@dataclass
class AuditConfig:
    """A parsed audit configuration (see ``docs/audit.md`` for every key)."""

    output_dir: str
    data: dict[str, Any]
    backbone: dict[str, Any]
    training: TrainingSettings
    methods: list[MethodSpec]
    trainer: TrainerSettings
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
    executor: Any = "local"
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    quiet: bool = True
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> list[str]:
        """Every audited row: the baselines, then the configured methods."""
        return [*self.baselines, *(m.name for m in self.methods)]


def build_parser() -> Any:
    """The jsonargparse parser of ``lightning_unlearn audit``."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    from lightning_unlearn.backbones import Backbone
    from lightning_unlearn.data.base import UnlearningDataModule

    p = ArgumentParser(
        prog="lightning_unlearn audit",
        description=(
            "Privacy audit of unlearning methods with shadow models: U-LiRA (Hayes et al. 2024) and the NeurIPS 2023 "
            "unlearning challenge's forgetting score. Writes audit.json, audit.md and audit.png into output_dir; "
            "trained models are cached and reused. See docs/audit.md."
        ),
        default_env=False,
    )
    p.add_argument("-c", "--config", action=ActionConfigFile, help="YAML config (configs/audit/*.yaml).")
    p.add_argument("--output_dir", type=str, default="runs/audit", help="Where everything is written.")
    p.add_subclass_arguments(UnlearningDataModule, "data", instantiate=False, required=True, skip=_DATA_SKIP,
                             help="The pool: the DataModule's training set (forget/seed/holdout set per shadow).")
    p.add_subclass_arguments(Backbone, "backbone", instantiate=False, required=True, skip=set(_BACKBONE_LINKED),
                             help="The network; num_classes, in_channels, image_size, mean, std come from the data.")
    p.add_class_arguments(TrainingSettings, "training", instantiate=False)
    p.add_argument("--methods", type=list[dict[str, Any]], default=[],
                   help="List of {name, class_path, init_args, max_epochs, trainer}: the methods under audit.")
    p.add_class_arguments(TrainerSettings, "trainer", instantiate=False)
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
    p.add_argument("--executor", type=Any, default="local", help='"local" or {name: ray, ...}.')
    p.add_argument("--num_cpus", type=float, default=1.0, help="CPU cores per job (for the executor).")
    p.add_argument("--num_gpus", type=float, default=0.0, help="GPUs per job (for the executor).")
    p.add_argument("--quiet", type=bool, default=True, help="Silence Lightning's per-run messages.")
    return p  # fmt: skip


def load_config(source: str | Path | Sequence[str] | None = None, **overrides: Any) -> AuditConfig:
    """Parse an audit config: a YAML path or command-line arguments; ``overrides`` are dotted keys applied after."""
    parser = build_parser()
    args = ["-c", str(source)] if isinstance(source, (str, Path)) else list(source or [])
    for key, value in overrides.items():
        args.append(f"--{key}={json.dumps(value) if not isinstance(value, str) else value}")
    return config_from_namespace(parser.parse_args(args))


def config_from_namespace(ns: Any) -> AuditConfig:
    """A validated :class:`AuditConfig` from a parsed namespace."""
    d = ns.as_dict() if hasattr(ns, "as_dict") else dict(ns)
    d.pop("config", None)
    d.pop("__path__", None)
    source = json.loads(json.dumps(d, default=str))
    try:
        methods = [_method_spec(i, m) for i, m in enumerate(d.get("methods") or [])]
    except BenchmarkConfigError as err:
        raise AuditConfigError(str(err)) from None
    cfg = AuditConfig(
        output_dir=str(d["output_dir"]), data=class_spec(d["data"]), backbone=class_spec(d["backbone"]),
        training=TrainingSettings(**d["training"]), methods=methods, trainer=TrainerSettings(**d["trainer"]),
        shadow_models=int(d["shadow_models"]), targets=int(d["targets"]), forget_per_model=int(d["forget_per_model"]),
        target_classes=None if d.get("target_classes") is None else [int(c) for c in d["target_classes"]],
        seed=int(d["seed"]), baselines=list(d["baselines"]), evaluations=list(d["evaluations"]),
        delta=float(d["delta"]), variance=d["variance"], bootstrap=int(d["bootstrap"]), executor=d["executor"],
        num_cpus=float(d["num_cpus"]), num_gpus=float(d["num_gpus"]), quiet=bool(d["quiet"]), source=source,
    )  # fmt: skip
    validate_config(cfg)
    return cfg


def validate_config(cfg: AuditConfig) -> None:
    """Every check possible before training (sizes, names, methods' classes and arguments)."""
    if cfg.shadow_models < 4:
        raise AuditConfigError(
            f"shadow_models={cfg.shadow_models}: U-LiRA fits two Gaussians per example on the other shadows and the "
            "challenge score needs two outputs of each kind per example; use at least 4 (16 or more for stable "
            "numbers)."
        )
    if cfg.targets < 1 or not 1 <= cfg.forget_per_model <= cfg.targets:
        raise AuditConfigError(f"need 1 <= forget_per_model ({cfg.forget_per_model}) <= targets ({cfg.targets}).")
    bad = sorted(set(cfg.baselines) - {ORIGINAL, RETRAIN})
    if bad:
        raise AuditConfigError(f"baselines {bad} unknown: choose among {ORIGINAL} and {RETRAIN}.")
    bad = sorted(set(cfg.evaluations) - set(EVALUATIONS))
    if bad or not cfg.evaluations:
        raise AuditConfigError(f"evaluations {bad or '[]'}: choose one or more of {list(EVALUATIONS)}.")
    if not cfg.rows:
        raise AuditConfigError("nothing to audit: list `methods` (or keep the baselines).")
    names = [m.name for m in cfg.methods]
    if len(set(names)) != len(names):
        raise AuditConfigError(f"method names must be unique, got {names}.")
    for m in cfg.methods:
        if m.name in (ORIGINAL, RETRAIN):
            raise AuditConfigError(f"{m.name!r} is reserved for a baseline; rename that method.")
        try:
            if m.needs_recorded_updates:
                raise AuditConfigError(f"method {m.name!r} needs updates recorded during training; the audit does "
                                       "not record them yet: remove it from `methods`.")  # fmt: skip
            _check_method_args(m, m.resolve())
        except BenchmarkConfigError as err:
            raise AuditConfigError(str(err)) from None
    if not 0 < cfg.delta < 1:
        raise AuditConfigError(f"delta must be in (0, 1), got {cfg.delta}.")
    if cfg.trainer.devices != 1:
        raise AuditConfigError(
            "trainer.devices must be 1: each job runs on one device (use the ray executor for more)."
        )
