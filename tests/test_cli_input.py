"""Bad input at the command line (issue 26): one line per mistake, and nothing a checkpoint names is imported.

``--ckpt_path``'s recorded hyper-parameters used to reach jsonargparse, which imported the class they named before any
check (``this.NoSuchClass`` printed the Zen of Python; a ``model_helpers.py`` beside the checkpoint ran under
``python -m lightning_unlearn``). Class names given on the command line that are no LightningModule/DataModule gave
15-75 lines of usage.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_unlearn.checkpoints import CheckpointError
from lightning_unlearn.cli import main
from lightning_unlearn.unlearn_cli import check_recorded_classes

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
DIGITS = ["-c", str(CONFIGS / "data/digits.yaml")]
ALLCNN = ["-c", str(CONFIGS / "model/allcnn.yaml")]
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu"]


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    """The console behaviour in-process: (exit code, the `lightning_unlearn...` lines of stderr, stdout)."""
    capsys.readouterr()
    try:
        main(args, friendly=True)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, [ln for ln in out.err.splitlines() if ln.startswith("lightning_unlearn")], out.out


def crafted(src: Path, dst: Path, **hparams: object) -> Path:
    """A copy of ``src`` whose ``hyper_parameters`` get ``hparams`` (weights untouched)."""
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"] = {**(ckpt.get("hyper_parameters") or {}), **hparams}
    torch.save(ckpt, dst)
    return dst


def test_unknown_subcommand_is_one_line(capsys):
    code, lines, _ = run(["unlaern", "--model", "SCRUB"], capsys)
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("lightning_unlearn: error: unknown subcommand 'unlaern'; did you mean 'unlearn'?")


@pytest.mark.parametrize("sub", ["test", "fit"])
def test_checkpoint_naming_a_module_imports_nothing(sub, trained_digits, tmp_path, capsys):
    """`import this` prints the Zen of Python: a checkpoint naming `this.NoSuchClass` must not get that far."""
    evil = crafted(trained_digits.original_ckpt, tmp_path / "evil.ckpt", _class_path="this.NoSuchClass")
    sys.modules.pop("this", None)
    code, lines, out = run([sub, *DIGITS, *ALLCNN, "--ckpt_path", str(evil), f"--trainer.default_root_dir={tmp_path}",
                            "--trainer.max_epochs=1", *QUIET], capsys)
    assert "this" not in sys.modules and "Beautiful is better than ugly" not in out
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith(f"lightning_unlearn {sub}: error: CheckpointError: {evil} names the class "
                               "'this.NoSuchClass' (hyper_parameters._class_path)")
    assert "nothing was imported" in lines[0]
    assert sorted(tmp_path.rglob("*.ckpt")) == [evil] and not list(tmp_path.rglob("metrics.json"))


def test_nested_class_path_in_a_checkpoint_is_refused(trained_digits, tmp_path, capsys):
    evil = crafted(trained_digits.original_ckpt, tmp_path / "nested.ckpt", _class_path="lightning_unlearn.methods.Classifier",
                   backbone={"class_path": "evil_backbones.Net", "init_args": {}})
    code, lines, _ = run(["test", *DIGITS, *ALLCNN, "--ckpt_path", str(evil), f"--trainer.default_root_dir={tmp_path}",
                          *QUIET], capsys)
    assert code == 2 and "'evil_backbones.Net' (hyper_parameters.backbone.class_path)" in lines[0]
    assert "evil_backbones" not in sys.modules


def test_code_beside_a_checkpoint_never_runs(trained_digits, tmp_path):
    """`python -m` puts the current directory on the import path: a checkpoint naming `model_helpers.Net`, with a
    `model_helpers.py` beside it that writes a marker file, must be refused before anything is imported."""
    crafted(trained_digits.original_ckpt, tmp_path / "evil.ckpt", _class_path="model_helpers.Net")
    marker = tmp_path / "PWNED"
    (tmp_path / "model_helpers.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n")
    cmd = [sys.executable, "-m", "lightning_unlearn", "fit", *DIGITS, *ALLCNN, "--ckpt_path", "evil.ckpt",
           f"--trainer.default_root_dir={tmp_path / 'run'}", *QUIET]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert not marker.exists(), proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("lightning_unlearn")]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("lightning_unlearn fit: error: CheckpointError: evil.ckpt names the class "
                               "'model_helpers.Net'")
    assert not (tmp_path / "run").exists()


def test_recorded_classes_accepted_and_refused(tmp_path, monkeypatch):
    from lightning_unlearn.methods import Classifier  # noqa: F401 - loaded, as the CLI loads it

    ours = {"_class_path": "lightning_unlearn.methods.Classifier", "lr": 0.1}
    check_recorded_classes(ours, {"class_path": "lightning_unlearn.methods.Classifier"}, "a.ckpt")
    users = {"_class_path": "my_package.MyModule", "net": {"class_path": "my_package.Net"}}
    configured = {"class_path": "my_package.MyModule", "init_args": {"net": {"class_path": "my_package.Net"}}}
    check_recorded_classes(users, configured, "b.ckpt")  # what the user configured (already imported by the parser)
    for bad, key in [
        ({"_class_path": "lightning_unlearn.nosuch.Net"}, "_class_path"),  # ours by name, but no such loaded module
        ({"_class_path": "lightning_unlearn.cli.main"}, "_class_path"),  # not a class
        ({"_class_path": "my_package.Other"}, "_class_path"),
        ({"opt": [{"class_path": "os.system"}]}, "opt.0.class_path"),
        ({"_class_path": ["not", "a", "string"]}, "_class_path"),
    ]:
        with pytest.raises(CheckpointError, match=rf"c\.ckpt names the class .* \(hyper_parameters\.{key}\)"):
            check_recorded_classes(bad, configured, "c.ckpt")
    # a dotted name of a module that is not loaded but could be (a parameter typed as a callable would import it)
    (tmp_path / "helper_mod_xyz.py").write_text("raise SystemExit('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(CheckpointError, match=r"names the module 'helper_mod_xyz' \(hyper_parameters\.act\.0 = "):
        check_recorded_classes({"act": ["helper_mod_xyz.fn"]}, configured, "d.ckpt")
    assert "helper_mod_xyz" not in sys.modules
    check_recorded_classes({"name": "resnet18.a1_in1k", "lr": "1e-3", "os": "os.path"}, configured, "e.ckpt")


@pytest.mark.parametrize(
    "args, option",
    [
        (["unlearn", *DIGITS, "--model", "subprocess.Popen", "--model.init_args.args", "[touch, MARKER]",
          "--original_ckpt", "x.ckpt"], "--model subprocess.Popen"),
        (["unlearn", *DIGITS, "--model", "builtins.eval", "--original_ckpt", "x.ckpt"], "--model builtins.eval"),
        (["fit", *ALLCNN, "--data", "os.system", "--data.init_args.command", "touch MARKER"], "--data os.system"),
    ],
)
def test_names_that_are_no_module_or_datamodule_are_one_line(args, option, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [a.replace("MARKER", str(tmp_path / "ran")) for a in args]
    code, lines, _ = run(args, capsys)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"lightning_unlearn {args[0]}: error: ArgumentError: {option}: ")
    assert "does not correspond to a subclass of" in lines[0] and "--help" in lines[0]
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize(
    "option, expected",
    [
        (["--data.forget.indices", "[1, true]"], "--data.forget.indices [1, True]: Expected a <class 'int'>"),
        (["--trainer.max_epochs", "x"], "--trainer.max_epochs x: Expected a <class 'int'>"),
        (["--no_such_option", "1"], "unrecognized arguments: --no_such_option 1"),
    ],
)
def test_parse_errors_are_one_line(option, expected, capsys):
    code, lines, _ = run(["fit", *DIGITS, *ALLCNN, *option, "--print_config"], capsys)
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith(f"lightning_unlearn fit: error: ArgumentError: {expected}")
