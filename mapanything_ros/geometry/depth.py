"""Sparse metric depth: point clouds projected into cameras, depth images, z-depth vs ray depth.

Depth maps are (H, W) float32 metres with 0 = no measurement. "z-depth" is the distance along
the optical axis (what depth images and LiDAR projection give); "ray depth" is the distance
along the unit ray of the pixel (what MapAnything takes and predicts as `depth_along_ray`):
z = ray_depth · ray_z for unit rays.
"""

from dataclasses import dataclass

import numpy as np

from .camera import GRID_INDEX, grid_offset
from .transforms import interpolate_pose, se3_compose, se3_inverse, transform_points


def depth_image_to_meters(array, encoding):
    """Depth image as float32 metres, invalid = 0.

    "16UC1"/"mono16": millimetres, 0 invalid. "32FC1": metres, NaN, ±inf and <= 0 invalid.
    """
    array = np.asarray(array)
    if encoding in ("16UC1", "mono16"):
        return (array.astype(np.float32) * np.float32(1e-3)).astype(np.float32)
    if encoding == "32FC1":
        out = array.astype(np.float32, copy=True)
        out[~(np.isfinite(out) & (out > 0))] = 0.0
        return out
    raise ValueError(f"unsupported depth encoding {encoding!r}; expected 16UC1, mono16 or 32FC1")


def z_to_ray_depth(z, rays):
    """Depth along unit rays (..., 3) from z-depth (...): z / ray_z. Invalid z (<= 0, NaN) or ray_z <= 0 give 0."""
    z = np.asarray(z)
    rz = np.asarray(rays)[..., 2]
    ok = np.isfinite(z) & (z > 0) & np.isfinite(rz) & (rz > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, z / np.where(ok, rz, 1), 0).astype(np.result_type(z.dtype, np.float32))


def ray_to_z_depth(d, rays):
    """z-depth (...) from depth d along unit rays (..., 3): d · ray_z. Invalid d or ray_z <= 0 give 0."""
    d = np.asarray(d)
    rz = np.asarray(rays)[..., 2]
    ok = np.isfinite(d) & (d > 0) & np.isfinite(rz) & (rz > 0)
    return np.where(ok, d * np.where(ok, rz, 0), 0).astype(np.result_type(d.dtype, np.float32))


@dataclass(frozen=True)
class SourceMotion:
    """World poses of the point source (e.g. a LiDAR) at two times, for per-point motion compensation.

    world_from_source0 at t0_ns and world_from_source1 at t1_ns (4x4); stamp_ns is the time at
    which the given cam_from_source holds (normally the image stamp). A point measured at time t
    in the source frame is moved to world_from_source(stamp)^-1 · world_from_source(t) · p before
    cam_from_source is applied. Poses at other times are interpolated (slerp + linear); times
    outside [t0_ns, t1_ns] raise unless extrapolate is True.
    """

    t0_ns: int
    world_from_source0: np.ndarray
    t1_ns: int
    world_from_source1: np.ndarray
    stamp_ns: int
    extrapolate: bool = False

    def pose(self, t_ns):
        """world_from_source (..., 4, 4) at times t_ns (int ns)."""
        return interpolate_pose(
            t_ns, self.t0_ns, self.world_from_source0, self.t1_ns, self.world_from_source1,
            extrapolate=self.extrapolate,
        )


def _as_ns(times):
    times = np.asarray(times)
    if np.issubdtype(times.dtype, np.integer):
        return times.astype(np.int64)
    return np.round(times.astype(np.float64) * 1e9).astype(np.int64)


def points_in_camera(points, cam_from_source, *, times=None, motion=None):
    """Points (N, 3) of the source frame moved into the camera frame (N, 3), float64.

    With motion (SourceMotion) and per-point times ((N,) int ns or float s), each point is
    motion-compensated with the source pose interpolated at its own time.
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    cam_from_source = np.asarray(cam_from_source, dtype=np.float64)
    if motion is None:
        with np.errstate(invalid="ignore"):  # inf coordinates become NaN and are dropped later
            return transform_points(cam_from_source, p)
    if times is None:
        raise ValueError("motion compensation needs per-point times")
    t = _as_ns(times).reshape(-1)
    if t.shape[0] != p.shape[0]:
        raise ValueError(f"{t.shape[0]} times for {p.shape[0]} points")
    cam_from_world = se3_compose(cam_from_source, se3_inverse(motion.pose(motion.stamp_ns)))
    world_from_source = motion.pose(t)
    with np.errstate(invalid="ignore"):
        world = np.einsum("nij,nj->ni", world_from_source[:, :3, :3], p) + world_from_source[:, :3, 3]
        return transform_points(cam_from_world, world)


def project_to_depth(points, cam_from_source, camera, *, times=None, motion=None, grid=GRID_INDEX, resize=None):
    """Sparse z-depth map (H, W) float32 metres (0 = none) of a point cloud seen by `camera`.

    points (N, 3) in the source frame; cam_from_source (4, 4). Optional per-point times and
    motion (SourceMotion) for motion compensation, see points_in_camera. Points that are not
    finite, have z <= 0, fall outside the valid field of view or outside the image are dropped;
    where several points hit a pixel the nearest (smallest z) wins. A point goes to the pixel
    whose centre is nearest to its projection: column round(u - g), row round(v - g) (halves
    round up), with g the grid offset (0 for "index", 0.5 for "center"). With `resize` (a
    Resize from camera.image_size) the map is made directly at the resized/cropped size.
    """
    w, h = camera.image_size if resize is None else resize.out_size
    depth = np.full(h * w, np.inf)
    cam = points_in_camera(points, cam_from_source, times=times, motion=motion)
    cam = cam[cam[:, 2] > 0]  # cheap cull before the lens model (NaN z fails too)
    uv, valid = camera.project(cam)
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
