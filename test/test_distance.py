"""mapping.distance: the occupancy slice's distance field (~/esdf) against brute force and on a fused
map, and evaluation.distance_metrics on known answers."""

from dataclasses import replace

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


def changed_grid(rng, grid):
    """A later grid of the same map: some cells changed (a patch, scattered ones, or none) and the
    box grown on some sides (new cells seen), or cut on one (then an update cannot start from it)."""
    cells = grid.cells.copy()
    states = np.array([Grid2D.UNKNOWN, Grid2D.FREE, Grid2D.OCCUPIED], np.int8)
    kind = rng.integers(3)
    if kind == 0 and cells.size:  # a patch seen again
        i, j = rng.integers(0, cells.shape[0]), rng.integers(0, cells.shape[1])
        patch = cells[i:i + rng.integers(1, 8), j:j + rng.integers(1, 8)]
        patch[...] = rng.choice(states, patch.shape, p=[0.1, 0.7, 0.2])
    elif kind == 1 and cells.size:  # scattered flips
        flat = cells.reshape(-1)
        flat[rng.integers(0, flat.size, 3)] = rng.choice(states, 3)
    res = grid.resolution
    if rng.random() < 0.1 and min(cells.shape) > 2:  # cut on one side
        side = rng.integers(4)
        cut = (cells[1:], cells[:-1], cells[:, 1:], cells[:, :-1])[side]
        origin = (grid.origin[0] + res * (side == 2), grid.origin[1] + res * (side == 0))
        return Grid2D(cut.copy(), origin, res)
    top, bottom, left, right = (int(g) for g in rng.integers(1, 7, 4) * (rng.random(4) < 0.3))
    out = rng.choice(states, (cells.shape[0] + top + bottom, cells.shape[1] + left + right), p=[0.3, 0.6, 0.1])
    out[top:top + cells.shape[0], left:left + cells.shape[1]] = cells
    return Grid2D(out, (grid.origin[0] - left * res, grid.origin[1] - top * res), res)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31), st.sampled_from([0.05, 0.1, 0.3]), st.floats(0.5, 6.0))
def test_an_updated_field_is_the_field_made_anew(seed, resolution, reach_cells):
    """Fields updated from the one before through grids that change in patches, in scattered
    cells, not at all, grow or are cut: each equals the field made anew (to float32 rounding;
    and for another maximum, which an update cannot start from)."""
    rng = np.random.default_rng(seed)
    cells = rng.choice(np.array([Grid2D.UNKNOWN, Grid2D.FREE, Grid2D.OCCUPIED], np.int8),
                       tuple(rng.integers(0, 80, 2)), p=[0.3, 0.65, 0.05])
    grid = Grid2D(cells, (-3 * resolution, 7 * resolution), resolution)
    max_distance = reach_cells * resolution
    field = distance_slice(grid, max_distance)
    for _ in range(8):
        grid = changed_grid(rng, grid)
        reach = max_distance if rng.random() < 0.9 else max_distance * 2
        kept = field.reach.copy()
        field, before = distance_slice(grid, reach, field), field
        np.testing.assert_array_equal(before.reach, kept)  # the field updated from is left as it was
        want = distance_slice(grid, reach)
        assert field.distance.shape == grid.cells.shape and field.origin == grid.origin
        known = ~np.isnan(want.distance)
        np.testing.assert_array_equal(np.isnan(field.distance), ~known)
        # (OpenCV's vector and scalar paths may differ in a distance's last bits: 2 ulp seen)
        np.testing.assert_array_max_ulp(field.distance[known], want.distance[known], maxulp=4)
        np.testing.assert_array_max_ulp(field.reach, want.reach, maxulp=4)


def test_an_update_computes_again_only_near_the_change():
    """A cell flipped in a large free grid: the cells farther than the maximum from it keep the
    previous field's values (the update does not make them anew), the near ones change."""
    cells = np.zeros((200, 300), np.int8)
    cells[10, 10] = cells[190, 290] = Grid2D.OCCUPIED
    grid = Grid2D(cells, (0.0, 0.0), 0.1)
    field = distance_slice(grid, 1.0)
    marked = field.reach.copy()
    marked[150:, :] = -1.0  # far (> 1 m) from the change below: an update keeps these as they are
    cells = cells.copy()
    cells[100, 150] = Grid2D.OCCUPIED
    updated = distance_slice(Grid2D(cells, grid.origin, 0.1), 1.0, replace(field, reach=marked))
    assert (updated.reach[150:, :] == -1.0).all()
    assert updated.reach[100, 150] == 0 and updated.reach[100, 155] == pytest.approx(0.5)
    np.testing.assert_array_max_ulp(updated.reach[:150], distance_slice(Grid2D(cells, grid.origin, 0.1), 1.0).reach[:150],
                                    maxulp=4)
    # The box grown by 3 rows below y and 4 columns below x (unknown cells): the old cells moved
    # by (3, 4) in it, and those far from the new ones and the change kept.
    grown = np.full((203, 304), Grid2D.UNKNOWN, np.int8)
    grown[3:, 4:] = cells
    origin = (grid.origin[0] - 0.4, grid.origin[1] - 0.3)
    again = distance_slice(Grid2D(grown, origin, 0.1), 1.0, updated)
    assert (again.reach[153:, 4 + 11:] == -1.0).all()  # (the new columns' cells within 1 m computed)
    assert again.reach[103, 154] == 0 and again.reach[193, 294] == -1.0
    # A maximum beyond any box (1e300 m, infinite): updates reach the whole box, no overflow.
    for huge in (1e300, np.inf):
        first = distance_slice(Grid2D(cells, grid.origin, 0.1), huge)
        assert np.isfinite(distance_slice(Grid2D(grown, origin, 0.1), huge, first).reach).all()
    # A box on other cells (half a cell over: not this map's) is made anew.
    other = distance_slice(Grid2D(cells, (0.05, 0.0), 0.1), 1.0, replace(field, reach=marked))
    assert (other.reach >= 0).all()


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
    assert np.isfinite(field.points(-1e300)[0]).all()  # a band from -1e300 m: shown at float32's lowest


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
