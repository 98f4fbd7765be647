"""Relearning attack: how quickly fine-tuning on a few forgotten samples brings D_f back.

A model that forgot only in its last layer relearns D_f in a few steps; a model retrained without D_f (the gold model)
has to learn it. "Relearn time" is the evaluation of Kurmanji et al. 2023 (SCRUB, "Towards Unbounded Machine
Unlearning", NeurIPS 2023: the fine-tuning time needed to recover the original's forget accuracy); the few-sample
attack follows the relearning attacks of the "illusion of unlearning" line of work (e.g. Gao et al., AISTATS 2026).

Protocol (:func:`relearn_split`, :func:`relearn_steps`): for each of ``seeds`` draws, ``samples`` (k) samples of D_f
are the attacker's; the model's *copy* is fine-tuned on them, full batch, with SGD (momentum 0.9, learning rate
``lr``), in eval mode (BatchNorm statistics and dropout frozen: the attack changes weights only), in fp32; after every
step its accuracy on the rest of D_f (at most :data:`MAX_EVAL` samples, seeded) is measured. The relearn time is the
first step at which that accuracy reaches ``target`` x the original model's accuracy on the same samples; a run that
does not reach it within ``max_steps`` steps is *censored* (counted as ``max_steps``, a lower bound).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_unlearn.evaluation.component import Component, EvalContext, Needs, register_component
from lightning_unlearn.evaluation.metrics import accuracy
from lightning_unlearn.evaluation.outputs import eval_batches
from lightning_unlearn.methods.optim import make_optimizer

__all__ = ["MAX_EVAL", "RelearnAttack", "relearn_split", "relearn_steps"]

#: At most this many of the other D_f samples are scored after each step (a seeded subset beyond).
MAX_EVAL = 1024
#: Entropy mixed into the attack's seeds, so that its draws are nobody else's.
_RELEARN_STREAM = 0x52454C45524E  # "RELERN"


def relearn_split(
    n_forget: int, samples: int, seed: int, draw: int, max_eval: int = MAX_EVAL
) -> tuple[np.ndarray, np.ndarray]:
    """Positions in D_f of the attacker's ``min(samples, n - 1)`` samples and of at most ``max_eval`` of the others
    (scored), for draw ``draw``, from ``numpy.random.default_rng([seed, stream, draw])``."""
    rng = np.random.default_rng([int(seed), _RELEARN_STREAM, int(draw)])
    order = rng.permutation(n_forget)
    k = min(int(samples), n_forget - 1)
    return np.sort(order[:k]), np.sort(order[k : k + max_eval])


def relearn_steps(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eval_x: Tensor,
    eval_y: Tensor,
    *,
    target_acc: Sequence[float],
    lr: float,
    max_steps: int,
    momentum: float = 0.9,
    device: torch.device | str | None = None,
    initial: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The relearning attack on ``S`` independent draws: for each draw ``s``, fine-tune a copy of ``model`` on
    ``(x[s], y[s])`` (full batch; SGD with ``momentum``, ``methods.optim.make_optimizer``; eval mode; fp32) and measure, before the first
    and after every step, its accuracy on ``(eval_x[s], eval_y[s])``.

    Args:
        x, y: ``(S, k, ...)`` attack samples and ``(S, k)`` labels; eval_x, eval_y: ``(S, m, ...)``, ``(S, m)``.
        target_acc: per draw, the accuracy to reach.
        initial: per draw, ``model``'s accuracy on ``(eval_x[s], eval_y[s])`` when the caller has it (the evaluator's
            outputs): not computed again, before the copy or at its step 0.

    Returns:
        ``(steps, censored)``, ``(S,)`` arrays: the number of steps after which draw ``s`` first reached its target (0:
        already there), and whether it did not within ``max_steps`` (then ``steps = max_steps``). ``model`` and every
        global RNG are left as they were (nothing random is drawn).
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    targets = [float(t) for t in target_acc]
    steps, censored = np.zeros(len(targets), np.int64), np.zeros(len(targets), bool)
    if initial is None:
        initial = _initial_accuracies(model, eval_x, eval_y, device)
    elif len(initial) != len(targets):
        raise ValueError(f"initial has {len(initial)} accuracies for {len(targets)} draws.")
    todo = [s for s, t in enumerate(targets) if initial is None or initial[s] < t]
    if not todo:  # every draw at its target before any step: 0 steps, nothing to copy or train
        return steps, censored
    with torch.inference_mode(False), torch.enable_grad():
        net = copy.deepcopy(model).to(device=device, dtype=torch.float32).eval().requires_grad_(True)
        start = {k: v.clone() for k, v in net.state_dict().items()}
        params = [p for p in net.parameters() if p.is_floating_point()]
        for n, s in enumerate(todo):
            target = targets[s]
            if n:
                net.load_state_dict(start)
            opt = make_optimizer(params, "sgd", lr, momentum)
            xa, ya = x[s].to(device, torch.float32), y[s].to(device, torch.long)
            xe, ye = eval_x[s].to(device, torch.float32), eval_y[s].to(device, torch.long)
            for t in range(max_steps + 1):
                if t == 0 and initial is not None:
                    acc = float(initial[s])  # the copy before its first step is the model: the same number
                else:
                    with torch.no_grad():
                        acc = (net(xe).argmax(dim=1) == ye).double().mean().item()
                if acc >= target or t == max_steps:
                    steps[s], censored[s] = t, acc < target
                    break
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(net(xa).float(), ya).backward()
                opt.step()
    return steps, censored


def _initial_accuracies(model: nn.Module, eval_x: Tensor, eval_y: Tensor, device: torch.device) -> list[float] | None:
    """Each draw's accuracy before the first step, computed on ``model`` itself (eval mode for the call, its modes
    restored; ``no_grad``) when it is what the attack's copy would be (every floating tensor fp32 on ``device``), so
    the same numbers as on the copy and no copy for a model already at its targets; ``None`` otherwise."""
    if not _fp32_on(model, device):
        return None
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            return [(model(eval_x[s].to(device, torch.float32)).argmax(dim=1) == eval_y[s].to(device, torch.long))
                    .double().mean().item() for s in range(len(eval_x))]
    finally:
        for m, training in modes.items():
            m.training = training


def _fp32_on(model: nn.Module, device: torch.device) -> bool:
    """Whether every floating parameter and buffer of ``model`` is fp32 on ``device`` (its copy in the attack is it)."""
    tensors = [*model.parameters(), *model.buffers()]
    return not any(t.is_floating_point() and (t.dtype != torch.float32 or t.device != device) for t in tensors)


def _split_tensors(dm: Any, split: str) -> tuple[Tensor, Tensor]:
    n = len(dm.splits[split])
    batches = list(eval_batches(dm.dataset(split), np.arange(n), int(dm.eval_batch_size), 0, 0))
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


@register_component("relearn")
class RelearnAttack(Component):
    """``<role>/relearn/steps`` (mean over the draws, a censored draw counted as ``max_steps``) and
    ``<role>/relearn/censored`` (the fraction of draws that did not reach the target) of :func:`relearn_steps`, for
    the evaluated (``relearn/*``, with ``relearn/target_acc``, the mean target accuracy) or the gold model
    (``gold/relearn/*``). Needs an original model (the target)."""

    keys = ("relearn/steps", "relearn/censored", "relearn/target_acc", "gold/relearn/steps", "gold/relearn/censored")

    def __init__(self, role: str = "model", seed: int = 0, samples: int = 10, seeds: int = 3, max_steps: int = 30,
                 lr: float = 0.01, target: float = 0.9) -> None:
        if samples < 1:
            raise ValueError(f"relearn_samples must be >= 1 (the forgotten samples the attacker has), got {samples}.")
        if seeds < 1:
            raise ValueError(f"relearn_seeds must be >= 1, got {seeds}.")
        if max_steps < 1:
            raise ValueError(f"relearn_max_steps must be >= 1, got {max_steps}.")
        if not lr > 0:
            raise ValueError(f"relearn_lr must be > 0, got {lr}.")
        if not 0.0 < target <= 1.0:
            raise ValueError(f"relearn_target must be in (0, 1] (a fraction of the original's D_f accuracy), got "
                             f"{target}.")
        self.role, self.seed, self.samples, self.seeds = role, int(seed), int(samples), int(seeds)
        self.max_steps, self.lr, self.target = int(max_steps), float(lr), float(target)
        self.reads = (role, "original")

    def needs(self, nets: Mapping[str, nn.Module], dm: Any) -> Needs:
        # the attacked network's own outputs on D_f give its accuracy before the first step (no forward again)
        return {"original": {"forget": False}, self.role: {"forget": False}} if self.active(nets) else {}

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        p = "" if self.role == "model" else f"{self.role}/"
        original = ctx.view("original", "forget")
        assert original is not None
        n = len(original)
        steps, censored, targets = [], [], []
        if n >= 2:
            x, y = _split_tensors(ctx.dm, "forget")
            draws = [relearn_split(n, self.samples, self.seed, draw) for draw in range(self.seeds)]
            attack, held = np.stack([a for a, _ in draws]), np.stack([h for _, h in draws])
            targets = [self.target * accuracy(original.logits[h], original.targets[h]) for h in held]
            net, mine = ctx.nets[self.role], ctx.view(self.role, "forget")
            initial = None
            if mine is not None and _fp32_on(net, torch.device(ctx.device)):  # computed as the attack's copy would
                initial = [accuracy(mine.logits[h], mine.targets[h]) for h in held]
            steps, censored = relearn_steps(net, x[attack], y[attack], x[held], y[held], target_acc=targets,
                                            lr=self.lr, max_steps=self.max_steps, device=ctx.device, initial=initial)
        mean = lambda v: float(np.mean(v)) if len(v) else math.nan  # noqa: E731
        res = {f"{p}relearn/steps": mean(steps), f"{p}relearn/censored": mean(censored)}
        if self.role == "model":
            res["relearn/target_acc"] = mean(targets)
        return res
