"""Resize + center crop of camera images to the model resolution, and the way back.

Follows upstream MapAnything's default image loading (facebookresearch/map-anything,
`mapanything/utils/image.py` `load_images`/`preprocess_inputs` with resize_mode="fixed_mapping",
and `mapanything/utils/cropping.py` `crop_resize_if_necessary`): the output size comes from a
fixed per-aspect-ratio table (long side 518, sides multiples of 14; the entry with the closest
aspect ratio wins); the image is scaled by s = max(W_out/W_in, H_out/H_in) (+1e-8, as upstream)
to floor(s·W_in) x floor(s·H_in), which covers the output, then center-cropped with offset
((W' - W_out)//2, (H' - H_out)//2). For another long side or patch size, upstream's
"longest_side" rule is used (long side floored to a patch multiple, short side rounded).

Geometry. The resampling is area-aligned (pixel centres at index + 0.5 in corner coordinates,
as cv2.resize and PIL do), with the exact per-axis scale W'/W_in, H'/H_in of the resized image.
In pixel-index coordinates (pixel j at x = j) an output coordinate x maps to the source
coordinate (x + 0.5 + crop_x) * W_in / W' - 0.5. For a pinhole camera under the index grid this is
exactly upstream's `camera_matrix_of_crop` rule cx' = (cx + 0.5)·s - 0.5 - crop_x, fx' = fx·s:
(x - cx')/fx' = (to_source(x) - cx)/fx. (Upstream scales K by s while resizing the image by
floor(s·W)/W; the difference is below 1e-3 relative and we use the image's true scale.)
Under the center grid the same source point is used, shifted by +0.5 in both K conventions.
"""

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from . import arrays

try:  # the compiled edge test (CMakeLists.txt builds it); edge_jumps does the same in numpy
    from .. import _resample
except ImportError:
    _resample = None

# Upstream RESOLUTION_MAPPINGS[518]: (width, height) per aspect ratio W/H.
MODEL_SIZES_518 = {
    1.000: (518, 518), 1.321: (518, 392), 1.542: (518, 336), 1.762: (518, 294),
    2.056: (518, 252), 3.083: (518, 168), 0.757: (392, 518), 0.649: (336, 518),
    0.567: (294, 518), 0.486: (252, 518),
}
LONG_SIDE = 518
PATCH = 14


def model_size(width, height, long_side=LONG_SIDE, patch=PATCH):
    """(width, height) of the model input for an image of width x height pixels (any aspect)."""
    aspect = width / height
    if (long_side, patch) == (LONG_SIDE, PATCH):
        return MODEL_SIZES_518[min(MODEL_SIZES_518, key=lambda a: abs(a - aspect))]
    n = long_side // patch
    if n < 1:
        raise ValueError(f"long_side {long_side} is smaller than the patch size {patch}")
    short = max(1, round(n / aspect if aspect >= 1 else n * aspect)) * patch
    return (n * patch, short) if aspect >= 1 else (short, n * patch)


@dataclass(frozen=True)
class Resize:
    """Scale in_size to resized_size, then crop out_size at crop (x, y). Sizes are (width, height)."""

    in_size: tuple
    resized_size: tuple
    crop: tuple
    out_size: tuple

    @classmethod
    def cover(cls, in_size, out_size):
        """Scale to cover out_size keeping the aspect ratio, then center crop (upstream rule)."""
        (wi, hi), (wo, ho) = in_size, out_size
        s = max(wo / wi, ho / hi) + 1e-8
        wr, hr = max(wo, int(np.floor(wi * s))), max(ho, int(np.floor(hi * s)))
        return cls((wi, hi), (wr, hr), ((wr - wo) // 2, (hr - ho) // 2), (wo, ho))

    @classmethod
    def to_model(cls, width, height, long_side=LONG_SIDE, patch=PATCH):
        """The resize of a width x height image to the model resolution (see model_size)."""
        return cls.cover((width, height), model_size(width, height, long_side, patch))

    @classmethod
    def stretch(cls, in_size, out_size):
        """Scale to out_size exactly (aspect ratio may change), no crop."""
        return cls(tuple(in_size), tuple(out_size), (0, 0), tuple(out_size))

    @property
    def scale(self):
        """(sx, sy) output pixels per input pixel."""
        return self.resized_size[0] / self.in_size[0], self.resized_size[1] / self.in_size[1]

    def to_source(self, u, v):
        """Input pixel-index coordinates of output pixel-index coordinates u, v (arrays)."""
        sx, sy = self.scale
        return (np.asarray(u, dtype=np.float64) + 0.5 + self.crop[0]) / sx - 0.5, (
            np.asarray(v, dtype=np.float64) + 0.5 + self.crop[1]
        ) / sy - 0.5

    def to_output(self, u, v):
        """Output pixel-index coordinates of input pixel-index coordinates (inverse of to_source)."""
        sx, sy = self.scale
        return (np.asarray(u, dtype=np.float64) + 0.5) * sx - 0.5 - self.crop[0], (
            np.asarray(v, dtype=np.float64) + 0.5
        ) * sy - 0.5 - self.crop[1]

    def rays(self, camera, grid="index"):
        """Unit rays (H_out, W_out, 3) of `camera`'s full model at the output pixels: camera.rays at
        to_source(j, i) + grid offset, no K-scaling shortcut. Cached and read-only (see CameraModel.ray_map).
        """
        return camera.ray_map(grid=grid, resize=self)

    def image(self, img):
        """Resized and cropped image (H_out, W_out[, C]).

        cv2.INTER_AREA when shrinking (anti-aliased, like upstream's Lanczos), INTER_CUBIC when
        enlarging (upstream uses bicubic there too).
        """
        self._check(img)
        shrink = self.resized_size[0] <= self.in_size[0] and self.resized_size[1] <= self.in_size[1]
        out = cv2.resize(img, self.resized_size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
        return self._crop(out)

    def sparse_depth(self, depth, mode="min"):
        """Depth map (H_in, W_in), 0 = no measurement, at the output size; never interpolated.

        "nearest": the input pixel nearest to each output pixel centre (point sampling, as
        upstream's cv2.INTER_NEAREST). "min": the smallest positive value among the input
        pixels whose centres fall in the output pixel (the nearest surface wins; keeps sparse
        measurements that point sampling would drop). Output float32, 0 where none.
        """
        self._check(depth)
        depth = np.asarray(depth, dtype=np.float32)
        wo, ho = self.out_size
        if mode == "nearest":
            v, u = np.mgrid[0:ho, 0:wo]
            su, sv = self.to_source(u, v)
            ju = np.clip(np.floor(su + 0.5).astype(np.int64), 0, self.in_size[0] - 1)
            iv = np.clip(np.floor(sv + 0.5).astype(np.int64), 0, self.in_size[1] - 1)
            out = depth[iv, ju]
            return np.where(np.isfinite(out) & (out > 0), out, 0.0).astype(np.float32)
        if mode != "min":
            raise ValueError(f"unknown sparse depth mode {mode!r}; expected 'nearest' or 'min'")
        flat = depth.reshape(-1)
        with np.errstate(invalid="ignore"):
            index = np.flatnonzero(flat > 0)
        values = flat.take(index)
        columns, rows = _pooling_maps(self)
        ou, ov = columns.take(index % self.in_size[0]), rows.take(index // self.in_size[0])
        inside = np.flatnonzero((ou >= 0) & (ov >= 0) & np.isfinite(values))
        out = np.full(ho * wo, np.inf, dtype=np.float32)
        np.minimum.at(out, ov.take(inside) * wo + ou.take(inside), values.take(inside))
        out[np.isinf(out)] = 0.0
        return out.reshape(ho, wo)

    def to_native(self, values, mode="nearest", max_jump=None):
        """Resample an output-resolution map (H_out, W_out[, C]) back to the input resolution.

        "nearest" copies the nearest output pixel's value. "bilinear" interpolates between the
        (up to) 4 output pixels around each input pixel; only neighbours with a nonzero weight
        count, and one of them being NaN gives NaN. Over the outer half pixel of the crop (input
        pixels whose centres lie between the border output pixel centres and the crop edge) the
        border pair's slope is extrapolated, so maps affine in the pixel coordinates are
        reproduced exactly up to the crop edge. max_jump (bilinear, positive maps such as inverse
        depth): NaN where two neighbours used straddle a discontinuity, a step between adjacent
        output pixels that departs from the local slope: their difference differs from the
        differences next to it along the same row or column, on both sides, by more than
        max_jump times the smaller of the two values (steep but smooth surfaces, whose
        differences change slowly, are kept). Input pixels outside the cropped region are NaN.
        Returns float32 for float input, else float64.
        """
        values = np.asarray(values)
        wo, ho = self.out_size
        if values.shape[:2] != (ho, wo):
            raise ValueError(f"map is {values.shape[:2]} (H, W), expected {(ho, wo)}")
        dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.float64
        c0, fx, r0, fy, inside = self.cells()
        if mode == "nearest":
            out = values.reshape(ho * wo, *values.shape[2:])[self.nearest_index()].astype(dtype)
        elif mode == "bilinear":
            def lerp(a, b, f):  # a·(1 - f) + b·f; a value with weight 0 does not count (its NaN does not spread)
                with np.errstate(invalid="ignore"):
                    return np.where(f == 0, a, np.where(f == 1, b, a * (1 - f) + b * f))

            c1, r1 = np.minimum(c0 + 1, wo - 1), np.minimum(r0 + 1, ho - 1)
            fx, fy = fx[None, :], fy[:, None]
            if values.ndim == 3:
                fx, fy = fx[..., None], fy[..., None]
            v = values.astype(np.float64)
            corners = [v[r[:, None], c[None, :]] for r in (r0, r1) for c in (c0, c1)]
            out = lerp(lerp(corners[0], corners[1], fx), lerp(corners[2], corners[3], fx), fy).astype(dtype)
            if max_jump is not None:
                if values.ndim != 2:
                    raise ValueError("max_jump needs a single-channel (H, W) map")
                out[edge_cut(v, max_jump, *self.cut_pairs())] = np.nan
        else:
            raise ValueError(f"unknown resampling mode {mode!r}; expected 'nearest' or 'bilinear'")
        out[~inside] = np.nan
        return out

    def cells(self):
        """Where each input pixel lies among the output pixel centres (pixel-index coordinates).

        Returns (cols, fx, rows, fy, inside): cols (W_in,) int64, the output column c0 left of each
        input column, in [0, W_out - 2] (its right neighbour is c0 + 1), and fx = x - c0 in
        [-0.5, 1.5) (outside [0, 1] over the outer half pixel of the crop); rows, fy likewise per
        input row; inside (H_in, W_in) bool, input pixels whose centres lie in the cropped region.
        """
        (wo, ho), (wi, hi) = self.out_size, self.in_size
        x, y = self.to_output(np.arange(wi), np.arange(hi))
        inside = ((y >= -0.5) & (y < ho - 0.5))[:, None] & ((x >= -0.5) & (x < wo - 0.5))[None, :]
        c0 = np.clip(np.floor(x).astype(np.int64), 0, max(wo - 2, 0))
        r0 = np.clip(np.floor(y).astype(np.int64), 0, max(ho - 2, 0))
        return c0, x - c0, r0, y - r0, inside

    def nearest_index(self):
        """(H_in, W_in) int64: the flat index (row · W_out + col) of the output pixel nearest to
        each input pixel (clamped at the crop's border; see cells for which are inside)."""
        (wo, ho) = self.out_size
        cols, rows = _nearest_output(self)
        return np.clip(rows, 0, ho - 1)[:, None] * wo + np.clip(cols, 0, wo - 1)[None, :]

    def cut_pairs(self):
        """The adjacent output pixel pairs that bilinear interpolation uses at each input pixel, as
        flat indices into edge_jumps' arrays: (across, down), int64 (2, H_in, W_in) each, across
        for the cell's top and bottom rows, down for its left and right columns. A pair counts
        (cut_sides) when both its pixels have a nonzero weight; H_out·W_out (no pair) where not."""
        wo, ho = self.out_size
        c0, _, r0, _, _ = self.cells()
        c1, r1 = np.minimum(c0 + 1, wo - 1), np.minimum(r0 + 1, ho - 1)
        cell = lambda r, c: r[:, None] * wo + c[None, :]  # noqa: E731
        top, bottom, left, right = self._sides()
        none = ho * wo
        across = [np.where(top, cell(r0, c0), none), np.where(bottom, cell(r1, c0), none)]
        down = [np.where(left, cell(r0, c0), none), np.where(right, cell(r0, c1), none)]
        return np.stack(across), np.stack(down)

    def cut_sides(self):
        """The sides of the output cell around each input pixel whose pair counts in cut_pairs
        (top: across[0], bottom: across[1], left: down[0], right: down[1]), as bits 0 to 3 of an
        (H_in, W_in) uint8: one pass per side, without cut_pairs' index arrays."""
        top, bottom, left, right = (s.view(np.uint8) for s in self._sides())
        return top | bottom << 1 | left << 2 | right << 3

    def _sides(self):
        """(top, bottom, left, right) bool (H_in, W_in): where a side of the output cell around an
        input pixel has both its pixels at a nonzero bilinear weight."""
        _, fx, _, fy, _ = self.cells()
        fx, fy = fx[None, :], fy[:, None]
        inner_x, inner_y = (fx != 0) & (fx != 1), (fy != 0) & (fy != 1)
        return inner_x & (fy != 1), inner_x & (fy != 0), inner_y & (fx != 1), inner_y & (fx != 0)

    def _check(self, img):
        if tuple(np.shape(img)[:2]) != (self.in_size[1], self.in_size[0]):
            raise ValueError(f"image is {np.shape(img)[:2]} (H, W), resize expects {self.in_size[::-1]}")

    def _crop(self, img):
        (x, y), (w, h) = self.crop, self.out_size
        return img[y : y + h, x : x + w]


def edge_jumps(v, max_jump):
    """Discontinuities between adjacent pixels of a positive map v (H, W) (see Resize.to_native's
    max_jump), flat for gathering: (across, down), bool (H·W + 1,). across[r·W + c] is a jump
    between (r, c) and (r, c + 1), down[r·W + c] one between (r, c) and (r + 1, c); both are False
    past the last column / row and at index H·W, which stands for "no pair". Computed in v's dtype,
    where v is (numpy array or torch tensor, see geometry.arrays): on the host, for float32 and a
    max_jump that numpy multiplies in float32 (a Python number, under NumPy 2's NEP 50, or a
    float32), in one compiled pass (the same bits)."""
    h, w = v.shape
    across, down = arrays.zeros((2, h * w + 1), bool, v)
    compiled = _resample is not None and isinstance(v, np.ndarray) and v.dtype == np.float32 and v.size
    if compiled and type(max_jump) in (float, int, np.float32):
        _resample.jumps(np.ascontiguousarray(v), w, max_jump, across, down)
        return across, down
    across[:-1].reshape(h, w)[:, :-1] = _jumps(v, max_jump, axis=1)
    down[:-1].reshape(h, w)[:-1] = _jumps(v, max_jump, axis=0)
    return across, down


def edge_cut(v, max_jump, across, down):
    """Where the pairs given by flat indices across and down (any equal shapes, see
    Resize.cut_pairs; leading axis: the pairs of one pixel) of a positive map v (H, W) straddle a
    discontinuity (edge_jumps): bool, their shape without the leading axis."""
    jump_across, jump_down = edge_jumps(v, max_jump)
    return np.any(jump_across[across], axis=0) | np.any(jump_down[down], axis=0)


def _jumps(v, max_jump, axis):
    """Discontinuities between neighbours along `axis` of a map v (H, W) (see Resize.to_native):
    bool, one shorter along axis. A difference is compared with the differences before and after
    it (where they exist and are finite); with neither, with zero."""
    xp = arrays.namespace(v)
    d = xp.diff(v, 1, axis)
    n = d.shape[axis]
    take = lambda a, lo, hi: a[(slice(None),) * axis + (slice(lo, hi),)]  # noqa: E731
    with np.errstate(invalid="ignore"):
        dev = xp.full_like(d, np.inf)
        if n > 1:
            before = xp.abs(take(d, 1, n) - take(d, 0, n - 1))  # each difference against the previous one
            take(dev, 1, n)[...] = xp.where(xp.isnan(before), np.inf, before)
            take(dev, 0, n - 1)[...] = xp.minimum(take(dev, 0, n - 1), take(dev, 1, n))
        dev = xp.where(xp.isinf(dev), xp.abs(d), dev)
        jump = dev > max_jump * xp.minimum(take(v, 0, n), take(v, 1, n + 1))
    return jump


def _nearest_output(resize):
    """(column (W_in,), row (H_in,)) int64: the output pixel whose cell holds each input pixel
    centre, floor(to_output + 0.5), unbounded (the mapping is separable: one per column and row)."""
    u, v = resize.to_output(np.arange(resize.in_size[0]), np.arange(resize.in_size[1]))
    return np.floor(u + 0.5).astype(np.int64), np.floor(v + 0.5).astype(np.int64)


@lru_cache(maxsize=16)
def _pooling_maps(resize):
    """_nearest_output with -1 outside the output (cached: per-pixel pooling is two lookups)."""
    maps = _nearest_output(resize)
    for cell, size in zip(maps, resize.out_size):
        cell[(cell < 0) | (cell >= size)] = -1
    return maps
