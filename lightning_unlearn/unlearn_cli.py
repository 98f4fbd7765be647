"""``UnlearnCLI``: LightningCLI with ``fit``/``validate``/``test``/``predict`` and ``unlearn``, built on its public
extension points only (``subcommands``, ``parser_class``/``parser_kwargs``, ``add_core_arguments_to_parser``,
``add_arguments_to_parser``, ``parse_arguments``, the ``before_*``/``after_*`` hooks).

``unlearn`` is a method of :class:`~lightning_unlearn.trainer.UnlearnTrainer` added through
:meth:`UnlearnCLI.subcommands`. The original model comes in through ``--original_ckpt`` (never ``ckpt_path``, which
means "resume" in Lightning).

``test`` keeps Lightning's behaviour when a model is configured. Without one (``lightning_unlearn test --ckpt_path X
-c configs/data/digits.yaml``) :meth:`UnlearnTrainer.test` rebuilds the network from the checkpoint (weights only, split
hashes checked) and evaluates it with an :class:`~lightning_unlearn.evaluation.UnlearningEvaluator`; ``--gold_ckpt`` /
``--original_ckpt`` add the comparisons. ``unlearn`` runs the same evaluation at its end unless ``--evaluate false``.

A ``--ckpt_path``'s recorded hyper-parameters become the model config (as in Lightning) only after every class path
they name is found among the classes already loaded -- ours or the configured model's -- so nothing a checkpoint names
is imported (:func:`check_recorded_classes`).
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from lightning_unlearn.checkpoints import CheckpointError, read_checkpoint, write_splits_json
from lightning_unlearn.data.base import UnlearningDataModule
from lightning_unlearn.trainer import UnlearnTrainer, check_writable_dir, metrics_table, refuse_existing

__all__ = ["SubcommandParser", "UnlearnCLI", "check_recorded_classes"]

#: Subcommands whose ``model`` may be left out (it is then rebuilt from ``--ckpt_path``).
_MODEL_OPTIONAL = ("test",)


class SubcommandParser(LightningArgumentParser):
    """A ``LightningArgumentParser`` that knows which subcommand it parses (given through LightningCLI's per-subcommand
    ``parser_kwargs``), so that the arguments added to it can differ per subcommand."""

    def __init__(self, *args: Any, cli_subcommand: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cli_subcommand = cli_subcommand


class UnlearnCLI(LightningCLI):
    """LightningCLI with the ``unlearn`` subcommand and the DataModule -> backbone links.

    Args beyond LightningCLI's: ``only_subcommand`` builds the parser of that subcommand alone (the command line names
    it; the other four parsers cost ~0.3 s of CPU each to build); ``on_run`` is called when the subcommand starts, after
    every class is instantiated (errors before it are the user's input, after it the run's).
    """

    def __init__(
        self, *args: Any, only_subcommand: str | None = None, on_run: Callable[[], None] | None = None, **kwargs: Any
    ) -> None:
        import lightning_unlearn.data  # noqa: F401 - the DataModules become known subclasses: `--data DigitsDataModule`
        import lightning_unlearn.methods  # noqa: F401 - and the methods: `--model BoundaryShrink`, listed in --help

        self.only_subcommand = only_subcommand
        self.on_run = on_run
        self.hidden_ckpt_path: str | None = None
        kwargs.setdefault("trainer_class", UnlearnTrainer)
        kwargs.setdefault("datamodule_class", UnlearningDataModule)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("seed_everything_default", 0)  # Lightning's pick, without its notice (quiet.LOG_NOTICES)
        kwargs.setdefault("parser_class", SubcommandParser)
        parser_kwargs = dict(kwargs.get("parser_kwargs") or {})
        parser_kwargs.setdefault("exit_on_error", False)  # a parse error is raised, and cli.main prints it in one line
        for name in self.subcommands():
            parser_kwargs[name] = {**parser_kwargs.get(name, {}), "cli_subcommand": name}
        kwargs["parser_kwargs"] = parser_kwargs
        super().__init__(*args, **kwargs)

    def subcommands(self) -> dict[str, set[str]]:  # type: ignore[override]
        """Lightning's four and ``unlearn``; only ``only_subcommand`` when it is set."""
        commands = dict(LightningCLI.subcommands())
        commands["unlearn"] = {"model", "datamodule"}
        only = getattr(self, "only_subcommand", None)
        return {only: commands[only]} if only in commands else commands

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Lightning's trainer/model/data groups, where ``unlearn``'s model is an ``UnlearningMethod`` (every method a
        known subclass: ``--model BoundaryShrink``, ``--model.help SCRUB``, listed in ``unlearn --help``) and ``test``'s
        model may be left out (the network is then rebuilt from ``--ckpt_path`` by ``UnlearnTrainer.test``)."""
        subcommand = getattr(parser, "cli_subcommand", None)
        model_class: type = self.model_class or LightningModule  # type: ignore[assignment]
        if subcommand == "unlearn" and self.model_class is None:
            from lightning_unlearn.methods.base import UnlearningMethod

            model_class = UnlearningMethod
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        parser.set_defaults({"trainer." + k: v for k, v in self.trainer_defaults.items() if k != "callbacks"})
        parser.add_lightning_class_args(
            model_class, "model", subclass_mode=self.subclass_mode_model, required=subcommand not in _MODEL_OPTIONAL
        )
        data_class = self.datamodule_class or LightningDataModule
        parser.add_lightning_class_args(
            data_class, "data", subclass_mode=self.subclass_mode_data, required=self.datamodule_class is not None
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        if getattr(parser, "cli_subcommand", None) == "unlearn":
            return  # the method's backbone comes from --original_ckpt (backbone=None): no link target to fill
        for attr in ("num_classes", "in_channels", "image_size"):
            parser.link_arguments(f"data.{attr}", f"model.init_args.backbone.init_args.{attr}", apply_on="instantiate")
        for attr in ("mean", "std"):
            parser.link_arguments(
                f"data.{attr}", f"model.init_args.backbone.init_args.{attr}", compute_fn=list, apply_on="instantiate"
            )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Lightning's parse, then ``--ckpt_path``'s hyper-parameters into the model config, checked first.

        LightningCLI reads them itself right after this method (no hook in between) and jsonargparse imports the class
        paths they name, so the path is kept from it until :meth:`before_instantiate_classes`. A ``test`` without a
        model config rebuilds the network from the checkpoint's weights instead (``UnlearnTrainer.test``).
        """
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        self.hidden_ckpt_path, self.config[subcommand]["ckpt_path"] = ckpt_path, None
        model = self.config[subcommand].get("model")
        if model is None and subcommand in _MODEL_OPTIONAL:
            return
        ckpt = read_checkpoint(ckpt_path)
        recorded = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
        if recorded is not None and not isinstance(recorded, dict):
            raise CheckpointError(f"{ckpt_path}: its hyper_parameters are a {type(recorded).__name__}, not a mapping.")
        hparams = dict(recorded or {})
        hparams.pop("_instantiator", None)  # Lightning drops it too: the CLI never calls it
        if not hparams:
            return
        check_recorded_classes(hparams, model, ckpt_path)
        if "_class_path" in hparams:  # Lightning's layout of a model instantiated by LightningCLI
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        try:
            self.config = parser.parse_object({subcommand: {"model": hparams}}, self.config)
        except Exception as err:  # noqa: BLE001 - jsonargparse's ArgumentError, many lines
            configured = (model or {}).get("class_path", "the model config")
            raise CheckpointError(
                f"{ckpt_path} cannot be restored into the configured model (its recorded hyper-parameters do not fit "
                f"{configured}). Leave out the model config (`-c model.yaml`) to rebuild the network from the "
                "checkpoint, or use the config it was trained with."
            ) from err

    def before_instantiate_classes(self) -> None:
        subcommand = self.config.get("subcommand")
        if self.hidden_ckpt_path is not None and subcommand:
            self.config[subcommand]["ckpt_path"] = self.hidden_ckpt_path

    def after_instantiate_classes(self) -> None:
        if self.on_run is not None:
            self.on_run()

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


def check_recorded_classes(hparams: dict[str, Any], model_config: Any, path: str | Path) -> None:
    """Refuse a checkpoint whose hyper-parameters name a class (``_class_path``/``class_path``, at any depth) that is
    neither the configured model's (or one of its nested classes) nor a class of this package already loaded, or hold
    a dotted name (``pkg.mod.fn``) of a module that is not loaded but could be (jsonargparse imports such names for
    parameters typed as callables or classes). Names are looked up in ``sys.modules``; nothing is imported."""
    configured = {value for _, value in _class_paths(model_config)}
    for key, name in _class_paths(hparams):
        if name in configured or _loaded_class_of_ours(name):
            continue
        raise CheckpointError(
            f"{path} names the class {name!r} (hyper_parameters.{key}), which is neither a lightning_unlearn class "
            "nor the configured model: refused, nothing was imported. Configure the model it was trained with "
            "(`--model module.Class`), or leave out the model config to rebuild the network from its weights."
        )
    for key, value in _strings(hparams):
        top = value.split(".")[0]
        if _DOTTED.fullmatch(value) and top not in sys.modules and importlib.util.find_spec(top) is not None:
            raise CheckpointError(
                f"{path} names the module {top!r} (hyper_parameters.{key} = {value!r}), which is not loaded: refused, "
                "nothing was imported. Use a checkpoint whose recorded settings name no code."
            )


_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


def _strings(tree: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(key, value) of every string value in nested dicts and lists."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _strings(value, f"{prefix}{key}.")
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            yield from _strings(value, f"{prefix}{i}.")
    elif isinstance(tree, str):
        yield prefix.rstrip("."), tree


def _class_paths(tree: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(key, value) of every ``class_path``/``_class_path`` in nested mappings (dicts, jsonargparse Namespaces) and
    lists; a value that is not a string is reported as its ``repr``, so it is never looked up."""
    if hasattr(tree, "as_dict"):  # a jsonargparse Namespace (its items() would flatten the keys)
        tree = tree.as_dict()
    if isinstance(tree, dict):
        for key, value in tree.items():
            where = f"{prefix}{key}"
            if key in ("class_path", "_class_path"):
                yield where, value if isinstance(value, str) else repr(value)
            else:
                yield from _class_paths(value, where + ".")
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            yield from _class_paths(value, f"{prefix}{i}.")


def _loaded_class_of_ours(name: str) -> bool:
    """Whether ``name`` is ``lightning_unlearn.<module>.<Class>`` of a module already imported (no import here)."""
    module_name, _, attr = name.rpartition(".")
    if not (module_name == "lightning_unlearn" or module_name.startswith("lightning_unlearn.")):
        return False
    module = sys.modules.get(module_name)
    return module is not None and isinstance(getattr(module, attr, None), type)
