"""Lightning's fixed cost per training step, kept off steps that take a few milliseconds.

On small models a step (forward, backward, optimizer) takes 1-10 ms on a CPU, and ``self.log`` (the result
collection's bookkeeping) costs ~0.5 ms a call on an idle core (``benchmarks/step_cost.py``), more on a loaded one.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

__all__ = ["log_step"]


def log_step(module: Any, name: str, value: Tensor, batch_size: int) -> None:
    """``module.log(name, value, batch_size=batch_size)`` (a step-only value) on the steps Lightning writes to its
    loggers (every ``Trainer(log_every_n_steps=...)`` steps, the last step, ``fast_dev_run``), nothing on the others.

    What reaches the loggers is the same as logging every step (Lightning writes a step-only value on those steps
    only); what differs is ``trainer.callback_metrics[name]`` between two writes: the value of the last written step,
    not of the last step. Outside a ``Trainer`` (a manual call) it logs.
    """
    trainer = getattr(module, "_trainer", None)
    connector = getattr(trainer, "_logger_connector", None)
    if connector is not None and not (connector.should_update_logs or trainer.fast_dev_run):
        return
    module.log(name, value, batch_size=batch_size)
