"""Each method's unlearning time against a bare torch loop doing exactly the passes its algorithm needs, interleaved.

    python benchmarks/method_overhead.py [--repeats 3] [--methods Finetune,SCRUB] [--threads 1] [--epochs 10]

Setting: the quickstart's data (digits 4x4, half held out, no augmentation, class 3 forgotten) and model (All-CNN
width 0.25, trained ``--epochs`` epochs once at the start), each method with the quickstart's ``init_args`` and
``max_epochs``. Per repeat and method, in turn: ``Trainer.fit`` of the method (no logger, checkpoint, progress bar or
evaluation) timed by the method's own timer (``unlearn_time_s``: what the benchmark reports), then the bare loop.

The bare loop holds the splits as tensors, shuffles with ``randperm``, slices batches, and does per batch only the
algorithm's passes with the method's batch sizes (plus the optimizer step):

==================  =================================================================================================
Finetune, L1Sparse  D_r: forward, CE (+ L1 norm of the weights), backward, SGD step
RandomLabels        D_f + D_r shuffled together: forward, CE, backward, step
SalUn               once: gradient of CE over D_f (forward+backward, no step); then RandomLabels' passes
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
Prints per method min and median of both and the ratios method / bare (min/min, median/median).
"""

from __future__ import annotations

import argparse
import copy
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
from lightning_unlearn.backbones import AllCNN
from lightning_unlearn.data import DigitsDataModule, ForgetSpec
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


def trainer(epochs: int) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
    )  # fmt: skip


class Data:
    """The splits as tensors (images float in [0, 1], labels)."""

    def __init__(self, dm: DigitsDataModule) -> None:
        base = dm.train_set
        images = base.images.float().div(255.0)  # type: ignore[attr-defined]
        targets = torch.tensor(base.targets)  # type: ignore[attr-defined]
        self.split = {}
        self.images, self.targets = images, targets
        self.retain_idx, self.forget_idx = torch.as_tensor(dm.indices("retain")), torch.as_tensor(dm.indices("forget"))
        for name, idx in (("retain", self.retain_idx), ("forget", self.forget_idx)):
            self.split[name] = (images[idx], targets[idx])
        hold = torch.as_tensor(dm.indices("holdout"))
        self.split["holdout"] = (images[hold], targets[hold])

    def batches(self, x: Tensor, y: Tensor, bs: int) -> list[tuple[Tensor, Tensor]]:
        order = torch.randperm(len(y))
        return [(x[p], y[p]) for p in order.split(bs)]


def sgd(model: nn.Module, lr: float, momentum: float = 0.9, wd: float = 5e-4) -> torch.optim.Optimizer:
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=momentum,
                           weight_decay=wd)  # fmt: skip


def step(opt: torch.optim.Optimizer, loss: Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def bare(name: str, net: nn.Module, data: Data, kw: dict[str, Any], epochs: int, bs: int) -> float:
    """Seconds of the bare loop of ``name`` (the model copy is made before the clock starts)."""
    model = copy.deepcopy(net).train()
    teacher = copy.deepcopy(net).eval().requires_grad_(False)
    (xr, yr), (xf, yf) = data.split["retain"], data.split["forget"]
    extra: dict[str, Any] = {}
    if name == "BadTeacher":
        extra["random"] = copy.deepcopy(net).eval().requires_grad_(False)
    if name == "BoundaryExpanding":
        model.head = nn.Linear(model.head.in_features, model.head.out_features + 1)
    t0 = time.perf_counter()
    lr = float(kw.get("lr", 0.01))
    opt = torch.optim.Adam(model.parameters(), lr=lr) if name in ADAM else sgd(model, lr)
    if name in ONE_PASS:
        one_pass(name, model, data, kw, bs)
        return time.perf_counter() - t0
    if name == "TwinUnlearning":
        twin(model, teacher, data, kw, epochs)
        return time.perf_counter() - t0
    if name == "Amnesiac":
        with torch.no_grad():
            rec = torch.load(kw["updates"], map_location="cpu", weights_only=True)
            for n, p in model.named_parameters():
                p.sub_(rec["param_sum"][n])
            buffers = dict(model.named_buffers())
            for n, d in rec.get("buffer_sum", {}).items():
                buffers[n].sub_(d)
                if n.endswith("running_var"):
                    buffers[n].clamp_(min=0.0)
    if name == "AmnesiacRelabel":
        r = torch.randint(0, 9, yf.shape)
        x_all, y_all = torch.cat([xf, xr]), torch.cat([r + (r >= yf).long(), yr])
    if name == "UNSIR":
        shape = (256, 1, xf.shape[-1], xf.shape[-1])
        noise, _ = error_maximizing_noise(model, 3, shape, steps=40, lr=0.1, reg=0.1,
                                          generator=torch.Generator().manual_seed(0))  # fmt: skip
        x_imp = torch.cat([noise.repeat(int(kw["noise_copies"]), 1, 1, 1), xr])
        y_imp = torch.cat([torch.full((len(noise) * int(kw["noise_copies"]),), 3), yr])
        repair = torch.optim.Adam(model.parameters(), lr=float(kw["repair_lr"]))
    if name in ("RandomLabels", "SalUn"):
        if name == "SalUn":
            model.zero_grad()
            for x, y in data.batches(xf, yf, bs):
                F.cross_entropy(model(x), y).backward()
            model.zero_grad(set_to_none=True)
        x_all, y_all = torch.cat([xf, xr]), torch.cat([torch.randint(0, 10, yf.shape), yr])
    if name == "BoundaryShrink":
        labels = []
        for x, y in [(xf[i : i + 256], yf[i : i + 256]) for i in range(0, len(yf), 256)]:
            adv = fgsm(teacher, x, y, float(kw["epsilon"]), clamp=True)
            with torch.no_grad():
                labels.append(teacher(adv).argmax(1))
        yf = torch.cat(labels)
    if name == "BadTeacher":
        keep = torch.randperm(len(yr))[: max(1, round(0.3 * len(yr)))]
        x_all, is_f = torch.cat([xf, xr[keep]]), torch.cat([torch.ones(len(yf)), torch.zeros(len(keep))]).bool()
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
        elif name in ("RandomLabels", "SalUn", "AmnesiacRelabel"):
            for x, y in data.batches(x_all, y_all, bs):
                step(opt, F.cross_entropy(model(x), y))
        elif name in ("NegativeGradient", "BoundaryShrink"):
            sign = -1.0 if name == "NegativeGradient" else 1.0
            for x, y in data.batches(xf, yf, bs):
                step(opt, sign * F.cross_entropy(model(x), y))
        elif name == "BoundaryExpanding":
            for x, _ in data.batches(xf, yf, bs):
                step(opt, F.cross_entropy(model(x), torch.full((len(x),), 10)))
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
                                              forget_rows=[3] if is_head else None)  # fmt: skip
            mu = p.float() if zero is None else p.float().masked_fill(zero, 0.0)
            p.copy_(mu + var.sqrt() * torch.randn(p.shape, generator=gen))
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
    sel = ts.select_twin_set(yh.numpy(), yf.numpy(), seed=seed, size=size)
    x_e, y_e = xh[torch.as_tensor(sel.positions)], yh[torch.as_tensor(sel.positions)]

    def shuffled(x: Tensor, y: Tensor, bs: int, s: int):  # noqa: ANN202
        def epoch_batches(epoch: int) -> list[tuple[Tensor, Tensor]]:
            order = torch.randperm(len(y), generator=torch.Generator().manual_seed(s * 100_003 + epoch))
            return [(x[p], y[p]) for p in order.split(bs)]

        return epoch_batches

    tw = copy.deepcopy(original).requires_grad_(True)
    x_d, y_d = torch.cat([xr, xf, x_e]), torch.cat([yr, yf, y_e])
    tf.train_from_scratch(tw, shuffled(x_d, y_d, 64, seed), int(kw["twin_epochs"]),
                          torch.optim.Adam(tw.parameters(), lr=1e-4))  # fmt: skip
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
        cf = build_backbone(original.config())
    tf.train_from_scratch(cf, shuffled(xr, yr, 64, seed + 1), int(kw["cf_epochs"]),
                          torch.optim.Adam(cf.parameters(), lr=1e-4))  # fmt: skip
    cf.requires_grad_(False).eval()
    cols_e.append(chunks(lambda x, y: tf.per_sample_loss(cf, x, y), x_e, y_e))
    cols_f.append(chunks(lambda x, y: tf.per_sample_loss(cf, x, y), xf, yf))
    feat_e, feat_f = torch.stack(cols_e, 1), torch.stack(cols_f, 1)
    held = torch.as_tensor(tc.group_holdout_split(np.asarray(sel.positions), 0.2, seed))
    scaler = tc.Standardizer().fit(feat_e[~held])
    mlp = tc.train_easy_hard_classifier(scaler.transform(feat_e)[~held], easy[~held],
                                        epochs=int(kw["classifier_epochs"]), seed=seed)  # fmt: skip
    hard_f = ~mlp.predict_easy(scaler.transform(feat_f))
    random_f = tl.draw_other_labels(yf, 10, torch.Generator().manual_seed(seed + 1))
    keep = torch.randperm(len(yr))[: round(0.2 * len(yr))]
    x_u, y_u = torch.cat([xf, xr[keep]]), torch.cat([yf, yr[keep]])
    hard = torch.cat([hard_f, torch.zeros(len(keep), dtype=torch.bool)])
    rand = torch.cat([random_f, torch.zeros(len(keep), dtype=torch.long)])
    opt = sgd(model, 0.01)
    model.train()
    for _ in range(epochs):
        for p in torch.randperm(len(y_u)).split(64):
            loss, _ = tl.twin_unlearning_loss(model(x_u[p]), y_u[p], hard[p], random_targets=rand[p], max_hard_loss=5.0)
            step(opt, loss)


def run_method(name: str, net: nn.Module, dm: DigitsDataModule) -> float:
    cls, kw, epochs = METHODS[name]
    method = cls(backbone=copy.deepcopy(net), **kw)
    method.retain_collapse = None  # its probes run outside the timer anyway
    trainer(epochs).fit(method, datamodule=dm)
    return float(method.unlearn_time_s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=10, help="epochs of the original model")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dm = DigitsDataModule(forget=ForgetSpec(classes=[3]), image_size=4, batch_size=64, holdout_fraction=0.5,
                          augment=False)  # fmt: skip
    dm.setup()
    pl.seed_everything(0, verbose=False)
    net = AllCNN(num_classes=10, in_channels=1, image_size=4, width=0.25, mean=list(dm.mean), std=list(dm.std))
    clf = Classifier(net, lr=0.05)
    updates = Path(tempfile.mkdtemp(prefix="method_overhead_")) / "amnesiac_updates.pt"
    recorder = AmnesiacRecorder(sensitive=[int(i) for i in dm.indices("forget")], path=str(updates))
    t = trainer(args.epochs)
    t.callbacks.append(recorder)
    t.fit(clf, datamodule=dm)
    METHODS["Amnesiac"][1]["updates"] = str(updates)
    net = clf.model.eval()
    data = Data(dm)
    names = [n for n in args.methods.split(",") if n]
    times: dict[str, dict[str, list[float]]] = {n: {"method": [], "bare": []} for n in names}
    for r in range(args.repeats):
        for n in names:
            pl.seed_everything(r, verbose=False)
            times[n]["method"].append(run_method(n, net, dm))
            _, kw, epochs = METHODS[n]
            times[n]["bare"].append(bare(n, net, data, kw, epochs, int(kw.get("batch_size") or dm.batch_size)))
    print(f"\n{args.repeats} repeats, {args.threads} thread(s); seconds min / median; ratio method / bare")
    print(f"{'method':18s} {'method s':>15s} {'bare s':>15s} {'min/min':>8s} {'med/med':>8s}")
    for n in names:
        m, b = times[n]["method"], times[n]["bare"]
        print(f"{n:18s} {min(m):6.3f} / {statistics.median(m):6.3f} {min(b):6.3f} / {statistics.median(b):6.3f} "
              f"{min(m) / min(b):8.2f} {statistics.median(m) / statistics.median(b):8.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
