"""DataModules: digits, Fashion-MNIST (Debian's files, a data_dir, and the offline error), CIFAR and image folders on
small fakes in the real on-disk layouts."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_unlearn.data import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    ForgetSpec,
    ImageFolderDataModule,
)
from lightning_unlearn.data.fashion_mnist import DEBIAN_DIR, read_idx


def _check_items(dm, channels: int, size: int) -> None:
    x, y, idx = dm.dataset("forget")[0]
    assert x.shape == (channels, size, size) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert isinstance(y, int) and isinstance(idx, int)
    assert idx == int(dm.splits.forget[0])
    xb, yb, ib = next(iter(dm.loader("test", batch_size=4)))
    assert xb.shape == (4, channels, size, size) and yb.dtype == torch.int64


def test_digits_datamodule():
    dm = DigitsDataModule(forget=ForgetSpec(classes=[3]), image_size=16)
    sizes = dm.splits.sizes()
    assert sum(sizes[k] for k in ("retain", "forget", "holdout")) + sizes["test"] == 1797
    assert (dm.num_classes, dm.in_channels) == (10, 1)
    _check_items(dm, 1, 16)
    assert set(dm.dataset("forget").targets.tolist()) == {3}
    assert len(dm.indices("train")) == sizes["retain"] + sizes["forget"]


def test_train_on_retain_excludes_the_forget_set():
    dm = DigitsDataModule(forget=ForgetSpec(classes=[3]), train_on="retain")
    assert np.array_equal(dm.indices("train"), dm.splits.retain)
    seen = np.concatenate([b[2].numpy() for b in dm.train_dataloader()])
    assert np.array_equal(np.sort(seen), dm.splits.retain)


def test_augmentation_switch():
    on = DigitsDataModule(forget=ForgetSpec(classes=[3]), augment=True)
    off = DigitsDataModule(forget=ForgetSpec(classes=[3]), augment=False)
    assert on.dataset("retain", augment=True).transform is not None
    assert off.train_dataloader().dataset.transform is None
    # evaluation splits are never augmented
    assert on.loader("test").dataset.transform is None


def test_unknown_split_name():
    with pytest.raises(KeyError, match="Unknown split"):
        DigitsDataModule().dataset("validation")


# -- Fashion-MNIST -------------------------------------------------------------------------------------------------
def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _fake_fashion(root: Path, n_train: int = 60, n_test: int = 20) -> None:
    root.mkdir(parents=True, exist_ok=True)
    r = np.random.default_rng(0)
    _write_idx(root / "train-images-idx3-ubyte.gz", r.integers(0, 256, (n_train, 28, 28)))
    _write_idx(root / "train-labels-idx1-ubyte.gz", np.arange(n_train) % 10)
    _write_idx(root / "t10k-images-idx3-ubyte.gz", r.integers(0, 256, (n_test, 28, 28)))
    _write_idx(root / "t10k-labels-idx1-ubyte.gz", np.arange(n_test) % 10)


def test_fashion_mnist_from_data_dir(tmp_path):
    _fake_fashion(tmp_path / "fm")
    dm = FashionMNISTDataModule(data_dir=str(tmp_path / "fm"), forget=ForgetSpec(classes=[7]))
    assert dm.splits.sizes()["test"] == 20
    _check_items(dm, 1, 28)


def test_fashion_mnist_torchvision_layout(tmp_path):
    _fake_fashion(tmp_path / "FashionMNIST" / "raw")
    dm = FashionMNISTDataModule(data_dir=str(tmp_path), forget=ForgetSpec(classes=[7]), image_size=32)
    _check_items(dm, 1, 32)


def test_fashion_mnist_missing_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr("lightning_unlearn.data.fashion_mnist.DEBIAN_DIR", str(tmp_path / "nowhere"))
    dm = FashionMNISTDataModule(data_dir=str(tmp_path / "empty"), forget=ForgetSpec(classes=[7]))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist.*download=True"):
        dm.setup()


def test_read_idx_rejects_truncated_files(tmp_path):
    p = tmp_path / "bad-idx"
    p.write_bytes(bytes([0, 0, 8, 1]) + (100).to_bytes(4, "big") + b"\x00" * 10)
    with pytest.raises(ValueError, match="truncated"):
        read_idx(p)


@pytest.mark.skipif(not Path(DEBIAN_DIR).is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debian_package_loads_all_70000_images():
    dm = FashionMNISTDataModule(forget=ForgetSpec(classes=[7]))
    sizes = dm.splits.sizes()
    assert sizes["retain"] + sizes["forget"] + sizes["holdout"] == 60000
    assert sizes["test"] == 10000 and sizes["test_forget"] == 1000
    assert np.bincount(dm.train_set.targets).tolist() == [6000] * 10


# -- CIFAR -------------------------------------------------------------------------------------------------------------
def _fake_cifar(root: Path, hundred: bool, per_file: int = 30) -> None:
    r = np.random.default_rng(0)
    n_classes = 100 if hundred else 10
    key = "fine_labels" if hundred else "labels"
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    files = ["train", "test"] if hundred else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in files:
        n = per_file * (4 if hundred else 1)
        entry = {"data": r.integers(0, 256, (n, 3072), dtype=np.uint8), key: (np.arange(n) % n_classes).tolist()}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
    meta = {"fine_label_names" if hundred else "label_names": [f"c{i}" for i in range(n_classes)]}
    with open(folder / ("meta" if hundred else "batches.meta"), "wb") as f:
        pickle.dump(meta, f)


@pytest.mark.parametrize("hundred", [False, True])
def test_cifar_layouts(tmp_path, hundred):
    _fake_cifar(tmp_path, hundred)
    cls = CIFAR100DataModule if hundred else CIFAR10DataModule
    dm = cls(data_dir=str(tmp_path), forget=ForgetSpec(classes=[1]), num_workers=0)
    assert dm.num_classes == (100 if hundred else 10)
    assert dm.class_names[1] == "c1"
    _check_items(dm, 3, 32)
    x, _, idx = dm.dataset("test")[2]
    raw = dm.test_set.images[idx]
    assert torch.allclose(x * 255, raw.float())  # channel-first layout preserved


def test_cifar_missing_is_a_clear_error(tmp_path):
    dm = CIFAR10DataModule(data_dir=str(tmp_path), forget=ForgetSpec(classes=[0]))
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py.*download=True"):
        dm.setup()


# -- Image folders -----------------------------------------------------------------------------------------------------
def _fake_faces(root: Path, ids: int = 3, per_id: int = 10) -> None:
    from PIL import Image

    r = np.random.default_rng(0)
    for i in range(ids):
        d = root / f"n{i:06d}"
        d.mkdir(parents=True)
        for j in range(per_id):
            Image.fromarray(r.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(d / f"{j:04d}_01.jpg")


def test_image_folder_single_folder_split(tmp_path):
    _fake_faces(tmp_path / "faces")
    dm = ImageFolderDataModule(root=str(tmp_path / "faces"), image_size=16, forget=ForgetSpec(classes=[1]), num_workers=0)
    assert dm.num_classes == 3 and dm.class_names[0] == "n000000"
    assert dm.splits.sizes()["test"] == 6
    _check_items(dm, 3, 16)


def test_image_folder_train_test_folders(tmp_path):
    _fake_faces(tmp_path / "f" / "train")
    _fake_faces(tmp_path / "f" / "test", per_id=2)
    dm = ImageFolderDataModule(
        root=str(tmp_path / "f"), image_size=16, in_channels=1, forget=ForgetSpec(classes=[0]), num_workers=0
    )
    assert dm.split_by_folder and dm.splits.sizes()["test"] == 6
    _check_items(dm, 1, 16)


def test_image_folder_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="one sub-folder per class"):
        ImageFolderDataModule(root=str(tmp_path / "missing"))


# -- the user's holdout and further deletion requests (issue 25) -------------------------------------------------------
def test_holdout_indices_from_a_list_or_a_file(tmp_path):
    held = list(range(0, 1400, 20))
    (tmp_path / "val.txt").write_text(" ".join(map(str, held)))
    for given in (held, str(tmp_path / "val.txt")):
        dm = DigitsDataModule(forget=ForgetSpec(classes=[3]), holdout_indices=given)
        assert dm.splits.holdout.tolist() == held and dm.splits_info()["holdout"] == "given"


def test_a_new_request_needs_the_datamodule_to_know_what_was_forgotten():
    from lightning_unlearn.data import SplitMismatchError
    from lightning_unlearn.data.requests import NEXT_KEY, ledger_entry, next_request_record

    first = DigitsDataModule(forget=ForgetSpec(classes=[3]))
    entry = ledger_entry(first.splits, first.forget, {"method": "Finetune", "hparams": {}}, request=1,
                         unlearn_time_s=1.0, input_ckpt="original.ckpt")
    meta = {"splits": {**first.splits_info(), NEXT_KEY: next_request_record(first.splits, 1)}, "ledger": [entry]}
    first.verify_splits(meta["splits"], "r1")  # the model's own request
    second = DigitsDataModule(forget=ForgetSpec(fraction=0.05))
    with pytest.raises(SplitMismatchError, match=r"is an unlearned model .* dm\.continue_from\(meta\)"):
        second.verify_splits(meta["splits"], "r1")
    second.continue_from(meta)
    second.verify_splits(meta["splits"], "r1")  # the next request on it
    assert second.splits.forgotten.tolist() == first.splits.forget.tolist()
    assert not np.isin(second.splits.forget, first.splits.forget).any()
    assert np.array_equal(second.splits.holdout, first.splits.holdout)
    other = DigitsDataModule(forget=ForgetSpec(fraction=0.05), holdout_indices=list(range(0, 1400, 20)))
    other.continue_from(meta)
    with pytest.raises(ValueError, match="differ from the holdout of the model's first deletion request"):
        other.splits  # noqa: B018 - the non-members never change
