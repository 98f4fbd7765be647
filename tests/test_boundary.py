"""Boundary Shrink and Boundary Expanding on the digits fixture (class 3 forgotten), from Python and from the CLI.

The session fixture is a quarter-width All-CNN trained for 12 epochs (original: D_f 99.2%, test-retain 99.7%), smaller
than the half-width, 30-epoch model of ``configs/model/allcnn.yaml`` that the YAML settings were tuned on (there BS
stays within 5.3 and BE within 13.3 points of test-retain accuracy for every digit; docs/methods/boundary_*.md). On the
fixture, BS with the YAML settings reaches D_f 1-12% at a test-retain drop of 3-21 points (10 runs, see
BS_MAX_RETAIN_DROP); BE, which moves the whole network towards the shadow class, costs this small model more: D_f ~12%
at ~83% with the authors' lr 1e-5 and the early stop (the YAML's lr 3e-5 overshoots to ~75%). The tests check
D_f < 20% and a bounded test-retain drop.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from conftest import digits_dm, quiet_trainer

from lightning_unlearn.attacks import fgsm
from lightning_unlearn.backbones import build_backbone
from lightning_unlearn.checkpoints import load_backbone
from lightning_unlearn.data import ForgetSpec
from lightning_unlearn.data.datasets import SplitView
from lightning_unlearn.methods import BoundaryExpanding, BoundaryShrink
from lightning_unlearn.methods.gold_estimate import estimate_gold_forget_accuracy, unseen_accuracy_per_class

ROOT = Path(__file__).resolve().parents[1]
BS_TUNED = dict(lr=3e-3, train_bn=True, stop_at_forget_acc=0.15)  # configs/unlearn/boundary_shrink.yaml
BE_TUNED = dict(lr=1e-5, train_bn=False, shadow_init="xavier", stop_at_forget_acc=0.15)  # YAML: lr 3e-5  # configs/unlearn/boundary_expanding.yaml
# Measured spread of test_bs_unlearns_digit_3_from_python (2026-12-01, 2-core x86, one thread): the fixture retrained
# with seeds 0-4 and BS_TUNED run with seeds 0 and 1 on each (10 runs): test-retain drop (as a fraction) 0.205, 0.062,
# 0.059, 0.075, 0.143, 0.093, 0.047, 0.031, 0.040, 0.137 (mean 0.089, std 0.055, max 0.205; fixture seed 0 / BS seed 0,
# the test's own seeds, is the 0.205 run: test-retain 0.783, as a fresh machine reported), D_f at most 0.122. The
# bound is mean + 3 std = 0.25; the old 0.05 held only for one lucky machine's run.
BS_MAX_RETAIN_DROP = 0.25
BE_MAX_RETAIN_DROP = 0.25


def accuracy(model: torch.nn.Module, dm, split: str) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y, _ in dm.loader(split):
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return correct / total


@pytest.fixture(scope="module")
def setup(trained_digits):
    dm = trained_digits.datamodule()
    dm.setup()
    original, _ = load_backbone(trained_digits.original_ckpt, dm)
    return dm, original


# -- Boundary Shrink ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("exclude", [True, False])
def test_bs_neighbour_labels(setup, exclude: bool) -> None:
    dm, original = setup
    method = BoundaryShrink(copy.deepcopy(original), exclude_true_label=exclude)
    labels = method.compute_neighbour_labels(dm)
    ds = dm.dataset("forget")
    y = torch.as_tensor(ds.targets)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    with torch.no_grad():
        adv_pred = original(fgsm(original, x, y, 0.1)).argmax(1).numpy()
    failed = adv_pred == y.numpy()
    assert 0 < failed.sum() < len(ds)  # the test covers both cases
    np.testing.assert_allclose(method.neighbour_stats["attack_success_rate"], 1 - failed.mean())
    if exclude:
        assert (labels != y.numpy()).all()  # "nearest but incorrect"
        np.testing.assert_array_equal(labels[~failed], adv_pred[~failed])
    else:
        np.testing.assert_array_equal(labels, adv_pred)  # the authors' code: plain argmax
        assert (labels[failed] == y.numpy()[failed]).all()


def test_bs_computes_neighbour_labels_once(setup, monkeypatch) -> None:
    dm, original = setup
    calls = []
    compute = BoundaryShrink.compute_neighbour_labels

    def counting(self, datamodule):
        calls.append(1)
        return compute(self, datamodule)

    monkeypatch.setattr(BoundaryShrink, "compute_neighbour_labels", counting)
    method = BoundaryShrink(copy.deepcopy(original), lr=1e-6)
    trainer = quiet_trainer(max_epochs=2, reload_dataloaders_every_n_epochs=1, limit_train_batches=1)
    trainer.fit(method, datamodule=dm)
    assert len(calls) == 1
    assert trainer.callback_metrics["unlearn/attack_success_rate"] == pytest.approx(
        method.neighbour_stats["attack_success_rate"]
    )
    assert "attack_success_rate" in method.method_config()["neighbour_stats"]


def test_bs_unlearns_digit_3_from_python(setup) -> None:
    dm, original = setup
    before = {k: v.clone() for k, v in original.state_dict().items()}
    pl.seed_everything(0, verbose=False)
    method = BoundaryShrink(copy.deepcopy(original), **BS_TUNED)
    quiet_trainer(max_epochs=10).fit(method, datamodule=dm)
    unlearned = method.unlearned_backbone()
    forget, retain = accuracy(unlearned, dm, "forget"), accuracy(unlearned, dm, "test_retain")
    orig_retain = accuracy(original, dm, "test_retain")
    print(f"BS: D_f {forget:.3f}, test_retain {retain:.3f} (original {orig_retain:.3f})")
    assert forget < 0.20
    assert retain >= orig_retain - BS_MAX_RETAIN_DROP
    assert all(torch.equal(v, before[k]) for k, v in original.state_dict().items())


def test_bs_from_the_cli(trained_digits, tmp_path) -> None:
    from lightning_unlearn.cli import main

    digest = hashlib.sha256(trained_digits.original_ckpt.read_bytes()).hexdigest()
    main(
        [
            "unlearn",
            "-c",
            str(ROOT / "configs/data/digits.yaml"),
            "-c",
            str(ROOT / "configs/unlearn/boundary_shrink.yaml"),
            "--original_ckpt",
            str(trained_digits.original_ckpt),
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.max_epochs",
            "2",
            "--trainer.accelerator",
            "cpu",
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    ckpts = list(tmp_path.rglob("unlearned.ckpt"))
    assert len(ckpts) == 1
    summary = json.loads((ckpts[0].parent / "unlearn.json").read_text())
    assert summary["method"] == "BoundaryShrink"
    assert summary["hparams"]["epsilon"] == 0.1 and summary["hparams"]["lr"] == 0.003
    assert 0 < summary["neighbour_stats"]["attack_success_rate"] <= 1
    assert hashlib.sha256(trained_digits.original_ckpt.read_bytes()).hexdigest() == digest
    dm = trained_digits.datamodule()
    unlearned, meta = load_backbone(ckpts[0], dm)
    assert meta["role"] == "unlearned" and unlearned.head.out_features == dm.num_classes


# -- Boundary Expanding ------------------------------------------------------------------------------------------------
def test_be_widens_trains_and_prunes(setup) -> None:
    dm, original = setup
    num_classes = original.head.out_features
    before = {k: v.clone() for k, v in original.state_dict().items()}
    method = BoundaryExpanding(original, **BE_TUNED)
    assert original.head.out_features == num_classes  # the backbone passed in is not modified
    assert method.model.head.out_features == num_classes + 1
    torch.testing.assert_close(method.model.head.weight[:num_classes], original.head.weight)
    assert method.unlearned_backbone().head.out_features == num_classes

    seen = []

    class Spy(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            x = batch[0]
            seen.append((pl_module.model.head.out_features, pl_module.model(x).shape[1], pl_module(x).shape[1]))

    pl.seed_everything(0, verbose=False)
    quiet_trainer(max_epochs=30, callbacks=[Spy()]).fit(method, datamodule=dm)
    assert seen and all(s == (num_classes + 1, num_classes + 1, num_classes) for s in seen)

    unlearned = method.unlearned_backbone()
    assert isinstance(unlearned.head, torch.nn.Linear) and unlearned.head.out_features == num_classes
    assert unlearned.config() == original.config()
    rebuilt = build_backbone(unlearned.config())
    rebuilt.load_state_dict(unlearned.state_dict())
    assert not torch.allclose(unlearned.head.weight, before["head.weight"])  # the old rows were trained
    torch.testing.assert_close(unlearned.head.weight, method.model.head.weight[:num_classes])
    assert all(torch.equal(v, before[k]) for k, v in original.state_dict().items())

    forget, retain = accuracy(unlearned, dm, "forget"), accuracy(unlearned, dm, "test_retain")
    orig_retain = accuracy(original, dm, "test_retain")
    print(f"BE: D_f {forget:.3f}, test_retain {retain:.3f} (original {orig_retain:.3f})")
    assert forget < 0.20
    assert retain >= orig_retain - BE_MAX_RETAIN_DROP


# Measured (2026-12-07, 2-core x86, one thread): the fixture trained with seeds 0-4, BE head-only (lr 1e-2, stop at
# D_f <= 5%) with seeds 0 and 1 on each (10 runs): D_f 0.0 in all 10, stopped at epoch 3 in all 10, test-retain drop
# -0.006 to 0.0 (one test digit is 0.003). The bound 0.02 is six digits; the whole-network BE above needs 0.25.
BE_HEAD_MAX_RETAIN_DROP = 0.02


def test_be_head_only_trains_only_the_widened_classifier(setup) -> None:
    """``train_layers="head"``: every weight and BatchNorm statistic of the body stays the original's bit for bit, the
    optimizer holds only the head, the flags of the parameters come back as they were, and the class is forgotten
    without moving the other classes."""
    dm, original = setup
    net = copy.deepcopy(original)
    frozen = next(iter(net.parameters()))
    frozen.requires_grad_(False)  # the user's own frozen layer stays frozen
    method = BoundaryExpanding(net, train_layers="head", lr=1e-2, stop_at_forget_acc=0.05)
    head = {id(p) for p in method.model.head.parameters()}
    assert {id(p) for p in method.trainable_parameters()} == head
    pl.seed_everything(0, verbose=False)
    quiet_trainer(max_epochs=30).fit(method, datamodule=dm)
    unlearned = method.unlearned_backbone()
    after = unlearned.state_dict()
    for key, value in original.state_dict().items():  # weights and buffers (running statistics, batch counts)
        assert torch.equal(after[key], value) != key.startswith("head."), key
    assert [p.requires_grad for p in unlearned.parameters()] == [p.requires_grad for p in net.parameters()]
    assert not next(iter(unlearned.parameters())).requires_grad and all(p.requires_grad for p in original.parameters())
    forget, retain = accuracy(unlearned, dm, "forget"), accuracy(unlearned, dm, "test_retain")
    orig_retain = accuracy(original, dm, "test_retain")
    print(f"BE head: D_f {forget:.3f}, test_retain {retain:.3f} (original {orig_retain:.3f}), "
          f"epochs {method.stopped_epoch}")
    assert method.stopped_epoch is not None and forget <= 0.05
    assert retain >= orig_retain - BE_HEAD_MAX_RETAIN_DROP


def test_be_train_layers_is_checked() -> None:
    with pytest.raises(ValueError, match="Unknown train_layers 'body'; choose 'all' or 'head'"):
        BoundaryExpanding(train_layers="body")
    with pytest.raises(ValueError, match="train_bn=True would change the frozen body's BatchNorm statistics"):
        BoundaryExpanding(train_layers="head", train_bn=True)
    BoundaryExpanding(train_layers="head", train_bn=False)


@pytest.mark.parametrize("init", ["linear", "xavier"])
def test_be_shadow_row_init_is_seeded(setup, init: str) -> None:
    _, original = setup
    a = BoundaryExpanding(original, shadow_init=init, seed=1).model.head
    b = BoundaryExpanding(original, shadow_init=init, seed=1).model.head
    c = BoundaryExpanding(original, shadow_init=init, seed=2).model.head
    assert torch.equal(a.weight, b.weight) and not torch.equal(a.weight[-1], c.weight[-1])
    if init == "xavier":
        assert a.bias[-1] == 0


@pytest.mark.parametrize(
    "name, cls",
    [("boundary_shrink", "BoundaryShrink"), ("boundary_expanding", "BoundaryExpanding"), ("fisher", "FisherForgetting")],
)
def test_unlearn_yaml_parses(name: str, cls: str, capsys) -> None:
    from lightning_unlearn.cli import main

    args = ["unlearn", "-c", str(ROOT / "configs/data/digits.yaml"), "-c", str(ROOT / f"configs/unlearn/{name}.yaml")]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--original_ckpt", "unused.ckpt", "--print_config"])
    assert exit_info.value.code in (0, None)
    assert f"lightning_unlearn.methods.{cls}" in capsys.readouterr().out


# -- early stop on D_f accuracy (both methods) ------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [BoundaryShrink, BoundaryExpanding])
def test_stop_at_forget_acc_ends_fit_and_is_recorded(setup, cls) -> None:
    dm, original = setup
    method = cls(copy.deepcopy(original), lr=1e-6, train_bn=False, stop_at_forget_acc=1.0)  # any accuracy is <= 1
    trainer = quiet_trainer(max_epochs=5)
    trainer.fit(method, datamodule=dm)
    assert method.stopped_epoch == 1 and trainer.current_epoch == 1
    assert method.method_config()["stopped_epoch"] == 1
    # the accuracy check runs in eval mode and gives the modules their training modes back
    model = method.model
    model.train()
    acc = method.forget_accuracy() if method._trainer is not None else None
    assert acc is not None and 0.0 <= acc <= 1.0 and all(m.training for m in model.modules())

    never = cls(copy.deepcopy(original), lr=1e-6, stop_at_forget_acc=0.0)  # unreachable with lr 1e-6: full schedule
    trainer = quiet_trainer(max_epochs=2)
    trainer.fit(never, datamodule=dm)
    assert never.stopped_epoch is None and trainer.current_epoch == 2
    assert "stopped_epoch" not in never.method_config()


@pytest.mark.parametrize("cls", [BoundaryShrink, BoundaryExpanding])
def test_stop_every_n_steps_ends_fit_inside_the_epoch(setup, cls) -> None:
    """D_f (~140 digits 3) is 3 batches of 64: a check after every step (or every 2nd) ends fit inside the first epoch;
    with gradient accumulation only optimizer steps are checked; the user's min_steps still hold."""
    dm, original = setup
    for every, accumulate, steps in ((1, 1, 1), (2, 1, 2), (1, 2, 1)):
        method = cls(copy.deepcopy(original), lr=1e-6, train_bn=False, stop_at_forget_acc=1.0,
                     stop_every_n_steps=every)
        trainer = quiet_trainer(max_epochs=5, accumulate_grad_batches=accumulate)
        trainer.fit(method, datamodule=dm)
        assert trainer.global_step == steps and method.stopped_step == steps and method.stopped_epoch == 1
        assert method.method_config()["stopped_step"] == steps
    method = cls(copy.deepcopy(original), lr=1e-6, train_bn=False, stop_at_forget_acc=1.0, stop_every_n_steps=1)
    trainer = quiet_trainer(max_epochs=5, min_steps=3)
    trainer.fit(method, datamodule=dm)
    assert method.stopped_step == 1 and trainer.global_step == 3  # the Trainer's min_steps, not overridden
    never = cls(copy.deepcopy(original), lr=1e-6, stop_at_forget_acc=0.0, stop_every_n_steps=1)
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(never, datamodule=dm)
    assert never.stopped_step is None and never.stopped_epoch is None and trainer.global_step == 3
    assert "stopped_step" not in never.method_config()
    with pytest.raises(ValueError, match="stop_every_n_steps must be a number of steps >= 1"):
        cls(stop_at_forget_acc=0.1, stop_every_n_steps=0)
    with pytest.raises(ValueError, match="stop_every_n_steps needs stop_at_forget_acc"):
        cls(stop_every_n_steps=2)


@pytest.mark.parametrize("cls", [BoundaryShrink, BoundaryExpanding])
@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_stop_at_forget_acc_out_of_range(cls, bad: float) -> None:
    with pytest.raises(ValueError, match="stop_at_forget_acc"):
        cls(stop_at_forget_acc=bad)


# -- stop at the gold model's estimated D_f accuracy ------------------------------------------------------------------
def test_gold_estimate_is_zero_for_a_lost_class_and_the_held_out_accuracy_otherwise(setup, trained_digits) -> None:
    dm, original = setup
    assert estimate_gold_forget_accuracy(original, dm) == 0.0  # class-wise: D_r holds no 3, the gold cannot name it
    sub = digits_dm(ForgetSpec(classes=[3], per_class=40))
    sub.setup()
    held = np.flatnonzero(np.asarray(sub.dataset("holdout").targets) == 3)
    expected = accuracy(original, sub, SplitView(sub.train_set, sub.indices("holdout")[held]))
    assert len(held) > 5 and estimate_gold_forget_accuracy(original, sub) == pytest.approx(expected)
    assert unseen_accuracy_per_class(original, sub, [3])[3] == (pytest.approx(expected), len(held))
    # random forgetting: each class's held-out accuracy, weighted by D_f's class counts
    rnd = digits_dm(ForgetSpec(fraction=0.2))
    rnd.setup()
    per = unseen_accuracy_per_class(original, rnd, list(range(10)))
    counts = np.bincount(np.asarray(rnd.dataset("forget").targets), minlength=10)
    weighted = sum(per[c][0] * counts[c] for c in range(10)) / counts.sum()
    assert estimate_gold_forget_accuracy(original, rnd) == pytest.approx(weighted)


@pytest.mark.parametrize("cls", [BoundaryShrink, BoundaryExpanding])
def test_stop_estimate_is_measured_before_training_and_recorded(setup, cls) -> None:
    dm, original = setup
    method = cls(copy.deepcopy(original), lr=1e-6, train_bn=False, stop_at_forget_acc="estimate", stop_margin=0.05)
    quiet_trainer(max_epochs=2).fit(method, datamodule=dm)
    assert method.stop_target == pytest.approx(0.05)  # class-wise: 0 + the margin
    assert method.method_config()["stop_target"] == pytest.approx(0.05)
    # BatchNorm stays frozen although the estimate ran the model in eval mode and gave the modes back
    assert all(not m.training for m in method.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with pytest.raises(ValueError, match="stop_at_forget_acc"):
        cls(stop_at_forget_acc="gold")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stop_margin"):
        cls(stop_at_forget_acc="estimate", stop_margin=-0.1)
