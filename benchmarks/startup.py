"""Start-up cost of the ``lightning_unlearn`` command, one source tree against another, interleaved (issue 30).

    git worktree add /work/wt/cli-old c7d07c8
    python benchmarks/startup.py --old /work/wt/cli-old --new . --repeats 5

Each tree runs with ``PYTHONPATH`` pointing at it, through its own console script (``[project.scripts]`` of its
``pyproject.toml``, called as pip's wrapper calls it), one thread (``OMP_NUM_THREADS=1``). CPU seconds are user + sys
of the child from ``resource.getrusage(RUSAGE_CHILDREN)``; the repeats alternate old/new (and which goes first), so a
change of load hits both. Cases:

- ``help``: ``lightning_unlearn --help``; ``error``: ``lightning_unlearn bogus`` (an unknown subcommand).
- ``unlearn``: ``lightning_unlearn unlearn`` of BoundaryShrink on digits (the README's command) up to its first
  training step: ``startup_probe.FirstStep`` (a Callback given with ``--trainer.callbacks+=``) stamps the time at
  ``on_train_batch_start`` and ends the process; wall seconds from the parent's start of the process to that stamp.
- ``job_imports``: ``import lightning_unlearn.benchmark.jobs`` and the modules its jobs import before their first step
  (methods, trainer, evaluation, checkpoints): a Ray worker's first job pays this once.
- ``parse``: the LightningCLI part of ``unlearn`` before any class is instantiated (building the parser(s), parsing
  the README's ``unlearn`` configs), CPU seconds from ``time.process_time`` inside the process, after the imports;
  ``UnlearnCLI`` as ``cli.main`` constructs it in each tree.

``--breakdown`` adds, per tree, the ``-X importtime`` self time (wall, one run) of ``job_imports`` summed per top-level
package.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
JOB_IMPORTS = (
    "import lightning_unlearn.benchmark.jobs, lightning_unlearn.methods, lightning_unlearn.trainer, "
    "lightning_unlearn.evaluation, lightning_unlearn.checkpoints"
)


PARSE = """
import json, sys, time
try:  # after the change: UnlearnCLI in its own module, cli.main builds the named subcommand's parser only
    from lightning_unlearn.unlearn_cli import UnlearnCLI
    kwargs = {"only_subcommand": "unlearn"}
except ImportError:  # before it
    from lightning_unlearn.cli import UnlearnCLI
    kwargs = {}
class Stop(Exception):
    pass
class CLI(UnlearnCLI):
    def before_instantiate_classes(self):
        raise Stop
sys.argv = ["lightning_unlearn", "unlearn", "-c", sys.argv[1], "-c", sys.argv[2], "--original_ckpt", "x.ckpt"]
start = time.process_time()
try:
    CLI(args=None, **kwargs)
except Stop:
    pass
print(json.dumps({"cpu_s": time.process_time() - start}))
"""


def console_code(tree: Path) -> str:
    """What the tree's console script runs (``module:function`` from its pyproject), as ``python -c`` code."""
    target = tomllib.loads((tree / "pyproject.toml").read_text())["project"]["scripts"]["lightning_unlearn"]
    module, func = target.split(":")
    return f"import sys\nfrom {module} import {func}\nsys.argv[0] = 'lightning_unlearn'\nsys.exit({func}())"


def run(tree: Path, args: list[str], cwd: Path, env_extra: dict[str, str] | None = None) -> dict[str, float | int]:
    """Run ``python ARGS`` with the tree on the path: its CPU seconds (user + sys), wall seconds, return code."""
    env = {**os.environ, "PYTHONPATH": f"{tree}:{HERE}", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    proc = subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=900)
    wall = time.time() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode not in (0, 2):
        raise RuntimeError(f"{tree}: python {' '.join(args)[:200]} failed:\n{proc.stderr[-3000:]}")
    return {"cpu_s": cpu, "wall_s": wall, "start": start, "rc": proc.returncode, "stdout": proc.stdout[-5000:]}


def train_original(tree: Path, work: Path) -> Path:
    """One digits original (1 epoch) for the ``unlearn`` case, trained by ``tree``."""
    fit = ["fit", "-c", str(tree / "configs/data/digits.yaml"), "-c", str(tree / "configs/model/allcnn.yaml"),
           "--trainer.max_epochs=1", f"--trainer.default_root_dir={work / 'fit'}",
           "--trainer.enable_progress_bar=false"]
    run(tree, ["-c", console_code(tree), *fit], cwd=work)
    return work / "fit" / "original.ckpt"


def measure(case: str, tree: Path, work: Path, original: Path, i: int) -> dict[str, float]:
    code = console_code(tree)
    if case == "help":
        res = run(tree, ["-c", code, "--help"], cwd=work)
        assert res["rc"] == 0 and "subcommands:" in str(res["stdout"]), res
    elif case == "error":
        res = run(tree, ["-c", code, "bogus"], cwd=work)
        assert res["rc"] == 2, res
    elif case == "unlearn":
        stamp = work / f"probe-{tree.name}-{i}.json"
        args = ["unlearn", "--data", str(tree / "configs/data/digits.yaml"),
                "--model", str(tree / "configs/unlearn/boundary_shrink.yaml"), "--original_ckpt", str(original),
                "--output", str(work / f"u-{tree.name}-{i}" / "unlearned.ckpt"), "--trainer.enable_progress_bar=false",
                "--trainer.callbacks+=startup_probe.FirstStep"]
        res = run(tree, ["-c", code, *args], cwd=work, env_extra={"STARTUP_PROBE_OUT": str(stamp)})
        probe = json.loads(stamp.read_text())
        return {"cpu_s": float(res["cpu_s"]), "wall_s": probe["time"] - float(res["start"])}
    elif case == "parse":
        res = run(tree, ["-c", PARSE, str(tree / "configs/data/digits.yaml"),
                         str(tree / "configs/unlearn/boundary_shrink.yaml")], cwd=work)
        inside = json.loads(str(res["stdout"]).strip().splitlines()[-1])
        return {"cpu_s": inside["cpu_s"], "wall_s": float(res["wall_s"])}
    elif case == "job_imports":
        res = run(tree, ["-c", JOB_IMPORTS], cwd=work)
    else:
        raise ValueError(case)
    return {"cpu_s": float(res["cpu_s"]), "wall_s": float(res["wall_s"])}


def breakdown(tree: Path, work: Path) -> dict[str, float]:
    """``-X importtime`` self seconds of ``JOB_IMPORTS``, summed per top-level package (wall time, one run)."""
    env = {**os.environ, "PYTHONPATH": f"{tree}:{HERE}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", JOB_IMPORTS], env=env, cwd=work,
                          capture_output=True, text=True, timeout=900, check=True)
    out: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, _, name = line[len("import time:") :].split("|")
        top = name.strip().split(".")[0]
        out[top] = out.get(top, 0.0) + int(self_us) / 1e6
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", type=Path, required=True, help="the tree before the change (a git worktree)")
    parser.add_argument("--new", type=Path, default=HERE.parent, help="the tree after it (default: this checkout)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", default="help,error,unlearn,job_imports,parse")
    parser.add_argument("--breakdown", action="store_true")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    args = parser.parse_args()
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    cases = args.cases.split(",")
    load_before = os.getloadavg()
    results: dict[str, dict[str, list[dict[str, float]]]] = {c: {"old": [], "new": []} for c in cases}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        original = train_original(trees["new"], work) if "unlearn" in cases else work / "none"
        for i in range(args.repeats):
            for case in cases:
                order = ("old", "new") if i % 2 == 0 else ("new", "old")
                for name in order:
                    results[case][name].append(measure(case, trees[name], work, original, i))
            print(f"repeat {i + 1}/{args.repeats} done", file=sys.stderr, flush=True)
        parts = {name: breakdown(tree, work) for name, tree in trees.items()} if args.breakdown else {}
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; {args.repeats} repeats interleaved")
    print("| case | measure | old median (min-max) | new median (min-max) | old / new |")
    print("|---|---|---|---|---|")
    for case in cases:
        for key in ("cpu_s", "wall_s"):
            old = [r[key] for r in results[case]["old"]]
            new = [r[key] for r in results[case]["new"]]
            mo, mn = statistics.median(old), statistics.median(new)
            print(f"| {case} | {key} | {mo:.2f} ({min(old):.2f}-{max(old):.2f}) "
                  f"| {mn:.2f} ({min(new):.2f}-{max(new):.2f}) | {mo / mn:.1f}x |")
    for name, part in parts.items():
        top = ", ".join(f"{k} {v:.2f}" for k, v in list(part.items())[:12])
        print(f"importtime ({name}; self seconds per package, wall, total {sum(part.values()):.2f}): {top}")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "breakdown": parts, "load": [load_before, load_after]}))


if __name__ == "__main__":
    main()
