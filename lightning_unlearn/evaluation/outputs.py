"""The per-sample outputs an evaluation reads, computed once per (network, split) and gathered under DDP.

:func:`compute_outputs` runs every requested forward pass (in eval mode, under ``no_grad``, on un-augmented data) and
returns ``{(role, split): Outputs}``; the metric components (``evaluation.components``) only read these. Under DDP each
rank evaluates a strided shard of a split with a plain, non-distributed loader; the shards are padded to equal length
and ``all_gather``-ed, so every rank holds the whole split in its order (:func:`gather_rows`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from lightning_unlearn.data.datasets import InMemoryImages, SplitView
from lightning_unlearn.evaluation.cache import ReferenceCache, positions_key
from lightning_unlearn.evaluation.metrics import cross_entropy_per_sample

__all__ = ["BASE_SPLITS", "Outputs", "compute_outputs", "eval_batches", "evaluating", "forward_split", "gather_rows"]

#: The splits that are forwarded; ``test_retain`` / ``test_forget`` are read off the test outputs (``Outputs.select``).
BASE_SPLITS: tuple[str, ...] = ("retain", "forget", "holdout", "test")


class Outputs:
    """Per-sample outputs of one model on one set of samples: ``logits`` (N, C) float32, ``targets`` (N,),
    ``index`` (N,) dataset indices, optional ``features`` (N, D) float32 (the penultimate ``features(x)``)."""

    def __init__(self, logits: Tensor, targets: Tensor, index: Tensor, features: Tensor | None = None) -> None:
        self.logits, self.targets, self.index, self.features = logits, targets, index, features

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    @property
    def probs(self) -> Tensor:
        """Softmax probabilities in float64."""
        return self.logits.double().softmax(dim=1)

    @property
    def losses(self) -> Tensor:
        """Per-sample cross-entropy (natural log)."""
        return cross_entropy_per_sample(self.logits, self.targets)

    def select(self, mask_or_positions: np.ndarray) -> Outputs:
        """The rows at ``mask_or_positions`` (a boolean mask or positions), in that order."""
        sel = torch.as_tensor(mask_or_positions)
        if sel.dtype == torch.bool:
            sel = sel.nonzero().flatten()
        f = self.features[sel] if self.features is not None else None
        return Outputs(self.logits[sel], self.targets[sel], self.index[sel], f)


def has_features(net: nn.Module | None) -> bool:
    """Whether ``net`` has the ``features(x)`` / ``head`` interface of ``backbones.Backbone``."""
    if net is None:
        return False
    return callable(getattr(net, "features", None)) and isinstance(getattr(net, "head", None), nn.Module)


class evaluating:
    """Move networks to ``device`` in eval mode under ``no_grad``; restore every submodule's mode and the device."""

    def __init__(self, nets: Iterable[nn.Module], device: torch.device) -> None:
        self.nets = list({id(m): m for m in nets}.values())
        self.device = device

    def __enter__(self) -> None:
        self.modes = [{m: m.training for m in net.modules()} for net in self.nets]
        self.devices = [device_of(net) for net in self.nets]
        for net in self.nets:
            net.to(self.device).eval()
        self.no_grad = torch.no_grad()
        self.no_grad.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self.no_grad.__exit__(*exc)
        for net, modes, dev in zip(self.nets, self.modes, self.devices, strict=True):
            for m, mode in modes.items():
                m.training = mode
            if dev is not None:
                net.to(dev)


def device_of(net: nn.Module) -> torch.device | None:
    t = next(net.parameters(), None)
    if t is None:
        t = next(net.buffers(), None)
    return t.device if t is not None else None


def dtype_of(net: nn.Module) -> torch.dtype:
    for p in net.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def compute_outputs(
    nets: Mapping[str, nn.Module],
    needs: Mapping[str, Mapping[str, bool]],
    dm: Any,
    device: torch.device,
    trainer: pl.Trainer | None,
    seed: int,
    cache: ReferenceCache | None = None,
    data_key: str = "",
) -> dict[tuple[str, str], Outputs]:
    """``{(role, split): Outputs}`` for every ``needs[role] = {split: with_features}``, each computed once (split
    by split, every network that needs a split in one pass over its batches). Outputs of every role but ``"model"``
    (the evaluated network) are taken from / stored in ``cache`` when given, keyed by the network's weights, the
    data, the split and whether features were computed."""
    outputs: dict[tuple[str, str], Outputs] = {}
    with evaluating(list(nets.values()), device):
        for split in BASE_SPLITS:
            users = {k: net for k, net in nets.items() if split in needs.get(k, {})}
            if not users:
                continue
            positions = np.arange(len(dm.splits[split]))
            with_feats = {k: needs[k][split] for k in users}
            keys: dict[str, tuple[Any, ...] | None] = {}
            for k, net in users.items():
                keys[k] = None
                if cache is not None and k != "model":
                    keys[k] = ("outputs", cache.digest(net), data_key, split, positions_key(positions), with_feats[k],
                               int(dm.eval_batch_size))
                found = cache.get_outputs(keys[k]) if cache is not None and keys[k] is not None else None
                if found is not None:
                    outputs[(k, split)] = found
            todo = {k: net for k, net in users.items() if (k, split) not in outputs}
            got = forward_split(todo, with_feats, dm, split, positions, device, trainer, seed) if todo else {}
            for k, v in got.items():
                outputs[(k, split)] = v
                if cache is not None and keys[k] is not None:
                    cache.put_outputs(keys[k], v)
    return outputs


def forward_split(
    nets: Mapping[str, nn.Module],
    with_features: Mapping[str, bool],
    dm: Any,
    split: str,
    positions: np.ndarray,
    device: torch.device,
    trainer: pl.Trainer | None,
    seed: int = 0,
) -> dict[str, Outputs]:
    """Outputs of each net on ``dm.dataset(split)[positions]``, in that order, gathered over ranks. A net asked for
    features computes ``head(features(x))`` (its ``forward`` for a ``Backbone``) and keeps ``features(x)``."""
    rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
    total = len(positions)
    mine = positions[rank::world]
    loader = eval_batches(dm.dataset(split), mine, int(dm.eval_batch_size), int(dm.num_workers), seed)
    parts: dict[str, dict[str, list[Tensor]]] = {k: {"logits": [], "features": []} for k in nets}
    ys: list[Tensor] = []
    idx: list[Tensor] = []
    for x, y, index in loader:
        x = x.to(device)
        for name, net in nets.items():
            xin = x.to(dtype_of(net))
            if with_features.get(name):
                f = net.features(xin)  # type: ignore[operator]
                logits = net.head(f)  # type: ignore[operator]
                parts[name]["features"].append(f.float())
            else:
                logits = net(xin)
            parts[name]["logits"].append(logits.float())
        ys.append(y.to(device))
        idx.append(index.to(device))

    num_classes = int(dm.num_classes)

    def cat(chunks: list[Tensor], width: int | None, dtype: torch.dtype) -> Tensor:
        if chunks:
            return torch.cat(chunks)
        shape = (0,) if width is None else (0, width)
        return torch.zeros(shape, dtype=dtype, device=device)

    y_all = gather_rows(cat(ys, None, torch.long), total, trainer)
    i_all = gather_rows(cat(idx, None, torch.long), total, trainer)
    result = {}
    for name, net in nets.items():
        logits = gather_rows(cat(parts[name]["logits"], num_classes, torch.float32), total, trainer)
        feats = None
        if with_features.get(name):
            dim = int(net.head.in_features)  # type: ignore[union-attr]
            feats = gather_rows(cat(parts[name]["features"], dim, torch.float32), total, trainer)
        result[name] = Outputs(logits, y_all, i_all, feats)
    return result


def eval_batches(view: Any, positions: np.ndarray, batch_size: int, num_workers: int, seed: int) -> Iterable[Any]:
    """Batches ``(x, y, index)`` of ``view[positions]`` in order. An untransformed view of in-memory images is sliced
    as tensors (the same values as the per-sample path, without ``__getitem__`` and collation per sample)."""
    base = getattr(view, "base", None)
    if isinstance(view, SplitView) and isinstance(base, InMemoryImages) and view.transform is None:
        index = torch.as_tensor(view.indices[positions], dtype=torch.long)
        labels = torch.as_tensor(view.targets[positions], dtype=torch.long)
        return (
            (base.images[i].float().div_(255.0), y, i)
            for i, y in zip(index.split(batch_size), labels.split(batch_size), strict=True)
        )
    # Its own generator: a DataLoader without one draws its workers' base seed from the global torch RNG on every
    # iteration, even unshuffled with num_workers=0.
    return DataLoader(
        Subset(view, positions.tolist()),
        batch_size=batch_size,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(int(seed)),
    )


def gather_rows(local: Tensor, total: int, trainer: pl.Trainer | None) -> Tensor:
    """Reassemble a split from strided shards: rank r holds rows r, r + W, r + 2W, ... of ``total`` rows. Every shard
    is padded to ``ceil(total / W)`` rows; after ``all_gather`` -> (W, L, ...), row j of rank r is global row j*W + r,
    so ``transpose(0, 1).reshape(-1)`` restores the order and the padding lands after row ``total``."""
    if trainer is None or trainer.world_size == 1:
        return local
    world = trainer.world_size
    if total == 0:
        return local
    length = math.ceil(total / world)
    pad = length - local.shape[0]
    if pad:
        local = torch.cat([local, local.new_zeros((pad, *local.shape[1:]))])
    gathered = trainer.strategy.all_gather(local.contiguous())  # (W, L, ...)
    return gathered.transpose(0, 1).reshape(world * length, *local.shape[1:])[:total]
