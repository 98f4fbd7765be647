"""Hostile files, bad input and interruptions (issue 11): the whole matrix, each case with its exit code, the first line
of its message, and the sha256 of every file that existed before (unchanged).

CLI cases call ``main(args, friendly=True)`` in-process: the console behaviour (one error line, exit code) without a
subprocess. The trained models come from the session fixture ``trained_digits`` (conftest.py).
"""

from __future__ import annotations

import csv
import hashlib
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lightning_unlearn.checkpoints import META_KEY, CheckpointError, load_backbone, read_checkpoint
from lightning_unlearn.cli import DEBUG_ENV, error_line, forget_mode_overrides, main
from lightning_unlearn.data import DigitsDataModule, ForgetSpec
from lightning_unlearn.data.forget import make_splits

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
DIGITS = ["-c", str(CONFIGS / "data/digits.yaml")]
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu"]


# -- helpers ------------------------------------------------------------------------------------------------------
def sha256s(*roots: Path) -> dict[str, str]:
    """sha256 of every file under (or at) ``roots``."""
    out = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the command as the console does: (exit code, first line of stderr, all of stderr)."""
    capsys.readouterr()
    try:
        main(args, friendly=True)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("lightning_unlearn")]
    return code, (lines[0] if lines else ""), err


def unchanged(before: dict[str, str], *roots: Path) -> None:
    after = sha256s(*roots)
    assert {k: after.get(k) for k in before} == before


# -- code runs that should not ---------------------------------------------------------------------------------------
MARKER = "lightning_unlearn_pwned"


class _Evil:
    """Unpickling this writes a marker file (stands for arbitrary code)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # noqa: ANN204
        return (Path.write_text, (Path(self.path), "pwned"))


def _cifar_dir(root: Path, evil_in: str | None) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"):
        entry = {"data": rng.integers(0, 255, (20, 3072), dtype=np.uint8), "labels": [i % 10 for i in range(20)],
                 "batch_label": name, "filenames": [f"{i}.png" for i in range(20)]}
        if name == evil_in:
            entry["batch_label"] = _Evil(str(root / MARKER))
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}, protocol=2))
    return folder


def test_crafted_cifar_batch_is_refused_and_runs_nothing(tmp_path, capsys):
    from lightning_unlearn.data import CIFAR10DataModule

    good = _cifar_dir(tmp_path / "good", evil_in=None)
    dm = CIFAR10DataModule(data_dir=str(good.parent), forget=ForgetSpec(classes=[3]), holdout_fraction=0.0)
    dm.setup("fit")
    assert len(dm.train_set) == 100 and dm.class_names[3] == "c3"  # the real format still loads

    folder = _cifar_dir(tmp_path / "evil", evil_in="data_batch_2")
    before = sha256s(folder)
    code, first, _ = cli(
        ["fit", "-c", str(CONFIGS / "data/cifar10.yaml"), "-c", str(CONFIGS / "model/allcnn.yaml"),
         f"--data.data_dir={folder.parent}", "--data.num_workers=0", "--trainer.max_epochs=1",
         f"--trainer.default_root_dir={tmp_path / 'run'}", *QUIET], capsys)
    assert code == 1
    assert first.startswith("lightning_unlearn fit: error: UnsafePickleError: Refusing to read ")
    assert "data_batch_2" in first and "is not part of the CIFAR format" in first  # the file and the refused global
    assert not (tmp_path / "evil" / MARKER).exists()
    assert not list((tmp_path / "run").rglob("*.ckpt"))
    unchanged(before, folder)


def _with_meta(src: Path, dst: Path, edit) -> Path:  # noqa: ANN001
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, dst)
    return dst


def test_checkpoint_class_path_is_never_imported(trained_digits, tmp_path, monkeypatch, capsys):
    module = tmp_path / "evil_backbones.py"
    module.write_text(f"from pathlib import Path\nPath({str(tmp_path / MARKER)!r}).write_text('pwned')\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def set_class(ckpt):  # noqa: ANN001, ANN202
        ckpt[META_KEY]["backbone"]["class_path"] = "evil_backbones.Net"

    evil = _with_meta(trained_digits.original_ckpt, tmp_path / "evil.ckpt", set_class)
    before = sha256s(evil)
    code, first, _ = cli(["test", *DIGITS, "--ckpt_path", str(evil), f"--trainer.default_root_dir={tmp_path}", *QUIET],
                         capsys)
    assert code == 1
    assert first.startswith("lightning_unlearn test: error: ValueError: Unknown backbone 'evil_backbones.Net'")
    assert "refused (nothing was imported)" in first
    assert "evil_backbones" not in sys.modules and not (tmp_path / MARKER).exists()
    assert not list(tmp_path.rglob("metrics.json"))
    unchanged(before, evil)


def test_registered_backbones_are_rebuilt(trained_digits, tmp_path, monkeypatch):
    from lightning_unlearn.backbones import AllCNN, build_backbone, register_backbone
    from lightning_unlearn.backbones.io import BACKBONES_ENV, _REGISTERED

    class MyNet(AllCNN):
        pass

    path = f"{MyNet.__module__}.{MyNet.__qualname__}"
    with pytest.raises(ValueError, match="register_backbone"):
        build_backbone({"class_path": path, "init_args": {"width": 0.1}})
    monkeypatch.setitem(_REGISTERED, path, MyNet)  # what register_backbone(MyNet) does, undone after the test
    assert type(build_backbone({"class_path": path, "init_args": {"width": 0.1}})) is MyNet
    assert register_backbone(MyNet) is MyNet
    # from the command line: the user's environment, not the file, names the class
    monkeypatch.delitem(_REGISTERED, path)
    monkeypatch.setenv(BACKBONES_ENV, "lightning_unlearn.backbones.allcnn.AllCNN")
    assert type(build_backbone({"class_path": "lightning_unlearn.backbones.allcnn.AllCNN"})) is AllCNN


# -- silently wrong --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content, found",
    [
        ("[1.7, 2.2, 5.9]", "1.7"),
        ("[true, false]", "True"),
        ('["1", "2"]', "'1'"),
        ("[[1, 2], [3]]", "[1, 2]"),
        ("[2.0, 3.0]", "2.0"),
        ("1.7 2.2", "'1.7'"),
        ("12, x, 7", "'x'"),
    ],
)
def test_indices_file_must_hold_integers(tmp_path, capsys, content, found):
    f = tmp_path / "forget.json"
    f.write_text(content)
    with pytest.raises(ValueError, match="forget.json"):
        ForgetSpec(indices_file=str(f)).load_indices()
    before = sha256s(f)
    code, first, _ = cli(["fit", *DIGITS, "-c", str(CONFIGS / "model/allcnn.yaml"), f"--data.forget.indices_file={f}",
                          "--trainer.max_epochs=1", f"--trainer.default_root_dir={tmp_path / 'run'}", *QUIET],
                         capsys)
    assert code == 1 and str(f) in first and found in first, first
    assert not list((tmp_path / "run").rglob("*.ckpt"))
    unchanged(before, f)


def test_indices_in_python_must_be_integers():
    with pytest.raises(ValueError, match="only integers.*1.5"):
        ForgetSpec(indices=[1, 1.5])
    with pytest.raises(ValueError, match="only integers.*True"):
        ForgetSpec(classes=[True])
    assert ForgetSpec(indices=[np.int64(3), 4]).indices == [3, 4]
    # integers written as text are fine
    assert ForgetSpec(indices=[5, 1]).load_indices().tolist() == [5, 1]


def test_nan_weights_end_the_run_and_are_never_written(trained_digits, tmp_path, capsys):
    """NegativeGradient in clip mode at lr 1e30: weights go NaN in the first epoch. Lightning's ModelCheckpoint is on
    (default logger and checkpointing): nothing may land in checkpoints/ either."""
    out = tmp_path / "run" / "u.ckpt"
    before = sha256s(trained_digits.original_ckpt)
    code, first, _ = cli(
        ["unlearn", *DIGITS, "-c", str(CONFIGS / "unlearn/negative_gradient.yaml"), "--model.on_divergence=clip",
         "--model.lr=1e30", "--original_ckpt", str(trained_digits.original_ckpt), "--output", str(out),
         "--trainer.max_epochs=2", f"--trainer.default_root_dir={tmp_path}", *QUIET], capsys)
    assert code == 1
    assert first.startswith("lightning_unlearn unlearn: error: UnlearningFailedError: NegativeGradient produced NaN/inf")
    assert "no model was written" in first and "lr" in first
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("metrics.json"))
    assert not (out.parent / "unlearn.json").exists()
    unchanged(before, trained_digits.original_ckpt)


def test_collapsed_retain_accuracy_ends_the_run(trained_digits, tmp_path, capsys):
    """lr 1.0 in clip mode: finite weights, D_r accuracy at chance (measured 11.7% against 97.9%, threshold 18.8%)."""
    out = tmp_path / "u.ckpt"
    args = ["unlearn", *DIGITS, "-c", str(CONFIGS / "unlearn/negative_gradient.yaml"), "--model.on_divergence=clip",
            "--model.lr=1.0", "--original_ckpt", str(trained_digits.original_ckpt), "--output", str(out),
            "--trainer.max_epochs=1", "--trainer.logger=false", "--trainer.enable_checkpointing=false",
            "--evaluate=false", f"--trainer.default_root_dir={tmp_path}", *QUIET]
    code, first, _ = cli(args, capsys)
    assert code == 1
    assert first.startswith("lightning_unlearn unlearn: error: UnlearningFailedError: NegativeGradient destroyed the ")
    assert "retained data D_r fell from" in first
    assert not out.exists() and not (tmp_path / "unlearn.json").exists()
    # the guard can be turned off: the same run then writes its (destroyed) model
    code, _, _ = cli([*args, "--retain_collapse=null"], capsys)
    assert code == 0 and out.is_file()


def test_empty_retain_set_is_refused(tmp_path, capsys):
    y = np.arange(40) % 4
    with pytest.raises(ValueError, match="leaves the retained set D_r empty"):
        make_splits(y, y, ForgetSpec(classes=[0, 1, 2, 3]), holdout_fraction=0.1)
    code, first, _ = cli(["fit", *DIGITS, "-c", str(CONFIGS / "model/allcnn.yaml"),
                          "--data.forget.classes=[0,1,2,3,4,5,6,7,8,9]", "--trainer.max_epochs=1",
                          f"--trainer.default_root_dir={tmp_path}", *QUIET], capsys)
    assert code == 1 and "leaves the retained set D_r empty" in first
    assert not list(tmp_path.rglob("*.ckpt"))


# -- work or data lost -----------------------------------------------------------------------------------------------
def _unlearn(trained_digits, out: Path, root: Path, *extra: str) -> list[str]:  # noqa: ANN001
    return ["unlearn", *DIGITS, "--model", "test_cli_test.CliRetainSteps", "--model.lr", "0.01",
            "--original_ckpt", str(trained_digits.original_ckpt), "--output", str(out), "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=1", "--trainer.logger=false", "--trainer.enable_checkpointing=false",
            f"--trainer.default_root_dir={root}", *QUIET, *extra]


def test_second_unlearn_in_the_same_directory_overwrites_nothing(trained_digits, tmp_path, capsys):
    run = tmp_path / "run"
    code, _, _ = cli(_unlearn(trained_digits, run / "a.ckpt", tmp_path), capsys)
    assert code == 0 and {"a.ckpt", "metrics.json", "metrics.md", "unlearn.json", "splits.json"} <= {
        p.name for p in run.iterdir()
    }
    before = sha256s(run)
    code, first, _ = cli(_unlearn(trained_digits, run / "b.ckpt", tmp_path), capsys)
    assert code == 1 and first.startswith("lightning_unlearn unlearn: error: FileExistsError: ")
    assert "unlearn.json exists" in first and "--output" in first
    code, first, _ = cli(_unlearn(trained_digits, run / "b.ckpt", tmp_path, "--evaluate=false"), capsys)
    assert code == 1 and "unlearn.json exists" in first
    unchanged(before, run)
    assert not (run / "b.ckpt").exists()


def test_second_test_with_the_same_report_directory_is_refused(trained_digits, tmp_path, capsys):
    args = ["test", *DIGITS, "--ckpt_path", str(trained_digits.original_ckpt), "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}", *QUIET]
    assert cli(args, capsys)[0] == 0 and (tmp_path / "metrics.json").is_file()
    before = sha256s(tmp_path)
    code, first, _ = cli(args, capsys)
    assert code == 1 and "metrics.json exists" in first
    unchanged(before, tmp_path)


def test_unwritable_output_is_found_before_training(trained_digits, tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("keep me")
    before = sha256s(tmp_path)
    code, first, _ = cli(_unlearn(trained_digits, blocker / "sub" / "u.ckpt", tmp_path / "root"), capsys)
    assert code == 1
    assert first == (f"lightning_unlearn unlearn: error: NotADirectoryError: Cannot write to {blocker / 'sub'}: "
                     f"{blocker} is a file, not a directory. Choose another output path.")
    unchanged(before, tmp_path)
    if Path("/proc/self").is_dir():  # /proc refuses new files even to root
        code, first, _ = cli(_unlearn(trained_digits, Path("/proc/lu-test/u.ckpt"), tmp_path / "root"), capsys)
        assert code == 1 and "Cannot write to the output directory /proc/lu-test" in first


def _interrupting_method_module(tmp_path: Path) -> str:
    """Stands for the user's Ctrl-C: a method whose first training step raises KeyboardInterrupt inside ``fit``."""
    (tmp_path / "ctrl_c_method.py").write_text(
        "from lightning_unlearn.methods import Finetune\n\n\n"
        "class CtrlC(Finetune):\n"
        "    def training_step(self, batch, batch_idx):\n"
        "        raise KeyboardInterrupt\n"
    )
    return "ctrl_c_method.CtrlC"


def _bench_config(out: Path, method_path: str, name: str = "M") -> dict:
    return {
        "output_dir": str(out),
        "data": {"class_path": "lightning_unlearn.data.DigitsDataModule", "init_args": {"image_size": 8,
                                                                                       "batch_size": 256}},
        "backbone": {"class_path": "lightning_unlearn.backbones.AllCNN", "init_args": {"width": 0.125}},
        "training": {"max_epochs": 1, "lr": 0.05},
        "scenarios": [{"name": "class-wise", "targets": [{"classes": [3]}]}],
        "seeds": [0],
        "methods": [{"name": name, "class_path": method_path, "init_args": {"lr": 0.01}, "max_epochs": 1}],
        "trainer": {"accelerator": "cpu", "num_threads": 1},
        "evaluator": {"mia": False, "zrf": False},
    }


def test_benchmark_ctrl_c_in_training_and_corrupt_cache(tmp_path, monkeypatch, capsys):
    import signal

    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "bench"
    config = tmp_path / "b.yaml"
    config.write_text(yaml.safe_dump(_bench_config(out, _interrupting_method_module(tmp_path))))
    code, first, err = cli(["benchmark", "-c", str(config)], capsys)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Lightning's SIG_IGN undone
    assert code == 130
    line = next(ln for ln in err.splitlines() if "interrupted" in ln)
    assert line.startswith("benchmark interrupted: the 2 finished runs are in ") and "to resume" in line
    with (out / "results.csv").open() as f:
        assert sorted(r["method"] for r in csv.DictReader(f)) == ["Original", "Retrain"]

    # a corrupt cached model is retrained, not trusted (and not fatal)
    original = next((out / "models").glob("original-*/model.ckpt"))
    original.write_bytes(original.read_bytes()[:1000])
    config.write_text(yaml.safe_dump(_bench_config(out, "lightning_unlearn.methods.Finetune")))
    code, _, err = cli(["benchmark", "-c", str(config)], capsys)
    assert code == 0, err[-2000:]
    assert "is unusable" in err and "does not match the sha256" in err
    read_checkpoint(original)  # retrained: whole again
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["method"] for r in rows) == ["M", "Original", "Retrain"] and all(r["status"] == "ok" for r in rows)


# -- errors a person can act on --------------------------------------------------------------------------------------
def test_cli_error_is_one_line_and_traceback_only_in_debug(tmp_path, capsys, monkeypatch):
    args = ["fit", *DIGITS, "-c", str(CONFIGS / "model/allcnn.yaml"), "--data.forget.fraction", "2",
            f"--trainer.default_root_dir={tmp_path}", *QUIET]
    code, first, err = cli(args, capsys)
    assert code == 2
    assert first == "lightning_unlearn fit: error: ValueError: `fraction` must be in (0, 1), got 2.0."
    assert len(err.strip().splitlines()) <= 4 and "Traceback" not in err
    assert "--debug" in err
    with pytest.raises(Exception, match="fraction"):
        main([*args, "--debug"], friendly=True)
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(Exception, match="fraction"):
        main(args, friendly=True)


def test_error_line_picks_the_package_message():
    def inner() -> None:
        from lightning_unlearn.data.forget import ForgetSpec

        ForgetSpec(fraction=3.0)

    try:
        try:
            inner()
        except ValueError as e:
            raise ValueError("Does not validate against any of the Union subtypes\nlots of lines") from e
    except ValueError as outer:
        assert error_line(outer) == "ValueError: `fraction` must be in (0, 1), got 3.0."
    assert error_line(RuntimeError("plain\nsecond")) == "RuntimeError: plain"


def test_directory_given_as_checkpoint_or_indices_file(trained_digits, tmp_path, capsys):
    code, first, _ = cli(["test", *DIGITS, "--ckpt_path", str(trained_digits.original_ckpt.parent),
                          f"--trainer.default_root_dir={tmp_path}", *QUIET], capsys)
    assert code == 1 and first.startswith(
        f"lightning_unlearn test: error: IsADirectoryError: Checkpoint {trained_digits.original_ckpt.parent} is a "
        "directory: pass the checkpoint file itself (found inside: "
    )
    code, first, _ = cli(["fit", *DIGITS, "-c", str(CONFIGS / "model/allcnn.yaml"),
                          f"--data.forget.indices_file={tmp_path}", f"--trainer.default_root_dir={tmp_path / 'r'}",
                          *QUIET], capsys)
    assert code == 1 and f"Forget indices file {tmp_path} is a directory" in first


def test_text_file_as_checkpoint(tmp_path, capsys):
    text = tmp_path / "notes.ckpt"
    text.write_text("this is not a checkpoint\n")
    code, first, _ = cli(["test", *DIGITS, "--ckpt_path", str(text), f"--trainer.default_root_dir={tmp_path}", *QUIET],
                         capsys)
    assert code == 1
    assert first.startswith(f"lightning_unlearn test: error: CheckpointError: {text} is not a PyTorch checkpoint")
    assert "state_dict" not in first  # no advice that the next message would refuse


def test_head_contradicting_recorded_classes(trained_digits, tmp_path):
    def cut_head(ckpt):  # noqa: ANN001, ANN202
        sd = ckpt["state_dict"]
        sd["model.head.weight"], sd["model.head.bias"] = sd["model.head.weight"][:5], sd["model.head.bias"][:5]

    bad = _with_meta(trained_digits.original_ckpt, tmp_path / "bad.ckpt", cut_head)
    with pytest.raises(CheckpointError, match="inconsistent: its head has 5 outputs but its recorded backbone config "
                                              "says num_classes=10"):
        load_backbone(bad, DigitsDataModule(forget=ForgetSpec(classes=[3]), image_size=16, batch_size=64))


def test_test_with_a_model_config_of_another_architecture(trained_digits, tmp_path, capsys):
    model = ["-c", str(CONFIGS / "model/allcnn.yaml")]
    # a checkpoint whose recorded hyper-parameters do not parse as the configured model (saved outside the CLI)
    code, first, _ = cli(["test", *DIGITS, *model, "--ckpt_path", str(trained_digits.original_ckpt),
                          f"--trainer.default_root_dir={tmp_path}", *QUIET], capsys)
    assert code == 2
    assert first.startswith(f"lightning_unlearn test: error: CheckpointError: {trained_digits.original_ckpt} cannot be "
                            "restored into the configured model")
    assert "Leave out the model config" in first
    # a `fit` checkpoint of a narrower All-CNN: its hyper-parameters parse, its weights do not fit
    narrow = ["--model.init_args.backbone.init_args.width=0.125"]
    main(["fit", *DIGITS, *model, *narrow, "--trainer.max_epochs=1", "--trainer.limit_train_batches=1",
          "--trainer.limit_val_batches=0", f"--trainer.default_root_dir={tmp_path / 'fit'}", *QUIET])
    ckpt = next((tmp_path / "fit").rglob("*.ckpt"))
    before = sha256s(ckpt)
    code, first, _ = cli(["test", *DIGITS, *model, "--ckpt_path", str(ckpt), f"--trainer.default_root_dir={tmp_path}",
                          *QUIET], capsys)
    assert code == 1
    assert first.startswith(f"lightning_unlearn test: error: CheckpointError: {ckpt} does not fit the configured model")
    assert "Leave out the model config" in first
    unchanged(before, ckpt)


# -- overriding the forget mode on the command line ------------------------------------------------------------------
README_MODES = [  # the README's table, as command-line options over configs/data/digits.yaml (classes: [3])
    (["--data.forget.classes", "[3]"], {"classes": [3]}),
    (["--data.forget.classes", "[3]", "--data.forget.per_class", "50"], {"classes": [3], "per_class": 50}),
    (["--data.forget.fraction", "0.1"], {"fraction": 0.1}),
    (["--data.forget.indices", "[1, 2, 3]"], {"indices": [1, 2, 3]}),
    (["--data.forget.indices_file", "f.json"], {"indices_file": "f.json"}),
    (["--data.init_args.forget.fraction=0.2"], {"fraction": 0.2}),
]


@pytest.mark.parametrize("options, spec", README_MODES)
def test_forget_mode_on_the_command_line_replaces_the_configs(options, spec, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("f.json").write_text("[1, 2, 3]")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:  # --print_config prints the parsed config and exits 0
        main(["fit", *DIGITS, "-c", str(CONFIGS / "model/allcnn.yaml"), *options, "--print_config"], friendly=True)
    assert exc.value.code in (0, None), capsys.readouterr().err[-2000:]
    printed = yaml.safe_load(capsys.readouterr().out)["data"]["init_args"]["forget"]
    assert {k: v for k, v in printed.items() if v is not None} == spec


def test_forget_override_runs_and_two_modes_are_still_refused(tmp_path, capsys):
    assert forget_mode_overrides(["fit", "--data.forget.fraction=0.1"]) == [
        "fit", "--data.init_args.forget=null", '--data.init_args.forget={"fraction": 0.1}'
    ]
    code, _, err = cli(["fit", *DIGITS, "-c", str(CONFIGS / "model/allcnn.yaml"), "--data.forget.fraction", "0.1",
                        "--model.init_args.backbone.init_args.width=0.125", "--trainer.max_epochs=1",
                        "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=0",
                        f"--trainer.default_root_dir={tmp_path}", *QUIET], capsys)
    assert code == 0, err[-2000:]
    meta = read_checkpoint(next(tmp_path.rglob("*.ckpt")))[META_KEY]
    assert meta["splits"]["forget_spec"] == {"fraction": 0.1}
    code, first, _ = cli(["fit", *DIGITS, "-c", str(CONFIGS / "model/allcnn.yaml"), "--data.forget.fraction", "0.1",
                          "--data.forget.classes", "[2]", f"--trainer.default_root_dir={tmp_path / 'two'}", *QUIET],
                         capsys)
    assert code == 2 and "ForgetSpec needs exactly one mode" in first, first


# -- focused unit tests ----------------------------------------------------------------------------------------------
def test_finite_weights_guard_blocks_any_checkpoint():
    from lightning_unlearn.methods.guards import FiniteWeightsGuard, UnlearningFailedError

    guard = FiniteWeightsGuard()
    ok = {"state_dict": {"model.w": torch.ones(3), "model.steps": torch.tensor(3)}}
    guard.on_save_checkpoint(None, torch.nn.Module(), ok)  # type: ignore[arg-type]
    bad = {"state_dict": {"model.w": torch.tensor([1.0, float("nan")]), "model.b": torch.tensor([float("inf")])}}
    with pytest.raises(UnlearningFailedError, match=r"NaN/inf weights .*2 tensors, e\.g\. model\.w, model\.b"):
        guard.on_save_checkpoint(None, torch.nn.Module(), bad)  # type: ignore[arg-type]


def test_save_checkpoint_refuses_nan_weights(tmp_path):
    from lightning_unlearn.backbones import AllCNN
    from lightning_unlearn.checkpoints import save_checkpoint

    net = AllCNN(num_classes=3, in_channels=1, image_size=8, width=0.05)
    with torch.no_grad():
        net.head.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN/inf weights \\(head.weight\\)"):
        save_checkpoint(tmp_path / "x.ckpt", net, {})
    assert not list(tmp_path.iterdir())


def test_cached_model_without_digest_must_load(tmp_path):
    """Caches written before digests were recorded are still reused when they load, retrained when they do not."""
    from lightning_unlearn.benchmark import ModelJob
    from lightning_unlearn.benchmark.cache import cache_problem

    job = ModelJob("gold", "k", tmp_path / "gold-k", group=None, key_content={})  # type: ignore[arg-type]
    assert cache_problem(job) == "not trained"
    job.dir.mkdir()
    torch.save({"state_dict": {"w": torch.ones(1)}}, job.ckpt)
    (job.dir / "info.json").write_text("{}")
    assert cache_problem(job) is None
    job.ckpt.write_bytes(b"garbage")
    assert "cannot be read" in cache_problem(job)


def test_cifar_unpickler_reads_python2_style_numpy_paths(tmp_path):
    """torchvision's CIFAR files were pickled by Python 2 with numpy 1 (``numpy.core.multiarray._reconstruct``)."""
    from lightning_unlearn.data.cifar import UnsafePickleError, _unpickle

    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    raw = pickle.dumps({"data": data, "labels": [1, 2]}, protocol=2)
    assert b"numpy._core.multiarray" in raw
    f = tmp_path / "data_batch_1"
    f.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    entry = _unpickle(f)
    assert entry["labels"] == [1, 2] and np.array_equal(entry["data"], data)
    f.write_bytes(pickle.dumps({"x": os.system}, protocol=2))
    with pytest.raises(UnsafePickleError, match=r"Refusing to read .*data_batch_1: global 'posix.system'"):
        _unpickle(f)


# -- a checkpoint's backbone config may not make timm/torchvision load files or download ---------------------------
def _adapter_ckpt(path: Path, class_path: str, arch: str, model_kwargs: dict) -> Path:
    """A crafted lightning_unlearn checkpoint whose recorded backbone is a torchvision/timm adapter (no weights) for
    configs/data/digits.yaml's input."""
    init = {"arch": arch, "num_classes": 10, "in_channels": 1, "image_size": 16, "model_kwargs": model_kwargs}
    torch.save({META_KEY: {"version": 1, "backbone": {"class_path": class_path, "init_args": init}},
                "state_dict": {"model.head.weight": torch.zeros(10, 4)}}, path)
    return path


def _never_build(monkeypatch: pytest.MonkeyPatch) -> None:
    import timm
    import torchvision

    def built(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError(f"a network was built from the checkpoint's config: {args} {kwargs}")

    monkeypatch.setattr(timm, "create_model", built)
    monkeypatch.setattr(torchvision.models, "get_model", built)


@pytest.mark.parametrize(
    "class_path, arch, key, value",
    [
        ("TimmBackbone", "resnet10t", "checkpoint_path", "SECRET"),
        ("lightning_unlearn.backbones.TimmBackbone", "resnet10t", "pretrained_cfg_overlay", {"file": "SECRET"}),
        ("TimmBackbone", "resnet10t", "cache_dir", "SECRET"),
        ("TorchvisionBackbone", "resnet18", "weights", "IMAGENET1K_V1"),
        ("TorchvisionBackbone", "resnet18", "weights_backbone", "IMAGENET1K_V1"),
        ("TorchvisionBackbone", "resnet18", "progress", True),
    ],
)
def test_checkpoint_model_kwargs_that_load_files_are_refused_before_building(
    tmp_path, monkeypatch, class_path, arch, key, value
):
    secret = tmp_path / "secret.pth"
    torch.save({"x": torch.zeros(1)}, secret)
    value = {"file": str(secret)} if isinstance(value, dict) else (str(secret) if value == "SECRET" else value)
    path = _adapter_ckpt(tmp_path / "crafted.ckpt", class_path, arch, {"drop_rate": 0.0, key: value})
    before = sha256s(tmp_path)
    _never_build(monkeypatch)
    with pytest.raises(ValueError, match=f"model_kwargs\\['{key}'\\].*refused \\(nothing was built\\)") as info:
        load_backbone(path)
    assert "\n" not in str(info.value)
    unchanged(before, tmp_path)


def test_checkpoint_with_loading_model_kwargs_is_one_cli_error_line(tmp_path, monkeypatch, capsys):
    path = _adapter_ckpt(tmp_path / "crafted.ckpt", "TimmBackbone", "resnet10t", {"checkpoint_path": "/etc/hostname"})
    _never_build(monkeypatch)
    code, first, err = cli(["test", *DIGITS, "--ckpt_path", str(path), f"--trainer.default_root_dir={tmp_path}",
                            *QUIET], capsys)
    assert code == 1, err
    assert first.startswith("lightning_unlearn test: error: ") and "model_kwargs['checkpoint_path']" in first
    assert "Traceback" not in err


def test_users_own_adapter_config_may_still_load_files(monkeypatch):
    import timm

    from lightning_unlearn.backbones import TimmBackbone, build_backbone

    seen = []

    class Stop(Exception):
        pass

    def create_model(arch, **kwargs):  # noqa: ANN001, ANN003, ANN202
        seen.append(kwargs)
        raise Stop

    monkeypatch.setattr(timm, "create_model", create_model)
    init = {"arch": "resnet10t", "num_classes": 10, "model_kwargs": {"checkpoint_path": "/my/weights.pth"}}
    with pytest.raises(Stop):  # the user's own config: passed on to timm
        build_backbone({"class_path": "TimmBackbone", "init_args": init})
    with pytest.raises(Stop):
        TimmBackbone(**init)
    assert [k["checkpoint_path"] for k in seen] == ["/my/weights.pth"] * 2
    with pytest.raises(ValueError, match="model_kwargs\\['checkpoint_path'\\]"):
        build_backbone({"class_path": "TimmBackbone", "init_args": init}, untrusted=True)
    assert len(seen) == 2
