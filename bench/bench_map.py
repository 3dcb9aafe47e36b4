"""Global voxel map benchmark: insertion rate of 200,000-point batches (points per second).

    python bench/bench_map.py [--json PATH]

The stream: a camera driving along a wavy surface (5 cm voxels); each batch samples a 25 m x
10 m strip that moves on by half its length, so half of a batch lands in voxels already stored
and the map grows by about 50,000 voxels per batch.

1. Growth without eviction up to past 2 million voxels: rate by map size.
2. Re-observation: a batch of an already mapped strip into the 2-million-voxel map (all hits).
3. At the bound: max_voxels 1,000,000, evicting the voxels farthest from the camera; the rate
   over the batches after the first eviction (eviction batches included) and the peak nbytes.
4. max_distance 20 m: every insert also evicts the voxels left behind (an O(M) sweep).
5. The same accumulation as a per-point Python dict, for one batch, checked to give the same
   voxel means as VoxelMap.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mapanything_ros.mapping.voxel_map import VoxelMap  # noqa: E402

BATCH = 200_000
VOXEL = 0.05
STEP = 12.5  # metres the strip moves per batch


def batch(index, rng):
    """(points (BATCH, 3) float32, colors uint8, confidence float32, camera (3,)) of strip `index`."""
    x = index * STEP + rng.uniform(0.0, 2 * STEP, BATCH)
    y = rng.uniform(0.0, 10.0, BATCH)
    z = 0.3 * np.sin(x) * np.sin(0.7 * y)
    points = np.stack([x, y, z], -1).astype(np.float32)
    colors = rng.integers(0, 256, (BATCH, 3), dtype=np.uint8)
    return points, colors, rng.uniform(1.0, 5.0, BATCH).astype(np.float32), np.array([index * STEP + STEP, 5.0, 1.5])


def run(vmap, indices, seed=0):
    """[(voxels before, seconds, voxels after, nbytes after)] of inserting the batches `indices`."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in indices:
        data = batch(i, rng)
        before = len(vmap)
        t = time.perf_counter()
        vmap.insert(*data)
        rows.append((before, time.perf_counter() - t, len(vmap), vmap.nbytes))
    return rows


def rate(rows):
    return BATCH * len(rows) / sum(r[1] for r in rows)


def dict_accumulate(points, colors, conf):
    """Per-point Python reference: {cell: [Σc·xyz, Σc·rgb, Σc, n]}."""
    acc = {}
    for p, c, w in zip(points.tolist(), colors.tolist(), conf.tolist()):
        key = (math.floor(p[0] / VOXEL), math.floor(p[1] / VOXEL), math.floor(p[2] / VOXEL))
        s = acc.get(key)
        if s is None:
            acc[key] = s = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0]
        s[0] += w * p[0]
        s[1] += w * p[1]
        s[2] += w * p[2]
        s[3] += w * c[0]
        s[4] += w * c[1]
        s[5] += w * c[2]
        s[6] += w
        s[7] += 1
    return acc


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the figures to this path")
    args = parser.parse_args()

    growth = VoxelMap(VOXEL, max_voxels=4_000_000)
    grow_rows = []
    while len(growth) < 2_000_000:
        grow_rows += run(growth, [len(grow_rows)], seed=len(grow_rows))
    buckets = [(0, 500_000), (500_000, 1_000_000), (1_000_000, 1_500_000), (1_500_000, 2_000_000)]
    by_size = {f"{lo // 1000}k-{hi // 1000}k": rate([r for r in grow_rows if lo <= r[0] < hi]) for lo, hi in buckets}
    full = len(growth)
    revisit = run(growth, [5, 6, 7], seed=100)

    bounded = VoxelMap(VOXEL, max_voxels=1_000_000)
    bound_rows = run(bounded, range(45))
    first = next(i for i, r in enumerate(bound_rows) if r[2] < r[0])  # first batch that evicted (a batch adds < 10%)
    evictions = sum(r[2] < r[0] for r in bound_rows)
    peak = max(r[3] for r in bound_rows)

    local = VoxelMap(VOXEL, max_voxels=4_000_000, max_distance=20.0)
    local_rows = run(local, range(30))

    rng = np.random.default_rng(7)
    points, colors, conf, camera = batch(0, rng)
    t = time.perf_counter()
    ref = dict_accumulate(points, colors, conf)
    dict_s = time.perf_counter() - t
    one = VoxelMap(VOXEL)
    t = time.perf_counter()
    one.insert(points, colors, conf, camera)
    vec_s = time.perf_counter() - t
    xyz, _, _ = one.points()
    ref_xyz = np.array([[s[0] / s[6], s[1] / s[6], s[2] / s[6]] for _, s in sorted(ref.items())], np.float32)
    same = len(ref) == len(one) and bool(np.allclose(xyz, ref_xyz, atol=1e-6))

    figures = {
        "batch_points": BATCH,
        "voxel_size_m": VOXEL,
        "growth_points_per_s_by_map_size": by_size,
        "growth_final_voxels": full,
        "growth_final_nbytes": growth.nbytes,
        "bytes_per_voxel_bound": VoxelMap.BYTES_PER_VOXEL,
        "revisit_points_per_s_at_2m_voxels": rate(revisit),
        "bounded_max_voxels": bounded.max_voxels,
        "bounded_points_per_s_after_first_eviction": rate(bound_rows[first:]),
        "bounded_evictions": evictions,
        "bounded_peak_nbytes": peak,
        "bounded_nbytes_bound": bounded.max_voxels * VoxelMap.BYTES_PER_VOXEL,
        "max_distance_points_per_s": rate(local_rows[5:]),
        "max_distance_voxels": len(local),
        "dict_points_per_s": BATCH / dict_s,
        "vectorised_points_per_s_same_batch": BATCH / vec_s,
        "vectorised_speedup": dict_s / vec_s,
        "same_means_as_dict": same,
    }
    print("| measurement (200,000-point batches, 5 cm voxels) | value |\n|---|---|")
    for name, value in by_size.items():
        print(f"| insertion into a growing map of {name} voxels | {value / 1e6:.2f} M points/s |")
    print(f"| re-observing mapped strips, map of {full / 1e6:.2f} M voxels (all hits) | {rate(revisit) / 1e6:.2f} M points/s |")
    print(f"| memory at {full / 1e6:.2f} M voxels | {growth.nbytes / 1e6:.0f} MB ({growth.nbytes / full:.1f} B/voxel) |")
    print(f"| at the bound (max_voxels 1 M, {evictions} evictions in {len(bound_rows)} batches), from the first eviction | "
          f"{figures['bounded_points_per_s_after_first_eviction'] / 1e6:.2f} M points/s |")
    print(f"| peak nbytes at the bound / max_voxels x {VoxelMap.BYTES_PER_VOXEL} B | {peak / 1e6:.1f} MB / "
          f"{figures['bounded_nbytes_bound'] / 1e6:.1f} MB |")
    print(f"| max_distance 20 m (sweep every insert, ~{len(local) / 1e3:.0f} k voxels) | "
          f"{figures['max_distance_points_per_s'] / 1e6:.2f} M points/s |")
    print(f"| per-point Python dict, one batch | {BATCH / dict_s / 1e6:.3f} M points/s |")
    print(f"| VoxelMap, same batch into an empty map | {BATCH / vec_s / 1e6:.2f} M points/s |")
    print(f"| vectorised speed-up | {dict_s / vec_s:.0f}x |")
    print(f"| same voxel means as the dict | {'yes' if same else 'NO'} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
