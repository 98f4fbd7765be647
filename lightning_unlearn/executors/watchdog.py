"""A watchdog that stops what a run started when the run's process ends in any way, SIGKILL included (issue 26).

A local Ray started by the ``ray`` executor shares the fate of the driver for most of its processes, but not all: after
a SIGKILL of the driver its ``DashboardAgent`` and ``RuntimeEnvAgent`` stay (their raylet died, and they were handed
to init). :func:`start` runs this file as a separate process (the standard library only; it imports nothing of the
package) that records, every half second, the processes it guards: every new descendant of the driver until the driver
names the processes Ray started (:meth:`Watchdog.guard`), then theirs and their descendants. When the driver's end of a
pipe closes -- :meth:`Watchdog.stop` after ``ray.shutdown()``, or the driver's death -- it stops those that are still
the ones it saw (``SIGTERM``, then ``SIGKILL`` after a grace time). Linux (``/proc``); elsewhere it is not started.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["Watchdog", "children", "descendants", "start", "supported"]

POLL_S = 0.5
GRACE_S = 5.0


class Watchdog:
    """The running watchdog of this process: tell it which processes to guard (:meth:`guard`), :meth:`stop` it once
    they were shut down normally."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    def guard(self, roots: set[int]) -> None:
        """Guard ``roots`` and their descendants only (until now: every new descendant of this process)."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.write((" ".join(map(str, sorted(roots))) + "\n").encode())
            self.proc.stdin.flush()

    def stop(self, timeout: float = 10.0) -> None:
        """Close the pipe (the watchdog stops what is left of the guarded processes) and wait for it to exit."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def supported() -> bool:
    """Whether processes can be watched here (Linux: ``/proc``)."""
    return Path("/proc/self/stat").exists()


def start() -> Watchdog | None:
    """Start the watchdog of this process's descendants from now on (the ones it has already are left alone);
    ``None`` where there is no ``/proc``."""
    if not supported():
        return None
    before = ",".join(str(p) for p in descendants(os.getpid())) or "-"
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", __file__, str(os.getpid()), before], stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL, start_new_session=True,  # its own session: Ctrl-C reaches the driver alone
    )
    return Watchdog(proc)


def children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` now."""
    return {p for p in descendants(pid) if (_stat(p) or (0, 0))[0] == pid}


def _stat(pid: int) -> tuple[int, int] | None:
    """``(parent pid, start time)`` of ``pid`` from ``/proc``; ``None`` when it is gone (or a zombie, only waiting to
    be reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()  # the command name, in parentheses, may hold spaces
    return None if fields[0] == "Z" else (int(fields[1]), int(fields[19]))


def descendants(root: int) -> dict[int, int]:
    """``{pid: start time}`` of every process descending from ``root`` now."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                table[int(name)] = st
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[int, int] = {}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in out:
                out[child] = table[child][1]
                stack.append(child)
    return out


def _stop(seen: dict[int, int]) -> None:
    """SIGTERM every process of ``seen`` that is still the one seen (same start time), then SIGKILL what is left."""

    def alive() -> list[int]:
        return [p for p, t in seen.items() if (_stat(p) or (0, -1))[1] == t]

    for sig, wait in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, 0.0)):
        for pid in alive():
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + wait
        while alive() and time.monotonic() < deadline:
            time.sleep(0.1)


def _watch(driver: int, before: set[int]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    seen: dict[int, int] = {}
    roots: set[int] | None = None  # None: every new descendant of the driver
    me, buffer = os.getpid(), b""
    while True:
        if roots is None:
            seen.update((p, t) for p, t in descendants(driver).items() if p != me and p not in before)
        else:
            for root in roots:
                st = _stat(root)
                if st is not None and seen.get(root, st[1]) == st[1]:
                    seen[root] = st[1]
                    seen.update(descendants(root))
        ready, _, _ = select.select([sys.stdin], [], [], POLL_S)
        if ready:
            data = os.read(sys.stdin.fileno(), 4096)
            if not data:
                break  # the pipe closed: the driver stopped us, or it died
            buffer += data
            if b"\n" in buffer:  # the processes Ray started: guard their trees only
                line, _, buffer = buffer.rpartition(b"\n")
                roots = {int(p) for p in line.split(b"\n")[-1].split()}
                keep = set(roots).union(*(descendants(r) for r in roots))
                seen = {p: t for p, t in seen.items() if p in keep}
    _stop(seen)


if __name__ == "__main__":
    _watch(int(sys.argv[1]), {int(p) for p in sys.argv[2].split(",") if p.isdigit()})
