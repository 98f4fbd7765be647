"""RUM, the Refined-Unlearning Meta-algorithm (Zhao, Kurmanji, Bărbulescu, Triantafillou & Triantafillou, "What makes
unlearning hard and what to do about it", NeurIPS 2024; code github.com/kairanzhao/RUM, ``main_rum.py``,
``main_rum_proxy.py``, ``main_forget.py --sequential``).

Split D_f into bins of similar memorisation (a proxy, :mod:`~lightning_unlearn.methods.rum_proxies`) and unlearn them
one after the other, low memorisation first, each with the method chosen for it.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import time
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, NamedTuple

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch.utils.data import DataLoader, TensorDataset

from lightning_unlearn.backbones import Backbone
from lightning_unlearn.data.datasets import batch_indices, unpack_batch
from lightning_unlearn.methods import rum_proxies as px
from lightning_unlearn.methods.base import UnlearningMethod, forget_split
from lightning_unlearn.search_space import Choice, SearchSpace
from lightning_unlearn.utils import eval_mode

__all__ = ["RUM", "DEFAULT_BIN_METHODS"]

ProxyName = Literal["confidence", "holdout_retrain", "curvature"]
_NG = "lightning_unlearn.methods.NegativeGradient"
#: The code's ``main_rum_proxy.py`` example: NegGrad+ on every bin, low -> medium -> high memorisation.
DEFAULT_BIN_METHODS: tuple[dict[str, Any], ...] = (
    {"class_path": _NG, "init_args": {"retain_weight": 0.99, "lr": 0.01}, "max_epochs": 5},
    {"class_path": _NG, "init_args": {"retain_weight": 0.97, "lr": 0.01}, "max_epochs": 5},
    {"class_path": _NG, "init_args": {"retain_weight": 0.97, "lr": 0.001}, "max_epochs": 10},
)
_SPEC_KEYS = {"class_path", "init_args", "max_epochs", "trainer"}
_RESERVED = {"max_epochs", "callbacks", "logger", "accelerator", "devices", "strategy", "num_nodes", "plugins"}


def resolve_method(class_path: str | type) -> type:
    """A registered method by name (``"Finetune"``), a dotted class path, or a class; it must be an UnlearningMethod."""
    cls: Any = class_path
    if isinstance(class_path, str):
        module, _, attr = class_path.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module or "lightning_unlearn.methods"), attr, None)
        except ImportError as err:
            raise ValueError(f"RUM: cannot import the module of {class_path!r} ({err}).") from err
    if not (inspect.isclass(cls) and issubclass(cls, UnlearningMethod)) or issubclass(cls, RUM):
        raise ValueError(f"RUM: {class_path!r} is not an UnlearningMethod class (nor may a bin run RUM itself).")
    return cls


class _Bin(NamedTuple):
    cls: type
    init_args: dict[str, Any]
    max_epochs: int
    trainer: dict[str, Any]


def _parse_bin(i: int, spec: Any) -> _Bin | None:
    if spec is None:
        return None
    unknown = set(spec) - _SPEC_KEYS
    if unknown or "class_path" not in spec:
        raise ValueError(f"RUM methods[{i}]: a bin's method is null or {{class_path, init_args, max_epochs, trainer}}, "
                         f"got keys {sorted(spec)}.")
    cls, init_args = resolve_method(spec["class_path"]), dict(spec.get("init_args") or {})
    epochs, trainer = spec.get("max_epochs", 1), dict(spec.get("trainer") or {})
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 0:
        raise ValueError(f"RUM methods[{i}]: max_epochs must be an integer >= 0, got {epochs!r}.")
    if set(trainer) & _RESERVED or set(trainer) - set(inspect.signature(pl.Trainer).parameters):
        raise ValueError(f"RUM methods[{i}]: trainer {sorted(trainer)} may only hold Trainer arguments other than "
                         f"{sorted(_RESERVED)} (epochs: `max_epochs`).")
    if "backbone" in init_args:
        raise ValueError(f"RUM methods[{i}]: do not set `backbone`; every bin starts from the previous bin's result.")
    try:
        cls(**init_args)  # fail now, with the bin named, rather than after the proxy and the earlier bins
    except (TypeError, ValueError) as err:
        raise ValueError(f"RUM methods[{i}] ({cls.__name__}): invalid init_args {init_args}: {err}") from err
    return _Bin(cls, init_args, epochs, trainer)


class RUM(UnlearningMethod):
    """RUM with a memorisation proxy (the paper's RUM with proxies, ``main_rum_proxy.py``)::

        s(x)     = memorisation proxy of x under the original model, x in D_f                 (proxy, rum_proxies)
        B_1..B_K = D_f ranked by s and cut at the quantiles  (K = len(quantiles) + 1; default thirds: low, medium, high)
        for k in order (low -> high):   w <- A_k(w; forget = B_k, retain = D_r ∪ B_{k+1} ∪ ... ∪ B_K)

    ``A_k`` is ``methods[k]`` (``{class_path, init_args, max_epochs, trainer}``; ``null``: the bin is left as it is,
    the paper's "nothing"), run by its own ``Trainer`` as it runs alone: each bin's retain set holds D_r and the bins
    not yet unlearned (the code's ``--sequential`` retain sets; ``retain_pending=False``: D_r only), its "original" is
    the model the previous bin left. Bins are ranked with ties broken by sample index, so the split is deterministic
    and covers D_f exactly once (:func:`~lightning_unlearn.methods.rum_proxies.memorisation_bins`).

    Everything runs when ``fit`` starts, inside the timed region: the proxy (seeded, the global RNG left as it was),
    then one nested ``Trainer`` per bin on this run's device and precision, with its gradient clipping, gradient
    accumulation and ``limit_train_batches`` (a bin's ``trainer`` overrides them), no logger, no checkpoints. The
    Trainer's own ``max_epochs`` is not used. Under DDP every rank runs the bins on its own device (no speed-up) and
    rank 0's weights and split are broadcast. :attr:`rum_report` (``method_config()["rum"]``, hence ``unlearn.json``)
    holds the split (``split.forget_indices``, ``split.scores``, ``split.bin``) and per-bin sizes, methods and times,
    and with a gold model (``--gold_ckpt``) ``vs_gold``: the gold model's accuracy per bin (computed after the timer).

    Defaults and their source: the code's ``main_rum_proxy.py`` (NegGrad+ on every bin: ``alpha`` 0.99/0.97/0.97, lr
    0.01/0.01/0.001, 5/5/10 epochs), its three equal bins and its order (low, medium, high); ``proxy="confidence"``
    (the learning-event proxy read at the end of training); held-out fine-tuning lr 0.01 for 5 epochs (the code: lr
    0.1, 30 epochs with early stopping, on the test set), curvature ``h=0.01`` (the code's ``--h``).

    Args:
        backbone: the trained model to unlearn (from the CLI: ``--original_ckpt``).
        methods: one method per bin, least memorised first (default :data:`DEFAULT_BIN_METHODS`).
        proxy: ``"confidence"``, ``"holdout_retrain"`` or ``"curvature"`` (:mod:`.rum_proxies`).
        quantiles: cut points between the bins, as increasing fractions of D_f in (0, 1).
        order: ``"low_to_high"`` (the paper's) or ``"high_to_low"``.
        retain_pending: each bin's retain set also holds the bins not yet unlearned (the code's sequential RUM).
        proxy_batch_size: batch size of the proxy passes (default: the DataModule's evaluation batch size).
        proxy_epochs, proxy_lr: the held-out fine-tuning of ``holdout_retrain``. curvature_h: ``h`` of ``curvature``.
        seed: seed of the proxy's fine-tuning; also given to every bin method that takes a ``seed`` and sets none.
    """

    #: ``lightning_unlearn tune``'s search space: RUM's own choices (each bin's method is tuned as that method).
    search_space: ClassVar[SearchSpace] = {
        "proxy": Choice(list(px.PROXIES)),
        "order": Choice(["low_to_high", "high_to_low"]),
        "retain_pending": Choice([True, False]),
    }

    train_splits = ("forget", "retain")
    uses_optimizer = False

    def __init__(
        self,
        backbone: Backbone | None = None,
        methods: Sequence[dict[str, Any] | None] | None = None,
        proxy: ProxyName = "confidence",
        quantiles: Sequence[float] = (1 / 3, 2 / 3),
        order: Literal["low_to_high", "high_to_low"] = "low_to_high",
        retain_pending: bool = True,
        proxy_batch_size: int | None = None,
        proxy_epochs: int = 5,
        proxy_lr: float = 0.01,
        curvature_h: float = 0.01,
        seed: int = 0,
    ) -> None:
        specs = [copy.deepcopy(m) for m in (DEFAULT_BIN_METHODS if methods is None else methods)]
        qs = [float(q) for q in quantiles]
        if any(not 0.0 < q < 1.0 for q in qs) or any(a >= b for a, b in zip(qs, qs[1:])):
            raise ValueError(f"RUM quantiles must increase strictly within (0, 1), got {qs}.")
        if len(specs) != len(qs) + 1:
            raise ValueError(f"RUM: {len(qs)} quantiles make {len(qs) + 1} bins, but {len(specs)} methods are given "
                             "(one per bin, least memorised first; null leaves a bin as it is).")
        if proxy not in px.PROXIES or order not in ("low_to_high", "high_to_low"):
            raise ValueError(f"RUM: proxy must be one of {px.PROXIES} and order low_to_high or high_to_low, got "
                             f"{proxy!r}, {order!r}.")
        self._bins = [_parse_bin(i, m) for i, m in enumerate(specs)]
        super().__init__(backbone=backbone, lr=0.0)
        self.automatic_optimization = False
        for spec, b in zip(specs, self._bins):  # class paths, never classes (checkpoints are read weights-only)
            if b is not None:
                spec["class_path"] = f"{b.cls.__module__}.{b.cls.__qualname__}"
        self.hparams["methods"], self.hparams["quantiles"] = specs, qs
        #: The split, the bins' methods and times (``method_config()["rum"]``); empty until ``fit``.
        self.rum_report: dict[str, Any] = {}

    # -- the proxy and the split ---------------------------------------------------------------------------------
    def memorisation_scores(self, datamodule: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(D_f indices, proxy scores)`` under the current model, higher = more memorised (sorted by index)."""
        hp, model = self.hparams, self._require_model()
        device = next(model.parameters()).device
        forget = forget_split(datamodule)
        bs = int(hp.proxy_batch_size or datamodule.eval_batch_size)
        reference = None
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(int(hp.seed))
            if hp.proxy == "holdout_retrain":
                holdout = datamodule.dataset("holdout")
                if len(holdout) == 0:
                    raise ValueError("RUM's holdout_retrain proxy fine-tunes on the held-out split, which is "
                                     "empty: set the DataModule's `holdout_fraction` > 0, or use another proxy.")
                epochs = ((unpack_batch(b) for b in datamodule.loader(holdout, shuffle=True, batch_size=bs, train=True))
                          for _ in range(int(hp.proxy_epochs)))
                reference = px.finetune_copy(model, epochs, float(hp.proxy_lr), device)
            return px.score_batches(hp.proxy, model, datamodule.loader(forget, batch_size=bs), device,
                                    reference=reference, h=float(hp.curvature_h))

    # -- the bins ------------------------------------------------------------------------------------------------
    def _sub_trainer(self, b: _Bin) -> pl.Trainer:
        outer = self.trainer
        kwargs: dict[str, Any] = dict(
            accelerator=outer.accelerator, strategy=SingleDeviceStrategy(device=outer.strategy.root_device),
            precision=outer.precision, gradient_clip_val=outer.gradient_clip_val,
            gradient_clip_algorithm=outer.gradient_clip_algorithm,
            accumulate_grad_batches=outer.accumulate_grad_batches, log_every_n_steps=outer.log_every_n_steps,
            default_root_dir=outer.default_root_dir, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            num_sanity_val_steps=0, limit_val_batches=0, max_epochs=b.max_epochs,
        )
        if outer.limit_train_batches != 1.0:  # passed only when set (Lightning announces an explicit 1.0)
            kwargs["limit_train_batches"] = outer.limit_train_batches
        return pl.Trainer(**{**kwargs, **b.trainer})

    def _run_bin(self, b: _Bin, datamodule: Any, forget: np.ndarray, retain: np.ndarray) -> dict[str, Any]:
        view = copy.copy(datamodule)  # the same data, loaders and settings; only the two splits differ
        view._splits = dataclasses.replace(datamodule.splits, forget=np.sort(forget), retain=np.sort(retain))
        view.trainer = None
        kwargs = dict(b.init_args)
        if "seed" in inspect.signature(b.cls).parameters and "seed" not in kwargs:
            kwargs["seed"] = int(self.hparams.seed)
        method = b.cls(**kwargs)
        method.attach(self._require_model())
        method.retain_collapse = self.retain_collapse
        rank, device = rank_zero_only.rank, self.trainer.strategy.root_device
        try:
            self._sub_trainer(b).fit(method, datamodule=view)
        finally:
            rank_zero_only.rank = rank  # a nested Trainer sets it for its own (single) process
            self._require_model().to(device)  # its teardown moves the model to the CPU
        return {k: v for k, v in method.method_config().items() if k != "train_splits"} | {
            "unlearn_time_s": method.unlearn_time_s}

    def on_fit_start(self) -> None:
        with torch.random.fork_rng(devices=[]):  # the bins' methods get the RNG stream they would get alone
            super().on_fit_start()
        hp, dm, t0 = self.hparams, self.datamodule, time.perf_counter()
        indices, scores = self.memorisation_scores(dm)
        bins = px.memorisation_bins(scores, indices, hp.quantiles)
        names = px.bin_names(len(self._bins))
        sequence = list(range(len(self._bins)))[:: 1 if hp.order == "low_to_high" else -1]
        report: dict[str, Any] = {"proxy": hp.proxy, "order": hp.order, "retain_pending": hp.retain_pending,
                                  "proxy_time_s": time.perf_counter() - t0, "bins": []}
        for pos, k in enumerate(sequence):
            members, b = indices[bins == k], self._bins[k]
            entry: dict[str, Any] = {"name": names[k], "size": int(len(members)), "position": pos,
                                     "score_range": [float(scores[bins == k].min()), float(scores[bins == k].max())]
                                     if len(members) else None, "method": None}
            if b is not None and len(members):
                pending = indices[np.isin(bins, sequence[pos + 1 :])] if hp.retain_pending else indices[:0]
                rank_zero_info(f"RUM: bin {names[k]} ({len(members)} samples) with {b.cls.__name__}, "
                               f"{b.max_epochs} epoch(s).")
                entry["method"] = b.cls.__name__
                entry.update(self._run_bin(b, dm, members, np.concatenate([dm.splits.retain, pending])))
            report["bins"].append(entry)
        report["split"] = {"forget_indices": indices.tolist(), "scores": scores.tolist(), "bin": bins.tolist(),
                           "bin_names": names}
        trainer = self.trainer
        if trainer.world_size > 1:  # every rank ran the bins; rank 0's result is the run's
            model = self._require_model()
            state = trainer.strategy.broadcast({k: v.detach().cpu() for k, v in model.state_dict().items()}, src=0)
            model.load_state_dict(state)
            report = trainer.strategy.broadcast(report, src=0)
        self.rum_report = report

    # -- the (empty) outer loop ----------------------------------------------------------------------------------
    def build_train_dataloader(self, datamodule: Any) -> DataLoader:
        return DataLoader(TensorDataset(torch.zeros(1)), batch_size=1)

    def configure_optimizers(self) -> Any:
        return None

    def training_step(self, batch: Any, batch_idx: int) -> None:
        return None

    def on_train_epoch_end(self) -> None:
        self.trainer.should_stop = True

    def on_fit_end(self) -> None:
        super().on_fit_end()  # the timer stops here; what follows is diagnostics
        gold = getattr(self._trainer, "gold_model", None) if self._trainer is not None else None
        if gold is not None and self.rum_report:
            self.rum_report["vs_gold"] = self.compare_with_gold(gold, self.datamodule)

    @torch.no_grad()
    def compare_with_gold(self, gold: torch.nn.Module, datamodule: Any) -> dict[str, Any]:
        """The split against the gold model's easy/hard labels (:func:`~.rum_proxies.accuracy_per_bin`)."""
        device = next(self._require_model().parameters()).device
        correct: dict[int, bool] = {}
        with eval_mode(gold.to(device)):
            for batch in datamodule.loader(forget_split(datamodule)):
                x, y = (t.to(device) for t in unpack_batch(batch))
                correct.update(zip(batch_indices(batch).tolist(), (gold(x).argmax(1) == y).cpu().tolist()))
        split = self.rum_report["split"]
        hits = [correct[i] for i in split["forget_indices"]]
        return px.accuracy_per_bin(hits, split["bin"], split["bin_names"], split["scores"])

    def method_config(self) -> dict[str, Any]:
        config = super().method_config()
        config["rum"] = copy.deepcopy(self.rum_report)
        return config
