"""Reconstruction: a Prediction turned into metric z-depth at each camera's native resolution,
world points with colour, and refined world-from-camera poses.

Scale. Prediction.depth_along_ray and the translations of Prediction.ref_from_camera are
already metric (the network multiplies them by its metric scale, see model.network), so they
are used as they are; `metric_scale` is only reported. An optional alignment to measured depth
scales depth, points and relative translations together (the reconstruction is scaled about
the reference camera).

z-depth uses the PREDICTED rays: z = depth_along_ray · ray_z. The predicted ray and depth
together define the predicted 3D point, so its z is what the points and the depth image agree
on; mixing the predicted depth with the calibration rays would give a point the model never
predicted (the two coincide when the model reproduces its input rays, as the oracle does).

Frame. With the reference view's world pose known (ViewBatch.reference_world_from_camera),
results are in the world frame (pose_frame "world"); otherwise in the reference camera's
optical frame ("reference_camera").

Native depth. The default ("bilinear") interpolates inverse z-depth between the model pixels
around each native pixel, in the normalised image plane: barycentric weights of the native
pixel's calibrated ray in a triangle of model pixels' rays (geometry.resample), which reproduces
planes exactly under any lens model, fisheyes included. It is edge-aware: where two of those
neighbours straddle a depth discontinuity, or one of them has no estimate, the native pixel gets
NaN rather than a flying pixel between the two surfaces. A discontinuity is a step in inverse
depth between adjacent model pixels that departs from the local slope (the steps before and
after it) by more than `edge_threshold` (5% by default) relative (geometry.Resize.to_native,
max_jump): for a depth edge from z1 to z2 > z1 that is z2/z1 - 1, while a steep but smooth
surface (a floor seen at a grazing angle) keeps its depth. Over the outer half pixel of the crop
the border triangle is extrapolated. "nearest" copies the nearest model pixel.
"""

from dataclasses import dataclass

import numpy as np

from ..geometry import ray_to_z_depth, se3_compose
from ..geometry.resample import native_inverse_depth, stencil
from ..geometry.transforms import transform_points

DEPTH_MODES = ("nearest", "bilinear")


@dataclass(frozen=True, eq=False)
class ViewReconstruction:
    """One view's results.

    frame: the input window.Frame; depth (H, W) float32 metres, z-depth at the camera's native
    resolution, NaN where there is no estimate; confidence (H, W) float32, NaN likewise;
    world_from_camera 4x4 float64 (in Reconstruction.pose_frame); points (N, 3) float32 metres in
    Reconstruction.pose_frame, from the model-resolution pixels that are valid and in the mask;
    colors (N, 3) uint8 RGB of those pixels; point_confidence (N,) float32.
    """

    frame: object
    depth: np.ndarray
    confidence: np.ndarray
    world_from_camera: np.ndarray
    points: np.ndarray
    colors: np.ndarray
    point_confidence: np.ndarray


@dataclass(frozen=True, eq=False)
class Reconstruction:
    """All views (ViewBatch order, reference first) and how they were made.

    pose_frame: "world" or "reference_camera" (which frame poses and points are in); metric_scale:
    the model's reported metric scale (already applied by it); scale: the alignment factor applied
    to the prediction (1.0 without alignment); residual: median |s·predicted - measured| / measured
    over measured pixels after alignment, or None without alignment (or without measurements).
    """

    views: tuple
    pose_frame: str
    metric_scale: float
    scale: float = 1.0
    residual: float | None = None


def reconstruct(batch, prediction, *, depth_mode="bilinear", edge_threshold=0.05, keep_measured=False,
                align_to_measured=False):
    """Reconstruction of a window.ViewBatch from its backends.Prediction.

    depth_mode: how model-resolution maps go back to the native resolution ("bilinear":
    edge-aware interpolation of inverse depth in the normalised image plane, see the module doc;
    "nearest" copies the nearest model pixel). edge_threshold: the relative depth step, beyond the
    local slope, between interpolated neighbours above which a native pixel gets NaN (None: plain
    interpolation, which blends across edges). Native confidence is resampled the same way and
    NaN wherever the native depth is. align_to_measured: fit one scale s = median(measured /
    predicted) over the native pixels of all views where a frame's sparse_depth has a measurement
    and the prediction an estimate, and apply it. keep_measured: put each frame's measured z-depth back at its
    measured native pixels exactly (confidence there stays the model's).
    """
    if depth_mode not in DEPTH_MODES:
        raise ValueError(f"unknown depth_mode {depth_mode!r}; expected one of {DEPTH_MODES}")
    n = len(batch.frames)
    if prediction.depth_along_ray.shape[0] != n:
        raise ValueError(f"prediction has {prediction.depth_along_ray.shape[0]} views, batch {n}")
    ok = [batch.valid[i] & prediction.mask[i] & np.isfinite(prediction.depth_along_ray[i])
          & (prediction.depth_along_ray[i] > 0) for i in range(n)]  # model pixels with an estimate
    z = [ray_to_z_depth(np.where(ok[i], prediction.depth_along_ray[i], 0), prediction.ray_directions[i])
         for i in range(n)]
    native = [_to_native(batch, i, z[i], depth_mode, edge_threshold) for i in range(n)]
    measured = [_measured(f) for f in batch.frames]
    scale, residual = _align(native, measured) if align_to_measured else (1.0, None)
    world_from_ref = batch.reference_world_from_camera
    pose_frame = "reference_camera" if world_from_ref is None else "world"
    world_from_ref = np.eye(4) if world_from_ref is None else world_from_ref
    views = []
    for i, f in enumerate(batch.frames):
        depth = (native[i] * np.float32(scale)).astype(np.float32)
        if keep_measured and measured[i] is not None:
            has = measured[i] > 0
            depth[has] = measured[i][has]
        rel = np.array(prediction.ref_from_camera[i], dtype=np.float64)
        rel[:3, 3] *= scale
        pose = se3_compose(world_from_ref, rel)
        m = ok[i]
        cam = prediction.ray_directions[i][m] * (prediction.depth_along_ray[i][m].astype(np.float64) * scale)[:, None]
        conf = np.where(m, prediction.confidence[i], np.nan).astype(np.float32)
        if depth_mode == "nearest":
            conf = batch.resizes[i].to_native(conf, depth_mode)
        else:
            conf = stencil(f.camera, batch.resizes[i], batch.grid).apply(conf)
        conf[np.isnan(native[i])] = np.nan
        views.append(ViewReconstruction(
            frame=f,
            depth=depth,
            confidence=conf,
            world_from_camera=pose,
            points=transform_points(pose, cam).astype(np.float32),
            colors=batch.resizes[i].image(f.image)[m],
            point_confidence=prediction.confidence[i][m].astype(np.float32),
        ))
    return Reconstruction(tuple(views), pose_frame, float(prediction.metric_scale), float(scale), residual)


def _to_native(batch, i, z, mode, edge_threshold):
    """z-depth of view i (model resolution, 0 = none) at the native resolution, float32 with NaN = none.

    Bilinear works on inverse depth: it is affine in the normalised image coordinates of a plane
    (geometry.resample), and its steps are what the discontinuity test looks at.
    """
    with np.errstate(divide="ignore"):
        if mode == "nearest":
            out = batch.resizes[i].to_native(np.where(z > 0, z, np.nan).astype(np.float32), mode)
        else:
            inv = np.where(z > 0, 1 / z, np.nan).astype(np.float32)
            out = 1 / native_inverse_depth(batch.frames[i].camera, batch.resizes[i], batch.grid, inv, edge_threshold)
    out[~(out > 0)] = np.nan
    return out


def _measured(frame):
    """The frame's measured z-depth (H, W) float32 with 0 where none, or None."""
    if frame.sparse_depth is None:
        return None
    d = frame.sparse_depth
    return np.where(np.isfinite(d) & (d > 0), d, 0).astype(np.float32)


def _align(native, measured):
    """(scale, residual): median ratio measured / predicted over all pixels having both, and the
    median absolute relative error after scaling. (1.0, None) when no pixel has both."""
    pred, meas = [], []
    for z, m in zip(native, measured):
        if m is None:
            continue
        both = (m > 0) & np.isfinite(z)
        pred.append(z[both].astype(np.float64))
        meas.append(m[both].astype(np.float64))
    pred, meas = np.concatenate([[], *pred]), np.concatenate([[], *meas])
    if len(pred) == 0:
        return 1.0, None
    scale = float(np.median(meas / pred))
    return scale, float(np.median(np.abs(scale * pred - meas) / meas))
