"""~/occupancy's grid, incremental against a whole search, and ~/esdf's distance field made from it,
side by side in one run at three map sizes.

    python bench/bench_grid.py [--floor-points 0 200000 2000000] [--keyframes 24] [--json PATH]

The map: the synthetic room (seed 0) fused from the front camera at 640×480 as a pinhole (one
keyframe every 0.5 s, exact depth, 5 cm voxels), beside a floor of --floor-points surface points in
the height band (a larger area for the grid: 0.2 M points are 0.2 M cells). After each keyframe of
the second half, on the same map: TsdfMap.occupancy of the band 0.1-1.5 m (the node's default),
incremental (the blocks fused since, and their face neighbours) and whole (a copy without the kept
columns: what it did before), the grids equal; then the distance field of the grid
(mapping.distance_slice, 2 m), made anew and updated from the field of the keyframe before (as
the node's session does), the fields equal, and the cloud's bytes (the known cells' centres and
distances packed by encode.pack_cloud, as the node publishes them). CPU time of this thread,
medians.
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench_fusion import VOXEL, keyframes  # noqa: E402
from bench_map_publish import floor_state  # noqa: E402
from bench_surface import timed  # noqa: E402
from mapanything_ros.encode import pack_cloud  # noqa: E402
from mapanything_ros.geometry import ModelPixels  # noqa: E402
from mapanything_ros.mapping import RangeView, TsdfMap, distance_slice  # noqa: E402

BAND = (0.1, 1.5)  # metres: the node's default occupancy_min_height, occupancy_max_height
REACH = 2.0  # metres: the node's default esdf_max_distance
FLOOR_START = 100  # blocks (20 m) from the origin in x and y: clear of the room


def cloud(field):
    """~/esdf's bytes of a DistanceSlice (encode.PackedCloud)."""
    xyz, distance = field.points(BAND[0])
    return pack_cloud(xyz, confidence=distance, scalar_name="distance")


def measure(floor_points, count):
    _, cam, views = keyframes((640, 480), count)
    rays = cam.ray_map().astype(np.float32)
    fused = TsdfMap(VOXEL, max_blocks=2_000_000)
    if floor_points:
        fused.load_state(floor_state(fused, floor_points, start=FLOOR_START))
    incremental, whole, field_times, updated_times, cloud_times = [], [], [], [], []
    field = None
    for i, v in enumerate(views):
        fused.integrate(RangeView(v.depth_ray, rays, ModelPixels.native(cam), v.world_from_camera, v.image,
                                  np.ones(v.depth_ray.shape, np.float32)))
        if i < count // 2:
            field = distance_slice(fused.occupancy(*BAND), REACH, field)  # the map thread's ticks so far
            continue
        reference = fused.copy()
        reference._columns = None  # forget the blocks' columns: search every block
        grid = timed(lambda: fused.occupancy(*BAND), incremental)
        want = timed(lambda: reference.occupancy(*BAND), whole)
        assert np.array_equal(grid.cells, want.cells) and grid.origin == want.origin
        anew = timed(lambda: distance_slice(grid, REACH), field_times)
        field = timed(lambda: distance_slice(grid, REACH, field), updated_times)
        known = ~np.isnan(anew.distance)
        np.testing.assert_array_equal(np.isnan(field.distance), ~known)
        np.testing.assert_array_max_ulp(field.distance[known], anew.distance[known], maxulp=4)
        packed = timed(lambda: cloud(field), cloud_times)
    ms = lambda v: 1e3 * float(np.median(v))  # noqa: E731
    return {"floor_points": floor_points, "blocks": len(fused), "cells": int(grid.cells.size),
            "known": int(np.count_nonzero(grid.cells >= 0)), "points": packed.width, "whole_ms": ms(whole),
            "incremental_ms": ms(incremental), "field_ms": ms(field_times), "field_updated_ms": ms(updated_times),
            "cloud_ms": ms(cloud_times)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--floor-points", type=int, nargs="+", default=[0, 200_000, 2_000_000])
    parser.add_argument("--keyframes", type=int, default=24)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    rows = [measure(n, args.keyframes) for n in args.floor_points]
    print("| map: room + floor points | blocks | grid cells (known) | grid, whole (ms) | grid, incremental (ms) | "
          "ratio | distance field, anew / updated (ms) | ratio | its cloud (ms) | ~/esdf's extra / incremental grid |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        extra = r["field_updated_ms"] + r["cloud_ms"]
        print(f"| {r['floor_points']:,} | {r['blocks']:,} | {r['cells']:,} ({r['known']:,}) | {r['whole_ms']:.1f} | "
              f"{r['incremental_ms']:.1f} | {r['whole_ms'] / r['incremental_ms']:.1f}x | {r['field_ms']:.1f} / "
              f"{r['field_updated_ms']:.1f} | {r['field_ms'] / r['field_updated_ms']:.1f}x | "
              f"{r['cloud_ms']:.1f} | {extra / r['incremental_ms']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
