"""GPU check: what a user waits for on a GPU, in one short run (docs/performance.md, "GPU check").

    python benchmarks/gpu_check.py [--device cuda] [--repeats 3] [--n 4096] [--batch 128] [--fisher-n 128]
        [--methods Finetune,SCRUB,...] [--sections epoch,fisher,methods] [--json FILE]
    python benchmarks/gpu_check.py --smoke      # CPU, tiny sizes, every section: that the script runs (a test does)

ResNet-18 (CIFAR stem) on synthetic CIFAR-shaped data (``n`` random 3x32x32 images, 10 classes, half held out, class 3
forgotten), one torch thread on the CPU side. Three tables:

1. ``epoch``: one unlearning epoch (Finetune, SGD lr 0.01, one epoch over D_r at ``--batch``) in fp32, bf16-mixed
   (the Trainer's ``precision="bf16-mixed"``) and channels-last (fp32, the model in ``channels_last`` and its input
   made ``channels_last`` by a forward pre-hook), each against a bare torch loop doing the same passes (randperm,
   slices, forward, CE, backward, SGD step; ``torch.autocast(bfloat16)`` / ``channels_last`` likewise); seconds per
   epoch (min and median over ``--repeats``, after one warm-up epoch per mode), images per second, ratio.
2. ``fisher``: ``diagonal_fisher`` (expected, C - 1 = 9 cotangents) of ``--fisher-n`` samples against the reference
   batch-size-1 loop on ``--fisher-n // 8`` of them, per sample, and the two floors of benchmarks/fisher_speed.py
   (one batched backward of the N (C - 1) cotangent rows, to the input only / also to the parameters).
3. ``methods``: every method against its bare loop (benchmarks/method_overhead.py at ResNet-18 32x32 with ``--n``
   images, ``--batch``, methods capped at 2 epochs), method's own timer; ratios min/min and median/median.

Nothing is downloaded; only torch, lightning and this package are imported (not jsonargparse or Ray), so the script
runs where those two are missing (the ``device`` machines). ``--json`` also writes every number to a file.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without the package installed (the device machines)
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

import fisher_speed as fs  # noqa: E402
import method_overhead as mo  # noqa: E402
from lightning_unlearn.methods import Finetune  # noqa: E402
from lightning_unlearn.methods.fisher_diagonal import diagonal_fisher  # noqa: E402

MODES = ("fp32", "bf16-mixed", "channels-last")


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _stats(xs: list[float]) -> dict[str, float]:
    return {"min": min(xs), "median": statistics.median(xs)}


def _to_channels_last(module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])


def _prepare(net: nn.Module, mode: str) -> nn.Module:
    """A copy of ``net`` for ``mode``: channels-last weights and a pre-hook that makes the input channels-last."""
    model = copy.deepcopy(net)
    if mode == "channels-last":
        model = model.to(memory_format=torch.channels_last)
        model.register_forward_pre_hook(_to_channels_last)
    return model


def method_epoch(net: nn.Module, dm: Any, mode: str, device: str) -> float:
    """Seconds of one Finetune epoch over D_r by the method's own timer."""
    method = Finetune(backbone=_prepare(net, mode), lr=0.01)
    method.retain_collapse = None
    t = pl.Trainer(
        max_epochs=1, accelerator="gpu" if device.startswith("cuda") else "cpu", devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        num_sanity_val_steps=0, precision="bf16-mixed" if mode == "bf16-mixed" else "32-true",
    )
    t.fit(method, datamodule=dm)
    return float(method.unlearn_time_s)


def bare_epoch(net: nn.Module, x: Tensor, y: Tensor, batch: int, mode: str, device: str) -> float:
    """Seconds of the same epoch as a plain loop (the model copy made before the clock starts)."""
    model = _prepare(net, mode).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    _sync(device)
    t0 = time.perf_counter()
    for p in torch.randperm(len(y), device=y.device).split(batch):
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=mode == "bf16-mixed"):
            loss = F.cross_entropy(model(x[p]), y[p])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return time.perf_counter() - t0


def section_epoch(args: argparse.Namespace, dm: Any, net: nn.Module) -> list[dict[str, Any]]:
    data = mo.Data(dm, args.device)
    xr, yr = data.split["retain"]
    rows = []
    for mode in MODES:
        method_epoch(net, dm, mode, args.device)  # warm-up: kernel selection, allocator, lazy initialisation
        bare_epoch(net, xr, yr, args.batch, mode, args.device)
        m, b = [], []
        for _ in range(args.repeats):
            m.append(method_epoch(net, dm, mode, args.device))
            b.append(bare_epoch(net, xr, yr, args.batch, mode, args.device))
        rows.append({"mode": mode, "images": len(yr), "method_s": _stats(m), "bare_s": _stats(b)})
    return rows


def section_fisher(args: argparse.Namespace, net: nn.Module) -> dict[str, Any]:
    model = copy.deepcopy(net).to(args.device).eval()
    side = args.size
    x = torch.rand(args.fisher_n, 3, side, side, generator=torch.Generator().manual_seed(1)).to(args.device)
    n_ref = max(1, args.fisher_n // 8)
    sides = {
        "diagonal_fisher": (lambda: diagonal_fisher(model, x), len(x)),
        "reference": (lambda: fs.reference_fisher(model, x[:n_ref]), n_ref),
        "floor_input": (fs.floor_backward(copy.deepcopy(model), x, False, False), len(x)),
        "floor_full": (fs.floor_backward(copy.deepcopy(model), x, True, False), len(x)),
    }
    for fn, _ in sides.values():  # warm-up
        fn()
    per_sample: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(args.repeats):
        for name, (fn, count) in sides.items():
            _sync(args.device)
            t0 = time.perf_counter()
            fn()
            _sync(args.device)
            per_sample[name].append((time.perf_counter() - t0) / count)
    check = fs._rel_error(diagonal_fisher(model, x[:n_ref], chunk_size=1), fs.reference_fisher(model, x[:n_ref]))
    return {"samples": args.fisher_n, "reference_samples": n_ref, "per_sample_s": {k: _stats(v) for k, v in
            per_sample.items()}, "max_rel_difference_chunk1_vs_reference": check}


def section_methods(args: argparse.Namespace, names: list[str]) -> dict[str, dict[str, list[float]]]:
    mo.SETTINGS["gpu_check"] = {**mo.SETTINGS["resnet32"], "size": args.size, "batch": args.batch, "n": args.n}
    return mo.measure(names, "gpu_check", args.repeats, args.original_epochs, args.device)


def report(out: dict[str, Any]) -> str:
    lines = [f"device: {out['device']}; torch {out['torch']}; lightning {out['lightning']}; {out['when']}"]
    if "epoch" in out:
        lines += ["", "1. One unlearning epoch (Finetune over D_r), ResNet-18: seconds min / median, images/s (min)",
                  f"{'mode':14s} {'method s':>17s} {'bare s':>17s} {'img/s':>9s} {'min/min':>8s} {'med/med':>8s}"]
        for r in out["epoch"]:
            m, b = r["method_s"], r["bare_s"]
            lines.append(f"{r['mode']:14s} {m['min']:7.3f} / {m['median']:7.3f} {b['min']:7.3f} / {b['median']:7.3f} "
                         f"{r['images'] / m['min']:9.0f} {m['min'] / b['min']:8.2f} "
                         f"{m['median'] / b['median']:8.2f}")
    if "fisher" in out:
        f = out["fisher"]
        ps = f["per_sample_s"]
        lines += ["", f"2. Fisher diagonal (expected, 9 cotangents), {f['samples']} samples (reference on "
                  f"{f['reference_samples']}): ms per sample, min / median"]
        for k, v in ps.items():
            lines.append(f"{k:16s} {v['min'] * 1e3:9.3f} / {v['median'] * 1e3:9.3f}")
        d = ps["diagonal_fisher"]
        lines.append(f"reference / diagonal_fisher: {ps['reference']['min'] / d['min']:.1f}x (min/min), "
                     f"{ps['reference']['median'] / d['median']:.1f}x (median/median); diagonal_fisher / floor_full: "
                     f"{d['min'] / ps['floor_full']['min']:.2f}x; max relative difference (chunk 1 vs reference) "
                     f"{f['max_rel_difference_chunk1_vs_reference']:.1e}")
    if "methods" in out:
        lines += ["", "3. Methods against their bare loops (method's own timer), seconds min / median",
                  mo.table(out["methods"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--smoke", action="store_true", help="CPU, 64 images of 8x8, 1 repeat, 2 methods")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=4096, help="training images (half held out)")
    ap.add_argument("--size", type=int, default=32, help="image side")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--fisher-n", type=int, default=128)
    ap.add_argument("--original-epochs", type=int, default=2, help="epochs of the original model (methods)")
    ap.add_argument("--methods", default=",".join(mo.METHODS))
    ap.add_argument("--sections", default="epoch,fisher,methods")
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    args = ap.parse_args(argv)
    if args.smoke:
        args.device, args.repeats, args.n, args.size, args.batch, args.fisher_n = "cpu", 1, 64, 8, 16, 4
        args.original_epochs, args.methods = 1, "Finetune,SSD"
    if args.device == "cpu":
        torch.set_num_threads(1)
    sections = args.sections.split(",")
    out: dict[str, Any] = {
        "device": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else
        f"cpu ({platform.machine()}, {torch.get_num_threads()} thread(s))",
        "torch": torch.__version__, "lightning": pl.__version__,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "args": vars(args),
    }
    mo.SETTINGS["gpu_check"] = {**mo.SETTINGS["resnet32"], "size": args.size, "batch": args.batch, "n": args.n}
    dm, net = mo.build("gpu_check")
    if "epoch" in sections:
        out["epoch"] = section_epoch(args, dm, net)
    if "fisher" in sections:
        out["fisher"] = section_fisher(args, net)
    if "methods" in sections:
        out["methods"] = section_methods(args, [n for n in args.methods.split(",") if n])
    print(report(out), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
