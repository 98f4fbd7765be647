"""The result store every application writes through (``lightning_unlearn.experiment.store``): a write replaces the
file in one rename and never writes through a symbolic link; JSON holds finite numbers only (NaN/inf -> null); a
model directory is reused only when its files match the sha256 its ``info.json`` recorded."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_unlearn.experiment import (
    atomic_path,
    config_hash,
    model_problem,
    read_json,
    to_json,
    write_atomic,
    write_json,
    write_model_info,
)


def test_a_symlink_at_the_target_is_replaced_never_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "out" / "result.json"
    link.parent.mkdir()
    link.symlink_to(victim)
    write_json(link, {"a": 1})
    assert victim.read_text() == "keep me"
    assert not link.is_symlink() and json.loads(link.read_text()) == {"a": 1}


def test_a_symlink_at_the_temporary_name_is_removed_not_followed(tmp_path: Path) -> None:
    """A ``<name>.tmp`` pointing elsewhere (left behind, or planted) is unlinked; the write goes to a new file."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    target = tmp_path / "report.md"
    (tmp_path / "report.md.tmp").symlink_to(victim)
    write_atomic(target, "report")
    assert victim.read_text() == "keep me" and target.read_text() == "report"
    assert not os.path.lexists(tmp_path / "report.md.tmp")
    with atomic_path(tmp_path / "model.ckpt") as tmp:
        assert not os.path.lexists(tmp)
        torch.save({"w": torch.ones(1)}, tmp)
    assert torch.load(tmp_path / "model.ckpt", weights_only=True)["w"].item() == 1.0


def test_a_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    write_json(target, {"v": 1})

    def broken(f) -> None:
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(target, broken)
    assert json.loads(target.read_text()) == {"v": 1} and sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"v": 1} and sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_one_nan_policy(tmp_path: Path) -> None:
    obj = {"nan": float("nan"), "inf": -math.inf, "np": np.float32(0.5), "i": np.int64(3), "b": np.bool_(True),
           "arr": np.array([1.0, np.nan]), "t": (1, 2), 3: Path("p"), "ok": 0.25}
    assert to_json(obj) == {"nan": None, "inf": None, "np": 0.5, "i": 3, "b": True, "arr": [1.0, None], "t": [1, 2],
                            "3": "p", "ok": 0.25}
    path = write_json(tmp_path / "r.json", obj)
    assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()
    assert read_json(path)["nan"] is None and read_json(tmp_path / "missing.json") is None
    (tmp_path / "bad.json").write_text("{not json")
    assert read_json(tmp_path / "bad.json") is None


def test_config_hash_is_the_canonical_json_recipe() -> None:
    """The recipe every key uses (sorted keys, no spaces, ``str`` of the rest): changing it would orphan every cache."""
    canonical = hashlib.sha256(b'{"a":[1,2.5,null],"b":1}').hexdigest()
    assert config_hash({"b": 1, "a": [1, 2.5, None]}) == canonical[:16] == "813b96a2b5562de3"
    assert config_hash({"a": [1, 2.5, None], "b": 1}, 12) == canonical[:12]
    assert config_hash({"p": Path("x")}) == config_hash({"p": "x"})


def test_model_directory_is_reused_only_when_its_digests_match(tmp_path: Path) -> None:
    d = tmp_path / "gold-k"
    files = [d / "model.ckpt"]
    assert model_problem(d, files) == "not trained"
    d.mkdir()
    torch.save({"state_dict": {"w": torch.ones(1)}}, files[0])
    assert model_problem(d, files) == "not trained"  # no info.json: unfinished
    write_model_info(d, {"role": "gold"}, files)
    assert model_problem(d, files) is None and read_json(d / "info.json")["role"] == "gold"
    files[0].write_bytes(files[0].read_bytes()[:-3])
    assert "does not match the sha256" in model_problem(d, files)
