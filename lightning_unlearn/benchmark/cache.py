"""What is on disk: whether a model in the cache can be reused (:func:`cache_problem`), the user's models imported
into it (:func:`import_given`), each group's copy of its original (:func:`group_original`), the key of a row
(:func:`run_hash`) and finished rows read back (:func:`read_result`, :func:`read_results`). The files themselves are
written and checked by :mod:`lightning_unlearn.experiment.store`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml

from lightning_unlearn.benchmark.config import BenchmarkConfig
from lightning_unlearn.benchmark.given import given_source
from lightning_unlearn.benchmark.plan import Group, ModelJob, group_datamodule_for
from lightning_unlearn.benchmark.specs import RESULT_FILE
from lightning_unlearn.byo import load_model
from lightning_unlearn.checkpoints import META_KEY, PREFIX, read_checkpoint, write_splits_json
from lightning_unlearn.experiment import (
    ConfigError,
    MethodSpec,
    method_identity,
    model_problem,
    now,
    read_json,
    row_key,
    write_atomic,
    write_model_info,
    write_output,
)
from lightning_unlearn.filecache import file_sha256

__all__ = [
    "base_row",
    "cache_problem",
    "group_original",
    "import_given",
    "read_result",
    "read_results",
    "run_hash",
    "write_config",
]


def cache_problem(job: ModelJob) -> str | None:
    """Why ``job``'s cached model cannot be used (``None``: it can): missing files, or files that do not match the
    sha256 digests ``info.json`` recorded when they were written (a corrupt or replaced cache is retrained)."""
    return model_problem(job.dir, job.files)


def import_given(cfg: BenchmarkConfig, job: ModelJob) -> float | None:
    """Import ``job``'s given model (the user's file, checked by ``make_plan``) into ``job.dir`` as a checkpoint of this
    package, so that every row reads it as it reads a trained model: same weights, the architecture, the splits (the
    file's own when it records them, else the ones the benchmark states, with ``train_on`` of its role), and
    ``given``: where it came from, its sha256, whether its splits were checked. The user's file is only read (nothing is
    written beside it); an import already made from the same file is kept. Returns the training time the file records
    (``None``: unknown)."""
    info = dict(job.given_info)
    if job.given is None:
        raise ValueError(f"{job.dir.name} is not a given model.")
    if cache_problem(job) is None:
        return info.get("train_time_s")
    if file_sha256(job.given) != info["sha256"]:
        raise ConfigError(
            f"{job.given} changed while the benchmark was starting (its sha256 is not the one checked); run it again."
        )
    g = job.group
    dm = group_datamodule_for(cfg, g, train_on="all" if job.role == "original" else "retain")
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
        backbone, meta = load_model(job.given, dm, given_source(cfg), what=f"the given {job.role} model {job.given}")
        state = {PREFIX + k: v.detach().cpu() for k, v in backbone.state_dict().items()}
        ckpt = {"state_dict": state,
                META_KEY: {"version": 1, "role": job.role, "backbone": backbone.config(), "splits": dm.splits_info(),
                           "forget_set": "stated by the benchmark (the given file records no splits)",
                           "source": meta.get("source"), "given": record}}
    if job.dir.exists():
        if job.given.resolve().is_relative_to(job.dir.resolve()):
            raise ConfigError(f"{job.given} lies in the benchmark's {job.dir}: copy it elsewhere, give the copy.")
        shutil.rmtree(job.dir)  # an unfinished earlier import (the user's file is not in it: checked above)
    job.dir.mkdir(parents=True)
    write_atomic(job.ckpt, lambda f: torch.save(ckpt, f))
    train_time = ckpt[META_KEY].get("train_time_s")
    write_model_info(
        job.dir,
        {"role": job.role, "key": job.key, "key_content": job.key_content, "given": record, "train_time_s": train_time,
         "first_group": g.describe(), "recorded_forget_sets": [], "finished_at": now()},
        [job.ckpt],
    )
    return train_time


def group_original(cfg: BenchmarkConfig, group: Group, job: ModelJob, dm: Any) -> Path:
    """The group's copy of its (possibly shared) original: same weights, this group's splits in its provenance.

    Weights-only: the backbone's ``state_dict`` and this package's metadata, all that ``load_backbone`` and
    ``UnlearnTrainer.unlearn`` read (a full training checkpoint with optimizer, loop and recorder state took ~20x as
    long to read, once per row; docs/performance.md). A copy made by an older version (with that state) is made again.
    """
    path = group.dir / "original.ckpt"
    source_sha = file_sha256(job.ckpt)
    if path.is_file():
        try:
            copy = read_checkpoint(path)
        except Exception:  # noqa: BLE001 - a corrupt copy is made again
            copy = {}
        meta = copy.get(META_KEY, {})
        if (set(copy) == {"state_dict", META_KEY} and meta.get("benchmark_model") == job.dir.name
                and meta.get("shared_checkpoint_sha256", source_sha) == source_sha):
            return path
        path.unlink()
    ckpt = torch.load(job.ckpt, map_location="cpu", weights_only=True)
    splits = dm.splits_info()
    meta = {**ckpt[META_KEY], "splits": splits, "benchmark_model": job.dir.name, "shared_checkpoint": str(job.ckpt),
            "shared_checkpoint_sha256": source_sha}
    group.dir.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: torch.save({"state_dict": ckpt["state_dict"], META_KEY: meta}, f))
    write_splits_json(group.dir, splits)
    return path


def run_hash(cfg: BenchmarkConfig, group: Group, method: str, spec: MethodSpec | None) -> str:
    """The key of the row ``method`` of ``group`` (its ``result.json`` records it as ``config_hash``): the method's
    identity and name, the group's two models and split hashes, the evaluator's and the Trainer's settings; at request
    ``k >= 2`` of a sequence, a method's key also holds its key of request ``k - 1`` (the model it starts from)."""
    before = {}
    if group.before is not None and spec is not None:
        before = {"previous_request": run_hash(cfg, group.before, method, spec)}
    return row_key(method=None if spec is None else method_identity(spec), name=method, original=group.original_key,
                   gold=group.gold_key, hashes=group.hashes, evaluator=cfg.evaluator, trainer=cfg.trainer,
                   **before)


def base_row(group: Group, method: str, kind: str, class_path: str | None) -> dict[str, Any]:
    """The columns every row of ``group`` starts with; a group whose models the user gave adds, per given model,
    ``<role>_ckpt`` (the file), ``<role>_sha256`` and ``<role>_splits_checked`` (false: the file records no splits,
    the forget set is the one the benchmark states)."""
    row = {
        "scenario": group.row_scenario,
        "target": group.label,
        "target_spec": json.dumps(group.target.describe(), sort_keys=True),
        "seed": group.seed,
        "method": method,
        "kind": kind,
        "class_path": class_path,
    }
    if group.request:  # a request of a sequential scenario: its number, and the scenario as configured
        row.update({"request": group.request, "sequence": group.scenario})
    for role, info in sorted(getattr(group, "given", {}).items()):
        row.update({f"{role}_ckpt": info["path"], f"{role}_sha256": info["sha256"],
                    f"{role}_splits_checked": info["splits_checked"]})
    return row


def read_result(run_dir: Path, run_hash: str) -> dict[str, Any] | None:
    """The row finished in ``run_dir`` (its ``result.json``) if it was made with the key ``run_hash``, else ``None``."""
    data = read_json(run_dir / RESULT_FILE)
    if not isinstance(data, dict) or data.get("config_hash") != run_hash:
        return None
    return data


def write_config(cfg: BenchmarkConfig, out: Path) -> None:
    """``output_dir/config.yaml``: the parsed configuration the benchmark ran with."""
    write_output(out, "config.yaml", yaml.safe_dump(cfg.source, sort_keys=False))


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
