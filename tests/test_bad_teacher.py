"""Bad Teacher: the loss against a hand computation, frozen teachers, the data it reads, and an end-to-end run."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from conftest import quiet_trainer

from lightning_unlearn.checkpoints import load_backbone
from lightning_unlearn.cli import main
from lightning_unlearn.methods import BadTeacher
from lightning_unlearn.methods.bad_teacher import bad_teacher_loss

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _softmax(row: list[float], t: float) -> list[float]:
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


def test_loss_matches_hand_computation():
    student = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]])
    good = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    bad = torch.tensor([[0.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    is_forget = torch.tensor([True, False])
    for t in (1.0, 2.0):
        total = 0.0
        for i in range(2):
            target = _softmax((bad if is_forget[i] else good)[i].tolist(), t)
            s = _softmax(student[i].tolist(), t)
            total += sum(p * (math.log(p) - math.log(q)) for p, q in zip(target, s))
        got = bad_teacher_loss(student, good, bad, is_forget, temperature=t)
        assert got.item() == pytest.approx(total / 2, rel=1e-5)  # batchmean: KL per sample, averaged
        code = bad_teacher_loss(student, good, bad, is_forget, temperature=t, reduction="mean")
        assert code.item() == pytest.approx(total / (2 * 3), rel=1e-5)  # the authors' F.kl_div default
    same = bad_teacher_loss(good, good, bad, torch.tensor([False, False]))
    assert same.item() == pytest.approx(0.0, abs=1e-6)  # a student equal to its teacher has zero loss


@pytest.fixture()
def setup(trained_digits):
    dm = trained_digits.datamodule()
    backbone, _ = load_backbone(trained_digits.original_ckpt, dm)
    return dm, backbone


def test_teachers_frozen_in_eval_mode_and_unchanged(setup):
    dm, backbone = setup
    method = BadTeacher(backbone=copy.deepcopy(backbone))
    good0 = copy.deepcopy(method.original.state_dict())
    bad0 = copy.deepcopy(method.incompetent.state_dict())
    student0 = copy.deepcopy(method.model.state_dict())
    modes = []

    class Watch(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            teachers = [*pl_module.original.modules(), *pl_module.incompetent.modules()]
            modes.append((pl_module.model.training, any(m.training for m in teachers)))

    quiet_trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=0, callbacks=[Watch()]).fit(
        method, datamodule=dm
    )
    assert modes == [(True, False)] * 3  # student trains, teachers stay in eval mode
    for before, module in ((good0, method.original), (bad0, method.incompetent)):
        assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
        assert not any(p.requires_grad for p in module.parameters())
    assert any(not torch.equal(student0[k], v) for k, v in method.model.state_dict().items())
    opt_params = {id(p) for g in method.trainer.optimizers[0].param_groups for p in g["params"]}
    assert opt_params == {id(p) for p in method.model.parameters()}
    out = method.unlearned_backbone()
    assert type(out) is type(backbone) and out.config() == backbone.config()


def test_incompetent_teacher_is_a_seeded_random_copy(setup):
    _, backbone = setup
    a, b = BadTeacher(backbone=backbone, seed=1), BadTeacher(backbone=backbone, seed=1)
    c = BadTeacher(backbone=backbone, seed=2)
    sa, sb, sc = (m.incompetent.module.state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())
    assert a.incompetent.module.config() == backbone.config()
    assert not torch.equal(sa["head.weight"], backbone.state_dict()["head.weight"])


def test_reads_forget_plus_a_retain_fraction(setup):
    dm, backbone = setup
    method = BadTeacher(backbone=backbone, retain_fraction=0.3)
    loader = method.build_train_dataloader(dm)
    s = dm.splits
    forget_part, retain_part = loader.dataset.datasets
    assert sorted(forget_part.indices.tolist()) == sorted(s.forget.tolist())
    assert len(retain_part) == round(0.3 * len(s.retain))
    assert set(retain_part.indices.tolist()) <= set(s.retain.tolist())
    with pytest.raises(ValueError, match="retain_fraction"):
        BadTeacher(retain_fraction=0.0)


def test_a_last_batch_of_one_is_dropped(setup):
    """BatchNorm cannot train on one sample: a retain fraction leaving a 1-sample last batch must still run."""
    dm, backbone = setup
    s, bs = dm.splits, dm.batch_size
    n = next(k for k in range(1, len(s.retain) + 1) if (len(s.forget) + k) % bs == 1)
    method = BadTeacher(backbone=copy.deepcopy(backbone), retain_fraction=n / len(s.retain))
    loader = method.build_train_dataloader(dm)
    assert len(loader.dataset) % bs == 1 and loader.drop_last
    assert min(len(b[0]) for b in loader) > 1
    quiet_trainer(max_epochs=1, limit_val_batches=0).fit(method, datamodule=dm)
    assert BadTeacher(backbone=backbone, retain_fraction=0.3).build_train_dataloader(dm).drop_last is (
        (len(s.forget) + round(0.3 * len(s.retain))) % bs == 1
    )


def test_cli_yaml(trained_digits, tmp_path):
    main(
        [
            "unlearn", "-c", str(CONFIGS / "data/digits.yaml"), "-c", str(CONFIGS / "unlearn/bad_teacher.yaml"),
            "--original_ckpt", str(trained_digits.original_ckpt), "--trainer.limit_train_batches=1",
            "--trainer.logger=false", "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    unlearned, meta = load_backbone(tmp_path / "unlearned.ckpt")
    assert meta["method"] == "BadTeacher" and meta["hparams"]["retain_fraction"] == 0.3
    assert set(unlearned.state_dict()) == set(load_backbone(trained_digits.original_ckpt)[0].state_dict())
