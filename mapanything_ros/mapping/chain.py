"""WindowChain: successive image-only reconstructions (each in its own reference camera frame and
its own scale) carried into one frame, the chain frame: the first window's reference camera frame
at the first window's scale.

Correspondences. A sliding window shares keyframes with the previous one. For every view of a
new window whose image (Frame.key, at the same model size) was chained before, the same pixels
are compared: each remembered view keeps its chained pose and its predicted z-depth sampled on a
fixed grid of its model pixels (about `points_per_view` pixels). The model pixels of an image
are the same image points in every window at that size, so each pixel with a depth in both
gives a 3D point pair (window frame, chain frame), and each shared camera centre one more. The
camera-frame point is z·r/r_z with r the camera's calibrated ray at the model pixel; any fixed
ray would pair correctly, the calibrated one keeps the points near the surfaces.

Fit. One similarity chain_from_window from all pairs (geometry.robust_similarity: least median
of squares, then a weighted Umeyama refit on the inliers), weights 1 / z² (chain frame) since
depth errors grow with depth; its scale then replaced by the symmetric one (similarity.
symmetric_scale) over the inliers: both windows' points are noisy predictions, and Umeyama's
scale, a regression of one on the other, would shrink the chain a little at every window. Points rather than camera centres and orientations alone: they fix
scale, rotation and translation even with one shared view (centres alone are degenerate for one
or two views), and the robust fit discards pixels the two windows disagree on. The scale is the
ratio of the chained to the new depths in the least-squares sense, the rotation agrees with the
shared camera orientations up to the model's pose error.

Metric pull. Each window's own scale is the network's metric estimate, with an error of its own
(independent between windows, a few per cent without metric inputs); the chain frame inherits
the first window's error and, through the fits, drifts. So each window is carried at scale
s^(1 - metric_pull) instead of the fitted s (about the centroid of its paired points, where it
overlaps the chain): the chain's scale relaxes towards the average of the windows' metric scales
over about 1 / metric_pull windows, at the price of a relative scale step of metric_pull·|log s|
between a window and the chain (0.3 % at a 6 % disagreement and the default 0.05). 0 keeps the
first window's scale.

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
from dataclasses import dataclass

import numpy as np

from ..geometry.similarity import robust_similarity, similarity, similarity_parts, symmetric_scale
from ..geometry.transforms import transform_points

log = logging.getLogger(__name__)
CHAIN_FRAME = "chain"  # Reconstruction.frame of chained results


@dataclass(frozen=True, eq=False)
class ChainResult:
    """What WindowChain.apply did.

    reconstruction: the input carried into the chain frame (Reconstruction.carried: poses, points
    and depth scaled by `scale`), pose_frame = CHAIN_FRAME (unchanged for "world" input);
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
    points_per_view: depth samples per view (about); seed: of the robust fit's random samples;
    metric_pull: in [0, 1], how much each window's own metric scale pulls the chain's (module doc).
    """

    def __init__(self, min_shared_views=1, max_views=64, points_per_view=400, seed=0, metric_pull=0.05):
        if min_shared_views < 1 or max_views < 1 or points_per_view < 1:
            raise ValueError("min_shared_views, max_views and points_per_view must be >= 1")
        if not 0 <= metric_pull <= 1:
            raise ValueError(f"metric_pull must be in [0, 1], got {metric_pull}")
        self.metric_pull = float(metric_pull)
        self.min_shared_views = int(min_shared_views)
        self.max_views = int(max_views)
        self.points_per_view = int(points_per_view)
        self.seed = seed
        self.seen = OrderedDict()  # (Frame.key, model size) -> _Seen, oldest first

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
        keys = [(p.frame.key, p.resize.out_size) for p in recon.batch.prepared]
        samples = [self._points(recon, i) for i in range(len(keys))]
        shared = [i for i, key in enumerate(keys) if key in self.seen]
        transform, residual, inliers, reason = np.eye(4), None, None, None
        if not self.seen:
            reason = "first window: defines the chain frame"
        elif len(shared) < self.min_shared_views:
            reason = f"{len(shared)} view(s) shared with the chain, need {self.min_shared_views}: new segment"
        else:
            try:
                transform, residual, inliers = self._align(recon, keys, samples, shared)
            except ValueError as err:
                reason = f"cannot align on {len(shared)} shared view(s) ({err}): new segment"
        reset = bool(self.seen) and residual is None
        if reset:
            log.warning(reason)
            self.reset()
        out = recon.carried(transform, CHAIN_FRAME)
        scale = similarity_parts(transform)[0]
        for key, pose, points in zip(keys, out.poses, samples):
            self._remember(key, _Seen(pose, points * scale))
        return ChainResult(out, transform, scale, residual, len(shared), inliers, reset, reason)

    def _align(self, recon, keys, samples, shared):
        """(chain_from_window 4x4, residual, inlier fraction) from the shared views' pairs."""
        src, dst, depth = [], [], []
        for i in shared:
            old, pose = self.seen[keys[i]], recon.poses[i]
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
        weights = 1.0 / depth ** 2
        transform, inliers = robust_similarity(src, dst, weights, seed=self.seed)
        transform = symmetric_scale(transform, src[inliers], dst[inliers], weights[inliers])
        err = np.linalg.norm(transform_points(transform, src[inliers]) - dst[inliers], axis=1)
        residual = float(np.sqrt(np.mean(err ** 2)) / scene)
        if self.metric_pull:
            scale, rot, _ = similarity_parts(transform)
            centre = np.average(src[inliers], axis=0, weights=weights[inliers])
            pulled = scale ** (1.0 - self.metric_pull)
            transform = similarity(pulled, rot, transform_points(transform, centre[None])[0] - pulled * rot @ centre)
        return transform, residual, float(inliers.mean())

    def _points(self, recon, i):
        """Camera-frame points (M, 3) of view i's model depth at its sample pixels, NaN where none."""
        prep = recon.batch.prepared[i]
        w, h = prep.resize.out_size
        stride = max(1, int(np.ceil(np.sqrt(w * h / self.points_per_view))))
        z = recon.model_depth(i, stride).reshape(-1).astype(np.float64)
        rays = prep.rays[stride // 2::stride, stride // 2::stride].reshape(-1, 3)
        with np.errstate(invalid="ignore", divide="ignore"):
            good = (z > 0) & (rays[:, 2] > 1e-6)
            return np.where(good[:, None], rays * (z / rays[:, 2])[:, None], np.nan)

    def _remember(self, key, seen):
        self.seen.pop(key, None)
        self.seen[key] = seen
        while len(self.seen) > self.max_views:
            self.seen.popitem(last=False)
