"""SalUn, l1-sparse and SSD: the mechanisms (saliency mask and frozen weights, the L1 schedule, the dampening rule), the
CLI, and a digits run of each."""

from __future__ import annotations

import copy
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from conftest import FORGET_CLASS, quiet_trainer

from lightning_unlearn.backbones import AllCNN
from lightning_unlearn.checkpoints import load_backbone
from lightning_unlearn.cli import main
from lightning_unlearn.data import DigitsDataModule, ForgetSpec
from lightning_unlearn.methods import L1Sparse, SalUn, SelectiveSynapticDampening
from lightning_unlearn.methods.base import loss_gradient
from lightning_unlearn.methods.fisher import diagonal_fisher
from lightning_unlearn.methods.l1_sparse import l1_norm, l1_weight
from lightning_unlearn.methods.salun import forgetting_gradient, saliency_mask
from lightning_unlearn.methods.ssd import ssd_dampen

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.logger=false"]


def tiny(seed: int = 0) -> AllCNN:
    torch.manual_seed(seed)
    return AllCNN(num_classes=10, in_channels=1, image_size=8, width=0.1, mean=[0.3], std=[0.3])


def tiny_dm(**kwargs) -> DigitsDataModule:
    kwargs.setdefault("forget", ForgetSpec(classes=[FORGET_CLASS]))
    return DigitsDataModule(image_size=8, batch_size=32, **kwargs)


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def accuracy(model: torch.nn.Module, dm: DigitsDataModule, split: str) -> float:
    model.eval()
    with torch.no_grad():
        return float(torch.cat([(model(x).argmax(1) == y).float() for x, y, _ in dm.loader(split)]).mean())


# -- SalUn ------------------------------------------------------------------------------------------------------------
def test_saliency_mask_is_the_global_top_fraction() -> None:
    grads = {"a": torch.tensor([[0.1, -5.0], [2.0, 0.0]]), "b": torch.tensor([-3.0, 0.2, 0.3, 4.0])}
    m = saliency_mask(grads, 0.5)  # |g| = .1 5 2 0 | 3 .2 .3 4: the 4 largest are 5, 4, 3, 2 (across both tensors)
    assert m["a"].tolist() == [[False, True], [True, False]] and m["b"].tolist() == [True, False, False, True]
    assert int(saliency_mask(grads, 0.3)["a"].sum() + saliency_mask(grads, 0.3)["b"].sum()) == 2  # int(8 * 0.3)
    with pytest.raises(ValueError, match="mask_fraction"):
        saliency_mask(grads, 0.0)


def test_forgetting_gradient_sums_over_forget_samples_whatever_the_batching() -> None:
    dm, model = tiny_dm(), tiny()
    model.train()
    forget = dm.dataset("forget")
    whole = forgetting_gradient(model, dm.loader(forget, batch_size=len(forget)))
    small = forgetting_gradient(model, dm.loader(forget, batch_size=7))
    assert all(m.training for m in model.modules())  # eval mode inside, mode restored
    x, y = torch.stack([forget[i][0] for i in range(len(forget))]), torch.tensor(forget.targets)
    model.eval()
    ref = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), list(model.parameters()))
    for (name, _), r in zip(model.named_parameters(), ref):
        torch.testing.assert_close(whole[name], r, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(small[name], r, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("weight_decay", [0.0, 5e-4])
def test_salun_trains_only_the_salient_weights(weight_decay: float) -> None:
    dm, model = tiny_dm(), tiny()
    before = params(model)
    method = SalUn(model, mask_fraction=0.5, lr=0.05, weight_decay=weight_decay)
    quiet_trainer(max_epochs=2, limit_train_batches=4).fit(method, datamodule=dm)
    mask = method.saliency
    assert mask is not None and mask.keys() == before.keys()
    total = sum(m.numel() for m in mask.values())
    assert sum(int(m.sum()) for m in mask.values()) == int(total * 0.5)
    # the mask is the top half by |grad| of the forgetting loss at the original weights, over all parameters at once
    grads = forgetting_gradient(copy.deepcopy(tiny()), dm.loader(dm.dataset("forget"), batch_size=32))
    flat_g = torch.cat([grads[n].abs().flatten() for n in mask])
    flat_m = torch.cat([mask[n].flatten() for n in mask])
    assert flat_g[flat_m].min() >= flat_g[~flat_m].max()
    assert len({float(mask[n].float().mean()) for n in mask}) > 1  # global threshold: per-layer fractions differ
    after = params(method.unlearned_backbone())
    moved = 0
    for n in before:
        assert torch.equal(after[n][~mask[n]], before[n][~mask[n]]), n  # bit-identical outside the mask
        moved += int((after[n][mask[n]] != before[n][mask[n]]).sum())
    assert moved > 0.9 * int(total * 0.5)
    assert method.method_config()["salient_fraction"] == int(total * 0.5) / total


def test_salun_full_mask_is_random_labels() -> None:
    from lightning_unlearn.methods import RandomLabels

    dm = tiny_dm(augment=False)
    results = []
    for make in (lambda b: SalUn(b, mask_fraction=1.0, lr=0.05), lambda b: RandomLabels(b, lr=0.05)):
        pl.seed_everything(0, verbose=False)
        m = make(tiny())
        quiet_trainer(max_epochs=1, limit_train_batches=3).fit(m, datamodule=dm)
        results.append(params(m.unlearned_backbone()))
    assert all(torch.equal(results[0][n], results[1][n]) for n in results[0])


def test_salun_rejects_bad_fraction() -> None:
    with pytest.raises(ValueError, match="mask_fraction must be in"):
        SalUn(mask_fraction=1.5)


# -- l1-sparse --------------------------------------------------------------------------------------------------------
def test_l1_weight_schedule_is_the_reference_linear_decay() -> None:
    assert [l1_weight(e, 5, 1e-3) for e in range(5)] == [1e-3 * (1 - e / 5) for e in range(5)]
    assert [l1_weight(e, 4, 2.0, no_l1_epochs=2) for e in range(4)] == [2.0, 1.0, 0.0, 0.0]
    assert l1_weight(0, 3, 0.5, no_l1_epochs=3) == 0.5  # the reference's E - n == 0 branch


def test_l1_sparse_applies_the_scheduled_penalty_at_every_step() -> None:
    """Each step's loss is CE + gamma_e * ||w||_1 with gamma_e of the step's epoch, at the weights of that step."""
    dm = tiny_dm(augment=False)
    alpha, epochs, seen = 1e-2, 3, []

    class Check(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.snapshot = copy.deepcopy(module.model)

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            x, y = batch[0], batch[1]
            ce = F.cross_entropy(self.snapshot(x), y)  # train mode: same batch statistics as the step
            gamma = alpha * (1 - trainer.current_epoch / epochs)
            expected = ce + gamma * sum(p.abs().sum() for p in self.snapshot.parameters())
            torch.testing.assert_close(outputs["loss"], expected, rtol=1e-5, atol=1e-6)
            seen.append((trainer.current_epoch, module.l1_weight))

    method = L1Sparse(tiny(), alpha=alpha)
    quiet_trainer(max_epochs=epochs, limit_train_batches=2, callbacks=[Check()]).fit(method, datamodule=dm)
    assert seen == [(e, alpha * (1 - e / epochs)) for e in range(epochs) for _ in range(2)]


def test_l1_norm_and_bad_settings() -> None:
    assert float(l1_norm([torch.tensor([1.0, -2.0]), torch.tensor([[-3.0]])])) == 6.0
    with pytest.raises(ValueError, match="alpha"):
        L1Sparse(alpha=-1.0)
    method = L1Sparse(tiny(), no_l1_epochs=5)
    with pytest.raises(ValueError, match="no_l1_epochs=5 exceeds max_epochs=2"):
        quiet_trainer(max_epochs=2, limit_train_batches=1).fit(method, datamodule=tiny_dm())


# -- SSD --------------------------------------------------------------------------------------------------------------
def test_ssd_dampen_rule() -> None:
    w = torch.tensor([1.0, -2.0, 3.0, 4.0, 5.0])
    i_d = torch.tensor([1.0, 1.0, 0.0, 2.0, 0.0])
    i_f = torch.tensor([5.0, 20.0, 1.0, 10.0, 0.0])
    new, sel = ssd_dampen(w, i_d, i_f, alpha=4.0, lam=0.5)
    assert sel.tolist() == [True, True, True, True, False]  # I_Df > 4 I_D
    torch.testing.assert_close(new, torch.tensor([1.0 * 0.1, -2.0 * 0.025, 0.0, 4.0 * 0.1, 5.0]), rtol=0, atol=1e-7)
    new, sel = ssd_dampen(w, i_d, i_f, alpha=1.0, lam=100.0)  # factor min(100 I_D / I_Df, 1) = 1: no change
    assert torch.equal(new[:2], w[:2]) and new[2] == 0.0


@pytest.mark.parametrize("importance", ["batch", "per_sample"])
def test_ssd_changes_exactly_the_selected_weights_by_the_stated_factor(importance: str) -> None:
    dm, model = tiny_dm(), tiny()
    model.train()
    before = params(model)
    alpha, lam = (3.0, 0.7) if importance == "batch" else (1.5, 0.7)
    method = SelectiveSynapticDampening(model, alpha=alpha, lam=lam, importance=importance, batch_size=32)
    quiet_trainer(max_epochs=3).fit(method, datamodule=dm)
    assert method.current_epoch == 1  # one pass, whatever max_epochs says
    # importances recomputed independently: D_f and D = D_r + D_f (no augmentation, eval mode)
    ref_model = tiny()
    ref_model.eval()
    s = dm.splits
    expected = {}
    for key, idx in (("forget", s.forget), ("full", sorted([*s.retain, *s.forget]))):
        sums, n_batches = {}, 0
        for start in range(0, len(idx), 32):
            rows = [dm.train_set[int(i)] for i in idx[start : start + 32]]
            x, y = torch.stack([r[0] for r in rows]), torch.tensor([r[1] for r in rows])
            if importance == "batch":
                g = {n: v.pow(2) for n, v in loss_gradient(ref_model, x, y).items()}
            else:  # per-sample squared gradients (diagonal_fisher is checked against a naive loop in test_fisher)
                g = diagonal_fisher(ref_model, x, y, fisher_type="empirical")
            sums = g if not sums else {n: sums[n] + g[n] for n in sums}
            n_batches += 1
        expected[key] = {n: v / (n_batches if importance == "batch" else len(idx)) for n, v in sums.items()}
        for n, v in expected[key].items():
            torch.testing.assert_close(method.importances[key][n], v, rtol=1e-4, atol=1e-12)
    after = params(method.unlearned_backbone())
    n_selected = 0
    for n in before:
        i_d, i_f = method.importances["full"][n], method.importances["forget"][n]
        sel = i_f > alpha * i_d
        assert torch.equal(sel, method.selected[n])
        assert torch.equal(after[n][~sel], before[n][~sel]), n  # the others are untouched
        factor = torch.clamp(lam * i_d[sel] / i_f[sel], max=1.0)
        assert torch.equal(after[n][sel], before[n][sel] * factor), n
        n_selected += int(sel.sum())
    assert 0 < n_selected < sum(v.numel() for v in before.values())
    assert all(torch.equal(b1, b2) for b1, b2 in zip(model.buffers(), method.unlearned_backbone().buffers()))


def test_ssd_needs_every_batch() -> None:
    method = SelectiveSynapticDampening(tiny())
    with pytest.raises(RuntimeError, match="limit_train_batches"):
        quiet_trainer(max_epochs=1, limit_train_batches=2).fit(method, datamodule=tiny_dm())
    with pytest.raises(ValueError, match="importance"):
        SelectiveSynapticDampening(importance="hessian")  # type: ignore[arg-type]


# -- CLI and digits runs ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["salun", "l1_sparse", "ssd"])
def test_yaml_configs_run_from_the_cli(name: str, trained_digits, tmp_path: Path) -> None:
    extra = [] if name == "ssd" else ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2"]
    main(
        [
            "unlearn", "-c", str(CONFIGS / "data/digits.yaml"), "-c", str(CONFIGS / f"unlearn/{name}.yaml"),
            "--original_ckpt", str(trained_digits.original_ckpt), f"--trainer.default_root_dir={tmp_path}",
            "--trainer.limit_val_batches=0", "--trainer.accelerator=cpu", *extra, *QUIET,
        ]  # fmt: skip
    )
    unlearned, _ = load_backbone(tmp_path / "unlearned.ckpt", trained_digits.datamodule())
    assert all(torch.isfinite(p).all() for p in unlearned.parameters())


def test_digits_forget_accuracy_drops(trained_digits) -> None:
    """Sanity, not a benchmark: a short SalUn run and SSD (no training) on the session fixture forget class 3.

    Bounds: SalUn (Random Labels on half the weights) reaches D_f ~0 with test-retain ~0.99 in one epoch. SSD's effect
    depends strongly on the model: with alpha=30 on three class-wise digits All-CNNs (this fixture and two 8x8 ones)
    the D_f accuracy fell by 0.98, 0.88 and 0.19 more than the test-retain accuracy did.
    """
    dm = trained_digits.datamodule()
    original, _ = load_backbone(trained_digits.original_ckpt, dm)
    base_f, base_r = accuracy(original, dm, "forget"), accuracy(original, dm, "test_retain")
    salun = SalUn(copy.deepcopy(original))
    quiet_trainer(max_epochs=1).fit(salun, datamodule=dm)
    out = salun.unlearned_backbone()
    assert accuracy(out, dm, "forget") < base_f - 0.5 and accuracy(out, dm, "test_retain") > 0.85
    ssd = SelectiveSynapticDampening(copy.deepcopy(original), alpha=30.0)
    quiet_trainer(max_epochs=1).fit(ssd, datamodule=dm)
    out = ssd.unlearned_backbone()
    drop_f, drop_r = base_f - accuracy(out, dm, "forget"), base_r - accuracy(out, dm, "test_retain")
    assert drop_f - drop_r > 0.1
