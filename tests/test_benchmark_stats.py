"""Uncertainty, significance, Pareto front, provenance and protocol checks of the benchmark report, on constructed
rows whose answers are known (no training)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest

from lightning_unlearn.benchmark import report as br
from lightning_unlearn.benchmark.protocol import Targets, main, protocol_checks
from lightning_unlearn.benchmark.stats import compare_to_best, paired_p_value, pareto_front, t_interval
from lightning_unlearn.provenance import collect_provenance, git_info, run_stamp

ROOT = Path(__file__).resolve().parents[1]
T_975 = {2: 4.302652729911275, 4: 2.7764451051977987}  # Student's t 0.975 quantiles (df 2, 4), from the tables


def row(method: str, seed: int, scenario: str = "s", spec: dict | None = None, **metrics) -> dict:
    spec = spec if spec is not None else {"fraction": 0.1}
    return {"scenario": scenario, "target": "t", "target_spec": json.dumps(spec, sort_keys=True), "seed": seed,
            "method": method, "status": "ok", **metrics}


def test_t_interval_known_answer():
    lo, hi = t_interval(2.0, 1.0, 3)  # values 1, 2, 3
    half = T_975[2] / math.sqrt(3)
    assert (lo, hi) == pytest.approx((2.0 - half, 2.0 + half))
    assert t_interval(5.0, 2.0, 1) is None  # undefined for one run


def test_report_cell_has_the_confidence_interval():
    rows = [row("Retrain", s, **{"acc/retain": 0.9}) for s in range(3)]
    rows += [row("X", s, **{"acc/retain": v}) for s, v in enumerate((0.90, 0.92, 0.94))]
    text = br.render_report(rows, provenance={})
    half = 100 * 0.02 * T_975[2] / math.sqrt(3)  # std 2 points over 3 seeds
    assert f"| X | 92.00 ± 2.00 [{92 - half:.2f}, {92 + half:.2f}]" in text
    assert "[87.03, 96.97]" in text


def test_paired_t_test_clear_both_ways():
    best = [1.0, 10.0, 20.0, 5.0, 8.0]  # large spread between seeds
    worse = [b + d for b, d in zip(best, (0.5, 0.6, 0.4, 0.55, 0.45), strict=True)]  # always ~0.5 worse
    same = [b + d for b, d in zip(best, (0.3, -0.3, 0.2, -0.25, 0.05), strict=True)]  # no systematic difference
    assert paired_p_value(worse, best) < 0.001  # pairing removes the seed-to-seed spread
    from scipy.stats import ttest_ind

    assert ttest_ind(worse, best).pvalue > 0.9  # unpaired, the same data would show nothing
    assert paired_p_value(same, best) > 0.5
    d = [w - b for w, b in zip(worse, best, strict=True)]  # t statistic by hand
    t = (sum(d) / 5) / (math.sqrt(sum((x - sum(d) / 5) ** 2 for x in d) / 4) / math.sqrt(5))
    assert abs(t) > T_975[4]
    assert paired_p_value(best, best) == 1.0 and paired_p_value([2.0, 3.0], [1.0, 2.0]) == 0.0
    assert math.isnan(paired_p_value([1.0], [2.0]))


def test_compare_to_best_over_seed_and_target_pairs():
    def gap_row(method, seed, spec, gap):  # average gap = |acc/retain - Retrain's| in points
        return row(method, seed, spec=spec, **{"acc/retain": 0.5 + gap / 100})

    rows = []
    for spec in ({"fraction": 0.1}, {"fraction": 0.2}):  # two targets x three seeds = six pairs
        for s in range(3):
            base = 2.0 + 3 * s + spec["fraction"]
            rows += [gap_row("Retrain", s, spec, 0.0), gap_row("Original", s, spec, base + 5),
                     gap_row("Best", s, spec, base), gap_row("Worse", s, spec, base + 1 + 0.1 * s),
                     gap_row("Tied", s, spec, base + (0.3, -0.2, 0.2)[s])]
    rows.append(gap_row("Once", 0, {"fraction": 0.1}, 0.5))  # lowest mean, but one pair with each other method
    rows = br.add_gaps(rows)
    comp = compare_to_best([r for r in rows if r["method"] != "Once"], "s")
    assert comp["best"] == "Best" and comp["tied"] == ["Best", "Tied"]
    assert sorted(comp["different"]) == ["Original", "Worse"] and comp["pairs"]["Worse"] == 6
    assert "Retrain" not in comp["p_values"]  # the reference is never a candidate
    comp = compare_to_best(rows, "s")
    assert comp["best"] == "Once" and comp["untested"] == ["Best", "Tied", "Worse", "Original"]
    assert compare_to_best(rows, "no such scenario") is None
    text = br.render_report([r for r in rows if r["method"] != "Once"], provenance={})
    assert "Closest to Retrain: **Best**" in text and "Tied (p = " in text
    p_orig = f"{comp_best_only_original(rows):.2g}"
    assert f"The Original (doing nothing) is significantly further (p = {p_orig})." in text
    assert "| Tied | " in text and "\\*" in text.split("| Tied | ")[1].split("\n")[0]
    assert "\\*" not in text.split("| Worse | ")[1].split("\n")[0]
    one_seed = br.render_report([r for r in rows if r["seed"] == 0 and r["target_spec"].endswith("0.1}")], provenance={})
    assert "Not testable (fewer than 2 pairs)" in one_seed and "significantly" not in one_seed.split("## s")[1].split("## Columns")[0]


def comp_best_only_original(rows):
    return compare_to_best([r for r in rows if r["method"] != "Once"], "s")["p_values"]["Original"]


def test_the_report_says_whether_the_best_beats_doing_nothing():
    """A scenario where the Original is tied with the best: the sentence says so, with its p-value."""
    rows = []
    for s in range(4):
        rows += [row("Retrain", s, spec={"fraction": 0.1}, **{"acc/retain": 0.5}),
                 row("Original", s, spec={"fraction": 0.1}, **{"acc/retain": 0.5 + (2.0 + (0.5, -0.5, 1.0, -1.0)[s]) / 100}),
                 row("M", s, spec={"fraction": 0.1}, **{"acc/retain": 0.5 + 1.8 / 100})]
    text = br.render_report(br.add_gaps(rows), provenance={})
    assert "Closest to Retrain: **M**" in text and "The Original (doing nothing) is not significantly further (p = " in text


def test_pareto_front_constructed():
    pts = {"A": (1.0, 5.0), "B": (2.0, 3.0), "C": (3.0, 4.0), "D": (0.5, 10.0), "E": (2.0, 3.0), "F": (2.5, 3.0)}
    # C is dominated by B (faster and closer), F by B (same gap, slower); B and E are equal: neither dominates
    assert pareto_front(pts) == ["D", "A", "B", "E"]
    assert pareto_front({}) == [] and pareto_front({"only": (1.0, 1.0)}) == ["only"]


def test_pareto_marked_in_report_json_and_plot(tmp_path):
    rows = []
    for s in range(2):
        rows += [row("Retrain", s, **{"acc/retain": 0.9, "time/unlearn_s": 10.0}),
                 row("Fast", s, **{"acc/retain": 0.7, "time/unlearn_s": 1.0}),
                 row("Slow", s, **{"acc/retain": 0.6, "time/unlearn_s": 5.0})]
    files = br.write_all(rows, tmp_path)
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["summary"]["s"]["pareto_front"] == ["Fast", "Retrain"]  # Slow: slower and further than Fast
    assert len(doc["rows"]) == 6 and (tmp_path / "time_vs_gap.png") in files
    text = (tmp_path / "report.md").read_text()
    assert "Pareto front of unlearning time against average gap (fastest first): Fast, Retrain." in text
    assert "†" in text.split("| Fast | ")[1].split("\n")[0] and "†" not in text.split("| Slow | ")[1].split("\n")[0]


PROVENANCE_FIELDS = ("package_version", "git_commit", "git_dirty", "date", "python", "torch", "lightning", "device",
                     "cpu_count", "torch_num_threads", "num_threads_config", "platform")


def test_provenance_fields_present(tmp_path):
    prov = collect_provenance("cpu", 1)
    assert set(PROVENANCE_FIELDS) <= set(prov)
    assert prov["device"].startswith("cpu") and prov["torch_num_threads"] >= 1 and prov["package_version"]
    br.write_all([row("Retrain", 0, **{"acc/retain": 0.9}), row("X", 0, **{"acc/retain": 0.8})], tmp_path)
    doc = json.loads((tmp_path / "results.json").read_text())
    assert set(PROVENANCE_FIELDS) <= set(doc["provenance"])
    assert doc["row_commits"] == {"unknown": 2}  # rows without a stamp are counted, not hidden
    text = (tmp_path / "report.md").read_text()
    assert f"produced by lightning_unlearn {prov['package_version']}" in text and "torch " in text
    assert br.read_results(tmp_path)[0] == doc["rows"]
    (tmp_path / "old.json").write_text(json.dumps(doc["rows"]))  # the format before provenance: still readable
    assert br.read_results(tmp_path / "old.json") == (doc["rows"], {})


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git executable")
def test_git_commit_and_dirty_flag(tmp_path):
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("x = 1\n")
    assert git_info(pkg) == {"commit": None, "dirty": None}  # not in a repository
    git_info.cache_clear()
    git("init", "-q")
    assert git_info(pkg) == {"commit": None, "dirty": None}  # in one, but not tracked there
    git_info.cache_clear()
    git("add", "pkg/__init__.py")
    git("commit", "-q", "-m", "c")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert git_info(pkg) == {"commit": head, "dirty": False}
    git_info.cache_clear()
    (pkg / "__init__.py").write_text("x = 2\n")
    assert git_info(pkg) == {"commit": head, "dirty": True}
    git_info.cache_clear()
    stamp = run_stamp()  # this package: a 40-hex commit in a checkout, None in an installed copy
    assert stamp["git_commit"] is None or len(stamp["git_commit"].split("+")[0]) == 40


def _protocol_rows(orig_forget_gap: float, mia_orig: tuple[float, ...], best_gap: float) -> list[dict]:
    rows = []
    for kind, spec in (("random", {"fraction": 0.1}), ("sub-class", {"classes": [3], "per_class": 10})):
        for s, mo in enumerate(mia_orig):
            common = {"n/retain": 900, "n/forget": 100, "acc/retain": 1.0, "acc/test": 0.9}
            rows += [
                row("Original", s, kind, spec, **common, **{"acc/forget": 1.0, "mia/efficacy": mo,
                                                            "gold/forget_acc_gap": orig_forget_gap}),
                row("Retrain", s, kind, spec, **common, **{"acc/forget": 0.9, "mia/efficacy": 0.5}),
                row("M", s, kind, spec),
            ]
    rows = br.add_gaps(rows)  # Original: (0 + 10 + |100 mo - 50|) / 3 points
    for r in rows:
        if r["method"] == "M":
            r["avg_gap"] = best_gap
    return rows


def test_protocol_checks_hold_and_fail(tmp_path, capsys):
    good = _protocol_rows(0.10, (0.20, 0.22, 0.18), best_gap=1.0)
    checks = protocol_checks(good)
    assert all(c.held for c in checks), [c.line() for c in checks if not c.held]
    assert len(checks) == 3 + 2 * 4  # seeds, train acc, train-test gap; 4 per random/sub-class scenario
    names = {c.name: c for c in protocol_checks(_protocol_rows(0.02, (0.0, 0.5, 1.0), best_gap=20.0))}
    failed = {n for n, c in names.items() if c.held is False}
    for scenario in ("random", "sub-class"):
        assert any(n.startswith(f"{scenario}: Original |ΔAcc D_f|") for n in failed)
        assert any(n.startswith(f"{scenario}: best method") for n in failed)
        assert any(n.startswith(f"{scenario}: MIA-efficacy std") for n in failed)
    one_seed = protocol_checks([r for r in good if r["seed"] == 0], Targets(min_seeds=3))
    assert [c.held for c in one_seed if c.name.startswith("seeds")] == [False]
    (tmp_path / "results.json").write_text(json.dumps({"provenance": {}, "rows": good}))
    assert main([str(tmp_path)]) == 0
    assert "11 held, 0 failed, 0 N/A" in capsys.readouterr().out
    bad = _protocol_rows(0.02, (0.0, 0.5, 1.0), best_gap=20.0)
    (tmp_path / "results.json").write_text(json.dumps({"provenance": {}, "rows": bad}))
    assert main([str(tmp_path)]) == 1
    assert "FAILED random: Original |ΔAcc D_f| >= 3 points: 2.00 ± 0.00" in capsys.readouterr().out
    classwise = [dict(r, target_spec=json.dumps({"classes": [3]})) for r in good]
    (tmp_path / "results.json").write_text(json.dumps(classwise))
    assert main([str(tmp_path / "results.json")]) == 0  # no random/sub-class scenario: N/A, not failed
    assert main([str(tmp_path / "missing")]) == 2


def _feature_rows() -> list[dict]:
    """Class-wise, 3 seeds: the gold model's probe 0.30 and 10 relearning steps; `Head` forgets by the outputs only
    (D_f 0, probe 0.60, 1 step), `Deep` by the features too, `Loud` not even by the outputs, `Once` has one run."""
    rows = []
    for s in range(3):
        gold = {"gold/probe/forget_acc": 0.30, "gold/relearn/steps": 10.0, "gold/relearn/censored": 0.0,
                "n/forget": 100}
        def r(method, acc_f, probe, steps, censored=0.0, cka=0.5):
            return row(method, s, scenario="cw", **gold, **{"acc/forget": acc_f, "gold/forget_acc_gap": acc_f,
                       "probe/forget_acc": probe, "relearn/steps": steps, "relearn/censored": censored,
                       "gold/cka_forget": cka})
        rows += [r("Original", 1.0, 0.95, 0.0), r("Retrain", 0.0, 0.30, 10.0, cka=1.0),
                 r("Head", 0.0, 0.60 + 0.01 * s, 1.0 + (s == 1)), r("Deep", 0.01, 0.30 + 0.02 * (s - 1), 10.0 + s),
                 r("Loud", 0.30, 0.70, 2.0), r("Capped", 0.0, 0.30 + 0.02 * (s - 1), 30.0, censored=1.0)]
    rows.append(row("Once", 0, scenario="cw", **{"gold/probe/forget_acc": 0.3, "gold/relearn/steps": 10.0,
                    "acc/forget": 0.0, "gold/forget_acc_gap": 0.0, "probe/forget_acc": 0.9, "relearn/steps": 1.0}))
    return rows


def test_feature_columns_and_the_methods_that_forget_by_the_outputs_only(tmp_path):
    from lightning_unlearn.benchmark.features import feature_check
    from lightning_unlearn.benchmark.stats import add_feature_columns

    rows = add_feature_columns(_feature_rows())
    by = {(r["method"], r["seed"]): r for r in rows}
    assert by[("Retrain", 0)]["probe_excess"] == 0.0 and by[("Retrain", 0)]["relearn_ratio"] == 1.0
    assert by[("Original", 0)]["relearn_ratio"] == 0.0 and by[("Head", 1)]["relearn_ratio"] == pytest.approx(0.2)
    assert by[("Head", 2)]["probe_excess"] == pytest.approx(0.32)
    check = feature_check(rows, "cw")
    assert check["by_outputs"] == ["Capped", "Deep", "Head", "Once"]  # within 2 points (1 sample is 1 point here)
    assert check["flagged"] == ["Head"] and check["untestable"] == ["Once"]
    head = check["methods"]["Head"]
    assert head["probe_keeps"] and head["relearn_keeps"] and head["probe_excess"]["ci"][0] > 0.25
    assert not check["methods"]["Capped"]["relearn_keeps"]  # every draw censored: its ratio is only a lower bound
    assert "Loud" not in check["by_outputs"] and check["methods"]["Loud"]["probe_keeps"]
    assert feature_check([r for r in rows if False], "cw") is None
    no_components = [{k: v for k, v in r.items() if "probe" not in k and "relearn" not in k} for r in rows]
    assert feature_check(no_components, "cw") is None

    br.write_all(_feature_rows(), tmp_path)
    text = (tmp_path / "report.md").read_text().split("## cw")[1]
    line = text.split("| Head | ")[1].split("\n")[0]
    assert "| 31.00 ± 1.00 [" in "| " + line and "| 0.13 ± 0.06 [" in "| " + line  # probe excess points, ratio 4/30
    assert "(cens. 100% / -)" not in line and "(cens. 100% / 0%)" in text.split("| Capped | ")[1].split("\n")[0]
    assert "**By the outputs, not by the features**" in text
    assert "Head (\\|ΔAcc D_f\\| 0.00; probe excess 31.00 [" in text
    assert "Not testable (a single run, no interval): Once." in text
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["summary"]["cw"]["features"]["flagged"] == ["Head"]
    header = (tmp_path / "results.csv").read_text().splitlines()[0].split(",")
    assert header.index("probe_excess") == header.index("avg_gap") + 1 and "relearn_ratio" in header
    assert header.index("probe/forget_acc") > header.index("acc/forget")  # the evaluator's keys, in its order


def test_relearn_ratio_undefined_where_the_gold_model_needs_no_step():
    from lightning_unlearn.benchmark.features import feature_check
    from lightning_unlearn.benchmark.stats import add_feature_columns

    rows = [row(m, s, **{"gold/relearn/steps": g, "relearn/steps": 0.0, "gold/forget_acc_gap": 0.0,
                         "probe/forget_acc": 0.9, "gold/probe/forget_acc": 0.9})
            for s, g in enumerate((0.0, 0.33, 2.0)) for m in ("Retrain", "X")]
    rows = add_feature_columns(rows)
    assert [r["relearn_ratio"] for r in rows if r["method"] == "X"] == [None, None, 0.0]
    check = feature_check(rows, "s")
    assert check["relearn_undefined"] == {"runs": 2, "of": 3, "gold_steps": pytest.approx(0.165)}
    assert check["flagged"] == []
    text = br.render_report(rows, provenance={})
    assert "none of the 1 method(s) that forget" in text
    assert "Relearn ratio undefined in 2 of 3 run(s): there the gold model reaches the attack's target in fewer " \
        "than 1 step (mean 0.17)" in text
