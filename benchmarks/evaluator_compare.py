"""The evaluator before and after a change, on the same checkpoints: every key of every row compared, and the time.

    python benchmarks/evaluator_compare.py --runs runs/benchmark/quickstart --old /path/to/old/worktree \
        [--rounds 3] [--extra '{"probe": true, "relearn": true, "cka": true}'] [--out compare.json]

``--extra`` may be a JSON list of such settings: each is timed as its own implementation (``new+extra``,
``new+extra2``, ...). ``--old_extra`` times the old implementation with other settings too (``old+extra``), e.g. the
evaluation before a metric was added against this one with it: issue 29's budget is
``new / old+extra`` with ``--old_extra '{"probe": false, "relearn": false, "cka": false}'``; every ratio is reported
against each of ``old`` and ``old+extra``.

``--runs`` is a finished benchmark directory (its ``config.yaml``, ``runs/<scenario>/<target>/seed<s>/`` with the
group's ``original.ckpt`` and each method's ``unlearned.ckpt`` + ``unlearn.json``). Each row is evaluated as the
benchmark evaluates it (one ``ReferenceCache`` per group; ``Original``: the original model against the gold model;
``Retrain``: the gold model, its training time as its cost; a method: its unlearned model against gold and original,
its unlearning time; with ``"reference_original": true`` among the settings, the reference rows get the original too,
as the benchmark's do since issue 29) by the configured evaluator, in a fresh process per implementation
(``PYTHONPATH`` = the old worktree, or this one), interleaved round by round in rotating order. Only the evaluations
are timed (not imports, nor reading the unlearned checkpoints). Compared: the old implementation against this one with
the same settings (every key, bit for bit: floats as JSON writes them) and, with ``--extra``, this one with the extra
settings against the old one on the keys they share; timings as ratios per round, with ``os.getloadavg()`` beside
them.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]


def _rows(runs: Path) -> list[dict[str, Any]]:
    rows = []
    for group in sorted(p.parent for p in runs.glob("runs/*/*/seed*/original.ckpt")):
        for run in sorted(p for p in group.iterdir() if p.is_dir()):
            result = json.loads((run / "result.json").read_text()) if (run / "result.json").is_file() else None
            if result is None or result.get("status", "ok") not in ("ok", None):
                continue
            rows.append({"group": str(group), "run": run.name, "result": result})
    return rows


def worker(runs: Path, settings: dict[str, Any], out: Path) -> None:
    """Evaluate every row of ``runs`` with this process's ``lightning_unlearn``; write ``{row: results}`` and times."""
    import torch
    import yaml

    try:
        from lightning_unlearn.experiment import import_class
    except ImportError:  # an implementation from before lightning_unlearn.experiment
        from lightning_unlearn.benchmark.plan import import_class
    from lightning_unlearn.checkpoints import load_backbone
    from lightning_unlearn.data import ForgetSpec
    from lightning_unlearn.evaluation import ReferenceCache, UnlearningEvaluator

    torch.set_num_threads(1)
    cfg = yaml.safe_load((runs / "config.yaml").read_text())
    settings = dict(settings)
    reference_original = bool(settings.pop("reference_original", False))
    known = inspect.signature(UnlearningEvaluator).parameters  # a config.yaml written by a newer parser lists the
    evaluator_cfg = {k: v for k, v in cfg.get("evaluator", {}).items() if k in known}  # newer (off) switches too
    evaluator_cfg.update(settings)
    results: dict[str, Any] = {}
    elapsed = 0.0
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in _rows(runs):
        groups.setdefault(row["group"], []).append(row)
    for group, rows in groups.items():
        first = rows[0]["result"]
        cls = import_class(cfg["data"]["class_path"])
        init = {k: v for k, v in cfg["data"]["init_args"].items() if v is not None}
        dm = cls(**init, forget=ForgetSpec(**json.loads(first["target_spec"])), seed=int(first["seed"]))
        dm.setup()
        original = str(Path(group) / "original.ckpt")
        gold = next(json.loads((Path(group) / r["run"] / "unlearn.json").read_text())["gold_ckpt"] for r in rows
                    if (Path(group) / r["run"] / "unlearn.json").is_file())
        gold = str(runs / "models" / Path(gold).parent.name / Path(gold).name)  # wherever the run was started from
        cache = ReferenceCache()
        for row in rows:
            run, kind = Path(group) / row["run"], row["result"]["kind"]
            if kind == "reference":
                path = original if row["run"] == "Original" else gold
                model, meta = load_backbone(path, dm)
                t = meta.get("train_time_s") if row["run"] == "Retrain" else None
                extra = {"original": original} if reference_original else {}
                evaluator = UnlearningEvaluator(gold=gold, **extra, **evaluator_cfg)
            else:
                model, _ = load_backbone(run / "unlearned.ckpt", dm)
                t = json.loads((run / "unlearn.json").read_text())["unlearn_time_s"]
                evaluator = UnlearningEvaluator(gold=gold, original=original, **evaluator_cfg)
            evaluator.reference_cache = cache
            start = time.perf_counter()
            res = evaluator.evaluate(model, dm, unlearn_time_s=t)
            elapsed += time.perf_counter() - start
            results[f"{Path(group).relative_to(runs)}/{row['run']}"] = res
    clean = {r: {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in res.items()}
             for r, res in results.items()}
    out.write_text(json.dumps({"elapsed_s": elapsed, "results": clean}))


def _run(impl: str, root: Path, runs: Path, settings: dict[str, Any], out: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(root)}  # threads as a benchmark process has them (torch: 1)
    cmd = [sys.executable, str(HERE / "benchmarks" / "evaluator_compare.py"), "--worker", "--runs", str(runs),
           "--settings", json.dumps(settings), "--out", str(out)]
    subprocess.run(cmd, env=env, check=True, cwd=root)
    data = json.loads(out.read_text())
    data["impl"], data["load"] = impl, os.getloadavg()
    return data


def _differences(a: dict[str, Any], b: dict[str, Any], shared_only: bool) -> list[str]:
    diffs = []
    for row in sorted(set(a) | set(b)):
        ra, rb = a.get(row, {}), b.get(row, {})
        keys = set(ra) & set(rb) if shared_only else set(ra) | set(rb)
        if not shared_only and list(ra) != list(rb):
            diffs.append(f"{row}: key order or set differs: {list(ra)} vs {list(rb)}")
        diffs += [f"{row}/{k}: {ra.get(k)!r} vs {rb.get(k)!r}" for k in sorted(keys) if ra.get(k) != rb.get(k)]
    return diffs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=Path, required=True)
    p.add_argument("--old", type=Path, help="the old implementation's worktree")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--extra", type=json.loads, default=None, help="extra evaluator settings to time (JSON)")
    p.add_argument("--old_extra", type=json.loads, default=None, help="settings to time the old implementation with too")
    p.add_argument("--out", type=Path, default=Path("evaluator_compare.json"))
    p.add_argument("--worker", action="store_true")
    p.add_argument("--settings", type=json.loads, default={})
    args = p.parse_args()
    if args.worker:
        return worker(args.runs.resolve(), args.settings, args.out)
    runs, tmp = args.runs.resolve(), args.out.with_suffix(".part.json")
    impls = [("old", args.old.resolve(), {}), ("new", HERE, {})]
    if args.old_extra:
        impls.insert(1, ("old+extra", args.old.resolve(), args.old_extra))
    extras = args.extra if isinstance(args.extra, list) else [args.extra] if args.extra else []
    for i, extra in enumerate(extras, start=1):
        impls.append((f"new+extra{i if i > 1 else ''}", HERE, extra))
    rounds: list[dict[str, dict[str, Any]]] = []
    for r in range(args.rounds):
        order = impls[r % len(impls):] + impls[: r % len(impls)]
        rounds.append({name: _run(name, root, runs, settings, tmp) for name, root, settings in order})
        line = ", ".join(f"{k} {v['elapsed_s']:.2f} s" for k, v in rounds[-1].items())
        print(f"round {r + 1}: {line}; load {os.getloadavg()[0]:.2f}", flush=True)
    old, new = rounds[0]["old"]["results"], rounds[0]["new"]["results"]
    report: dict[str, Any] = {"rows": len(old), "keys": sum(len(v) for v in old.values())}
    report["differences"] = _differences(old, new, shared_only=False)
    report["repeatable_old"] = not _differences(old, rounds[-1]["old"]["results"], shared_only=False)
    for base in [b for b in ("old", "old+extra") if b in rounds[0]]:
        for name in [n for n, _, _ in impls if n != base]:
            ratios = [rd[name]["elapsed_s"] / rd[base]["elapsed_s"] for rd in rounds]
            key = f"time_ratio/{name}" if base == "old" else f"time_ratio/{name} vs {base}"
            report[key] = {"per_round": ratios, "median": statistics.median(ratios)}
    for name, _, settings in [i for i in impls if i[0] not in ("old", "new")]:
        report[f"differences_shared/{name}"] = _differences(old, rounds[0][name]["results"], shared_only=True)
        report[f"settings/{name}"] = settings
    if extras:
        report["extra_example"] = next(iter(rounds[0]["new+extra"]["results"].items()))
    report["elapsed_s"] = {n: [rd[n]["elapsed_s"] for rd in rounds] for n, _, _ in impls}
    report["load"] = [[rd[n]["load"] for n, _, _ in impls] for rd in rounds]
    args.out.write_text(json.dumps(report, indent=1))
    tmp.unlink(missing_ok=True)
    print(json.dumps({k: v for k, v in report.items() if k not in ("extra_example",)}, indent=1)[:4000])


if __name__ == "__main__":
    main()
