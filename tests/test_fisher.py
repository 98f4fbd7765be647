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
