"""Replay a benchmark's measured job times on W workers: what one job per group, or groups cut into parts, would take.

    python benchmarks/scale_out_schedule.py /tmp/fashion_scaleout/ray2_0.log [--workers 2] [--parts 1,2,3]

Reads the progress lines of one benchmark run (its stderr, as ``scale_out_speed.py --keep`` saves it): each model
training's time and each row's time, per group. Then schedules them as the executors do — the trainings first, then
each group's jobs (the group's rows, whole or cut into ``k`` parts by :func:`~lightning_unlearn.benchmark.batch.chunks`)
once the group's original and gold models exist, a free worker taking the first job that is ready — and prints the
makespan for every ``k`` (``--parts``), with the total of the jobs' times over ``W`` (the makespan without a tail).

The row times include what each measured job computed once (the group's DataModule and references, in its first
row), so a replay with more parts than the run had leaves out one reference computation per extra part (about 0-6 s
each on Fashion-MNIST) and the replay of another run's times assumes that machine's speed. Its use is to separate
the schedule (the tail: the last job running while other workers idle) from the machine's speed, which drifts
between runs on a shared host: the same times replayed whole and in parts give the parts' gain at equal speed.
On 2026-12-07 the replay of four Ray runs (2 workers) fell 21-26 s short of their measured wall time each (Ray's and
the imports' start-up): docs/scale-out.md.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from lightning_unlearn.benchmark.batch import chunks
from lightning_unlearn.experiment.progress import parse_hms as seconds

TRAIN = re.compile(r"benchmark \[\d+/\d+\] (original|gold) model \((.*)\): ([0-9hms.]+) \|")
ROW = re.compile(r"benchmark \[\d+/\d+\] (.*) / ([^/]*): ([0-9hms.]+)(?: FAILED)? \(")


def parse(text: str) -> tuple[list[tuple[str, str, float]], dict[str, list[tuple[str, float]]]]:
    """``(trainings: [(role, group, s)], rows: {group: [(row, s)]})`` in the order the lines came; a group is its
    ``scenario / target / seed`` description."""
    trains, rows = [], {}
    for line in text.splitlines():
        if m := TRAIN.match(line):
            trains.append((m.group(1), m.group(2), seconds(m.group(3))))
        elif m := ROW.match(line):
            rows.setdefault(m.group(1), []).append((m.group(2), seconds(m.group(3))))
    return trains, rows


def makespan(trains: list[tuple[str, str, float]], rows: dict[str, list[tuple[str, float]]], workers: int,
             parts: int) -> float:
    """The wall time of the jobs on ``workers`` workers: trainings in order, then every group's rows in ``parts``
    near-equal consecutive jobs, each ready when its group's gold model and its seed's original model are trained
    (the original is trained once per seed, with the first scenario's group); a free worker takes the first ready
    job in submission order."""
    seed = lambda g: g.rsplit("/", 1)[-1].strip()  # noqa: E731
    jobs: list[tuple[float, list[int]]] = [(s, []) for *_, s in trains]
    for group, rs in rows.items():
        deps = [i for i, (role, g, _) in enumerate(trains)
                if (role == "gold" and g == group) or (role == "original" and seed(g) == seed(group))]
        for part in chunks(rs, -(-len(rs) // parts)):
            jobs.append((sum(s for _, s in part), deps))
    end: dict[int, float] = {}
    free = [0.0] * workers
    pending = list(range(len(jobs)))
    while pending:
        w = min(range(workers), key=free.__getitem__)
        ready = lambda j: max((end.get(d, float("inf")) for d in jobs[j][1]), default=0.0)  # noqa: E731
        j = min(pending, key=lambda j: (max(ready(j), free[w]), j))
        start = max(ready(j), free[w])
        if start == float("inf"):
            raise ValueError("a group's models are not in the log's trainings")
        end[j] = free[w] = start + jobs[j][0]
        pending.remove(j)
    return max(free)


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        raise SystemExit(__doc__)
    workers = int(argv[argv.index("--workers") + 1]) if "--workers" in argv else 2
    ks = [int(k) for k in argv[argv.index("--parts") + 1].split(",")] if "--parts" in argv else [1, 2, 3, 4]
    trains, rows = parse(Path(argv[0]).read_text())
    if not trains or not rows:
        raise SystemExit(f"{argv[0]}: no training or row lines of a benchmark's progress output")
    total = sum(s for *_, s in trains) + sum(s for rs in rows.values() for _, s in rs)
    print(f"{len(trains)} trainings, {len(rows)} groups, {sum(map(len, rows.values()))} rows: jobs {total:.0f} s in "
          f"all, {total / workers:.0f} s over {workers} workers")
    for k in ks:
        print(f"parts {k}: {makespan(trains, rows, workers, k):.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
