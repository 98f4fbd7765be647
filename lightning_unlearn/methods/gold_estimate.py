"""What the gold (retrained) model will score on D_f, estimated without it: the original's accuracy on unseen data.

The gold model never saw D_f, so on D_f it behaves as on any unseen sample of the same classes, except that it lost
the classes D_r no longer holds. The original's accuracy on held-out samples of a class (data it never saw either)
estimates the first; the second is 0. So, with ``n_c`` the D_f samples of class ``c``::

    Acc_gold(D_f) ≈ (1 / |D_f|) Σ_c n_c · [c ∈ D_r] · Acc_original(held-out samples of c)

This is the quantity TMU's twin problem measures (its gold model is the original, its forget set held-out data:
:mod:`~.twin_split`), and the stop target of Boundary Shrink/Expanding's ``stop_at_forget_acc="estimate"``. It is
biased upwards where D_f is a large part of a class the gold model still learns (fewer samples of the class: lower
accuracy), and it is 0 for whole-class forgetting, where the gold model cannot name the class.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from lightning_unlearn.data.datasets import SplitView, unpack_batch

__all__ = ["estimate_gold_forget_accuracy", "unseen_accuracy_per_class"]


@torch.no_grad()
def unseen_accuracy_per_class(model: nn.Module, datamodule: Any, classes: list[int], cap: int | None = 5000,
                              seed: int = 0) -> dict[int, tuple[float, int]]:
    """Per class in ``classes``: ``(accuracy of model on unseen samples of the class, how many)``.

    Unseen samples are the ``holdout`` split (the ``test`` split when the DataModule holds nothing out), at most
    ``cap`` per class drawn with ``seed``. A class with no unseen sample is left out. ``model`` is run in eval mode
    on its own device, without augmentation.
    """
    name = "holdout" if len(datamodule.indices("holdout")) else "test"
    pool = datamodule.dataset(name)
    targets = np.asarray(pool.targets)
    device = next(model.parameters()).device
    rng = np.random.default_rng(seed)
    was_training = model.training
    model.eval()
    out: dict[int, tuple[float, int]] = {}
    try:
        for c in classes:
            members = np.flatnonzero(targets == c)
            if cap is not None and len(members) > cap:
                members = np.sort(rng.choice(members, cap, replace=False))
            if len(members) == 0:
                continue
            view = SplitView(pool.base, pool.indices[members], pool.transform)
            right = 0
            for batch in datamodule.loader(view, shuffle=False):
                x, y = unpack_batch(batch)
                right += int((model(x.to(device)).argmax(1).cpu() == y.cpu()).sum())
            out[int(c)] = (right / len(members), len(members))
    finally:
        model.train(was_training)
    return out


def estimate_gold_forget_accuracy(model: nn.Module, datamodule: Any, cap: int | None = 5000, seed: int = 0) -> float:
    """``Acc_gold(D_f)`` estimated as in the module docstring, ``model`` being the original."""
    forget = np.asarray(datamodule.dataset("forget").targets)
    if len(forget) == 0:
        raise ValueError("The forget set D_f is empty: there is nothing to estimate.")
    retained = set(np.unique(np.asarray(datamodule.dataset("retain").targets)).tolist())
    classes, counts = np.unique(forget, return_counts=True)
    kept = [int(c) for c in classes if int(c) in retained]
    acc = {c: a for c, (a, _) in unseen_accuracy_per_class(model, datamodule, kept, cap, seed).items()} if kept else {}
    if kept and not acc:
        raise ValueError("No unseen (held-out or test) sample of the classes of D_f: cannot estimate the gold accuracy.")
    fallback = float(np.mean(list(acc.values()))) if acc else 0.0  # a kept class without unseen samples
    total = sum(acc.get(int(c), fallback) * n for c, n in zip(classes, counts) if int(c) in retained)
    return float(total / len(forget))
