"""Fisher Forgetting speed, measured as interleaved ratios (the machine may be shared: absolute times are not).

    python benchmarks/fisher_speed.py diag [--preset quickstart|allcnn16|fashion|fashion_gpu|resnet16|resnet28|resnet18]
        [--n 64] [--repeats 3] [--width W --size S] [--old REV] [--floor] [--no-ref]
    python benchmarks/fisher_speed.py layers [--preset resnet18] [--n 8] [--repeats 3]
    python benchmarks/fisher_speed.py retrain [--config configs/benchmark/quickstart.yaml] [--repeats 3]
    python benchmarks/fisher_speed.py estimate --config CONFIG --shape 3,32,32 --classes 100 [--n 8]

``diag``: the exact ("expected") diagonal Fisher of ``n`` samples by :func:`diagonal_fisher` against the batch-size-1
recipe of the reference code (Golatkar et al., SelectiveForgetting ``hessian``: per sample one forward, then per class
``model.zero_grad(); loss.backward(retain_graph=True); grad2_acc += p_k * grad^2``; its unused ``grad_acc`` and the
DataLoader are left out), both on the same model and samples, the sides in a rotating order within each repeat.
``--old REV`` adds the ``diagonal_fisher`` of a git revision (its ``fisher_diagonal.py``, loaded from ``git show``);
``--floor`` adds the two lower references of an exact method: ``floor_input`` = one forward of the ``n`` samples plus
one batched backward of the ``n * (C - 1)`` cotangent rows to the input only (every layer's input gradient: the
reverse passes any exact method needs; the samples repeated ``C - 1`` times, that forward not timed), and
``floor_full`` = the same backward also forming the parameter gradients summed over the rows (the multiply-adds of the
per-sample weight gradients, without storing or squaring them), each in the faster of NCHW and channels-last.
Prints min and median of wall and CPU time (``time.process_time``: what the process itself used, less disturbed by
other jobs on a shared machine) of each side, the ratios, the load average before and after, and checks that the
diagonals agree: ``diagonal_fisher`` with ``chunk_size=1`` (the reference's batch-size-1 forwards) against the
reference, max over tensors of max|a - b| / max|b| <= 1e-5, exit 1 if not (the timed, batched result is printed too:
a ReLU input within rounding of 0 can flip between a batched and a batch-size-1 forward, e.g. 1.3e-4 on
``resnet28``).

``layers``: per Conv2d layer of the preset's model, the CPU time of each exact form of the layerwise backend's squared
per-sample weight gradients (Gram, grouped, per sample) and the one its fixed rule picks (the data behind the rule).

``retrain``: the FisherForgetting run of a benchmark config's first group (as the benchmark runs it: its
``init_args``, ``max_epochs`` and trainer overrides, the method's own timer) against training that group's gold model
(a ``Classifier`` on D_r with the config's ``training``, its ``train_time_s``), alternating; prints the speed-up.

``estimate``: for configs whose data or schedule is too big to run here: per-sample time of one training step of the
config's backbone (its batch size, SGD, random inputs of ``--shape`` with ``--classes`` classes) against per-sample
time of its Fisher pass (``--n`` samples, its ``fisher_type``), interleaved; the speed-up over retraining is
``gold epochs x t_train / (fraction of D_r x t_fisher)`` (data loading left out of both).

One torch thread unless ``--threads`` says otherwise; the model is put in eval mode (running BatchNorm statistics).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_unlearn.methods.fisher_diagonal import diagonal_fisher


def reference_fisher(model: nn.Module, x: Tensor) -> dict[str, Tensor]:
    """The reference ``hessian`` loop (batch size 1, one ``backward`` per class), summed over the samples."""
    model.eval()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    acc = {n: torch.zeros_like(p) for n, p in params}
    for i in range(x.shape[0]):
        output = model(x[i : i + 1])
        prob = F.softmax(output, dim=-1).data
        for k in range(output.shape[1]):
            loss = F.cross_entropy(output, torch.full((1,), k, device=x.device))
            model.zero_grad()
            loss.backward(retain_graph=True)
            for n, p in params:
                acc[n] += prob[0, k] * p.grad.data.pow(2)
    model.zero_grad(set_to_none=True)
    return acc


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, float, Any]:
    """``(wall seconds, CPU seconds of this process, result)``."""
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - c0, out


#: name -> (model, side, width, in channels, description); the models of the configs named.
PRESETS: dict[str, tuple[str, int, float, int, str]] = {
    "quickstart": ("allcnn", 8, 0.25, 1, "All-CNN w0.25, digits 1x8x8 (quickstart)"),
    "allcnn16": ("allcnn", 16, 0.5, 1, "All-CNN w0.5, digits 1x16x16 (bilinear)"),
    "fashion": ("allcnn", 28, 0.25, 1, "All-CNN w0.25, 1x28x28"),
    "fashion_gpu": ("allcnn", 28, 1.0, 1, "All-CNN w1.0, 1x28x28 (fashion_mnist_gpu)"),
    "resnet16": ("resnet18", 16, 1.0, 3, "ResNet-18, 3x16x16"),
    "resnet28": ("resnet18", 28, 1.0, 3, "ResNet-18, 3x28x28"),
    "resnet18": ("resnet18", 32, 1.0, 3, "ResNet-18, 3x32x32 (cifar10_resnet18)"),
}


def _preset(name: str, n: int, device: torch.device, size: int | None = None,
            width: float | None = None) -> tuple[nn.Module, Tensor, str]:
    """The preset's model (seed 0, eval mode) and ``n`` inputs: digits for All-CNN presets, uniform noise otherwise."""
    from lightning_unlearn.backbones import AllCNN, ResNet18

    if name not in PRESETS:
        raise SystemExit(f"unknown preset {name!r}: {', '.join(PRESETS)}")
    kind, side, w, chans, what = PRESETS[name]
    side, w = size or side, width or w
    if (size or width) is not None:
        what = f"{'All-CNN w' + format(w, 'g') if kind == 'allcnn' else 'ResNet-18'}, {chans}x{side}x{side}"
    torch.manual_seed(0)
    if kind == "allcnn":
        from sklearn.datasets import load_digits

        digits = torch.tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 16.0
        images = digits[torch.arange(n) % len(digits)]
        if side != 8:
            images = F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False)
        model = AllCNN(num_classes=10, in_channels=1, image_size=side, width=w, mean=[0.3], std=[0.4])
        return model.to(device).eval(), images.to(device), what
    model = ResNet18(num_classes=10, in_channels=chans, image_size=side)
    return model.to(device).eval(), torch.rand(n, chans, side, side, device=device), what


def _load_old(rev: str) -> Callable[..., dict[str, Tensor]]:
    """``diagonal_fisher`` of git revision ``rev`` (its module source loaded under another name)."""
    import importlib.util
    import subprocess
    import tempfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    src = subprocess.run(["git", "show", f"{rev}:lightning_unlearn/methods/fisher_diagonal.py"], cwd=root,
                         check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="fisher_old_")) / "fisher_diagonal_old.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("fisher_diagonal_old", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.diagonal_fisher


def floor_backward(model: nn.Module, x: Tensor, params: bool, channels_last: bool) -> Callable[[], None]:
    """The timed part of a floor: a forward of ``x`` (no grad: the cotangents) and one backward of the ``N (C - 1)``
    rows of ``x`` repeated, to the input only or also to the parameters (summed over rows); set-up not timed."""
    model.eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    with torch.no_grad():
        logits = model(x.contiguous(memory_format=fmt))
    from lightning_unlearn.methods.fisher_diagonal import fisher_cotangents

    u = fisher_cotangents(logits, "expected")
    k = u.shape[0]
    xr = x.repeat(k, 1, 1, 1).contiguous(memory_format=fmt).requires_grad_(True)
    wanted = [xr] + ([p for p in model.parameters() if p.requires_grad] if params else [])
    rows = u.reshape(-1, u.shape[2])
    out = model(xr)

    def run() -> None:
        with torch.no_grad():
            model(x.contiguous(memory_format=fmt))
        torch.autograd.grad(out, wanted, rows, retain_graph=True)

    return run


def _rel_error(a: dict[str, Tensor], b: dict[str, Tensor]) -> float:
    return max(float((a[n] - b[n]).abs().max() / b[n].abs().max().clamp(min=1e-30)) for n in b)


def _stats(times: list[float]) -> str:
    return f"min {min(times):.3f} s, median {statistics.median(times):.3f} s"


def bench_diag(args: argparse.Namespace) -> int:
    import copy
    import os

    device = torch.device(args.device)
    model, x, what = _preset(args.preset, args.n, device, args.size, args.width)
    load0 = os.getloadavg()
    sides: dict[str, Callable[[], Any]] = {}
    if not args.no_ref:
        sides["reference"] = lambda: reference_fisher(model, x)
    sides["diagonal_fisher"] = lambda: diagonal_fisher(model, x, backend=args.backend)
    if args.old:
        old = _load_old(args.old)
        sides[f"old ({args.old})"] = lambda: old(model, x, backend=args.backend)
    if args.floor:
        for kind, params in (("floor_input", False), ("floor_full", True)):
            for cl in (False, True):
                sides[f"{kind}{'_cl' if cl else ''}"] = floor_backward(copy.deepcopy(model), x, params, cl)
    for side, fn in sides.items():  # warm-up (first-call allocations, oneDNN kernel generation)
        if side.startswith("floor"):
            fn()
    diagonal_fisher(model, x[:2])
    reference_fisher(model, x[:1])
    wall: dict[str, list[float]] = {n: [] for n in sides}
    cpu: dict[str, list[float]] = {n: [] for n in sides}
    errors: dict[str, float] = {}
    names = list(sides)
    for r in range(args.repeats):
        out: dict[str, Any] = {}
        for side in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order every repeat
            t, c, out[side] = _timed(sides[side], device)
            wall[side].append(t)
            cpu[side].append(c)
        base = out.get("reference", out["diagonal_fisher"])
        for side in names:
            if not side.startswith("floor") and out[side] is not base:
                errors[side] = max(errors.get(side, 0.0), _rel_error(out[side], base))
    load1 = os.getloadavg()
    threads = f"cpu, {torch.get_num_threads()} thread(s)"
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else threads
    print(f"{what}, {args.n} samples, {device_name}, {args.repeats} interleaved repeats; load average "
          f"{load0[0]:.1f} before, {load1[0]:.1f} after")
    for kind in [k for k in ("floor_input", "floor_full") if k in wall]:  # the faster layout, per statistic
        for d in (wall, cpu):
            d[kind] = min(d.pop(kind), d.pop(kind + "_cl"), key=min)
    for side in wall:
        print(f"  {side:24s} wall {_stats(wall[side])}; cpu {_stats(cpu[side])}")
    fast = "diagonal_fisher"
    for side in [s for s in wall if s != fast]:
        num, den = (side, fast) if not side.startswith("floor") else (fast, side)
        for label, d in (("wall", wall), ("cpu", cpu)):
            print(f"  {num} / {den} ({label}): {min(d[num]) / min(d[den]):.2f}x (min/min), "
                  f"{statistics.median(d[num]) / statistics.median(d[den]):.2f}x (median/median)")
    for side, err in errors.items():
        print(f"  max relative difference {side} vs {'reference' if 'reference' in sides else fast}: {err:.1e}")
    if "reference" in sides:  # the same forward as the reference (batch size 1): a ReLU input within rounding of 0 can
        # flip between a batched and a batch-size-1 forward and change that sample's gradients, in any exact method
        ref = reference_fisher(model, x)
        err = _rel_error(diagonal_fisher(model, x, backend=args.backend, chunk_size=1), ref)
        print(f"  max relative difference diagonal_fisher with chunk_size=1 (batch-size-1 forwards) vs reference: "
              f"{err:.1e}")
        if err > 1e-5:
            print("  FAIL: the diagonals differ by more than 1e-5 (relative)")
            return 1
    return 0


def bench_layers(args: argparse.Namespace) -> int:
    """Per Conv2d layer of the preset's model: CPU time (GPU: wall time) of each exact form of the squared per-sample weight gradients
    (``fisher_diagonal._conv_sq``) on random output gradients of ``C - 1 = 9`` cotangents, and the form the rule picks."""
    from lightning_unlearn.methods import fisher_diagonal as fd

    model, x, what = _preset(args.preset, args.n, torch.device(args.device), args.size, args.width)
    seen: list[tuple[nn.Conv2d, Tensor, torch.Size]] = []
    hooks = [m.register_forward_hook(lambda m, a, o: seen.append((m, a[0].detach(), o.shape)))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    k, gen, device = 9, torch.Generator().manual_seed(0), torch.device(args.device)
    clock = "GPU wall" if device.type == "cuda" else "CPU"
    print(f"{what}, {args.n} samples, K = {k}; {clock} ms per layer (min of {args.repeats}); * = the rule's choice")
    total = {f: 0.0 for f in ("gram", "grouped", "sample", "rule", "best")}
    for mod, a, shape in seen:
        d = torch.randn(k, *shape, generator=gen).to(device)
        cost = {}
        for form in ("gram", "grouped", "sample"):
            dd = d.transpose(0, 1).contiguous() if form == "sample" else d
            times = []
            for _ in range(args.repeats + (device.type == "cuda")):  # on a GPU, one warm-up call
                wall, cpu, _ = _timed(lambda: fd._conv_sq(mod, a, dd, form), device)
                times.append(wall if device.type == "cuda" else cpu)
            cost[form] = min(times[1:] if device.type == "cuda" else times)
        rule = fd._conv_form(mod, k, shape[2] * shape[3])
        for f in cost:
            total[f] += cost[f]
        total["rule"] += cost[rule]
        total["best"] += min(cost.values())
        cells = " ".join(f"{f} {cost[f] * 1e3:8.1f}{'*' if f == rule else ' '}" for f in cost)
        print(f"  {mod.in_channels:4d}->{mod.out_channels:<4d} k{mod.kernel_size[0]} s{mod.stride[0]} "
              f"{a.shape[-1]:3d}->{shape[-1]:<3d} {cells}")
    print("  total ms: " + ", ".join(f"{f} {v * 1e3:.0f}" for f, v in total.items()))
    return 0


def bench_retrain(args: argparse.Namespace) -> int:
    import copy
    import tempfile
    from pathlib import Path

    import lightning.pytorch as pl

    from lightning_unlearn.benchmark import build_backbone_for, build_datamodule, load_config, make_plan
    from lightning_unlearn.benchmark.plan import trainer_kwargs
    from lightning_unlearn.methods import Classifier

    cfg = load_config(args.config)
    spec = next((m for m in cfg.methods if m.class_path.endswith(".FisherForgetting")), None)
    if spec is None:
        raise SystemExit(f"{args.config} has no FisherForgetting method")
    group = make_plan(cfg).groups[0]
    target, seed = group.target, group.seed
    kwargs = trainer_kwargs(cfg, Path(tempfile.mkdtemp(prefix="fisher_speed_")))
    dm_all = build_datamodule(cfg, target, seed, train_on="all")
    pl.seed_everything(seed, verbose=False)
    original = Classifier(build_backbone_for(cfg, dm_all), **cfg.training.classifier_kwargs())
    pl.Trainer(max_epochs=cfg.training.epochs("original"), **kwargs).fit(original, datamodule=dm_all)
    gold_t: list[float] = []
    fisher_t: list[float] = []
    for r in range(args.repeats):
        for side in (("gold", "fisher") if r % 2 == 0 else ("fisher", "gold")):
            if side == "gold":
                dm = build_datamodule(cfg, target, seed, train_on="retain")
                pl.seed_everything(seed, verbose=False)
                gold = Classifier(build_backbone_for(cfg, dm), **cfg.training.classifier_kwargs())
                pl.Trainer(max_epochs=cfg.training.epochs("gold"), **kwargs).fit(gold, datamodule=dm)
                gold_t.append(float(gold.train_time_s()))
            else:
                dm = build_datamodule(cfg, target, seed, train_on="all")
                method = spec.resolve()(copy.deepcopy(original.model), **spec.init_args)
                pl.Trainer(max_epochs=spec.max_epochs, **{**kwargs, **spec.trainer}).fit(method, datamodule=dm)
                fisher_t.append(float(method.unlearn_time_s))
    print(f"{args.config}: first group ({target}, seed {seed}), {args.repeats} interleaved repeats, "
          f"{torch.get_num_threads()} torch thread(s)")
    print(f"  gold model training ({cfg.training.epochs('gold')} epochs on D_r): {_stats(gold_t)}")
    print(f"  FisherForgetting ({spec.init_args}, trainer {spec.trainer}): {_stats(fisher_t)}")
    print(f"  speed-up over retraining: {min(gold_t) / min(fisher_t):.1f}x (min/min), "
          f"{statistics.median(gold_t) / statistics.median(fisher_t):.1f}x (median/median)")
    return 0


def bench_estimate(args: argparse.Namespace) -> int:
    from lightning_unlearn.benchmark import load_config
    from lightning_unlearn.experiment import import_class

    cfg = load_config(args.config)
    spec = next((m for m in cfg.methods if m.class_path.endswith(".FisherForgetting")), None)
    if spec is None:
        raise SystemExit(f"{args.config} has no FisherForgetting method")
    channels, height, width = (int(v) for v in args.shape.split(","))
    torch.manual_seed(0)
    model = import_class(cfg.backbone["class_path"])(
        num_classes=args.classes, in_channels=channels, image_size=height, **cfg.backbone["init_args"]
    )
    batch = int(cfg.data["init_args"].get("batch_size", 64))
    fisher_type = spec.init_args.get("fisher_type", "expected")
    fraction = float(spec.trainer.get("limit_train_batches", 1.0))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    xb, yb = torch.rand(batch, channels, height, width), torch.randint(0, args.classes, (batch,))
    xf = torch.rand(args.n, channels, height, width)

    def train_step() -> None:
        model.train()
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()

    train_step()
    train_t: list[float] = []
    fisher_t: list[float] = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        train_step()
        train_t.append((time.perf_counter() - t0) / batch)
        t0 = time.perf_counter()
        diagonal_fisher(model, xf, fisher_type=fisher_type, chunk_size=spec.init_args.get("chunk_size"))
        fisher_t.append((time.perf_counter() - t0) / args.n)
    epochs = cfg.training.epochs("gold")
    print(f"{args.config}: {cfg.backbone['class_path'].rsplit('.', 1)[1]} on {args.shape}, {args.classes} classes, "
          f"{fisher_type} Fisher on {fraction:g} of D_r vs {epochs} epochs, {args.repeats} interleaved repeats")
    print(f"  training step, batch {batch}: min {min(train_t) * 1e3:.2f} ms/sample; Fisher, {args.n} samples: "
          f"min {min(fisher_t) * 1e3:.2f} ms/sample")
    print(f"  estimated speed-up over retraining: {epochs * min(train_t) / (fraction * min(fisher_t)):.1f}x (min), "
          f"{epochs * statistics.median(train_t) / (fraction * statistics.median(fisher_t)):.1f}x (median)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["diag", "layers", "retrain", "estimate"])
    parser.add_argument("--preset", default="quickstart", help=f"diag: {', '.join(PRESETS)}")
    parser.add_argument("--size", type=int, default=None, help="diag: image side (overrides the preset's)")
    parser.add_argument("--width", type=float, default=None, help="diag: All-CNN width (overrides the preset's)")
    parser.add_argument("--old", default=None, help="diag: also time diagonal_fisher of this git revision")
    parser.add_argument("--floor", action="store_true", help="diag: also time the two floors (see above)")
    parser.add_argument("--no-ref", action="store_true", help="diag: leave out the reference loop")
    parser.add_argument("--n", type=int, default=64, help="diag, estimate: number of Fisher samples")
    parser.add_argument("--backend", default="auto", help="diag: diagonal_fisher backend")
    parser.add_argument("--device", default="cpu", help="diag: cpu or cuda")
    parser.add_argument("--config", default="configs/benchmark/quickstart.yaml", help="retrain: benchmark config")
    parser.add_argument("--shape", default="3,32,32", help="estimate: input C,H,W")
    parser.add_argument("--classes", type=int, default=10, help="estimate: number of classes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    benches = {"diag": bench_diag, "layers": bench_layers, "retrain": bench_retrain, "estimate": bench_estimate}
    return benches[args.what](args)


if __name__ == "__main__":
    sys.exit(main())
