"""mapping.distance: the occupancy slice's distance field (~/esdf) against brute force and on a fused
map, and evaluation.distance_metrics on known answers."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapanything_ros.evaluation import distance_metrics
from mapanything_ros.mapping import DistanceSlice, Grid2D, TsdfMap, distance_slice

from test_tsdf import FLOOR, OBSTACLE, WALL, poses, view


def brute_force(cells, resolution, max_distance):
    """Each known cell's distance to the nearest occupied cell's centre by trying them all."""
    occupied = np.argwhere(cells == Grid2D.OCCUPIED)
    out = np.full(cells.shape, np.nan)
    for i, j in np.argwhere(cells != Grid2D.UNKNOWN):
        nearest = np.sqrt(((occupied - (i, j)) ** 2).sum(1)).min() if len(occupied) else np.inf
        out[i, j] = min(nearest * resolution, max_distance)
    return out


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.floats(0.02, 0.5), st.floats(0.05, 3.0), st.integers(0, 2**31))
def test_distances_equal_brute_force(height, width, resolution, max_distance, seed):
    rng = np.random.default_rng(seed)
    cells = rng.choice(np.array([Grid2D.UNKNOWN, Grid2D.FREE, Grid2D.OCCUPIED], np.int8), (height, width),
                       p=[0.2, 0.65, 0.15])
    field = distance_slice(Grid2D(cells, (1.0, -2.0), resolution), max_distance)
    assert field.distance.dtype == np.float32 and field.origin == (1.0, -2.0) and field.resolution == resolution
    np.testing.assert_allclose(field.distance, brute_force(cells, resolution, max_distance), rtol=1e-5, atol=1e-6)


def test_unknown_cells_have_no_distance_and_no_point():
    cells = np.array([[0, 0, -1, 100],
                      [-1, 0, 0, 0]], np.int8)
    field = distance_slice(Grid2D(cells, (10.0, 20.0), 0.5), 5.0)
    assert np.isnan(field.distance[0, 2]) and np.isnan(field.distance[1, 0])
    assert field.distance[0, 3] == 0 and field.distance[1, 3] == pytest.approx(0.5)
    assert field.distance[0, 0] == pytest.approx(1.5) and field.distance[1, 1] == pytest.approx(np.hypot(2, 1) * 0.5)
    xyz, distance = field.points(0.3)
    assert xyz.dtype == np.float32 and len(xyz) == len(distance) == 6  # the known cells, row-major
    np.testing.assert_allclose(xyz[0], [10.25, 20.25, 0.3])  # row 0, column 0: the cell's centre
    np.testing.assert_allclose(xyz[3], [10.75, 20.75, 0.3])  # row 1, column 1
    np.testing.assert_allclose(distance, field.distance[np.isfinite(field.distance)])


def test_nothing_occupied_is_the_maximum_everywhere_and_empty_grids_stay_empty():
    cells = np.array([[0, -1], [0, 0]], np.int8)
    field = distance_slice(Grid2D(cells, (0.0, 0.0), 0.1), 2.5)
    np.testing.assert_array_equal(np.isnan(field.distance), cells == Grid2D.UNKNOWN)
    assert np.nanmax(field.distance) == np.nanmin(field.distance) == pytest.approx(2.5)
    empty = distance_slice(Grid2D(np.zeros((0, 0), np.int8), (0.0, 0.0), 0.05), 2.0)
    assert empty.distance.shape == (0, 0) and len(empty.points(0.0)[0]) == 0
    with pytest.raises(ValueError, match="max_distance"):
        distance_slice(Grid2D(cells, (0.0, 0.0), 0.1), 0.0)


def test_a_fused_maps_field_measures_the_clearance_to_what_it_saw():
    """Free space in front of the obstacle and the wall of test_tsdf's scene: the distance field of
    the map's occupancy grid agrees with the true clearance to within a cell and a half."""
    fused = TsdfMap(0.05, max_blocks=100_000)
    for p in poses():
        fused.integrate(view(p, [WALL, FLOOR, OBSTACLE]))
    grid = fused.occupancy(0.2, 1.2)
    field = distance_slice(grid, 1.0)

    def at(x, y):
        j, i = np.floor((np.array([x, y]) - grid.origin) / grid.resolution).astype(int)
        return field.distance[i, j]

    for (x, y), want in (((1.2, 0.0), 0.3), ((1.0, 0.0), 0.5), ((2.6, 1.0), 0.4), ((0.9, 0.0), 0.6)):
        assert at(x, y) == pytest.approx(want, abs=0.075), (x, y)
    assert at(1.55, 0.0) == 0  # on the obstacle's face
    assert np.isnan(at(0.2, 0.0))  # under the camera's view: the band's bottom never seen, unknown
    j, i = np.floor((np.array([1.0, 0.0]) - grid.origin) / grid.resolution).astype(int)
    assert distance_slice(grid, 0.2).distance[i, j] == pytest.approx(0.2)  # farther than the maximum
    assert np.isnan(at(2.4, 0.0))  # the obstacle's shadow: unknown


def test_distance_metrics_against_a_known_truth():
    truth = lambda c, margin: c[:, 0] + margin > 3.2  # noqa: E731 (solid beyond 3.2 m: the cells from 3 m, 1 m cells)
    cells = np.full((3, 6), Grid2D.FREE, np.int8)
    cells[:, 3:] = Grid2D.OCCUPIED
    grid = Grid2D(cells, (0.0, 0.0), 1.0)
    right = distance_metrics(distance_slice(grid, 2.0), truth, 2.0)
    assert right == {"mae": 0.0, "over": 0.0, "under": 0.0}
    cells[0, 3] = Grid2D.FREE  # a solid cell missed: it and the cells before it count on room
    cells[2, 0] = Grid2D.UNKNOWN  # not counted
    missed = distance_metrics(distance_slice(grid, 2.0), truth, 2.0)
    assert missed["under"] == 0 and missed["over"] == 0  # by one cell at most: the row below is still near
    cells[:, 3] = Grid2D.FREE  # the whole face missed, and what is beyond it never seen
    cells[:, 4:] = Grid2D.UNKNOWN
    blind = distance_metrics(distance_slice(grid, 2.0), truth, 2.0)
    # nothing seen: every known cell says 2 m. The face's 3 cells (truly 0) are over by more than a
    # cell, the 3 before it (truly 1 m) by one cell, the rest (2 m and beyond) are right.
    assert blind["over"] == pytest.approx(3 / 11) and blind["mae"] == pytest.approx((3 * 2 + 3 * 1 + 2 * 0) / 11)
    # A face on the cells' edge (solid beyond x = 3 m): the cells before it are ties, and the
    # slice's call of them stands, whichever it is (1 mm further the first call is wrong).
    # A tie the slice does not know is free: the cells before it are then 2 m off the face, as said.
    for first, face, unknown in ((2, 3.0, False), (3, 3.0, False), (2, 3.001, False), (3, 3.0, True)):
        cells = np.full((3, 6), Grid2D.FREE, np.int8)
        cells[:, first:] = Grid2D.OCCUPIED
        if unknown:
            cells[:, 2] = Grid2D.UNKNOWN
        got = distance_metrics(distance_slice(Grid2D(cells, (0.0, 0.0), 1.0), 2.0),
                               lambda c, margin: c[:, 0] + margin > face, 2.0)
        assert (got["mae"] == 0) == (face == 3.0), (first, face, got)
    field = DistanceSlice(np.full((1, 2), 0.0, np.float32), (0.0, 0.0), 1.0)  # calls free cells occupied
    assert distance_metrics(field, lambda c, margin: np.zeros(len(c), bool), 2.0)["under"] == 1.0
