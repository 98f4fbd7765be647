"""Each method's unlearning time against a bare torch loop doing exactly the passes its algorithm needs, interleaved.

    python benchmarks/method_overhead.py [--setting quickstart|fmnist14|fmnist28|resnet32] [--repeats 3]
        [--methods Finetune,SCRUB] [--threads 1] [--epochs 10] [--device cpu]

Settings (``--setting``; class 3 forgotten, no augmentation, ``--epochs`` epochs of the original at the start):

==========  =========================================================================================================
quickstart  the quickstart's data (digits 4x4, half held out) and model (All-CNN width 0.25), batch 64
fmnist14    configs/benchmark/fashion_mnist.yaml's data and model (Fashion-MNIST at 14x14, All-CNN width 0.25, batch
            128) on the first 3,000 training images (half held out: D = 1,500)
fmnist28    fashion_mnist_gpu.yaml's (Fashion-MNIST at 28x28, All-CNN width 1.0, batch 128), same 3,000 images
resnet32    cifar10_resnet18.yaml's model (ResNet-18 at 3x32x32) on 240 random CIFAR-shaped images (D = 120), batch
            32; methods capped at 2 epochs; UNSIR's noise 32 images x 10 steps
==========  =========================================================================================================

Each method with the quickstart's ``init_args`` and ``max_epochs`` (bar the caps above). Per repeat and method, in
turn: ``Trainer.fit`` of the method (no logger, checkpoint, progress bar or evaluation) timed by the method's own
timer (``unlearn_time_s``: what the benchmark reports), then the bare loop; min and median over the repeats, the
ratios method / bare (min/min, median/median), by wall time and by the process's CPU time in the same windows (less
disturbed by other jobs on a shared machine), and the load average before and after.

The bare loop holds the splits as tensors, shuffles with ``randperm``, slices batches, and does per batch only the
algorithm's passes with the method's batch sizes (plus the optimizer step):

==================  =================================================================================================
Finetune, L1Sparse  D_r: forward, CE (+ L1 norm of the weights), backward, SGD step
RandomLabels        D_f + D_r shuffled together: forward, CE, backward, step
SalUn               once: gradient of CE over D_f (eval mode, forward+backward, no step), ``saliency_mask``; then
                    RandomLabels' passes with the gradients outside the mask zeroed before each step and those
                    weights restored after it
NegativeGradient    D_f: forward, -CE, backward, step
BadTeacher          D_f + 30% of D_r: 2 teacher forwards (no grad), student forward, KL, backward, step
BoundaryShrink      once: FGSM over D_f on the original (forward+backward for the input gradient, forward of the
                    adversarial batch); then D_f with the neighbour labels: forward, CE, backward, step
BoundaryExpanding   D_f: forward (widened head), CE to the shadow class, backward, step
SCRUB               epochs < msteps: D_f max-pass (teacher forward, student forward, -KL, backward, step); every
                    epoch: D_r min-pass (teacher forward, student forward, KL + CE, backward, step)
FisherForgetting    once: ``diagonal_fisher`` (expected, the method's backend) of every D_r batch of 64, summed and
                    normalised; then per parameter ``fisher_noise_variance`` and seeded Gaussian noise
SSD                 once: ``loss_gradient`` squared of every batch of 64 of D_f, then of D = D_r + D_f (sorted), each
                    summed and divided by its batch count; then ``ssd_dampen`` per parameter
AmnesiacRelabel     RandomLabels' passes with fixed random *other* labels on D_f and Adam
Amnesiac            once: read the recorded updates (``torch.load``) and subtract their sums (parameters and
                    buffers); then D_r: forward, CE, backward, Adam step
UNSIR               once per forgotten class: ``error_maximizing_noise``; epoch 0 (impair): noise copies + the D_r
                    subset shuffled together, CE, Adam; later epochs (repair): the D_r subset, CE, a second Adam
TwinUnlearning      once: D_e from the holdout (``select_twin_set``), the twin = original fine-tuned on D + D_e (Adam),
                    NF (features of D_r, D_e, D_f under twin/original, ``nearest_distance``), AF
                    (``adversarial_feature``), CF (a fresh model trained on D_r, ``per_sample_loss``), the MLP
                    (``train_easy_hard_classifier``); then D_f + 20% of D_r: ``twin_unlearning_loss``, SGD step
                    (D_e's augmented copies are left unaugmented)
==================  =================================================================================================

The original model is trained with an ``AmnesiacRecorder`` (D_f sensitive), as the benchmark trains it, for Amnesiac.
``--device cuda`` runs both sides on the GPU (the bare loop synchronises before reading its clock; the method's timer
ends after its epoch-end reads); ``benchmarks/gpu_check.py`` uses this module.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_unlearn.attacks import fgsm
from lightning_unlearn.backbones import AllCNN, ResNet18
from lightning_unlearn.data import DigitsDataModule, FashionMNISTDataModule, ForgetSpec, UnlearningDataModule
from lightning_unlearn.data.datasets import InMemoryImages
from lightning_unlearn.methods import (
    SCRUB,
    UNSIR,
    Amnesiac,
    AmnesiacRecorder,
    AmnesiacRelabel,
    BadTeacher,
    BoundaryExpanding,
    BoundaryShrink,
    Classifier,
    Finetune,
    FisherForgetting,
    L1Sparse,
    NegativeGradient,
    RandomLabels,
    SalUn,
    SelectiveSynapticDampening,
    TwinUnlearning,
)
from lightning_unlearn.backbones import build_backbone
from lightning_unlearn.methods import twin_classifier as tc
from lightning_unlearn.methods import twin_features as tf
from lightning_unlearn.methods import twin_loss as tl
from lightning_unlearn.methods import twin_set as ts
from lightning_unlearn.methods.base import loss_gradient
from lightning_unlearn.methods.fisher import diagonal_fisher, fisher_noise_variance
from lightning_unlearn.methods.salun import saliency_mask
from lightning_unlearn.methods.ssd import ssd_dampen
from lightning_unlearn.methods.unsir import error_maximizing_noise

METHODS: dict[str, tuple[type, dict[str, Any], int]] = {  # the quickstart's settings
    "Finetune": (Finetune, {"lr": 0.01}, 3),
    "L1Sparse": (L1Sparse, {"lr": 0.01, "alpha": 0.0001}, 3),
    "RandomLabels": (RandomLabels, {"lr": 0.01}, 3),
    "SalUn": (SalUn, {"lr": 0.01}, 3),
    "NegativeGradient": (NegativeGradient, {"lr": 0.001}, 5),
    "BadTeacher": (BadTeacher, {"lr": 0.001, "retain_fraction": 0.3}, 1),
    "BoundaryShrink": (BoundaryShrink, {"epsilon": 0.1, "lr": 0.003}, 5),
    "BoundaryExpanding": (BoundaryExpanding, {"shadow_init": "linear", "train_bn": False, "lr": 0.0001}, 7),
    "SCRUB": (SCRUB, {"lr": 0.01, "forget_batch_size": 32, "batch_size": 64}, 3),
    "FisherForgetting": (FisherForgetting, {"alpha": 0.000001}, 1),
    "SSD": (SelectiveSynapticDampening, {"alpha": 30.0}, 1),
    "AmnesiacRelabel": (AmnesiacRelabel, {"lr": 0.001}, 3),
    "Amnesiac": (Amnesiac, {"lr": 0.001}, 3),  # updates: recorded when the original is trained (main)
    "TwinUnlearning": (TwinUnlearning, {"twin_epochs": 2, "cf_epochs": 1, "classifier_epochs": 50}, 3),
    "UNSIR": (UNSIR, {"lr": 0.002, "repair_lr": 0.001, "noise_copies": 2, "batch_size": 256}, 2),
}
#: The methods whose pass is not a training loop (one pass over the data, then an edit of the weights).
ONE_PASS = ("FisherForgetting", "SSD")
#: The methods whose optimizer is Adam (weight decay 0), as the quickstart runs them.
ADAM = ("AmnesiacRelabel", "Amnesiac", "UNSIR")

#: name -> data, image side, model, All-CNN width, batch, training images kept (None: all), cap on method epochs,
#: init_args overrides per method (see the module docstring).
SETTINGS: dict[str, dict[str, Any]] = {
    "quickstart": dict(data="digits", size=4, model="allcnn", width=0.25, batch=64, n=None, cap=None, kw={}),
    "fmnist14": dict(data="fashion_mnist", size=14, model="allcnn", width=0.25, batch=128, n=3000, cap=None, kw={}),
    "fmnist28": dict(data="fashion_mnist", size=28, model="allcnn", width=1.0, batch=128, n=3000, cap=None, kw={}),
    "resnet32": dict(data="synthetic", size=32, model="resnet18", width=None, batch=32, n=240, cap=2,
                     kw={"UNSIR": {"batch_size": 32, "noise_batch_size": 32, "noise_steps": 10}}),
}


class _FirstImages(FashionMNISTDataModule):
    """Fashion-MNIST cut to its first ``n`` training and ``n // 3`` test images (not shared across DataModules)."""

    def __init__(self, n: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n = n

    def dataset_key(self) -> None:
        return None

    def load_datasets(self) -> tuple[InMemoryImages, InMemoryImages]:
        train, test = super().load_datasets()
        cut = lambda d, m: InMemoryImages(d.images[:m], d.targets[:m])  # type: ignore[attr-defined]  # noqa: E731
        return cut(train, self.n), cut(test, self.n // 3)


class SyntheticCIFAR(UnlearningDataModule):
    """``n`` random uint8 images ``(3, size, size)`` in 10 classes (seeded) and ``n // 3`` test images."""

    name = "synthetic_cifar"
    num_classes = 10
    in_channels = 3
    mean = (0.5, 0.5, 0.5)
    std = (0.29, 0.29, 0.29)

    def __init__(self, n: int = 400, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n = n

    def load_datasets(self) -> tuple[InMemoryImages, InMemoryImages]:
        gen = torch.Generator().manual_seed(0)
        m = self.n + self.n // 3
        images = torch.randint(0, 256, (m, 3, self.image_size, self.image_size), generator=gen, dtype=torch.uint8)
        targets = (torch.arange(m) % 10)[torch.randperm(m, generator=gen)].numpy()
        return InMemoryImages(images[: self.n], targets[: self.n]), InMemoryImages(images[self.n :], targets[self.n :])


def build(setting: str) -> tuple[UnlearningDataModule, nn.Module]:
    """The setting's DataModule (set up) and an untrained model (seed 0)."""
    cfg = SETTINGS[setting]
    common = dict(forget=ForgetSpec(classes=[3]), image_size=cfg["size"], batch_size=cfg["batch"], augment=False)
    if cfg["data"] == "digits":
        dm: UnlearningDataModule = DigitsDataModule(holdout_fraction=0.5, **common)
    elif cfg["data"] == "fashion_mnist":
        dm = _FirstImages(cfg["n"], holdout_fraction=0.5, **common)
    else:
        dm = SyntheticCIFAR(cfg["n"], holdout_fraction=0.5, **common)
    dm.setup()
    pl.seed_everything(0, verbose=False)
    shape = dict(num_classes=10, in_channels=dm.in_channels, image_size=cfg["size"], mean=list(dm.mean),
                 std=list(dm.std))
    net = AllCNN(width=cfg["width"], **shape) if cfg["model"] == "allcnn" else ResNet18(**shape)
    return dm, net


def settings_of(name: str, setting: str) -> tuple[type, dict[str, Any], int]:
    """The method's class, ``init_args`` and epochs in ``setting``."""
    cls, kw, epochs = METHODS[name]
    cfg = SETTINGS[setting]
    return cls, {**kw, **cfg["kw"].get(name, {})}, min(epochs, cfg["cap"] or epochs)


def method_batch(name: str, kw: dict[str, Any], dm: UnlearningDataModule) -> int:
    """The method's batch size: its ``init_args``, else its class default (64 for the one-pass methods, BS, BE, TMU),
    else (``None``) the DataModule's."""
    default = inspect.signature(METHODS[name][0].__init__).parameters.get("batch_size")
    return int(kw.get("batch_size", default.default if default is not None else None) or dm.batch_size)


def trainer(epochs: int, device: str = "cpu") -> pl.Trainer:
    return pl.Trainer(
        max_epochs=epochs, accelerator="gpu" if device.startswith("cuda") else "cpu", devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        num_sanity_val_steps=0,
    )


class Data:
    """The splits as tensors (images float in [0, 1], labels) on ``device``."""

    def __init__(self, dm: UnlearningDataModule, device: str = "cpu") -> None:
        base = dm.train_set
        images = base.images.float().div(255.0).to(device)  # type: ignore[attr-defined]
        targets = torch.tensor(base.targets).to(device)  # type: ignore[attr-defined]
        self.split = {}
        self.images, self.targets = images, targets
        self.retain_idx = torch.as_tensor(dm.indices("retain"), device=device)
        self.forget_idx = torch.as_tensor(dm.indices("forget"), device=device)
        for name, idx in (("retain", self.retain_idx), ("forget", self.forget_idx)):
            self.split[name] = (images[idx], targets[idx])
        hold = torch.as_tensor(dm.indices("holdout"), device=device)
        self.split["holdout"] = (images[hold], targets[hold])

    def batches(self, x: Tensor, y: Tensor, bs: int) -> list[tuple[Tensor, Tensor]]:
        order = torch.randperm(len(y), device=y.device)
        return [(x[p], y[p]) for p in order.split(bs)]


def sgd(model: nn.Module, lr: float, momentum: float = 0.9, wd: float = 5e-4) -> torch.optim.Optimizer:
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=momentum,
                           weight_decay=wd)


def step(opt: torch.optim.Optimizer, loss: Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def bare(name: str, net: nn.Module, data: Data, kw: dict[str, Any], epochs: int, bs: int, eval_bs: int = 256) -> float:
    """Seconds of the bare loop of ``name`` (the model copy is made before the clock starts); ``bs``: the method's
    batch size, ``eval_bs``: the DataModule's evaluation batch size (BoundaryShrink's neighbour search)."""
    dev = data.split["retain"][0].device
    model = copy.deepcopy(net).to(dev).train()
    teacher = copy.deepcopy(net).to(dev).eval().requires_grad_(False)
    (xr, yr), (xf, yf) = data.split["retain"], data.split["forget"]
    extra: dict[str, Any] = {}
    if name == "BadTeacher":
        extra["random"] = copy.deepcopy(net).to(dev).eval().requires_grad_(False)
    if name == "BoundaryExpanding":
        model.head = nn.Linear(model.head.in_features, model.head.out_features + 1).to(dev)
    _sync(dev)
    t0 = time.perf_counter()
    lr = float(kw.get("lr", 0.01))
    opt = torch.optim.Adam(model.parameters(), lr=lr) if name in ADAM else sgd(model, lr)
    if name in ONE_PASS:
        one_pass(name, model, data, kw, bs)
        _sync(dev)
        return time.perf_counter() - t0
    if name == "TwinUnlearning":
        twin(model, teacher, data, kw, epochs)
        _sync(dev)
        return time.perf_counter() - t0
    if name == "Amnesiac":
        with torch.no_grad():
            rec = torch.load(kw["updates"], map_location=dev, weights_only=True)
            for n, p in model.named_parameters():
                p.sub_(rec["param_sum"][n])
            buffers = dict(model.named_buffers())
            for n, d in rec.get("buffer_sum", {}).items():
                buffers[n].sub_(d)
                if n.endswith("running_var"):
                    buffers[n].clamp_(min=0.0)
    if name == "AmnesiacRelabel":
        r = torch.randint(0, 9, yf.shape, device=dev)
        x_all, y_all = torch.cat([xf, xr]), torch.cat([r + (r >= yf).long(), yr])
    if name == "UNSIR":
        shape = (int(kw.get("noise_batch_size", 256)), *xf.shape[1:])
        noise, _ = error_maximizing_noise(model, 3, shape, steps=int(kw.get("noise_steps", 40)), lr=0.1, reg=0.1,
                                          generator=torch.Generator().manual_seed(0))
        x_imp = torch.cat([noise.repeat(int(kw["noise_copies"]), 1, 1, 1), xr])
        y_imp = torch.cat([torch.full((len(noise) * int(kw["noise_copies"]),), 3, device=dev), yr])
        repair = torch.optim.Adam(model.parameters(), lr=float(kw["repair_lr"]))
    if name in ("RandomLabels", "SalUn"):
        if name == "SalUn":  # the saliency pass (eval mode, summed CE), the mask, then masked steps (below)
            model.eval().zero_grad()
            for x, y in data.batches(xf, yf, bs):
                F.cross_entropy(model(x), y, reduction="sum").backward()
            masks = saliency_mask({n: p.grad for n, p in model.named_parameters()}, 0.5)
            extra["theta0"] = {n: p.detach().clone() for n, p in model.named_parameters()}
            extra["masks"], extra["fmasks"] = masks, {n: m.float() for n, m in masks.items()}
            model.zero_grad(set_to_none=True)
            model.train()
        x_all, y_all = torch.cat([xf, xr]), torch.cat([torch.randint(0, 10, yf.shape, device=dev), yr])
    if name == "BoundaryShrink":
        labels = []
        for x, y in [(xf[i : i + eval_bs], yf[i : i + eval_bs]) for i in range(0, len(yf), eval_bs)]:
            adv = fgsm(teacher, x, y, float(kw["epsilon"]), clamp=True)
            with torch.no_grad():
                labels.append(teacher(adv).argmax(1))
        yf = torch.cat(labels)
    if name == "BadTeacher":
        keep = torch.randperm(len(yr), device=dev)[: max(1, round(0.3 * len(yr)))]
        x_all = torch.cat([xf, xr[keep]])
        is_f = torch.cat([torch.ones(len(yf), device=dev), torch.zeros(len(keep), device=dev)]).bool()
    for epoch in range(epochs):
        if name == "UNSIR":
            xs, ys, o = (x_imp, y_imp, opt) if epoch == 0 else (xr, yr, repair)
            for x, y in data.batches(xs, ys, bs):
                step(o, F.cross_entropy(model(x), y))
        elif name in ("Finetune", "L1Sparse", "Amnesiac"):
            for x, y in data.batches(xr, yr, bs):
                loss = F.cross_entropy(model(x), y)
                if name == "L1Sparse":
                    loss = loss + float(kw["alpha"]) * sum(p.abs().sum() for p in model.parameters())
                step(opt, loss)
        elif name in ("RandomLabels", "AmnesiacRelabel"):
            for x, y in data.batches(x_all, y_all, bs):
                step(opt, F.cross_entropy(model(x), y))
        elif name == "SalUn":  # gradients outside the mask zeroed before the step, those weights restored after it
            params = dict(model.named_parameters())
            for x, y in data.batches(x_all, y_all, bs):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
                for n, p in params.items():
                    p.grad.mul_(extra["fmasks"][n])
                opt.step()
                with torch.no_grad():
                    for n, p in params.items():
                        p.copy_(torch.where(extra["masks"][n], p, extra["theta0"][n]))
        elif name in ("NegativeGradient", "BoundaryShrink"):
            sign = -1.0 if name == "NegativeGradient" else 1.0
            for x, y in data.batches(xf, yf, bs):
                step(opt, sign * F.cross_entropy(model(x), y))
        elif name == "BoundaryExpanding":
            for x, _ in data.batches(xf, yf, bs):
                step(opt, F.cross_entropy(model(x), torch.full((len(x),), 10, device=dev)))
        elif name == "BadTeacher":
            for x, f in data.batches(x_all, is_f, bs):
                with torch.no_grad():
                    good, badp = teacher(x), extra["random"](x)
                target = torch.where(f[:, None], F.softmax(badp, 1), F.softmax(good, 1))
                step(opt, F.kl_div(F.log_softmax(model(x), 1), target, reduction="batchmean"))
        elif name == "SCRUB":
            passes = [("max", xf, yf, int(kw["forget_batch_size"]))] if epoch < 2 else []
            for phase, xs, ys, b in [*passes, ("min", xr, yr, int(kw["batch_size"]))]:
                for x, y in data.batches(xs, ys, b):
                    with torch.no_grad():
                        t = teacher(x)
                    s = model(x)
                    kl = F.kl_div(F.log_softmax(s / 4, 1), F.softmax(t / 4, 1), reduction="batchmean")
                    step(opt, -kl if phase == "max" else 0.001 * kl + 0.99 * F.cross_entropy(s, y))
    _sync(dev)
    return time.perf_counter() - t0


@torch.no_grad()
def one_pass(name: str, model: nn.Module, data: Data, kw: dict[str, Any], bs: int) -> None:
    """FisherForgetting's and SSD's pass (importances of sequential batches) and their weight edit."""
    (xr, yr), (xf, yf) = data.split["retain"], data.split["forget"]
    chunks = lambda x, y: [(x[i : i + bs], y[i : i + bs]) for i in range(0, len(y), bs)]  # noqa: E731
    params = dict(model.named_parameters())
    if name == "FisherForgetting":
        acc = {n: torch.zeros_like(p) for n, p in params.items()}
        with torch.enable_grad():
            for x, y in chunks(xr, yr):
                for n, f in diagonal_fisher(model, x, y, fisher_type="expected").items():
                    acc[n] += f
        gen = torch.Generator().manual_seed(0)
        head = {id(p) for p in model.head.parameters()}
        for n, p in params.items():
            is_head = id(p) in head
            var, zero = fisher_noise_variance(acc[n] / len(yr), alpha=float(kw["alpha"]), is_head=is_head,
                                              forget_rows=[3] if is_head else None)
            mu = p.float() if zero is None else p.float().masked_fill(zero, 0.0)
            p.copy_(mu + var.sqrt() * torch.randn(p.shape, generator=gen).to(p.device))
        return
    order = torch.cat([data.forget_idx, data.retain_idx]).sort().values
    full = (data.images[order], data.targets[order])
    imps = []
    for x_all, y_all in ((xf, yf), full):
        acc = {n: torch.zeros_like(p) for n, p in params.items()}
        batches = chunks(x_all, y_all)
        with torch.enable_grad():
            for x, y in batches:
                for n, g in loss_gradient(model, x, y).items():
                    acc[n] += g.pow(2)
        imps.append({n: v / len(batches) for n, v in acc.items()})
    for n, p in params.items():
        p.copy_(ssd_dampen(p, imps[1][n], imps[0][n], float(kw["alpha"]), 1.0)[0])


def twin(model: nn.Module, original: nn.Module, data: Data, kw: dict[str, Any], epochs: int) -> None:
    """TwinUnlearning's passes with its defaults (batch 64, eval batch 128, seed 0) and the quickstart's epochs."""
    (xr, yr), (xf, yf) = data.split["retain"], data.split["forget"]
    xh, yh = data.split["holdout"]
    seed, ebs = 0, 128
    size = ts.twin_set_size(len(yf), len(yr), len(yr) + len(yf))
    dev = xr.device
    sel = ts.select_twin_set(yh.cpu().numpy(), yf.cpu().numpy(), seed=seed, size=size)
    x_e, y_e = xh[torch.as_tensor(sel.positions, device=dev)], yh[torch.as_tensor(sel.positions, device=dev)]

    def shuffled(x: Tensor, y: Tensor, bs: int, s: int):  # noqa: ANN202
        def epoch_batches(epoch: int) -> list[tuple[Tensor, Tensor]]:
            order = torch.randperm(len(y), generator=torch.Generator().manual_seed(s * 100_003 + epoch)).to(dev)
            return [(x[p], y[p]) for p in order.split(bs)]

        return epoch_batches

    tw = copy.deepcopy(original).requires_grad_(True)
    x_d, y_d = torch.cat([xr, xf, x_e]), torch.cat([yr, yf, y_e])
    tf.train_from_scratch(tw, shuffled(x_d, y_d, 64, seed), int(kw["twin_epochs"]),
                          torch.optim.Adam(tw.parameters(), lr=1e-4))
    tw.requires_grad_(False).eval()
    chunks = lambda f, x, y: torch.cat([f(x[i : i + ebs], y[i : i + ebs]) for i in range(0, len(y), ebs)])  # noqa: E731
    with torch.no_grad():
        easy = chunks(lambda x, y: original(x).argmax(1) == y, x_e, y_e).cpu()
        bank_t, bank_o = chunks(lambda x, y: tw.features(x), xr, yr), chunks(lambda x, y: original.features(x), xr, yr)
        phi_e, phi_f = chunks(lambda x, y: tw.features(x), x_e, y_e), chunks(lambda x, y: original.features(x), xf, yf)
    cols_e = [tf.nearest_distance(phi_e, y_e, bank_t, yr, k=5, normalize=False)]
    cols_f = [tf.nearest_distance(phi_f, yf, bank_o, yr, k=5, normalize=False)]
    gen = torch.Generator().manual_seed(seed)
    af = dict(epsilon=4 / 255, alpha=None, steps=5, target="soft", generator=gen)
    cols_e.append(chunks(lambda x, y: tf.adversarial_feature(tw, x, y, **af), x_e, y_e))
    cols_f.append(chunks(lambda x, y: tf.adversarial_feature(original, x, y, **af), xf, yf))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cf = build_backbone(original.config()).to(dev)
    tf.train_from_scratch(cf, shuffled(xr, yr, 64, seed + 1), int(kw["cf_epochs"]),
                          torch.optim.Adam(cf.parameters(), lr=1e-4))
    cf.requires_grad_(False).eval()
    cols_e.append(chunks(lambda x, y: tf.per_sample_loss(cf, x, y), x_e, y_e))
    cols_f.append(chunks(lambda x, y: tf.per_sample_loss(cf, x, y), xf, yf))
    feat_e, feat_f = torch.stack(cols_e, 1).cpu(), torch.stack(cols_f, 1).cpu()
    held = torch.as_tensor(tc.group_holdout_split(np.asarray(sel.positions), 0.2, seed))
    scaler = tc.Standardizer().fit(feat_e[~held])
    mlp = tc.train_easy_hard_classifier(scaler.transform(feat_e)[~held], easy[~held],
                                        epochs=int(kw["classifier_epochs"]), seed=seed)
    hard_f = ~mlp.predict_easy(scaler.transform(feat_f))
    random_f = tl.draw_other_labels(yf, 10, torch.Generator().manual_seed(seed + 1))
    keep = torch.randperm(len(yr), device=dev)[: round(0.2 * len(yr))]
    x_u, y_u = torch.cat([xf, xr[keep]]), torch.cat([yf, yr[keep]])
    hard = torch.cat([hard_f.to(dev), torch.zeros(len(keep), dtype=torch.bool, device=dev)])
    rand = torch.cat([random_f.to(dev), torch.zeros(len(keep), dtype=torch.long, device=dev)])
    opt = sgd(model, 0.01)
    model.train()
    for _ in range(epochs):
        for p in torch.randperm(len(y_u), device=dev).split(64):
            loss, _ = tl.twin_unlearning_loss(model(x_u[p]), y_u[p], hard[p], random_targets=rand[p], max_hard_loss=5.0)
            step(opt, loss)


class CpuClock(pl.Callback):
    """CPU time of this process between ``on_fit_start`` and ``on_fit_end`` (the window of the method's own timer)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds = -time.process_time()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds += time.process_time()


def run_method(name: str, net: nn.Module, dm: UnlearningDataModule, setting: str = "quickstart",
               device: str = "cpu", configure: Any = None) -> tuple[float, float]:
    """Seconds of the method's own timer and CPU seconds in the same window; ``configure(trainer, method)`` may
    change both before ``fit``."""
    cls, kw, epochs = settings_of(name, setting)
    method = cls(backbone=copy.deepcopy(net), **kw)
    method.retain_collapse = None  # its probes run outside the timer anyway
    t, clock = trainer(epochs, device), CpuClock()
    t.callbacks.append(clock)
    if configure is not None:
        configure(t, method)
    t.fit(method, datamodule=dm)
    return float(method.unlearn_time_s), clock.seconds


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def train_original(dm: UnlearningDataModule, net: nn.Module, epochs: int, device: str = "cpu") -> nn.Module:
    """The original model (``Classifier``, lr 0.05, ``epochs``) with an ``AmnesiacRecorder`` (D_f sensitive), whose
    updates file ``METHODS["Amnesiac"]`` then reads; returns the trained backbone in eval mode."""
    clf = Classifier(net, lr=0.05)
    updates = Path(tempfile.mkdtemp(prefix="method_overhead_")) / "amnesiac_updates.pt"
    recorder = AmnesiacRecorder(sensitive=[int(i) for i in dm.indices("forget")], path=str(updates))
    t = trainer(epochs, device)
    t.callbacks.append(recorder)
    t.fit(clf, datamodule=dm)
    METHODS["Amnesiac"][1]["updates"] = str(updates)
    return clf.model.eval()


def measure(names: list[str], setting: str, repeats: int, epochs: int, device: str = "cpu",
            configure: Any = None) -> dict[str, dict[str, list[float]]]:
    """``{method: {"method": [s, ...], "bare": [s, ...]}}``, method then bare loop, per repeat and method."""
    dm, net = build(setting)
    net = train_original(dm, net, epochs, device)
    data = Data(dm, device)
    times: dict[str, dict[str, list[float]]] = {n: {k: [] for k in ("method", "bare", "method_cpu", "bare_cpu")}
                                                 for n in names}
    for r in range(repeats):
        for n in names:
            pl.seed_everything(r, verbose=False)
            wall, cpu = run_method(n, net, dm, setting, device, configure)
            times[n]["method"].append(wall)
            times[n]["method_cpu"].append(cpu)
            _, kw, ep = settings_of(n, setting)
            c0 = time.process_time()
            times[n]["bare"].append(bare(n, net, data, kw, ep, method_batch(n, kw, dm), dm.eval_batch_size))
            times[n]["bare_cpu"].append(time.process_time() - c0)
    return times


def table(times: dict[str, dict[str, list[float]]], clock: str = "") -> str:
    """Per method: min / median of both sides and the ratios method / bare (min/min, median/median); ``clock``
    ``""`` for wall time (the method's own timer), ``"_cpu"`` for CPU time."""
    lines = [f"{'method':18s} {'method s':>15s} {'bare s':>15s} {'min/min':>8s} {'med/med':>8s}"]
    for n, t in times.items():
        m, b = t["method" + clock], t["bare" + clock]
        lines.append(f"{n:18s} {min(m):6.3f} / {statistics.median(m):6.3f} {min(b):6.3f} / {statistics.median(b):6.3f} "
                     f"{min(m) / min(b):8.2f} {statistics.median(m) / statistics.median(b):8.2f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", choices=list(SETTINGS), default="quickstart")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=10, help="epochs of the original model")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    names = [n for n in args.methods.split(",") if n]
    times = measure(names, args.setting, args.repeats, args.epochs, args.device)
    load1 = os.getloadavg()
    print(f"\n{args.setting}: {args.repeats} repeats, {args.threads} thread(s), {args.device}; load average "
          f"{load0[0]:.1f} before, {load1[0]:.1f} after; seconds min / median; ratio method / bare")
    print("wall time (the method's own timer):")
    print(table(times))
    print("CPU time of the process (same windows):")
    print(table(times, "_cpu"))


if __name__ == "__main__":
    main()
