"""Scale-out: the benchmark's jobs through an executor. The two-method miniature on the local executor and on a local
Ray with two CPU workers writes the same result files (same files, rows and metric values); the Ray executor records
a job that raises or whose worker dies, after its retries. Needs Ray (the ``ray`` extra, which ``test`` pulls)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
import yaml

from lightning_unlearn.benchmark import load_config, run_benchmark
from lightning_unlearn.executors import Job, make_executor

ray = pytest.importorskip("ray")

#: Columns that measure time or say when/where a row was made: they differ between any two runs.
VOLATILE = ("time/", "unlearn_time_s", "wall_s", "finished_at", "attempts")


def mini(out: Path, **changes) -> Path:
    cfg = {
        "output_dir": str(out),
        "data": {"class_path": "lightning_unlearn.data.DigitsDataModule", "init_args": {"image_size": 8,
                                                                                       "batch_size": 256}},
        "backbone": {"class_path": "lightning_unlearn.backbones.AllCNN", "init_args": {"width": 0.125}},
        "training": {"max_epochs": 1, "lr": 0.05},
        "scenarios": [{"name": "class-wise", "targets": [{"classes": [3]}]}],
        "seeds": [0],
        "methods": [
            {"name": "Finetune", "class_path": "lightning_unlearn.methods.Finetune", "init_args": {"lr": 0.01},
             "max_epochs": 1},
            {"name": "Amnesiac", "class_path": "lightning_unlearn.methods.Amnesiac", "max_epochs": 1},
        ],
        "trainer": {"accelerator": "cpu", "num_threads": 1},
        "evaluator": {"mia": True, "zrf": False},
        **changes,
    }
    path = out.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock")}


def stable(row: dict) -> dict:
    return {k: v for k, v in row.items() if not any(k.startswith(p) for p in VOLATILE)}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_benchmark_matches_local(tmp_path, local_ray):
    local = run_benchmark(load_config(mini(tmp_path / "local")))
    remote = run_benchmark(load_config(mini(tmp_path / "ray", executor={"name": "ray", "resources": {"num_cpus": 1}})))
    assert not local["failed"] and not remote["failed"] and len(local["rows"]) == 4
    assert files(tmp_path / "local") == files(tmp_path / "ray")
    key = lambda r: (r["scenario"], r["target"], r["seed"], r["method"])  # noqa: E731
    a = {key(r): stable(r) for r in json.loads((tmp_path / "local" / "results.json").read_text())["rows"]}
    b = {key(r): stable(r) for r in json.loads((tmp_path / "ray" / "results.json").read_text())["rows"]}
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].keys() == b[k].keys(), k
        for col, v in a[k].items():
            if isinstance(v, float):
                assert b[k][col] == pytest.approx(v, rel=1e-5, abs=1e-6), (k, col)
            else:
                assert b[k][col] == v, (k, col)
    # the Ray run's files are the local executor's: a rerun with the local executor redoes nothing
    again = run_benchmark(load_config(mini(tmp_path / "ray")))
    assert len(again["rows"]) == 4 and all(r["finished_at"] == s["finished_at"] for r, s in
                                           zip(sorted(again["rows"], key=key), sorted(remote["rows"], key=key)))


def _flaky(marker: str) -> str:
    """Fails the first time it is called for ``marker`` (a file records the attempt), succeeds the second."""
    path = Path(marker)
    if not path.exists():
        path.write_text("1")
        raise RuntimeError("first attempt fails")
    return "ok"


def _dies(marker: str) -> str:
    """The worker process dies on the first attempt (as if killed), succeeds on the second."""
    path = Path(marker)
    if not path.exists():
        path.write_text("1")
        os._exit(1)
    return "ok"


def _always_fails() -> None:
    raise ValueError("bad input")


def _write_late(path: str) -> None:
    time.sleep(1.0)
    Path(path).write_text("done")


def _exists(path: str) -> bool:
    return Path(path).exists()


def test_ray_executor_retries_and_records(tmp_path, local_ray):
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    try:
        done = []
        with make_executor({"name": "ray", "max_retries": 1}) as ex:
            res = ex.map([Job("flaky", _flaky, {"marker": str(tmp_path / "f")}),
                          Job("dies", _dies, {"marker": str(tmp_path / "d")}),
                          Job("bad", _always_fails),
                          Job("late", _write_late, {"path": str(tmp_path / "late")}),
                          Job("after_late", _exists, {"path": str(tmp_path / "late")}, after=("late",)),
                          Job("after_bad", _exists, {"path": "."}, after=("bad",))],
                         on_done=lambda r: done.append(r.key))
        assert sorted(done) == ["after_bad", "after_late", "bad", "dies", "flaky", "late"]
        assert [r.key for r in res] == ["flaky", "dies", "bad", "late", "after_late", "after_bad"]
        assert res[4].ok and res[4].value is True  # started only once "late" had ended
        assert not res[5].ok and res[5].error == "not run: bad failed (ValueError: bad input)"
        assert res[0].ok and res[0].value == "ok" and res[0].attempts == 2
        assert res[1].ok and res[1].value == "ok"  # retried by Ray after the worker died
        assert not res[2].ok and res[2].error == "ValueError: bad input" and res[2].attempts == 2
        assert ray.is_initialized()  # the caller's Ray is left running
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_executor_and_logger_settings(tmp_path, monkeypatch):
    """``executor``/``resources`` and ``logger`` keys: defaults, threads per job, and readable errors before training."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from lightning_unlearn.benchmark import BenchmarkConfigError
    from lightning_unlearn.benchmark.plan import run_logger
    from lightning_unlearn.benchmark.scaleout import executor_settings

    cfg = load_config(mini(tmp_path / "a"))
    spec, res, threads = executor_settings(cfg)
    assert spec == {"name": "local"} and (res.num_cpus, res.num_gpus) == (1.0, 0.0) and threads == 1
    # accelerator auto on a machine with a GPU: a Ray job asks for one (Ray hides the GPUs from a job that does not)
    import lightning_unlearn.experiment.settings as so

    auto = load_config(mini(tmp_path / "auto", trainer={"accelerator": "auto"}, executor={"name": "ray"}))
    monkeypatch.setattr(so, "cuda_available", lambda: True)
    assert executor_settings(auto)[1].num_gpus == 1.0
    monkeypatch.setattr(so, "cuda_available", lambda: False)
    assert executor_settings(auto)[1].num_gpus == 0.0
    cfg = load_config(mini(tmp_path / "b", executor={"name": "ray", "address": "auto", "resources": {"num_cpus": 3}},
                           trainer={"accelerator": "gpu"}))
    spec, res, threads = executor_settings(cfg)
    assert spec == {"name": "ray", "address": "auto"} and (res.num_cpus, res.num_gpus) == (3.0, 1.0) and threads == 3
    for bad, match in (({"name": "dask"}, "unknown executor 'dask'"), ({"name": "ray", "resources": {"gpus": 1}},
                       "unknown key.*gpus"), ({"name": "ray", "resources": {"num_cpus": 0}}, "num_cpus must be > 0")):
        with pytest.raises(BenchmarkConfigError, match=match):
            load_config(mini(tmp_path / "c", executor=bad))
    run_dir = tmp_path / "a" / "runs" / "x"
    assert isinstance(run_logger(cfg, run_dir), CSVLogger) and Path(run_logger(cfg, run_dir).log_dir) == run_dir / "logs"
    import importlib.util

    if any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")):
        tb = run_logger(load_config(mini(tmp_path / "d", logger="tensorboard")), run_dir)
        assert isinstance(tb, TensorBoardLogger) and Path(tb.log_dir) == run_dir / "logs"
    else:  # not a dependency: without it the config is refused before anything runs, saying what to install
        with pytest.raises(BenchmarkConfigError, match="pip install tensorboard"):
            load_config(mini(tmp_path / "d", logger="tensorboard"))
    assert run_logger(load_config(mini(tmp_path / "e", logger="none")), run_dir) is False


def test_group_rows_one_job_per_group(tmp_path):
    """``executor.group_rows``: a group's rows as one job (the default of every executor but local). A row that fails
    is recorded (error.json) and the group's other rows still run; the job, rerun after its worker died, reads back
    the rows already finished instead of redoing them."""
    from lightning_unlearn.benchmark import BenchmarkConfigError
    from lightning_unlearn.benchmark.scaleout import executor_settings, group_rows
    from lightning_unlearn.benchmark.jobs import group_rows_job
    from lightning_unlearn.benchmark.plan import make_plan

    assert not group_rows(load_config(mini(tmp_path / "a")))
    assert group_rows(load_config(mini(tmp_path / "b", executor={"name": "ray"})))
    assert group_rows(load_config(mini(tmp_path / "b2", executor={"name": "ray", "group_rows": 5}))) == 5
    for bad in ("sometimes", 0, 2.5):
        with pytest.raises(BenchmarkConfigError, match="group_rows must be true, false or a number of rows per job"):
            load_config(mini(tmp_path / "c", executor={"name": "ray", "group_rows": bad}))
    methods = [{"name": "Finetune", "class_path": "lightning_unlearn.methods.Finetune", "init_args": {"lr": 0.01},
                "max_epochs": 1},
               {"name": "Broken", "class_path": "lightning_unlearn.methods.Finetune", "init_args": {"lr": -1.0},
                "max_epochs": 1}]
    cfg = load_config(mini(tmp_path / "g", methods=methods, executor={"name": "local", "group_rows": True}))
    assert executor_settings(cfg)[0] == {"name": "local"}  # not an option of the executor
    result = run_benchmark(cfg)
    assert sorted(r["method"] for r in result["rows"]) == ["Finetune", "Original", "Retrain"]
    assert [f["method"] for f in result["failed"]] == ["Broken"] and "learning rate" in result["failed"][0]["error"]
    assert (tmp_path / "g" / result["failed"][0]["run_dir"] / "error.json").is_file()
    plan = make_plan(cfg)
    group = plan.groups[0]
    again = group_rows_job(cfg, group, ["Original", "Finetune"], plan.models[group.original_key],
                           plan.models[group.gold_key])
    first = {r["method"]: r for r in result["rows"]}
    # the group job failed as a whole (its worker died): a row it had finished is kept, the others are failures
    from lightning_unlearn.benchmark.batch import row_after_failed_group
    from lightning_unlearn.executors import JobResult

    died = JobResult("g", False, error="WorkerCrashedError: killed", attempts=1)
    kept = row_after_failed_group(cfg, group, "Finetune", died)
    lost = row_after_failed_group(cfg, group, "Broken", died)
    assert kept.ok and kept.value["finished_at"] == first["Finetune"]["finished_at"]
    assert not lost.ok and lost.error == died.error
    assert [r.value["finished_at"] for r in again] == [first["Original"]["finished_at"], first["Finetune"]["finished_at"]]


def test_group_rows_cut_into_parts(tmp_path):
    """``executor.group_rows: n``: a group's rows as jobs of at most ``n`` rows, of near-equal sizes, in the rows'
    order, each after its group's two trainings, so that the last jobs, run while other workers idle, are short; the
    jobs' results reach every row (the processes test runs such a benchmark against the local executor's rows)."""
    from lightning_unlearn.benchmark.batch import chunks, row_jobs
    from lightning_unlearn.benchmark.plan import make_plan
    from lightning_unlearn.executors import LocalExecutor, Resources
    from lightning_unlearn.experiment import Progress

    assert [len(c) for c in chunks(list(range(33)), 17)] == [16, 17] and chunks([1, 2, 3], 5) == [[1, 2, 3]]
    assert chunks(list(range(9)), 4) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]] and chunks([1, 2], 1) == [[1], [2]]
    methods = [{"name": n, "class_path": "lightning_unlearn.methods.Finetune", "init_args": {"lr": 0.01},
                "max_epochs": 1} for n in ("A", "B", "C")]
    cfg = load_config(mini(tmp_path / "p", methods=methods, executor={"name": "ray", "group_rows": 2}))
    plan = make_plan(cfg)
    training = {plan.models[k].dir.name for g in plan.groups for k in (g.original_key, g.gold_key)}

    def jobs(grouped: bool | int) -> list:
        return row_jobs(cfg, plan, LocalExecutor(), Progress([]), Resources(), 1, grouped, training, [], [])[0]

    groups = len(plan.groups)
    parts = jobs(3)  # each group: Original, Retrain, A, B, C -> 2 + 3 rows (at 2: 1 + 2 + 2)
    assert len(parts) == 2 * groups and [len(j.kwargs["names"]) for j in parts[:2]] == [2, 3]
    assert parts[0].key.endswith("#1") and parts[1].key.endswith("#2") and "part 2 of 2" in parts[1].description
    assert [n for j in parts[:2] for n in j.kwargs["names"]] == ["Original", "Retrain", "A", "B", "C"]
    g = plan.groups[0]
    assert set(parts[0].after) == set(parts[1].after) == {plan.models[g.original_key].dir.name,
                                                          plan.models[g.gold_key].dir.name}
    whole, single = jobs(True), jobs(False)
    assert len(whole) == groups and "#" not in whole[0].key and len(whole[0].kwargs["names"]) == 5
    assert len(single) == 5 * groups and all("name" in j.kwargs for j in single)
    assert [j.key for j in jobs(1)] == [j.key for j in single] and len(jobs(5)) == groups
    assert [len(j.kwargs["names"]) for j in jobs(2)] == [1, 2, 2] * groups


def test_scale_out_schedule_replays_a_log(tmp_path):
    """benchmarks/scale_out_schedule.py: a benchmark's progress lines replayed on W workers. Two seeds, each one
    original and one gold model (10 s), then a group of rows (seed 0: 30, 30, 60, 30 s; seed 1: 4 x 15 s and a failed
    row): whole groups on 2 workers end at 20 + 150 = 170 s (seed 0's group runs alone after seed 1's); in two parts
    each (60 and 90 s; 30 and 30.1 s) at 20 + 90 + 30.1 = 140.1 s; FIFO among ready jobs, trainings first."""
    import runpy

    script = runpy.run_path(str(Path(__file__).resolve().parents[1] / "benchmarks" / "scale_out_schedule.py"))
    lines = [f"benchmark [{i}/12] {role} model (class-wise / class 3 / seed {s}): 10.0s | elapsed 1s"
             for i, (role, s) in enumerate([("original", 0), ("gold", 0), ("original", 1), ("gold", 1)], 1)]
    for s, times in ((0, ["30.0s", "30.0s", "1m00s", "30.0s"]), (1, ["15.0s", "15.0s", "15.0s", "15.0s"])):
        lines += [f"benchmark [9/12] class-wise / class 3 / seed {s} / M{j}: {t} (acc D_f 1.0, test 2.0) | elapsed 9s"
                  for j, t in enumerate(times)]
    lines.append("benchmark [12/12] class-wise / class 3 / seed 1 / Broken: 0.1s FAILED (ValueError: x) | elapsed 9s")
    trains, rows = script["parse"]("\n".join(lines))
    assert [t[2] for t in trains] == [10.0] * 4 and sum(s for _, s in rows["class-wise / class 3 / seed 0"]) == 150.0
    assert len(rows["class-wise / class 3 / seed 1"]) == 5 and script["seconds"]("1h2m3.5s") == 3723.5
    assert script["makespan"](trains, rows, 2, 1) == 20.0 + 150.0
    assert script["makespan"](trains, rows, 2, 2) == pytest.approx(20.0 + 90.0 + 30.1)
    assert script["makespan"](trains, rows, 1, 1) == pytest.approx(40.0 + 150.0 + 60.1)


def test_corun_speed_reads_the_benchmarks_clock():
    """benchmarks/corun_speed.py takes each copy's time from the benchmark's last line and says which copy failed."""
    import runpy

    script = runpy.run_path(str(Path(__file__).resolve().parents[1] / "benchmarks" / "corun_speed.py"))
    assert script["clock"]("benchmark x\nbenchmark done in 1m12.5s: 5 runs. Report: r.md\n") == 72.5
    assert script["clock"]("benchmark done in 9.0s: 3 runs.") == 9.0
    with pytest.raises(RuntimeError, match="a copy failed: Traceback"):
        script["clock"]("Traceback")
    cmd = script["command"](Path("/o"), True, ["--x", "1"])
    assert "fashion_mnist.yaml" in cmd[cmd.index("-c") + 1] and cmd[-2:] == ["--x", "1"] and "local" in cmd
    with pytest.raises(SystemExit, match="--order takes 1"):
        script["main"](["--order", "1,3"])


def test_parse_hms_reads_what_hms_writes():
    """The progress lines' durations read back (the scale-out scripts replay them): hms's rounding, nothing else."""
    from lightning_unlearn.experiment.progress import hms, parse_hms

    for seconds, back in ((0.44, 0.4), (9.0, 9.0), (59.9, 59.9), (82.4, 82.0), (3723.0, 3720.0)):
        assert parse_hms(hms(seconds)) == back, hms(seconds)
    for bad in ("", "12", "1m22", "ten s", "1m 2s"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_hms(bad)
