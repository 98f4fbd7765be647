"""A method of an experiment as written in a config (:class:`MethodSpec`): checked when it is read
(:func:`method_spec`, :func:`check_method_args`) and resolved to its ``UnlearningMethod`` class; the reserved row names;
``class_path``/``init_args`` entries (:func:`class_spec`) and directory names (:func:`slug`)."""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from jsonargparse import ArgumentParser
from lightning.pytorch import Trainer

from lightning_unlearn.experiment.errors import ConfigError
from lightning_unlearn.methods.base import UnlearningMethod

__all__ = [
    "METHOD_KEYS",
    "ORIGINAL",
    "RESERVED_TRAINER_ARGS",
    "RETRAIN",
    "MethodSpec",
    "check_method_args",
    "check_methods",
    "class_spec",
    "import_class",
    "method_identity",
    "method_spec",
    "slug",
]

#: The two reference rows (reserved: a method may not use them): the original unchanged and the retrained model.
ORIGINAL, RETRAIN = "Original", "Retrain"
#: The keys of a method entry.
METHOD_KEYS = ("name", "class_path", "init_args", "max_epochs", "trainer", "scenarios")
#: Trainer arguments the applications set themselves (a method's ``trainer`` overrides may not).
RESERVED_TRAINER_ARGS = frozenset(
    {"callbacks", "logger", "default_root_dir", "max_epochs", "devices", "enable_checkpointing"}
)


@dataclass
class MethodSpec:
    """One method of an experiment: a display name, the ``UnlearningMethod`` class, its arguments, its epochs, and
    optional extra ``Trainer`` arguments for its runs (e.g. ``{limit_train_batches: 0.2}`` to estimate Fisher
    Forgetting's Fisher on a fifth of D_r, or ``{gradient_clip_val: 1.0}``), the names of the scenarios it runs
    in (``None``: all; e.g. ``[class-wise]`` for UNSIR, which forgets whole classes only), and, for settings read from
    a tuner's ``best/`` file, its tuning record (the split hashes of the targets they were tuned on)."""

    name: str
    class_path: str
    init_args: dict[str, Any] = field(default_factory=dict)
    max_epochs: int = 1
    trainer: dict[str, Any] = field(default_factory=dict)
    scenarios: list[str] | None = None
    tuned_record: dict[str, Any] | None = None

    def runs_in(self, scenario: str) -> bool:
        return self.scenarios is None or scenario in self.scenarios

    def resolve(self) -> type:
        """The method class (raises :class:`ConfigError` naming the method when it cannot be imported)."""
        return _method_class(self.name, self.class_path)

    @property
    def needs_recorded_updates(self) -> bool:
        """Whether the method takes the updates recorded while training the original (``Amnesiac``'s ``updates``)."""
        return "updates" in inspect.signature(self.resolve()).parameters


def method_identity(spec: MethodSpec) -> dict[str, Any]:
    """What determines a method's runs (the part of a cache key that names the method): class, arguments, epochs,
    Trainer overrides. Not its display name, scenarios or tuning record."""
    return {"class_path": spec.class_path, "init_args": spec.init_args, "max_epochs": spec.max_epochs,
            "trainer": spec.trainer}


def method_spec(i: int, entry: Any) -> MethodSpec:
    """The ``i``-th entry of ``methods:`` (a mapping, or a bare class path) as a checked :class:`MethodSpec`."""
    m = dict({"class_path": entry} if isinstance(entry, str) else entry)
    unknown = set(m) - set(METHOD_KEYS)
    if unknown:
        raise ConfigError(
            f"methods[{i}] has unknown key(s) {sorted(unknown)}; a method is {{name, class_path, init_args, max_epochs, "
            "trainer, scenarios}."
        )
    if not m.get("class_path"):
        raise ConfigError(f"methods[{i}] has no class_path (e.g. lightning_unlearn.methods.Finetune).")
    name = str(m.get("name") or str(m["class_path"]).rsplit(".", 1)[-1])
    max_epochs = m.get("max_epochs", 1)
    if not isinstance(max_epochs, int) or isinstance(max_epochs, bool) or max_epochs < 0:
        raise ConfigError(f"methods[{i}] ({name}): max_epochs must be an integer >= 0, got {max_epochs!r}.")
    trainer = dict(m.get("trainer") or {})
    reserved = sorted(set(trainer) & RESERVED_TRAINER_ARGS)
    if reserved:
        raise ConfigError(
            f"methods[{i}] ({name}): trainer may not set {reserved} (the benchmark sets them; epochs: `max_epochs`)."
        )
    unknown_t = sorted(set(trainer) - set(inspect.signature(Trainer).parameters))
    if unknown_t:
        raise ConfigError(f"methods[{i}] ({name}): {unknown_t} are not Trainer arguments.")
    scenarios = m.get("scenarios")
    if scenarios is not None and (isinstance(scenarios, str) or not all(isinstance(s, str) for s in scenarios)):
        raise ConfigError(f"methods[{i}] ({name}): scenarios must be a list of scenario names: {scenarios!r}.")
    return MethodSpec(name=name, class_path=str(m["class_path"]), init_args=dict(m.get("init_args") or {}),
                      max_epochs=max_epochs, trainer=trainer,
                      scenarios=None if scenarios is None else [str(s) for s in scenarios])


def _method_class(name: str, class_path: str) -> type:
    module_name, _, attr = class_path.rpartition(".")
    if not module_name:
        module_name, attr = "lightning_unlearn.methods", class_path
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(
            f"Method {name!r}: cannot import module {module_name!r} of class_path {class_path!r} ({err}). Is the method "
            "installed (and its file present)? Remove it from `methods` to run the others."
        ) from err
    cls = getattr(module, attr, None)
    if cls is None:
        raise ConfigError(
            f"Method {name!r}: {module_name!r} has no class {attr!r} (class_path {class_path!r}). Remove it from "
            "`methods` or fix the class_path."
        )
    if not (inspect.isclass(cls) and issubclass(cls, UnlearningMethod)):
        raise ConfigError(f"Method {name!r}: {class_path} is not an UnlearningMethod subclass.")
    return cls


def check_method_args(spec: MethodSpec, cls: type | None = None) -> None:
    """Type-check ``init_args`` against the class signature with jsonargparse (unknown keys, wrong types); the
    ``backbone`` (the original model) and the recorded ``updates`` are the experiment's, never the config's."""
    if "backbone" in spec.init_args:
        raise ConfigError(
            f"Method {spec.name!r}: do not set `backbone`; every method starts from the benchmark's original model."
        )
    if "updates" in spec.init_args:
        raise ConfigError(
            f"Method {spec.name!r}: do not set `updates`; the benchmark records them while training the original "
            "model (AmnesiacRecorder) and passes the file."
        )
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls or spec.resolve(), "m", skip={"backbone", "updates"}, instantiate=False)
    try:
        parser.parse_object({"m": spec.init_args})
    except Exception as err:  # noqa: BLE001 - jsonargparse raises several types; re-raised with the method's name
        msg = str(err).strip().splitlines()
        raise ConfigError(
            f"Method {spec.name!r} ({spec.class_path}): invalid init_args {spec.init_args}: {' '.join(msg)[:600]}"
        ) from err


def check_methods(methods: Sequence[MethodSpec], reserved_for: str) -> None:
    """The checks of ``methods:`` every application makes: unique names, none of the reserved row names
    (``reserved_for`` says what they name), classes that import and arguments that fit them."""
    names = [m.name for m in methods]
    seen: dict[str, list[MethodSpec]] = {}
    for m in methods:  # a name repeats only for settings per scenario (e.g. tuned per scenario): disjoint `scenarios`
        same = seen.setdefault(m.name, [])
        if same and (m.scenarios is None or any(o.scenarios is None or set(o.scenarios) & set(m.scenarios)
                                                for o in same)):
            raise ConfigError(f"Method names must be unique (a name repeats only with disjoint `scenarios`), got "
                              f"{names}.")
        same.append(m)
    for m in methods:
        if m.name in (ORIGINAL, RETRAIN):
            raise ConfigError(f"{m.name!r} is reserved for {reserved_for}; rename that method.")
        check_method_args(m, m.resolve())


def import_class(class_path: str) -> type:
    """The class a config's ``class_path`` names (the user's own config, as jsonargparse resolves it)."""
    module_name, _, attr = class_path.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)


def class_spec(spec: Any) -> dict[str, Any]:
    """``{"class_path", "init_args"}`` of a parsed ``class_path``/``init_args`` entry (``data:``, ``backbone:``)."""
    spec = dict(spec)
    return {"class_path": str(spec["class_path"]), "init_args": dict(spec.get("init_args") or {})}


def slug(text: str) -> str:
    """A directory name for a row, a scenario or a method: runs of other characters than ``[A-Za-z0-9._-]`` -> ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.")
