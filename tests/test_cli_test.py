"""`lightning_unlearn test` on any checkpoint, and the evaluation at the end of `lightning_unlearn unlearn`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from lightning_unlearn.checkpoints import read_checkpoint
from lightning_unlearn.cli import main
from lightning_unlearn.data import SplitMismatchError, unpack_batch
from lightning_unlearn.evaluation import METRIC_KEYS
from lightning_unlearn.methods import UnlearningMethod

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DIGITS = ["-c", str(CONFIGS / "data/digits.yaml")]
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu"]
NO_TIME = {"time/unlearn_s", "time/speedup_vs_retrain"}


class CliRetainSteps(UnlearningMethod):
    """A test-only unlearning method (the CLI finds it as ``test_cli_test.CliRetainSteps``): SGD on D_r."""

    train_splits = ("retain",)

    def build_train_dataloader(self, datamodule: Any) -> torch.utils.data.DataLoader:
        return datamodule.loader("retain", shuffle=True, train=True)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = unpack_batch(batch)
        return F.cross_entropy(self.model(x), y)


def _metrics(root: Path) -> dict[str, Any]:
    found = sorted(root.rglob("metrics.json"))
    assert len(found) == 1, found
    return json.loads(found[0].read_text())


def test_cli_test_rebuilds_checkpoint_and_evaluates_against_gold(trained_digits, tmp_path):
    main(
        ["test", *DIGITS, "--ckpt_path", str(trained_digits.original_ckpt),
         "--gold_ckpt", str(trained_digits.gold_ckpt), "--original_ckpt", str(trained_digits.original_ckpt),
         f"--trainer.default_root_dir={tmp_path}", *QUIET]
    )
    res = _metrics(tmp_path)
    assert set(METRIC_KEYS) - NO_TIME <= set(res)  # an original checkpoint has no unlearning time
    assert not NO_TIME & set(res)
    gold_meta = read_checkpoint(trained_digits.gold_ckpt)["lightning_unlearn"]
    assert res["time/retrain_s"] == pytest.approx(gold_meta["train_time_s"])
    assert res["original/acc/forget"] == res["acc/forget"] > 0.9 > 0.1 > res["gold/acc/forget"]
    assert res["gold/forget_acc_gap"] > 0.8 and res["mia/efficacy"] < res["gold/mia/efficacy"]
    assert all(math.isfinite(res[k]) for k in METRIC_KEYS if k in res)
    assert sorted(tmp_path.rglob("metrics.md"))


def test_cli_unlearn_evaluates_then_test_reads_unlearning_time(trained_digits, tmp_path):
    out = tmp_path / "run" / "unlearned.ckpt"
    main(
        ["unlearn", *DIGITS, "-c", str(CONFIGS / "evaluation/plots.yaml"),
         "--model", "test_cli_test.CliRetainSteps", "--model.lr", "0.01",
         "--original_ckpt", str(trained_digits.original_ckpt), "--gold_ckpt", str(trained_digits.gold_ckpt),
         "--output", str(out), "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.logger=false",
         f"--trainer.default_root_dir={tmp_path}", *QUIET]
    )
    res = json.loads((out.parent / "metrics.json").read_text())  # next to unlearned.ckpt
    assert set(METRIC_KEYS) <= set(res) and (out.parent / "metrics.md").is_file()
    # the configured evaluator (configs/evaluation/plots.yaml) got the run's original and gold models
    assert (out.parent / "decision_space.png").is_file() and (out.parent / "per_class_accuracy.png").is_file()
    assert res["original/acc/forget"] > 0.9
    summary = json.loads((out.parent / "unlearn.json").read_text())
    assert summary["metrics"] == res
    assert res["time/unlearn_s"] == pytest.approx(summary["unlearn_time_s"])
    assert res["time/speedup_vs_retrain"] == pytest.approx(summary["gold_train_time_s"] / summary["unlearn_time_s"])

    test_root = tmp_path / "test"
    main(
        ["test", *DIGITS, "--ckpt_path", str(out), "--gold_ckpt", str(trained_digits.gold_ckpt),
         f"--trainer.default_root_dir={test_root}", *QUIET]
    )
    tested = _metrics(test_root)
    assert tested["time/unlearn_s"] == pytest.approx(read_checkpoint(out)["lightning_unlearn"]["unlearn_time_s"])
    for key in METRIC_KEYS:
        assert tested[key] == pytest.approx(res[key], abs=1e-6), key  # the same model, the same evaluation


def test_cli_unlearn_evaluate_false_writes_no_metrics(trained_digits, tmp_path):
    main(
        ["unlearn", *DIGITS, "--model", "test_cli_test.CliRetainSteps", "--original_ckpt",
         str(trained_digits.original_ckpt), "--evaluate", "false", "--output", str(tmp_path / "u.ckpt"),
         "--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.logger=false",
         f"--trainer.default_root_dir={tmp_path}", *QUIET]
    )
    assert (tmp_path / "u.ckpt").is_file() and not list(tmp_path.rglob("metrics.json"))
    assert json.loads((tmp_path / "unlearn.json").read_text())["metrics"] is None


def test_cli_test_checks_splits(trained_digits, tmp_path):
    with pytest.raises(SplitMismatchError, match="forget"):
        main(
            ["test", *DIGITS, "--data.forget.classes=[5]", "--ckpt_path", str(trained_digits.original_ckpt),
             f"--trainer.default_root_dir={tmp_path}", *QUIET]
        )


def test_cli_test_with_a_model_is_lightnings(tmp_path):
    """With a model config, `test --ckpt_path` is Lightning's: weights restored into that model, no evaluator."""
    model = ["-c", str(CONFIGS / "model/allcnn.yaml"), "--model.init_args.backbone.init_args.width=0.125"]
    fit_root = tmp_path / "fit"
    main(["fit", *DIGITS, *model, "--trainer.max_epochs=1", "--trainer.limit_train_batches=1",
          "--trainer.limit_val_batches=0", f"--trainer.default_root_dir={fit_root}", *QUIET])
    ckpt = next(fit_root.rglob("*.ckpt"))
    test_root = tmp_path / "test"
    # Lightning's default logger is TensorBoard when tensorboard is installed, CSV otherwise: name it
    main(["test", *DIGITS, *model, "--ckpt_path", str(ckpt), f"--trainer.default_root_dir={test_root}",
          "--trainer.logger=lightning.pytorch.loggers.CSVLogger", f"--trainer.logger.init_args.save_dir={test_root}",
          *QUIET])
    assert not list(test_root.rglob("metrics.json"))
    assert "test/acc" in next(test_root.rglob("metrics.csv")).read_text()
