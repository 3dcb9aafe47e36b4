"""Windows a second through the pipeline's threads with a backend that takes a GPU's time without
the CPU: it sleeps `--inference-ms` (releasing the GIL, as a CUDA call waiting for the device
does), then answers with the oracle's predictions recorded first. The window's outputs are built
as the node builds them (depth and confidence Images of the newest capture, the ~/points
PointCloud2) in the result callback, and the map is fused on its thread. Captures of the surround
rig's first `--cameras` cameras at `--size` (LiDAR depth as bench_pipeline makes it) are offered
at `--rate` Hz once the window is full, every one a keyframe: more than the pipeline can take, so
the figure is the windows it makes a second (the rest dropped by its latest-wins queues).

`--baseline REV` measures the package as of git revision REV side by side, as bench_pipeline does
(extracted, its C modules compiled with their own options, each side in a fresh process).

    tools/dev run python bench/bench_threads.py [--cameras 4] [--size 640x480] [--inference-ms 130]
                                                [--rate 10] [--captures 40] [--baseline REV] [--json PATH]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one thread, before numpy loads
    os.environ.setdefault(var, "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_pipeline  # noqa: E402  (bench/bench_pipeline.py: the rig, the captures, the extraction)

REPO = Path(__file__).resolve().parent.parent
N = bench_pipeline.N


def drive(cameras, size, inference_s, rate, count):
    """Measure the package on PYTHONPATH (run in a subprocess): {figure: value}."""
    from mapanything_ros.backends import OracleBackend
    from mapanything_ros.pipeline import Pipeline, PipelineConfig
    from mapanything_ros.window import KeyframePolicy

    scene = bench_pipeline.scene_for(size, cameras)
    rendered = bench_pipeline.render(scene, N + count)
    config = PipelineConfig(window_size=N, keyframes=KeyframePolicy(elapsed_s=0.0))
    oracle, recorded = OracleBackend(scene), {}

    class Recorder:
        def predict(self, batch):
            out = recorded[tuple(f.key for f in batch.frames)] = oracle.predict(batch)
            return out

    class Device:  # the device's time, without the CPU
        def predict(self, batch):
            time.sleep(inference_s)
            return recorded[tuple(f.key for f in batch.frames)]

    recording = Pipeline(config, Recorder())
    for capture in bench_pipeline.captures_for(scene, rendered):
        recording.process(capture)
    done = []

    def outputs(result):  # what the node's _on_result builds
        bench_pipeline.node_messages(result.reconstruction)
        done.append(time.perf_counter())

    pipeline = Pipeline(config, Device())
    pipeline.on_result(outputs)
    captures = bench_pipeline.captures_for(scene, rendered)
    with pipeline:
        for capture in captures[:N]:  # the window filled first
            pipeline.submit(capture)
            pipeline.drain()
        done.clear()
        start, cpu = time.perf_counter(), time.process_time()
        for k, capture in enumerate(captures[N:]):
            time.sleep(max(0.0, start + k / rate - time.perf_counter()))
            pipeline.submit(capture)
        pipeline.drain()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    stats = pipeline.stats()
    return {"windows_per_s": len(done) / wall, "windows": len(done), "offered": count, "dropped": stats.dropped,
            "cpu_percent": 100 * cpu / wall, "publish_p50_ms": stats.latency["publish"]["p50"] * 1e3,
            "total_p50_ms": stats.latency["total"]["p50"] * 1e3}


def run_tree(tree, args):
    """drive() in a fresh process on the package in `tree`."""
    out = subprocess.run([sys.executable, __file__, "--drive", "--cameras", str(args.cameras), "--size", args.size,
                          "--inference-ms", str(args.inference_ms), "--rate", str(args.rate),
                          "--captures", str(args.captures)],
                         env=dict(os.environ, PYTHONPATH=str(tree)), check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, default=4, choices=range(1, 5), help="cameras of the surround rig")
    parser.add_argument("--size", default="640x480", help="camera image size WxH")
    parser.add_argument("--inference-ms", type=float, default=130.0, help="the backend's time per window (ms)")
    parser.add_argument("--rate", type=float, default=10.0, help="captures offered a second")
    parser.add_argument("--captures", type=int, default=40, help="captures offered after the window is full")
    parser.add_argument("--baseline", help="git revision to measure side by side")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--drive", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        print(json.dumps(drive(args.cameras, args.size, args.inference_ms / 1e3, args.rate, args.captures)))
        return
    figures = {"cameras": args.cameras, "size": args.size, "inference_ms": args.inference_ms, "rate_hz": args.rate,
               "this": run_tree(REPO, args)}
    with tempfile.TemporaryDirectory() as tmp:
        if args.baseline:
            archive = subprocess.run(["git", "-C", str(REPO), "archive", args.baseline, "mapanything_ros",
                                      "CMakeLists.txt"], check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            bench_pipeline.build_extensions(tmp)
            figures["baseline"] = run_tree(tmp, args)
    print(f"{args.cameras} x {args.size}, a backend of {args.inference_ms:.0f} ms without the CPU, captures offered at "
          f"{args.rate:g} Hz, window {N}\n")
    print("| code | windows a second | windows of offered | process CPU | publish p50 | offered -> outputs p50 |")
    print("|---|---|---|---|---|---|")
    for name in ("this", "baseline"):
        if name in figures:
            f = figures[name]
            print(f"| {args.baseline if name == 'baseline' else 'this tree'} | {f['windows_per_s']:.2f} | "
                  f"{f['windows']} of {f['offered']} | {f['cpu_percent']:.0f} % | {f['publish_p50_ms']:.0f} ms | "
                  f"{f['total_p50_ms']:.0f} ms |")
    if "baseline" in figures:
        print(f"\nspeed-up: {figures['this']['windows_per_s'] / figures['baseline']['windows_per_s']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
