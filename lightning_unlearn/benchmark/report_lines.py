"""The report's sentences and marks (:mod:`~.report` assembles them): the comparison of a scenario's methods, its
table's marks, and the provenance lines."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning_unlearn.benchmark.stats import row_commits

__all__ = ["comparison_lines", "feature_lines", "given_lines", "marks", "provenance_lines"]


def marks(summary: dict[str, Any] | None, method: str) -> str:
    """`` \\*`` after a method tied with the best one, `` †`` after one on the Pareto front."""
    if not summary:
        return ""
    comp = summary.get("comparison") or {}
    mark = " \\*" if method in comp.get("tied", []) else ""
    return mark + (" †" if method in summary.get("pareto_front", []) else "")


def comparison_lines(summary: dict[str, Any] | None) -> list[str]:
    """The best method of a scenario, which are tied with it (with p-values), and the Pareto front."""
    comp = (summary or {}).get("comparison")
    if not comp:
        return []
    p = comp["p_values"]
    tied = [f"{m} (p = {p[m]:.2f})" for m in comp["tied"][1:]]
    nothing = " (doing nothing: no method is closer to retraining than the original itself)"
    lines = [f"Closest to Retrain: **{comp['best']}** (average gap {comp['best_mean']:.2f})"
             + (nothing if comp["best"] == "Original" else "") + "."]
    test = f"(paired t-test on the average gap over the (target, seed) pairs, α = {comp['alpha']:g})"
    if tied:
        lines[0] += f" Not significantly different from it {test}: " + ", ".join(tied) + "."
    elif comp["different"]:
        lines[0] += f" Every other tested method is significantly further {test}."
    if comp["best"] != "Original" and "Original" in p:  # the question a user asks first: is it better than nothing?
        verdict = "not significantly further" if "Original" in comp["tied"] else "significantly further"
        lines[0] += f" The Original (doing nothing) is {verdict} (p = {p['Original']:.2g})."
    if comp["untested"]:
        lines[0] += " Not testable (fewer than 2 pairs): " + ", ".join(comp["untested"]) + "."
    front = summary.get("pareto_front") if summary else None
    if front:
        lines.append("Pareto front of unlearning time against average gap (fastest first): " + ", ".join(front) + ".")
    return [" ".join(lines), ""]


def _ci(stat: dict[str, Any], scale: float, unit: str) -> str:
    lo, hi = stat["ci"]
    return f"{stat['mean'] * scale:.2f} [{lo * scale:.2f}, {hi * scale:.2f}]{unit}"


def feature_lines(check: dict[str, Any] | None) -> list[str]:
    """The methods of a scenario that forget by the outputs but not by the features
    (:func:`~lightning_unlearn.benchmark.features.feature_check`), with the intervals that say so."""
    if not check:
        return []
    head = f"**By the outputs, not by the features** ({check['rule']}; paired over the (target, seed) runs): "
    methods = check["methods"]
    if check["flagged"]:
        parts = []
        for m in check["flagged"]:
            info, why = methods[m], []
            if info["probe_keeps"]:
                why.append("probe excess " + _ci(info["probe_excess"], 100.0, " points"))
            if info["relearn_keeps"]:
                why.append("relearn ratio " + _ci(info["relearn_ratio"], 1.0, ""))
            parts.append(f"{m} (\\|ΔAcc D_f\\| {100 * info['forget_acc_gap']:.2f}; " + ", ".join(why) + ")")
        text = head + ", ".join(parts) + "."
    elif check["by_outputs"]:
        text = (head + f"none of the {len(check['by_outputs'])} method(s) that forget by the outputs ("
                + ", ".join(check["by_outputs"]) + ").")
    else:
        text = head + f"no method is within {100 * check['tolerance']:.2f} points of the gold model's D_f accuracy."
    if check["untestable"]:
        text += " Not testable (a single run, no interval): " + ", ".join(check["untestable"]) + "."
    low = check.get("relearn_undefined") or {}
    if low.get("runs"):
        text += (f" Relearn ratio undefined in {low['runs']} of {low['of']} run(s): there the gold model reaches the "
                 f"attack's target in fewer than 1 step (mean {low['gold_steps']:.2f}), so the attack tells "
                 "nothing.")
    return [text, ""]


def provenance_lines(prov: dict[str, Any], rows: Sequence[dict[str, Any]]) -> list[str]:
    if not prov:
        return []
    commit = prov.get("git_commit") or "not in a git checkout"
    if prov.get("git_dirty"):
        commit += " (with uncommitted changes)"
    threads = f"torch threads {prov.get('torch_num_threads')}, {prov.get('cpu_count')} CPUs"
    lines = [
        f"- produced by lightning_unlearn {prov.get('package_version')}, commit {commit}, on {prov.get('date')}",
        f"- torch {prov.get('torch')}, lightning {prov.get('lightning')}, scikit-learn {prov.get('scikit-learn')}, "
        f"Python {prov.get('python')}; device {prov.get('device')}; {threads}; {prov.get('platform')}",
    ]
    commits = row_commits(rows)
    if commits:
        lines.append("- rows by commit: " + ", ".join(f"{c} ({n})" for c, n in commits.items()))
    lines += given_lines(rows)
    return [*lines, ""]


def given_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One line per model the user gave (``original_ckpt``/``gold_ckpt``): file, sha256, whether its splits were
    checkable, and how many rows used it."""
    seen: dict[tuple[str, str, str], list[Any]] = {}
    for r in rows:
        for role in ("original", "gold"):
            path = r.get(f"{role}_ckpt")
            if path:
                key = (role, str(path), str(r.get(f"{role}_sha256", ""))[:12])
                seen.setdefault(key, [r.get(f"{role}_splits_checked"), 0])[1] += 1
    trusted = "not recorded: the stated forget set was trusted"
    return [f"- given {role} model {path} (sha256 {sha}..., splits {'checked' if checked else trusted}): {n} rows"
            for (role, path, sha), (checked, n) in sorted(seen.items())]
