"""~/map's surface and ~/mesh's mesh, incremental against a whole search, side by side in one run.

    python bench/bench_surface.py [--floor-points 0 200000 2000000] [--keyframes 24] [--json PATH]

TsdfMap.surface() and mesh_regions() (the mesh by region, what ~/mesh publishes from) search
again only the blocks fused since their last call (and the neighbours whose search reaches into
them) and join the mesh's new parts onto the last (mesh.Mesh); the reference searches every block
holding a band voxel and joins the whole mesh (what they did before: the map thread read the whole
volume at every tick). The map: the synthetic room
(seed 0) fused from the front camera at 640×480 as a pinhole, one keyframe every 0.5 s, exact
depth, 5 cm voxels, beside a floor of --floor-points surface points 50 m below (a large map the
keyframes never reach). After each keyframe of the second half, both searches run on the same
map (the whole one on a copy without the remembered surface and mesh); CPU time of this thread,
medians; the points and the triangle counts must be the same.
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
from mapanything_ros.mapping.regions import MeshUpdates  # noqa: E402
from mapanything_ros.mapping.tsdf import BLOCK, RangeView, TsdfMap  # noqa: E402
from mapanything_ros.ros.marker import mesh_markers  # noqa: E402


def timed(call, times):
    """call(), its CPU time appended to `times`."""
    t = time.process_time()
    out = call()
    times.append(time.process_time() - t)
    return out


def measure(floor_points, count):
    _, cam, views = keyframes((640, 480), count)
    rays = cam.ray_map().astype(np.float32)
    fused = TsdfMap(VOXEL, max_blocks=2_000_000)
    if floor_points:
        fused.load_state(floor_state(fused, floor_points, layer=-int(50 / (VOXEL * BLOCK))))
    incremental, whole, mesh_incremental, mesh_whole = [], [], [], []
    sent, every, sent_bytes, every_bytes = [], [], [], []
    updates = MeshUpdates()
    for i, v in enumerate(views):
        fused.integrate(RangeView(v.depth_ray, rays, ModelPixels.native(cam), v.world_from_camera, v.image,
                                  np.ones(v.depth_ray.shape, np.float32)))
        if i < count // 2:
            fused.surface()  # the map thread's ticks so far
            updates.update(fused.mesh_regions())
            continue
        reference = fused.copy()
        reference._surface = reference._mesh = None  # forget what was found: search every block
        got, want = timed(fused.surface, incremental), timed(reference.surface, whole)
        assert len(got[0]) == len(want[0]) and np.array_equal(np.sort(got[2]), np.sort(want[2]))
        # what ~/mesh publishes from: the mesh by region
        regions, want = timed(fused.mesh_regions, mesh_incremental), timed(reference.mesh_regions, mesh_whole)
        assert len(regions.vertices) == len(want.vertices)
        assert regions.signatures[:, 1].sum() == want.signatures[:, 1].sum()  # triangles
        # ~/mesh's array: the regions that changed since the last, against every region
        sent_bytes.append(len(timed(lambda: mesh_markers(regions, updates.update(regions), "map", 0), sent)))
        every_bytes.append(len(timed(lambda: mesh_markers(regions, MeshUpdates().update(regions), "map", 0), every)))
    ms = lambda v: 1e3 * float(np.median(v))  # noqa: E731
    return {"floor_points": floor_points, "blocks": len(fused), "surface_points": len(got[0]),
            "whole_ms": ms(whole), "incremental_ms": ms(incremental), "triangles": int(regions.signatures[:, 1].sum()),
            "mesh_whole_ms": ms(mesh_whole), "mesh_incremental_ms": ms(mesh_incremental), "regions": len(regions),
            "array_every_mb": float(np.median(every_bytes)) / 1e6, "array_every_ms": ms(every),
            "array_changed_mb": float(np.median(sent_bytes)) / 1e6, "array_changed_ms": ms(sent)}


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
    print("\n| map: room + floor points | triangles | whole mesh (ms) | incremental (ms) | ratio |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['floor_points']:,} | {r['triangles']:,} | {r['mesh_whole_ms']:.1f} | {r['mesh_incremental_ms']:.1f} | "
              f"{r['mesh_whole_ms'] / r['mesh_incremental_ms']:.1f}x |")
    print("\n| map: room + floor points | regions | ~/mesh, every region (MB) | packed in (ms) | the regions that changed "
          "(MB) | packed in (ms) | ratio of bytes |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['floor_points']:,} | {r['regions']:,} | {r['array_every_mb']:.1f} | {r['array_every_ms']:.1f} | "
              f"{r['array_changed_mb']:.1f} | {r['array_changed_ms']:.1f} | "
              f"{r['array_every_mb'] / r['array_changed_mb']:.1f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
