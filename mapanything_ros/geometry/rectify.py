"""Rectified pinhole depth from a distorted camera's depth, as image_proc rectifies an image (numpy,
OpenCV; no ROS).

ROS consumers of depth images (depth_image_proc, nvblox, RTAB-Map) project them with a pinhole
model: the CameraInfo's projection P, as image_geometry's PinholeCameraModel does, and treat the
image as rectified. The node's `depth` is on the raw (distorted) pixel grid; `depth_rect` is that
depth resampled onto the rectified camera of the same CameraInfo: intrinsics P[:3, :3] (K when P
is unset), rotation R from the raw optical frame to the rectified one, the raw image's size, ROI
and binning applied as for K (camera.py). Each rectified pixel takes the depth of the raw pixel
nearest to where its ray falls (nearest, as image_proc is run on depth: no depth between two
surfaces), as the z of the point along its own ray: z_rect = z_raw / (R^T ray).z for the ray
(x, y, 1) of the rectified pixel. Pixels whose ray the lens does not see, or that fall outside
the raw image, are NaN.
"""

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np


@dataclass(frozen=True, eq=False)
class Rectification:
    """The rectified pinhole camera of a raw camera: intrinsics k (3, 3) of the published grid,
    size (width, height), and the lookup into the raw image: map_x, map_y (H, W) float32 raw pixel
    coordinates (-1 where none), z_scale (H, W) float32 (rectified z per raw z)."""

    k: np.ndarray
    size: tuple
    map_x: np.ndarray
    map_y: np.ndarray
    z_scale: np.ndarray


def rectified_intrinsics(camera, p=None):
    """The rectified camera's 3x3 K in the published grid (ROI and binning applied): P[:3, :3] of a
    CameraInfo's P (12 values, row-major 3x4), or the camera's own K when P is missing or unset."""
    full = np.asarray(p, np.float64).reshape(3, 4)[:, :3] if p is not None and len(p) == 12 else None
    if full is None or not (full[0, 0] > 0 and full[1, 1] > 0 and full[2, 2] == 1 and np.isfinite(full).all()):
        full = np.asarray(camera.k, np.float64).reshape(3, 3)
    bx, by = camera.binning
    x0, y0 = camera.roi[:2]
    return np.array([[full[0, 0] / bx, full[0, 1] / bx, (full[0, 2] - x0) / bx],
                     [0.0, full[1, 1] / by, (full[1, 2] - y0) / by], [0.0, 0.0, 1.0]])


def rectification(camera, p=None, r=None):
    """The Rectification of a geometry.CameraModel with a CameraInfo's P (12 values) and R (9
    values, identity when missing or not a rotation); cached per (camera, P, R)."""
    p = tuple(float(v) for v in p) if p is not None and len(p) == 12 else None
    rot = np.asarray(r, np.float64).reshape(3, 3) if r is not None and len(r) == 9 else np.eye(3)
    if not (np.isfinite(rot).all() and np.allclose(rot @ rot.T, np.eye(3), atol=1e-6) and np.linalg.det(rot) > 0):
        rot = np.eye(3)
    return _rectification(camera, p, tuple(rot.ravel()))


@lru_cache(maxsize=16)
def _rectification(camera, p, r):
    k = rectified_intrinsics(camera, p)
    w, h = camera.image_size
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    y = (v - k[1, 2]) / k[1, 1]
    x = (u - k[0, 2] - k[0, 1] * y) / k[0, 0]
    rays = np.stack([x, y, np.ones_like(x)], -1) @ np.asarray(r).reshape(3, 3)  # R^T applied to each row
    col, row, valid = camera.pixels(rays[..., 0], rays[..., 1], rays[..., 2])
    valid &= (rays[..., 2] > 0) & (col > -0.5) & (col < w - 0.5) & (row > -0.5) & (row < h - 0.5)
    map_x = np.where(valid, col, -1).astype(np.float32)
    map_y = np.where(valid, row, -1).astype(np.float32)
    with np.errstate(divide="ignore"):
        z_scale = np.where(valid, 1 / rays[..., 2], np.nan).astype(np.float32)
    for a in (k, map_x, map_y, z_scale):
        a.setflags(write=False)
    return Rectification(k, (w, h), map_x, map_y, z_scale)


def info_fields(rect, p=None, binning=(1, 1)):
    """The CameraInfo fields (plain values) of the rectified camera of a Rectification: its size,
    no distortion, K = rect.k, R identity, P = [K | t] with t the original P's fourth column (a
    stereo baseline; 12 values or None) scaled by the binning as K; binning and ROI none."""
    w, h = rect.size
    k = [float(v) for v in rect.k.ravel()]
    bx, by = binning
    tx, ty = (float(p[3]) / bx, float(p[7]) / by) if p is not None and len(p) == 12 else (0.0, 0.0)
    return {"width": int(w), "height": int(h), "distortion_model": "plumb_bob", "d": [0.0] * 5, "k": k,
            "r": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            "p": [k[0], k[1], k[2], tx, k[3], k[4], k[5], ty, 0.0, 0.0, 1.0, 0.0]}


def rectify_depth(depth, rect):
    """Rectified z-depth (H, W) float32 metres, NaN where none, of a raw z-depth image (H, W) on
    the camera's published grid (<= 0 or non-finite: none)."""
    depth = np.asarray(depth, np.float32)
    if depth.shape != rect.map_x.shape:
        raise ValueError(f"depth is {depth.shape[1]}x{depth.shape[0]}, the camera publishes {rect.size[0]}x{rect.size[1]}")
    with np.errstate(invalid="ignore"):
        raw = np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(np.nan))
    out = cv2.remap(raw, rect.map_x, rect.map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                    borderValue=float("nan"))
    return out * rect.z_scale
