"""Boundary Expanding (Chen, Gao, Liu, Peng & Zhou, "Boundary Unlearning: Rapid Forgetting of Deep Networks via
Shifting the Decision Boundary", CVPR 2023, sec. 4.2).

The classifier gets one extra *shadow* output; the whole network is fine-tuned on D_f with every sample labelled as the
shadow class, which pulls the forget samples' features into a new region of feature space; pruning the shadow output
then leaves them next to no class in particular. ``train_layers="head"`` (ours) fine-tunes the widened classifier only.
"""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_unlearn.backbones import Backbone
from lightning_unlearn.data.datasets import unpack_batch
from lightning_unlearn.methods.base import (
    OptimizerName,
    UnlearningMethod,
    forget_split,
    set_training_mode,
    sharded_loader,
)
from lightning_unlearn.methods.boundary_stop import StopTarget, StopWhenForgotten, check_stop
from lightning_unlearn.methods.guards import watch_step
from lightning_unlearn.methods.steps import log_step
from lightning_unlearn.search_space import FloatRange, IntRange, SearchSpace

__all__ = ["BoundaryExpanding", "ShadowInit", "TrainLayers", "prune_head", "widen_head"]

ShadowInit = Literal["linear", "xavier"]
TrainLayers = Literal["all", "head"]


def widen_head(head: nn.Linear, extra: int = 1, init: ShadowInit = "linear", seed: int = 0) -> nn.Linear:
    """A copy of ``head`` with ``extra`` more outputs: rows ``0..C-1`` copied, the new rows freshly initialised.

    ``init="linear"`` draws the new rows like ``nn.Linear``'s default (Kaiming-uniform weights with ``a=sqrt(5)``,
    bias ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``); ``"xavier"`` like the authors' code (``xavier_normal_`` weights, zero
    bias). The draw uses a CPU generator seeded with ``seed``, so it is the same on every device and every rank.
    """
    c, d = head.out_features, head.in_features
    gen = torch.Generator().manual_seed(int(seed))
    weight = torch.empty(c + extra, d)
    bias = torch.zeros(c + extra)
    if init == "linear":
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=gen)
        bound = 1.0 / math.sqrt(d) if d > 0 else 0.0
        nn.init.uniform_(bias, -bound, bound, generator=gen)
    elif init == "xavier":
        nn.init.xavier_normal_(weight, generator=gen)
    else:
        raise ValueError(f"Unknown shadow init {init!r}; choose 'linear' or 'xavier'.")
    wide = nn.Linear(d, c + extra, bias=head.bias is not None, device=head.weight.device, dtype=head.weight.dtype)
    with torch.no_grad():
        wide.weight.copy_(weight.to(wide.weight))
        wide.weight[:c].copy_(head.weight)
        if head.bias is not None:
            wide.bias.copy_(bias.to(wide.bias))
            wide.bias[:c].copy_(head.bias)
    return wide


def prune_head(head: nn.Linear, num_classes: int) -> nn.Linear:
    """A new ``nn.Linear`` holding rows ``0..num_classes-1`` of ``head`` (the shadow rows dropped)."""
    pruned = nn.Linear(
        head.in_features, num_classes, bias=head.bias is not None, device=head.weight.device, dtype=head.weight.dtype
    )
    with torch.no_grad():
        pruned.weight.copy_(head.weight[:num_classes])
        if head.bias is not None:
            pruned.bias.copy_(head.bias[:num_classes])
    return pruned


class BoundaryExpanding(StopWhenForgotten, UnlearningMethod):
    """Boundary Expanding: fine-tune with a shadow class on D_f, then prune the shadow output.

    With ``C`` classes, the head ``W in R^{C x d}`` is widened to ``[W; w_s] in R^{(C+1) x d}`` (``w_s`` freshly
    initialised) in :meth:`on_attach`, so the optimizer sees the widened head. Then ``max_epochs`` epochs over D_f
    minimise (paper sec. 4.2)::

        L = CE( f_{[W; w_s]}(x), C )      for (x, y) in D_f   (every forget sample labelled as the shadow class)

    updating the whole network (``train_layers="head"``: only ``[W; w_s]``, the body frozen in eval mode; in neither
    the paper nor the authors' code, see docs/methods/boundary_expanding.md). :meth:`unlearned_backbone` returns a copy
    with the head pruned back to rows ``0..C-1``: the original architecture (``config()`` unchanged, loadable with
    ``build_backbone``). During training :meth:`forward` returns the first ``C`` logits, i.e. what the pruned model
    would output.

    Defaults follow the authors' code: SGD ``lr=1e-5``, ``momentum=0.9``, batch 64, 10 epochs (the Trainer's
    ``max_epochs``; ``configs/unlearn/boundary_expanding.yaml`` sets it). The code initialises the widened layer with
    ``xavier_normal_`` and zero bias (``shadow_init="xavier"``); the default here is ``nn.Linear``'s initialisation.

    The backbone passed in is not modified: the method trains a deep copy (its head changes shape).

    Args:
        backbone: the trained model to unlearn (from the CLI: ``--original_ckpt``).
        shadow_init: ``"linear"`` (``nn.Linear`` default) or ``"xavier"`` (authors' code) for the shadow row.
        seed: seed of the shadow row's initialisation.
        train_layers: ``"all"`` (the paper and the authors' code) fine-tunes the whole network; ``"head"`` only the
            widened classifier, on the frozen body's features (eval mode): the body's features, and with them the
            other classes' decisions, stay as they were.
        train_bn: BatchNorm in train mode during fine-tuning, as the authors' code (``model.train()``; the paper does
            not say). ``False`` keeps BatchNorm layers in eval mode (running statistics frozen). ``None`` (default):
            ``True`` with ``train_layers="all"``, ``False`` with ``"head"`` (where ``True`` is refused: it would change
            the frozen body's statistics).
        shuffle: shuffle D_f every epoch.
        augment: apply the DataModule's training augmentation to D_f.
        stop_at_forget_acc: end fine-tuning after the first epoch whose D_f accuracy (eval mode) is at most this
            (``None``, the default: the paper's fixed schedule); ``"estimate"``: the gold model's D_f accuracy
            estimated from held-out data, plus ``stop_margin`` (:mod:`~.boundary_stop`). Costs one forward pass over
            D_f per epoch (``"estimate"``: and one over held-out samples of D_f's classes at the start).
        stop_margin: added to the ``"estimate"`` target.
        stop_every_n_steps: check the D_f accuracy after every n-th optimizer step too, and end there (``None``: at
            epoch ends only). For a D_f that one epoch moves past the target (random forgetting). Each check costs a
            forward pass over D_f.
        lr, momentum, weight_decay, optimizer, batch_size: see :class:`UnlearningMethod`.
    """

    #: ``lightning_unlearn tune``'s search space (docs/tuning.md); overridable from YAML.
    search_space: ClassVar[SearchSpace] = {
        "lr": FloatRange(1e-6, 1e-2, log=True),
        "max_epochs": IntRange(1, 10),
    }

    train_splits = ("forget",)
    #: Number of real classes ``C``; the shadow class is index ``C`` (set by :meth:`on_attach`).
    num_classes: int | None = None
    _requires_grad: list[bool] | None = None

    def __init__(
        self,
        backbone: Backbone | None = None,
        shadow_init: ShadowInit = "linear",
        seed: int = 0,
        train_layers: TrainLayers = "all",
        train_bn: bool | None = None,
        lr: float = 1e-5,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        optimizer: OptimizerName = "sgd",
        batch_size: int | None = 64,
        shuffle: bool = True,
        augment: bool = False,
        stop_at_forget_acc: StopTarget = None,
        stop_margin: float = 0.0,
        stop_every_n_steps: int | None = None,
    ) -> None:
        if shadow_init not in ("linear", "xavier"):
            raise ValueError(f"Unknown shadow_init {shadow_init!r}; choose 'linear' or 'xavier'.")
        if train_layers not in ("all", "head"):
            raise ValueError(f"Unknown train_layers {train_layers!r}; choose 'all' or 'head'.")
        if train_layers == "head" and train_bn:
            raise ValueError("train_bn=True would change the frozen body's BatchNorm statistics with "
                             "train_layers='head'; leave train_bn unset (or False).")
        check_stop(stop_at_forget_acc, stop_margin, stop_every_n_steps)
        super().__init__(
            backbone=backbone,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            optimizer=optimizer,
            batch_size=batch_size,
        )

    def on_attach(self, backbone: Backbone) -> None:
        head = backbone.head
        self.num_classes = head.out_features
        model = copy.deepcopy(backbone)
        model.head = widen_head(head, 1, init=self.hparams.shadow_init, seed=self.hparams.seed)
        self._requires_grad = [p.requires_grad for p in model.parameters()]  # as they came in (head: as widened)
        if self.head_only:  # the body gets no gradient (nor a DDP bucket); unlearned_backbone gives the flags back
            head_params = {id(p) for p in model.head.parameters()}
            for p in model.parameters():
                p.requires_grad_(p.requires_grad and id(p) in head_params)
        self.model = model

    @property
    def head_only(self) -> bool:
        return self.hparams.train_layers == "head"

    @property
    def shadow_class(self) -> int:
        if self.num_classes is None:
            raise RuntimeError("BoundaryExpanding has no model: attach a backbone first.")
        return self.num_classes

    def forward(self, x: Tensor) -> Tensor:
        return self._require_model()(x)[:, : self.shadow_class]

    def unlearned_backbone(self) -> Backbone:
        """A copy of the trained network with the shadow output pruned (``C`` outputs, original architecture)."""
        model = self._require_model()
        head = model.head
        model.head = prune_head(head, self.shadow_class)  # swap so the deep copy does not duplicate the wide head
        try:
            pruned = copy.deepcopy(model)
        finally:
            model.head = head
        for p, flag in zip(pruned.parameters(), self._requires_grad or [], strict=False):
            p.requires_grad_(flag)  # as the backbone came in (a head-only run froze the body of its working copy)
        return pruned

    # -- Lightning -------------------------------------------------------------------------------------------------
    def build_train_dataloader(self, datamodule: Any) -> DataLoader:
        ds = forget_split(datamodule, augment=self.hparams.augment)
        return sharded_loader(self, datamodule, ds, shuffle=self.hparams.shuffle, batch_size=self.method_batch_size)

    def on_train_start(self) -> None:
        self.start_stop_rule()  # before training changes the model (StopWhenForgotten)
        model = self._require_model()
        if self.head_only:
            model.eval()  # the body computes the features it has at test time (BatchNorm, dropout)
            model.head.train()
        else:
            set_training_mode(model, self.hparams.train_bn is not False)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, _ = unpack_batch(batch)
        logits = self._require_model()(x)
        target = torch.full((x.shape[0],), self.shadow_class, dtype=torch.long, device=x.device)
        loss = F.cross_entropy(logits, target)
        watch_step(self, ~torch.isfinite(loss), _loss_message, loss)  # no host sync per step (guards.StepWatch)
        log_step(self, "train/loss", loss, x.shape[0])
        return loss


def _loss_message(step: int, epoch: int, values: list[float]) -> str:
    return f"BoundaryExpanding loss became {values[0]} at step {step} (epoch {epoch}); lower `lr`."
