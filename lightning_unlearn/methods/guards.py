"""Guards every unlearning method shares: a run whose weights become NaN/inf, or whose accuracy on the retained data
collapses to chance, ends with :class:`UnlearningFailedError` and writes no model; data a method cannot use (no
forget/retain splits, images of another size or normalised twice) is refused before any step, and a model at chance on
D_r is reported (see ``docs/safety.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.utils.data import Subset

from lightning_unlearn.backbones.protocol import check_batch, check_input, num_classes
from lightning_unlearn.checkpoints import non_finite_tensors
from lightning_unlearn.data.datasets import SplitView, unpack_batch
from lightning_unlearn.utils import accuracy

__all__ = [
    "FiniteWeightsGuard",
    "StepWatch",
    "UnlearningFailedError",
    "at_chance",
    "check_fit_data",
    "check_retain_collapse",
    "check_step_watch",
    "reset_step_watch",
    "retain_probe",
    "warn_at_chance",
    "watch_step",
]

#: Steps between two reads of a :class:`StepWatch` during training (each read is one host sync); also read at every
#: epoch end and before every checkpoint.
WATCH_EVERY_N_STEPS = 50



class UnlearningFailedError(FloatingPointError):
    """The unlearning run destroyed the model (NaN/inf weights, or retained accuracy collapsed); nothing was saved."""


def non_finite_names(module: nn.Module) -> list[str]:
    """Names of ``module``'s floating-point parameters and buffers that hold NaN/inf (a single host sync)."""
    return non_finite_tensors(module.state_dict())


def non_finite_message(method: Any, bad: list[str], when: str) -> str:
    """The error of a run whose weights became NaN/inf: where, what, and what to change."""
    hp = getattr(method, "hparams", {}) or {}
    return (
        f"{type(method).__name__} produced NaN/inf weights {when} ({len(bad)} tensors, e.g. "
        f"{', '.join(bad[:3])}); the run is stopped and no model was written. Lower the learning rate "
        f"(`lr`, now {hp.get('lr')}) or the number of epochs, or bound the updates (e.g. NegativeGradient "
        "`on_divergence: stop`, `max_grad_norm`)."
    )


class StepWatch:
    """The first training step at which a condition held (e.g. a non-finite loss), remembered on the device.

    :meth:`record` is a few tensor operations and never reads a value back to the host, so a training step stays
    asynchronous (a per-step ``if not torch.isfinite(loss)`` is one host-device synchronisation per step). :meth:`first`
    reads the result back (one sync); :func:`check_step_watch` does so every ``WATCH_EVERY_N_STEPS`` steps, at epoch
    end and before a checkpoint, and raises the error ``message(step, epoch, values)`` describes.
    """

    def __init__(
        self, message: Callable[[int, int, list[float]], str], error: type[Exception] = FloatingPointError
    ) -> None:
        self.message, self.error = message, error
        self._step: Tensor | None = None
        self._values: Tensor | None = None
        self._epoch_starts: dict[int, int] = {}  # epoch -> first step recorded in it (host side, no sync)

    def record(self, bad: Tensor, step: int, *values: Tensor, epoch: int = 0) -> None:
        """Remember ``step`` and ``values`` (scalars) if ``bad`` (a bool scalar tensor) and nothing was recorded yet."""
        self._epoch_starts.setdefault(int(epoch), int(step))
        bad = bad.detach().reshape(())
        vals = torch.stack([v.detach().float().reshape(()) for v in values]) if values else bad.new_zeros(0).float()
        if self._step is None or self._values is None or self._step.device != bad.device:
            self._step = torch.full((), -1, dtype=torch.long, device=bad.device)
            self._values = torch.zeros_like(vals)
        new = bad & (self._step < 0)
        self._step = torch.where(new, torch.full_like(self._step, int(step)), self._step)
        self._values = torch.where(new, vals, self._values)

    def first(self) -> tuple[int, int, list[float]] | None:
        """``(step, epoch, values)`` of the first recorded step, or ``None`` (one host sync)."""
        if self._step is None or self._values is None:
            return None
        step = int(self._step)
        if step < 0:
            return None
        epoch = max((e for e, s in self._epoch_starts.items() if s <= step), default=0)
        return step, epoch, [float(v) for v in self._values.cpu()]

    def check(self) -> None:
        """Raise ``error(message(step, values))`` when a step was recorded."""
        found = self.first()
        if found is not None:
            raise self.error(self.message(*found))


def watch_step(
    module: Any,
    bad: Tensor,
    message: Callable[[int, int, list[float]], str],
    *values: Tensor,
    error: type[Exception] = FloatingPointError,
    key: str = "loss",
) -> None:
    """Record ``bad`` for the current step in ``module``'s :class:`StepWatch` named ``key`` (created on first use with
    ``message`` and ``error``), without a host sync. :func:`check_step_watch` raises later."""
    watches = module.__dict__.setdefault("_step_watches", {})
    watch = watches.get(key)
    if watch is None:
        watch = watches[key] = StepWatch(message, error)
    watch.record(bad, int(getattr(module, "global_step", 0)), *values, epoch=int(getattr(module, "current_epoch", 0)))


def check_step_watch(module: Any, every: int | None = None, step: int | None = None) -> None:
    """Raise the error of ``module``'s first recorded bad step, if any. With ``every``, only when ``step % every == 0``
    (so a training loop reads the flags back once every ``every`` steps)."""
    if every is not None and step is not None and step % every:
        return
    for watch in module.__dict__.get("_step_watches", {}).values():
        watch.check()


def reset_step_watch(module: Any) -> None:
    """Forget recorded steps (at the start of a new fit)."""
    module.__dict__.pop("_step_watches", None)


class FiniteWeightsGuard(pl.Callback):
    """Ends ``fit`` when the weights stop being finite, and keeps any checkpoint of NaN/inf weights from being written.

    Checked at the end of every training epoch (one host sync per epoch, none per step) and in ``on_save_checkpoint``,
    which Lightning calls before a checkpoint file is written (``ModelCheckpoint``, ``trainer.save_checkpoint``).
    The module's :class:`StepWatch` flags (non-finite losses, recorded per step without a sync) are read at the same
    points and every ``WATCH_EVERY_N_STEPS`` steps, and raise their own, more specific, error first.
    Every :class:`UnlearningMethod` adds one through ``configure_callbacks``.
    """

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        reset_step_watch(pl_module)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        check_step_watch(pl_module, WATCH_EVERY_N_STEPS, batch_idx + 1)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        check_step_watch(pl_module)
        model = getattr(pl_module, "model", None)
        bad = non_finite_names(model) if isinstance(model, nn.Module) else []
        if bad:
            raise UnlearningFailedError(non_finite_message(pl_module, bad, f"in epoch {trainer.current_epoch}"))

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        check_step_watch(pl_module)
        bad = non_finite_tensors(checkpoint.get("state_dict") or {})
        if bad:
            raise UnlearningFailedError(non_finite_message(pl_module, bad, "when a checkpoint was to be saved"))


@torch.no_grad()
def retain_probe(method: Any) -> float | None:
    """Accuracy of ``method.unlearned_backbone()`` on up to ``method.retain_probe_samples`` evenly spaced samples of
    D_r (eval mode, no augmentation; modes restored). ``None`` without a DataModule or with D_r empty."""
    dm = getattr(method._trainer, "datamodule", None) if method._trainer is not None else None
    if dm is None or not hasattr(dm, "splits") or len(dm.splits.retain) == 0:
        return None
    retain = dm.splits.retain
    picks = retain[np.linspace(0, len(retain) - 1, min(len(retain), method.retain_probe_samples)).astype(int)]
    return accuracy(method.unlearned_backbone(), dm.loader(SplitView(dm.train_set, picks)))


def check_retain_collapse(method: Any, before: float | None) -> None:
    """Raise :class:`UnlearningFailedError` when D_r accuracy fell below ``chance + retain_collapse * (before -
    chance)`` (``before``: the original's, from :func:`retain_probe` at the start of ``fit``)."""
    fraction = method.retain_collapse
    if fraction is None or before is None:
        return
    chance = 1.0 / num_classes(method.unlearned_backbone())
    if before - chance < 0.2:
        return  # the original model itself is close to chance on D_r: nothing to collapse from
    after = retain_probe(method)
    floor = chance + fraction * (before - chance)
    if after is not None and after < floor:
        raise UnlearningFailedError(
            f"{type(method).__name__} destroyed the model: accuracy on the retained data D_r fell from "
            f"{100 * before:.1f}% to {100 * after:.1f}% (chance {100 * chance:.1f}%, collapse threshold "
            f"{100 * floor:.1f}%), so no model was written. Lower the learning rate (`lr`, now "
            f"{method.hparams.get('lr')}) or the number of epochs, or add a retain term; set "
            "`--retain_collapse null` (Python: `method.retain_collapse = None`) to keep such a model anyway."
        )


# -- what a method cannot use -----------------------------------------------------------------------------------------
#: Samples of D_r whose range and shape :func:`check_fit_data` reads at the start of ``fit``.
DATA_PROBE_SAMPLES = 64


def check_fit_data(method: Any) -> None:
    """Refuse, before any step and in one line, a ``fit`` whose data the method cannot use: no DataModule with
    forget/retain splits (a method would train on everything), an empty D_f, images of another size or channel count
    than the network takes, or values outside [0, 1] (normalised by the dataset and again by the network).

    Reads one batch of up to ``DATA_PROBE_SAMPLES`` D_r samples, under a forked RNG (training draws are unchanged).
    """
    name = type(method).__name__
    trainer = method._trainer
    dm = getattr(trainer, "datamodule", None) if trainer is not None else None
    if dm is None or not hasattr(dm, "splits") or not callable(getattr(dm, "dataset", None)):
        got = f"{type(dm).__name__}, which has no forget/retain splits" if dm is not None else "no DataModule"
        raise TypeError(
            f"{name} needs the forget and retain splits, but fit was given {got}: it would train on all the data. Pass "
            "`datamodule=` an UnlearningDataModule; for your own datasets DatasetsDataModule(train, test, "
            "image_size=..., in_channels=..., forget=ForgetSpec(...), holdout_indices=<your validation indices>) "
            "(docs/embedding.md)."
        )
    if len(dm.splits.forget) == 0:
        raise ValueError(
            f"{name}: the DataModule's forget set D_f is empty (forget={dm.forget}): there is nothing to unlearn; give "
            "it a ForgetSpec (e.g. ForgetSpec(classes=[3]))."
        )
    model = method._require_model()
    check_input(model, dm, f"{name}'s network ({type(model).__name__})")
    split = "retain" if len(dm.splits.retain) else "forget"
    view = dm.dataset(split)
    first = np.arange(min(len(view), DATA_PROBE_SAMPLES))
    probe = view.subset(first) if callable(getattr(view, "subset", None)) else Subset(view, first.tolist())
    with torch.random.fork_rng(devices=[]):  # iterating a DataLoader draws a seed from the global RNG
        x, _ = unpack_batch(next(iter(dm.loader(probe, batch_size=len(probe)))))
    check_batch(model, x, f"The DataModule ({type(dm).__name__})")


def at_chance(acc: float | None, classes: int) -> bool:
    """Whether an accuracy is within a tenth of the way from chance (``1/classes``) to 1: no trained model is."""
    if acc is None or not np.isfinite(acc) or classes < 2:
        return False
    chance = 1.0 / classes
    return bool(acc < chance + 0.1 * (1.0 - chance))


def warn_at_chance(acc: float | None, classes: int, what: str) -> bool:
    """Warn (one line) when ``what``'s accuracy ``acc`` on retained data is at chance; returns whether it warned."""
    if not at_chance(acc, classes):
        return False
    rank_zero_warn(
        f"{what} is at chance on the retained data ({100 * float(acc or 0):.1f}%, chance {100 / classes:.1f}%): it is "
        "not a trained model of this data, or the data it is given differs from what it was trained on (image size, "
        "channels, normalisation; a plain network given where its adapted backbone was meant). Its unlearning "
        "metrics mean nothing."
    )
    return True
