"""How much slower a job runs beside another on this machine's cores: the ceiling of any scale-out ratio here.

    OMP_NUM_THREADS=1 python benchmarks/corun_speed.py [--order 1,2,1,2,1] [--fashion] [--args "..."]

Runs one benchmark job mix — a reduced benchmark (one group: the original and gold trainings, Original, Retrain and
two methods, one torch thread) — alone (``1``) and as ``2`` identical copies at once in separate processes and output
directories, in the ``--order`` given (interleaved, so that a drift of the machine's speed does not favour either).
Prints each copy's time on the benchmark's own clock ("done in"), then the mean time of a copy beside another over
the mean time alone: the slowdown ``f``. Two workers on this machine can then reach at most ``2 / f`` of one
worker's speed however the jobs are scheduled (``benchmarks/scale_out_schedule.py`` shows the schedule's own loss).
``--fashion``: the Fashion-MNIST config on half its training subset, as ``scale_out_speed.py --fashion`` runs it
(default: the quickstart, much shorter jobs); ``--args``: more arguments for the benchmark.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lightning_unlearn.experiment.progress import parse_hms

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("[{name: Finetune, class_path: lightning_unlearn.methods.Finetune, init_args: {lr: 0.01}, max_epochs: 2},"
           " {name: SCRUB, class_path: lightning_unlearn.methods.SCRUB, init_args: {lr: 0.01}, max_epochs: 3}]")


def command(out: Path, fashion: bool, extra: list[str]) -> list[str]:
    config = ROOT / "configs/benchmark" / ("fashion_mnist.yaml" if fashion else "quickstart.yaml")
    data = ["--data.init_args.holdout_fraction", "0.9"] if fashion else []
    return [sys.executable, "-m", "lightning_unlearn", "benchmark", "-c", str(config), "--output_dir", str(out),
            *data, "--trainer.num_threads", "1", "--seeds", "[0]", "--tuned.mode", "default",
            "--scenarios", "[{name: class-wise, targets: [{classes: [7]}]}]", "--methods", METHODS,
            "--executor", "local", *extra]


def clock(stderr: str) -> float:
    """The benchmark's own time of a run, from its last line ("benchmark done in 1m12s: ...")."""
    m = re.search(r"done in ((?:[0-9.]+[hms])+)", stderr)
    if not m:
        raise RuntimeError(f"a copy failed: {stderr.strip().splitlines()[-1] if stderr.strip() else 'no output'}")
    return parse_hms(m.group(1))


def main(argv: list[str]) -> int:
    order = [int(n) for n in argv[argv.index("--order") + 1].split(",")] if "--order" in argv else [1, 2, 1, 2, 1]
    extra = shlex.split(argv[argv.index("--args") + 1]) if "--args" in argv else []
    if any(n not in (1, 2) for n in order):
        raise SystemExit("--order takes 1 (a copy alone) and 2 (two copies at once), e.g. 1,2,1,2,1")
    scratch = Path(tempfile.mkdtemp(prefix="corun_speed_"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    times: dict[int, list[float]] = {1: [], 2: []}
    for i, n in enumerate(order):
        t0 = time.perf_counter()
        procs = [subprocess.Popen(command(scratch / f"{i}_{c}", "--fashion" in argv, extra), cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for c in range(n)]
        own = [clock(p.communicate()[1]) for p in procs]
        times[n] += own
        print(f"{i} x{n}: {', '.join(f'{t:.1f}' for t in own)} s (wall {time.perf_counter() - t0:.1f} s, load "
              f"{os.getloadavg()[0]:.1f})", flush=True)
    alone, beside = (sum(times[n]) / len(times[n]) if times[n] else float("nan") for n in (1, 2))
    f = beside / alone
    print(f"a copy alone {alone:.1f} s, beside another {beside:.1f} s: slowdown {f:.3f}, so two workers reach at most "
          f"{2 / f:.2f}x one worker's speed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
