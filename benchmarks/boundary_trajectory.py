"""How D_f and test-retain accuracy move during Boundary Shrink/Expanding, step by step (issue 23).

    python benchmarks/boundary_trajectory.py -c benchmarks/reproduction/fm_boundary.yaml --method BoundaryExpanding \
        --classes 9 --seed 0 --every 5 --set lr=1e-4 --set max_epochs=3 [--fraction 0.1]

Fine-tunes the method from the benchmark's cached original of ``--seed`` on a class-wise target (``--classes``) or a
random one (``--fraction``), with the config's settings overridden by ``--set`` (the stop rule switched off, so the whole
schedule is seen), and every ``--every`` steps prints the D_f accuracy, the retained-class test accuracy and the
accuracy on D_r, all in eval mode, without changing the run (the evaluation restores the training mode and uses no
random number). Use it on targets other than the evaluated ones to choose a schedule.
"""

from __future__ import annotations

import argparse
import ast
import time
from typing import Any

import lightning.pytorch as pl
import torch


class Trace(pl.Callback):
    def __init__(self, dm: Any, every: int) -> None:
        self.dm, self.every, self.t0 = dm, every, time.perf_counter()

    def _acc(self, module: Any, split: str) -> float:
        from lightning_unlearn.data.datasets import unpack_batch

        right = n = 0
        with torch.no_grad():
            for batch in self.dm.loader(split):
                x, y = unpack_batch(batch)
                right += int((module(x).argmax(1) == y).sum())
                n += len(y)
        return right / max(n, 1)

    def report(self, trainer: Any, module: Any) -> None:
        modes = {m: m.training for m in module.modules()}
        module.eval()
        line = (f"step {trainer.global_step:4d} (epoch {trainer.current_epoch}): D_f {self._acc(module, 'forget'):.4f}, "
                f"test-retain {self._acc(module, 'test_retain'):.4f}, D_r {self._acc(module, 'retain'):.4f}")
        for m, t in modes.items():
            m.training = t
        print(line, f"({time.perf_counter() - self.t0:.0f} s)", flush=True)

    def on_train_start(self, trainer: Any, module: Any) -> None:
        self.report(trainer, module)

    def on_train_batch_end(self, trainer: Any, module: Any, *args: Any) -> None:
        if trainer.global_step % self.every == 0:
            self.report(trainer, module)


def main() -> None:
    from lightning_unlearn.benchmark import build_datamodule, load_config, make_plan
    from lightning_unlearn.benchmark.jobs import set_threads
    from lightning_unlearn.checkpoints import load_backbone
    from lightning_unlearn.data import ForgetSpec

    p = argparse.ArgumentParser()
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--method", default="BoundaryExpanding")
    p.add_argument("--classes", type=int, nargs="*", default=None)
    p.add_argument("--fraction", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--every", type=int, default=5)
    p.add_argument("--set", action="append", default=[])
    args = p.parse_args()
    cfg = load_config(["-c", args.config])
    set_threads(cfg.trainer.num_threads)
    spec = next(m for m in cfg.methods if m.name == args.method)
    kwargs = {**spec.init_args, "stop_at_forget_acc": None}
    epochs = spec.max_epochs
    for item in args.set:
        k, v = item.split("=", 1)
        if k == "max_epochs":
            epochs = int(v)
        else:
            kwargs[k] = ast.literal_eval(v)
    plan = make_plan(cfg)
    group = next(g for g in plan.groups if g.seed == args.seed)
    target = ForgetSpec(classes=args.classes) if args.classes else ForgetSpec(fraction=args.fraction)
    dm = build_datamodule(cfg, target, args.seed)
    dm.setup("fit")
    original, _ = load_backbone(plan.models[group.original_key].ckpt, dm, check_splits=False)
    pl.seed_everything(args.seed, verbose=False)
    method = spec.resolve()(backbone=original, **kwargs)
    print(f"{args.method} {kwargs}, {epochs} epochs, target {target.describe()}, seed {args.seed}")
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0, callbacks=[Trace(dm, args.every)])
    trainer.fit(method, datamodule=dm)


if __name__ == "__main__":
    main()
