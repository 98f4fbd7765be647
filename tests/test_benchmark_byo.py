"""``lightning_unlearn benchmark`` on the user's own models (``original_ckpt``, a target's ``gold_ckpt``): a tiny digits
benchmark trained once, then run again from its models given back (a) as this package's checkpoints and (b) as plain
state dicts read with the configured backbone / ``model_source``: same weights, same numbers, nothing trained, the
user's files untouched. Then the inputs that must stop it, each with one line, before anything is written."""

from __future__ import annotations

import hashlib
import io
import math
from pathlib import Path

import pytest
import torch
import yaml

from lightning_unlearn.benchmark import BenchmarkConfigError, load_config, make_plan, run_benchmark
from lightning_unlearn.benchmark import jobs as bm
from lightning_unlearn.checkpoints import backbone_state_dict

TIMING = {"unlearn_time_s", "wall_s"}  # measured, not computed from the weights


def tiny(out: Path, **changes) -> dict:
    cfg = {
        "output_dir": str(out),
        "data": {"class_path": "lightning_unlearn.data.DigitsDataModule",
                 "init_args": {"image_size": 4, "batch_size": 128, "holdout_fraction": 0.5, "augment": False}},
        "backbone": {"class_path": "lightning_unlearn.backbones.AllCNN", "init_args": {"width": 0.125}},
        "training": {"max_epochs": 1, "lr": 0.05},
        "scenarios": [{"name": "class-wise", "targets": [{"classes": [3]}]}],
        "seeds": [0],
        "methods": [{"name": "Finetune", "class_path": "lightning_unlearn.methods.Finetune", "init_args": {"lr": 0.01},
                     "max_epochs": 1}],
        "trainer": {"accelerator": "cpu", "num_threads": 1},
        "evaluator": {"mia": True, "zrf": False},
    }
    cfg.update(changes)
    return cfg


def config(tmp: Path, cfg: dict, **overrides):
    path = tmp / f"c{len(list(tmp.glob('c*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return load_config(path, **overrides)


def with_gold(cfg: dict, gold, target: dict | None = None) -> dict:
    cfg["scenarios"] = [{"name": "class-wise", "targets": [{**(target or {"classes": [3]}), "gold_ckpt": gold}]}]
    return cfg


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def by_method(rows: list[dict]) -> dict[str, dict]:
    return {r["method"]: r for r in rows}


def metrics(row: dict) -> dict:
    return {k: v for k, v in row.items() if "/" in k and not k.startswith("time/")}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny benchmark trained once; its original and gold checkpoints, and the same weights as plain state dicts
    (the gold one inside a Lightning-style ``{"state_dict": {"net.*"}}``: the network's attribute is found)."""
    root = tmp_path_factory.mktemp("byo")
    result = run_benchmark(config(root, tiny(root / "trained")), stream=io.StringIO())
    assert not result["failed"]
    models = root / "trained" / "models"
    (original,) = models.glob("original-*/model.ckpt")
    (gold,) = models.glob("gold-*/model.ckpt")
    user = root / "user"
    user.mkdir()
    plain_original, plain_gold = user / "original_state.pt", user / "gold_lightning.ckpt"
    torch.save(backbone_state_dict(torch.load(original, weights_only=True)), plain_original)
    weights = backbone_state_dict(torch.load(gold, weights_only=True))
    torch.save({"state_dict": {f"net.{k}": v for k, v in weights.items()}}, plain_gold)
    return {"root": root, "rows": by_method(result["rows"]), "original": original, "gold": gold,
            "plain_original": plain_original, "plain_gold": plain_gold}


def run_given(trained, tmp_path, monkeypatch, original: Path, gold: Path, **changes) -> dict:
    files = {p: sha(p) for p in (original, gold)}
    listing = sorted(p.name for p in original.parent.iterdir())

    def no_training(*args, **kwargs):
        raise AssertionError("a given model was trained")

    monkeypatch.setattr(bm, "train_model", no_training)
    out = tmp_path / "given"
    cfg = with_gold(tiny(out, original_ckpt=str(original), **changes), {0: str(gold)})
    result = run_benchmark(config(tmp_path, cfg), stream=io.StringIO())
    assert not result["failed"]
    assert {p: sha(p) for p in files} == files  # the user's files are read, never written
    assert sorted(p.name for p in original.parent.iterdir()) == listing  # and nothing is written beside them
    made = sorted(p.name.rsplit("-", 1)[0] for p in (out / "models").iterdir())
    assert made == ["gold-given", "original-given"]  # the two imports of the user's files; nothing trained
    rows = by_method(result["rows"])
    assert set(rows) == set(trained["rows"]) == {"Original", "Retrain", "Finetune"}
    for name, row in rows.items():  # same weights, same splits, same seeds: the very same numbers
        assert metrics(row) == metrics(trained["rows"][name]), name
        assert row["original_ckpt"] == str(original.resolve()) and row["original_sha256"] == files[original]
        assert row["gold_ckpt"] == str(gold.resolve()) and row["gold_sha256"] == files[gold]
    assert (out / "report.md").is_file() and (out / "results.csv").is_file()
    report = (out / "report.md").read_text()
    for role, path in (("original", original), ("gold", gold)):  # the report names the models it measured
        assert f"given {role} model {path.resolve()} (sha256 {files[path][:12]}..." in report
    return rows


def test_package_checkpoints_given(trained, tmp_path, monkeypatch):
    rows = run_given(trained, tmp_path, monkeypatch, trained["original"], trained["gold"])
    assert all(r["original_splits_checked"] and r["gold_splits_checked"] for r in rows.values())
    # the gold checkpoint records its training time: Retrain's cost and the speed-ups are known, as when trained
    assert rows["Retrain"]["unlearn_time_s"] == trained["rows"]["Retrain"]["unlearn_time_s"]
    assert rows["Finetune"]["time/speedup_vs_retrain"] > 0
    # a rerun reuses every row; another file (the same weights as a state dict) is another model: its rows are redone
    cfg = with_gold(tiny(tmp_path / "given", original_ckpt=str(trained["original"])), str(trained["gold"]))
    again = run_benchmark(config(tmp_path, cfg), stream=io.StringIO())
    assert [r["finished_at"] for r in again["rows"]] == [rows[r["method"]]["finished_at"] for r in again["rows"]]
    plan = make_plan(config(tmp_path, cfg))
    other = make_plan(config(tmp_path, with_gold(cfg, str(trained["plain_gold"]))))
    assert plan.groups[0].gold_key != other.groups[0].gold_key
    assert plan.groups[0].original_key == other.groups[0].original_key


def test_imported_copy_given_again(trained, tmp_path, monkeypatch):
    """A benchmark's import of a given file (models/*-given-*/model.ckpt, which records its source's digest) given to
    another benchmark is recorded under its own sha256, not its source's (which made the import fail)."""
    for d in ("first", "second"):
        (tmp_path / d).mkdir()
    run_given(trained, tmp_path / "first", monkeypatch, trained["plain_original"], trained["gold"],
              model_source={"arch": "AllCNN", "arch_args": {"width": 0.125}})
    (copy,) = (tmp_path / "first" / "given" / "models").glob("original-given-*/model.ckpt")
    rows = run_given(trained, tmp_path / "second", monkeypatch, copy, trained["gold"])
    assert all(r["original_sha256"] == sha(copy) != sha(trained["plain_original"]) for r in rows.values())


def test_plain_state_dicts_given(trained, tmp_path, monkeypatch):
    rows = run_given(trained, tmp_path, monkeypatch, trained["plain_original"], trained["plain_gold"],
                     model_source={"arch": "AllCNN", "arch_args": {"width": 0.125}})
    assert not any(r["original_splits_checked"] or r["gold_splits_checked"] for r in rows.values())
    # no recorded training time: Retrain's cost and every speed-up are unknown (and the report is still written)
    assert rows["Retrain"]["unlearn_time_s"] is None
    speedup = rows["Finetune"].get("time/speedup_vs_retrain")
    assert speedup is None or math.isnan(speedup)
    assert "Speed-up" in (tmp_path / "given" / "report.md").read_text()
    assert "splits not recorded: the stated forget set was trusted): 3 rows" in (tmp_path / "given" / "report.md").read_text()


def refused(tmp_path, cfg: dict, match: str, **overrides) -> None:
    with pytest.raises(BenchmarkConfigError, match=match) as err:
        run_benchmark(config(tmp_path, cfg, **overrides), stream=io.StringIO())
    assert "\n" not in str(err.value)
    assert not Path(cfg["output_dir"]).exists()  # nothing written, nothing trained


def test_bad_given_models_stop_before_anything(trained, tmp_path):
    out = tmp_path / "out"
    original, gold = str(trained["original"]), str(trained["gold"])
    refused(tmp_path, tiny(out, original_ckpt=str(tmp_path / "nowhere.ckpt")), r"original_ckpt \(seed 0\).*not found")
    # a state dict of another width does not fit the configured backbone
    wide = tiny(out, original_ckpt=str(trained["plain_original"]))
    wide["backbone"]["init_args"]["width"] = 0.25
    refused(tmp_path, wide, r"original_ckpt \(seed 0\).*do not fit")
    refused(tmp_path, tiny(out, original_ckpt=str(trained["plain_original"])), r"do not fit AllCNN \{'width': 0.5\}",
            model_source={"arch": "AllCNN", "arch_args": {"width": 0.5}})
    # a gold model trained on all of D, an original trained on D_r, a gold model of another forget set
    refused(tmp_path, with_gold(tiny(out), original), r"gold_ckpt \(seed 0\).*train_on='all'.*D_r")
    refused(tmp_path, tiny(out, original_ckpt=gold), r"original_ckpt.*train_on='retain'.*train_on=all")
    refused(tmp_path, with_gold(tiny(out), gold, {"classes": [4]}), r"classes.*4.*'forget' split.*does not match")
    # an original of seed 0 given for seed 1: another holdout, so another D
    refused(tmp_path, tiny(out, seeds=[1], original_ckpt={1: original}), r"seed 1.*'holdout' split")
    broken = tmp_path / "nan.pt"
    state = torch.load(trained["plain_original"], weights_only=True)
    state["head.weight"] = torch.full_like(state["head.weight"], float("nan"))
    torch.save(state, broken)
    refused(tmp_path, tiny(out, original_ckpt=str(broken)), r"NaN/inf weights \(head.weight\)")


def test_cli_error_is_one_line(tmp_path, capsys):
    from lightning_unlearn.cli import main

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny(tmp_path / "out", original_ckpt=str(tmp_path / "nowhere.ckpt"))))
    with pytest.raises(SystemExit) as exc:
        main(["benchmark", "-c", str(path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "original_ckpt (seed 0)" in err[0] and "nowhere.ckpt not found" in err[0]
    assert not (tmp_path / "out").exists()


def test_bad_given_settings_stop_at_load(trained, tmp_path):
    original = str(trained["original"])
    with pytest.raises(BenchmarkConfigError, match=r"original_ckpt gives no checkpoint for seed\(s\) \[1\]"):
        config(tmp_path, tiny(tmp_path / "o", seeds=[0, 1], original_ckpt={0: original}))
    with pytest.raises(BenchmarkConfigError, match=r"gold_ckpt gives no checkpoint for seed\(s\) \[1\]"):
        config(tmp_path, with_gold(tiny(tmp_path / "o", seeds=[0, 1]), {0: original}))
    amnesiac = tiny(tmp_path / "o", original_ckpt=original)
    amnesiac["methods"].append({"name": "Amnesiac", "class_path": "lightning_unlearn.methods.Amnesiac"})
    with pytest.raises(BenchmarkConfigError, match="Amnesiac need.*updates recorded.*original_ckpt"):
        config(tmp_path, amnesiac)
    with pytest.raises(BenchmarkConfigError, match="model_source.*no original_ckpt or gold_ckpt"):
        config(tmp_path, tiny(tmp_path / "o"), model_source={"arch": "AllCNN"})
    assert not (tmp_path / "o").exists()
