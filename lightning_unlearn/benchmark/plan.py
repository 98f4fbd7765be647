"""The plan of a benchmark: every (scenario, forget target, seed) :class:`Group` (in a sequential scenario, every
(request, seed)) and the :class:`ModelJob` of each original and gold model, keyed by what determines them (shared
where the training set is the same); names, labels and hashes; the DataModule, backbone and Trainer arguments of a
run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightning_unlearn.benchmark.config import BenchmarkConfig
from lightning_unlearn.benchmark.given import check_given
from lightning_unlearn.benchmark.specs import request_scenario, target_slug
from lightning_unlearn.data.forget import ForgetSpec, index_hash
from lightning_unlearn.data.requests import PreviousRequests
from lightning_unlearn.experiment import (
    ConfigError,
    build_backbone,
    config_hash,
    data_for_key,
    model_key_content,
    slug,
)
from lightning_unlearn.experiment import build_datamodule as build_data
from lightning_unlearn.experiment import eval_device as device_for
from lightning_unlearn.experiment import run_logger as logger_for
from lightning_unlearn.experiment import trainer_kwargs as trainer_args

__all__ = [
    "Group",
    "ModelJob",
    "Plan",
    "build_backbone_for",
    "build_datamodule",
    "eval_device",
    "group_datamodule_for",
    "make_plan",
    "run_logger",
    "target_label",
    "trainer_kwargs",
]


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


def build_datamodule(cfg: BenchmarkConfig, target: ForgetSpec | None, seed: int, train_on: str = "all") -> Any:
    """The configured DataModule with the benchmark's forget target, seed and ``train_on``."""
    return build_data(cfg.data, target, seed, train_on)


def group_datamodule_for(cfg: BenchmarkConfig, group: Group, train_on: str = "all") -> Any:
    """The DataModule of ``group`` (:func:`build_datamodule`); for request ``k >= 2`` of a sequence, continued from
    the requests before it (``continue_from``: their holdout, D_f among what they left, D_r without any of it)."""
    dm = build_datamodule(cfg, group.target, group.seed, train_on)
    if group.previous is not None:
        dm.continue_from(group.previous)
    return dm


def build_backbone_for(cfg: BenchmarkConfig, dm: Any) -> Any:
    """The configured backbone with ``num_classes``, ``in_channels``, ``image_size``, ``mean``, ``std`` from ``dm``."""
    return build_backbone(cfg.backbone, dm)


def run_logger(cfg: BenchmarkConfig, run_dir: Path) -> Any:
    """The Lightning logger of one training or run, writing into ``run_dir/logs`` (``cfg.logger``: ``csv``,
    ``tensorboard``, ``wandb`` (one W&B run per job, grouped by the benchmark's directory) or ``none``)."""
    return logger_for(cfg.logger, run_dir, cfg.output_dir)


def trainer_kwargs(cfg: BenchmarkConfig, run_dir: Path) -> dict[str, Any]:
    """The Trainer arguments of every training and run of the benchmark (no checkpointing, no validation loop,
    no progress bar, a per-run logger)."""
    return trainer_args(cfg.trainer, run_dir, run_logger(cfg, run_dir))


def eval_device(cfg: BenchmarkConfig) -> str:
    """Where a reference row is evaluated (outside a Trainer): the device ``trainer.accelerator`` names."""
    return device_for(cfg.trainer.accelerator)


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
    given: dict[str, dict[str, Any]] = field(default_factory=dict)  # role -> what check_given recorded of the file
    request: int = 0  # in a sequential scenario, the request's number (1, 2, ...); 0 for an independent target
    previous: PreviousRequests | None = None  # what the requests before this one forgot (request >= 2)
    before: Group | None = None  # the group of the request before (request >= 2): each method continues from its model
    followed: bool = False  # a further request follows: the methods' unlearned checkpoints are its inputs, kept

    @property
    def forget_hash(self) -> str:
        return self.hashes["forget"]

    @property
    def row_scenario(self) -> str:
        """The ``scenario`` of the group's rows: a request of a sequence is reported as a scenario of its own."""
        return request_scenario(self.scenario, self.request) if self.request else self.scenario

    def describe(self) -> str:
        return f"{self.scenario} / {self.label} / seed {self.seed}"


@dataclass
class ModelJob:
    """A model to train (or found in the cache): the original or the gold model of one or more groups. A *given* one
    (``given``: the user's file, ``given_info``: what :func:`~.given.check_given` recorded of it) is never trained: its
    weights are imported into ``dir`` as a checkpoint of this package (:func:`~.cache.import_given`), the user's file
    only read."""

    role: str  # "original" or "gold"
    key: str
    dir: Path
    group: Group  # the first group that uses it: its DataModule trains the model
    key_content: dict[str, Any]
    record_forget: dict[str, np.ndarray] = field(default_factory=dict)  # forget hash -> D_f (AmnesiacRecorder)
    given: Path | None = None
    given_info: dict[str, Any] = field(default_factory=dict)

    @property
    def ckpt(self) -> Path:
        return self.dir / "model.ckpt"

    @property
    def files(self) -> list[Path]:
        """The model's files: its checkpoint, then the updates recorded for each forget set."""
        return [self.ckpt, *(self.updates_path(h) for h in sorted(self.record_forget))]

    def updates_path(self, forget_hash: str) -> Path:
        return self.dir / f"amnesiac_updates-{forget_hash[:16]}.pt"


@dataclass
class Plan:
    groups: list[Group]
    models: dict[str, ModelJob]

    def run_dirs(self, group: Group, methods: Sequence[str]) -> list[tuple[str, Path]]:
        return [(m, group.dir / slug(m)) for m in methods]


def make_plan(cfg: BenchmarkConfig) -> Plan:
    """Compute every group's splits (so a bad forget target stops the benchmark before any training) and the models
    to train, keyed by what determines them."""
    out = Path(cfg.output_dir)
    groups: list[Group] = []
    checked: dict[tuple[Any, ...], dict[str, Any]] = {}  # a file checked once per role, seed and forget set
    for sc in cfg.scenarios:
        for target in sc.targets:
            for seed in cfg.seeds:
                groups.append(_make_group(cfg, sc, target, seed, checked, out / "runs" / slug(sc.name)))
        for seed in cfg.seeds:  # a sequence: request k continues from request k - 1, per seed
            before: Group | None = None
            for k, target in enumerate(sc.requests, start=1):
                g = _make_group(cfg, sc, target, seed, checked, out / "runs" / slug(sc.name), before, k)
                if before is not None:
                    before.followed = True
                groups.append(g)
                before = g
    record = cfg.needs_recorded_updates
    # originals: one per training set; with recorded updates, one recorder per forget set using it
    base_keys: dict[str, list[Group]] = {}
    for g in groups:
        content = _key_content(cfg, g, "original", {"train_indices": g.train_hash})
        base_keys.setdefault(config_hash(content), []).append(g)
    models: dict[str, ModelJob] = {}
    for members in base_keys.values():
        g0 = members[0]
        content = _key_content(cfg, g0, "original", {"train_indices": g0.train_hash})
        given = g0.given.get("original")
        forget = {g.forget_hash: g.forget_indices for g in members} if record and not given else {}
        if forget:
            content["recorded_forget_sets"] = sorted(forget)
        key = config_hash(content)
        job = ModelJob("original", key, out / "models" / f"original{'-given' if given else ''}-{key}", g0, content,
                       record_forget=forget, **_given_fields(given))
        models[job.dir.name] = job
        for g in members:
            g.original_key = job.dir.name
    for g in groups:
        split = {"train_indices": g.hashes["retain"], "forget": g.forget_hash}
        if "forgotten" in g.hashes:  # request k >= 2 of a sequence: retrained without everything forgotten so far
            split["forgotten"] = g.hashes["forgotten"]
        content = _key_content(cfg, g, "gold", split)
        key = config_hash(content)
        given = g.given.get("gold")
        name = f"gold{'-given' if given else ''}-{key}"
        if name not in models:
            models[name] = ModelJob("gold", key, out / "models" / name, g, content, **_given_fields(given))
        g.gold_key = name
    return Plan(groups, models)


def _make_group(cfg: BenchmarkConfig, sc: Any, target: ForgetSpec, seed: int, checked: dict[tuple[Any, ...], Any],
                root: Path, before: Group | None = None, request: int = 0) -> Group:
    """The group of ``target`` and ``seed`` (``request``: its number in a sequence, ``before``: the group of the request
    before it), its splits computed: a bad forget target stops the benchmark here, before any training."""
    previous = None
    if before is not None:
        last = _group_splits(cfg, before)
        previous = PreviousRequests(
            holdout=np.asarray(last.holdout, dtype=np.int64), forgotten=last.cumulative_forget,
            forgotten_classes=tuple(sorted(set(last.forgotten_classes) | set(last.forget_classes))),
            request=request, ledger=(),
        )
    where = f"Scenario {sc.name!r}, {f'request {request}' if request else 'target'} {target.describe()}, seed {seed}"
    try:
        dm = build_datamodule(cfg, target, seed)
        if previous is not None:
            dm.continue_from(previous)
        dm.setup("fit")
        splits = dm.splits
        train_idx = dm.indices("train")
    except Exception as err:  # noqa: BLE001 - re-raised with where it happened
        raise ConfigError(f"{where}: {type(err).__name__}: {err}") from err
    tslug = target_slug(target)
    label = target_label(target, getattr(dm, "class_names", None))
    if before is None:
        given = _check_given_models(cfg, sc, target, tslug, seed, dm, checked)
    else:  # the same original as request 1 (trained on all of D), never a given gold model (refused by the config)
        given = {k: v for k, v in before.given.items() if k == "original"}
    return Group(
        scenario=sc.name,
        target=target,
        seed=seed,
        label=f"request {request}: {label}" if request else label,
        slug=tslug,
        dir=root / (f"request{request}_{tslug}" if request else tslug) / f"seed{seed}",
        hashes=splits.hashes(),
        train_hash=before.train_hash if before is not None else index_hash(train_idx),  # the original's: all of D
        forget_indices=np.asarray(splits.forget, dtype=np.int64).copy(),
        given=given,
        request=request,
        previous=previous,
        before=before,
    )


def _group_splits(cfg: BenchmarkConfig, group: Group) -> Any:
    dm = group_datamodule_for(cfg, group)
    dm.setup("fit")
    return dm.splits


def _check_given_models(cfg: BenchmarkConfig, sc: Any, target: ForgetSpec, tslug: str, seed: int, dm: Any,
                        checked: dict[tuple[Any, ...], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{role: record}`` of the group's given models, each checked against the group's DataModule (once per file,
    role, seed and forget set): before anything is trained, a bad file stops the benchmark."""
    given: dict[str, dict[str, Any]] = {}
    paths = {"original": cfg.original_ckpt.get(seed), "gold": sc.gold_ckpt.get(tslug, {}).get(seed)}
    for role, path in paths.items():
        if path is None:
            continue
        where = (f"original_ckpt (seed {seed})" if role == "original"
                 else f"scenario {sc.name!r} target {target.describe()} gold_ckpt (seed {seed})")
        forget = index_hash(dm.splits.forget) if role == "gold" else None
        key = (role, str(path), seed, forget)
        if key not in checked:
            checked[key] = check_given(cfg, str(path), role, dm, where)
        given[role] = checked[key]
    return given


def _key_content(cfg: BenchmarkConfig, group: Group, role: str, split: dict[str, str]) -> dict[str, Any]:
    """What determines a model: for a trained one the data, backbone, training settings, epochs, seed and the
    training set; for a given one the data, seed and split it stands for, the file's sha256 and how it was read (a
    changed file is another model, whose rows are redone; the training settings do not concern it)."""
    info = group.given.get(role)
    if info is None:
        return model_key_content(data_for_key(cfg.data), cfg.backbone, cfg.training, role, group.seed, **split)
    given = {"sha256": info["sha256"], "source": info["source"]}
    return {"data": data_for_key(cfg.data), "role": role, "seed": group.seed, **split, "given": given}


def _given_fields(info: dict[str, Any] | None) -> dict[str, Any]:
    return {} if info is None else {"given": Path(info["path"]), "given_info": dict(info)}
