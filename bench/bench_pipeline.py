"""Pipeline cost outside the network, per window: everything from a capture offered to the
pipeline to its depth, confidence and points messages and its map insertion, with a backend that
costs nothing (the oracle's predictions, recorded first and replayed), for one camera or more
(`--cameras`: the surround rig's first N) at 640x480 and at 1280x720, windows of N = 8 captures, LiDAR sparse depth on (a 100k-point sweep with
per-point times, projected with motion compensation as the node defers it), one thread.

Figures per window (CPU time of the one thread doing all the work, medians over the timed
windows, each after the window is full):
- outside_network_ms_per_window: everything but the backend's predict(), map insertion included;
- critical_path_ms_per_window: from the prediction's return to the output messages built (the
  sensor_msgs depth and confidence Images of the newest capture and the ~/points PointCloud2, as
  the node builds them with the tree's own ros/ builders).

`--baseline REV` runs the same measurement on the package as of git revision REV (extracted to a
temporary directory, its C extension modules compiled there; 914040f or later, which has the
surround rig) in the same run, and reports the speed-ups. Each side runs in a fresh
process with PYTHONPATH set to its tree. `--completion` also measures this tree with the
depth-completion preset's reconstruction (per-view scale and residual field from the LiDAR,
agreeing measurements kept: mapping.completion) beside the plain run.

    tools/dev run python bench/bench_pipeline.py [--windows 6] [--cameras 1,2,4] [--baseline REV] [--completion]
                                                 [--json PATH]
"""

import argparse
import json
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one thread, before numpy loads
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MS = 1_000_000
N = 8
SIZES = ("640x480", "1280x720")


def scene_for(size, cameras=1):
    """The synthetic scene: the first `cameras` of the surround rig (front plumb_bob, left fisheye,
    right and rear plumb_bob; synthetic.surround_cameras), each scaled to `size` columns and cropped
    to its rows, and a dense 64 x 1600 LiDAR (102,400 points per sweep)."""
    from dataclasses import replace

    from mapanything_ros.synthetic import Lidar, SyntheticScene, mount, sized_camera, surround_cameras

    width, height = map(int, size.split("x"))
    rig = [replace(c, camera=sized_camera(c.camera, width, height)) for c in surround_cameras()[:cameras]]
    return SyntheticScene(cameras=rig, lidar=Lidar(mount((0.0, 0.0, 0.3), optical=False), rows=64, columns=1600))


def render(scene, count):
    """Each capture's rendered views and LiDAR sweep: `count` captures 300 ms apart."""
    out = []
    for k in range(count):
        stamp = 1000 * MS + k * 300 * MS
        out.append((stamp, scene.capture(stamp), scene.sweep(stamp - scene.lidar.sweep_ns // 2)))
    return out


def captures_for(scene, rendered):
    """Captures of every camera of the rendered ones, LiDAR depth deferred (a function, as the node
    makes it: session.inputs.FrameBuilder.lidar_depth, one geometry.MovingSweep shared by the cameras
    of a capture where the package has it, else each camera's own project_to_depth). Made anew for
    each pass, so that nothing one pass computed is reused by the next."""
    from functools import partial

    from mapanything_ros import geometry
    from mapanything_ros.geometry import SourceMotion, project_to_depth, se3_compose, se3_inverse
    from mapanything_ros.window import Frame

    out = []
    for stamp, views, sweep in rendered:
        ends = (sweep.start_ns, scene.world_from_lidar(sweep.start_ns), sweep.end_ns,
                scene.world_from_lidar(sweep.end_ns))
        moving = geometry.MovingSweep(sweep.points, sweep.times_ns, *ends, extrapolate=True) if hasattr(
            geometry, "MovingSweep") else None
        frames = []
        for view in views:
            cam = scene.rig_camera(view.name)
            cam_from_lidar = se3_compose(se3_inverse(cam.body_from_camera), scene.lidar.body_from_lidar)
            if moving is not None:
                depth = partial(moving.depth, cam_from_lidar, view.camera, stamp)
            else:
                depth = partial(project_to_depth, sweep.points, cam_from_lidar, view.camera, times=sweep.times_ns,
                                motion=SourceMotion(*ends, stamp, extrapolate=True))
            frames.append(Frame(view.image, view.camera, view.stamp_ns, view.name, view.world_from_camera, depth))
        out.append(frames)
    return out


class Replay:
    """Backend answering with recorded predictions (keyed by the batch's frame keys); records the
    thread CPU time at its entry and exit so that the caller can take it out."""

    def __init__(self, recorded):
        self.recorded = recorded
        self.entered = self.left = 0.0

    def predict(self, batch):
        self.entered = time.thread_time()
        out = self.recorded[tuple(f.key for f in batch.frames)]
        self.left = time.thread_time()
        return out


def node_messages(recon):
    """Build what the node's _on_result builds for a window (ros/node.py) with the package on
    PYTHONPATH (older revisions' APIs too): the newest capture's depth and confidence Images and the
    ~/points PointCloud2. Returns the number of points."""
    from mapanything_ros.ros import pointcloud
    from mapanything_ros.ros.images import depth_to_image, float_image
    from mapanything_ros.ros.messages import make_header

    if hasattr(recon, "cloud_parts"):  # this package: the newest capture's points, packed view by view
        parts = recon.cloud_parts()
        newest = recon.views
    elif hasattr(recon, "cloud"):  # before 2026-12-06: concatenated first
        parts = [recon.cloud()]
        newest = recon.views
    else:  # before: every view's points; depth of the newest views
        views = recon.views
        parts = [tuple(np.concatenate([getattr(v, a) for v in views]) for a in ("points", "colors", "point_confidence"))]
        stamp = max(v.frame.stamp_ns for v in views)
        newest = [v for v in views if v.frame.stamp_ns == stamp]
    header = make_header("world", newest[0].frame.stamp_ns)
    for v in newest:
        depth_to_image(v.depth, header)
        float_image(v.confidence, header)
    if len(parts) > 1:
        pointcloud.parts_to_cloud(parts, header)
    else:
        pointcloud.xyz_to_cloud(parts[0][0], header, *parts[0][1:])
    return sum(len(p[0]) for p in parts)


def drive(size, cameras, windows, completion=False):
    """Measure the package on PYTHONPATH (run in a subprocess): {figure: value}. completion: with the
    depth-completion preset's reconstruction settings."""
    import cv2
    import torch

    from mapanything_ros.backends import OracleBackend
    from mapanything_ros.pipeline import Pipeline, PipelineConfig
    from mapanything_ros.window import KeyframePolicy

    torch.set_num_threads(1)
    cv2.setNumThreads(1)  # thread_time counts this thread only: OpenCV's pool must not take work off it
    scene = scene_for(size, cameras)
    rendered = render(scene, N + windows)
    config = PipelineConfig(window_size=N, keyframes=KeyframePolicy(elapsed_s=0.0))
    if completion:
        from dataclasses import replace

        from mapanything_ros.mapping import CompletionConfig
        config = replace(config, completion=CompletionConfig(), keep_measured=True)
    oracle, recorded = OracleBackend(scene), {}

    class Recorder:
        def predict(self, batch):
            out = recorded[tuple(f.key for f in batch.frames)] = oracle.predict(batch)
            return out

    recording = Pipeline(config, Recorder())
    for c in captures_for(scene, rendered):
        recording.process(c)
    captures = captures_for(scene, rendered)

    replay = Replay(recorded)
    pipeline = Pipeline(config, replay)
    built = {}

    def messages(result):  # what the node's _on_result builds, on the same thread
        built["points"] = node_messages(result.reconstruction)
        built["at"] = time.thread_time()

    pipeline.on_result(messages)
    outside, critical = [], []
    for k, capture in enumerate(captures):
        start = time.thread_time()
        pipeline.process(capture)
        end = time.thread_time()
        if k >= N:
            outside.append(end - start - (replay.left - replay.entered))
            critical.append(built["at"] - replay.left)
    stats = pipeline.stats()
    return {"outside_network_ms_per_window": float(np.median(outside) * 1e3),
            "critical_path_ms_per_window": float(np.median(critical) * 1e3),
            "points_published_per_window": built["points"],
            "stages_ms_p50": {s: v["p50"] * 1e3 for s, v in stats.latency.items() if s != "inference"},
            "map_voxels": len(pipeline.map), "windows_timed": len(outside)}


def build_extensions(tree):
    """Compile the package's C extension modules (mapanything_ros/_*.c) into `tree` with the options
    its own CMakeLists.txt gives each (so that an extracted revision runs its own compiled code, as it
    was built then, not the environment's, which is this tree's: the package's path extends into
    site-packages)."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    cmake = (Path(tree) / "CMakeLists.txt").read_text()
    for source in sorted((Path(tree) / "mapanything_ros").glob("_*.c")):
        options = re.search(rf"target_compile_options\({source.stem} PRIVATE ([^)]*)\)", cmake)
        flags = options.group(1).split() if options else ["-O3"]
        subprocess.run([*cc, *flags, "-shared", "-fPIC", f"-I{sysconfig.get_paths()['include']}", str(source),
                        "-o", str(source.with_suffix(suffix)), "-lm"], check=True)


def run_tree(tree, size, cameras, windows, completion=False):
    """drive() in a fresh process on the package in `tree`."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, __file__, "--drive", size, "--cameras", str(cameras),
                          "--windows", str(windows)] +
                         (["--completion"] if completion else []), env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=6, help="timed windows after the window is full")
    parser.add_argument("--baseline", help="git revision to measure side by side (e.g. a commit before a change)")
    parser.add_argument("--sizes", default=",".join(SIZES), help="camera sizes WxH, comma-separated")
    parser.add_argument("--cameras", default="1", help="camera counts (1 to 4), comma-separated")
    parser.add_argument("--completion", action="store_true",
                        help="also measure the depth-completion preset's reconstruction settings")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--drive", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        print(json.dumps(drive(args.drive, int(args.cameras), args.windows, args.completion)))
        return
    figures = {"window": N, "threads": 1, "lidar_points": 102_400, "backend": "replayed oracle predictions",
               "baseline": args.baseline, "rigs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        base = None
        if args.baseline:
            base = Path(tmp)
            archive = subprocess.run(["git", "-C", str(REPO), "archive", args.baseline, "mapanything_ros",
                                      "CMakeLists.txt"],
                                     check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
            build_extensions(base)
        for cameras in map(int, args.cameras.split(",")):
            for size in args.sizes.split(","):
                row = {"cameras": cameras, "size": size, **run_tree(REPO, size, cameras, args.windows)}
                if args.completion:
                    row["completion"] = run_tree(REPO, size, cameras, args.windows, completion=True)
                if base is not None:
                    old = run_tree(base, size, cameras, args.windows)
                    row["baseline"] = old
                    for key in ("outside_network_ms_per_window", "critical_path_ms_per_window"):
                        row[key.replace("_ms_per_window", "_speedup")] = old[key] / row[key]
                figures["rigs"][f"{cameras} x {size}"] = row
    print(f"Pipeline outside the network: N = {N}, LiDAR depth (102,400 points, per-point times), replayed "
          f"predictions, 1 thread, CPU ms per window (median)\n")
    print("| rig | outside the network | critical path | " +
          ("baseline outside | baseline critical | speed-up outside | speed-up critical |" if args.baseline else ""))
    print("|---|---|---|" + ("---|---|---|---|" if args.baseline else ""))
    for rig, row in figures["rigs"].items():
        line = f"| {rig} | {row['outside_network_ms_per_window']:.1f} | {row['critical_path_ms_per_window']:.1f} |"
        if args.baseline:
            b = row["baseline"]
            line += (f" {b['outside_network_ms_per_window']:.1f} | {b['critical_path_ms_per_window']:.1f} |"
                     f" {row['outside_network_speedup']:.2f}x | {row['critical_path_speedup']:.2f}x |")
        print(line)
    if args.completion:
        print("\nWith the depth-completion preset's reconstruction (same run):\n")
        print("| rig | plain outside | completion outside | plain critical | completion critical |")
        print("|---|---|---|---|---|")
        for rig, row in figures["rigs"].items():
            c = row["completion"]
            print(f"| {rig} | {row['outside_network_ms_per_window']:.1f} | {c['outside_network_ms_per_window']:.1f} |"
                  f" {row['critical_path_ms_per_window']:.1f} | {c['critical_path_ms_per_window']:.1f} |")
    for rig, row in figures["rigs"].items():
        print(f"\n{rig} stages (ms, p50): " + ", ".join(f"{k} {v:.1f}" for k, v in row["stages_ms_p50"].items()))
        if args.baseline:
            print(f"{rig} baseline stages (ms, p50): " +
                  ", ".join(f"{k} {v:.1f}" for k, v in row["baseline"]["stages_ms_p50"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
