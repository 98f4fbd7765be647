"""The spread behind tests/test_twin.py's bounds on TMU's predicted hard set (issue 23).

    python benchmarks/tmu_miniature.py --features [--seeds 20]      # synthetic features, shifted by memorisation
    python benchmarks/tmu_miniature.py --images [--originals 8] [--tmu_seeds 3] [--gold 6]

``--features``: the construction of ``test_paper_threshold_collapses_...`` (a latent difficulty decides hardness;
D_f's NF and AF shrink under the memorising original) over many seeds: the paper rule's predicted hard rate and the
twin-rate rule's precision. ``--images``: the ``LookalikeDataModule`` miniature (class-0 lookalikes of class 1 are the
gold model's hard samples by construction) over originals x TMU seeds: the precision of the predicted hard set against
the lookalikes, the base rate, the paper rule's number of hard samples, and for the first ``--gold`` originals a
trained gold model's agreement with the constructed hard set. Prints each run and min / mean / max.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_twin import (  # noqa: E402 - the test's own construction
    LOOKALIKE_FORGET,
    LOOKALIKE_TMU,
    LookalikeDataModule,
    _difficulty_features,
    lookalike_original,
)

from lightning_unlearn.methods import Classifier, TwinUnlearning  # noqa: E402
from lightning_unlearn.methods.twin_classifier import (  # noqa: E402
    decide_hard,
    hard_set_agreement,
    scale_features,
    train_easy_hard_classifier,
)


def summary(name: str, values: list[float]) -> None:
    print(f"{name}: min {min(values):.3f}  mean {statistics.fmean(values):.3f}  max {max(values):.3f}  (n={len(values)})")


def features(seeds: int) -> None:
    paper_rates, precisions = [], []
    for seed in range(seeds):
        feat_e, hard_e = _difficulty_features(300, 0.1, seed, memorised=False)
        feat_f, hard_f = _difficulty_features(300, 0.1, 1000 + seed, memorised=True)
        z_e, z_f = scale_features(feat_e, feat_f, torch.ones(300, dtype=torch.bool), "twin")
        mlp = train_easy_hard_classifier(z_e, ~hard_e, epochs=100, seed=seed)
        with torch.no_grad():
            logit = mlp(z_f)
        labels = torch.zeros(300, dtype=torch.long)
        paper_rates.append(float(decide_hard(logit, labels, "paper").float().mean()))
        rate = decide_hard(logit, labels, "twin_rate", {0: float(hard_e.float().mean())})
        precisions.append(hard_set_agreement(rate, hard_f)["precision"])
        print(f"seed {seed}: paper predicted hard rate {paper_rates[-1]:.3f}, twin-rate precision {precisions[-1]:.3f}")
    summary("paper predicted hard rate", paper_rates)
    summary("twin-rate precision (base rate 0.10)", precisions)


def images(originals: int, tmu_seeds: int, gold: int) -> None:
    import lightning.pytorch as pl
    from conftest import quiet_trainer

    from lightning_unlearn.backbones import AllCNN

    precisions, bases, paper_hard, agree = [], [], [], []
    for s in range(originals):
        dm, original = lookalike_original(seed=s)
        forget = np.sort(dm.indices("forget"))
        truth = torch.as_tensor(dm.train_lookalike[forget])
        x = torch.stack([dm.train_set[int(i)][0] for i in forget])
        with torch.no_grad():
            orig_acc = float((original(x).argmax(1) == 0).float().mean())
        if s < gold:
            gdm = LookalikeDataModule(forget=LOOKALIKE_FORGET, seed=s, data_seed=s, holdout_fraction=0.3,
                                      augment=False, batch_size=32, train_on="retain")
            pl.seed_everything(s, verbose=False)
            g = Classifier(AllCNN(num_classes=3, in_channels=1, image_size=4, width=0.25, mean=[0.5], std=[0.25]),
                           lr=0.05)
            quiet_trainer(max_epochs=40, limit_val_batches=0).fit(g, datamodule=gdm)
            with torch.no_grad():
                gold_hard = g.model.eval()(x).argmax(1) != 0
            agree.append(float((gold_hard == truth).float().mean()))
        for t in range(tmu_seeds):
            method = TwinUnlearning(copy.deepcopy(original), seed=t, **LOOKALIKE_TMU)
            report = method.compute_split(dm)
            a = hard_set_agreement(method._hard_sorted, truth)
            precisions.append(a["precision"] if a["precision"] is not None else float("nan"))
            bases.append(a["base_rate"])
            paper = TwinUnlearning(copy.deepcopy(original), seed=t, hard_rule="paper", **LOOKALIKE_TMU)
            paper_hard.append(paper.compute_split(dm)["split"]["num_hard"])
            print(f"original {s} tmu seed {t}: original D_f acc {orig_acc:.2f}, twin hard rate "
                  f"{report['decision']['hard_rate']:.3f}, predicted hard {a['predicted_hard']}, precision "
                  f"{a['precision']}, base {a['base_rate']:.3f}; paper rule: {paper_hard[-1]} hard"
                  + (f"; gold agrees with the construction on {agree[-1]:.2f}" if s < gold and t == 0 else ""))
    summary("precision", [p for p in precisions if p == p])
    summary("base rate", bases)
    print(f"paper rule predicted no hard sample in {sum(h == 0 for h in paper_hard)} of {len(paper_hard)}, at most 1 in "
          f"{sum(h <= 1 for h in paper_hard)}")
    mean3 = [statistics.fmean(precisions[i : i + tmu_seeds]) for i in range(0, len(precisions), tmu_seeds)]
    summary(f"mean precision over {tmu_seeds} TMU seeds, per original", mean3)
    if agree:
        summary("gold agreement with the constructed hard set", agree)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--features", action="store_true")
    p.add_argument("--images", action="store_true")
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--originals", type=int, default=8)
    p.add_argument("--tmu_seeds", type=int, default=3)
    p.add_argument("--gold", type=int, default=6)
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.features:
        features(a.seeds)
    if a.images:
        images(a.originals, a.tmu_seeds, a.gold)
