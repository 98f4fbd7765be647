"""Settings tuned per scenario (issue 24): ``tune --per_scenario true`` writes ``best/<scenario>/<method>.yaml``, the
benchmark runs each scenario's rows at that scenario's settings under one method name."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from conftest import digits_bench_yaml

from lightning_unlearn import benchmark as B
from lightning_unlearn.experiment import ConfigError, method_spec, read_best, write_best
from lightning_unlearn.experiment.specs import check_methods
from lightning_unlearn.tune.config import group_record, load_tune_config


def _best_per_scenario(tmp_path: Path, bench_yaml: Path) -> Path:
    """best/<scenario>/Finetune.yaml as the tuner writes them, tuned on class 5 / random on seed 7."""
    best = tmp_path / "best"
    for scenario, target, lr in (("class-wise", {"classes": [5]}, 0.02), ("random", {"fraction": 0.1}, 0.005)):
        cfg = B.load_config(str(bench_yaml), scenarios=[{"name": scenario, "targets": [target]}], seeds=[7])
        groups = [group_record(g) for g in B.make_plan(cfg).groups]
        write_best(best / scenario / "Finetune.yaml", method="Finetune", class_path="lightning_unlearn.methods.Finetune",
                   init_args={"lr": lr}, max_epochs=2, trainer={}, record={"method": "Finetune", "tuning_groups": groups})
    return best


def test_a_name_repeats_only_with_disjoint_scenarios() -> None:
    a = method_spec(0, {"name": "X", "class_path": "lightning_unlearn.methods.Finetune", "scenarios": ["class-wise"]})
    b = method_spec(1, {"name": "X", "class_path": "lightning_unlearn.methods.Finetune", "scenarios": ["random"]})
    check_methods([a, b], "the reference rows")
    c = method_spec(2, {"name": "X", "class_path": "lightning_unlearn.methods.Finetune", "scenarios": ["random"]})
    with pytest.raises(ConfigError, match="disjoint `scenarios`"):
        check_methods([a, b, c], "the reference rows")
    d = method_spec(3, {"name": "X", "class_path": "lightning_unlearn.methods.Finetune"})  # every scenario
    with pytest.raises(ConfigError, match="disjoint `scenarios`"):
        check_methods([a, d], "the reference rows")


def test_benchmark_runs_each_scenario_at_its_own_tuned_settings(tmp_path: Path) -> None:
    bench_yaml = digits_bench_yaml(tmp_path)
    best = _best_per_scenario(tmp_path, bench_yaml)
    cfg = B.load_config(str(bench_yaml), **{"tuned.dir": str(best), "tuned.mode": "tuned"})
    assert [(m.name, m.scenarios, m.init_args) for m in cfg.methods] == [
        ("Finetune (tuned)", ["class-wise"], {"lr": 0.02}),
        ("Finetune (tuned)", ["random"], {"lr": 0.005}),
    ]
    assert cfg.method_names() == ["Finetune (tuned)"]
    assert cfg.method("Finetune (tuned)", "random").init_args == {"lr": 0.005}
    both = B.load_config(str(bench_yaml), **{"tuned.dir": str(best), "tuned.mode": "both"})
    assert both.method_names() == ["Finetune", "Finetune (tuned)"] and len(both.methods) == 3
    result = B.run_benchmark(cfg, stream=open(os.devnull, "w"))  # noqa: SIM115
    rows = {r["scenario"]: r for r in result["rows"] if r["method"] == "Finetune (tuned)"}
    assert set(rows) == {"class-wise", "random"} and not result["failed"]
    for scenario, lr in (("class-wise", 0.02), ("random", 0.005)):
        run = json.loads((tmp_path / "bench" / rows[scenario]["run_dir"] / "unlearn.json").read_text())
        assert run["hparams"]["lr"] == lr and rows[scenario]["status"] == "ok"
    # a rerun reuses both rows: their cache keys are the per-scenario settings'
    again = B.run_benchmark(B.load_config(str(bench_yaml), **{"tuned.dir": str(best), "tuned.mode": "tuned"}),
                            stream=open(os.devnull, "w"))  # noqa: SIM115
    assert {r["config_hash"] for r in again["rows"]} == {r["config_hash"] for r in result["rows"]}
    report = (tmp_path / "bench" / "report.md").read_text()
    assert report.count("| Finetune (tuned) |") >= 2  # one row in each scenario's table, one name
    # a scenario without its file is refused in one line
    (best / "random" / "Finetune.yaml").unlink()
    with pytest.raises(ConfigError, match="no tuned settings"):
        B.load_config(str(bench_yaml), **{"tuned.dir": str(best), "tuned.mode": "tuned"})


def test_tuned_methods_names_the_methods_the_directory_has_settings_for(tmp_path: Path) -> None:
    """``tuned.methods``: only those methods get tuned rows (a benchmark whose other methods were not tuned, as the
    Fashion-MNIST one); a name that is not a method is refused in one line."""
    bench_yaml = digits_bench_yaml(tmp_path)
    cfg = yaml.safe_load(bench_yaml.read_text())
    cfg["methods"].append({"name": "NegGrad", "class_path": "lightning_unlearn.methods.NegativeGradient",
                           "init_args": {"lr": 0.001}, "max_epochs": 1})
    bench_yaml.write_text(yaml.safe_dump(cfg))
    best = _best_per_scenario(tmp_path, bench_yaml)
    with pytest.raises(ConfigError, match="no tuned settings"):  # without the list: NegGrad's files are missing
        B.load_config(str(bench_yaml), **{"tuned.dir": str(best), "tuned.mode": "both"})
    both = B.load_config(str(bench_yaml), **{"tuned.dir": str(best), "tuned.mode": "both", "tuned.methods": ["Finetune"]})
    assert both.method_names() == ["Finetune", "Finetune (tuned)", "NegGrad"]
    only = B.load_config(str(bench_yaml), **{"tuned.dir": str(best), "tuned.mode": "tuned", "tuned.methods": ["Finetune"]})
    assert only.method_names() == ["Finetune (tuned)", "NegGrad"]
    with pytest.raises(ConfigError, match=r"tuned.methods names \['Finetun'\], which are not methods"):
        B.load_config(str(bench_yaml), **{"tuned.dir": str(best), "tuned.methods": ["Finetun"]})


def test_tune_per_scenario_writes_a_best_file_per_scenario(tmp_path: Path) -> None:
    from lightning_unlearn.tune import run_tuning

    tune = {
        "benchmark": str(digits_bench_yaml(tmp_path)), "output_dir": str(tmp_path / "tune"), "per_scenario": True,
        "scenarios": [{"name": "class-wise", "targets": [{"classes": [5]}]},
                      {"name": "random", "targets": [{"fraction": 0.1}]}],
        "seeds": [7], "n_trials": 1, "search_space": {"Finetune": {"max_epochs": {"low": 1, "high": 2}}},
    }
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(tune))
    cfg = load_tune_config(path)
    assert [p.bench.scenarios[0].name for p in cfg.parts] == ["class-wise", "random"]
    summaries = run_tuning(cfg, stream=open(os.devnull, "w"))  # noqa: SIM115
    assert set(summaries) == {"class-wise", "random"}
    for scenario in ("class-wise", "random"):
        best = read_best(tmp_path / "tune" / "best" / scenario / "Finetune.yaml")
        assert {g["scenario"] for g in best["record"]["tuning_groups"]} == {scenario}
        assert (tmp_path / "tune" / scenario / "tune.md").is_file()
    # the benchmark reads the per-scenario layout as it is written
    bench = B.load_config(str(tmp_path / "bench.yaml"), **{"tuned.dir": str(tmp_path / "tune" / "best")})
    assert [(m.name, m.scenarios) for m in bench.methods] == [
        ("Finetune", None), ("Finetune (tuned)", ["class-wise"]), ("Finetune (tuned)", ["random"])]


@pytest.mark.parametrize("name", ["quickstart", "fashion_mnist"])
def test_the_shipped_benchmarks_run_their_tuned_methods_at_tuned_settings_in_every_scenario(name: str) -> None:
    """configs/tuned/<name> holds a file per (scenario, method) the benchmark takes tuned (the quickstart: every method,
    the README's main job is the tuned comparison, issue 24; Fashion-MNIST: the methods of ``tuned.methods``, issue
    28), each recording tuning targets other than the benchmark's."""
    root = Path(__file__).resolve().parents[1]
    path = str(root / f"configs/benchmark/{name}.yaml")
    configured = B.load_config(path, **{"tuned.mode": "default"})
    tuned = B.load_config(path)
    chosen = yaml.safe_load(Path(path).read_text())["tuned"].get("methods")
    scenarios = [s.name for s in tuned.scenarios]
    for m in configured.methods:
        if chosen is not None and m.name not in chosen:
            assert tuned.method(f"{m.name} (tuned)", scenarios[0]) is None and m.name in tuned.method_names()
            continue
        for sc in scenarios:
            if not m.runs_in(sc):
                continue
            spec = tuned.method(f"{m.name} (tuned)", sc)
            assert spec is not None and spec.class_path == m.class_path, (m.name, sc)
            record = spec.tuned_record
            assert {g["scenario"] for g in record["tuning_groups"]} == {sc}
            assert all(g["seed"] not in tuned.seeds for g in record["tuning_groups"])  # other seeds than evaluated
    if chosen is None:
        assert all(n.endswith(" (tuned)") for n in tuned.method_names())
    else:
        assert {f"{n} (tuned)" for n in chosen} <= set(tuned.method_names())
