"""Depth completion: a view's predicted z-depth corrected with its measured sparse depth (LiDAR or
a depth camera, min-pooled to the model pixels), numpy on the host, at the model resolution.

A network's depth errs in ways sparse metric depth can see (backends.emulated models them): a
scale per view, a smooth field across the image, noise per pixel. Given the measured pixels of a
view, in log-depth residuals r = log(measured) - log(predicted):

1. `align`: the view's scale, exp(c), c the mean residual over the inliers of a robust fit (a
   median, then residuals within OUTLIER_SIGMAS robust sigmas of it; sigma = 1.4826 · MAD, at
   least MIN_SIGMA), so occluded or badly compensated LiDAR points do not pull it. Beyond
   MAX_SCALE the measurement, not the prediction, is taken to be wrong: nothing is corrected.
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
MIN_AGREE = 0.01  # a measured pixel within this relative error of the correction always agrees
# Measured-pixel density (Gaussian-weighted) at which the dense field is halved. Small: the field
# carries the nearest measurements' correction well beyond them (the 20 s benchmark run, profile 1:
# 0.01 gave 0.58 x the raw AbsRel, 0.001 0.50, 0.0002 0.49).
SUPPORT = 0.0005
CELL_PER_SIGMA = 4  # the field's grid: cells of sigma / this pixels
# A view whose measured depth is more than this many times (or less than 1 / this) its prediction,
# on the robust fit of step 1, is not corrected, and none of its measured pixels agree: no
# network's metric scale errs that much, a depth in the wrong unit does (millimetres for metres:
# 1000; `refused`, which the node reports).
MAX_SCALE = 4.0
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
    """A view's correction: factor, (H, W) float32 or a float (a scale alone), multiply the
    predicted depth by it; agree_index (K,) flat indices of the measured pixels consistent with the
    corrected prediction (`agree`: as an (H, W) mask), those within `tolerance` (relative) of it;
    scale: exp(c) of step 1; measured: how many pixels had both. "Corrected" here: with the fitted
    field, before it is shrunk by BIAS_FLOOR (at most that much apart). refused: the scale lies
    beyond MAX_SCALE, so the factor is 1 and no pixel agrees."""

    factor: object
    agree_index: np.ndarray
    shape: tuple
    scale: float
    measured: int
    tolerance: float
    refused: bool = False

    @property
    def agree(self):
        """(H, W) bool of agree_index."""
        mask = np.zeros(self.shape, bool)
        mask.reshape(-1)[self.agree_index] = True
        return mask


def correct(z, measured, confidence, config=CompletionConfig()):
    """Correction of a predicted z-depth map z (H, W) (metres, 0 = none) by measured z-depth
    (H, W) (0 = none), weighted by confidence (H, W) (>= 1, NaN/0 = none); None when no pixel has
    both. Works on the measured pixels only (flat indices) and a coarse grid for the field."""
    z = np.asarray(z, np.float32).reshape(-1)
    measured = np.asarray(measured, np.float32)
    shape = measured.shape
    index = np.flatnonzero(measured.reshape(-1) > 0)
    zi = z.take(index)
    index = index[zi > 0]
    if not len(index):
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.log(measured.reshape(-1).take(index)) - np.log(z.take(index))
    finite = np.isfinite(r)  # an infinite measurement or prediction tells nothing
    index, r = index[finite], r[finite]
    if not len(index):
        return None
    inlier = _inliers(r, np.median(r))
    fit = float(np.mean(r[inlier]))
    if implausible(np.exp(fit)):
        return Correction(1.0, np.zeros(0, np.int64), shape, float(np.exp(fit)), len(index), 0.0, refused=True)
    c = float(significant(fit)) if config.align else 0.0
    keep, at_measured, factor = inlier, 0.0, float(np.exp(c))
    if config.dense:
        weights = np.nan_to_num(np.asarray(confidence, np.float32).reshape(-1).take(index), nan=0.0)
        grid = _Grid(shape, index, config.radius * max(shape))
        for _ in range(2):
            coarse = grid.spread(r - c, np.where(keep, weights, 0.0))
            at_measured = grid.sample(coarse)
            keep = _inliers(r - c - at_measured, 0.0)
        # The factor is smooth: made on the coarse grid and interpolated (one full-size pass).
        factor = grid.upsample(np.exp(c + shrink_log(coarse)).astype(np.float32))
    left = r - c - at_measured
    kept = left[keep]
    tolerance = max(AGREE_SIGMAS * _robust_sigma(kept, np.median(kept)) if len(kept) else 0.0, MIN_AGREE)
    agree = np.abs(left) < tolerance
    return Correction(factor, index[agree], shape, float(np.exp(c)), len(index), float(tolerance))


def implausible(ratio):
    """Whether a ratio of measured to predicted depth lies beyond MAX_SCALE (either way)."""
    return bool(abs(np.log(ratio)) > np.log(MAX_SCALE))


def significant(log_scale):
    """A log scale correction, 0 when within BIAS_FLOOR of 0."""
    return log_scale if abs(log_scale) > BIAS_FLOOR else 0.0


def shrink_log(x):
    """A log-depth correction field x moved BIAS_FLOOR towards 0 (0 within it)."""
    return np.sign(x) * np.maximum(np.abs(x) - BIAS_FLOOR, 0.0)


def _robust_sigma(r, centre):
    """1.4826 · median |r - centre| (a Gaussian's sigma from the median absolute deviation), at least MIN_SIGMA."""
    return max(1.4826 * float(np.median(np.abs(r - centre))), MIN_SIGMA)


def _inliers(r, centre):
    """Residuals within OUTLIER_SIGMAS robust sigmas of `centre`: (N,) bool."""
    return np.abs(r - centre) <= OUTLIER_SIGMAS * _robust_sigma(r, centre)


class _Grid:
    """Normalised convolution of values at the measured pixels (flat `index` into an image of
    `shape`), Gaussian of sigma_px, shrunk towards 0 where the weighted density of the measured
    pixels is below SUPPORT.

    The field is smooth at the scale sigma_px, so it is computed on a grid of cells of about
    sigma_px / CELL_PER_SIGMA pixels (each cell sums its pixels' weighted values) and blurred
    there: the cost hardly depends on the image size. Cell centres sit at cell·k + (cell - 1) / 2
    pixels, as cv2.resize maps them (`upsample`); `sample` interpolates at the measured pixels alike."""

    def __init__(self, shape, index, sigma_px):
        self.shape, self.sigma_px = shape, sigma_px
        self.cell = cell = max(1, int(sigma_px / CELL_PER_SIGMA))
        self.size = -(-shape[0] // cell), -(-shape[1] // cell)
        rows, cols = np.divmod(index, shape[1])
        self.bins = (rows // cell) * self.size[1] + cols // cell
        rows_in = np.minimum(shape[0] - cell * np.arange(self.size[0]), cell)
        cols_in = np.minimum(shape[1] - cell * np.arange(self.size[1]), cell)
        self.pixels = np.outer(rows_in, cols_in).astype(np.float32)  # image pixels in each cell
        # Bilinear sampling of the grid at the measured pixels: the four cells around each and weights.
        y = np.clip((rows - (cell - 1) / 2) / cell, 0, self.size[0] - 1)
        x = np.clip((cols - (cell - 1) / 2) / cell, 0, self.size[1] - 1)
        y0, x0 = np.minimum(y.astype(np.int64), self.size[0] - 2).clip(0), \
            np.minimum(x.astype(np.int64), self.size[1] - 2).clip(0)
        fy, fx = np.clip(y - y0, 0, 1), np.clip(x - x0, 0, 1)
        w = self.size[1]
        y1, x1 = np.minimum(y0 + 1, self.size[0] - 1), np.minimum(x0 + 1, w - 1)
        self.corners = np.stack([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1])
        self.weights = np.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx])

    def spread(self, values, weights):
        """The coarse field (h, w) float32 of values (K,) with weights (K,) at the measured pixels."""
        n = self.size[0] * self.size[1]
        grids = [np.bincount(self.bins, v, n).reshape(self.size).astype(np.float32)
                 for v in (weights * values, weights, (weights > 0).astype(np.float32))]
        sigma = self.sigma_px / self.cell
        # Zero padding, as normalised convolution assumes (outside the image nothing was measured).
        blur = lambda g: cv2.GaussianBlur(g, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)  # noqa: E731
        num, den, count = (blur(g) for g in grids)
        with np.errstate(invalid="ignore", divide="ignore"):
            density = count / blur(self.pixels)  # measured pixels per image pixel (edge cells are partial)
            return (np.where(den > 0, num / den, 0.0) * density / (density + SUPPORT)).astype(np.float32)

    def sample(self, coarse):
        """A coarse grid bilinearly interpolated at the measured pixels: (K,)."""
        return np.sum(coarse.reshape(-1)[self.corners] * self.weights, axis=0)

    def upsample(self, coarse):
        """A coarse grid bilinearly interpolated to the full image: (H, W) float32."""
        h, w = self.size
        return cv2.resize(coarse, (w * self.cell, h * self.cell),
                          interpolation=cv2.INTER_LINEAR)[:self.shape[0], :self.shape[1]]
