"""UNSIR (Tarun, Chundawat, Mandal & Kankanhalli, "Fast Yet Effective Machine Unlearning", IEEE TNNLS 2023).

Class-wise forgetting: learn, per forgotten class, a batch of noise that maximises the original model's loss on that
class; impair the model by training one epoch on the noise (labelled with its class) together with a per-class subset of
D_r; repair it by training one epoch on D_r. Reference code: github.com/vikram2000b/Fast-Machine-Unlearning
(``Machine Unlearning.ipynb``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import ConcatDataset, Dataset

from lightning_unlearn.backbones import Backbone
from lightning_unlearn.data.datasets import SplitView, unpack_batch
from lightning_unlearn.methods.base import OptimizerName, PhasedLoader, sharded_loader
from lightning_unlearn.methods.finetune import TrainModeMethod, check_finite, split_or_error
from lightning_unlearn.methods.optim import make_optimizer
from lightning_unlearn.methods.steps import log_step
from lightning_unlearn.search_space import FloatRange, IntRange, SearchSpace
from lightning_unlearn.utils import eval_mode, param_dtype

__all__ = ["UNSIR", "error_maximizing_noise"]


def error_maximizing_noise(
    model: nn.Module,
    target_class: int,
    shape: tuple[int, ...],
    steps: int = 40,
    lr: float = 0.1,
    reg: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, list[float]]:
    """Noise ``z`` (``shape = (N, C, H, W)``, in the model's normalised input space) minimising, with Adam::

        L(z) = - CE(f(z), target_class) + reg * (1/N) sum_i ||z_i||^2

    (the reference code's objective: maximise the loss of the class, keep the noise small). ``z ~ N(0, 1)`` at the
    start. ``model`` takes [0, 1] pixels and normalises inside (a lightning_unlearn backbone), so it is fed
    ``z * std + mean``; returns that pixel-space noise and the objective at every step. The model is not changed:
    eval mode, gradients only for ``z``.
    """
    p = next(model.parameters())
    mean = getattr(model, "mean", torch.zeros(())).to(p.device)
    std = getattr(model, "std", torch.ones(())).to(p.device)
    z = torch.randn(shape, generator=generator).to(p.device).requires_grad_(True)
    opt = make_optimizer([z], "adam", lr)
    labels = torch.full((shape[0],), int(target_class), dtype=torch.long, device=p.device)
    history: list[float] = []
    with eval_mode(model), torch.enable_grad():
        for _ in range(steps):
            x = (z * std + mean).to(param_dtype(model))
            loss = -F.cross_entropy(model(x).float(), labels) + reg * z.pow(2).flatten(1).sum(1).mean()
            (grad,) = torch.autograd.grad(loss, [z])
            opt.zero_grad(set_to_none=True)
            z.grad = grad
            opt.step()
            history.append(float(loss.detach()))
    return (z.detach() * std + mean).cpu(), history


class NoiseSamples(Dataset):
    """``copies`` repetitions of each class's noise batch, items ``(x, class, -1 - j)`` (negative: not a data index)."""

    def __init__(self, noise: dict[int, Tensor], copies: int) -> None:
        self.blocks = [(c, noise[c]) for c in sorted(noise)]
        self.per_class = {c: len(n) * copies for c, n in self.blocks}
        self.copies = copies

    def __len__(self) -> int:
        return sum(self.per_class.values())

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        offset = 0
        for c, n in self.blocks:
            if i < offset + len(n) * self.copies:
                j = (i - offset) % len(n)
                return n[j], c, -1 - (offset // self.copies + j)
            offset += len(n) * self.copies
        raise IndexError(i)


class UNSIR(TrainModeMethod):
    """UNSIR: error-maximising noise, then impair (epoch 0: noise + D_r subset) and repair (epochs 1..: D_r subset).

    Noise: for each forgotten class ``c``, :func:`error_maximizing_noise` with ``noise_batch_size`` samples,
    ``noise_steps`` Adam steps (``noise_lr``, regulariser ``noise_reg``), seeded with ``seed``; learned when the
    training loader is built (before the first step, outside autocast). Impair data: ``noise_copies`` copies of each
    noise batch, labelled ``c``, plus ``retain_per_class`` random samples (seeded) of every retained class, shuffled
    together; loss CE; optimizer ``optimizer``/``lr``. Repair: cross-entropy on the same D_r subset
    (``repair_on="retain"``: all of D_r) with a fresh optimizer at ``repair_lr``. ``max_epochs`` = 1 impair +
    (max_epochs - 1) repair epochs (2 in the paper and ``configs/unlearn/unsir.yaml``). Batches: ``{"impair": batch}``
    / ``{"repair": batch}`` (:class:`PhasedLoader`). Class-wise forgetting only: any other forget spec is refused when
    the loader is built.

    Defaults (the reference notebook): noise batch 256, 5 x 8 = 40 noise steps, Adam lr 0.1, reg 0.1; 20 copies;
    1000 samples per retained class; batch 256; impair Adam lr 0.02, repair Adam lr 0.01.

    Args:
        backbone: the trained model (from the CLI: ``--original_ckpt``).
        lr, momentum, weight_decay, optimizer: the impair optimizer (the repair one: same kind, ``repair_lr``).
        batch_size: impair and repair batch size.
        repair_lr: learning rate of the repair optimizer.
        noise_batch_size, noise_steps, noise_lr, noise_reg, noise_copies: the noise (see above).
        retain_per_class: D_r samples per retained class (all of a class if it has fewer).
        repair_on: ``"subset"`` (reference code) or ``"retain"`` (all of D_r).
        seed: seed of the noise and of the D_r subset.
    """

    #: ``lightning_unlearn tune``'s search space (docs/tuning.md); overridable from YAML.
    search_space: ClassVar[SearchSpace] = {
        "lr": FloatRange(1e-4, 1e-1, log=True),
        "repair_lr": FloatRange(1e-4, 1e-1, log=True),
        "max_epochs": IntRange(2, 4),
    }

    train_splits = ("retain",)

    def __init__(
        self,
        backbone: Backbone | None = None,
        lr: float = 0.02,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        optimizer: OptimizerName = "adam",
        batch_size: int | None = 256,
        repair_lr: float = 0.01,
        noise_batch_size: int = 256,
        noise_steps: int = 40,
        noise_lr: float = 0.1,
        noise_reg: float = 0.1,
        noise_copies: int = 20,
        retain_per_class: int = 1000,
        repair_on: Literal["subset", "retain"] = "subset",
        seed: int = 0,
    ) -> None:
        for name, v in (("noise_batch_size", noise_batch_size), ("noise_copies", noise_copies),
                        ("retain_per_class", retain_per_class)):
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}.")
        if noise_steps < 0 or noise_reg < 0:
            raise ValueError(f"noise_steps and noise_reg must be >= 0, got {noise_steps} and {noise_reg}.")
        if repair_on not in ("subset", "retain"):
            raise ValueError(f"repair_on must be 'subset' or 'retain', got {repair_on!r}.")
        super().__init__(
            backbone=backbone,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            optimizer=optimizer,
            batch_size=batch_size,
        )
        self.automatic_optimization = False  # two optimizers: impair, then a fresh one for repair (as the code)
        self.noise: dict[int, Tensor] = {}
        self.noise_history: dict[int, list[float]] = {}

    @staticmethod
    def check_classwise(datamodule: Any) -> list[int]:
        """The forgotten classes, or one error line when the forget spec is not class-wise."""
        spec = getattr(datamodule, "forget", None)
        mode = getattr(spec, "mode", None)
        if mode != "classwise":
            raise ValueError(
                f"UNSIR forgets whole classes only (its noise maximises the loss of a class); the forget spec is "
                f"{spec.describe() if spec is not None else None} ({mode or 'nothing to forget'}). Use "
                "`ForgetSpec(classes=[...])` without per_class, or another method for random/sub-class/index "
                "forgetting."
            )
        return [int(c) for c in spec.classes]

    # -- data ------------------------------------------------------------------------------------------------------
    def retain_subset(self, retain: SplitView) -> SplitView:
        """``retain_per_class`` random D_r samples of every retained class (seeded), in index order."""
        rng = np.random.default_rng(int(self.hparams.seed))
        targets = retain.targets
        keep = []
        for c in np.unique(targets):
            members = np.flatnonzero(targets == c)
            n = min(int(self.hparams.retain_per_class), len(members))
            keep.append(rng.choice(members, size=n, replace=False))
        picked = np.sort(np.concatenate(keep))
        return retain.subset(picked)

    def learn_noise(self, classes: list[int]) -> dict[int, Tensor]:
        model, hp = self._require_model(), self.hparams
        shape = (int(hp.noise_batch_size), int(model.in_channels), int(model.image_size), int(model.image_size))
        gen = torch.Generator().manual_seed(int(hp.seed))
        self.noise, self.noise_history = {}, {}
        for c in classes:
            self.noise[c], self.noise_history[c] = error_maximizing_noise(
                model, c, shape, steps=int(hp.noise_steps), lr=hp.noise_lr, reg=hp.noise_reg, generator=gen
            )
        return self.noise

    def build_train_dataloader(self, datamodule: Any) -> PhasedLoader:
        classes = self.check_classwise(datamodule)
        retain = split_or_error(datamodule, "retain", augment=datamodule.augment, method="UNSIR")
        split_or_error(datamodule, "forget", augment=False, method="UNSIR")
        hp = self.hparams
        bs = int(hp.batch_size or datamodule.batch_size)
        subset = self.retain_subset(retain)
        noise = NoiseSamples(self.learn_noise(classes), int(hp.noise_copies))
        loaders = {
            "impair": sharded_loader(self, datamodule, ConcatDataset([noise, subset]), shuffle=True, batch_size=bs),
            "repair": sharded_loader(self, datamodule, subset if hp.repair_on == "subset" else retain,
                                     shuffle=True, batch_size=bs),
        }
        return PhasedLoader(loaders, self.epoch_plan, lambda: self.current_epoch, horizon=2)

    @staticmethod
    def epoch_plan(epoch: int) -> tuple[str, ...]:
        """Epoch 0 impairs, every later epoch repairs."""
        return ("impair",) if epoch == 0 else ("repair",)

    # -- optimisation ----------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        impair = super().configure_optimizers()
        hp = self.hparams
        params = self.trainable_parameters()
        repair = make_optimizer(params, hp.optimizer, hp.repair_lr, hp.momentum, hp.weight_decay)
        return [impair, repair]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        ((phase, data),) = batch.items()
        x, y = unpack_batch(data)
        opt = self.optimizers()[0 if phase == "impair" else 1]
        loss = F.cross_entropy(self._require_model()(x), y)
        check_finite(loss, self)
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        log_step(self, f"train/{phase}_loss", loss, len(y))
        return loss.detach()

    def method_config(self) -> dict[str, Any]:
        config = super().method_config()
        config["noise_objective"] = {str(c): [h[0], h[-1]] for c, h in self.noise_history.items() if h}
        return config
