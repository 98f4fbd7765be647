"""Framework notices that are not the user's business, silenced where they come from, one message at a time.

Each entry names one Lightning or PyTorch notice by its exact text and why it says nothing to a user of this package.
Only these are dropped, only while the package's own code runs (the CLI, an ``UnlearnTrainer``'s construction, or a
Trainer running an unlearning method, from Python too: :class:`MethodNotices`), so the user's own warnings and every
other framework warning still show.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import lightning.pytorch as pl

#: Log records dropped by the CLI: advertisements for optional cloud packages (Lightning's ``rank_zero_info``), and
#: ``seed_everything``'s "Seed set to N" (the seed is in the run's saved config.yaml; it defaults to 0).
LOG_NOTICES = ("💡 Tip:", "Seed set to ")
#: Warnings dropped by the CLI: a deprecation inside Lightning's own code (``_pytree.py``) under newer torch.
CLI_WARNINGS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated",)
#: Warnings dropped while an unlearning method fits, each true by design of every method:
#: frozen reference copies (original, teacher) stay in eval mode; methods have no validation loop (the evaluator
#: runs after the timed region); Fisher and SSD edit weights in one pass with no optimizer.
METHOD_WARNINGS = {
    "eval_mode": r"Found \d+ module\(s\) in eval mode at the start of training",
    "no_validation_step": r"You passed in a `val_dataloader` but have no `validation_step`",
    "no_optimizer": r"`LightningModule.configure_optimizers` returned `None`, this fit will run with no optimizer",
}
_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.fabric.utilities.seed",
)


class _DropNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        message = message.split("] ", 1)[1] if message.startswith("[rank: ") else message  # rank_prefixed_message
        return not any(message.startswith(prefix) for prefix in LOG_NOTICES)


@contextlib.contextmanager
def framework_notices_silenced() -> Iterator[None]:
    """While the CLI runs: drop :data:`LOG_NOTICES` records and :data:`CLI_WARNINGS`; everything else shows."""
    dropper = _DropNotices()
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    for log in loggers:
        log.addFilter(dropper)
    try:
        with warnings.catch_warnings():
            for message in CLI_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        for log in loggers:
            log.removeFilter(dropper)


@contextlib.contextmanager
def method_notices_silenced(method: Any) -> Iterator[None]:
    """Around ``trainer.fit(method)`` for an ``UnlearningMethod``: drop the :data:`METHOD_WARNINGS` its design makes
    true (``no_optimizer`` only for a method whose ``configure_optimizers`` is declared to return ``None``)."""
    if not hasattr(type(method), "uses_optimizer"):  # not an UnlearningMethod (by its attribute: no import cycle)
        yield
        return
    with warnings.catch_warnings():
        for key, message in METHOD_WARNINGS.items():
            if key == "no_optimizer" and getattr(method, "uses_optimizer", True):
                continue
            warnings.filterwarnings("ignore", message=message)
        yield


class MethodNotices(pl.Callback):
    """What the CLI drops (:data:`CLI_WARNINGS`; with ``method``, also :data:`METHOD_WARNINGS` as
    :func:`method_notices_silenced` does), dropped while a Trainer runs this package's module from Python
    (``Trainer().fit(method)``, ``test``, ``predict``; a ``Classifier``).

    The module returns one from ``configure_callbacks``, which Lightning calls before its configuration checks warn:
    the filters are set when it is built and restored at ``teardown`` (or on an exception), so they hold for that one
    run only.
    """

    def __init__(self, method: Any = None) -> None:
        self._context: Any = warnings.catch_warnings()
        self._context.__enter__()
        for message in CLI_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        for key, message in METHOD_WARNINGS.items() if method is not None else ():
            if key != "no_optimizer" or not getattr(method, "uses_optimizer", True):
                warnings.filterwarnings("ignore", message=message)

    def _restore(self) -> None:
        if self._context is not None:
            self._context.__exit__(None, None, None)
            self._context = None

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()
