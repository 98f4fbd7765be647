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


# -- the in-memory data path -----------------------------------------------------------------------------------------
def _epochs(loader, n: int = 2) -> list[list[torch.Tensor]]:  # noqa: ANN001
    return [[t.clone() for t in batch] for _ in range(n) for batch in loader]


@pytest.mark.parametrize("shuffle, augment", [(True, True), (False, False), (True, False)])
def test_tensor_loader_gives_the_dataloader_batches(shuffle, augment):
    """Same global seed, same batches, bit for bit: images, labels, indices, the crop offsets and the order."""
    from lightning_unlearn.data.tensor_loader import TensorLoader

    dm = digits_dm(batch_size=50)
    out = {}
    for fast in (False, True):
        dm.in_memory = fast
        loader = dm.loader("train", shuffle=shuffle, augment=augment, train=True)
        assert isinstance(loader, TensorLoader) == fast
        torch.manual_seed(7)
        out[fast] = (_epochs(loader), torch.rand(3))  # and the global generator ends where the DataLoader's does
    (slow, after_slow), (fast, after_fast) = out[False], out[True]
    assert len(slow) == len(fast) == 2 * -(-len(dm.indices("train")) // 50)
    for a, b in zip(slow, fast, strict=True):
        assert all(torch.equal(u, v) and u.stride() == v.stride() for u, v in zip(a, b, strict=True))
    assert torch.equal(after_slow, after_fast)


def test_batch_augment_matches_torchvision_crop_and_flip():
    from torchvision.transforms import v2

    from lightning_unlearn.data.tensor_loader import BatchAugment

    x = torch.rand(33, 3, 12, 12)
    per_sample = v2.Compose([v2.RandomCrop(12, padding=3), v2.RandomHorizontalFlip()])
    torch.manual_seed(3)
    expected = torch.stack([per_sample(img) for img in x])
    torch.manual_seed(3)
    assert torch.equal(BatchAugment(pad=3, flip=True)(x), expected)


def test_splits_not_in_memory_keep_the_per_sample_path():
    from torch.utils.data import DataLoader

    from lightning_unlearn.data.datasets import SplitView

    dm = digits_dm()
    view = dm.dataset("retain", augment=True).with_transform(lambda t: t * 0.5)  # a transform with no batched twin
    assert isinstance(dm.loader(view), DataLoader)
    other = SplitView(torch.utils.data.TensorDataset(torch.zeros(2, 1, 4, 4), torch.zeros(2)), [0])  # not in memory
    assert isinstance(dm.loader(other), DataLoader)


def test_same_seed_same_model_and_metrics_on_both_paths():
    """A quickstart-like group in one run on both data paths: the original (Classifier, augmented, shuffled), then
    Finetune and RandomLabels from it; the accuracy columns agree to float tolerance (measured: bit-identical)."""
    import lightning.pytorch as pl

    results = {}
    for fast in (False, True):
        dm = digits_dm(image_size=8, batch_size=32)
        dm.in_memory = fast
        pl.seed_everything(0, verbose=False)
        model = Classifier(small_allcnn(dm), lr=0.05)
        quiet_trainer(max_epochs=3, limit_val_batches=0).fit(model, datamodule=dm)
        accs = {}
        for cls in (Finetune, RandomLabels):
            pl.seed_everything(1, verbose=False)
            method = cls(backbone=copy.deepcopy(model.model))
            method.retain_collapse = None
            quiet_trainer(max_epochs=2, limit_val_batches=0).fit(method, datamodule=dm)
            for split in ("forget", "retain", "test"):
                accs[f"{cls.__name__}/{split}"] = method.accuracy_on(split)
        results[fast] = (accs, [p.detach().clone() for p in model.model.parameters()])
    (slow, w_slow), (fast, w_fast) = results[False], results[True]
    assert slow.keys() == fast.keys()
    for key in slow:
        assert fast[key] == pytest.approx(slow[key], abs=1e-6), key
    assert all(torch.allclose(a, b, rtol=0, atol=1e-6) for a, b in zip(w_slow, w_fast, strict=True))


# -- bounded evaluation work -----------------------------------------------------------------------------------------
def test_nearest_distance_in_chunks_is_the_same():
    from lightning_unlearn.methods.twin_features import nearest_distance

    gen = torch.Generator().manual_seed(0)
    q, bank = torch.randn(57, 6, generator=gen), torch.randn(40, 6, generator=gen)
    qy, by = torch.randint(0, 3, (57,), generator=gen), torch.randint(0, 3, (40,), generator=gen)
    whole = nearest_distance(q, qy, bank, by, k=4)
    for chunk in (1, 13, 40 * 5):  # one query at a time, uneven chunks, 5 queries
        assert torch.allclose(nearest_distance(q, qy, bank, by, k=4, chunk_elements=chunk), whole, atol=1e-6)


def test_svc_attack_set_is_bounded_in_proportion():
    import numpy as np

    from lightning_unlearn.evaluation.mia import bounded_attack_set, entropy_mia, mia_efficacy

    a, b = np.arange(3000.0), -np.arange(1000.0)
    x_in, x_out = bounded_attack_set(a, b, 400, seed=0)
    assert (len(x_in), len(x_out)) == (300, 100) and set(x_in) <= set(a) and set(x_out) <= set(b)
    assert bounded_attack_set(a, b, None, 0)[0] is a and bounded_attack_set(a, b, 4000, 0)[1] is b
    with pytest.raises(ValueError, match="max_samples"):
        bounded_attack_set(a, b, 1, 0)
    # a cap above the attack set changes nothing; the attack still separates clear members from non-members
    rng = np.random.default_rng(0)
    members = np.tile([[0.99, 0.01]], (600, 1))
    nonmembers = np.tile([[0.55, 0.45]], (300, 1)) + rng.uniform(-0.05, 0.05, (300, 1)) * [1, -1]
    labels = np.zeros(600, dtype=int)
    full = mia_efficacy(members, labels, nonmembers, labels[:300], members[:50], labels[:50])
    assert mia_efficacy(members, labels, nonmembers, labels[:300], members[:50], labels[:50], max_samples=10**6) == full
    assert mia_efficacy(members, labels, nonmembers, labels[:300], members[:50], labels[:50], max_samples=64) == full
    assert entropy_mia(members, nonmembers, members[:50], max_samples=64) == entropy_mia(members, nonmembers, members[:50])


def test_evaluator_checks_svc_max_samples():
    from lightning_unlearn.evaluation import UnlearningEvaluator

    with pytest.raises(ValueError, match="svc_max_samples"):
        UnlearningEvaluator(svc_max_samples=1)
    assert UnlearningEvaluator().svc_max_samples == 8192


def test_reference_cache_gives_the_same_results_and_is_reused(trained_digits):
    import math

    from lightning_unlearn.evaluation import ReferenceCache, UnlearningEvaluator

    dm = trained_digits.datamodule()
    models = [load_backbone(p, dm)[0] for p in (trained_digits.original_ckpt, trained_digits.gold_ckpt)]
    cache = ReferenceCache()
    for model in models:
        plain = UnlearningEvaluator(gold=str(trained_digits.gold_ckpt), original=str(trained_digits.original_ckpt))
        shared = UnlearningEvaluator(gold=str(trained_digits.gold_ckpt), original=str(trained_digits.original_ckpt))
        shared.reference_cache = cache
        a, b = plain.evaluate(model, dm), shared.evaluate(model, dm)
        assert a.keys() == b.keys() and list(a) == list(b)
        for key in a:
            assert a[key] == b[key] or (math.isnan(a[key]) and math.isnan(b[key])), key
    assert cache.hits > 0  # the second evaluation read the gold/original/random outputs and the gold metrics
