"""Configuration of ``lightning_unlearn benchmark``: the parsed :class:`BenchmarkConfig`, its jsonargparse parser and
:func:`load_config`; :func:`~.validate.validate_config` makes every check that can be made before anything is
trained."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lightning_unlearn.benchmark.specs import (
    DATA_SKIP,
    RESULT_FILE,
    Scenario,
    ScenarioEntry,
    given_paths,
    target_slug,
)
from lightning_unlearn.benchmark.tuned import TunedSource, expand_tuned
from lightning_unlearn.benchmark.validate import validate_config
from lightning_unlearn.byo import ModelSource
from lightning_unlearn.data.forget import ForgetSpec
from lightning_unlearn.evaluation import UnlearningEvaluator
from lightning_unlearn.experiment import (
    EVALUATOR_SKIP,
    ORIGINAL,
    RETRAIN,
    ConfigError,
    ExperimentConfig,
    MethodSpec,
    TrainerSettings,
    TrainingSettings,
    add_experiment_arguments,
    add_run_arguments,
    class_spec,
    command_parser,
    config_args,
    method_spec,
    parse_command,
    parsed_values,
)

__all__ = [
    "RESULT_FILE",
    "BenchmarkConfig",
    "build_parser",
    "config_from_namespace",
    "load_config",
]


@dataclass(kw_only=True)
class BenchmarkConfig(ExperimentConfig):
    """A parsed benchmark configuration (see the module docstring and ``docs/benchmarks.md``): the fields every
    application has (:class:`~lightning_unlearn.experiment.ExperimentConfig`) and the benchmark's own."""

    scenarios: list[Scenario]
    seeds: list[int]
    evaluator: dict[str, Any]
    keep_checkpoints: bool = True
    fail_fast: bool = False
    report_only: bool = False
    logger: str = "csv"  # per-run Lightning logger: csv, tensorboard, wandb or none
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

    def method(self, name: str, scenario: str) -> MethodSpec | None:
        """The settings of row ``name`` in a group of ``scenario`` (``None`` for Original and Retrain): a name may
        have other settings in other scenarios (settings tuned per scenario)."""
        return next((m for m in self.methods if m.name == name and m.runs_in(scenario)), None)

    def method_names(self) -> list[str]:
        """Every method row's name once, in configured order."""
        return list(dict.fromkeys(m.name for m in self.methods))


def build_parser() -> Any:
    """The jsonargparse parser of ``lightning_unlearn benchmark``."""
    parser = command_parser(
        "benchmark",
        "Run every listed unlearning method on every scenario x forget target x seed, against the original and the "
        "gold (retrained) model, and write results.csv, results.json, report.md and plots into output_dir. Finished "
        "runs and trained models are reused when run again. See docs/benchmarks.md.",
        "configs/benchmark/*.yaml",
        "runs/benchmark",
    )
    add_experiment_arguments(
        parser, data_skip=DATA_SKIP,
        data_help="The DataModule (class_path/init_args) without forget/seed/train_on, which the benchmark sets per run.",
        methods_help="List of {name, class_path, init_args, max_epochs, trainer, scenarios}: UnlearningMethod classes, "
        "their arguments, epochs, optional extra Trainer arguments and the scenarios they run in (default: all).",
    )
    parser.add_argument(
        "--scenarios", type=list[ScenarioEntry], required=True,
        help="List of {name, targets: [ForgetSpec dict, ...]}, e.g. {name: class-wise, targets: [{classes: [3]}]}; a "
        "target's gold_ckpt (a path, or {seed: path}) is your gold model of it (trained on its D_r) instead of a "
        "trained one. Or {name, requests: [ForgetSpec dict, ...]}: deletion requests one after the other on the same "
        "model, e.g. {name: sequential, requests: [{fraction: 0.03}, {fraction: 0.03}]}.",
    )
    parser.add_argument(
        "--original_ckpt", type=str | dict[int, str] | None, default=None,
        help="Your original model (trained on all of D) instead of a trained one: a path, or {seed: path}; it serves "
        "every forget target of its seed. Read weights-only, never written to. See docs/embedding.md.",
    )
    parser.add_class_arguments(ModelSource, "model_source", instantiate=False)  # {arch, arch_args, network_attr}
    parser.add_argument("--seeds", type=list[int], default=[0], help="Seeds: splits, training and methods.")
    parser.add_class_arguments(UnlearningEvaluator, "evaluator", instantiate=False, skip=set(EVALUATOR_SKIP))
    parser.add_argument("--keep_checkpoints", type=bool, default=True, help="Keep every run's unlearned.ckpt.")
    parser.add_argument("--fail_fast", type=bool, default=False, help="Stop at the first failed run.")
    parser.add_argument(
        "--report_only", type=bool, default=False, help="Only rebuild the tables, report and plots from finished runs."
    )
    parser.add_argument(
        "--logger", type=Literal["csv", "tensorboard", "wandb", "none"], default="csv",
        help="Lightning logger of every training and run, in its directory's logs/ (wandb: one W&B run per job).",
    )
    add_run_arguments(parser)
    parser.add_class_arguments(TunedSource, "tuned", instantiate=False)  # {dir, mode}: docs/tuning.md
    return parser


def load_config(source: str | Path | Sequence[str] | None = None, **overrides: Any) -> BenchmarkConfig:
    """Parse a benchmark config: a YAML path, or a list of command-line arguments (``["-c", "x.yaml", ...]``).

    ``overrides`` are dotted keys applied after parsing (``output_dir="/tmp/b"``, ``seeds=[0]``).
    Raises :class:`~lightning_unlearn.experiment.ConfigError` for a configuration that cannot run (unknown method class, bad arguments,
    a forget target that is not a valid :class:`ForgetSpec`, ...).
    """
    parser = build_parser()
    return config_from_namespace(parse_command(parser, config_args(source, overrides)), parser)


def config_from_namespace(ns: Any, parser: Any = None) -> BenchmarkConfig:
    """Turn a parsed namespace into a validated :class:`BenchmarkConfig`."""
    d, source = parsed_values(ns)
    scenarios = []
    for i, sc in enumerate(d.get("scenarios") or []):
        name = str(sc.get("name") or "").strip()
        if not name:
            raise ConfigError(f"scenarios[{i}] has no name.")
        if sc.get("targets") is not None and sc.get("requests") is not None:
            raise ConfigError(f"scenarios[{i}] ({name}) has both `targets` and `requests`: give `targets` (independent "
                              "forget targets) or `requests` (deletion requests one after the other), not both.")
        key = "requests" if sc.get("requests") is not None else "targets"
        targets, golds = [], {}
        for j, t in enumerate(sc.get(key) or []):
            if not isinstance(t, dict):
                raise ConfigError(f"scenarios[{i}] ({name}) {key}[{j}] = {t!r} is not a forget spec mapping such as "
                                  "{fraction: 0.03}.")
            spec = {k: v for k, v in dict(t).items() if v is not None}
            gold = spec.pop("gold_ckpt", None)
            if gold is not None and key == "requests":
                raise ConfigError(f"scenarios[{i}] ({name}) requests[{j}] has a gold_ckpt: the gold model of request k "
                                  "is retrained by the benchmark without everything forgotten so far; remove it.")
            try:
                targets.append(ForgetSpec(**spec))
            except (TypeError, ValueError) as err:
                raise ConfigError(f"scenarios[{i}] ({name}) {key}[{j}] = {spec}: {err}") from err
            where = f"scenarios[{i}] ({name}) targets[{j}] gold_ckpt"
            paths = given_paths(gold, [int(s) for s in d.get("seeds") or []], where)
            if paths:
                golds[target_slug(targets[-1])] = paths
        if key == "requests":
            scenarios.append(Scenario(name=name, targets=[], requests=targets))
        else:
            scenarios.append(Scenario(name=name, targets=targets, gold_ckpt=golds))
    methods = [method_spec(i, m) for i, m in enumerate(d.get("methods") or [])]
    methods = expand_tuned(methods, d.get("tuned"), [sc.name for sc in scenarios])  # "X (tuned)" rows from best/X.yaml
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
