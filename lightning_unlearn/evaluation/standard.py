"""The output metrics of the evaluator as components: accuracy per split, the membership-inference attacks, the
comparison with the gold model, ZRF and cost. Each wraps the pure functions of ``metrics.py`` / ``mia.py``;
definitions in ``docs/metrics.md``.

torchmetrics' ``MulticlassAccuracy`` divides in float32, which changes the last bits of an accuracy against the float64
mean these functions have always reported (and the benchmark's cached rows hold), so the functional forms stay ours.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from torch import nn

from lightning_unlearn.data.forget import SPLIT_NAMES
from lightning_unlearn.evaluation import metrics as M
from lightning_unlearn.evaluation.cache import ReferenceCache
from lightning_unlearn.evaluation.component import (
    Component,
    EvalContext,
    Needs,
    accuracy_or_nan,
    needs_of,
    register_component,
)
from lightning_unlearn.evaluation.mia import balanced_subset, entropy_mia, loss_mia, mia_efficacy

__all__ = ["Accuracy", "Cost", "GoldComparison", "MembershipInference", "REFERENCE_SPLITS", "ZeroRetrainForgetting"]

#: The splits whose accuracy is reported for the gold and the original model.
REFERENCE_SPLITS: tuple[str, ...] = ("forget", "test", "test_retain", "test_forget")


def _prefix(role: str) -> str:
    return "" if role == "model" else f"{role}/"


@register_component("accuracy")
class Accuracy(Component):
    """``<role>/acc/<split>`` (``metrics.accuracy``; ``nan`` for an empty split) and, with ``counts``, ``n/<split>``
    (the number of samples evaluated, gathered from every rank)."""

    keys = tuple(f"acc/{s}" for s in SPLIT_NAMES)

    def __init__(self, splits: Sequence[str] = SPLIT_NAMES, role: str = "model", counts: bool = True) -> None:
        unknown = [s for s in splits if s not in SPLIT_NAMES]
        if unknown:
            raise ValueError(f"Unknown split(s) {unknown}; choose from {', '.join(SPLIT_NAMES)}.")
        self.splits, self.role, self.counts = tuple(splits), role, counts
        self.reads = (role,)

    def needs(self, nets: Mapping[str, nn.Module], dm: Any) -> Needs:
        return needs_of({self.role: self.splits}) if self.role in nets else {}

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        res: dict[str, Any] = {}
        if self.counts:
            for s in self.splits:
                res[f"n/{s}"] = len(ctx.view(self.role, s) or ())
        for s in self.splits:
            res[f"{_prefix(self.role)}acc/{s}"] = accuracy_or_nan(ctx.view(self.role, s))
        return res


@register_component("mia")
class MembershipInference(Component):
    """``<role>/mia/{efficacy, entropy, entropy_logreg, loss_auc, loss_acc}``: the attacks of ``mia.py`` on D_f, with
    the members, non-members and caps described in ``docs/metrics.md`` ("Membership inference")."""

    keys = ("mia/efficacy", "mia/entropy", "mia/entropy_logreg", "mia/loss_auc", "mia/loss_acc")

    def __init__(
        self,
        role: str = "model",
        seed: int = 0,
        nonmember_split: Literal["test", "holdout"] = "test",
        classwise_nonmembers: Literal["retained", "all"] = "retained",
        entropy_max_members: int | None = 10_000,
        svc_max_samples: int | None = 8192,
    ) -> None:
        if nonmember_split not in ("test", "holdout"):
            raise ValueError(f"nonmember_split must be 'test' or 'holdout', got {nonmember_split!r}.")
        if classwise_nonmembers not in ("retained", "all"):
            raise ValueError(f"classwise_nonmembers must be 'retained' or 'all', got {classwise_nonmembers!r}.")
        if entropy_max_members is not None and entropy_max_members < 1:
            raise ValueError(f"entropy_max_members must be >= 1 or None, got {entropy_max_members}.")
        if svc_max_samples is not None and svc_max_samples < 2:
            raise ValueError(f"svc_max_samples must be >= 2 or None, got {svc_max_samples}.")
        self.role, self.seed, self.nonmember_split = role, int(seed), nonmember_split
        self.classwise_nonmembers, self.entropy_max_members = classwise_nonmembers, entropy_max_members
        self.svc_max_samples = svc_max_samples
        self.reads = (role,)

    def needs(self, nets: Mapping[str, nn.Module], dm: Any) -> Needs:
        return needs_of({self.role: (self.nonmember_split, "retain", "forget")}) if self.role in nets else {}

    def nonmember_positions(self, dm: Any) -> np.ndarray:
        """Positions, within the non-member split, of the MIA non-members: in class-wise forgetting with
        ``classwise_nonmembers="retained"`` only the samples of retained classes (SalUn's protocol), else all."""
        count = len(dm.splits[self.nonmember_split])
        forgotten = list(getattr(dm.splits, "forget_classes", []) or [])
        if not forgotten or self.classwise_nonmembers == "all" or not count:
            return np.arange(count)
        labels = np.asarray(dm.dataset(self.nonmember_split).targets)
        return np.flatnonzero(~np.isin(labels, forgotten))

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        role, res = self.role, {}
        retain, forget = ctx.view(role, "retain"), ctx.view(role, "forget")
        nonmembers = ctx.view(role, self.nonmember_split)
        if retain is None or nonmembers is None or forget is None:
            return {}
        nonmember_pos = self.nonmember_positions(ctx.dm)
        members = retain.select(balanced_subset(len(ctx.splits["retain"]), len(nonmember_pos), self.seed))
        entropy_members, cap = retain, self.entropy_max_members
        if cap is not None and len(entropy_members) > cap:
            entropy_members = entropy_members.select(balanced_subset(len(entropy_members), cap, self.seed + 1))
        nonmembers = nonmembers.select(nonmember_pos)
        p = _prefix(role)
        res[f"{p}mia/efficacy"] = mia_efficacy(
            members.probs, members.targets, nonmembers.probs, nonmembers.targets, forget.probs, forget.targets,
            seed=self.seed, max_samples=self.svc_max_samples,
        )
        for key, attack in (("mia/entropy", "svc"), ("mia/entropy_logreg", "logreg")):
            res[p + key] = entropy_mia(
                entropy_members.probs, nonmembers.probs, forget.probs, attack=attack, seed=self.seed,
                max_samples=self.svc_max_samples,
            )
        loss = loss_mia(forget.losses, nonmembers.losses, seed=self.seed)
        res[f"{p}mia/loss_auc"], res[f"{p}mia/loss_acc"] = loss["auc"], loss["acc"]
        return res


@register_component("gold")
class GoldComparison(Component):
    """``gold/forget_acc_gap``, ``gold/activation_distance`` (``activation_p``-norm), ``gold/js_divergence`` on D_f
    and the prediction agreement on D_f and the test set (``metrics.py``)."""

    keys = ("gold/forget_acc_gap", "gold/activation_distance", "gold/js_divergence", "gold/agreement_forget",
            "gold/agreement_test")
    reads = ("model", "gold")

    def __init__(self, activation_p: float = 2) -> None:
        if not activation_p >= 1:
            raise ValueError(f"activation_p must be >= 1 (1: Golatkar's L1, 2: Bad Teacher's L2), got {activation_p}.")
        self.activation_p = float(activation_p)

    def needs(self, nets: Mapping[str, nn.Module], dm: Any) -> Needs:
        return needs_of({"model": ("forget", "test"), "gold": ("forget", "test")}) if self.active(nets) else {}

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        f, g, t, gt = (ctx.view(r, s) for s in ("forget", "test") for r in ("model", "gold"))
        assert f is not None and g is not None and t is not None and gt is not None
        return {
            "gold/forget_acc_gap": M.forget_acc_gap(M.accuracy(f.logits, f.targets), accuracy_or_nan(g)),
            "gold/activation_distance": M.activation_distance(f.probs, g.probs, p=self.activation_p),
            "gold/js_divergence": float(M.js_divergence(f.probs, g.probs)),
            "gold/agreement_forget": M.agreement(f.logits, g.logits),
            "gold/agreement_test": M.agreement(t.logits, gt.logits),
        }


@register_component("zrf")
class ZeroRetrainForgetting(Component):
    """``zrf``: 1 - mean JS divergence on D_f from ``zrf_inits`` randomly initialised copies of the architecture
    (``metrics.zrf``), their seeds from the evaluator's own generator (``metrics.reference_seeds``)."""

    keys = ("zrf",)

    def __init__(self, seed: int = 0, zrf_inits: int = 5) -> None:
        if zrf_inits < 1:
            raise ValueError(f"zrf_inits must be >= 1, got {zrf_inits}.")
        self.seed, self.zrf_inits = int(seed), int(zrf_inits)

    def networks(self, model: nn.Module, dm: Any, seed: int, cache: ReferenceCache | None) -> dict[str, nn.Module]:
        if not len(dm.splits["forget"]):
            return {}
        build = lambda: M.random_references(model, self.seed, self.zrf_inits)  # noqa: E731
        config = getattr(model, "config", None)
        if cache is None or not callable(config):
            randoms = build()
        else:  # built once per architecture and seed
            key = ("randoms", json.dumps(config(), sort_keys=True, default=str), self.seed, self.zrf_inits)
            randoms = cache.randoms(key, build)
        return {f"random{k}": r for k, r in enumerate(randoms)}

    def needs(self, nets: Mapping[str, nn.Module], dm: Any) -> Needs:
        return needs_of({r: ("forget",) for r in nets if r == "model" or r.startswith("random")})

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        f = ctx.view("model", "forget")
        refs = [o.probs for (name, split), o in ctx.outputs.items() if name.startswith("random") and split == "forget"]
        return {"zrf": M.zrf(f.probs, refs) if refs and f is not None else math.nan}


@register_component("cost")
class Cost(Component):
    """``time/unlearn_s``, ``time/retrain_s`` and ``time/speedup_vs_retrain`` (``metrics.speedup_vs_retrain``) when
    the times are known."""

    keys = ("time/unlearn_s", "time/retrain_s", "time/speedup_vs_retrain")
    reads = ()

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        res, unlearn, retrain = {}, ctx.unlearn_time_s, ctx.retrain_time_s
        if unlearn is not None:
            res["time/unlearn_s"] = float(unlearn)
        if retrain is not None:
            res["time/retrain_s"] = float(retrain)
        if unlearn is not None and retrain is not None:
            res["time/speedup_vs_retrain"] = M.speedup_vs_retrain(retrain, unlearn)
        return res
