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
    reduction: Literal["group", "batch"] = "group",
) -> tuple[Tensor, Tensor]:
    """TMU's unlearning objective on a batch mixing D_r, easy D_f and predicted-hard D_f samples.

    With ``l_i = CE(f(x_i), y_i)``, ``h_i = 1`` for predicted-hard forget samples (``hard``), ``K`` the kept samples
    (``h_i = 0``: retained and predicted-easy) and ``H`` the hard ones of the batch, ``w = hard_weight``::

        negative_gradient:  L = mean_{i in K} l_i  -  w * mean_{i in H} min(l_i, max_hard_loss)     (reduction="group")
        random_labels:      L = mean_{i in K} l_i  +  w * mean_{i in H} CE(f(x_i), y~_i)
        reduction="batch":  both sums divided by the batch size B instead (the form before issue 23)

    Kept samples keep their true labels (their accuracy is preserved) and only the predicted-hard samples are
    unlearnt, by gradient ascent (paper) or by fitting random labels ``y~ != y`` (code). ``"group"`` gives the hard
    samples of a batch weight ``w`` together however rare they are (``"batch"``: ``w |H| / B``, a few percent, too weak
    to move a memorised sample, whose CE gradient starts near zero). The clamp (``max_hard_loss``, ``None``: off)
    stops the ascent on a sample once its loss passes the bound, so a run cannot diverge on it. No value is read back
    to the host (an empty group contributes 0).

    Returns:
        ``(loss, mean CE of the hard samples under their true labels)`` (the second is 0 when the batch has none).
    """
    if reduction not in ("group", "batch"):
        raise ValueError(f"reduction must be 'group' or 'batch', got {reduction!r}.")
    hard = hard.to(device=logits.device, dtype=torch.bool)
    ce = F.cross_entropy(logits, targets, reduction="none")
    if mode == "negative_gradient":
        hard_term = -(ce if max_hard_loss is None else ce.clamp(max=max_hard_loss))
    elif mode == "random_labels":
        if random_targets is None:
            raise ValueError("mode='random_labels' needs random_targets.")
        hard_term = F.cross_entropy(logits, random_targets.to(logits.device), reduction="none")
    else:
        raise ValueError(f"mode must be 'negative_gradient' or 'random_labels', got {mode!r}.")
    keep_sum = ce.masked_fill(hard, 0.0).sum()
    hard_sum = hard_term.masked_fill(~hard, 0.0).sum()
    n_hard = hard.sum()
    if reduction == "batch":
        loss = (keep_sum + hard_weight * hard_sum) / max(logits.shape[0], 1)
    else:
        loss = keep_sum / (logits.shape[0] - n_hard).clamp(min=1) + hard_weight * hard_sum / n_hard.clamp(min=1)
    hard_mean = ce.detach().masked_fill(~hard, 0.0).sum() / n_hard.clamp(min=1)
    return loss, hard_mean
