"""Issue 17 (speed): no host synchronisation in a training step, the finite-loss checks still stop bad runs, and the
in-memory data path gives what the per-sample path gives."""

from __future__ import annotations

import copy
from contextlib import contextmanager

import pytest
import torch
from conftest import digits_dm, quiet_trainer, small_allcnn

from lightning_unlearn.checkpoints import load_backbone
from lightning_unlearn.methods import BoundaryShrink, Classifier, Finetune, NegativeGradient, RandomLabels
from lightning_unlearn.methods.guards import StepWatch
from lightning_unlearn.methods.negative_gradient import UnlearningDivergedError

_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "numpy")


@contextmanager
def count_host_reads():
    """Count calls of the Tensor methods that read a value back to the host (each one is a device sync on a GPU)."""
    calls: list[str] = []
    saved = {name: getattr(torch.Tensor, name) for name in _READS}

    def wrap(name, fn):  # noqa: ANN001, ANN202
        def reader(self, *args, **kwargs):  # noqa: ANN001, ANN202
            calls.append(name)
            return fn(self, *args, **kwargs)

        return reader

    for name, fn in saved.items():
        setattr(torch.Tensor, name, wrap(name, fn))
    try:
        yield calls
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)


def spy_steps(cls):  # noqa: ANN001, ANN201
    """A subclass of ``cls`` whose training steps count host reads (the step itself, not Lightning's loop)."""

    class Spy(cls):
        reads: list[int] = []

        def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
            with count_host_reads() as calls:
                out = super().training_step(batch, batch_idx)
            type(self).reads.append(len(calls))
            return out

    Spy.reads = []
    return Spy


@pytest.fixture()
def original(trained_digits):
    dm = trained_digits.datamodule()
    backbone, _ = load_backbone(trained_digits.original_ckpt, dm)
    return dm, backbone


@pytest.mark.parametrize(
    "cls, kwargs",
    [(Finetune, {}), (RandomLabels, {}), (NegativeGradient, {}), (BoundaryShrink, {})],
    ids=["finetune", "random_labels", "neggrad", "boundary_shrink"],
)
def test_training_steps_do_not_read_back(original, cls, kwargs):
    dm, backbone = original
    spy = spy_steps(cls)
    method = spy(backbone=copy.deepcopy(backbone), **kwargs)
    quiet_trainer(max_epochs=1, limit_train_batches=4, limit_val_batches=0).fit(method, datamodule=dm)
    assert spy.reads and spy.reads == [0] * len(spy.reads)


def test_classifier_step_does_not_read_back():
    dm = digits_dm()
    spy = spy_steps(Classifier)
    quiet_trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=0).fit(spy(small_allcnn(dm)), datamodule=dm)
    assert spy.reads == [0, 0, 0]


def test_non_finite_loss_still_stops_the_classifier(tmp_path):
    dm = digits_dm()
    model = Classifier(small_allcnn(dm), lr=1e30)
    trainer = quiet_trainer(max_epochs=2, default_root_dir=tmp_path, enable_checkpointing=True)
    with pytest.raises(FloatingPointError, match=r"Training loss became nan at step \d+ \(epoch 0\)"):
        trainer.fit(model, datamodule=dm)
    assert not list(tmp_path.rglob("*.ckpt"))


def test_neggrad_stop_names_the_first_diverged_step(original):
    dm, backbone = original
    method = NegativeGradient(backbone=copy.deepcopy(backbone), lr=100.0, on_divergence="stop")
    with pytest.raises(UnlearningDivergedError, match=r"diverged at step \d+ \(epoch 0\): .*Lower `lr` \(now 100.0\)"):
        quiet_trainer(max_epochs=3, limit_val_batches=0).fit(method, datamodule=dm)


def test_step_watch_keeps_the_first_bad_step():
    seen = []
    watch = StepWatch(lambda s, e, v: seen.append((s, e, v)) or "bad", error=ValueError)
    for step, value in enumerate([1.0, 2.0, float("inf"), float("nan"), 3.0]):
        watch.record(torch.tensor(not torch.isfinite(torch.tensor(value))), step, torch.tensor(value), epoch=step // 2)
    assert watch.first() == (2, 1, [float("inf")])
    with pytest.raises(ValueError, match="bad"):
        watch.check()
    clean = StepWatch(lambda s, e, v: "never")
    clean.record(torch.tensor(False), 0, torch.tensor(1.0))
    assert clean.first() is None
    clean.check()
