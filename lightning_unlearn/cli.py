"""The ``lightning_unlearn`` command: which subcommand runs, the top-level help, and one readable line per error.

This module imports nothing beyond the standard library at its top, so ``lightning_unlearn --help`` and a mistyped
subcommand answer without loading torch or Lightning. ``fit``/``validate``/``test``/``predict``/``unlearn`` are run by
:class:`~lightning_unlearn.unlearn_cli.UnlearnCLI` (a LightningCLI, imported when one of them runs); ``benchmark``,
``tune`` and ``audit`` by their own modules' ``main``. The method and DataModule names of ``--help`` are listed here
(:data:`METHODS`, :data:`DATAMODULES`); ``tests/test_cli_habits.py`` checks them against the registries.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

#: Set to 1 (or pass ``--debug``) for the full traceback of an error instead of its one-line message.
DEBUG_ENV = "LIGHTNING_UNLEARN_DEBUG"

#: The subcommands LightningCLI runs (UnlearnCLI), each with its one-line summary.
_SUBCOMMANDS = {
    "fit": "Train a model: the original (on D = D_r + D_f) or, with --data.train_on retain, the gold model.",
    "unlearn": "Run an unlearning method (--model NAME) on --original_ckpt; writes unlearned.ckpt and its metrics.",
    "test": "Evaluate a checkpoint on every split (accuracy, MIA, gap to --gold_ckpt).",
    "validate": "Lightning's validate: one evaluation epoch over the validation set.",
    "predict": "Lightning's predict: run inference on the test set.",
}
#: Subcommands parsed by their own modules (imported only when used), each with its one-line summary.
_DISPATCHED = {
    "benchmark": ("lightning_unlearn.benchmark", "Compare methods over scenarios and seeds: report.md, results, plots."),
    "tune": ("lightning_unlearn.tune", "Tune each method (Optuna) on targets the benchmark does not evaluate."),
    "audit": ("lightning_unlearn.audit", "Per-example privacy audit on shadow models: U-LiRA, NeurIPS'23 score."),
}
_ORDER = ("fit", "unlearn", "test", "benchmark", "tune", "audit", "validate", "predict")
#: The unlearning methods ``unlearn --model NAME`` takes: the public ``UnlearningMethod`` subclasses of
#: ``lightning_unlearn.methods`` (listed, not imported, so that ``--help`` needs no torch).
METHODS = (
    "Amnesiac", "AmnesiacRelabel", "BadTeacher", "BoundaryExpanding", "BoundaryShrink", "ConvolutionTranspose",
    "Finetune", "FisherForgetting", "L1Sparse", "LabelFreeSSD", "MaskedSmallGradients", "NegativeGradient", "RUM",
    "RandomLabels", "SCRUB", "SFRon", "SalUn", "SelectiveSynapticDampening", "TwinUnlearning", "UNSIR",
)
#: The DataModules ``--data NAME`` takes: the public ``UnlearningDataModule`` subclasses of ``lightning_unlearn.data``.
DATAMODULES = (
    "CIFAR100DataModule", "CIFAR10DataModule", "DatasetsDataModule", "DigitsDataModule", "FashionMNISTDataModule",
    "ImageFolderDataModule",
)


class UsageError(ValueError):
    """A command line that names no subcommand we have (found before anything is imported)."""


def top_level_help() -> str:
    """``lightning_unlearn --help``: every subcommand with one line, the methods and the DataModules."""
    lines = ["usage: lightning_unlearn SUBCOMMAND [options]   (SUBCOMMAND --help for its options)", "", "subcommands:"]
    for name in _ORDER:
        text = _SUBCOMMANDS.get(name) or _DISPATCHED[name][1]
        lines.append(f"  {name:<10} {text}")
    lines += ["", "methods (unlearn --model NAME; NAME --model.help for its arguments; or module.Class of your own):"]
    lines += _wrap(", ".join(METHODS), "  ")
    lines += ["", "DataModules (--data NAME, or a config such as configs/data/digits.yaml):"]
    lines += _wrap(", ".join(DATAMODULES), "  ")
    lines += [
        "",
        "example: lightning_unlearn unlearn --data configs/data/digits.yaml --model configs/unlearn/boundary_shrink.yaml"
        " --original_ckpt runs/digits/original.ckpt --gold_ckpt runs/digits/gold.ckpt",
        "errors print one line; --debug (or LIGHTNING_UNLEARN_DEBUG=1) shows the traceback.",
    ]
    return "\n".join(lines)


def _wrap(text: str, indent: str, width: int = 100) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=width, initial_indent=indent, subsequent_indent=indent)


def check_subcommand(argv: list[str]) -> None:
    """Refuse, in one line, a first argument that is neither an option nor one of our subcommands."""
    first = argv[0] if argv else ""
    if not first or first.startswith("-") or first in _SUBCOMMANDS or first in _DISPATCHED:
        return
    import difflib

    close = difflib.get_close_matches(first, _ORDER, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    names = ", ".join(_ORDER)
    raise UsageError(f"unknown subcommand '{first}'; {hint}the subcommands are {names} (lightning_unlearn --help).")


def _dispatch(name: str) -> Any:
    """The ``main`` of the module that parses ``name`` (imported only now), or one line saying it is missing."""
    import importlib

    module_name = _DISPATCHED[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != module_name:
            raise
        raise RuntimeError(
            f"`lightning_unlearn {name}` needs the module {module_name}, which is not in this installation; "
            "update lightning_unlearn (pip install -U lightning_unlearn) or run from a checkout that has it."
        ) from None
    return module.main


_FORGET_KEYS = ("classes", "per_class", "fraction", "indices", "indices_file")
_FORGET_OPTIONS = ("--data.forget", "--data.init_args.forget")


def forget_mode_overrides(argv: list[str]) -> list[str]:
    """``argv`` where a forget spec given on the command line replaces the config's instead of merging into it.

    A shipped data config sets a mode (``classes: [3]``); jsonargparse would merge ``--data.forget.fraction 0.1`` into
    it, leaving two modes set, which ForgetSpec refuses. So the ``--data.forget.<key>`` options (and a whole
    ``--data.forget '{...}'``) are gathered into one spec that replaces the config's: ``--data.forget.classes [5]``
    alone is class-wise forgetting of class 5 whatever the config said.
    """
    import yaml

    spec: dict[str, Any] = {}
    keep: list[str] = []
    first: int | None = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        opt, eq, value = arg.partition("=")
        key = next((opt[len(o) + 1 :] for o in _FORGET_OPTIONS if opt.startswith(o + ".")), None)
        whole = opt in _FORGET_OPTIONS
        if (key in _FORGET_KEYS or whole) and arg.startswith("--"):
            if not eq:
                if i + 1 >= len(argv):
                    return list(argv)  # no value: let the parser say so
                value = argv[i + 1]
                i += 1
            parsed = value if key == "indices_file" else yaml.safe_load(value)
            if whole:
                if parsed is not None and not isinstance(parsed, dict):
                    return list(argv)
                spec = dict(parsed or {})
            else:
                spec[key] = parsed
            first = len(keep) if first is None else first
        else:
            keep.append(arg)
        i += 1
    if first is None:
        return list(argv)
    replaced = ["--data.init_args.forget=null"]
    if spec:
        replaced.append("--data.init_args.forget=" + json.dumps(spec))
    return [*keep[:first], *replaced, *keep[first:]]


def fragment_configs(argv: list[str]) -> list[str]:
    """``--data F`` / ``--model F`` where ``F`` is a whole-config fragment (``data:``/``model:`` at its top, as the
    shipped ``configs/data/*.yaml`` and ``configs/unlearn/*.yaml``) become ``-c F``, so both anomalib-style calls
    (``--data configs/data/digits.yaml --model configs/unlearn/boundary_shrink.yaml``) and ``-c`` work with the same
    files, trainer settings included. A file holding only ``class_path``/``init_args`` stays a group config."""
    import yaml

    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        opt, eq, value = arg.partition("=")
        group = {"--data": "data", "--model": "model"}.get(opt)
        if group and not eq and i + 1 < len(argv):
            value = argv[i + 1]
        path = Path(value) if group and value else None
        if path is not None and path.suffix in (".yaml", ".yml", ".json") and path.is_file():
            try:
                content = yaml.safe_load(path.read_text())
            except (OSError, yaml.YAMLError):
                content = None
            if isinstance(content, dict) and group in content and "class_path" not in content:
                out += ["-c", value]
                i += 1 if eq else 2
                continue
        out.append(arg)
        i += 1
    return out


class _Stage:
    """Whether the subcommand itself has started (errors before it are usage errors: exit code 2)."""

    running = False

    @classmethod
    def start(cls) -> None:
        cls.running = True


def _run_lightning_cli(argv: list[str]) -> None:
    """``fit``/``validate``/``test``/``predict``/``unlearn`` (or options before the subcommand) through UnlearnCLI."""
    from lightning_unlearn.quiet import framework_notices_silenced
    from lightning_unlearn.unlearn_cli import UnlearnCLI

    argv = fragment_configs(forget_mode_overrides(argv))
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "lightning_unlearn"
    # LightningCLI reads sys.argv (warning when `args` is also given): hand it our rewritten argv there instead.
    saved, sys.argv = sys.argv, ["lightning_unlearn" if prog in ("__main__.py", "-c") else prog, *argv]
    try:
        with framework_notices_silenced():
            only = argv[0] if argv and argv[0] in _SUBCOMMANDS else None
            UnlearnCLI(args=None, save_config_kwargs={"overwrite": True}, only_subcommand=only, on_run=_Stage.start)
    finally:
        sys.argv = saved


def main(args: list[str] | None = None, *, friendly: bool | None = None) -> None:
    """Entry point of the ``lightning_unlearn`` command (``benchmark`` is parsed by ``lightning_unlearn.benchmark``).

    From the command line (``args=None``) an error prints one line -- ``lightning_unlearn <subcommand>: error: <what
    to do>`` -- and exits with 2 (bad arguments or inputs, found before the run starts) or 1 (the run failed); the
    traceback only with ``--debug`` or ``LIGHTNING_UNLEARN_DEBUG=1``. Called from Python with ``args`` the exception
    propagates, unless ``friendly=True``.
    """
    argv = sys.argv[1:] if args is None else list(args)
    friendly = args is None if friendly is None else friendly
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    _Stage.running = False
    try:
        if not argv or argv[0] in ("-h", "--help"):
            print(top_level_help())
            return
        check_subcommand(argv)
        if argv[0] in _DISPATCHED:
            _Stage.running = True
            _dispatch(argv[0])(argv[1:])
            return
        _run_lightning_cli(argv)
    except KeyboardInterrupt:
        if debug or not friendly:
            raise
        print("lightning_unlearn: interrupted; nothing was written for the unfinished run.", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as err:  # noqa: BLE001 - one readable line, the traceback on request
        if debug or not friendly:
            raise
        if isinstance(err, UsageError):
            print(f"lightning_unlearn: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        sub = next((a for a in argv if a in _SUBCOMMANDS or a in _DISPATCHED), "")
        print(f"lightning_unlearn{' ' + sub if sub else ''}: error: {error_line(err)}", file=sys.stderr)
        print(f"(the full traceback: rerun with --debug or {DEBUG_ENV}=1)", file=sys.stderr)
        raise SystemExit(1 if _Stage.running else 2) from None


def error_line(err: BaseException) -> str:
    """The message a person can act on: the innermost error raised by this package in the exception chain (the
    arguments' parser wraps it in several of its own), else the outermost one; its first line, with its type. A parse
    error of the arguments' parser (many lines) becomes the option, the value given and the innermost reason."""
    chain: list[BaseException] = []
    e: BaseException | None = err
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    package = str(Path(__file__).resolve().parent)
    ours = [x for x in chain if x.__traceback__ and traceback.extract_tb(x.__traceback__)[-1].filename.startswith(package)]
    chosen = ours[-1] if ours else chain[0]
    if not ours and type(chosen).__name__ == "ArgumentError":  # argparse's, raised by jsonargparse
        return f"ArgumentError: {parse_error_line(str(chosen))}"
    text = str(chosen).strip().splitlines()
    return f"{type(chosen).__name__}: {text[0] if text else ''}".rstrip(": ")


#: Lines of jsonargparse's nested messages that say nothing about what to change.
_PARSE_NOISE = ("Expected a path but", "Does not validate against any of the Union subtypes", "Subtypes:", "Errors:",
                "Given value", "Expected a <class 'NoneType'>")


def parse_error_line(message: str) -> str:
    """jsonargparse's error for ``Parser key "K": ...`` (10-70 lines: each type of a Union tried in turn, nested once
    per class) as one line: ``--K.SUBKEY VALUE: <the innermost reason that is not about a type never meant>``."""
    import re

    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    keys: list[str] = []
    last = -1
    for i, line in enumerate(lines):
        head = re.match(r'Parser key "([^"]+)":', line)
        if head is not None:
            keys.append(head.group(1))
            last = i
    if not keys:
        return lines[0] if lines else message
    tail = lines[last + 1 :]  # the innermost key's block first, then the outer keys' remaining lines
    given = next((ln.split(":", 1)[1].strip() for ln in tail if ln.startswith("Given value:")), "")
    reasons = [r for r in (ln.lstrip("- ").strip() for ln in tail) if not r.startswith(_PARSE_NOISE)]
    reason = reasons[0] if reasons else "invalid value"
    if reason.endswith(":") and len(reasons) > 1:
        reason = f"{reason} {reasons[1]}"
    key = ".".join(keys)
    hint = " (lightning_unlearn --help lists the methods and DataModules)" if key in ("model", "data") else ""
    return f"--{key}{' ' + given if given else ''}: {reason}{hint}"


if __name__ == "__main__":  # pragma: no cover
    main()
