"""``UnlearningEvaluator``: a Callback that evaluates a model on every split, against an optional gold model, and writes
``metrics.json``, ``metrics.md`` and (when asked) plots::

    evaluator = UnlearningEvaluator(gold=gold_net)          # or gold="gold.ckpt"
    Trainer(callbacks=[evaluator]).fit(method, datamodule=dm)
    evaluator.results["gold/forget_acc_gap"]                 # also in trainer.callback_metrics
    UnlearningEvaluator(gold=gold_net).evaluate(model, dm)   # without a Trainer

It is thin: every network's outputs on every split are computed once (``outputs.py``), each metric is a registered
component (``component.py``) and ``settings.py`` turns the arguments into the list of components (``suite.py`` runs
one evaluation). ``lightning_unlearn unlearn`` and ``test --ckpt_path X`` attach one (see ``cli.py``).
"""

from __future__ import annotations

import copy
import inspect
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerStatus
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lightning_unlearn.backbones.protocol import check_input
from lightning_unlearn.data.forget import SPLIT_NAMES
from lightning_unlearn.evaluation.cache import ReferenceCache
from lightning_unlearn.evaluation.models import ReferenceModels, evaluated_backbone, require_datamodule, rng_isolated
from lightning_unlearn.evaluation.report import write_reports
from lightning_unlearn.evaluation.settings import (
    METRIC_KEYS,
    OPTIONAL_SETTINGS,
    REPRESENTATION_KEYS,
    EvaluatorSettings,
)
from lightning_unlearn.evaluation.suite import evaluate_networks
from lightning_unlearn.methods.guards import warn_at_chance

__all__ = [
    "METRIC_KEYS",
    "REPRESENTATION_KEYS",
    "UnlearningEvaluator",
    "evaluated_backbone",
    "evaluator_settings",
    "rng_isolated",
]


class UnlearningEvaluator(EvaluatorSettings, ReferenceModels, Callback, nn.Module):
    """Evaluate a model on every split and against a gold (retrained) model; log the results and write reports.

    What is evaluated: for an ``UnlearningMethod`` its ``unlearned_backbone()``, for a ``Classifier`` its ``.model``
    (:func:`evaluated_backbone`), in eval mode under ``no_grad`` (every submodule's train/eval mode is restored).

    When: at the end of ``fit`` (so at the end of ``unlearn``), at the end of ``test``, and every ``every_n_epochs``
    training epochs when > 0. The end-of-fit evaluation runs in the ``teardown("fit")`` hook, i.e. after the method's
    own ``on_fit_end`` has stopped its timer, so evaluating never counts as unlearning time; the time spent in periodic
    evaluations is subtracted from the method's time as well (:attr:`fit_overhead_s`). Every evaluation's results go to
    the Trainer's loggers and to ``trainer.callback_metrics`` (so ``EarlyStopping``/``ModelCheckpoint`` and your code
    can read them), and, on global rank 0 for the end-of-fit and test evaluations, to ``metrics.json`` /
    ``metrics.md`` in ``output_dir``.

    Results (:attr:`results`, flat keys, each defined in ``docs/metrics.md``): ``acc/<split>``, ``n/<split>``; with
    ``mia``: ``mia/*``; with a gold model: ``gold/*`` (and the gold model's own ``gold/acc/*``, ``gold/mia/*``); with
    ``zrf``: ``zrf``; with an original model: ``original/acc/*``; ``time/*`` when known; with ``probe``:
    ``probe/*``, ``gold/probe/*``; with ``relearn`` and an original model: ``relearn/*``, ``gold/relearn/*``; with
    ``cka`` and a gold model: ``gold/cka_forget``, ``gold/cka_test``.

    Distributed (DDP): every rank evaluates a strided shard of each split; the per-sample outputs are gathered, so every
    metric is computed on the whole split, once, on rank 0 (scikit-learn is not distributed) and broadcast.

    Args:
        gold: the retrained model (an ``nn.Module`` on [0, 1] input, or a lightning_unlearn checkpoint path, loaded
            weights-only with its split hashes checked against the DataModule). Default: ``trainer.gold_model`` when the
            Trainer provides one (``lightning_unlearn unlearn --gold_ckpt``), else none.
        original: the model before unlearning (module or checkpoint path), for ``original/acc/*``, the relearning
            attack's target and the before/after plots. With ``plots`` and no original, an unlearning method's backbone
            is copied at fit start.
        every_n_epochs: also evaluate every n training epochs (0: only at the end).
        splits: the splits whose accuracy is reported.
        mia: run the membership-inference attacks. nonmember_split: their non-member reference (``"test"``, as in the
            papers, or ``"holdout"``).
        classwise_nonmembers: in class-wise forgetting, ``"retained"`` (default, SalUn's and l1-sparse's protocol)
            keeps only the non-members of the retained classes; ``"all"`` keeps the forgotten classes' too.
        entropy_max_members: the entropy attacks fit on all of D_r up to this many samples, a seeded subset beyond
            (``None``: always all). svc_max_samples: the RBF SVC attacks fit on at most this many samples, a seeded
            subset of members and non-members in their proportion beyond (``mia.bounded_attack_set``; ``None``: all).
        activation_p: the norm of ``gold/activation_distance``: 2 (default, Bad Teacher's L2) or 1 (Golatkar's L1).
        zrf: compute ZRF against ``zrf_inits`` randomly initialised copies of the architecture (the mean over them).
        plots: write ``decision_space.png`` and ``per_class_accuracy.png``. projection: ``"pca"`` or ``"tsne"``.
            max_plot_points: at most this many test points (and half as many D_f points) per panel.
        output_dir: where reports go (default: ``trainer.log_dir``; for ``evaluate()`` without a Trainer: none).
        seed: seed of every draw of the evaluation (MIA subsets and folds, ZRF's networks, the probe's and the
            relearning attack's samples, plot subsampling), none of them from the global RNGs.
        unlearn_time_s: the unlearning time when the module does not carry one (e.g. from a checkpoint's meta).
        retrain_time_s: the gold model's training time when it is not in the gold checkpoint's meta.
        probe: linear-probe recovery (``probe.py``) of the model and the gold model. probe_forget_share: the share of
            D_f the probe trains on (beside D_r); probe_max_retain: at most this many D_r samples (seeded subset).
        relearn: the relearning attack (``relearn.py``) on a copy of the model and of the gold model; needs an
            original model. relearn_samples: the forgotten samples the attacker fine-tunes on (k); relearn_seeds: how
            many draws of them; relearn_max_steps: the step cap (censoring); relearn_lr: SGD learning rate;
            relearn_target: the fraction of the original's D_f accuracy to reach.
        cka: linear CKA of the model's and the gold model's penultimate features on D_f and test (``cka.py``).
        extra_components: names of components of your own (``evaluation.register_component``), run last.
    """

    #: Shared with the other evaluations of one setting (a benchmark group): the reference networks' outputs, ZRF's
    #: random networks and the reference networks' own metrics are computed once (``evaluation.cache``). Results are
    #: identical with and without it. A class attribute, so an evaluator pickled by another version still has it.
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
        probe: bool = False,
        probe_forget_share: float = 0.2,
        probe_max_retain: int | None = 5000,
        relearn: bool = False,
        relearn_samples: int = 10,
        relearn_seeds: int = 3,
        relearn_max_steps: int = 30,
        relearn_lr: float = 0.01,
        relearn_target: float = 0.9,
        cka: bool = False,
        extra_components: Sequence[str] = (),
    ) -> None:
        nn.Module.__init__(self)
        self.configure(**{k: v for k, v in locals().items() if k not in ("self", "gold", "original", "__class__")})
        self.set_gold(gold)
        self.set_original(original)
        #: The last evaluation's results (flat keys), identical on every rank.
        self.results: dict[str, float] = {}
        #: ``(epochs completed, results)`` of every evaluation, periodic ones included (None for test/evaluate).
        self.history: list[tuple[int | None, dict[str, float]]] = []
        #: Files written by the last evaluation.
        self.written: list[Path] = []
        self._fit_overhead_s = 0.0
        self._snapshot: nn.Module | None = None

    # -- configuration -----------------------------------------------------------------------------------------------
    @property
    def fit_overhead_s(self) -> float:
        """Seconds this callback spent evaluating inside the last ``fit`` before the module's ``on_fit_end`` (the
        periodic evaluations), to subtract from a method's measured unlearning time."""
        return self._fit_overhead_s

    # -- Callback hooks ----------------------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage not in ("fit", "test"):
            return
        dm = require_datamodule(trainer.datamodule)
        self.load_references(dm, self.reference_cache)
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
        # stopped; the process group is still up. The strategy has moved the module to CPU: the evaluation moves the
        # evaluated networks to the root device and back afterwards.
        if stage != "fit" or trainer.state.status != TrainerStatus.RUNNING:
            return
        results = self._run(trainer, pl_module, epoch=trainer.current_epoch, write=True)
        loggable = _loggable(results)
        for logger in trainer.loggers:
            logger.log_metrics(loggable, step=trainer.global_step)
        # log_dict is closed after fit: put the values where Lightning's own logged metrics are read (the same
        # float32 tensors log_dict makes), every rank (the results are broadcast).
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in loggable.items()})

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
        dm = require_datamodule(datamodule)
        self.load_references(dm, self.reference_cache)
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
            dm = require_datamodule(trainer.datamodule)
            self.load_references(dm, self.reference_cache)
            out_dir = None
            if write:
                # log_dir broadcasts under DDP: every rank must ask for it, not only rank 0
                out_dir = Path(self.output_dir or trainer.log_dir or trainer.default_root_dir)
            unlearn_time = self.unlearn_time_s
            if unlearn_time is None and getattr(pl_module, "unlearn_time_s", None) is not None:
                spent = float(pl_module.unlearn_time_s)  # type: ignore[arg-type]
                unlearn_time = max(0.0, spent - self._fit_overhead_s)
            device = trainer.strategy.root_device
            results = self._compute(evaluated_backbone(pl_module), dm, device, trainer, unlearn_time_s=unlearn_time)
            plot_data = results.pop("_plots", None)  # rank 0 only: plots are drawn where they are computed
            if trainer.world_size > 1:
                results = trainer.strategy.broadcast(results, src=0)
            self._finish(results, plot_data, epoch=epoch, out_dir=out_dir if trainer.is_global_zero else None, dm=dm)
            return results

    def _compute(
        self, backbone: nn.Module, dm: Any, device: torch.device, trainer: pl.Trainer | None, *,
        unlearn_time_s: float | None,
    ) -> dict[str, Any]:
        """The components' results (rank 0; ``{}`` on the other ranks), ``"_plots"`` holding the plots' data."""
        retrain = self.retrain_time_s if self.retrain_time_s is not None else self.gold_meta.get("train_time_s")
        original = self.original_model if self.original_model is not None else self._snapshot
        nets = {"model": backbone, "gold": self.gold_model, "original": original}
        for role, net in nets.items():  # a network built for other images is refused, not evaluated at chance
            if net is not None:
                check_input(net, dm, f"The {'evaluated' if role == 'model' else role} model ({type(net).__name__})")
        return evaluate_networks(
            self.components(), nets, dm, device,
            trainer, seed=self.seed, cache=self.reference_cache, unlearn_time_s=unlearn_time_s,
            retrain_time_s=retrain, plots=self.plot_settings() if self.plots else None,
        )

    def _finish(
        self, results: dict[str, Any], plot_data: dict[str, Any] | None, *, epoch: int | None, out_dir: Path | None,
        dm: Any,
    ) -> None:
        from lightning_unlearn.evaluation.plots import write_plots

        self.results = results
        warn_models_at_chance(results, int(dm.num_classes))
        self.history.append((epoch, dict(results)))
        self.written = []
        if out_dir is None:
            return
        self.written.append(write_reports(results, out_dir))
        self.written.append(out_dir / "metrics.md")
        if plot_data is not None:
            self.written += write_plots(plot_data, out_dir, dm, self.projection, self.seed)
        rank_zero_info(f"Unlearning evaluation written to {out_dir / 'metrics.json'}")


def _loggable(results: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in results.items() if not k.startswith("n/") and isinstance(v, (int, float))}


def evaluator_settings(configured: dict[str, Any]) -> dict[str, Any]:
    """The evaluator's effective settings, for a cache key of what it measured: the signature's defaults overridden by
    ``configured``, less the per-run arguments (models, output directory, times) and less the switch and options of
    every optional component that is off (:data:`~lightning_unlearn.evaluation.settings.OPTIONAL_SETTINGS`: they
    cannot change a result then, and keys written before they existed stay valid)."""
    skip = {"gold", "original", "output_dir", "unlearn_time_s", "retrain_time_s"}  # set per run, not settings
    params = inspect.signature(UnlearningEvaluator).parameters.items()
    defaults = {k: p.default for k, p in params if k not in skip and p.default is not inspect.Parameter.empty}
    settings = {**defaults, **configured}
    for switch, options in OPTIONAL_SETTINGS.items():
        if not settings.get(switch):
            for name in (switch, *options):
                settings.pop(name, None)
    return settings


def warn_models_at_chance(results: dict[str, Any], num_classes: int) -> None:
    """One warning per evaluated model whose accuracy on the retained test data is at chance (``methods.guards``)."""
    for prefix, what in (("", "The evaluated model"), ("gold/", "The gold model"), ("original/", "The original model")):
        warn_at_chance(results.get(f"{prefix}acc/test_retain"), num_classes, what)
