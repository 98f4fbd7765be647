"""What every application's configuration shares: the fields (:class:`ExperimentConfig`), the command's parser and
the arguments that spell them the same way in the benchmark, the tuner and the audit (:func:`command_parser`,
:func:`add_experiment_arguments`, :func:`add_run_arguments`), parsing a command line (:func:`parse_command`: config
files read safely, lists on the command line replacing the configured ones, every error one line) and reading a path
or arguments into values (:func:`config_args`, :func:`parsed_values`)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser

from lightning_unlearn.backbones import Backbone
from lightning_unlearn.data.base import UnlearningDataModule
from lightning_unlearn.experiment.build import LINKED_BACKBONE_ARGS
from lightning_unlearn.experiment.errors import ConfigError
from lightning_unlearn.experiment.settings import TrainerSettings, TrainingSettings
from lightning_unlearn.experiment.specs import MethodSpec

__all__ = [
    "EXECUTOR_HELP",
    "ExperimentConfig",
    "add_experiment_arguments",
    "add_run_arguments",
    "command_parser",
    "config_args",
    "parse_command",
    "parsed_values",
]

EXECUTOR_HELP = (
    "Where the jobs run: local (this process, one after the other), {name: processes, workers: 2} (worker processes "
    "on this machine) or {name: ray, address: auto, max_retries: 1, resources: {num_cpus: 1, num_gpus: 1}} "
    "(resources: per job). See docs/scale-out.md."
)


@dataclass(kw_only=True)
class ExperimentConfig:
    """The fields the benchmark's and the audit's configurations share: where to write, the DataModule and backbone
    (``class_path``/``init_args``), how the original and gold models are trained, the methods, the Trainer settings,
    where the jobs run, whether Lightning's messages are silenced, and the parsed configuration itself (``source``,
    written back as ``config.yaml``)."""

    output_dir: str
    data: dict[str, Any]
    backbone: dict[str, Any]
    training: TrainingSettings
    methods: list[MethodSpec]
    trainer: TrainerSettings
    executor: Any = "local"  # "local", "ray" or {name, ..., resources: {num_cpus, num_gpus}}
    quiet: bool = True
    source: dict[str, Any] = field(default_factory=dict)


def command_parser(prog: str, description: str, configs: str, output_dir: str) -> ArgumentParser:
    """The parser of ``lightning_unlearn <prog>``: ``-c`` (a YAML config of ``configs``) and ``--output_dir``. Parse
    with :func:`parse_command` (its errors are raised, not printed with the usage)."""
    parser = ArgumentParser(prog=f"lightning_unlearn {prog}", description=description, default_env=False,
                            exit_on_error=False)
    parser.add_argument("-c", "--config", action=ActionConfigFile, help=f"YAML config ({configs}).")
    parser.add_argument("--output_dir", type=str, default=output_dir, help="Where everything is written.")
    return parser


def add_experiment_arguments(parser: ArgumentParser, *, data_skip: Iterable[str], data_help: str, methods_help: str,
                             methods_required: bool = True) -> None:
    """``data``, ``backbone``, ``training``, ``methods`` and ``trainer``, as every application spells them."""
    parser.add_subclass_arguments(UnlearningDataModule, "data", instantiate=False, required=True, skip=set(data_skip),
                                  help=data_help)
    parser.add_subclass_arguments(
        Backbone, "backbone", instantiate=False, required=True, skip=set(LINKED_BACKBONE_ARGS),
        help="The network (class_path/init_args); num_classes, in_channels, image_size, mean, std come from the data.",
    )
    parser.add_class_arguments(TrainingSettings, "training", instantiate=False)
    methods = {"required": True} if methods_required else {"default": []}
    parser.add_argument("--methods", type=list[dict[str, Any]], help=methods_help, **methods)
    parser.add_class_arguments(TrainerSettings, "trainer", instantiate=False)


def add_run_arguments(parser: ArgumentParser) -> None:
    """``executor`` and ``quiet``, as every application spells them."""
    parser.add_argument("--executor", type=dict[str, Any] | str, default="local", help=EXECUTOR_HELP)
    parser.add_argument("--quiet", type=bool, default=True, help="Silence Lightning's per-run messages.")


def config_args(source: str | Path | Sequence[str] | None, overrides: Mapping[str, Any]) -> list[str]:
    """Command-line arguments for a YAML path (``-c path``) or arguments, with ``overrides`` (dotted keys) after
    them: a string as it is, anything else as JSON."""
    args = ["-c", str(source)] if isinstance(source, (str, Path)) else list(source or [])
    for key, value in overrides.items():
        args.append(f"--{key}={value if isinstance(value, str) else json.dumps(value)}")
    return args


def parsed_values(ns: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(values, source)`` of a parsed namespace: its values without the config file entries, and the same as plain
    JSON types (what ``config.yaml`` records)."""
    d = ns.as_dict() if hasattr(ns, "as_dict") else dict(ns)
    d.pop("config", None)
    d.pop("__path__", None)
    return d, json.loads(json.dumps(d, default=str))


def parse_command(parser: ArgumentParser, args: Sequence[str]) -> Any:
    """Parse ``args`` with ``parser`` (a :func:`command_parser`): every ``-c`` file is first read with
    ``yaml.safe_load`` (a file that is not plain YAML, e.g. one with a ``!!python/...`` tag, is refused naming it, and
    nothing it names is built); a list given on the command line replaces the configured one (jsonargparse would merge
    the items of a list of dataclasses one by one: ``--scenarios`` with ``{classes: [4]}`` over ``{classes: [3],
    per_class: 40}`` kept ``per_class``); every error is one :class:`~.errors.ConfigError` line naming the option."""
    args = list(args)
    for path in _config_files(args):
        try:
            yaml.safe_load(Path(path).read_text())
        except OSError:
            continue  # a missing file: jsonargparse's own error names it
        except (yaml.YAMLError, ValueError) as err:
            raise ConfigError(f"{path} is not a plain YAML config: {_first_line(str(err))}") from None
    ns = _parse(parser, args)
    lists = [(i, key) for i, key in _options(args) if isinstance(ns.get(key), list)]
    if lists:
        for i, key in reversed(lists):
            args.insert(i, f"--{key}=[]")  # the list starts empty, so the given one is taken whole
        ns = _parse(parser, args)
    return ns


def _parse(parser: ArgumentParser, args: list[str]) -> Any:
    try:
        return parser.parse_args(args)
    except ArgumentError as err:
        raise ConfigError(f"{one_line_parse_error(str(err))} (`{parser.prog} --help` lists the options)") from None


def _config_files(args: Sequence[str]) -> Iterator[str]:
    for i, arg in enumerate(args):
        if arg in ("-c", "--config") and i + 1 < len(args):
            yield args[i + 1]
        elif arg.startswith("--config="):
            yield arg.partition("=")[2]


def _options(args: Sequence[str]) -> Iterator[tuple[int, str]]:
    """``(position, key)`` of every ``--key=value`` / ``--key value`` on the command line (config files aside)."""
    for i, arg in enumerate(args):
        if arg.startswith("--") and arg != "--config" and not arg.startswith("--config="):
            yield i, arg[2:].partition("=")[0]


#: Lines of jsonargparse's nested messages that say where, not what.
_NOISE = re.compile(
    r"^(- )?(Does not validate against any of the Union subtypes|Subtypes:|Errors:|Given value type:|"
    r"Expected a <class 'NoneType'>|Expected a path but|Problem with given class_path|in \")"
)


def one_line_parse_error(message: str) -> str:
    """jsonargparse's nested message (one block per nested key and per union member) as one line: the option with the
    nested keys that failed, the innermost reason, and the value given, e.g. ``--scenarios (targets.fraction):
    expected float (given: abc)``."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    keys: list[str] = []
    reason = given = None
    for ln in lines:
        m = re.match(r'^(?:- )?Parser key "([^"]+)":\s*(.*)$', ln)
        if m:
            keys.append(m.group(1))
            reason, given = m.group(2) or None, None
            continue
        if ln.startswith("Given value:"):
            given = given or ln[len("Given value:"):].strip()
        elif reason is None and not _NOISE.match(ln):
            reason = ln[2:] if ln.startswith("- ") else ln
    if not keys:
        return _first_line(message)
    text = re.sub(r"<class '([\w.]+)'>", r"\1", reason or "invalid value")
    text = re.sub(r"^Expected a ", "expected ", text).replace(". Got value: ", ", got ")
    where = f"--{keys[0]}" + (f" ({'.'.join(keys[1:])})" if len(keys) > 1 else "")
    shown = f" (given: {given})" if given and given not in text and not given.startswith("NestedArg(") else ""
    return " ".join(f"{where}: {text}{shown}".split())


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), text)
