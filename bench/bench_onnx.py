"""torch versus onnxruntime on the CPU: time per sliding-window step and peak memory, side by side.

Per configuration the network gets random weights (seed 0), saved as a checkpoint and exported
with `model.onnx.export_onnx` (any number of views, the node's default inputs images + rays +
poses) into a temporary directory; the export time is reported. Both engines then run the same
windows of N views (random images, unit rays, poses) with a feature cache of N images, as the
node does: each step adds one frame and drops the oldest, so a step encodes one image.
  - Time, one process per (configuration, N) holding both engines: after the fill and
    `--warmup` slides, each timed slide runs both on the same window in alternating order.
    Reported: median CPU time (`time.process_time`) and wall time per step, their ratio
    onnxruntime/torch, and the largest normalised error between the engines' outputs
    (max |a - b| / (|b| + rms(b)), the fixtures' measure).
  - Memory, one process per (configuration, N, engine): peak RSS (VmHWM, weights
    included) after loading and `--mem-steps` slides, and the increase over the RSS before
    those slides (heap trimmed and the peak reset as in bench_model_cache.py;
    MALLOC_MMAP_THRESHOLD_=65536).
Both engines use `--threads` threads (default 1: the machine is shared). Configurations:
`tiny` (backends.tiny_config, the fixtures' shape, 6.1 M parameters) and `small` (bench_model_cache.small_config,
49 M parameters, derived from the v1.1 release config).

    python bench/bench_onnx.py [--configs tiny small] [--windows 2 4 8] [--size 168 224]
        [--steps 3] [--min-time 4] [--warmup 1] [--mem-steps 2] [--threads 1] [--json PATH]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENGINES = ("torch", "onnxruntime")

# bench_model_cache (beside this script) also puts the repository on sys.path
from bench_model_cache import MIB, RELEASE_CONFIG, reset_peak_rss, small_config  # noqa: E402
from memory import hwm_bytes, rss_bytes  # noqa: E402


def make_config(name: str) -> dict:
    from mapanything_ros.backends import tiny_config
    from mapanything_ros.model.checkpoint import read_config

    return tiny_config() if name == "tiny" else small_config(read_config(RELEASE_CONFIG))


def prepare(name: str, size: tuple[int, int], directory: Path) -> dict:
    """Random-weight checkpoint and its ONNX export in `directory`; returns figures."""
    import safetensors.torch
    import torch

    from mapanything_ros.model.network import MapAnything
    from mapanything_ros.model.onnx import export_onnx

    config = make_config(name)
    torch.manual_seed(0)
    model = MapAnything(config).eval().requires_grad_(False)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    safetensors.torch.save_model(model, str(directory / "model.safetensors"))
    start = time.perf_counter()
    cpu = time.process_time()
    manifest = export_onnx(model, directory / "onnx", 3, *size, dynamic_views=True,
                           combinations=[frozenset({"rays", "poses"})])
    graphs = directory / "onnx"
    return {"config": name, "parameters": sum(p.numel() for p in model.parameters()),
            "export_s": time.perf_counter() - start, "export_cpu_s": time.process_time() - cpu,
            "export_seconds": manifest["export_seconds"],
            "onnx_mib": sum(p.stat().st_size for p in graphs.glob("*.onnx*")) / MIB}


class Stream:
    """Frames of a random scene (seeded): image, unit rays, pose; and windows of N of them."""

    def __init__(self, size: tuple[int, int]):
        import torch

        self.size, self.frames = size, []
        self.gen = torch.Generator().manual_seed(1)

    def views(self, step: int, window: int) -> list[dict]:
        import torch

        h, w = self.size
        while len(self.frames) < step + window:
            rays = torch.randn(1, h, w, 3, generator=self.gen) * 0.2 + torch.tensor([0.0, 0.0, 1.0])
            q = torch.randn(1, 4, generator=self.gen)
            self.frames.append({"img": torch.randn(1, 3, h, w, generator=self.gen),
                                "ray_directions_cam": rays / rays.norm(dim=-1, keepdim=True),
                                "camera_pose_quats": q / q.norm(), "camera_pose_trans": torch.randn(1, 3, generator=self.gen),
                                "is_metric_scale": torch.tensor([True])})
        return [{**self.frames[i], "frame_id": i} for i in range(step, step + window)]


def load(engine: str, directory: Path, window: int, threads: int):
    import torch

    torch.set_num_threads(threads)
    if engine == "torch":
        from mapanything_ros.model import load_model
        return load_model(str(directory), "cpu", feature_cache_size=window)
    from mapanything_ros.model.onnx import OnnxMapAnything
    return OnnxMapAnything(directory / "onnx", ["cpu"], feature_cache_size=window, threads=threads)


def run(model, views):
    import torch

    with torch.inference_mode():
        start, cpu = time.perf_counter(), time.process_time()
        out = model(views)
        return out, time.perf_counter() - start, time.process_time() - cpu


def norm_err(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / (np.abs(b) + np.sqrt(np.mean(b ** 2)) + 1e-30)))


def time_child(args, directory: Path, window: int) -> dict:
    models = {e: load(e, directory, window, args.threads) for e in ENGINES}
    stream = Stream(tuple(args.size))
    rows = {e: [] for e in ENGINES}
    err, timed, step = 0.0, 0.0, 0
    while len(rows["torch"]) < args.steps or timed < args.min_time:
        views = stream.views(step, window)
        order = ENGINES if step % 2 == 0 else ENGINES[::-1]
        res = {e: run(models[e], views) for e in order}
        step += 1
        if step <= 1 + args.warmup:
            continue
        timed += sum(r[2] for r in res.values())
        for e in ENGINES:
            rows[e].append({"wall_s": res[e][1], "cpu_s": res[e][2]})
        err = max([err] + [norm_err(a[k].numpy(), b[k].numpy()) for a, b in zip(res["onnxruntime"][0], res["torch"][0])
                           for k in a if a[k].is_floating_point()])
    result = {"window": window, "slides": len(rows["torch"]), "max_norm_err": err,
              "ratio_cpu": statistics.median(o["cpu_s"] / t["cpu_s"] for t, o in zip(rows["torch"], rows["onnxruntime"]))}
    for e in ENGINES:
        result[e] = {k: statistics.median(r[k] for r in rows[e]) for k in ("wall_s", "cpu_s")}
        result[e]["images_encoded"] = models[e].images_encoded
    return result


def memory_child(args, directory: Path, window: int, engine: str) -> dict:
    rss_start = rss_bytes()
    model = load(engine, directory, window, args.threads)
    rss_loaded = rss_bytes()
    stream = Stream(tuple(args.size))
    for step in range(1 + args.warmup + args.mem_steps):
        if step == 1 + args.warmup:
            reset_peak_rss()
            rss_before = rss_bytes()
        run(model, stream.views(step, window))
    return {"window": window, "engine": engine, "rss_start": rss_start, "rss_loaded": rss_loaded,
            "rss_before": rss_before, "peak_rss": hwm_bytes()}


def run_child(args, role: str, directory: Path, window: int) -> dict:
    cmd = [sys.executable, __file__, "--child", role, str(directory), str(window), "--size", *map(str, args.size),
           "--steps", str(args.steps), "--min-time", str(args.min_time), "--warmup", str(args.warmup),
           "--mem-steps", str(args.mem_steps), "--threads", str(args.threads)]
    env = os.environ if role == "time" else {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "small"], choices=("tiny", "small"))
    parser.add_argument("--windows", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--size", type=int, nargs=2, default=(168, 224), metavar=("H", "W"))
    parser.add_argument("--steps", type=int, default=3, help="min timed slides per (configuration, N)")
    parser.add_argument("--min-time", type=float, default=4.0, help="min CPU seconds of timed slides (both engines)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed slides after the fill")
    parser.add_argument("--mem-steps", type=int, default=2, help="slides per memory run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", nargs=3, metavar=("ROLE", "DIR", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        role, directory, window = args.child[0], Path(args.child[1]), int(args.child[2])
        result = (time_child(args, directory, window) if role == "time"
                  else memory_child(args, directory, window, role))
        print(json.dumps(result))
        return

    import onnxruntime
    import torch

    start = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs:
            directory = Path(tmp) / name
            info = prepare(name, tuple(args.size), directory)
            info["rows"] = [{"time": run_child(args, "time", directory, n),
                             "memory": {e: run_child(args, e, directory, n) for e in ENGINES}}
                            for n in args.windows]
            results.append(info)
    wall = time.perf_counter() - start

    print(f"torch {torch.__version__} vs onnxruntime {onnxruntime.__version__} (CPUExecutionProvider), "
          f"{args.threads} thread(s) each; images {args.size[0]}x{args.size[1]} (H x W) + rays + poses; "
          f"random weights; feature cache of N images, one new image per step; medians of >= {args.steps} "
          f"slides and >= {args.min_time:g} CPU s after the fill and {args.warmup} warm-up slide(s); "
          f"total {wall:.0f} s\n")
    for info in results:
        print(f"- `{info['config']}`: {info['parameters'] / 1e6:.1f} M parameters; export (encoder + one "
              f"multi-view graph) {info['export_s']:.1f} s wall, {info['export_cpu_s']:.1f} s CPU; "
              f"graphs {info['onnx_mib']:.1f} MiB")
    print("\n| config | N | torch CPU ms/step | onnxruntime CPU ms/step | ORT/torch CPU | torch wall ms | ORT wall ms "
          "| peak RSS MiB torch, ORT | step increase MiB torch, ORT | max norm. error |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for info in results:
        for row in info["rows"]:
            t, m = row["time"], row["memory"]
            peak = [m[e]["peak_rss"] / MIB for e in ENGINES]
            inc = [(m[e]["peak_rss"] - m[e]["rss_before"]) / MIB for e in ENGINES]
            print(f"| {info['config']} | {t['window']} | {t['torch']['cpu_s'] * 1e3:.0f} "
                  f"| {t['onnxruntime']['cpu_s'] * 1e3:.0f} | {t['ratio_cpu']:.2f} | {t['torch']['wall_s'] * 1e3:.0f} "
                  f"| {t['onnxruntime']['wall_s'] * 1e3:.0f} | {peak[0]:.0f}, {peak[1]:.0f} "
                  f"| {inc[0]:.0f}, {inc[1]:.0f} | {t['max_norm_err']:.1e} |")
    if args.json:
        args.json.write_text(json.dumps({"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                                         "size": args.size, "threads": args.threads, "steps": args.steps,
                                         "min_time": args.min_time, "warmup": args.warmup,
                                         "mem_steps": args.mem_steps, "wall_s": wall, "configs": results}, indent=2))


if __name__ == "__main__":
    main()
