"""``UnlearnTrainer``: a Lightning ``Trainer`` with an ``unlearn`` entry point and a ``test`` that rebuilds a network
from a lightning_unlearn checkpoint; and the output checks they share (nothing a user has is overwritten).

Used by the CLI (:mod:`lightning_unlearn.cli`) and the benchmark (:mod:`lightning_unlearn.benchmark`); it imports
neither.
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from lightning_unlearn.checkpoints import (
    META_KEY,
    CheckpointError,
    check_same_forget_set,
    check_splits_json,
    read_checkpoint,
    save_checkpoint,
)
from lightning_unlearn.byo import ModelSource, check_forget_stated, export_native, is_ours, load_model, native_path
from lightning_unlearn.data.base import UnlearningDataModule
from lightning_unlearn.data.requests import NEXT_KEY, PreviousRequests, ledger_entry, ledger_of, next_request_record
from lightning_unlearn.evaluation import UnlearningEvaluator
from lightning_unlearn.evaluation.report import metrics_to_json
from lightning_unlearn.filecache import file_sha256
from lightning_unlearn.quiet import framework_notices_silenced, method_notices_silenced

__all__ = [
    "PLOT_FILES",
    "REPORT_FILES",
    "UnlearnTrainer",
    "check_fits_model",
    "check_writable_dir",
    "refuse_existing",
    "report_files",
]

#: The files an evaluation writes into its output directory (``plots=True`` adds the PNGs).
REPORT_FILES = ("metrics.json", "metrics.md")
PLOT_FILES = ("decision_space.png", "per_class_accuracy.png")


class UnlearnTrainer(Trainer):
    """A ``Trainer`` with an :meth:`unlearn` entry point. Every other behaviour is Lightning's (its construction
    without the cloud-package tips the CLI also drops, :mod:`lightning_unlearn.quiet`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        with framework_notices_silenced():
            super().__init__(*args, **kwargs)

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
        export: Literal["native"] | None = None,
        gold_train_time_s: float | None = None,
    ) -> dict[str, Any]:
        """Unlearn: run an unlearning method on the model in ``original_ckpt`` and write ``unlearned.ckpt``.

        Args:
            model: the unlearning method (an ``UnlearningMethod``).
            datamodule: the data, with the same forget spec, holdout and seed as the original model's checkpoint.
                For a model unlearned before (an ``unlearned.ckpt``), a further deletion request: its forget spec
                says what to forget now; the holdout and what was forgotten already come from the checkpoint's ledger
                (``datamodule.continue_from``), and the new checkpoint's ledger lists every request.
            original_ckpt: the model to unlearn from (read only, loaded with ``weights_only=True``): trained, or
                unlearned by earlier requests.
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
            export: ``"native"`` also writes the unlearned network in the format of the file the model first came
                from (``NAME.native.ckpt`` beside ``output``: your ``LightningModule.load_from_checkpoint`` takes it;
                ``NAME.native.pt`` for a plain ``state_dict``; a model of this package: its ``state_dict``).
            gold_train_time_s: the gold model's training time when its file does not record one (a model you
                brought): the speed-up is measured against it.

        Every file the run writes (the checkpoint, ``unlearn.json``, the evaluation's reports) is checked before
        training starts: an existing one is refused, and so is an output directory that cannot be written.
        """
        out_path = Path(output) if output else Path(self.log_dir or self.default_root_dir) / "unlearned.ckpt"
        for p in (original_ckpt, gold_ckpt):
            if p is not None and Path(p).resolve() == out_path.resolve():
                raise FileExistsError(f"Refusing to write the unlearned model over the input checkpoint {p}.")
        previous = PreviousRequests.from_meta(read_checkpoint(original_ckpt).get(META_KEY))
        if previous is not None:  # a model unlearned before: this is a further deletion request
            datamodule.continue_from(previous)
        datamodule.setup("fit")
        source = ModelSource(arch, dict(arch_args or {}), network_attr)
        what = f"original checkpoint {original_ckpt}"
        backbone, original_meta = load_model(original_ckpt, datamodule, source, what=what)
        ledger = ledger_of(original_meta)
        check_forget_stated(datamodule, original_meta, what)
        check_writable_dir(out_path.parent)  # after the inputs are known good: a refused run leaves no directory
        self.original_meta = original_meta
        self.gold_model = None
        self.gold_meta: dict[str, Any] | None = None
        if gold_ckpt is not None:
            self.gold_model, self.gold_meta = load_model(
                gold_ckpt, datamodule, source, what=f"gold checkpoint {gold_ckpt}", trained_on="retain"
            )
            if self.gold_meta.get("splits") and original_meta.get("splits") and not ledger:
                check_same_forget_set(self.gold_meta, original_meta, f"gold checkpoint {gold_ckpt}", original_ckpt)
            if gold_train_time_s is not None and self.gold_meta.get("train_time_s") is None:
                self.gold_meta["train_time_s"] = float(gold_train_time_s)
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
            if evaluator.retrain_time_s is None and self.gold_meta and self.gold_meta.get("train_time_s") is not None:
                evaluator.retrain_time_s = float(self.gold_meta["train_time_s"])
        native_source = original_meta.get("native_source") or original_meta.get("source")
        native_out = native_path(out_path, native_source) if export == "native" else None
        if self.is_global_zero:
            planned = [out_path, out_path.parent / "unlearn.json", *([native_out] if native_out else [])]
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
            "request": len(ledger) + 1,
            "output": str(out_path),
            "native_output": str(native_out) if native_out else None,
            "metrics": json.loads(metrics_to_json(evaluators[0].results)) if evaluators else None,
        }
        if self.is_global_zero:
            splits = datamodule.splits
            entry = ledger_entry(
                splits, datamodule.forget, summary, request=len(ledger) + 1, unlearn_time_s=unlearn_time,
                input_ckpt=str(original_ckpt), input_sha256=file_sha256(original_ckpt),
            )
            meta = {
                "version": 1,
                "role": "unlearned",
                "splits": {**datamodule.splits_info(), NEXT_KEY: next_request_record(splits, len(ledger) + 1)},
                "ledger": [*ledger, entry],
                "unlearn_time_s": unlearn_time,
                "method": summary["method"],
                "hparams": summary["hparams"],
                "original_ckpt": str(original_ckpt),
                "original_train_time_s": original_meta.get("train_time_s"),
                "original_source": original_meta.get("source"),
                "native_source": native_source,
                "forget_set": summary["forget_set"],
            }
            save_checkpoint(out_path, model.unlearned_backbone(), meta, protect=(original_ckpt, gold_ckpt))
            if native_out is not None:
                export_native(model.unlearned_backbone(), native_source, native_out, {"ledger": meta["ledger"]})
            (out_path.parent / "unlearn.json").write_text(json.dumps(summary, indent=1, default=str))
            rank_zero_info(f"Unlearned model written to {out_path} ({summary['method']}, {unlearn_time:.2f} s).")
        # the CLI prints these as the command's result (UnlearnCLI.after_unlearn); the benchmark and audit do not
        self.unlearn_results = dict(evaluators[0].results) if evaluators and evaluators[0].results else None
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
        gold_train_time_s: float | None = None,
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
            gold_train_time_s: the gold model's training time when its file records none (as for ``unlearn``).
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
        for cb in self.callbacks:
            if isinstance(cb, UnlearningEvaluator) and cb.retrain_time_s is None and gold_train_time_s is not None:
                cb.retrain_time_s = float(gold_train_time_s)
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
    for what, path, has, current, module, setter in (
        ("gold", gold_ckpt, evaluator.has_gold, evaluator.gold_path, evaluator.gold_model, evaluator.set_gold),
        ("original", original_ckpt, evaluator.has_original, evaluator.original_path, evaluator.original_model,
         evaluator.set_original),
    ):
        if path is None or (module is not None and module is path):
            continue  # nothing given, or this very module (a checkpoint with no record, read by the trainer)
        if not has:
            setter(path)
        elif not isinstance(path, (str, Path)) or current is None or Path(current).resolve() != Path(path).resolve():
            given = path if isinstance(path, (str, Path)) else f"(a {type(path).__name__} read from a checkpoint)"
            raise ValueError(
                f"The configured UnlearningEvaluator already has a {what} model ({current or 'a module'}) but "
                f"--{what}_ckpt {given} was also given; set only one."
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
