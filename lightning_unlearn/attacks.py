"""L-infinity adversarial attacks in [0, 1] pixel space: FGSM and PGD.

Both are pure functions of ``(model, x, y)``. They

* run in fp32 outside autocast (``torch.autocast(..., enabled=False)``): under mixed precision a ``GradScaler`` does
  not scale ``torch.autograd.grad`` with respect to inputs, and bf16/fp16 input gradients lose the small components
  whose sign FGSM needs;
* differentiate with :func:`torch.autograd.grad` with respect to the input only, so no ``.grad`` is accumulated on the
  model's parameters;
* put the model in eval mode for the attack (no BatchNorm running-stat drift, no dropout) and restore the previous mode
  of every submodule afterwards;
* clamp the result to [0, 1] (backbones take [0, 1] pixels and normalise inside, see
  :class:`lightning_unlearn.backbones.Backbone`), so ``epsilon`` is in pixel units (``8/255``, ``0.1``, ...).

References:
    Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015 (FGSM, sec. 4).
    Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to Adversarial Attacks",
    ICLR 2018 (PGD, sec. 2.1).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_unlearn.utils import eval_mode, param_dtype

__all__ = ["fgsm", "pgd"]


def _input_grad(model: nn.Module, x: Tensor, y: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """``d loss(model(x), y) / d x`` in fp32 (``x`` is an fp32 tensor; the model sees its own parameter dtype)."""
    x = x.detach().requires_grad_(True)
    logits = model(x.to(param_dtype(model)))
    loss = loss_fn(logits.float(), y)
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def _sum_ce(logits: Tensor, y: Tensor) -> Tensor:
    # Summed, not averaged: each sample's input gradient then does not shrink with the batch size (the samples are
    # independent in eval mode), which keeps tiny gradients away from underflow. Only the sign is used anyway.
    return F.cross_entropy(logits, y, reduction="sum")


def fgsm(
    model: nn.Module, x: Tensor, y: Tensor, epsilon: float, targeted: bool = False, clamp: bool = True
) -> Tensor:
    """Fast Gradient Sign Method (Goodfellow et al. 2015, sec. 4), L-inf, in [0, 1] pixel space.

    Untargeted (``y`` the true labels), one step up the loss::

        x_adv = clip_[0,1]( x + epsilon * sign( grad_x CE(f(x), y) ) )

    Targeted (``y`` the target labels), one step down the loss towards ``y``::

        x_adv = clip_[0,1]( x - epsilon * sign( grad_x CE(f(x), y) ) )

    Pixels whose gradient is exactly zero do not move. ``clamp=False`` skips the clip to [0, 1]: Boundary Unlearning's
    code, whose attack normalises with statistics that do not match its loader, in effect takes an unclipped step of
    about 0.25 pixel units (``docs/methods/boundary_shrink.md``).

    Args:
        model: classifier taking [0, 1] images and returning logits. Put in eval mode for the attack; every
            submodule's mode is restored afterwards. Its parameters receive no gradient.
        x: images in [0, 1], ``(N, C, H, W)``, any float dtype (computed in fp32).
        y: integer labels ``(N,)``: true labels, or target labels when ``targeted``.
        epsilon: L-inf step size in pixel units (e.g. ``0.1`` or ``8/255``).
        targeted: move towards ``y`` instead of away from it.
        clamp: clip the result to [0, 1] (default).

    Returns:
        The adversarial images, fp32, detached, in [0, 1] when ``clamp``.
    """
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}.")
    y = y.to(device=x.device, dtype=torch.long)
    with torch.autocast(device_type=x.device.type, enabled=False), torch.enable_grad(), eval_mode(model):
        x32 = x.detach().float()
        grad = _input_grad(model, x32, y, _sum_ce)
        step = epsilon * grad.sign()
        x_adv = x32 - step if targeted else x32 + step
        return (x_adv.clamp_(0.0, 1.0) if clamp else x_adv).detach()


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epsilon: float,
    alpha: float,
    steps: int,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Projected Gradient Descent on the negative loss (Madry et al. 2018, sec. 2.1), L-inf, in [0, 1] pixel space.

    With ``S = {x' : ||x' - x||_inf <= epsilon} intersected with [0, 1]^d``::

        x^0     = Proj_S( x + U(-epsilon, epsilon) )    (random_start; else x^0 = x)
        x^{t+1} = Proj_S( x^t + alpha * sign( grad_x CE(f(x^t), y) ) ),   t = 0 .. steps-1

    where ``Proj_S`` clips to the epsilon-ball around ``x`` and then to [0, 1].

    Args:
        model: classifier taking [0, 1] images and returning logits. Put in eval mode for the attack; every
            submodule's mode is restored afterwards. Its parameters receive no gradient.
        x: images in [0, 1], ``(N, C, H, W)``, any float dtype (computed in fp32).
        y: true integer labels ``(N,)``.
        epsilon: radius of the L-inf ball in pixel units.
        alpha: step size of each iteration in pixel units (commonly ``epsilon / 4`` or ``2/255``).
        steps: number of iterations (``0`` returns the start point).
        random_start: start from a uniform random point in the ball (Madry et al.).
        generator: optional ``torch.Generator`` for the random start (drawn on the CPU, so the start is the same on
            every device for the same seed).

    Returns:
        The adversarial images, fp32, detached, with ``||x_adv - x||_inf <= epsilon`` and values in [0, 1].
    """
    if epsilon < 0 or alpha < 0:
        raise ValueError(f"epsilon and alpha must be >= 0, got epsilon={epsilon}, alpha={alpha}.")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}.")
    y = y.to(device=x.device, dtype=torch.long)
    with torch.autocast(device_type=x.device.type, enabled=False), torch.enable_grad(), eval_mode(model):
        x32 = x.detach().float()
        lo, hi = (x32 - epsilon).clamp_(min=0.0), (x32 + epsilon).clamp_(max=1.0)
        x_adv = x32.clone()
        if random_start and epsilon > 0:
            noise = torch.rand(x32.shape, generator=generator, dtype=torch.float32) * (2 * epsilon) - epsilon
            x_adv = torch.minimum(torch.maximum(x_adv + noise.to(x32.device), lo), hi)
        for _ in range(steps):
            grad = _input_grad(model, x_adv, y, _sum_ce)
            x_adv = torch.minimum(torch.maximum(x_adv + alpha * grad.sign(), lo), hi)
        return x_adv.detach()
