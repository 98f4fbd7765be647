"""Deletion requests that keep coming: the ledger an unlearned model's checkpoint keeps, and where the next request
starts from.

Every unlearned checkpoint records, beside its splits, ``ledger``: one entry per request the model went through (what
was forgotten: the spec, the classes, the sorted indices and their hash; by which method and settings; when; how long
it took; from which checkpoint). A further request on such a model is made with a DataModule that knows the ledger
(:meth:`~lightning_unlearn.data.UnlearningDataModule.continue_from`): it keeps the first request's holdout, chooses
the new D_f among the samples not forgotten yet, and leaves everything forgotten so far out of D_r, so that the gold
model of request ``k`` is retrained without all of it (:class:`PreviousRequests`, :func:`~.forget.sequential_splits`).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightning_unlearn.data.forget import ForgetSpec, Splits, index_hash

__all__ = ["PreviousRequests", "forgotten_indices", "ledger_entry", "ledger_of", "next_request_record"]

#: Key of the splits record (``meta["splits"]``) of an unlearned model that says what the next request starts from.
NEXT_KEY = "next_request"


def ledger_of(meta: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The requests a checkpoint's record lists (empty for a trained model)."""
    ledger = (meta or {}).get("ledger") or []
    return [dict(entry) for entry in ledger]


def forgotten_indices(ledger: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Every training index the requests of ``ledger`` forgot, sorted."""
    parts = [np.asarray(entry.get("forget_indices") or [], dtype=np.int64) for entry in ledger]
    return np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)


def forgotten_classes(ledger: Sequence[Mapping[str, Any]]) -> list[int]:
    """Every class the requests of ``ledger`` forgot whole, sorted."""
    return sorted({int(c) for entry in ledger for c in entry.get("forget_classes") or []})


def ledger_entry(
    splits: Splits,
    spec: ForgetSpec | None,
    method: Mapping[str, Any],
    *,
    request: int,
    unlearn_time_s: float | None,
    input_ckpt: str | None,
    input_sha256: str | None = None,
) -> dict[str, Any]:
    """One request as the ledger records it (``method``: ``UnlearningMethod.method_config()``)."""
    return {
        "request": int(request),
        "forget_spec": spec.describe() if spec is not None else None,
        "forget_classes": list(splits.forget_classes),
        "forget_indices": [int(i) for i in np.sort(splits.forget)],
        "forget_hash": index_hash(splits.forget),
        "num_forgotten": int(len(splits.forget)),
        "method": method.get("method"),
        "hparams": dict(method.get("hparams") or {}),
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "unlearn_time_s": unlearn_time_s,
        "input_ckpt": input_ckpt,
        "input_sha256": input_sha256,
    }


def next_request_record(splits: Splits, request: int) -> dict[str, Any]:
    """What the splits record of request ``request``'s unlearned model says about the next request: its number, the
    hash of everything forgotten once this one is done, and the classes forgotten whole."""
    return {
        "request": int(request) + 1,
        "forgotten": index_hash(splits.cumulative_forget),
        "forgotten_classes": sorted(set(splits.forgotten_classes) | set(splits.forget_classes)),
    }


def describe(entry: Mapping[str, Any]) -> str:
    """``request 1: {'classes': [3]} (131 samples) by BoundaryShrink at 2025-...``."""
    return (
        f"request {entry.get('request')}: {entry.get('forget_spec')} ({entry.get('num_forgotten')} samples) by "
        f"{entry.get('method')} at {entry.get('time')}"
    )


@dataclass(frozen=True)
class PreviousRequests:
    """What a new deletion request on an unlearned model starts from.

    Attributes:
        holdout: the first request's holdout (the non-members; unchanged for the model's whole life).
        forgotten: every training index forgotten so far; forgotten_classes: the classes forgotten whole.
        request: the number of the new request (2 after one request).
        ledger: the earlier requests, as recorded.
    """

    holdout: np.ndarray
    forgotten: np.ndarray
    forgotten_classes: tuple[int, ...]
    request: int
    ledger: tuple[dict[str, Any], ...]

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any] | None) -> PreviousRequests | None:
        """From a checkpoint's record; ``None`` for a model no request was made on (a trained one)."""
        ledger = ledger_of(meta)
        if not ledger:
            return None
        splits = (meta or {}).get("splits") or {}
        if "holdout_indices" not in splits:
            raise ValueError("The checkpoint has a ledger but no holdout record: it was not written by `unlearn`.")
        return cls(
            holdout=np.asarray(splits["holdout_indices"], dtype=np.int64),
            forgotten=forgotten_indices(ledger),
            forgotten_classes=tuple(forgotten_classes(ledger)),
            request=len(ledger) + 1,
            ledger=tuple(ledger),
        )

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> PreviousRequests:
        """From an unlearned checkpoint (read with ``torch.load(weights_only=True)``); one line if it has no ledger."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"previous_ckpt {path} not found: give the unlearned checkpoint of the last request."
            )
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        found = cls.from_meta(ckpt.get("lightning_unlearn") if isinstance(ckpt, dict) else None)
        if found is None:
            raise ValueError(
                f"previous_ckpt {path} records no deletion request (no ledger): give the unlearned checkpoint of the "
                "last request (`unlearn`'s output), or leave previous_ckpt out for a first request."
            )
        return found

    def describe(self) -> str:
        return "; ".join(describe(entry) for entry in self.ledger)
