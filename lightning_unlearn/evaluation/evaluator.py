"""``UnlearningEvaluator``: a Callback that evaluates a model on every split, against an optional gold model, and writes
``metrics.json``, ``metrics.md`` and (when asked) plots.

Python::

    evaluator = UnlearningEvaluator(gold=gold_net)          # or gold="gold.ckpt"
    Trainer(callbacks=[evaluator]).fit(method, datamodule=dm)
    evaluator.results["gold/forget_acc_gap"]

or without a Trainer: ``UnlearningEvaluator(gold=gold_net).evaluate(model, dm)``.

From the CLI, ``lightning_unlearn unlearn`` attaches one unless ``--evaluate false`` and ``lightning_unlearn test
--ckpt_path X`` evaluates any checkpoint with one (see ``cli.py``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerStatus
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from lightning_unlearn.backbones.protocol import check_input
from lightning_unlearn.data.datasets import InMemoryImages, SplitView
from lightning_unlearn.data.forget import SPLIT_NAMES
from lightning_unlearn.evaluation import metrics as M
from lightning_unlearn.evaluation.cache import ReferenceCache, options_key, positions_key
from lightning_unlearn.evaluation.mia import balanced_subset, entropy_mia, loss_mia, mia_efficacy
from lightning_unlearn.evaluation.report import write_reports
from lightning_unlearn.methods.guards import warn_at_chance

__all__ = ["METRIC_KEYS", "UnlearningEvaluator", "evaluated_backbone", "rng_isolated"]

#: The keys of a full evaluation (with a gold model, MIA and known times); ``results`` may hold more
#: (``n/<split>``, ``gold/acc/*``, ``gold/mia/*``, ``original/acc/*``).
METRIC_KEYS: tuple[str, ...] = (
    *(f"acc/{s}" for s in SPLIT_NAMES),
    "mia/efficacy",
    "mia/entropy",
    "mia/entropy_logreg",
    "mia/loss_auc",
    "mia/loss_acc",
    "gold/forget_acc_gap",
    "gold/activation_distance",
    "gold/js_divergence",
    "gold/agreement_forget",
    "gold/agreement_test",
    "zrf",
    "time/unlearn_s",
    "time/retrain_s",
    "time/speedup_vs_retrain",
)

_BASE_SPLITS = ("retain", "forget", "holdout", "test")  # test_retain / test_forget are read off the test outputs
_MEMBERS = "retain@members"  # the D_r subset used as MIA members


def evaluated_backbone(module: nn.Module) -> nn.Module:
    """The network an evaluation looks at: ``unlearned_backbone()`` of an unlearning method, ``.model`` of a
    ``Classifier`` (any module with an ``nn.Module`` attribute ``model``), else the module itself."""
    get = getattr(module, "unlearned_backbone", None)
    if callable(get):
        return get()
    inner = getattr(module, "model", None)
    if isinstance(inner, nn.Module):
        return inner
    return module


class _Outputs:
    """Per-sample outputs of one model on one set of samples: ``logits`` (N, C) float32, ``targets`` (N,),
    ``index`` (N,) dataset indices, optional ``features`` (N, D)."""

    def __init__(self, logits: Tensor, targets: Tensor, index: Tensor, features: Tensor | None = None) -> None:
        self.logits, self.targets, self.index, self.features = logits, targets, index, features

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    @property
    def probs(self) -> Tensor:
        return self.logits.double().softmax(dim=1)

    @property
    def losses(self) -> Tensor:
        return M.cross_entropy_per_sample(self.logits, self.targets)

    def select(self, mask_or_positions: np.ndarray) -> _Outputs:
        sel = torch.as_tensor(mask_or_positions)
        if sel.dtype == torch.bool:
            sel = sel.nonzero().flatten()
        f = self.features[sel] if self.features is not None else None
        return _Outputs(self.logits[sel], self.targets[sel], self.index[sel], f)


class UnlearningEvaluator(Callback, nn.Module):
    """Evaluate a model on every split and against a gold (retrained) model; log the results and write reports.

    What is evaluated: for an ``UnlearningMethod`` its ``unlearned_backbone()``, for a ``Classifier`` its ``.model``
    (:func:`evaluated_backbone`), in eval mode under ``no_grad`` (every submodule's train/eval mode is restored).

    When: at the end of ``fit`` (so at the end of ``unlearn``), at the end of ``test``, and every ``every_n_epochs``
    training epochs when > 0. The end-of-fit evaluation runs in the ``teardown("fit")`` hook, i.e. after the method's
    own ``on_fit_end`` has stopped its timer, so evaluating never counts as unlearning time; the time spent in periodic
    evaluations is subtracted from the method's time as well (:attr:`fit_overhead_s`).

    Results (:attr:`results`, flat keys, see ``docs/metrics.md`` for each definition): ``acc/<split>`` for ``splits``
    (``nan`` for an empty split), ``n/<split>``; with ``mia``: ``mia/efficacy``, ``mia/entropy`` (Golatkar's / Bad
    Teacher's SVC), ``mia/entropy_logreg`` (SCRUB's logistic regression), ``mia/loss_auc``, ``mia/loss_acc``; with a
    gold model: ``gold/forget_acc_gap``, ``gold/activation_distance``, ``gold/js_divergence``,
    ``gold/agreement_forget``, ``gold/agreement_test`` and the gold model's own ``gold/acc/*``, ``gold/mia/*`` (the
    values a good unlearned model should be close to); with ``zrf``: ``zrf``; with an original model:
    ``original/acc/*``; ``time/unlearn_s``, ``time/retrain_s``, ``time/speedup_vs_retrain`` when the times are known.
    They go to the Trainer's loggers and, on global rank 0, to ``metrics.json`` / ``metrics.md`` in ``output_dir``.

    Distributed (DDP): every rank evaluates a strided shard of each split with a plain, non-distributed loader; the
    per-sample outputs are padded to equal length and ``all_gather``-ed, so every metric is computed on the whole split,
    once, on rank 0 (scikit-learn attacks are not distributed) and broadcast. Sharding rather than "rank 0 evaluates
    everything" keeps the evaluation as fast as the Trainer's own loops; strided shards make the gathered order equal
    the split's order without exchanging indices.

    Args:
        gold: the retrained model (an ``nn.Module`` on [0, 1] input, or a lightning_unlearn checkpoint path, loaded
            weights-only with its split hashes checked against the DataModule). Default: ``trainer.gold_model`` when the
            Trainer provides one (``lightning_unlearn unlearn --gold_ckpt``), else none.
        original: the model before unlearning (module or checkpoint path), for ``original/acc/*`` and the
            before/after plots. With ``plots`` and no original, an unlearning method's backbone is copied at fit start.
        every_n_epochs: also evaluate every n training epochs (0: only at the end).
        splits: the splits whose accuracy is reported.
        mia: run the membership-inference attacks. nonmember_split: the non-member reference for them
            (``"test"``, as in the papers, or ``"holdout"``).
        classwise_nonmembers: in class-wise forgetting, ``"retained"`` (default, the protocol of SalUn and
            l1-sparse) keeps only the non-members of the retained classes (for ``"test"``: D_test_retain); ``"all"``
            keeps the forgotten classes' non-members too (which inflates MIA-efficacy: they look like D_f).
        entropy_max_members: the entropy attacks fit on all of D_r (the papers' protocol) up to this many samples, on
            a seeded random subset of this size beyond (the RBF SVC costs O(n^2): ~14 s for 6k samples, ~4 min for
            24k on a 2-core CPU); ``None``: always all of D_r.
        svc_max_samples: the RBF SVC attacks (MIA-efficacy, ``mia/entropy``) fit on at most this many samples, a
            seeded subset of members and non-members in their proportion beyond (``mia.bounded_attack_set``; the fit
            costs O(n^1.8-2)); ``None``: all. At 8192 the quickstart's attacks are unchanged (they fit on < 2,000).
        activation_p: the norm of ``gold/activation_distance``: 2 (default, Bad Teacher's L2) or 1 (Golatkar's L1).
        zrf: compute ZRF against randomly initialised copies of the architecture; zrf_inits: how many (the score is
            the mean over them), their seeds drawn from the evaluator's own generator (``metrics.reference_seeds``).
        plots: write ``decision_space.png`` and ``per_class_accuracy.png``. projection: ``"pca"`` or ``"tsne"``.
            max_plot_points: at most this many test points (and half as many D_f points) per panel.
        output_dir: where reports go (default: ``trainer.log_dir``; for ``evaluate()`` without a Trainer: none).
        seed: seed of the MIA member subsets, cross-validation folds, random ZRF models and plot subsampling. None of
            these draws touches the global RNGs: evaluating never changes what a method trains afterwards.
        unlearn_time_s: the unlearning time when the module does not carry one (e.g. from a checkpoint's meta).
        retrain_time_s: the gold model's training time when it is not in the gold checkpoint's meta.
    """

    #: Shared with the other evaluations of one setting (a benchmark group): the reference networks' outputs, ZRF's
    #: random networks and the gold model's own metrics are computed once (``evaluation.cache``). Results are identical
    #: with and without it. A class attribute, so an evaluator pickled by another version still has it.
    reference_cache: ReferenceCache | None = None

    def __init__(
        self,
        gold: nn.Module | str | None = None,
        original: nn.Module | str | None = None,
        every_n_epochs: int = 0,
        splits: Sequence[str] = SPLIT_NAMES,
        mia: bool = True,
        zrf: bool = True,
        plots: bool = False,
        output_dir: str | None = None,
        seed: int = 0,
        nonmember_split: Literal["test", "holdout"] = "test",
        projection: Literal["pca", "tsne"] = "pca",
        max_plot_points: int = 2000,
        unlearn_time_s: float | None = None,
        retrain_time_s: float | None = None,
        classwise_nonmembers: Literal["retained", "all"] = "retained",
        entropy_max_members: int | None = 10_000,
        activation_p: float = 2,
        zrf_inits: int = 5,
        svc_max_samples: int | None = 8192,
    ) -> None:
        nn.Module.__init__(self)
        unknown = [s for s in splits if s not in SPLIT_NAMES]
        if unknown:
            raise ValueError(f"Unknown split(s) {unknown}; choose from {', '.join(SPLIT_NAMES)}.")
        if every_n_epochs < 0:
            raise ValueError(f"every_n_epochs must be >= 0, got {every_n_epochs}.")
        if nonmember_split not in ("test", "holdout"):
            raise ValueError(f"nonmember_split must be 'test' or 'holdout', got {nonmember_split!r}.")
        if projection not in ("pca", "tsne"):
            raise ValueError(f"projection must be 'pca' or 'tsne', got {projection!r}.")
        if classwise_nonmembers not in ("retained", "all"):
            raise ValueError(f"classwise_nonmembers must be 'retained' or 'all', got {classwise_nonmembers!r}.")
        if not activation_p >= 1:
            raise ValueError(f"activation_p must be >= 1 (1: Golatkar's L1, 2: Bad Teacher's L2), got {activation_p}.")
        if zrf_inits < 1:
            raise ValueError(f"zrf_inits must be >= 1, got {zrf_inits}.")
        self.gold_model: nn.Module | None = None
        self.original_model: nn.Module | None = None
        self.gold_path: str | None = None
        self.original_path: str | None = None
        self.set_gold(gold)
        self.set_original(original)
        self.every_n_epochs = int(every_n_epochs)
        self.splits = tuple(splits)
        self.mia = bool(mia)
        self.zrf = bool(zrf)
        self.plots = bool(plots)
        self.output_dir = output_dir
        self.seed = int(seed)
        self.nonmember_split = nonmember_split
        self.projection = projection
        self.max_plot_points = int(max_plot_points)
        self.classwise_nonmembers = classwise_nonmembers
        if entropy_max_members is not None and entropy_max_members < 1:
            raise ValueError(f"entropy_max_members must be >= 1 or None, got {entropy_max_members}.")
        self.entropy_max_members = entropy_max_members
        if svc_max_samples is not None and svc_max_samples < 2:
            raise ValueError(f"svc_max_samples must be >= 2 or None, got {svc_max_samples}.")
        self.svc_max_samples = svc_max_samples
        self.activation_p = float(activation_p)
        self.zrf_inits = int(zrf_inits)
        self.unlearn_time_s = unlearn_time_s
        self.retrain_time_s = retrain_time_s
        #: The last evaluation's results (flat keys), identical on every rank.
        self.results: dict[str, float] = {}
        #: ``(epochs completed, results)`` of every evaluation, periodic ones included (None for test/evaluate).
        self.history: list[tuple[int | None, dict[str, float]]] = []
        #: Files written by the last evaluation.
        self.written: list[Path] = []
        self._fit_overhead_s = 0.0
        self._snapshot: nn.Module | None = None

    # -- configuration -----------------------------------------------------------------------------------------------
    def set_gold(self, gold: nn.Module | str | Path | None) -> None:
        """Set the gold model (a module, or a checkpoint path loaded at the next evaluation)."""
        self.gold_model, self.gold_path = None, None
        self.gold_meta: dict[str, Any] = {}
        if isinstance(gold, nn.Module):
            self.gold_model = gold
        elif gold is not None:
            self.gold_path = str(gold)

    def set_original(self, original: nn.Module | str | Path | None) -> None:
        """Set the original (pre-unlearning) model, a module or a checkpoint path."""
        self.original_model, self.original_path = None, None
        if isinstance(original, nn.Module):
            self.original_model = original
        elif original is not None:
            self.original_path = str(original)

    @property
    def has_gold(self) -> bool:
        return self.gold_model is not None or self.gold_path is not None

    @property
    def has_original(self) -> bool:
        return self.original_model is not None or self.original_path is not None

    @property
    def fit_overhead_s(self) -> float:
        """Seconds this callback spent evaluating inside the last ``fit`` before the module's ``on_fit_end`` (the
        periodic evaluations), to subtract from a method's measured unlearning time."""
        return self._fit_overhead_s

    def _load_paths(self, datamodule: Any) -> None:
        from lightning_unlearn.checkpoints import load_backbone

        cache = self.reference_cache

        def load(path: str, **kwargs: Any) -> tuple[nn.Module, dict[str, Any]]:
            read = lambda: load_backbone(path, datamodule, **kwargs)  # noqa: E731
            if cache is None:
                return read()
            model, meta = cache.checkpoint(path, read)  # read once per group (per file version) ...
            if meta.get("splits"):
                datamodule.verify_splits(meta["splits"], kwargs["what"])  # ... checked against every DataModule
            return model, meta

        if self.gold_model is None and self.gold_path is not None:
            self.gold_model, self.gold_meta = load(
                self.gold_path, what=f"gold checkpoint {self.gold_path}", trained_on="retain"
            )
        if self.original_model is None and self.original_path is not None:
            self.original_model, _ = load(self.original_path, what=f"original checkpoint {self.original_path}")

    # -- Callback hooks ----------------------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage not in ("fit", "test"):
            return
        dm = _require_datamodule(trainer.datamodule)
        self._load_paths(dm)
        if self.gold_model is None and getattr(trainer, "gold_model", None) is not None:
            self.gold_model = trainer.gold_model  # type: ignore[attr-defined]
            self.gold_meta = dict(getattr(trainer, "gold_meta", None) or {})

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_overhead_s = 0.0
        self._snapshot = None
        if self.plots and not self.has_original and callable(getattr(pl_module, "unlearned_backbone", None)):
            # The method's backbone before its first step *is* the original model; keep a copy for the plots.
            self._snapshot = copy.deepcopy(evaluated_backbone(pl_module)).eval().requires_grad_(False).cpu()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_epochs <= 0 or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        if trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs:
            return  # the end-of-fit evaluation follows
        start = time.perf_counter()
        results = self._run(trainer, pl_module, epoch=trainer.current_epoch + 1, write=False)
        loggable = _loggable(results)
        if loggable:
            pl_module.log_dict(loggable, on_step=False, on_epoch=True, sync_dist=trainer.world_size > 1)
        self._fit_overhead_s += time.perf_counter() - start

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # End of fit. Here (unlike in on_fit_end, which runs before the LightningModule's) the method's timer has
        # stopped; the process group is still up. The strategy has moved the module to CPU: _run moves the evaluated
        # networks to the root device for the evaluation and back afterwards.
        if stage != "fit" or trainer.state.status != TrainerStatus.RUNNING:
            return
        results = self._run(trainer, pl_module, epoch=trainer.current_epoch, write=True)
        loggable = _loggable(results)
        for logger in trainer.loggers:
            logger.log_metrics(loggable, step=trainer.global_step)
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in loggable.items()})  # as after trainer.test

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        results = self._run(trainer, pl_module, epoch=None, write=True)
        loggable = _loggable(results)
        if loggable:
            pl_module.log_dict(loggable, on_step=False, on_epoch=True, sync_dist=trainer.world_size > 1)

    # -- evaluation --------------------------------------------------------------------------------------------------
    def evaluate(
        self,
        model: nn.Module,
        datamodule: Any,
        *,
        device: torch.device | str | None = None,
        unlearn_time_s: float | None = None,
    ) -> dict[str, float]:
        """Evaluate ``model`` (an unlearning method, a ``Classifier`` or a backbone) on ``datamodule``'s splits
        without a Trainer, in this process. Writes reports when ``output_dir`` is set. Returns :attr:`results`."""
        dm = _require_datamodule(datamodule)
        self._load_paths(dm)
        backbone = evaluated_backbone(model)
        if device is None:
            param = next(backbone.parameters(), None)
            device = param.device if param is not None else torch.device("cpu")
        t = unlearn_time_s if unlearn_time_s is not None else getattr(model, "unlearn_time_s", None)
        with rng_isolated():
            results = self._compute(backbone, dm, torch.device(device), None, unlearn_time_s=t)
            plot_data = results.pop("_plots", None)
            out_dir = Path(self.output_dir) if self.output_dir else None
            self._finish(results, plot_data, epoch=None, out_dir=out_dir, dm=dm)
        return results

    def _run(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *, epoch: int | None, write: bool
    ) -> dict[str, float]:
        # Evaluation inside fit (every_n_epochs) must not shift what the method draws next: every global RNG (torch CPU
        # and CUDA, numpy, random) is restored afterwards, and the evaluation's own draws use their own generators.
        with rng_isolated():
            return self._run_isolated(trainer, pl_module, epoch=epoch, write=write)

    def _run_isolated(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *, epoch: int | None, write: bool
    ) -> dict[str, float]:
        dm = _require_datamodule(trainer.datamodule)
        self._load_paths(dm)
        out_dir = None
        if write:
            # log_dir broadcasts under DDP: every rank must ask for it, not only rank 0
            out_dir = Path(self.output_dir or trainer.log_dir or trainer.default_root_dir)
        unlearn_time = self.unlearn_time_s
        if unlearn_time is None and getattr(pl_module, "unlearn_time_s", None) is not None:
            unlearn_time = max(0.0, float(pl_module.unlearn_time_s) - self._fit_overhead_s)  # type: ignore[arg-type]
        device = trainer.strategy.root_device
        results = self._compute(evaluated_backbone(pl_module), dm, device, trainer, unlearn_time_s=unlearn_time)
        plot_data = results.pop("_plots", None)  # rank 0 only: plots are drawn where they are computed
        if trainer.world_size > 1:
            results = trainer.strategy.broadcast(results, src=0)
        self._finish(results, plot_data, epoch=epoch, out_dir=out_dir if trainer.is_global_zero else None, dm=dm)
        return results

    def _finish(
        self,
        results: dict[str, Any],
        plot_data: dict[str, Any] | None,
        *,
        epoch: int | None,
        out_dir: Path | None,
        dm: Any,
    ) -> None:
        self.results = results
        warn_models_at_chance(results, int(dm.num_classes))
        self.history.append((epoch, dict(results)))
        self.written = []
        if out_dir is None:
            return
        self.written.append(write_reports(results, out_dir))
        self.written.append(out_dir / "metrics.md")
        if plot_data is not None:
            self.written += _write_plots(plot_data, out_dir, dm, self.projection, self.seed)
        rank_zero_info(f"Unlearning evaluation written to {out_dir / 'metrics.json'}")

    def _compute(
        self,
        backbone: nn.Module,
        dm: Any,
        device: torch.device,
        trainer: pl.Trainer | None,
        *,
        unlearn_time_s: float | None,
    ) -> dict[str, Any]:
        """Run every needed forward pass (sharded and gathered under DDP) and compute the metrics on rank 0."""
        splits = dm.splits
        n = {name: len(splits[name]) for name in SPLIT_NAMES}
        nonmember = self.nonmember_split
        gold = self.gold_model
        original = self.original_model if self.original_model is not None else self._snapshot
        want_plots = self.plots and hasattr(backbone, "features") and hasattr(backbone, "head")
        randoms = self._random_references(backbone) if self.zrf and n["forget"] else []

        # which (model, split) outputs are needed; "retain@members" is the MIA member subset of D_r
        self._nonmember_pos = self._nonmember_positions(dm)
        member_pos = balanced_subset(n["retain"], len(self._nonmember_pos), self.seed)
        self._member_pos = member_pos
        nets: dict[str, nn.Module | None] = {"model": backbone, "gold": gold, "original": original}
        for role, net in nets.items():  # a network built for other images is refused, not evaluated at chance
            if net is not None:
                check_input(net, dm, f"The {'evaluated' if role == 'model' else role} model ({type(net).__name__})")
        nets.update({f"random{k}": r for k, r in enumerate(randoms)})
        need: dict[str, set[str]] = {k: set() for k in nets}
        for s in self.splits:
            need["model"].add("test" if s.startswith("test") else s)
        need["model"] |= {"forget", "test"}
        mia_sets = {nonmember, _MEMBERS, "retain"}
        if self.mia:
            need["model"] |= mia_sets
        if gold is not None:
            need["gold"] |= {"forget", "test"} | (mia_sets if self.mia else set())
        if original is not None:
            need["original"] |= {"forget", "test"}
        for k in range(len(randoms)):
            need[f"random{k}"].add("forget")
        for k in ("model", "gold"):
            if "retain" in need[k]:
                need[k].discard(_MEMBERS)  # read off the full retain outputs

        feats = {k: want_plots and hasattr(nets[k], "features") and hasattr(nets[k], "head") for k in nets}
        for k in range(len(randoms)):
            feats[f"random{k}"] = False
        outputs: dict[tuple[str, str], _Outputs] = {}
        with _evaluating([m for m in nets.values() if m is not None], device):
            for split in (*_BASE_SPLITS, _MEMBERS):
                users = {k: net for k, net in nets.items() if net is not None and split in need[k]}
                if not users:
                    continue
                base = "retain" if split == _MEMBERS else split
                positions = member_pos if split == _MEMBERS else np.arange(n[base])
                with_feats = {k: feats[k] and split in ("forget", "test") for k in users}  # plots use D_f + test
                keys = {k: self._output_key(net, k, dm, base, positions, with_feats[k]) for k, net in users.items()}
                cache = self.reference_cache
                for k, key in keys.items():
                    found = cache.get_outputs(key) if cache is not None and key is not None else None
                    if found is not None:
                        outputs[(k, split)] = found
                todo = {k: net for k, net in users.items() if (k, split) not in outputs}
                got = _forward(todo, with_feats, dm, base, positions, device, trainer, self.seed) if todo else {}
                outputs.update({(k, split): v for k, v in got.items()})
                for k, v in got.items():
                    if cache is not None and keys[k] is not None:
                        cache.put_outputs(keys[k], v)
        for k in ("model", "gold"):
            if (k, "retain") in outputs and (k, _MEMBERS) not in outputs:
                outputs[(k, _MEMBERS)] = outputs[(k, "retain")].select(member_pos)

        if trainer is not None and not trainer.is_global_zero:
            return {}  # rank 0 computes, then broadcasts
        return self._metrics(outputs, splits, dm, unlearn_time_s, want_plots)

    def _random_references(self, backbone: nn.Module) -> list[nn.Module]:
        """ZRF's random networks (built once per architecture and seed when a :attr:`reference_cache` is set)."""
        build = lambda: M.random_references(backbone, self.seed, self.zrf_inits)  # noqa: E731
        config = getattr(backbone, "config", None)
        if self.reference_cache is None or not callable(config):
            return build()
        key = ("randoms", json.dumps(config(), sort_keys=True, default=str), self.seed, self.zrf_inits)
        return self.reference_cache.randoms(key, build)

    def _data_key(self, dm: Any) -> str:
        info = dm.input_info() if callable(getattr(dm, "input_info", None)) else type(dm).__name__
        return json.dumps([info, dm.splits.hashes()], sort_keys=True, default=str)

    def _output_key(
        self, net: nn.Module, role: str, dm: Any, split: str, positions: np.ndarray, features: bool
    ) -> tuple[Any, ...] | None:
        """Cache key of a reference network's outputs (``None``: not cached; the evaluated model never is)."""
        if self.reference_cache is None or role == "model":
            return None
        digest = self.reference_cache.digest(net)
        data = self._data_key(dm)
        return ("outputs", digest, data, split, positions_key(positions), features, int(dm.eval_batch_size))

    def _reference_key(self, role: str, dm: Any) -> tuple[Any, ...]:
        """Cache key of the metrics of the gold model alone: its weights, the data, every option they depend on."""
        assert self.reference_cache is not None
        net = self.gold_model if role == "gold" else self.original_model
        options = {
            "mia": self.mia, "seed": self.seed, "nonmember_split": self.nonmember_split,
            "classwise_nonmembers": self.classwise_nonmembers, "entropy_max_members": self.entropy_max_members,
            "svc_max_samples": self.svc_max_samples,
        }  # fmt: skip
        return ("metrics", role, self.reference_cache.digest(net), self._data_key(dm), options_key(options))

    def _nonmember_positions(self, dm: Any) -> np.ndarray:
        """Positions, within the non-member split, of the MIA non-members: in class-wise forgetting with
        ``classwise_nonmembers="retained"`` only the samples of retained classes (SalUn's protocol), else all."""
        split = self.nonmember_split
        count = len(dm.splits[split])
        forgotten = list(getattr(dm.splits, "forget_classes", []) or [])
        if not forgotten or self.classwise_nonmembers == "all" or not count:
            return np.arange(count)
        labels = np.asarray(dm.dataset(split).targets)
        return np.flatnonzero(~np.isin(labels, forgotten))

    def _metrics(
        self,
        out: dict[tuple[str, str], _Outputs],
        splits: Any,
        dm: Any,
        unlearn_time_s: float | None,
        want_plots: bool,
    ) -> dict[str, Any]:
        res: dict[str, Any] = {}

        def view(model: str, split: str) -> _Outputs | None:
            if split in ("test_retain", "test_forget"):
                test = out.get((model, "test"))
                if test is None:
                    return None
                return test.select(np.isin(test.index.cpu().numpy(), splits[split]))
            return out.get((model, split))

        for s in self.splits:  # n counts the samples actually evaluated (gathered from every rank)
            res[f"n/{s}"] = len(view("model", s) or ())
        for s in self.splits:
            o = view("model", s)
            res[f"acc/{s}"] = M.accuracy(o.logits, o.targets) if o is not None else math.nan

        def attacks(model: str, prefix: str, into: dict[str, Any] = res) -> None:
            members, forget = view(model, _MEMBERS), view(model, "forget")
            nonmembers = view(model, self.nonmember_split)
            entropy_members = view(model, "retain")
            if members is None or nonmembers is None or forget is None or entropy_members is None:
                return
            cap = self.entropy_max_members
            if cap is not None and len(entropy_members) > cap:
                entropy_members = entropy_members.select(balanced_subset(len(entropy_members), cap, self.seed + 1))
            nonmembers = nonmembers.select(self._nonmember_pos)
            into[f"{prefix}mia/efficacy"] = mia_efficacy(
                members.probs, members.targets, nonmembers.probs, nonmembers.targets, forget.probs, forget.targets,
                seed=self.seed, max_samples=self.svc_max_samples,
            )  # fmt: skip
            for key, attack in (("mia/entropy", "svc"), ("mia/entropy_logreg", "logreg")):
                into[prefix + key] = entropy_mia(
                    entropy_members.probs, nonmembers.probs, forget.probs, attack=attack, seed=self.seed,
                    max_samples=self.svc_max_samples,
                )  # fmt: skip
            loss = loss_mia(forget.losses, nonmembers.losses, seed=self.seed)
            into[f"{prefix}mia/loss_auc"], into[f"{prefix}mia/loss_acc"] = loss["auc"], loss["acc"]

        if self.mia:
            attacks("model", "")
        if ("gold", "forget") in out:
            f, g = view("model", "forget"), view("gold", "forget")
            t, gt = view("model", "test"), view("gold", "test")
            assert f is not None and g is not None and t is not None and gt is not None

            def gold_only() -> dict[str, Any]:  # what depends on the gold model alone: shared through the cache
                values: dict[str, Any] = {}
                for s in ("forget", "test", "test_retain", "test_forget"):
                    o = view("gold", s)
                    values[f"gold/acc/{s}"] = M.accuracy(o.logits, o.targets) if o is not None else math.nan
                if self.mia:
                    attacks("gold", "gold/", values)
                return values

            cache = self.reference_cache
            gold = gold_only() if cache is None else cache.metrics(self._reference_key("gold", dm), gold_only)
            res.update({k: v for k, v in gold.items() if k.startswith("gold/acc/")})
            res["gold/forget_acc_gap"] = M.forget_acc_gap(M.accuracy(f.logits, f.targets), res["gold/acc/forget"])
            res["gold/activation_distance"] = M.activation_distance(f.probs, g.probs, p=self.activation_p)
            res["gold/js_divergence"] = float(M.js_divergence(f.probs, g.probs))
            res["gold/agreement_forget"] = M.agreement(f.logits, g.logits)
            res["gold/agreement_test"] = M.agreement(t.logits, gt.logits)
            res.update({k: v for k, v in gold.items() if not k.startswith("gold/acc/")})
        if ("original", "forget") in out:
            for s in ("forget", "test", "test_retain", "test_forget"):
                o = view("original", s)
                res[f"original/acc/{s}"] = M.accuracy(o.logits, o.targets) if o is not None else math.nan
        if self.zrf:
            f = view("model", "forget")
            refs = [o.probs for (name, split), o in out.items() if name.startswith("random") and split == "forget"]
            res["zrf"] = M.zrf(f.probs, refs) if refs and f is not None else math.nan

        retrain = self.retrain_time_s if self.retrain_time_s is not None else self.gold_meta.get("train_time_s")
        if unlearn_time_s is not None:
            res["time/unlearn_s"] = float(unlearn_time_s)
        if retrain is not None:
            res["time/retrain_s"] = float(retrain)
        if unlearn_time_s is not None and retrain is not None:
            res["time/speedup_vs_retrain"] = M.speedup_vs_retrain(retrain, unlearn_time_s)

        if want_plots:
            res["_plots"] = self._plot_data(out, view, dm)
        return res

    def _plot_data(self, out: dict[tuple[str, str], _Outputs], view: Any, dm: Any) -> dict[str, Any]:
        rng = np.random.default_rng(self.seed)

        def pick(count: int, limit: int) -> np.ndarray:
            return np.sort(rng.choice(count, size=limit, replace=False)) if count > limit else np.arange(count)

        f_pos = pick(len(out[("model", "forget")]), max(1, self.max_plot_points // 2))
        t_pos = pick(len(out[("model", "test")]), self.max_plot_points)
        data: dict[str, Any] = {"panels": [], "per_class": {}}
        data["is_forget"] = np.concatenate([np.ones(len(f_pos), bool), np.zeros(len(t_pos), bool)])
        for name, title in (("original", "original"), ("model", "unlearned"), ("gold", "gold (retrained)")):
            f, t = out.get((name, "forget")), out.get((name, "test"))
            if f is None or t is None or f.features is None or t.features is None:
                continue
            feats = torch.cat([f.features[f_pos], t.features[t_pos]]).cpu().numpy()
            preds = torch.cat([f.logits[f_pos].argmax(1), t.logits[t_pos].argmax(1)]).cpu().numpy()
            data["panels"].append((title, feats, preds))
        for name, label in (("original", "original"), ("model", "unlearned"), ("gold", "gold")):
            t = out.get((name, "test"))
            if t is not None:
                data["per_class"][label] = M.per_class_accuracy(t.logits, t.targets, dm.num_classes)
        return data


# -- helpers -------------------------------------------------------------------------------------------------------
def warn_models_at_chance(results: dict[str, Any], num_classes: int) -> None:
    """One warning per evaluated model whose accuracy on the retained test data is at chance (``methods.guards``)."""
    for prefix, what in (("", "The evaluated model"), ("gold/", "The gold model"), ("original/", "The original model")):
        warn_at_chance(results.get(f"{prefix}acc/test_retain"), num_classes, what)


@contextlib.contextmanager
def rng_isolated() -> Iterator[None]:
    """Restore every global RNG afterwards: torch's CPU and (when initialised) CUDA generators, numpy's legacy global
    state and Python's ``random``. What runs inside may draw from them; what runs after sees the same states as if it
    had not run."""
    py_state, np_state = random.getstate(), np.random.get_state()
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    devices = list(range(torch.cuda.device_count())) if cuda else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _require_datamodule(dm: Any) -> Any:
    if dm is None or not hasattr(dm, "splits") or not hasattr(dm, "dataset"):
        raise TypeError(
            "UnlearningEvaluator needs a lightning_unlearn UnlearningDataModule (it reads the retain/forget/test "
            f"splits), got {type(dm).__name__}. Pass `datamodule=dm` to the Trainer call."
        )
    return dm


def _loggable(results: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in results.items() if not k.startswith("n/") and isinstance(v, (int, float))}


class _evaluating:
    """Move networks to ``device`` in eval mode under ``no_grad``; restore every submodule's mode and the device."""

    def __init__(self, nets: Iterable[nn.Module], device: torch.device) -> None:
        self.nets = list({id(m): m for m in nets}.values())
        self.device = device

    def __enter__(self) -> None:
        self.modes = [{m: m.training for m in net.modules()} for net in self.nets]
        self.devices = [_device_of(net) for net in self.nets]
        for net in self.nets:
            net.to(self.device).eval()
        self.no_grad = torch.no_grad()
        self.no_grad.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self.no_grad.__exit__(*exc)
        for net, modes, dev in zip(self.nets, self.modes, self.devices, strict=True):
            for m, mode in modes.items():
                m.training = mode
            if dev is not None:
                net.to(dev)


def _device_of(net: nn.Module) -> torch.device | None:
    t = next(net.parameters(), None)
    if t is None:
        t = next(net.buffers(), None)
    return t.device if t is not None else None


def _dtype_of(net: nn.Module) -> torch.dtype:
    for p in net.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _forward(
    nets: dict[str, nn.Module],
    with_features: dict[str, bool],
    dm: Any,
    split: str,
    positions: np.ndarray,
    device: torch.device,
    trainer: pl.Trainer | None,
    seed: int = 0,
) -> dict[str, _Outputs]:
    """Outputs of each net on ``dm.dataset(split)[positions]``, in that order, gathered over ranks."""
    rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
    total = len(positions)
    mine = positions[rank::world]
    loader = _eval_batches(dm.dataset(split), mine, int(dm.eval_batch_size), int(dm.num_workers), seed)
    parts: dict[str, dict[str, list[Tensor]]] = {k: {"logits": [], "features": []} for k in nets}
    ys: list[Tensor] = []
    idx: list[Tensor] = []
    for x, y, index in loader:
        x = x.to(device)
        for name, net in nets.items():
            xin = x.to(_dtype_of(net))
            if with_features.get(name):
                f = net.features(xin)  # type: ignore[operator]
                logits = net.head(f)  # type: ignore[operator]
                parts[name]["features"].append(f.float())
            else:
                logits = net(xin)
            parts[name]["logits"].append(logits.float())
        ys.append(y.to(device))
        idx.append(index.to(device))

    num_classes = int(dm.num_classes)

    def cat(chunks: list[Tensor], width: int | None, dtype: torch.dtype) -> Tensor:
        if chunks:
            return torch.cat(chunks)
        shape = (0,) if width is None else (0, width)
        return torch.zeros(shape, dtype=dtype, device=device)

    y_all = _gather_rows(cat(ys, None, torch.long), total, trainer)
    i_all = _gather_rows(cat(idx, None, torch.long), total, trainer)
    result = {}
    for name, net in nets.items():
        logits = _gather_rows(cat(parts[name]["logits"], num_classes, torch.float32), total, trainer)
        feats = None
        if with_features.get(name):
            dim = int(net.head.in_features)  # type: ignore[union-attr]
            feats = _gather_rows(cat(parts[name]["features"], dim, torch.float32), total, trainer)
        result[name] = _Outputs(logits, y_all, i_all, feats)
    return result


def _eval_batches(view: Any, positions: np.ndarray, batch_size: int, num_workers: int, seed: int) -> Iterable[Any]:
    """Batches ``(x, y, index)`` of ``view[positions]`` in order. An untransformed view of in-memory images is sliced
    as tensors (the same values as the per-sample path, without ``__getitem__`` and collation per sample)."""
    base = getattr(view, "base", None)
    if isinstance(view, SplitView) and isinstance(base, InMemoryImages) and view.transform is None:
        index = torch.as_tensor(view.indices[positions], dtype=torch.long)
        labels = torch.as_tensor(view.targets[positions], dtype=torch.long)
        return (
            (base.images[i].float().div_(255.0), y, i)
            for i, y in zip(index.split(batch_size), labels.split(batch_size), strict=True)
        )
    # Its own generator: a DataLoader without one draws its workers' base seed from the global torch RNG on every
    # iteration, even unshuffled with num_workers=0.
    return DataLoader(
        Subset(view, positions.tolist()),
        batch_size=batch_size,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(int(seed)),
    )


def _gather_rows(local: Tensor, total: int, trainer: pl.Trainer | None) -> Tensor:
    """Reassemble a split from strided shards: rank r holds rows r, r + W, r + 2W, ... of ``total`` rows. Every shard
    is padded to ``ceil(total / W)`` rows; after ``all_gather`` -> (W, L, ...), row j of rank r is global row j*W + r,
    so ``transpose(0, 1).reshape(-1)`` restores the order and the padding lands after row ``total``."""
    if trainer is None or trainer.world_size == 1:
        return local
    world = trainer.world_size
    if total == 0:
        return local
    length = math.ceil(total / world)
    pad = length - local.shape[0]
    if pad:
        local = torch.cat([local, local.new_zeros((pad, *local.shape[1:]))])
    gathered = trainer.strategy.all_gather(local.contiguous())  # (W, L, ...)
    return gathered.transpose(0, 1).reshape(world * length, *local.shape[1:])[:total]


def _write_plots(data: dict[str, Any], out_dir: Path, dm: Any, projection: str, seed: int) -> list[Path]:
    from lightning_unlearn.evaluation.plots import PanelData, plot_decision_space, plot_per_class_accuracy

    written = []
    names = list(getattr(dm, "class_names", [])) or None
    forget_classes = list(getattr(dm.splits, "forget_classes", []) or [])
    if data["panels"]:
        panels = [PanelData(title, f, p) for title, f, p in data["panels"]]
        written.append(
            plot_decision_space(
                panels,
                data["is_forget"],
                out_dir / "decision_space.png",
                num_classes=int(dm.num_classes),
                class_names=names,
                method=projection,  # type: ignore[arg-type]
                seed=seed,
            )
        )
    if data["per_class"]:
        written.append(
            plot_per_class_accuracy(
                data["per_class"], out_dir / "per_class_accuracy.png", class_names=names, forget_classes=forget_classes
            )
        )
    return written
