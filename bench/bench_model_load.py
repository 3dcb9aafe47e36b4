"""Load time and peak host memory of the full-size MapAnything on the CPU: meta + mmap + assign vs naive.

Writes random float32 weights for the full architecture (built from the v1.1 config.json) into a temporary
checkpoint directory (4.58 GiB), then loads it twice, each time in a fresh subprocess:
  - ``load_model``: build on the meta device, assign the memory-mapped tensors (mapanything_ros.model);
  - naive: build on the CPU with random init, then ``load_state_dict(load_file(...))``.
After loading, every parameter is read once (a sum), so the mapped pages are resident and peak RSS is the
memory a forward pass would need for the weights. The file is in the page cache for both (just written).
Needs ~10 GB free RAM and ~5 GB of disk; takes a few minutes. Not run in CI.

    python bench/bench_model_load.py [--config PATH] [--dir TMPDIR] [--json PATH]
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_CONFIG = ROOT / "test" / "data" / "map-anything-v1.1-config.json"
GIB = 1024**3

from memory import peak_rss_bytes, rss_bytes  # noqa: E402  (bench/memory.py, beside this script)



def write_random_checkpoint(config_path: Path, directory: Path) -> int:
    """config.json + model.safetensors with N(0, 0.02) float32 weights; returns the file size in bytes.

    Tensors are filled one by one; ``save_file`` writes from their memory, so RAM holds one copy."""
    import torch
    from safetensors.torch import save_file

    from mapanything_ros.model import MapAnything, read_config

    config = read_config(config_path)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in MapAnything(config).state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    state = {k: torch.empty(shape).normal_(0.0, 0.02, generator=generator) for k, shape in shapes.items()}
    shutil.copy(config_path, directory / "config.json")
    save_file(state, directory / "model.safetensors")
    return (directory / "model.safetensors").stat().st_size


def child(mode: str, directory: Path) -> dict:
    """Runs in a fresh process: load with ``mode``, touch every weight, report times and memory."""
    import torch

    from mapanything_ros.model import MapAnything, load_model, read_config

    torch.set_num_threads(1)
    before = rss_bytes()
    start = time.perf_counter()
    if mode == "load_model":
        model = load_model(directory, device="cpu")
    else:
        from safetensors.torch import load_file

        model = MapAnything(read_config(directory / "config.json"))
        model.load_state_dict(load_file(directory / "model.safetensors"), strict=True)
        model.eval().requires_grad_(False)
    loaded = time.perf_counter()
    after_load = rss_bytes()
    with torch.inference_mode():
        checksum = sum(float(p.sum(dtype=torch.float64)) for p in model.parameters())
    touched = time.perf_counter()
    return {
        "mode": mode,
        "load_s": loaded - start,
        "touch_s": touched - loaded,
        "rss_before": before,
        "rss_after_load": after_load,
        "rss_after_touch": rss_bytes(),
        "peak_rss": peak_rss_bytes(),
        "checksum": checksum,
    }


def run_child(mode: str, directory: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(directory)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temporary checkpoint")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]))))
        return

    directory = Path(tempfile.mkdtemp(prefix="bench_model_load_", dir=args.dir))
    try:
        start = time.perf_counter()
        size = write_random_checkpoint(args.config, directory)
        write_s = time.perf_counter() - start
        results = [run_child(mode, directory) for mode in ("load_model", "naive")]
    finally:
        shutil.rmtree(directory)
    fast, naive = results
    if abs(fast["checksum"] - naive["checksum"]) > 1e-6 * abs(naive["checksum"]) + 1e-3:
        raise RuntimeError(f"loaded weights differ: {fast['checksum']} vs {naive['checksum']}")

    print(f"Full-size MapAnything, CPU, file {size / GIB:.2f} GiB (written in {write_s:.0f} s), 1 thread\n")
    print("| loader | load s | touch s | RSS before GiB | RSS after load GiB | peak RSS GiB | peak / file "
          "| (peak - before) / file |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['mode']} | {r['load_s']:.2f} | {r['touch_s']:.2f} | {r['rss_before'] / GIB:.2f} | "
              f"{r['rss_after_load'] / GIB:.2f} | {r['peak_rss'] / GIB:.2f} | {r['peak_rss'] / size:.2f} | "
              f"{(r['peak_rss'] - r['rss_before']) / size:.2f} |")
    ratios = {
        "peak_rss_naive_over_load_model": naive["peak_rss"] / fast["peak_rss"],
        "load_s_naive_over_load_model": naive["load_s"] / fast["load_s"],
        "load_plus_touch_s_naive_over_load_model":
            (naive["load_s"] + naive["touch_s"]) / (fast["load_s"] + fast["touch_s"]),
    }
    print()
    for name, value in ratios.items():
        print(f"- {name}: {value:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"file_bytes": size, "write_s": write_s, "results": results,
                                         "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
