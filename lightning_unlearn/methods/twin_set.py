"""TMU's twin set D_e: held-out samples matched to D_f class by class, sized by the ratio rule (paper Eq. 3).

Reference: Hu et al., "Towards Aligned Data Removal via Twin Machine Unlearning" (TMU; arXiv 2408.11433), sec. 4.2:
the twin problem forgets D_e; keeping its forgetting ratio equal to the original problem's makes the two problems
alike. :class:`~lightning_unlearn.methods.twin.TwinUnlearning` draws D_e with :func:`select_twin_set`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["TwinSelection", "select_twin_set", "twin_set_size"]


def twin_set_size(n_forget: int, n_retain: int, n_twin_retain: int | None = None) -> int:
    """Size of D_e that keeps the twin problem's forgetting ratio equal to the original one.

    ``|D_e| / |D_r^twin| = |D_f| / |D_r|``, so ``|D_e| = round(|D_f| * |D_r^twin| / |D_r|)``. TMU's twin problem
    retains ``D_r^twin = D_r ∪ D_f`` (``TwinUnlearning`` passes ``n_twin_retain = |D_r| + |D_f|``); the default
    ``n_twin_retain = n_retain`` gives ``|D_e| = |D_f|``.
    """
    if n_forget < 0 or n_retain <= 0:
        raise ValueError(f"Need n_forget >= 0 and n_retain > 0, got {n_forget} and {n_retain}.")
    n_twin_retain = n_retain if n_twin_retain is None else n_twin_retain
    return int(round(n_forget * n_twin_retain / n_retain))


@dataclass(frozen=True)
class TwinSelection:
    """The twin set as positions into the candidate pool.

    Attributes:
        positions: position of each D_e sample in the candidate arrays (a position repeats for augmented copies).
        is_copy: True where the sample is an extra, augmented copy (drawn because the pool of that class was short).
    """

    positions: np.ndarray
    is_copy: np.ndarray

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def num_copies(self) -> int:
        return int(self.is_copy.sum())


def select_twin_set(
    candidate_labels: Sequence[int] | np.ndarray,
    forget_labels: Sequence[int] | np.ndarray,
    seed: int = 0,
    size: int | None = None,
    augment: bool = True,
) -> TwinSelection:
    """Choose D_e from a candidate pool (held-out data) so that it matches D_f class by class.

    For each class ``c`` in D_f, ``n_c`` = the number of D_f samples of class ``c`` (scaled to ``size`` when given, by
    largest remainders) candidates of class ``c`` are drawn without replacement. When the pool has fewer than ``n_c``,
    all of them are taken once and the rest are augmented copies (``is_copy``) cycling through a random permutation of
    the pool (``augment=False``: no copies, D_e is then smaller than D_f). Classes absent from D_f are never drawn, so
    for sub-class forgetting D_e holds only samples of the forgotten class (TMU's setting). Deterministic in ``seed``.

    Raises:
        ValueError: a class of D_f has no candidate at all.
    """
    cand = np.asarray(candidate_labels, dtype=np.int64)
    forget = np.asarray(forget_labels, dtype=np.int64)
    classes, counts = np.unique(forget, return_counts=True)
    if size is not None and len(forget):
        counts = _apportion(counts, size)
    rng = np.random.default_rng(seed)
    positions, copies = [], []
    for c, n in zip(classes.tolist(), counts.tolist()):
        pool = np.flatnonzero(cand == c)
        if n == 0:
            continue
        if len(pool) == 0:
            raise ValueError(
                f"No held-out sample of class {c} to build the twin set D_e from (D_f has {n} samples of it). Raise "
                "the DataModule's `holdout_fraction`."
            )
        perm = rng.permutation(pool)
        if len(pool) >= n:
            positions.append(np.sort(perm[:n]))
            copies.append(np.zeros(n, dtype=bool))
        else:
            extra = n - len(pool) if augment else 0
            positions.append(np.concatenate([np.sort(pool), perm[np.arange(extra) % len(pool)]]))
            copies.append(np.concatenate([np.zeros(len(pool), dtype=bool), np.ones(extra, dtype=bool)]))
    if not positions:
        return TwinSelection(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool))
    return TwinSelection(np.concatenate(positions).astype(np.int64), np.concatenate(copies))


def _apportion(counts: np.ndarray, total: int) -> np.ndarray:
    """Scale ``counts`` to sum to ``total`` (largest remainders; ties to the first class)."""
    exact = counts * (total / counts.sum())
    out = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - out), kind="stable")
    out[order[: total - int(out.sum())]] += 1
    return out
