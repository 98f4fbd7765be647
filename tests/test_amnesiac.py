"""Amnesiac unlearning (recorded updates subtracted) and the relabelling Amnesiac baseline."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from conftest import digits_dm, quiet_trainer, small_allcnn

from lightning_unlearn.checkpoints import load_backbone
from lightning_unlearn.cli import main
from lightning_unlearn.methods import Amnesiac, AmnesiacRecorder, AmnesiacRelabel, Classifier
from lightning_unlearn.methods.amnesiac import AmnesiacUpdatesError, load_updates

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu"]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A small classifier trained 5 steps from a known init, with one recorder marking every sample and one marking
    the DataModule's D_f (the default)."""
    root = tmp_path_factory.mktemp("amnesiac")
    dm = digits_dm()
    pl.seed_everything(0, verbose=False)
    init = small_allcnn(dm)
    model = Classifier(copy.deepcopy(init), lr=0.05)
    everything = AmnesiacRecorder(sensitive="all", path=str(root / "all.pt"))
    forget_only = AmnesiacRecorder(path=str(root / "forget.pt"))
    quiet_trainer(max_epochs=1, limit_train_batches=5, limit_val_batches=0, callbacks=[everything, forget_only]).fit(
        model, datamodule=dm
    )
    return dict(dm=dm, init=init, trained=model.model, all=root / "all.pt", forget=root / "forget.pt")


def test_updates_file_is_weights_only_and_describes_the_batches(recorded):
    data = torch.load(recorded["all"], map_location="cpu", weights_only=True)
    assert data["total_steps"] == 5 and len(data["steps"]) == 5 and data["sensitive"] is None
    forget = set(recorded["dm"].splits.forget.tolist())
    part = load_updates(recorded["forget"])
    assert part["total_steps"] == 5 and 0 < len(part["steps"]) <= 5
    for idx in part["sample_indices"]:  # only D_f samples are listed, and every listed step held some
        assert len(idx) > 0 and set(idx.tolist()) <= forget
    assert set(part["sensitive"].tolist()) == forget


def test_subtracting_every_update_returns_the_initial_weights(recorded):
    method = Amnesiac(backbone=copy.deepcopy(recorded["trained"]), updates=str(recorded["all"]))
    quiet_trainer(max_epochs=0, limit_val_batches=0).fit(method, datamodule=recorded["dm"])  # subtraction only
    out, init = method.unlearned_backbone().state_dict(), recorded["init"].state_dict()
    trained = recorded["trained"].state_dict()
    for name, value in init.items():
        if value.is_floating_point():  # parameters and BatchNorm running statistics
            assert torch.allclose(out[name], value, atol=1e-5), name
    assert any(not torch.allclose(trained[k], init[k]) for k in init if init[k].is_floating_point())
    assert method.subtraction["subtracted_steps"] == 5 and method.subtraction["subtracted_fraction"] == 1.0


def test_subtract_then_repair_on_retain(recorded):
    method = Amnesiac(backbone=copy.deepcopy(recorded["trained"]), updates=str(recorded["forget"]))
    quiet_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0).fit(method, datamodule=recorded["dm"])
    out = method.unlearned_backbone()
    assert out.config() == recorded["trained"].config()
    assert all(torch.isfinite(t).all() for t in out.state_dict().values() if t.is_floating_point())
    assert method.method_config()["subtraction"]["subtracted_steps"] >= 1


def test_without_updates_stops_with_a_clear_error(recorded, tmp_path):
    dm = recorded["dm"]
    for updates in (None, str(tmp_path / "missing.pt")):
        method = Amnesiac(backbone=copy.deepcopy(recorded["trained"]), updates=updates)
        with pytest.raises(AmnesiacUpdatesError, match="AmnesiacRecorder"):
            quiet_trainer(max_epochs=0).fit(method, datamodule=dm)


def test_recording_must_cover_the_forget_set_and_match_the_model(recorded, tmp_path):
    dm = recorded["dm"]
    pl.seed_everything(0, verbose=False)
    model = Classifier(small_allcnn(dm))
    path = tmp_path / "few.pt"
    rec = AmnesiacRecorder(sensitive=[int(i) for i in dm.splits.forget[:3]], path=str(path))
    quiet_trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0, callbacks=[rec]).fit(model, datamodule=dm)
    with pytest.raises(AmnesiacUpdatesError, match="does not cover"):
        quiet_trainer(max_epochs=0).fit(Amnesiac(backbone=copy.deepcopy(model.model), updates=str(path)), datamodule=dm)
    # updates recorded for another model (here: the untrained init) are refused
    with pytest.raises(AmnesiacUpdatesError, match="not the one"):
        quiet_trainer(max_epochs=0).fit(
            Amnesiac(backbone=copy.deepcopy(recorded["init"]), updates=str(recorded["all"])), datamodule=dm
        )


def test_relabel_variant_end_to_end(trained_digits):
    dm = trained_digits.datamodule()
    original, _ = load_backbone(trained_digits.original_ckpt, dm)
    method = AmnesiacRelabel(backbone=copy.deepcopy(original))
    assert method.hparams.optimizer == "adam" and method.hparams.lr == 1e-4 and not method.hparams.redraw_each_epoch
    quiet_trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=0).fit(method, datamodule=dm)
    assert method.unlearned_backbone().config() == original.config()
    labels = method.random_labels(0)
    assert torch.equal(labels, method.random_labels(1))  # drawn once, fixed for the run
    assert not (labels == method._forget_true).any()  # always incorrect


def test_cli_record_then_unlearn(tmp_path):
    """`fit` with the recorder callback, then `unlearn` with the amnesiac config, both through the CLI."""
    fit_dir, out_dir = tmp_path / "fit", tmp_path / "unlearn"
    main(
        [
            "fit", "-c", str(CONFIGS / "data/digits.yaml"), "-c", str(CONFIGS / "model/allcnn.yaml"),
            "--model.init_args.backbone.init_args.width=0.25", "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1",
            "--trainer.callbacks+=lightning_unlearn.methods.AmnesiacRecorder",
            f"--trainer.default_root_dir={fit_dir}", *QUIET,
        ]
    )
    (ckpt,) = sorted((fit_dir / "lightning_logs").rglob("*.ckpt"))  # beside the recorder's updates file
    updates = ckpt.parent / "amnesiac_updates.pt"
    assert updates.is_file()
    before = ckpt.read_bytes()
    main(
        [
            "unlearn", "-c", str(CONFIGS / "data/digits.yaml"), "-c", str(CONFIGS / "unlearn/amnesiac.yaml"),
            "--original_ckpt", str(ckpt), "--model.init_args.updates", str(updates), "--trainer.max_epochs=0",
            "--trainer.logger=false", f"--trainer.default_root_dir={out_dir}", *QUIET,
        ]
    )
    assert ckpt.read_bytes() == before
    summary = json.loads((out_dir / "unlearn.json").read_text())
    assert summary["method"] == "Amnesiac" and summary["subtraction"]["subtracted_steps"] >= 1
    unlearned, _ = load_backbone(out_dir / "unlearned.ckpt")
    original, _ = load_backbone(ckpt)
    assert unlearned.config() == original.config()
    assert any(not torch.equal(a, b) for a, b in zip(unlearned.parameters(), original.parameters()))


def test_relabel_yaml_instantiates(trained_digits, tmp_path):
    main(
        [
            "unlearn", "-c", str(CONFIGS / "data/digits.yaml"), "-c", str(CONFIGS / "unlearn/amnesiac_relabel.yaml"),
            "--original_ckpt", str(trained_digits.original_ckpt), "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=1", "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}",
            *QUIET,
        ]
    )
    assert json.loads((tmp_path / "unlearn.json").read_text())["method"] == "AmnesiacRelabel"
