"""What is on disk: sha256 digests of cached models (:func:`cache_problem`), the hash of a run's configuration, finished
runs read back (:func:`read_result`), each group's copy of its original, and JSON written atomically."""

from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from lightning_unlearn.benchmark.config import BenchmarkConfig
from lightning_unlearn.benchmark.plan import Group, ModelJob, config_hash
from lightning_unlearn.benchmark.specs import RESULT_FILE, MethodSpec
from lightning_unlearn.filecache import file_sha256

__all__ = [
    "base_row",
    "cache_problem",
    "evaluator_settings",
    "file_sha256",
    "finite",
    "group_original",
    "import_given",
    "now",
    "read_json",
    "read_results",
    "read_result",
    "run_hash",
    "scalars",
    "write_config",
    "write_json",
]


def cache_problem(job: ModelJob) -> str | None:
    """Why ``job``'s cached model cannot be used (``None``: it can): missing files, or files that do not match the
    sha256 digests ``info.json`` recorded when they were written (a corrupt or replaced cache is retrained)."""
    files = [job.ckpt, *(job.updates_path(h) for h in job.record_forget)]
    info_path = job.dir / "info.json"
    if not info_path.is_file() or not all(f.is_file() for f in files):
        return "not trained"
    info = read_json(info_path) or {}
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


def import_given(cfg: BenchmarkConfig, job: ModelJob) -> float | None:
    """Import ``job``'s given model (the user's file, checked by ``make_plan``) into ``job.dir`` as a checkpoint of this
    package, so that every row reads it as it reads a trained model: same weights, the architecture, the splits (the
    file's own when it records them, else the ones the benchmark states, with ``train_on`` of its role), and
    ``given``: where it came from, its sha256, whether its splits were checked. The user's file is only read (nothing is
    written beside it); an import already made from the same file is kept. Returns the training time the file records
    (``None``: unknown)."""
    import torch

    from lightning_unlearn.benchmark.plan import build_datamodule
    from lightning_unlearn.benchmark.specs import BenchmarkConfigError
    from lightning_unlearn.checkpoints import META_KEY, PREFIX, read_checkpoint

    info = dict(job.given_info)
    if job.given is None:
        raise ValueError(f"{job.dir.name} is not a given model.")
    if cache_problem(job) is None:
        return info.get("train_time_s")
    if file_sha256(job.given) != info["sha256"]:
        raise BenchmarkConfigError(
            f"{job.given} changed while the benchmark was starting (its sha256 is not the one checked); run it again."
        )
    g = job.group
    dm = build_datamodule(cfg, g.target, g.seed, train_on="all" if job.role == "original" else "retain")
    dm.setup("fit")
    record = {k: info[k] for k in ("path", "sha256", "format", "splits_checked", "source")}
    if info["format"] == "lightning_unlearn":
        ckpt = read_checkpoint(job.given)  # weights-only; the weights are kept as they are
        meta = dict(ckpt[META_KEY])
        if not meta.get("splits"):
            meta["splits"] = dm.splits_info()
            meta["forget_set"] = "stated by the benchmark (the given checkpoint records no splits)"
        ckpt = {"state_dict": ckpt.get("state_dict", {}), META_KEY: {**meta, "given": record}}
    else:
        from lightning_unlearn.benchmark.given import given_source
        from lightning_unlearn.byo import load_model

        backbone, meta = load_model(job.given, dm, given_source(cfg), what=f"the given {job.role} model {job.given}")
        state = {PREFIX + k: v.detach().cpu() for k, v in backbone.state_dict().items()}
        ckpt = {"state_dict": state,
                META_KEY: {"version": 1, "role": job.role, "backbone": backbone.config(), "splits": dm.splits_info(),
                           "forget_set": "stated by the benchmark (the given file records no splits)",
                           "source": meta.get("source"), "given": record}}  # fmt: skip
    if job.dir.exists():
        import shutil

        if job.given.resolve().is_relative_to(job.dir.resolve()):
            raise BenchmarkConfigError(f"{job.given} lies in the benchmark's {job.dir}: copy it elsewhere, give the copy.")
        shutil.rmtree(job.dir)  # an unfinished earlier import (the user's file is not in it: checked above)
    job.dir.mkdir(parents=True)
    tmp = job.dir / "model.ckpt.tmp"
    torch.save(ckpt, tmp)
    os.replace(tmp, job.ckpt)
    train_time = ckpt[META_KEY].get("train_time_s")
    write_json(
        job.dir / "info.json",
        {"role": job.role, "key": job.key, "key_content": job.key_content, "given": record, "train_time_s": train_time,
         "first_group": g.describe(), "recorded_forget_sets": [], "finished_at": now(),
         "sha256": {job.ckpt.name: file_sha256(job.ckpt)}},
    )  # fmt: skip
    return train_time


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=json_default, allow_nan=False))
    os.replace(tmp, path)


def json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)


def finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def group_original(cfg: BenchmarkConfig, group: Group, job: ModelJob, dm: Any) -> Path:
    """The group's copy of its (possibly shared) original: same weights, this group's splits in its provenance.

    Weights-only: the backbone's ``state_dict`` and this package's metadata, all that ``load_backbone`` and
    ``UnlearnTrainer.unlearn`` read (a full training checkpoint with optimizer, loop and recorder state took ~20x as
    long to read, once per row; docs/performance.md). A copy made by an older version (with that state) is made again.
    """
    from lightning_unlearn.checkpoints import META_KEY, read_checkpoint, write_splits_json

    path = group.dir / "original.ckpt"
    source_sha = file_sha256(job.ckpt)
    if path.is_file():
        try:
            copy = read_checkpoint(path)
        except Exception:  # noqa: BLE001 - a corrupt copy is made again
            copy = {}
        meta = copy.get(META_KEY, {})
        if (set(copy) == {"state_dict", META_KEY} and meta.get("benchmark_model") == job.dir.name
                and meta.get("shared_checkpoint_sha256", source_sha) == source_sha):  # fmt: skip
            return path
        path.unlink()
    import torch

    ckpt = torch.load(job.ckpt, map_location="cpu", weights_only=True)
    splits = dm.splits_info()
    meta = {**ckpt[META_KEY], "splits": splits, "benchmark_model": job.dir.name, "shared_checkpoint": str(job.ckpt),
            "shared_checkpoint_sha256": source_sha}  # fmt: skip
    group.dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"state_dict": ckpt["state_dict"], META_KEY: meta}, tmp)
    os.replace(tmp, path)
    write_splits_json(group.dir, splits)
    return path


def evaluator_settings(configured: dict[str, Any]) -> dict[str, Any]:
    """The evaluator's effective settings (``evaluation.evaluator_settings``: its signature's defaults overridden by
    ``configured``, optional components that are off left out). A row's hash holds these, so that a changed default
    (e.g. the SVC's ``svc_max_samples``) invalidates the rows it measured, as a changed config does."""
    from lightning_unlearn.evaluation import evaluator_settings as settings

    return settings(configured)


def run_hash(cfg: BenchmarkConfig, group: Group, method: str, spec: MethodSpec | None) -> str:
    return config_hash(
        {
            "method": None if spec is None else {"class_path": spec.class_path, "init_args": spec.init_args,
                                                 "max_epochs": spec.max_epochs, "trainer": spec.trainer},  # fmt: skip
            "name": method,
            "original": group.original_key,
            "gold": group.gold_key,
            "hashes": group.hashes,
            "evaluator": evaluator_settings(cfg.evaluator),
            "trainer": {k: v for k, v in asdict(cfg.trainer).items() if k != "num_threads"},
        }
    )


def base_row(group: Group, method: str, kind: str, class_path: str | None) -> dict[str, Any]:
    """The columns every row of ``group`` starts with; a group whose models the user gave adds, per given model,
    ``<role>_ckpt`` (the file), ``<role>_sha256`` and ``<role>_splits_checked`` (false: the file records no splits,
    the forget set is the one the benchmark states)."""
    row = {
        "scenario": group.scenario,
        "target": group.label,
        "target_spec": json.dumps(group.target.describe(), sort_keys=True),
        "seed": group.seed,
        "method": method,
        "kind": kind,
        "class_path": class_path,
    }
    for role, info in sorted(getattr(group, "given", {}).items()):
        row.update({f"{role}_ckpt": info["path"], f"{role}_sha256": info["sha256"],
                    f"{role}_splits_checked": info["splits_checked"]})  # fmt: skip
    return row


def read_result(run_dir: Path, run_hash: str) -> dict[str, Any] | None:
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


def read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def scalars(results: dict[str, Any]) -> dict[str, Any]:
    """The evaluator's numeric results as plain ``int``/``float`` (numpy scalars included; nan/inf -> None)."""
    out: dict[str, Any] = {}
    for k, v in results.items():
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            continue
        out[k] = int(v) if isinstance(v, numbers.Integral) else finite(float(v))
    return out


def write_config(cfg: BenchmarkConfig, out: Path) -> None:
    """``output_dir/config.yaml``: the parsed configuration the benchmark ran with."""
    import yaml

    (out / "config.yaml").write_text(yaml.safe_dump(cfg.source, sort_keys=False))


def read_results(path: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``(rows, provenance)`` of a ``results.json`` (or of the directory holding it); a bare list of rows (the format
    before provenance was recorded) gives an empty provenance."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    data = json.loads(path.read_text())
    if isinstance(data, list):
        return data, {}
    return list(data.get("rows") or []), dict(data.get("provenance") or {})
