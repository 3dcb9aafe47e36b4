"""Fusion at the map's memory bound: keyframes fused into a map that evicts every few keyframes.

    python bench/bench_eviction.py [--blocks 60000] [--keyframes 40] [--voxel 0.03] [--outputs [--overlap]]
                                   [--json PATH]

The synthetic room's front camera as a 518x392 pinhole (bench_fusion's keyframes, one every 0.5 s,
exact depth), fused at --voxel metres into a TsdfMap bounded at --blocks blocks (the room's carved
volume is larger: once full, every few keyframes evict the farthest blocks down to LOW_WATER of
the bound). CPU time of this one thread: per keyframe (median and p95 after the first quarter)
and per eviction (TsdfMap._keep alone: the pool's reorganisation and the eviction's record; not
the choice of the blocks to drop, nor the renumbering of the outputs' kept parts, which their
next search does, counted with the outputs).

With --outputs, after each keyframe the map's three outputs are made as the node makes them when
subscribed (surface(), mesh_regions(), occupancy() of the node's default band): their CPU time
per keyframe (median, p95, and the median after the keyframes that evicted; with ~/mesh's
bookkeeping, regions.MeshUpdates), and the share of ~/mesh's regions sent again after those
keyframes. With --overlap too they are made as the node makes them while fusion goes on: on a
copy of the map taken before the keyframe's fusion, handed back after it (TsdfMap.adopt), the
copy counted in their time (the figures "after the keyframes that evicted" are then of outputs
that do not see that eviction yet: the next keyframe's do).
The script imports the package of its own tree: to compare two revisions, copy it and
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
from mapanything_ros.mapping.regions import MeshUpdates  # noqa: E402
from mapanything_ros.mapping.tsdf import TsdfMap  # noqa: E402

BAND = (0.1, 1.5)  # m: the node's default occupancy band (occupancy_min_height, occupancy_max_height)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=60_000)
    parser.add_argument("--keyframes", type=int, default=40)
    parser.add_argument("--voxel", type=float, default=0.03)
    parser.add_argument("--outputs", action="store_true", help="make the map's outputs after each keyframe")
    parser.add_argument("--overlap", action="store_true", help="the outputs on a copy taken before each fusion")
    parser.add_argument("--json")
    args = parser.parse_args()
    _, cam, views = keyframes((518, 392), args.keyframes)
    volume = TsdfMap(args.voxel, max_blocks=args.blocks)
    keep, integrate, evictions, outputs, updates = volume._keep, volume.integrate, [], [], MeshUpdates()

    def timed_keep(slots):
        t = time.process_time()
        keep(slots)
        evictions.append(time.process_time() - t)

    def integrate_then_outputs(view):
        evicted = len(evictions)
        t = time.process_time()
        source = volume.copy() if args.overlap else volume
        copied = time.process_time() - t
        updated = integrate(view)
        t = time.process_time()
        source.surface(), source.occupancy(*BAND)
        mesh = source.mesh_regions()
        if source is not volume:
            volume.adopt(source)
        sent = len(updates.update(mesh)[1]) / max(len(mesh), 1)
        outputs.append((copied + time.process_time() - t, sent if len(evictions) > evicted else None))
        return updated

    volume._keep = timed_keep
    if args.outputs:
        volume.integrate = integrate_then_outputs
    times = run_tsdf(cam, views, volume=volume)[0]
    if outputs:  # run_tsdf timed them with the fusion
        times = [t - made for t, (made, _) in zip(times, outputs)]
    steady = np.array(times[len(times) // 4:]) * 1e3
    out = {"voxel_m": args.voxel, "bound_blocks": args.blocks, "blocks": len(volume),
           "ms_per_keyframe": float(np.median(steady)), "ms_per_keyframe_p95": float(np.percentile(steady, 95)),
           "evictions": len(evictions), "ms_per_eviction": 1e3 * float(np.median(evictions)) if evictions else 0.0}
    print(f"| bound (blocks) | keyframes | ms per keyframe, median / p95 | evictions | ms per eviction |\n"
          f"|---|---|---|---|---|\n| {args.blocks:,} | {len(times)} | {out['ms_per_keyframe']:.1f} / "
          f"{out['ms_per_keyframe_p95']:.1f} | {out['evictions']} | {out['ms_per_eviction']:.1f} |")
    if outputs:
        made = np.array([t for t, _ in outputs[len(outputs) // 4:]]) * 1e3
        evicting = [(t, sent) for t, sent in outputs[len(outputs) // 4:] if sent is not None]
        after = np.array([t for t, _ in evicting]) * 1e3
        out.update(outputs_ms=float(np.median(made)), outputs_ms_p95=float(np.percentile(made, 95)),
                   outputs_ms_mean=float(np.mean(made)), overlap=args.overlap,
                   outputs_after_eviction_ms=float(np.median(after)) if len(after) else None,
                   regions_sent_after_eviction=float(np.median([sent for _, sent in evicting])) if evicting else None)
        print(f"\noutputs after each keyframe (surface, mesh regions, grid {BAND[0]}-{BAND[1]} m): "
              f"{out['outputs_ms']:.1f} ms median, {out['outputs_ms_p95']:.1f} p95, {out['outputs_ms_mean']:.1f} mean"
              f"{' (on copies)' if args.overlap else ''}; after the {len(after)} "
              f"keyframes that evicted: {out['outputs_after_eviction_ms'] or 0:.1f} ms median, "
              f"{100 * (out['regions_sent_after_eviction'] or 0):.0f} % of ~/mesh's regions sent again (median)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
