"""``lightning_unlearn``: LightningCLI with ``fit``/``validate``/``test``/``predict`` and ``unlearn``.

``unlearn`` is a method of :class:`UnlearnTrainer` added through :meth:`UnlearnCLI.subcommands`. The original model comes
in through ``--original_ckpt`` (never ``ckpt_path``, which means "resume" in Lightning).

``test`` keeps Lightning's behaviour when a model is configured. Without one (``lightning_unlearn test --ckpt_path X
-c configs/data/digits.yaml``) :meth:`UnlearnTrainer.test` rebuilds the network from the checkpoint (weights only, split
hashes checked) and evaluates it with an :class:`~lightning_unlearn.evaluation.UnlearningEvaluator`; ``--gold_ckpt`` /
``--original_ckpt`` add the comparisons. ``unlearn`` runs the same evaluation at its end unless ``--evaluate false``.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from lightning_unlearn.checkpoints import (
    CheckpointError,
    check_same_forget_set,
    check_splits_json,
    load_backbone,
    read_checkpoint,
    save_checkpoint,
    write_splits_json,
)
from lightning_unlearn.byo import ModelSource, check_forget_stated, is_ours, load_model
from lightning_unlearn.data.base import UnlearningDataModule
from lightning_unlearn.quiet import method_notices_silenced
from lightning_unlearn.evaluation import UnlearningEvaluator
from lightning_unlearn.evaluation.report import metrics_to_json

#: Subcommands whose ``model`` may be left out (it is then rebuilt from ``--ckpt_path``).
_MODEL_OPTIONAL = ("test",)
#: Set to 1 (or pass ``--debug``) for the full traceback of an error instead of its one-line message.
DEBUG_ENV = "LIGHTNING_UNLEARN_DEBUG"
#: The files an evaluation writes into its output directory (``plots=True`` adds the PNGs).
REPORT_FILES = ("metrics.json", "metrics.md")
PLOT_FILES = ("decision_space.png", "per_class_accuracy.png")


class UnlearnTrainer(Trainer):
    """A ``Trainer`` with an :meth:`unlearn` entry point. Every other behaviour is Lightning's."""

    def unlearn(
        self,
        model: Any,
        datamodule: UnlearningDataModule,
        original_ckpt: str,
        gold_ckpt: str | None = None,
        output: str | None = None,
        evaluate: bool = True,
        retain_collapse: float | None = 0.1,
        arch: str | None = None,
        arch_args: dict[str, Any] | None = None,
        network_attr: str | None = None,
    ) -> dict[str, Any]:
        """Unlearn: run an unlearning method on the model in ``original_ckpt`` and write ``unlearned.ckpt``.

        Args:
            model: the unlearning method (an ``UnlearningMethod``).
            datamodule: the data, with the same forget spec, holdout and seed as the original model's checkpoint.
            original_ckpt: the trained model to unlearn from (read only, loaded with ``weights_only=True``).
            gold_ckpt: optional retrained (gold) model, checked to be trained on D_r (``train_on: retain``) and to
                describe the same splits; methods and the evaluator that need it find it as ``trainer.gold_model``.
            output: where to write the unlearned checkpoint (default: ``<log_dir>/unlearned.ckpt``). Never overwritten.
            evaluate: evaluate the unlearned model at the end (an ``UnlearningEvaluator``, against ``gold_ckpt`` when
                given) and write ``metrics.json``/``metrics.md`` next to the checkpoint. An evaluator configured in
                ``trainer.callbacks`` is used (its unset gold/original/output_dir filled in) rather than a second one.
            retain_collapse: end the run without writing a model when the accuracy on (a sample of) D_r falls below
                ``chance + retain_collapse * (original - chance)``; ``None`` turns the check off. NaN/inf weights always
                end the run (see ``docs/safety.md``).
            arch: the architecture of a checkpoint this package did not write (a Lightning checkpoint of your own
                module, or a plain ``state_dict``): ``AllCNN``, ``ResNet18``, ``ViT``, ``torchvision:NAME``,
                ``timm:NAME`` (``docs/embedding.md``). Such a checkpoint records no splits: the DataModule's forget
                set is taken as stated and recorded.
            arch_args: further init arguments of ``arch`` (e.g. ``{"width": 0.5}``).
            network_attr: the attribute of your LightningModule that holds the network (default: found).

        Every file the run writes (the checkpoint, ``unlearn.json``, the evaluation's reports) is checked before
        training starts: an existing one is refused, and so is an output directory that cannot be written.
        """
        out_path = Path(output) if output else Path(self.log_dir or self.default_root_dir) / "unlearned.ckpt"
        for p in (original_ckpt, gold_ckpt):
            if p is not None and Path(p).resolve() == out_path.resolve():
                raise FileExistsError(f"Refusing to write the unlearned model over the input checkpoint {p}.")
        check_writable_dir(out_path.parent)
        datamodule.setup("fit")
        source = ModelSource(arch, dict(arch_args or {}), network_attr)
        what = f"original checkpoint {original_ckpt}"
        backbone, original_meta = load_model(original_ckpt, datamodule, source, what=what)
        check_forget_stated(datamodule, original_meta, what)
        self.original_meta = original_meta
        self.gold_model = None
        self.gold_meta: dict[str, Any] | None = None
        if gold_ckpt is not None:
            self.gold_model, self.gold_meta = load_model(
                gold_ckpt, datamodule, source, what=f"gold checkpoint {gold_ckpt}", trained_on="retain"
            )
            if self.gold_meta.get("splits") and original_meta.get("splits"):
                check_same_forget_set(self.gold_meta, original_meta, f"gold checkpoint {gold_ckpt}", original_ckpt)
        # a checkpoint with no record goes to the evaluator as a module (it cannot rebuild it from the path)
        eval_gold = gold_ckpt if (self.gold_meta or {}).get("splits") else self.gold_model
        eval_original = original_ckpt if original_meta.get("splits") else copy.deepcopy(backbone)
        if getattr(model, "model", None) is None:
            model.attach(backbone)
        model.retain_collapse = retain_collapse
        evaluators = [cb for cb in self.callbacks if isinstance(cb, UnlearningEvaluator)]
        if evaluate and not evaluators:
            evaluators = [self._attach_evaluator(gold_ckpt=eval_gold, original_ckpt=eval_original)]
        for evaluator in evaluators:
            _fill_evaluator(evaluator, gold_ckpt=eval_gold, original_ckpt=eval_original)
            if evaluator.output_dir is None:
                evaluator.output_dir = str(out_path.parent)
        if self.is_global_zero:
            planned = [out_path, out_path.parent / "unlearn.json"]
            for evaluator in evaluators:
                planned += report_files(evaluator, Path(evaluator.output_dir))
            refuse_existing(planned, "pass another `--output`")
            check_splits_json(out_path.parent, datamodule.splits_info())
            for d in {Path(e.output_dir) for e in evaluators} - {out_path.parent}:
                check_writable_dir(d)

        start = time.perf_counter()
        with method_notices_silenced(model):
            self.fit(model, datamodule=datamodule)
        wall = time.perf_counter() - start
        unlearn_time = model.unlearn_time_s if getattr(model, "unlearn_time_s", None) is not None else wall
        # periodic evaluations (every_n_epochs) ran inside the method's timer; they are not unlearning work
        unlearn_time = max(0.0, unlearn_time - sum(e.fit_overhead_s for e in evaluators))
        summary: dict[str, Any] = {
            **model.method_config(),
            "unlearn_time_s": unlearn_time,
            "fit_wall_time_s": wall,
            "original_ckpt": str(original_ckpt),
            "gold_ckpt": str(gold_ckpt) if gold_ckpt else None,
            "original_train_time_s": original_meta.get("train_time_s"),
            "gold_train_time_s": (self.gold_meta or {}).get("train_time_s"),
            "original_source": original_meta.get("source"),
            "gold_source": (self.gold_meta or {}).get("source"),
            "forget_set": "stated by the DataModule (no split record in the original)"
            if not original_meta.get("splits")
            else "checked against the original's split record",
            "splits": {k: v for k, v in datamodule.splits_info().items() if not k.endswith("_indices")},
            "output": str(out_path),
            "metrics": json.loads(metrics_to_json(evaluators[0].results)) if evaluators else None,
        }
        if self.is_global_zero:
            meta = {
                "version": 1,
                "role": "unlearned",
                "splits": datamodule.splits_info(),
                "unlearn_time_s": unlearn_time,
                "method": summary["method"],
                "hparams": summary["hparams"],
                "original_ckpt": str(original_ckpt),
                "original_train_time_s": original_meta.get("train_time_s"),
                "original_source": original_meta.get("source"),
                "forget_set": summary["forget_set"],
            }
            save_checkpoint(out_path, model.unlearned_backbone(), meta, protect=(original_ckpt, gold_ckpt))
            (out_path.parent / "unlearn.json").write_text(json.dumps(summary, indent=1, default=str))
            rank_zero_info(f"Unlearned model written to {out_path} ({summary['method']}, {unlearn_time:.2f} s).")
            if evaluators and evaluators[0].results:
                print(metrics_table(evaluators[0].results), flush=True)  # the command's result, on stdout
        self.unlearn_summary = summary
        return summary

    def test(  # type: ignore[override]
        self,
        model: LightningModule | None = None,
        dataloaders: Any = None,
        ckpt_path: str | None = None,
        verbose: bool = True,
        datamodule: LightningDataModule | None = None,
        weights_only: bool | None = None,
        gold_ckpt: str | None = None,
        original_ckpt: str | None = None,
        arch: str | None = None,
        arch_args: dict[str, Any] | None = None,
        network_attr: str | None = None,
    ) -> list[dict[str, float]]:
        """Test a model; with no model, rebuild it from ``ckpt_path`` and evaluate it on every split.

        With a model (or one from a previous call) this is Lightning's ``Trainer.test``. Without one, ``ckpt_path`` must
        be a lightning_unlearn checkpoint (``fit``'s or ``unlearn``'s): its backbone is rebuilt from the recorded
        config and weights (``torch.load(weights_only=True)``), its split hashes are checked against ``datamodule``,
        and it is tested as a ``Classifier`` with an :class:`~lightning_unlearn.evaluation.UnlearningEvaluator`
        attached (an evaluator already in ``callbacks`` is used instead). ``metrics.json``/``metrics.md`` go to the
        log directory.

        Args:
            model, dataloaders, ckpt_path, verbose, datamodule, weights_only: as in ``lightning.pytorch.Trainer.test``.
            gold_ckpt: a retrained (gold) model to compare with (``gold/*`` metrics, ``time/speedup_vs_retrain``).
            original_ckpt: the model before unlearning (``original/acc/*``, before/after plots).
            arch, arch_args, network_attr: how to read a checkpoint this package did not write (as for ``unlearn``).
        """
        if isinstance(dataloaders, LightningDataModule) and datamodule is None:
            datamodule, dataloaders = dataloaders, None
        if model is None and self.lightning_module is None and ckpt_path is not None:
            from lightning_unlearn.methods.classifier import Classifier

            if not isinstance(datamodule, UnlearningDataModule):
                raise TypeError(
                    "Testing a checkpoint without a model config needs a lightning_unlearn DataModule (it checks the "
                    "checkpoint's splits and evaluates every split): pass `-c configs/data/<dataset>.yaml` (CLI) or "
                    "`datamodule=` (Python)."
                )
            source = ModelSource(arch, dict(arch_args or {}), network_attr)
            backbone, meta = load_model(ckpt_path, datamodule, source, what=f"checkpoint {ckpt_path}")
            model = Classifier(backbone)
            evaluator = self._attach_evaluator(
                gold_ckpt=_for_evaluator(gold_ckpt, datamodule, source, "gold", "retain"),
                original_ckpt=_for_evaluator(original_ckpt, datamodule, source, "original", None),
            )
            self._check_report_dir(evaluator)
            if evaluator.unlearn_time_s is None and meta.get("unlearn_time_s") is not None:
                evaluator.unlearn_time_s = float(meta["unlearn_time_s"])
            rank_zero_info(f"Testing {meta.get('role', 'model')} checkpoint {ckpt_path} (rebuilt from its weights).")
            ckpt_path = None  # the weights are in `model` already; Lightning would try to restore a training state
        else:
            if model is not None and ckpt_path is not None and Path(ckpt_path).exists():
                check_fits_model(ckpt_path, model)
            if gold_ckpt is not None or original_ckpt is not None:
                self._attach_evaluator(gold_ckpt=gold_ckpt, original_ckpt=original_ckpt)
            for cb in self.callbacks:
                if isinstance(cb, UnlearningEvaluator):
                    self._check_report_dir(cb)
        return super().test(model, dataloaders, ckpt_path, verbose, datamodule, weights_only)

    def _check_report_dir(self, evaluator: UnlearningEvaluator) -> None:
        """Refuse a ``test`` whose reports would overwrite another run's (e.g. ``--trainer.logger false``)."""
        if not self.is_global_zero:
            return
        out_dir = Path(evaluator.output_dir or self.log_dir or self.default_root_dir)
        check_writable_dir(out_dir)
        refuse_existing(report_files(evaluator, out_dir), "pass another `--trainer.default_root_dir` or keep a logger")

    def _attach_evaluator(self, gold_ckpt: Any, original_ckpt: Any) -> UnlearningEvaluator:
        """The ``UnlearningEvaluator`` among the callbacks (gold/original filled in where unset), or a new one."""
        for cb in self.callbacks:
            if isinstance(cb, UnlearningEvaluator):
                _fill_evaluator(cb, gold_ckpt=gold_ckpt, original_ckpt=original_ckpt)
                return cb
        evaluator = UnlearningEvaluator(gold=gold_ckpt, original=original_ckpt)
        self.callbacks.append(evaluator)
        rank_zero_info(
            "Added an UnlearningEvaluator callback"
            + (
                f" (gold: {gold_ckpt if isinstance(gold_ckpt, (str, Path)) else type(gold_ckpt).__name__})"
                if gold_ckpt is not None
                else " (no gold model: pass --gold_ckpt for the gold/* metrics)"
            )
        )
        return evaluator


def _for_evaluator(path: str | None, datamodule: Any, source: Any, role: str, trained_on: str | None) -> Any:
    """``path`` for a lightning_unlearn checkpoint (the evaluator loads and checks it), else the module read with
    ``source`` (the evaluator cannot rebuild an architecture the file does not record)."""
    if path is None or is_ours(path):
        return path
    module, _ = load_model(path, datamodule, source, what=f"{role} checkpoint {path}", trained_on=trained_on)
    return module


def metrics_table(results: dict[str, Any]) -> str:
    """The accuracy table of ``metrics.md`` (and the gold comparison when there is one), for the terminal."""
    from lightning_unlearn.evaluation.report import metrics_to_markdown

    text = metrics_to_markdown(results).split("\n")
    keep = [line for line in text if line.startswith("|") or line.startswith("## ")]
    return "\n".join(keep)


def _fill_evaluator(evaluator: UnlearningEvaluator, gold_ckpt: Any, original_ckpt: Any) -> None:
    """Give a configured evaluator the run's gold/original checkpoints where it has none; refuse a contradiction."""
    for what, path, has, current, setter in (
        ("gold", gold_ckpt, evaluator.has_gold, evaluator.gold_path, evaluator.set_gold),
        ("original", original_ckpt, evaluator.has_original, evaluator.original_path, evaluator.set_original),
    ):
        if path is None:
            continue
        if not has:
            setter(path)
        elif not isinstance(path, (str, Path)) or current is None or Path(current).resolve() != Path(path).resolve():
            raise ValueError(
                f"The configured UnlearningEvaluator already has a {what} model ({current or 'a module'}) but "
                f"--{what}_ckpt={path} was also given; set only one."
            )


def report_files(evaluator: UnlearningEvaluator, out_dir: Path) -> list[Path]:
    """The files ``evaluator`` will write into ``out_dir``."""
    return [out_dir / f for f in (*REPORT_FILES, *(PLOT_FILES if evaluator.plots else ()))]


def refuse_existing(paths: list[Path], advice: str) -> None:
    """``FileExistsError`` naming the first of ``paths`` that exists (nothing a user has is overwritten)."""
    for p in paths:
        if p.exists():
            raise FileExistsError(f"{p} exists and this run would overwrite it; {advice} (files are never overwritten).")


def check_writable_dir(directory: Path) -> None:
    """Make ``directory`` (and its parents) and check a file can be created in it, before any training starts."""
    directory = Path(directory)
    for parent in (directory, *directory.parents):
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(
                    f"Cannot write to {directory}: {parent} is a file, not a directory. Choose another output path."
                )
            break
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            pass
    except OSError as err:
        raise PermissionError(
            f"Cannot write to the output directory {directory} ({err.strerror or type(err).__name__}); choose a "
            "writable one (`--output`, `--trainer.default_root_dir`)."
        ) from None


def check_fits_model(ckpt_path: str | Path, model: LightningModule) -> None:
    """Refuse to restore a checkpoint into a configured model of another architecture (before Lightning tries)."""
    try:
        ckpt = read_checkpoint(ckpt_path)
    except CheckpointError:
        return  # not weights-only readable: Lightning's own loading decides
    state, own = ckpt.get("state_dict"), model.state_dict()
    if not isinstance(state, dict):
        return
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k, v in state.items() if k in own and getattr(v, "shape", None) != own[k].shape]
    if missing or unexpected or mismatched:
        recorded = (ckpt.get("lightning_unlearn") or {}).get("backbone", {})
        first = (mismatched or missing or unexpected)[0]
        raise CheckpointError(
            f"{ckpt_path} does not fit the configured model ({len(mismatched)} shape mismatches, {len(missing)} missing "
            f"and {len(unexpected)} unexpected keys, e.g. {first!r}); it holds "
            f"{recorded.get('class_path', 'another architecture')} {recorded.get('init_args', '')}. Leave out the "
            "model config (`-c model.yaml`) to rebuild the network from the checkpoint, or use the config it was "
            "trained with."
        )


class UnlearnCLI(LightningCLI):
    """LightningCLI with the ``unlearn`` subcommand and the DataModule -> backbone links."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        import lightning_unlearn.data  # noqa: F401 - the DataModules become known subclasses: `--data DigitsDataModule`
        import lightning_unlearn.methods  # noqa: F401 - and the methods: `--model BoundaryShrink`, listed in --help

        kwargs.setdefault("trainer_class", UnlearnTrainer)
        kwargs.setdefault("datamodule_class", UnlearningDataModule)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("subclass_mode_model", True)
        # A fixed default seed (0, what Lightning picked with a notice before) and no "Seed set to" line: _set_seed.
        kwargs.setdefault("seed_everything_default", 0)
        super().__init__(*args, **kwargs)

    def _set_seed(self) -> None:
        # Lightning's _set_seed, without the "Seed set to N" log line (the seed is in the saved config.yaml).
        from lightning.fabric.utilities.seed import seed_everything

        key = self.subcommand
        config = self.config[key] if key else self.config
        seed = config.get("seed_everything")
        if seed is False:
            return
        config["seed_everything"] = seed_everything(None if seed is True else seed, workers=True, verbose=False)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        commands = dict(LightningCLI.subcommands())
        commands["unlearn"] = {"model", "datamodule"}
        return commands

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        # Lightning builds one parser per subcommand through add_core_arguments_to_parser/add_arguments_to_parser,
        # which do not know which; remember it so that `unlearn` can skip the DataModule -> backbone links and `test`
        # can make the model optional.
        self._preparing_subcommand: str | None = subcommand
        try:
            return super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        finally:
            self._preparing_subcommand = None

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        if getattr(self, "_preparing_subcommand", None) not in _MODEL_OPTIONAL:
            super().add_core_arguments_to_parser(parser)
            return
        # Lightning's add_core_arguments_to_parser with `required=False` on the model group: `test --ckpt_path X`
        # needs no model config, the network is rebuilt from the checkpoint by UnlearnTrainer.test.
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        parser.set_defaults({"trainer." + k: v for k, v in self.trainer_defaults.items() if k != "callbacks"})
        parser.add_lightning_class_args(
            self._model_class, "model", subclass_mode=self.subclass_mode_model, required=False
        )
        parser.add_lightning_class_args(self._datamodule_class, "data", subclass_mode=self.subclass_mode_data)

    @property  # type: ignore[override]
    def _model_class(self) -> Any:
        # `unlearn` takes an unlearning method: its base class makes every method a known subclass (`--model
        # BoundaryShrink`, `--model.help SCRUB`, listed in `unlearn --help`); other subcommands take any LightningModule.
        if getattr(self, "_preparing_subcommand", None) == "unlearn" and self.__model_class is LightningModule:
            from lightning_unlearn.methods.base import UnlearningMethod

            return UnlearningMethod
        return self.__model_class

    @_model_class.setter
    def _model_class(self, value: Any) -> None:
        self.__model_class = value

    def _parse_ckpt_path(self) -> None:
        # Lightning reads the model's hyper-parameters from `ckpt_path` into the model config. A `test` without a model
        # config rebuilds the network from the checkpoint itself (UnlearnTrainer.test), so skip that there.
        sub = self.config.get("subcommand")
        if sub in _MODEL_OPTIONAL and self.config[sub].get("model") is None:
            return
        import contextlib
        import io

        try:
            with contextlib.redirect_stderr(io.StringIO()):
                super()._parse_ckpt_path()
        except SystemExit:
            ckpt_path = self.config[sub].get("ckpt_path")
            raise CheckpointError(
                f"{ckpt_path} cannot be restored into the configured model (its recorded hyper-parameters do not fit "
                f"{self.config[sub].get('model', {}).get('class_path', 'the model config')}). Leave out the model config "
                "(`-c model.yaml`) to rebuild the network from the checkpoint, or use the config it was trained with."
            ) from None

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        if getattr(self, "_preparing_subcommand", None) == "unlearn":
            return  # the method's backbone comes from --original_ckpt (backbone=None): no link target to fill
        for attr in ("num_classes", "in_channels", "image_size"):
            parser.link_arguments(f"data.{attr}", f"model.init_args.backbone.init_args.{attr}", apply_on="instantiate")
        for attr in ("mean", "std"):
            parser.link_arguments(
                f"data.{attr}", f"model.init_args.backbone.init_args.{attr}", compute_fn=list, apply_on="instantiate"
            )

    def _run_subcommand(self, subcommand: str) -> None:
        _Stage.running = True
        super()._run_subcommand(subcommand)

    def fixed_output(self) -> Path | None:
        """Where ``fit`` puts its model under a predictable name: ``<default_root_dir>/original.ckpt`` (trained on D),
        ``gold.ckpt`` (``--data.train_on retain``), ``model.ckpt`` (nothing to forget); ``None`` for other data."""
        dm = self.datamodule
        if not isinstance(dm, UnlearningDataModule):
            return None
        name = "model" if dm.forget is None else {"all": "original", "retain": "gold"}[dm.train_on]
        return Path(self.trainer.default_root_dir) / f"{name}.ckpt"

    def before_fit(self) -> None:
        target = self.fixed_output()
        if target is not None and self.trainer.is_global_zero:
            refuse_existing([target], "pass another `--trainer.default_root_dir` or move it away")
            check_writable_dir(target.parent)

    def after_fit(self) -> None:
        callback = self.trainer.checkpoint_callback
        path = getattr(callback, "best_model_path", "") or getattr(callback, "last_model_path", "")
        if path and self.trainer.is_global_zero and isinstance(self.datamodule, UnlearningDataModule):
            import shutil

            splits = self.datamodule.splits_info()
            write_splits_json(Path(path).parent, splits)
            target = self.fixed_output()
            if target is not None:
                write_splits_json(target.parent, splits)
                shutil.copyfile(path, target)
                path = str(target)
            rank_zero_info(f"Checkpoint: {path}")


_FORGET_KEYS = ("classes", "per_class", "fraction", "indices", "indices_file")
_FORGET_OPTIONS = ("--data.forget", "--data.init_args.forget")


def forget_mode_overrides(argv: list[str]) -> list[str]:
    """``argv`` where a forget spec given on the command line replaces the config's instead of merging into it.

    A shipped data config sets a mode (``classes: [3]``); jsonargparse would merge ``--data.forget.fraction 0.1`` into
    it, leaving two modes set, which ForgetSpec refuses. So the ``--data.forget.<key>`` options (and a whole
    ``--data.forget '{...}'``) are gathered into one spec that replaces the config's: ``--data.forget.classes [5]``
    alone is class-wise forgetting of class 5 whatever the config said.
    """
    import yaml

    spec: dict[str, Any] = {}
    keep: list[str] = []
    first: int | None = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        opt, eq, value = arg.partition("=")
        key = next((opt[len(o) + 1 :] for o in _FORGET_OPTIONS if opt.startswith(o + ".")), None)
        whole = opt in _FORGET_OPTIONS
        if (key in _FORGET_KEYS or whole) and arg.startswith("--"):
            if not eq:
                if i + 1 >= len(argv):
                    return list(argv)  # no value: let the parser say so
                value = argv[i + 1]
                i += 1
            parsed = value if key == "indices_file" else yaml.safe_load(value)
            if whole:
                if parsed is not None and not isinstance(parsed, dict):
                    return list(argv)
                spec = dict(parsed or {})
            else:
                spec[key] = parsed
            first = len(keep) if first is None else first
        else:
            keep.append(arg)
        i += 1
    if first is None:
        return list(argv)
    replaced = ["--data.init_args.forget=null"]
    if spec:
        replaced.append("--data.init_args.forget=" + json.dumps(spec))
    return [*keep[:first], *replaced, *keep[first:]]


#: Subcommands parsed by their own modules (imported only when used), each with its one-line summary.
_DISPATCHED = {
    "benchmark": ("lightning_unlearn.benchmark", "Compare methods over scenarios and seeds: report.md, results, plots."),
    "tune": ("lightning_unlearn.tune", "Search a method's hyper-parameters (optuna) against the gold model."),
    "audit": ("lightning_unlearn.audit", "Audit an unlearned model: membership inference and forget-set checks."),
}
_SUBCOMMANDS = {
    "fit": "Train a model: the original (on D = D_r + D_f) or, with --data.train_on retain, the gold model.",
    "unlearn": "Run an unlearning method (--model NAME) on --original_ckpt; writes unlearned.ckpt and its metrics.",
    "test": "Evaluate a checkpoint on every split (accuracy, MIA, gap to --gold_ckpt).",
    "validate": "Lightning's validate: one evaluation epoch over the validation set.",
    "predict": "Lightning's predict: run inference on the test set.",
}


def _dispatch(name: str) -> Any:
    """The ``main`` of the module that parses ``name`` (imported only now), or one line saying it is missing."""
    import importlib

    module_name = _DISPATCHED[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        raise RuntimeError(
            f"`lightning_unlearn {name}` needs the module {module_name}, which is not in this installation; "
            "update lightning_unlearn (pip install -U lightning_unlearn) or run from a checkout that has it."
        ) from None
    return module.main


def top_level_help() -> str:
    """``lightning_unlearn --help``: every subcommand with one line, and the methods ``unlearn`` takes."""
    from lightning_unlearn.methods.base import UnlearningMethod
    import lightning_unlearn.methods  # noqa: F401 - registers the subclasses

    lines = ["usage: lightning_unlearn SUBCOMMAND [options]   (SUBCOMMAND --help for its options)", "", "subcommands:"]
    order = ["fit", "unlearn", "test", "benchmark", "tune", "audit", "validate", "predict"]
    for name in order:
        text = _SUBCOMMANDS.get(name) or _DISPATCHED[name][1]
        lines.append(f"  {name:<10} {text}")
    public = set(lightning_unlearn.methods.__all__)
    methods = sorted(
        c.__name__
        for c in _subclasses(UnlearningMethod)
        if c.__name__ in public or not c.__module__.startswith("lightning_unlearn.")  # not internal bases
    )
    lines += ["", "methods (unlearn --model NAME; NAME --model.help for its arguments):"]
    lines += _wrap(", ".join(methods), "  ")
    lines += [
        "",
        "example: lightning_unlearn unlearn --data configs/data/digits.yaml --model configs/unlearn/boundary_shrink.yaml"
        " --original_ckpt runs/digits/original.ckpt --gold_ckpt runs/digits/gold.ckpt",
        "errors print one line; --debug (or LIGHTNING_UNLEARN_DEBUG=1) shows the traceback.",
    ]
    return "\n".join(lines)


def _subclasses(cls: type) -> list[type]:
    out: list[type] = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return list(dict.fromkeys(out))


def _wrap(text: str, indent: str, width: int = 100) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=width, initial_indent=indent, subsequent_indent=indent)


def fragment_configs(argv: list[str]) -> list[str]:
    """``--data F`` / ``--model F`` where ``F`` is a whole-config fragment (``data:``/``model:`` at its top, as the
    shipped ``configs/data/*.yaml`` and ``configs/unlearn/*.yaml``) become ``-c F``, so both anomalib-style calls
    (``--data configs/data/digits.yaml --model configs/unlearn/boundary_shrink.yaml``) and ``-c`` work with the same
    files, trainer settings included. A file holding only ``class_path``/``init_args`` stays a group config."""
    import yaml

    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        opt, eq, value = arg.partition("=")
        group = {"--data": "data", "--model": "model"}.get(opt)
        if group and not eq and i + 1 < len(argv):
            value = argv[i + 1]
        path = Path(value) if group and value else None
        if path is not None and path.suffix in (".yaml", ".yml", ".json") and path.is_file():
            try:
                content = yaml.safe_load(path.read_text())
            except (OSError, yaml.YAMLError):
                content = None
            if isinstance(content, dict) and group in content and "class_path" not in content:
                out += ["-c", value]
                i += 1 if eq else 2
                continue
        out.append(arg)
        i += 1
    return out


class _Stage:
    """Whether the subcommand itself has started (errors before it are usage errors: exit code 2)."""

    running = False


def main(args: list[str] | None = None, *, friendly: bool | None = None) -> None:
    """Entry point of the ``lightning_unlearn`` command (``benchmark`` is parsed by ``lightning_unlearn.benchmark``).

    From the command line (``args=None``) an error prints one line -- ``lightning_unlearn <subcommand>: error: <what
    to do>`` -- and exits with 2 (bad arguments or inputs, found before the run starts) or 1 (the run failed); the
    traceback only with ``--debug`` or ``LIGHTNING_UNLEARN_DEBUG=1``. Called from Python with ``args`` the exception
    propagates, unless ``friendly=True``.
    """
    argv = sys.argv[1:] if args is None else list(args)
    friendly = args is None if friendly is None else friendly
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    _Stage.running = False
    try:
        if not argv or argv[0] in ("-h", "--help"):
            print(top_level_help())
            return
        if argv[0] in _DISPATCHED:
            _Stage.running = True
            _dispatch(argv[0])(argv[1:])
            return
        argv = fragment_configs(forget_mode_overrides(argv))
        from lightning_unlearn.quiet import framework_notices_silenced

        prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "lightning_unlearn"
        # LightningCLI reads sys.argv (warning when `args` is also given): hand it our rewritten argv there instead.
        saved, sys.argv = sys.argv, ["lightning_unlearn" if prog in ("__main__.py", "-c") else prog, *argv]
        try:
            with framework_notices_silenced():
                UnlearnCLI(args=None, save_config_kwargs={"overwrite": True})
        finally:
            sys.argv = saved
    except KeyboardInterrupt:
        if debug or not friendly:
            raise
        print("lightning_unlearn: interrupted; nothing was written for the unfinished run.", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as err:  # noqa: BLE001 - one readable line, the traceback on request
        if debug or not friendly:
            raise
        sub = next((a for a in argv if not a.startswith("-")), "")
        print(f"lightning_unlearn{' ' + sub if sub else ''}: error: {error_line(err)}", file=sys.stderr)
        print(f"(the full traceback: rerun with --debug or {DEBUG_ENV}=1)", file=sys.stderr)
        raise SystemExit(1 if _Stage.running else 2) from None


def error_line(err: BaseException) -> str:
    """The message a person can act on: the innermost error raised by this package in the exception chain (the
    arguments' parser wraps it in several of its own), else the outermost one; its first line, with its type."""
    chain: list[BaseException] = []
    e: BaseException | None = err
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    package = str(Path(__file__).resolve().parent)
    ours = [x for x in chain if x.__traceback__ and traceback.extract_tb(x.__traceback__)[-1].filename.startswith(package)]
    chosen = ours[-1] if ours else chain[0]
    text = str(chosen).strip().splitlines()
    return f"{type(chosen).__name__}: {text[0] if text else ''}".rstrip(": ")


if __name__ == "__main__":  # pragma: no cover
    main()
