"""``audit.json``, ``audit.md`` and ``audit.png`` (per-example epsilons and likelihood ratios per audited row)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from lightning_unlearn.experiment import json_text, write_output

__all__ = ["audit_markdown", "plot_distributions", "write_reports"]


def _pct(v: Any) -> str:
    return "-" if v is None or not math.isfinite(float(v)) else f"{100 * float(v):.1f}"


def _ci(row: dict[str, Any], key: str) -> str:
    u = row.get("ulira")
    if not u:
        return "-"
    v, (lo, hi) = u["metrics"].get(key), u["ci95"].get(key, (None, None))
    if v is None or lo is None:
        return _pct(v)
    return f"{_pct(v)} [{_pct(lo)}, {_pct(hi)}]"


def _f(ch: dict[str, Any]) -> str:
    if ch.get("F") is None:
        return "-"
    lo, hi = (ch.get("F_ci95") or [None, None])[:2]
    return f"{ch['F']:.3f}" if lo is None else f"{ch['F']:.3f} [{lo:.3f}, {hi:.3f}]"


def audit_markdown(result: dict[str, Any]) -> str:
    """The report: one line per audited row, the failures, and how to read it."""
    lines = [
        "# Privacy audit", "",
        f"{result['shadow_models']} shadow models, each on a random half of a pool of {result['pool_size']} examples, "
        f"forgetting {result['forget_per_model']} of {result['targets']} target examples. U-LiRA (Hayes et al. 2024, "
        "sec. 4): a per-example likelihood-ratio attack telling an unlearned model from a retrained one, ideal 50% "
        "(accuracy, AUC) and a TPR equal to the FPR (the best TPR at FPR <= 1% / 5%); 95% bootstrap intervals in "
        "brackets. Challenge (Triantafillou et al. 2024, its released scoring code): per target example, the largest "
        "epsilon of its threshold attacks on the unlearned vs the retrained models of the shadows that forgot it; "
        "forgetting quality F = mean over examples of 2^-k for an epsilon in [k/2, (k+1)/2), 0 from ceil(log(n - 1)) "
        "on (n: that example's models per side), and the final score F x RA_u/RA_r x TA_u/TA_r. F = 1 would mean "
        "every epsilon below 0.5, which even retraining does not reach with few models (the best of many attacks on a "
        "few outputs finds a large epsilon by chance): read a row's F against the Retrain row's, the F of an "
        "independent retraining, below.", "",
        "| Row | models | U-LiRA acc. (%) | AUC (%) | TPR@1%FPR | TPR@5%FPR | F [95% CI] | score | median eps | RA (%) "
        "| TA (%) | FA (%) | pop. MIA-eff. (%) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in result["rows"].items():
        ch = row.get("challenge") or {}
        score = "-" if ch.get("score") is None else f"{ch['score']:.3f}"
        eps = "-" if ch.get("epsilon_median") is None else f"{ch['epsilon_median']:.2f}"
        lines.append(f"| {name} | {row['models']} | {_ci(row, 'accuracy')} | {_ci(row, 'auc')} | "
                     f"{_ci(row, 'tpr@1%fpr')} | {_ci(row, 'tpr@5%fpr')} | {_f(ch)} | {score} | {eps} | "
                     f"{_pct(row['RA'])} | {_pct(row['TA'])} | {_pct(row['FA'])} | {_pct(row.get('MIA'))} ± "
                     f"{_pct(row.get('MIA_std'))} |")
    errors = [(n, r["error"]) for n, r in result["rows"].items() if r.get("error")]
    if errors:
        lines += ["", "**Rows that could not be scored:**", ""] + [f"- {n}: {e}" for n, e in errors]
    if result["failures"]:
        lines += ["", f"**{len(result['failures'])} failed job(s)** (left out of the statistics; run again to retry; "
                  "the traceback is in error.json in the model's directory):", ""]
        lines += [f"- {f['stage']} {f['row']} on shadow {f['shadow']}: {f['error']}" for f in result["failures"]]
    ref = result["reference"]
    retrain = (result["rows"].get("Retrain") or {}).get("challenge") or {}  # the baseline row of that name
    f_ref = (f"the F of retraining itself (row Retrain) is {_f(retrain)}: the most a method can be expected to reach "
             "with these models" if retrain.get("F") is not None else "no Retrain row was audited, so F has no "
             "reference here")
    lines += ["", f"Reference (retrained models): RA {_pct(ref['RA_r'])}%, TA {_pct(ref['TA_r'])}%, population "
              f"MIA-efficacy {_pct(ref.get('MIA_r'))}% (SalUn's SVM on confidences, D_r vs test, applied to D_f; "
              f"mean ± std over shadows); {f_ref}. A row is exposed when its U-LiRA accuracy interval lies above 50% "
              "or its F interval lies below Retrain's.", ""]
    return "\n".join(lines)


def plot_distributions(result: dict[str, Any], path: Path) -> Path | None:
    """Per row: the histogram of per-example epsilons and of the held-out models' log-likelihood ratios."""
    import matplotlib  # deferred: start-up (matplotlib only when the report is written)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(n, r) for n, r in result["rows"].items() if r.get("epsilons") or r.get("llr")]
    if not rows:
        return None
    fig, axes = plt.subplots(2, len(rows), figsize=(3.2 * len(rows), 5.5), squeeze=False)
    for i, (name, r) in enumerate(rows):
        ax = axes[0, i]
        if r.get("epsilons"):
            ax.hist(r["epsilons"], bins=np.arange(0, 6.5, 0.5), color="tab:purple")
            ax.set_title(f"{name}\nF={r['challenge']['F']:.3f}", fontsize=9)
        ax.set_xlabel("per-example epsilon", fontsize=8)
        ax = axes[1, i]
        if r.get("llr"):
            lu, lr = np.asarray(r["llr"]["unlearned"]), np.asarray(r["llr"]["retrained"])
            both = np.concatenate([lu, lr])
            lo, hi = np.percentile(both, [1, 99]) if len(both) else (0, 1)
            bins = np.linspace(lo, hi if hi > lo else lo + 1, 30)
            ax.hist(np.clip(lr, lo, hi), bins=bins, alpha=0.6, label="retrained")
            ax.hist(np.clip(lu, lo, hi), bins=bins, alpha=0.6, label="unlearned")
            ax.set_title(f"U-LiRA acc {100 * r['ulira']['metrics']['accuracy']:.1f}%", fontsize=9)
            ax.legend(fontsize=7)
        ax.set_xlabel("log-likelihood ratio", fontsize=8)
    fig.tight_layout()
    write_output(path.parent, path.name, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path


def write_reports(result: dict[str, Any], out: Path) -> list[str]:
    """Write the three files (each replaced atomically); returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    files = [str(write_output(out, "audit.json", json_text(result))), str(write_output(out, "audit.md", audit_markdown(result)))]
    png = plot_distributions(result, out / "audit.png")
    if png is not None:
        files.append(str(png))
    return files
