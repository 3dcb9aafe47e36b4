"""mapping.TsdfMap: fusion, free space and clearing, the occupancy grid, memory bound, state round trip."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapanything_ros.geometry import CameraModel, ModelPixels
from mapanything_ros.mapping.keys import KEY_OFFSET, cells, key_cells, pack, shifted
from mapanything_ros.mapping import tsdf
from mapanything_ros.mapping.grid import Grid2D
from mapanything_ros.mapping.tsdf import _OFFSETS, BLOCK, VOXELS, RangeView, TsdfMap
from mapanything_ros.synthetic.presets import make_scene

CAMERA = CameraModel.pinhole(80.0, 80.0, 79.5, 59.5, 160, 120)
# Optical frame (x right, y down, z forward) to a z-up world looking along +x.
LEVEL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
WALL = ((3.0, -4.0, 0.0), (3.2, 4.0, 3.0))
FLOOR = ((-1.0, -4.0, -0.2), (3.2, 4.0, 0.0))
OBSTACLE = ((1.5, -0.3, 0.0), (1.8, 0.3, 1.5))


def pose(x=0.0, y=0.0, z=1.0, yaw=0.0):
    """world_from_camera of a level camera at (x, y, z) turned by yaw about world z."""
    c, s = np.cos(yaw), np.sin(yaw)
    out = np.eye(4)
    out[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ LEVEL
    out[:3, 3] = x, y, z
    return out


def cast(origin, dirs, boxes):
    """Range (N,) along unit dirs (N, 3) from origin to the nearest axis-aligned box, 0 for none."""
    best = np.full(len(dirs), np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        for lo, hi in boxes:
            t1, t2 = (np.asarray(lo) - origin) / dirs, (np.asarray(hi) - origin) / dirs
            near = np.nanmax(np.minimum(t1, t2), axis=1)
            far = np.nanmin(np.maximum(t1, t2), axis=1)
            hit = (far >= np.maximum(near, 0)) & (near > 0)
            best[hit] = np.minimum(best[hit], near[hit])
    return np.where(np.isfinite(best), best, 0).astype(np.float32)


def view(world_from_camera, boxes, camera=CAMERA, weight=1.0):
    rays = camera.ray_map().astype(np.float32)
    h, w = rays.shape[:2]
    dirs = rays.reshape(-1, 3) @ world_from_camera[:3, :3].T
    ranges = cast(world_from_camera[:3, 3], dirs, boxes).reshape(h, w)
    colors = np.full((h, w, 3), 200, np.uint8)
    return RangeView(ranges, rays, ModelPixels.native(camera), world_from_camera, colors,
                     np.full((h, w), weight, np.float32))


def box_distance(points, boxes):
    """Distance (N,) of points to the nearest surface of the boxes (outside or inside)."""
    best = np.full(len(points), np.inf)
    for lo, hi in boxes:
        lo, hi = np.asarray(lo), np.asarray(hi)
        outside = np.linalg.norm(np.maximum(np.maximum(lo - points, points - hi), 0), axis=1)
        inside = np.minimum(points - lo, hi - points).min(axis=1)
        best = np.minimum(best, np.where(outside > 0, outside, np.abs(inside)))
    return best


def poses(n=8):
    return [pose(x=-0.3 + 0.05 * i, y=0.2 * np.sin(i), yaw=0.1 * np.cos(i)) for i in range(n)]


def test_a_floor_seen_from_a_low_camera_keeps_its_surface():
    """A ground robot's camera 0.3 m above the floor sees it at grazing angles, where the field
    (a distance along the rays) steps by far more than voxel / T between neighbours: the surface
    must still cover the floor the views saw, within a cell (a rule that took such steps for
    artefacts kept a quarter of it)."""
    v = 0.05
    fused = TsdfMap(v, max_blocks=100_000)
    seen = set()
    rays = CAMERA.ray_map().reshape(-1, 3)
    for i in range(6):
        p = pose(x=-0.3 + 0.1 * i, y=0.2 * np.sin(i), z=0.3, yaw=0.1 * np.cos(i))
        frame = view(p, [WALL, FLOOR])
        fused.integrate(frame)
        hits = p[:3, 3] + (rays @ p[:3, :3].T) * frame.ranges.reshape(-1, 1)
        on_floor = (np.abs(hits[:, 2]) < 1e-6) & (hits[:, 0] < WALL[0][0] - v)
        seen |= set(map(tuple, np.floor(hits[on_floor, :2] / v).astype(int)))
    points = fused.surface()[0]
    floor = points[np.abs(points[:, 2]) < v]
    cells = np.floor(floor[:, :2] / v).astype(int)
    near = np.indices((3, 3)).reshape(2, -1).T - 1  # the cell and its 8 neighbours
    covered = set(map(tuple, (cells[:, None, :] + near).reshape(-1, 2)))
    assert len(seen) > 2000
    assert len(seen & covered) / len(seen) > 0.95, len(seen & covered) / len(seen)  # 0.97; 0.23 with 7a2138a


def test_fused_surface_lies_on_the_scene():
    scene = [WALL, FLOOR, OBSTACLE]
    fused = TsdfMap(0.05, max_blocks=100_000)
    for p in poses():
        fused.integrate(view(p, scene))
    points, colors, weights = fused.surface()
    d = box_distance(points.astype(np.float64), scene)
    assert len(points) > 3000 and np.median(d) < 0.005 and np.quantile(d, 0.99) < 0.03
    assert (colors == 200).all() and (weights >= fused.min_weight).all() and (weights <= fused.max_weight).all()
    for name in ("_tsdf", "_weight"):
        a = getattr(fused, name)[:len(fused)]
        assert np.isfinite(a).all()
    assert np.abs(fused._tsdf[:len(fused)]).max() <= 1 + 1e-6


def test_an_object_that_moves_away_is_cleared_from_surface_and_grid():
    """An obstacle seen 10 times and then gone: once the robot has looked through its place, no
    surface point and no occupied cell is left there (no ghost), and its cells are free."""
    fused = TsdfMap(0.05, max_weight=20.0, max_blocks=100_000)
    for p in poses(10):
        fused.integrate(view(p, [WALL, FLOOR, OBSTACLE]))
    grown = ((OBSTACLE[0][0] - 0.05, OBSTACLE[0][1] - 0.05, 0.05), (OBSTACLE[1][0] + 0.05, OBSTACLE[1][1] + 0.05, 1.5))

    def in_place(points):
        return np.all((points >= grown[0]) & (points <= grown[1]), axis=1)

    def cells_of(grid, box):
        lo = np.floor((np.asarray(box[0][:2]) - grid.origin) / grid.resolution).astype(int)
        hi = np.floor((np.asarray(box[1][:2]) - grid.origin) / grid.resolution).astype(int)
        return grid.cells[lo[1] + 1:hi[1], lo[0] + 1:hi[0]]

    assert in_place(fused.surface()[0]).sum() > 100
    before = cells_of(fused.occupancy(0.2, 1.2), OBSTACLE)
    assert before.size and (before == 100).mean() > 0.3  # its front face and what lies behind it
    for p in poses(30):
        fused.integrate(view(p, [WALL, FLOOR]))
    assert in_place(fused.surface()[0]).sum() == 0
    after = cells_of(fused.occupancy(0.2, 1.2), OBSTACLE)
    assert (after == 0).all()


def test_occupancy_grid_free_occupied_unknown():
    fused = TsdfMap(0.05, max_blocks=100_000)
    for p in poses():
        fused.integrate(view(p, [WALL, FLOOR, OBSTACLE]))
    grid = fused.occupancy(0.2, 1.2)
    assert grid.resolution == 0.05 and grid.cells.dtype == np.int8

    def at(x, y):
        j, i = np.floor((np.array([x, y]) - grid.origin) / grid.resolution).astype(int)
        return grid.cells[i, j] if 0 <= i < grid.cells.shape[0] and 0 <= j < grid.cells.shape[1] else -1

    assert at(1.0, 0.0) == 0 and at(2.5, 1.0) == 0  # seen through: free
    assert at(1.52, 0.0) == 100 and at(3.02, 1.0) == 100  # the obstacle's and the wall's faces
    assert at(2.4, 0.0) == -1  # in the obstacle's shadow, never seen
    assert at(3.6, 0.0) == -1  # behind the wall
    coarse = fused.occupancy(0.2, 1.2, resolution=0.2)
    assert coarse.resolution == 0.2 and coarse.cells.shape[0] < grid.cells.shape[0]
    assert fused.occupancy(5.0, 6.0).cells.size == 0  # nothing observed up there
    assert TsdfMap(0.05).occupancy(0.0, 1.0).cells.size == 0


def test_a_box_whose_top_no_camera_saw_is_not_free_inside():
    """A camera 0.3 m up sees a box 0.8 m tall from the front and the free space over it (rays to
    the wall pass above), never its top or inside: the columns inside it hold free voxels above
    the box and none seen below, so they are unknown, not free; its front face is occupied and
    the floor-level space before it free."""
    box = ((1.5, -0.3, 0.0), (1.8, 0.3, 0.8))
    fused = TsdfMap(0.05, max_blocks=100_000)
    for i in range(6):
        fused.integrate(view(pose(x=-0.3 + 0.1 * i, y=0.1 * np.sin(i), z=0.3, yaw=0.05 * np.cos(i)),
                             [WALL, FLOOR, box]))
    grid = fused.occupancy(0.1, 1.2)

    def at(x, y):
        j, i = np.floor((np.array([x, y]) - grid.origin) / grid.resolution).astype(int)
        return grid.cells[i, j]

    inside = [at(x, y) for x in (1.6, 1.65, 1.7) for y in (-0.2, 0.0, 0.2)]
    assert Grid2D.FREE not in inside and Grid2D.UNKNOWN in inside  # seen over, not under
    assert at(1.52, 0.0) == Grid2D.OCCUPIED and at(1.2, 0.0) == Grid2D.FREE


def test_a_cell_is_free_only_where_the_bands_lowest_voxel_was_seen():
    """Free space (tsdf 1) observed in a 0.2 m block stack but for some voxels: a column whose
    lowest band voxel was not seen is unknown, one missing a higher voxel is still free; a coarser
    cell is free only when all its voxel columns are (white box: the field loaded as a state)."""
    v = 0.05
    fused = TsdfMap(v, max_blocks=100)
    blocks = np.array([[0, 0, 0], [0, 0, 1]])
    centres = (blocks[:, None, :] * BLOCK + _OFFSETS) * v + v / 2
    weight = np.ones((2, VOXELS), np.float32)
    column = lambda x, y: (np.abs(centres[..., 0] - (x + 0.5) * v) < 1e-6) & (np.abs(centres[..., 1] - (y + 0.5) * v) < 1e-6)  # noqa: E731
    weight[column(0, 0) & (np.abs(centres[..., 2] - 0.075) < 1e-6)] = 0  # the lowest band voxel of column (0, 0)
    weight[column(2, 0) & (np.abs(centres[..., 2] - 0.275) < 1e-6)] = 0  # a higher one of column (2, 0)
    state = fused.state()
    state.update(keys=pack(blocks.T.copy()), tsdf=np.ones((2, VOXELS), np.float32), weight=weight,
                 rgb=np.zeros((2, VOXELS, 3), np.uint8), looks=np.ones((2, VOXELS), np.uint8),
                 front=np.ones((2, VOXELS), bool))
    fused.load_state(state)
    grid = fused.occupancy(0.06, 0.4)  # voxels centred at 0.075 .. 0.375
    want = np.zeros((BLOCK, BLOCK), np.int8)
    want[0, 0] = -1  # rows: y, columns: x
    np.testing.assert_array_equal(grid.cells, want)
    coarse = fused.occupancy(0.06, 0.4, resolution=2 * v)  # each cell: 2 x 2 voxel columns
    np.testing.assert_array_equal(coarse.cells, [[-1, 0], [0, 0]])
    assert fused.occupancy(0.0, 0.4).cells.min() == 0  # the voxels centred at 0.025 are the lowest then
    # A band starting on a voxel centre has one lowest voxel, whatever the float rounding.
    for size, z_min in ((0.05, 0.175), (0.03, 0.165), (0.03, 0.225), (0.25, 0.375)):  # the last one exact
        free = TsdfMap(size, max_blocks=100)
        stack = np.array([[0, 0, z] for z in range(4)])
        state = free.state()
        state.update(keys=pack(stack.T.copy()), tsdf=np.ones((4, VOXELS), np.float32),
                     weight=np.ones((4, VOXELS), np.float32), rgb=np.zeros((4, VOXELS, 3), np.uint8),
                     looks=np.ones((4, VOXELS), np.uint8),
                     front=np.ones((4, VOXELS), bool))
        free.load_state(state)
        assert (free.occupancy(z_min, z_min + 0.3).cells == 0).all(), (size, z_min)
        # The band's lowest voxels (centred on z_min, as rounding puts them) unseen: nothing above them is.
        k = stack[:, None, 2] * BLOCK + _OFFSETS[:, 2]
        layer = k == k[k * size + size / 2 >= z_min].min()
        free.load_state({**state, "weight": np.where(layer, 0, 1).astype(np.float32)})
        assert (free.occupancy(z_min, z_min + 0.3).cells == -1).all(), (size, z_min)


def test_max_range_limits_surfaces_but_still_clears():
    fused = TsdfMap(0.05, max_range=2.0, max_blocks=100_000)
    for p in poses():
        fused.integrate(view(p, [WALL, FLOOR]))
    points = fused.surface()[0]
    assert len(points) and points[:, 0].max() < 2.0  # the floor near by only, not the wall at 3 m
    grid = fused.occupancy(0.2, 1.2)
    j, i = np.floor((np.array([1.2, 0.0]) - grid.origin) / grid.resolution).astype(int)
    assert grid.cells[i, j] == 0


@pytest.mark.parametrize("factor", [2.0, 2.0**70, 2.0**-70], ids=["twice", "huge", "tiny"])
def test_rays_of_any_length_reach_the_same_blocks(factor):
    """A RangeView's rays are directions: longer or shorter by a power of two (exactly; also where
    float32 squares would overflow or underflow), the same band and free-space blocks and map."""
    v = view(pose(x=0.3, yaw=0.4), [WALL, FLOOR, OBSTACLE])
    longer = RangeView(v.ranges, v.rays * np.float32(factor), v.pixels, v.world_from_camera, v.colors, v.weights)
    rot, origin = v.world_from_camera[:3, :3], v.world_from_camera[:3, 3]
    maps = [TsdfMap(0.05), TsdfMap(0.05)]
    seen = [m._blocks_seen(w, w.ranges > 0, rot, origin) for m, w in zip(maps, (v, longer))]
    for a, b in zip(*seen):
        assert len(a) > 100
        np.testing.assert_array_equal(a, b)
    for m, w in zip(maps, (v, longer)):
        m.integrate(w)
    np.testing.assert_array_equal(maps[0].surface()[0], maps[1].surface()[0])


def test_far_ranges_carve_free_space_only_up_to_max_range():
    """With max_range, a view of surfaces 1 km away finds no surface band and free-space blocks only
    within max_range of the camera (without it, such a view's free space is millions of blocks)."""
    v = view(pose(x=0.3, yaw=0.4), [WALL, FLOOR, OBSTACLE])
    far = RangeView(np.where(v.ranges > 0, 1000.0, 0).astype(np.float32), v.rays, v.pixels, v.world_from_camera,
                    v.colors, v.weights)
    fused = TsdfMap(0.05, max_range=5.0)
    rot, origin = v.world_from_camera[:3, :3], v.world_from_camera[:3, 3]
    band, free = fused._blocks_seen(far, far.ranges > 0, rot, origin)
    centres = (key_cells(free) + 0.5) * BLOCK * 0.05
    assert len(band) == 0 and len(free) > 100
    assert np.linalg.norm(centres - origin, axis=1).max() <= 5.0 + BLOCK * 0.05
    assert fused.integrate(far) > 0 and len(fused.surface()[0]) == 0


def test_memory_bound_keeps_the_view_and_drops_the_farthest():
    fused = TsdfMap(0.05, max_blocks=3000)
    sizes = []
    for i in range(12):
        sizes.append(len(fused))
        fused.integrate(view(pose(x=-0.5 + 0.2 * i, yaw=0.5 * i), [WALL, FLOOR, OBSTACLE]))
        assert len(fused) <= 3000
    assert max(sizes) > 2000 and fused.nbytes <= 4096 * TsdfMap.BYTES_PER_BLOCK
    last = view(pose(x=1.7, yaw=5.5), [WALL, FLOOR, OBSTACLE])
    fused.integrate(last)
    band, free = fused._blocks_seen(last, last.ranges > 0, last.world_from_camera[:3, :3], last.world_from_camera[:3, 3])
    assert np.isin(band, fused._keys).mean() > 0.95


def test_an_eviction_keeps_its_blocks_exact_and_moves_no_more_than_it_drops():
    """_keep (an eviction) keeps exactly the chosen blocks, their voxels, flags and origins as they
    were, each key at the slot that holds its block; kept blocks below the pool's new end stay in
    their slots (only those past it move, into the dropped ones' slots), as the eviction it
    remembers says; the surface and mapping afterwards are those of the kept blocks loaded into a
    new map."""
    fused = TsdfMap(0.05, max_blocks=100_000)
    for p in poses(4):
        fused.integrate(view(p, [WALL, FLOOR, OBSTACLE]))
    n, before = len(fused), fused.state()
    slots = fused._slots.copy()
    extra = {name: getattr(fused, name)[slots].copy() for name in ("_origin", "_free", "_fused")}
    chosen = np.random.default_rng(0).choice(n, n // 3, replace=False)  # pool slots
    kept = np.isin(slots, chosen)  # by sorted key
    fusions = fused._fusions
    fused._keep(chosen)
    after = fused.state()
    assert len(fused) == len(chosen) and fused._fusions == fusions + 1
    for name in ("keys", "tsdf", "weight", "rgb", "looks", "front"):
        np.testing.assert_array_equal(after[name], before[name][kept])
    for name, values in extra.items():
        np.testing.assert_array_equal(getattr(fused, name)[fused._slots], values[kept])
    eviction = fused._evictions[-1]
    np.testing.assert_array_equal(eviction.gone, before["keys"][~kept])
    np.testing.assert_array_equal(eviction.moved()[slots[kept]], fused._slots)
    assert (eviction.moved()[slots[~kept]] == -1).all() and eviction.count == fused._fusions
    stay = slots[kept] < len(chosen)
    np.testing.assert_array_equal(fused._slots[stay], slots[kept][stay])
    assert np.count_nonzero(~stay) == np.count_nonzero(slots[~kept] < len(chosen))  # moved = dropped below
    assert sorted(fused._slots) == list(range(len(chosen)))
    loaded = TsdfMap(0.05, max_blocks=100_000)
    loaded.load_state(after)
    for a, b in zip(fused.surface(), loaded.surface()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(oriented_triangles(fused.mesh()), oriented_triangles(loaded.mesh())):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(fused.occupancy(0.2, 1.2).cells, loaded.occupancy(0.2, 1.2).cells)
    for volume in (fused, loaded):
        volume.integrate(view(poses(5)[4], [WALL, FLOOR, OBSTACLE]))
    for a, b in zip(fused.state().values(), loaded.state().values()):
        np.testing.assert_array_equal(a, b)
    state, mesh, fusions, evictions = fused.state(), oriented_triangles(fused.mesh()), fused._fusions, fused._evictions
    fused._keep(np.concatenate([np.arange(len(fused))] * 2))  # every slot, twice: nothing moves, nothing to remember
    assert fused._fusions == fusions and fused._evictions is evictions
    for a, b in zip(fused.state().values(), state.values()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(oriented_triangles(fused.mesh()), mesh):  # nothing to search again, the mesh made anew
        np.testing.assert_array_equal(a, b)
    fused._keep(np.zeros(0, np.intp))
    assert len(fused) == 0 and len(fused.surface()[0]) == len(fused.mesh()[0]) == 0
    assert fused.occupancy(0.2, 1.2).cells.size == 0


def test_after_an_eviction_only_the_evicted_blocks_neighbours_are_searched_again():
    """An eviction keeps what surface(), mesh() and occupancy() found in the kept blocks (the moved
    ones' slots renumbered): their next calls search only the kept blocks whose extraction read an
    evicted one (here: beside the plane that cuts the map in two), and equal whole searches of the
    kept blocks loaded into a new map; the mesh's regions stay of the same storage generation."""
    band = (0.2, 1.2)
    fused = TsdfMap(0.05, max_blocks=100_000)
    for p in poses(4):
        fused.integrate(view(p, [WALL, FLOOR, OBSTACLE]))
    fused.surface(), fused.mesh(), fused.occupancy(0.0, 0.6), fused.occupancy(*band)  # the band kept: the last
    generation = fused._generation
    cells = fused._origin[:len(fused)] // BLOCK
    cut = int(np.median(cells[:, 0]))
    fused._keep(np.flatnonzero(cells[:, 0] < cut))  # every block at x >= cut goes, most slots move
    searched = {}
    for name in ("_crossings", "_mesh_blocks", "_columns_of"):
        def recorded(which, *args, name=name, search=getattr(fused, name)):
            searched[name] = searched.get(name, 0) + len(which)
            return search(which, *args)
        setattr(fused, name, recorded)
    whole = TsdfMap(0.05, max_blocks=100_000)
    whole.load_state(fused.state())
    for a, b in zip(sorted_surface(fused.surface()), sorted_surface(whole.surface())):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(oriented_triangles(fused.mesh()), oriented_triangles(whole.mesh())):
        np.testing.assert_array_equal(a, b)
    assert_same_grid(fused.occupancy(*band), whole.occupancy(*band))
    beside = np.count_nonzero(fused._origin[:len(fused), 0] // BLOCK == cut - 1)  # the blocks beside the cut
    assert 0 < min(searched.values()) and max(searched.values()) <= beside < len(fused) // 4, (searched, beside)
    assert fused.mesh_regions().generation == generation
    assert_same_grid(fused.occupancy(0.0, 0.6), whole.occupancy(0.0, 0.6))  # another band: all


def test_state_round_trip_is_exact_and_checked():
    fused = TsdfMap(0.05, max_blocks=100_000)
    for p in poses(4):
        fused.integrate(view(p, [WALL, FLOOR, OBSTACLE]))
    state = fused.state()
    again = TsdfMap(0.05, max_blocks=100_000)
    again.load_state(state)
    for a, b in zip(fused.surface(), again.surface()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(fused.occupancy(0.2, 1.2).cells, again.occupancy(0.2, 1.2).cells)
    assert fused._free[:len(fused)].any()  # blocks seen through, skipped by the next fusion
    again.integrate(view(poses(5)[4], [WALL, FLOOR, OBSTACLE]))  # mapping goes on
    fused.integrate(view(poses(5)[4], [WALL, FLOOR, OBSTACLE]))
    np.testing.assert_array_equal(fused.surface()[0], again.surface()[0])
    for a, b in zip(fused.state().values(), again.state().values()):  # the very same map, skips included
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="voxel_size"):
        TsdfMap(0.1).load_state(state)
    with pytest.raises(ValueError, match="truncation_ratio"):
        TsdfMap(0.05, truncation_ratio=0.2).load_state(state)
    small = TsdfMap(0.05, max_blocks=10)
    with pytest.raises(ValueError, match="max_blocks"):
        small.load_state(state)
    assert len(small) == 0
    with pytest.raises(ValueError, match="format"):
        TsdfMap(0.05).load_state({**state, "format": np.array("something else")})
    # A map saved before `front` was kept: every observed voxel may bound a crossing, as then.
    first = {k: v for k, v in state.items() if k != "front"}
    first["format"] = np.array("mapanything_ros.tsdf/1")
    before, then = TsdfMap(0.05, max_blocks=100_000), TsdfMap(0.05, max_blocks=100_000)
    before.load_state(first)
    then.load_state({**state, "front": state["weight"] > 0})
    for a, b in zip(before.state().values(), then.state().values()):
        np.testing.assert_array_equal(a, b)
    now = TsdfMap(0.05, max_blocks=100_000)
    now.load_state(state)
    assert len(before.surface()[0]) > len(now.surface()[0])  # crossings the flag leaves out, back
    with pytest.raises(ValueError, match="disagree"):
        TsdfMap(0.05).load_state({**state, "front": state["front"][:, :8]})
    assert 0 < state["looks"].max() <= tsdf.COLOR_LOOKS and state["front"].any()  # the flag is not in the looks
    with pytest.raises(ValueError, match="looks"):
        TsdfMap(0.05).load_state({**state, "looks": state["looks"] | np.uint8(128)})
    # Values fusion never makes (a hostile tester: an inf weight loaded, then ~/map carried NaN confidence).
    for name, value in (("weight", np.inf), ("weight", -5.0), ("weight", 1e39), ("tsdf", np.nan), ("tsdf", 2e9),
                        ("tsdf", -1.5), ("rgb", 1e9), ("rgb", -1), ("looks", -1)):
        bad = state[name].astype(np.float64 if value in (1e9, 1e39) else
                                 np.int16 if name in ("rgb", "looks") else state[name].dtype)
        bad.flat[7] = value
        with pytest.raises(ValueError, match=f"the map's {name} values are not all finite and within"):
            again.load_state({**state, name: bad})
    for a, b in zip(fused.state().values(), again.state().values()):  # left as it was
        np.testing.assert_array_equal(a, b)


PANEL = ((1.5, -0.3, 0.0), (1.55, 0.3, 1.5))  # a thin panel where OBSTACLE's front face is


def test_no_surface_where_no_view_saw_one():
    """A thin panel seen from the front only looks like a deep box: behind its face the band's
    negative side meets the free space carved past its edges, a step through zero that is no surface
    (no view saw those voxels in front of one). The map keeps none there; the same field with every
    voxel taken as seen in front (what the map did before it kept the flag) had a wall beside and
    behind the panel, up to the band's depth."""
    scene = [WALL, FLOOR, PANEL]
    fused = TsdfMap(0.05, max_blocks=100_000)
    for p in poses(6):
        fused.integrate(view(p, scene))
    state = fused.state()
    every = TsdfMap(0.05, max_blocks=100_000)
    every.load_state({**state, "front": np.ones_like(state["front"])})
    for points, full in ((fused.surface()[0], every.surface()[0]), (fused.mesh()[0], every.mesh()[0])):
        off, off_full = (box_distance(p.astype(np.float64), scene) for p in (points, full))
        assert len(points) > 10_000 and off.max() < 0.1
        assert (off_full > 0.1).sum() > 20
    grid, full = fused.occupancy(0.2, 1.2), every.occupancy(0.2, 1.2)
    assert (grid.cells == 100).sum() < (full.cells == 100).sum()  # a free side's solid neighbour too


def test_nothing_from_pixels_without_range_or_weight():
    fused = TsdfMap(0.05)
    v = view(pose(), [WALL])
    nan = RangeView(np.full_like(v.ranges, np.nan), v.rays, v.pixels, v.world_from_camera, v.colors, v.weights)
    zero = RangeView(v.ranges, v.rays, v.pixels, v.world_from_camera, v.colors, np.zeros_like(v.weights))
    assert fused.integrate(nan) == 0 and fused.integrate(zero) == 0 and len(fused) == 0
    bad = RangeView(v.ranges, v.rays, v.pixels, np.full((4, 4), np.nan), v.colors, v.weights)
    with pytest.raises(ValueError, match="finite"):
        fused.integrate(bad)
    with pytest.raises(ValueError):
        TsdfMap(0.05, truncation=0.01)


def test_fisheye_views_fuse_as_well_as_pinhole():
    """The equidistant fisheye of the synthetic rig (projection through its own lens model)."""
    scene = make_scene("small", 0)
    fused = TsdfMap(0.05, max_blocks=200_000)
    for name in ("front_optical", "left_fisheye_optical"):
        rig = scene.rig_camera(name)
        rays = rig.camera.ray_map().astype(np.float32)
        for t in np.arange(0, 4, 0.5):
            v = scene.render(name, int(t * 1e9))
            fused.integrate(RangeView(v.depth_ray, rays, ModelPixels.native(rig.camera), v.world_from_camera, v.image,
                                      (v.depth_ray > 0).astype(np.float32)))
    points = fused.surface()[0]
    d = scene.room.surface_distance(points.astype(np.float64))
    # every pixel weighs 1 here, depth edges included (the pipeline leaves those out)
    assert len(points) > 20_000 and np.median(d) < 0.005 and np.mean(d < 0.02) > 0.94 and np.mean(d < 0.05) > 0.98


@settings(max_examples=50, deadline=None)
@given(cells_=st.lists(st.tuples(*[st.integers(-KEY_OFFSET, KEY_OFFSET - 1)] * 3), min_size=1, max_size=20))
def test_keys_pack_cells_and_sort_lexicographically(cells_):
    index = np.array(cells_, np.int64)
    found, ok = cells(((index + 0.5) * 0.05).T.copy(), 0.05)
    assert ok.all()
    keys = pack(found)
    np.testing.assert_array_equal(key_cells(keys), index)
    np.testing.assert_array_equal(np.argsort(keys, kind="stable"), np.lexsort(index.T[::-1]))


@settings(max_examples=100, deadline=None)
@given(cells_=st.lists(st.tuples(*[st.sampled_from([-KEY_OFFSET, -KEY_OFFSET + 1, -3, 0, 5, KEY_OFFSET - 2,
                                                    KEY_OFFSET - 1])] * 3), min_size=1, max_size=20),
       offset=st.tuples(*[st.integers(-2, 2)] * 3))
def test_shifted_keys_are_the_shifted_cells(cells_, offset):
    """keys.shifted: the keys of the cells at `offset`, in range exactly where those indices are, at
    the packable range's edges too (where a packed key would wrap into the next index)."""
    index = np.array(cells_, np.int64)
    keys, ok = shifted(pack(index.T.copy()), offset)
    moved = index + offset
    want = ((moved >= -KEY_OFFSET) & (moved < KEY_OFFSET)).all(1)
    np.testing.assert_array_equal(ok, want)
    np.testing.assert_array_equal(keys[ok], pack(moved[want].T.copy()))


LENSES = {"pinhole": CAMERA,
          "plumb_bob": CameraModel(160, 120, (80.0, 0.0, 79.5, 0, 80.0, 59.5, 0, 0, 1),
                                   (-0.08, 0.03, 0.0005, -0.0004, 0.01), "plumb_bob"),
          "equidistant": CameraModel(160, 120, (50.0, 0.0, 79.5, 0, 50.0, 59.5, 0, 0, 1), (0.02, -0.01, 0.002, 0.0),
                                     "equidistant")}


def fused_state(lens, channels=3):
    """The state of a map fused from six keyframes of LENSES[lens] with holes (NaN), pixels of weight 0,
    varying weights and colours (RGB, or RGB and a byte not read) and a range limit, with the blocks
    all free, in key order."""
    scene, camera = [WALL, FLOOR, OBSTACLE], LENSES[lens]
    out, rng = TsdfMap(0.05, max_blocks=100_000, max_range=3.5), np.random.default_rng(0)
    for p in poses(6):
        v = view(p, scene, camera)
        h, w = v.ranges.shape
        ranges = np.where(rng.random((h, w)) < 0.05, np.nan, v.ranges).astype(np.float32)
        weights = np.where(rng.random((h, w)) < 0.1, 0, rng.uniform(0, 1, (h, w))).astype(np.float32)
        colors = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)  # RGB and a byte not read
        out.integrate(RangeView(ranges, v.rays, v.pixels, p, colors[..., :channels].copy(), weights))
    return {**out.state(), "free": out._free[:len(out)][out._slots]}


@pytest.mark.parametrize("lens", sorted(LENSES))
def test_compiled_fusion_matches_numpy(monkeypatch, lens):
    """_tsdf_fuse.c and TsdfMap._fuse fuse the same keyframes into the same map (the build makes
    the compiled one; the numpy one runs where it is missing), for each lens kind, with holes (NaN),
    pixels of weight 0, varying weights and colours (RGB, or RGB and a byte not read: the same map),
    and a range limit. The same to rounding but
    for the fisheye, whose float32 angle numpy computes less exactly (_tsdf_fuse.c): there a few
    voxels take a neighbouring pixel, and whether one at the band's far edge (weight falling to 0)
    is observed at all depends on the CPU's libm."""
    assert tsdf.COMPILED, "mapanything_ros._tsdf_fuse is not built (CMakeLists.txt)"
    a = fused_state(lens)
    for key, value in fused_state(lens, channels=4).items():  # RGB with a pad byte: the same map
        np.testing.assert_array_equal(value, a[key])
    monkeypatch.setattr(tsdf, "_tsdf_fuse", None)
    b = fused_state(lens)
    for key, value in fused_state(lens, channels=4).items():
        np.testing.assert_array_equal(value, b[key])
    np.testing.assert_array_equal(a["keys"], b["keys"])
    assert (a["weight"] > 0).sum() > 100_000
    if lens == "equidistant":  # (on an AMD EPYC, one voxel of 295,744 at the band's far edge, weight 0 in numpy)
        assert np.mean((a["weight"] > 0) != (b["weight"] > 0)) < 1e-4
        np.testing.assert_allclose(a["tsdf"], b["tsdf"], atol=5e-3)
        assert np.mean(~np.isclose(a["weight"], b["weight"], rtol=5e-3, atol=0)) < 1e-4
        assert np.mean(np.abs(a["tsdf"] - b["tsdf"]) > 1e-5) < 1e-3
    else:
        np.testing.assert_array_equal(a["weight"] > 0, b["weight"] > 0)
        np.testing.assert_allclose(a["tsdf"], b["tsdf"], atol=1e-6)
        np.testing.assert_allclose(a["weight"], b["weight"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a["rgb"], b["rgb"])
    np.testing.assert_array_equal(a["looks"], b["looks"])
    np.testing.assert_array_equal(a["free"], b["free"])
    assert a["front"].sum() > 10_000
    if lens == "equidistant":
        assert np.mean(a["front"] != b["front"]) < 1e-3
    else:
        np.testing.assert_array_equal(a["front"], b["front"])


def random_fusions(seed, count):
    """(the outputs of `count` direct _tsdf_fuse.fuse calls on random pools and views, concatenated as
    bytes; the voxels they updated): every lens kind, images from 0 x 1 to 160 x 120 pixels, NaN,
    infinite and 0 ranges, NaN block corners, 3 or 4 colour bytes, colour looks from 1 to 127 (the
    looks byte's flag bit set or not)."""
    rng, out, updated = np.random.default_rng(seed), [], 0
    grid = (_OFFSETS + 0.5).astype(np.float32)
    for _ in range(count):
        w, h = int(rng.choice([1, 2, 3, 17, 160])), int(rng.choice([0, 1, 2, 3, 17, 120]))
        blocks = 24
        m, v, d = int(rng.integers(1, blocks + 1)), float(rng.choice([0.02, 0.05, 0.1])), rng.uniform(0.3, 4)
        pool = blocks * VOXELS
        tsdf_, weight = rng.uniform(-1, 1, pool).astype(np.float32), rng.uniform(0, 30, pool).astype(np.float32)
        weight[rng.random(pool) < 0.5] = 0
        rgb, looks = rng.integers(0, 256, 3 * pool, dtype=np.uint8), rng.integers(0, 256, pool, dtype=np.uint8)
        free = np.zeros(blocks, bool)
        slots = rng.permutation(blocks)[:m].astype(np.int32)
        corners = np.stack([rng.uniform(-d, d, m) / 2, rng.uniform(-d, d, m) / 2, rng.uniform(-0.5, 1.3 * d, m)], 1)
        corners = corners.astype(np.float32).ravel()
        if rng.random() < 0.1:
            corners[rng.integers(0, corners.size)] = np.nan
        kind = int(rng.integers(0, 3))
        coefficients = tuple(float(c) for c in rng.normal(0, 0.05, 8)) if kind == 1 else (
            tuple(float(c) for c in rng.normal(0, 0.02, 4)) + (0.0,) * 4 if kind == 2 else (0.0,) * 8)
        lens = (kind, coefficients, float(rng.uniform(0.5, 4) if kind == 1 else rng.uniform(1.0, 1.7)))
        f = max(w, h) * rng.uniform(0.3, 1.0)
        pixel = (f, 0.0, w / 2 - 0.5, f, h / 2 - 0.5, 0.0, 1.0, 1.0, 0.0, 0.0)
        ranges = (rng.uniform(0.8, 1.2, h * w) * d).astype(np.float32)
        r = rng.random(h * w)
        ranges[r < 0.05], ranges[(r > 0.05) & (r < 0.1)], ranges[(r > 0.1) & (r < 0.12)] = np.nan, 0, np.inf
        weights = np.where(rng.random(h * w) < 0.1, 0, rng.uniform(0, 1, h * w)).astype(np.float32)
        colors = rng.integers(0, 256, h * w * int(rng.choice([3, 4])), dtype=np.uint8)
        params = (float(rng.choice([0.05, 0.3])), float(rng.choice([0, 0.1])), v, float(rng.choice([20, 100])),
                  float(rng.choice([0, 3.0])), 0.05, float(rng.choice([0.5, 0.9])), float(rng.choice([0, 0.5])))
        n = tsdf._tsdf_fuse.fuse(tsdf_, weight, rgb, looks, free, slots, corners, (grid * v).ravel(), lens, pixel,
                                 ranges, weights, colors, w, params, int(rng.choice([1, 16, 127])))
        updated += n
        out += [np.array([n], np.int64).view(np.uint8), tsdf_.view(np.uint8), weight.view(np.uint8), rgb, looks,
                free.view(np.uint8)]
    return np.concatenate(out), updated


def test_both_builds_of_the_compiled_fusion_give_the_same_bits(tmp_path):
    """_tsdf_fuse.c's loop is built for any CPU and for CPUs with AVX2, and runs the second where the
    CPU has it (SIMD says which) unless MAPANYTHING_ROS_SIMD=baseline: both fuse the same maps bit for
    bit (no fused multiply-adds, the same operations in the same order), for every lens kind, and the
    same pools from random direct calls (tiny and empty images among them)."""
    assert tsdf.COMPILED, "mapanything_ros._tsdf_fuse is not built (CMakeLists.txt)"
    script = ("import sys, numpy as np; sys.path.insert(0, sys.argv[1]); import test_tsdf as t; "
              "from mapanything_ros.mapping import tsdf; "
              "maps = {f'{lens} {k}': v for lens in t.LENSES for k, v in t.fused_state(lens).items()}; "
              "random, updated = t.random_fusions(0, 300); "
              "np.savez(sys.argv[2], simd=tsdf._tsdf_fuse.SIMD, random=random, updated=updated, **maps)")
    states = {}
    for simd in ("", "baseline"):
        path = tmp_path / f"{simd or 'default'}.npz"
        env = {k: v for k, v in os.environ.items() if k != "MAPANYTHING_ROS_SIMD"}
        env.update({"MAPANYTHING_ROS_SIMD": simd} if simd else {})
        subprocess.run([sys.executable, "-c", script, str(Path(__file__).parent), str(path)], env=env, check=True)
        states[simd] = dict(np.load(path))
    assert str(states["baseline"].pop("simd")) == "baseline"
    if str(states[""].pop("simd")) == "baseline":
        pytest.skip("this CPU has no AVX2 (or is not x86-64): it runs the baseline build only")
    assert (states[""]["pinhole weight"] > 0).sum() > 100_000 and states[""]["updated"] > 20_000
    assert states[""].keys() == states["baseline"].keys()
    for key, value in states[""].items():
        np.testing.assert_array_equal(value, states["baseline"][key], err_msg=key)


def test_mesh_follows_the_surface_and_faces_the_camera():
    """The surface-nets mesh: vertices on the scene, one vertex per crossed cell (as many as the
    surface's points, within a few per cent), every triangle's normal towards the free side the
    camera looked from, and a plane meshed without holes (each inner edge shared by 2 triangles)."""
    scene = [WALL, FLOOR, OBSTACLE]
    fused = TsdfMap(0.05, max_blocks=100_000)
    for p in poses():
        fused.integrate(view(p, scene))
    vertices, colours, triangles = fused.copy().mesh()
    points = fused.surface()[0]
    d = box_distance(vertices.astype(np.float64), scene)
    assert np.median(d) < 0.01 and np.quantile(d, 0.99) < 0.04
    assert 0.3 * len(points) < len(vertices) < 1.2 * len(points) and (colours == 200).all()
    assert len(triangles) > len(vertices) and triangles.min() >= 0 and triangles.max() < len(vertices)
    a, b, c = (vertices[triangles[:, k]].astype(np.float64) for k in range(3))
    normal = np.cross(b - a, c - a)
    centre = (a + b + c) / 3
    towards = pose()[:3, 3] - centre  # the cameras stand near x = 0, in front of every surface they see
    facing = np.einsum("ij,ij->i", normal, towards) > 0
    assert facing.mean() > 0.97
    # A patch of the wall's face (x = 3 m) above the obstacle
    wall = (centre[:, 0] > 2.9) & (np.abs(centre[:, 1]) < 1.0) & (centre[:, 2] > 1.6) & (centre[:, 2] < 2.0)
    edges = np.sort(np.concatenate([triangles[wall][:, [0, 1]], triangles[wall][:, [1, 2]], triangles[wall][:, [2, 0]]]), 1)
    _, uses = np.unique(edges, axis=0, return_counts=True)
    assert wall.sum() > 100 and uses.max() == 2 and (uses == 2).mean() > 0.8  # the rest: the patch's border


def test_a_copy_shares_nothing():
    fused = TsdfMap(0.05, max_blocks=100_000)
    fused.integrate(view(pose(), [WALL, FLOOR]))
    twin = fused.copy()
    for name, array in vars(twin).items():
        if isinstance(array, np.ndarray):
            assert not np.shares_memory(array, getattr(fused, name)), name
    fused.integrate(view(pose(x=0.5), [WALL, FLOOR, OBSTACLE]))
    assert len(twin) < len(fused)
    again = TsdfMap(0.05, max_blocks=100_000)
    again.integrate(view(pose(), [WALL, FLOOR]))
    for a, b in zip(twin.state().values(), again.state().values()):
        np.testing.assert_array_equal(a, b)


def test_an_eviction_moves_every_field_of_a_block_and_new_blocks_start_empty():
    """_keep (the memory bound's eviction) keeps each kept block's voxels whole, every field of them,
    and the slots it frees come back empty to the blocks added next (white box)."""
    fused = TsdfMap(0.05, max_blocks=100_000)
    for p in poses(3):
        fused.integrate(view(p, [WALL, FLOOR, OBSTACLE]))
    before = fused.state()
    keep = np.arange(0, len(fused), 3)  # pool slots
    kept_keys = fused._keys[np.isin(fused._slots, keep)]
    fused._keep(keep)
    after = fused.state()
    np.testing.assert_array_equal(after["keys"], kept_keys)
    rows = np.searchsorted(before["keys"], kept_keys)
    for name in ("tsdf", "weight", "rgb", "looks", "front"):
        np.testing.assert_array_equal(after[name], before[name][rows], err_msg=name)
    added = np.setdiff1d(before["keys"], kept_keys)[:50]
    fused._append(added)
    new = fused.state()
    rows = np.searchsorted(new["keys"], added)
    assert (new["tsdf"][rows] == 1).all() and not new["weight"][rows].any() and not new["rgb"][rows].any()
    assert not new["looks"][rows].any() and not new["front"][rows].any()


class PoisonedMap(TsdfMap):
    """A TsdfMap whose pool slots past its blocks hold junk after each growth (_grow leaves them
    unwritten: whatever the allocator gives)."""

    def _grow(self, capacity):
        super()._grow(capacity)
        n = self._size
        self._tsdf[n:], self._weight[n:], self._rgb[n:], self._looks[n:] = np.nan, 7.5, 0xAB, 0xC3
        self._origin[n:], self._free[n:], self._fused[n:] = 123_456_789, True, 2**40


def test_nothing_reads_a_slot_before_a_block_takes_it():
    """Fusion (with evictions at the memory bound), the outputs, copies and state give the same
    with junk in the unused slots as without (the growth leaves them unwritten)."""
    maps = [cls(0.05, max_blocks=5200) for cls in (TsdfMap, PoisonedMap)]
    scenes = [[WALL, FLOOR, OBSTACLE]] * 4 + [[WALL, FLOOR]] * 4
    for p, scene in zip(poses(8), scenes):
        outputs = []
        for m in maps:
            m.integrate(view(p, scene))
            copied = m.copy()
            outputs.append((m.surface(), m.mesh(), m.occupancy(0.2, 1.2).cells, copied.surface(), m.state()))
        (surface, mesh, grid, copy_surface, state), poisoned = outputs
        for a, b in zip((*surface, *mesh, grid, *copy_surface), (*poisoned[0], *poisoned[1], poisoned[2],
                                                                *poisoned[3])):
            np.testing.assert_array_equal(a, b)
        for key, value in state.items():
            np.testing.assert_array_equal(value, poisoned[4][key], err_msg=key)
    assert len(maps[1]._free) > len(maps[1]) and maps[1].overflow == 0 and len(surface[0]) > 1000


def test_mesh_of_an_empty_map():
    vertices, colours, triangles = TsdfMap(0.05).mesh()
    assert vertices.shape == (0, 3) and colours.shape == (0, 3) and triangles.shape == (0, 3)


@pytest.mark.parametrize("offset", [0.1, 0.3, 0.7])
def test_occupied_cells_end_at_the_surface_however_wide_the_band(offset):
    """A wall across x at a sub-voxel position, its field as a far view leaves it (a 0.6 m band):
    the grid is occupied from the cell whose centre lies within 0.6 voxel in front of the wall on,
    free before it. (Judged by the band, the cell in front of every far wall was occupied too.)"""
    v, band = 0.05, 0.6
    fused = TsdfMap(v, max_blocks=100)
    wall = 0.2 + offset * v  # metres
    blocks = np.array([[i, 0, 0] for i in range(3)])
    keys = pack(blocks.T.copy())
    centres = (blocks[:, None, :] * BLOCK + _OFFSETS) * v + v / 2  # (blocks, VOXELS, 3)
    state = fused.state()
    state.update(keys=keys, tsdf=np.clip((wall - centres[..., 0]) / band, -1, 1).astype(np.float32),
                 weight=np.ones((3, VOXELS), np.float32), rgb=np.zeros((3, VOXELS, 3), np.uint8),
                 looks=np.ones((3, VOXELS), np.uint8),
                 front=np.ones((3, VOXELS), bool))
    fused.load_state(state)
    grid = fused.occupancy(0.0, 0.2)
    x = grid.origin[0] + (np.arange(grid.cells.shape[1]) + 0.5) * v
    row = grid.cells[0]
    np.testing.assert_array_equal(row, np.where(x > wall - 0.6 * v, 100, 0))


@pytest.mark.parametrize("compiled", [True, False])
def test_colours_average_the_last_looks_and_wrong_colours_are_refused(monkeypatch, compiled):
    """A voxel's colour is the mean of its last COLOR_LOOKS looks (a new colour after many others moves
    it by 1 / (COLOR_LOOKS + 1)); colours of other than 3 or 4 bytes a pixel are refused; an image
    without pixels fuses nothing."""
    if not compiled:
        monkeypatch.setattr(tsdf, "_tsdf_fuse", None)
    fused = TsdfMap(0.05, max_blocks=100_000)
    v = view(pose(), [WALL, FLOOR])
    black = RangeView(v.ranges, v.rays, v.pixels, v.world_from_camera, np.zeros_like(v.colors), v.weights)
    for _ in range(tsdf.COLOR_LOOKS + 4):
        fused.integrate(black)
    fused.integrate(RangeView(v.ranges, v.rays, v.pixels, v.world_from_camera, np.full_like(v.colors, 255), v.weights))
    points, colours, _ = fused.surface()
    assert len(points) > 1000
    assert np.median(colours) == np.floor(255 / (tsdf.COLOR_LOOKS + 1) + 0.5)
    if compiled:
        with pytest.raises(ValueError, match="colors"):
            fused.integrate(RangeView(v.ranges, v.rays, v.pixels, v.world_from_camera, v.colors[..., :2].copy(),
                                      v.weights))
        empty = TsdfMap(0.05)
        assert empty._update(RangeView(np.zeros((0, 4), np.float32), np.zeros((0, 4, 3), np.float32), v.pixels,
                                       v.world_from_camera, np.zeros((0, 4, 3), np.uint8),
                                       np.zeros((0, 4), np.float32)), np.zeros((0, 4), np.float32),
                             np.zeros((0, 4), np.float32), np.zeros(0, np.int32), np.eye(3), np.zeros(3)) == 0
        args = [np.ones(VOXELS, np.float32), np.zeros(VOXELS, np.float32), np.zeros(3 * VOXELS, np.uint8),
                np.zeros(VOXELS, np.uint8), np.zeros(1, bool), np.zeros(0, np.int32), np.zeros(0, np.float32),
                np.zeros(3 * VOXELS, np.float32), (0, (0.0,) * 8, 0.0), (1.0,) * 10, np.ones(4, np.float32),
                np.ones(4, np.float32), np.zeros(12, np.uint8), 2, (0.2, 0.1, 0.05, 50, 0, 0.1, 0.999, 0.25)]
        assert tsdf._tsdf_fuse.fuse(*args, 127) == 0
        for looks in (0, 128):  # the looks byte's last bit is the front flag
            with pytest.raises(ValueError, match="color_looks"):
                tsdf._tsdf_fuse.fuse(*args, looks)


def test_compiled_ray_keys_match_numpy(monkeypatch):
    """_tsdf_fuse.ray_keys and TsdfMap._ray_keys' numpy path give the same sorted unique block keys:
    rays of 0, 1, 2 and many samples (most of them repeats), samples on block edges, at and just
    inside the ends of the packable range, far outside it, NaN and inf (left out), no rays at all."""
    assert tsdf.COMPILED, "mapanything_ros._tsdf_fuse is not built (CMakeLists.txt)"
    rng = np.random.default_rng(0)
    rot = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    origin = np.array([1.3, -2.2, 0.4])
    n = 3000
    dirs = rng.normal(size=(n, 3)).astype(np.float32)
    lo = rng.uniform(-2, 6, n)
    many = (dirs, lo, lo + rng.uniform(0, 3, n), rng.integers(0, 40, n))
    # Single samples (t = lo = 1) on block edges: world = direction + origin, multiples of 0.25 m.
    edges = (rng.integers(-40, 40, (n, 3)) * 0.25).astype(np.float32)
    on_edges = (edges, np.ones(n), np.full(n, 7.0), np.ones(n, np.int64))
    bad = (np.array([[1, 0, 0], [np.nan, 0, 1], [np.inf, 0, 1], [0, 0, 1], [1, 0, 0], [0, 1, 0]], np.float32),
           np.array([0, 1, 1, np.nan, 3e5, 1]), np.array([2, 2, 2, 2, 3e5, np.inf]), np.array([5, 2, 2, 3, 2, 4]))
    edge = 2.0**20 * 0.5  # the packable range's ends, exactly, at 0.5 m cells: [-2**20, 2**20) cells
    ends = (np.array([[1, 0, 0], [-1, 0, 0], [1, 0, 0], [0, -1, 0], [0, 0, 1]], np.float32),
            np.array([edge, edge, edge - 0.25, edge + 0.25, edge - 0.5]), np.zeros(5), np.ones(5, np.int64))
    none = (np.zeros((0, 3), np.float32), np.zeros(0), np.zeros(0), np.zeros(0, np.int64))
    # Multiples of 0.4 m at 0.4 m blocks: on the edges, where w * (1 / size) and w / size differ.
    k = np.arange(-2000, 2001) * 0.4
    tenths = (np.tile(np.float32([[1, 0, 0]]), (len(k), 1)), k, k, np.ones(len(k), np.int64))
    spaced = (np.array([[1, 0, 0]], np.float32), [0.0], [3.0], [5])  # 0, 0.75, 1.5, 2.25, 3 m
    repeats = (np.array([[0, 0, 1]], np.float32), [1.0], [1.0], [3_000_000])  # one block: memory follows the keys
    cases = [(*many, rot, origin, 0.2), (*on_edges, np.eye(3)[[2, 0, 1]], np.array([0.5, -0.25, 1.0]), 0.25),
             (*bad, rot, origin, 0.2), (*ends, np.eye(3), np.zeros(3), 0.5), (*none, rot, origin, 0.2),
             (*tenths, np.eye(3), np.zeros(3), 0.4), (*spaced, np.eye(3), np.zeros(3), 1.0),
             (*repeats, np.eye(3), np.zeros(3), 1.0)]
    compiled = [tsdf.TsdfMap._ray_keys(*case) for case in cases]
    with pytest.raises(ValueError, match="counts"):
        tsdf.TsdfMap._ray_keys(*spaced[:3], [-1], np.eye(3), np.zeros(3), 1.0)
    monkeypatch.setattr(tsdf, "_tsdf_fuse", None)
    for case, got in zip(cases, compiled):
        want = tsdf.TsdfMap._ray_keys(*case)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want)
    assert len(compiled[0]) > 10_000 and len(compiled[1]) > 2000 and len(compiled[4]) == 0
    assert len(compiled[2]) == 5  # the first ray's: no others have a finite sample in range
    np.testing.assert_array_equal(key_cells(compiled[3]), [[-KEY_OFFSET, 0, 0], [0, 0, KEY_OFFSET - 1],
                                                           [KEY_OFFSET - 1, 0, 0]])
    np.testing.assert_array_equal(key_cells(compiled[6])[:, 0], [0, 1, 2, 3])
    np.testing.assert_array_equal(key_cells(compiled[7]), [[0, 0, 1]])


@pytest.mark.parametrize("name", ["plumb_bob", "rational_polynomial", "equidistant", "pinhole"])
def test_compiled_projection_matches_the_lens_models(name):
    """_tsdf_fuse.project (the projection fuse() makes) gives geometry.ModelPixels' pixels for
    every lens kind, through a resize with a crop, and the same points seen (the optical axis behind
    and at the camera, NaN, inf and huge coordinates among them): bit for bit with NumPy 2 but for the
    fisheye, whose float32 angle neither numpy (its arctan2 differs by CPU) nor _tsdf_fuse.c rounds
    correctly: there both within 1.3e-3 px of the float64 projection (2e-3 allowed), within 1e-3 px
    otherwise."""
    from mapanything_ros.geometry import Resize

    assert tsdf.COMPILED, "mapanything_ros._tsdf_fuse is not built (CMakeLists.txt)"
    d = {"plumb_bob": (-0.08, 0.03, 0.0005, -0.0004, 0.01), "equidistant": (0.02, -0.01, 0.002, 0.0),
         "rational_polynomial": (0.3, -0.05, 0.001, 0.0005, 0.01, 0.35, -0.02, 0.005), "pinhole": ()}[name]
    camera = CameraModel(640, 480, (420.0, 0.5, 322.5, 0, 418.0, 238.0, 0, 0, 1), d, name if d else "")
    pixels = ModelPixels(camera, Resize.to_model(640, 480), "center")
    rng = np.random.default_rng(0)
    cam = rng.normal(size=(20_000, 3)).astype(np.float32)  # every direction, behind the camera too
    cam[:10_000, 2] = np.abs(cam[:10_000, 2]) + 0.2  # and many in front
    cam[-6:] = [[0, 0, -1], [0, 0, 0], [0, 0, 1], [np.nan, 0, 1], [np.inf, 0, 1], [1e30, 1e30, 1]]
    col, row, valid = (np.frombuffer(b, t) for b, t in zip(tsdf._tsdf_fuse.project(cam, *pixels.projection),
                                                            (np.float32, np.float32, bool)))
    with np.errstate(over="ignore", invalid="ignore"):  # the huge and non-finite points
        want_col, want_row, want_valid = pixels(cam[:, 0], cam[:, 1], cam[:, 2])
    np.testing.assert_array_equal(valid, want_valid)
    assert valid.mean() > 0.3
    want_col, want_row = np.float32(want_col[valid]), np.float32(want_row[valid])  # as fuse() takes them
    atol = 1e-3
    if name == "equidistant":  # against the float64 projection
        cam64 = cam[valid].astype(np.float64)
        want_col, want_row, _ = pixels(cam64[:, 0], cam64[:, 1], cam64[:, 2])
        atol = 2e-3
    elif int(np.__version__.split(".")[0]) >= 2:
        np.testing.assert_array_equal(col[valid], want_col)
        np.testing.assert_array_equal(row[valid], want_row)
    np.testing.assert_allclose(col[valid], want_col, rtol=0, atol=atol)
    np.testing.assert_allclose(row[valid], want_row, rtol=0, atol=atol)
    with pytest.raises(ValueError, match="whole number"):
        tsdf._tsdf_fuse.project(np.zeros(7, np.float32), *pixels.projection)


def extractions(volume, which):
    """A map's per-block searches of the blocks at sorted indices `which`: surface crossings, mesh
    parts (but their fusion counts) and the grid's solid voxels."""
    mesh = volume._mesh_blocks(which)
    return (*volume._crossings(which), *mesh[:4], *mesh[5:7], volume._solid(which, key_cells(volume._keys[which])))


def random_pools(seed, min_weight, voxel=0.05, cells_=None):
    """A TsdfMap of `voxel` metres whose blocks (60 % of a 6 x 6 x 6 cube of blocks, so that some
    neighbours are missing; or all the block indices `cells_` (N, 3)) hold random voxels: tsdf
    around the band's edges (±1, 0 and a few NaN included), weights around min_weight (exactly it
    included), random colours and FRONT flags. Every other voxel keeps its value: noise on the rest."""
    rng = np.random.default_rng(seed)
    volume = TsdfMap(voxel, max_blocks=1000, min_weight=min_weight)
    if cells_ is None:
        cube = np.argwhere(np.ones((6, 6, 6), bool)) - 3
        cells_ = cube[rng.random(len(cube)) < 0.6]
    keys = np.sort(pack(cells_.T.copy()))
    volume._append(keys)
    n = len(keys)
    t = rng.choice(np.array([-1.2, -1, -0.5, -0.4, -0.1, 0, 0.1, 0.5, 0.6, 0.9999, 1, 1.3, np.nan], np.float32),
                   (n, VOXELS))  # 0.6 beside -0.4: SOLID_REACH's tie
    t += rng.normal(0, 0.05, t.shape).astype(np.float32) * (rng.random(t.shape) < 0.5)
    w = rng.choice(np.array([0, min_weight, min_weight / 2, 1, 5], np.float32), (n, VOXELS))
    volume._tsdf[:n], volume._weight[:n] = t, w
    volume._rgb[:n] = rng.integers(0, 256, (n, VOXELS, 3), np.uint8)
    volume._looks[:n] = rng.integers(0, 256, (n, VOXELS), np.uint8)
    volume._fused[:n] = 1
    volume._fusions = 1
    return volume


@pytest.mark.parametrize("seed, voxel", [(0, 0.05), (1, 0.1), (2, 1 / 3)])
def test_compiled_extraction_matches_numpy(monkeypatch, seed, voxel):
    """_tsdf_extract.c and TsdfMap's numpy searches (_crossings, _mesh_blocks, _solid) find the
    same surface, mesh and solid voxels, bit for bit and in the same order: on random voxels
    (NaN, the band's edges, weights at min_weight, which rounds down in float32: 0.7, and missing
    neighbours included; voxel sizes whose metres a fused multiply-add would round otherwise) for
    every block and a random subset, and through surface(), mesh() and occupancy() on a fused map,
    incrementally after more keyframes too."""
    assert tsdf._tsdf_extract is not None, "mapanything_ros._tsdf_extract is not built (CMakeLists.txt)"
    rng = np.random.default_rng(seed)
    volume = random_pools(seed, 0.7, voxel)
    subsets = [np.arange(len(volume)), np.sort(rng.choice(len(volume), len(volume) // 3, replace=False))]
    compiled = [extractions(volume, which) for which in subsets]
    fused, more = TsdfMap(0.05), TsdfMap(0.05)
    for p in poses(3):
        fused.integrate(view(p, [WALL, FLOOR, OBSTACLE]))
    outputs = []
    for mode in ("compiled", "numpy"):
        if mode == "numpy":
            monkeypatch.setattr(tsdf, "_tsdf_extract", None)
        more = fused.copy()
        first = (more.surface(), more.mesh(), more.occupancy(0.2, 1.2))
        more.integrate(view(pose(x=1.0, y=-2.0, yaw=-0.8), [WALL, FLOOR]))
        outputs.append((first, (more.surface(), more.mesh(), more.occupancy(0.2, 1.2))))
    for got, want in zip(compiled, [extractions(volume, which) for which in subsets]):
        assert len(got[0]) > 100 and len(got[4]) > 100 and len(got[8]) > 100 and got[10].sum() > 100
        for a, b in zip(got, want):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
    for got, want in zip(*outputs):
        (surface, mesh, grid), (surface_b, mesh_b, grid_b) = got, want
        assert len(surface[0]) > 1000 and len(mesh[2]) > 1000 and (grid.cells == 100).sum() > 50
        for a, b in zip(surface + mesh, surface_b + mesh_b):
            np.testing.assert_array_equal(a, b)
        assert_same_grid(grid, grid_b)


def test_searches_at_the_edge_of_the_packable_range(monkeypatch):
    """A block at the last packable index has no neighbour beyond it: neither search reads the
    block whose key the neighbour's indices would pack to (the packed bits overflow into the next
    index), compiled or in numpy."""
    top = KEY_OFFSET - 1
    edge = np.array([[0, 0, top], [0, 0, top - 1], [0, 1, -KEY_OFFSET], [0, 1, top]])
    volume = random_pools(3, 0.25, cells_=edge)
    alone = random_pools(3, 0.25, cells_=edge)
    alone._keep(alone._slots[alone._find(edge[[0, 1, 3]])])  # without the block the overflow would reach
    near = volume._find(edge[:2])
    assert (volume._find(edge[:2] + [0, 0, 1]) == [-1, near[0]]).all()
    got = extractions(volume, near)
    assert len(got[0]) > 10 and len(got[4]) > 10
    monkeypatch.setattr(tsdf, "_tsdf_extract", None)
    for a, b, c in zip(got, extractions(volume, near), extractions(alone, alone._find(edge[:2]))):
        np.testing.assert_array_equal(a, b)
        if a.dtype != np.int32:  # (pool slots differ)
            np.testing.assert_array_equal(a, c)


def test_compiled_extraction_refuses_bad_arguments():
    """_tsdf_extract's searches check their buffers: formats, sizes, pool slots and block indices."""
    volume = random_pools(0, 0.25)
    which = np.arange(len(volume))
    for search in (tsdf._tsdf_extract.crossings, tsdf._tsdf_extract.mesh):
        with pytest.raises(IndexError, match="which"):
            volume._extract(search, which + 1)
        with pytest.raises(ValueError, match="tsdf"):
            search(volume._tsdf.astype(np.float64), *volume._extract(lambda *a: a, which)[1:])
        slots = volume._slots.copy()
        slots[0] = len(volume._free)
        args = list(volume._extract(lambda *a: a, which))
        with pytest.raises(IndexError, match="slots"):
            search(*args[:5], slots, *args[6:])
        for voxel in (0.0, np.inf, np.nan):
            with pytest.raises(ValueError, match="voxel_size"):
                search(*args[:8], voxel)
        with pytest.raises(ValueError, match="min_weight"):
            search(*args[:7], np.nan, args[8])
    with pytest.raises(TypeError):
        volume._extract(tsdf._tsdf_extract.solid, which)  # no reach
    with pytest.raises(ValueError, match="reach"):
        volume._extract(tsdf._tsdf_extract.solid, which, 1.5)
    assert len(volume._extract(tsdf._tsdf_extract.solid, which[:0], 0.6)) == 0


def test_surface_is_every_crossing_of_the_dense_field():
    """surface() visits only the blocks holding an observed band voxel: against every crossing of
    the whole volume laid out densely (free blocks, unobserved voxels and block borders included)
    whose free side was seen in front of a surface."""
    fused = TsdfMap(0.05, max_blocks=100_000)
    for p in poses(4):
        fused.integrate(view(p, [WALL, FLOOR, OBSTACLE]))
    state = fused.state()
    assert fused._free[:len(fused)].mean() > 0.2  # there are free blocks to skip
    cells = key_cells(state["keys"])
    lo = cells.min(0)
    size = (cells.max(0) - lo + 1) * BLOCK
    t = np.ones(size, np.float32)
    w = np.zeros(size, np.float32)
    f = np.zeros(size, bool)
    for cell, bt, bw, bf in zip(cells, state["tsdf"], state["weight"], state["front"]):
        at = tuple(slice(c, c + BLOCK) for c in (cell - lo) * BLOCK)
        t[at], w[at], f[at] = (x.reshape(BLOCK, BLOCK, BLOCK) for x in (bt, bw, bf))
    want = []
    for axis in range(3):
        a = tuple(slice(0, -1) if k == axis else slice(None) for k in range(3))
        b = tuple(slice(1, None) if k == axis else slice(None) for k in range(3))
        ok = ((w[a] >= fused.min_weight) & (w[b] >= fused.min_weight) & (w[a] > 0) & (w[b] > 0)
              & (np.abs(t[a]) < 1) & (np.abs(t[b]) < 1) & ((t[a] > 0) != (t[b] > 0))
              & np.where(t[a] > 0, f[a], f[b]))
        idx = np.argwhere(ok).astype(np.float64)
        idx[:, axis] += t[a][ok] / (t[a][ok] - t[b][ok])
        want.append((idx + lo * BLOCK + 0.5) * fused.voxel_size)
    want = np.concatenate(want)
    got = fused.surface()[0].astype(np.float64)
    assert len(got) == len(want) > 1000
    order = lambda p: np.lexsort(np.round(p, 4).T)  # noqa: E731  (float32 against float64: keys rounded)
    np.testing.assert_allclose(got[order(got)], want[order(want)], atol=1e-5)


def sorted_surface(surface):
    """surface() arrays in one order (points rounded to keys): incremental and whole searches
    find the same crossings in another order."""
    points, colors, weights = surface
    order = np.lexsort(np.round(points.astype(np.float64), 5).T)
    return points[order], colors[order], weights[order]


def oriented_triangles(mesh):
    """A mesh's triangles as rows of their corners' coordinates, each turned (keeping its
    orientation) to start at its smallest corner, rows sorted; and its vertices and colours sorted."""
    vertices, colours, triangles = mesh
    corners = np.round(vertices.astype(np.float64), 5)[triangles]  # (F, 3, 3)
    first = np.array([min(range(3), key=lambda c: tuple(t[c])) for t in corners], np.int64)
    turned = np.stack([corners[np.arange(len(corners)), (first + s) % 3] for s in range(3)], 1).reshape(-1, 9)
    order = np.lexsort(np.round(vertices.astype(np.float64), 5).T)
    return turned[np.lexsort(turned.T)], vertices[order], colours[order]


def assert_same_grid(got, want):
    np.testing.assert_array_equal(got.cells, want.cells)
    assert got.origin == want.origin and got.resolution == want.resolution


@pytest.mark.parametrize("max_blocks", [100_000, 5200])  # 5200: blocks are evicted on the way
def test_incremental_surface_mesh_and_grid_equal_a_whole_search(max_blocks):
    """surface(), mesh() and occupancy() after each few keyframes search only the blocks fused
    since (and the neighbours whose search reaches into them): the same points, colours and
    weights, the same triangles, the same grid, as a map searched whole (loaded from the same
    state), an obstacle appearing and going included, and the grid's band changing between calls."""
    fused = TsdfMap(0.05, max_blocks=max_blocks)
    scenes = [[WALL, FLOOR]] * 3 + [[WALL, FLOOR, OBSTACLE]] * 4 + [[WALL, FLOOR]] * 6
    evicted = False
    for i, (p, scene) in enumerate(zip(poses(13), scenes)):
        before = len(fused)
        fused.integrate(view(p if i < 10 else pose(x=1.0, y=-2.0, yaw=-0.8), scene))
        evicted |= len(fused) < before
        if i % 3 == 1 or i == 12:
            got = fused.surface()
            assert not any(a.flags.writeable for a in got)
            whole = TsdfMap(0.05, max_blocks=max_blocks)
            whole.load_state(fused.state())
            want = whole.surface()
            assert len(got[0]) == len(want[0]) > 1000
            for a, b in zip(sorted_surface(got), sorted_surface(want)):
                np.testing.assert_array_equal(a, b)
            mesh = fused.mesh()
            assert not any(a.flags.writeable for a in mesh) and len(mesh[2]) > 1000
            for a, b in zip(oriented_triangles(mesh), oriented_triangles(whole.mesh())):
                np.testing.assert_array_equal(a, b)
            band = (0.2, 1.2) if i % 2 else (0.0, 0.6)
            grid = fused.occupancy(*band)
            assert (grid.cells == 100).sum() > 50
            assert_same_grid(grid, whole.occupancy(*band))
            assert_same_grid(fused.occupancy(0.2, 1.2, resolution=0.15), whole.occupancy(0.2, 1.2, resolution=0.15))
    # nothing fused since: the same arrays, the same regions
    assert fused.surface()[0] is got[0] and fused.mesh()[0] is mesh[0] and fused.mesh_regions() is fused.mesh_regions()
    fused.occupancy(0.2, 1.2)
    columns = fused._columns[1:]
    fused.occupancy(0.2, 1.2)
    assert all(a is b for a, b in zip(fused._columns[1:], columns)) and not columns[0][1][1].flags.writeable
    assert not columns[1].counts.flags.writeable
    assert evicted == (max_blocks == 5200)


def test_a_change_regrids_the_block_below_whose_solid_rule_reads_it():
    """A voxel in front of a surface is solid when the zero crossing with its neighbour lies near
    it: a change in the block above alone makes the top voxels of the block below solid, and the
    grid follows (white box: voxels changed in place, as a fusion would)."""
    fused = TsdfMap(0.05, max_blocks=1000)
    cells = np.array([[0, 0, 0], [0, 0, 1]], np.int64)
    keys = pack(cells.T.copy())
    order = np.argsort(keys)
    state = fused.state()
    state.update(keys=keys[order], tsdf=np.full((2, VOXELS), 0.2, np.float32),
                 weight=np.ones((2, VOXELS), np.float32), rgb=np.zeros((2, VOXELS, 3), np.uint8),
                 looks=np.ones((2, VOXELS), np.uint8),
                 front=np.ones((2, VOXELS), bool))
    fused.load_state(state)
    assert (fused.occupancy(0.0, 0.2).cells == 0).all()  # free, no crossing anywhere
    upper = fused._slots[fused._find(np.array([[0, 0, 1]]))[0]]
    fused._tsdf[upper, _OFFSETS[:, 2] == 0] = -0.5  # its bottom voxels behind a surface
    fused._fusions += 1
    fused._fused[upper] = fused._fusions
    grid = fused.occupancy(0.0, 0.2)  # the band holds the lower block's top voxels (z 0.175 m), not the upper's
    assert (grid.cells == 100).all()
    whole = TsdfMap(0.05, max_blocks=1000)
    whole.load_state(fused.state())
    assert_same_grid(grid, whole.occupancy(0.0, 0.2))


def test_a_change_remeshes_the_blocks_whose_cells_reach_it_diagonally():
    """A mesh cell at a block's far corner reads the voxel of the block diagonally beyond it: a
    change there alone re-meshes that block too (white box: one voxel changed in place)."""
    fused = TsdfMap(0.05, max_blocks=1000)
    cells = np.array(list(np.ndindex(2, 2, 2)), np.int64)
    keys = pack(cells.T.copy())
    order = np.argsort(keys)
    voxel = cells[:, None, :] * BLOCK + _OFFSETS[None]
    plane = (voxel.sum(-1) - 3 * BLOCK + 0.5) / 3  # a slanted surface through the blocks' common corner
    state = fused.state()
    state.update(keys=keys[order], tsdf=np.clip(plane, -0.9, 0.9)[order].astype(np.float32),
                 weight=np.ones((8, VOXELS), np.float32), rgb=np.zeros((8, VOXELS, 3), np.uint8),
                 looks=np.ones((8, VOXELS), np.uint8),
                 front=np.ones((8, VOXELS), bool))
    fused.load_state(state)
    fused.mesh()
    corner = fused._slots[fused._find(np.array([[1, 1, 1]]))[0]]  # the far block; its voxel (0, 0, 0)
    fused._tsdf[corner, 0] = -fused._tsdf[corner, 0]
    fused._fusions += 1
    fused._fused[corner] = fused._fusions
    whole = TsdfMap(0.05, max_blocks=1000)
    whole.load_state(fused.state())
    for a, b in zip(oriented_triangles(fused.mesh()), oriented_triangles(whole.mesh())):
        np.testing.assert_array_equal(a, b)


def test_a_mesh_made_on_a_copy_is_kept_by_the_map():
    """Pipeline.map_mesh meshes a copy away from the map lock and gives it back (adopt): the
    map's next mesh searches only what was fused after the copy and equals a whole one, also when
    the map evicted meanwhile (renumbered at the next search); one from before more evictions than
    the map remembers is searched whole; a mesh from before a reset, older than the map's own, or of
    a copy fused itself (or copied from one) is not taken."""
    fused = TsdfMap(0.05, max_blocks=100_000)
    for p in poses(3):
        fused.integrate(view(p, [WALL, FLOOR]))
    copy = fused.copy()
    copy.mesh()
    fused.integrate(view(pose(x=0.5), [WALL, FLOOR, OBSTACLE]))  # fused while the copy was meshed
    fused.adopt(copy)
    assert fused._mesh is copy._mesh
    whole = TsdfMap(0.05, max_blocks=100_000)
    whole.load_state(fused.state())
    for a, b in zip(oriented_triangles(fused.mesh()), oriented_triangles(whole.mesh())):
        np.testing.assert_array_equal(a, b)
    newer = fused._mesh
    fused.adopt(copy)  # older than the map's own
    assert fused._mesh is newer
    fused_copy = fused.copy()  # a copy fused itself meshes another map, and so does a copy of it
    fused_copy.integrate(view(pose(x=0.7), [WALL, FLOOR]))
    its_copy = fused_copy.copy()
    fused_copy.mesh(), its_copy.mesh()
    fused.integrate(view(pose(x=0.8), [WALL, FLOOR]))
    fused.adopt(fused_copy)
    fused.adopt(its_copy)
    assert fused._mesh is newer
    early = fused.copy()
    early.mesh()
    fused._keep(np.arange(len(fused) // 2))  # an eviction while the copy was meshed: its slots renumbered
    fused.integrate(view(pose(x=0.9), [WALL, FLOOR]))
    fused.adopt(early)
    assert fused._mesh[0] == early._mesh[0]
    whole.reset()
    whole.load_state(fused.state())
    for a, b in zip(oriented_triangles(fused.mesh()), oriented_triangles(whole.mesh())):
        np.testing.assert_array_equal(a, b)
    fused.integrate(view(pose(x=1.0), [WALL, FLOOR]))
    stale = fused.copy()
    stale.mesh()
    rng = np.random.default_rng(1)
    for _ in range(tsdf.EVICTIONS_KEPT + 1):  # more evictions than the map remembers: searched whole
        fused._keep(rng.choice(len(fused), len(fused) * 29 // 30, replace=False))
    fused.adopt(stale)
    assert fused._mesh[0] < fused._forgotten and len(fused._evictions) == tsdf.EVICTIONS_KEPT
    whole.reset()
    whole.load_state(fused.state())
    for a, b in zip(oriented_triangles(fused.mesh()), oriented_triangles(whole.mesh())):
        np.testing.assert_array_equal(a, b)
    stale = fused.copy()
    stale.mesh()
    fused.reset()
    fused.load_state(whole.state())  # slots may have moved: a new generation
    fused.adopt(stale)
    assert fused._mesh is None


def test_a_surface_and_grid_found_on_a_copy_are_kept_by_the_map():
    """Pipeline.map_points and .occupancy search a copy away from the map lock and give their
    parts back (adopt): the map's next surface and grid search only what was fused after the copy
    and equal whole ones, also when the map evicted meanwhile (renumbered at the next search); parts
    from before more evictions than the map remembers are searched whole; a copy older than the
    map's own, fused itself, of another map (a sibling copy) or from before a load is not taken."""
    band = (0.2, 1.2)
    fused = TsdfMap(0.05, max_blocks=100_000)
    for p in poses(3):
        fused.integrate(view(p, [WALL, FLOOR]))
    copy = fused.copy()
    copy.surface(), copy.occupancy(*band)
    fused.integrate(view(pose(x=0.5), [WALL, FLOOR, OBSTACLE]))  # fused while the copy was searched
    fused.adopt(copy)
    assert fused._surface is copy._surface and fused._columns is copy._columns
    whole = TsdfMap(0.05, max_blocks=100_000)
    whole.load_state(fused.state())
    for a, b in zip(sorted_points(fused.surface()), sorted_points(whole.surface())):
        np.testing.assert_array_equal(a, b)
    grid, expected = fused.occupancy(*band), whole.occupancy(*band)
    np.testing.assert_array_equal(grid.cells, expected.cells)
    assert (grid.origin, grid.resolution) == (expected.origin, expected.resolution)
    newer = fused._surface, fused._columns
    fused.adopt(copy)  # older than the map's own
    assert fused._surface is newer[0] and fused._columns is newer[1]
    fused_copy = fused.copy()  # a copy fused itself searched another map
    fused_copy.integrate(view(pose(x=0.7), [WALL, FLOOR]))
    fused_copy.surface(), fused_copy.occupancy(*band)
    fused.integrate(view(pose(x=0.8), [WALL, FLOOR]))
    fused.adopt(fused_copy)
    assert fused._surface is newer[0] and fused._columns is newer[1]
    early = fused.copy()
    early.surface(), early.occupancy(*band)
    fused.integrate(view(pose(x=0.9), [WALL, FLOOR]))
    fused._keep(np.arange(len(fused) // 2))  # evictions while the copy was searched: its slots renumbered
    fused.integrate(view(pose(x=1.0), [WALL, FLOOR]))
    fused._keep(np.arange(len(fused) * 2 // 3))
    fused.adopt(early)
    assert fused._surface[0] == early._surface[0] and fused._columns[1][0] == early._columns[1][0]
    whole.reset()
    whole.load_state(fused.state())
    for a, b in zip(sorted_points(fused.surface()), sorted_points(whole.surface())):
        np.testing.assert_array_equal(a, b)
    assert_same_grid(fused.occupancy(*band), whole.occupancy(*band))
    fused.integrate(view(pose(x=1.1), [WALL, FLOOR]))
    stale = fused.copy()
    stale.surface(), stale.occupancy(*band)
    rng = np.random.default_rng(1)
    for _ in range(tsdf.EVICTIONS_KEPT + 1):  # more evictions than the map remembers: searched whole
        fused._keep(rng.choice(len(fused), len(fused) * 29 // 30, replace=False))
    fused.adopt(stale)
    assert fused._surface[0] < fused._forgotten and fused._columns[1][0] < fused._forgotten
    assert len(fused._evictions) == tsdf.EVICTIONS_KEPT
    older = fused.copy()
    fused._keep(np.arange(len(fused) // 2))
    sibling = fused.copy()  # of the map after its eviction
    sibling.surface(), sibling.occupancy(*band)
    older.adopt(sibling)  # not a copy of `older`: its slots are of another pool
    assert older._surface is not sibling._surface and older._columns is not sibling._columns
    whole.reset()
    whole.load_state(fused.state())
    for a, b in zip(sorted_points(fused.surface()), sorted_points(whole.surface())):
        np.testing.assert_array_equal(a, b)
    assert_same_grid(fused.occupancy(*band), whole.occupancy(*band))
    stale = fused.copy()
    stale.surface(), stale.occupancy(*band)
    fused.load_state(whole.state())  # slots may have moved: a new generation
    fused.adopt(stale)
    assert fused._surface is None and fused._columns is None


def sorted_points(surface):
    """surface()'s arrays in the order of its points' coordinates (searches may order them by block)."""
    order = np.lexsort(surface[0].T[::-1])
    return [a[order] for a in surface]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-2**62, 2**62), max_size=300), st.integers(0, 3))
def test_unique_is_numpys(values, repeats):
    """tsdf._unique (a sort, for the block keys) gives np.unique's array, empty and repeated values too."""
    keys = np.array(values * (repeats + 1), np.int64)
    got, want = tsdf._unique(keys), np.unique(keys)
    assert got.dtype == want.dtype and np.array_equal(got, want)


@pytest.mark.parametrize("shape,dtype", [((), np.int32), ((3,), np.float32), ((3,), np.uint8), ((4,), np.int64)])
def test_kept_rows_then_new_ones_in_runs_or_scattered(shape, dtype):
    """_kept_then: old's rows at the kept indices, then the new rows, whether the kept rows come in
    a few long runs (copied as slices) or scattered (gathered), none or all of them."""
    from mapanything_ros.mapping.tsdf import _RUN_ROWS, _kept_then

    rng = np.random.default_rng(0)
    old = (rng.random((5000,) + shape) * 100).astype(dtype)
    new = (rng.random((37,) + shape) * 100).astype(dtype)
    runs = np.ones(5000, bool)
    for start in (0, 700, 2500, 4990):
        runs[start:start + 5 + start % 7] = False
    cases = [np.flatnonzero(runs), np.flatnonzero(rng.random(5000) < 0.5), np.arange(5000), np.arange(0),
             np.arange(4999, 5000), np.arange(100, 100 + 2 * _RUN_ROWS)]
    for kept in cases:
        got = _kept_then(old, kept, new)
        np.testing.assert_array_equal(got, np.concatenate([old[kept], new]))
        assert got.dtype == old.dtype
