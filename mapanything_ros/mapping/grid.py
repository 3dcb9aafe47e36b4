"""The occupancy grid of a height band (numpy, no ROS): Grid2D, and the per-cell counts it is made
from, kept between calls and updated by the voxel columns that changed (GridCounts).

TsdfMap keeps the state of each voxel column of the blocks crossing the band (unknown, seen,
free from the band's lowest voxel, occupied: TsdfMap._columns_of). A grid cell (the voxel
size, or coarser) is occupied where one of its columns is, free where every voxel column centred
in it is free, unknown elsewhere; the grid spans the cells with a known column. Made anew from
every column at each call, that took about 100 ms beside 2 M cells, for the few blocks a keyframe
changes. GridCounts keeps, per cell, how many of its columns are known, free and occupied, on a
raster that grows to the cells seen and is cut back to them when they fill less than half of it;
an update takes away the columns of the blocks searched again or evicted and adds their new ones.
"""

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class Grid2D:
    """A 2D occupancy grid: cells (H, W) int8, -1 unknown, 0 free, 100 occupied (nav_msgs/
    OccupancyGrid's values), row-major from `origin` (x, y) metres, world frame, cells of
    `resolution` metres; row i, column j covers x in origin_x + [j, j + 1)·res, y likewise."""

    UNKNOWN, FREE, OCCUPIED = -1, 0, 100  # the cells' values

    cells: np.ndarray
    origin: tuple
    resolution: float

    @classmethod
    def empty(cls, resolution):
        """A grid of no cells (none known), of cells of `resolution` metres."""
        return cls(np.full((0, 0), cls.UNKNOWN, np.int8), (0.0, 0.0), resolution)


class GridCounts:
    """Per cell of `resolution` metres (at least voxel_size), how many known, free and occupied
    voxel columns centred in it were counted: rasters (H, W) whose row i, column j is the cell of
    index (first[0] + j, first[1] + i) (along an axis, x metres lie in cell floor(x / resolution)).
    A voxel column may be counted up to `repeats` times (once per block layer the band crosses:
    each block's part of it is a column of its own). Read-only: updated returns a new one."""

    def __init__(self, voxel_size, resolution, repeats=1, first=(0, 0), counts=None):
        self.voxel_size, self.resolution, self.repeats, self.first = voxel_size, resolution, repeats, first
        # The most a cell can count (centres v apart in a cell res wide: ceil(res / v) along an
        # axis, each column `repeats` times): the counts' type.
        most = int(np.ceil(resolution / voxel_size)) ** 2 * repeats
        self._dtype = np.uint8 if most < 2**8 else np.uint16 if most < 2**16 else np.uint32
        self.counts = np.zeros((3, 0, 0), self._dtype) if counts is None else counts  # known, free, occupied
        self.counts.flags.writeable = False  # (a raster this class made)

    def updated(self, gone, new):
        """GridCounts without the voxel columns `gone` and with `new`: each (x, y, state), the
        columns' voxel indices (m,) int64 along x and y and their states (m,) int8 (Grid2D.FREE,
        Grid2D.OCCUPIED, or any other for seen only), known columns only; `gone` counted before
        (so within the raster)."""
        x, y = (self._cells(i) for i in new[:2])
        first, shape = self._bounds(x, y)
        counts = np.zeros((3,) + shape, self._dtype)
        (j0, i0), (h, w) = (a - b for a, b in zip(self.first, first)), self.counts.shape[1:]
        counts[:, i0:i0 + h, j0:j0 + w] = self.counts
        self._count(counts, first, self._cells(gone[0]), self._cells(gone[1]), gone[2], np.subtract.at)
        self._count(counts, first, x, y, new[2], np.add.at)
        return GridCounts(self.voxel_size, self.resolution, self.repeats, first, counts)._trimmed()

    def _count(self, counts, first, x, y, state, add):
        """Add (np.add.at) or take away (np.subtract.at: `add`) one per voxel column at cells x, y
        to `counts` (3, H, W), a raster from cell `first`: to the known count, to the free count
        where `state` is Grid2D.FREE, to the occupied count where it is Grid2D.OCCUPIED."""
        cell = (y - first[1]) * counts.shape[2] + (x - first[0])
        flat = counts.reshape(3, -1)
        for row, which in enumerate((slice(None), state == Grid2D.FREE, state == Grid2D.OCCUPIED)):
            at = cell[which]
            add(flat[row], at, np.ones(len(at), self._dtype))  # (ones of the array's type: 35x faster than 1)

    def grid(self):
        """Grid2D of the cells with a known column (their bounding box; empty when none)."""
        if self._known is None:
            return Grid2D.empty(self.resolution)
        rows, cols = self._known
        x0, y0 = self.first[0] + cols.start, self.first[1] + rows.start
        _, free, occupied = self.counts[:, rows, cols]
        wy, wx = (_voxels_per_cell(self.voxel_size, self.resolution, c0, n).astype(self._dtype)
                  for c0, n in ((y0, free.shape[0]), (x0, free.shape[1])))
        cells = np.full(free.shape, Grid2D.UNKNOWN, np.int8)
        cells[free >= wy[:, None] * wx] = Grid2D.FREE  # (each product at most a cell's columns: the counts' type)
        cells[occupied > 0] = Grid2D.OCCUPIED
        return Grid2D(cells, (float(x0 * self.resolution), float(y0 * self.resolution)), self.resolution)

    def _cells(self, index):
        """Cell indices (m,) int64 of voxel indices `index` (m,) along one axis: the cell each
        voxel's centre lies in."""
        v, res = self.voxel_size, self.resolution
        return index if res == v else np.floor((index * v + v / 2) / res).astype(np.int64)

    def _bounds(self, x, y):
        """(first cell (x, y), raster shape (H, W)) holding this raster and the cells x, y."""
        h, w = self.counts.shape[1:]
        lo, hi = [], []
        for start, n, c in ((self.first[0], w, x), (self.first[1], h, y)):
            ends = ([start, start + n - 1] if h and w else []) + ([int(c.min()), int(c.max())] if len(c) else [])
            lo.append(min(ends, default=0))
            hi.append(max(ends, default=-1))
        return (lo[0], lo[1]), (hi[1] - lo[1] + 1, hi[0] - lo[0] + 1)

    @cached_property
    def _known(self):
        """(rows, columns) slices of the raster's bounding box of the cells with a known column;
        None when none."""
        known = self.counts[0] > 0
        rows, cols = np.flatnonzero(known.any(1)), np.flatnonzero(known.any(0))
        return (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)) if len(rows) else None

    def _trimmed(self):
        """This GridCounts, its raster cut to the cells with a known column when they fill less
        than half of it (a map that moved on: evicted blocks leave their cells)."""
        if self._known is None:
            return self if self.counts.size == 0 else GridCounts(self.voxel_size, self.resolution, self.repeats)
        rows, cols = self._known
        if 2 * (rows.stop - rows.start) * (cols.stop - cols.start) >= self.counts[0].size:
            return self
        return GridCounts(self.voxel_size, self.resolution, self.repeats,
                          (self.first[0] + cols.start, self.first[1] + rows.start), self.counts[:, rows, cols].copy())


def _voxels_per_cell(v, res, first, n):
    """(n,) how many voxel columns (size v, m) have their centre in each of the cells first, ..,
    first + n - 1 of size res (m) along one axis (1 each when res is v)."""
    if res == v:
        return np.ones(n, np.int64)
    i = np.arange(int(np.floor(first * res / v)) - 2, int(np.ceil((first + n) * res / v)) + 3)
    c = np.floor((i * v + v / 2) / res).astype(np.int64) - first
    return np.bincount(c[(c >= 0) & (c < n)], minlength=n)
