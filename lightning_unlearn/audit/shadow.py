"""Shadow models: N originals, each on a random half of the pool with a random forget set inside it, their retrained
models (the half minus the forget set), and every audited method's unlearned model, as cached independent jobs.

The pool is the DataModule's training set. A target set T of ``targets`` pool examples is drawn once; shadow k forgets
``forget_per_model`` examples of T drawn at random, and its half is that forget set plus a stratified random share of
the rest of the pool (the DataModule's holdout, drawn with seed ``seed + k``, is the other half). Every model is cached
under ``output_dir/models/<role>-<hash>/`` by a hash of what determines it (the benchmark's key: data, backbone and
training settings, epochs, seed, sha256 of the indices it trains on), with the sha256 of its files in ``info.json``;
its scores on T (``scores.json``) record the digest of the model they were computed from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightning_unlearn.audit.config import AuditConfig
from lightning_unlearn.data.forget import ForgetSpec, index_hash
from lightning_unlearn.experiment import (
    ORIGINAL,
    RETRAIN,
    ConfigError,
    MethodSpec,
    build_datamodule,
    config_hash,
    data_for_key,
    method_identity,
    model_key_content,
    read_json,
    trainer_key,
)
from lightning_unlearn.experiment import model_problem as stored_model_problem

__all__ = ["ModelEntry", "Shadow", "ShadowPlan", "cached_scores", "make_shadow_plan", "model_problem",
           "shadow_datamodule"]

RETRAIN_SEED_OFFSET = 100_003  #: the Retrain row's models: an independent retraining (another seed) on each D_r


@dataclass
class Shadow:
    """Shadow k: its seed, forget set (pool indices), the DataModule's holdout fraction giving a half, split hashes,
    and which targets its retrained model trains on."""

    index: int
    seed: int
    forget: list[int]
    holdout_fraction: float
    hashes: dict[str, str]
    train_hash: str
    target_in_retain: np.ndarray  # (M,) bool
    target_forgotten: np.ndarray  # (M,) bool


@dataclass
class ModelEntry:
    """A model of the audit: an ``original``, a ``gold`` (retrained) or an ``unlearned`` model of one shadow."""

    name: str
    role: str
    row: str  # the audit row it stands for ("Original", "Retrain", a method) or "" for the reference gold model
    shadow: int
    seed: int
    key_content: dict[str, Any]
    dir: Path
    method: MethodSpec | None = None
    original: str = ""
    gold: str = ""

    @property
    def ckpt(self) -> Path:
        return self.dir / "model.ckpt"

    @property
    def scores_path(self) -> Path:
        return self.dir / "scores.json"


@dataclass
class ShadowPlan:
    targets: np.ndarray
    target_labels: np.ndarray
    pool_size: int
    shadows: list[Shadow]
    models: dict[str, ModelEntry] = field(default_factory=dict)

    def row_model(self, row: str, k: int) -> ModelEntry:
        """The model standing for ``row`` in shadow k (Original: the original itself)."""
        for m in self.models.values():
            if m.shadow == k and m.row == row:
                return m
        raise KeyError(f"no model for row {row!r} in shadow {k}")

    def gold(self, k: int) -> ModelEntry:
        return next(m for m in self.models.values() if m.shadow == k and m.role == "gold" and m.row == "")


def shadow_datamodule(cfg: AuditConfig, shadow: Shadow | None, train_on: str = "all") -> Any:
    """Shadow k's DataModule (its forget set given as indices, its holdout the other half of the pool); ``None``:
    the whole pool (no forget set, nothing held out)."""
    if shadow is None:
        return build_datamodule(cfg.data, None, cfg.seed, holdout_fraction=0.0)
    return build_datamodule(cfg.data, ForgetSpec(indices=list(shadow.forget)), shadow.seed, train_on,
                            holdout_fraction=shadow.holdout_fraction)


def make_shadow_plan(cfg: AuditConfig) -> ShadowPlan:
    """Draw T and every shadow's forget set and half, check their splits, and name every model by its content hash."""
    pool_dm = shadow_datamodule(cfg, None)
    pool_dm.setup("fit")
    y = np.asarray(pool_dm.train_set.targets, dtype=np.int64)  # type: ignore[attr-defined]
    n = len(y)
    candidates = np.arange(n)
    if cfg.target_classes is not None:
        candidates = np.flatnonzero(np.isin(y, cfg.target_classes))
        if not len(candidates):
            raise ConfigError(f"target_classes={cfg.target_classes}: the pool has no example of these classes.")
    if cfg.targets > len(candidates):
        raise ConfigError(f"targets={cfg.targets} is larger than the {len(candidates)} pool examples it is drawn "
                               f"from; use targets <= {len(candidates)}.")
    half = n // 2
    if cfg.forget_per_model > half:
        raise ConfigError(
            f"forget_per_model={cfg.forget_per_model} is larger than the half of the pool each shadow model trains on "
            f"({half} of {n}); the forget set must lie inside the half and leave a retained set: use "
            f"forget_per_model < {half}."
        )
    rng = np.random.default_rng(cfg.seed)
    targets = np.sort(rng.choice(candidates, size=cfg.targets, replace=False))
    shadows = []
    for k in range(cfg.shadow_models):
        forget = np.sort(rng.choice(targets, size=cfg.forget_per_model, replace=False))
        h = (n - half) / (n - len(forget))  # hold out n - half of the rest: the forget set + the rest's share = half
        sh = Shadow(k, cfg.seed + k, [int(i) for i in forget], float(h), {}, "", np.zeros(0, bool), np.zeros(0, bool))
        try:
            dm = shadow_datamodule(cfg, sh)
            # the same pool for every shadow: load the datasets once (only the splits differ)
            dm._train, dm._test = pool_dm._train, pool_dm._test
            dm.setup("fit")
        except (ValueError, IndexError) as err:
            raise ConfigError(f"shadow model {k}: {err}") from err
        sh.hashes = dm.splits.hashes()
        sh.train_hash = index_hash(dm.indices("train"))
        sh.target_in_retain = np.isin(targets, dm.splits.retain)
        sh.target_forgotten = np.isin(targets, forget)
        shadows.append(sh)
    plan = ShadowPlan(targets, y[targets], n, shadows)
    _add_models(cfg, plan)
    return plan


def _add_models(cfg: AuditConfig, plan: ShadowPlan) -> None:
    out = Path(cfg.output_dir) / "models"
    methods = {m.name: m for m in cfg.methods}
    for sh in plan.shadows:
        data = data_for_key(cfg.data, holdout_fraction=sh.holdout_fraction)

        def add(role: str, row: str, seed: int, content: dict[str, Any], **kw: Any) -> ModelEntry:
            name = f"{role}-{config_hash(content)}"
            entry = ModelEntry(name, role, row, sh.index, seed, content, out / name, **kw)  # noqa: B023
            plan.models[f"{name}:{row}"] = entry
            return entry

        orig = add("original", ORIGINAL, sh.seed, model_key_content(data, cfg.backbone, cfg.training, "original",
                                                                    sh.seed, train_indices=sh.train_hash))
        gold_split = {"train_indices": sh.hashes["retain"], "forget": sh.hashes["forget"]}
        gold = add("gold", "", sh.seed, model_key_content(data, cfg.backbone, cfg.training, "gold", sh.seed,
                                                          **gold_split))
        if RETRAIN in cfg.baselines:
            s2 = sh.seed + RETRAIN_SEED_OFFSET
            add("gold", RETRAIN, s2, model_key_content(data, cfg.backbone, cfg.training, "gold", s2, **gold_split))
        for name in cfg.rows:
            spec = methods.get(name)
            if spec is None:
                continue
            content = {"method": method_identity(spec), "name": name, "original": orig.name, "gold": gold.name,
                       "hashes": sh.hashes, "trainer": trainer_key(cfg.trainer)}
            add("unlearned", name, sh.seed, content, method=spec, original=orig.name, gold=gold.name)


# -- cache ---------------------------------------------------------------------------------------------------------
def model_problem(entry: ModelEntry) -> str | None:
    """Why the cached model cannot be used (``None``: it can): missing, or not matching its recorded sha256."""
    return stored_model_problem(entry.dir, [entry.ckpt])


def cached_scores(entry: ModelEntry, targets: np.ndarray) -> dict[str, Any] | None:
    """The model's scores on T if they were computed from the model now on disk and for this T."""
    s = read_json(entry.scores_path)
    info = read_json(entry.dir / "info.json")
    if not isinstance(s, dict) or not isinstance(info, dict) or s.get("targets") != index_hash(targets):
        return None
    if s.get("model_sha256") != (info.get("sha256") or {}).get(entry.ckpt.name) or model_problem(entry) is not None:
        return None
    return s
