"""How strong must TMU's hard term be? Sweep the unlearning settings on one predicted split (issue 23).

    python benchmarks/tmu_sweep.py -c benchmarks/reproduction/fm_tmu.yaml --method TMU --classes 9 --per_class 300 \
        --seed 0 --grid 'lr=[0.01, 0.001]' --grid 'hard_weight=[1.0, 0.1]' [--gold]

Builds the benchmark's DataModule for ``--classes``/``--per_class`` (a sub-class target, by default *not* an evaluation
one), takes the benchmark's cached original of that seed (the training set does not depend on the target), computes
TMU's split once, then fine-tunes a fresh copy for every combination of ``--grid`` values (``name=[v, ...]``,
``max_epochs`` included), and prints D_f / D_r / test accuracy, the accuracy of the predicted-hard and predicted-easy
parts of D_f, the epochs run (the stop rule) and the time. With ``--gold`` a gold model is trained on D_r (the
benchmark's training settings) to report |ΔAcc D_f| as well.
"""

from __future__ import annotations

import argparse
import ast
import copy
import itertools
import time
from typing import Any

import torch


def accuracy(model: Any, dm: Any, split: str) -> float:
    from lightning_unlearn.data.datasets import unpack_batch

    right = n = 0
    model.eval()
    with torch.no_grad():
        for batch in dm.loader(split):
            x, y = unpack_batch(batch)
            right += int((model(x).argmax(1) == y).sum())
            n += len(y)
    return right / max(n, 1)


def per_sample(model: Any, dm: Any) -> torch.Tensor:
    from lightning_unlearn.data.datasets import batch_indices, unpack_batch

    right, idx = [], []
    model.eval()
    with torch.no_grad():
        for batch in dm.loader("forget"):
            x, y = unpack_batch(batch)
            right.append(model(x).argmax(1) == y)
            idx.append(batch_indices(batch))
    return torch.cat(right)[torch.argsort(torch.cat(idx))]


def main() -> None:
    import lightning.pytorch as pl

    from lightning_unlearn.benchmark import build_backbone_for, build_datamodule, load_config, make_plan
    from lightning_unlearn.benchmark.jobs import set_threads
    from lightning_unlearn.checkpoints import load_backbone
    from lightning_unlearn.data import ForgetSpec
    from lightning_unlearn.methods import Classifier

    p = argparse.ArgumentParser()
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--method", default="TwinUnlearning")
    p.add_argument("--classes", type=int, nargs="+", default=[9])
    p.add_argument("--per_class", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid", action="append", default=[])
    p.add_argument("--gold", action="store_true")
    args = p.parse_args()
    cfg = load_config(["-c", args.config])
    set_threads(cfg.trainer.num_threads)
    spec = next(m for m in cfg.methods if m.name == args.method)
    plan = make_plan(cfg)
    group = next(g for g in plan.groups if g.seed == args.seed)
    original_ckpt = plan.models[group.original_key].ckpt
    target = ForgetSpec(classes=args.classes, per_class=args.per_class)
    dm = build_datamodule(cfg, target, args.seed)
    dm.setup("fit")
    original, _ = load_backbone(original_ckpt, dm, check_splits=False)
    gold_right = None
    if args.gold:
        gdm = build_datamodule(cfg, target, args.seed, train_on="retain")
        pl.seed_everything(args.seed, verbose=False)
        g = Classifier(build_backbone_for(cfg, gdm), **cfg.training.classifier_kwargs())
        pl.Trainer(max_epochs=cfg.training.epochs("gold"), accelerator="cpu", logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0).fit(g, datamodule=gdm)
        gold_right = per_sample(g.model, dm)
        print(f"gold: D_f {gold_right.float().mean():.4f}, test {accuracy(g.model, dm, 'test'):.4f}")
    base = spec.resolve()(backbone=copy.deepcopy(original), seed=args.seed, **spec.init_args)
    t0 = time.perf_counter()
    report = base.compute_split(dm)
    hard = base._hard_sorted
    print(f"split: {int(hard.sum())} hard of {len(hard)} (twin hard rate {report['decision']['hard_rate']:.4f}), "
          f"{time.perf_counter() - t0:.1f} s; original: D_f {accuracy(original, dm, 'forget'):.4f}, test "
          f"{accuracy(original, dm, 'test'):.4f}")
    if gold_right is not None:
        from lightning_unlearn.methods.twin_classifier import hard_set_agreement

        print(f"vs gold: {hard_set_agreement(hard, ~gold_right)}")
    names = [g.split("=", 1)[0] for g in args.grid]
    values = [ast.literal_eval(g.split("=", 1)[1]) for g in args.grid]
    for combo in itertools.product(*values):
        setting = dict(zip(names, combo))
        epochs = int(setting.pop("max_epochs", spec.max_epochs))
        method = copy.deepcopy(base)
        for k, v in setting.items():
            method.hparams[k] = v
        pl.seed_everything(args.seed, verbose=False)
        trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                             num_sanity_val_steps=0)
        t0 = time.perf_counter()
        trainer.fit(method, datamodule=dm)
        dt = time.perf_counter() - t0
        out = method.unlearned_backbone()
        right = per_sample(out, dm)
        line = (f"{setting} epochs {method.stopped_epoch or epochs}/{epochs}: D_f {right.float().mean():.4f} "
                f"(hard {right[hard].float().mean():.2f}, easy {right[~hard].float().mean():.4f}), D_r "
                f"{accuracy(out, dm, 'retain'):.4f}, test {accuracy(out, dm, 'test'):.4f}, {dt:.1f} s")
        if gold_right is not None:
            line += f", |dAcc D_f| {abs(float(right.float().mean() - gold_right.float().mean())) * 100:.2f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
