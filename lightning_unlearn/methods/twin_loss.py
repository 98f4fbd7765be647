"""TMU's unlearning objective: keep D_r and the predicted-easy part of D_f, unlearn the predicted-hard part.

Hu et al., "Towards Aligned Data Removal via Twin Machine Unlearning" (TMU; arXiv 2408.11433), sec. 4.1: the accuracy
on the predicted-hard samples is decreased (negative gradient, paper; random labels, the authors' code) while the
predicted-easy ones keep theirs.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["draw_other_labels", "twin_unlearning_loss"]


def draw_other_labels(labels: Tensor, num_classes: int, generator: torch.Generator | None = None) -> Tensor:
    """A uniformly random label different from each true label (``r + (r >= y)``, ``r ~ U{0..C-2}``)."""
    labels = torch.as_tensor(labels, dtype=torch.long).cpu()
    r = torch.randint(0, num_classes - 1, labels.shape, generator=generator)
    return r + (r >= labels).long()


def twin_unlearning_loss(
    logits: Tensor,
    targets: Tensor,
    hard: Tensor,
    mode: Literal["negative_gradient", "random_labels"] = "negative_gradient",
    random_targets: Tensor | None = None,
    hard_weight: float = 1.0,
    max_hard_loss: float | None = None,
) -> tuple[Tensor, Tensor]:
    """TMU's unlearning objective on a batch mixing D_r, easy D_f and predicted-hard D_f samples.

    With ``l_i = CE(f(x_i), y_i)`` and ``h_i = 1`` for predicted-hard forget samples (``hard``)::

        negative_gradient:  L = (1/B) [ sum_{h_i=0} l_i  -  hard_weight * sum_{h_i=1} min(l_i, max_hard_loss) ]
        random_labels:      L = (1/B) [ sum_{h_i=0} l_i  +  hard_weight * sum_{h_i=1} CE(f(x_i), y~_i) ]

    i.e. retained and predicted-easy samples keep their true labels (their accuracy is preserved) and only the
    predicted-hard samples are unlearnt, by gradient ascent (paper) or by fitting random labels ``y~ != y`` (code).
    The clamp (``max_hard_loss``, ``None``: off) stops the ascent on a sample once its loss passes the bound.

    Returns:
        ``(loss, mean CE of the hard samples under their true labels)`` (the second is 0 when the batch has none).
    """
    hard = hard.to(device=logits.device, dtype=torch.bool)
    ce = F.cross_entropy(logits, targets, reduction="none")
    keep = ce.masked_fill(hard, 0.0).sum()
    if mode == "negative_gradient":
        hard_ce = ce if max_hard_loss is None else ce.clamp(max=max_hard_loss)
        forget = -hard_ce.masked_fill(~hard, 0.0).sum()
    elif mode == "random_labels":
        if random_targets is None:
            raise ValueError("mode='random_labels' needs random_targets.")
        ce_rand = F.cross_entropy(logits, random_targets.to(logits.device), reduction="none")
        forget = ce_rand.masked_fill(~hard, 0.0).sum()
    else:
        raise ValueError(f"mode must be 'negative_gradient' or 'random_labels', got {mode!r}.")
    loss = (keep + hard_weight * forget) / max(logits.shape[0], 1)
    n_hard = int(hard.sum())
    hard_mean = ce.detach()[hard].mean() if n_hard else ce.new_zeros(())
    return loss, hard_mean
