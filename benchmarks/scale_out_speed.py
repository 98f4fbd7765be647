"""Wall time of the benchmark under different executors (and, optionally, of another checkout), interleaved.

    OMP_NUM_THREADS=1 python benchmarks/scale_out_speed.py local,ray2,ray2,local [--old /path/to/old/checkout]
    python benchmarks/scale_out_speed.py local,proc2,proc2,local --seeds '[0,1,2]'
    python benchmarks/scale_out_speed.py local,ray2,proc2,proc2,ray2,local --fashion --keep /tmp/fashion_scaleout

Each entry of the comma-separated order runs ``lightning_unlearn benchmark -c configs/benchmark/quickstart.yaml``
(``--config PATH``: another benchmark config) in a fresh process and a fresh output directory, reduced to seed 0 and
the class-wise scenario. ``--full``: the whole config; ``--seed0``: seed 0, every scenario (4 models, 3 groups);
``--seeds LIST``: every scenario at those seeds; ``--fashion``: ``configs/benchmark/fashion_mnist.yaml`` reduced as
:data:`FASHION` says (issue 30's scale-out workload, sized in docs/scale-out.md); ``--args "..."``: more arguments.

Entries: ``local``: the local executor; ``proc2``: the ``processes`` executor with 2 workers (one job per group of
rows, the default); ``proc2rows``: the same with one job per row; ``ray2``: a local Ray with 2 workers of 1 CPU each
(one job per group); ``ray2rows``: the same with one job per row; ``old``: the same command with ``--old`` first on
``PYTHONPATH`` (e.g. ``git archive <commit> | tar -x -C /tmp/old``); ``ray2g<N>`` / ``proc2g<N>``: ``ray2`` / ``proc2``
with ``group_rows: N``, each group's rows cut into jobs of at most N rows (``ray2g17``: the Fashion-MNIST config's
groups of 32-33 rows in two jobs each, so that the last job, run while the other worker idles, is half a group).

Prints each wall time (process start to exit: imports and the workers' start-up included), the CPU time of the
benchmark process (less sensitive to a shared machine's load; it includes the ``processes`` executor's workers, not
Ray's) and the load average, then the wall times as JSON with each entry's mean and its ratio to ``local``'s, and
checks that every run gave the same rows as the first: the largest difference of any metric but the times. ``--keep
DIR`` keeps the runs' output directories and their progress lines (``<entry>_<i>.log``) there.
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REDUCE = ["--seeds", "[0]", "--scenarios", "[{name: class-wise, targets: [{classes: [3]}]}]"]
#: ``--fashion``: the Fashion-MNIST benchmark (every method, 3 scenarios x 3 seeds: 12 models, 9 groups) on half its
#: training subset (6,000 images) and one torch thread per job, ``local`` included: about 30 minutes of ``local`` on an
#: idle core (sized in docs/scale-out.md).
FASHION = ["--data.init_args.holdout_fraction", "0.9", "--trainer.num_threads", "1"]
EXTRA = {"local": ["--executor", "local"], "old": [],
         "ray2": ["--executor", "{name: ray, num_cpus: 2, resources: {num_cpus: 1}}"],
         "ray2rows": ["--executor", "{name: ray, num_cpus: 2, group_rows: false, resources: {num_cpus: 1}}"],
         "proc2": ["--executor", "{name: processes, workers: 2, resources: {num_cpus: 1}}"],
         "proc2rows": ["--executor", "{name: processes, workers: 2, group_rows: false, resources: {num_cpus: 1}}"]}


def main(argv: list[str]) -> int:
    order = argv[0].split(",") if argv else ["local", "ray2", "ray2", "local"]
    old = argv[argv.index("--old") + 1] if "--old" in argv else None
    config = (argv[argv.index("--config") + 1] if "--config" in argv else
              str(ROOT / "configs/benchmark" / ("fashion_mnist.yaml" if "--fashion" in argv else "quickstart.yaml")))
    reduce = ([] if "--full" in argv else FASHION if "--fashion" in argv else ["--seeds", "[0]"] if "--seed0" in argv
              else ["--seeds", argv[argv.index("--seeds") + 1]] if "--seeds" in argv else REDUCE)
    reduce += shlex.split(argv[argv.index("--args") + 1]) if "--args" in argv else []
    print(f"{' '.join(reduce) or 'the whole config'} of {config}; load {os.getloadavg()}", flush=True)
    for name in order:  # ray2g<N>, proc2g<N>: ray2, proc2 with group_rows N
        base, _, n = name.rpartition("g")
        if name not in EXTRA and base in ("ray2", "proc2") and n.isdigit() and int(n) >= 1:
            EXTRA[name] = [EXTRA[base][0], EXTRA[base][1].replace("resources:", f"group_rows: {n}, resources:")]
        elif name not in EXTRA:
            raise SystemExit(f"unknown entry {name!r}: use {', '.join(EXTRA)}, ray2g<N> or proc2g<N>")
    times: dict[str, list[float]] = {}
    scratch = Path(tempfile.mkdtemp(prefix="scale_out_speed_"))
    for i, name in enumerate(order):
        code = old if name == "old" else str(ROOT)
        if code is None:
            raise SystemExit("`old` in the order needs --old PATH")
        out = scratch / f"{name}_{i}"
        env = {**os.environ, "PYTHONPATH": code, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        cmd = [sys.executable, "-m", "lightning_unlearn", "benchmark", "-c", str(Path(config).resolve()),
               "--output_dir", str(out), *reduce, *EXTRA[name]]
        c0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        r = subprocess.run(cmd, env=env, cwd=code, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = c1.ru_utime - c0.ru_utime + c1.ru_stime - c0.ru_stime  # the benchmark process and its pool's workers
        times.setdefault(name, []).append(wall)
        (scratch / f"{name}_{i}.log").write_text(r.stderr)  # the progress lines, kept with --keep
        last = r.stderr.strip().splitlines()[-1][:150] if r.stderr.strip() else ""
        print(f"{i} {name}: {wall:.1f} s (CPU {cpu:.1f} s), exit {r.returncode}, load {os.getloadavg()[0]:.1f} | {last}", flush=True)
    print(json.dumps(times))
    mean = {name: sum(t) / len(t) for name, t in times.items()}
    print(json.dumps({name: {"mean_s": round(m, 1), "local_over_this": round(mean["local"] / m, 3) if "local" in mean
                             else None} for name, m in mean.items()}))
    worst = compare([scratch / f"{name}_{i}" for i, name in enumerate(order)])
    keep = argv[argv.index("--keep") + 1] if "--keep" in argv else None
    if keep:
        shutil.copytree(scratch, keep, dirs_exist_ok=True)
    shutil.rmtree(scratch, ignore_errors=True)
    return 0 if worst == 0.0 else 1


def _metrics(run: Path) -> dict[tuple, dict[str, float]]:
    from lightning_unlearn.benchmark.cache import read_results

    rows, _ = read_results(run)
    skip = ("time", "wall_s", "speedup", "finished_at", "run_dir", "git_", "package_version")
    return {(r["scenario"], r["target"], r["seed"], r["method"]):
            {k: v for k, v in r.items() if isinstance(v, float | int) and not any(t in k for t in skip)}
            for r in rows}


def _diff(a: float, b: float) -> float:
    if a != a or b != b:  # NaN: equal only to NaN
        return 0.0 if a != a and b != b else float("inf")
    return abs(a - b)


def compare(runs: list[Path]) -> float:
    """Largest |difference| of any metric but the times between each run's rows and the first run's (inf: rows or
    metrics missing)."""
    ok = [r for r in runs if (r / "results.json").is_file()]
    if len(ok) < 2:
        return 0.0
    first, worst = _metrics(ok[0]), 0.0
    for run in ok[1:]:
        other = _metrics(run)
        if other.keys() != first.keys():
            worst = float("inf")
            continue
        for key, m in first.items():
            if other[key].keys() != m.keys():
                worst = float("inf")
                continue
            worst = max([worst, *(_diff(float(v), float(other[key][k])) for k, v in m.items())])
    print(f"same rows as {ok[0].name}: largest |difference| of a metric but the times over {len(ok) - 1} other run(s) "
          f"= {worst:g}")
    return worst


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
