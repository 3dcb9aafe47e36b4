"""WindowChain: successive image-only reconstructions (each in its own reference camera frame and
its own scale) carried into one frame, the chain frame: the first window's reference camera frame
at the first window's scale.

Correspondences. A sliding window shares keyframes with the previous one. For every view of a
new window whose image (Frame.key) was chained before, the same pixels are compared: each
remembered view keeps its chained pose and its z-depth sampled on a fixed pixel grid of its
native image (about `points_per_view` pixels). Depth maps are at the camera's native resolution
in both windows, so a pixel is the same image point in both; each pixel with a depth in both
gives a 3D point pair (window frame, chain frame), and each shared camera centre one more. The
camera-frame point is z·r/r_z with r the camera's calibrated ray at the pixel (GRID_INDEX); any
fixed ray would pair correctly, the calibrated one keeps the points near the surfaces.

Fit. One similarity chain_from_window from all pairs (geometry.robust_similarity: least median
of squares, then a weighted Umeyama refit on the inliers), weights 1 / z² (chain frame) since
depth errors grow with depth. Points rather than camera centres and orientations alone: they fix
scale, rotation and translation even with one shared view (centres alone are degenerate for one
or two views), and the robust fit discards pixels the two windows disagree on. The scale is the
ratio of the chained to the new depths in the least-squares sense, the rotation agrees with the
shared camera orientations up to the model's pose error.

Residual: the RMS distance of the aligned inlier pairs divided by the scene scale, the median
chain-frame z-depth of the paired pixels (or, with no pixel pairs, the RMS spread of the paired
camera centres): 0 for a perfect fit, 0.01 = 1% of a typical viewing distance.

Memory: the chained pose and depth samples of the last `max_views` views seen (newest estimate
of each image). A window that shares fewer than `min_shared_views` views, or whose pairs cannot
fix a similarity, starts a new segment: the memory is cleared and the window defines the chain
frame again (ChainResult.reset, with the reason).

Windows already in the world frame (poses known: reconstruct anchors them at the reference view's
TF pose) pass through unchanged and clear the memory, since the chain frame is not that world.
"""

import logging
from collections import OrderedDict
from dataclasses import dataclass, replace

import numpy as np

from ..geometry.similarity import robust_similarity, similarity_parts, similarity_pose
from ..geometry.transforms import transform_points

log = logging.getLogger(__name__)
CHAIN_FRAME = "chain"  # Reconstruction.frame of chained results


@dataclass(frozen=True, eq=False)
class ChainResult:
    """What WindowChain.apply did.

    reconstruction: the input with every view's world_from_camera (rigid), points and depth
    (scaled by `scale`) in the chain frame, pose_frame = CHAIN_FRAME (unchanged for "world" input);
    transform: 4x4 similarity chain_from_window; scale: its scale; residual: relative RMS of the
    aligned pairs (see module doc), None when nothing was aligned; shared: views shared with the
    chain; inliers: fraction of pairs kept by the robust fit, None when nothing was aligned;
    reset: a new segment started here; reason: why nothing was aligned, else None.
    """

    reconstruction: object
    transform: np.ndarray
    scale: float
    residual: float | None
    shared: int
    inliers: float | None
    reset: bool
    reason: str | None


@dataclass(frozen=True, eq=False)
class _Seen:
    """A chained view: pose (4x4 chain frame) and camera-frame points (M, 3, chain scale, NaN = none)
    at the camera's sample pixels."""

    pose: np.ndarray
    points: np.ndarray


class WindowChain:
    """Keeps successive image-only reconstructions in one frame (the first window's reference camera frame).

    min_shared_views: fewer shared views start a new segment; max_views: chained views remembered;
    points_per_view: depth samples per view (about); seed: of the robust fit's random samples.
    """

    def __init__(self, min_shared_views=1, max_views=64, points_per_view=400, seed=0):
        if min_shared_views < 1 or max_views < 1 or points_per_view < 1:
            raise ValueError("min_shared_views, max_views and points_per_view must be >= 1")
        self.min_shared_views = int(min_shared_views)
        self.max_views = int(max_views)
        self.points_per_view = int(points_per_view)
        self.seed = seed
        self.seen = OrderedDict()  # Frame.key -> _Seen, oldest first
        self._rays = {}  # CameraModel -> (rows, cols, z-normalised rays (M, 3))

    def reset(self):
        """Forget every chained view: the next window defines the chain frame."""
        self.seen.clear()

    def apply(self, recon):
        """ChainResult of a mapping.Reconstruction (pose_frame "reference_camera"; "world" passes through)."""
        if recon.pose_frame == "world":
            had = bool(self.seen)
            self.reset()
            return ChainResult(recon, np.eye(4), 1.0, None, 0, None, had,
                               "already in the world frame (known poses): not chained")
        samples = [self._points(v) for v in recon.views]
        shared = [i for i, v in enumerate(recon.views) if v.frame.key in self.seen]
        transform, residual, inliers, reason = np.eye(4), None, None, None
        if not self.seen:
            reason = "first window: defines the chain frame"
        elif len(shared) < self.min_shared_views:
            reason = f"{len(shared)} view(s) shared with the chain, need {self.min_shared_views}: new segment"
        else:
            try:
                transform, residual, inliers = self._align(recon, samples, shared)
            except ValueError as err:
                reason = f"cannot align on {len(shared)} shared view(s) ({err}): new segment"
        reset = bool(self.seen) and residual is None
        if reset:
            log.warning(reason)
            self.reset()
        out = _transformed(recon, transform)
        scale = similarity_parts(transform)[0]
        for view, points in zip(out.views, samples):
            self._remember(view.frame.key, _Seen(view.world_from_camera, points * scale))
        return ChainResult(out, transform, scale, residual, len(shared), inliers, reset, reason)

    def _align(self, recon, samples, shared):
        """(chain_from_window 4x4, residual, inlier fraction) from the shared views' pairs."""
        src, dst, depth = [], [], []
        for i in shared:
            old, pose = self.seen[recon.views[i].frame.key], recon.views[i].world_from_camera
            both = np.all(np.isfinite(samples[i]), axis=1) & np.all(np.isfinite(old.points), axis=1)
            src += [transform_points(pose, samples[i][both]), pose[None, :3, 3]]
            dst += [transform_points(old.pose, old.points[both]), old.pose[None, :3, 3]]
            depth += [old.points[both, 2], [np.nan]]  # centres get the median depth below
        src, dst, depth = np.concatenate(src), np.concatenate(dst), np.concatenate(depth)
        pixels = np.isfinite(depth)
        if pixels.any():
            scene = float(np.median(depth[pixels]))
        else:
            scene = float(np.sqrt(np.mean(np.sum((dst - dst.mean(axis=0)) ** 2, axis=1))))
        depth[~pixels] = scene
        transform, inliers = robust_similarity(src, dst, 1.0 / depth ** 2, seed=self.seed)
        err = np.linalg.norm(transform_points(transform, src[inliers]) - dst[inliers], axis=1)
        return transform, float(np.sqrt(np.mean(err ** 2)) / scene), float(inliers.mean())

    def _points(self, view):
        """Camera-frame points (M, 3) of a view's depth at its camera's sample pixels, NaN where none."""
        rows, cols, rays = self._samples(view.frame.camera)
        return view.depth[rows, cols].astype(np.float64)[:, None] * rays

    def _samples(self, camera):
        """(rows, cols, rays/ray_z (M, 3)) of a camera's sample grid (NaN rays outside the lens or behind)."""
        if camera not in self._rays:
            w, h = camera.image_size
            stride = max(1, int(np.ceil(np.sqrt(w * h / self.points_per_view))))
            rows, cols = np.mgrid[stride // 2:h:stride, stride // 2:w:stride].reshape(2, -1)
            rays = camera.rays(cols.astype(np.float64), rows.astype(np.float64))
            z = rays[:, 2:]
            self._rays[camera] = rows, cols, np.where(z > 1e-6, rays / np.where(z > 1e-6, z, 1.0), np.nan)
        return self._rays[camera]

    def _remember(self, key, seen):
        self.seen.pop(key, None)
        self.seen[key] = seen
        while len(self.seen) > self.max_views:
            self.seen.popitem(last=False)


def _transformed(recon, transform):
    """The reconstruction carried by the similarity chain_from_window into the chain frame."""
    scale = np.float32(similarity_parts(transform)[0])
    views = tuple(replace(v, depth=v.depth * scale, world_from_camera=similarity_pose(transform, v.world_from_camera),
                          points=transform_points(transform, v.points).astype(np.float32))
                  for v in recon.views)
    return replace(recon, views=views, pose_frame=CHAIN_FRAME)
