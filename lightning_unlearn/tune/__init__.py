"""``lightning_unlearn tune``: every method's hyper-parameters tuned with Optuna against the average gap to Retrain,
on tuning targets disjoint from the benchmark's evaluation targets (docs/tuning.md).

:mod:`~.config` (parser, checks, search spaces), :mod:`~.study` (ask/tell over executor jobs, SQLite, resume),
:mod:`~.objective` (one trial: the method on every tuning group), :mod:`~.record` (``best/<method>.yaml``),
:mod:`~.report` (``tune.md``, plots), :mod:`~.run` (:func:`run_tuning`, :func:`main`).
"""

from lightning_unlearn.tune.config import TuneConfig, TuneConfigError, load_tune_config
from lightning_unlearn.tune.record import TuningOverlapError, check_not_tuned_on, read_best
from lightning_unlearn.tune.run import main, run_tuning

__all__ = [
    "TuneConfig",
    "TuneConfigError",
    "TuningOverlapError",
    "check_not_tuned_on",
    "load_tune_config",
    "main",
    "read_best",
    "run_tuning",
]
