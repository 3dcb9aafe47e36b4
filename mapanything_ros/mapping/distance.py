"""The distance field of an occupancy slice (a 2D ESDF): how far each known cell of a Grid2D is from
the nearest occupied one, for planners that want clearance rather than occupancy (numpy, OpenCV).

Distances are between cell centres (as voxblox's and nvblox's ESDFs): 0 in occupied cells, a
multiple of the cell's diagonal steps elsewhere, exact Euclidean (OpenCV's distanceTransform with
the precise mask, Felzenszwalb and Huttenlocher's algorithm), clipped at a maximum. Only observed
occupied cells are obstacles: an unknown cell is neither obstacle nor free, and has no distance.
"""

from dataclasses import dataclass

import cv2
import numpy as np

from .grid import Grid2D


@dataclass(frozen=True)
class DistanceSlice:
    """Distances (H, W) float32 metres, NaN where the grid is unknown, on the cells of the Grid2D it
    was made from (row-major from `origin` (x, y) metres, rows along y, cells of `resolution`)."""

    distance: np.ndarray
    origin: tuple
    resolution: float

    def points(self, z):
        """(centres (N, 3) float32 of the known cells at height z, metres; their distances (N,)),
        in row-major cell order."""
        rows, cols = np.nonzero(np.isfinite(self.distance))
        xyz = np.empty((len(rows), 3), np.float32)
        xyz[:, 0] = self.origin[0] + (cols + 0.5) * self.resolution
        xyz[:, 1] = self.origin[1] + (rows + 0.5) * self.resolution
        xyz[:, 2] = z
        return xyz, self.distance[rows, cols]


def distance_slice(grid, max_distance):
    """DistanceSlice of a Grid2D (-1 unknown / 0 free / 100 occupied): each known cell's distance to
    the nearest occupied cell's centre (metres, 0 in occupied cells, at most max_distance: also
    where nothing is occupied)."""
    cells = np.asarray(grid.cells)
    if max_distance <= 0:
        raise ValueError(f"max_distance must be > 0, got {max_distance}")
    distance = np.full(cells.shape, np.nan, np.float32)
    if cells.size:
        free = (cells != Grid2D.OCCUPIED).astype(np.uint8)  # distanceTransform: distance to the nearest 0
        if free.all():
            steps = np.full(cells.shape, np.inf, np.float32)
        else:
            steps = cv2.distanceTransform(free, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        known = cells != Grid2D.UNKNOWN
        distance[known] = np.minimum(steps[known] * np.float32(grid.resolution), np.float32(max_distance))
    return DistanceSlice(distance, grid.origin, grid.resolution)
