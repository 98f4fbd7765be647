"""Framework notices that are not the user's business, silenced where they come from, one message at a time.

Each entry names one Lightning or PyTorch notice by its exact text and why it says nothing to a user of this package.
Only these are dropped, only while the package's own code runs (the CLI, or an unlearning method's ``fit``), so the
user's own warnings and every other framework warning still show.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any

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
    from lightning_unlearn.methods.base import UnlearningMethod

    if not isinstance(method, UnlearningMethod):
        yield
        return
    with warnings.catch_warnings():
        for key, message in METHOD_WARNINGS.items():
            if key == "no_optimizer" and getattr(method, "uses_optimizer", True):
                continue
            warnings.filterwarnings("ignore", message=message)
        yield
