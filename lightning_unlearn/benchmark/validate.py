"""Every check of a :class:`~.config.BenchmarkConfig` that can be made before anything is trained (imports, arguments,
names, devices, the settings of given models)."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lightning_unlearn.benchmark.scaleout import executor_settings
from lightning_unlearn.benchmark.specs import BASELINE_METHODS, target_slug
from lightning_unlearn.evaluation import UnlearningEvaluator
from lightning_unlearn.experiment import ConfigError, check_methods, slug

if TYPE_CHECKING:
    from lightning_unlearn.benchmark.config import BenchmarkConfig

__all__ = ["validate_config"]


def _check_dir_names(names: Sequence[str], what: str) -> None:
    """Distinct names must make distinct directories (``slug``, compared case-insensitively as on macOS/Windows
    file systems): two scenarios or rows in one directory would overwrite or reuse each other's results."""
    seen: dict[str, str] = {}
    for name in names:
        key = slug(name).casefold()
        if key in seen and seen[key] != name:
            raise ConfigError(
                f"{what} names {seen[key]!r} and {name!r} make the same directory name {slug(name)!r}; rename one."
            )
        seen[key] = name


def validate_config(cfg: BenchmarkConfig) -> None:
    """Every check that can be made before training anything (imports, arguments, names, devices)."""
    if not cfg.scenarios:
        raise ConfigError("`scenarios` is empty: list at least one {name, targets}.")
    names = [s.name for s in cfg.scenarios]
    if len(set(names)) != len(names):
        raise ConfigError(f"Scenario names must be unique, got {names}.")
    _check_dir_names(names, "Scenario")
    for s in cfg.scenarios:
        if s.requests:
            continue  # a sequence may ask for the same spec again ({fraction: 0.03} three times): among what is left
        if not s.targets:
            raise ConfigError(f"Scenario {s.name!r} has no targets (nor requests): list at least one forget target.")
        slugs = [target_slug(t) for t in s.targets]
        if len(set(slugs)) != len(slugs):
            raise ConfigError(f"Scenario {s.name!r} lists a forget target twice: {slugs}.")
    if not cfg.seeds:
        raise ConfigError("`seeds` is empty.")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError(f"`seeds` lists a seed twice: {cfg.seeds}.")
    if not cfg.methods:
        raise ConfigError("`methods` is empty: list at least one {name, class_path, init_args, max_epochs}.")
    check_methods(cfg.methods, "the reference rows")
    _check_dir_names([*BASELINE_METHODS, *cfg.method_names()], "Method")
    for m in cfg.methods:
        if not slug(m.name):
            raise ConfigError(f"Method name {m.name!r} has no usable characters for a directory name.")
        unknown_s = sorted(set(m.scenarios or []) - set(names))
        if unknown_s or m.scenarios == []:
            raise ConfigError(
                f"Method {m.name!r}: scenarios {unknown_s or '[]'} not among the configured scenarios {names}; list "
                "some of those (or drop `scenarios` to run it in all)."
            )
    _check_given(cfg)
    if cfg.trainer.devices != 1:
        raise ConfigError(
            f"trainer.devices={cfg.trainer.devices}: every training and run of the benchmark uses one device. To use "
            "several GPUs, run its jobs side by side: `executor: {name: ray, resources: {num_gpus: 1}}` "
            "(docs/scale-out.md)."
        )
    if cfg.training.max_epochs < 1 or (cfg.training.gold_max_epochs is not None and cfg.training.gold_max_epochs < 1):
        raise ConfigError("training.max_epochs (and gold_max_epochs) must be >= 1.")
    executor_settings(cfg)  # its errors, before anything runs
    if cfg.logger in ("tensorboard", "wandb"):
        needs = ("wandb",) if cfg.logger == "wandb" else ("tensorboard", "tensorboardX")  # either writes TB files
        module = needs[0]
        if not any(importlib.util.find_spec(m) for m in needs):
            raise ConfigError(f"logger: {cfg.logger} needs the {module} package: pip install {module}.")
    try:
        UnlearningEvaluator(**cfg.evaluator)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"evaluator settings {cfg.evaluator}: {err}") from err


def _check_given(cfg: BenchmarkConfig) -> None:
    """The settings of the models the user brings (the files themselves are checked by ``make_plan``, before any
    training): a given original has no recorded training updates, ``model_source`` needs a given model."""
    needs = [m.name for m in cfg.methods if m.needs_recorded_updates]
    if cfg.original_ckpt and needs:
        raise ConfigError(
            f"{', '.join(needs)} need(s) the updates recorded while the benchmark trains the original model, which a "
            "given original_ckpt does not have: remove it from `methods`, or drop original_ckpt to train the original."
        )
    ms = cfg.model_source
    if ms and not cfg.gives_models:
        raise ConfigError(
            "model_source says how to read your checkpoints, but no original_ckpt or gold_ckpt is given: add them, or "
            "remove model_source."
        )
    if not ms.get("arch") and ms.get("arch_args"):
        raise ConfigError(
            "model_source.arch_args needs model_source.arch; without it the configured `backbone:` is the "
            "architecture: put its arguments in backbone.init_args."
        )
