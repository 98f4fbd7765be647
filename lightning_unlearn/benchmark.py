"""``lightning_unlearn benchmark``: every listed method on every scenario x forget target x seed, against the gold model.

For each *group* (scenario, forget target, seed) the benchmark

1. trains the original model on D = D_r + D_f and the gold (retrained) model on D_r, once, cached under
   ``output_dir/models/<role>-<hash>/`` by a hash of everything that determines them (data and backbone config,
   training settings, seed, and the sha256 of the sample indices they train on). Groups whose training set is the same
   (the holdout is drawn before D_f, so every class-wise, sub-class and random target of one seed trains the original
   on the same samples) share one original; each group gets a copy of it that records its own splits, because the
   checkpoint loaders check the split hashes of every model against the DataModule. A method that needs the updates
   recorded while the original was trained (``Amnesiac``) gets them from one ``AmnesiacRecorder`` per forget set,
   attached when the original is trained;
2. evaluates the original ("Original" row) and the gold model ("Retrain" row, its training time as its cost);
3. runs every method from the group's original through :meth:`~lightning_unlearn.cli.UnlearnTrainer.unlearn` with an
   :class:`~lightning_unlearn.evaluation.UnlearningEvaluator` against the gold model.

Every run writes ``result.json`` into its own directory (``output_dir/runs/<scenario>/<target>/seed<k>/<method>/``)
last: a run with that file is finished and is read back instead of redone when the benchmark is started again (unless
its configuration changed, which its stored ``config_hash`` tells). At the end ``results.csv``, ``results.json``,
``report.md`` and plots are written (:mod:`lightning_unlearn.benchmark_report`).

Config (YAML, parsed with jsonargparse; ``lightning_unlearn benchmark --help`` lists every key)::

    output_dir: runs/benchmark/quickstart
    data: {class_path: lightning_unlearn.data.DigitsDataModule, init_args: {image_size: 8}}   # no forget/seed
    backbone: {class_path: lightning_unlearn.backbones.AllCNN, init_args: {width: 0.25}}     # shapes from the data
    training: {max_epochs: 20, lr: 0.05}                  # original and gold models (gold_max_epochs: default same)
    scenarios:
      - {name: class-wise, targets: [{classes: [3]}]}     # targets: ForgetSpec dicts
      - {name: sub-class, targets: [{classes: [3], per_class: 40}]}
      - {name: random, targets: [{fraction: 0.1}]}
    seeds: [0, 1]
    methods:
      - {name: Finetune, class_path: lightning_unlearn.methods.Finetune, init_args: {lr: 0.01}, max_epochs: 5}
    trainer: {accelerator: cpu, devices: 1, precision: 32-true}
    evaluator: {mia: true, zrf: true, plots: false}

Python: ``run_benchmark(load_config("configs/benchmark/quickstart.yaml"))``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import json
import logging
import math
import numbers
import os
import re
import shutil
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lightning_unlearn.data.forget import ForgetSpec, index_hash
from lightning_unlearn.provenance import run_stamp

__all__ = [
    "BASELINE_METHODS",
    "RESULT_FILE",
    "BenchmarkConfig",
    "BenchmarkConfigError",
    "MethodSpec",
    "Scenario",
    "TrainerSettings",
    "TrainingSettings",
    "build_parser",
    "load_config",
    "main",
    "run_benchmark",
]

#: Written last into every finished run's directory; its presence means "done" on a rerun.
RESULT_FILE = "result.json"
#: Names of the two reference rows of every group (reserved: a method may not use them).
ORIGINAL, RETRAIN = "Original", "Retrain"
BASELINE_METHODS: tuple[str, str] = (ORIGINAL, RETRAIN)

_DATA_SKIP = {"forget", "seed", "train_on"}  # set by the benchmark per run
_BACKBONE_LINKED = ("num_classes", "in_channels", "image_size", "mean", "std")  # taken from the DataModule
_EVALUATOR_SKIP = {"gold", "original", "output_dir", "unlearn_time_s", "retrain_time_s", "every_n_epochs"}
_CACHE_IRRELEVANT_DATA_ARGS = {"num_workers", "eval_batch_size"}  # do not change what a model learns
_METHOD_KEYS = {"name", "class_path", "init_args", "max_epochs", "trainer", "scenarios"}
#: Trainer arguments the benchmark sets itself (a method's ``trainer`` overrides may not).
_RESERVED_TRAINER_ARGS = {"callbacks", "logger", "default_root_dir", "max_epochs", "devices", "enable_checkpointing"}


class BenchmarkConfigError(ValueError):
    """The benchmark configuration cannot run (raised before anything is trained)."""


# -- configuration -------------------------------------------------------------------------------------------------
@dataclass
class TrainingSettings:
    """How the original (on D) and the gold model (on D_r) are trained: a :class:`~lightning_unlearn.methods.Classifier`.

    Args:
        max_epochs: epochs of the original model.
        gold_max_epochs: epochs of the gold model (default: ``max_epochs``, the usual "retrain from scratch").
        lr, momentum, weight_decay, optimizer, scheduler, label_smoothing: the ``Classifier``'s settings.
    """

    max_epochs: int = 30
    gold_max_epochs: int | None = None
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    optimizer: Literal["sgd", "adam"] = "sgd"
    scheduler: Literal["cosine", "none"] = "cosine"
    label_smoothing: float = 0.0

    def classifier_kwargs(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("max_epochs")
        d.pop("gold_max_epochs")
        return d

    def epochs(self, role: str) -> int:
        if role == "gold" and self.gold_max_epochs is not None:
            return int(self.gold_max_epochs)
        return int(self.max_epochs)


@dataclass
class TrainerSettings:
    """Lightning Trainer settings shared by every training and unlearning run of the benchmark.

    Args:
        accelerator: ``"cpu"``, ``"gpu"``, ``"auto"``, ...
        devices: must be 1: runs are sequential, one process (start several benchmarks for several GPUs).
        precision: e.g. ``"32-true"``, ``"bf16-mixed"``, ``"16-mixed"``.
        deterministic: ``Trainer(deterministic=...)``.
        num_threads: ``torch.set_num_threads`` for CPU runs (default: PyTorch's choice).
    """

    accelerator: str = "auto"
    devices: int = 1
    precision: str = "32-true"
    deterministic: bool = False
    num_threads: int | None = None


@dataclass
class Scenario:
    """A forgetting scenario (a table of the report): a name and the forget targets it averages over."""

    name: str
    targets: list[ForgetSpec]


@dataclass
class MethodSpec:
    """One method of the benchmark: a display name, the ``UnlearningMethod`` class, its arguments, its epochs, and
    optional extra ``Trainer`` arguments for its runs (e.g. ``{limit_train_batches: 0.2}`` to estimate Fisher
    Forgetting's Fisher on a fifth of D_r, or ``{gradient_clip_val: 1.0}``), and the names of the scenarios it runs
    in (``None``: all; e.g. ``[class-wise]`` for UNSIR, which forgets whole classes only)."""

    name: str
    class_path: str
    init_args: dict[str, Any] = field(default_factory=dict)
    max_epochs: int = 1
    trainer: dict[str, Any] = field(default_factory=dict)
    scenarios: list[str] | None = None

    def runs_in(self, scenario: str) -> bool:
        return self.scenarios is None or scenario in self.scenarios

    def resolve(self) -> type:
        """The method class (raises :class:`BenchmarkConfigError` naming the method when it cannot be imported)."""
        return _import_method_class(self.name, self.class_path)

    @property
    def needs_recorded_updates(self) -> bool:
        """Whether the method takes the updates recorded while training the original (``Amnesiac``'s ``updates``)."""
        return "updates" in inspect.signature(self.resolve()).parameters


@dataclass
class BenchmarkConfig:
    """A parsed benchmark configuration (see the module docstring and ``docs/benchmarks.md``)."""

    output_dir: str
    data: dict[str, Any]
    backbone: dict[str, Any]
    training: TrainingSettings
    scenarios: list[Scenario]
    seeds: list[int]
    methods: list[MethodSpec]
    trainer: TrainerSettings
    evaluator: dict[str, Any]
    keep_checkpoints: bool = True
    fail_fast: bool = False
    report_only: bool = False
    quiet: bool = True
    source: dict[str, Any] = field(default_factory=dict)  # the parsed config, written to output_dir/config.yaml

    @property
    def needs_recorded_updates(self) -> bool:
        return any(m.needs_recorded_updates for m in self.methods)

    def rows_for(self, scenario: str) -> list[str]:
        """The rows of a group of ``scenario``: Original, Retrain and every method that runs in it."""
        return [ORIGINAL, RETRAIN, *(m.name for m in self.methods if m.runs_in(scenario))]


def build_parser() -> Any:
    """The jsonargparse parser of ``lightning_unlearn benchmark``."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    from lightning_unlearn.backbones import Backbone
    from lightning_unlearn.data.base import UnlearningDataModule
    from lightning_unlearn.evaluation import UnlearningEvaluator

    parser = ArgumentParser(
        prog="lightning_unlearn benchmark",
        description=(
            "Run every listed unlearning method on every scenario x forget target x seed, against the original and the "
            "gold (retrained) model, and write results.csv, results.json, report.md and plots into output_dir. "
            "Finished runs and trained models are reused when run again. See docs/benchmarks.md."
        ),
        default_env=False,
    )
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="YAML config (configs/benchmark/*.yaml).")
    parser.add_argument("--output_dir", type=str, default="runs/benchmark", help="Where everything is written.")
    parser.add_subclass_arguments(
        UnlearningDataModule, "data", instantiate=False, required=True, skip=_DATA_SKIP,
        help="The DataModule (class_path/init_args) without forget/seed/train_on, which the benchmark sets per run.",
    )  # fmt: skip
    parser.add_subclass_arguments(
        Backbone, "backbone", instantiate=False, required=True, skip=set(_BACKBONE_LINKED),
        help="The network (class_path/init_args); num_classes, in_channels, image_size, mean, std come from the data.",
    )  # fmt: skip
    parser.add_class_arguments(TrainingSettings, "training", instantiate=False)
    parser.add_argument(
        "--scenarios", type=list[Scenario], required=True,
        help="List of {name, targets: [ForgetSpec dict, ...]}, e.g. {name: class-wise, targets: [{classes: [3]}]}.",
    )  # fmt: skip
    parser.add_argument("--seeds", type=list[int], default=[0], help="Seeds: splits, training and methods.")
    parser.add_argument(
        "--methods", type=list[dict[str, Any]], required=True,
        help="List of {name, class_path, init_args, max_epochs, trainer, scenarios}: UnlearningMethod classes, their "
        "arguments, epochs, optional extra Trainer arguments and the scenarios they run in (default: all).",
    )  # fmt: skip
    parser.add_class_arguments(TrainerSettings, "trainer", instantiate=False)
    parser.add_class_arguments(UnlearningEvaluator, "evaluator", instantiate=False, skip=_EVALUATOR_SKIP)
    parser.add_argument("--keep_checkpoints", type=bool, default=True, help="Keep every run's unlearned.ckpt.")
    parser.add_argument("--fail_fast", type=bool, default=False, help="Stop at the first failed run.")
    parser.add_argument(
        "--report_only", type=bool, default=False, help="Only rebuild the tables, report and plots from finished runs."
    )
    parser.add_argument("--quiet", type=bool, default=True, help="Silence Lightning's per-run messages.")
    return parser


def load_config(source: str | Path | Sequence[str] | None = None, **overrides: Any) -> BenchmarkConfig:
    """Parse a benchmark config: a YAML path, or a list of command-line arguments (``["-c", "x.yaml", ...]``).

    ``overrides`` are dotted keys applied after parsing (``output_dir="/tmp/b"``, ``seeds=[0]``).
    Raises :class:`BenchmarkConfigError` for a configuration that cannot run (unknown method class, bad arguments,
    a forget target that is not a valid :class:`ForgetSpec`, ...).
    """
    parser = build_parser()
    args = ["-c", str(source)] if isinstance(source, (str, Path)) else list(source or [])
    for key, value in overrides.items():
        args.append(f"--{key}={json.dumps(value) if not isinstance(value, str) else value}")
    ns = parser.parse_args(args)
    return config_from_namespace(ns, parser)


def config_from_namespace(ns: Any, parser: Any = None) -> BenchmarkConfig:
    """Turn a parsed namespace into a validated :class:`BenchmarkConfig`."""
    d = ns.as_dict() if hasattr(ns, "as_dict") else dict(ns)
    d.pop("config", None)
    d.pop("__path__", None)
    source = json.loads(json.dumps(d, default=str))
    scenarios = []
    for i, sc in enumerate(d.get("scenarios") or []):
        name = str(sc.get("name") or "").strip()
        if not name:
            raise BenchmarkConfigError(f"scenarios[{i}] has no name.")
        targets = []
        for j, t in enumerate(sc.get("targets") or []):
            spec = {k: v for k, v in dict(t).items() if v is not None}
            try:
                targets.append(ForgetSpec(**spec))
            except (TypeError, ValueError) as err:
                raise BenchmarkConfigError(f"scenarios[{i}] ({name}) targets[{j}] = {spec}: {err}") from err
        scenarios.append(Scenario(name=name, targets=targets))
    methods = [_method_spec(i, m) for i, m in enumerate(d.get("methods") or [])]
    cfg = BenchmarkConfig(
        output_dir=str(d["output_dir"]),
        data=_class_spec(d["data"]),
        backbone=_class_spec(d["backbone"]),
        training=TrainingSettings(**d["training"]),
        scenarios=scenarios,
        seeds=[int(s) for s in d.get("seeds") or []],
        methods=methods,
        trainer=TrainerSettings(**d["trainer"]),
        evaluator=dict(d.get("evaluator") or {}),
        keep_checkpoints=bool(d.get("keep_checkpoints", True)),
        fail_fast=bool(d.get("fail_fast", False)),
        report_only=bool(d.get("report_only", False)),
        quiet=bool(d.get("quiet", True)),
        source=source,
    )
    validate_config(cfg)
    return cfg


def _class_spec(spec: Any) -> dict[str, Any]:
    spec = dict(spec)
    init = {k: v for k, v in dict(spec.get("init_args") or {}).items()}
    return {"class_path": str(spec["class_path"]), "init_args": init}


def _method_spec(i: int, m: Any) -> MethodSpec:
    if isinstance(m, str):
        m = {"class_path": m}
    m = dict(m)
    unknown = set(m) - _METHOD_KEYS
    if unknown:
        raise BenchmarkConfigError(
            f"methods[{i}] has unknown key(s) {sorted(unknown)}; a method is {{name, class_path, init_args, max_epochs, "
            "trainer, scenarios}."
        )
    if not m.get("class_path"):
        raise BenchmarkConfigError(f"methods[{i}] has no class_path (e.g. lightning_unlearn.methods.Finetune).")
    name = str(m.get("name") or str(m["class_path"]).rsplit(".", 1)[-1])
    max_epochs = m.get("max_epochs", 1)
    if not isinstance(max_epochs, int) or isinstance(max_epochs, bool) or max_epochs < 0:
        raise BenchmarkConfigError(f"methods[{i}] ({name}): max_epochs must be an integer >= 0, got {max_epochs!r}.")
    trainer = dict(m.get("trainer") or {})
    reserved = sorted(set(trainer) & _RESERVED_TRAINER_ARGS)
    if reserved:
        raise BenchmarkConfigError(
            f"methods[{i}] ({name}): trainer may not set {reserved} (the benchmark sets them; epochs: `max_epochs`)."
        )
    from lightning.pytorch import Trainer

    unknown_t = sorted(set(trainer) - set(inspect.signature(Trainer).parameters))
    if unknown_t:
        raise BenchmarkConfigError(f"methods[{i}] ({name}): {unknown_t} are not Trainer arguments.")
    scenarios = m.get("scenarios")
    if scenarios is not None and (isinstance(scenarios, str) or not all(isinstance(s, str) for s in scenarios)):
        raise BenchmarkConfigError(f"methods[{i}] ({name}): scenarios must be a list of scenario names: {scenarios!r}.")
    return MethodSpec(name=name, class_path=str(m["class_path"]), init_args=dict(m.get("init_args") or {}),
                      max_epochs=max_epochs, trainer=trainer,
                      scenarios=None if scenarios is None else [str(s) for s in scenarios])  # fmt: skip


def _import_method_class(name: str, class_path: str) -> type:
    from lightning_unlearn.methods.base import UnlearningMethod

    module_name, _, attr = class_path.rpartition(".")
    if not module_name:
        module_name, attr = "lightning_unlearn.methods", class_path
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise BenchmarkConfigError(
            f"Method {name!r}: cannot import module {module_name!r} of class_path {class_path!r} ({err}). Is the method "
            "installed (and its file present)? Remove it from `methods` to run the others."
        ) from err
    cls = getattr(module, attr, None)
    if cls is None:
        raise BenchmarkConfigError(
            f"Method {name!r}: {module_name!r} has no class {attr!r} (class_path {class_path!r}). Remove it from "
            "`methods` or fix the class_path."
        )
    if not (inspect.isclass(cls) and issubclass(cls, UnlearningMethod)):
        raise BenchmarkConfigError(f"Method {name!r}: {class_path} is not an UnlearningMethod subclass.")
    return cls


def _check_method_args(spec: MethodSpec, cls: type) -> None:
    """Type-check ``init_args`` against the class signature with jsonargparse (unknown keys, wrong types)."""
    from jsonargparse import ArgumentParser

    if "backbone" in spec.init_args:
        raise BenchmarkConfigError(
            f"Method {spec.name!r}: do not set `backbone`; every method starts from the benchmark's original model."
        )
    if "updates" in spec.init_args:
        raise BenchmarkConfigError(
            f"Method {spec.name!r}: do not set `updates`; the benchmark records them while training the original "
            "model (AmnesiacRecorder) and passes the file."
        )
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "m", skip={"backbone", "updates"}, instantiate=False)
    try:
        parser.parse_object({"m": spec.init_args})
    except Exception as err:  # noqa: BLE001 - jsonargparse raises several types; re-raised with the method's name
        msg = str(err).strip().splitlines()
        raise BenchmarkConfigError(
            f"Method {spec.name!r} ({spec.class_path}): invalid init_args {spec.init_args}: {' '.join(msg)[:600]}"
        ) from err


def validate_config(cfg: BenchmarkConfig) -> None:
    """Every check that can be made before training anything (imports, arguments, names, devices)."""
    if not cfg.scenarios:
        raise BenchmarkConfigError("`scenarios` is empty: list at least one {name, targets}.")
    names = [s.name for s in cfg.scenarios]
    if len(set(names)) != len(names):
        raise BenchmarkConfigError(f"Scenario names must be unique, got {names}.")
    for s in cfg.scenarios:
        if not s.targets:
            raise BenchmarkConfigError(f"Scenario {s.name!r} has no targets.")
        slugs = [target_slug(t) for t in s.targets]
        if len(set(slugs)) != len(slugs):
            raise BenchmarkConfigError(f"Scenario {s.name!r} lists a forget target twice: {slugs}.")
    if not cfg.seeds:
        raise BenchmarkConfigError("`seeds` is empty.")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise BenchmarkConfigError(f"`seeds` lists a seed twice: {cfg.seeds}.")
    if not cfg.methods:
        raise BenchmarkConfigError("`methods` is empty: list at least one {name, class_path, init_args, max_epochs}.")
    mnames = [m.name for m in cfg.methods]
    if len(set(mnames)) != len(mnames):
        raise BenchmarkConfigError(f"Method names must be unique, got {mnames}.")
    for m in cfg.methods:
        if m.name in BASELINE_METHODS:
            raise BenchmarkConfigError(f"{m.name!r} is reserved for the reference rows; rename that method.")
        if not _slug(m.name):
            raise BenchmarkConfigError(f"Method name {m.name!r} has no usable characters for a directory name.")
        unknown_s = sorted(set(m.scenarios or []) - set(names))
        if unknown_s or m.scenarios == []:
            raise BenchmarkConfigError(
                f"Method {m.name!r}: scenarios {unknown_s or '[]'} not among the configured scenarios {names}; list "
                "some of those (or drop `scenarios` to run it in all)."
            )
        _check_method_args(m, m.resolve())
    if cfg.trainer.devices != 1:
        raise BenchmarkConfigError(
            f"trainer.devices={cfg.trainer.devices}: the benchmark runs its trainings one after another in one process, "
            "on one device. To use several GPUs, start one benchmark per GPU (CUDA_VISIBLE_DEVICES=k) with the same "
            "`output_dir` and different `seeds`, then `--report_only true` with all seeds (docs/benchmarks.md)."
        )
    if cfg.training.max_epochs < 1 or (cfg.training.gold_max_epochs is not None and cfg.training.gold_max_epochs < 1):
        raise BenchmarkConfigError("training.max_epochs (and gold_max_epochs) must be >= 1.")
    from lightning_unlearn.evaluation import UnlearningEvaluator

    try:
        UnlearningEvaluator(**cfg.evaluator)
    except (TypeError, ValueError) as err:
        raise BenchmarkConfigError(f"evaluator settings {cfg.evaluator}: {err}") from err


# -- names and hashes ----------------------------------------------------------------------------------------------
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.")


def target_slug(spec: ForgetSpec) -> str:
    """A directory name for a forget target: ``classes-3``, ``classes-3_per-class-40``, ``fraction-0.1``, ..."""
    d = spec.describe()
    if "classes" in d:
        s = "classes-" + "-".join(str(c) for c in d["classes"])
        return s + (f"_per-class-{d['per_class']}" if "per_class" in d else "")
    if "fraction" in d:
        return f"fraction-{d['fraction']:g}"
    if "indices" in d:
        return "indices-" + hashlib.sha256(json.dumps(sorted(d["indices"])).encode()).hexdigest()[:10]
    return "file-" + _slug(Path(str(d.get("indices_file"))).stem)


def target_label(spec: ForgetSpec, class_names: Sequence[str] | None = None) -> str:
    """A readable forget target: ``class 3``, ``40 of class 3``, ``10% random``, ``indices (file x)``."""
    d = spec.describe()

    def cname(c: int) -> str:
        if class_names and 0 <= c < len(class_names) and class_names[c] != str(c):
            return f"{c} ({class_names[c]})"
        return str(c)

    if "classes" in d:
        cls = ", ".join(cname(c) for c in d["classes"])
        word = "class" if len(d["classes"]) == 1 else "classes"
        return f"{d['per_class']} of {word} {cls}" if "per_class" in d else f"{word} {cls}"
    if "fraction" in d:
        return f"{100 * d['fraction']:g}% random"
    if "indices" in d:
        return f"{len(d['indices'])} indices"
    return f"indices from {d.get('indices_file')}"


def config_hash(obj: Any, length: int = 16) -> str:
    """sha256 of the canonical JSON of ``obj``."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


# -- building objects ----------------------------------------------------------------------------------------------
def _import_class(class_path: str) -> type:
    module_name, _, attr = class_path.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)


def build_datamodule(cfg: BenchmarkConfig, target: ForgetSpec | None, seed: int, train_on: str = "all") -> Any:
    """The configured DataModule with the benchmark's forget target, seed and ``train_on``."""
    cls = _import_class(cfg.data["class_path"])
    return cls(**cfg.data["init_args"], forget=target, seed=seed, train_on=train_on)


def build_backbone_for(cfg: BenchmarkConfig, dm: Any) -> Any:
    """The configured backbone with ``num_classes``, ``in_channels``, ``image_size``, ``mean``, ``std`` from ``dm``."""
    cls = _import_class(cfg.backbone["class_path"])
    params = inspect.signature(cls).parameters
    linked = {
        "num_classes": int(dm.num_classes),
        "in_channels": int(dm.in_channels),
        "image_size": int(dm.image_size),
        "mean": [float(v) for v in dm.mean],
        "std": [float(v) for v in dm.std],
    }
    kwargs = {k: v for k, v in linked.items() if k in params}
    kwargs.update(cfg.backbone["init_args"])
    return cls(**kwargs)


def _trainer_kwargs(cfg: BenchmarkConfig, run_dir: Path) -> dict[str, Any]:
    t = cfg.trainer
    return {
        "accelerator": t.accelerator,
        "devices": t.devices,
        "precision": t.precision,
        "deterministic": t.deterministic,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "limit_val_batches": 0,
        "default_root_dir": str(run_dir),
    }


def _eval_device(cfg: BenchmarkConfig) -> str:
    import torch

    acc = str(cfg.trainer.accelerator).lower()
    if acc in ("gpu", "cuda") or (acc == "auto" and torch.cuda.is_available()):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if acc == "mps" and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


# -- plan ----------------------------------------------------------------------------------------------------------
@dataclass
class Group:
    """One (scenario, forget target, seed): an original, a gold model, and a run per method plus two reference rows."""

    scenario: str
    target: ForgetSpec
    seed: int
    label: str
    slug: str
    dir: Path
    hashes: dict[str, str]
    train_hash: str
    forget_indices: np.ndarray
    original_key: str = ""
    gold_key: str = ""

    @property
    def forget_hash(self) -> str:
        return self.hashes["forget"]

    def describe(self) -> str:
        return f"{self.scenario} / {self.label} / seed {self.seed}"


@dataclass
class ModelJob:
    """A model to train (or found in the cache): the original or the gold model of one or more groups."""

    role: str  # "original" or "gold"
    key: str
    dir: Path
    group: Group  # the first group that uses it: its DataModule trains the model
    key_content: dict[str, Any]
    record_forget: dict[str, np.ndarray] = field(default_factory=dict)  # forget hash -> D_f (AmnesiacRecorder)

    @property
    def ckpt(self) -> Path:
        return self.dir / "model.ckpt"

    def updates_path(self, forget_hash: str) -> Path:
        return self.dir / f"amnesiac_updates-{forget_hash[:16]}.pt"

    @property
    def cached(self) -> bool:
        return cache_problem(self) is None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_problem(job: ModelJob) -> str | None:
    """Why ``job``'s cached model cannot be used (``None``: it can): missing files, or files that do not match the
    sha256 digests ``info.json`` recorded when they were written (a corrupt or replaced cache is retrained)."""
    files = [job.ckpt, *(job.updates_path(h) for h in job.record_forget)]
    info_path = job.dir / "info.json"
    if not info_path.is_file() or not all(f.is_file() for f in files):
        return "not trained"
    info = _read_any(info_path) or {}
    digests = info.get("sha256")
    if not isinstance(digests, dict):  # a cache from before digests were recorded: it must at least load
        import torch

        try:
            torch.load(job.ckpt, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - a cache that cannot be read is retrained
            return f"{job.ckpt} cannot be read ({type(err).__name__})"
        return None
    for f in files:
        if digests.get(f.name) != file_sha256(f):
            return f"{f} does not match the sha256 recorded in {info_path}"
    return None


@dataclass
class Plan:
    groups: list[Group]
    models: dict[str, ModelJob]

    def run_dirs(self, group: Group, methods: Sequence[str]) -> list[tuple[str, Path]]:
        return [(m, group.dir / _slug(m)) for m in methods]


def make_plan(cfg: BenchmarkConfig) -> Plan:
    """Compute every group's splits (so a bad forget target stops the benchmark before any training) and the models
    to train, keyed by what determines them."""
    out = Path(cfg.output_dir)
    data_for_key = {
        "class_path": cfg.data["class_path"],
        "init_args": {k: v for k, v in cfg.data["init_args"].items() if k not in _CACHE_IRRELEVANT_DATA_ARGS},
    }
    groups: list[Group] = []
    for sc in cfg.scenarios:
        for target in sc.targets:
            for seed in cfg.seeds:
                try:
                    dm = build_datamodule(cfg, target, seed)
                    dm.setup("fit")
                    splits = dm.splits
                    train_idx = dm.indices("train")
                except Exception as err:  # noqa: BLE001 - re-raised with where it happened
                    raise BenchmarkConfigError(
                        f"Scenario {sc.name!r}, target {target.describe()}, seed {seed}: {type(err).__name__}: {err}"
                    ) from err
                slug = target_slug(target)
                groups.append(
                    Group(
                        scenario=sc.name,
                        target=target,
                        seed=seed,
                        label=target_label(target, getattr(dm, "class_names", None)),
                        slug=slug,
                        dir=out / "runs" / _slug(sc.name) / slug / f"seed{seed}",
                        hashes=splits.hashes(),
                        train_hash=index_hash(train_idx),
                        forget_indices=np.asarray(splits.forget, dtype=np.int64).copy(),
                    )
                )
                del dm
    backbone_for_key = cfg.backbone
    common = {"data": data_for_key, "backbone": backbone_for_key, "training": asdict(cfg.training)}
    record = cfg.needs_recorded_updates
    # originals: one per training set; with recorded updates, one recorder per forget set using it
    base_keys: dict[str, list[Group]] = {}
    for g in groups:
        content = {**common, "role": "original", "epochs": cfg.training.epochs("original"), "seed": g.seed,
                   "train_indices": g.train_hash}  # fmt: skip
        base_keys.setdefault(config_hash(content), []).append(g)
    models: dict[str, ModelJob] = {}
    for members in base_keys.values():
        g0 = members[0]
        content = {**common, "role": "original", "epochs": cfg.training.epochs("original"), "seed": g0.seed,
                   "train_indices": g0.train_hash}  # fmt: skip
        forget = {g.forget_hash: g.forget_indices for g in members} if record else {}
        if record:
            content["recorded_forget_sets"] = sorted(forget)
        key = config_hash(content)
        job = ModelJob("original", key, out / "models" / f"original-{key}", g0, content, record_forget=forget)
        models[job.dir.name] = job
        for g in members:
            g.original_key = job.dir.name
    for g in groups:
        content = {**common, "role": "gold", "epochs": cfg.training.epochs("gold"), "seed": g.seed,
                   "train_indices": g.hashes["retain"], "forget": g.forget_hash}  # fmt: skip
        key = config_hash(content)
        name = f"gold-{key}"
        if name not in models:
            models[name] = ModelJob("gold", key, out / "models" / name, g, content)
        g.gold_key = name
    return Plan(groups, models)


# -- progress ------------------------------------------------------------------------------------------------------
class Progress:
    """One line on stderr per finished step: which of how many, its time, elapsed and an estimate of the time left.

    The estimate adds, for every remaining step, the mean time of finished steps of the same kind (a training of the
    same role, the same method, an evaluation of a reference row), else the mean of all finished steps of that family.
    """

    def __init__(self, steps: Sequence[tuple[str, str]], stream: Any = None) -> None:
        self.pending: list[tuple[str, str]] = list(steps)  # (family, kind)
        self.total = len(steps)
        self.done = 0
        self.start = time.perf_counter()
        self.times: dict[tuple[str, str], list[float]] = {}
        self.stream = stream if stream is not None else sys.stderr

    def _estimate(self) -> float | None:
        total = 0.0
        for family, kind in self.pending:
            own = self.times.get((family, kind))
            if own:
                total += sum(own) / len(own)
                continue
            fam = [t for (f, _), ts in self.times.items() if f == family for t in ts]
            if not fam:
                return None
            total += sum(fam) / len(fam)
        return total

    def finish(self, family: str, kind: str, what: str, seconds: float | None, note: str = "", show: bool = True) -> None:
        """Mark a step done (``seconds=None``: read from disk, not timed; ``show=False``: no line)."""
        with contextlib.suppress(ValueError):
            self.pending.remove((family, kind))
        self.done += 1
        if seconds is not None:
            self.times.setdefault((family, kind), []).append(seconds)
        if not show:
            return
        took = "cached" if seconds is None else f"{_hms(seconds)}"
        left = self._estimate()
        left_s = "?" if left is None else _hms(left)
        extra = f" {note}" if note else ""
        self.log(
            f"[{self.done}/{self.total}] {what}: {took}{extra} | elapsed {_hms(time.perf_counter() - self.start)}, "
            f"~{left_s} left"
        )

    def log(self, text: str) -> None:
        print(f"benchmark {text}", file=self.stream, flush=True)


def _hms(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


# -- running -------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    """Silence Lightning's per-Trainer info lines and its advice warnings (one benchmark starts dozens of Trainers)."""
    if not enabled:
        yield
        return
    names = ("lightning.pytorch", "lightning.fabric", "lightning", "lightning_unlearn")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        for pattern in (
            ".*does not have many workers.*",
            ".*GPU available but not used.*",
            ".*smaller than the logging interval.*",
            ".*val_dataloader.*validation_step.*",
            ".*Total length of .* across ranks is zero.*",
            ".*`training_step` returned `None`.*",
            ".*exists and is not empty.*",
            ".*LeafSpec.*",
        ):
            warnings.filterwarnings("ignore", message=pattern)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=_json_default, allow_nan=False))
    os.replace(tmp, path)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _scalars(results: dict[str, Any]) -> dict[str, Any]:
    """The evaluator's numeric results as plain ``int``/``float`` (numpy scalars included; nan/inf -> None)."""
    out: dict[str, Any] = {}
    for k, v in results.items():
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            continue
        out[k] = int(v) if isinstance(v, numbers.Integral) else _finite(float(v))
    return out


def train_model(cfg: BenchmarkConfig, job: ModelJob) -> float:
    """Train ``job``'s model (a ``Classifier`` on D for the original, on D_r for the gold) and save it with
    ``trainer.save_checkpoint``; for the original, one ``AmnesiacRecorder`` per forget set that needs it. Returns the
    training time recorded in the checkpoint (``train_time_s``)."""
    import lightning.pytorch as pl

    from lightning_unlearn.methods import AmnesiacRecorder, Classifier

    g = job.group
    if job.dir.exists():
        shutil.rmtree(job.dir)  # an unfinished earlier attempt (no info.json) or a partial recording
    job.dir.mkdir(parents=True)
    dm = build_datamodule(cfg, g.target, g.seed, train_on="all" if job.role == "original" else "retain")
    pl.seed_everything(g.seed, workers=True, verbose=False)
    model = Classifier(build_backbone_for(cfg, dm), **cfg.training.classifier_kwargs())
    recorders = [
        AmnesiacRecorder(sensitive=[int(i) for i in idx], path=str(job.updates_path(h)))
        for h, idx in sorted(job.record_forget.items())
    ]
    trainer = pl.Trainer(max_epochs=cfg.training.epochs(job.role), callbacks=recorders, **_trainer_kwargs(cfg, job.dir))
    trainer.fit(model, datamodule=dm)
    tmp = job.dir / "model.ckpt.tmp"
    trainer.save_checkpoint(tmp)
    os.replace(tmp, job.ckpt)
    train_time = float(model.train_time_s())
    digests = {f.name: file_sha256(f) for f in (job.ckpt, *(job.updates_path(h) for h in job.record_forget))}
    _write_json(
        job.dir / "info.json",
        {"role": job.role, "key": job.key, "key_content": job.key_content, "train_time_s": train_time,
         "epochs": cfg.training.epochs(job.role), "first_group": g.describe(),
         "recorded_forget_sets": sorted(job.record_forget), "finished_at": _now(), "sha256": digests},
    )  # fmt: skip
    return train_time


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def group_original(cfg: BenchmarkConfig, group: Group, job: ModelJob, dm: Any) -> Path:
    """The group's copy of its (possibly shared) original: same weights, this group's splits in its provenance."""
    import torch

    from lightning_unlearn.checkpoints import META_KEY, write_splits_json

    path = group.dir / "original.ckpt"
    source_sha = file_sha256(job.ckpt)
    if path.is_file():
        try:
            meta = torch.load(path, map_location="cpu", weights_only=True).get(META_KEY, {})
        except Exception:  # noqa: BLE001 - a corrupt copy is made again
            meta = {}
        if meta.get("benchmark_model") == job.dir.name and meta.get("shared_checkpoint_sha256", source_sha) == source_sha:
            return path
        path.unlink()
    ckpt = torch.load(job.ckpt, map_location="cpu", weights_only=True)
    splits = dm.splits_info()
    ckpt[META_KEY] = {**ckpt[META_KEY], "splits": splits, "benchmark_model": job.dir.name,
                      "shared_checkpoint": str(job.ckpt), "shared_checkpoint_sha256": source_sha}  # fmt: skip
    group.dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    write_splits_json(group.dir, splits)
    return path


def _run_hash(cfg: BenchmarkConfig, group: Group, method: str, spec: MethodSpec | None) -> str:
    return config_hash(
        {
            "method": None if spec is None else {"class_path": spec.class_path, "init_args": spec.init_args,
                                                 "max_epochs": spec.max_epochs, "trainer": spec.trainer},  # fmt: skip
            "name": method,
            "original": group.original_key,
            "gold": group.gold_key,
            "hashes": group.hashes,
            "evaluator": cfg.evaluator,
            "trainer": {k: v for k, v in asdict(cfg.trainer).items() if k != "num_threads"},
        }
    )


def _base_row(group: Group, method: str, kind: str, class_path: str | None) -> dict[str, Any]:
    return {
        "scenario": group.scenario,
        "target": group.label,
        "target_spec": json.dumps(group.target.describe(), sort_keys=True),
        "seed": group.seed,
        "method": method,
        "kind": kind,
        "class_path": class_path,
    }


def _read_result(run_dir: Path, run_hash: str) -> dict[str, Any] | None:
    path = run_dir / RESULT_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if data.get("config_hash") != run_hash:
        return None
    return data


def run_method(cfg: BenchmarkConfig, group: Group, spec: MethodSpec, original: Path, gold: Path, run_dir: Path,
               dm: Any, updates: Path | None) -> dict[str, Any]:  # fmt: skip
    """One method on one group, through ``UnlearnTrainer.unlearn`` with an ``UnlearningEvaluator``; returns the row."""
    import lightning.pytorch as pl

    from lightning_unlearn.cli import UnlearnTrainer
    from lightning_unlearn.evaluation import UnlearningEvaluator

    cls = spec.resolve()
    kwargs = dict(spec.init_args)
    params = inspect.signature(cls).parameters
    if "seed" in params and "seed" not in kwargs:
        kwargs["seed"] = group.seed
    if updates is not None:
        kwargs["updates"] = str(updates)
    pl.seed_everything(group.seed, workers=True, verbose=False)
    method = cls(**kwargs)
    evaluator = UnlearningEvaluator(output_dir=str(run_dir), **cfg.evaluator)
    trainer_kwargs = {**_trainer_kwargs(cfg, run_dir), **spec.trainer}
    trainer = UnlearnTrainer(max_epochs=spec.max_epochs, callbacks=[evaluator], **trainer_kwargs)
    out = run_dir / "unlearned.ckpt"
    # a benchmark measures methods: a model a method destroyed is a result (its D_r accuracy is in the table), not an
    # error; NaN/inf weights still fail the row (docs/safety.md)
    summary = trainer.unlearn(method, dm, original_ckpt=str(original), gold_ckpt=str(gold), output=str(out),
                              retain_collapse=None)  # fmt: skip
    if not cfg.keep_checkpoints and out.exists():
        out.unlink()
    row = _base_row(group, spec.name, "method", spec.class_path)
    row.update(_scalars(evaluator.results))
    row["unlearn_time_s"] = _finite(float(summary["unlearn_time_s"]))
    return row


def run_reference(cfg: BenchmarkConfig, group: Group, which: str, original: Path, gold: Path, run_dir: Path,
                  dm: Any) -> dict[str, Any]:  # fmt: skip
    """Evaluate the original ("Original") or the gold model ("Retrain", its training time as its cost)."""
    from lightning_unlearn.checkpoints import load_backbone
    from lightning_unlearn.evaluation import UnlearningEvaluator

    path = original if which == ORIGINAL else gold
    backbone, meta = load_backbone(path, dm, what=f"{which.lower()} checkpoint {path}")
    evaluator = UnlearningEvaluator(gold=str(gold), output_dir=str(run_dir), **cfg.evaluator)
    t = float(meta["train_time_s"]) if which == RETRAIN and meta.get("train_time_s") is not None else None
    results = evaluator.evaluate(backbone, dm, device=_eval_device(cfg), unlearn_time_s=t)
    row = _base_row(group, which, "reference", None)
    row.update(_scalars(results))
    row["unlearn_time_s"] = t
    return row


def run_benchmark(cfg: BenchmarkConfig, stream: Any = None) -> dict[str, Any]:
    """Run (or resume) the benchmark and write every output. Returns ``{"rows", "failed", "output_dir", "files"}``."""
    from lightning_unlearn import benchmark_report as report

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_config(cfg, out)
    plan = make_plan(cfg)
    names = [ORIGINAL, RETRAIN, *(m.name for m in cfg.methods)]
    specs = {m.name: m for m in cfg.methods}
    progress = Progress([], stream=stream)
    if cfg.report_only:
        rows, failed = [], []
        for g in plan.groups:
            for _, d in plan.run_dirs(g, cfg.rows_for(g.scenario)):
                row = _read_any(d / RESULT_FILE)
                err = _read_any(d / "error.json") if row is None else None
                if row is not None:
                    rows.append(row)
                elif err is not None:
                    failed.append(err)
        files = report.write_all(rows, out, cfg, failed=failed)
        missing = sum(len(cfg.rows_for(g.scenario)) for g in plan.groups) - len(rows) - len(failed)
        progress.log(
            f"report rebuilt from {len(rows)} finished runs ({len(failed)} failed, {missing} not run): "
            f"{out / 'report.md'}"
        )
        return {"rows": rows, "failed": failed, "output_dir": str(out), "files": files}

    if cfg.trainer.num_threads:
        import torch

        torch.set_num_threads(int(cfg.trainer.num_threads))
    to_train = [j for j in plan.models.values() if not j.cached]
    steps: list[tuple[str, str]] = [("train", j.role) for j in to_train]
    for g in plan.groups:
        for m in cfg.rows_for(g.scenario):
            steps.append(("eval", "reference") if m in BASELINE_METHODS else ("method", m))
    progress = Progress(steps, stream=stream)
    n_runs = sum(len(cfg.rows_for(g.scenario)) for g in plan.groups)
    progress.log(
        f"{len(cfg.scenarios)} scenario(s), {len(plan.groups)} (scenario, target, seed) groups x <= {len(names)} rows "
        f"({', '.join(names)}) = {n_runs} runs; {len(plan.models)} models ({len(to_train)} to train, "
        f"{len(plan.models) - len(to_train)} cached) -> {out}"
    )

    rows: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    try:
        _run_groups(cfg, plan, names, specs, progress, rows, failed)
    except (KeyboardInterrupt, SystemExit) as err:
        if not is_interrupt(err):
            raise
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning ignores SIGINT after catching one
        report.write_all(rows, out, cfg, failed=failed)
        progress.log(
            f"interrupted: the {len(rows)} finished runs are in {out / 'results.csv'} and {out / 'report.md'}; run "
            "the same command again to resume (finished runs and trained models are reused)"
        )
        raise KeyboardInterrupt from None
    files = report.write_all(rows, out, cfg, failed=failed)
    progress.log(
        f"done in {_hms(time.perf_counter() - progress.start)}: {len(rows)} runs"
        + (f", {len(failed)} FAILED (see error.json in their run directories)" if failed else "")
        + f". Report: {out / 'report.md'}"
    )
    return {"rows": rows, "failed": failed, "output_dir": str(out), "files": files}


def is_interrupt(err: BaseException) -> bool:
    """Ctrl-C: a ``KeyboardInterrupt``, or the ``SystemExit(1)`` Lightning raises for one caught inside ``fit``."""
    if isinstance(err, KeyboardInterrupt):
        return True
    return isinstance(err, SystemExit) and isinstance(err.__context__, KeyboardInterrupt)


def _run_groups(
    cfg: BenchmarkConfig,
    plan: Plan,
    names: list[str],
    specs: dict[str, MethodSpec],
    progress: Progress,
    rows: list[dict[str, Any]],
    failed: list[dict[str, Any]],
) -> None:
    """Every group in turn: its models (unless cached), then each row (unless finished); appends to ``rows``/``failed``."""
    from lightning_unlearn import benchmark_report as report

    out = Path(cfg.output_dir)
    with _quiet(cfg.quiet):
        for group in plan.groups:
            ojob, gjob = plan.models[group.original_key], plan.models[group.gold_key]
            for job in (ojob, gjob):
                problem = cache_problem(job)
                if problem is None:
                    continue
                if problem != "not trained":
                    progress.log(f"cached {job.role} model {job.dir.name} is unusable ({problem}); retraining it")
                progress.log(f"training the {job.role} model for {group.describe()} ({cfg.training.epochs(job.role)} "
                             f"epochs) ...")  # fmt: skip
                t0 = time.perf_counter()
                train_model(cfg, job)
                progress.finish("train", job.role, f"{job.role} model ({group.describe()})",
                                time.perf_counter() - t0)  # fmt: skip
            dm = build_datamodule(cfg, group.target, group.seed)
            dm.setup("fit")
            original = group_original(cfg, group, ojob, dm)
            reused = 0
            for name, run_dir in plan.run_dirs(group, cfg.rows_for(group.scenario)):
                spec = specs.get(name)
                family, kind = ("eval", "reference") if spec is None else ("method", name)
                what = f"{group.describe()} / {name}"
                run_hash = _run_hash(cfg, group, name, spec)
                done = _read_result(run_dir, run_hash)
                if done is not None:
                    rows.append(done)
                    reused += 1
                    progress.finish(family, kind, what, None, show=False)
                    continue
                if run_dir.exists():
                    shutil.rmtree(run_dir)  # unfinished or made with another configuration
                run_dir.mkdir(parents=True)
                t0 = time.perf_counter()
                try:
                    if spec is None:
                        row = run_reference(cfg, group, name, original, gjob.ckpt, run_dir, dm)
                    else:
                        updates = ojob.updates_path(group.forget_hash) if spec.needs_recorded_updates else None
                        row = run_method(cfg, group, spec, original, gjob.ckpt, run_dir, dm, updates)
                except Exception as err:  # noqa: BLE001 - recorded, reported, and retried on the next start
                    wall = time.perf_counter() - t0
                    info = {**_base_row(group, name, "reference" if spec is None else "method",
                                        spec.class_path if spec else None),  # fmt: skip
                            "status": "failed", "error": f"{type(err).__name__}: {err}", "wall_s": wall,
                            "traceback": traceback.format_exc(), "run_dir": str(run_dir)}  # fmt: skip
                    _write_json(run_dir / "error.json", info)
                    failed.append(info)
                    progress.finish(family, kind, what, wall, note=f"FAILED ({type(err).__name__}: {err})"[:300])
                    if cfg.fail_fast:
                        raise
                    continue
                wall = time.perf_counter() - t0
                row.update({"status": "ok", "wall_s": wall, "run_dir": str(run_dir.relative_to(out)),
                            "config_hash": run_hash, "finished_at": _now(), **run_stamp()})  # fmt: skip
                _write_json(run_dir / RESULT_FILE, row)
                rows.append(row)
                progress.finish(family, kind, what, wall, note=_short_summary(row))
            if reused:
                progress.log(f"[{progress.done}/{progress.total}] {group.describe()}: {reused} finished run(s) reused "
                             "from disk (cached)")  # fmt: skip
            report.write_results(rows, out, cfg)  # partial tables after every group
            del dm


def _short_summary(row: dict[str, Any]) -> str:
    def pct(k: str) -> str:
        v = row.get(k)
        return "-" if v is None else f"{100 * v:.1f}"

    return f"(acc D_f {pct('acc/forget')}, test {pct('acc/test')}, MIA-eff {pct('mia/efficacy')})"


def _read_any(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def _write_config(cfg: BenchmarkConfig, out: Path) -> None:
    import yaml

    (out / "config.yaml").write_text(yaml.safe_dump(cfg.source, sort_keys=False))


def main(args: Sequence[str] | None = None) -> None:
    """``lightning_unlearn benchmark -c configs/benchmark/<name>.yaml [--key value ...]``."""
    argv = list(sys.argv[1:] if args is None else args)
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        cfg = config_from_namespace(ns, parser)
    except BenchmarkConfigError as err:
        print(f"lightning_unlearn benchmark: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        result = run_benchmark(cfg)
    except BenchmarkConfigError as err:
        print(f"lightning_unlearn benchmark: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None  # run_benchmark wrote what finished and said how to resume
    if result["failed"] and not cfg.report_only:
        raise SystemExit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
