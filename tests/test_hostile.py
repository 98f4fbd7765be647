"""Issue 26: what a hostile or careless user hands ``benchmark``, ``tune`` and ``audit``. The quick cases of the matrix
(``tests/hostile_matrix.py``, which replays all of them) each a test, every one failing on c7d07c8; and the mechanisms
under them: an output directory's record, corrupt records set aside, the Ray watchdog, a light ``tune`` import."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hostile as h
from hostile_matrix import CASES, Ctx, run_case
from lightning_unlearn.experiment import ConfigError, claim_output_dir, fresh_dir, read_json, write_output

QUICK = [c for c in CASES if c.quick]


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Ctx:
    return Ctx(tmp_path_factory.mktemp("hostile"))


@pytest.mark.parametrize("case", QUICK, ids=[c.id for c in QUICK])
def test_matrix_case(ctx: Ctx, case) -> None:  # noqa: ANN001
    outcome, detail = run_case(ctx, case)
    assert outcome in ("ok", "clear"), detail


# -- the mechanisms ----------------------------------------------------------------------------------------------
def test_a_file_replaced_during_a_run_is_not_written_over(tmp_path: Path) -> None:
    with claim_output_dir(tmp_path / "out", "benchmark", ["report.md"]) as out:
        write_output(out, "report.md", "ours\n")
        write_output(out, "report.md", "ours again\n")  # its own file: replaced
        (out / "report.md").write_text("the user's edit\n")
        with pytest.raises(FileExistsError, match="report.md was not written by lightning_unlearn"):
            write_output(out, "report.md", "ours, a third time\n")
    assert (tmp_path / "out" / "report.md").read_text() == "the user's edit\n"
    with pytest.raises(ConfigError, match="holds report.md, which lightning_unlearn benchmark did not write"):
        with claim_output_dir(tmp_path / "out", "benchmark", ["report.md"]):
            pass


def test_a_refused_directory_is_left_as_it_was(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("mine\n")
    with pytest.raises(ConfigError):
        with claim_output_dir(out, "benchmark", ["report.md"]):
            pass
    assert sorted(p.name for p in out.iterdir()) == ["report.md"]  # no lock, no record


def test_corrupt_records_are_set_aside_and_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    h.corrupt(run / "result.json", "pickle")
    os.mkfifo(run / "info.json")  # a reader would block on it forever
    assert read_json(run / "result.json") is None and read_json(run / "info.json") is None
    assert read_json(run / "missing.json") is None
    assert sorted(p.name for p in run.iterdir()) == ["info.json.corrupt-1", "result.json.corrupt-1"]
    err = capsys.readouterr().err
    assert "result.json is corrupt" in err and "moved to result.json.corrupt-1" in err
    (run / "partial.ckpt").write_bytes(b"x")
    fresh_dir(run)  # what an attempt left is removed, what was set aside stays for the user
    assert sorted(p.name for p in run.iterdir()) == ["info.json.corrupt-1", "result.json.corrupt-1"]


_DRIVER = """
import os, subprocess, sys, time
from lightning_unlearn.executors import watchdog
before = watchdog.children(os.getpid())
dog = watchdog.start()
# a stand-in for a local Ray: a "raylet" with a child (an "agent") that would outlive the driver
raylet = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; p = subprocess.Popen([sys.executable,"
                           " '-c', 'import time; time.sleep(600)']); print(p.pid, flush=True); time.sleep(600)"],
                          stdout=subprocess.PIPE, text=True)
agent = int(raylet.stdout.readline())
dog.guard(watchdog.children(os.getpid()) - before - {dog.proc.pid})
other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # not Ray's: left alone
print(raylet.pid, agent, other.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="the watchdog reads /proc (Linux)")
def test_the_watchdog_stops_what_it_guards_when_the_driver_is_killed() -> None:
    driver = subprocess.Popen([sys.executable, "-c", _DRIVER], stdout=subprocess.PIPE, text=True,
                              env=h.env_with_package())
    assert driver.stdout is not None
    raylet, agent, other = map(int, driver.stdout.readline().split())
    try:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        deadline = time.monotonic() + 20
        while (_alive(raylet) or _alive(agent)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(raylet) and not _alive(agent)
        assert _alive(other)  # a process the driver started besides Ray is not the watchdog's
    finally:
        for pid in (raylet, agent, other):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def test_importing_tune_does_not_import_torch() -> None:
    code = "import sys, lightning_unlearn.tune; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, env=h.env_with_package())
