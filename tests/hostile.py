"""Crafting what a hostile or careless user hands the commands (issue 26): tiny configs of the benchmark, the tuner and
the audit, files planted in an output directory (links, files of the user's own, corrupt records), crafted checkpoints
and YAML, and running a command in this process as the console runs it. Used by ``tests/test_hostile.py`` and the
matrix script ``tests/hostile_matrix.py``."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

#: What a YAML tag or an evil name would create if it ran.
PWNED = "PWNED"


# -- configs -------------------------------------------------------------------------------------------------------
def bench_config(out: Path, **over: Any) -> dict[str, Any]:
    """The smallest benchmark: digits at 4x4, 1 epoch, one class-wise target, one seed, Finetune for 1 epoch."""
    cfg = {
        "output_dir": str(out),
        "data": {"class_path": "lightning_unlearn.data.DigitsDataModule",
                 "init_args": {"image_size": 4, "batch_size": 128, "holdout_fraction": 0.5, "augment": False}},
        "backbone": {"class_path": "lightning_unlearn.backbones.AllCNN", "init_args": {"width": 0.125}},
        "training": {"max_epochs": 1, "lr": 0.05},
        "scenarios": [{"name": "class-wise", "targets": [{"classes": [3]}]}],
        "seeds": [0],
        "methods": [{"name": "Finetune", "class_path": "lightning_unlearn.methods.Finetune", "init_args": {"lr": 0.01},
                     "max_epochs": 1}],
        "trainer": {"accelerator": "cpu", "num_threads": 1},
        "evaluator": {"mia": True, "zrf": False, "plots": False},
        "logger": "none",
    }
    cfg.update(over)
    return cfg


def tune_config(out: Path, benchmark: Path, **over: Any) -> dict[str, Any]:
    """Two trials of Finetune's lr on class 5, seed 10 (the benchmark evaluates class 3, seed 0)."""
    cfg = {
        "benchmark": str(benchmark), "output_dir": str(out),
        "scenarios": [{"name": "class-wise", "targets": [{"classes": [5]}]}], "seeds": [10], "n_trials": 2,
        "search_space": {"Finetune": {"lr": {"low": 0.001, "high": 0.1, "log": True}}}, "pruner": "none",
    }
    cfg.update(over)
    return cfg


def audit_config(out: Path, **over: Any) -> dict[str, Any]:
    """Four shadow models of 1 epoch, 20 targets, 10 forgotten, the two reference rows and Finetune."""
    b = bench_config(out)
    cfg = {k: b[k] for k in ("output_dir", "backbone", "training", "methods", "trainer")}
    cfg["data"] = {"class_path": b["data"]["class_path"], "init_args": {"image_size": 4, "batch_size": 128,
                                                                        "augment": False}}
    cfg.update({"shadow_models": 4, "targets": 20, "forget_per_model": 10, "bootstrap": 20})
    cfg.update(over)
    return cfg


def write_yaml(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(obj, sort_keys=False))
    return path


def python_tag_yaml(path: Path, marker: Path, key: str = "output_dir") -> Path:
    """A YAML file whose ``key`` is a ``!!python/object/apply:os.system`` tag that would create ``marker``."""
    path.write_text(f"{key}: !!python/object/apply:os.system ['touch {marker}']\n")
    return path


# -- planted files -------------------------------------------------------------------------------------------------
def sha256s(*roots: Path) -> dict[str, str]:
    """sha256 of every file under (or at) ``roots``, links not followed (a link is recorded as its target's name)."""
    out: dict[str, str] = {}
    for root in roots:
        paths = [root] if not root.is_dir() or root.is_symlink() else sorted(root.rglob("*"))
        for p in paths:
            if p.is_symlink():
                out[str(p)] = "-> " + os.readlink(p)
            elif p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def victims(root: Path) -> Path:
    """A directory of the user's own files outside every output directory (what a planted link points at)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, text in (("notes.txt", "the user's notes\n"), ("report.md", "# my report\n"), ("data.csv", "a,b\n1,2\n")):
        (root / name).write_text(text)
    (root / "dir").mkdir(exist_ok=True)
    return root


def plant_link(link: Path, target: Path) -> Path:
    link.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(link):
        link.unlink()
    link.symlink_to(target)
    return link


def plant_user_files(out: Path, names: Sequence[str]) -> dict[str, str]:
    """The user's own files named as the command's outputs; returns their digests."""
    for name in names:
        p = out / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(f"the user's own {name}\n".encode())
    return sha256s(out)


def corrupt(path: Path, kind: str) -> Path:
    """Make a cache record unreadable: ``list`` (``[]``), ``pickle`` (pickle bytes), ``truncate`` (half of it),
    ``garbage`` (bytes that are no format)."""
    data = {"list": b"[]", "pickle": pickle.dumps({"config_hash": "x"}), "garbage": b"\x00\xffnot a database" * 64}
    path.write_bytes(data[kind] if kind in data else path.read_bytes()[: max(1, path.stat().st_size // 2)])
    return path


# -- crafted checkpoints ------------------------------------------------------------------------------------------
def edit_checkpoint(src: Path, dst: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of ``src`` (read weights-only) with ``edit(ckpt)`` applied, saved at ``dst``."""
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    edit(ckpt)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, dst)
    return dst


def with_nan(ckpt: dict[str, Any]) -> None:
    key = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point() and v.dim() > 1)
    ckpt["state_dict"][key] = ckpt["state_dict"][key].clone().fill_(float("nan"))


def naming_weights(path: Path) -> Callable[[dict[str, Any]], None]:
    """An edit recording ``backbone.init_args.weights = path`` (a file the loader would open)."""

    def edit(ckpt: dict[str, Any]) -> None:
        ckpt["lightning_unlearn"]["backbone"]["init_args"]["weights"] = str(path)

    return edit


# -- running a command as the console does --------------------------------------------------------------------------
@dataclass
class Ran:
    code: int
    err: str
    out: str = ""

    @property
    def error_lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ": error: " in ln and ln.startswith("lightning_unlearn")]

    def one_line_error(self, *needles: str) -> bool:
        """Exit code 1 or 2, exactly one ``lightning_unlearn <cmd>: error:`` line holding every needle, no traceback."""
        lines = self.error_lines
        return (self.code in (1, 2) and len(lines) == 1 and "Traceback" not in self.err
                and all(n in lines[0] for n in needles))


def run_main(main: Callable[[list[str]], Any], args: Sequence[str]) -> Ran:
    """Run a command's ``main(args)`` in this process, capturing stderr and stdout; its exit code (0 when it
    returns)."""
    err, out = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return Ran(code, err.getvalue(), out.getvalue())


#: What ``import this`` prints: a module a file named was imported.
ZEN = "Beautiful is better than ugly"


def command(name: str) -> Callable[[list[str]], Any]:
    """The ``main`` of ``lightning_unlearn <name>`` (benchmark, tune, audit), or the LightningCLI front for the rest."""
    if name == "benchmark":
        from lightning_unlearn.benchmark import main
    elif name == "tune":
        from lightning_unlearn.tune import main
    elif name == "audit":
        from lightning_unlearn.audit import main
    else:
        from lightning_unlearn.cli import main as cli_main

        def main(args: list[str]) -> Any:
            return cli_main([name, *args], friendly=True)

    return main


@contextlib.contextmanager
def held(out: Path, what: str = "benchmark") -> Iterator[None]:
    """``out`` held as by another run of ``what`` (its lock taken by this process for the block)."""
    from lightning_unlearn.experiment import claim_output_dir

    with claim_output_dir(out, what):
        yield


def env_with_package() -> dict[str, str]:
    """The environment of a subprocess that imports the package this process imported (the same checkout)."""
    import lightning_unlearn

    root = str(Path(lightning_unlearn.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}


def python() -> str:
    return sys.executable
