"""Random Labels (RL): fine-tune on D_f with random labels together with D_r.

The "RL" baseline of Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency for Image
Classification", ICLR 2024 (SalUn is RL restricted to salient weights); the same idea as Graves et al.'s relabelling
"unlearning" (see :class:`~lightning_unlearn.methods.AmnesiacRelabel`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import ConcatDataset, DataLoader

from lightning_unlearn.backbones import Backbone
from lightning_unlearn.backbones.protocol import num_classes as network_classes
from lightning_unlearn.data.datasets import batch_indices, unpack_batch
from lightning_unlearn.methods.base import OptimizerName
from lightning_unlearn.methods.finetune import (
    TrainModeMethod,
    check_finite,
    forget_mask,
    loader_batch_size,
    split_or_error,
)
from lightning_unlearn.methods.steps import log_step
from lightning_unlearn.search_space import FloatRange, IntRange, SearchSpace

__all__ = ["RandomLabels", "draw_random_labels"]


def draw_random_labels(
    true_labels: Tensor,
    num_classes: int,
    generator: torch.Generator | None = None,
    include_true: bool = False,
) -> Tensor:
    """Random labels for ``true_labels``.

    ``include_true=False``: uniform over the ``num_classes - 1`` classes other than each sample's true label (draw
    ``r`` in ``[0, C-1)`` and skip the true class: ``r + (r >= y)``). ``include_true=True``: uniform over all ``C``
    classes (the SalUn code's ``np.random.randint(0, num_classes)``), so about ``1/C`` keep their true label.
    """
    if num_classes < 2:
        raise ValueError(f"Random labels need at least 2 classes, got num_classes={num_classes}.")
    true_labels = torch.as_tensor(true_labels, dtype=torch.long).cpu()
    if include_true:
        return torch.randint(0, num_classes, true_labels.shape, generator=generator)
    r = torch.randint(0, num_classes - 1, true_labels.shape, generator=generator)
    return r + (r >= true_labels).long()


class RandomLabels(TrainModeMethod):
    """Fine-tune on ``D_f`` with random labels plus ``D_r`` with its true labels::

        min_theta  sum_{(x, y) in D_f} CE(f_theta(x), y~)  +  sum_{(x, y) in D_r} CE(f_theta(x), y),   y~ random

    Data: one concatenated, shuffled dataset ``D_f + D_r`` (``torch.utils.data.ConcatDataset``), as the SalUn RL code
    does: every epoch is one pass over ``D_f ∪ D_r`` and the batches mix the two sets in their natural proportion. (A
    ``CombinedLoader`` would instead fix the per-batch ratio and cycle the smaller set, which changes how often D_f is
    seen; the concatenation keeps the paper's objective, a plain sum over both sets.)

    Labels: drawn per sample with a seeded ``torch.Generator`` (``seed``) and applied on the fly in ``training_step``
    from each batch's sample indices, so they do not depend on loader workers. ``redraw_each_epoch=True`` (default)
    draws new labels every epoch, as the SalUn code re-draws them each time its RL epoch function runs;
    ``False`` keeps the labels of epoch 0 for the whole run. ``include_true=False`` (default) draws among the *other*
    classes only (a label equal to the truth would teach D_f rather than unlearn it); ``True`` draws among all
    classes, as the SalUn code does.

    Defaults: SGD ``lr=0.01``, ``momentum=0.9``, ``weight_decay=5e-4`` and 10 epochs (``configs/unlearn/
    random_labels.yaml``) are the SalUn code's defaults (``--unlearn_lr 0.01 --unlearn_epochs 10``, momentum 0.9,
    weight decay 5e-4); the paper tunes the learning rate per setting.

    Args:
        backbone: the trained model to unlearn (from the CLI: ``--original_ckpt``).
        lr, momentum, weight_decay, optimizer, batch_size: optimizer and loader settings.
        include_true: allow a random label to equal the true label (SalUn code) instead of excluding it.
        redraw_each_epoch: new random labels every epoch (SalUn code) instead of one fixed draw.
        seed: seed of the label draws (epoch ``e`` uses ``seed + e`` when redrawing).
    """

    #: ``lightning_unlearn tune``'s search space (docs/tuning.md); overridable from YAML.
    search_space: ClassVar[SearchSpace] = {
        "lr": FloatRange(1e-4, 1e-1, log=True),
        "max_epochs": IntRange(1, 10),
    }

    train_splits = ("forget", "retain")

    def __init__(
        self,
        backbone: Backbone | None = None,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        optimizer: OptimizerName = "sgd",
        batch_size: int | None = None,
        include_true: bool = False,
        redraw_each_epoch: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(
            backbone=backbone,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            optimizer=optimizer,
            batch_size=batch_size,
        )
        self._forget_sorted = torch.empty(0, dtype=torch.long)
        self._forget_true = torch.empty(0, dtype=torch.long)
        self._labels = torch.empty(0, dtype=torch.long)
        self._labels_epoch: int | None = None

    # -- data ------------------------------------------------------------------------------------------------------
    def build_train_dataloader(self, datamodule: Any) -> DataLoader:
        name = type(self).__name__
        forget = split_or_error(datamodule, "forget", augment=datamodule.augment, method=name)
        retain = split_or_error(datamodule, "retain", augment=datamodule.augment, method=name)
        self._set_forget_set(forget.indices, forget.targets)
        return datamodule.loader(
            ConcatDataset([forget, retain]), shuffle=True, batch_size=loader_batch_size(self, datamodule), train=True
        )

    def _set_forget_set(self, indices: np.ndarray, targets: np.ndarray) -> None:
        order = np.argsort(indices, kind="stable")
        self._forget_sorted = torch.as_tensor(np.asarray(indices)[order], dtype=torch.long)
        self._forget_true = torch.as_tensor(np.asarray(targets)[order], dtype=torch.long)
        self._labels_epoch = None

    def random_labels(self, epoch: int) -> Tensor:
        """The random labels of D_f (in the order of sorted D_f indices) used in ``epoch``."""
        hp = self.hparams
        draw_epoch = epoch if hp.redraw_each_epoch else 0
        if self._labels_epoch != draw_epoch:
            gen = torch.Generator().manual_seed(int(hp.seed) + draw_epoch)
            num_classes = network_classes(self._require_model())
            self._labels = draw_random_labels(self._forget_true, num_classes, gen, include_true=hp.include_true)
            self._labels_epoch = draw_epoch
        return self._labels

    def relabel(self, y: Tensor, indices: Tensor, epoch: int | None = None) -> Tensor:
        """Replace the labels of the D_f samples in a batch (by their dataset ``indices``) with their random labels."""
        is_forget, pos = forget_mask(indices, self._forget_sorted)
        labels = self.random_labels(self.current_epoch if epoch is None else epoch).to(y.device)
        return torch.where(is_forget, labels[pos] if labels.numel() else y, y)

    # -- step ------------------------------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = unpack_batch(batch)
        idx = batch_indices(batch)
        if idx is None:
            raise ValueError(f"{type(self).__name__} needs sample indices in each batch: items (x, y, index).")
        y = self.relabel(y, idx)
        loss = F.cross_entropy(self._require_model()(x), y)
        check_finite(loss, self)
        log_step(self, "train/loss", loss, len(y))
        return loss
