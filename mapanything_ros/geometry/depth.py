"""Sparse metric depth: point clouds projected into cameras, depth images, z-depth vs ray depth.

Depth maps are (H, W) float32 metres with 0 = no measurement. "z-depth" is the distance along
the optical axis (what depth images and LiDAR projection give); "ray depth" is the distance
along the unit ray of the pixel (what MapAnything takes and predicts as `depth_along_ray`):
z = ray_depth · ray_z for unit rays.
"""

import threading
from dataclasses import dataclass, replace

import numpy as np

from .camera import GRID_INDEX, ModelPixels, grid_offset
from .resize import Resize
from .transforms import interpolate_pose, interpolate_pose_rows, se3_compose, se3_inverse

try:  # the compiled compensation and projection (CMakeLists.txt builds them): the numpy below's bits (the
    from .. import _sparse_depth  # fisheye's angle aside: _sparse_depth.c)
except ImportError:
    _sparse_depth = None


# Measured depth (a depth image's, a LiDAR point's coordinates in its cloud's frame) beyond this
# is garbage, not a reading (m): beyond any sensor, one sending millimetres for metres (which the
# pipeline detects against the prediction) and any Earth-fixed frame a cloud may come in (ECEF,
# UTM: up to 1e7 m), while values near float32's limit overflow the ray depth and the network's
# depth normalisation (a mean), failing every window they are in.
MAX_DEPTH_M = 1e8


def depth_image_to_meters(array, encoding):
    """Depth image as float32 metres, invalid = 0.

    "16UC1"/"mono16": millimetres, 0 invalid. "32FC1": metres, NaN, ±inf, <= 0 and > MAX_DEPTH_M invalid.
    """
    array = np.asarray(array)
    if encoding in ("16UC1", "mono16"):
        return (array.astype(np.float32) * np.float32(1e-3)).astype(np.float32)
    if encoding == "32FC1":
        out = array.astype(np.float32, copy=True)
        out[~((out > 0) & (out <= MAX_DEPTH_M))] = 0.0  # NaN compares False
        return out
    raise ValueError(f"unsupported depth encoding {encoding!r}; expected 16UC1, mono16 or 32FC1")


def z_to_ray_depth(z, rays):
    """Depth along unit rays (..., 3) from z-depth (...): z / ray_z. Invalid z (<= 0, NaN) or ray_z <= 0 give 0.
    A map of z-depth (the rays' shape) is divided only where z > 0 (sparse depth is mostly empty)."""
    z, rays = np.asarray(z), np.asarray(rays)
    dtype = np.result_type(z.dtype, np.float32)
    if z.shape == rays.shape[:-1]:
        out = np.zeros(z.shape, dtype)
        with np.errstate(invalid="ignore"):
            index = np.flatnonzero(z > 0)  # NaN compares False
        zi, rz = z.reshape(-1)[index], rays.reshape(-1, 3)[index, 2]
        ok = np.isfinite(zi) & (rz > 0)  # NaN compares False; z / inf is 0
        out.reshape(-1)[index[ok]] = zi[ok] / rz[ok]
        return out
    rz = rays[..., 2]
    ok = np.isfinite(z) & (z > 0) & np.isfinite(rz) & (rz > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, z / np.where(ok, rz, 1), 0).astype(dtype)


def ray_to_z_depth(d, rays):
    """z-depth (...) from depth d along unit rays (..., 3): d · ray_z. Invalid d or ray_z <= 0 give 0."""
    d = np.asarray(d)
    rz = np.asarray(rays)[..., 2]
    ok = np.isfinite(d) & (d > 0) & np.isfinite(rz) & (rz > 0)
    return np.where(ok, d * np.where(ok, rz, 0), 0).astype(np.result_type(d.dtype, np.float32))


_SAMPLE = 1024  # point times sampled to tell whether grouping equal times pays


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

    def rows(self, t_ns):
        """Top three rows (3, 4, N) of world_from_source at times t_ns (N,) int ns (as `pose`)."""
        return interpolate_pose_rows(
            t_ns, self.t0_ns, self.world_from_source0, self.t1_ns, self.world_from_source1,
            extrapolate=self.extrapolate,
        )


def _as_ns(times):
    times = np.asarray(times)
    if np.issubdtype(times.dtype, np.integer):
        return times.astype(np.int64)
    return np.round(times.astype(np.float64) * 1e9).astype(np.int64)


def _row(m, i, x, y, z):
    """Coordinate i of the rigid transform m (4, 4), or of per-point transforms m (3, 4, N), applied to
    float64 coordinates x, y, z: (x·m[i,0] + z·m[i,2]) + y·m[i,1] + m[i,3]. This is the operation
    order of numpy's einsum over rows of 3 (transforms.transform_points), so results are the same
    bit for bit (test/test_geometry_depth_fast.py checks it)."""
    return (x * m[i, 0] + z * m[i, 2]) + y * m[i, 1] + m[i, 3]


def _time_groups(t):
    """(order, starts) grouping int ns times t (N,) by value: a permutation sorting them (None when
    they are sorted already or when grouping would not pay) and the start of each run of equal
    times in that order (None when not grouped). LiDAR sweeps have few distinct times (one per
    column) in a few ascending runs (one per row of an organised sweep), which timsort merges
    quickly; a sample tells when nearly every point has its own time (then no grouping)."""
    descents = np.count_nonzero(t[1:] < t[:-1])
    order = None
    if descents:
        sample = t[np.random.default_rng(0).integers(0, t.size, _SAMPLE)]
        if np.unique(sample).size > 0.95 * _SAMPLE:
            return None, None
        order = np.argsort(t, kind="stable" if descents < t.size // 64 else "quicksort")
        t = t[order]
    return order, np.flatnonzero(np.concatenate(([True], t[1:] != t[:-1]))) if t.size else np.zeros(0, np.intp)


def _source_to_camera(points, cam_from_source, times, motion):
    """(x, y, z source-side float64 coordinates (N,), 4x4 transform to the camera): the points
    themselves and cam_from_source, or with motion their motion-compensated world coordinates
    (_compensate) and cam_from_world."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    cam_from_source = np.asarray(cam_from_source, dtype=np.float64)
    if motion is None:
        return p[:, 0], p[:, 1], p[:, 2], cam_from_source
    if times is None:
        raise ValueError("motion compensation needs per-point times")
    return (*_compensate(p, times, motion), _cam_from_world(cam_from_source, motion))


def _cam_from_world(cam_from_source, motion):
    """cam_from_world of a camera whose cam_from_source holds at motion.stamp_ns."""
    return se3_compose(np.asarray(cam_from_source, dtype=np.float64), se3_inverse(motion.pose(motion.stamp_ns)))


def _compensate(p, times, motion):
    """World coordinates (x, y, z) float64 (N,) of source-frame points p (N, 3) float64 measured at
    `times`, each moved by the source pose interpolated at its own time. They may come back in time
    order (order does not matter to a z-buffer); the source pose is interpolated once per distinct
    time when that pays."""
    t = _as_ns(times).reshape(-1)
    if t.shape[0] != p.shape[0]:
        raise ValueError(f"{t.shape[0]} times for {p.shape[0]} points")
    order, starts = _time_groups(t)
    if _sparse_depth is not None:
        if starts is None:  # a time per point, in their own order
            run_times, starts = t, np.arange(t.size, dtype=np.intp)
        else:
            run_times = t[starts] if order is None else t[order[starts]]
        out = tuple(np.empty(t.size) for _ in range(3))
        _sparse_depth.compensate(np.ascontiguousarray(p), order, starts, np.ascontiguousarray(motion.rows(run_times)),
                                 *out)
        return out
    if order is not None:
        p, t = np.take(p, order, axis=0), t[order]  # np.take: much faster than fancy row indexing
    if starts is None or starts.size == t.size:
        per_point = motion.rows(t)  # (3, 4, N)
    else:
        per_point = np.repeat(motion.rows(t[starts]), np.diff(np.append(starts, t.size)), axis=2)
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    with np.errstate(invalid="ignore"):  # inf coordinates become NaN and are dropped later
        return tuple(_row(per_point, i, x, y, z) for i in range(3))


class MovingSweep:
    """A point sweep measured while its source (a LiDAR) moved, to be projected into several cameras:
    points (N, 3) in the source frame, per-point times ((N,) int ns or float s) and the source's
    world poses at two times (as SourceMotion). Moving each point by the source pose at its own time
    is the larger part of a projection and the same for every camera, so it is done once, by the
    first depth() (thread-safe), and kept."""

    def __init__(self, points, times, t0_ns, world_from_source0, t1_ns, world_from_source1, extrapolate=False):
        self.points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        self.times = times
        self._motion = SourceMotion(t0_ns, world_from_source0, t1_ns, world_from_source1, t0_ns, extrapolate)
        self._world = None
        self._lock = threading.Lock()

    def world(self):
        """World coordinates (x, y, z) float64 (N,) of the points, motion-compensated (computed once)."""
        with self._lock:
            if self._world is None:
                self._world = _compensate(self.points, self.times, self._motion)
            return self._world

    def depth(self, cam_from_source, camera, stamp_ns, *, grid=GRID_INDEX, resize=None):
        """project_to_depth(points, cam_from_source, camera, times=times, motion=SourceMotion(t0_ns, ...,
        stamp_ns, extrapolate), grid=grid, resize=resize), with the motion compensation done once for all
        calls. cam_from_source holds at stamp_ns (the image's stamp)."""
        motion = replace(self._motion, stamp_ns=int(stamp_ns))
        return _project(*self.world(), _cam_from_world(cam_from_source, motion), camera, grid, resize)


def project_to_depth(points, cam_from_source, camera, *, times=None, motion=None, grid=GRID_INDEX, resize=None):
    """Sparse z-depth map (H, W) float32 metres (0 = none) of a point cloud seen by `camera`.

    points (N, 3) in the source frame; cam_from_source (4, 4). With per-point times ((N,) int ns
    or float s) and motion (SourceMotion), each point is moved with the source pose interpolated
    at its own time (see SourceMotion). Points that are not finite, have z <= 0, fall outside the
    valid field of view or outside the image are dropped; where several points hit a pixel the
    nearest (smallest z) wins. A point goes to the pixel whose centre is nearest to its
    projection: column round(u - g), row round(v - g) (halves round up), with g the grid offset
    (0 for "index", 0.5 for "center"). With `resize` (a Resize from camera.image_size) the map is
    made directly at the resized/cropped size. Transforms and projection run in float64.
    """
    return _project(*_source_to_camera(points, cam_from_source, times, motion), camera, grid, resize)


def _project(x, y, z, m, camera, grid, resize):
    """project_to_depth of float64 coordinates x, y, z (N,) brought into the camera by m (4, 4)."""
    w, h = camera.image_size if resize is None else resize.out_size
    if _sparse_depth is not None:
        size = camera.image_size
        lens, pixel = ModelPixels(camera, Resize.stretch(size, size) if resize is None else resize, grid).projection
        depth = np.empty((h, w), np.float32)
        _sparse_depth.project(*(np.ascontiguousarray(a, np.float64) for a in (x, y, z)),
                              tuple(float(a) for a in np.asarray(m, np.float64)[:3].ravel()), lens, pixel,
                              resize is not None, w, h, depth)
        return depth
    with np.errstate(invalid="ignore"):
        cz = _row(m, 2, x, y, z)
        front = np.flatnonzero(cz > 0)  # cull before the rest of the transform and the lens model
        x, y, z, cz = x[front], y[front], z[front], cz[front]
        u, v, valid = camera.pixels(_row(m, 0, x, y, z), _row(m, 1, x, y, z), cz)
        g = grid_offset(grid)
        if g:
            u, v = u - g, v - g
        if resize is not None:
            u, v = resize.to_output(u, v)
        u, v = u + 0.5, v + 0.5  # pixel = floor(u + 0.5); floor(a) in [0, w) exactly when a is
        keep = np.flatnonzero(valid & (u >= 0) & (u < w) & (v >= 0) & (v < h))
    depth = np.full(h * w, np.nan, np.float32)
    # fmin of float32-rounded z = the rounded float64 minimum (rounding is monotone); NaN marks "none"
    np.fmin.at(depth, v[keep].astype(np.int64) * w + u[keep].astype(np.int64), cz[keep].astype(np.float32))
    depth[np.isnan(depth)] = 0.0
    return depth.reshape(h, w)
