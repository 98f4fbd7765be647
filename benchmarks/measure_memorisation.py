"""Does the original of a benchmark config memorise? Train it (and, per forget target, the gold model) over seeds.

    python benchmarks/measure_memorisation.py -c configs/benchmark/quickstart.yaml [--seeds '[0, 1, 2]'] \
        [--gold random,sub-class] [any benchmark key, e.g. --training.max_epochs 30]

Prints per seed the original's train accuracy (on D = D_r + D_f), test accuracy and their gap, and for every scenario
named in ``--gold`` the original's and the gold model's accuracy on D_f, their difference (|ΔAcc D_f|) and both
models' MIA-efficacy, as the benchmark's ``Original`` and ``Retrain`` rows would report them; then mean ± std over
seeds and the wall time of each phase (what a full benchmark's training phase costs). Nothing is written to disk.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

from lightning_unlearn.benchmark import build_backbone_for, build_datamodule, load_config


CPU: list[float] = []  # process CPU time of every training: the wall time on an idle core (num_threads 1)


def train(cfg: Any, target: Any, seed: int, train_on: str) -> tuple[Any, float]:
    import lightning.pytorch as pl

    from lightning_unlearn.methods import Classifier

    dm = build_datamodule(cfg, target, seed, train_on=train_on)
    pl.seed_everything(seed, workers=True, verbose=False)
    model = Classifier(build_backbone_for(cfg, dm), **cfg.training.classifier_kwargs())
    t0, c0 = time.perf_counter(), time.process_time()
    trainer = pl.Trainer(max_epochs=cfg.training.epochs("original" if train_on == "all" else "gold"),
                         accelerator=cfg.trainer.accelerator, devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    CPU.append(time.process_time() - c0)
    return model.model.eval(), time.perf_counter() - t0


def main(argv: list[str]) -> None:
    gold_scenarios: list[str] = []
    if "--gold" in argv:
        i = argv.index("--gold")
        gold_scenarios = [s for s in argv[i + 1].split(",") if s]
        del argv[i : i + 2]
    cfg = load_config(argv)
    if cfg.trainer.num_threads:
        import torch

        torch.set_num_threads(int(cfg.trainer.num_threads))
    from lightning_unlearn.experiment import quiet
    from lightning_unlearn.evaluation import UnlearningEvaluator

    ev_args = {k: v for k, v in cfg.evaluator.items() if k in ("nonmember_split", "seed")}
    table: dict[str, list[float]] = {}
    phases: dict[str, list[float]] = {}

    def put(key: str, value: float) -> None:
        table.setdefault(key, []).append(value)

    with quiet(True):
        for seed in cfg.seeds:
            first = cfg.scenarios[0].targets[0]
            original, t = train(cfg, first, seed, "all")
            phases.setdefault("original", []).append(t)
            dm = build_datamodule(cfg, first, seed)
            r = UnlearningEvaluator(mia=False, zrf=False, **ev_args).evaluate(original, dm)
            n_r, n_f = r["n/retain"], r["n/forget"]
            train_acc = (r["acc/retain"] * n_r + r["acc/forget"] * n_f) / (n_r + n_f)
            put("train acc", 100 * train_acc)
            put("test acc", 100 * r["acc/test"])
            put("train-test gap", 100 * (train_acc - r["acc/test"]))
            line = f"seed {seed}: train {100 * train_acc:.2f}, test {100 * r['acc/test']:.2f} ({t:.1f}s)"
            for sc in cfg.scenarios:
                if sc.name not in gold_scenarios:
                    continue
                for target in sc.targets:
                    gold, tg = train(cfg, target, seed, "retain")
                    phases.setdefault("gold", []).append(tg)
                    dm = build_datamodule(cfg, target, seed)
                    t0 = time.perf_counter()
                    ro = UnlearningEvaluator(gold=gold, zrf=False, **ev_args).evaluate(original, dm)
                    phases.setdefault("evaluation (one row)", []).append(time.perf_counter() - t0)
                    name = f"{sc.name}/{target.describe()}"
                    put(f"{name} |ΔAcc D_f|", 100 * ro["gold/forget_acc_gap"])
                    put(f"{name} MIA-eff Original", 100 * ro["mia/efficacy"])
                    put(f"{name} MIA-eff Retrain", 100 * ro["gold/mia/efficacy"])
                    line += (f"; {sc.name}: acc D_f {100 * ro['acc/forget']:.2f} vs gold {100 * ro['gold/acc/forget']:.2f},"
                             f" MIA-eff {100 * ro['mia/efficacy']:.1f} vs {100 * ro['gold/mia/efficacy']:.1f} ({tg:.1f}s)")
            print(line, flush=True)
    print("\nmean ± std over seeds", [int(s) for s in cfg.seeds])
    for key, vals in table.items():
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        print(f"  {key}: {statistics.fmean(vals):.2f} ± {sd:.2f}  (min {min(vals):.2f}, max {max(vals):.2f})")
    print("wall time per phase (s): " + ", ".join(f"{k} {statistics.fmean(v):.1f} (x{len(v)})" for k, v in phases.items()))
    print(f"CPU time per training (s): {statistics.fmean(CPU):.1f} (x{len(CPU)}; = wall time on an idle machine with "
          "num_threads 1)")


if __name__ == "__main__":
    main(sys.argv[1:])
