"""Fisher Forgetting speed, measured as interleaved ratios (the machine may be shared: absolute times are not).

    python benchmarks/fisher_speed.py diag [--preset quickstart|fashion|resnet18] [--n 64] [--repeats 3]
    python benchmarks/fisher_speed.py retrain [--config configs/benchmark/quickstart.yaml] [--repeats 3]
    python benchmarks/fisher_speed.py estimate --config CONFIG --shape 3,32,32 --classes 100 [--n 8]

``diag``: the exact ("expected") diagonal Fisher of ``n`` samples by :func:`diagonal_fisher` against the batch-size-1
recipe of the reference code (Golatkar et al., SelectiveForgetting ``hessian``: per sample one forward, then per class
``model.zero_grad(); loss.backward(retain_graph=True); grad2_acc += p_k * grad^2``; its unused ``grad_acc`` and the
DataLoader are left out), both on the same model and samples, alternating within each repeat. Prints min and median
of each, their ratios, and checks that the diagonals agree (max over tensors of max|a - b| / max|b| <= 1e-5; exit 1
if not).

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


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def _preset(name: str, n: int, device: torch.device) -> tuple[nn.Module, Tensor, str]:
    from lightning_unlearn.backbones import AllCNN, ResNet18

    torch.manual_seed(0)
    if name == "quickstart":  # configs/benchmark/quickstart.yaml: All-CNN width 0.25 on 8x8 digits
        from sklearn.datasets import load_digits

        images = torch.tensor(load_digits().images[:n], dtype=torch.float32).unsqueeze(1) / 16.0
        model = AllCNN(num_classes=10, in_channels=1, image_size=8, width=0.25, mean=[0.3], std=[0.4])
        return model.to(device), images.to(device), "All-CNN w0.25, digits 1x8x8 (quickstart)"
    if name == "fashion":  # configs/benchmark/fashion_mnist.yaml: All-CNN width 0.25 on 28x28
        model = AllCNN(num_classes=10, in_channels=1, image_size=28, width=0.25)
        return model.to(device), torch.rand(n, 1, 28, 28, device=device), "All-CNN w0.25, 1x28x28 (fashion_mnist)"
    if name == "resnet18":  # configs/benchmark/cifar10_resnet18.yaml: ResNet-18 CIFAR stem on 32x32
        model = ResNet18(num_classes=10, in_channels=3, image_size=32)
        return model.to(device), torch.rand(n, 3, 32, 32, device=device), "ResNet-18, 3x32x32 (cifar10_resnet18)"
    raise SystemExit(f"unknown preset {name!r}: quickstart, fashion or resnet18")


def _rel_error(a: dict[str, Tensor], b: dict[str, Tensor]) -> float:
    return max(float((a[n] - b[n]).abs().max() / b[n].abs().max().clamp(min=1e-30)) for n in b)


def _stats(times: list[float]) -> str:
    return f"min {min(times):.3f} s, median {statistics.median(times):.3f} s"


def bench_diag(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    model, x, what = _preset(args.preset, args.n, device)
    model.eval()
    fast: list[float] = []
    ref: list[float] = []
    errors: list[float] = []
    diagonal_fisher(model, x[:2])  # warm-up (first-call allocations) for both sides
    reference_fisher(model, x[:1])
    for r in range(args.repeats):
        order = ("ref", "fast") if r % 2 == 0 else ("fast", "ref")
        out: dict[str, Any] = {}
        for side in order:
            if side == "ref":
                t, out["ref"] = _timed(lambda: reference_fisher(model, x), device)
                ref.append(t)
            else:
                t, out["fast"] = _timed(lambda: diagonal_fisher(model, x, backend=args.backend), device)
                fast.append(t)
        errors.append(_rel_error(out["fast"], out["ref"]))
    threads = f"cpu, {torch.get_num_threads()} thread(s)"
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else threads
    print(f"{what}, {args.n} samples, {device_name}, {args.repeats} interleaved repeats")
    print(f"  reference batch-size-1 loop: {_stats(ref)}")
    print(f"  diagonal_fisher ({args.backend}):  {_stats(fast)}")
    print(f"  speed-up: {min(ref) / min(fast):.1f}x (min/min), {statistics.median(ref) / statistics.median(fast):.1f}x "
          f"(median/median); max relative difference {max(errors):.1e}")  # fmt: skip
    if max(errors) > 1e-5:
        print("  FAIL: the diagonals differ by more than 1e-5 (relative)")
        return 1
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
          f"{torch.get_num_threads()} torch thread(s)")  # fmt: skip
    print(f"  gold model training ({cfg.training.epochs('gold')} epochs on D_r): {_stats(gold_t)}")
    print(f"  FisherForgetting ({spec.init_args}, trainer {spec.trainer}): {_stats(fisher_t)}")
    print(f"  speed-up over retraining: {min(gold_t) / min(fisher_t):.1f}x (min/min), "
          f"{statistics.median(gold_t) / statistics.median(fisher_t):.1f}x (median/median)")  # fmt: skip
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
    parser.add_argument("what", choices=["diag", "retrain", "estimate"])
    parser.add_argument("--preset", default="quickstart", help="diag: quickstart, fashion or resnet18")
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
    return {"diag": bench_diag, "retrain": bench_retrain, "estimate": bench_estimate}[args.what](args)


if __name__ == "__main__":
    sys.exit(main())
