"""Inverse z-depth from the model resolution back at a camera's native resolution, exact on planes
under any lens model.

A plane n·X = c seen along the ray through normalised image coordinates (u, v) = (x/z, y/z) has
1/z = n·(u, v, 1) / c: affine in (u, v), whatever the distortion that maps pixels to (u, v).
So each native pixel takes the barycentric weights of its own calibrated ray's (u, v) in a
triangle of three model pixels' (u, v) and applies them to their inverse depths, which is exact
for any plane through those three points. (Bilinear interpolation in pixel coordinates,
Resize.to_native, is exact only where (u, v) is affine in pixels: pinhole cameras.)

Triangles: the model cell (2 x 2 pixels) around a native pixel is split along the diagonal from
(r0, c1) to (r1, c0); the native pixel's position in pixels picks the half, the "corner" being the
right-angle vertex, (r0, c0) or (r1, c1). A native pixel that falls on a model pixel copies it (so
at the model size every value is kept, and a NaN stays one pixel); elsewhere all three vertices
count, one of them being NaN gives NaN (on a cell side the third vertex's weight is small but not
zero: the sides are curves in (u, v)). The discontinuity cut is Resize.to_native's, over the pairs
of the cell that bilinear interpolation would use (Resize.cut_pairs): a triangle's own two pairs
miss steps that the local-slope test only sees from the cell's other side. It is evaluated per
model cell once (a 4-bit mask of the cell's sides that jump) and gathered per native pixel with
a 4-bit mask of the sides that count there: one gather instead of four.

The weights depend only on the camera, the resize and the pixel grid, so they are computed once
per (camera, resize, grid) and cached, by the compiled _resample.stencil where it is built
(numpy's bits). The exact rays: the model pixels' from the model-size ray map the batch caches,
the native pixels' (CameraModel.ray_map's bits) made for the build and not kept (a 1920 x 1200
camera's would hold 55 MB). The first native depth of a camera waits for the build (bench_geometry
part 4: about 0.3 s at 1920 x 1200 plumb_bob, most of it the native pixels' undistortion). apply and
cut also take torch tensors, on any device: the tables are copied there once per (stencil,
device) (geometry.arrays.tables). Nearest is the same for "nearest" resampling.
"""

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from . import arrays
from .camera import GRID_INDEX, grid_offset
from .resize import edge_jumps

try:  # the compiled tables (CMakeLists.txt builds them): _stencil_tables' bits
    from .. import _resample
except ImportError:
    _resample = None


@dataclass(frozen=True, eq=False)
class Stencil:
    """How a model-resolution map becomes a native one: native pixel k is
    sum_j weight[j, k] · map.flat[index[j, k]] over the three triangle vertices j.

    index (3, N) intp and weight (3, N) float32 (where one model pixel is copied: 1 for it, 0 for
    the others, which point at it too; NaN where the native pixel gets no value: outside the crop,
    invalid or backward (z <= 0) native or model rays); cell (N,) intp: the model cell (its
    top-left pixel, flat) of each native pixel; sides (N,) uint8: the cell sides whose
    discontinuities count there (bit 0 top, 1 bottom, 2 left, 3 right; Resize.cut_sides); shape
    (H, W) native, model_size (width, height).
    """

    index: np.ndarray
    weight: np.ndarray
    cell: np.ndarray
    sides: np.ndarray
    shape: tuple
    model_size: tuple

    @property
    def tables(self):
        """(index, weight, cell, sides): what apply and cut gather with (see geometry.arrays.tables)."""
        return self.index, self.weight, self.cell, self.sides

    def apply(self, values):
        """The native (H, W) map of a model-resolution map (H_m, W_m): float32, or complex64 for a
        complex64 map (two real maps resampled by the same gathers); NaN where a vertex used is
        NaN or the pixel has no value. A torch tensor is resampled on its device (geometry.arrays)."""
        xp = arrays.namespace(values)
        if xp is np:
            values = np.asarray(values)
        if values.dtype != xp.complex64:
            values = arrays.astype(values, np.float32)
        self.check(values.shape)
        index, weight, _, _ = arrays.tables(self, values)
        flat = values.reshape(-1)
        out = flat.take(index[0])
        out *= weight[0]
        for j in (1, 2):
            term = flat.take(index[j])
            term *= weight[j]
            out += term
        return out.reshape(self.shape)

    def check(self, shape):
        """ValueError unless `shape` is the model map's (H, W)."""
        if tuple(shape) != self.model_size[::-1]:
            raise ValueError(f"map is {tuple(shape)} (H, W), expected {self.model_size[::-1]}")

    def cut(self, values, max_jump):
        """Native (H, W) bool: pixels whose counting vertices straddle a discontinuity of the
        positive model map `values` (see Resize.to_native's max_jump; numpy or a torch tensor)."""
        return self.cut_at(*edge_jumps(arrays.astype(values, np.float32), max_jump))

    def cut_at(self, across, down):
        """cut() of a model map whose discontinuities edge_jumps gave: (across, down), flat, False
        past the last column / row."""
        _, _, cell, cell_sides = arrays.tables(self, across)
        w, h = self.model_size
        n = w * h
        u8 = arrays.namespace(across).uint8
        sides = arrays.astype(across[:n], np.uint8)
        sides[:n - w] |= across[w:n].view(u8) << 1
        sides |= down[:n].view(u8) << 2
        sides[:n - 1] |= down[1:n].view(u8) << 3
        return (sides.take(cell) & cell_sides).reshape(self.shape) != 0


@dataclass(frozen=True, eq=False)
class Nearest:
    """How a model-resolution map becomes a native one by copying the nearest model pixel: native
    pixel k is map.flat[index[k]], NaN where outside[k] (outside the crop). index (N,) int64,
    outside (N,) bool, shape (H, W) native (Resize.nearest_index)."""

    index: np.ndarray
    outside: np.ndarray
    shape: tuple

    @property
    def tables(self):
        """(index, outside) (see geometry.arrays.tables)."""
        return self.index, self.outside

    def apply(self, values):
        """The native (H, W) map of a float model-resolution map (H_m, W_m), numpy or a torch tensor."""
        index, outside = arrays.tables(self, values)
        out = values.reshape(-1).take(index)
        out[outside] = np.nan
        return out.reshape(self.shape)


def stencil(camera, resize, grid=GRID_INDEX):
    """The (cached) Stencil from `camera`'s native pixels to the model pixels of `resize`, with
    rays under pixel grid `grid` (as window.ViewBatch.grid; see geometry.camera)."""
    if resize.in_size != camera.image_size:
        raise ValueError(f"resize is for a {resize.in_size} image, the camera publishes {camera.image_size}")
    grid_offset(grid)  # validates the name
    return _stencil(camera, resize, grid)


@lru_cache(maxsize=16)
def nearest(resize):
    """The (cached) Nearest from the input pixels of `resize` to its output pixels."""
    index = resize.nearest_index()
    out = Nearest(index.reshape(-1), ~resize.cells()[4].reshape(-1), index.shape)
    for a in out.tables:
        a.setflags(write=False)
    return out


def native_inverse_depth(camera, resize, grid, inv_z, max_jump=None):
    """Inverse z-depth (1/m) at `camera`'s native resolution, (H, W) float32, NaN where none.

    inv_z (H_m, W_m): inverse z-depth at the model pixels of `resize` (rays under `grid`), NaN
    where none. max_jump: NaN where the counting model pixels straddle a discontinuity (a step in
    inverse depth departing from the local slope by more than max_jump relative, as
    Resize.to_native); None: no cut.
    """
    st = stencil(camera, resize, grid)
    out = st.apply(inv_z)
    if max_jump is not None:
        out[st.cut(inv_z, max_jump)] = np.nan
    return out


@lru_cache(maxsize=16)
def _stencil(camera, resize, grid):
    (wo, ho), (wi, hi) = resize.out_size, resize.in_size
    c0, fx, r0, fy, inside = resize.cells()
    uv = _plane_coords(camera.ray_map(grid=grid, resize=resize)).reshape(-1, 2)  # the batch's: cached
    off = grid_offset(grid)  # the native pixels' rays, not kept: camera.ray_map(grid=grid)'s bits
    p = _plane_coords(camera.rays(np.arange(wi) + off, np.arange(hi)[:, None] + off)).reshape(-1, 2)
    if _resample is not None:
        index, weight = np.empty((3, hi * wi), np.intp), np.empty((3, hi * wi), np.float32)
        _resample.stencil(np.ascontiguousarray(uv), np.ascontiguousarray(p), c0.astype(np.intp), fx,
                          r0.astype(np.intp), fy, np.ascontiguousarray(inside), wo, index, weight)
    else:
        index, weight = _stencil_tables(uv, p, c0, fx, r0, fy, inside, wo, ho)
    out = Stencil(index, weight, (r0[:, None] * wo + c0[None, :]).ravel(), resize.cut_sides().ravel(), (hi, wi),
                  (wo, ho))
    for a in (out.index, out.weight, out.cell, out.sides):
        a.setflags(write=False)
    return out


def _stencil_tables(uv, p, c0, fx, r0, fy, inside, wo, ho):
    """(index (3, N) intp, weight (3, N) float32) of Stencil for native pixels p (N, 2) and model
    pixels uv (H_m * W_m, 2) (normalised image coordinates), where Resize.cells put them (c0, fx per
    native column; r0, fy per native row; inside (H, W)), model width wo and height ho (the compiled
    _resample.stencil computes the same bits)."""
    hi, wi = inside.shape
    fx, fy = np.broadcast_to(fx[None, :], (hi, wi)).ravel(), np.broadcast_to(fy[:, None], (hi, wi)).ravel()
    rows, cols = np.broadcast_to(r0[:, None], (hi, wi)).ravel(), np.broadcast_to(c0[None, :], (hi, wi)).ravel()
    c1, r1 = np.minimum(cols + 1, wo - 1), np.minimum(rows + 1, ho - 1)
    # Corner k, its neighbour x along the row and y along the column, and their weights in pixels.
    far = fx + fy > 1
    rk, ck = np.where(far, r1, rows), np.where(far, c1, cols)
    cx, ry = np.where(far, cols, c1), np.where(far, rows, r1)
    px, py = np.where(far, 1 - fx, fx), np.where(far, 1 - fy, fy)
    index = np.stack([rk * wo + ck, rk * wo + cx, ry * wo + ck])
    counts = np.stack([1 - px - py != 0, px != 0, py != 0])  # zero pixel weights: on a cell side or diagonal
    single = counts & (counts.sum(axis=0) == 1)  # on a model pixel
    weight = _barycentric(p, uv[index[0]], uv[index[1]], uv[index[2]], single)
    weight[:, ~inside.ravel()] = np.nan
    # Where one model pixel is copied the others point at it, so their values are not read.
    index = np.where(single.any(axis=0), index[np.argmax(single, axis=0), np.arange(index.shape[1])], index)
    with np.errstate(over="ignore"):  # a weight beyond float32's range becomes inf (as the compiled cast)
        return index.astype(np.intp, copy=False), weight.astype(np.float32)


def _plane_coords(rays):
    """(..., 2) normalised image coordinates (x/z, y/z) of rays (..., 3); NaN where z <= 0 or invalid."""
    z = rays[..., 2:3]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = rays[..., :2] / z
    out[~(z[..., 0] > 0)] = np.nan  # in place: one (H, W, 2) array, not three
    return out


def _barycentric(p, a, b, c, single):
    """(3, N) barycentric weights of points p (N, 2) in triangles a, b, c (N, 2 each); where
    single (3, N) marks one vertex (the point is that model pixel), 1 there and 0 elsewhere. NaN
    where p, or a vertex needed, is not finite, or the triangle is degenerate."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # NaN or inf weights: bad below
        ab, ac, ap = b - a, c - a, p - a
        cross = lambda s, t: s[:, 0] * t[:, 1] - s[:, 1] * t[:, 0]  # noqa: E731
        det = cross(ab, ac)
        wb, wc = cross(ap, ac) / det, cross(ab, ap) / det
        weight = np.stack([1 - wb - wc, wb, wc])
    one = single.any(axis=0)
    weight[:, one] = single[:, one]
    bad = ~np.all(np.isfinite(weight), axis=0) | ~np.isfinite(p).all(axis=1)
    weight[:, bad] = np.nan
    return weight
