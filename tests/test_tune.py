"""``lightning_unlearn tune``: search spaces, the ask/tell study (optimum, resume after a kill), honest targets,
best/ and the benchmark's tuned rows."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from conftest import digits_bench_yaml

from lightning_unlearn.executors import Job
from lightning_unlearn.search_space import Choice, FloatRange, IntRange, parse_space
from lightning_unlearn.experiment import TuningOverlapError, check_not_tuned_on, read_best
from lightning_unlearn.tune.config import TuneConfigError, load_tune_config
from lightning_unlearn.tune.space import resolve_space
from lightning_unlearn.tune.study import make_sampler, open_study, run_study, storage_url

ROOT = Path(__file__).resolve().parents[1]


# -- the study: a known optimum, and resume after a kill --------------------------------------------------------------
def synthetic(x: float, n: int, c: str) -> dict[str, list[float]]:
    """Minimum 0 at x = 1e-2, n = 7, c = "b"."""
    return {"values": [(math.log10(x) + 2) ** 2 + 0.1 * (n - 7) ** 2 + (0.0 if c == "b" else 1.0)]}


SPACE = {"x": FloatRange(1e-4, 1.0, log=True), "n": IntRange(1, 10), "c": Choice(["a", "b", "c"])}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tpe_finds_the_optimum_of_a_synthetic_objective(seed: int) -> None:
    # 40 trials, seeds 0-9: TPE's best value 0.000-0.014, random search's 0.021-0.446 (median 0.2) -- measured
    study = open_study(f"syn-{seed}", None, ["minimize"], make_sampler("tpe", seed, None, 40))
    counts = run_study(study, SPACE, 40, lambda t: Job("k", synthetic, dict(t.params)))
    assert counts["run"] == 40 and len(study.trials) == 40
    assert study.best_value < 0.05
    best = study.best_params
    assert best["n"] == 7 and best["c"] == "b" and abs(math.log10(best["x"]) + 2) < 0.23


_KILL_SCRIPT = """
import json, os, signal, sys
from lightning_unlearn.executors import Job
from lightning_unlearn.search_space import FloatRange
from lightning_unlearn.tune.study import make_sampler, open_study, run_study

LOG, KILL_AT = sys.argv[2], int(sys.argv[3])

def objective(x, number):
    with open(LOG, "a") as f:
        f.write(json.dumps({"number": number, "x": x}) + "\\n")
    if number == KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)  # a hard kill in the middle of a trial
    return {"values": [(x - 0.3) ** 2]}

study = open_study("resume", sys.argv[1], ["minimize"], make_sampler("random", 0))
counts = run_study(study, {"x": FloatRange(0.0, 1.0)}, 6,
                   lambda t: Job("k", objective, {"x": t.params["x"], "number": t.number}))
print(json.dumps(counts))
"""


def test_resume_after_a_kill_reuses_finished_trials(tmp_path: Path) -> None:
    script, log = tmp_path / "study.py", tmp_path / "calls.jsonl"
    script.write_text(_KILL_SCRIPT)
    url = storage_url(tmp_path / "out")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.run([sys.executable, str(script), url, str(log), "3"], env=env, capture_output=True, text=True)
    assert first.returncode == -9, first.stderr[-2000:]
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c["number"] for c in calls] == [0, 1, 2, 3]
    second = subprocess.run([sys.executable, str(script), url, str(log), "-1"], env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-2000:]
    counts = json.loads(second.stdout.strip().splitlines()[-1])
    assert counts == {"run": 3, "reused": 3, "recovered": 1}
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == 7  # 4 before the kill, then only the killed one again and the 2 missing ones
    assert calls[4]["x"] == calls[3]["x"]  # the interrupted trial is redone first, with its parameters
    third = subprocess.run([sys.executable, str(script), url, str(log), "-1"], env=env, capture_output=True, text=True)
    assert json.loads(third.stdout.strip().splitlines()[-1]) == {"run": 0, "reused": 6, "recovered": 0}
    assert len(log.read_text().splitlines()) == 7


# -- configs on digits ---------------------------------------------------------------------------------------------
def _tune_yaml(tmp_path: Path, **extra: object) -> Path:
    cfg = {
        "benchmark": str(digits_bench_yaml(tmp_path)),
        "output_dir": str(tmp_path / "tune"),
        "scenarios": [{"name": "class-wise", "targets": [{"classes": [5]}]},
                      {"name": "random", "targets": [{"fraction": 0.1}]}],
        "seeds": [7],
        "n_trials": 2,
        "search_space": {"Finetune": {"max_epochs": {"low": 1, "high": 2}}},
        **extra,
    }
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"lr": {"low": 0.1, "high": 0.1, "log": True}}, "empty or inverted range"),
        ({"lr": {"low": 0.1, "high": 0.001, "log": True}}, "empty or inverted range"),
        ({"lr": {"low": 0.0, "high": 0.1, "log": True}}, "low > 0"),
        ({"lr": {"low": 1e-3, "high": 0.1, "logg": True}}, "unknown field"),
        ({"lr": {"low": 1e-3, "high": 0.1, "type": "normal"}}, "unknown type"),
        ({"lr": {"choices": []}}, "choices is empty"),
        ({"epsilon": {"low": 0.01, "high": 0.5}}, "'epsilon' is not an argument of Finetune"),
        ({"batch_size": {"low": 0.5, "high": 2.5}}, "is not accepted"),
        ({"max_epochs": {"low": 0.5, "high": 2.5}}, "max_epochs must be an integer range"),
    ],
)
def test_bad_search_space_is_one_clear_error_before_any_trial(tmp_path: Path, override: dict, message: str) -> None:
    path = _tune_yaml(tmp_path, search_space={"Finetune": override})
    with pytest.raises(TuneConfigError, match=message) as info:
        load_tune_config(path)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "tune").exists()  # nothing trained, no study created


def test_bad_names_and_overlapping_targets_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(TuneConfigError, match="search_space names \\['NoSuchMethod'\\]"):
        load_tune_config(_tune_yaml(tmp_path, search_space={"NoSuchMethod": {}}))
    # the benchmark evaluates 10% random on seed 0: tuning on the same split would peek at the evaluation
    path = _tune_yaml(tmp_path, seeds=[0])
    with pytest.raises(TuneConfigError, match="same forget set .* evaluation target random / 10% random / seed 0"):
        load_tune_config(path)
    from lightning_unlearn.tune import main

    with pytest.raises(SystemExit) as exit_info:
        main(["-c", str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lightning_unlearn tune: error: tuning target random")
    assert not (tmp_path / "tune").exists()


@pytest.mark.parametrize("name", ["configs/tune/quickstart.yaml", "configs/tune/fashion_mnist.yaml",
                                  "benchmarks/reproduction/qs_tmu_tune30.yaml",
                                  "benchmarks/reproduction/fm_be_head_tune.yaml"])
def test_shipped_tune_configs_load_against_their_benchmarks(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The quickstart's benchmark runs only its tuned rows (`tuned.mode: tuned`); its tune config named no method of it
    ("methods [...] are not methods of configs/benchmark/quickstart.yaml: []"): the rows as configured are tuned."""
    monkeypatch.chdir(ROOT)
    cfg = load_tune_config(name)
    bench = yaml.safe_load((ROOT / name).read_text())
    names = {m.name for m in cfg.methods}
    assert names and all(" (tuned)" not in n for n in names)
    if bench.get("methods"):
        assert names == set(bench["methods"])


def test_declared_search_spaces_fit_their_methods() -> None:
    from lightning_unlearn import benchmark as B

    cfg = B.load_config(str(ROOT / "configs/benchmark/quickstart.yaml"), **{"tuned.mode": "default"})  # configured rows
    for spec in cfg.methods:
        space = resolve_space(spec, None)
        assert space and "lr" in space or spec.class_path.endswith(
            ("FisherForgetting", "SelectiveSynapticDampening", "LabelFreeSSD", "RUM"))  # RUM: its bins' methods have the lr
    # YAML overrides: a new range replaces the declared one, null takes a key out
    fin = next(m for m in cfg.methods if m.name == "Finetune")
    space = resolve_space(fin, {"lr": {"low": 1e-3, "high": 1e-2, "log": True}, "max_epochs": None})
    assert space == {"lr": FloatRange(1e-3, 1e-2, log=True)}
    assert parse_space({"k": {"low": 1, "high": 4}})["k"] == IntRange(1, 4)
    with pytest.raises(ValueError, match="empty or inverted"):
        FloatRange(1.0, 0.5)


# -- an end-to-end study on digits ---------------------------------------------------------------------------------
def test_tuning_uses_no_evaluation_target_and_reuses_finished_trials(tmp_path: Path) -> None:
    from lightning_unlearn.tune import run_tuning

    cfg = load_tune_config(_tune_yaml(tmp_path))
    eval_forget = {e["hashes"]["forget"] for e in cfg.evaluation_hashes}
    assert len(eval_forget) == 2
    summaries = run_tuning(cfg, stream=open(os.devnull, "w"))  # noqa: SIM115
    s = summaries["Finetune"]
    assert s["counts"]["complete"] == 2 and s["default"] is not None  # trial 0: the benchmark's own settings
    out = tmp_path / "tune"
    trial_files = sorted((out / "trials" / "Finetune").glob("trial-*/trial.json"))
    assert len(trial_files) == 2
    for f in trial_files:
        groups = json.loads(f.read_text())["groups"]
        assert len(groups) == 2
        for g in groups:
            assert g["used_hashes"]["forget"] not in eval_forget  # the splits the run's DataModule really had
            assert g["used_hashes"] == g["hashes"]
    best = read_best(out / "best" / "Finetune.yaml")
    assert best["class_path"] == "lightning_unlearn.methods.Finetune" and best["max_epochs"] in (1, 2)
    tuned = {g["hashes"]["forget"] for g in best["record"]["tuning_groups"]}
    assert tuned.isdisjoint(eval_forget) and len(tuned) == 2
    check_not_tuned_on(best, cfg.evaluation_hashes)  # the benchmark's targets: fine
    with pytest.raises(TuningOverlapError, match="cannot be called tuned"):
        check_not_tuned_on(best, best["record"]["tuning_groups"])
    md = (out / "tune.md").read_text()
    assert "## Finetune" in md and "complete (configured)" in md
    # a rerun reuses both trials: nothing is run again
    mtimes = [f.stat().st_mtime_ns for f in trial_files]
    run_tuning(load_tune_config(_tune_yaml(tmp_path)), stream=open(os.devnull, "w"))  # noqa: SIM115
    assert [f.stat().st_mtime_ns for f in trial_files] == mtimes
    # best/Finetune.yaml is an `unlearn -c` config
    from lightning_unlearn.cli import main as cli_main

    data = tmp_path / "data.yaml"
    data.write_text(textwrap.dedent("""
        data:
          class_path: lightning_unlearn.data.DigitsDataModule
          init_args: {image_size: 4, forget: {classes: [5]}}
    """))
    with pytest.raises(SystemExit) as info:
        cli_main(["unlearn", "-c", str(data), "-c", str(out / "best" / "Finetune.yaml"), "--original_ckpt", "x.ckpt",
                  "--print_config"])
    assert info.value.code in (0, None)


# -- the benchmark with tuned settings -----------------------------------------------------------------------------
def _write_best(tmp_path: Path, bench_yaml: Path) -> Path:
    """A best/ directory as the tuner writes it, tuned on class 5 / seed 7 (no training needed)."""
    from lightning_unlearn import benchmark as B
    from lightning_unlearn.experiment import write_best
    from lightning_unlearn.tune.config import group_record

    cfg = B.load_config(str(bench_yaml), scenarios=[{"name": "class-wise", "targets": [{"classes": [5]}]}], seeds=[7])
    groups = [group_record(g) for g in B.make_plan(cfg).groups]
    best = tmp_path / "best"
    write_best(best / "Finetune.yaml", method="Finetune", class_path="lightning_unlearn.methods.Finetune",
               init_args={"lr": 0.02}, max_epochs=2, trainer={}, record={"method": "Finetune", "tuning_groups": groups})
    return best


def test_benchmark_shows_tuned_rows_only_on_targets_they_were_not_tuned_on(tmp_path: Path) -> None:
    from lightning_unlearn import benchmark as B

    bench_yaml = digits_bench_yaml(tmp_path)
    best = _write_best(tmp_path, bench_yaml)
    cfg = B.load_config(str(bench_yaml), **{"tuned.dir": str(best), "tuned.mode": "both"})
    assert [m.name for m in cfg.methods] == ["Finetune", "Finetune (tuned)"]
    tuned = cfg.methods[1]
    assert tuned.init_args == {"lr": 0.02} and tuned.max_epochs == 2 and cfg.methods[0].init_args == {"lr": 0.01}
    only = B.load_config(str(bench_yaml), **{"tuned.dir": str(best), "tuned.mode": "tuned"})
    assert [m.name for m in only.methods] == ["Finetune (tuned)"]
    # evaluating on the tuning target itself: refused before anything is trained
    peek = B.load_config(str(bench_yaml), scenarios=[{"name": "class-wise", "targets": [{"classes": [5]}]}],
                         seeds=[7], output_dir=str(tmp_path / "peek"), **{"tuned.dir": str(best)})
    with pytest.raises(B.BenchmarkConfigError, match="cannot be called tuned"):
        B.run_benchmark(peek, stream=open(os.devnull, "w"))  # noqa: SIM115
    assert not (tmp_path / "peek" / "models").exists()
    # a hand-written file without a tuning record is not shown as tuned
    (best / "Finetune.yaml").write_text("model:\n  class_path: lightning_unlearn.methods.Finetune\n")
    with pytest.raises(B.BenchmarkConfigError, match="no tuning record"):
        B.load_config(str(bench_yaml), **{"tuned.dir": str(best)})
    from lightning_unlearn.experiment import write_best

    with pytest.raises(FileExistsError, match="not written by the tuner"):  # the tuner never overwrites a user's file
        write_best(best / "Finetune.yaml", method="Finetune", class_path="lightning_unlearn.methods.Finetune",
                   init_args={}, max_epochs=1, trainer={}, record={"tuning_groups": []})
    assert "tuning-record" not in (best / "Finetune.yaml").read_text()


# -- cache keys, refusals up front and one-line errors -------------------------------------------------------------
def _keys(tmp_path: Path, **trainer: object) -> tuple[str, list[str]]:
    """The study name and the reference keys of a tune config whose benchmark has ``trainer`` changed."""
    from lightning_unlearn.tune.config import group_record
    from lightning_unlearn.tune.objective import reference_key
    from lightning_unlearn.tune.run import study_name

    path = _tune_yaml(tmp_path)
    bench = tmp_path / "bench.yaml"
    data = yaml.safe_load(bench.read_text())
    data["trainer"].update(trainer)
    bench.write_text(yaml.safe_dump(data))
    cfg = load_tune_config(path)
    ctx = [{"group": g, "record": group_record(g)} for g in cfg.plan.groups]
    refs = [reference_key(cfg.bench, g, w) for g in cfg.plan.groups for w in ("Original", "Retrain")]
    return study_name(cfg, cfg.methods[0], ctx), refs


def test_study_and_reference_keys_cover_the_trainer_settings(tmp_path: Path) -> None:
    base = _keys(tmp_path)
    assert _keys(tmp_path) == base  # unchanged config: every finished trial and reference row reused
    assert len(set(base[1])) == len(base[1])
    for change in ({"precision": "bf16-mixed"}, {"deterministic": True}, {"accelerator": "auto"}):
        name, refs = _keys(tmp_path, **change)
        assert name != base[0], change
        assert set(refs).isdisjoint(base[1]), change
    assert _keys(tmp_path, num_threads=2) == base  # threads do not change a result: the benchmark leaves them out too


def test_a_best_file_the_tuner_did_not_write_is_refused_before_any_trial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lightning_unlearn.tune import main

    path = _tune_yaml(tmp_path)
    mine = tmp_path / "tune" / "best" / "Finetune.yaml"
    mine.parent.mkdir(parents=True)
    mine.write_text("model:\n  class_path: lightning_unlearn.methods.Finetune  # my own settings\n")
    before = mine.read_bytes()
    with pytest.raises(SystemExit) as info:
        main(["-c", str(path)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lightning_unlearn tune: error: ") and "Finetune.yaml exists" in err[0]
    assert "move it or choose another output_dir" in err[0]
    assert mine.read_bytes() == before  # nothing overwritten
    assert sorted(p.name for p in (tmp_path / "tune").iterdir()) == ["best"]  # no study, model, trial or config.yaml
    assert not (tmp_path / "bench").exists()


def test_a_model_that_fails_to_train_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning_unlearn.benchmark import jobs as bm
    from lightning_unlearn.tune import main

    def broken(cfg: object, job: object) -> float:
        raise RuntimeError("CUDA error: out of memory\n(a second line of the cause)")

    monkeypatch.setattr(bm, "train_model", broken)
    with pytest.raises(SystemExit) as info:
        main(["-c", str(_tune_yaml(tmp_path))])
    assert info.value.code not in (0, None)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lightning_unlearn tune")]
    assert len(err) == 1, err
    assert err[0].startswith("lightning_unlearn tune: error: training model ") and "out of memory" in err[0]
    assert "run the same command again" in err[0]
    assert not (tmp_path / "tune" / "best").exists()
