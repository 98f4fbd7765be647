"""Deletion requests one after the other in the benchmark (issue 25) and the representation columns (issue 29), on a
miniature: digits 4x4, one seed, Finetune and NegativeGradient for one epoch, a class-wise target beside a sequence of
three random 3% requests; the probe, the relearning attack and CKA on."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import yaml

from lightning_unlearn.benchmark import BenchmarkConfigError, load_config, make_plan, run_benchmark
from lightning_unlearn.benchmark import jobs as bm
from lightning_unlearn.checkpoints import read_checkpoint
from lightning_unlearn.data import DigitsDataModule, ForgetSpec, sequential_splits

REQUESTS = [{"fraction": 0.03}, {"fraction": 0.03}, {"fraction": 0.03}]
METHODS = ["Finetune", "NegativeGradient"]
DATA = {"image_size": 4, "batch_size": 64, "holdout_fraction": 0.5, "augment": False}


def config(out: Path, **changes) -> dict:
    cfg = {
        "output_dir": str(out),
        "data": {"class_path": "lightning_unlearn.data.DigitsDataModule", "init_args": dict(DATA)},
        "backbone": {"class_path": "lightning_unlearn.backbones.AllCNN", "init_args": {"width": 0.25}},
        "training": {"max_epochs": 2, "lr": 0.05},
        "scenarios": [{"name": "class-wise", "targets": [{"classes": [3]}]},
                      {"name": "seq", "requests": REQUESTS}],
        "seeds": [0],
        "methods": [
            {"name": "Finetune", "class_path": "lightning_unlearn.methods.Finetune", "init_args": {"lr": 0.01},
             "max_epochs": 1},
            {"name": "NegativeGradient", "class_path": "lightning_unlearn.methods.NegativeGradient",
             "init_args": {"lr": 0.001}, "max_epochs": 1},
        ],
        "trainer": {"accelerator": "cpu", "num_threads": 1},
        "evaluator": {"mia": False, "zrf": False, "probe": True, "relearn": True, "relearn_seeds": 2, "cka": True},
        "keep_checkpoints": False,
        "logger": "none",
    }
    cfg.update(changes)
    return cfg


def write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def stamps(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.glob("runs/**/result.json")}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("sequence")
    path = write(root / "seq.yaml", config(root / "out"))
    result = run_benchmark(load_config(path))
    return path, root / "out", result


def test_a_row_per_method_and_request_with_the_gold_model_of_each(finished):
    _, out, result = finished
    assert not result["failed"]
    rows = result["rows"]
    scenarios = ["class-wise", "seq: request 1", "seq: request 2", "seq: request 3"]
    assert sorted((r["scenario"], r["method"]) for r in rows) == sorted(
        (s, m) for s in scenarios for m in ["Original", "Retrain", *METHODS])
    assert {r["request"] for r in rows if r["scenario"].startswith("seq")} == {1, 2, 3}
    assert all(r["sequence"] == "seq" for r in rows if r["scenario"].startswith("seq"))
    # one original (all of D) shared by the class-wise target and every request; a gold model per request
    assert len(list((out / "models").glob("original-*"))) == 1 and len(list((out / "models").glob("gold-*"))) == 4

    dm = DigitsDataModule(**DATA)
    splits = sequential_splits(dm.train_set.targets, dm.test_set.targets, [ForgetSpec(**r) for r in REQUESTS],
                               holdout_fraction=0.5, seed=0, num_classes=10)
    seq = out / "runs" / "seq"
    for k, s in enumerate(splits, start=1):
        group = seq / f"request{k}_fraction-0.03" / "seed0"
        gold_path = json.loads((group / "Finetune" / "unlearn.json").read_text())["gold_ckpt"]
        gold = read_checkpoint(gold_path)["lightning_unlearn"]["splits"]
        assert gold["train_on"] == "retain" and gold["sizes"]["retain"] == len(s.retain)  # without all forgotten
        assert gold["sizes"].get("forgotten", 0) == len(s.forgotten) == sum(len(x.forget) for x in splits[: k - 1])
        # request k >= 2 starts from the method's own model of request k - 1
        started = json.loads((group / "NegativeGradient" / "unlearn.json").read_text())["original_ckpt"]
        assert started.endswith("original.ckpt" if k == 1 else f"request{k - 1}_fraction-0.03/seed0/NegativeGradient/"
                                "unlearned.ckpt")
        # keep_checkpoints: false removes the last request's models only (the others are the next request's inputs)
        assert (group / "Finetune" / "unlearned.ckpt").is_file() == (k < 3)
    second = read_checkpoint(seq / "request2_fraction-0.03/seed0/Finetune/unlearned.ckpt")
    ledger = second["lightning_unlearn"]["ledger"]
    assert [(e["request"], e["method"]) for e in ledger] == [(1, "Finetune"), (2, "Finetune")]
    assert [e["forget_indices"] for e in ledger] == [sorted(s.forget.tolist()) for s in splits[:2]]
    assert not (out / "runs/class-wise/classes-3/seed0/Finetune/unlearned.ckpt").exists()


def test_reference_rows_measure_the_representation_too(finished):
    _, out, result = finished
    by = {(r["scenario"], r["method"]): r for r in result["rows"]}
    for s in ("class-wise", "seq: request 2"):
        retrain, original = by[(s, "Retrain")], by[(s, "Original")]
        assert retrain["probe/forget_acc"] == retrain["gold/probe/forget_acc"]  # the gold model against itself
        assert retrain["relearn/steps"] == retrain["gold/relearn/steps"]
        assert retrain["gold/cka_forget"] == pytest.approx(1)
        assert original["relearn/steps"] == 0.0  # the original is at its own accuracy before any step
    doc = json.loads((out / "results.json").read_text())
    rows = {(r["scenario"], r["method"]): r for r in doc["rows"]}
    assert rows[("class-wise", "Retrain")]["probe_excess"] == 0.0
    ratio = rows[("class-wise", "Retrain")]["relearn_ratio"]
    assert ratio == 1.0 or (ratio is None and rows[("class-wise", "Retrain")]["gold/relearn/steps"] < 1)
    report = (out / "report.md").read_text()
    for s in ("## seq: request 1", "## seq: request 3", "Sequential scenario(s) `seq`", "Probe exc.", "CKA D_f",
              "**By the outputs, not by the features**", "| seq: request 2 |"):
        assert s in report, s
    assert (out / "sequence_gap.png").is_file()


def test_rerun_redoes_nothing_and_a_changed_request_redoes_what_follows(finished, monkeypatch, tmp_path):
    path, out, _ = finished
    before = stamps(out)
    for name in ("train_model", "run_method", "run_reference"):
        monkeypatch.setattr(bm, name, lambda *a, **k: pytest.fail("a finished run or a cached model was redone"))
    assert len(run_benchmark(load_config(path))["rows"]) == 16 and stamps(out) == before
    assert len(run_benchmark(load_config(path, report_only=True))["rows"]) == 16
    monkeypatch.undo()
    # NegativeGradient's request 1 is redone: its requests 2 and 3 start from that model, so they are redone too
    shutil.rmtree(out / "runs/seq/request1_fraction-0.03/seed0/NegativeGradient")
    calls = []
    real = bm.run_method
    monkeypatch.setattr(bm, "run_method", lambda c, g, spec, *a, **k: calls.append((g.request, spec.name)) or real(
        c, g, spec, *a, **k))
    monkeypatch.setattr(bm, "run_reference", lambda *a, **k: pytest.fail("reference rows were redone"))
    assert not run_benchmark(load_config(path))["failed"]
    assert calls == [(1, "NegativeGradient"), (2, "NegativeGradient"), (3, "NegativeGradient")]
    after = stamps(out)
    assert {k for k in before if after[k] != before[k]} == {
        f"runs/seq/request{k}_fraction-0.03/seed0/NegativeGradient/result.json" for k in (1, 2, 3)}
    # a changed setting of the method: its class-wise row and its whole sequence, nothing else
    cfg = config(out)
    cfg["methods"][0]["init_args"]["lr"] = 0.02
    calls.clear()
    run_benchmark(load_config(write(tmp_path / "changed.yaml", cfg)))
    assert calls == [(0, "Finetune"), (1, "Finetune"), (2, "Finetune"), (3, "Finetune")]


def test_a_missing_input_model_is_one_line(finished, tmp_path):
    path, _, _ = finished
    third = next(g for g in make_plan(load_config(path)).groups if g.request == 3)
    moved = dataclasses.replace(third, before=dataclasses.replace(third.before, dir=tmp_path))
    with pytest.raises(FileNotFoundError, match="Finetune's unlearned model of request 2 .* is missing"):
        bm.request_input(moved, "Finetune")


@pytest.mark.parametrize(
    ("scenario", "match"),
    [
        ({"name": "s", "targets": [{"classes": [3]}], "requests": REQUESTS}, "both `targets` and `requests`"),
        ({"name": "s", "requests": [{"fraction": 0.03, "gold_ckpt": "g.ckpt"}]}, "requests\\[0\\] has a gold_ckpt"),
        ({"name": "s", "requests": [{"fraction": 0.03, "classes": [3]}]}, "requests\\[0\\]"),
        ({"name": "s", "requests": [{"indices": [5, 6]}, {"indices": [6, 7]}]}, "request 2 .* forgotten by an earlier"),
        ({"name": "s", "requests": [{"classes": [3]}, {"classes": [3]}]}, "request 2 .* selects no training sample"),
    ],
)
def test_bad_sequences_stop_before_training(tmp_path, scenario, match):
    out = tmp_path / "out"
    with pytest.raises(BenchmarkConfigError, match=match):
        run_benchmark(load_config(write(tmp_path / "c.yaml", config(out, scenarios=[scenario]))))
    assert not (out / "models").exists()
