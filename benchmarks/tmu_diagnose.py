"""Why does TMU's easy/hard predictor say "all easy"? Dump its features per benchmark group, then compare decision rules.

    python benchmarks/tmu_diagnose.py dump -c benchmarks/reproduction/fm_tmu.yaml --scenario sub-class \
        --method TwinUnlearning --out runs/diag/fm
    python benchmarks/tmu_diagnose.py analyse runs/diag/fm

``dump`` runs TMU's precomputation (twin model, NF/AF/CF features, classifier) on the original of every (target, seed)
group of one scenario of a benchmark config, exactly as the benchmark row would (the method's ``init_args`` from the
config, the group's cached original and gold models: run the benchmark first), and saves per group the raw feature
tables, the twin's generalization labels, the gold model's correctness on D_f and the report into ``<out>/<group>.pt``.
``analyse`` reads them back and prints, per group and as mean ± std over groups:

* label imbalance: the twin's hard rate (D_e misclassified by the original) and the gold's (D_f misclassified by the
  gold model, the base rate a predicted hard set must beat);
* the shift between the two problems: per feature, the mean and std of D_e under the twin and of D_f under the
  original, their standardised mean difference (in D_e standard deviations) and the two-sample KS statistic;
* per feature, the AUC for "hard" on D_e (twin labels) and on D_f (gold labels): does it discriminate, and does that
  transfer;
* for every decision rule (scaling x weighting x threshold): the predicted hard rate on D_f, its precision and recall
  against the gold hard set, and the classifier's AUC on D_f.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch


def dump(argv: list[str]) -> None:
    from lightning_unlearn.benchmark import load_config, make_plan
    from lightning_unlearn.benchmark.cache import group_original
    from lightning_unlearn.benchmark.jobs import group_datamodule, set_threads
    from lightning_unlearn.checkpoints import load_backbone

    p = argparse.ArgumentParser()
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--scenario", default="sub-class")
    p.add_argument("--method", default="TwinUnlearning")
    p.add_argument("--out", required=True)
    p.add_argument("--set", action="append", default=[], help="init_arg=value override (Python literal)")
    args = p.parse_args(argv)
    cfg = load_config(["-c", args.config])
    set_threads(cfg.trainer.num_threads)
    spec = next(m for m in cfg.methods if m.name == args.method)
    kwargs = dict(spec.init_args)
    import ast

    for item in args.set:
        k, v = item.split("=", 1)
        kwargs[k] = ast.literal_eval(v)
    plan = make_plan(cfg)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for g in plan.groups:
        if g.scenario != args.scenario:
            continue
        original_job, gold_job = plan.models[g.original_key], plan.models[g.gold_key]
        if not original_job.ckpt.is_file() or not gold_job.ckpt.is_file():
            sys.exit(f"{g.describe()}: its models are not trained yet; run the benchmark on {args.config} first.")
        dm = group_datamodule(cfg, g)
        original, _ = load_backbone(group_original(cfg, g, original_job, dm), dm)
        gold, _ = load_backbone(gold_job.ckpt, dm, trained_on="retain")
        cls = spec.resolve()
        method = cls(backbone=original, seed=g.seed, **kwargs)
        report = method.compute_split(dm)
        table = {k: v.clone() for k, v in method.feature_table.items()}
        with torch.no_grad():
            gold_easy = _correct(gold, dm, "forget")
        name = f"{g.slug}-seed{g.seed}"
        torch.save({"table": table, "gold_easy": gold_easy, "report": report, "features": list(report["features"]),
                    "group": g.describe(), "kwargs": kwargs}, out / f"{name}.pt")
        print(f"{g.describe()}: twin easy {report['twin']['easy_rate']:.3f}, D_f predicted easy "
              f"{report['split']['num_easy']}/{len(gold_easy)}, gold easy {float(gold_easy.float().mean()):.3f}")


def _correct(model: Any, dm: Any, split: str) -> torch.Tensor:
    """Per-sample correctness of ``model`` on a split, in the sorted sample-index order TMU's tables use."""
    from lightning_unlearn.data.datasets import batch_indices, unpack_batch

    model.eval()
    right, idx = [], []
    for batch in dm.loader(dm.dataset(split), shuffle=False):
        x, y = unpack_batch(batch)
        right.append(model(x).argmax(1) == y)
        idx.append(batch_indices(batch))
    order = torch.argsort(torch.cat(idx))
    return torch.cat(right)[order]


# -- analysis ---------------------------------------------------------------------------------------------------------
def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative) (ties half); NaN without both classes."""
    pos, neg = score[positive], score[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="stable")
    ranks = np.empty(len(order))
    allv = np.concatenate([pos, neg])[order]
    # average ranks for ties
    i = 0
    while i < len(allv):
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    r = ranks[: len(pos)].sum()
    return float((r - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def ks(a: np.ndarray, b: np.ndarray) -> float:
    grid = np.sort(np.concatenate([a, b]))
    fa = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    fb = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(fa - fb).max())


def hard_set_scores(pred_hard: np.ndarray, gold_hard: np.ndarray) -> dict[str, float]:
    tp = int((pred_hard & gold_hard).sum())
    n_pred, n_gold = int(pred_hard.sum()), int(gold_hard.sum())
    return {"pred_rate": pred_hard.mean(), "precision": tp / n_pred if n_pred else float("nan"),
            "recall": tp / n_gold if n_gold else float("nan"), "base": gold_hard.mean()}


def rules(d: dict[str, Any], q: float | None = None) -> dict[str, np.ndarray]:
    """Predicted-hard masks on D_f of every decision rule (scaling x classifier x decision), from the dumped raw
    features; ``q``: the hard rate the rank rules use (default: the report's held-out rate, else D_e's)."""
    from lightning_unlearn.methods.twin_classifier import scale_features, train_easy_hard_classifier

    t = d["table"]
    fe, ff = t["twin_features"].float(), t["forget_features"].float()
    easy_e, held = t["twin_easy"].bool(), t["twin_heldout"].bool()
    tr = ~held
    hard_rate_e = float((~easy_e[tr]).float().mean())
    if q is None:
        q = d["report"].get("decision", {}).get("hard_rate", hard_rate_e)
    out: dict[str, np.ndarray] = {}

    def topq(score: np.ndarray, rate: float) -> np.ndarray:  # the `rate` lowest scores are hard
        hard = np.zeros(len(score), dtype=bool)
        hard[np.argsort(score, kind="stable")[: int(round(rate * len(score)))]] = True
        return hard

    for sname in ("twin", "per_set"):
        ze, zf = scale_features(fe, ff, tr, sname)
        for clf in ("mlp", "mlp-bal", "logreg"):
            if clf == "logreg":
                from sklearn.linear_model import LogisticRegression

                if easy_e[tr].all() or not easy_e[tr].any():
                    continue
                lr = LogisticRegression(class_weight="balanced").fit(ze[tr].numpy(), easy_e[tr].numpy())
                se, sf = lr.decision_function(ze.numpy()), lr.decision_function(zf.numpy())
            else:
                mlp = train_easy_hard_classifier(ze[tr], easy_e[tr], epochs=100, seed=0, balanced=clf == "mlp-bal")
                with torch.no_grad():
                    se, sf = mlp(ze).numpy(), mlp(zf).numpy()  # logit of "easy"
            tag = f"{sname}/{clf}"
            out[f"{tag}/0.5"] = sf <= 0
            out[f"{tag}/twin-thr"] = sf <= np.quantile(se[tr.numpy()], hard_rate_e)  # D_e's rate on D_e's scores
            out[f"{tag}/rank"] = topq(sf, q)
            out[f"{tag}/score"] = sf  # not a mask: for the AUC
    for j, name in enumerate(d["features"]):  # one raw feature, larger = harder
        out[f"raw-{name}/rank"] = topq(-ff[:, j].numpy(), q)
    return out


def analyse(argv: list[str]) -> None:
    root = Path(argv[0])
    files = sorted(root.glob("*.pt"))
    if not files:
        sys.exit(f"no dumps in {root}")
    agg: dict[str, list[float]] = {}

    def add(key: str, v: float) -> None:
        agg.setdefault(key, []).append(float(v))

    for f in files:
        d = torch.load(f, weights_only=False)
        t, feats = d["table"], d["features"]
        easy_e = t["twin_easy"].bool().numpy()
        gold_easy = d["gold_easy"].bool().numpy()
        fe, ff = t["twin_features"].numpy(), t["forget_features"].numpy()
        print(f"\n== {d['group']} ({f.name}): |D_e| {len(easy_e)}, |D_f| {len(gold_easy)}")
        print(f"   held-out hard rate {d['report'].get('decision', {}).get('hard_rate')}")
        add("holdout_hard_rate", d["report"].get("decision", {}).get("hard_rate", float("nan")))
        print(f"   twin hard rate {1 - easy_e.mean():.3f}; gold hard rate on D_f {1 - gold_easy.mean():.3f}; "
              f"original predicted easy (0.5) {t['forget_predicted_easy'].float().mean():.3f}")
        add("twin_hard_rate", 1 - easy_e.mean())
        add("gold_hard_rate", 1 - gold_easy.mean())
        for j, name in enumerate(feats):
            a, b = fe[:, j], ff[:, j]
            smd = (b.mean() - a.mean()) / (a.std() + 1e-12)
            auc_e, auc_f = auc(a, ~easy_e), auc(b, ~gold_easy)
            print(f"   {name}: D_e {a.mean():.4g} ± {a.std():.3g}   D_f {b.mean():.4g} ± {b.std():.3g}   SMD {smd:+.2f}"
                  f"  KS {ks(a, b):.2f}   AUC(hard) D_e {auc_e:.3f}  D_f {auc_f:.3f}")
            add(f"{name}/smd", smd)
            add(f"{name}/ks", ks(a, b))
            add(f"{name}/auc_e", auc_e)
            add(f"{name}/auc_f", auc_f)
        r = rules(d)
        for key, mask in r.items():
            if key.endswith("/score"):
                a_f = auc(-mask, ~gold_easy)
                print(f"   {key[:-6]:<22} classifier AUC(hard) on D_f {a_f:.3f}")
                add(f"{key[:-6]}/auc", a_f)
                continue
            s = hard_set_scores(mask, ~gold_easy)
            print(f"   {key:<26} pred hard {s['pred_rate']:.3f}  precision {s['precision']:.3f}  recall {s['recall']:.3f}"
                  f"  (base {s['base']:.3f})")
            for m in ("pred_rate", "precision", "recall"):
                add(f"{key}/{m}", s[m])
    print("\n== mean ± std over groups")
    for key, vals in agg.items():
        vals = [v for v in vals if v == v]
        if not vals:
            continue
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        print(f"   {key:<34} {statistics.fmean(vals):.3f} ± {sd:.3f}  (n={len(vals)})")


if __name__ == "__main__":
    cmd, rest = sys.argv[1], sys.argv[2:]
    {"dump": dump, "analyse": analyse}[cmd](rest)
