"""Selective Synaptic Dampening (Foster, Schoepf & Brintrup, "Fast Machine Unlearning Without Retraining Through
Selective Synaptic Dampening", AAAI 2024; reference code github.com/if-loops/selective-synaptic-dampening, ``ssd.py``).

Diagonal importances (squared gradients) on the forget set D_f and on the whole training set D; the weights far more
important to D_f than to D are scaled down. No training: a gradient pass over D_f and one over D_r, then one
multiplication.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lightning_unlearn.backbones import Backbone
from lightning_unlearn.data.datasets import SplitView
from lightning_unlearn.methods.base import UnlearningMethod, forget_split, loss_gradient
from lightning_unlearn.methods.fisher import diagonal_fisher
from lightning_unlearn.search_space import FloatRange, SearchSpace

__all__ = ["FullOrder", "ImportanceType", "SelectiveSynapticDampening", "full_importance", "ssd_dampen"]

ImportanceType = Literal["batch", "per_sample"]
FullOrder = Literal["reference", "interleaved"]
_FORGET, _RETAIN, _FULL, _PAD = 0, 1, 2, -1


def ssd_dampen(weight: Tensor, imp_full: Tensor, imp_forget: Tensor, alpha: float, lam: float) -> tuple[Tensor, Tensor]:
    """SSD on one parameter: ``(new weight, selected)`` with (paper eq. 3-4, reference ``modify_weight``)::

        selected = I_Df > alpha * I_D
        w       <- w * min(lam * I_D / I_Df, 1)   where selected;   w unchanged elsewhere
    """
    imp_full, imp_forget = imp_full.to(weight.device).float(), imp_forget.to(weight.device).float()
    selected = imp_forget > alpha * imp_full
    factor = torch.where(selected, lam * imp_full / imp_forget, torch.ones_like(imp_forget)).clamp(max=1.0)
    return torch.where(selected, (weight.float() * factor).to(weight.dtype), weight), selected


def full_importance(sum_forget: Tensor, n_forget: float, sum_retain: Tensor, n_retain: float) -> Tensor:
    """I_D when D's batches are D_r's batches followed by D_f's (``full_order="reference"``)::

        I_D = (sum_{B in D_r} i_B + sum_{B in D_f} i_B) / (n_r + n_f),   so   I_Df / I_D <= (n_r + n_f) / n_f

    (``n``: batches, or samples for per-sample importances; ``I_Df = sum_{B in D_f} i_B / n_f``). The cap is why no
    weight is selected once ``alpha >= (n_r + n_f) / n_f``, about |D| / |D_f|, as with the paper's per-sample
    definition.
    """
    return (sum_forget + sum_retain) / (n_forget + n_retain)


class _Batches(Dataset):
    """Whole batches as items: ``(x, y, source)``; ``source`` 0 = D_f, 1 = D_r, 2 = D, -1 = padding (ignored)."""

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


def _by_label(view: SplitView) -> SplitView:
    """The view's samples sorted by label (stable: index order within a class), as the reference's class-wise and
    sub-class scripts build D_r and D_f (``build_retain_forget_sets``: class 0's samples, then class 1's, ...)."""
    return view.subset(np.argsort(view.targets, kind="stable"))


class SelectiveSynapticDampening(UnlearningMethod):
    """SSD: dampen the weights whose D_f importance exceeds ``alpha`` times their D importance, no training::

        I_S  = mean over batches B of S of (grad_w CE(f_w; B))^2         (importance="batch": reference calc_importance)
        w_i <- w_i * min(lambda * I_D,i / I_Df,i, 1)   if I_Df,i > alpha * I_D,i,   else w_i        (ssd_dampen)

    with D = D_r ∪ D_f (the data the original was trained on), no augmentation, BatchNorm in eval mode, fp32
    (gradients through ``torch.func``, outside autocast). ``importance="per_sample"`` uses the diagonal empirical
    Fisher instead (mean over samples of per-sample squared gradients, Fisher's :func:`diagonal_fisher`), the paper's
    definition; the reference squares mini-batch gradients, and its ``alpha``/``lambda`` are tuned for that.

    D's batches (``full_order``): ``"reference"`` (default) as the reference scripts iterate
    ``ConcatDataset((retain, forget))`` unshuffled: D_r's batches (sorted by label when D_f is a class or a sub-class,
    as ``build_retain_forget_sets`` builds D_r; in the stored order for a random or explicit D_f, as ``random_split``
    leaves it), then D_f's batches, which are the D_f pass's own, so they count once in I_Df and once in I_D
    (:func:`full_importance`: I_Df / I_D <= (n_r + n_f) / n_f). ``"interleaved"``: D in index order, D_f spread over
    D's batches (this package up to c7d07c8; with squared mini-batch gradients I_Df / I_D then grows with the batch
    size, far past |D| / |D_f|). Under DDP whole batches are dealt to the ranks and the sums and batch counts are
    all-reduced, so DDP gives the one-process result. Every batch must be seen: ``limit_train_batches`` < 1 is an
    error, not a silent subsample.

    Defaults and their source: ``alpha=10`` (selection weighting) and ``lambda=1`` (dampening constant), batch 64
    (reference ``forget_full_class_main.py`` / ``forget_subclass_main.py``; ``forget_random_main.py`` uses batch 128;
    the paper uses ``alpha=50, lambda=0.1`` for PinsFaceRecognition, the code scales alpha by 0.5 (full class) or 2.5
    (sub-class) for ViT). Cost: one forward+backward pass over D_f and one over D_r; no D_f-free repair.

    Args:
        backbone: the trained model (from the CLI: ``--original_ckpt``).
        alpha: selection weighting (the paper's alpha).
        lam: dampening constant (the paper's lambda).
        importance: ``"batch"`` (reference code) or ``"per_sample"`` (diagonal empirical Fisher).
        batch_size: batch size of both importance passes (per rank; the reference: 64).
        full_order: how D is cut into batches: ``"reference"`` or ``"interleaved"`` (see above).
    """

    #: ``lightning_unlearn tune``'s search space (docs/tuning.md); overridable from YAML.
    search_space: ClassVar[SearchSpace] = {
        "alpha": FloatRange(1.0, 100.0, log=True),
        "lam": FloatRange(0.1, 10.0, log=True),
    }

    train_splits = ("forget", "retain")
    uses_optimizer = False  # one pass edits the weights; configure_optimizers returns None
    #: Whether the importance pass reads labels (label-free subclasses keep D_r in the stored order).
    uses_labels: ClassVar[bool] = True

    def __init__(
        self,
        backbone: Backbone | None = None,
        alpha: float = 10.0,
        lam: float = 1.0,
        importance: ImportanceType = "batch",
        batch_size: int | None = 64,
        full_order: FullOrder = "reference",
    ) -> None:
        if alpha < 0 or lam < 0:
            raise ValueError(f"alpha and lam must be >= 0, got alpha={alpha}, lam={lam}.")
        if importance not in ("batch", "per_sample"):
            raise ValueError(f"Unknown importance {importance!r}; choose 'batch' or 'per_sample'.")
        if full_order not in ("reference", "interleaved"):
            raise ValueError(f"Unknown full_order {full_order!r}; choose 'reference' or 'interleaved'.")
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
    def full_batches(self, datamodule: Any) -> list[tuple[int, SplitView]]:
        """The importance pass's datasets in order, each tagged with its source (D_f, D_r, or D)."""
        forget = forget_split(datamodule, augment=False)
        s = datamodule.splits
        if self.hparams.full_order == "interleaved":
            full = SplitView(datamodule.train_set, np.sort(np.concatenate([s.retain, s.forget])))
            return [(_FORGET, forget), (_FULL, full)]
        retain = datamodule.dataset("retain", augment=False)
        spec = getattr(datamodule, "forget", None)
        if self.uses_labels and getattr(spec, "mode", None) in ("classwise", "subclass"):
            forget, retain = _by_label(forget), _by_label(retain)
        return [(_FORGET, forget), (_RETAIN, retain)]

    def build_train_dataloader(self, datamodule: Any) -> DataLoader:
        world = int(self.trainer.world_size) if self._trainer is not None else 1
        ds = _Batches(self.full_batches(datamodule), self.method_batch_size, world)
        self._num_items = sum(src != _PAD for src, _, _ in ds.items)
        sampler = None
        if world > 1:
            sampler = DistributedSampler(ds, num_replicas=world, rank=int(self.trainer.global_rank), shuffle=False)
        return DataLoader(ds, batch_size=None, sampler=sampler, num_workers=datamodule.num_workers)

    def configure_optimizers(self) -> Any:
        return None

    # -- the importance pass ---------------------------------------------------------------------------------------
    def batch_importance(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """One batch's contribution to the importance sums: squared batch gradient, or summed per-sample ones."""
        if self.hparams.importance == "batch":
            return {n: g.pow(2) for n, g in loss_gradient(model, x, y).items()}
        return diagonal_fisher(model, x, y, fisher_type="empirical")

    @property
    def _per_sample(self) -> bool:
        return self.hparams.get("importance", "batch") == "per_sample"

    def on_train_epoch_start(self) -> None:
        params = [(n, p) for n, p in self._require_model().named_parameters() if p.requires_grad]
        sources = (_FORGET, _RETAIN, _FULL)
        self._acc = {s: {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params} for s in sources}
        self._count = torch.zeros(6, dtype=torch.float32, device=self.device)  # (batches, samples) per source

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x, y, src = batch
        src = int(src)
        if self._applied or src == _PAD:
            return None
        assert self._count is not None
        for n, v in self.batch_importance(self._require_model(), x, y).items():
            self._acc[src][n] += v
        self._count[2 * src] += 1
        self._count[2 * src + 1] += x.shape[0]
        return None

    def on_train_epoch_end(self) -> None:
        if self._applied or self._count is None:
            return
        names = list(self._acc[_FORGET])
        sources = (_FORGET, _RETAIN, _FULL)
        flat = torch.cat([self._acc[s][n].flatten() for s in sources for n in names] + [self._count])
        flat = self.trainer.strategy.reduce(flat, reduce_op="sum")
        count = flat[-6:].tolist()
        seen = int(round(count[0] + count[2] + count[4]))
        if seen != self._num_items:
            raise RuntimeError(
                f"{type(self).__name__} saw {seen} of its {self._num_items} importance batches: it needs every "
                "batch of D_f and D; remove `limit_train_batches` (or set it to 1.0)."
            )
        per = 1 if self._per_sample else 0  # normalise by batches (reference) or samples
        sums: dict[int, dict[str, Tensor]] = {s: {} for s in sources}
        offset = 0
        for s in sources:
            for n in names:
                numel = self._acc[s][n].numel()
                sums[s][n] = flat[offset : offset + numel].view_as(self._acc[s][n])
                offset += numel
        n_f, n_r, n_d = count[per], count[2 + per], count[4 + per]
        reference = self.hparams.get("full_order", "reference") == "reference"
        if reference and float(self.hparams.alpha) >= (n_f + n_r) / n_f:
            rank_zero_warn(
                f"{type(self).__name__}: alpha={self.hparams.alpha} is at or above the cap of I_Df / I_D, "
                f"(n_r + n_f) / n_f = {(n_f + n_r) / n_f:.2f} (about |D| / |D_f|), so no weight can be selected and "
                "the model stays as it is; use an alpha below it (the reference's alpha=10 is below it only when "
                "D_f is under a tenth of D)."
            )
        out: dict[str, dict[str, Tensor]] = {"forget": {}, "full": {}}
        for n in names:
            out["forget"][n] = sums[_FORGET][n] / n_f
            if reference:
                out["full"][n] = full_importance(sums[_FORGET][n], n_f, sums[_RETAIN][n], n_r)
            else:
                out["full"][n] = sums[_FULL][n] / n_d
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
        total = sum(m.numel() for m in self.selected.values())
        rank_zero_info(f"{type(self).__name__}: dampened {n_sel} of {total} weights.")

    def method_config(self) -> dict[str, Any]:
        config = super().method_config()
        if self.selected:
            n_sel = sum(int(m.sum()) for m in self.selected.values())
            config["dampened_fraction"] = n_sel / max(sum(m.numel() for m in self.selected.values()), 1)
        return config
