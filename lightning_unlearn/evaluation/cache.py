"""Work an evaluation can share with the next ones of the same setting: the reference networks' outputs (gold,
original, ZRF's random initialisations), the random networks themselves and the metrics that depend on the gold
model only (its accuracies and attacks).

A benchmark evaluates every method of a group against the same gold and original models on the same splits; without
this each run forwards them again and refits the gold model's attacks (issue 17: 66 of 72 identical computations).
Give every evaluator of a group one :class:`ReferenceCache` (``evaluator.reference_cache = cache``); results are
identical with and without it (entries are keyed by a digest of the network's weights, the split's hash, the
positions and the evaluator's options, and read-only once stored).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["ReferenceCache", "weights_digest"]


def weights_digest(net: nn.Module) -> str:
    """sha1 over every parameter's and buffer's name, dtype, shape and bytes (what the network computes from)."""
    h = hashlib.sha1()
    for name, t in net.state_dict().items():
        if not torch.is_tensor(t):
            continue
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class ReferenceCache:
    """In-memory store shared by the evaluations of one setting (see the module docstring). Not thread-safe."""

    def __init__(self) -> None:
        self._digests: dict[int, tuple[Any, str]] = {}
        self._outputs: dict[tuple[Any, ...], Any] = {}
        self._randoms: dict[tuple[Any, ...], list[nn.Module]] = {}
        self._metrics: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._checkpoints: dict[tuple[Any, ...], tuple[nn.Module, dict[str, Any]]] = {}
        self.hits = 0
        self.misses = 0

    def digest(self, net: nn.Module) -> str:
        """:func:`weights_digest`, remembered per object (the reference networks are never changed)."""
        found = self._digests.get(id(net))
        if found is not None and found[0]() is net:
            return found[1]
        import weakref

        value = weights_digest(net)
        self._digests[id(net)] = (weakref.ref(net), value)
        return value

    def checkpoint(
        self, path: str, load: Callable[[], tuple[nn.Module, dict[str, Any]]]
    ) -> tuple[nn.Module, dict[str, Any]]:
        """``load()`` of the checkpoint at ``path``, once per file version (path, size, modification time)."""
        import os

        st = os.stat(path)
        key = ("checkpoint", os.path.abspath(path), st.st_size, st.st_mtime_ns)
        if key not in self._checkpoints:
            self._checkpoints[key] = load()
        model, meta = self._checkpoints[key]
        return model, dict(meta)

    def randoms(self, key: tuple[Any, ...], build: Callable[[], list[nn.Module]]) -> list[nn.Module]:
        """ZRF's random networks for ``key`` (architecture, seed, count), built once."""
        if key not in self._randoms:
            self._randoms[key] = build()
        return self._randoms[key]

    def outputs(self, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        if key in self._outputs:
            self.hits += 1
            return self._outputs[key]
        self.misses += 1
        value = self._outputs[key] = compute()
        return value

    def get_outputs(self, key: tuple[Any, ...]) -> Any:
        found = self._outputs.get(key)
        if found is not None:
            self.hits += 1
        return found

    def put_outputs(self, key: tuple[Any, ...], value: Any) -> None:
        self.misses += 1
        self._outputs[key] = value

    def metrics(self, key: tuple[Any, ...], compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """A dict of metrics for ``key``, computed once (a copy is returned)."""
        if key not in self._metrics:
            self.misses += 1
            self._metrics[key] = dict(compute())
        else:
            self.hits += 1
        return dict(self._metrics[key])


def positions_key(positions: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(positions, dtype=np.int64).tobytes()).hexdigest()


def options_key(options: dict[str, Any]) -> str:
    return json.dumps(options, sort_keys=True, default=str)
