"""Data-path review fixes: augmentation draws independent of where the images are, a subclass's own
``train_transform`` is what training sees, HWC tensors are transposed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import digits_dm
from torch.utils.data import DataLoader

from lightning_unlearn.data import DigitsDataModule, ForgetSpec
from lightning_unlearn.data.indexed import to_unit_tensor
from lightning_unlearn.data.tensor_loader import BatchAugment, TensorLoader


# -- 1. the draws never depend on the images' placement ---------------------------------------------------------------
@pytest.mark.parametrize("flip", [True, False])
def test_batch_augment_draws_on_the_cpu_generator_wherever_the_images_are(monkeypatch, flip):
    drawn = []
    draws = BatchAugment.draws

    def spy(self, *args, **kwargs):  # noqa: ANN001, ANN202
        out = draws(self, *args, **kwargs)
        drawn.append(out)
        return out

    monkeypatch.setattr(BatchAugment, "draws", spy)
    augment = BatchAugment(pad=2, flip=flip)
    x = torch.rand(7, 3, 8, 8)
    states = []
    for images in (x, x.to("meta")):  # "meta": any non-CPU device (no GPU here), holds no values
        torch.manual_seed(5)
        out = augment(images)
        assert out.device == images.device and out.shape == x.shape
        states.append(torch.get_rng_state())
    assert torch.equal(*states)  # the CPU generator moved the same way
    (cpu_offsets, cpu_flips), (meta_offsets, meta_flips) = drawn
    assert meta_offsets.device.type == "cpu" and torch.equal(cpu_offsets, meta_offsets)
    assert (cpu_flips is None and meta_flips is None) or torch.equal(cpu_flips, meta_flips)


def _per_sample_draws(n: int, pad: int) -> tuple[torch.Tensor | None, torch.Tensor]:
    """What RandomCrop(padding=pad) + RandomHorizontalFlip draw per sample: top, left, then the flip coin."""
    crops, flips = [], []
    for _ in range(n):
        if pad:
            crops += [torch.randint(0, 2 * pad + 1, ()), torch.randint(0, 2 * pad + 1, ())]
        flips.append(torch.rand(1) < 0.5)
    return (torch.stack(crops).view(n, 2) if pad else None), torch.cat(flips)


@pytest.mark.parametrize("pad", [0, 1, 4])
def test_batched_draws_are_the_per_sample_draws(pad):
    for seed in range(20):
        for n in (1, 2, 33, 128):
            torch.manual_seed(seed)
            offsets, flips = _per_sample_draws(n, pad)
            state = torch.get_rng_state()
            torch.manual_seed(seed)
            got_offsets, got_flips = BatchAugment(pad=pad, flip=True).draws(n)
            assert torch.equal(torch.get_rng_state(), state) and torch.equal(got_flips, flips)
            assert (offsets is None and got_offsets is None) or torch.equal(got_offsets, offsets)


def test_loader_on_another_device_draws_what_the_cpu_one_draws(monkeypatch):
    """The DataModule puts the images on the training device when they fit: same order, same crops either way."""
    dm = digits_dm(batch_size=50)
    cpu = dm.loader("train", shuffle=True, augment=True, train=True)
    monkeypatch.setattr(type(dm), "_device", lambda self: torch.device("meta"))
    other = dm.loader("train", shuffle=True, augment=True, train=True)
    assert isinstance(other, TensorLoader) and other.device.type == "meta" and cpu.device.type == "cpu"
    seen = {}
    for loader in (cpu, other):
        torch.manual_seed(11)
        shapes = [tuple(x.shape) for x, _, _ in loader]
        seen[loader.device.type] = (shapes, torch.get_rng_state(), torch.rand(2))
    (s1, g1, r1), (s2, g2, r2) = seen["cpu"], seen["meta"]
    assert s1 == s2 and torch.equal(g1, g2) and torch.equal(r1, r2)


# -- 2. a subclass's own train_transform is the one used ---------------------------------------------------------------
class _Marked(DigitsDataModule):
    def train_transform(self):  # noqa: ANN201
        return lambda x: x + 10.0  # out of [0, 1]: marks what went through this transform


class _MarkedTwin(_Marked):
    def batch_augment(self):  # noqa: ANN201
        return BatchAugment(pad=1)  # a batched twin defined below the transform: the author vouches for it


def test_subclass_train_transform_is_what_training_sees():
    dm = _Marked(forget=ForgetSpec(classes=[3]), image_size=16, batch_size=64)
    loader = dm.loader("train", shuffle=True, augment=True, train=True)
    assert isinstance(loader, DataLoader)
    x, _, _ = next(iter(loader))
    assert x.min() >= 10.0  # every image went through the subclass's transform

    from lightning_unlearn.data.tensor_loader import batch_augment_in_effect

    assert batch_augment_in_effect(dm) is None
    plain = digits_dm()
    assert isinstance(batch_augment_in_effect(plain), BatchAugment)  # the dataset's own pair still batched
    assert isinstance(plain.loader("train", shuffle=True, augment=True, train=True), TensorLoader)
    assert isinstance(batch_augment_in_effect(_MarkedTwin(image_size=16)), BatchAugment)


def test_instance_train_transform_is_what_training_sees():
    dm = digits_dm()
    dm.train_transform = lambda: (lambda x: x - 10.0)
    x, _, _ = next(iter(dm.loader("train", shuffle=True, augment=True, train=True)))
    assert x.max() <= -9.0


# -- 3. HWC tensors ----------------------------------------------------------------------------------------------
def test_hwc_tensor_is_transposed_like_an_hwc_array():
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    expected = torch.from_numpy(hwc.transpose(2, 0, 1).copy()).float() / 255.0
    for image in (hwc, torch.from_numpy(hwc)):
        assert torch.equal(to_unit_tensor(image, 10, 3), to_unit_tensor(expected, 10, 3))
    out = to_unit_tensor(torch.from_numpy(hwc), 12, 3)
    assert out.shape == (3, 12, 12)
    chw = torch.rand(3, 4, 4)  # both ends could be channels: the square side decides
    assert torch.equal(to_unit_tensor(chw, 4, 3), chw)
    assert torch.equal(to_unit_tensor(chw.permute(1, 2, 0), 4, 3), chw)
    with pytest.raises(ValueError, match="could be CHW or HWC"):
        to_unit_tensor(torch.rand(3, 5, 3), 4, 3)
