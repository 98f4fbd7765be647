"""Label-free SSD: the importances (recomputed outside the method), that no label is read (the same weights under
permuted labels, where SSD's change), the CLI config, and a digits run that forgets class 3."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FORGET_CLASS, accuracy, params, tiny, quiet_trainer
from ssd_toy import BlockImages, Linear

from lightning_unlearn.checkpoints import load_backbone
from lightning_unlearn.cli import main
from lightning_unlearn.data import DigitsDataModule, ForgetSpec
from lightning_unlearn.methods import LabelFreeSSD, SelectiveSynapticDampening
from lightning_unlearn.methods.lfssd import output_norm_gradient

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_output_norm_gradient_is_the_gradient_of_the_mean_squared_output_norm() -> None:
    model, x = tiny(), torch.rand(5, 1, 8, 8)
    model.train()
    g = output_norm_gradient(model, x)
    assert all(m.training for m in model.modules())  # eval mode inside, modes restored
    model.eval()
    ref = torch.autograd.grad(model(x).pow(2).sum(1).mean(), list(model.parameters()))
    for (name, _), r in zip(model.named_parameters(), ref, strict=True):
        torch.testing.assert_close(g[name], r, rtol=1e-4, atol=1e-7)


def test_lfssd_importances_and_dampening() -> None:
    """Omega = mean over batches of |grad mean ||f||^2|; D's batches are D_r's in the stored order (no label sort),
    then D_f's; the selected weights scale by min(lambda Omega_D / Omega_Df, 1), the rest are untouched."""
    dm, model = DigitsDataModule(forget=ForgetSpec(classes=[FORGET_CLASS]), image_size=8, batch_size=32), tiny()
    before = params(model)
    alpha, lam = 3.0, 0.7
    method = LabelFreeSSD(model, alpha=alpha, lam=lam, batch_size=32)
    quiet_trainer(max_epochs=2).fit(method, datamodule=dm)
    assert "importance" not in method.hparams and method.current_epoch == 1
    ref, s = tiny(), dm.splits
    ref.eval()

    def sums(idx: np.ndarray) -> tuple[dict[str, torch.Tensor], int]:
        out: dict[str, torch.Tensor] = {}
        for start in range(0, len(idx), 32):
            x = torch.stack([dm.train_set[int(i)][0] for i in idx[start : start + 32]])
            grads = torch.autograd.grad(ref(x).pow(2).sum(1).mean(), list(ref.parameters()))
            for (n, _), gr in zip(ref.named_parameters(), grads, strict=True):
                out[n] = out.get(n, 0) + gr.abs()
        return out, -(-len(idx) // 32)

    (f, n_f), (r, n_r) = sums(s.forget), sums(s.retain)
    after, n_sel = params(method.unlearned_backbone()), 0
    for n in before:
        torch.testing.assert_close(method.importances["forget"][n], f[n] / n_f, rtol=1e-4, atol=1e-10)
        torch.testing.assert_close(method.importances["full"][n], (f[n] + r[n]) / (n_f + n_r), rtol=1e-4, atol=1e-10)
        i_d, i_f, sel = method.importances["full"][n], method.importances["forget"][n], method.selected[n]
        assert torch.equal(sel, i_f > alpha * i_d)
        assert torch.equal(after[n][~sel], before[n][~sel])
        assert torch.equal(after[n][sel], before[n][sel] * torch.clamp(lam * i_d[sel] / i_f[sel], max=1.0))
        n_sel += int(sel.sum())
    assert 0 < n_sel < sum(v.numel() for v in before.values())


def test_lfssd_reads_no_label() -> None:
    """The same images under permuted labels (same D_f by index, no holdout): LFSSD's weights are identical, SSD's
    (cross-entropy importances) are not."""
    forget = ForgetSpec(indices=list(range(3, 1280, 20)))  # half of class 3 under the true labels

    def run(make, permute: int | None) -> dict[str, torch.Tensor]:
        method = make()
        method.retain_collapse = None  # under permuted labels the accuracy guard has no meaning
        quiet_trainer(max_epochs=1).fit(method, datamodule=BlockImages(forget=forget, permute_labels=permute))
        return params(method.unlearned_backbone())

    lf = [run(lambda: LabelFreeSSD(Linear(), alpha=5.0), p) for p in (None, 1, 2)]
    assert all(torch.equal(lf[0][n], other[n]) for other in lf[1:] for n in lf[0])
    assert not torch.equal(lf[0]["head.weight"], Linear().head.weight.detach())  # it did dampen
    ssd = [run(lambda: SelectiveSynapticDampening(Linear(), alpha=5.0), p) for p in (None, 1)]
    assert not torch.equal(ssd[0]["head.weight"], ssd[1]["head.weight"])


def test_lfssd_yaml_config_runs_from_the_cli(trained_digits, tmp_path: Path) -> None:
    main(
        [
            "unlearn", "-c", str(CONFIGS / "data/digits.yaml"), "-c", str(CONFIGS / "unlearn/lfssd.yaml"),
            "--original_ckpt", str(trained_digits.original_ckpt), f"--trainer.default_root_dir={tmp_path}",
            "--trainer.limit_val_batches=0", "--trainer.accelerator=cpu", "--model.init_args.alpha=5.0",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.logger=false",
        ]
    )
    unlearned, _ = load_backbone(tmp_path / "unlearned.ckpt", trained_digits.datamodule())
    assert all(torch.isfinite(p).all() for p in unlearned.parameters())


def test_lfssd_forgets_class_3_on_digits(trained_digits) -> None:
    """Sanity, not a benchmark. On this fixture (cap (n_r + n_f) / n_f = 7.3) alpha 4 / 5 / 5.5 / 6 / 7 gave D_f
    0.000 / 0.000 / 0.000 / 0.870 / 0.985 with test-retain 0.137 / 0.935 / 0.929 / 0.984 / 0.991; alpha 5 on two 8x8
    models: D_f 0.000 with test-retain 0.978 and 0.997 (docs/methods/lfssd.md)."""
    dm = trained_digits.datamodule()
    original, _ = load_backbone(trained_digits.original_ckpt, dm)
    base_f, base_r = accuracy(original, dm, "forget"), accuracy(original, dm, "test_retain")
    method = LabelFreeSSD(copy.deepcopy(original), alpha=5.0)
    quiet_trainer(max_epochs=1).fit(method, datamodule=dm)
    out = method.unlearned_backbone()
    drop_f, drop_r = base_f - accuracy(out, dm, "forget"), base_r - accuracy(out, dm, "test_retain")
    assert drop_f > 0.9 and drop_r < 0.15
    with pytest.warns(UserWarning, match="at or above the cap"):
        quiet_trainer(max_epochs=1).fit(LabelFreeSSD(copy.deepcopy(original)), datamodule=dm)
