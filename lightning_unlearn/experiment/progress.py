"""What an application (benchmark, audit) prints while it runs: a rich progress bar (done/total, elapsed, time left)
under one line per finished step, and Lightning's per-Trainer messages silenced (:func:`quiet`). The bar is drawn on a
terminal only; to a file or a pipe the lines alone are written, as plain text."""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

__all__ = ["Progress", "hms", "parse_hms", "quiet"]


class Progress:
    """One line per finished step (which of how many, its time, elapsed, an estimate of the time left) above a rich bar.

    The estimate adds, for every remaining step, the mean time of finished steps of the same kind (a training of the
    same role, the same method, an evaluation of a reference row), else the mean of all finished steps of that family,
    and divides by how many steps ran side by side so far (1 with the local executor). Every line starts with ``prog``
    (``benchmark``, ``audit``). Use it as a context manager:
    the bar is shown inside (what is written to stderr meanwhile is printed above the bar, not through it).
    """

    def __init__(self, steps: Sequence[tuple[str, str]], stream: Any = None, prog: str = "benchmark") -> None:
        self.prog = prog  # the first word of every line: which command speaks
        self.pending: list[tuple[str, str]] = list(steps)  # (family, kind)
        self.total = len(steps)
        self.done = 0
        self.start = time.perf_counter()
        self.times: dict[tuple[str, str], list[float]] = {}
        self.console = Console(file=stream if stream is not None else sys.stderr, soft_wrap=True, highlight=False)
        self.bar = RichProgress(
            TextColumn(prog), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("~{task.fields[left]} left"), console=self.console, transient=True,
            disable=not self.total or not self.console.is_terminal,
        )
        self.task = self.bar.add_task("runs", total=self.total, left="?")

    def __enter__(self) -> Progress:
        self.bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.stop()

    def _estimate(self) -> float | None:
        total = 0.0
        for family, kind in self.pending:
            own = self.times.get((family, kind))
            if own:
                total += sum(own) / len(own)
                continue
            fam = [t for (f, _), ts in self.times.items() if f == family for t in ts]
            if not fam:
                return None
            total += sum(fam) / len(fam)
        busy = sum(t for ts in self.times.values() for t in ts)
        side_by_side = max(1.0, busy / max(time.perf_counter() - self.start, 1e-9))
        return total / side_by_side

    def finish(self, family: str, kind: str, what: str, seconds: float | None, note: str = "", show: bool = True) -> None:
        """Mark a step done (``seconds=None``: read from disk, not timed; ``show=False``: no line)."""
        with contextlib.suppress(ValueError):
            self.pending.remove((family, kind))
        self.done += 1
        if seconds is not None:
            self.times.setdefault((family, kind), []).append(seconds)
        left = self._estimate()
        left_s = "?" if left is None else hms(left)
        self.bar.update(self.task, completed=self.done, left=left_s)
        if not show:
            return
        took = "cached" if seconds is None else f"{hms(seconds)}"
        extra = f" {note}" if note else ""
        self.log(
            f"[{self.done}/{self.total}] {what}: {took}{extra} | elapsed {hms(time.perf_counter() - self.start)}, "
            f"~{left_s} left"
        )

    def log(self, text: str) -> None:
        self.console.print(f"{self.prog} {text}", markup=False, crop=False, overflow="ignore")


def hms(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def parse_hms(text: str) -> float:
    """Seconds of a duration as :func:`hms` writes it (``"9.0s"``, ``"1m22s"``, ``"1h05m"``), for scripts that read
    progress lines back; ``ValueError`` for text without one."""
    parts = re.findall(r"([0-9.]+)([hms])", text)
    if not parts or "".join(v + u for v, u in parts) != text.strip():
        raise ValueError(f"not a duration of the progress lines: {text!r}")
    return sum(float(v) * {"h": 3600.0, "m": 60.0, "s": 1.0}[u] for v, u in parts)


@contextlib.contextmanager
def quiet(enabled: bool) -> Iterator[None]:
    """Silence Lightning's per-Trainer info lines and its advice warnings (one benchmark starts dozens of Trainers)."""
    if not enabled:
        yield
        return
    names = ("lightning.pytorch", "lightning.fabric", "lightning", "lightning_unlearn")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        for pattern in (
            ".*does not have many workers.*",
            ".*GPU available but not used.*",
            ".*smaller than the logging interval.*",
            ".*val_dataloader.*validation_step.*",
            ".*Total length of .* across ranks is zero.*",
            ".*`training_step` returned `None`.*",
            ".*exists and is not empty.*",
            ".*LeafSpec.*",
        ):
            warnings.filterwarnings("ignore", message=pattern)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)
