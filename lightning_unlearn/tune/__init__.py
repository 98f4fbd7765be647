"""``lightning_unlearn tune``: every method's hyper-parameters tuned with Optuna against the average gap to Retrain,
on tuning targets disjoint from the benchmark's evaluation targets (docs/tuning.md).

Built on the benchmark's public API (its planner, model cache, training and ``run_method``) and
:mod:`lightning_unlearn.experiment`: :mod:`~.config` (parser, checks), :mod:`~.space` (search spaces),
:mod:`~.study` (ask/tell over executor jobs, SQLite, resume), :mod:`~.objective` (one trial: the method on every tuning
group), :mod:`~.report` (``best/<method>.yaml``, ``tune.md``, plots), :mod:`~.run` (:func:`run_tuning`, :func:`main`).
The ``best/<method>.yaml`` format is :mod:`lightning_unlearn.experiment.tuned` (the benchmark reads it).

Importing the package is light (no torch): each name below is imported from its module when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightning_unlearn.experiment import TuningOverlapError, check_not_tuned_on, read_best, write_best
    from lightning_unlearn.tune.config import TuneConfig, TuneConfigError, load_tune_config
    from lightning_unlearn.tune.run import main, run_tuning

#: Each public name and the module it comes from (imported on first use: :func:`__getattr__`).
_SOURCES = {
    "TuneConfig": "lightning_unlearn.tune.config",
    "TuneConfigError": "lightning_unlearn.tune.config",
    "TuningOverlapError": "lightning_unlearn.experiment",
    "check_not_tuned_on": "lightning_unlearn.experiment",
    "load_tune_config": "lightning_unlearn.tune.config",
    "main": "lightning_unlearn.tune.run",
    "read_best": "lightning_unlearn.experiment",
    "run_tuning": "lightning_unlearn.tune.run",
    "write_best": "lightning_unlearn.experiment",
}

__all__ = sorted(_SOURCES)


def __getattr__(name: str) -> Any:
    """The public name ``name``, imported from its module now (PEP 562)."""
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_SOURCES[name]), name)
    globals()[name] = value
    return value
