"""The LiDAR projection as it was before issue 9 (per-point pose slerp, einsum transforms, float64
z-buffer with np.minimum.at), kept verbatim to check that the fast path (geometry/depth.py) gives
identical depth maps; used by test/test_geometry_depth_fast.py and bench/bench_geometry.py.

Lens projections are the pre-issue-9 `project` bodies of geometry/distortion.py, on (N, 3) arrays;
interpolate_pose is transforms.interpolate_pose before issue 9.
"""

import numpy as np

from mapanything_ros.geometry import distortion
from mapanything_ros.geometry.camera import GRID_INDEX, grid_offset
from mapanything_ros.geometry.depth import _as_ns
from mapanything_ros.geometry.transforms import (pose_from_quat_trans, quat_trans_from_pose, se3_compose,
                                                  se3_inverse, slerp, transform_points)


def interpolate_pose(t_ns, t0_ns, pose0, t1_ns, pose1, *, extrapolate=False):
    t = np.asarray(t_ns)
    t0, t1 = int(t0_ns), int(t1_ns)
    if t1 < t0:
        raise ValueError(f"t1_ns ({t1}) is before t0_ns ({t0})")
    if not extrapolate and (np.any(t < t0) or np.any(t > t1)):
        raise ValueError(f"time outside [{t0}, {t1}] ns and extrapolate=False")
    if t1 == t0:
        if np.any(t != t0):
            raise ValueError("t0_ns == t1_ns: cannot interpolate to another time")
        return np.broadcast_to(np.asarray(pose0, dtype=np.float64), t.shape + (4, 4)).copy()
    if np.issubdtype(t.dtype, np.integer):
        frac = (t.astype(np.int64) - t0).astype(np.float64) / float(t1 - t0)
    else:
        frac = (t.astype(np.float64) - t0) / float(t1 - t0)
    q0, p0 = quat_trans_from_pose(pose0)
    q1, p1 = quat_trans_from_pose(pose1)
    q = slerp(q0, q1, frac)
    p = p0 + frac[..., None] * (p1 - p0)
    return pose_from_quat_trans(q, p)


def motion_pose(motion, t_ns):
    """SourceMotion.pose before issue 9."""
    return interpolate_pose(t_ns, motion.t0_ns, motion.world_from_source0, motion.t1_ns, motion.world_from_source1,
                            extrapolate=motion.extrapolate)


def lens_project(lens, points):
    """(xd, yd, valid) of directions (N, 3): the distortion models' project before issue 9."""
    p = np.asarray(points, dtype=np.float64)
    if isinstance(lens, distortion.Pinhole):
        z = p[..., 2]
        valid = (z > 0) & np.all(np.isfinite(p), axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return p[..., 0] / z, p[..., 1] / z, valid
    if isinstance(lens, distortion.RadialTangential):
        z = p[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            x, y = p[..., 0] / z, p[..., 1] / z
            valid = (z > 0) & np.isfinite(x) & np.isfinite(y) & (x * x + y * y <= lens.max_radius**2)
            xd, yd = lens.distort(x, y)
        return xd, yd, valid
    rho = np.hypot(p[..., 0], p[..., 1])
    theta = np.arctan2(rho, p[..., 2])
    valid = np.all(np.isfinite(p), axis=-1) & (theta < lens.max_angle) & ((rho > 0) | (p[..., 2] > 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(rho > 0, lens._theta_map(theta)[0] / rho, 0.0)
    return p[..., 0] * scale, p[..., 1] * scale, valid


def camera_project(camera, points):
    """CameraModel.project before issue 9."""
    xd, yd, valid = lens_project(camera.lens, points)
    k = camera.intrinsics
    uv = np.stack([k[0, 0] * xd + k[0, 1] * yd + k[0, 2], k[1, 1] * yd + k[1, 2]], axis=-1)
    valid &= np.all(np.isfinite(uv), axis=-1)
    uv[~valid] = np.nan
    return uv, valid


def points_in_camera(points, cam_from_source, *, times=None, motion=None):
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    cam_from_source = np.asarray(cam_from_source, dtype=np.float64)
    if motion is None:
        with np.errstate(invalid="ignore"):
            return transform_points(cam_from_source, p)
    if times is None:
        raise ValueError("motion compensation needs per-point times")
    t = _as_ns(times).reshape(-1)
    if t.shape[0] != p.shape[0]:
        raise ValueError(f"{t.shape[0]} times for {p.shape[0]} points")
    cam_from_world = se3_compose(cam_from_source, se3_inverse(motion_pose(motion, motion.stamp_ns)))
    world_from_source = motion_pose(motion, t)
    with np.errstate(invalid="ignore"):
        world = np.einsum("nij,nj->ni", world_from_source[:, :3, :3], p) + world_from_source[:, :3, 3]
        return transform_points(cam_from_world, world)


def project_to_depth(points, cam_from_source, camera, *, times=None, motion=None, grid=GRID_INDEX, resize=None):
    """geometry.depth.project_to_depth before issue 9."""
    w, h = camera.image_size if resize is None else resize.out_size
    depth = np.full(h * w, np.inf)
    cam = points_in_camera(points, cam_from_source, times=times, motion=motion)
    cam = cam[cam[:, 2] > 0]
    uv, valid = camera_project(camera, cam)
    z = cam[:, 2]
    g = grid_offset(grid)
    u, v = uv[:, 0] - g, uv[:, 1] - g
    if resize is not None:
        u, v = resize.to_output(u, v)
    with np.errstate(invalid="ignore"):
        col, row = np.floor(u + 0.5), np.floor(v + 0.5)
        keep = valid & (col >= 0) & (col < w) & (row >= 0) & (row < h)
    np.minimum.at(depth, row[keep].astype(np.int64) * w + col[keep].astype(np.int64), z[keep])
    depth[np.isinf(depth)] = 0.0
    return depth.astype(np.float32).reshape(h, w)
