"""Fusion at the map's memory bound: keyframes fused into a map that evicts every few keyframes.

    python bench/bench_eviction.py [--blocks 60000] [--keyframes 40] [--voxel 0.03] [--json PATH]

The synthetic room's front camera as a 518x392 pinhole (bench_fusion's keyframes, one every 0.5 s,
exact depth), fused at --voxel metres into a TsdfMap bounded at --blocks blocks (the room's carved
volume is larger: once full, every few keyframes evict the farthest blocks down to LOW_WATER of
the bound). CPU time of this one thread: per keyframe (median and p95 after the first quarter)
and per eviction (TsdfMap._keep alone, the pool's reorganisation; not the choice of the blocks
to drop). The script imports the package of its own tree: to compare two revisions, copy it and
bench_fusion.py into the other tree's bench/ and run both, one after the other.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_fusion import keyframes, run_tsdf  # noqa: E402
from mapanything_ros.mapping.tsdf import TsdfMap  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=60_000)
    parser.add_argument("--keyframes", type=int, default=40)
    parser.add_argument("--voxel", type=float, default=0.03)
    parser.add_argument("--json")
    args = parser.parse_args()
    _, cam, views = keyframes((518, 392), args.keyframes)
    volume = TsdfMap(args.voxel, max_blocks=args.blocks)
    keep, evictions = volume._keep, []

    def timed_keep(slots):
        t = time.process_time()
        keep(slots)
        evictions.append(time.process_time() - t)

    volume._keep = timed_keep
    times = run_tsdf(cam, views, volume=volume)[0]
    steady = np.array(times[len(times) // 4:]) * 1e3
    out = {"voxel_m": args.voxel, "bound_blocks": args.blocks, "blocks": len(volume),
           "ms_per_keyframe": float(np.median(steady)), "ms_per_keyframe_p95": float(np.percentile(steady, 95)),
           "evictions": len(evictions), "ms_per_eviction": 1e3 * float(np.median(evictions)) if evictions else 0.0}
    print(f"| bound (blocks) | keyframes | ms per keyframe, median / p95 | evictions | ms per eviction |\n"
          f"|---|---|---|---|---|\n| {args.blocks:,} | {len(times)} | {out['ms_per_keyframe']:.1f} / "
          f"{out['ms_per_keyframe_p95']:.1f} | {out['evictions']} | {out['ms_per_eviction']:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
