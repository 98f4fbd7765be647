"""SCRUB: the loss against a hand computation, the max/min step sequence and the data each step reads, the SCRUB+R
rewind, the lr schedule, and the CLI config."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from conftest import quiet_trainer

from lightning_unlearn.backbones import AllCNN
from lightning_unlearn.checkpoints import load_backbone
from lightning_unlearn.cli import main
from lightning_unlearn.data import DigitsDataModule, ForgetSpec
from lightning_unlearn.methods import SCRUB
from lightning_unlearn.methods.scrub import distill_kl, rewind_index, scrub_loss

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _softmax(row: list[float], t: float) -> list[float]:
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


def test_loss_matches_hand_computation():
    s = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]])
    t = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    y = torch.tensor([0, 2])
    for temp in (1.0, 4.0):
        kl = 0.0
        for i in range(2):
            p, q = _softmax(t[i].tolist(), temp), _softmax(s[i].tolist(), temp)
            kl += sum(a * (math.log(a) - math.log(b)) for a, b in zip(p, q))
        kl = kl / 2 * temp**2  # DistillKL: summed, / batch, * T^2
        ce = sum(-math.log(_softmax(s[i].tolist(), 1.0)[int(y[i])]) for i in range(2)) / 2  # CE at T = 1
        assert distill_kl(s, t, temp).item() == pytest.approx(kl, rel=1e-5)
        assert scrub_loss("max", s, t, temperature=temp).item() == pytest.approx(-kl, rel=1e-5)
        for alpha, gamma in ((0.001, 0.99), (0.5, 1.0), (2.0, 0.0)):
            got = scrub_loss("min", s, t, y, alpha=alpha, gamma=gamma, temperature=temp).item()
            assert got == pytest.approx(alpha * kl + gamma * ce, rel=1e-5)
    assert distill_kl(t, t, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="phase"):
        scrub_loss("min", s, t)  # a min-step needs the labels


def test_rewind_index_closest_first_on_ties():
    assert rewind_index([0.0, 0.3, 0.6, 0.9], 0.5) == 2
    assert rewind_index([0.0, 0.4, 0.6], 0.5) == 1  # tie: the earlier epoch, as the code's min()
    assert rewind_index([0.2], 0.9) == 0
    with pytest.raises(ValueError):
        rewind_index([], 0.5)


def _dm() -> DigitsDataModule:
    return DigitsDataModule(forget=ForgetSpec(classes=[3]), image_size=8, batch_size=64, augment=False)


def _net(seed: int = 0) -> AllCNN:
    torch.manual_seed(seed)
    return AllCNN(num_classes=10, in_channels=1, image_size=8, width=0.1, mean=[0.3], std=[0.3])


class Spy(SCRUB):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[int, str, list[int]]] = []

    def training_step(self, batch, batch_idx):
        ((split, data),) = batch.items()
        self.seen.append((self.current_epoch, split, data[2].tolist()))
        return super().training_step(batch, batch_idx)


def test_max_then_min_for_msteps_epochs_then_min_only():
    dm = _dm()
    method = Spy(_net(), lr=0.01, msteps=2, forget_batch_size=32, batch_size=128)
    quiet_trainer(max_epochs=4, limit_val_batches=0).fit(method, datamodule=dm)
    forget, retain = sorted(dm.splits.forget.tolist()), sorted(dm.splits.retain.tolist())
    n_f, n_r = math.ceil(len(forget) / 32), math.ceil(len(retain) / 128)
    for epoch in range(4):
        steps = [(s, idx) for e, s, idx in method.seen if e == epoch]
        splits = [s for s, _ in steps]
        expected = (["forget"] * n_f if epoch < 2 else []) + ["retain"] * n_r
        assert splits == expected, epoch  # all max-steps first, then all min-steps; no max-step after msteps
        f_idx = sorted(i for s, idx in steps if s == "forget" for i in idx)
        r_idx = sorted(i for s, idx in steps if s == "retain" for i in idx)
        assert f_idx == (forget if epoch < 2 else [])  # each D_f sample once per max-pass, nothing else
        assert r_idx == retain  # each D_r sample once per min-pass
    assert method.global_step == 2 * n_f + 4 * n_r  # one optimizer step per batch


def test_lr_decay_steps_after_the_listed_epochs():
    dm = _dm()
    lrs = []

    class Watch(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    method = SCRUB(_net(), lr=1.0, msteps=0, lr_decay_epochs=[1, 3], lr_decay_rate=0.5, batch_size=512)
    quiet_trainer(max_epochs=4, limit_val_batches=0, callbacks=[Watch()]).fit(method, datamodule=dm)
    assert lrs == [1.0, 0.5, 0.5, 0.25]  # the code: lr * rate ** #(milestones < epoch), epochs counted from 1


def _fit_recording(reference, lr=0.05, epochs=3):
    """SCRUB+R on digits; a callback keeps the weights after every epoch and the D_f error of each."""
    dm = _dm()
    method = SCRUB(_net(), lr=lr, momentum=0.0, msteps=epochs, forget_batch_size=32, batch_size=128, alpha=0.5,
                   gamma=1.0, rewind=True, rewind_reference=reference)
    states, errors = [], []

    class Keep(pl.Callback):
        def _keep(self, pl_module):
            states.append(copy.deepcopy(pl_module.model.state_dict()))
            errors.append(1 - pl_module.forget_accuracy())

        def on_train_start(self, trainer, pl_module):
            self._keep(pl_module)

        def on_train_epoch_end(self, trainer, pl_module):
            self._keep(pl_module)

    quiet_trainer(max_epochs=epochs, limit_val_batches=0, callbacks=[Keep()]).fit(method, datamodule=dm)
    return dm, method, states, errors


@pytest.mark.parametrize("reference", [0.0, 1.0, "holdout"])
def test_rewind_restores_the_checkpoint_closest_to_the_reference(reference):
    dm, method, states, errors = _fit_recording(reference)
    info = method.rewind_info
    assert info["forget_errors"] == pytest.approx(errors)  # the original, then after every epoch
    assert len(set(round(e, 6) for e in errors)) > 1  # the D_f error moved: the choice is not trivial
    if reference == "holdout":  # the final model's error on the held-out samples of the forgotten class
        final = copy.deepcopy(method.model)
        final.load_state_dict(states[-1])
        hold = dm.dataset("holdout")
        mask = torch.as_tensor(hold.targets == 3)
        x = torch.stack([hold[i][0] for i in range(len(hold)) if mask[i]])
        expected = 1 - (final.eval()(x).argmax(1) == 3).float().mean().item()
        assert info["reference_error"] == pytest.approx(expected)
    else:
        assert info["reference_error"] == reference
    k = rewind_index(errors, info["reference_error"])
    assert info["epoch"] == k
    assert all(torch.equal(v, states[k][n]) for n, v in method.model.state_dict().items())
    assert method.method_config()["rewind"]["epoch"] == k


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="msteps"):
        SCRUB(msteps=-1)
    with pytest.raises(ValueError, match="temperature"):
        SCRUB(temperature=0.0)
    with pytest.raises(ValueError, match="rewind_reference"):
        SCRUB(rewind_reference="valid")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rewind_reference"):
        SCRUB(rewind_reference=1.5)


def test_cli_yaml(trained_digits, tmp_path):
    main(
        [
            "unlearn", "-c", str(CONFIGS / "data/digits.yaml"), "-c", str(CONFIGS / "unlearn/scrub.yaml"),
            "--original_ckpt", str(trained_digits.original_ckpt), "--trainer.limit_train_batches=2",
            "--trainer.max_epochs=1", "--model.init_args.rewind=true", "--trainer.logger=false",
            "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    unlearned, meta = load_backbone(tmp_path / "unlearned.ckpt")
    assert meta["method"] == "SCRUB" and meta["hparams"]["msteps"] == 2 and meta["hparams"]["temperature"] == 4.0
    assert set(unlearned.state_dict()) == set(load_backbone(trained_digits.original_ckpt)[0].state_dict())


def test_phased_loader_plans_each_epoch():
    from torch.utils.data import DataLoader

    from lightning_unlearn.methods.base import PhasedLoader

    epoch = [0]
    loaders = {"a": DataLoader(list(range(5)), batch_size=2), "b": DataLoader(list(range(10, 13)), batch_size=2)}
    loader = PhasedLoader(loaders, lambda e: ("a", "b") if e < 1 else ("b",), lambda: epoch[0], horizon=2)
    assert len(loader) == 5  # the longest planned epoch: 3 + 2 batches
    assert [next(iter(b)) for b in loader] == ["a", "a", "a", "b", "b"]
    epoch[0] = 1
    assert [b["b"].tolist() for b in loader] == [[10, 11], [12]]
    with pytest.raises(KeyError, match="c"):
        PhasedLoader(loaders, lambda e: ("c",), lambda: 0)
