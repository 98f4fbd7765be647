"""The ``processes`` executor (a ``spawn`` process pool): dependencies, failures, retries, threads, a worker killed
with SIGKILL, Ctrl-C without orphans, and a small benchmark whose rows equal the local executor's to the bit.

The job functions are at module level and this module imports nothing heavy at the top, so that a worker (which
imports it to find them) starts fast."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lightning_unlearn.executors import Job, Resources, make_executor
from lightning_unlearn.executors.processes import ProcessExecutor, usable_cores


def _pid_after(seconds: float, path: str = "") -> int:
    time.sleep(seconds)
    if path:
        Path(path).write_text("done")
    return os.getpid()


def _exists(path: str) -> bool:
    return Path(path).exists()


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _flaky(marker: str) -> str:
    """Raises the first time it is called for ``marker`` (a file records the call), succeeds the second."""
    path = Path(marker)
    if not path.exists():
        path.write_text("1")
        raise RuntimeError("first attempt fails")
    return "ok"


def _always_fails() -> None:
    raise ValueError("bad input")


def _killed(marker: str = "") -> str:
    """Its worker is killed with SIGKILL (as the system does when memory runs out); with a ``marker``, only the first
    time."""
    if marker and Path(marker).exists():
        return "ok"
    if marker:
        Path(marker).write_text("1")
    os.kill(os.getpid(), signal.SIGKILL)
    return "not reached"


def _gone(pid: int) -> bool:
    """The process no longer exists (or is a zombie nobody will run again)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def _ends(pid: int, within_s: float = 20.0) -> bool:
    """The process is gone within ``within_s`` (a stopped pool's workers are terminated, not waited for)."""
    deadline = time.monotonic() + within_s
    while not _gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture(scope="module")
def ex():
    """Two workers, one retry; started once for the module (a worker pays its imports once)."""
    with ProcessExecutor(workers=2, max_retries=1) as executor:
        yield executor


def test_made_by_name():
    assert isinstance(make_executor({"name": "processes", "workers": 2}), ProcessExecutor)
    assert make_executor("processes").workers == usable_cores() == len(os.sched_getaffinity(0))
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="workers must be an integer >= 1"):
            make_executor({"name": "processes", "workers": bad})
    with pytest.raises(ValueError, match="bad options for the processes executor"):
        make_executor({"name": "processes", "address": "auto"})
    with pytest.raises(ValueError, match="asks for 2 GPU"):
        ProcessExecutor(workers=1).map([Job("g", _exists, {"path": "."}, Resources(num_cpus=1, num_gpus=2))])


def test_order_failures_retries_threads(ex, tmp_path):
    """``after`` waits for the jobs it needs and skips a job whose dependency failed; an exception is retried in the
    worker and then recorded; ``on_done`` runs in this process; a worker sets its job's threads."""
    done = []
    late = str(tmp_path / "late")
    jobs = [Job("late", _pid_after, {"seconds": 1.0, "path": late}),
            Job("after_late", _exists, {"path": late}, after=("late",)),
            Job("bad", _always_fails),
            Job("after_bad", _exists, {"path": "."}, after=("bad",)),
            Job("after_after_bad", _exists, {"path": "."}, after=("after_bad",)),
            Job("flaky", _flaky, {"marker": str(tmp_path / "f")}),
            Job("two_threads", _threads, resources=Resources(num_cpus=2)),
            Job("one_thread", _threads),
            Job("unpicklable", _exists, {"path": lambda: "."})]
    res = ex.map(jobs, on_done=lambda r: done.append((r.key, os.getpid())))
    assert [r.key for r in res] == [j.key for j in jobs]
    assert sorted(k for k, _ in done) == sorted(j.key for j in jobs) and {p for _, p in done} == {os.getpid()}
    by = {r.key: r for r in res}
    assert by["late"].ok and by["late"].value != os.getpid()  # ran in a worker
    assert by["after_late"].ok and by["after_late"].value is True  # started only once "late" had ended
    assert [k for k, _ in done].index("after_late") > [k for k, _ in done].index("late")
    assert not by["bad"].ok and by["bad"].error == "ValueError: bad input" and by["bad"].attempts == 2
    assert "Traceback" in by["bad"].traceback and "_always_fails" in by["bad"].traceback
    assert not by["after_bad"].ok and by["after_bad"].error == "not run: bad failed (ValueError: bad input)"
    assert by["after_bad"].attempts == 0 and by["after_after_bad"].error.startswith("not run: after_bad failed")
    assert by["flaky"].ok and by["flaky"].value == "ok" and by["flaky"].attempts == 2
    assert by["two_threads"].value == 2 and by["one_thread"].value == 1
    assert not by["unpicklable"].ok and by["unpicklable"].error.startswith("the job cannot be sent to a worker")


def test_worker_killed(ex, tmp_path):
    """A worker killed with SIGKILL: its job is retried (``max_retries``) and then failed with a line saying so; the
    job running beside it in the other worker and the rest of the batch go on in a rebuilt pool; the killed pool's
    workers are gone. An idle worker killed between two batches: the next batch runs in a new pool."""
    idle = ex.map([Job("warm", _pid_after, {"seconds": 0.0})])[0].value
    os.kill(idle, signal.SIGKILL)
    assert _ends(idle)
    first = ex.map([Job("after_idle_death", _pid_after, {"seconds": 0.0})])[0]
    assert first.ok and first.value != idle
    first = first.value
    res = ex.map([Job("beside", _pid_after, {"seconds": 2.0}),
                  Job("killed_once", _killed, {"marker": str(tmp_path / "k")}),
                  Job("after", _pid_after, {"seconds": 0.0}, after=("killed_once",))])
    assert [r.ok for r in res] == [True, True, True] and res[1].value == "ok" and res[1].attempts == 2
    assert _ends(first)
    with ProcessExecutor(workers=2) as once:  # no retry: the job whose worker died is failed
        res = once.map([Job("beside", _pid_after, {"seconds": 2.0}), Job("killed", _killed),
                        Job("after_killed", _exists, {"path": "."}, after=("killed",)),
                        Job("next", _pid_after, {"seconds": 0.0})])
    assert res[0].ok and res[3].ok
    assert not res[1].ok and res[1].attempts == 1
    assert res[1].error == ("WorkerDied: the worker process running it died: it was killed by SIGKILL (e.g. by the "
                            "system for lack of memory)")
    assert res[2].error.startswith("not run: killed failed (WorkerDied")


def test_on_done_error_stops_the_workers(tmp_path):
    """An exception in ``on_done`` (the benchmark's reaction to a failed training) kills the workers and is raised."""
    with ProcessExecutor(workers=2) as executor:

        def stop(res):
            raise RuntimeError(f"stop after {res.key}")

        pids = []
        with pytest.raises(RuntimeError, match="stop after quick"):
            executor.map([Job("quick", _pid_after, {"seconds": 0.0}), Job("slow", _pid_after, {"seconds": 60.0})],
                         on_done=lambda r: (pids.append(r.value), stop(r)))
        assert _ends(pids[0])


CTRL_C = """
import faulthandler, os, signal, sys, time
faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks for the stacks if this hangs
# a terminal's command: Ctrl-C raises KeyboardInterrupt (a shell's background job, CI's included, starts its commands
# with SIGINT ignored, and Python then keeps ignoring it)
signal.signal(signal.SIGINT, signal.default_int_handler)
from pathlib import Path
from lightning_unlearn.executors import Job, make_executor

def job(path):
    Path(path).write_text(str(os.getpid()))
    time.sleep(120)

if __name__ == "__main__":
    with make_executor({"name": "processes", "workers": 2}) as ex:
        ex.map([Job(f"j{i}", job, {"path": sys.argv[1] + f"/{i}.pid"}) for i in range(3)])
"""


def test_ctrl_c_leaves_no_worker(tmp_path):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) while two jobs run: the command stops with
    KeyboardInterrupt, the workers print nothing and none is left running."""
    script = tmp_path / "ctrl_c.py"
    script.write_text(textwrap.dedent(CTRL_C))
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("*.pid"))) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        pids = [int(p.read_text()) for p in tmp_path.glob("*.pid")]
        assert len(pids) == 2, "the two workers did not start their jobs"
        os.killpg(proc.pid, signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=150)
        except subprocess.TimeoutExpired:  # say where it hangs, not only that it does
            os.kill(proc.pid, signal.SIGUSR1)
            time.sleep(2)
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("the command did not end after Ctrl-C; its threads:\n" + proc.communicate()[0])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0 and out.rstrip().endswith("KeyboardInterrupt"), out
    assert out.count("Traceback") == 1, out  # the parent's; the workers ignore Ctrl-C
    assert all(_ends(p) for p in pids)
    ps = subprocess.run(["ps", "-o", "pid=", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert not [p for p in ps if not _ends(int(p))], ps


def test_benchmark_rows_equal_local(ex, tmp_path):
    """A small benchmark (digits 4x4, one seed, two scenarios, three methods, one epoch) on two workers writes the
    rows of the local executor: every value but the times, to the bit."""
    import yaml

    from lightning_unlearn.benchmark import load_config, run_benchmark

    def config(out: Path, executor: dict) -> Path:
        cfg = {
            "output_dir": str(out),
            "data": {"class_path": "lightning_unlearn.data.DigitsDataModule",
                     "init_args": {"image_size": 4, "batch_size": 64, "holdout_fraction": 0.5, "augment": False}},
            "backbone": {"class_path": "lightning_unlearn.backbones.AllCNN", "init_args": {"width": 0.25}},
            "training": {"max_epochs": 1, "lr": 0.05},
            "scenarios": [{"name": "class-wise", "targets": [{"classes": [3]}]},
                          {"name": "random", "targets": [{"fraction": 0.1}]}],
            "seeds": [0],
            "methods": [
                {"name": "Finetune", "class_path": "lightning_unlearn.methods.Finetune", "init_args": {"lr": 0.01},
                 "max_epochs": 1},
                {"name": "SSD", "class_path": "lightning_unlearn.methods.SelectiveSynapticDampening",
                 "init_args": {"alpha": 30.0}, "max_epochs": 1},
                {"name": "RandomLabels", "class_path": "lightning_unlearn.methods.RandomLabels",
                 "init_args": {"lr": 0.01}, "max_epochs": 1},
            ],
            "trainer": {"accelerator": "cpu", "num_threads": 1},
            "evaluator": {"mia": True, "zrf": True},
            "executor": executor,
        }
        path = out.with_suffix(".yaml")
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    local = run_benchmark(load_config(config(tmp_path / "local", {"name": "local"})))
    # the module's pool (its workers already started) runs the jobs the config describes: each group of 5 rows cut
    # into jobs of at most 2 rows (1 + 2 + 2), a group's parts side by side in the two workers
    pooled = run_benchmark(load_config(config(tmp_path / "proc", {"name": "processes", "workers": 2, "group_rows": 2})),
                           executor=ex)
    assert not local["failed"] and not pooled["failed"] and len(local["rows"]) == len(pooled["rows"]) == 10
    times = ("time", "wall_s", "speedup", "finished_at", "run_dir", "attempts")

    def rows(out: Path) -> dict:
        data = json.loads((out / "results.json").read_text())["rows"]
        return {(r["scenario"], r["target"], r["seed"], r["method"]):
                {k: v for k, v in r.items() if not any(t in k for t in times)} for r in data}

    a, b = rows(tmp_path / "local"), rows(tmp_path / "proc")
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == b[key], key  # floats included: each job seeds itself, one thread in both
    assert any(isinstance(v, float) and v == v for v in next(iter(a.values())).values())
