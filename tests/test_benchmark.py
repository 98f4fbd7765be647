"""``lightning_unlearn benchmark``: a two-method, one-seed miniature end to end (files, columns, a shared original with
recorded Amnesiac updates), a resumed rerun that redoes nothing, a changed method that alone reruns, and the
configuration errors that must stop the benchmark before it trains anything."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import pytest
import yaml

from lightning_unlearn.benchmark import jobs as bm
from lightning_unlearn.benchmark import BenchmarkConfigError, load_config, run_benchmark
from lightning_unlearn.benchmark.stats import add_gaps
from lightning_unlearn.cli import main

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["Finetune", "Amnesiac"]
ROWS = ["Original", "Retrain", *METHODS]


def mini_config(out: Path, **changes) -> dict:
    cfg = {
        "output_dir": str(out),
        "data": {
            "class_path": "lightning_unlearn.data.DigitsDataModule",
            "init_args": {"image_size": 8, "batch_size": 128},
        },
        "backbone": {"class_path": "lightning_unlearn.backbones.AllCNN", "init_args": {"width": 0.125}},
        "training": {"max_epochs": 2, "lr": 0.05},
        "scenarios": [
            {"name": "class-wise", "targets": [{"classes": [3]}]},
            {"name": "random", "targets": [{"fraction": 0.1}]},
        ],
        "seeds": [0],
        "methods": [
            {"name": "Finetune", "class_path": "lightning_unlearn.methods.Finetune", "init_args": {"lr": 0.01},
             "max_epochs": 1},
            # needs the updates recorded while the original is trained: the benchmark records and passes them
            {"name": "Amnesiac", "class_path": "lightning_unlearn.methods.Amnesiac", "max_epochs": 1},
        ],
        "trainer": {"accelerator": "cpu", "num_threads": 1},
        "evaluator": {"mia": True, "zrf": True},
    }
    cfg.update(changes)
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def mtimes(root: Path) -> dict[str, int]:
    files = [*root.glob("runs/**/result.json"), *root.glob("runs/**/unlearned.ckpt"), *root.glob("models/**/*.ckpt")]
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in files}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The miniature run once through the CLI entry point (``lightning_unlearn benchmark -c ...``)."""
    root = tmp_path_factory.mktemp("benchmark")
    out = root / "out"
    config = write_config(root / "mini.yaml", mini_config(out))
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        main(["benchmark", "-c", str(config)])
    (root / "stdout.txt").write_text(stdout.getvalue())
    return config, out


def test_outputs_and_columns(finished):
    _, out = finished
    # each run's metrics table is `unlearn`'s result, not the benchmark's: 1 line per run, not 20
    assert "| time/speedup_vs_retrain |" not in (out.parent / "stdout.txt").read_text()
    for name in ("results.csv", "results.json", "report.md", "config.yaml", "gap_to_gold.png", "time_vs_gap.png"):
        assert (out / name).is_file(), name
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * len(ROWS)  # 2 scenarios x 1 target x 1 seed x (2 methods + Original + Retrain)
    cols = set(rows[0])
    expected = {
        "scenario", "target", "seed", "method", "status", "avg_gap", "acc/retain", "acc/forget", "acc/holdout",
        "acc/test", "acc/test_retain", "acc/test_forget", "mia/efficacy", "mia/entropy", "mia/loss_auc",
        "mia/loss_acc", "gold/forget_acc_gap", "gold/activation_distance", "gold/js_divergence",
        "gold/agreement_forget", "gold/agreement_test", "zrf", "time/unlearn_s", "time/retrain_s",
        "time/speedup_vs_retrain",
    }
    assert expected <= cols, expected - cols
    assert {(r["scenario"], r["method"]) for r in rows} == {(s, m) for s in ("class-wise", "random") for m in ROWS}
    assert all(r["status"] == "ok" for r in rows)
    by = {(r["scenario"], r["method"]): r for r in rows}
    for s in ("class-wise", "random"):
        gold = by[(s, "Retrain")]
        assert float(gold["avg_gap"]) == 0.0 and float(gold["gold/forget_acc_gap"]) == 0.0
        assert float(gold["time/speedup_vs_retrain"]) == pytest.approx(1.0)
        for m in METHODS:
            r = by[(s, m)]
            assert float(r["time/unlearn_s"]) > 0 and float(r["time/speedup_vs_retrain"]) > 0
            assert float(r["time/retrain_s"]) == pytest.approx(float(gold["time/unlearn_s"]))
        assert by[(s, "Original")]["time/unlearn_s"] == ""  # the original costs nothing: no time, no speed-up
    assert by[("random", "Finetune")]["acc/test_forget"] == ""  # not defined outside class-wise forgetting

    doc = json.loads((out / "results.json").read_text())
    data = doc["rows"]
    assert len(data) == len(rows) and all("avg_gap" in r for r in data)
    # provenance: what produced the file, and every row stamped with the code that produced it
    prov = doc["provenance"]
    for key in ("package_version", "git_commit", "git_dirty", "torch", "lightning", "device", "torch_num_threads",
                "date"):
        assert key in prov, key
    assert prov["device"].startswith("cpu") and prov["num_threads_config"] == 1
    assert all(r["package_version"] == prov["package_version"] and "git_commit" in r for r in data)
    assert set(doc["summary"]) == {"class-wise", "random"}
    for s in doc["summary"].values():
        assert s["comparison"]["best"] in ("Original", *METHODS) and "Retrain" in s["pareto_front"]
    report = (out / "report.md").read_text()
    assert "produced by lightning_unlearn" in report and "Closest to Retrain" in report and "Pareto front" in report
    for s in ("## class-wise", "## random", "Avg. gap", "MIA-eff.", "Speed-up", "**Retrain**", *METHODS):
        assert s in report
    assert "Acc test_f" in report.split("## random")[0] and "Acc test_f" not in report.split("## random")[1].split(
        "## Columns"
    )[0]


def test_original_is_shared_and_updates_recorded(finished):
    _, out = finished
    originals = sorted((out / "models").glob("original-*"))
    golds = sorted((out / "models").glob("gold-*"))
    # the holdout is drawn before D_f: both scenarios train the original on the same samples -> one original
    assert len(originals) == 1 and len(golds) == 2
    assert len(list(originals[0].glob("amnesiac_updates-*.pt"))) == 2  # one recorder per forget set
    for group in (out / "runs").glob("*/*/seed0"):
        assert (group / "original.ckpt").is_file() and (group / "splits.json").is_file()
        summary = json.loads((group / "Amnesiac" / "unlearn.json").read_text())
        assert summary["subtraction"]["updates"].startswith(str(originals[0]))


def test_rerun_is_resumed(finished, monkeypatch, capsys):
    config, out = finished
    before = mtimes(out)
    assert len(before) == 2 * len(ROWS) + 2 * len(METHODS) + 3  # every result, unlearned model and trained model

    def forbidden(*args, **kwargs):
        raise AssertionError("a finished run or a cached model was redone")

    for name in ("train_model", "run_method", "run_reference"):
        monkeypatch.setattr(bm, name, forbidden)
    result = run_benchmark(load_config(config))
    assert not result["failed"] and len(result["rows"]) == 2 * len(ROWS)
    assert mtimes(out) == before
    assert "cached" in capsys.readouterr().err
    (out / "report.md").unlink()
    again = run_benchmark(load_config(config, report_only=True))
    assert len(again["rows"]) == 2 * len(ROWS) and (out / "report.md").is_file() and mtimes(out) == before
    # a report of another configuration leaves out the rows it did not make (and rewrites no config.yaml)
    cfg = yaml.safe_load(config.read_text())
    cfg["methods"][0]["init_args"]["lr"] = 0.02
    changed = config.with_name("changed.yaml")
    changed.write_text(yaml.safe_dump(cfg))
    cfg_yaml = (out / "config.yaml").read_text()
    other = run_benchmark(load_config(changed, report_only=True))
    n_changed = sum(1 for r in result["rows"] if r["method"] == cfg["methods"][0]["name"])
    assert n_changed and len(other["rows"]) == 2 * len(ROWS) - n_changed
    assert cfg["methods"][0]["name"] not in {r["method"] for r in other["rows"]}
    assert "made with other settings" in capsys.readouterr().err and (out / "config.yaml").read_text() == cfg_yaml


def test_changed_method_alone_reruns(finished, tmp_path, monkeypatch):
    config, out = finished
    cfg = yaml.safe_load(config.read_text())
    cfg["methods"][0]["init_args"]["lr"] = 0.02  # Finetune changes; Amnesiac, Original and Retrain do not
    changed = write_config(tmp_path / "changed.yaml", cfg)
    before = mtimes(out)
    calls = []
    real = bm.run_method

    def counting(cfg_, group, spec, *args, **kwargs):
        calls.append(spec.name)
        return real(cfg_, group, spec, *args, **kwargs)

    monkeypatch.setattr(bm, "run_method", counting)
    monkeypatch.setattr(bm, "run_reference", lambda *a, **k: pytest.fail("reference rows were redone"))
    monkeypatch.setattr(bm, "train_model", lambda *a, **k: pytest.fail("a cached model was retrained"))
    run_benchmark(load_config(changed))
    assert calls == ["Finetune", "Finetune"]
    after = mtimes(out)
    for key, t in before.items():
        assert (after[key] != t) == ("/Finetune/" in key), key


def test_missing_method_class_stops_before_training(tmp_path):
    out = tmp_path / "out"
    cfg = mini_config(out)
    cfg["methods"].append({"name": "Nope", "class_path": "lightning_unlearn.methods.DoesNotExist"})
    with pytest.raises(BenchmarkConfigError, match="Nope.*DoesNotExist"):
        load_config(write_config(tmp_path / "c.yaml", cfg))
    cfg["methods"][-1] = {"name": "Typo", "class_path": "lightning_unlearn.methods.Finetune", "init_args": {"lrr": 1}}
    with pytest.raises(BenchmarkConfigError, match="Typo"):
        load_config(write_config(tmp_path / "c.yaml", cfg))
    cfg["methods"][-1] = {"name": "Retrain", "class_path": "lightning_unlearn.methods.Finetune"}
    with pytest.raises(BenchmarkConfigError, match="reserved"):
        load_config(write_config(tmp_path / "c.yaml", cfg))
    cfg["methods"].pop()
    cfg["scenarios"][0]["targets"] = [{"classes": [3], "fraction": 0.1}]
    with pytest.raises(BenchmarkConfigError, match="exactly one mode"):
        load_config(write_config(tmp_path / "c.yaml", cfg))
    assert not out.exists()


def test_bad_target_stops_before_training(tmp_path):
    out = tmp_path / "out"
    cfg = mini_config(out, scenarios=[{"name": "class-wise", "targets": [{"classes": [42]}]}])
    with pytest.raises(BenchmarkConfigError, match="class-wise.*42"):
        run_benchmark(load_config(write_config(tmp_path / "c.yaml", cfg)))
    assert not (out / "models").exists()


def test_cli_error_is_clean(tmp_path, capsys):
    cfg = mini_config(tmp_path / "out")
    cfg["methods"][0]["class_path"] = "lightning_unlearn.methods.NotThere"
    with pytest.raises(SystemExit) as exc:
        main(["benchmark", "-c", str(write_config(tmp_path / "c.yaml", cfg))])
    assert exc.value.code == 2
    assert "NotThere" in capsys.readouterr().err


def test_average_gap_is_salun_gap():
    def row(method, **m):
        return {"scenario": "s", "target_spec": "t", "seed": 0, "method": method, **m}

    rows = add_gaps(
        [
            row("Retrain", **{"acc/retain": 0.9, "acc/forget": 0.0, "acc/test_retain": 0.8, "acc/test_forget": 0.0,
                              "mia/efficacy": 1.0}),
            row("X", **{"acc/retain": 0.8, "acc/forget": 0.2, "acc/test_retain": 0.8, "acc/test_forget": None,
                        "mia/efficacy": 0.9}),
        ]
    )
    assert rows[0]["avg_gap"] == 0.0
    assert rows[1]["avg_gap"] == pytest.approx((10 + 20 + 0 + 10) / 4)  # undefined columns are left out


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs" / "benchmark").glob("*.yaml")))
def test_shipped_configs_parse(name):
    """Every shipped config parses and names methods that exist (no data is loaded: it may be absent here)."""
    cfg = load_config(ROOT / "configs" / "benchmark" / name)
    assert cfg.methods and cfg.scenarios and cfg.seeds and cfg.trainer.devices == 1


def test_method_restricted_to_some_scenarios(tmp_path):
    """A method's ``scenarios`` list: it runs (and is reported) only there; an unknown name stops before training."""
    cfg = mini_config(tmp_path / "out", evaluator={"mia": False, "zrf": False})
    cfg["methods"] = [
        {"name": "Finetune", "class_path": "lightning_unlearn.methods.Finetune", "max_epochs": 1},
        {"name": "UNSIR", "class_path": "lightning_unlearn.methods.UNSIR", "max_epochs": 1, "scenarios": ["class-wise"],
         "init_args": {"noise_batch_size": 8, "noise_steps": 1, "noise_copies": 1, "retain_per_class": 5}},
    ]
    config = load_config(write_config(tmp_path / "c.yaml", cfg))
    assert config.rows_for("class-wise") == ["Original", "Retrain", "Finetune", "UNSIR"]
    assert config.rows_for("random") == ["Original", "Retrain", "Finetune"]
    result = run_benchmark(config)
    assert not result["failed"]  # UNSIR would refuse the random scenario: it was not run there
    runs = {(r["scenario"], r["method"]) for r in result["rows"]}
    assert ("class-wise", "UNSIR") in runs and ("random", "UNSIR") not in runs and ("random", "Finetune") in runs
    assert list((tmp_path / "out" / "runs" / "random").glob("**/UNSIR")) == []
    assert list((tmp_path / "out" / "runs" / "class-wise").glob("**/UNSIR/result.json"))
    again = run_benchmark(load_config(write_config(tmp_path / "c.yaml", cfg), report_only=True))
    assert len(again["rows"]) == len(result["rows"]) == 7
    cfg["methods"][1]["scenarios"] = ["classwise"]
    with pytest.raises(BenchmarkConfigError, match="UNSIR.*classwise.*not among"):
        load_config(write_config(tmp_path / "c.yaml", cfg))


def test_row_hash_covers_the_evaluators_defaults(monkeypatch):
    """A cached row is reused only under the evaluator settings that measured it: stating a default changes nothing,
    a changed default (a new release's svc_max_samples) or a changed setting invalidates the row."""
    import inspect

    from lightning_unlearn.experiment import evaluator_settings
    from lightning_unlearn.evaluation import UnlearningEvaluator

    default = inspect.signature(UnlearningEvaluator).parameters["svc_max_samples"].default
    assert evaluator_settings({}) == evaluator_settings({"svc_max_samples": default})
    assert evaluator_settings({})["svc_max_samples"] == default
    assert evaluator_settings({"svc_max_samples": None}) != evaluator_settings({})
    assert "gold" not in evaluator_settings({}) and "output_dir" not in evaluator_settings({})

    sig = inspect.signature(UnlearningEvaluator)
    changed = sig.replace(parameters=[p.replace(default=1024) if p.name == "svc_max_samples" else p
                                      for p in sig.parameters.values()])
    before = evaluator_settings({})
    monkeypatch.setattr(UnlearningEvaluator, "__signature__", changed, raising=False)
    assert evaluator_settings({}) != before


def test_names_that_share_a_directory_are_refused(tmp_path):
    """Two scenarios or rows in one directory would reuse or overwrite each other's results."""
    from lightning_unlearn.benchmark import BenchmarkConfigError

    base = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs/benchmark/quickstart.yaml").read_text())
    base.pop("tuned")  # the rows as configured (the shipped tuned settings name the quickstart's methods)
    ft = {"class_path": "lightning_unlearn.methods.Finetune", "max_epochs": 1}
    cases = [
        ({"methods": [{"name": "Finetune lr=0.1", **ft}, {"name": "Finetune lr 0.1", **ft}]}, "same directory name"),
        ({"methods": [{"name": "original", **ft}]}, "'Original' and 'original' make the same directory"),
        ({"scenarios": [{"name": "a b", "targets": [{"classes": [3]}]}, {"name": "a-b", "targets": [{"classes": [3]}]}]},
         "Scenario names 'a b' and 'a-b'"),
    ]
    for change, match in cases:
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump({**base, "output_dir": str(tmp_path / "out"), **change}))
        with pytest.raises(BenchmarkConfigError, match=match):
            load_config(path)
