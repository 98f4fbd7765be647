"""Selective Synaptic Dampening (Foster, Schoepf & Brintrup, "Fast Machine Unlearning Without Retraining Through
Selective Synaptic Dampening", AAAI 2024; reference code github.com/if-loops/selective-synaptic-dampening, ``ssd.py``).

Diagonal importances (squared gradients) on the forget set D_f and on the whole training set D; the weights far more
important to D_f than to D are scaled down. No training: two gradient passes and one multiplication.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lightning_unlearn.backbones import Backbone
from lightning_unlearn.data.datasets import SplitView
from lightning_unlearn.methods.base import UnlearningMethod, forget_split, loss_gradient
from lightning_unlearn.methods.fisher import diagonal_fisher
from lightning_unlearn.search_space import FloatRange, SearchSpace

__all__ = ["SelectiveSynapticDampening", "ImportanceType", "ssd_dampen"]

ImportanceType = Literal["batch", "per_sample"]
_FORGET, _FULL, _PAD = 0, 1, -1


def ssd_dampen(weight: Tensor, imp_full: Tensor, imp_forget: Tensor, alpha: float, lam: float) -> tuple[Tensor, Tensor]:
    """SSD on one parameter: ``(new weight, selected)`` with (paper eq. 3-4, reference ``modify_weight``)::

        selected = I_Df > alpha * I_D
        w       <- w * min(lam * I_D / I_Df, 1)   where selected;   w unchanged elsewhere
    """
    imp_full, imp_forget = imp_full.to(weight.device).float(), imp_forget.to(weight.device).float()
    selected = imp_forget > alpha * imp_full
    factor = torch.where(selected, lam * imp_full / imp_forget, torch.ones_like(imp_forget)).clamp(max=1.0)
    return torch.where(selected, (weight.float() * factor).to(weight.dtype), weight), selected


class _Batches(Dataset):
    """Whole batches as items: ``(x, y, source)``; ``source`` 0 = D_f, 1 = D, -1 = padding (ignored)."""

    def __init__(self, splits: list[tuple[int, SplitView]], batch_size: int, world: int) -> None:
        self.items = [
            (src, ds, np.arange(i, min(i + batch_size, len(ds))))
            for src, ds in splits
            for i in range(0, len(ds), batch_size)
        ]
        while len(self.items) % world:
            self.items.append((_PAD, *self.items[0][1:]))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, int]:
        src, ds, rows = self.items[i]
        samples = [ds[int(r)] for r in rows]
        x = torch.stack([torch.as_tensor(s[0]) for s in samples])
        return x, torch.tensor([int(s[1]) for s in samples]), src


class SelectiveSynapticDampening(UnlearningMethod):
    """SSD: dampen the weights whose D_f importance exceeds ``alpha`` times their D importance, no training::

        I_S  = mean over batches B of S of (grad_w CE(f_w; B))^2         (importance="batch": reference calc_importance)
        w_i <- w_i * min(lambda * I_D,i / I_Df,i, 1)   if I_Df,i > alpha * I_D,i,   else w_i        (ssd_dampen)

    with D = D_r ∪ D_f (the data the original was trained on), no augmentation, BatchNorm in eval mode, fp32
    (gradients through ``torch.func``, outside autocast). ``importance="per_sample"`` uses the diagonal empirical
    Fisher instead (mean over samples of per-sample squared gradients, Fisher's :func:`diagonal_fisher`), the paper's
    definition; the reference squares mini-batch gradients, and its ``alpha``/``lambda`` are tuned for that.

    The method's one "epoch" iterates the batches of D_f, then those of D (no optimizer; the Trainer stops after it).
    Under DDP whole batches are dealt to the ranks and the sums and batch counts are all-reduced, so DDP gives the
    one-process result. Every batch must be seen: ``limit_train_batches`` < 1 is an error, not a silent subsample.

    Defaults and their source: ``alpha=10`` (selection weighting) and ``lambda=1`` (dampening constant), batch 64,
    importances on ``forget_train_dl`` and ``full_train_dl`` (reference ``forget_*_main.py``; the paper uses
    ``alpha=50, lambda=0.1`` for PinsFaceRecognition and halves ``alpha`` for ViT on full-class forgetting).
    Cost: one forward+backward pass over D_f and one over D; no D_f-free repair.

    Args:
        backbone: the trained model (from the CLI: ``--original_ckpt``).
        alpha: selection weighting (the paper's alpha).
        lam: dampening constant (the paper's lambda).
        importance: ``"batch"`` (reference code) or ``"per_sample"`` (diagonal empirical Fisher).
        batch_size: batch size of both importance passes (per rank; the reference: 64).
    """

    #: ``lightning_unlearn tune``'s search space (docs/tuning.md); overridable from YAML.
    search_space: ClassVar[SearchSpace] = {
        "alpha": FloatRange(1.0, 100.0, log=True),
        "lam": FloatRange(0.1, 10.0, log=True),
    }

    train_splits = ("forget", "retain")
    uses_optimizer = False  # one pass edits the weights; configure_optimizers returns None

    def __init__(
        self,
        backbone: Backbone | None = None,
        alpha: float = 10.0,
        lam: float = 1.0,
        importance: ImportanceType = "batch",
        batch_size: int | None = 64,
    ) -> None:
        if alpha < 0 or lam < 0:
            raise ValueError(f"alpha and lam must be >= 0, got alpha={alpha}, lam={lam}.")
        if importance not in ("batch", "per_sample"):
            raise ValueError(f"Unknown importance {importance!r}; choose 'batch' or 'per_sample'.")
        super().__init__(backbone=backbone, lr=0.0, batch_size=batch_size)
        self.automatic_optimization = False
        #: ``{"forget": {name: I_Df}, "full": {name: I_D}}`` (CPU, fp32), set at the end of the pass.
        self.importances: dict[str, dict[str, Tensor]] = {}
        #: ``{name: bool tensor}``: the weights that were dampened (selected).
        self.selected: dict[str, Tensor] = {}
        self._acc: dict[int, dict[str, Tensor]] = {}
        self._count: Tensor | None = None
        self._num_items = 0
        self._applied = False

    # -- data ------------------------------------------------------------------------------------------------------
    def build_train_dataloader(self, datamodule: Any) -> DataLoader:
        forget = forget_split(datamodule, augment=False)
        s = datamodule.splits
        full = SplitView(datamodule.train_set, np.sort(np.concatenate([s.retain, s.forget])))
        world = int(self.trainer.world_size) if self._trainer is not None else 1
        ds = _Batches([(_FORGET, forget), (_FULL, full)], self.method_batch_size, world)
        self._num_items = sum(src != _PAD for src, _, _ in ds.items)
        sampler = None
        if world > 1:
            sampler = DistributedSampler(ds, num_replicas=world, rank=int(self.trainer.global_rank), shuffle=False)
        return DataLoader(ds, batch_size=None, sampler=sampler, num_workers=datamodule.num_workers)

    def configure_optimizers(self) -> Any:
        return None

    # -- the importance pass ---------------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        params = [(n, p) for n, p in self._require_model().named_parameters() if p.requires_grad]
        self._acc = {src: {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params} for src in (_FORGET, _FULL)}
        self._count = torch.zeros(4, dtype=torch.float32, device=self.device)  # batches, samples of D_f; of D

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x, y, src = batch
        src = int(src)
        if self._applied or src == _PAD:
            return None
        assert self._count is not None
        model = self._require_model()
        if self.hparams.importance == "batch":
            imp = {n: g.pow(2) for n, g in loss_gradient(model, x, y).items()}
        else:
            imp = diagonal_fisher(model, x, y, fisher_type="empirical")
        for n, v in imp.items():
            self._acc[src][n] += v
        self._count[2 * src] += 1
        self._count[2 * src + 1] += x.shape[0]
        return None

    def on_train_epoch_end(self) -> None:
        if self._applied or self._count is None:
            return
        names = list(self._acc[_FORGET])
        flat = torch.cat([self._acc[s][n].flatten() for s in (_FORGET, _FULL) for n in names] + [self._count])
        flat = self.trainer.strategy.reduce(flat, reduce_op="sum")
        count = flat[-4:].tolist()
        if int(round(count[0] + count[2])) != self._num_items:
            raise RuntimeError(
                f"SSD saw {int(count[0] + count[2])} of its {self._num_items} importance batches: it needs every "
                "batch of D_f and D; remove `limit_train_batches` (or set it to 1.0)."
            )
        per = 0 if self.hparams.importance == "batch" else 1  # normalise by batches (reference) or samples
        offset, out = 0, {}
        for s, key in ((_FORGET, "forget"), (_FULL, "full")):
            out[key] = {}
            for n in names:
                numel = self._acc[s][n].numel()
                out[key][n] = (flat[offset : offset + numel] / count[2 * s + per]).view_as(self._acc[s][n])
                offset += numel
        self.importances = {k: {n: v.detach().cpu() for n, v in d.items()} for k, d in out.items()}
        self._acc = {}
        self.dampen(out["full"], out["forget"])
        self._applied = True
        self.trainer.should_stop = True

    @torch.no_grad()
    def dampen(self, imp_full: dict[str, Tensor], imp_forget: dict[str, Tensor]) -> None:
        """Apply :func:`ssd_dampen` to every parameter with importances."""
        hp = self.hparams
        for name, p in self._require_model().named_parameters():
            if name not in imp_full:
                continue
            new, selected = ssd_dampen(p.detach(), imp_full[name], imp_forget[name], float(hp.alpha), float(hp.lam))
            p.copy_(new)
            self.selected[name] = selected.cpu()
        n_sel = sum(int(m.sum()) for m in self.selected.values())
        rank_zero_info(f"SSD: dampened {n_sel} of {sum(m.numel() for m in self.selected.values())} weights.")

    def method_config(self) -> dict[str, Any]:
        config = super().method_config()
        if self.selected:
            n_sel = sum(int(m.sum()) for m in self.selected.values())
            config["dampened_fraction"] = n_sel / max(sum(m.numel() for m in self.selected.values()), 1)
        return config
