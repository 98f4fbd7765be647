"""Diagonal Fisher information of a classifier without a batch-size-1 loop (the computation behind Fisher Forgetting).

Golatkar et al. 2020 (reference ``hessian``): ``F = sum_i sum_k p_ik (grad_w log p_k(x_i))^2``. With ``J_i`` the
Jacobian of the logits, ``grad_w log p_k = J_i^T (e_k - p_i)``, so ``F = sum_i diag(J_i^T M_i J_i)`` with
``M_i = sum_k p_ik (e_k - p_i)(e_k - p_i)^T = diag(p_i) - p_i p_i^T``. Any factor ``M_i = U_i U_i^T`` gives the same
diagonal: we take the ``C - 1`` columns ``sqrt(lambda) v`` of its eigendecomposition (the dropped direction, ``1``, has
eigenvalue 0), i.e. ``C - 1`` backward cotangents per sample instead of ``C``, all pushed through one forward pass.

Backends: ``layerwise`` (Conv2d, Linear and eval-mode BatchNorm2d: one batched forward, the cotangents back-propagated
to every layer's output one at a time, or all at once with ``is_grads_batched`` for small chunks, then the per-sample
weight gradients' squares per layer by an exact form chosen by the layer's shape); ``vmap`` (any ``torch.func``-
traceable model: ``vmap`` over samples of ``vmap`` over cotangents of ``vjp``, in chunks); ``loop`` (one sample at a
time, for models neither handles).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.func import functional_call, vjp, vmap
from torch.nn.grad import conv2d_weight

from lightning_unlearn.utils import eval_mode

__all__ = ["FisherBackend", "FisherType", "diagonal_fisher", "fisher_cotangents", "layerwise_unsupported"]

FisherType = Literal["expected", "sampled", "empirical"]
FisherBackend = Literal["auto", "layerwise", "vmap", "loop"]

_BLOCK = 1 << 17  # floats per block of the Gram form's products (fits a core's L2 cache)
_GROUP_BLOCK = 1 << 20  # floats of per-sample gradients squared at once by the grouped and per-sample forms
_BATCHED_MAX = 1 << 23  # output-gradient floats of a chunk up to which the cotangents go through one vmapped backward
_GRAM_MIN = 1 << 21  # per-sample gradient floats (K x weight) from which the Gram form is used where L <= 16
_REPORTED: set[tuple[str, str]] = set()


class _Unsupported(RuntimeError):
    """The layerwise backend cannot handle this model (the reason is the message)."""


def fisher_cotangents(
    logits: Tensor,
    fisher_type: FisherType,
    y: Tensor | None = None,
    weight: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Cotangents ``U (K, N, C)`` with ``sum_k U_kn U_kn^T = w_n M_n`` (expected) or ``w_n u u^T``, ``u = e_y - p_n``.

    ``expected``: ``K = C - 1`` columns of the eigendecomposition of ``diag(p) - p p^T`` (fp64); ``sampled``: ``y``
    drawn from ``p_n`` with ``generator``; ``empirical``: the given ``y``. ``w_n`` (default 1) must be >= 0.
    """
    p = F.softmax(logits.detach().double(), dim=1)
    n, c = p.shape
    w = torch.ones(n, dtype=torch.float64, device=p.device) if weight is None else weight.to(p.device).double()
    if (w < 0).any():
        raise ValueError("Fisher sample weights must be >= 0.")
    if fisher_type == "expected":
        lam, vec = torch.linalg.eigh(torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1))  # ascending eigenvalues
        u = vec[:, :, 1:] * lam[:, 1:].clamp(min=0).sqrt().unsqueeze(1)  # (N, C, C-1): drop the null direction
        u = u.permute(2, 0, 1)
    else:
        if fisher_type == "sampled":
            probs = F.softmax(logits.detach().float(), dim=1).cpu()
            y = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        if y is None:
            raise ValueError("fisher_type='empirical' needs the true labels `y`.")
        u = (F.one_hot(y.to(p.device).long(), c).double() - p).unsqueeze(0)
    return (u * w.sqrt().view(1, n, 1)).float()


def layerwise_unsupported(model: nn.Module, names: set[str]) -> str | None:
    """Why the layerwise backend cannot compute the Fisher of the parameters ``names`` of ``model`` (None: it can)."""
    seen: set[int] = set()
    for mod_name, mod in model.named_modules(remove_duplicate=False):
        for p_name, p in mod.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if id(p) in seen:
                return f"parameter {full} is shared"
            seen.add(id(p))
            if full not in names:
                continue
            kind = type(mod).__name__
            if isinstance(mod, nn.Conv2d) and type(mod).forward is nn.Conv2d.forward:
                if mod.groups != 1 or mod.padding_mode != "zeros" or isinstance(mod.padding, str):
                    return f"{kind} {mod_name} (groups, padding mode or string padding)"
            elif isinstance(mod, nn.BatchNorm2d) and type(mod).forward is nn.BatchNorm2d.forward:
                if mod.running_mean is None or mod.running_var is None:
                    return f"{kind} {mod_name} without running statistics (eval mode would use batch statistics)"
            elif not (isinstance(mod, nn.Linear) and type(mod).forward is nn.Linear.forward):
                return f"{kind} {mod_name or '(root)'} holds parameter {full}"
    return None


def _report(model: nn.Module, backend: str, reason: str) -> None:
    key = (type(model).__name__, reason)
    if key not in _REPORTED:
        _REPORTED.add(key)
        rank_zero_info(f"diagonal_fisher: {type(model).__name__} uses the {backend} backend: {reason}.")


def _conv_form(mod: nn.Conv2d, k: int, length: int) -> str:
    """Which exact form of :func:`_conv_sq` is cheapest for this layer (a fixed rule, so results do not depend on
    timing): ``gram`` where it needs fewer multiply-adds (``L <= K`` output positions) or where the per-sample
    gradients are large and ``L <= 16``; else ``grouped`` (one grouped weight-gradient convolution per cotangent)
    for stride-1 layers with ``L >= 128``; else ``sample`` (one weight-gradient convolution per sample with the ``K``
    cotangents as ``K * O`` output channels). From per-layer CPU timings of All-CNN and ResNet-18 layers."""
    if length <= k or (length <= 16 and k * mod.weight.numel() >= _GRAM_MIN):
        return "gram"
    return "grouped" if length >= 128 and tuple(mod.stride) == (1, 1) else "sample"


def _conv_sq(mod: nn.Conv2d, a: Tensor, d: Tensor, form: str) -> Tensor:
    """``sum_{k,n} (per-sample weight gradient of cotangent k)^2`` of a Conv2d; ``a``: input ``(N, D, H, W)``, ``d``:
    output gradients ``(K, N, O, H', W')`` (``form`` gram/grouped) or ``(N, K, O, H', W')`` (``sample``)."""
    wshape, conv = mod.weight.shape, (mod.stride, mod.padding, mod.dilation)
    if form == "sample":  # per sample: one weight gradient with (a block of) the K cotangents as output channels
        n, k, o = d.shape[:3]
        kb = max(1, min(k, _GROUP_BLOCK // wshape.numel()))
        acc = torch.zeros(kb * o, *wshape[1:], device=a.device)
        for i in range(n):
            for j in range(0, k, kb):
                dj = d[i, j : j + kb].reshape(1, -1, *d.shape[3:])
                g = conv2d_weight(a[i : i + 1], (dj.shape[1], *wshape[1:]), dj, *conv)
                acc[: g.shape[0]].addcmul_(g, g)
        return acc.view(kb, *wshape).sum(0)
    k, n, o = d.shape[:3]
    if form == "grouped":  # per cotangent: the samples as groups, one convolution for a block of samples
        out = torch.zeros(wshape, device=a.device)
        step = max(1, _GROUP_BLOCK // (o * wshape[1:].numel()))
        for i in range(0, n, step):
            ai = a[i : i + step]
            m = ai.shape[0]
            inp, acc = ai.reshape(1, -1, *ai.shape[2:]), torch.zeros(m * o, *wshape[1:], device=a.device)
            for j in range(k):
                g = conv2d_weight(inp, acc.shape, d[j, i : i + step].reshape(1, m * o, *d.shape[3:]), *conv, groups=m)
                acc.addcmul_(g, g)
            out += acc.view(m, *wshape).sum(0)
        return out
    # gram: sum_{l <= l'} (1 or 2) (sum_k d_l d_l') (c_l c_l') over pairs of the L output positions, one GEMM
    cols = F.unfold(a, mod.kernel_size, dilation=mod.dilation, padding=mod.padding, stride=mod.stride)  # (N, D, L)
    dim, length = cols.shape[1:]
    dl = d.flatten(3)  # (K, N, O, L)
    li, lj = torch.triu_indices(length, length, device=a.device)  # both factors are symmetric in (l, l')
    pairs, twice = li * length + lj, torch.where(li == lj, 1.0, 2.0).to(a.device)
    gram = torch.zeros(o, dim, device=a.device)
    step = max(1, 16 * _BLOCK // (max(o, dim) * length * length))
    for i in range(0, n, step):
        lhs = torch.einsum("knol,knom->onlm", dl[:, i : i + step], dl[:, i : i + step]).flatten(2)[:, :, pairs] * twice
        rhs = torch.einsum("ndl,ndm->dnlm", cols[i : i + step], cols[i : i + step]).flatten(2)[:, :, pairs]
        gram += lhs.reshape(o, -1) @ rhs.reshape(dim, -1).T
    return gram.view(wshape)


def _output_grads(logits: Tensor, outs: list[Tensor], u: Tensor, sample: list[bool]) -> list[Tensor | None]:
    """The gradients of ``logits`` with respect to ``outs`` for each cotangent of ``u (K, N, C)``, as ``(K, N, ...)``
    tensors, or ``(N, K, ...)`` where ``sample`` says so. Small layers: one ``is_grads_batched`` backward (vmap); else
    one backward per cotangent, which is faster there (vmap loops over the cotangents in ``convolution_backward``,
    which has no batching rule, and then copies its results together)."""
    k = u.shape[0]
    if k * sum(o.numel() for o in outs) <= _BATCHED_MAX:
        grads = torch.autograd.grad(logits, outs, u, is_grads_batched=True, allow_unused=True)
        return [g.transpose(0, 1).contiguous() if g is not None and s else g for g, s in zip(grads, sample)]
    out: list[Tensor | None] = [None] * len(outs)
    for j in range(k):
        for i, g in enumerate(torch.autograd.grad(logits, outs, u[j], retain_graph=j < k - 1, allow_unused=True)):
            if g is None:
                continue
            if out[i] is None:
                out[i] = g.new_empty((g.shape[0], k, *g.shape[1:]) if sample[i] else (k, *g.shape))
            (out[i][:, j] if sample[i] else out[i][j]).copy_(g)  # type: ignore[index]
    return out


def _layerwise(model: nn.Module, state: dict[str, Tensor], names: set[str], x: Tensor, u: Tensor) -> dict[str, Tensor]:
    """One forward with hooks on every layer that holds a parameter in ``names``, then the batched backward."""
    owners = {}
    for mod_name, mod in model.named_modules():
        for p_name, _ in mod.named_parameters(recurse=False):
            if (f"{mod_name}.{p_name}" if mod_name else p_name) in names:
                owners[mod] = mod_name
    inputs: dict[nn.Module, tuple[Tensor, int]] = {}
    outputs: dict[nn.Module, Tensor] = {}

    def hook(mod: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> Tensor:
        if mod in inputs:
            raise _Unsupported(f"{type(mod).__name__} {owners[mod]} is called twice")
        a = args[0]
        inputs[mod] = (a.detach(), a._version)
        if isinstance(mod, nn.BatchNorm2d):  # eval mode: an affine map per channel, whose backward vmap batches
            scale = (mod.running_var + mod.eps).rsqrt() * (mod.weight if mod.affine else 1.0)
            shift = (mod.bias if mod.affine else 0.0) - mod.running_mean * scale
            out = a * scale.view(-1, 1, 1) + shift.view(-1, 1, 1)
        outputs[mod] = out
        return out.clone()  # a later in-place op (ReLU(inplace), +=) must not touch the tensor we differentiate

    handles = [m.register_forward_hook(hook) for m in owners]
    k = u.shape[0]
    try:
        with torch.enable_grad():
            logits = functional_call(model, state, (x.detach().requires_grad_(True),))
            used = [m for m in owners if m in outputs]
            forms = {m: _conv_form(m, k, outputs[m].shape[2:].numel()) for m in used if isinstance(m, nn.Conv2d)}
            sample = [forms.get(m) == "sample" for m in used]  # layers whose gradients go to (N, K, ...)
            grads = _output_grads(logits, [outputs[m] for m in used], u, sample)
    finally:
        for h in handles:
            h.remove()
    if any(inputs[m][0]._version != inputs[m][1] for m in used):
        raise _Unsupported("a layer input is modified in place after use")
    fisher: dict[str, Tensor] = {}
    for mod, d in zip(used, grads):
        if d is None:
            continue
        a, prefix = inputs[mod][0], (owners[mod] + "." if owners[mod] else "")
        sq: dict[str, Tensor] = {}
        if isinstance(mod, nn.Conv2d):
            sq["weight"] = _conv_sq(mod, a, d, forms[mod])
            sq["bias"] = d.sum((3, 4)).square().sum((0, 1))
        elif isinstance(mod, nn.BatchNorm2d):
            mean, var = state[prefix + "running_mean"], state[prefix + "running_var"]
            xhat = (a - mean.view(-1, 1, 1)) * (var.view(-1, 1, 1) + mod.eps).rsqrt()
            sq["weight"] = (d * xhat).sum((3, 4)).square().sum((0, 1))
            sq["bias"] = d.sum((3, 4)).square().sum((0, 1))
        elif a.ndim == 2:  # Linear: g = d a^T factorises, so sum g^2 = (sum_k d^2)^T a^2
            sq["weight"] = d.square().sum(0).T @ a.square()
            sq["bias"] = d.square().sum((0, 1))
        else:  # Linear over tokens: g = sum_t d_t a_t^T per sample
            a3, d4 = a.flatten(1, -2), d.flatten(2, -2)
            sq["weight"] = torch.einsum("knto,nti->knoi", d4, a3).square().sum((0, 1))
            sq["bias"] = d4.sum(2).square().sum((0, 1))
        for p_name, v in sq.items():
            if prefix + p_name in names:
                fisher[prefix + p_name] = v
    return fisher


def _vmap(model: nn.Module, state: dict[str, Tensor], names: list[str], x: Tensor, u: Tensor) -> dict[str, Tensor]:
    """``vmap`` over the samples of ``vmap`` over the cotangents of one sample's ``vjp``: sum of squares per sample."""
    params = {n: state[n] for n in names}
    rest = {n: v for n, v in state.items() if n not in params}

    def per_sample(xi: Tensor, ui: Tensor) -> dict[str, Tensor]:
        _, pullback = vjp(lambda p: functional_call(model, {**p, **rest}, (xi.unsqueeze(0),)).squeeze(0), params)
        return {n: g.square().sum(0) for n, g in vmap(pullback)(ui)[0].items()}

    out = vmap(per_sample)(x, u.transpose(0, 1))
    return {n: v.sum(0) for n, v in out.items()}


def _loop(model: nn.Module, state: dict[str, Tensor], names: list[str], x: Tensor, u: Tensor) -> dict[str, Tensor]:
    """Batch-size-1 loop, one backward per cotangent: any model autograd can differentiate."""
    params = {n: state[n].clone().requires_grad_(True) for n in names}
    rest = {n: v for n, v in state.items() if n not in params}
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    with torch.enable_grad():
        for i in range(x.shape[0]):
            out = functional_call(model, {**params, **rest}, (x[i : i + 1],)).squeeze(0)
            for k in range(u.shape[0]):
                grads = torch.autograd.grad(out, list(params.values()), u[k, i], retain_graph=True, allow_unused=True)
                for n, g in zip(params, grads):
                    if g is not None:
                        fisher[n] += g.square()
    return fisher


def diagonal_fisher(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    fisher_type: FisherType = "expected",
    weight: Tensor | None = None,
    chunk_size: int | None = None,
    generator: torch.Generator | None = None,
    backend: FisherBackend = "auto",
    memory_budget_mb: float = 512.0,
) -> dict[str, Tensor]:
    """Sum over the batch of per-sample squared gradients of the log-likelihood: the (unnormalised) diagonal Fisher.

    In fp32 outside autocast, with the model in eval mode (BatchNorm uses its running statistics; the previous mode
    is restored). For sample ``i`` with predictive distribution ``p_i = softmax(f(x_i))``::

        expected  (reference code):  F += sum_k p_ik * (grad_w log p_k(x_i))^2      (exact: C - 1 cotangents)
        sampled:                     F += (grad_w log p_{k_i}(x_i))^2, k_i ~ p_i    (Monte Carlo, one cotangent)
        empirical:                   F += (grad_w log p_{y_i}(x_i))^2               (true labels, one cotangent)

    Args:
        model: the network; only parameters with ``requires_grad`` are included.
        x: inputs ``(N, ...)``.
        y: true labels (``empirical`` only).
        fisher_type: see above.
        weight: optional per-sample weights ``(N,)``, >= 0 (e.g. 0 for padding samples).
        chunk_size: samples per chunk; ``None``: as many as ``memory_budget_mb`` allows.
        generator: random generator for ``sampled``.
        backend: ``auto`` (layerwise when every trainable parameter sits in a Conv2d, Linear or BatchNorm2d, else
            vmap, else loop; the fallback is logged once per model class and reason), or one of them.
        memory_budget_mb: memory for the per-sample, per-cotangent intermediate tensors of one chunk.

    Returns:
        ``{parameter name: tensor of the parameter's shape}``, fp32, summed over the (weighted) batch.
    """
    if fisher_type not in ("expected", "sampled", "empirical"):
        raise ValueError(f"Unknown fisher_type {fisher_type!r}; choose 'expected', 'sampled' or 'empirical'.")
    if backend not in ("auto", "layerwise", "vmap", "loop"):
        raise ValueError(f"Unknown backend {backend!r}; choose 'auto', 'layerwise', 'vmap' or 'loop'.")
    if fisher_type == "empirical" and y is None:
        raise ValueError("fisher_type='empirical' needs the true labels `y`.")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}.")
    with eval_mode(model), torch.autocast(device_type=x.device.type, enabled=False):
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        state = {n: p.detach().float() for n, p in model.named_parameters()}
        state.update({n: (b.detach().float() if b.is_floating_point() else b) for n, b in model.named_buffers()})
        x = x.detach().float()
        with torch.no_grad():
            logits = functional_call(model, state, (x,)).float()
        u = fisher_cotangents(logits, fisher_type, y, weight, generator).to(x.device)
        keep = (u != 0).flatten(2).any(2).any(0)  # zero-weight samples contribute nothing
        x, u = x[keep], u[:, keep]
        fisher = {n: torch.zeros_like(state[n]) for n in names}
        reason = layerwise_unsupported(model, set(names)) if backend in ("auto", "layerwise") else None
        if reason is not None and backend == "layerwise":
            raise ValueError(f"backend='layerwise' cannot handle this model: {reason}; use 'vmap' or 'auto'.")
        chosen = backend if backend != "auto" else ("layerwise" if reason is None else "vmap")
        if reason is not None:
            _report(model, "vmap", reason)
        numel = sum(state[n].numel() for n in names)
        if chosen == "layerwise":  # the K output gradients, the forward's saved tensors, the backward's temporaries
            per_sample = 4 * (u.shape[0] + 6) * _output_floats(model, state, x[:1])  # bytes (peak measured ~ this)
        else:  # K per-sample gradients and their temporaries
            per_sample = 4 * 3 * u.shape[0] * numel
        step = chunk_size or max(1, int(memory_budget_mb * 2**20 / max(per_sample, 1)))
        for i in range(0, x.shape[0], step):
            part = _compute(chosen, model, state, names, x[i : i + step], u[:, i : i + step])
            for n, v in part.items():
                fisher[n] += v
        return fisher


def _compute(
    backend: str, model: nn.Module, state: dict[str, Tensor], names: list[str], x: Tensor, u: Tensor
) -> dict[str, Tensor]:
    """One chunk with ``backend``, falling back layerwise -> vmap -> loop (logged) on what the backend cannot trace."""
    fns: dict[str, Callable[[], dict[str, Tensor]]] = {
        "layerwise": lambda: _layerwise(model, state, set(names), x, u),
        "vmap": lambda: _vmap(model, state, names, x, u),
        "loop": lambda: _loop(model, state, names, x, u),
    }
    order = ["layerwise", "vmap", "loop"]
    for b in order[order.index(backend) :]:
        try:
            return fns[b]()
        except _Unsupported as err:
            _report(model, "vmap", str(err))
        except RuntimeError as err:
            if b != "vmap" or isinstance(err, torch.OutOfMemoryError):
                raise
            _report(model, "loop", f"torch.func.vmap failed ({str(err).splitlines()[0][:120]})")
    raise AssertionError("unreachable")


@torch.no_grad()
def _output_floats(model: nn.Module, state: dict[str, Tensor], x1: Tensor) -> int:
    """Floats of one sample's outputs of the layers that hold parameters (the layerwise backend's gradients)."""
    total = 0

    def count(mod: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
        nonlocal total
        total += out.numel()

    handles = [m.register_forward_hook(count) for m in model.modules() if next(m.parameters(False), None) is not None]
    try:
        functional_call(model, state, (x1,))
    finally:
        for h in handles:
            h.remove()
    return total
