"""`lightning_unlearn fit` end to end, checkpoint provenance, and the checks made when a checkpoint is loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_unlearn.checkpoints import CheckpointError, load_backbone, read_checkpoint, save_checkpoint
from lightning_unlearn.cli import main
from lightning_unlearn.data import DigitsDataModule, ForgetSpec, SplitMismatchError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def _only_ckpt(root: Path) -> Path:
    """The model `fit` wrote under its fixed name (original.ckpt or gold.ckpt), a copy of Lightning's one checkpoint."""
    found = sorted(root.glob("*.ckpt"))
    lightning = sorted((root / "lightning_logs").rglob("*.ckpt"))
    assert len(found) == 1 and found[0].stem in ("original", "gold") and len(lightning) == 1, (found, lightning)
    assert found[0].read_bytes() == lightning[0].read_bytes()
    return found[0]


def test_fit_subprocess_end_to_end(tmp_path):
    """The installed command trains on digits and writes a checkpoint with provenance and splits.json beside it."""
    cmd = [
        sys.executable, "-m", "lightning_unlearn", "fit",
        "-c", str(CONFIGS / "data/digits.yaml"), "-c", str(CONFIGS / "model/allcnn.yaml"),
        "--trainer.max_epochs=2", f"--trainer.default_root_dir={tmp_path}", *QUIET,
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = _only_ckpt(tmp_path)
    meta = read_checkpoint(ckpt)["lightning_unlearn"]
    assert meta["role"] == "original" and meta["train_time_s"] > 0 and meta["epochs"] == 2
    assert meta["backbone"]["class_path"].endswith("AllCNN")
    assert meta["backbone"]["init_args"]["num_classes"] == 10 and meta["backbone"]["init_args"]["in_channels"] == 1
    assert meta["splits"]["forget_spec"] == {"classes": [3]}
    splits = json.loads((ckpt.parent / "splits.json").read_text())
    dm = DigitsDataModule(forget=ForgetSpec(classes=[3]))
    assert splits["hashes"] == dm.splits.hashes() == meta["splits"]["hashes"]
    backbone, _ = load_backbone(ckpt, dm)
    assert backbone(torch.rand(2, 1, 16, 16)).shape == (2, 10)


@pytest.mark.parametrize("model", ["resnet18", "vit"])
def test_fit_other_backbones(tmp_path, model):
    main(
        [
            "fit", "-c", str(CONFIGS / "data/digits.yaml"), "-c", str(CONFIGS / f"model/{model}.yaml"),
            "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
            f"--trainer.default_root_dir={tmp_path}", *QUIET,
        ]
    )
    meta = read_checkpoint(_only_ckpt(tmp_path))["lightning_unlearn"]
    assert meta["backbone"]["class_path"].lower().endswith(model.replace("18", "18").lower())


def test_gold_model_records_retain_training(tmp_path):
    main(
        [
            "fit", "-c", str(CONFIGS / "data/digits.yaml"), "-c", str(CONFIGS / "model/allcnn.yaml"),
            "--data.train_on=retain", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
            f"--trainer.default_root_dir={tmp_path}", *QUIET,
        ]
    )
    meta = read_checkpoint(_only_ckpt(tmp_path))["lightning_unlearn"]
    assert meta["role"] == "gold" and meta["splits"]["train_on"] == "retain"


def test_image_size_the_backbone_cannot_take(tmp_path):
    with pytest.raises(ValueError, match="cannot take 2x2 images"):
        main(
            [
                "fit", "-c", str(CONFIGS / "data/digits.yaml"), "-c", str(CONFIGS / "model/allcnn.yaml"),
                "--data.init_args.image_size=2", "--trainer.max_epochs=1", f"--trainer.default_root_dir={tmp_path}",
            ]
        )
    assert not list(tmp_path.rglob("*.ckpt"))


def test_loading_checks_splits_and_classes(trained_digits):
    dm_other_seed = trained_digits.datamodule(seed=1)
    with pytest.raises(SplitMismatchError, match="sha256"):
        load_backbone(trained_digits.original_ckpt, dm_other_seed)
    dm_other_forget = trained_digits.datamodule(forget=ForgetSpec(classes=[4]))
    with pytest.raises(SplitMismatchError, match="'forget' split"):
        load_backbone(trained_digits.original_ckpt, dm_other_forget)

    class FiveClasses(DigitsDataModule):
        num_classes = 5

    with pytest.raises(CheckpointError, match="head with 10 outputs.*num_classes=5"):
        load_backbone(trained_digits.original_ckpt, FiveClasses(forget=ForgetSpec(classes=[3])))


def test_checkpoints_are_never_overwritten(trained_digits, tmp_path):
    backbone, meta = load_backbone(trained_digits.original_ckpt)
    before = trained_digits.original_ckpt.read_bytes()
    with pytest.raises(FileExistsError):
        save_checkpoint(trained_digits.original_ckpt, backbone, meta)
    out = save_checkpoint(tmp_path / "copy.ckpt", backbone, meta, protect=(trained_digits.original_ckpt,))
    with pytest.raises(FileExistsError):
        save_checkpoint(out, backbone, meta)
    assert trained_digits.original_ckpt.read_bytes() == before
    again, _ = load_backbone(out)
    x = torch.rand(3, 1, 16, 16)
    assert torch.allclose(again(x), backbone(x))


def test_foreign_checkpoint_is_a_clear_error(tmp_path):
    p = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(2)}, p)
    with pytest.raises(CheckpointError, match="not written by lightning_unlearn"):
        load_backbone(p)
    with pytest.raises(FileNotFoundError):
        load_backbone(tmp_path / "missing.ckpt")


def test_resume_with_other_splits_stops(trained_digits, tmp_path):
    from conftest import quiet_trainer, small_allcnn

    from lightning_unlearn.methods import Classifier

    dm = trained_digits.datamodule(seed=5)
    trainer = quiet_trainer(max_epochs=13, default_root_dir=tmp_path)
    with pytest.raises(SplitMismatchError):
        trainer.fit(Classifier(small_allcnn(dm)), datamodule=dm, ckpt_path=str(trained_digits.original_ckpt))
