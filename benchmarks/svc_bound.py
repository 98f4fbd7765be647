"""How much bounding the SVC attacks' training set (``svc_max_samples``) changes MIA-efficacy and the entropy attack,
and what it saves.

    python benchmarks/svc_bound.py --config configs/benchmark/fashion_mnist.yaml --ckpt A.ckpt [--ckpt B.ckpt ...]
        [--caps none,8192,4096] [--classes 7]

For each checkpoint: the softmax outputs on D_r, the non-members (D_test_retain, as the evaluator's class-wise
default) and D_f of the config's data with class-wise forgetting of ``--classes``; then ``mia_efficacy`` and
``entropy_mia`` (SVC) with each cap, timed; seed 0 as the evaluator. Members of the entropy attack are capped at
10,000 (``entropy_max_members``) first, as the evaluator does.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import yaml

from lightning_unlearn.checkpoints import load_backbone
from lightning_unlearn.data import ForgetSpec
from lightning_unlearn.evaluation.mia import balanced_subset, entropy_mia, mia_efficacy


def datamodule(config: str, classes: list[int]):  # noqa: ANN201
    import importlib

    data = yaml.safe_load(open(config))["data"]
    module, name = data["class_path"].rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    dm = cls(forget=ForgetSpec(classes=classes), **data.get("init_args", {}))
    dm.setup()
    return dm


@torch.no_grad()
def probs(model: torch.nn.Module, dm, split: str) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    out, ys = [], []
    for x, y, _ in dm.loader(split):
        out.append(torch.softmax(model(x).float(), 1))
        ys.append(y)
    return torch.cat(out).numpy(), torch.cat(ys).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--ckpt", action="append", required=True)
    ap.add_argument("--caps", default="none,8192,4096")
    ap.add_argument("--classes", default="7")
    args = ap.parse_args()
    torch.set_num_threads(1)
    dm = datamodule(args.config, [int(c) for c in args.classes.split(",")])
    caps = [None if c == "none" else int(c) for c in args.caps.split(",")]
    for path in args.ckpt:
        model, _ = load_backbone(path, dm)
        model.eval()
        (pr, yr), (pt, yt), (pf, yf) = (probs(model, dm, s) for s in ("retain", "test_retain", "forget"))
        er = pr[balanced_subset(len(pr), 10_000, 1)] if len(pr) > 10_000 else pr
        print(f"\n{path}: |D_r| {len(pr)}, non-members {len(pt)}, |D_f| {len(pf)}")
        for cap in caps:
            t0 = time.perf_counter()
            eff = mia_efficacy(pr, yr, pt, yt, pf, yf, seed=0, max_samples=cap)
            t1 = time.perf_counter()
            ent = entropy_mia(er, pt, pf, attack="svc", seed=0, max_samples=cap)
            t2 = time.perf_counter()
            print(f"  cap {cap!s:>5}: mia/efficacy {eff:.4f} ({t1 - t0:6.1f} s)   mia/entropy {ent:.4f} ({t2 - t1:6.1f} s)")


if __name__ == "__main__":
    main()
