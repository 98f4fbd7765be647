"""One evaluation: the networks by role, the outputs every enabled component reads (computed once, gathered under
DDP), then each component in order, the reference networks' results shared through the ``ReferenceCache``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from lightning_unlearn.evaluation.cache import ReferenceCache, options_key
from lightning_unlearn.evaluation.component import Component, EvalContext, Needs, merge_needs
from lightning_unlearn.evaluation.outputs import compute_outputs

__all__ = ["data_key", "evaluate_networks", "run_component"]

_PLOT_ROLES = ("model", "gold", "original")


def data_key(dm: Any) -> str:
    """What the outputs on ``dm``'s splits depend on: its input description and the split hashes."""
    info = dm.input_info() if callable(getattr(dm, "input_info", None)) else type(dm).__name__
    return json.dumps([info, dm.splits.hashes()], sort_keys=True, default=str)


def _plot_needs(nets: Mapping[str, nn.Module]) -> Needs:
    """The plots read D_f and test, with features for every network that has them (the decision-space panels)."""
    feats = lambda net: hasattr(net, "features") and hasattr(net, "head")  # noqa: E731
    return {r: {"forget": feats(nets[r]), "test": feats(nets[r])} for r in _PLOT_ROLES if r in nets}


def evaluate_networks(
    components: Sequence[Component],
    nets: Mapping[str, nn.Module | None],
    dm: Any,
    device: torch.device,
    trainer: pl.Trainer | None,
    *,
    seed: int,
    cache: ReferenceCache | None = None,
    unlearn_time_s: float | None = None,
    retrain_time_s: float | None = None,
    plots: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``components`` on ``nets`` (``{"model": ..., "gold": ..., "original": ...}``, ``None`` for an absent
    role) and return their results in order, with ``"_plots"`` (the plots' data) when ``plots`` is given and the model
    has features. Every rank computes its shard of the outputs; only global rank 0 computes the results (``{}``
    elsewhere)."""
    present: dict[str, nn.Module] = {k: v for k, v in nets.items() if v is not None}
    model = present["model"]
    for c in components:
        present.update(c.networks(model, dm, seed, cache))
    active = [c for c in components if c.active(present)]
    want_plots = plots is not None and hasattr(model, "features") and hasattr(model, "head")
    needs = merge_needs(*(c.needs(present, dm) for c in active), *([_plot_needs(present)] if want_plots else []))
    key = data_key(dm) if cache is not None else ""
    outputs = compute_outputs(present, needs, dm, device, trainer, seed, cache, key)
    if trainer is not None and not trainer.is_global_zero:
        return {}  # rank 0 computes, then broadcasts
    ctx = EvalContext(outputs, present, dm, seed, device, cache, key, unlearn_time_s, retrain_time_s)
    results: dict[str, Any] = {}
    # scikit-learn's OpenMP/BLAS pools default to every core: beside a process that set torch to fewer threads (the
    # benchmark's trainer.num_threads) the small fits of the attacks and probes oversubscribe the cores, and took
    # several times longer on a loaded machine. They get torch's thread count, for this block only.
    with threadpool_limits(limits=torch.get_num_threads()):
        for c in active:
            results.update(run_component(c, ctx))
    if want_plots:
        from lightning_unlearn.evaluation.plots import plot_data

        assert plots is not None
        results["_plots"] = plot_data(outputs, int(dm.num_classes), int(plots["max_points"]), seed)
    return results


def run_component(component: Component, ctx: EvalContext) -> dict[str, float]:
    """``component.compute(ctx)``; for a component that reads reference networks only (not ``"model"``), once per
    reference weights, data and options when ``ctx.cache`` is set."""
    reads = component.reads
    if ctx.cache is None or not reads or "model" in reads:
        return component.compute(ctx)
    digests = [ctx.cache.digest(ctx.nets[r]) for r in reads]
    options = options_key({**component.options(), "seed": ctx.seed})
    key = ("metrics", component.name, *digests, ctx.data_key, options)
    return ctx.cache.metrics(key, lambda: component.compute(ctx))
