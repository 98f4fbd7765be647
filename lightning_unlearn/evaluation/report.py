"""Writing evaluation results: ``metrics.json`` (flat keys, strict JSON) and ``metrics.md`` (a readable table)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning_unlearn.data.forget import SPLIT_NAMES

__all__ = ["metrics_to_json", "metrics_to_markdown", "write_reports"]

_DESCRIPTIONS = {
    "mia/efficacy": "MIA-Efficacy (SalUn/l1-sparse SVC on p(y|x)): fraction of D_f predicted non-member",
    "mia/entropy": "entropy attack (Golatkar/Bad Teacher, RBF SVC, D_r vs test): fraction of D_f predicted member",
    "mia/entropy_logreg": "entropy attack (SCRUB, balanced logistic regression): fraction of D_f predicted member",
    "mia/loss_auc": "loss attack (NeurIPS'23 kit): ROC AUC of D_f vs test, 5-fold CV (0.5 = indistinguishable)",
    "mia/loss_acc": "loss attack: cross-validated accuracy of D_f vs test",
    "gold/forget_acc_gap": "|Acc(D_f) - Acc_gold(D_f)|",
    "gold/activation_distance": "mean_Df ||softmax f(x) - softmax f_gold(x)||_p (p=2: Bad Teacher, 1: Golatkar)",
    "gold/js_divergence": "mean_Df JS(f(x), f_gold(x)) in nats (max ln 2)",
    "gold/agreement_forget": "fraction of D_f where argmax f = argmax f_gold",
    "gold/agreement_test": "fraction of test where argmax f = argmax f_gold",
    "zrf": "ZRF = 1 - mean over random inits and D_f of JS(f(x), random-init model(x))",
    "time/unlearn_s": "unlearning wall time (s)",
    "time/retrain_s": "gold model training wall time (s)",
    "time/speedup_vs_retrain": "retrain time / unlearning time",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # a literal pipe would end the Markdown table cell


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def metrics_to_json(results: Mapping[str, Any]) -> str:
    """Strict JSON of flat results: ``nan``/``inf`` become ``null`` (an empty split, a missing time)."""
    return json.dumps({k: _clean(v) for k, v in results.items()}, indent=1, sort_keys=False)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value)


def metrics_to_markdown(results: Mapping[str, Any], title: str = "Unlearning evaluation") -> str:
    """A Markdown report: accuracy per split (model, original, gold), then MIA, gold comparison, ZRF and cost."""
    lines = [f"# {title}", ""]
    has_gold = any(k.startswith("gold/acc/") for k in results)
    has_original = any(k.startswith("original/acc/") for k in results)
    header = ["split", "n", "accuracy"] + (["original"] if has_original else []) + (["gold"] if has_gold else [])
    lines += ["## Accuracy", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for split in SPLIT_NAMES:
        if f"acc/{split}" not in results and f"gold/acc/{split}" not in results:
            continue
        row = [split, _fmt(results.get(f"n/{split}")), _fmt(results.get(f"acc/{split}"))]
        if has_original:
            row.append(_fmt(results.get(f"original/acc/{split}")))
        if has_gold:
            row.append(_fmt(results.get(f"gold/acc/{split}")))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")

    mia_keys = [k for k in ("mia/efficacy", "mia/entropy", "mia/loss_auc", "mia/loss_acc") if k in results]
    if mia_keys:
        lines += ["## Membership inference on D_f", ""]
        lines += ["| attack | model | gold | definition |", "|---|---|---|---|"] if has_gold else [
            "| attack | model | definition |",
            "|---|---|---|",
        ]
        for k in mia_keys:
            gold = [_fmt(results.get(f"gold/{k}"))] if has_gold else []
            row = [k, _fmt(results[k]), *gold, _cell(_DESCRIPTIONS[k])]
            lines.append("| " + " | ".join(row) + " |")
        lines += ["", "A good unlearned model is close to the gold (retrained) column, not at an extreme.", ""]

    other = [
        k
        for k in (
            "gold/forget_acc_gap",
            "gold/activation_distance",
            "gold/js_divergence",
            "gold/agreement_forget",
            "gold/agreement_test",
            "zrf",
            "time/unlearn_s",
            "time/retrain_s",
            "time/speedup_vs_retrain",
        )
        if k in results
    ]
    if other:
        lines += ["## Comparison with the gold model, ZRF and cost", ""]
        lines += ["| metric | value | definition |", "|---|---|---|"]
        for k in other:
            lines.append(f"| {k} | {_fmt(results[k])} | {_cell(_DESCRIPTIONS[k])} |")
        lines.append("")
    lines += ["`-`: not applicable (empty split, no gold model, or unknown time). Definitions: docs/metrics.md.", ""]
    return "\n".join(lines)


def write_reports(results: Mapping[str, Any], directory: str | Path, title: str = "Unlearning evaluation") -> Path:
    """Write ``metrics.json`` and ``metrics.md`` into ``directory`` (created if needed); returns the JSON path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "metrics.json"
    path.write_text(metrics_to_json(results) + "\n")
    (directory / "metrics.md").write_text(metrics_to_markdown(results, title))
    return path
