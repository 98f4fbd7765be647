"""benchmarks/gpu_check.py, the script prepared for a GPU machine: its --smoke mode (CPU, tiny sizes) runs every section
without jsonargparse or Ray (absent on the device machines), so the script cannot rot unnoticed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# jsonargparse and Ray made unimportable, as on the device machines; then the script as `python benchmarks/...` runs it
RUN = """
import runpy, sys
sys.modules["jsonargparse"] = None
sys.modules["ray"] = None
sys.argv = ["benchmarks/gpu_check.py", "--smoke", "--json", sys.argv[1]]
runpy.run_path("benchmarks/gpu_check.py", run_name="__main__")
"""


def test_gpu_check_smoke_runs_every_section_without_jsonargparse_or_ray(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, "-c", RUN, str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for title in ("1. One unlearning epoch", "2. Fisher diagonal", "3. Methods against their bare loops"):
        assert title in proc.stdout
    data = json.loads(out.read_text())
    assert [r["mode"] for r in data["epoch"]] == ["fp32", "bf16-mixed", "channels-last"]
    assert all(r["method_s"]["min"] > 0 and r["bare_s"]["min"] > 0 for r in data["epoch"])
    assert set(data["fisher"]["per_sample_s"]) == {"diagonal_fisher", "reference", "floor_input", "floor_full"}
    assert data["fisher"]["max_rel_difference_chunk1_vs_reference"] < 1e-5
    assert set(data["methods"]) == {"Finetune", "SSD"}
    assert all(len(t["method"]) == len(t["bare"]) == 1 for t in data["methods"].values())
