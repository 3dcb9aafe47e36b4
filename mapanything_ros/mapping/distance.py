"""The distance field of an occupancy slice (a 2D ESDF): how far each known cell of a Grid2D is from
the nearest occupied one, for planners that want clearance rather than occupancy (numpy, OpenCV).

Distances are between cell centres (as voxblox's and nvblox's ESDFs): 0 in occupied cells, a
multiple of the cell's diagonal steps elsewhere, exact Euclidean (OpenCV's distanceTransform with
the precise mask, Felzenszwalb and Huttenlocher's algorithm), clipped at a maximum. Only observed
occupied cells are obstacles: an unknown cell is neither obstacle nor free, and has no distance.

A field made from an earlier grid of the same map updates: a cell's clipped distance depends only
on the obstacles within the maximum of it, so only the cells that near a cell whose occupancy
changed (or that the grid's box gained) are computed again, from the obstacles within the
maximum of them; the others keep theirs. The result is the field made anew, to float32 rounding
(OpenCV's vector and scalar paths can differ in the last bits: 2 ulp at most seen).
"""

from dataclasses import dataclass, field

import cv2
import numpy as np

from .grid import Grid2D

_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class DistanceSlice:
    """Distances (H, W) float32 metres, NaN where the grid is unknown, on the cells of the Grid2D it
    was made from (row-major from `origin` (x, y) metres, rows along y, cells of `resolution`)."""

    distance: np.ndarray
    origin: tuple
    resolution: float
    # What an update starts from: the grid's obstacles (H, W) bool, every cell's clipped distance
    # (H, W) float32 metres (unknown cells' too), and the maximum.
    occupied: np.ndarray = field(default=None, repr=False)
    reach: np.ndarray = field(default=None, repr=False)
    max_distance: float = None

    def points(self, z):
        """(centres (N, 3) float32 of the known cells at height z, metres (clipped to float32's
        finite range); their distances (N,)), in row-major cell order."""
        known = np.isfinite(self.distance)
        per_row = np.count_nonzero(known, axis=1)
        h, w = known.shape
        xs = (self.origin[0] + (np.arange(w) + 0.5) * self.resolution).astype(np.float32)
        ys = (self.origin[1] + (np.arange(h) + 0.5) * self.resolution).astype(np.float32)
        xyz = np.empty((int(per_row.sum()), 3), np.float32)
        xyz[:, 0] = np.broadcast_to(xs, known.shape)[known]  # (boolean masks: 4x faster than a 2D nonzero)
        xyz[:, 1] = np.repeat(ys, per_row)
        xyz[:, 2] = np.clip(z, -_FLOAT32_MAX, _FLOAT32_MAX)
        return xyz, self.distance[known]


def distance_slice(grid, max_distance, previous=None):
    """DistanceSlice of a Grid2D (-1 unknown / 0 free / 100 occupied): each known cell's distance to
    the nearest occupied cell's centre (metres, 0 in occupied cells, at most max_distance: also
    where nothing is occupied). `previous`: a DistanceSlice made by this function from an earlier
    grid (any, e.g. of the map before its last keyframes); where it has the same resolution and
    maximum and its box lies within this grid's, only the cells within max_distance of a change
    are computed again (the same distances as made anew, to float32 rounding)."""
    cells = np.asarray(grid.cells)
    if max_distance <= 0:
        raise ValueError(f"max_distance must be > 0, got {max_distance}")
    occupied = cells == Grid2D.OCCUPIED
    reach = _updated(previous, occupied, grid.origin, grid.resolution, max_distance)
    if reach is None:
        reach = _reach(occupied, grid.resolution, max_distance)
    distance = np.where(cells != Grid2D.UNKNOWN, reach, np.float32(np.nan))
    return DistanceSlice(distance, grid.origin, grid.resolution, occupied, reach, max_distance)


def _reach(occupied, resolution, max_distance):
    """Every cell's distance (H, W) float32 metres to the nearest of `occupied` (H, W) bool, at most
    max_distance (also where none is)."""
    if not occupied.any():
        return np.full(occupied.shape, _cap(max_distance))
    steps = cv2.distanceTransform((~occupied).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.minimum(steps * np.float32(resolution), _cap(max_distance))


def _cap(max_distance):
    """max_distance as float32: infinite beyond float32's range (no distance reaches it)."""
    with np.errstate(over="ignore"):
        return np.float32(max_distance)


def _updated(previous, occupied, origin, resolution, max_distance):
    """The reach of `occupied` (on a box from `origin`) updated from a `previous` DistanceSlice, or
    None where it cannot be (none, another resolution or maximum, a box not within this one or
    not on the same cells). Cells farther than max_distance from every change keep their reach;
    the box about the changes and the cells the box gained, grown by max_distance, is computed
    again from the obstacles within max_distance of it."""
    if previous is None or previous.reach is None or previous.resolution != resolution or (
            previous.max_distance != max_distance):
        return None
    shift = (np.asarray(previous.origin, np.float64) - origin) / resolution  # (x, y) cells
    dx, dy = np.round(shift).astype(int)
    (h, w), (ph, pw) = occupied.shape, previous.occupied.shape
    if not np.allclose(shift, (dx, dy), rtol=0, atol=1e-6) or dx < 0 or dy < 0 or dx + pw > w or dy + ph > h:
        return None
    # The cells to compute again: a box about the changes within the previous box and the strips
    # of cells new to the box, each grown by the reach (cells), from the obstacles within the
    # reach of them (that box grown again). Each is exact, so where they overlap they agree.
    changed = previous.occupied != occupied[dy:dy + ph, dx:dx + pw]
    rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))  # (a 2D nonzero: 5x slower)
    boxes = [(dy + rows[0], dx + cols[0], dy + rows[-1] + 1, dx + cols[-1] + 1)] if len(rows) else []
    boxes += [box for box in ((0, 0, h, dx), (0, dx + pw, h, w), (0, 0, dy, w), (dy + ph, 0, h, w))  # new cells
              if box[0] < box[2] and box[1] < box[3]]
    r = int(min(np.ceil(max_distance / resolution), h + w))  # (farther reaches the whole box anyway)
    regions = []  # (cells to compute again, the cells whose obstacles reach them): top, left, bottom, right
    for lo, hi in ((np.array(box[:2]), np.array(box[2:])) for box in boxes):
        (top, left), (bottom, right) = np.maximum(lo - r, 0), np.minimum(hi + r, (h, w))
        regions.append(((top, left, bottom, right), (max(top - r, 0), max(left - r, 0), min(bottom + r, h),
                                                     min(right + r, w))))
    if sum((b - t) * (rt - lf) for _, (t, lf, b, rt) in regions) >= h * w:
        return None  # as much work as a field made anew (a small grid, changes all over it)
    if (ph, pw) == (h, w):
        reach = previous.reach.copy()
    else:
        reach = np.full(occupied.shape, _cap(max_distance))
        reach[dy:dy + ph, dx:dx + pw] = previous.reach
    for (top, left, bottom, right), (t, lf, b, rt) in regions:
        near = _reach(occupied[t:b, lf:rt], resolution, max_distance)
        reach[top:bottom, left:right] = near[top - t:bottom - t, left - lf:right - lf]
    return reach
