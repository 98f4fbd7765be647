"""Bad Teacher (Chundawat, Tarun, Mandal & Kankanhalli, "Can Bad Teaching Induce Forgetting? Unlearning in Deep
Networks Using an Incompetent Teacher", AAAI 2023).

A student (initialised as the original model) distils from two frozen teachers: the competent teacher (the original
model) on retained samples and an incompetent teacher (a randomly initialised network of the same architecture) on
forget samples, so it keeps its behaviour on D_r and answers like a random network on D_f.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import ConcatDataset, DataLoader

from lightning_unlearn.backbones import Backbone, fresh_network
from lightning_unlearn.data.datasets import batch_indices, unpack_batch
from lightning_unlearn.methods.base import Frozen, OptimizerName
from lightning_unlearn.methods.finetune import (
    TrainModeMethod,
    check_finite,
    forget_mask,
    loader_batch_size,
    split_or_error,
)
from lightning_unlearn.methods.steps import log_step
from lightning_unlearn.search_space import FloatRange, IntRange, SearchSpace

__all__ = ["BadTeacher", "bad_teacher_loss"]


def bad_teacher_loss(
    student_logits: Tensor,
    competent_logits: Tensor,
    incompetent_logits: Tensor,
    is_forget: Tensor,
    temperature: float = 1.0,
    reduction: Literal["batchmean", "mean"] = "batchmean",
) -> Tensor:
    """The Bad Teacher objective (paper eq. 2-3)::

        l_i  = 1 if sample i is in D_f else 0
        T_i  = l_i * softmax(T_bad(x_i) / t) + (1 - l_i) * softmax(T_good(x_i) / t)
        loss = KL(T || softmax(S / t)) = sum_c T_ic (log T_ic - log softmax(S(x_i) / t)_c)

    ``reduction="batchmean"`` averages the per-sample KL over the batch (the KL divergence as written);
    ``"mean"`` divides the summed KL by batch size x classes, which is what the authors' code gets from
    ``F.kl_div(log_softmax(S/t), T)`` with PyTorch's default reduction (the same gradient direction, 1/C the size).
    """
    if reduction not in ("batchmean", "mean"):
        raise ValueError(f"reduction must be 'batchmean' or 'mean', got {reduction!r}.")
    weight = is_forget.to(student_logits.dtype).unsqueeze(1)
    target = weight * F.softmax(incompetent_logits / temperature, dim=1) + (1 - weight) * F.softmax(
        competent_logits / temperature, dim=1
    )
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    per_sample = F.kl_div(log_student, target, reduction="none").sum(dim=1)
    return per_sample.mean() if reduction == "batchmean" else per_sample.mean() / student_logits.shape[1]


class BadTeacher(TrainModeMethod):
    """Student-teacher unlearning with a competent and an incompetent (random) teacher.

    * student ``S``: the original model (trained);
    * competent teacher ``T_good``: frozen copy of the original (``self.original``);
    * incompetent teacher ``T_bad``: frozen, randomly initialised network of the same architecture
      (``fresh_network(backbone, seed)``: rebuilt from its config under ``torch.manual_seed(seed)``),
      ``self.incompetent``.

    Loss: :func:`bad_teacher_loss` -- KL from ``l*softmax(T_bad/t) + (1-l)*softmax(T_good/t)`` to ``softmax(S/t)``,
    ``l = 1`` on D_f samples, 0 on D_r samples (told apart by sample index). Data: D_f plus a random
    ``retain_fraction`` of D_r (drawn once with ``seed``), concatenated and shuffled; one epoch is one pass over it.
    Both teachers stay in eval mode without gradients for the whole run (:class:`Frozen`).

    Defaults and their source (paper sec. 4 and the authors' code): ``retain_fraction=0.3``, temperature ``t=1``,
    Adam ``lr=1e-4``, 1 epoch (``configs/unlearn/bad_teacher.yaml``). The code uses batch size 256; here the batch
    size defaults to the DataModule's. ``kl_reduction="batchmean"`` is the KL as written in the paper; ``"mean"``
    reproduces the code's ``F.kl_div`` default reduction.

    Args:
        backbone: the trained model to unlearn (from the CLI: ``--original_ckpt``).
        lr, momentum, weight_decay, optimizer, batch_size: optimizer and loader settings.
        retain_fraction: fraction of D_r used (0 < f <= 1).
        temperature: distillation temperature ``t``.
        kl_reduction: ``"batchmean"`` (paper) or ``"mean"`` (authors' code).
        seed: seed of the incompetent teacher's initialisation and of the D_r subset.
    """

    #: ``lightning_unlearn tune``'s search space (docs/tuning.md); overridable from YAML.
    search_space: ClassVar[SearchSpace] = {
        "lr": FloatRange(1e-5, 1e-2, log=True),
        "retain_fraction": FloatRange(0.1, 1.0),
        "temperature": FloatRange(0.5, 4.0, log=True),
        "max_epochs": IntRange(1, 5),
    }

    keeps_original = True
    train_splits = ("forget", "retain")

    def __init__(
        self,
        backbone: Backbone | None = None,
        lr: float = 1e-4,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        optimizer: OptimizerName = "adam",
        batch_size: int | None = None,
        retain_fraction: float = 0.3,
        temperature: float = 1.0,
        kl_reduction: Literal["batchmean", "mean"] = "batchmean",
        seed: int = 0,
    ) -> None:
        if not 0.0 < retain_fraction <= 1.0:
            raise ValueError(f"retain_fraction must be in (0, 1], got {retain_fraction}.")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        super().__init__(
            backbone=backbone,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            optimizer=optimizer,
            batch_size=batch_size,
        )
        if "incompetent" not in self._modules:
            self.incompetent: Frozen | None = None  # built by attach() (from the CLI: after --original_ckpt is read)
        self._forget_sorted = torch.empty(0, dtype=torch.long)

    def on_attach(self, backbone: Backbone) -> None:
        random_net = fresh_network(backbone, int(self.hparams.seed))
        random_net.to(next(backbone.parameters()).device)
        self.incompetent = Frozen(random_net)

    # -- data ------------------------------------------------------------------------------------------------------
    def build_train_dataloader(self, datamodule: Any) -> DataLoader:
        name = type(self).__name__
        forget = split_or_error(datamodule, "forget", augment=datamodule.augment, method=name)
        retain = split_or_error(datamodule, "retain", augment=datamodule.augment, method=name)
        rng = np.random.default_rng(int(self.hparams.seed))
        n = max(1, int(round(self.hparams.retain_fraction * len(retain))))
        subset = np.sort(rng.choice(len(retain), size=n, replace=False))
        retain_subset = retain.subset(subset)
        self._forget_sorted = torch.as_tensor(np.sort(forget.indices), dtype=torch.long)
        batch_size = loader_batch_size(self, datamodule)
        # A last batch of one sample cannot pass BatchNorm in train mode ("Expected more than 1 value per channel"):
        # drop it then, and only then (found by tuning retain_fraction).
        return datamodule.loader(
            ConcatDataset([forget, retain_subset]),
            shuffle=True,
            batch_size=batch_size,
            train=True,
            drop_last=(len(forget) + n) % batch_size == 1,
        )

    # -- step ------------------------------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, _ = unpack_batch(batch)
        idx = batch_indices(batch)
        if idx is None:
            raise ValueError("BadTeacher needs sample indices in batches (items (x, y, index)) to tell D_f from D_r.")
        assert self.original is not None and self.incompetent is not None
        is_forget, _ = forget_mask(idx, self._forget_sorted)
        with torch.no_grad():
            good = self.original(x)
            bad = self.incompetent(x)
        hp = self.hparams
        loss = bad_teacher_loss(
            self._require_model()(x), good, bad, is_forget, temperature=hp.temperature, reduction=hp.kl_reduction
        )
        check_finite(loss, self)
        log_step(self, "train/loss", loss, len(x))
        return loss
