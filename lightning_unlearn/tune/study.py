"""An Optuna study driven by ask/tell, each trial an independent :class:`~lightning_unlearn.executors.Job`.

The study lives in SQLite (``sqlite:///<output_dir>/studies.db``, checked by :func:`open_storage`): finished trials
(complete, pruned, or failed with an error of their own) count towards ``n_trials`` and are never run again; a trial
left *running* by a killed process is marked failed (``interrupted``) and its parameters are queued again, so the next
start redoes exactly that trial first. The sampler is seeded afresh for every trial it samples, from the seed and how
many trials counted before it (:func:`trial_seed`): a restarted study asks what an uninterrupted one would have asked,
never the parameters of a trial it already ran.
A job returns ``{"values": [...]}`` (or ``{"pruned": True}`` after reporting intermediate values itself through
:func:`open_trial`); a job that raises fails its trial (``user_attrs["error"]``) and the study goes on.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning_unlearn.executors import make_executor
from lightning_unlearn.experiment import ConfigError, config_hash, is_recorded, record_output, set_aside
from lightning_unlearn.search_space import Choice, FloatRange, IntRange

# optuna is imported in the functions that use it (deferred: start-up of the package and of `tune --help`)

__all__ = [
    "STUDIES_FILE",
    "distributions",
    "finished_trials",
    "make_pruner",
    "make_sampler",
    "open_storage",
    "open_study",
    "open_trial",
    "recover_interrupted",
    "run_study",
    "storage_url",
    "trial_seed",
]

STUDIES_FILE = "studies.db"


def storage_url(output_dir: str | Path) -> str:
    """The SQLite URL of the studies of ``output_dir`` (absolute, so a worker process finds the same file)."""
    path = Path(output_dir).resolve() / STUDIES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def open_storage(output_dir: str | Path) -> str:
    """:func:`storage_url` of ``output_dir`` after checking its ``studies.db``: the tuner's own file (recorded in the
    directory's record) that is no longer a readable Optuna database is set aside and started anew; a file the tuner did
    not write is kept if it is an Optuna database (studies are only added to it) and refused otherwise
    (:class:`~lightning_unlearn.experiment.ConfigError`), as is one with another name elsewhere (a hard link)."""
    out = Path(output_dir)
    path = out / STUDIES_FILE
    if os.path.lexists(path):
        if os.lstat(path).st_nlink > 1:
            raise ConfigError(f"{path} has another name elsewhere (a hard link), which SQLite would write through; "
                              "move it away or choose another output_dir.")
        if not _is_optuna_database(path):
            if not is_recorded(out, STUDIES_FILE):
                raise ConfigError(f"{path} is not an Optuna database and lightning_unlearn tune did not write it; it is "
                                  "not written over: move it away or choose another output_dir.")
            set_aside(path, "not a readable Optuna SQLite database")
    record_output(out, STUDIES_FILE)
    return storage_url(out)


def _is_optuna_database(path: Path) -> bool:
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            con.close()
    except sqlite3.Error:
        return False
    return {"studies", "trials", "version_info"} <= tables


def trial_seed(seed: int, k: int) -> int:
    """The sampler's seed for the ``k``-th trial that counts (0-based): the same in a study started once and in one
    resumed after a kill, so a restart never draws the parameters of a trial it ran already."""
    return int(config_hash([int(seed), int(k)], 8), 16)


def distributions(space: Mapping[str, Any]) -> dict[str, Any]:
    """Optuna distributions of a search space (:mod:`lightning_unlearn.search_space`)."""
    import optuna.distributions as D  # deferred: start-up

    out: dict[str, Any] = {}
    for key, p in space.items():
        if isinstance(p, FloatRange):
            out[key] = D.FloatDistribution(float(p.low), float(p.high), log=p.log)
        elif isinstance(p, IntRange):
            out[key] = D.IntDistribution(int(p.low), int(p.high), log=p.log, step=int(p.step))
        elif isinstance(p, Choice):
            out[key] = D.CategoricalDistribution(list(p.choices))
        else:  # pragma: no cover - the config parser only builds the three kinds
            raise TypeError(f"{key}: not a search-space entry: {p!r}")
    return out


def make_sampler(name: str = "tpe", seed: int = 0, n_startup_trials: int | None = None, n_trials: int = 20,
                 multi_objective: bool = False) -> Any:
    """A seeded TPE (default ``n_startup_trials``: a third of the budget, 3 to 10) or random sampler."""
    import optuna  # deferred: start-up

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    startup = n_startup_trials if n_startup_trials is not None else max(3, min(10, n_trials // 3))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=int(startup), multivariate=not multi_objective)


def make_pruner(name: str = "median", n_startup_trials: int = 4) -> Any:
    import optuna  # deferred: start-up

    if name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=0)


def open_study(name: str, storage: str, directions: Sequence[str], sampler: Any = None, pruner: Any = None) -> Any:
    """Create the study, or load it (with its finished trials) when it exists."""
    import optuna  # deferred: start-up

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own line per trial replaces Optuna's

    return optuna.create_study(study_name=name, storage=storage, directions=list(directions), sampler=sampler,
                               pruner=pruner, load_if_exists=True)


def open_trial(study_name: str, storage: str, trial_id: int, pruner: Any = None) -> Any:
    """The running trial ``trial_id`` of a stored study, from a job (in this or a worker process), to ``report`` and
    ask ``should_prune``."""
    import optuna  # deferred: start-up

    study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner)
    return optuna.trial.Trial(study, trial_id)


def finished_trials(study: Any) -> list[Any]:
    """Trials that count towards the budget: complete, pruned, or failed by an error of their own."""
    from optuna.trial import TrialState  # deferred: start-up

    return [
        t for t in study.get_trials(deepcopy=False)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        or (t.state == TrialState.FAIL and not t.user_attrs.get("interrupted"))
    ]


def recover_interrupted(study: Any) -> int:
    """Mark trials left running by a killed process as failed (``interrupted``) and queue their parameters again
    (a running trial can only be a killed one: the output directory's lock keeps a second tuner out). Returns how
    many were recovered."""
    from optuna.trial import TrialState  # deferred: start-up

    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        study.tell(t.number, state=TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number, **_marks(t.user_attrs)})
        n += 1
    return n


def _marks(attrs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attrs.items() if k in ("default",)}


def run_study(
    study: Any,
    space: Mapping[str, Any],
    n_trials: int,
    make_job: Callable[[Any], Any],
    executor: Any = None,
    parallel: int = 1,
    timeout_s: float | None = None,
    on_trial: Callable[[Any, Any], None] | None = None,
    sampler: Callable[[int], Any] | None = None,
) -> dict[str, int]:
    """Ask, run and tell trials until ``n_trials`` are finished (or ``timeout_s`` of this start has passed).

    ``make_job(trial)`` returns the trial's :class:`~lightning_unlearn.executors.Job` (its parameters are
    ``trial.params``); ``parallel`` trials are asked and handed to ``executor.map`` at once. ``sampler(k)``: the
    sampler that asks the ``k``-th counted trial (seeded with :func:`trial_seed`; ``None``: the study's own throughout).
    Returns counts of what this call did: ``{"run", "reused", "recovered"}``.
    """
    from optuna.trial import TrialState  # deferred: start-up

    executor = make_executor(executor)
    dists = distributions(space)
    recovered = recover_interrupted(study)
    reused = len(finished_trials(study))
    t0 = time.perf_counter()
    ran = 0
    while len(finished_trials(study)) < n_trials:
        if timeout_s is not None and time.perf_counter() - t0 >= timeout_s:
            break
        counted = len(finished_trials(study))
        k = min(parallel, n_trials - counted)
        trials = []
        for j in range(k):
            if sampler is not None:
                study.sampler = sampler(counted + j)
            trials.append(study.ask(dists))
        by_key = {f"trial-{t.number}": t for t in trials}
        jobs = []
        for t in trials:
            job = make_job(t)
            job.key = f"trial-{t.number}"
            jobs.append(job)

        def tell(res: Any) -> None:
            trial = by_key[res.key]
            value = res.value if res.ok else None
            if on_trial is not None:  # before tell: a finished trial's attributes cannot be set
                on_trial(trial, res)
            if not res.ok:
                trial.set_user_attr("error", str(res.error)[:500])
                study.tell(trial, state=TrialState.FAIL)
            elif isinstance(value, Mapping) and value.get("pruned"):
                study.tell(trial, state=TrialState.PRUNED)
            else:
                values = [float(v) for v in value["values"]]
                if not all(math.isfinite(v) for v in values):
                    trial.set_user_attr("error", f"non-finite objective {values}")
                    study.tell(trial, state=TrialState.FAIL)
                else:
                    study.tell(trial, values if len(values) > 1 else values[0])

        executor.map(jobs, on_done=tell)
        ran += k
    return {"run": ran, "reused": reused, "recovered": recovered}
