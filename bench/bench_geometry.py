"""Geometry benchmarks: cached ray maps and LiDAR projection.

    python bench/bench_geometry.py [--sweeps 64x4063,128x8192] [--json PATH]

1. Unit rays for every pixel of a camera (CameraModel.ray_map: made once per camera and size; the
   native depth's stencil undistorts the native pixels the same way): the first computation
   (undistortion by Newton iteration) with the compiled inverse (mapanything_ros._lens) against
   numpy alone in the same run, the same valid pixels and rays at most 2e-14 apart required, at four cameras
   (rational_polynomial 1920x1080, plumb_bob 1920x1200 and 640x480, equidistant 1280x1024; each
   lens's valid field and table made before the timing, once per lens); and a cached lookup.
2. Projecting a 260,000-point spinning-LiDAR-like cloud into a 1280x720 plumb_bob camera with
   a z-buffer: project_to_depth against a straightforward per-point Python loop over the same
   points (run in full), checking that both give the same depth map.
3. LiDAR projection throughput (points per CPU second, median of repeats), project_to_depth with
   its compiled steps (mapanything_ros._sparse_depth), the same with numpy alone, and the
   implementation before issue 9 (test/reference_depth.py), in the same run, with identical depth
   maps required: static; motion-compensated with the sweep's per-column times (one time per
   azimuth step, as Ouster and the synthetic LiDAR stamp points); and motion-compensated with a
   distinct time for every point (the worst case: one pose each). At two sweep sizes (--sweeps:
   beams x azimuths; by default 64 x 4063 = 260,032 points and 128 x 8192 = 1,048,576).
4. The native depth's resampling stencil of a camera (geometry.resample.Stencil: built once per
   camera and model size, on the camera's first outputs), compiled (mapanything_ros._resample)
   against numpy in the same run, identical tables required, at three camera sizes; the model-size
   ray map it reads is made before the timing (the batch makes it), the native pixels' rays in
   each build (by the compiled _lens in both columns: part 1 compares those).
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test"))

from timing import cpu_timed  # noqa: E402  (bench/timing.py, beside this script)
from mapanything_ros.geometry import depth as depth_module  # noqa: E402
from mapanything_ros.geometry import distortion  # noqa: E402
from mapanything_ros.geometry import resample  # noqa: E402
from mapanything_ros.geometry.resize import Resize  # noqa: E402
from mapanything_ros.geometry.camera import GRID_INDEX, CameraModel, clear_ray_cache  # noqa: E402
from mapanything_ros.geometry.depth import SourceMotion, project_to_depth  # noqa: E402
from mapanything_ros.geometry.transforms import pose_from_quat_trans  # noqa: E402
import reference_depth  # noqa: E402

RATIONAL_1080P = CameraModel(
    1920, 1080, (1050, 0, 961.3, 0, 1052, 538.9, 0, 0, 1), (0.5, -2.6, 5e-4, -3e-4, 1.5, 0.39, -2.4, 1.4), "rational_polynomial"
)
PLUMB_720P = CameraModel(1280, 720, (640, 0, 641.5, 0, 642, 359.2, 0, 0, 1), (-0.28, 0.07, 1e-4, -2e-4, 0.02), "plumb_bob")
PLUMB_1200P = CameraModel(1920, 1200, (1050, 0, 961.3, 0, 1052, 599.4, 0, 0, 1), PLUMB_720P.d, "plumb_bob")
# LiDAR frame x forward, y left, z up; camera optical frame x right, y down, z forward, 10 cm below.
CAM_FROM_LIDAR = np.array([[0, -1, 0, 0.0], [0, 0, -1, 0.1], [1, 0, 0, -0.05], [0, 0, 0, 1.0]])


def lidar_sweep(beams=64, azimuths=4063, seed=0):
    """One 360° sweep (beams x azimuths points, 260,032 by default) of a sensor 1.7 m above a
    ground plane inside a cylindrical room of radius 5-40 m, with 2 cm range noise."""
    rng = np.random.default_rng(seed)
    elev = np.deg2rad(np.linspace(-25.0, 15.0, beams))[:, None]
    azim = np.linspace(-np.pi, np.pi, azimuths, endpoint=False)[None, :]
    wall = 5.0 + 35.0 * (0.5 + 0.5 * np.sin(3 * azim) ** 2)
    ground = np.where(elev < 0, 1.7 / np.tan(-np.minimum(elev, -1e-6)), np.inf)
    rng_m = np.minimum(wall / np.cos(elev), ground / np.cos(elev)) + rng.normal(0, 0.02, (beams, azimuths))
    pts = np.stack([np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev) * np.ones_like(azim)], -1)
    return (pts * rng_m[..., None]).reshape(-1, 3)


def project_loop(points, cam_from_lidar, camera):
    """Per-point reference: transform, plumb_bob distortion, rounding and z-buffer in plain Python."""
    (r00, r01, r02, t0), (r10, r11, r12, t1), (r20, r21, r22, t2) = cam_from_lidar[:3].tolist()
    k1, k2, p1, p2, k3 = camera.d
    (fx, s, cx), (_, fy, cy) = camera.intrinsics[:2].tolist()
    r2_max = camera.lens.max_radius**2
    w, h = camera.image_size
    best = {}
    for px, py, pz in points.tolist():
        x = r00 * px + r01 * py + r02 * pz + t0
        y = r10 * px + r11 * py + r12 * pz + t1
        z = r20 * px + r21 * py + r22 * pz + t2
        if not z > 0:
            continue
        a, b = x / z, y / z
        r2 = a * a + b * b
        if r2 > r2_max:
            continue
        g = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        xd = a * g + 2 * p1 * a * b + p2 * (r2 + 2 * a * a)
        yd = b * g + p1 * (r2 + 2 * b * b) + 2 * p2 * a * b
        col, row = math.floor(fx * xd + s * yd + cx + 0.5), math.floor(fy * yd + cy + 0.5)
        if 0 <= col < w and 0 <= row < h and z < best.get((row, col), math.inf):
            best[row, col] = z
    depth = np.zeros((h, w), np.float32)
    for (row, col), z in best.items():
        depth[row, col] = z
    return depth


def sweep_times(beams=64, azimuths=4063, start_ns=1_700_000_000_000_000_000, sweep_ns=100_000_000):
    """Per-point int ns times of lidar_sweep's points: one per azimuth column (row-major, beams rows)."""
    return start_ns + np.tile(np.arange(azimuths) * (sweep_ns // azimuths), beams).astype(np.int64)


def timed(fn, repeat=1):
    """(median wall seconds, last result) of fn()."""
    return cpu_timed(fn, repeat, time.perf_counter)


def ray_maps():
    """Part 1: {camera: (seconds compiled, seconds numpy, same valid pixels, largest difference)}
    of each camera's first ray map."""
    compiled = distortion._lens
    if compiled is None:
        raise SystemExit("mapanything_ros._lens is not built (CMakeLists.txt)")
    cameras = {"rational_polynomial 1920x1080": RATIONAL_1080P, "plumb_bob 1920x1200": PLUMB_1200P,
               "plumb_bob 640x480": CameraModel(640, 480, (525, 0, 319.5, 0, 527, 239.5, 0, 0, 1), PLUMB_720P.d,
                                                "plumb_bob"),
               "equidistant 1280x1024": CameraModel(1280, 1024, (330, 0, 640, 0, 331, 512, 0, 0, 1),
                                                    (0.02, -0.01, 0.003, -0.0005), "equidistant")}
    out = {}
    for name, camera in cameras.items():
        camera.lens.table  # once per lens: its valid field and the inverse's table
        maps, seconds = [], []
        try:
            for steps in (compiled, None):
                distortion._lens = steps
                took, rays = cpu_timed(lambda: (clear_ray_cache(), camera.ray_map())[1], 3)
                maps.append(rays)
                seconds.append(took)
        finally:
            distortion._lens = compiled
            clear_ray_cache()
        valid = [np.isfinite(m[..., 0]) for m in maps]
        same = np.array_equal(*valid)
        out[name] = (*seconds, same, float(np.abs(maps[0][valid[0]] - maps[1][valid[0]]).max()) if same else np.inf)
    return out


def stencil_builds():
    """Part 4: {camera size: (seconds compiled, seconds numpy, identical)} of the stencil build."""
    compiled = resample._resample
    if compiled is None:
        raise SystemExit("mapanything_ros._resample is not built (CMakeLists.txt)")
    cameras = [CameraModel.pinhole(500, 500, 319.5, 239.5, 640, 480), PLUMB_720P, PLUMB_1200P]
    out = {}
    for camera in cameras:
        r = Resize.to_model(*camera.image_size)
        camera.ray_map(grid=GRID_INDEX, resize=r)  # cached, as the batch leaves it
        tables, seconds = [], []
        try:
            for steps in (compiled, None):
                resample._resample = steps
                took, st = cpu_timed(lambda: resample._stencil.__wrapped__(camera, r, GRID_INDEX), 3)
                tables.append(st.tables)
                seconds.append(took)
        finally:
            resample._resample = compiled
        same = all(np.array_equal(a.view(np.uint8), b.view(np.uint8)) for a, b in zip(*tables))
        out["x".join(map(str, camera.image_size))] = (*seconds, same)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the figures to this path")
    parser.add_argument("--sweeps", default="64x4063,128x8192", help="LiDAR sweeps of part 3, BEAMSxAZIMUTHS, comma-separated")
    args = parser.parse_args()

    firsts = ray_maps()
    rays = RATIONAL_1080P.ray_map()
    cached_s, again = timed(RATIONAL_1080P.ray_map, repeat=1000)
    assert again is rays

    points = lidar_sweep()
    vec_s, depth_vec = timed(lambda: project_to_depth(points, CAM_FROM_LIDAR, PLUMB_720P), repeat=5)
    loop_s, depth_loop = timed(lambda: project_loop(points, CAM_FROM_LIDAR, PLUMB_720P))
    differing = int(np.count_nonzero(depth_vec != depth_loop))

    # 3. throughput: compiled steps, numpy alone, and the implementation before issue 9
    t0 = 1_700_000_000_000_000_000
    motion = SourceMotion(t0, np.eye(4), t0 + 100_000_000,  # 0.5 m and 6 degrees of yaw over the sweep
                          pose_from_quat_trans([0, 0, np.sin(0.05), np.cos(0.05)], [0.4, 0.3, 0.0]), t0 + 60_000_000)
    compiled = depth_module._sparse_depth
    if compiled is None:
        raise SystemExit("mapanything_ros._sparse_depth is not built (CMakeLists.txt)")
    throughput = {}
    for sweep in args.sweeps.split(","):
        beams, azimuths = map(int, sweep.split("x"))
        cloud = lidar_sweep(beams, azimuths)
        per_point = t0 + np.random.default_rng(1).permutation(len(cloud)) * (100_000_000 // len(cloud))
        cases = {"static": {}, "motion_per_column_times": dict(times=sweep_times(beams, azimuths), motion=motion),
                 "motion_per_point_times": dict(times=per_point, motion=motion)}
        for name, kw in cases.items():
            maps, seconds = [], []
            try:
                for steps in (compiled, None):
                    depth_module._sparse_depth = steps
                    took, out = cpu_timed(lambda: project_to_depth(cloud, CAM_FROM_LIDAR, PLUMB_720P, **kw), 9)
                    maps.append(out)
                    seconds.append(took)
            finally:
                depth_module._sparse_depth = compiled
            took, out = cpu_timed(lambda: reference_depth.project_to_depth(cloud, CAM_FROM_LIDAR, PLUMB_720P, **kw), 3)
            maps.append(out)
            seconds.append(took)
            same = all(np.array_equal(m.view(np.uint32), maps[-1].view(np.uint32)) for m in maps[:-1])
            throughput[f"{name}_{len(cloud)}"] = (len(cloud), *seconds, same)
    stencils = stencil_builds()

    first_s = firsts["rational_polynomial 1920x1080"][0]
    figures = {
        "rays_1920x1080_rational_first_s": first_s,
        "rays_1920x1080_rational_cached_s": cached_s,
        "rays_cache_speedup": first_s / cached_s,
        "rays_valid_fraction": float(np.isfinite(rays[..., 0]).mean()),
        "lidar_points": int(len(points)),
        "lidar_points_in_image": int(np.count_nonzero(depth_vec)),
        "project_vectorised_s": vec_s,
        "project_vectorised_points_per_s": len(points) / vec_s,
        "project_loop_s": loop_s,
        "project_loop_points_per_s": len(points) / loop_s,
        "project_speedup": loop_s / vec_s,
        "depth_maps_identical": differing == 0,
        "depth_pixels_differing": differing,
    }
    for name, (n, new_s, numpy_s, old_s, same) in throughput.items():
        figures[f"project_{name}_points_per_s"] = n / new_s
        figures[f"project_{name}_numpy_points_per_s"] = n / numpy_s
        figures[f"project_{name}_before_points_per_s"] = n / old_s
        figures[f"project_{name}_speedup_over_numpy"] = numpy_s / new_s
        figures[f"project_{name}_speedup"] = old_s / new_s
        figures[f"project_{name}_identical"] = same
    for size, (new_s, numpy_s, same) in stencils.items():
        figures[f"stencil_{size}_s"], figures[f"stencil_{size}_numpy_s"] = new_s, numpy_s
        figures[f"stencil_{size}_identical"] = same
    for name, (new_s, numpy_s, same, diff) in firsts.items():
        key = name.replace(" ", "_")
        figures[f"rays_{key}_s"], figures[f"rays_{key}_numpy_s"] = new_s, numpy_s
        figures[f"rays_{key}_same_valid"], figures[f"rays_{key}_max_difference"] = same, diff
    print("| a camera's ray map, first computation, CPU time (median of 3) | compiled | numpy alone | speed-up | "
          "same valid pixels | largest difference |\n|---|---|---|---|---|---|")
    for name, (new_s, numpy_s, same, diff) in firsts.items():
        print(f"| {name} | {new_s * 1e3:.1f} ms | {numpy_s * 1e3:.1f} ms | {numpy_s / new_s:.1f}x | "
              f"{'yes' if same else 'NO'} | {diff:.1e} |")
    print("\n| measurement | value |\n|---|---|")
    print(f"| rays 1920x1080 rational_polynomial, first computation | {first_s * 1e3:.1f} ms |")
    print(f"| rays 1920x1080, cached lookup (median of 1000) | {cached_s * 1e6:.2f} µs |")
    print(f"| cache speed-up | {first_s / cached_s:,.0f}x |")
    print(f"| valid pixels (inside the invertible field of view) | {figures['rays_valid_fraction']:.4f} |")
    print(f"| LiDAR points (64 beams x 4063 azimuths) / landing in the 1280x720 image | {len(points):,} / {figures['lidar_points_in_image']:,} |")
    print(f"| vectorised projection + z-buffer (median of 5) | {vec_s * 1e3:.1f} ms = {len(points) / vec_s / 1e6:.2f} M points/s |")
    print(f"| per-point Python loop, all points | {loop_s * 1e3:.0f} ms = {len(points) / loop_s / 1e6:.3f} M points/s |")
    print(f"| vectorised speed-up | {loop_s / vec_s:.1f}x |")
    print(f"| depth maps identical | {'yes' if differing == 0 else f'no, {differing} pixels differ'} |")
    print("\n| projection, CPU time (median) | points | compiled | numpy alone | before issue 9 | speed-up over numpy / "
          "before | identical |\n|---|---|---|---|---|---|---|")
    for name, (n, new_s, numpy_s, old_s, same) in throughput.items():
        print(f"| {name.rsplit('_', 1)[0].replace('_', ' ')} | {n:,} | {n / new_s / 1e6:.1f} M points/s ({new_s * 1e3:.1f} ms) | "
              f"{n / numpy_s / 1e6:.1f} M/s ({numpy_s * 1e3:.1f} ms) | {n / old_s / 1e6:.1f} M/s ({old_s * 1e3:.1f} ms) | "
              f"{numpy_s / new_s:.1f}x / {old_s / new_s:.1f}x | {'yes' if same else 'NO'} |")
    print("\n| native depth's stencil, built once per camera, CPU time (median of 3) | compiled | numpy alone | "
          "speed-up | identical |\n|---|---|---|---|---|")
    for size, (new_s, numpy_s, same) in stencils.items():
        print(f"| {size} | {new_s * 1e3:.1f} ms | {numpy_s * 1e3:.1f} ms | {numpy_s / new_s:.1f}x | "
              f"{'yes' if same else 'NO'} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    if not all(row[-1] for row in throughput.values()):
        raise SystemExit("depth maps differ between the compiled steps, numpy and the implementation before issue 9")
    if not all(row[-1] for row in stencils.values()):
        raise SystemExit("the compiled stencil differs from numpy's")
    if not all(same and diff <= 2e-14 for _, _, same, diff in firsts.values()):
        raise SystemExit("the compiled ray maps differ from numpy's")


if __name__ == "__main__":
    main()
