"""mapping/grid.py: a grid made from per-cell counts updated by the columns that changed
(GridCounts.updated) is the grid made from every column at once."""

import numpy as np
import pytest

from mapanything_ros.mapping.grid import Grid2D, GridCounts

STATES = np.array([Grid2D.FREE, Grid2D.OCCUPIED, 1], np.int8)  # 1: seen, not from the band's lowest voxel


def reference(x, y, state, v, res):
    """Grid2D of known voxel columns at voxel indices x, y (m,) with states (m,), cells of res
    metres, made directly: occupied where a column is, free where every voxel column centred in
    the cell is free, unknown elsewhere, over the known columns' bounding box."""
    if len(x) == 0:
        return Grid2D(np.full((0, 0), Grid2D.UNKNOWN, np.int8), (0.0, 0.0), res)
    cx, cy = (np.floor((i * v + v / 2) / res).astype(np.int64) for i in (x, y))
    x0, y0 = cx.min(), cy.min()
    shape = (cy.max() - y0 + 1, cx.max() - x0 + 1)
    free = np.zeros(shape, int)
    occupied = np.zeros(shape, bool)
    np.add.at(free, (cy - y0, cx - x0), state == Grid2D.FREE)
    occupied[cy[state == Grid2D.OCCUPIED] - y0, cx[state == Grid2D.OCCUPIED] - x0] = True
    # every voxel column whose centre lies in the cell, counted one by one
    whole = np.zeros(shape, int)
    xs = np.arange(int(np.floor(x0 * res / v)) - 2, int(np.ceil((x0 + shape[1]) * res / v)) + 2)
    ys = np.arange(int(np.floor(y0 * res / v)) - 2, int(np.ceil((y0 + shape[0]) * res / v)) + 2)
    for i in xs:
        for j in ys:
            c, r = int(np.floor((i * v + v / 2) / res)) - x0, int(np.floor((j * v + v / 2) / res)) - y0
            if 0 <= r < shape[0] and 0 <= c < shape[1]:
                whole[r, c] += 1
    cells = np.where(free >= whole, Grid2D.FREE, Grid2D.UNKNOWN).astype(np.int8)
    cells[occupied] = Grid2D.OCCUPIED
    return Grid2D(cells, (float(x0 * res), float(y0 * res)), res)


def assert_same(grid, want):
    assert grid.origin == pytest.approx(want.origin) and grid.resolution == want.resolution
    np.testing.assert_array_equal(grid.cells, want.cells)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("cells_per_voxel", [1, 2.5, 4])
def test_updated_counts_give_the_grid_of_every_column(seed, cells_per_voxel):
    """Through ten updates that take away a random share of the columns and add new ones (at
    negative indices too, the area moving away so that the raster is cut back), at the voxel
    size and coarser, the grid is the one made from every column still there."""
    rng = np.random.default_rng(seed)
    v = 0.05
    res = v * cells_per_voxel
    counts, columns = GridCounts(v, res), np.zeros((3, 0), np.int64)
    for step in range(10):
        keep = rng.random(columns.shape[1]) < rng.uniform(0.2, 1)
        gone, columns = columns[:, ~keep], columns[:, keep]
        n = int(rng.integers(0, 400))
        centre = rng.integers(-30, 30, 2) + 15 * step  # the robot moves on
        new = np.stack([rng.integers(-12, 12, n) + centre[0], rng.integers(-12, 12, n) + centre[1],
                        rng.choice(STATES, n)])
        counts = counts.updated(tuple(gone[:2]) + (gone[2].astype(np.int8),),
                                tuple(new[:2]) + (new[2].astype(np.int8),))
        columns = np.concatenate([columns, new], 1)
        assert_same(counts.grid(), reference(columns[0], columns[1], columns[2], v, res))
        assert not counts.counts.flags.writeable
        h, w = counts.counts.shape[1:]
        known = counts.counts[0] > 0
        if known.any():  # the raster is cut back to its known cells when they fill less than half
            rows, cols = np.flatnonzero(known.any(1)), np.flatnonzero(known.any(0))
            assert 2 * (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1) >= h * w


def test_counts_of_nothing_and_back_to_nothing():
    counts = GridCounts(0.05, 0.05)
    assert counts.grid().cells.shape == (0, 0)
    x, y, s = np.array([3, 4, -2]), np.array([0, 0, 7]), np.array([Grid2D.FREE, Grid2D.OCCUPIED, 1], np.int8)
    full = counts.updated((x[:0], y[:0], s[:0]), (x, y, s))
    assert_same(full.grid(), reference(x, y, s, 0.05, 0.05))
    assert full.grid().cells.shape == (8, 7) and full.grid().origin == pytest.approx((-0.1, 0.0))
    empty = full.updated((x, y, s), (x[:0], y[:0], s[:0]))
    assert empty.grid().cells.shape == (0, 0) and empty.counts.size == 0
    assert full.grid().cells.shape == (8, 7)  # the one before is left as it was


def test_a_cell_of_256_columns():
    """1.555 cm cells of 1 mm voxels hold 16 × 16 voxel columns (counts of 16 bits; in 8 bits 256
    would be 0): free once every one is."""
    v, res = 0.001, 0.01555
    i = np.arange(16)
    x, y = np.repeat(i, 16), np.tile(i, 16)
    state = np.full(len(x), Grid2D.FREE, np.int8)
    counts = GridCounts(v, res).updated((x[:0], y[:0], state[:0]), (x, y, state))
    assert counts.grid().cells.tolist() == [[Grid2D.FREE]]
    assert_same(counts.grid(), reference(x, y, state, v, res))


def test_a_cell_of_many_columns():
    """At 3 m cells of 1 cm voxels (90,000 columns a cell: counts of 32 bits), a cell is free once
    every column centred in it is."""
    v, res = 0.01, 3.0
    i = np.arange(300)
    x, y = np.repeat(i, 300), np.tile(i, 300)
    state = np.full(len(x), Grid2D.FREE, np.int8)
    counts = GridCounts(v, res).updated((x[:0], y[:0], state[:0]), (x, y, state))
    assert counts.counts.dtype == np.uint32
    assert counts.grid().cells.tolist() == [[Grid2D.FREE]]
    less = counts.updated((x[:1], y[:1], state[:1]), (x[:0], y[:0], state[:0]))
    assert less.grid().cells.tolist() == [[Grid2D.UNKNOWN]]


@pytest.mark.parametrize("seed", range(4))
def test_columns_counted_once_per_block_layer(seed):
    """A voxel column crossing several block layers of the band is counted once in each (repeats):
    at 0.4 m cells of 5 cm voxels and eight layers a cell counts up to 512 (16 bits), and the grid
    is still the one of every column, through updates that take layers away."""
    rng = np.random.default_rng(seed)
    v, res, layers = 0.05, 0.4, 8
    counts, columns = GridCounts(v, res, layers), np.zeros((3, 0), np.int64)
    assert counts.counts.dtype == np.uint16
    for step in range(6):
        keep = rng.random(columns.shape[1]) < 0.6
        gone, columns = columns[:, ~keep], columns[:, keep]
        x, y = np.meshgrid(np.arange(8) + 8 * step, np.arange(8), indexing="ij")
        base = np.stack([x.ravel(), y.ravel()])
        new = np.concatenate([np.concatenate([base, np.full((1, 64), s)]) for s in  # a pillar: occupied in every layer
                              [Grid2D.OCCUPIED] * layers] + [np.stack([*base, rng.choice(STATES, 64)])], 1)
        counts = counts.updated(tuple(gone[:2]) + (gone[2].astype(np.int8),),
                                tuple(new[:2]) + (new[2].astype(np.int8),))
        columns = np.concatenate([columns, new], 1)
        assert_same(counts.grid(), reference(columns[0], columns[1], columns[2], v, res))
        assert counts.counts[2].max() >= 256  # past 8 bits


@pytest.mark.parametrize("band, res", [((0.1, 1.5), 0.05), ((0.1, 1.5), 0.4), ((0.1, 1.5), 0.45), ((0.1, 0.7), 0.4),
                                       ((0.1, 1e308), 0.05), ((-1e308, 1e308), 0.4)])
def test_a_tall_pillar_then_its_eviction(band, res):
    """TsdfMap.occupancy of a solid pillar 0.4 m wide and 1.6 m tall beside a floor, over the node's
    default band (0.1-1.5 m: eight block layers) and a lower one (four): at 0.4 m cells the
    pillar's cell counts 512 or 256 occupied columns, more than 8 bits hold. The grid is the one
    counted from every column, after the pillar's blocks are evicted, and after a floor block
    changes."""
    from mapanything_ros.mapping import tsdf
    from test_regions import changed, slab_map

    pillar = [(x, y, z) for x in range(2) for y in range(2) for z in range(8)]
    floor = [(x, y, 0) for x in range(6, 12) for y in range(-2, 3)]
    fused = slab_map(pillar + floor, lambda i: np.where((i[..., 0] < 8) | (i[..., 2] < 2), -0.5, 0.5))

    def want():
        columns = tsdf._known_columns(fused._columns_of(np.arange(len(fused)), *band))
        return reference(*columns, 0.05, res)

    assert (fused.occupancy(*band, res).cells == Grid2D.OCCUPIED).any()
    assert_same(fused.occupancy(*band, res), want())
    fused._keep(np.flatnonzero(fused._origin[:len(fused), 0] >= 8))  # the pillar evicted (white box)
    assert len(fused) == len(floor)
    assert_same(fused.occupancy(*band, res), want())
    changed(fused, (7, 0, 0), np.ones(64, bool), 0.5)
    assert_same(fused.occupancy(*band, res), want())
