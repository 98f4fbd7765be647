"""The matrix of issue 26, replayed: bad input, crafted files and interruptions of a hostile or careless user against
``benchmark``, ``tune``, ``audit`` (and the LightningCLI cases of the same issue). Every case must end ok or as one
clear error line, with nothing outside the output directories touched and nothing a file names executed.

    python tests/hostile_matrix.py            # every case (tiny configs: digits 4x4, 1 epoch, 1 seed, 1 method)
    python tests/hostile_matrix.py --quick    # the cases the test suite runs (tests/test_hostile.py)
    python tests/hostile_matrix.py --only out.lock,leak

Prints one line per case (``ok``, ``clear`` -- refused in one line --, or ``NOT OK`` with why) and the counts; exits
with the number of cases not ok. ``owner`` says which stream of work fixed the case (``cli``: the LightningCLI's).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hostile as h  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Case:
    id: str
    fn: Callable[[Ctx], tuple[str, str]]
    owner: str = "safety"
    quick: bool = False


CASES: list[Case] = []


def case(id: str, owner: str = "safety", quick: bool = False) -> Callable[[Callable], Callable]:
    def deco(fn: Callable) -> Callable:
        CASES.append(Case(id, fn, owner, quick))
        return fn

    return deco


@dataclass
class Ctx:
    """Where a replay works: ``outside`` (the user's files, which no case may touch), ``work`` (output directories)."""

    root: Path
    outside: Path = field(init=False)
    work: Path = field(init=False)
    _base: Path | None = None
    _n: int = 0

    def __post_init__(self) -> None:
        self.outside = h.victims(self.root / "outside")
        self.work = self.root / "work"
        self.work.mkdir(parents=True, exist_ok=True)

    def fresh(self, name: str) -> Path:
        self._n += 1
        return self.work / f"{self._n:02d}-{re.sub(r'[^A-Za-z0-9.-]+', '-', name)}"

    def bench_yaml(self, out: Path, **over: Any) -> Path:
        return h.write_yaml(out.with_name(out.name + ".yaml"), h.bench_config(out, **over))

    def base(self) -> Path:
        """A finished tiny benchmark (run once per replay); cases copy it."""
        if self._base is None:
            out = self.work / "base"
            ran = h.run_main(h.command("benchmark"), ["-c", str(self.bench_yaml(out))])
            if ran.code:
                raise RuntimeError(f"the base benchmark failed: {ran.err[-2000:]}")
            self._base = out
        return self._base

    def copy_base(self, name: str) -> tuple[Path, Path]:
        """A copy of the base benchmark and its config (pointing at the copy)."""
        out = self.fresh(name)
        shutil.copytree(self.base(), out, symlinks=True)
        return out, self.bench_yaml(out)

    def ckpt(self, kind: str) -> Path:
        """A checkpoint of the base benchmark: ``original``, ``gold`` or ``unlearned``."""
        base = self.base()
        if kind == "unlearned":
            return next(base.glob("runs/*/*/seed0/Finetune/unlearned.ckpt"))
        return next(base.glob(f"models/{kind}-*/model.ckpt"))


def ok(detail: str = "") -> tuple[str, str]:
    return "ok", detail


def bad(detail: str) -> tuple[str, str]:
    return "NOT OK", " ".join(detail.split())[:400]


def refused(ran: h.Ran, *needles: str) -> tuple[str, str]:
    """``clear`` when ``ran`` is one error line holding the needles, else NOT OK with what it printed."""
    if h.ZEN in ran.out or h.ZEN in ran.err:
        return bad("a module named by a file was imported (`import this` printed the Zen of Python)")
    if ran.one_line_error(*needles):
        return "clear", ran.error_lines[0][:300]
    return bad(f"exit {ran.code}; wanted one error line with {needles}; got: {ran.err[-700:]}")


def unchanged(before: dict[str, str], *roots: Path) -> bool:
    after = h.sha256s(*roots)
    return {k: after.get(k) for k in before} == before


# -- outputs written over ---------------------------------------------------------------------------------------
BENCH_OUTPUTS = ("config.yaml", "report.md", "results.csv", "results.json", "gap_to_gold.png", "time_vs_gap.png")


@case("out.lock.benchmark", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    out = ctx.fresh("lock-bench")
    with h.held(out):
        return refused(h.run_main(h.command("benchmark"), ["-c", str(ctx.bench_yaml(out))]), "in use")


@case("out.lock.benchmark.2-processes")
def _(ctx: Ctx) -> tuple[str, str]:
    """A second benchmark process on the directory of a running one is refused; the first goes on untouched (on
    c7d07c8 the second deleted the first's model directory)."""
    out = ctx.fresh("lock-2procs")
    cfg = ctx.bench_yaml(out, training={"max_epochs": 5000, "lr": 0.05})  # still training when the second starts
    cmd = [h.python(), "-m", "lightning_unlearn", "benchmark", "-c", str(cfg)]
    first = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=h.env_with_package(), cwd=ctx.root)
    assert first.stderr is not None
    for line in first.stderr:
        if "training the" in line:
            break
    models = sorted(p.name for p in (out / "models").iterdir())
    second = subprocess.run(cmd, capture_output=True, text=True, env=h.env_with_package(), cwd=ctx.root)
    running, after = first.poll() is None, sorted(p.name for p in (out / "models").iterdir())
    first.send_signal(signal.SIGINT)
    first.communicate()
    if not running or not models or after != models:
        return bad(f"the first run was disturbed: running {running}, models {models} -> {after}")
    return refused(h.Ran(second.returncode, second.stderr), "in use")


@case("out.lock.tune", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    out = ctx.fresh("lock-tune")
    tune = h.write_yaml(ctx.work / f"{out.name}.yaml", h.tune_config(out, ctx.bench_yaml(ctx.fresh("unused"))))
    with h.held(out, "tune"):
        return refused(h.run_main(h.command("tune"), ["-c", str(tune)]), "in use")


@case("out.lock.audit", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    out = ctx.fresh("lock-audit")
    cfg = h.write_yaml(ctx.work / f"{out.name}.yaml", h.audit_config(out))
    with h.held(out, "audit"):
        return refused(h.run_main(h.command("audit"), ["-c", str(cfg)]), "in use")


@case("out.foreign.benchmark", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    out = ctx.fresh("foreign-bench")
    out.mkdir(parents=True)
    before = h.plant_user_files(out, BENCH_OUTPUTS)
    res = refused(h.run_main(h.command("benchmark"), ["-c", str(ctx.bench_yaml(out))]), "did not write")
    return res if unchanged(before, out) else bad("the user's files were changed")


@case("out.link.benchmark.report", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    out = ctx.fresh("link-report")
    h.plant_link(out / "report.md", ctx.outside / "report.md")
    return refused(h.run_main(h.command("benchmark"), ["-c", str(ctx.bench_yaml(out))]), "symbolic link")


@case("out.link.benchmark.tmp", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    out = ctx.fresh("link-tmp")
    h.plant_link(out / "results.json.tmp", ctx.outside / "notes.txt")
    return refused(h.run_main(h.command("benchmark"), ["-c", str(ctx.bench_yaml(out))]), "symbolic link")


@case("out.link.benchmark.models", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    out = ctx.fresh("link-models")
    h.plant_link(out / "models", ctx.outside / "dir")
    return refused(h.run_main(h.command("benchmark"), ["-c", str(ctx.bench_yaml(out))]), "symbolic link")


@case("out.link.benchmark.result")
def _(ctx: Ctx) -> tuple[str, str]:
    out, cfg = ctx.copy_base("link-result")
    result = next(out.glob("runs/*/*/seed0/Finetune/result.json"))
    result.unlink()
    h.plant_link(result, ctx.outside / "notes.txt")
    return refused(h.run_main(h.command("benchmark"), ["-c", str(cfg)]), "symbolic link")


def _tune_yaml(ctx: Ctx, out: Path, **over: Any) -> Path:
    bench = ctx.bench_yaml(ctx.fresh(out.name + "-eval"))
    return h.write_yaml(ctx.work / f"{out.name}.yaml", h.tune_config(out, bench, **over))


@case("out.foreign.tune", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    out = ctx.fresh("foreign-tune")
    out.mkdir(parents=True)
    before = h.plant_user_files(out, ("config.yaml", "tune.json", "tune.md"))
    res = refused(h.run_main(h.command("tune"), ["-c", str(_tune_yaml(ctx, out))]), "did not write")
    return res if unchanged(before, out) else bad("the user's files were changed")


@case("out.link.tune.best-tmp", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    out = ctx.fresh("link-besttmp")
    h.plant_link(out / "best" / "Finetune.yaml.tmp", ctx.outside / "notes.txt")
    return refused(h.run_main(h.command("tune"), ["-c", str(_tune_yaml(ctx, out))]), "symbolic link")


@case("out.link.tune.studies-db", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    out = ctx.fresh("link-db")
    h.plant_link(out / "studies.db", ctx.outside / "data.csv")
    return refused(h.run_main(h.command("tune"), ["-c", str(_tune_yaml(ctx, out))]), "symbolic link")


@case("out.foreign.tune.studies-db", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    out = ctx.fresh("foreign-db")
    out.mkdir(parents=True)
    before = h.plant_user_files(out, ("studies.db",))
    res = refused(h.run_main(h.command("tune"), ["-c", str(_tune_yaml(ctx, out))]), "studies.db", "not an Optuna")
    return res if unchanged(before, out) else bad("the user's studies.db was changed")


@case("out.foreign.audit", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    out = ctx.fresh("foreign-audit")
    out.mkdir(parents=True)
    before = h.plant_user_files(out, ("audit.md", "audit.json"))
    cfg = h.write_yaml(ctx.work / f"{out.name}.yaml", h.audit_config(out))
    res = refused(h.run_main(h.command("audit"), ["-c", str(cfg)]), "did not write")
    return res if unchanged(before, out) else bad("the user's files were changed")


@case("out.link.audit.tmp", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    out = ctx.fresh("link-audit")
    h.plant_link(out / "audit.json.tmp", ctx.outside / "notes.txt")
    cfg = h.write_yaml(ctx.work / f"{out.name}.yaml", h.audit_config(out))
    return refused(h.run_main(h.command("audit"), ["-c", str(cfg)]), "symbolic link")


@case("out.other-command", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    out, _ = ctx.copy_base("tune-over-bench")
    return refused(h.run_main(h.command("tune"), ["-c", str(_tune_yaml(ctx, out))]), "lightning_unlearn benchmark")


@case("out.rerun.benchmark", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    out, cfg = ctx.copy_base("rerun")
    ran = h.run_main(h.command("benchmark"), ["-c", str(cfg)])
    if ran.code or "3 finished run(s) reused" not in ran.err:
        return bad(f"exit {ran.code}: {ran.err[-500:]}")
    return ok("every run reused")


# -- silently wrong ---------------------------------------------------------------------------------------------
@case("sw.ckpt.weights.benchmark", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    crafted = h.edit_checkpoint(ctx.ckpt("original"), ctx.work / "weights.ckpt", h.naming_weights(ctx.outside / "x.pt"))
    out = ctx.fresh("weights")
    ran = h.run_main(h.command("benchmark"), ["-c", str(ctx.bench_yaml(out)), f"--original_ckpt={crafted}"])
    return refused(ran, "weights", "would open a file")


@case("sw.ckpt.weights.unlearn", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    crafted = h.edit_checkpoint(ctx.ckpt("original"), ctx.work / "weights.ckpt", h.naming_weights(ctx.outside / "x.pt"))
    ran = h.run_main(h.command("unlearn"), [*_unlearn_args(ctx, crafted)])
    return refused(ran, "would open a file")


def _unlearn_args(ctx: Ctx, original: Path) -> list[str]:
    out = ctx.fresh("unlearn")
    return ["--data=lightning_unlearn.data.DigitsDataModule", "--data.image_size=4", "--data.holdout_fraction=0.5",
            "--data.augment=false", "--data.forget.classes=[3]", "--model=Finetune", f"--original_ckpt={original}",
            f"--output={out / 'unlearned.ckpt'}", "--trainer.max_epochs=1", "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false", "--trainer.logger=false"]


@case("sw.original-is-unlearned", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    out = ctx.fresh("unlearned-as-original")
    ran = h.run_main(h.command("benchmark"), ["-c", str(ctx.bench_yaml(out)), f"--original_ckpt={ctx.ckpt('unlearned')}"])
    return refused(ran, "role 'unlearned'")


def _scenarios(ctx: Ctx, override: str) -> list[Any]:
    """The scenarios a config of one sub-class target reads with ``override`` on the command line."""
    from lightning_unlearn.benchmark import load_config

    out = ctx.fresh("scenarios")  # one scenario of one target: jsonargparse merged lists of the same length
    cfg = ctx.bench_yaml(out, scenarios=[{"name": "class-wise", "targets": [{"classes": [3], "per_class": 40}]}])
    got = load_config(["-c", str(cfg), f"--scenarios={override}"])
    return [(s.name, [t.describe() for t in s.targets]) for s in got.scenarios]


@case("sw.scenarios.replace.class", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    got = _scenarios(ctx, "[{name: class-wise, targets: [{classes: [4]}]}]")
    return ok(str(got)) if got == [("class-wise", [{"classes": [4]}])] else bad(f"merged: {got}")


@case("sw.scenarios.replace.random", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    got = _scenarios(ctx, "[{name: random, targets: [{fraction: 0.2}]}]")
    return ok(str(got)) if got == [("random", [{"fraction": 0.2}])] else bad(f"merged: {got}")


@case("sw.tuned.trainer-keys", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    from lightning_unlearn.experiment import write_best

    best = ctx.fresh("best")
    write_best(best / "Finetune.yaml", method="Finetune", class_path="lightning_unlearn.methods.Finetune",
               init_args={"lr": 0.01}, max_epochs=1, record={"tuning_groups": []},
               trainer={"default_root_dir": str(ctx.outside / "dir"), "logger": True, "enable_checkpointing": True})
    out = ctx.fresh("tuned")
    ran = h.run_main(h.command("benchmark"), ["-c", str(ctx.bench_yaml(out)), f"--tuned.dir={best}"])
    return refused(ran, "Finetune.yaml", "trainer may not set")


@case("sw.info.truncated", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    out, cfg = ctx.copy_base("info-truncated")
    original = next(out.glob("models/original-*"))
    gold = next(out.glob("models/gold-*/model.ckpt"))
    h.corrupt(original / "info.json", "truncate")
    shutil.copyfile(gold, original / "model.ckpt")  # the gold model passed for the original
    ran = h.run_main(h.command("benchmark"), ["-c", str(cfg)])
    if ran.code or "info.json is corrupt" not in ran.err:
        return bad(f"exit {ran.code}: {ran.err[-600:]}")
    if (original / "model.ckpt").read_bytes() == gold.read_bytes():
        return bad("the gold model was used as the original")
    return ok("info.json named and set aside; the original retrained")


@case("sw.tune.no-repeat-after-restart", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    """A study interrupted in trial 2 and started again asks what an uninterrupted one asks (no trial repeated)."""
    from lightning_unlearn.executors import Job
    from lightning_unlearn.search_space import FloatRange
    from lightning_unlearn.tune.study import make_sampler, open_study, run_study, storage_url, trial_seed

    space = {"x": FloatRange(0.0, 1.0), "y": FloatRange(0.0, 1.0)}

    def objective(x: float, y: float, stop: bool) -> dict[str, list[float]]:
        if stop:
            raise KeyboardInterrupt
        return {"values": [(x - 0.3) ** 2 + y]}

    def run(url: str, stop_at: int) -> None:
        for kind in ("random", "tpe"):
            study = open_study(kind, url, ["minimize"], make_sampler(kind, 0))
            with contextlib.suppress(KeyboardInterrupt):
                run_study(study, space, 6, lambda t: Job("k", objective, {**t.params, "stop": t.number == stop_at}),
                          sampler=lambda k, kind=kind: make_sampler(kind, trial_seed(0, k), None, 6))

    once, twice = storage_url(ctx.fresh("study-once")), storage_url(ctx.fresh("study-twice"))
    run(once, -1)
    run(twice, 2)
    run(twice, -1)
    import optuna

    for kind in ("random", "tpe"):
        a = [t.params for t in optuna.load_study(study_name=kind, storage=once).trials]
        b = [t.params for t in optuna.load_study(study_name=kind, storage=twice).trials
             if t.state.name == "COMPLETE"]
        if a != b or len({json.dumps(p, sort_keys=True) for p in b}) != len(b):
            return bad(f"{kind}: resumed {b} != uninterrupted {a}")
    return ok("resumed studies ask what uninterrupted ones ask")


# -- caches that lie --------------------------------------------------------------------------------------------
def _corrupt_and_rerun(ctx: Ctx, name: str, pattern: str, kind: str) -> tuple[str, str]:
    out, cfg = ctx.copy_base(name)
    target = next(out.glob(pattern))
    h.corrupt(target, kind)
    ran = h.run_main(h.command("benchmark"), ["-c", str(cfg)])
    aside = target.with_name(target.name + ".corrupt-1")
    if ran.code or f"{target} is corrupt" not in ran.err or not aside.is_file():
        return bad(f"exit {ran.code}, set aside: {aside.is_file()}: {ran.err[-600:]}")
    rows = json.loads((out / "results.json").read_text())["rows"]
    if sorted(r["method"] for r in rows) != ["Finetune", "Original", "Retrain"]:
        return bad(f"rows {[r['method'] for r in rows]}")
    return ok(f"{target.name} named, set aside, made again")


@case("err.cache.result.list", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    return _corrupt_and_rerun(ctx, "result-list", "runs/*/*/seed0/Finetune/result.json", "list")


@case("err.cache.result.pickle", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    return _corrupt_and_rerun(ctx, "result-pickle", "runs/*/*/seed0/Original/result.json", "pickle")


@case("err.cache.info.pickle", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    return _corrupt_and_rerun(ctx, "info-pickle", "models/gold-*/info.json", "pickle")


_AUDIT: dict[str, Path] = {}


def _audit_base(ctx: Ctx) -> Path:
    if "out" not in _AUDIT:
        out = ctx.work / "audit-base"
        cfg = h.write_yaml(ctx.work / "audit-base.yaml", h.audit_config(out))
        ran = h.run_main(h.command("audit"), ["-c", str(cfg)])
        if ran.code:
            raise RuntimeError(f"the base audit failed: {ran.err[-1500:]}")
        _AUDIT["out"] = out
    return _AUDIT["out"]


@case("err.cache.audit.scores-and-info")
def _(ctx: Ctx) -> tuple[str, str]:
    base = _audit_base(ctx)
    out = ctx.fresh("audit-corrupt")
    shutil.copytree(base, out, symlinks=True)
    scores = sorted(out.glob("models/*/scores.json"))[0]
    info = sorted(out.glob("models/*/info.json"))[-1]
    h.corrupt(scores, "list")
    h.corrupt(info, "pickle")
    cfg = h.write_yaml(ctx.work / f"{out.name}.yaml", h.audit_config(out))
    ran = h.run_main(h.command("audit"), ["-c", str(cfg)])
    named = f"{scores} is corrupt" in ran.err and f"{info} is corrupt" in ran.err
    if ran.code or not named or not json.loads((out / "audit.json").read_text())["rows"]:
        return bad(f"exit {ran.code}: {ran.err[-800:]}")
    return ok("scores.json and info.json named, set aside, made again")


_TUNE: dict[str, Path] = {}


def _tune_base(ctx: Ctx) -> tuple[Path, Path]:
    if "out" not in _TUNE:
        out = ctx.work / "tune-base"
        cfg = _tune_yaml(ctx, out)
        ran = h.run_main(h.command("tune"), ["-c", str(cfg)])
        if ran.code:
            raise RuntimeError(f"the base tuning failed: {ran.err[-1500:]}")
        _TUNE.update(out=out, cfg=cfg)
    return _TUNE["out"], _TUNE["cfg"]


def _tune_copy(ctx: Ctx, name: str) -> tuple[Path, Path]:
    base, cfg = _tune_base(ctx)
    out = ctx.fresh(name)
    shutil.copytree(base, out, symlinks=True)
    data = yaml.safe_load(cfg.read_text())
    return out, h.write_yaml(ctx.work / f"{out.name}.yaml", {**data, "output_dir": str(out)})


@case("err.cache.tune.reference")
def _(ctx: Ctx) -> tuple[str, str]:
    out, cfg = _tune_copy(ctx, "tune-reference")
    ref = next(out.glob("work/runs/*/*/seed10/Original/reference.json"))
    h.corrupt(ref, "truncate")
    ran = h.run_main(h.command("tune"), ["-c", str(cfg)])
    if ran.code or f"{ref} is corrupt" not in ran.err or "2 reused" not in ran.err:
        return bad(f"exit {ran.code}: {ran.err[-600:]}")
    return ok("reference.json named, set aside, evaluated again; trials reused")


@case("err.cache.tune.studies-db")
def _(ctx: Ctx) -> tuple[str, str]:
    out, cfg = _tune_copy(ctx, "tune-db")
    h.corrupt(out / "studies.db", "garbage")
    ran = h.run_main(h.command("tune"), ["-c", str(cfg)])
    if ran.code or "studies.db is corrupt" not in ran.err or not (out / "studies.db.corrupt-1").is_file():
        return bad(f"exit {ran.code}: {ran.err[-600:]}")
    return ok("studies.db named, set aside, the study started anew")


@case("err.ctrl-c.tune-trial")
def _(ctx: Ctx) -> tuple[str, str]:
    out = ctx.fresh("tune-ctrl-c")
    bench = ctx.bench_yaml(ctx.fresh("tune-ctrl-c-eval"), methods=[
        {"name": "Finetune", "class_path": "lightning_unlearn.methods.Finetune", "init_args": {"lr": 0.01},
         "max_epochs": 40}])
    cfg = h.write_yaml(ctx.work / f"{out.name}.yaml", h.tune_config(out, bench, n_trials=3, search_space={
        "Finetune": {"lr": {"low": 0.001, "high": 0.1, "log": True}, "max_epochs": None}}))
    cmd = [h.python(), "-m", "lightning_unlearn", "tune", "-c", str(cfg)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=h.env_with_package(), cwd=ctx.root)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "Original's gap" in line:
            break
    time.sleep(3.0)  # inside the first trial's training
    proc.send_signal(signal.SIGINT)
    err = proc.stderr.read()
    code = proc.wait()
    if code == 130 and "lightning_unlearn tune: interrupted; run the same command again to resume" in err:
        rerun = h.run_main(h.command("tune"), ["-c", str(cfg)])
        return ok("130, interrupted line; rerun finished") if rerun.code == 0 else bad(rerun.err[-500:])
    return bad(f"exit {code}: {err[-600:]}")


@case("err.nan-original.benchmark", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    nan = h.edit_checkpoint(ctx.ckpt("original"), ctx.work / "nan.ckpt", h.with_nan)
    out = ctx.fresh("nan")
    ran = h.run_main(h.command("benchmark"), ["-c", str(ctx.bench_yaml(out)), f"--original_ckpt={nan}"])
    res = refused(ran, "nan.ckpt", "NaN/inf")
    return bad("blamed on the learning rate") if "Lower `lr`" in ran.err else res


@case("err.nan-original.unlearn", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    nan = h.edit_checkpoint(ctx.ckpt("original"), ctx.work / "nan.ckpt", h.with_nan)
    ran = h.run_main(h.command("unlearn"), _unlearn_args(ctx, nan))
    res = refused(ran, "nan.ckpt", "NaN/inf")
    return bad(f"blamed on the learning rate: {ran.error_lines}") if "Lower `lr`" in ran.err else res


@case("err.indices-file.overflow", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    big = ctx.work / "big.json"
    big.write_text("[5, 99999999999999999999999999]")
    out = ctx.fresh("overflow")
    ran = h.run_main(h.command("fit"), [*FIT, f"--data.forget.indices_file={big}", f"--trainer.default_root_dir={out}"])
    return refused(ran, "big.json")


# -- one line, not the usage -------------------------------------------------------------------------------------
PARSE = {
    "indices-bool": ("--scenarios=[{name: r, targets: [{indices: [1, true]}]}]", "--scenarios"),
    "fraction-nan": ("--scenarios=[{name: r, targets: [{fraction: .nan}]}]", "fraction"),
    "indices-float": ("--scenarios=[{name: r, targets: [{indices: [1, 2.5]}]}]", "--scenarios"),
    "fraction-abc": ("--scenarios=[{name: r, targets: [{fraction: abc}]}]", "--scenarios"),
    "backbone-popen": ("--backbone={class_path: subprocess.Popen}", "--backbone"),
    "seeds": ("--seeds=[a]", "--seeds"),
}
for _name, (_arg, _needle) in PARSE.items():

    @case(f"err.parse.benchmark.{_name}", quick=True)
    def _(ctx: Ctx, arg: str = _arg, needle: str = _needle) -> tuple[str, str]:
        out = ctx.fresh("parse")
        return refused(h.run_main(h.command("benchmark"), ["-c", str(ctx.bench_yaml(out)), arg]), needle)


@case("err.parse.audit.backbone-popen", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    out = ctx.fresh("parse-audit")
    cfg = h.write_yaml(ctx.work / f"{out.name}.yaml", h.audit_config(out))
    return refused(h.run_main(h.command("audit"), ["-c", str(cfg), "--backbone={class_path: subprocess.Popen}"]),
                   "--backbone")


@case("err.parse.tune.seeds", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    out = ctx.fresh("parse-tune")
    return refused(h.run_main(h.command("tune"), ["-c", str(_tune_yaml(ctx, out)), "--seeds=[a]"]), "--seeds")


@case("err.yaml-tag.benchmark", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    out = ctx.fresh("tag-bench")
    tag = h.python_tag_yaml(ctx.work / "tag.yaml", ctx.root / h.PWNED)
    return refused(h.run_main(h.command("benchmark"), ["-c", str(ctx.bench_yaml(out)), "-c", str(tag)]), "tag.yaml")


@case("err.yaml-tag.data", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    out = ctx.fresh("tag-data")
    tag = h.python_tag_yaml(ctx.work / "tagdata.yaml", ctx.root / h.PWNED, key="class_path")
    ran = h.run_main(h.command("benchmark"), ["-c", str(ctx.bench_yaml(out)), f"--data={tag}"])
    return refused(ran, "tagdata.yaml")


@case("err.yaml-tag.tune", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    tag = h.python_tag_yaml(ctx.work / "tagtune.yaml", ctx.root / h.PWNED)
    return refused(h.run_main(h.command("tune"), ["-c", str(tag)]), "tagtune.yaml")


@case("err.yaml-tag.tune-benchmark", quick=True)
def _(ctx: Ctx) -> tuple[str, str]:
    tag = h.python_tag_yaml(ctx.work / "tagbench.yaml", ctx.root / h.PWNED)
    out = ctx.fresh("tag-tune-bench")
    cfg = h.write_yaml(ctx.work / f"{out.name}.yaml", h.tune_config(out, tag))
    return refused(h.run_main(h.command("tune"), ["-c", str(cfg)]), "tagbench.yaml")


# -- the LightningCLI's cases of the same issue (the `cli` stream) ----------------------------------------------------
FIT = ["-c", str(ROOT / "configs/data/digits.yaml"), "-c", str(ROOT / "configs/model/allcnn.yaml"),
       "--trainer.accelerator=cpu", "--trainer.max_epochs=1"]
CLI_PARSE = {
    "indices-bool": ["--data.forget.indices", "[1, true]"],
    "fraction-nan": ["--data.forget.fraction", ".nan"],
    "indices-float": ["--data.forget.indices", "[1, 2.5]"],
    "fraction-abc": ["--data.forget.fraction", "abc"],
    "model-popen": ["--model", "subprocess.Popen"],
    "model-eval": ["--model", "builtins.eval"],
    "data-os-system": ["--data", "os.system"],
}
for _name, _extra in CLI_PARSE.items():

    @case(f"cli.fit.{_name}", owner="cli")
    def _(ctx: Ctx, extra: list[str] = _extra) -> tuple[str, str]:
        out = ctx.fresh("fit")
        ran = h.run_main(h.command("fit"), [*FIT, f"--trainer.default_root_dir={out}", *extra])
        return refused(ran) if len(ran.err.strip().splitlines()) <= 2 else bad(f"{len(ran.err.splitlines())} lines")


@case("cli.fit.yaml-tag-data", owner="cli")
def _(ctx: Ctx) -> tuple[str, str]:
    tag = h.python_tag_yaml(ctx.work / "fittag.yaml", ctx.root / h.PWNED, key="data")
    ran = h.run_main(h.command("fit"), ["-c", str(tag), "-c", str(ROOT / "configs/model/allcnn.yaml")])
    return refused(ran) if len(ran.err.strip().splitlines()) <= 2 else bad(f"{len(ran.err.splitlines())} lines")


@case("cli.test.ckpt-path-names-a-class", owner="cli")
def _(ctx: Ctx) -> tuple[str, str]:
    def edit(ckpt: dict[str, Any]) -> None:
        ckpt.setdefault("hyper_parameters", {})["_class_path"] = "this.NoSuchClass"

    evil = h.edit_checkpoint(ctx.ckpt("original"), ctx.work / "evil.ckpt", edit)
    out = ctx.fresh("test")
    ran = h.run_main(h.command("test"), [*FIT[:4], f"--ckpt_path={evil}", f"--trainer.default_root_dir={out}"])
    return refused(ran)


# -- leaks --------------------------------------------------------------------------------------------------------
def _ray_pids() -> set[int]:
    pids = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"ray::" in cmd or b"/ray/" in cmd:
            pids.add(int(name))
    return pids


@case("leak.ray.sigkill")
def _(ctx: Ctx) -> tuple[str, str]:
    if not Path("/proc").is_dir():
        return ok("skipped: no /proc")
    before = _ray_pids()
    out = ctx.fresh("ray")
    cfg = ctx.bench_yaml(out, executor={"name": "ray", "num_cpus": 2})
    cmd = [h.python(), "-m", "lightning_unlearn", "benchmark", "-c", str(cfg)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=h.env_with_package(), cwd=ctx.root)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "Started a local Ray" in line:
            break
    time.sleep(5.0)  # its agents and first workers up
    started = _ray_pids() - before
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30
    while _ray_pids() - before and time.monotonic() < deadline:
        time.sleep(1.0)
    left = _ray_pids() - before
    for pid in left:  # what this case started and the executor left: stopped here, so the machine is clean
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    if not started:
        return bad("no Ray process was seen running")
    return bad(f"{len(left)} Ray process(es) left after SIGKILL") if left else ok(f"{len(started)} Ray processes stopped")


# -- the replay ---------------------------------------------------------------------------------------------------
def run_case(ctx: Ctx, c: Case) -> tuple[str, str]:
    """``(outcome, detail)`` of one case; NOT OK also when it changed a file outside the output directories or ran a
    payload (both are put back for the next case)."""
    outside = h.sha256s(ctx.outside)
    try:
        with contextlib.chdir(ctx.root):  # what a command would write beside it lands in the replay's directory
            outcome, detail = c.fn(ctx)
    except Exception as err:  # noqa: BLE001 - a case that crashes the replay is not ok
        outcome, detail = bad(f"{type(err).__name__}: {err}")
    if h.sha256s(ctx.outside) != outside:
        outcome, detail = bad(f"a file outside the output directories changed; {detail}")
        h.victims(ctx.outside)
    pwned = list(ctx.root.rglob(h.PWNED))
    if pwned:
        outcome, detail = bad(f"a payload ran ({pwned[0]}); {detail}")
        for p in pwned:
            p.unlink()
    return outcome, detail


def replay(root: Path, quick: bool = False, only: list[str] | None = None, owners: tuple[str, ...] | None = None,
           stream: Any = sys.stdout) -> dict[str, tuple[str, str]]:
    """Run the cases (``quick``: the suite's subset; ``only``: id prefixes; ``owners``: whose cases) under ``root``;
    returns ``{id: (outcome, detail)}``. A case that touches ``outside`` or executes a payload is NOT OK."""
    ctx = Ctx(root)
    results: dict[str, tuple[str, str]] = {}
    for c in CASES:
        if (quick and not c.quick) or (only and not any(c.id.startswith(p) for p in only)):
            continue
        if owners is not None and c.owner not in owners:
            continue
        t0 = time.perf_counter()
        outcome, detail = results[c.id] = run_case(ctx, c)
        print(f"{outcome:7s} {c.id:42s} [{c.owner}] {time.perf_counter() - t0:5.1f}s  {detail[:160]}", file=stream,
              flush=True)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only the cases the test suite runs")
    ap.add_argument("--only", default="", help="comma-separated prefixes of case ids")
    ap.add_argument("--keep", default=None, help="work in this directory and keep it (default: a temporary one)")
    args = ap.parse_args()
    only = [p for p in args.only.split(",") if p] or None
    t0 = time.perf_counter()
    if args.keep:
        results = replay(Path(args.keep).resolve(), args.quick, only)
    else:
        with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
            results = replay(Path(tmp).resolve(), args.quick, only)
    counts = {k: sum(o == k for o, _ in results.values()) for k in ("ok", "clear", "NOT OK")}
    print(f"{len(results)} cases: {counts['ok']} ok, {counts['clear']} clear error, {counts['NOT OK']} not ok "
          f"({time.perf_counter() - t0:.0f}s)")
    return counts["NOT OK"]


if __name__ == "__main__":
    sys.exit(main())
