"""Each metric against a value computed by hand on a tiny case (no Trainer)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_unlearn.backbones import AllCNN
from lightning_unlearn.evaluation import metrics as M
from lightning_unlearn.evaluation.report import metrics_to_json, metrics_to_markdown

LN2 = math.log(2.0)


def test_accuracy_by_hand_and_empty_split():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 5.0], [4.0, 0.0, 0.0]])
    y = torch.tensor([0, 1, 1, 2])
    assert M.accuracy(logits, y) == pytest.approx(0.5)  # rows 0 and 1 right
    assert M.accuracy(torch.tensor([0, 1, 1, 2]), y) == 1.0  # predictions accepted as well
    assert M.accuracy(np.array([0, 0, 0, 0]), y.numpy()) == 0.25
    assert math.isnan(M.accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)))
    with pytest.raises(ValueError):
        M.accuracy(logits, y[:3])


def test_per_class_accuracy_marks_absent_classes_nan():
    acc = M.per_class_accuracy(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 0, 0]), num_classes=3)
    assert acc[0] == pytest.approx(2 / 3) and acc[1] == 1.0 and math.isnan(acc[2])


def test_js_divergence_identical_disjoint_and_by_hand():
    p = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    assert M.js_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
    a, b = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert M.js_divergence(a, b) == pytest.approx(LN2)  # disjoint supports: the maximum, ln 2 (nats)
    # p = (1, 0), q = (1/2, 1/2): m = (3/4, 1/4); KL(p||m) = ln(4/3); KL(q||m) = 1/2 ln(2/3) + 1/2 ln 2
    expected = 0.5 * math.log(4 / 3) + 0.5 * (0.5 * math.log(2 / 3) + 0.5 * math.log(2))
    assert M.js_divergence(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.5]])) == pytest.approx(expected)
    per_sample = M.js_divergence(a, b, reduction="none")
    assert per_sample.shape == (2,) and torch.allclose(per_sample, torch.full((2,), LN2, dtype=torch.float64))
    assert math.isnan(M.js_divergence(torch.zeros(0, 2), torch.zeros(0, 2)))


def test_activation_distance_self_zero_and_by_hand():
    p = torch.softmax(torch.randn(5, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    assert M.activation_distance(p, p) == 0.0
    a, b = torch.tensor([[1.0, 0.0], [0.5, 0.5]]), torch.tensor([[0.0, 1.0], [0.5, 0.5]])
    assert M.activation_distance(a, b) == pytest.approx(math.sqrt(2) / 2)  # mean of sqrt(2) and 0


def test_forget_acc_gap_agreement_and_speedup():
    assert M.forget_acc_gap(0.25, 0.75) == 0.5 and M.forget_acc_gap(0.9, 0.6) == pytest.approx(0.3)
    a = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 2.0]])  # predicts 0, 1, 0, 1
    assert M.agreement(a, torch.tensor([0, 1, 1, 0])) == 0.5
    assert M.agreement(a, a) == 1.0
    assert math.isnan(M.agreement(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)))
    assert M.speedup_vs_retrain(100.0, 4.0) == 25.0
    assert math.isnan(M.speedup_vs_retrain(None, 4.0)) and math.isnan(M.speedup_vs_retrain(100.0, 0.0))


def test_entropy_and_cross_entropy_by_hand():
    h = M.entropy(torch.tensor([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]]))
    assert h[0].item() == pytest.approx(math.log(4)) and h[1].item() == 0.0
    ce = M.cross_entropy_per_sample(torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]]), torch.tensor([1, 0]))
    assert ce.tolist() == pytest.approx([LN2, -math.log(0.75)])


def _tiny() -> AllCNN:
    return AllCNN(num_classes=4, in_channels=1, image_size=8, width=0.1)


def test_zrf_of_the_random_model_itself_is_one_and_reproducible():
    torch.manual_seed(123)
    net = _tiny().eval()
    state = torch.random.get_rng_state()
    r1, r2 = M.random_init_like(net, seed=7), M.random_init_like(net, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    assert type(r1) is AllCNN and not r1.training and not any(p.requires_grad for p in r1.parameters())
    for (k, a), (_, b) in zip(r1.state_dict().items(), r2.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert not torch.equal(r1.head.weight, net.head.weight)
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        p_random, p_net = r1(x).softmax(1), net(x).softmax(1)
    assert M.zrf(p_random, r2(x).softmax(1)) == pytest.approx(1.0)
    assert M.zrf(p_net, p_random) == pytest.approx(1.0 - M.js_divergence(p_net, p_random))
    assert M.zrf(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])) == pytest.approx(1.0 - LN2)


def test_random_init_like_any_module():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    r = M.random_init_like(net, seed=0)
    assert isinstance(r, torch.nn.Sequential) and not torch.equal(r[0].weight, net[0].weight)
    assert torch.equal(r[0].weight, M.random_init_like(net, seed=0)[0].weight)


def test_reports_are_strict_json_and_markdown():
    res = {"n/forget": 3, "acc/forget": 0.5, "acc/test_forget": float("nan"), "gold/acc/forget": 0.25,
           "mia/efficacy": 0.1, "gold/mia/efficacy": 0.2, "gold/forget_acc_gap": 0.25}
    text = metrics_to_json(res)
    assert "NaN" not in text and '"acc/test_forget": null' in text
    md = metrics_to_markdown(res)
    assert "| forget | 3 | 0.5000 | 0.2500 |" in md and "\\|Acc(D_f)" in md and "| test_forget | - | - | - |" in md
