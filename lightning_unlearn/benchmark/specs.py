"""The pieces of a benchmark configuration: the settings dataclasses, the reserved names, and the checks of one method
entry (its class can be imported and is an ``UnlearningMethod``, its ``init_args`` fit its signature)."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from lightning_unlearn.data.forget import ForgetSpec

__all__ = [
    "BASELINE_METHODS",
    "ORIGINAL",
    "RESULT_FILE",
    "RETRAIN",
    "BenchmarkConfigError",
    "GivenPaths",
    "MethodSpec",
    "Scenario",
    "ScenarioEntry",
    "TargetEntry",
    "TrainerSettings",
    "TrainingSettings",
    "class_spec",
    "slug",
    "target_slug",
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


#: A checkpoint the user brings (``original_ckpt``, a target's ``gold_ckpt``): one path for every seed, or
#: ``{seed: path}``.
GivenPaths = str | dict[int, str] | None


@dataclass
class Scenario:
    """A forgetting scenario (a table of the report): a name and the forget targets it averages over; ``gold_ckpt``:
    the gold models the user brings, ``{target slug: {seed: path}}`` (a target not in it gets a trained gold)."""

    name: str
    targets: list[ForgetSpec]
    gold_ckpt: dict[str, dict[int, str]] = field(default_factory=dict)


@dataclass
class TargetEntry:
    """A forget target as written in the config: a :class:`ForgetSpec`'s fields, plus ``gold_ckpt``, the user's gold
    model of this target (trained on its D_r; one path for every seed, or ``{seed: path}``) instead of a trained one."""

    classes: list[int] | None = None
    per_class: int | None = None
    fraction: float | None = None
    indices: list[int] | None = None
    indices_file: str | None = None
    gold_ckpt: GivenPaths = None


@dataclass
class ScenarioEntry:
    """A scenario as written in the config: ``{name, targets: [{classes: [3], gold_ckpt: ...}, ...]}``."""

    name: str
    targets: list[TargetEntry]


def given_paths(value: Any, seeds: list[int], where: str) -> dict[int, str]:
    """``{seed: path}`` of a given checkpoint (``None``: none given; one path: the same file for every seed). Refuses
    a mapping that misses a configured seed or names another one, and empty paths."""
    if value is None:
        return {}
    if isinstance(value, (str, Path)):
        value = {s: str(value) for s in seeds}
    if not isinstance(value, dict):
        raise BenchmarkConfigError(f"{where} must be a path or a mapping {{seed: path}}, got {value!r}.")
    try:
        paths = {int(k): str(v) for k, v in value.items()}
    except (TypeError, ValueError):
        raise BenchmarkConfigError(f"{where}: the keys of {{seed: path}} must be seeds (integers), got {list(value)}.")
    missing = [s for s in seeds if s not in paths]
    if missing:
        raise BenchmarkConfigError(
            f"{where} gives no checkpoint for seed(s) {missing} (seeds: {seeds}): add `{missing[0]}: PATH` to the "
            "mapping, give one path for every seed, or drop those seeds."
        )
    extra = sorted(set(paths) - set(seeds))
    if extra:
        raise BenchmarkConfigError(f"{where} names seed(s) {extra} that are not in `seeds` {seeds}: remove them.")
    empty = [s for s, v in paths.items() if not v.strip()]
    if empty:
        raise BenchmarkConfigError(f"{where}: the path of seed {empty[0]} is empty.")
    return {s: paths[s] for s in seeds}


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


def slug(text: str) -> str:
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
    return "file-" + slug(Path(str(d.get("indices_file"))).stem)


def class_spec(spec: Any) -> dict[str, Any]:
    """``{"class_path", "init_args"}`` of a parsed ``class_path``/``init_args`` entry (``data:``, ``backbone:``)."""
    spec = dict(spec)
    return {"class_path": str(spec["class_path"]), "init_args": dict(spec.get("init_args") or {})}
