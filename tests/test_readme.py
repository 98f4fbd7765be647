"""The README's flow runs as written: its `lightning_unlearn` commands, in order, in a fresh directory.

Each command is taken literally from the README's "The flow" block; the only change is ``--trainer.max_epochs 1``
appended (the last value wins in LightningCLI), so the whole flow takes seconds. Commands run in-process through
``lightning_unlearn.cli.main`` (the console script's entry point), with the repository's ``configs/`` linked in.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

from lightning_unlearn.checkpoints import read_checkpoint
from lightning_unlearn.cli import main

ROOT = Path(__file__).resolve().parents[1]


def readme_commands(section: str = "## The flow") -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    body = text[text.index(section) :]
    block = re.search(r"```bash\n(.*?)```", body, re.S)
    assert block is not None, f"no bash block under {section!r}"
    joined = block.group(1).replace("\\\n", " ")
    return [shlex.split(line) for line in joined.splitlines() if line.strip().startswith("lightning_unlearn ")]


def test_readme_flow_runs_as_written(tmp_path, monkeypatch, capsys):
    commands = readme_commands()
    assert [c[1] for c in commands] == ["fit", "fit", "unlearn", "test"]
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(os.environ, "OMP_NUM_THREADS", "1")
    for command in commands:
        main([*command[1:], "--trainer.max_epochs", "1"])
    runs = tmp_path / "runs" / "digits"
    assert read_checkpoint(runs / "original.ckpt")["lightning_unlearn"]["role"] == "original"
    assert read_checkpoint(runs / "gold.ckpt")["lightning_unlearn"]["role"] == "gold"
    summary = json.loads((runs / "boundary_shrink" / "unlearn.json").read_text())
    assert summary["method"] == "BoundaryShrink" and summary["gold_ckpt"] == "runs/digits/gold.ckpt"
    assert summary["metrics"]["gold/forget_acc_gap"] is not None
    out = capsys.readouterr()
    printed = out.out + out.err
    assert "| forget |" in printed and "gold/forget_acc_gap" in printed  # unlearn ends with the metrics table
    (tested,) = [p for p in runs.rglob("metrics.json") if "boundary_shrink" not in str(p)]
    assert json.loads(tested.read_text())["gold/forget_acc_gap"] == summary["metrics"]["gold/forget_acc_gap"]
