"""How often, and how long, one benchmark row reads checkpoint files (issue 17).

    PYTHONPATH=$PWD python benchmarks/checkpoint_reads.py [--methods Finetune,Amnesiac] [--out DIR]

Runs a miniature digits benchmark (the quickstart's data and model, one class-wise group, seed 0; Original, Retrain
and ``--methods``; models trained first, outside the count), then counts every ``torch.load`` made while the rows
run: per file role (the group's ``original.ckpt``, the gold ``model.ckpt``, Amnesiac's updates, others), calls and
seconds, and per row. Run it with another checkout first on ``PYTHONPATH`` to compare versions (the same seeds give
the same rows: compare the printed metrics digest).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import tempfile
import time
from pathlib import Path

import torch
import yaml


def config(out: Path, methods: list[str], epochs: int) -> dict:
    known = {
        "Finetune": {"class_path": "lightning_unlearn.methods.Finetune", "init_args": {"lr": 0.01}, "max_epochs": 1},
        "Amnesiac": {"class_path": "lightning_unlearn.methods.Amnesiac", "max_epochs": 1},
        "NegativeGradient": {"class_path": "lightning_unlearn.methods.NegativeGradient", "init_args": {"lr": 0.001},
                             "max_epochs": 1},
    }
    return {
        "output_dir": str(out),
        "data": {"class_path": "lightning_unlearn.data.DigitsDataModule",
                 "init_args": {"image_size": 4, "batch_size": 64, "holdout_fraction": 0.5,
                               "augment": False}},
        "backbone": {"class_path": "lightning_unlearn.backbones.AllCNN", "init_args": {"width": 0.25}},
        "training": {"max_epochs": epochs, "lr": 0.05},
        "scenarios": [{"name": "class-wise", "targets": [{"classes": [3]}]}],
        "seeds": [0],
        "methods": [{"name": m, **known[m]} for m in methods],
        "trainer": {"accelerator": "cpu", "num_threads": 1},
        "evaluator": {"mia": True, "zrf": True},
    }


def role(path: str) -> str:
    p = Path(path)
    if p.name == "original.ckpt":
        return "group original.ckpt"
    if p.name == "model.ckpt":
        return f"{p.parent.name.split('-')[0]} model.ckpt"
    if p.name.startswith("amnesiac_updates"):
        return "amnesiac updates"
    return p.name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="Finetune,Amnesiac")
    ap.add_argument("--epochs", type=int, default=30, help="training epochs of the models (the quickstart's 30)")
    ap.add_argument("--out", default=None, help="output directory (default: a temporary one)")
    args = ap.parse_args()
    from lightning_unlearn.benchmark import jobs, load_config, run_benchmark

    out = Path(args.out or tempfile.mkdtemp(prefix="ckpt_reads_"))
    cfg_path = out / "c.yaml"
    out.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(yaml.safe_dump(config(out / "bench", args.methods.split(","), args.epochs), sort_keys=False))
    loads: list[tuple[str, str, float]] = []  # (row, path, seconds)
    current = ["(models)"]
    real_load, real_row = torch.load, jobs.row_job

    def load(f, *a, **k):  # noqa: ANN001, ANN202
        t0 = time.perf_counter()
        try:
            return real_load(f, *a, **k)
        finally:
            loads.append((current[0], str(f), time.perf_counter() - t0))

    def row_job(cfg, group, name, *a, **k):  # noqa: ANN001, ANN202
        current[0] = name
        try:
            return real_row(cfg, group, name, *a, **k)
        finally:
            current[0] = "(after)"

    torch.load = load  # type: ignore[assignment]
    jobs.row_job = row_job
    import lightning_unlearn.benchmark.batch as batch

    batch.row_job = row_job
    try:
        result = run_benchmark(load_config(cfg_path))
    finally:
        torch.load, jobs.row_job, batch.row_job = real_load, real_row, real_row  # type: ignore[assignment]
    rows_loads = [x for x in loads if x[0] not in ("(models)", "(after)")]
    by_role: dict[str, list[float]] = collections.defaultdict(list)
    by_row: dict[str, list[float]] = collections.defaultdict(list)
    for row, path, s in rows_loads:
        by_role[role(path)].append(s)
        by_row[row].append(s)
    print("torch.load while the rows ran, by file:")
    for r, ts in sorted(by_role.items()):
        print(f"  {r:28s} {len(ts):3d} reads  {sum(ts) * 1000:8.1f} ms")
    print("by row:")
    for r, ts in by_row.items():
        print(f"  {r:28s} {len(ts):3d} reads  {sum(ts) * 1000:8.1f} ms")
    n = len(result["rows"]) or 1
    print(f"per row: {len(rows_loads) / n:.1f} reads, {sum(s for *_, s in rows_loads) / n * 1000:.1f} ms")
    def measured(r: dict) -> dict:
        return {k: v for k, v in sorted(r.items()) if isinstance(v, float) and not k.startswith("time/")
                and not k.endswith(("time_s", "wall_s"))}

    metrics = [measured(r) for r in sorted(result["rows"], key=lambda r: r["method"])]
    print("metrics digest:", hashlib.sha1(json.dumps(metrics, sort_keys=True).encode()).hexdigest()[:16])


if __name__ == "__main__":
    main()
