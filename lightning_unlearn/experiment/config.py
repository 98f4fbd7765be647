"""What every application's configuration shares: the fields (:class:`ExperimentConfig`), the command's parser and
the arguments that spell them the same way in the benchmark, the tuner and the audit (:func:`command_parser`,
:func:`add_experiment_arguments`, :func:`add_run_arguments`), and reading a path or arguments into values
(:func:`config_args`, :func:`parsed_values`)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser

from lightning_unlearn.backbones import Backbone
from lightning_unlearn.data.base import UnlearningDataModule
from lightning_unlearn.experiment.build import LINKED_BACKBONE_ARGS
from lightning_unlearn.experiment.settings import TrainerSettings, TrainingSettings
from lightning_unlearn.experiment.specs import MethodSpec

__all__ = [
    "EXECUTOR_HELP",
    "ExperimentConfig",
    "add_experiment_arguments",
    "add_run_arguments",
    "command_parser",
    "config_args",
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
    """The parser of ``lightning_unlearn <prog>``: ``-c`` (a YAML config of ``configs``) and ``--output_dir``."""
    parser = ArgumentParser(prog=f"lightning_unlearn {prog}", description=description, default_env=False)
    parser.add_argument("-c", "--config", action=ActionConfigFile, help=f"YAML config ({configs}).")
    parser.add_argument("--output_dir", type=str, default=output_dir, help="Where everything is written.")
    return parser


def add_experiment_arguments(parser: ArgumentParser, *, data_skip: Iterable[str], data_help: str, methods_help: str,
                             methods_required: bool = True) -> None:  # fmt: skip
    """``data``, ``backbone``, ``training``, ``methods`` and ``trainer``, as every application spells them."""
    parser.add_subclass_arguments(UnlearningDataModule, "data", instantiate=False, required=True, skip=set(data_skip),
                                  help=data_help)  # fmt: skip
    parser.add_subclass_arguments(
        Backbone, "backbone", instantiate=False, required=True, skip=set(LINKED_BACKBONE_ARGS),
        help="The network (class_path/init_args); num_classes, in_channels, image_size, mean, std come from the data.",
    )  # fmt: skip
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
