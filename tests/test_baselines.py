"""Finetune, Random Labels and Negative Gradient: end to end on digits class-wise forgetting, through the CLI, and the
mechanisms (random labels never the truth, the gradient-ascent divergence guard)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from conftest import quiet_trainer

from lightning_unlearn.checkpoints import load_backbone, read_checkpoint
from lightning_unlearn.cli import main
from lightning_unlearn.methods import Finetune, NegativeGradient, RandomLabels
from lightning_unlearn.methods.negative_gradient import UnlearningDivergedError, negative_gradient_loss
from lightning_unlearn.methods.random_labels import draw_random_labels

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.logger=false"]


def same_architecture(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return (
        type(a) is type(b)
        and a.config() == b.config()
        and sa.keys() == sb.keys()
        and all(sa[k].shape == sb[k].shape for k in sa)
    )


def all_finite(module: torch.nn.Module) -> bool:
    return all(torch.isfinite(t).all() for t in module.state_dict().values() if t.is_floating_point())


@pytest.fixture()
def original(trained_digits):
    dm = trained_digits.datamodule()
    backbone, _ = load_backbone(trained_digits.original_ckpt, dm)
    return dm, backbone


@pytest.mark.parametrize(
    "make",
    [
        lambda b: Finetune(backbone=b),
        lambda b: RandomLabels(backbone=b),
        lambda b: NegativeGradient(backbone=b),
        lambda b: NegativeGradient(backbone=b, retain_weight=0.95, lr=0.01, momentum=0.0),
    ],
    ids=["finetune", "random_labels", "neggrad", "neggrad_plus"],
)
def test_end_to_end_keeps_architecture(original, make):
    dm, backbone = original
    method = make(copy.deepcopy(backbone))
    quiet_trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=0).fit(method, datamodule=dm)
    out = method.unlearned_backbone()
    assert same_architecture(out, backbone) and out.head.out_features == dm.num_classes
    assert all_finite(out)
    assert any(not torch.equal(p, q) for p, q in zip(out.parameters(), backbone.parameters()))
    assert method.unlearn_time_s is not None and method.unlearn_time_s > 0


def test_models_train_in_train_mode(original):
    """Lightning keeps the eval mode ``load_backbone`` returns; the methods switch the model to train mode."""
    dm, backbone = original
    assert not backbone.training
    seen = []

    class Spy(Finetune):
        def training_step(self, batch, batch_idx):
            seen.append(self.model.training)
            return super().training_step(batch, batch_idx)

    trainer = quiet_trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(Spy(copy.deepcopy(backbone)), datamodule=dm)
    assert seen == [True]


def test_loaders_read_only_the_splits_they_need(original):
    dm, backbone = original
    s = dm.splits
    ft = Finetune(backbone=backbone).build_train_dataloader(dm)
    assert len(ft.dataset) == len(s.retain)
    rl = RandomLabels(backbone=backbone).build_train_dataloader(dm)
    assert len(rl.dataset) == len(s.retain) + len(s.forget)
    ng = NegativeGradient(backbone=backbone).build_train_dataloader(dm)
    assert list(ng.iterables) == ["forget"] and len(ng.iterables["forget"].dataset) == len(s.forget)
    ngp = NegativeGradient(backbone=backbone, retain_weight=0.5).build_train_dataloader(dm)
    assert set(ngp.iterables) == {"forget", "retain"}


def test_cli_unlearn_writes_outputs_and_leaves_original(trained_digits, tmp_path):
    before = trained_digits.original_ckpt.read_bytes()
    main(
        [
            "unlearn", "-c", str(CONFIGS / "data/digits.yaml"), "-c", str(CONFIGS / "unlearn/finetune.yaml"),
            "--original_ckpt", str(trained_digits.original_ckpt), "--gold_ckpt", str(trained_digits.gold_ckpt),
            f"--trainer.default_root_dir={tmp_path}", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=0", "--trainer.accelerator=cpu", *QUIET,
        ]
    )
    assert trained_digits.original_ckpt.read_bytes() == before
    summary = json.loads((tmp_path / "unlearned.ckpt").with_name("unlearn.json").read_text())
    assert summary["method"] == "Finetune" and summary["hparams"]["lr"] == 0.01 and summary["unlearn_time_s"] > 0
    meta = read_checkpoint(tmp_path / "unlearned.ckpt")["lightning_unlearn"]
    assert meta["role"] == "unlearned"
    unlearned, _ = load_backbone(tmp_path / "unlearned.ckpt", trained_digits.datamodule())
    original, _ = load_backbone(trained_digits.original_ckpt)
    assert same_architecture(unlearned, original)


@pytest.mark.parametrize("name", ["random_labels", "negative_gradient"])
def test_yaml_configs_instantiate(name, trained_digits, tmp_path):
    main(
        [
            "unlearn", "-c", str(CONFIGS / "data/digits.yaml"), "-c", str(CONFIGS / f"unlearn/{name}.yaml"),
            "--original_ckpt", str(trained_digits.original_ckpt), f"--trainer.default_root_dir={tmp_path}",
            "--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=0",
            "--trainer.accelerator=cpu", *QUIET,
        ]
    )
    assert (tmp_path / "unlearned.ckpt").is_file()


# -- Random Labels ----------------------------------------------------------------------------------------------------
def test_random_labels_never_the_true_label_by_default():
    y = torch.arange(10).repeat(2000)
    g = torch.Generator().manual_seed(0)
    r = draw_random_labels(y, 10, g)
    assert not (r == y).any()
    assert set(r.tolist()) == set(range(10))
    counts = torch.bincount(r[y == 3], minlength=10).float()  # uniform over the 9 other classes
    assert counts[3] == 0 and (counts[counts > 0] / 2000 - 1 / 9).abs().max() < 0.03
    with_true = draw_random_labels(y, 10, torch.Generator().manual_seed(0), include_true=True)
    assert 0.07 < (with_true == y).float().mean() < 0.13


def test_random_labels_relabel_forget_samples_only(original):
    dm, backbone = original
    method = RandomLabels(backbone=backbone, seed=3)
    loader = method.build_train_dataloader(dm)
    forget = set(dm.splits.forget.tolist())
    for epoch in range(2):
        for x, y, idx in loader:
            new = method.relabel(y, idx, epoch=epoch)
            in_f = torch.tensor([int(i) in forget for i in idx])
            assert torch.equal(new[~in_f], y[~in_f])
            assert not (new[in_f] == y[in_f]).any()
    assert not torch.equal(method.random_labels(0), method.random_labels(1))  # redrawn each epoch
    fixed = RandomLabels(backbone=backbone, redraw_each_epoch=False)
    fixed.build_train_dataloader(dm)
    assert torch.equal(fixed.random_labels(0), fixed.random_labels(5))
    again = RandomLabels(backbone=backbone, seed=3)
    again.build_train_dataloader(dm)
    assert torch.equal(again.random_labels(1), method.random_labels(1))  # seeded


# -- Negative Gradient ------------------------------------------------------------------------------------------------
def test_negative_gradient_loss_and_clamp():
    logits = torch.tensor([[0.0, 0.0], [30.0, -30.0]], requires_grad=True)
    y = torch.tensor([0, 1])
    loss, ce = negative_gradient_loss(logits, y)
    ce_each = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    assert torch.allclose(loss, -ce_each.mean()) and torch.allclose(ce, ce_each.mean())
    clipped, _ = negative_gradient_loss(logits, y, max_forget_loss=10.0)
    clipped.backward()
    assert logits.grad[1].abs().sum() == 0 and logits.grad[0].abs().sum() > 0  # no gradient past the bound
    rl, ry = torch.tensor([[2.0, 0.0]]), torch.tensor([0])
    plus, _ = negative_gradient_loss(logits.detach(), y, rl, ry, retain_weight=0.9)
    expected = 0.9 * torch.nn.functional.cross_entropy(rl, ry) - 0.1 * ce_each.detach().mean()
    assert torch.allclose(plus, expected)


def test_negative_gradient_defaults_stay_finite(original):
    dm, backbone = original
    method = NegativeGradient(backbone=copy.deepcopy(backbone))
    quiet_trainer(max_epochs=5, limit_val_batches=0).fit(method, datamodule=dm)
    assert all_finite(method.unlearned_backbone())


def test_negative_gradient_stop_raises_clear_error(original):
    dm, backbone = original
    method = NegativeGradient(backbone=copy.deepcopy(backbone), lr=100.0, on_divergence="stop")
    with pytest.raises(UnlearningDivergedError, match=r"diverged.*max_forget_loss|diverged.*became") as err:
        quiet_trainer(max_epochs=3, limit_val_batches=0).fit(method, datamodule=dm)
    message = str(err.value)
    assert "Lower `lr` (now 100.0)" in message and "on_divergence: clip" in message


def test_negative_gradient_clip_stays_finite(original):
    dm, backbone = original
    method = NegativeGradient(backbone=copy.deepcopy(backbone), lr=100.0, on_divergence="clip")
    method.retain_collapse = None  # about finiteness only: the collapse guard would end this run (test_safety.py)
    quiet_trainer(max_epochs=3, limit_val_batches=0).fit(method, datamodule=dm)
    assert all_finite(method.unlearned_backbone())


def test_negative_gradient_rejects_bad_settings():
    with pytest.raises(ValueError, match="retain_weight"):
        NegativeGradient(retain_weight=1.0)
    with pytest.raises(ValueError, match="on_divergence"):
        NegativeGradient(on_divergence="ignore")  # type: ignore[arg-type]
