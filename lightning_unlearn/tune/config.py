"""``lightning_unlearn tune``'s configuration: parsed, and every check made before any model is trained or trial run.

A tune config names a benchmark config (data, backbone, training, trainer, evaluator, methods and, in its scenarios x
seeds, the **evaluation** targets) and lists the **tuning** targets (scenarios with other forget targets, other seeds).
The tuning targets' splits must differ from every evaluation split (``TuneConfigError`` otherwise), and every method's
search space (its ``search_space`` attribute, with the config's overrides) must fit its arguments.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from lightning_unlearn.benchmark import BenchmarkConfig, Group, Plan, Scenario, load_config, make_plan, validate_config
from lightning_unlearn.data.forget import ForgetSpec
from lightning_unlearn.experiment import (
    ConfigError,
    MethodSpec,
    add_run_arguments,
    command_parser,
    config_args,
    parse_command,
    parsed_values,
    slug,
)
from lightning_unlearn.search_space import EPOCHS_KEY, Param
from lightning_unlearn.tune.space import resolve_space

__all__ = [
    "MethodTuning",
    "TuneConfig",
    "TuneConfigError",
    "build_parser",
    "check_disjoint",
    "group_record",
    "load_tune_config",
    "tune_config_from_args",
]

Objective = Literal["gap", "time"]
#: Evaluator settings applied to tuning runs unless the config says otherwise: the gap needs accuracies and
#: MIA-efficacy only (ZRF, plots, the probe, the relearning attack and CKA cost time and are not part of it).
DEFAULT_EVALUATOR_OVERRIDES: dict[str, Any] = {"zrf": False, "plots": False, "probe": False, "relearn": False,
                                               "cka": False}
#: The tuner's configuration errors are :class:`~lightning_unlearn.experiment.ConfigError` (the older name).
TuneConfigError = ConfigError


@dataclass
class MethodTuning:
    """One method to tune: its benchmark entry, its resolved search space and its trial budget."""

    spec: MethodSpec  # the benchmark's entry (the settings every trial starts from)
    space: dict[str, Param]
    n_trials: int

    @property
    def name(self) -> str:
        return str(self.spec.name)

    def default_params(self) -> dict[str, Any]:
        """The benchmark's configured value (else the class default) of every searched key."""
        cls = self.spec.resolve()
        params = inspect.signature(cls).parameters
        out: dict[str, Any] = {}
        for key in self.space:
            if key == EPOCHS_KEY:
                out[key] = int(self.spec.max_epochs)
            elif key in self.spec.init_args:
                out[key] = self.spec.init_args[key]
            elif params[key].default is not inspect.Parameter.empty:
                out[key] = params[key].default
        return out


@dataclass
class TuneConfig:
    """A parsed tuning configuration (see ``docs/tuning.md``)."""

    benchmark_path: str
    output_dir: str
    bench: BenchmarkConfig  # of the tuning runs: the benchmark's settings, the tuning scenarios and seeds
    evaluation: BenchmarkConfig  # as given: its scenarios x seeds are the evaluation targets
    methods: list[MethodTuning]
    objectives: list[str]
    sampler: str = "tpe"
    seed: int = 0
    n_startup_trials: int | None = None
    pruner: str = "median"
    timeout_s: float | None = None
    executor: Any = "local"
    parallel: int = 1
    quiet: bool = True
    source: dict[str, Any] = field(default_factory=dict)
    plan: Plan | None = None  # the tuning Plan (groups, models), computed and checked against the evaluation's when loaded
    evaluation_hashes: list[dict[str, Any]] = field(default_factory=list)
    best_dir: str | None = None  # where best/<method>.yaml go (default: output_dir/best)
    #: ``per_scenario: true``: one configuration per tuning scenario (its own output_dir/<scenario>/ and studies,
    #: best files in output_dir/best/<scenario>/), run one after the other; empty otherwise.
    parts: list[TuneConfig] = field(default_factory=list)


def build_parser() -> Any:
    """The jsonargparse parser of ``lightning_unlearn tune``."""
    p = command_parser(
        "tune",
        "Tune every method's hyper-parameters with Optuna against the average gap to Retrain, on tuning targets "
        "disjoint from the benchmark's evaluation targets; write best/<method>.yaml and tune.md into output_dir. "
        "Finished trials are reused when run again. See docs/tuning.md.",
        "configs/tune/*.yaml",
        "runs/tune",
    )
    p.add_argument("--benchmark", type=str, required=True,
                   help="Benchmark config: data, model, training, methods; its scenarios x seeds are the evaluation "
                   "targets that tuning must not use.")
    p.add_argument("--scenarios", type=list[dict[str, Any]], required=True,
                   help="Tuning targets: [{name: <benchmark scenario>, targets: [ForgetSpec dict, ...]}].")
    p.add_argument("--seeds", type=list[int], default=[100], help="Seeds of the tuning splits and runs.")
    p.add_argument("--methods", type=list[str] | None, default=None, help="Names of benchmark methods (default: all).")
    p.add_argument("--n_trials", type=int, default=20, help="Trials per method (finished trials count).")
    p.add_argument("--trials_per_method", type=dict[str, int], default={}, help="{method: n_trials} overrides.")
    p.add_argument("--search_space", type=dict[str, dict[str, Any]], default={},
                   help="{method: {key: {low, high, log} | {choices} | null}}: overrides of the spaces.")
    p.add_argument("--objectives", type=list[Objective], default=["gap"],
                   help="[gap] (average gap to Retrain) or [gap, time] (a Pareto front of gap and time).")
    p.add_argument("--sampler", type=Literal["tpe", "random"], default="tpe", help="Optuna sampler.")
    p.add_argument("--seed", type=int, default=0, help="Seed of the sampler.")
    p.add_argument("--n_startup_trials", type=int | None, default=None,
                   help="Random trials before TPE (default: a third of n_trials, 3 to 10).")
    p.add_argument("--pruner", type=Literal["median", "none"], default="median",
                   help="Prune a trial whose running gap after a tuning target is worse than the median.")
    p.add_argument("--timeout_s", type=float | None, default=None, help="Time budget per method (this start).")
    p.add_argument("--evaluator", type=dict[str, Any], default={}, help="Overrides of the benchmark's evaluator.")
    add_run_arguments(p)
    p.add_argument("--parallel", type=int, default=1, help="Trials asked and run at once (executor batch).")
    p.add_argument("--per_scenario", type=bool, default=False,
                   help="Tune each scenario on its own (settings per scenario: best/<scenario>/<method>.yaml), as the "
                   "papers tune per forgetting setting; each scenario's studies live in output_dir/<scenario>/.")
    return p


def load_tune_config(source: str | Path | Sequence[str], **overrides: Any) -> TuneConfig:
    """A YAML path or command-line arguments (``["-c", "x.yaml", "--n_trials", "3"]``); ``overrides`` are keys."""
    return tune_config_from_args(config_args(source, overrides))


def tune_config_from_args(args: Sequence[str]) -> TuneConfig:
    """A validated :class:`TuneConfig` from command-line arguments (raises ``ConfigError`` before anything runs)."""
    return _build(*parsed_values(parse_command(build_parser(), args)))


def _build(d: dict[str, Any], source: dict[str, Any]) -> TuneConfig:
    if d.get("per_scenario"):
        return _build_per_scenario(d, source)
    bpath = Path(str(d["benchmark"]))
    if not bpath.is_file():
        raise ConfigError(f"benchmark config {bpath} not found (a path relative to the current directory)")
    out = Path(str(d["output_dir"]))
    try:
        evaluation = load_config(str(bpath))
        # the rows as configured: a benchmark that runs only its tuned settings (`tuned.mode: tuned`) still names them
        bench = load_config(str(bpath), output_dir=str(out / "work"), **{"tuned.mode": "default"})
    except ConfigError as err:
        raise ConfigError(f"benchmark config {bpath}: {err}") from None
    eval_names = [s.name for s in evaluation.scenarios]
    scenarios = []
    for i, sc in enumerate(d.get("scenarios") or []):
        name = str(sc.get("name") or "").strip()
        if name not in eval_names:
            raise ConfigError(f"scenarios[{i}] name {name!r} is not a scenario of {bpath} ({eval_names}); tuning targets "
                       "stand for a benchmark scenario")
        targets = []
        for j, t in enumerate(sc.get("targets") or []):
            try:
                targets.append(ForgetSpec(**{k: v for k, v in dict(t).items() if v is not None}))
            except (TypeError, ValueError) as err:
                raise ConfigError(f"scenarios[{i}] ({name}) targets[{j}]: {err}") from None
        scenarios.append(Scenario(name=name, targets=targets))
    if not scenarios:
        raise ConfigError("`scenarios` is empty: list the tuning targets, e.g. {name: class-wise, targets: [{classes: [5]}]}")
    seeds = [int(s) for s in d.get("seeds") or []]
    names = d.get("methods")
    untuned = [m for m in bench.methods if m.tuned_record is None]  # not the `tuned:` variants
    known = [m.name for m in untuned]
    if names is not None:
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"methods {unknown} are not methods of {bpath}: {known}")
    chosen = [m for m in untuned if names is None or m.name in names]
    chosen = [m for m in chosen if any(m.runs_in(s.name) for s in scenarios)]
    if not chosen:
        raise ConfigError("no method to tune: none of the chosen methods runs in the tuning scenarios")
    evaluator = {**bench.evaluator, **DEFAULT_EVALUATOR_OVERRIDES, **dict(d.get("evaluator") or {})}
    bench = replace(bench, scenarios=scenarios, seeds=seeds, methods=chosen, evaluator=evaluator,
                    keep_checkpoints=False, report_only=False, quiet=bool(d.get("quiet", True)))
    try:
        validate_config(bench)
    except ConfigError as err:
        raise ConfigError(f"tuning targets: {err}") from None
    overrides = dict(d.get("search_space") or {})
    unknown_m = sorted(set(overrides) - set(known))
    if unknown_m:
        raise ConfigError(f"search_space names {unknown_m}, which are not methods of {bpath}: {known}")
    per = dict(d.get("trials_per_method") or {})
    unknown_t = sorted(set(per) - set(known))
    if unknown_t:
        raise ConfigError(f"trials_per_method names {unknown_t}, which are not methods of {bpath}: {known}")
    methods = []
    for m in chosen:
        n = int(per.get(m.name, d["n_trials"]))
        if n < 1:
            raise ConfigError(f"{m.name}: n_trials must be >= 1, got {n}")
        methods.append(MethodTuning(m, resolve_space(m, overrides.get(m.name)), n))
    objectives = list(d.get("objectives") or ["gap"])
    if objectives not in (["gap"], ["gap", "time"]):
        raise ConfigError(f"objectives must be [gap] or [gap, time], got {objectives}")
    for key in ("parallel",):
        if int(d[key]) < 1:
            raise ConfigError(f"{key} must be >= 1, got {d[key]}")
    if d.get("timeout_s") is not None and float(d["timeout_s"]) <= 0:
        raise ConfigError(f"timeout_s must be > 0 (or null), got {d['timeout_s']}")
    cfg = TuneConfig(
        benchmark_path=str(bpath), output_dir=str(out), bench=bench, evaluation=evaluation, methods=methods,
        objectives=objectives, sampler=str(d["sampler"]), seed=int(d["seed"]),
        n_startup_trials=d.get("n_startup_trials"),
        pruner=str(d["pruner"]), timeout_s=d.get("timeout_s"), executor=d.get("executor") or "local",
        parallel=int(d["parallel"]), quiet=bool(d.get("quiet", True)), source=source,
    )
    try:
        cfg.plan = make_plan(bench)
        eval_plan = make_plan(evaluation)
    except ConfigError as err:
        raise ConfigError(str(err)) from None
    check_disjoint(cfg.plan.groups, eval_plan.groups)
    cfg.evaluation_hashes = [group_record(g) for g in eval_plan.groups]
    return cfg


def _build_per_scenario(d: dict[str, Any], source: dict[str, Any]) -> TuneConfig:
    """A configuration per tuning scenario (checked in full before anything runs), under one parent."""
    out = Path(str(d["output_dir"]))
    parts = []
    for sc in d.get("scenarios") or []:
        name = str(dict(sc).get("name") or "").strip()
        part = _build({**d, "per_scenario": False, "scenarios": [sc], "output_dir": str(out / slug(name))},
                      {**source, "scenarios": [sc], "per_scenario": False})
        part.best_dir = str(out / "best" / slug(name))
        parts.append(part)
    if not parts:
        raise ConfigError("`scenarios` is empty: list the tuning targets, e.g. {name: class-wise, targets: [{classes: [5]}]}")
    first = parts[0]
    return replace(first, output_dir=str(out), best_dir=str(out / "best"), source=source, parts=parts,
                   methods=[mt for p in parts for mt in p.methods])


def group_record(g: Group) -> dict[str, Any]:
    """What identifies a (scenario, target, seed) group in records: its names and its split hashes."""
    return {"scenario": g.scenario, "target": g.target.describe(), "seed": int(g.seed), "hashes": dict(g.hashes)}


def check_disjoint(tuning_groups: Sequence[Group], evaluation_groups: Sequence[Group]) -> None:
    """Refuse a tuning target whose forget set (split hash) is one of the evaluation targets'."""
    evals = {g.hashes["forget"]: g for g in evaluation_groups}
    for g in tuning_groups:
        hit = evals.get(g.hashes["forget"])
        if hit is not None:
            raise ConfigError(
                f"tuning target {g.describe()} has the same forget set (sha256 {g.hashes['forget'][:12]}) as the "
                f"evaluation target {hit.describe()}: tune on other forget classes or other seeds"
            )
