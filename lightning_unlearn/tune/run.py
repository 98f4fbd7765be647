"""``run_tuning``: one Optuna study per method, persisted in SQLite, trials as executor jobs; then best/ and tune.md."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from lightning_unlearn.executors import Job, make_executor
from lightning_unlearn.experiment import (
    ConfigError,
    config_hash,
    evaluator_settings,
    executor_settings,
    method_identity,
    run_command,
    claim_output_dir,
    slug,
    trainer_key,
    write_output,
)
from lightning_unlearn.experiment import check_writable as check_best_writable
from lightning_unlearn.tune.config import MethodTuning, TuneConfig, tune_config_from_args
from lightning_unlearn.tune.objective import prepare, run_trial
from lightning_unlearn.tune.report import OUTPUT_FILES, summarise, write_best_file, write_report
from lightning_unlearn.tune.space import in_space
from lightning_unlearn.tune.study import make_pruner, make_sampler, open_storage, open_study, run_study, trial_seed

__all__ = ["best_path", "check_outputs", "main", "run_tuning", "study_name"]


def study_name(cfg: TuneConfig, mt: MethodTuning, contexts: Sequence[dict[str, Any]]) -> str:
    """``<method>-<hash>``: the hash covers everything a trial's value depends on, so a changed setting starts a new
    study and an unchanged one reuses every finished trial."""
    content = {
        "method": method_identity(mt.spec),
        "space": {k: p.describe() for k, p in sorted(mt.space.items())},
        "groups": [(c["group"].original_key, c["group"].gold_key, c["record"]["hashes"]) for c in contexts],
        "evaluator": evaluator_settings(cfg.bench.evaluator),
        "trainer": trainer_key(cfg.bench.trainer),
        "objectives": cfg.objectives,
    }
    return f"{slug(mt.name)}-{config_hash(content, 12)}"


def best_path(cfg: TuneConfig, mt: MethodTuning) -> Path:
    """Where a method's tuned settings are written: ``output_dir/best/<method>.yaml`` (``per_scenario``:
    ``output_dir/best/<scenario>/<method>.yaml``)."""
    return Path(cfg.best_dir or Path(cfg.output_dir) / "best") / f"{slug(mt.name)}.yaml"


def check_outputs(cfg: TuneConfig) -> None:
    """Refuse (``ConfigError``) before anything is written or trained when a ``best/`` file exists that the tuner
    did not write: it would otherwise only be found after a method's study has finished."""
    for part in cfg.parts:
        check_outputs(part)
    for mt in [] if cfg.parts else cfg.methods:
        try:
            check_best_writable(best_path(cfg, mt))
        except FileExistsError as err:
            raise ConfigError(str(err)) from None


def run_tuning(cfg: TuneConfig, stream: Any = None) -> dict[str, Any]:
    """Tune every configured method; returns ``{method: summary}`` and writes ``best/`` and ``tune.md``
    (``per_scenario``: ``{scenario: {method: summary}}``, one ``tune.md`` per scenario's directory)."""
    stream = stream if stream is not None else sys.stderr
    if cfg.parts:
        check_outputs(cfg)  # every scenario's best/ before any study starts
        return {part.bench.scenarios[0].name: run_tuning(part, stream) for part in cfg.parts}
    start = time.perf_counter()

    def log(text: str) -> None:
        print(f"tune {text}", file=stream, flush=True)

    check_outputs(cfg)
    with claim_output_dir(cfg.output_dir, "tune", OUTPUT_FILES):  # this run's alone, nothing of others in it
        return _run(cfg, log, start)


def _run(cfg: TuneConfig, log: Callable[[str], None], start: float) -> dict[str, Any]:
    out = Path(cfg.output_dir)
    write_output(out, "config.yaml", yaml.safe_dump(cfg.source, sort_keys=False))
    storage = open_storage(out)
    settings = executor_settings(cfg.executor, cfg.bench.trainer)
    executor = make_executor(settings.spec)
    contexts = prepare(cfg, executor, settings.threads, log)
    multi = len(cfg.objectives) > 1
    directions = ["minimize"] * len(cfg.objectives)
    summaries: dict[str, Any] = {}
    try:
        for i, mt in enumerate(cfg.methods, 1):
            ctx = [c for c in contexts if mt.spec.runs_in(c["group"].scenario)]
            name = study_name(cfg, mt, ctx)

            def sampler(k: int, mt: Any = mt) -> Any:  # the k-th counted trial's, the same after a restart
                return make_sampler(cfg.sampler, trial_seed(cfg.seed, k), cfg.n_startup_trials, mt.n_trials,
                                    multi_objective=multi)

            pruner = "none" if multi else cfg.pruner
            study = open_study(name, storage, directions, sampler(0), make_pruner(pruner))
            if not study.get_trials(deepcopy=False):
                study.set_user_attr("method", mt.name)
                study.set_user_attr("tuning_groups", [c["record"] for c in ctx])
                default = mt.default_params()
                if len(default) == len(mt.space) and in_space(default, mt.space):
                    study.enqueue_trial(default, user_attrs={"default": True})
                else:
                    log(f"{mt.name}: its configured settings {default} are outside the search space; no default trial")
            trial_root = out / "trials" / slug(mt.name)

            def make_job(trial: Any, mt: Any = mt, ctx: Any = ctx, name: str = name, pruner: str = pruner,
                         trial_root: Path = trial_root) -> Job:
                return Job(
                    key=f"trial-{trial.number}", fn=run_trial,
                    kwargs={"bench": cfg.bench, "spec": mt.spec, "params": dict(trial.params), "contexts": ctx,
                            "trial_dir": str(trial_root / f"trial-{trial.number:04d}"), "objectives": cfg.objectives,
                            "study_name": name, "storage": storage, "trial_id": trial._trial_id, "pruner": pruner,
                            "threads": settings.threads},
                    resources=settings.resources, description=f"{mt.name} trial {trial.number}",
                )

            def on_trial(trial: Any, res: Any, mt: Any = mt) -> None:
                if res.ok and isinstance(res.value, dict):
                    gaps = [g["gap"] for g in res.value.get("groups", [])]
                    trial.set_user_attr("gaps", gaps)
                    trial.set_user_attr("tuning_hashes", [g["used_hashes"] for g in res.value.get("groups", [])])
                    state = "pruned" if res.value.get("pruned") else "gap " + "/".join(
                        f"{v:.3g}" for v in res.value.get("values", []))
                else:
                    state = f"FAILED ({res.error})"[:200]
                log(f"[{i}/{len(cfg.methods)}] {mt.name} trial {trial.number}: {state} {dict(trial.params)} "
                    f"({res.wall_s:.1f}s)")

            counts = run_study(study, mt.space, mt.n_trials, make_job, executor=executor, parallel=cfg.parallel,
                               timeout_s=cfg.timeout_s, on_trial=on_trial, sampler=sampler)
            log(f"[{i}/{len(cfg.methods)}] {mt.name}: {counts['run']} trial(s) run, {counts['reused']} reused from "
                f"{storage}" + (f", {counts['recovered']} interrupted trial(s) redone" if counts["recovered"] else ""))
            summary = summarise(study, mt, ctx, cfg)
            summaries[mt.name] = summary
            if summary.get("best") is not None:
                write_best_file(best_path(cfg, mt), summary, mt, cfg)
    finally:
        executor.close()
    write_report(out, summaries, cfg, contexts, time.perf_counter() - start)
    log(f"done in {time.perf_counter() - start:.0f}s: {out / 'tune.md'}, {out / 'best'}")
    return summaries


def main(argv: Sequence[str] | None = None) -> None:
    """``lightning_unlearn tune -c configs/tune/<name>.yaml [--key value ...]``."""
    args = list(sys.argv[1:] if argv is None else argv)

    def command() -> None:
        run_tuning(tune_config_from_args(args))

    run_command("tune", command, reused="finished trials are reused")
