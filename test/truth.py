"""Checks of reconstruction outputs against a synthetic scene's truth, shared by the pipeline and
node end-to-end tests (the tolerances of the pipeline issue).

Depth: 1e-4 relative everywhere when the camera is at the model size; otherwise away from depth
discontinuities and creases, and next to them NaN, or within EDGE of the truth, or a blend of the
true surfaces around the pixel (between the smallest and largest true depth of its 3 x 3
neighbourhood). The last case is what the resampler's edge test keeps by design: it compares a
step between model pixels with the local slope, so next to a steep surface a step of more than
EDGE can pass as slope (e.g. 12% beside a box edge seen by the fisheye at long side 168), but the
value is still interpolated between model pixels on the surfaces there, never a flying pixel.
Points: float32 outputs carry rounding besides the method's error; F32 bounds it relative to |p|.
"""

import cv2
import numpy as np

from mapanything_ros.geometry import relative_pose

EDGE = 0.05  # PipelineConfig.edge_threshold
DEPTH_RTOL = 1e-4
# float32 rounding of a computed point: a few roundings of at most 2^-24 relative each (rays,
# depth, rotation, translation, the final cast), so 8·eps32 = 2^-20 relative to |p| (1e-5 m at 10 m).
F32 = 8 * float(np.finfo(np.float32).eps)


def pose_error(a, b):
    """(translation m, rotation rad) between two 4x4 poses; the angle from atan2, accurate near 0."""
    rel = relative_pose(a, b)
    r = rel[:3, :3]
    sin = np.linalg.norm([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]]) / 2
    return float(np.linalg.norm(rel[:3, 3])), float(np.arctan2(sin, (np.trace(r) - 1) / 2))


def near_discontinuity(z, tol=1e-3):
    """Pixels within one pixel of a depth discontinuity or crease of the true z-depth map z (H, W)
    (second difference along a row, column or diagonal above tol·z), of a pixel without truth
    (z <= 0) or of the image border."""
    z = np.where(z > 0, z, np.nan).astype(np.float64)
    p = np.pad(z, 1, mode="edge")
    h, w = z.shape
    edge = np.isnan(z)
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a, b = p[1 - dy:1 - dy + h, 1 - dx:1 - dx + w], p[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
        with np.errstate(invalid="ignore"):
            edge |= ~(np.abs(a + b - 2 * z) <= tol * z) & ~np.isnan(z)
    edge[[0, -1]] = edge[:, [0, -1]] = True
    return cv2.dilate(edge.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def check_depth(depth, z, exact):
    """Assert the depth bar (module doc) for a published z-depth map `depth` (H, W, NaN = none)
    against the true z-depth z (H, W, <= 0 where the camera sees nothing); `exact`: the camera
    is at the model size, so every pixel with truth must be exact."""
    depth = depth.astype(np.float64)
    valid = z > 0
    finite = np.isfinite(depth)
    assert not (finite & ~valid).any(), "depth where the camera sees nothing"
    err = np.abs(depth - z) / np.where(valid, z, 1)
    smooth = valid if exact else valid & ~near_discontinuity(z)
    assert finite[smooth].all(), f"{np.sum(~finite[smooth])} smooth pixels without depth"
    assert err[smooth].max() < DEPTH_RTOL, err[smooth].max()
    zn = np.where(valid, z, np.nan)
    window = np.lib.stride_tricks.sliding_window_view(np.pad(zn, 1, mode="edge"), (3, 3))
    lo, hi = np.nanmin(window, axis=(2, 3)), np.nanmax(window, axis=(2, 3))
    near = finite & valid & ~smooth
    blend = (depth >= lo * (1 - DEPTH_RTOL)) & (depth <= hi * (1 + DEPTH_RTOL))
    bad = near & (err > EDGE) & ~blend
    assert not bad.any(), [(tuple(i), err[tuple(i)]) for i in np.argwhere(bad)[:5]]


def check_on_surfaces(room, points, tol):
    """Assert every point (N, 3, float32 m) lies within tol (+ float32 rounding) of the room's surfaces."""
    points = np.asarray(points, dtype=np.float64)
    dist = room.surface_distance(points)
    bound = tol + F32 * np.linalg.norm(points, axis=1)
    assert np.all(dist <= bound), (dist.max(), np.max(dist - bound))
