"""Pipeline cost outside the network: assembly + reconstruction + map insertion per window, and
the map's insertion rate through the pipeline, for a 640 x 480 camera (the default synthetic front
camera) and windows of N = 8 keyframes. The OracleBackend stands in for the network; its stage
("inference") is reported but excluded from the per-frame figure.

    python bench/bench_pipeline.py [--windows 6] [--json PATH]
"""

import argparse
import json
import time

import numpy as np
import torch

from mapanything_ros.backends import OracleBackend
from mapanything_ros.pipeline import Pipeline, PipelineConfig
from mapanything_ros.synthetic import SyntheticScene, capture_frames, default_cameras
from mapanything_ros.window import KeyframePolicy

MS = 1_000_000
OUTSIDE = ("assembly", "reconstruction", "map")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=6, help="timed windows after the window is full")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    scene = SyntheticScene(cameras=default_cameras()[:1])
    n = 8
    config = PipelineConfig(window_size=n, keyframes=KeyframePolicy(elapsed_s=0.0))
    pipeline = Pipeline(config, OracleBackend(scene))
    captures = [capture_frames(scene, 1000 * MS + k * 300 * MS, lidar=False) for k in range(n + args.windows)]
    results = [pipeline.process(c)[1] for c in captures]
    timed = results[n:]  # full windows only
    stage = {s: np.array([r.timings[s] for r in timed]) for s in (*OUTSIDE, "inference")}
    outside = sum(stage[s] for s in OUTSIDE)
    points = np.array([sum(len(v.points) for v in r.reconstruction.views) for r in timed])
    figures = {
        "camera": "640x480", "window": n, "windows_timed": len(timed),
        "model_size": list(timed[0].reconstruction.views[0].frame.camera.image_size),
        **{f"{s}_ms": float(np.median(stage[s]) * 1e3) for s in stage},
        "outside_network_ms_per_window": float(np.median(outside) * 1e3),
        "outside_network_ms_per_view": float(np.median(outside) * 1e3 / n),
        "points_per_window": int(np.median(points)),
        "map_insert_points_per_s": float(np.median(points / stage["map"])),
        "map_voxels": len(pipeline.map),
    }
    rows = [("assembly (ms / window)", figures["assembly_ms"]),
            ("reconstruction (ms / window)", figures["reconstruction_ms"]),
            ("map insert (ms / window)", figures["map_ms"]),
            ("outside the network (ms / window)", figures["outside_network_ms_per_window"]),
            ("outside the network (ms / view)", figures["outside_network_ms_per_view"]),
            ("oracle stand-in for the network (ms / window, excluded)", figures["inference_ms"]),
            ("points inserted per window", figures["points_per_window"]),
            ("map insertion (points / s)", figures["map_insert_points_per_s"])]
    print(f"Pipeline outside the network: 640x480 camera, N = {n}, median of {len(timed)} windows, 1 thread\n")
    print("| figure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value:,.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
