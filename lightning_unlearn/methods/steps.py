"""Lightning's fixed cost per training step, kept off steps that take a few milliseconds.

On small models a step (forward, backward, optimizer) takes 1-10 ms on a CPU, and ``self.log`` (the result
collection's bookkeeping) costs ~0.5 ms a call on an idle core (``benchmarks/step_cost.py``), more on a loaded one.
So a step value goes to ``self.log`` only on the steps the loggers write (:func:`log_step`), and its epoch mean is
summed on the device at every step (two tensor operations, no host read) and logged once per epoch
(:func:`log_epoch_means`, :class:`EpochMeans`): ``EarlyStopping(monitor="train/loss")`` and ``ModelCheckpoint`` see the
epoch's mean loss.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from torch import Tensor

__all__ = ["EpochMeans", "log_epoch_means", "log_step"]

_SUMS = "_epoch_sums"


def log_step(module: Any, name: str, value: Tensor, batch_size: int) -> None:
    """``module.log(name, value, batch_size=batch_size)`` (a step-only value) on the steps Lightning writes to its
    loggers (every ``Trainer(log_every_n_steps=...)`` steps, the last step, ``fast_dev_run``), nothing on the others;
    at every step the value is added to the epoch's mean (on the value's device), which :func:`log_epoch_means`
    logs as ``name`` at the end of the epoch.

    What reaches the loggers per step is the same as logging every step (Lightning writes a step-only value on those
    steps only); what differs is ``trainer.callback_metrics[name]`` between two writes: the value of the last written
    step, and, from the end of each epoch on, that epoch's mean. Outside a ``Trainer`` (a manual call) it logs.
    """
    sums = module.__dict__.setdefault(_SUMS, {})
    entry = sums.get(name)
    if entry is None:
        sums[name] = [value.detach().float() * batch_size, int(batch_size)]
    else:  # one in-place kernel per step (fp32 sum; a bf16/fp16 loss is promoted)
        entry[0].add_(value.detach(), alpha=batch_size)
        entry[1] += int(batch_size)
    trainer = getattr(module, "_trainer", None)
    connector = getattr(trainer, "_logger_connector", None)
    if connector is not None and not (connector.should_update_logs or trainer.fast_dev_run):
        return
    module.log(name, value, batch_size=batch_size)


def log_epoch_means(module: Any) -> None:
    """Log the mean of every value :func:`log_step` saw this epoch (``on_epoch``, averaged over the processes) and
    start the next epoch's sums. Call it from an ``on_train_epoch_end`` hook."""
    sums = module.__dict__.pop(_SUMS, {})
    trainer = getattr(module, "_trainer", None)
    sync = trainer is not None and int(getattr(trainer, "world_size", 1) or 1) > 1
    for name, (total, count) in sums.items():
        if total is not None and count:
            module.log(name, total / count, on_step=False, on_epoch=True, sync_dist=sync)


class EpochMeans(pl.Callback):
    """Logs the epoch means of the values a module's steps gave :func:`log_step` (every ``UnlearningMethod`` adds
    one through ``configure_callbacks``): it runs before the monitoring callbacks (``EarlyStopping``,
    ``ModelCheckpoint``) at the end of each training epoch."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.__dict__.pop(_SUMS, None)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        log_epoch_means(pl_module)
