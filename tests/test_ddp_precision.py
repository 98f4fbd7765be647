"""DDP (2 CPU processes, gloo) gives the single-process result; every method runs under bf16-mixed on CPU.

Lightning's ``strategy="ddp"`` re-launches the running script for the other ranks, so the DDP runs live in a
standalone script (``tests/scripts/ddp_methods.py``) started with ``subprocess``; pytest compares its outputs.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from conftest import FORGET_CLASS, quiet_trainer

from lightning_unlearn.backbones import AllCNN
from lightning_unlearn.data import DigitsDataModule, ForgetSpec
from lightning_unlearn.methods import (
    SCRUB,
    UNSIR,
    BoundaryExpanding,
    BoundaryShrink,
    FisherForgetting,
    L1Sparse,
    SalUn,
    SelectiveSynapticDampening,
)

SCRIPT = Path(__file__).parent / "scripts" / "ddp_methods.py"
GLOO = dist.is_available() and dist.is_gloo_available()


def _run_script(devices: int, out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for key in ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK"):
        env.pop(key, None)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--devices", str(devices), "--out", str(out)],
        env=env,
        cwd=out.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"{devices}-process run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return torch.load(out, weights_only=True)


def _max_abs_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.mark.skipif(not GLOO, reason="torch.distributed with the gloo backend is not available")
def test_ddp_two_processes_match_one(tmp_path: Path) -> None:
    one = _run_script(1, tmp_path / "single.pt")
    two = _run_script(2, tmp_path / "ddp.pt")
    assert one["world_size"] == 1 and two["world_size"] == 2

    # BS: the neighbour labels are computed on every rank over all of D_f: identical.
    assert torch.equal(one["bs_labels"], two["bs_labels"])
    assert one["bs_stats"] == two["bs_stats"]
    # BS / BE: same global batches (no shuffle, per-rank batch = global / 2, BatchNorm in eval mode), DDP averages
    # the per-rank mean gradients = the global mean gradient: equal up to float summation order.
    for key in ("bs_state", "be_state"):
        assert _max_abs_diff(one[key], one["init_state"]) > 1e-3, f"{key}: the weights did not move"
        assert _max_abs_diff(one[key], two[key]) < 1e-5, key
    # Fisher: the diagonal is all-reduced with the sample count; the noise is seeded identically on every rank.
    assert one["fisher_n"] == two["fisher_n"]
    for name, f in one["fisher_diag"].items():
        torch.testing.assert_close(two["fisher_diag"][name], f, rtol=1e-4, atol=1e-10)
    assert _max_abs_diff(one["fisher_state"], one["init_state"]) > 1e-4
    assert _max_abs_diff(one["fisher_state"], two["fisher_state"]) < 1e-5
    # SalUn: the mask is computed on every rank over all of D_f (identical); outside it nothing moves under DDP either.
    assert one["salun_mask"].keys() == two["salun_mask"].keys()
    assert all(torch.equal(one["salun_mask"][k], two["salun_mask"][k]) for k in one["salun_mask"])
    for name, mask in two["salun_mask"].items():
        assert torch.equal(two["salun_state"][name][~mask], two["init_state"][name][~mask]), name
        assert not torch.equal(two["salun_state"][name][mask], two["init_state"][name][mask]), name
    # l1-sparse: runs; the last epoch's weight is alpha * (1 - 1/2) on every process count.
    assert one["l1_last_weight"] == two["l1_last_weight"] == 1e-3 * 0.5
    assert _max_abs_diff(two["l1_state"], two["init_state"]) > 1e-3
    # SSD: whole batches dealt to the ranks, sums and counts all-reduced: the one-process importances and weights.
    for key in ("forget", "full"):
        for name, imp in one["ssd_importances"][key].items():
            torch.testing.assert_close(two["ssd_importances"][key][name], imp, rtol=1e-4, atol=1e-12)
    assert all(torch.equal(one["ssd_selected"][k], two["ssd_selected"][k]) for k in one["ssd_selected"])
    assert any(m.any() for m in one["ssd_selected"].values())
    assert _max_abs_diff(one["ssd_state"], two["ssd_state"]) < 1e-6

    # SCRUB / UNSIR (shuffled loaders, BatchNorm in train mode: not the single-process numbers): every rank runs the
    # same passes in the same order, the ranks' batches of a pass together cover that pass's data, the replicas stay
    # identical (DDP averages the gradients) and UNSIR's noise is the same on every rank.
    ranks = [torch.load(tmp_path / f"ddp.rank{r}.pt", weights_only=True) for r in range(2)]
    single = torch.load(tmp_path / "single.rank0.pt", weights_only=True)
    for method in ("scrub", "unsir"):
        seqs = [[(e, p) for e, p, _ in r[f"{method}_seen"]] for r in ranks]
        assert seqs[0] == seqs[1], method
        phases = {(e, p) for e, p, _ in single[f"{method}_seen"]}
        assert {(e, p) for e, p in seqs[0]} == phases, method  # the same passes as on one process
        for e, p in phases:
            covered = {i for r in ranks for ep, ph, idx in r[f"{method}_seen"] if (ep, ph) == (e, p) for i in idx}
            alone = {i for ep, ph, idx in single[f"{method}_seen"] if (ep, ph) == (e, p) for i in idx}
            assert covered == alone, (method, e, p)
        assert _max_abs_diff(ranks[0][f"{method}_state"], ranks[1][f"{method}_state"]) == 0.0, method
        init = {k: one["init_state"][k] for k in ranks[0][f"{method}_state"]}
        assert _max_abs_diff(ranks[0][f"{method}_state"], init) > 1e-4, method
    for c, noise in ranks[0]["unsir_noise"].items():
        assert torch.equal(noise, ranks[1]["unsir_noise"][c])


def test_every_method_under_bf16_mixed() -> None:
    dm = DigitsDataModule(forget=ForgetSpec(classes=[FORGET_CLASS]), image_size=8, batch_size=32)

    def net() -> AllCNN:
        torch.manual_seed(0)
        return AllCNN(num_classes=10, in_channels=1, image_size=8, width=0.1, mean=[0.3], std=[0.3])

    def fit(method, precision: str, batches: int | None = 1):
        quiet_trainer(max_epochs=1, limit_train_batches=batches, precision=precision).fit(method, datamodule=dm)
        weights = method.unlearned_backbone().state_dict()
        assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
        assert method.unlearned_backbone().head.out_features == 10
        return method

    bs16 = fit(BoundaryShrink(net(), lr=1e-2), "bf16-mixed")
    bs32 = fit(BoundaryShrink(net(), lr=1e-2), "32-true")
    assert (bs16.neighbour_labels == bs32.neighbour_labels).all()  # the attack runs in fp32 outside autocast
    fit(BoundaryExpanding(net(), lr=1e-2), "bf16-mixed")
    fi16 = fit(FisherForgetting(net(), batch_size=32), "bf16-mixed")
    fi32 = fit(FisherForgetting(copy.deepcopy(net()), batch_size=32), "32-true")
    assert fi16.fisher_diagonal is not None and fi32.fisher_diagonal is not None
    for name, f in fi32.fisher_diagonal.items():  # per-sample gradients in fp32 outside autocast
        torch.testing.assert_close(fi16.fisher_diagonal[name], f, rtol=1e-5, atol=1e-10)
    sc16 = fit(SCRUB(net(), lr=1e-2, forget_batch_size=16, batch_size=32, rewind=True), "bf16-mixed")
    assert sc16.rewind_info is not None and len(sc16.rewind_info["forget_errors"]) == 2  # original + 1 epoch
    small = dict(noise_batch_size=8, noise_steps=3, noise_copies=2, retain_per_class=10, batch_size=32)
    un16 = fit(UNSIR(net(), **small), "bf16-mixed")
    un32 = fit(UNSIR(net(), **small), "32-true")
    for c, noise in un32.noise.items():  # the noise is learned in fp32 outside autocast
        torch.testing.assert_close(un16.noise[c], noise)
    sa16 = fit(SalUn(net(), lr=1e-2), "bf16-mixed")
    sa32 = fit(SalUn(net(), lr=1e-2), "32-true")
    assert sa16.saliency is not None and sa32.saliency is not None  # the mask pass runs in fp32 outside autocast
    assert all(torch.equal(sa16.saliency[k], sa32.saliency[k]) for k in sa32.saliency)
    fit(L1Sparse(net(), alpha=1e-3), "bf16-mixed")
    ssd16 = fit(SelectiveSynapticDampening(net(), alpha=3.0), "bf16-mixed", batches=None)  # SSD needs every batch
    ssd32 = fit(SelectiveSynapticDampening(net(), alpha=3.0), "32-true", batches=None)
    for key in ("forget", "full"):  # squared gradients in fp32 outside autocast
        for name, imp in ssd32.importances[key].items():
            torch.testing.assert_close(ssd16.importances[key][name], imp, rtol=1e-5, atol=1e-12)
