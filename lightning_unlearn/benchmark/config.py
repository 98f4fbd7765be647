"""Configuration of ``lightning_unlearn benchmark``: the parsed :class:`BenchmarkConfig`, its jsonargparse parser,
:func:`load_config` and :func:`validate_config` (every check that can be made before anything is trained)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lightning_unlearn.benchmark.specs import (
    _BACKBONE_LINKED,
    _DATA_SKIP,
    _EVALUATOR_SKIP,
    BASELINE_METHODS,
    ORIGINAL,
    RESULT_FILE,
    RETRAIN,
    BenchmarkConfigError,
    MethodSpec,
    Scenario,
    ScenarioEntry,
    TrainerSettings,
    TrainingSettings,
    _check_method_args,
    _method_spec,
    class_spec,
    given_paths,
    slug,
    target_slug,
)
from lightning_unlearn.benchmark.scaleout import executor_settings, group_rows
from lightning_unlearn.data.forget import ForgetSpec

__all__ = [
    "BASELINE_METHODS",
    "ORIGINAL",
    "RESULT_FILE",
    "RETRAIN",
    "BenchmarkConfig",
    "BenchmarkConfigError",
    "MethodSpec",
    "Scenario",
    "TrainerSettings",
    "TrainingSettings",
    "build_parser",
    "config_from_namespace",
    "executor_settings",
    "group_rows",
    "load_config",
    "validate_config",
]


@dataclass
class BenchmarkConfig:
    """A parsed benchmark configuration (see the module docstring and ``docs/benchmarks.md``)."""

    output_dir: str
    data: dict[str, Any]
    backbone: dict[str, Any]
    training: TrainingSettings
    scenarios: list[Scenario]
    seeds: list[int]
    methods: list[MethodSpec]
    trainer: TrainerSettings
    evaluator: dict[str, Any]
    keep_checkpoints: bool = True
    fail_fast: bool = False
    report_only: bool = False
    quiet: bool = True
    logger: str = "csv"  # per-run Lightning logger: csv, tensorboard, wandb or none
    executor: Any = "local"  # "local", "ray" or {name, ..., resources: {num_cpus, num_gpus}}
    source: dict[str, Any] = field(default_factory=dict)  # the parsed config, written to output_dir/config.yaml
    original_ckpt: dict[int, str] = field(default_factory=dict)  # the user's original per seed (none: trained)
    model_source: dict[str, Any] = field(default_factory=dict)  # how to read a given file not ours: byo.ModelSource

    @property
    def gives_models(self) -> bool:
        """Whether the user brings any model (``original_ckpt`` or a target's ``gold_ckpt``)."""
        return bool(self.original_ckpt) or any(s.gold_ckpt for s in self.scenarios)

    @property
    def needs_recorded_updates(self) -> bool:
        return any(m.needs_recorded_updates for m in self.methods)

    def rows_for(self, scenario: str) -> list[str]:
        """The rows of a group of ``scenario``: Original, Retrain and every method that runs in it."""
        return [ORIGINAL, RETRAIN, *(m.name for m in self.methods if m.runs_in(scenario))]


def build_parser() -> Any:
    """The jsonargparse parser of ``lightning_unlearn benchmark``."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    from lightning_unlearn.backbones import Backbone
    from lightning_unlearn.data.base import UnlearningDataModule
    from lightning_unlearn.evaluation import UnlearningEvaluator

    parser = ArgumentParser(
        prog="lightning_unlearn benchmark",
        description=(
            "Run every listed unlearning method on every scenario x forget target x seed, against the original and the "
            "gold (retrained) model, and write results.csv, results.json, report.md and plots into output_dir. "
            "Finished runs and trained models are reused when run again. See docs/benchmarks.md."
        ),
        default_env=False,
    )
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="YAML config (configs/benchmark/*.yaml).")
    parser.add_argument("--output_dir", type=str, default="runs/benchmark", help="Where everything is written.")
    parser.add_subclass_arguments(
        UnlearningDataModule, "data", instantiate=False, required=True, skip=_DATA_SKIP,
        help="The DataModule (class_path/init_args) without forget/seed/train_on, which the benchmark sets per run.",
    )  # fmt: skip
    parser.add_subclass_arguments(
        Backbone, "backbone", instantiate=False, required=True, skip=set(_BACKBONE_LINKED),
        help="The network (class_path/init_args); num_classes, in_channels, image_size, mean, std come from the data.",
    )  # fmt: skip
    parser.add_class_arguments(TrainingSettings, "training", instantiate=False)
    parser.add_argument(
        "--scenarios", type=list[ScenarioEntry], required=True,
        help="List of {name, targets: [ForgetSpec dict, ...]}, e.g. {name: class-wise, targets: [{classes: [3]}]}; a "
        "target's gold_ckpt (a path, or {seed: path}) is your gold model of it (trained on its D_r) instead of a "
        "trained one.",
    )  # fmt: skip
    parser.add_argument(
        "--original_ckpt", type=str | dict[int, str] | None, default=None,
        help="Your original model (trained on all of D) instead of a trained one: a path, or {seed: path}; it serves "
        "every forget target of its seed. Read weights-only, never written to. See docs/embedding.md.",
    )  # fmt: skip
    from lightning_unlearn.byo import ModelSource

    parser.add_class_arguments(ModelSource, "model_source", instantiate=False)  # {arch, arch_args, network_attr}
    parser.add_argument("--seeds", type=list[int], default=[0], help="Seeds: splits, training and methods.")
    parser.add_argument(
        "--methods", type=list[dict[str, Any]], required=True,
        help="List of {name, class_path, init_args, max_epochs, trainer, scenarios}: UnlearningMethod classes, their "
        "arguments, epochs, optional extra Trainer arguments and the scenarios they run in (default: all).",
    )  # fmt: skip
    parser.add_class_arguments(TrainerSettings, "trainer", instantiate=False)
    parser.add_class_arguments(UnlearningEvaluator, "evaluator", instantiate=False, skip=_EVALUATOR_SKIP)
    parser.add_argument("--keep_checkpoints", type=bool, default=True, help="Keep every run's unlearned.ckpt.")
    parser.add_argument("--fail_fast", type=bool, default=False, help="Stop at the first failed run.")
    parser.add_argument(
        "--report_only", type=bool, default=False, help="Only rebuild the tables, report and plots from finished runs."
    )
    parser.add_argument("--quiet", type=bool, default=True, help="Silence Lightning's per-run messages.")
    parser.add_argument(
        "--logger", type=Literal["csv", "tensorboard", "wandb", "none"], default="csv",
        help="Lightning logger of every training and run, in its directory's logs/ (wandb: one W&B run per job).",
    )
    parser.add_argument(
        "--executor", type=dict[str, Any] | str, default="local",
        help="Where the jobs run: local (this process, one after the other) or {name: ray, address: auto, "
        "max_retries: 1, resources: {num_cpus: 1, num_gpus: 1}} (resources: per job). See docs/scale-out.md.",
    )  # fmt: skip
    from lightning_unlearn.tune.apply import TunedSource

    parser.add_class_arguments(TunedSource, "tuned", instantiate=False)  # {dir, mode}: docs/tuning.md
    return parser


def load_config(source: str | Path | Sequence[str] | None = None, **overrides: Any) -> BenchmarkConfig:
    """Parse a benchmark config: a YAML path, or a list of command-line arguments (``["-c", "x.yaml", ...]``).

    ``overrides`` are dotted keys applied after parsing (``output_dir="/tmp/b"``, ``seeds=[0]``).
    Raises :class:`BenchmarkConfigError` for a configuration that cannot run (unknown method class, bad arguments,
    a forget target that is not a valid :class:`ForgetSpec`, ...).
    """
    parser = build_parser()
    args = ["-c", str(source)] if isinstance(source, (str, Path)) else list(source or [])
    for key, value in overrides.items():
        args.append(f"--{key}={json.dumps(value) if not isinstance(value, str) else value}")
    ns = parser.parse_args(args)
    return config_from_namespace(ns, parser)


def config_from_namespace(ns: Any, parser: Any = None) -> BenchmarkConfig:
    """Turn a parsed namespace into a validated :class:`BenchmarkConfig`."""
    d = ns.as_dict() if hasattr(ns, "as_dict") else dict(ns)
    d.pop("config", None)
    d.pop("__path__", None)
    source = json.loads(json.dumps(d, default=str))
    scenarios = []
    for i, sc in enumerate(d.get("scenarios") or []):
        name = str(sc.get("name") or "").strip()
        if not name:
            raise BenchmarkConfigError(f"scenarios[{i}] has no name.")
        targets, golds = [], {}
        for j, t in enumerate(sc.get("targets") or []):
            spec = {k: v for k, v in dict(t).items() if v is not None}
            gold = spec.pop("gold_ckpt", None)
            try:
                targets.append(ForgetSpec(**spec))
            except (TypeError, ValueError) as err:
                raise BenchmarkConfigError(f"scenarios[{i}] ({name}) targets[{j}] = {spec}: {err}") from err
            where = f"scenarios[{i}] ({name}) targets[{j}] gold_ckpt"
            paths = given_paths(gold, [int(s) for s in d.get("seeds") or []], where)
            if paths:
                golds[target_slug(targets[-1])] = paths
        scenarios.append(Scenario(name=name, targets=targets, gold_ckpt=golds))
    methods = [_method_spec(i, m) for i, m in enumerate(d.get("methods") or [])]
    from lightning_unlearn.tune.apply import expand_tuned

    methods = expand_tuned(methods, d.get("tuned"), BenchmarkConfigError)  # "X (tuned)" rows from best/X.yaml
    cfg = BenchmarkConfig(
        output_dir=str(d["output_dir"]),
        data=class_spec(d["data"]),
        backbone=class_spec(d["backbone"]),
        training=TrainingSettings(**d["training"]),
        scenarios=scenarios,
        seeds=[int(s) for s in d.get("seeds") or []],
        methods=methods,
        trainer=TrainerSettings(**d["trainer"]),
        evaluator=dict(d.get("evaluator") or {}),
        keep_checkpoints=bool(d.get("keep_checkpoints", True)),
        fail_fast=bool(d.get("fail_fast", False)),
        report_only=bool(d.get("report_only", False)),
        quiet=bool(d.get("quiet", True)),
        logger=str(d.get("logger") or "csv"),
        executor=d.get("executor") or "local",
        source=source,
        original_ckpt=given_paths(d.get("original_ckpt"), [int(s) for s in d.get("seeds") or []], "original_ckpt"),
        model_source={k: v for k, v in dict(d.get("model_source") or {}).items() if v not in (None, {})},
    )
    validate_config(cfg)
    return cfg


def _check_dir_names(names: Sequence[str], what: str) -> None:
    """Distinct names must make distinct directories (``slug``, compared case-insensitively as on macOS/Windows
    file systems): two scenarios or rows in one directory would overwrite or reuse each other's results."""
    seen: dict[str, str] = {}
    for name in names:
        key = slug(name).casefold()
        if key in seen and seen[key] != name:
            raise BenchmarkConfigError(
                f"{what} names {seen[key]!r} and {name!r} make the same directory name {slug(name)!r}; rename one."
            )
        seen[key] = name


def validate_config(cfg: BenchmarkConfig) -> None:
    """Every check that can be made before training anything (imports, arguments, names, devices)."""
    if not cfg.scenarios:
        raise BenchmarkConfigError("`scenarios` is empty: list at least one {name, targets}.")
    names = [s.name for s in cfg.scenarios]
    if len(set(names)) != len(names):
        raise BenchmarkConfigError(f"Scenario names must be unique, got {names}.")
    _check_dir_names(names, "Scenario")
    for s in cfg.scenarios:
        if not s.targets:
            raise BenchmarkConfigError(f"Scenario {s.name!r} has no targets.")
        slugs = [target_slug(t) for t in s.targets]
        if len(set(slugs)) != len(slugs):
            raise BenchmarkConfigError(f"Scenario {s.name!r} lists a forget target twice: {slugs}.")
    if not cfg.seeds:
        raise BenchmarkConfigError("`seeds` is empty.")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise BenchmarkConfigError(f"`seeds` lists a seed twice: {cfg.seeds}.")
    if not cfg.methods:
        raise BenchmarkConfigError("`methods` is empty: list at least one {name, class_path, init_args, max_epochs}.")
    mnames = [m.name for m in cfg.methods]
    if len(set(mnames)) != len(mnames):
        raise BenchmarkConfigError(f"Method names must be unique, got {mnames}.")
    _check_dir_names([*BASELINE_METHODS, *mnames], "Method")
    for m in cfg.methods:
        if m.name in BASELINE_METHODS:
            raise BenchmarkConfigError(f"{m.name!r} is reserved for the reference rows; rename that method.")
        if not slug(m.name):
            raise BenchmarkConfigError(f"Method name {m.name!r} has no usable characters for a directory name.")
        unknown_s = sorted(set(m.scenarios or []) - set(names))
        if unknown_s or m.scenarios == []:
            raise BenchmarkConfigError(
                f"Method {m.name!r}: scenarios {unknown_s or '[]'} not among the configured scenarios {names}; list "
                "some of those (or drop `scenarios` to run it in all)."
            )
        _check_method_args(m, m.resolve())
    _check_given(cfg)
    if cfg.trainer.devices != 1:
        raise BenchmarkConfigError(
            f"trainer.devices={cfg.trainer.devices}: every training and run of the benchmark uses one device. To use "
            "several GPUs, run its jobs side by side: `executor: {name: ray, resources: {num_gpus: 1}}` "
            "(docs/scale-out.md)."
        )
    if cfg.training.max_epochs < 1 or (cfg.training.gold_max_epochs is not None and cfg.training.gold_max_epochs < 1):
        raise BenchmarkConfigError("training.max_epochs (and gold_max_epochs) must be >= 1.")
    executor_settings(cfg)
    group_rows(cfg)
    if cfg.logger in ("tensorboard", "wandb"):
        import importlib.util

        needs = ("wandb",) if cfg.logger == "wandb" else ("tensorboard", "tensorboardX")  # either writes TB files
        module = needs[0]
        if not any(importlib.util.find_spec(m) for m in needs):
            raise BenchmarkConfigError(f"logger: {cfg.logger} needs the {module} package: pip install {module}.")
    from lightning_unlearn.evaluation import UnlearningEvaluator

    try:
        UnlearningEvaluator(**cfg.evaluator)
    except (TypeError, ValueError) as err:
        raise BenchmarkConfigError(f"evaluator settings {cfg.evaluator}: {err}") from err


def _check_given(cfg: BenchmarkConfig) -> None:
    """The settings of the models the user brings (the files themselves are checked by ``make_plan``, before any
    training): a given original has no recorded training updates, ``model_source`` needs a given model."""
    needs = [m.name for m in cfg.methods if m.needs_recorded_updates]
    if cfg.original_ckpt and needs:
        raise BenchmarkConfigError(
            f"{', '.join(needs)} need(s) the updates recorded while the benchmark trains the original model, which a "
            "given original_ckpt does not have: remove it from `methods`, or drop original_ckpt to train the original."
        )
    ms = cfg.model_source
    if ms and not cfg.gives_models:
        raise BenchmarkConfigError(
            "model_source says how to read your checkpoints, but no original_ckpt or gold_ckpt is given: add them, or "
            "remove model_source."
        )
    if not ms.get("arch") and ms.get("arch_args"):
        raise BenchmarkConfigError(
            "model_source.arch_args needs model_source.arch; without it the configured `backbone:` is the "
            "architecture: put its arguments in backbone.init_args."
        )
