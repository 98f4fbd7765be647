"""Run (or resume) an audit: train, unlearn and score every shadow model through an Executor, then compute U-LiRA and
the challenge score per audited row, and write ``audit.json``, ``audit.md`` and ``audit.png``."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lightning_unlearn.audit.challenge import DELTA, challenge_score, forgetting_quality_from_scores
from lightning_unlearn.audit.config import AuditConfig
from lightning_unlearn.audit.jobs import score_job, train_job, unlearn_job
from lightning_unlearn.audit.report import write_reports
from lightning_unlearn.audit.shadow import ModelEntry, ShadowPlan, cached_scores, make_shadow_plan, model_problem
from lightning_unlearn.audit.ulira import AuditError, ulira
from lightning_unlearn.executors import Job, JobResult, make_executor
from lightning_unlearn.experiment import ORIGINAL, Progress, claim_output_dir, hms, write_json

__all__ = ["OUTPUT_FILES", "evaluate_scores", "run_audit"]

#: What the audit writes at the top of its output_dir (through ``experiment.write_output``: never over a file it did
#: not write).
OUTPUT_FILES = ("audit.json", "audit.md", "audit.png")


def evaluate_scores(
    unlearned: np.ndarray,
    retrained: np.ndarray,
    forgotten: np.ndarray,
    never_seen: np.ndarray | None = None,
    *,
    accuracies: dict[str, float] | None = None,
    evaluations: Sequence[str] = ("ulira", "challenge"),
    delta: float = DELTA,
    variance: str = "auto",
    bootstrap: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Both evaluations on ``(K, M)`` score arrays (e.g. :func:`~lightning_unlearn.audit.ulira.logit_confidence` of
    your own K unlearned and K retrained models on M examples; ``nan`` marks a missing model).

    ``accuracies`` (``RA_u, RA_r, TA_u, TA_r``: mean retain/test accuracy of the unlearned and retrained models) turn
    the challenge's F into its final score. Returns ``{"ulira": ..., "challenge": ..., "epsilons", "llr"}``.
    """
    u, r, f = np.asarray(unlearned, float), np.asarray(retrained, float), np.asarray(forgotten, bool)
    out: dict[str, Any] = {}
    if "ulira" in evaluations:
        res = ulira(u, r, f, never_seen, variance=variance, bootstrap=bootstrap, seed=seed)  # type: ignore[arg-type]
        out["ulira"] = res.to_dict()
        out["llr"] = {"unlearned": res.llr_unlearned.tolist(), "retrained": res.llr_retrained.tolist()}
    if "challenge" in evaluations:
        # the challenge compares, per forget example, unlearned and retrained models of the same forget sets
        ch = forgetting_quality_from_scores(u, r, f, delta=delta, bootstrap=bootstrap, seed=seed)
        eps, acc = ch["epsilons"], accuracies or {}
        if all(k in acc and np.isfinite(acc[k]) for k in ("RA_u", "RA_r", "TA_u", "TA_r")):
            out["challenge"] = challenge_score(eps, ch["num_models"], acc["RA_u"], acc["RA_r"], acc["TA_u"],
                                               acc["TA_r"])
        else:
            out["challenge"] = {"F": ch["F"], "examples": len(eps)}
        out["challenge"].update(F_ci95=list(ch["ci95"]), delta=delta,
                                models_per_example=[int(ch["num_models"].min()), int(ch["num_models"].max())])
        out["epsilons"] = eps.tolist()
    return out


def _step(e: ModelEntry, stage: str) -> tuple[str, str]:
    """The progress estimate's ``(family, kind)`` of a job: its stage (train, unlearn, score) and its row."""
    return stage, e.row or e.role


def run_audit(cfg: AuditConfig, stream: Any = None) -> dict[str, Any]:
    """Run or resume the audit; returns the ``audit.json`` content. Cached models and scores are reused; a job that
    fails is recorded (``failures``, and ``error.json`` in its directory) and the audit goes on without it."""
    stream = stream if stream is not None else sys.stderr
    plan = make_shadow_plan(cfg)  # every split is checked before anything is written
    with claim_output_dir(cfg.output_dir, "audit", OUTPUT_FILES):  # this run's alone, nothing of others in it
        return _run(cfg, plan, stream)


def _run(cfg: AuditConfig, plan: ShadowPlan, stream: Any) -> dict[str, Any]:
    out = Path(cfg.output_dir)
    sh = {s.index: s for s in plan.shadows}
    unique = {e.name: e for e in plan.models.values()}  # one model may stand for two rows; each is built once
    to_build = [e for e in unique.values() if model_problem(e) is not None]
    rows = set(cfg.rows)  # the originals are scored only when the Original row is reported
    to_score = [e for e in unique.values() if (e.row in rows or e.row == "") and cached_scores(e, plan.targets) is None]
    steps = [_step(e, "train" if e.role != "unlearned" else "unlearn") for e in to_build] + [
        _step(e, "score") for e in to_score]
    progress = Progress(steps, stream=stream, prog="audit")
    progress.log(f"{cfg.shadow_models} shadow models x rows {cfg.rows}; {len(unique)} models ({len(to_build)} to "
                 f"build, {len(to_score)} to score), {len(plan.targets)} targets, {cfg.forget_per_model} forgotten per "
                 f"shadow -> {out}")
    failures: list[dict[str, Any]] = []
    settings = cfg.scale_out()
    res_kw = {"resources": settings.resources}
    common = {"cfg": cfg, "threads": settings.threads}
    with make_executor(settings.spec) as ex, progress:

        def run(jobs: list[Job], entries: dict[str, tuple[ModelEntry, str]]) -> None:
            def done(res: JobResult) -> None:
                e, stage = entries[res.key]
                note = "ok" if res.ok else f"FAILED ({res.error})"[:200]
                progress.finish(*_step(e, stage), f"{stage} {e.row or 'gold'} shadow {e.shadow}", res.wall_s, note)
                if not res.ok:
                    info = {"stage": stage, "row": e.row or "gold", "shadow": e.shadow, "model": e.name,
                            "error": res.error, "traceback": res.traceback}
                    failures.append({k: v for k, v in info.items() if k != "traceback"})
                    e.dir.mkdir(parents=True, exist_ok=True)
                    write_json(e.dir / "error.json", info)

            ex.map(jobs, on_done=done)

        first = [e for e in to_build if e.role != "unlearned"]
        run([Job(e.name, train_job, {**common, "entry": e, "shadow": sh[e.shadow]}, **res_kw) for e in first],
            {e.name: (e, "train") for e in first})
        second = []
        for e in (e for e in to_build if e.role == "unlearned"):
            o, g = plan.models[f"{e.original}:{ORIGINAL}"], plan.gold(e.shadow)
            if model_problem(o) is None and model_problem(g) is None:
                second.append(Job(e.name, unlearn_job, {**common, "entry": e, "shadow": sh[e.shadow],
                                                        "original": str(o.ckpt), "gold": str(g.ckpt)}, **res_kw))
        run(second, {j.key: (unique[j.key], "unlearn") for j in second})
        third = [Job(e.name, score_job, {**common, "entry": e, "shadow": sh[e.shadow],
                                         "targets": [int(t) for t in plan.targets]}, **res_kw)
                 for e in to_score if model_problem(e) is None]
        run(third, {j.key: (unique[j.key], "score") for j in third})
    result = summarise(cfg, plan, failures)
    result["files"] = write_reports(result, out)
    progress.log(f"done in {hms(time.perf_counter() - progress.start)}"
                 + (f", {len(failures)} job(s) FAILED (listed in audit.md)" if failures else "")
                 + f". Report: {out / 'audit.md'}")
    return result


def _matrix(plan: ShadowPlan, entries: list[ModelEntry | None]) -> tuple[np.ndarray, dict[str, list[float]]]:
    mat = np.full((len(entries), len(plan.targets)), np.nan)
    acc: dict[str, list[float]] = {"RA": [], "TA": [], "FA": [], "MIA": []}
    for k, e in enumerate(entries):
        s = cached_scores(e, plan.targets) if e is not None else None
        if s is None:
            continue
        mat[k] = np.asarray(s["phi"], dtype=float)  # null (a non-finite score) reads as nan
        for key in acc:
            acc[key].append(np.nan if s[key] is None else float(s[key]))
    return mat, acc


def summarise(cfg: AuditConfig, plan: ShadowPlan, failures: list[dict[str, Any]]) -> dict[str, Any]:
    """Gather every shadow's scores and compute each row's evaluations (a row that cannot be scored says why)."""
    k_all = range(len(plan.shadows))
    forgotten = np.stack([s.target_forgotten for s in plan.shadows])
    never_seen = np.stack([~s.target_in_retain for s in plan.shadows])
    gold_mat, gold_acc = _matrix(plan, [plan.gold(k) for k in k_all])
    ref = {"RA_r": float(np.mean(gold_acc["RA"])) if gold_acc["RA"] else float("nan"),
           "TA_r": float(np.mean(gold_acc["TA"])) if gold_acc["TA"] else float("nan"),
           "MIA_r": _mean(gold_acc["MIA"])}
    rows: dict[str, Any] = {}
    for row in cfg.rows:
        mat, acc = _matrix(plan, [plan.row_model(row, k) for k in k_all])
        n_ok = int(np.isfinite(mat).all(1).sum())
        entry: dict[str, Any] = {"models": n_ok, **{k: _mean(v) for k, v in acc.items()},
                                 "MIA_std": float(np.std(acc["MIA"])) if acc["MIA"] else float("nan")}
        try:
            entry.update(evaluate_scores(mat, gold_mat, forgotten, never_seen, evaluations=cfg.evaluations,
                                         accuracies={"RA_u": entry["RA"], "TA_u": entry["TA"], **ref},
                                         delta=cfg.delta, variance=cfg.variance, bootstrap=cfg.bootstrap,
                                         seed=cfg.seed))
        except AuditError as err:
            entry["error"] = str(err)
        rows[row] = entry
    return {"config": cfg.source, "pool_size": plan.pool_size, "targets": len(plan.targets),
            "shadow_models": len(plan.shadows), "forget_per_model": cfg.forget_per_model, "reference": ref,
            "rows": rows, "failures": failures}


def _mean(v: list[float]) -> float:
    return float(np.mean(v)) if v else float("nan")
