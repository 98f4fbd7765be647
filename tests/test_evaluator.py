"""UnlearningEvaluator: keys and files, values against a gold model, modes restored, periodic evaluation, DDP, plots."""

from __future__ import annotations

import json
import math
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import quiet_trainer
from lightning_unlearn.checkpoints import load_backbone
from lightning_unlearn.data import unpack_batch
from lightning_unlearn.data.forget import SPLIT_NAMES
from lightning_unlearn.evaluation import METRIC_KEYS, UnlearningEvaluator
from lightning_unlearn.evaluation.plots import PanelData, plot_decision_space, plot_per_class_accuracy
from lightning_unlearn.methods import Classifier, UnlearningMethod


class RetainSteps(UnlearningMethod):
    """A test-only method: a few SGD steps of cross-entropy on D_r."""

    train_splits = ("retain",)

    def build_train_dataloader(self, datamodule: Any) -> torch.utils.data.DataLoader:
        return datamodule.loader("retain", shuffle=True, train=True)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = unpack_batch(batch)
        return F.cross_entropy(self.model(x), y)


def test_fit_writes_every_key_reports_and_plots(trained_digits, tmp_path):
    dm = trained_digits.datamodule()
    original, _ = load_backbone(trained_digits.original_ckpt, dm)
    evaluator = UnlearningEvaluator(
        gold=str(trained_digits.gold_ckpt), original=str(trained_digits.original_ckpt), plots=True,
        output_dir=str(tmp_path),
    )
    method = RetainSteps(backbone=original, lr=0.01)
    quiet_trainer(max_epochs=1, limit_train_batches=2, callbacks=[evaluator]).fit(method, datamodule=dm)

    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert set(METRIC_KEYS) <= set(saved)
    res = evaluator.results
    assert set(saved) == set(res)
    for key in METRIC_KEYS:
        assert math.isfinite(res[key]), key  # class-wise forgetting: test_forget is not empty
        assert saved[key] == pytest.approx(res[key])
    assert res["n/forget"] == len(dm.splits.forget) and res["n/test_forget"] == len(dm.splits.test_forget)
    assert res["time/unlearn_s"] == pytest.approx(method.unlearn_time_s)  # the method's timer, evaluation excluded
    assert res["time/speedup_vs_retrain"] == pytest.approx(res["time/retrain_s"] / res["time/unlearn_s"])
    assert res["original/acc/forget"] > 0.9 and res["gold/acc/forget"] < 0.1  # the gold model never saw class 3
    assert res["gold/forget_acc_gap"] == pytest.approx(abs(res["acc/forget"] - res["gold/acc/forget"]))
    assert 0.0 <= res["zrf"] <= 1.0 and 0.0 <= res["gold/js_divergence"] <= math.log(2)
    md = (tmp_path / "metrics.md").read_text()
    assert "| forget |" in md and "mia/efficacy" in md and "gold/activation_distance" in md
    for png in ("decision_space.png", "per_class_accuracy.png"):
        assert (tmp_path / png).stat().st_size > 1000
    assert tmp_path / "metrics.json" in evaluator.written


def test_model_against_itself_and_modes_restored(trained_digits):
    dm = trained_digits.datamodule()
    gold, _ = load_backbone(trained_digits.gold_ckpt, dm)
    gold.train()
    list(gold.modules())[-1].eval()  # a mixed train/eval state must come back exactly
    modes = {name: m.training for name, m in gold.named_modules()}
    res = UnlearningEvaluator(gold=gold, mia=False).evaluate(gold, dm)
    assert {name: m.training for name, m in gold.named_modules()} == modes and gold.training
    assert not any(p.grad is not None for p in gold.parameters())
    assert res["gold/activation_distance"] == 0.0 and res["gold/js_divergence"] == pytest.approx(0.0, abs=1e-12)
    assert res["gold/agreement_forget"] == 1.0 and res["gold/agreement_test"] == 1.0
    assert res["gold/forget_acc_gap"] == 0.0 and res["acc/forget"] == res["gold/acc/forget"]
    assert "mia/efficacy" not in res and "time/unlearn_s" not in res  # not asked / not known


def test_classwise_mia_efficacy_original_below_gold(trained_digits):
    """After class-wise forgetting the gold model is unconfident on the forgotten class, so MIA-efficacy calls most of
    D_f non-member, while the original (trained on D_f) keeps it a member. (Trivial by construction -- see test_mia
    for random forgetting -- but it is the value an unlearned model is compared with.)"""
    dm = trained_digits.datamodule()
    original, _ = load_backbone(trained_digits.original_ckpt, dm)
    res = UnlearningEvaluator(gold=str(trained_digits.gold_ckpt), zrf=False).evaluate(original, dm)
    assert res["mia/efficacy"] < 0.2 < 0.8 < res["gold/mia/efficacy"]
    # The entropy attack is not asserted here: trained on D_r vs test entropies (both near 0 for a 99% model) its
    # threshold is nearly arbitrary, and which side D_f lands on varied between runs. test_mia covers its direction.


def test_periodic_evaluation_and_no_gold(trained_digits, tmp_path):
    dm = trained_digits.datamodule()
    original, _ = load_backbone(trained_digits.original_ckpt, dm)
    evaluator = UnlearningEvaluator(every_n_epochs=1, mia=False, zrf=False, splits=("forget", "test"))
    trainer = quiet_trainer(max_epochs=3, limit_train_batches=1, callbacks=[evaluator], default_root_dir=tmp_path)
    method = RetainSteps(backbone=original, lr=0.01)
    trainer.fit(method, datamodule=dm)
    assert [epochs for epochs, _ in evaluator.history] == [1, 2, 3]  # after epochs 1, 2, then the end of fit
    assert set(evaluator.results) == {"n/forget", "n/test", "acc/forget", "acc/test", "time/unlearn_s"}
    assert evaluator.results["time/unlearn_s"] == pytest.approx(method.unlearn_time_s - evaluator.fit_overhead_s)
    assert (tmp_path / "metrics.json").is_file()  # logger=False: trainer.log_dir is default_root_dir


def test_ddp_results_are_global(trained_digits, tmp_path, monkeypatch):
    """Two CPU processes (gloo): each evaluates half of every split, the gathered result equals one process's."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # read by the spawned workers: two processes x one thread = two cores
    dm = trained_digits.datamodule()
    original, _ = load_backbone(trained_digits.original_ckpt, dm)
    gold, _ = load_backbone(trained_digits.gold_ckpt, dm)
    extra = {"probe": True, "cka": True, "relearn": True, "relearn_seeds": 1}  # features gathered, the attack on rank 0
    single = UnlearningEvaluator(gold=gold, original=original, **extra).evaluate(original, dm)

    evaluator = UnlearningEvaluator(gold=gold, original=original, output_dir=str(tmp_path), **extra)
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, callbacks=[evaluator],
    )
    trainer.test(Classifier(original), datamodule=dm, verbose=False)
    ddp = json.loads((tmp_path / "metrics.json").read_text())
    assert set(ddp) == set(single)
    for key, value in single.items():
        if key.startswith(("n/", "acc/", "gold/acc/", "gold/agreement")):
            assert ddp[key] == value, key  # counts and accuracies exactly: the whole split, not one rank's half
        elif key.startswith(("probe/", "gold/probe/")):  # a probe refitted on features computed in other batches
            assert ddp[key] == pytest.approx(value, abs=0.05), key
        else:
            assert ddp[key] == pytest.approx(value, abs=1e-3), key


def test_evaluator_requires_unlearning_datamodule():
    with pytest.raises(TypeError, match="UnlearningDataModule"):
        UnlearningEvaluator().evaluate(torch.nn.Linear(2, 2), datamodule=object())
    with pytest.raises(ValueError, match="Unknown split"):
        UnlearningEvaluator(splits=("train",))


def test_plot_functions_write_pngs(tmp_path):
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(60, 8))
    is_forget = np.arange(60) < 20
    panels = [
        PanelData("original", feats, rng.integers(0, 3, 60)),
        PanelData("unlearned", 2 * feats, rng.integers(0, 3, 60)),
    ]
    for method in ("pca", "tsne"):
        out = plot_decision_space(panels, is_forget, tmp_path / f"ds_{method}.png", num_classes=3, method=method)
        assert out.stat().st_size > 1000
    acc = {"original": np.array([1.0, 0.9, np.nan]), "unlearned": np.array([0.0, 0.8, 0.7])}
    out = plot_per_class_accuracy(acc, tmp_path / "pc.png", class_names=["a", "b", "c"], forget_classes=[0])
    assert out.stat().st_size > 1000
    with pytest.raises(ValueError):
        plot_decision_space(panels, is_forget[:10], tmp_path / "bad.png", num_classes=3)


class PlainClassifier(pl.LightningModule):
    """A LightningModule as a user writes one: the network in ``self.model``, its own step and optimizer."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.model = net

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch[0], batch[1]
        return F.cross_entropy(self.model(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_end_of_fit_results_reach_callback_metrics(trained_digits, tmp_path):
    """Issue 25: without every_n_epochs the results reached the loggers but not ``trainer.callback_metrics``."""
    dm = trained_digits.datamodule()
    original, _ = load_backbone(trained_digits.original_ckpt, dm)
    evaluator = UnlearningEvaluator(gold=str(trained_digits.gold_ckpt), mia=False, zrf=False)
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=2, callbacks=[evaluator], default_root_dir=tmp_path)
    trainer.fit(PlainClassifier(original), datamodule=dm)
    metrics = trainer.callback_metrics
    loggable = {k: v for k, v in evaluator.results.items() if not k.startswith("n/")}
    assert loggable and set(loggable) <= set(metrics)
    for key, value in loggable.items():
        assert float(metrics[key]) == pytest.approx(value, rel=1e-6), key  # float32, as log_dict stores them


def test_a_component_of_your_own_by_name(trained_digits):
    from lightning_unlearn.evaluation import COMPONENTS, Component, register_component

    @register_component("forget_confidence")
    class ForgetConfidence(Component):
        """Mean max-probability on D_f."""

        def needs(self, nets, dm):
            return {"model": {"forget": False}}

        def compute(self, ctx):
            return {"forget_confidence": float(ctx.view("model", "forget").probs.max(1).values.mean())}

    try:
        dm = trained_digits.datamodule()
        gold, _ = load_backbone(trained_digits.gold_ckpt, dm)
        res = UnlearningEvaluator(mia=False, zrf=False, extra_components=["forget_confidence"]).evaluate(gold, dm)
        assert list(res)[-1] == "forget_confidence" and 0.1 <= res["forget_confidence"] <= 1.0
        with pytest.raises(ValueError, match="already registered"):
            register_component("forget_confidence")(type("Other", (Component,), {}))
    finally:
        COMPONENTS.pop("forget_confidence")
    with pytest.raises(ValueError, match="Unknown evaluation component 'forget_confidence'.*register_component"):
        UnlearningEvaluator(extra_components=["forget_confidence"])


def test_settings_key_is_unchanged_until_an_optional_component_is_on():
    """A benchmark row's cache key holds the evaluator's settings: the keys c7d07c8 wrote stay valid."""
    from lightning_unlearn.evaluation import evaluator_settings

    before = {"every_n_epochs": 0, "splits": tuple(SPLIT_NAMES), "mia": True, "zrf": True, "plots": False, "seed": 0,
              "nonmember_split": "test", "projection": "pca", "max_plot_points": 2000,
              "classwise_nonmembers": "retained", "entropy_max_members": 10000, "activation_p": 2, "zrf_inits": 5,
              "svc_max_samples": 8192}
    assert evaluator_settings({}) == before
    assert evaluator_settings({"probe": False, "probe_forget_share": 0.5, "relearn_lr": 1.0}) == before
    probe = evaluator_settings({"probe": True})
    assert probe["probe"] is True and probe["probe_forget_share"] == 0.2 and "relearn_lr" not in probe
    assert evaluator_settings({"relearn": True, "relearn_lr": 0.1})["relearn_lr"] == 0.1
