"""The two kinds of model every application makes, as functions a job calls in whichever process runs it:
:func:`train_classifier` (an original on D or a gold model on D_r) and :func:`unlearn` (a method from an original,
through ``UnlearnTrainer.unlearn``). Both seed the process with the run's seed (``seed_everything``) right before the
model is built, so a run's result depends on its settings and seed only, not on what the process ran before."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from lightning_unlearn.experiment.build import build_backbone
from lightning_unlearn.experiment.settings import TrainingSettings
from lightning_unlearn.experiment.specs import MethodSpec
from lightning_unlearn.experiment.store import atomic_path
from lightning_unlearn.methods import Classifier
from lightning_unlearn.trainer import UnlearnTrainer

__all__ = ["method_kwargs", "train_classifier", "unlearn"]


def train_classifier(dm: Any, backbone: Mapping[str, Any], training: TrainingSettings, role: str, seed: int,
                     ckpt: Path, trainer_kwargs: Mapping[str, Any], callbacks: Sequence[Any] = ()) -> float:
    """Train a :class:`~lightning_unlearn.methods.Classifier` on ``dm`` (``train_on`` says D or D_r) for
    ``training.epochs(role)`` epochs and save it with ``Trainer.save_checkpoint`` to ``ckpt`` (atomically); returns
    the training time the checkpoint records (``train_time_s``). ``callbacks``: e.g. the ``AmnesiacRecorder``\\ s that
    record the updates of the original's steps."""
    pl.seed_everything(seed, workers=True, verbose=False)
    model = Classifier(build_backbone(backbone, dm), **training.classifier_kwargs())
    trainer = pl.Trainer(max_epochs=training.epochs(role), callbacks=list(callbacks), **trainer_kwargs)
    trainer.fit(model, datamodule=dm)
    with atomic_path(ckpt) as tmp:
        trainer.save_checkpoint(tmp)
    return float(model.train_time_s())


def method_kwargs(spec: MethodSpec, seed: int, updates: str | Path | None = None) -> dict[str, Any]:
    """The method's constructor arguments: its ``init_args``, the run's ``seed`` if it takes one and none is set,
    and the recorded ``updates`` file (``Amnesiac``)."""
    kwargs = dict(spec.init_args)
    if "seed" in inspect.signature(spec.resolve()).parameters and "seed" not in kwargs:
        kwargs["seed"] = seed
    if updates is not None:
        kwargs["updates"] = str(updates)
    return kwargs


def unlearn(spec: MethodSpec, dm: Any, seed: int, original: str | Path, gold: str | Path | None, output: str | Path,
            trainer_kwargs: Mapping[str, Any], *, updates: str | Path | None = None, callbacks: Sequence[Any] = (),
            evaluate: bool = True) -> dict[str, Any]:
    """Run ``spec``'s method on ``dm`` from the ``original`` checkpoint through ``UnlearnTrainer.unlearn`` (the
    method's ``trainer`` overrides on top of ``trainer_kwargs``), writing ``output``; returns ``unlearn``'s summary.
    A model the method destroyed is a result here, not an error (``retain_collapse=None``); NaN/inf weights still
    fail the run (docs/safety.md)."""
    cls = spec.resolve()
    kwargs = method_kwargs(spec, seed, updates)
    pl.seed_everything(seed, workers=True, verbose=False)
    method = cls(**kwargs)
    trainer = UnlearnTrainer(max_epochs=spec.max_epochs, callbacks=list(callbacks), **{**trainer_kwargs, **spec.trainer})
    return trainer.unlearn(method, dm, original_ckpt=str(original), gold_ckpt=None if gold is None else str(gold),
                           output=str(output), evaluate=evaluate, retain_collapse=None)
