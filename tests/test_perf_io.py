"""Issue 17 (reads): a benchmark group's copy of its original is weights-only and gives the rows the full training
checkpoint gave; a checkpoint file is decoded once per process and version; a dataset is read once per process and
shared by DataModules without one's splits reaching another."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import quiet_trainer, small_allcnn

from lightning_unlearn import checkpoints
from lightning_unlearn.benchmark import load_config, run_benchmark
from lightning_unlearn.benchmark.jobs import group_datamodule, run_method
from lightning_unlearn.benchmark.plan import make_plan
from lightning_unlearn.experiment import slug
from lightning_unlearn.checkpoints import META_KEY, read_checkpoint
from lightning_unlearn.data.fashion_mnist import DEBIAN_DIR


def mini(out) -> dict:  # noqa: ANN001
    return {
        "output_dir": str(out),
        "data": {"class_path": "lightning_unlearn.data.DigitsDataModule", "init_args": {"image_size": 8}},
        "backbone": {"class_path": "lightning_unlearn.backbones.AllCNN", "init_args": {"width": 0.125}},
        "training": {"max_epochs": 2, "lr": 0.05},
        "scenarios": [{"name": "class-wise", "targets": [{"classes": [3]}]}],
        "seeds": [0],
        "methods": [{"name": "Finetune", "class_path": "lightning_unlearn.methods.Finetune",
                     "init_args": {"lr": 0.01}, "max_epochs": 1}],
        "trainer": {"accelerator": "cpu", "num_threads": 1},
        "evaluator": {"mia": True, "zrf": True},
    }


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("perf_io")
    path = root / "c.yaml"
    path.write_text(yaml.safe_dump(mini(root / "out"), sort_keys=False))
    cfg = load_config(path)
    result = run_benchmark(cfg)
    return cfg, make_plan(cfg), result


def full_copy(cfg, plan, group, path):  # noqa: ANN001, ANN201
    """The group copy as it was made before (the whole training checkpoint of the shared original)."""
    job = plan.models[group.original_key]
    ckpt = torch.load(job.ckpt, map_location="cpu", weights_only=True)
    ckpt[META_KEY] = {**ckpt[META_KEY], "splits": group_datamodule(cfg, group).splits_info(),
                      "benchmark_model": job.dir.name, "shared_checkpoint": str(job.ckpt)}
    torch.save(ckpt, path)
    return path


def test_group_copy_is_weights_only_and_gives_the_same_row(bench, tmp_path):
    cfg, plan, result = bench
    group = plan.groups[0]
    copy = read_checkpoint(group.dir / "original.ckpt")
    assert set(copy) == {"state_dict", META_KEY}
    full = torch.load(plan.models[group.original_key].ckpt, map_location="cpu", weights_only=True)
    assert {"optimizer_states", "callbacks"} <= set(full)  # the source is a training checkpoint
    assert all(torch.equal(copy["state_dict"][k], v) for k, v in full["state_dict"].items())
    # the row recomputed from a copy made the old way (full checkpoint) is identical, metrics and unlearned weights
    dm = group_datamodule(cfg, group)
    spec = cfg.methods[0]
    old = full_copy(cfg, plan, group, tmp_path / "original.ckpt")
    run_dir = tmp_path / "row"
    row = run_method(cfg, group, spec, old, plan.models[group.gold_key].ckpt, run_dir, dm, None)
    bench_row = next(r for r in result["rows"] if r["method"] == spec.name)
    metrics = {k: v for k, v in row.items() if not k.startswith("time/") and not k.endswith("time_s")}
    assert metrics == {k: bench_row[k] for k in metrics}
    ours = read_checkpoint(group.dir / slug(spec.name) / "unlearned.ckpt")["state_dict"]
    theirs = read_checkpoint(run_dir / "unlearned.ckpt")["state_dict"]
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_old_full_copy_is_replaced(bench, tmp_path):
    cfg, plan, _ = bench
    from lightning_unlearn.benchmark.cache import group_original

    group = plan.groups[0]
    path = group.dir / "original.ckpt"
    dm = group_datamodule(cfg, group)
    before = read_checkpoint(path)
    full_copy(cfg, plan, group, path)  # what an older version left
    assert "optimizer_states" in read_checkpoint(path)
    group_original(cfg, group, plan.models[group.original_key], dm)
    again = read_checkpoint(path)
    assert set(again) == {"state_dict", META_KEY}
    assert all(torch.equal(before["state_dict"][k], v) for k, v in again["state_dict"].items())


def counting_loads(monkeypatch):  # noqa: ANN001, ANN201
    calls: list[str] = []
    real = torch.load

    def load(f, *a, **k):  # noqa: ANN001, ANN202
        calls.append(str(f))
        return real(f, *a, **k)

    monkeypatch.setattr(torch, "load", load)
    return calls


def test_a_method_row_reads_no_checkpoint_again(bench, tmp_path, monkeypatch):
    cfg, plan, _ = bench
    group = plan.groups[0]
    dm = group_datamodule(cfg, group)
    original, gold = group.dir / "original.ckpt", plan.models[group.gold_key].ckpt
    time.sleep(0.1)  # (a file read within the file system's timestamp granularity of its writing is not kept)
    read_checkpoint(original), read_checkpoint(gold)  # the group's earlier rows read them
    calls = counting_loads(monkeypatch)
    run_method(cfg, group, cfg.methods[0], original, gold, tmp_path / "row", dm, None)
    assert [c for c in calls if c.endswith(".ckpt")] == []


def test_read_cache_follows_the_file(tmp_path, monkeypatch):
    path = tmp_path / "a.ckpt"
    torch.save({"state_dict": {"model.w": torch.zeros(3)}}, path)
    calls = counting_loads(monkeypatch)
    read_checkpoint(path), read_checkpoint(path)
    assert len(calls) == 2  # just written: within the timestamp granularity, not kept
    past = time.time() - 10
    os.utime(path, (past, past))
    first = read_checkpoint(path)
    first["state_dict"]["extra"] = 1  # the caller's containers are its own
    second = read_checkpoint(path)
    assert len(calls) == 3 and "extra" not in second["state_dict"]
    torch.save({"state_dict": {"model.w": torch.ones(3)}}, path)  # rewritten: another version
    os.utime(path, (past + 1, past + 1))
    assert torch.equal(read_checkpoint(path)["state_dict"]["model.w"], torch.ones(3)) and len(calls) == 4
    monkeypatch.setattr(checkpoints, "READ_CACHE_MAX_BYTES", 8)  # over the bound: read every time
    checkpoints.clear_read_cache()
    read_checkpoint(path), read_checkpoint(path)
    assert len(calls) == 6


def test_datamodules_share_the_decoded_dataset_without_sharing_splits(monkeypatch):
    import sklearn.datasets

    from lightning_unlearn.data import DigitsDataModule, ForgetSpec
    from lightning_unlearn.data.shared import clear_shared_datasets
    from lightning_unlearn.methods import RandomLabels

    clear_shared_datasets()
    reads = []
    real = sklearn.datasets.load_digits
    monkeypatch.setattr(sklearn.datasets, "load_digits", lambda *a, **k: reads.append(1) or real(*a, **k))
    a = DigitsDataModule(forget=ForgetSpec(classes=[3]), seed=0, image_size=8)
    b = DigitsDataModule(forget=ForgetSpec(fraction=0.1), seed=1, image_size=8)
    a.setup(), b.setup()
    assert len(reads) == 1 and a.train_set.images is b.train_set.images
    assert a.splits.hashes() != b.splits.hashes()
    images = a.train_set.images.clone()
    hashes = a.splits.hashes()
    b.train_set.targets[:] = 0  # a DataModule's own targets: the other's are not touched
    assert len(set(a.train_set.targets.tolist())) == 10
    rl = RandomLabels(backbone=small_allcnn(b), lr=0.01)  # relabels D_f: new label arrays, never the shared ones
    quiet_trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=0).fit(rl, datamodule=b)
    assert torch.equal(a.train_set.images, images) and a.splits.hashes() == hashes
    # the same DataModule read from the files again has the same data and splits
    clear_shared_datasets()
    fresh = DigitsDataModule(forget=ForgetSpec(classes=[3]), seed=0, image_size=8)
    fresh.setup()
    assert len(reads) == 2 and fresh.train_set.images is not a.train_set.images
    assert torch.equal(fresh.train_set.images, images) and fresh.splits.hashes() == hashes
    assert np.array_equal(fresh.test_set.targets, a.test_set.targets)
    DigitsDataModule(image_size=4).setup()  # other preprocessing: another entry
    assert len(reads) == 3


@pytest.mark.skipif(not Path(DEBIAN_DIR).is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_is_read_once_per_process(monkeypatch):
    from lightning_unlearn.data import FashionMNISTDataModule, ForgetSpec
    from lightning_unlearn.data import fashion_mnist

    reads = []
    real = fashion_mnist.read_idx
    monkeypatch.setattr(fashion_mnist, "read_idx", lambda p: reads.append(p) or real(p))
    a = FashionMNISTDataModule(forget=ForgetSpec(classes=[0]), image_size=14)
    b = FashionMNISTDataModule(forget=ForgetSpec(fraction=0.01), seed=2, image_size=14)
    a.setup(), b.setup()
    assert len(reads) == 4 and a.train_set.images is b.train_set.images and a.splits.hashes() != b.splits.hashes()
