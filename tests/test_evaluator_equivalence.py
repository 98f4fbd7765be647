"""The evaluator in components gives, key for key and bit for bit, what the single-file evaluator of c7d07c8 gave.

``reference_results`` is that evaluator's computation written out plainly (every split forwarded sample by sample in
``eval_batch_size`` batches, then the formulas of its ``_metrics`` in their order) from the pure functions of
``metrics.py`` and ``mia.py``: an oracle that does not share the components, the output cache or the orchestration.
(``benchmarks/evaluator_compare.py`` compared the two implementations themselves on the quickstart's 49 rows: 1,881
keys, all identical.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import digits_dm, small_allcnn

from lightning_unlearn.checkpoints import load_backbone
from lightning_unlearn.data import ForgetSpec
from lightning_unlearn.data.forget import SPLIT_NAMES
from lightning_unlearn.evaluation import ReferenceCache, UnlearningEvaluator
from lightning_unlearn.evaluation import metrics as M
from lightning_unlearn.evaluation.mia import balanced_subset, entropy_mia, loss_mia, mia_efficacy

REF_SPLITS = ("forget", "test", "test_retain", "test_forget")


def _forward(net, dm, split):
    view, n, bs = dm.dataset(split), len(dm.splits[split]), int(dm.eval_batch_size)
    items = [view[i] for i in range(n)]
    x = torch.stack([it[0] for it in items]) if n else torch.zeros(0)
    y = torch.as_tensor([int(it[1]) for it in items], dtype=torch.long)
    index = np.asarray([int(it[2]) for it in items], dtype=np.int64)
    with torch.no_grad():
        batches = [net(x[i : i + bs]).float() for i in range(0, n, bs)]
    logits = torch.cat(batches) if n else torch.zeros(0, dm.num_classes)
    return logits, y, index


def reference_results(model, dm, gold=None, original=None, *, splits=SPLIT_NAMES, mia=True, zrf=True, seed=0,
                      nonmember_split="test", classwise_nonmembers="retained", entropy_max_members=10_000,
                      activation_p=2.0, zrf_inits=5, svc_max_samples=8192, unlearn_time_s=None,
                      retrain_time_s=None):
    nets = {r: net.eval() for r, net in (("model", model), ("gold", gold), ("original", original)) if net is not None}
    out = {(r, s): _forward(net, dm, s) for r, net in nets.items() if net is not None for s in ("retain", "forget",
           "holdout", "test")}

    def view(role, split):
        if split in ("test_retain", "test_forget"):
            logits, y, index = out[(role, "test")]
            keep = np.isin(index, dm.splits[split])
            return logits[torch.as_tensor(keep)], y[torch.as_tensor(keep)]
        logits, y, _ = out[(role, split)]
        return logits, y

    def acc(role, split):
        logits, y = view(role, split)
        return M.accuracy(logits, y) if len(y) else math.nan

    count = len(dm.splits[nonmember_split])
    forgotten = list(dm.splits.forget_classes or [])
    if forgotten and classwise_nonmembers == "retained":
        nonmember_pos = np.flatnonzero(~np.isin(np.asarray(dm.dataset(nonmember_split).targets), forgotten))
    else:
        nonmember_pos = np.arange(count)
    member_pos = balanced_subset(len(dm.splits["retain"]), len(nonmember_pos), seed)

    def attacks(role, prefix, into):
        (rl, ry), (fl, fy), (nl, ny) = view(role, "retain"), view(role, "forget"), view(role, nonmember_split)
        probs = lambda logits: logits.double().softmax(1)  # noqa: E731
        mp, my = probs(rl)[member_pos], ry[member_pos]
        ep = probs(rl)
        if entropy_max_members is not None and len(ep) > entropy_max_members:
            ep = ep[balanced_subset(len(ep), entropy_max_members, seed + 1)]
        np_, ny_ = probs(nl)[nonmember_pos], ny[nonmember_pos]
        into[f"{prefix}mia/efficacy"] = mia_efficacy(mp, my, np_, ny_, probs(fl), fy, seed=seed,
                                                     max_samples=svc_max_samples)
        for key, attack in (("mia/entropy", "svc"), ("mia/entropy_logreg", "logreg")):
            into[prefix + key] = entropy_mia(ep, np_, probs(fl), attack=attack, seed=seed, max_samples=svc_max_samples)
        loss = loss_mia(M.cross_entropy_per_sample(fl, fy), M.cross_entropy_per_sample(nl[nonmember_pos], ny_),
                        seed=seed)
        into[f"{prefix}mia/loss_auc"], into[f"{prefix}mia/loss_acc"] = loss["auc"], loss["acc"]

    res = {f"n/{s}": len(view("model", s)[1]) for s in splits}
    res.update({f"acc/{s}": acc("model", s) for s in splits})
    if mia:
        attacks("model", "", res)
    if gold is not None:
        (f, fy), (g, _), (t, _), (gt, _) = (view(r, s) for s in ("forget", "test") for r in ("model", "gold"))
        res.update({f"gold/acc/{s}": acc("gold", s) for s in REF_SPLITS})
        res["gold/forget_acc_gap"] = M.forget_acc_gap(M.accuracy(f, fy), res["gold/acc/forget"])
        res["gold/activation_distance"] = M.activation_distance(f.double().softmax(1), g.double().softmax(1),
                                                                p=activation_p)
        res["gold/js_divergence"] = float(M.js_divergence(f.double().softmax(1), g.double().softmax(1)))
        res["gold/agreement_forget"] = M.agreement(f, g)
        res["gold/agreement_test"] = M.agreement(t, gt)
        if mia:
            attacks("gold", "gold/", res)
    if original is not None:
        res.update({f"original/acc/{s}": acc("original", s) for s in REF_SPLITS})
    if zrf:
        refs = M.random_references(model, seed, zrf_inits) if len(dm.splits["forget"]) else []
        f, _ = view("model", "forget")
        with torch.no_grad():
            x = torch.stack([dm.dataset("forget")[i][0] for i in range(len(dm.splits["forget"]))])
            p_refs = [torch.cat([r(x[i : i + dm.eval_batch_size]).float() for i in range(0, len(x), dm.eval_batch_size)]
                                ).double().softmax(1) for r in refs]
        res["zrf"] = M.zrf(f.double().softmax(1), p_refs) if p_refs else math.nan
    if unlearn_time_s is not None:
        res["time/unlearn_s"] = float(unlearn_time_s)
    if retrain_time_s is not None:
        res["time/retrain_s"] = float(retrain_time_s)
    if unlearn_time_s is not None and retrain_time_s is not None:
        res["time/speedup_vs_retrain"] = M.speedup_vs_retrain(retrain_time_s, unlearn_time_s)
    return res


def _same(got: dict, want: dict) -> None:
    assert list(got) == list(want)  # the same keys in the same order (metrics.json's order)
    for key, value in want.items():
        same = got[key] == value or (isinstance(value, float) and math.isnan(value) and math.isnan(got[key]))
        assert same, f"{key}: {got[key]!r} != {value!r}"


def test_every_key_equals_the_single_file_evaluator(trained_digits):
    """Class-wise forgetting with trained original and gold models, defaults, through the shared reference cache."""
    dm = trained_digits.datamodule()
    original, _ = load_backbone(trained_digits.original_ckpt, dm)
    gold, meta = load_backbone(trained_digits.gold_ckpt, dm)
    want = reference_results(original, dm, gold=gold, original=original, unlearn_time_s=1.5,
                             retrain_time_s=meta["train_time_s"])
    evaluator = UnlearningEvaluator(gold=str(trained_digits.gold_ckpt), original=str(trained_digits.original_ckpt))
    evaluator.reference_cache = ReferenceCache()
    _same(evaluator.evaluate(original, dm, unlearn_time_s=1.5), want)
    _same(evaluator.evaluate(original, dm, unlearn_time_s=1.5), want)  # the second time from the cache: the same


@pytest.mark.parametrize(
    "options",
    [
        {"nonmember_split": "holdout", "classwise_nonmembers": "all", "seed": 3, "zrf_inits": 2},
        {"entropy_max_members": 50, "svc_max_samples": 64, "activation_p": 1.0, "splits": ("forget", "test_forget")},
    ],
)
def test_every_key_equals_the_single_file_evaluator_under_options(options):
    """Random forgetting on untrained 8x8 networks (the formulas, not accuracy), every option that changes a number."""
    dm = digits_dm(image_size=8, forget=ForgetSpec(fraction=0.1))
    torch.manual_seed(0)
    model, gold = small_allcnn(dm), small_allcnn(dm)
    want = reference_results(model, dm, gold=gold, **options)
    _same(UnlearningEvaluator(gold=gold, **options).evaluate(model, dm), want)
