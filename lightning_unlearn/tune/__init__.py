"""``lightning_unlearn tune``: every method's hyper-parameters tuned with Optuna against the average gap to Retrain,
on tuning targets disjoint from the benchmark's evaluation targets (docs/tuning.md).

Built on the benchmark's public API (its planner, model cache, training and ``run_method``) and
:mod:`lightning_unlearn.experiment`: :mod:`~.config` (parser, checks), :mod:`~.space` (search spaces),
:mod:`~.study` (ask/tell over executor jobs, SQLite, resume), :mod:`~.objective` (one trial: the method on every tuning
group), :mod:`~.report` (``best/<method>.yaml``, ``tune.md``, plots), :mod:`~.run` (:func:`run_tuning`, :func:`main`).
The ``best/<method>.yaml`` format is :mod:`lightning_unlearn.experiment.tuned` (the benchmark reads it).
"""

from lightning_unlearn.experiment import TuningOverlapError, check_not_tuned_on, read_best, write_best
from lightning_unlearn.tune.config import TuneConfig, TuneConfigError, load_tune_config
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
    "write_best",
]
