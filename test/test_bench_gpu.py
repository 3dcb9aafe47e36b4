"""bench/bench_gpu.py without a GPU: --help, and --dry-run builds the full-size model on the meta device."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "bench_gpu.py"


def test_help_needs_no_cuda():
    done = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=True)
    assert "--dry-run" in done.stdout and "--compile" in done.stdout


def test_dry_run_plans_the_full_size_cases():
    done = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--compile"], capture_output=True, text=True,
                          check=True)
    summary = json.loads(done.stdout)
    assert summary["dry_run"] and summary["device"] == "meta"
    assert summary["parameters"] == 1_228_491_222  # the released v1.1 architecture
    assert summary["size_hw"] == [392, 518]
    cases = {(c["views"], c["mode"], c["compile"]) for c in summary["cases"]}
    assert cases == {(n, m, c) for n in (2, 4, 8, 16) for m in ("full", "cached") for c in (False, True)}
