"""``lightning_unlearn``: LightningCLI with ``fit``/``validate``/``test``/``predict`` and ``unlearn``.

``unlearn`` is a method of :class:`~lightning_unlearn.trainer.UnlearnTrainer` added through :meth:`UnlearnCLI.subcommands`. The original model comes
in through ``--original_ckpt`` (never ``ckpt_path``, which means "resume" in Lightning).

``test`` keeps Lightning's behaviour when a model is configured. Without one (``lightning_unlearn test --ckpt_path X
-c configs/data/digits.yaml``) :meth:`UnlearnTrainer.test` rebuilds the network from the checkpoint (weights only, split
hashes checked) and evaluates it with an :class:`~lightning_unlearn.evaluation.UnlearningEvaluator`; ``--gold_ckpt`` /
``--original_ckpt`` add the comparisons. ``unlearn`` runs the same evaluation at its end unless ``--evaluate false``.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from lightning_unlearn.checkpoints import CheckpointError, write_splits_json
from lightning_unlearn.data.base import UnlearningDataModule
from lightning_unlearn.trainer import UnlearnTrainer, check_writable_dir, metrics_table, refuse_existing

#: Subcommands whose ``model`` may be left out (it is then rebuilt from ``--ckpt_path``).
_MODEL_OPTIONAL = ("test",)
#: Set to 1 (or pass ``--debug``) for the full traceback of an error instead of its one-line message.
DEBUG_ENV = "LIGHTNING_UNLEARN_DEBUG"


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


    def after_unlearn(self) -> None:
        """``unlearn`` ends with its result: the metrics table, on stdout (rank 0)."""
        results = getattr(self.trainer, "unlearn_results", None)
        if results and self.trainer.is_global_zero:
            print(metrics_table(results), flush=True)


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
    "tune": ("lightning_unlearn.tune", "Tune each method (Optuna) on targets the benchmark does not evaluate."),
    "audit": ("lightning_unlearn.audit", "Per-example privacy audit on shadow models: U-LiRA, NeurIPS'23 score."),
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
