"""Evaluations that look past the outputs (issue 29): linear CKA's known answers, the linear probe and the relearning
attack as functions, and on constructed models: a model whose head alone refuses the forgotten class is caught by the
probe and by the relearning attack, an independently retrained model is not.

The constructed models live in the quickstart's regime (digits at 4x4, half the training split held out, quarter-width
All-CNN, 30 epochs, class 3 forgotten), where the bounds below were measured: over 4 gold models x 3 other retrained
models x evaluator seeds 0-2, the probe's excess over the gold model (mean over the 3 seeds) was 0.25-0.32 for the
head-only model and -0.07..0.07 for a retrained one; the relearn time relative to the gold model's 0.08-0.10 and
0.84-1.19 (the probe's bound 0.15 and the relearning bound 0.5 sit between them with room on both sides).
"""

from __future__ import annotations

import copy
import hashlib
import math

import numpy as np
import pytest
import torch
from conftest import digits_dm, small_allcnn, train_classifier

from lightning_unlearn.checkpoints import load_backbone
from lightning_unlearn.evaluation import UnlearningEvaluator, linear_cka, linear_probe, relearn_steps
from lightning_unlearn.evaluation.probe import probe_split
from lightning_unlearn.evaluation.relearn import relearn_split

QUICKSTART = dict(image_size=4, holdout_fraction=0.5, augment=False)


def _weights_hash(net: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(net.state_dict().items()):
        h.update(k.encode() + v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# -- CKA ---------------------------------------------------------------------------------------------------------------
def test_linear_cka_known_answers():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 12, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x @ q) == pytest.approx(1.0, abs=1e-12)  # orthogonal transform
    assert linear_cka(x, 3.7 * x) == pytest.approx(1.0, abs=1e-12)  # isotropic scaling
    wider = torch.cat([x @ q, torch.zeros(300, 4, dtype=torch.float64)], 1)  # another width
    assert linear_cka(x, wider) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x + 5.0) == pytest.approx(1.0, abs=1e-12)  # centred: a shift changes nothing
    assert linear_cka(x.numpy(), (x @ q).numpy()) == pytest.approx(1.0, abs=1e-12)
    scaled = x.clone()
    scaled[:, 0] *= 10  # a non-isotropic scaling is not invisible
    assert linear_cka(x, scaled) < 0.9
    # independent features: over 20 seeds (1000 samples, 8 and 6 dimensions) at most 0.010
    y = torch.randn(1000, 6, generator=torch.Generator().manual_seed(1))
    assert linear_cka(torch.randn(1000, 8, generator=torch.Generator().manual_seed(2)), y) < 0.05
    assert math.isnan(linear_cka(torch.ones(10, 3), x[:10]))  # constant: undefined
    assert math.isnan(linear_cka(x[:1], x[:1]))
    with pytest.raises(ValueError, match="same N"):
        linear_cka(x, x[:10])


# -- the probe and the relearning attack as functions ------------------------------------------------------------------
def test_probe_split_and_linear_probe():
    train, held = probe_split(50, 0.2, seed=0)
    assert len(train) == 10 and len(held) == 40 and not set(train) & set(held)
    assert np.array_equal(probe_split(50, 0.2, seed=0)[0], train)
    assert not np.array_equal(probe_split(50, 0.2, seed=1)[0], train)
    assert len(probe_split(3, 0.01, 0)[0]) == 1 and len(probe_split(3, 0.99, 0)[1]) == 1  # at least one on each side
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 5)) * 5
    y = rng.integers(0, 3, 300)
    x = centres[y] + rng.normal(size=(300, 5)) * 0.1
    assert linear_probe(x[:200], y[:200], [(x[200:], y[200:]), (x[:0], y[:0])])[0] == 1.0
    assert math.isnan(linear_probe(x[:200], y[:200], [(x[:0], y[:0])])[0])
    assert math.isnan(linear_probe(x[:10], np.zeros(10), [(x, y)])[0])  # one class: nothing to separate


def test_relearn_steps_leaves_the_model_and_the_rngs_alone():
    dm = digits_dm(image_size=8)
    net = small_allcnn(dm).eval()
    before, rng = _weights_hash(net), torch.random.get_rng_state()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 4, 1, 8, 8, generator=g), torch.randint(0, 10, (2, 4), generator=g)
    xe, ye = torch.rand(2, 16, 1, 8, 8, generator=g), torch.randint(0, 10, (2, 16), generator=g)
    steps, censored = relearn_steps(net, x, y, xe, ye, target_acc=[0.0, 1.01], lr=0.1, max_steps=3)
    assert steps.tolist() == [0, 3] and censored.tolist() == [False, True]  # reached at once / never (1.01 > 1)
    assert _weights_hash(net) == before and torch.equal(torch.random.get_rng_state(), rng)
    with torch.inference_mode():  # as in Lightning's test loop: the attack still trains its copy
        assert relearn_steps(net, x, y, xe, ye, target_acc=[0.0, 0.0], lr=0.1, max_steps=3)[0].tolist() == [0, 0]
    attack, held = relearn_split(30, 10, seed=0, draw=1)
    assert len(attack) == 10 and len(held) == 20 and not set(attack) & set(held)
    assert len(relearn_split(30, 10, 0, 1, max_eval=5)[1]) == 5 and len(relearn_split(5, 10, 0, 0)[0]) == 4


def test_relearn_steps_copies_only_for_draws_below_their_target(monkeypatch):
    """A draw at its target before any step is decided on the network itself (no copy), with the numbers the copy
    gives: the same steps as when every draw is run on the copy, the network's train/eval modes left as they were."""
    import lightning_unlearn.evaluation.relearn as R

    dm = digits_dm(image_size=8)
    net = small_allcnn(dm).train()
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(3, 4, 1, 8, 8, generator=g), torch.randint(0, 10, (3, 4), generator=g)
    xe, ye = torch.rand(3, 16, 1, 8, 8, generator=g), torch.randint(0, 10, (3, 16), generator=g)
    before = _weights_hash(net)
    for targets in ([0.0, 0.0, 0.0], [0.0, 0.5, 1.01], [0.3, 0.0, 0.6]):
        fast = relearn_steps(net, x, y, xe, ye, target_acc=targets, lr=0.5, max_steps=4)
        with monkeypatch.context() as m:
            m.setattr(R, "_initial_accuracies", lambda *a: None)  # every draw on the copy, as before
            slow = relearn_steps(net, x, y, xe, ye, target_acc=targets, lr=0.5, max_steps=4)
        assert fast[0].tolist() == slow[0].tolist() and fast[1].tolist() == slow[1].tolist()
    assert net.training and all(m.training for m in net.modules()) and _weights_hash(net) == before
    monkeypatch.setattr(R.copy, "deepcopy", lambda *a: pytest.fail("copied a network already at its targets"))
    assert relearn_steps(net, x, y, xe, ye, target_acc=[0.0, 0.0, 0.0], lr=0.5, max_steps=4)[0].tolist() == [0, 0, 0]


def test_relearn_steps_takes_the_accuracies_before_the_attack_from_the_caller(monkeypatch):
    """``initial`` (what the evaluator's outputs give) replaces the forwards before the attack and at its step 0: the
    same steps as when they are computed, and one forward fewer per draw below its target."""
    import lightning_unlearn.evaluation.relearn as R

    dm = digits_dm(image_size=8)
    net = small_allcnn(dm).eval()
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(3, 4, 1, 8, 8, generator=g), torch.randint(0, 10, (3, 4), generator=g)
    xe, ye = torch.rand(3, 16, 1, 8, 8, generator=g), torch.randint(0, 10, (3, 16), generator=g)
    with torch.no_grad():
        initial = [(net(xe[s]).argmax(dim=1) == ye[s]).double().mean().item() for s in range(3)]
    calls = {"n": 0}
    forward = type(net).forward

    def counting(self, *a, **k):
        calls["n"] += 1
        return forward(self, *a, **k)

    monkeypatch.setattr(type(net), "forward", counting)
    for targets in ([0.0, 0.5, 1.01], [0.3, 0.9, 0.6]):
        calls["n"] = 0
        computed = relearn_steps(net, x, y, xe, ye, target_acc=targets, lr=0.5, max_steps=4)
        n_computed = calls["n"]
        calls["n"] = 0
        given = relearn_steps(net, x, y, xe, ye, target_acc=targets, lr=0.5, max_steps=4, initial=initial)
        assert given[0].tolist() == computed[0].tolist() and given[1].tolist() == computed[1].tolist()
        assert calls["n"] == n_computed - 3  # no forward before the attack
        calls["n"] = 0
        with monkeypatch.context() as m:
            m.setattr(R, "_initial_accuracies", lambda *a: None)  # nothing known: every draw evaluated on the copy
            unknown = relearn_steps(net, x, y, xe, ye, target_acc=targets, lr=0.5, max_steps=4)
        assert unknown[0].tolist() == given[0].tolist() and unknown[1].tolist() == given[1].tolist()
        assert calls["n"] == n_computed  # step 0 of every draw on the copy, instead of on the network itself
    with pytest.raises(ValueError, match="initial has 2 accuracies for 3 draws"):
        relearn_steps(net, x, y, xe, ye, target_acc=[0.0] * 3, lr=0.5, max_steps=4, initial=initial[:2])


def test_options_are_checked():
    bad = {"probe_forget_share": 1.0, "probe_max_retain": 0, "relearn_samples": 0, "relearn_seeds": 0,
           "relearn_max_steps": 0, "relearn_lr": 0.0, "relearn_target": 1.5}
    for name, value in bad.items():
        with pytest.raises(ValueError, match=name):
            UnlearningEvaluator(**{name: value})
    with pytest.raises(ValueError, match="Unknown evaluation component 'nope'"):
        UnlearningEvaluator(extra_components=["nope"])


def test_feature_metrics_refuse_a_network_without_features():
    dm = digits_dm(image_size=8)
    flat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with pytest.raises(ValueError, match=r"probe reads the penultimate features.*no `features\(x\)`"):
        UnlearningEvaluator(mia=False, zrf=False, probe=True).evaluate(flat, dm)
    assert "probe/forget_acc" not in UnlearningEvaluator(mia=False, zrf=False).evaluate(flat, dm)


# -- constructed models ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def quickstart_models(tmp_path_factory):
    """The quickstart's regime: an original, its gold model (seed 0) and another retrained model (seed 1)."""
    root = tmp_path_factory.mktemp("beyond_outputs")
    original = train_classifier(digits_dm(**QUICKSTART), epochs=30, path=root / "original.ckpt")
    gold = train_classifier(digits_dm(train_on="retain", **QUICKSTART), epochs=30, path=root / "gold.ckpt")
    other = train_classifier(digits_dm(train_on="retain", **QUICKSTART), epochs=30, path=root / "other.ckpt", seed=1)
    return original, gold, other


def _head_only(original: torch.nn.Module, forgotten: int) -> torch.nn.Module:
    """The original's features, a head that refuses ``forgotten`` (its logit lowered by 10)."""
    net = copy.deepcopy(original)
    with torch.no_grad():
        net.head.bias[forgotten] -= 10.0
    return net


def test_head_only_forgetting_is_caught_a_retrained_model_is_not(quickstart_models):
    original_ckpt, gold_ckpt, other_ckpt = quickstart_models
    dm = digits_dm(**QUICKSTART)
    original, _ = load_backbone(original_ckpt, dm)
    head_only = _head_only(original, forgotten=3)
    retrained, _ = load_backbone(other_ckpt, dm, trained_on="retain")
    found: dict[str, list[dict[str, float]]] = {"head_only": [], "retrained": []}
    for seed in range(3):
        for name, model in (("head_only", head_only), ("retrained", retrained)):
            before = _weights_hash(model)
            res = UnlearningEvaluator(gold=str(gold_ckpt), original=str(original_ckpt), mia=False, zrf=False,
                                      probe=True, relearn=True, cka=True, seed=seed).evaluate(model, dm)
            assert _weights_hash(model) == before  # evaluation never changes what it evaluates
            found[name].append(res)
    head, other = found["head_only"], found["retrained"]
    assert all(r["acc/forget"] == 0.0 for r in head)  # by its outputs, the head-only model forgot class 3
    excess = {k: np.mean([r["probe/forget_acc"] - r["gold/probe/forget_acc"] for r in v]) for k, v in found.items()}
    assert excess["head_only"] > 0.15 > abs(excess["retrained"])
    relearn = {k: np.mean([r["relearn/steps"] / r["gold/relearn/steps"] for r in v]) for k, v in found.items()}
    assert relearn["head_only"] < 0.5 < relearn["retrained"]
    assert all(r["relearn/censored"] == 0 and r["gold/relearn/censored"] == 0 for r in head + other)
    assert all(0.0 < r["gold/cka_forget"] <= 1.0 and 0.0 < r["gold/cka_test"] <= 1.0 for r in head + other)


def test_the_evaluator_reads_the_accuracies_before_the_attack_from_its_outputs(quickstart_models, monkeypatch):
    """The relearning attack's accuracies before the first step come from the outputs the evaluator computed anyway
    (no forward again, issue 29's time budget): the same steps as when every draw is evaluated on the copy."""
    import lightning_unlearn.evaluation.relearn as R

    original_ckpt, gold_ckpt, _ = quickstart_models
    dm = digits_dm(**QUICKSTART)
    original, _ = load_backbone(original_ckpt, dm)
    model = _head_only(original, forgotten=3)
    keys = ("relearn/steps", "relearn/censored", "gold/relearn/steps", "gold/relearn/censored")

    def run() -> dict[str, float]:
        res = UnlearningEvaluator(gold=str(gold_ckpt), original=str(original_ckpt), mia=False, zrf=False,
                                  relearn=True, relearn_seeds=3).evaluate(model, dm)
        return {k: res[k] for k in keys}

    with monkeypatch.context() as m:
        m.setattr(R, "_initial_accuracies", lambda *a: pytest.fail("computed the accuracies the outputs have"))
        from_outputs = run()
    with monkeypatch.context() as m:
        m.setattr(R, "_fp32_on", lambda *a: False)  # nothing known before the attack: every draw on the copy
        on_the_copy = run()
    assert from_outputs == on_the_copy and from_outputs["relearn/steps"] > 0
