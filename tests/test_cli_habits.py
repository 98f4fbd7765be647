"""LightningCLI habits (short names, --model.help, --help listing subcommands and methods, partial configs, lazy
tune/audit) and a quiet terminal: a tiny command's stderr holds none of the framework notices, and a user's own
warnings still show."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import lightning_unlearn.methods as methods
import lightning_unlearn.data as datamodules
from lightning_unlearn.cli import _DISPATCHED, DATAMODULES, METHODS, fragment_configs, main
from lightning_unlearn.data import UnlearningDataModule, unpack_batch
from lightning_unlearn.methods import UnlearningMethod

from conftest import digits_dm, train_classifier

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu",
         "--trainer.logger=false"]
NOTICES = ("No seed found", "Seed set to", "💡 Tip", "litlogger", "litmodels", "in eval mode at the start",
           "no optimizer", "val_dataloader` but have no `validation_step", "LeafSpec", "args parameter is intended",
           "class-wise forgetting")


def test_top_level_help_lists_subcommands_and_every_method(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    for sub in ("fit", "unlearn", "test", "benchmark", "tune", "audit"):
        assert any(line.split()[:1] == [sub] and len(line.split()) > 2 for line in out.splitlines()), sub
    public = [n for n in methods.__all__ if isinstance(getattr(methods, n), type)
              and issubclass(getattr(methods, n), UnlearningMethod) and n != "UnlearningMethod"]
    assert len(public) >= 15 and all(name in out for name in public)
    assert "TrainModeMethod" not in out
    assert all(name in out for name in DATAMODULES)


def _public_subclasses(module: Any, base: type) -> list[str]:
    """The public classes of ``module`` that derive from ``base``, which must be every subclass the package defines
    outside its internal bases (a subclass missing from ``__all__`` would be missing from --help)."""
    named = {n: getattr(module, n) for n in module.__all__}
    public = {n for n, c in named.items() if isinstance(c, type) and issubclass(c, base) and c is not base}
    stack, defined = [base], set()
    while stack:
        for sub in stack.pop().__subclasses__():
            stack.append(sub)
            if sub.__module__.startswith(module.__name__ + "."):
                defined.add(sub.__name__)
    assert public <= defined
    return sorted(public)


def test_help_lists_are_the_registries():
    """--help lists names without importing the package (no torch): the lists must be the registries' public names."""
    assert sorted(METHODS) == _public_subclasses(methods, UnlearningMethod)
    assert sorted(DATAMODULES) == _public_subclasses(datamodules, UnlearningDataModule)


def test_help_and_a_mistyped_subcommand_import_no_framework():
    """`--help` and an unknown subcommand are answered by the standard library alone (issue 30: 7.1 s of CPU before)."""
    code = ("import sys\nfrom lightning_unlearn.cli import main\nmain(['--help'])\n"
            "try:\n    main(['bogus'], friendly=True)\nexcept SystemExit as e:\n    print('exit', e.code)\n"
            "print(sorted(m for m in ('torch', 'lightning', 'numpy', 'yaml', 'jsonargparse') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-2:] == ["exit 2", "[]"]
    assert "unknown subcommand 'bogus'" in proc.stderr and "FisherForgetting" in proc.stdout


def test_model_help_by_short_name(capsys):
    with pytest.raises(SystemExit) as info:
        main(["unlearn", "--model.help", "BoundaryShrink"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--model.epsilon" in out and "--model.stop_at_forget_acc" in out


def test_unlearn_help_lists_methods_as_known_subclasses(capsys):
    with pytest.raises(SystemExit):
        main(["unlearn", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "subclass of UnlearningMethod" in out and "lightning_unlearn.methods.SCRUB" in out


def test_fragment_configs_turn_whole_files_into_c(tmp_path):
    group_only = tmp_path / "g.yaml"
    group_only.write_text("class_path: lightning_unlearn.data.DigitsDataModule\n")
    data, bs = str(CONFIGS / "data/digits.yaml"), str(CONFIGS / "unlearn/boundary_shrink.yaml")
    assert fragment_configs(["unlearn", "--data", data, f"--model={bs}", "--data", str(group_only), "--model", "SCRUB"]) == [
        "unlearn", "-c", data, "-c", bs, "--data", str(group_only), "--model", "SCRUB"]


@pytest.mark.parametrize("name", sorted(_DISPATCHED))
def test_dispatched_subcommands_are_lazy_and_say_what_is_missing(name, capsys):
    module = _DISPATCHED[name][0]
    try:
        __import__(module)
    except ModuleNotFoundError:
        with pytest.raises(SystemExit) as info:
            main([name, "--help"], friendly=True)
        err = capsys.readouterr().err.splitlines()
        assert info.value.code == 1 and f"needs the module {module}" in err[0]
    else:
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0


class WarnsItself(UnlearningMethod):
    """A test-only method (found as ``test_cli_habits.WarnsItself``): SGD on D_r, and a warning of the user's own."""

    train_splits = ("retain",)

    def build_train_dataloader(self, datamodule: Any) -> torch.utils.data.DataLoader:
        return datamodule.loader("retain", shuffle=True, train=True)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        warnings.warn("the user's own warning", UserWarning)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = unpack_batch(batch)
        return F.cross_entropy(self.model(x), y)


def test_quiet_terminal(tmp_path):
    """`unlearn` through the console entry (a subprocess, so every notice reaches stderr): Fisher (no optimizer, frozen
    copies) and a user's method that warns; the framework notices are gone, the user's warning is not."""
    out = tmp_path / "run"
    original = train_classifier(digits_dm(), epochs=1, path=tmp_path / "original.ckpt")
    env = {"PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    common = ["unlearn", "-c", str(CONFIGS / "data/digits.yaml"), "--original_ckpt", str(original),
              "--trainer.max_epochs=1", "--evaluate", "false", *QUIET[:-1]]
    runs = [
        [*common, "-c", str(CONFIGS / "unlearn/fisher.yaml"), "--model.fisher_type", "sampled", "--output",
         str(out / "f" / "f.ckpt")],
        [*common, "--model", "test_cli_habits.WarnsItself", "--trainer.limit_train_batches=2", "--output",
         str(out / "w" / "w.ckpt")],
    ]
    # one process for both commands (one import); sys.argv as the console script sets it
    code = "import sys; from lightning_unlearn.cli import main\nfor a in %r:\n    sys.argv = ['lightning_unlearn', *a]; main()"
    proc = subprocess.run([sys.executable, "-c", code % (runs,)], capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    stderr = proc.stderr + proc.stdout
    for notice in NOTICES:
        assert notice not in stderr, f"{notice!r} still printed:\n{stderr[-3000:]}"
    assert "the user's own warning" in stderr
    assert "FisherForgetting: noise applied" in stderr and "Unlearned model written to" in stderr


def test_decision_space_is_one_projection_for_all_panels(tmp_path, monkeypatch):
    """Identical features give identical positions in every panel, and a panel's shift shows as a shift."""
    import numpy as np

    import lightning_unlearn.evaluation.plots as plots

    seen: list[np.ndarray] = []
    real = plots.project_2d
    monkeypatch.setattr(plots, "project_2d", lambda f, *a, **k: seen.append(f) or real(f, *a, **k))
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(40, 6))
    panels = [plots.PanelData("a", feats, np.zeros(40)), plots.PanelData("b", feats + 5.0, np.ones(40))]
    plots.plot_decision_space(panels, np.arange(40) < 10, tmp_path / "d.png", num_classes=2)
    assert len(seen) == 1 and seen[0].shape == (80, 6)  # projected once, on both panels' features
    xy = real(np.concatenate([feats, feats + 5.0]))
    assert not np.allclose(xy[:40], xy[40:])  # the shift between panels is kept, not normalised away


def test_error_bars_are_clipped_at_zero():
    from lightning_unlearn.benchmark.plots import _clipped

    assert _clipped([0.5, 3.0], [2.0, 1.0]) == [[0.5, 1.0], [2.0, 1.0]]
