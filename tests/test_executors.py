"""The executor interface: the local executor is a plain loop that records failures and retries as asked."""

from __future__ import annotations

import pytest

from lightning_unlearn.executors import Job, LocalExecutor, make_executor

CALLS: list[int] = []


def _square(x: int) -> int:
    CALLS.append(x)
    return x * x


def _flaky(path: str) -> str:
    """Fails the first time it is called for ``path`` (a marker file records the first call)."""
    import os

    if not os.path.exists(path):
        open(path, "w").close()
        raise RuntimeError("first attempt fails")
    return "ok"


def _boom() -> None:
    raise ValueError("bad job")


def test_local_runs_in_order_and_reports_each():
    CALLS.clear()
    seen = []
    res = LocalExecutor().map([Job(f"j{i}", _square, {"x": i}) for i in (3, 1, 2)], on_done=lambda r: seen.append(r.key))
    assert CALLS == [3, 1, 2] and [r.value for r in res] == [9, 1, 4] and seen == ["j3", "j1", "j2"]
    assert all(r.ok and r.attempts == 1 for r in res)


def test_failure_is_recorded_and_the_rest_still_runs():
    CALLS.clear()
    res = LocalExecutor().map([Job("a", _boom), Job("b", _square, {"x": 5})])
    assert not res[0].ok and res[0].error == "ValueError: bad job" and "Traceback" in res[0].traceback
    assert res[1].ok and res[1].value == 25


def test_retries(tmp_path):
    marker = str(tmp_path / "m")
    assert not LocalExecutor(max_retries=0).map([Job("f", _flaky, {"path": marker})])[0].ok
    (tmp_path / "m").unlink()
    res = LocalExecutor(max_retries=1).map([Job("f", _flaky, {"path": marker})])[0]
    assert res.ok and res.attempts == 2 and res.value == "ok"


def test_keyboard_interrupt_is_not_swallowed():
    def stop() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        LocalExecutor(max_retries=3).map([Job("k", stop)])


def test_bad_specs():
    assert isinstance(make_executor(None), LocalExecutor) and isinstance(make_executor("local"), LocalExecutor)
    with pytest.raises(ValueError, match="unknown executor 'dask'"):
        make_executor("dask")
    with pytest.raises(ValueError, match="bad options for the local executor"):
        make_executor({"name": "local", "workers": 3})
    with pytest.raises(ValueError, match="same|share the key"):
        LocalExecutor().map([Job("x", _boom), Job("x", _boom)])
    with pytest.raises(ValueError, match="max_retries"):
        LocalExecutor(max_retries=-1)


def test_after_runs_in_order_and_skips_what_needs_a_failed_job():
    CALLS.clear()
    jobs = [Job("a", _boom), Job("b", _square, {"x": 2}), Job("c", _square, {"x": 3}, after=("b",)),
            Job("d", _square, {"x": 4}, after=("a", "b"))]
    res = LocalExecutor().map(jobs)
    assert CALLS == [2, 3] and res[2].ok and res[2].value == 9
    assert not res[3].ok and res[3].error == "not run: a failed (ValueError: bad job)" and res[3].attempts == 0
    with pytest.raises(ValueError, match="comes after \\['z'\\]"):
        LocalExecutor().map([Job("x", _square, {"x": 1}, after=("z",)), Job("z", _square, {"x": 1})])
