"""bench/bench_gpu.py without a GPU: --help, --dry-run builds the full-size model on the meta device,
and its newest-view reconstruction figures on the CPU."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from mapanything_ros.backends import RandomBackend

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


def test_newest_view_figures_on_the_cpu():
    """The device and host reconstructions of view 0 (torch and numpy on the CPU here) and the
    bytes each takes from the device: the published arrays, or the whole prediction of the view."""
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    batch = bench.window_batch((112, 140), 3)
    with torch.inference_mode():
        out = RandomBackend(seed=0).model(batch.views, **batch.forward_kwargs)
    figures = bench.newest_view(bench.plausible(out), batch, "cpu")
    assert figures["recon_device_ms"] > 0 and figures["recon_host_ms"] > 0
    assert figures["host_bytes"] == 112 * 140 * (4 + 12 + 4 + 1)  # depth, rays, confidence, mask of view 0
    native = np.prod(batch.prepared[0].frame.camera.image_size)
    assert figures["points"] == 112 * 140
    assert figures["device_bytes"] == native * 8 + figures["points"] * (12 + 4 + 8)
