"""Fisher Forgetting: per-sample Fisher via torch.func against a naive loop, the noise, determinism, the fixture."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import FORGET_CLASS, quiet_trainer

from lightning_unlearn.backbones import AllCNN
from lightning_unlearn.checkpoints import load_backbone
from lightning_unlearn.data import DigitsDataModule, ForgetSpec
from lightning_unlearn.methods import FisherForgetting
from lightning_unlearn.methods.fisher import diagonal_fisher, fisher_noise_variance


def tiny(num_classes: int = 10, seed: int = 0) -> AllCNN:
    torch.manual_seed(seed)
    return AllCNN(num_classes=num_classes, in_channels=1, image_size=8, width=0.1, mean=[0.3], std=[0.3])


def tiny_dm(**kwargs) -> DigitsDataModule:
    kwargs.setdefault("forget", ForgetSpec(classes=[FORGET_CLASS]))
    return DigitsDataModule(image_size=8, batch_size=32, **kwargs)


def run(method: FisherForgetting, dm: DigitsDataModule, batches: int | None = 2) -> FisherForgetting:
    quiet_trainer(max_epochs=1, limit_train_batches=batches).fit(method, datamodule=dm)
    return method


def naive_fisher(model, x, y, fisher_type):
    """Batch-size-1 loop, one backward per class, as the reference ``hessian`` function."""
    model.eval()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    out = {n: torch.zeros_like(p) for n, p in params}
    for i in range(x.shape[0]):
        logits = model(x[i : i + 1])
        prob = F.softmax(logits, dim=1).detach()[0]
        classes = range(logits.shape[1]) if fisher_type == "expected" else [int(y[i])]
        for k in classes:
            loss = F.cross_entropy(logits, torch.tensor([k]))
            grads = torch.autograd.grad(loss, [p for _, p in params], retain_graph=True)
            w = prob[k] if fisher_type == "expected" else 1.0
            for (n, _), g in zip(params, grads):
                out[n] += w * g.pow(2)
    return out


@pytest.mark.parametrize("fisher_type", ["expected", "empirical"])
def test_vmap_fisher_equals_naive_loop(fisher_type: str) -> None:
    model = tiny(num_classes=4)
    model.train()  # diagonal_fisher must use eval-mode BatchNorm and restore the mode
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(5, 1, 8, 8, generator=g), torch.randint(0, 4, (5,), generator=g)
    fast = diagonal_fisher(model, x, y, fisher_type=fisher_type, chunk_size=2)
    assert all(m.training for m in model.modules())
    slow = naive_fisher(model, x, y, fisher_type)
    assert fast.keys() == slow.keys()
    for n in fast:
        torch.testing.assert_close(fast[n], slow[n], rtol=1e-4, atol=1e-9)
    assert all(p.grad is None for p in model.parameters())
    # per-sample weights: weight 0 removes a sample
    w = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0])
    part = diagonal_fisher(model, x, y, fisher_type=fisher_type, weight=w)
    keep = naive_fisher(model, x[[0, 1, 3, 4]], y[[0, 1, 3, 4]], fisher_type)
    for n in part:
        torch.testing.assert_close(part[n], keep[n], rtol=1e-4, atol=1e-9)


def test_fisher_inside_bf16_autocast_is_fp32() -> None:
    model = tiny(num_classes=4)
    x = torch.rand(3, 1, 8, 8)
    ref = diagonal_fisher(model, x)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        inside = diagonal_fisher(model, x)
    for n in ref:
        assert inside[n].dtype == torch.float32
        torch.testing.assert_close(inside[n], ref[n])


def test_alpha_zero_adds_exactly_no_noise() -> None:
    dm = tiny_dm()
    model = tiny()
    before = copy.deepcopy(model.state_dict())
    method = run(FisherForgetting(model, alpha=0.0, classwise_head=False), dm)
    after = method.unlearned_backbone().state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert method.fisher_num_samples == 128 and method.fisher_diagonal is not None


def test_classwise_head_rows_reset_as_in_the_reference() -> None:
    dm = tiny_dm()
    model = tiny()
    before = copy.deepcopy(model.state_dict())
    method = run(FisherForgetting(model, alpha=0.0, seed=1), dm)
    after = method.unlearned_backbone().state_dict()
    others = [c for c in range(10) if c != FORGET_CLASS]
    for k in before:
        if k in ("head.weight", "head.bias"):
            assert torch.equal(after[k][others], before[k][others])
            row = after[k][FORGET_CLASS]
            assert not torch.equal(row, before[k][FORGET_CLASS])
            # mean 0, variance 1e-4 * 10 (reference get_mean_var)
            assert row.abs().max() < 5 * (1e-3) ** 0.5
        else:
            assert torch.equal(after[k], before[k]), k
    # no head treatment for random forgetting
    method = run(FisherForgetting(tiny(), alpha=0.0), tiny_dm(forget=ForgetSpec(fraction=0.1)))
    assert method.resolved_forget_classes() == []


def test_noise_variance_follows_the_reference() -> None:
    fisher = torch.tensor([[0.0, 1.0], [4.0, 1e-2]])
    var, mask = fisher_noise_variance(fisher, alpha=1e-6, reference_scaling=False)
    torch.testing.assert_close(var, 1e-6 * torch.tensor([[1e3, 1.0], [0.25, 1e2]]))
    assert mask is None
    var, _ = fisher_noise_variance(fisher, alpha=1e-6)  # averaged over dim 1
    torch.testing.assert_close(var, 1e-6 * torch.tensor([[500.5, 500.5], [50.125, 50.125]]))
    var, mask = fisher_noise_variance(fisher, alpha=1e-6, is_head=True, forget_rows=[1])
    torch.testing.assert_close(var, torch.tensor([[1e-6 * 50.5 * 10] * 2, [1e-3, 1e-3]]))
    assert mask is not None and mask[1].all() and not mask[0].any()
    var, _ = fisher_noise_variance(torch.tensor([0.0, 1.0]), alpha=1e-6)  # 1-D: x10
    torch.testing.assert_close(var, torch.tensor([1e-2, 1e-5]))


def test_noise_is_seeded() -> None:
    dm = tiny_dm()
    a = run(FisherForgetting(tiny(), seed=5), dm).unlearned_backbone().state_dict()
    b = run(FisherForgetting(tiny(), seed=5), dm).unlearned_backbone().state_dict()
    c = run(FisherForgetting(tiny(), seed=6), dm).unlearned_backbone().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["block1.0.0.weight"], c["block1.0.0.weight"])


def test_sampled_fisher_does_not_depend_on_batching() -> None:
    dm = tiny_dm()
    m16 = run(FisherForgetting(tiny(), fisher_type="sampled", batch_size=16), dm, batches=4)
    m64 = run(FisherForgetting(tiny(), fisher_type="sampled", batch_size=64), dm, batches=1)
    assert m16.fisher_diagonal is not None and m64.fisher_diagonal is not None
    for n, f in m16.fisher_diagonal.items():
        torch.testing.assert_close(f, m64.fisher_diagonal[n], rtol=1e-4, atol=1e-9)


def test_fisher_forgetting_on_the_digits_fixture(trained_digits) -> None:
    dm = trained_digits.datamodule()
    dm.setup()
    original, _ = load_backbone(trained_digits.original_ckpt, dm)
    # "sampled" (one gradient per sample) keeps this test ~10x cheaper than the default "expected" Fisher (C gradients
    # per sample), which the naive-loop and DDP tests cover; on this fixture both give D_f 0.000 / test-retain 0.984.
    method = run(FisherForgetting(copy.deepcopy(original), fisher_type="sampled"), dm, batches=None)
    unlearned = method.unlearned_backbone()
    assert all(torch.isfinite(p).all() for p in unlearned.parameters())
    assert method.fisher_num_samples == len(dm.splits.retain)
    config = method.method_config()
    assert config["fisher_num_samples"] == len(dm.splits.retain) and "fisher_stats" in config

    def acc(model, split):
        model.eval()
        with torch.no_grad():
            hits = [(model(x).argmax(1) == y).float() for x, y, _ in dm.loader(split)]
        return float(torch.cat(hits).mean())

    forget, retain, orig_retain = acc(unlearned, "forget"), acc(unlearned, "test_retain"), acc(original, "test_retain")
    print(f"Fisher: D_f {forget:.3f}, test_retain {retain:.3f} (original {orig_retain:.3f})")
    assert forget < 0.20
    assert retain >= orig_retain - 0.05


# -- the batched computation: backends, backbones, chunking, the Monte-Carlo option ---------------------------------


def _random_bn(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial running statistics and affine parameters, so eval-mode BatchNorm is not the identity."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model


def _assert_same(fast, slow, rtol=1e-4):
    assert fast.keys() == slow.keys()
    for n in slow:
        torch.testing.assert_close(fast[n], slow[n], rtol=rtol, atol=1e-6 * float(slow[n].abs().max()) + 1e-12)


@pytest.mark.parametrize("backend", ["auto", "layerwise", "vmap", "loop"])
def test_every_backend_equals_the_naive_loop_on_allcnn(backend: str) -> None:
    model = _random_bn(tiny(num_classes=5))
    model.train()
    g = torch.Generator().manual_seed(2)
    x, w = torch.rand(6, 1, 8, 8, generator=g), torch.tensor([1.0, 0.0, 2.0, 1.0, 0.5, 1.0])
    fast = diagonal_fisher(model, x, weight=w, backend=backend, chunk_size=4)
    assert all(m.training for m in model.modules()) and all(p.grad is None for p in model.parameters())
    slow = naive_fisher(model, x, None, "expected")
    keep = naive_fisher(model, x[[1]], None, "expected")  # weight 0 / 2 / 0.5 = dropped / twice / half
    half = naive_fisher(model, x[[4]], None, "expected")
    twice = naive_fisher(model, x[[2]], None, "expected")
    _assert_same(fast, {n: slow[n] - keep[n] + twice[n] - half[n] * 0.5 for n in slow})


def test_resnet18_layerwise_and_vmap_equal_the_naive_loop() -> None:
    from lightning_unlearn.backbones import ResNet18

    torch.manual_seed(0)
    model = _random_bn(ResNet18(num_classes=3, in_channels=3, image_size=8)).eval()
    for name, p in model.named_parameters():  # keep the test fast: freeze the big convolutions of layers 3 and 4
        if name.startswith(("layer3", "layer4")) and p.ndim == 4 and "downsample" not in name:
            p.requires_grad_(False)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    slow = naive_fisher(model, x, None, "expected")
    _assert_same(diagonal_fisher(model, x, backend="layerwise"), slow)
    _assert_same(diagonal_fisher(model, x, backend="vmap"), slow)


def test_vit_falls_back_to_vmap_and_layerwise_says_why() -> None:
    from lightning_unlearn.backbones import ViT
    from lightning_unlearn.methods.fisher_diagonal import layerwise_unsupported

    torch.manual_seed(0)
    model = ViT(num_classes=3, in_channels=3, image_size=8, patch_size=4, embed_dim=8, depth=1, num_heads=2).eval()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    reason = layerwise_unsupported(model, {n for n, _ in model.named_parameters()})
    assert reason is not None and "cls_token" in reason
    _assert_same(diagonal_fisher(model, x), naive_fisher(model, x, None, "expected"))
    with pytest.raises(ValueError, match="layerwise.*cannot handle.*cls_token"):
        diagonal_fisher(model, x, backend="layerwise")


def test_a_layer_called_twice_falls_back_and_frozen_parameters_are_left_out() -> None:
    class Twice(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner, self.head = torch.nn.Linear(4, 4), torch.nn.Linear(4, 3)

        def forward(self, x):
            return self.head(torch.tanh(self.inner(torch.tanh(self.inner(x)))))

    torch.manual_seed(0)
    model = Twice()
    x = torch.randn(5, 4)
    _assert_same(diagonal_fisher(model, x), naive_fisher(model, x, None, "expected"))
    model.inner.weight.requires_grad_(False)
    fast = diagonal_fisher(model, x)
    assert "inner.weight" not in fast
    _assert_same(fast, naive_fisher(model, x, None, "expected"))


def test_chunking_does_not_change_the_diagonal() -> None:
    model = _random_bn(tiny(num_classes=4))
    x = torch.rand(7, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    whole = diagonal_fisher(model, x)
    _assert_same(diagonal_fisher(model, x, chunk_size=1), whole, rtol=1e-5)
    _assert_same(diagonal_fisher(model, x, memory_budget_mb=1e-3), whole, rtol=1e-5)  # budget -> 1 sample per chunk


def test_bad_fisher_arguments_get_one_readable_error() -> None:
    model, x = tiny(num_classes=4), torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match=">= 0"):
        diagonal_fisher(model, x, weight=torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="chunk_size"):
        diagonal_fisher(model, x, chunk_size=0)
    with pytest.raises(ValueError, match="backend"):
        diagonal_fisher(model, x, backend="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backend"):
        FisherForgetting(tiny(), backend="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="memory_budget_mb"):
        FisherForgetting(tiny(), memory_budget_mb=0)


def _per_class_squares(model, x):
    """G[i, k] = {name: (grad log p_k(x_i))^2} and p[i, k], from the naive loop one sample and one class at a time."""
    model.eval()
    params = [(n, p) for n, p in model.named_parameters()]
    squares, probs = [], F.softmax(model(x), dim=1).detach()
    for i in range(x.shape[0]):
        logits = model(x[i : i + 1])
        row = []
        for k in range(logits.shape[1]):
            loss = F.cross_entropy(logits, torch.tensor([k]))
            grads = torch.autograd.grad(loss, [p for _, p in params], retain_graph=True)
            row.append(torch.cat([g.flatten() for g in grads]).pow(2))
        squares.append(torch.stack(row))
    return torch.stack(squares), probs  # (N, C, P), (N, C)


def test_sampled_fisher_is_unbiased_with_the_stated_variance(seed: int = 0) -> None:
    """Mean of R Monte-Carlo diagonals -> the exact one, within 5 standard errors of the docs' variance formula
    Var[F_hat_j] = sum_i (sum_k p_ik g_ikj^4 - (sum_k p_ik g_ikj^2)^2). Measured over seeds 0-9: max |z| 1.8-3.0, mean
    z^2 0.39-1.32 (about 1: the stated variance is neither too small nor too large)."""
    model = _random_bn(tiny(num_classes=4, seed=3))
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(6))
    sq, p = _per_class_squares(model, x)
    exact = torch.einsum("nk,nkj->j", p, sq)
    var = (torch.einsum("nk,nkj->nj", p, sq.pow(2)) - torch.einsum("nk,nkj->nj", p, sq).pow(2)).sum(0)
    torch.testing.assert_close(torch.cat([f.flatten() for f in diagonal_fisher(model, x).values()]), exact, rtol=1e-4,
                               atol=1e-9)
    draws = 300  # R copies of the batch in one call: every copy gets its own labels, so the sum / R is a mean of R
    gen = torch.Generator().manual_seed(seed)
    f = diagonal_fisher(model, x.repeat(draws, 1, 1, 1), fisher_type="sampled", generator=gen)
    total = torch.cat([v.flatten() for v in f.values()])
    mean = total / draws
    live = var > 1e-12 * float(var.max())
    z = (mean - exact)[live] / (var[live] / draws).sqrt()
    assert float(z.abs().max()) < 5.0
    assert 0.1 < float(z.pow(2).mean()) < 3.0


def test_method_label_sampler_follows_the_predictive_distribution() -> None:
    """The index-keyed draws of FisherForgetting(fisher_type='sampled'): frequency of each label over 400 indices
    within 5 binomial standard errors of p."""
    model = _random_bn(tiny(num_classes=4))
    method = FisherForgetting(model, fisher_type="sampled")
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        p = F.softmax(model.eval()(x), dim=1)
    seeds = 400  # 400 sample indices per input: the draw is keyed by (seed, index), as independent streams
    labels = method._sample_labels(model, x.repeat(seeds, 1, 1, 1), torch.arange(3 * seeds)).view(seeds, 3)
    counts = torch.stack([(labels == k).sum(0) for k in range(p.shape[1])], dim=1).float()
    se = (p * (1 - p) / seeds).sqrt()
    assert bool(((counts / seeds - p).abs() <= 5 * se + 1e-6).all())


def test_method_backends_give_the_same_fisher() -> None:
    dm = tiny_dm()
    auto = run(FisherForgetting(tiny(), alpha=0.0), dm, batches=1)
    vmapped = run(FisherForgetting(tiny(), alpha=0.0, backend="vmap", chunk_size=8), dm, batches=1)
    assert auto.fisher_diagonal is not None and vmapped.fisher_diagonal is not None
    _assert_same(auto.fisher_diagonal, vmapped.fisher_diagonal)


@pytest.mark.parametrize(
    "conv",
    [
        dict(kernel_size=3, padding=1),
        dict(kernel_size=3, stride=2, padding=1),
        dict(kernel_size=1, bias=True),
        dict(kernel_size=(3, 1), padding=(1, 0), dilation=2),
        dict(kernel_size=2, stride=2),
    ],
)
def test_every_conv_form_gives_the_per_sample_squares(conv: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The three exact forms of the layerwise Conv2d square sum (Gram, grouped per cotangent, per sample) against
    per-sample, per-cotangent autograd gradients; also in blocks (of samples, of cotangents) that do not divide."""
    import lightning_unlearn.methods.fisher_diagonal as fd

    g = torch.Generator().manual_seed(8)
    mod = torch.nn.Conv2d(3, 5, **conv)
    a = torch.randn(4, 3, 7, 6, generator=g)
    k = 3
    d = torch.randn(k, *mod(a).shape, generator=g)
    w = mod.weight.detach().requires_grad_(True)
    exact = torch.zeros_like(w)
    for n in range(a.shape[0]):
        out = F.conv2d(a[n : n + 1], w, None, mod.stride, mod.padding, mod.dilation)
        for j in range(k):
            (grad,) = torch.autograd.grad(out, w, d[j, n : n + 1], retain_graph=True)
            exact += grad.square()
    for block in (fd._GROUP_BLOCK, 2 * mod.weight.numel(), 3 * mod.weight.numel()):  # and 2 or 3 per block
        monkeypatch.setattr(fd, "_GROUP_BLOCK", block)
        for form in ("gram", "grouped", "sample"):
            dd = d.transpose(0, 1).contiguous() if form == "sample" else d
            got = fd._conv_sq(mod, a, dd, form)
            torch.testing.assert_close(got, exact, rtol=1e-5, atol=1e-6 * float(exact.max()))


def test_the_per_cotangent_backward_equals_the_vmapped_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Layers above ``_BATCHED_MAX`` floats take one backward per cotangent instead of the vmapped one: same Fisher."""
    import lightning_unlearn.methods.fisher_diagonal as fd

    model = _random_bn(tiny(num_classes=5)).eval()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(9))
    batched = diagonal_fisher(model, x, backend="layerwise")
    monkeypatch.setattr(fd, "_BATCHED_MAX", 0)
    looped = diagonal_fisher(model, x, backend="layerwise")
    _assert_same(looped, batched, rtol=1e-5)
    _assert_same(looped, naive_fisher(model, x, None, "expected"))
