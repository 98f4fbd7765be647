"""RUM: the memorisation split (deterministic, every forget sample in exactly one bin), the bins' methods run in order
on the right splits, chaining on one model, the equivalences with the methods run alone, the proxies, bad configs,
and a digits run."""

from __future__ import annotations

import copy

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import FORGET_CLASS, tiny, quiet_trainer

from lightning_unlearn.checkpoints import load_backbone
from lightning_unlearn.data import DigitsDataModule, ForgetSpec
from lightning_unlearn.methods import RUM, Finetune, NegativeGradient
from lightning_unlearn.methods import rum_proxies as px


def random_dm(**kwargs) -> DigitsDataModule:
    return DigitsDataModule(image_size=8, batch_size=32, forget=ForgetSpec(fraction=0.1), augment=False, **kwargs)


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Recorder(Finetune):
    """Finetune that records, for each fit, its splits and the weights it started and ended with."""

    calls: list[dict] = []  # not `log`: a LightningModule method

    def on_fit_start(self) -> None:
        super().on_fit_start()
        s = self.datamodule.splits
        Recorder.calls.append({"forget": s.forget.copy(), "retain": s.retain.copy(), "start": state(self.model)})

    def on_fit_end(self) -> None:
        super().on_fit_end()
        Recorder.calls[-1]["end"] = state(self.model)


FT = {"class_path": "Finetune", "init_args": {"lr": 0.05, "momentum": 0.0}, "max_epochs": 1}
REC = {"class_path": Recorder, "init_args": {"lr": 0.05}, "max_epochs": 1}


# -- the split ---------------------------------------------------------------------------------------------------
def test_memorisation_bins_rank_by_score_then_index_and_cover_once():
    scores = np.array([0.5, 0.1, 0.5, 0.9, 0.0, 0.3, 0.5])
    indices = np.array([70, 10, 20, 40, 50, 60, 30])
    bins = px.memorisation_bins(scores, indices, [1 / 3, 2 / 3])
    # order: 50(0.0) 10(0.1) 60(0.3) 20(0.5) 30(0.5) 70(0.5) 40(0.9); cuts at round(7/3)=2, round(14/3)=5
    assert dict(zip(indices.tolist(), bins.tolist())) == {50: 0, 10: 0, 60: 1, 20: 1, 30: 1, 70: 2, 40: 2}
    perm = np.random.default_rng(0).permutation(7)
    shuffled = px.memorisation_bins(scores[perm], indices[perm], [1 / 3, 2 / 3])
    assert dict(zip(indices[perm].tolist(), shuffled.tolist())) == dict(zip(indices.tolist(), bins.tolist()))
    many = px.memorisation_bins(np.random.default_rng(1).random(100), np.arange(100), [0.2, 0.5, 0.9])
    assert np.bincount(many).tolist() == [20, 30, 40, 10]
    assert px.memorisation_bins(np.ones(4), np.arange(4), []).tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="NaN"):
        px.memorisation_bins(np.array([np.nan]), np.array([0]), [])


@pytest.mark.parametrize("proxy", px.PROXIES)
def test_the_split_is_deterministic_and_covers_the_forget_set(proxy):
    dm = random_dm()
    rum = RUM(tiny(), proxy=proxy, proxy_epochs=1, methods=[None, None, None])
    first = rum.memorisation_scores(dm)
    assert np.array_equal(first[0], np.sort(dm.splits.forget)) and np.isfinite(first[1]).all()
    rng = torch.random.get_rng_state()
    second = rum.memorisation_scores(dm)
    assert torch.equal(rng, torch.random.get_rng_state())  # the global RNG is left as it was
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    before = state(rum.model)
    quiet_trainer(max_epochs=1).fit(rum, datamodule=dm)  # null bins: the split only, the model untouched
    assert same(before, state(rum.model))
    split = rum.rum_report["split"]
    assert split["forget_indices"] == np.sort(dm.splits.forget).tolist() and split["scores"] == first[1].tolist()
    assert set(split["bin"]) == {0, 1, 2}
    assert [b["size"] for b in rum.rum_report["bins"]] == np.bincount(split["bin"]).tolist()
    assert sum(b["size"] for b in rum.rum_report["bins"]) == len(dm.splits.forget)


def test_proxies_measure_what_they_say():
    dm, model = random_dm(), tiny()
    x, y, _ = next(iter(dm.loader("forget")))
    model.eval()
    torch.testing.assert_close(px.confidence_score(model, x, y), F.cross_entropy(model(x), y, reduction="none"))
    assert torch.allclose(px.symmetric_kl_score(model, copy.deepcopy(model), x), torch.zeros(len(y)), atol=1e-6)
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    before = state(model)
    curv = px.curvature_score(model, x, y, h=0.01)
    assert curv.shape == (len(y),) and (curv >= 0).all() and curv.max() > 0
    assert model.training and flags == [p.requires_grad for p in model.parameters()] and same(before, state(model))
    with pytest.raises(ValueError, match="holdout_fraction"):
        RUM(tiny(), proxy="holdout_retrain").memorisation_scores(random_dm(holdout_fraction=0.0))


def test_split_against_gold_labels():
    correct, bins = [True, True, False, True, False, False], [0, 0, 1, 1, 2, 2]
    out = px.accuracy_per_bin(correct, bins, ["low", "medium", "high"], scores=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert [b["gold_accuracy"] for b in out["per_bin"]] == [1.0, 0.5, 0.0] and out["gold_forget_accuracy"] == 0.5
    assert out["agreement_top_bin_hard"] == pytest.approx(5 / 6)  # sample 2: hard, but in the medium bin
    assert out["score_auc_gold_hard"] == pytest.approx(8 / 9)  # hard .3 .5 .6 vs easy .1 .2 .4: 8 of 9 pairs ordered
    assert px.accuracy_per_bin([True, True], [0, 1], ["low", "high"], scores=[0.1, 0.2])["score_auc_gold_hard"] is None


# -- the bins ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["low_to_high", "high_to_low"])
@pytest.mark.parametrize("retain_pending", [True, False])
def test_bins_run_in_order_on_their_splits_and_chain(order, retain_pending):
    dm = random_dm()
    Recorder.calls = []
    rum = RUM(tiny(), methods=[REC, None, REC], order=order, retain_pending=retain_pending)
    start = state(rum.model)
    quiet_trainer(max_epochs=1, limit_train_batches=2).fit(rum, datamodule=dm)
    split = rum.rum_report["split"]
    idx, bins = np.array(split["forget_indices"]), np.array(split["bin"])
    full = [0, 1, 2] if order == "low_to_high" else [2, 1, 0]  # bin 1 (medium) is left as it is, in its turn
    assert len(Recorder.calls) == 2
    for b, rec in zip([k for k in full if k != 1], Recorder.calls):
        assert np.array_equal(rec["forget"], idx[bins == b])
        later = full[full.index(b) + 1 :] if retain_pending else []
        assert np.array_equal(rec["retain"], np.sort(np.concatenate([dm.splits.retain, idx[np.isin(bins, later)]])))
    assert same(Recorder.calls[0]["start"], start)  # the first bin starts from the original
    assert same(Recorder.calls[1]["start"], Recorder.calls[0]["end"])  # each bin from the previous bin's result
    assert same(state(rum.model), Recorder.calls[1]["end"])
    names = [b["name"] for b in rum.rum_report["bins"]]
    assert names == (["low", "medium", "high"] if order == "low_to_high" else ["high", "medium", "low"])
    assert [b["method"] for b in rum.rum_report["bins"]] == ["Recorder", None, "Recorder"]


def test_one_bin_is_the_method_alone():
    """RUM with a single bin runs its method exactly as a Trainer would alone (same RNG stream, splits, settings)."""
    dm, base = random_dm(), tiny()
    ng = {"retain_weight": 0.9, "lr": 0.01}
    pl.seed_everything(0, verbose=False)
    alone = NegativeGradient(copy.deepcopy(base), **ng)
    quiet_trainer(max_epochs=2, limit_train_batches=3).fit(alone, datamodule=dm)
    pl.seed_everything(0, verbose=False)
    rum = RUM(copy.deepcopy(base), quantiles=[], methods=[{"class_path": "NegativeGradient", "init_args": ng,
                                                            "max_epochs": 2}])
    quiet_trainer(max_epochs=1, limit_train_batches=3).fit(rum, datamodule=dm)
    assert same(state(alone.model), state(rum.model)) and not same(state(base), state(rum.model))


def test_finetune_on_every_bin_is_finetune_run_once_per_bin():
    """Finetune never reads D_f, so with D_r-only retain sets the split cannot matter: RUM with plain-SGD Finetune on
    three bins equals three one-epoch Finetune runs one after the other on the same model (same global seed)."""
    dm, base = random_dm(), tiny()
    pl.seed_everything(0, verbose=False)
    chained = copy.deepcopy(base)
    for _ in range(3):
        quiet_trainer(max_epochs=1, limit_train_batches=3).fit(Finetune(chained, lr=0.05, momentum=0.0), datamodule=dm)
    pl.seed_everything(0, verbose=False)
    rum = RUM(copy.deepcopy(base), methods=[FT, FT, FT], retain_pending=False)
    quiet_trainer(max_epochs=1, limit_train_batches=3).fit(rum, datamodule=dm)
    assert same(state(chained), state(rum.model))


def test_seed_is_passed_to_bin_methods_that_take_one():
    dm = random_dm()
    rum = RUM(tiny(), seed=7, methods=[None, None, {"class_path": "RandomLabels", "max_epochs": 1}])
    quiet_trainer(max_epochs=1, limit_train_batches=1).fit(rum, datamodule=dm)
    assert rum.rum_report["bins"][2]["hparams"]["seed"] == 7


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"methods": [FT, FT]}, "2 quantiles make 3 bins, but 2 methods"),
        ({"quantiles": [0.6, 0.3], "methods": [FT] * 3}, "increase strictly"),
        ({"methods": [FT, FT, {"class_path": "NoSuchMethod"}]}, "not an UnlearningMethod"),
        ({"methods": [FT, FT, {"class_path": "no_such_module.X"}]}, "cannot import"),
        ({"methods": [FT, FT, {"class_path": "RUM"}]}, "nor may a bin run RUM"),
        ({"methods": [FT, FT, {"class_path": "Finetune", "init_args": {"alpha": 1}}]}, r"methods\[2\] \(Finetune\)"),
        ({"methods": [FT, FT, {"class_path": "Finetune", "epochs": 3}]}, "got keys"),
        ({"methods": [FT, FT, {"class_path": "Finetune", "trainer": {"max_epochs": 3}}]}, "Trainer arguments"),
        ({"proxy": "loss"}, "proxy must be one of"),
    ],
)
def test_bad_configurations_are_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=message) as err:
        RUM(**kwargs)
    assert "\n" not in str(err.value)


# -- digits ------------------------------------------------------------------------------------------------------------
def test_digits_forget_accuracy_drops(trained_digits):
    """Sanity, not a benchmark: class 3 of the session fixture, NegGrad+ (alpha 0.9, lr 0.01, one epoch) on each third.
    Measured with seeds 0, 1, 2: D_f accuracy 0.000, 0.000, 0.008 (original 0.985), test-retain 0.916, 0.882, 0.941
    (original 0.991)."""
    dm = trained_digits.datamodule()
    original, _ = load_backbone(trained_digits.original_ckpt, dm)
    ng = {"class_path": "NegativeGradient", "init_args": {"retain_weight": 0.9, "lr": 0.01}, "max_epochs": 1}
    pl.seed_everything(0, verbose=False)
    rum = RUM(copy.deepcopy(original), methods=[ng, ng, ng])
    quiet_trainer(max_epochs=1).fit(rum, datamodule=dm)
    out = rum.unlearned_backbone()
    out.eval()
    with torch.no_grad():
        acc = {s: float(torch.cat([(out(b[0]).argmax(1) == b[1]).float() for b in dm.loader(s)]).mean())
               for s in ("forget", "test_retain")}
    assert acc["forget"] < 0.3 and acc["test_retain"] > 0.8, acc
    assert all(b["method"] == "NegativeGradient" and b["unlearn_time_s"] > 0 for b in rum.rum_report["bins"])
    assert FORGET_CLASS in dm.splits.forget_classes
