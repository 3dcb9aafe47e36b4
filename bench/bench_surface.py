"""~/map's surface extraction, incremental against a whole search, side by side in one run.

    python bench/bench_surface.py [--floor-points 0 200000 2000000] [--keyframes 24] [--json PATH]

TsdfMap.surface() searches again only the blocks fused since its last call (and their -x, -y, -z
neighbours); the reference is the search of every block holding a band voxel (what surface() did
before: the map thread read the whole volume at every ~/map tick). The map: the synthetic room
(seed 0) fused from the front camera at 640×480 as a pinhole, one keyframe every 0.5 s, exact
depth, 5 cm voxels, beside a floor of --floor-points surface points 50 m below (a large map the
keyframes never reach). After each keyframe of the second half, both searches run on the same
map (the whole one on a copy without the remembered surface); CPU time of this thread, medians;
the points must be the same.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench_fusion import VOXEL, keyframes  # noqa: E402
from bench_map_publish import floor_state  # noqa: E402
from mapanything_ros.geometry import ModelPixels  # noqa: E402
from mapanything_ros.mapping.tsdf import BLOCK, RangeView, TsdfMap  # noqa: E402


def measure(floor_points, count):
    _, cam, views = keyframes((640, 480), count)
    rays = cam.ray_map().astype(np.float32)
    fused = TsdfMap(VOXEL, max_blocks=2_000_000)
    if floor_points:
        fused.load_state(floor_state(fused, floor_points, layer=-int(50 / (VOXEL * BLOCK))))
    incremental, whole = [], []
    for i, v in enumerate(views):
        fused.integrate(RangeView(v.depth_ray, rays, ModelPixels.native(cam), v.world_from_camera, v.image,
                                  np.ones(v.depth_ray.shape, np.float32)))
        if i < count // 2:
            fused.surface()  # the map thread's ticks so far
            continue
        t = time.process_time()
        got = fused.surface()
        incremental.append(time.process_time() - t)
        reference = fused.copy()
        reference._surface = None  # forget what was found: search every block
        t = time.process_time()
        want = reference.surface()
        whole.append(time.process_time() - t)
        assert len(got[0]) == len(want[0]) and np.array_equal(np.sort(got[2]), np.sort(want[2]))
    ms = lambda v: 1e3 * float(np.median(v))  # noqa: E731
    return {"floor_points": floor_points, "blocks": len(fused), "surface_points": len(got[0]),
            "whole_ms": ms(whole), "incremental_ms": ms(incremental)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--floor-points", type=int, nargs="+", default=[0, 200_000, 2_000_000])
    parser.add_argument("--keyframes", type=int, default=24)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    rows = [measure(n, args.keyframes) for n in args.floor_points]
    print("| map: room + floor points | blocks | surface points | whole search (ms) | incremental (ms) | ratio |\n"
          "|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['floor_points']:,} | {r['blocks']:,} | {r['surface_points']:,} | {r['whole_ms']:.1f} | "
              f"{r['incremental_ms']:.1f} | {r['whole_ms'] / r['incremental_ms']:.1f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
