"""When Boundary Shrink/Expanding stop: the paper's fixed schedule, a fixed D_f accuracy, or the gold model's
estimated D_f accuracy.

Both methods fine-tune on D_f alone, so once D_f is forgotten more epochs only move what the neighbouring classes
share with it (docs/methods/boundary_shrink.md). ``stop_at_forget_acc``:

* ``None``: the paper's fixed schedule (``max_epochs``);
* a number ``a`` in [0, 1]: end after the first epoch whose D_f accuracy is at most ``a``;
* ``"estimate"``: ``a`` = the gold model's D_f accuracy estimated from the original
  (:func:`~.gold_estimate.estimate_gold_forget_accuracy`: 0 for a class D_r no longer holds, the original's held-out
  accuracy of the class otherwise) plus ``stop_margin``. The same rule then serves whole-class forgetting (the target is
  ``stop_margin``) and random forgetting (about the test accuracy), where a fixed number cannot.
"""

from __future__ import annotations

from typing import Any, Literal, Union

from lightning_unlearn.methods.gold_estimate import estimate_gold_forget_accuracy

__all__ = ["StopTarget", "check_stop", "resolve_stop_target"]

StopTarget = Union[float, Literal["estimate"], None]


def check_stop(target: StopTarget, margin: float) -> None:
    """Validate ``stop_at_forget_acc`` and ``stop_margin``: one readable line when wrong."""
    if target is not None and target != "estimate" and not (isinstance(target, (int, float)) and 0 <= target <= 1):
        raise ValueError(f"stop_at_forget_acc must be an accuracy in [0, 1], 'estimate' or null, got {target!r}.")
    if not 0.0 <= margin <= 1.0:
        raise ValueError(f"stop_margin must be in [0, 1], got {margin}.")


def resolve_stop_target(method: Any, target: StopTarget, margin: float) -> float | None:
    """The D_f accuracy at which ``method`` stops (``None``: never). Call it before training changes the model:
    ``"estimate"`` measures the model as it is (the original) on held-out data, in eval mode (``method``'s modes are
    restored, so set the training mode afterwards)."""
    if target is None:
        return None
    if target == "estimate":
        dm = method.datamodule
        seed = int(method.hparams.get("seed", 0))
        return min(1.0, estimate_gold_forget_accuracy(method, dm, seed=seed) + float(margin))
    return float(target)
