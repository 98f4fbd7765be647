"""What produced a result: package version, git commit (and whether the tree had uncommitted changes), library versions,
device, threads and date. ``lightning_unlearn benchmark`` writes it into ``results.json`` and ``report.md``, and
stamps every run's row with :func:`run_stamp`, so a table can be traced to the code that made each of its rows."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from lightning_unlearn import __version__

__all__ = ["collect_provenance", "git_info", "run_stamp"]

_PACKAGE_DIR = Path(__file__).resolve().parent


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.lru_cache(maxsize=8)
def git_info(package_dir: Path = _PACKAGE_DIR) -> dict[str, Any]:
    """``{"commit", "dirty"}`` of the git work tree that tracks ``package_dir/__init__.py`` (default: this package's
    source); both ``None`` when there is none (an installed wheel, no git). ``dirty``: tracked files differ from the
    commit (untracked files are ignored). Cached: asked once per process."""
    top = _git(["rev-parse", "--show-toplevel"], package_dir)
    if not top:
        return {"commit": None, "dirty": None}
    # the package must be *tracked* there: a site-packages directory inside some other repository is not our commit
    if _git(["ls-files", "--error-unmatch", str(package_dir / "__init__.py")], Path(top)) is None:
        return {"commit": None, "dirty": None}
    commit = _git(["rev-parse", "HEAD"], Path(top))
    status = _git(["status", "--porcelain", "--untracked-files=no"], Path(top))
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def run_stamp() -> dict[str, Any]:
    """The two fields stamped on every benchmark row: ``package_version`` and ``git_commit`` (``+dirty`` appended
    when the tree had uncommitted changes; ``None`` outside a git checkout)."""
    g = git_info()
    commit = g["commit"]
    if commit and g["dirty"]:
        commit += "+dirty"
    return {"package_version": __version__, "git_commit": commit}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        return str(__import__(module).__version__)
    except Exception:  # noqa: BLE001 - an absent or broken optional library is recorded as None
        return None


def collect_provenance(accelerator: str | None = None, num_threads: int | None = None) -> dict[str, Any]:
    """Everything that identifies the software and machine of a run (see the module docstring).

    Args:
        accelerator: the benchmark's ``trainer.accelerator`` (``"cpu"``, ``"gpu"``, ``"auto"``): the device recorded is
            the one it resolves to here.
        num_threads: the benchmark's ``trainer.num_threads`` (``None``: PyTorch's default).
    """
    acc = (accelerator or "auto").lower()
    cuda = torch.cuda.is_available() and acc in ("gpu", "cuda", "auto")
    device = f"cuda: {torch.cuda.get_device_name(0)}" if cuda else f"cpu: {_cpu_name()}"
    return {
        "package": "lightning_unlearn",
        "package_version": __version__,
        **{f"git_{k}": v for k, v in git_info().items()},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": _version("lightning"),
        "numpy": _version("numpy"),
        "scikit-learn": _version("sklearn"),
        "scipy": _version("scipy"),
        "cuda": torch.version.cuda if cuda else None,
        "accelerator": accelerator,
        "device": device,
        "cpu_count": os.cpu_count(),
        "num_threads_config": num_threads,
        "torch_num_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "command": " ".join(sys.argv),
    }
