"""Depth completion: a view's predicted z-depth corrected with its measured sparse depth (LiDAR or
a depth camera, min-pooled to the model pixels), numpy on the host, at the model resolution.

A network's depth errs in ways sparse metric depth can see (backends.emulated models them): a
scale per view, a smooth field across the image, noise per pixel. Given the measured pixels of a
view, in log-depth residuals r = log(measured) - log(predicted):

1. `align`: the view's scale, exp(c), c the mean residual over the inliers of a robust fit (a
   median, then residuals within OUTLIER_SIGMAS robust sigmas of it; sigma = 1.4826 · MAD, at
   least MIN_SIGMA), so occluded or badly compensated LiDAR points do not pull it.
2. `dense`: what varies across the image: the inlier residuals spread by normalised convolution
   (Knutsson & Westin, CVPR 1993): Gaussian-weighted mean of the residuals around each pixel,
   sigma `radius` of the image's long side, weighted by the network's confidence; where the
   measured pixels are sparse the field shrinks towards 0 (SUPPORT: the measured-pixel density at
   which it is halved). A second pass leaves out the measured pixels that disagree with their
   neighbourhood after the first (occlusion, parallax between the LiDAR and the camera,
   motion-compensation errors): more than OUTLIER_SIGMAS robust sigmas from the field.
3. `agree`: the measured pixels that agree with the corrected prediction (within AGREE_SIGMAS
   robust sigmas, at least MIN_AGREE relative): where the reconstruction keeps measured depth
   (keep_measured), it keeps those only.

What it cannot correct: per-pixel noise between measured pixels, and errors of a smaller extent
than the measured pixels' spacing; the field is not edge-aware (it is smooth across depth edges).
"""

from dataclasses import dataclass

import cv2
import numpy as np

OUTLIER_SIGMAS = 3.0
AGREE_SIGMAS = 3.0
MIN_SIGMA = 0.003  # robust sigma floor (log depth): exact predictions keep their measured pixels
MIN_AGREE = 0.02  # a measured pixel within this relative error of the correction always agrees
SUPPORT = 0.0005  # measured-pixel density (Gaussian-weighted) at which the dense field is halved
# Scale corrections (log depth) within this of 0 are not applied, and the residual field is
# shrunk by it towards 0: measured pixels put at model pixel centres and min-pooled differ from
# the surface there by about ±1 % (5-95 %) and their median by up to 0.15 % per view on exact
# predictions (the synthetic rig, front and fisheye cameras), so a smaller correction is not
# evidence of an error.
BIAS_FLOOR = 0.002


@dataclass(frozen=True)
class CompletionConfig:
    """Which steps run (module doc): align (a robust per-view scale), dense (the smooth residual
    field, sigma `radius` × the long side of the model image)."""

    align: bool = True
    dense: bool = True
    radius: float = 0.08


@dataclass(frozen=True, eq=False)
class Correction:
    """A view's correction: factor (H, W) float32, multiply the predicted depth by it; agree (H, W)
    bool, measured pixels consistent with the corrected prediction; scale: exp(c) of step 1;
    residual: median |corrected / measured - 1| over the inliers; measured: how many pixels had both."""

    factor: np.ndarray
    agree: np.ndarray
    scale: float
    residual: float
    measured: int


def correct(z, measured, confidence, config=CompletionConfig()):
    """Correction of a predicted z-depth map z (H, W) (metres, 0 = none) by measured z-depth
    (H, W) (0 = none), weighted by confidence (H, W) (>= 1, NaN/0 = none); None when no pixel has
    both."""
    z = np.asarray(z, np.float32)
    measured = np.asarray(measured, np.float32)
    both = (z > 0) & (measured > 0)
    n = int(np.count_nonzero(both))
    if not n:
        return None
    r = np.log(measured[both]) - np.log(z[both])
    inlier, _ = _inliers(r, np.median(r))
    c = float(significant(np.mean(r[inlier]))) if config.align else 0.0
    field = np.zeros(z.shape, np.float32)
    keep = inlier
    if config.dense:
        weights = np.nan_to_num(np.asarray(confidence, np.float32)[both], nan=0.0)
        sigma_px = config.radius * max(z.shape)
        for _ in range(2):
            field = _spread(both, r - c, np.where(keep, weights, 0.0), sigma_px)
            keep, _ = _inliers(r - c - field[both], 0.0)
    left = r - c - field[both]
    tolerance = max(AGREE_SIGMAS * _robust_sigma(left[keep]), MIN_AGREE)
    agree = np.zeros(z.shape, bool)
    agree[both] = np.abs(left) < tolerance
    factor = np.exp(c + shrink_log(field)).astype(np.float32)
    return Correction(factor, agree, float(np.exp(c)), float(np.median(np.abs(np.expm1(-left[agree[both]]))))
                      if agree.any() else float("nan"), n)


def significant(log_scale):
    """A log scale correction, 0 when within BIAS_FLOOR of 0."""
    return log_scale if abs(log_scale) > BIAS_FLOOR else 0.0


def shrink_log(x):
    """A log-depth correction field x moved BIAS_FLOOR towards 0 (0 within it)."""
    return np.sign(x) * np.maximum(np.abs(x) - BIAS_FLOOR, 0.0)


def _robust_sigma(r):
    """1.4826 · median |r - median r|, at least MIN_SIGMA."""
    if not len(r):
        return MIN_SIGMA
    return max(1.4826 * float(np.median(np.abs(r - np.median(r)))), MIN_SIGMA)


def _inliers(r, centre):
    """(residuals within OUTLIER_SIGMAS robust sigmas of `centre`, that sigma)."""
    sigma = max(1.4826 * float(np.median(np.abs(r - centre))), MIN_SIGMA)
    return np.abs(r - centre) <= OUTLIER_SIGMAS * sigma, sigma


def _spread(where, values, weights, sigma_px):
    """(H, W) float32 normalised convolution of `values` at the pixels `where` with `weights`,
    shrunk towards 0 where the weighted density of those pixels is below SUPPORT."""
    num = np.zeros(where.shape, np.float32)
    den = np.zeros(where.shape, np.float32)
    count = np.zeros(where.shape, np.float32)
    num[where] = weights * values
    den[where] = weights
    count[where] = weights > 0
    blur = lambda a: cv2.GaussianBlur(a, (0, 0), sigma_px, borderType=cv2.BORDER_REPLICATE)  # noqa: E731
    num, den, density = blur(num), blur(den), blur(count)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(den > 0, num / den, 0.0)
    return (mean * density / (density + SUPPORT)).astype(np.float32)
