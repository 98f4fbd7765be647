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

The accuracy is checked at every epoch's end and, with ``stop_every_n_steps: n``, after every ``n``-th optimizer step
too (:func:`stop_after_step`): where one epoch over D_f moves the model past the target (random forgetting: the whole
boundary moves within the first epoch, docs/reproduction.md), only a check inside the epoch can stop at it.
"""

from __future__ import annotations

from typing import Any, Literal, Union

from lightning_unlearn.methods.gold_estimate import estimate_gold_forget_accuracy

__all__ = ["StopTarget", "StopWhenForgotten", "check_stop", "resolve_stop_target", "stop_after_step"]

StopTarget = Union[float, Literal["estimate"], None]


def check_stop(target: StopTarget, margin: float, every: int | None = None) -> None:
    """Validate ``stop_at_forget_acc``, ``stop_margin`` and ``stop_every_n_steps``: one readable line when wrong."""
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise ValueError(f"stop_every_n_steps must be a number of steps >= 1 or null (epoch ends only), got {every!r}.")
    if every is not None and target is None:
        raise ValueError("stop_every_n_steps needs stop_at_forget_acc (a D_f accuracy or 'estimate') to check against.")
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


def stop_after_step(method: Any, target: float | None, every: int | None) -> None:
    """After an optimizer step (``on_train_batch_end``): every ``every`` steps, end ``fit`` after this step when the D_f
    accuracy is at most ``target`` (the Trainer's ``should_stop``: its ``min_epochs``/``min_steps`` still hold).
    Records ``method.stopped_step`` (optimizer steps run) and ``stopped_epoch``; logs ``unlearn/forget_acc``."""
    if target is None or every is None or method.trainer.should_stop:
        return
    step = int(method.trainer.global_step)
    if step == 0 or step % every or step == getattr(method, "_stop_checked_step", None):
        return  # not an optimizer step that is due (gradient accumulation: batches without a step)
    method._stop_checked_step = step
    acc = method.forget_accuracy()
    method.log("unlearn/forget_acc", acc, on_step=True, on_epoch=False, rank_zero_only=True)
    if acc <= target:
        method.stopped_step, method.stopped_epoch = step, int(method.current_epoch) + 1
        method.trainer.should_stop = True


class StopWhenForgotten:
    """The stop rule's Lightning hooks, shared by Boundary Shrink and Boundary Expanding (list it before
    ``UnlearningMethod`` among the bases; the class's ``__init__`` takes ``stop_at_forget_acc``, ``stop_margin`` and
    ``stop_every_n_steps``): the target resolved at the start of ``fit`` (:meth:`start_stop_rule`, from
    ``on_train_start``), checked after every ``stop_every_n_steps``-th optimizer step and at epoch ends, recorded in
    ``method_config`` (``stop_target``, ``stopped_step``)."""

    #: The D_f accuracy at which fine-tuning stops (``None``: the fixed schedule); measured before any step.
    stop_target: float | None = None
    #: Optimizer steps run when a check of ``stop_every_n_steps`` ended ``fit`` (``None``: it did not).
    stopped_step: int | None = None

    def start_stop_rule(self) -> None:
        """Resolve the target on the model as it is (call before training changes it) and forget an earlier stop."""
        hp: Any = self.hparams  # type: ignore[attr-defined]
        self.stop_target = resolve_stop_target(self, hp.stop_at_forget_acc, hp.stop_margin)
        self.stopped_step = None

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        stop_after_step(self, self.stop_target, self.hparams.stop_every_n_steps)  # type: ignore[attr-defined]

    def on_train_epoch_end(self) -> None:
        if self.stopped_step is None:  # stopped inside this epoch: checked already
            self.stop_when_forgotten(self.stop_target)  # type: ignore[attr-defined]

    def method_config(self) -> dict[str, Any]:
        config = super().method_config()  # type: ignore[misc]
        config["stop_target"] = self.stop_target
        if self.stopped_step is not None:
            config["stopped_step"] = self.stopped_step
        return config
