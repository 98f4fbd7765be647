"""FGSM and PGD: step sizes, the epsilon-ball and [0, 1], model mode, no parameter gradients, autocast."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_unlearn.attacks import fgsm, pgd
from lightning_unlearn.backbones import AllCNN

EPS = 0.1


class LeftHalf(nn.Module):
    """A backbone that only sees the left half of the image: the input gradient is exactly zero on the right half."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = AllCNN(num_classes=5, in_channels=1, image_size=8, width=0.1, dropout=0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(x)
        mask[..., : x.shape[-1] // 2] = 1
        return self.net(x * mask)


@pytest.fixture()
def model() -> LeftHalf:
    return LeftHalf()


@pytest.fixture()
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(6, 1, 8, 8, generator=g)
    x[0, 0, 0, :2] = 0.0  # pixels at the bounds: the clamp must keep them inside [0, 1]
    x[1, 0, 1, :2] = 1.0
    return x, torch.randint(0, 5, (6,), generator=g)


def _input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    model.eval()
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    return g


def test_fgsm_moves_every_pixel_by_epsilon_where_the_gradient_is_nonzero(model, batch) -> None:
    x, y = batch
    g = _input_grad(model, x, y)
    model.train()
    x_adv = fgsm(model, x, y, EPS)
    assert x_adv.dtype == torch.float32 and x_adv.shape == x.shape
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    delta = x_adv - x
    moving = g != 0
    assert moving[..., :4].float().mean() > 0.9 and not moving[..., 4:].any()
    free = moving & (x + EPS * g.sign() >= 0) & (x + EPS * g.sign() <= 1)
    assert free.any()
    torch.testing.assert_close(delta[free], EPS * g.sign()[free], atol=1e-6, rtol=0)
    assert (delta[~moving] == 0).all()
    clamped = moving & ~free
    assert clamped.any()
    torch.testing.assert_close(x_adv[clamped], (x + EPS * g.sign()).clamp(0, 1)[clamped], atol=1e-6, rtol=0)


def test_fgsm_untargeted_raises_and_targeted_lowers_the_loss(model, batch) -> None:
    x, y = batch
    model.eval()
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y).item()
        assert F.cross_entropy(model(fgsm(model, x, y, 0.02)), y).item() > clean
        target = (y + 1) % 5
        before = F.cross_entropy(model(x), target).item()
        assert F.cross_entropy(model(fgsm(model, x, target, 0.02, targeted=True)), target).item() < before


def test_pgd_stays_in_the_epsilon_ball_and_in_range(model, batch) -> None:
    x, y = batch
    x_adv = pgd(model, x, y, epsilon=EPS, alpha=0.04, steps=5, generator=torch.Generator().manual_seed(0))
    assert x_adv.dtype == torch.float32
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        model.eval()
        assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)
    again = pgd(model, x, y, epsilon=EPS, alpha=0.04, steps=5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x_adv, again)
    assert torch.equal(pgd(model, x, y, EPS, 0.04, steps=0, random_start=False), x)


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_attack_restores_every_mode_keeps_bn_stats_and_accumulates_no_parameter_grads(model, batch, attack) -> None:
    x, y = batch
    model.train()
    model.net.block2.eval()  # a mixed configuration must come back exactly
    modes = {n: m.training for n, m in model.named_modules()}
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    if attack == "fgsm":
        fgsm(model, x, y, EPS)
    else:
        pgd(model, x, y, EPS, 0.03, steps=3)
    assert {n: m.training for n, m in model.named_modules()} == modes
    for k, v in model.state_dict().items():
        assert torch.equal(v, stats[k]), k  # no BatchNorm running-stat drift
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_attack_inside_bf16_autocast_runs_in_fp32(model, batch, attack) -> None:
    x, y = batch

    def run(inp: torch.Tensor) -> torch.Tensor:
        if attack == "fgsm":
            return fgsm(model, inp, y, EPS)
        return pgd(model, inp, y, EPS, 0.03, steps=3, generator=torch.Generator().manual_seed(0))

    reference = run(x)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        inside = run(x)
        from_bf16 = run(x.bfloat16())
    assert inside.dtype == torch.float32 and from_bf16.dtype == torch.float32
    torch.testing.assert_close(inside, reference, atol=0, rtol=0)
    assert (from_bf16 - x.bfloat16().float()).abs().max() <= EPS + 1e-6


def test_attack_on_a_bf16_model_returns_fp32(model, batch) -> None:
    x, y = batch
    model.to(torch.bfloat16)
    x_adv = fgsm(model, x, y, EPS)
    assert x_adv.dtype == torch.float32 and (x_adv - x).abs().max() <= EPS + 1e-6


def test_invalid_arguments() -> None:
    m = LeftHalf()
    x, y = torch.rand(1, 1, 8, 8), torch.zeros(1, dtype=torch.long)
    with pytest.raises(ValueError, match="epsilon"):
        fgsm(m, x, y, -0.1)
    with pytest.raises(ValueError, match="steps"):
        pgd(m, x, y, 0.1, 0.01, steps=-1)
