"""Volumetric fusion benchmark: mapping.TsdfMap against Open3D's VoxelBlockGrid on the same keyframes.

    python bench/bench_fusion.py [--json PATH] [--keyframes N] [--map-blocks N ...]

Keyframes: the synthetic room (seed 0) seen by the front camera along the default trajectory,
one every 0.5 s, exact depth, as a pinhole camera (same K, no distortion: Open3D's integration
takes a pinhole K only) at three rig sizes (320×240, 640×480, 1280×960), 5 cm voxels, truncation
4 voxels (TsdfMap as the node runs it: the larger of that and 10 % of the range; "tsdf_fixed": 4
voxels only, as Open3D). For each engine: CPU time per keyframe (median over the keyframes after the first
quarter, one thread: this process's CPU time; Open3D runs with OMP_NUM_THREADS=1), bytes held,
and the surface it extracts (points' mean distance to the true room surface, share within 5 cm).
--map-blocks: the 640x480 keyframes again, fused into maps that already hold that many blocks
elsewhere (what grows with the map's size).

The engines do different amounts of work: TsdfMap carves free space along every ray up to the
surface (blocks it only looks through are allocated, and skipped while they stay free), Open3D
updates only the blocks within the truncation band of the surface (no free space beyond it, no
clearing of what is not near the current surface). Open3D runs when `import open3d` works
(open3d-cpu 0.20: not a dependency of the package; see docs/map.md for the choice).
"""

import argparse
import json
import os
import sys
import time
from dataclasses import replace

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mapanything_ros.geometry import CameraModel, ModelPixels  # noqa: E402
from mapanything_ros.mapping.tsdf import BLOCK, VOXELS, RangeView, TsdfMap  # noqa: E402
from mapanything_ros.synthetic import SyntheticScene, default_cameras  # noqa: E402

VOXEL = 0.05
SIZES = ((320, 240), (640, 480), (1280, 960))


def keyframes(size, count):
    """[(View, camera)] of the front camera as a pinhole at `size`, every 0.5 s."""
    front = default_cameras()[0]
    k = np.array(front.camera.intrinsics)
    s = size[0] / front.camera.image_size[0]
    cam = CameraModel.pinhole(k[0, 0] * s, k[1, 1] * s, (k[0, 2] + 0.5) * s - 0.5, (k[1, 2] + 0.5) * s - 0.5, *size)
    scene = SyntheticScene(seed=0, cameras=[replace(front, camera=cam)])
    return scene, cam, [scene.render(front.name, int(i * 0.5e9)) for i in range(count)]


def run_tsdf(cam, views, truncation_ratio=0.1, map_blocks=0, volume=None):
    """(CPU seconds per keyframe, bytes held, surface points) of the views fused into `volume`,
    holding `map_blocks` distant blocks first (None: a new 5 cm TsdfMap with `truncation_ratio`)."""
    rays = cam.ray_map().astype(np.float32)
    fused = volume if volume is not None else TsdfMap(VOXEL, max_blocks=1_000_000 + map_blocks,
                                                      truncation_ratio=truncation_ratio)
    if map_blocks:
        fused.load_state(distant_blocks(fused, map_blocks))
    times = []
    for v in views:
        view = RangeView(v.depth_ray, rays, ModelPixels.native(cam), v.world_from_camera, v.image,
                         np.ones(v.depth_ray.shape, np.float32))
        t = time.process_time()
        fused.integrate(view)
        times.append(time.process_time() - t)
    points = fused.surface()[0]
    return times, fused.nbytes, points


def distant_blocks(volume, count):
    """A TsdfMap state of `count` observed free blocks in a layer 50 m below the room: a map that
    large, which the keyframes never reach (what costs more with the map's size shows)."""
    from mapanything_ros.mapping.keys import pack

    side = int(np.ceil(np.sqrt(count)))
    ij = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), -1).reshape(-1, 2)[:count]
    cells = np.column_stack([ij - side // 2, np.full(count, -int(50 / (VOXEL * BLOCK)))])
    keys = np.sort(pack(cells.T.copy()))
    state = volume.state()
    state.update(keys=keys, tsdf=np.ones((count, VOXELS), np.float32), weight=np.ones((count, VOXELS), np.float32),
                 rgb=np.zeros((count, VOXELS, 3), np.uint8), looks=np.zeros((count, VOXELS), np.uint8),
                 front=np.zeros((count, VOXELS), bool))
    return state


def fixed(cam, views):
    """TsdfMap with Open3D's band: a fixed 4 voxels, not 10 % of the range."""
    return run_tsdf(cam, views, truncation_ratio=0.0)


def run_open3d(cam, views):
    import open3d as o3d
    import open3d.core as o3c

    device = o3c.Device("CPU:0")
    grid = o3d.t.geometry.VoxelBlockGrid(("tsdf", "weight", "color"), (o3c.float32, o3c.float32, o3c.float32),
                                         ((1), (1), (3)), VOXEL, 8, 100_000, device)
    k = o3c.Tensor(cam.intrinsics, o3c.float64)
    times = []
    for v in views:
        depth = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(v.depth_z)))
        color = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(v.image.astype(np.float32) / 255)))
        extrinsic = o3c.Tensor(np.linalg.inv(v.world_from_camera), o3c.float64)
        t = time.process_time()
        blocks = grid.compute_unique_block_coordinates(depth, k, extrinsic, 1.0, 20.0, 4.0)
        grid.integrate(blocks, depth, color, k, k, extrinsic, 1.0, 20.0, 4.0)
        times.append(time.process_time() - t)
    points = grid.extract_point_cloud().point.positions.numpy()
    blocks = grid.hashmap().size()
    return times, blocks * 8**3 * (4 + 4 + 12), points


def summary(scene, times, nbytes, points):
    steady = times[len(times) // 4:]
    d = scene.room.surface_distance(np.asarray(points, np.float64))
    return {"ms_per_keyframe": 1e3 * float(np.median(steady)), "ms_max": 1e3 * float(np.max(steady)),
            "mbytes": nbytes / 1e6, "surface_points": int(len(points)), "accuracy_mm": 1e3 * float(d.mean()),
            "precision_5cm": float((d < 0.05).mean())}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json")
    parser.add_argument("--keyframes", type=int, default=24)
    parser.add_argument("--map-blocks", type=int, nargs="*", default=[],
                        help="also fuse the 640x480 keyframes into a map that holds this many other blocks already")
    args = parser.parse_args()
    try:
        import open3d  # noqa: F401
        engines = {"tsdf": run_tsdf, "tsdf_fixed": fixed, "open3d": run_open3d}
    except ImportError:
        engines = {"tsdf": run_tsdf, "tsdf_fixed": fixed}
        print("open3d is not importable: TsdfMap only")
    rows = []
    for size in SIZES:
        scene, cam, views = keyframes(size, args.keyframes)
        for name, engine in engines.items():
            row = {"engine": name, "size": f"{size[0]}x{size[1]}", **summary(scene, *engine(cam, views))}
            rows.append(row)
            print(f"{row['engine']:10s} {row['size']:>9s}  {row['ms_per_keyframe']:6.1f} ms/keyframe "
                  f"(max {row['ms_max']:.1f})  {row['mbytes']:6.1f} MB  {row['surface_points']:7d} points  "
                  f"accuracy {row['accuracy_mm']:.1f} mm  precision {row['precision_5cm']:.3f}", flush=True)
    if args.map_blocks:
        scene, cam, views = keyframes((640, 480), args.keyframes)
        for blocks in args.map_blocks:
            row = {"engine": f"tsdf, +{blocks:,} blocks", "size": "640x480",
                   **summary(scene, *run_tsdf(cam, views, map_blocks=blocks))}
            rows.append(row)
            print(f"{row['engine']:22s} {row['ms_per_keyframe']:6.1f} ms/keyframe (max {row['ms_max']:.1f})  "
                  f"{row['mbytes']:6.1f} MB", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"voxel_m": VOXEL, "keyframes": args.keyframes, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
