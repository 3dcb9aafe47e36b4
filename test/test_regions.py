"""mapping.regions: the mesh cut into regions, and the updates that bring a subscriber holding what
was sent up to the map's mesh (~/mesh sends only the regions that changed)."""

import numpy as np
import pytest

from mapanything_ros.mapping import TsdfMap, tsdf
from mapanything_ros.mapping.keys import key_cells
from mapanything_ros.mapping.regions import REGION_BLOCKS, MeshUpdates, RegionMesh
from mapanything_ros.mapping.tsdf import BLOCK

from test_tsdf import (FLOOR, OBSTACLE, WALL, assert_same_grid, oriented_triangles, pose, poses, sorted_surface,
                       view)


class Subscriber:
    """What a display shows of ~/mesh: a marker per id, replaced, deleted or cleared as told."""

    def __init__(self):
        self.markers = {}
        self.received = 0  # regions received

    def apply(self, mesh, update):
        clear, send, delete = update
        if clear:
            self.markers.clear()
        for marker in delete:
            del self.markers[marker]
        for marker, r in send:
            self.markers[marker] = mesh.vertices[mesh.region(r)]  # (n, 3, 3) corners, as a TRIANGLE_LIST
        self.received += len(send)

    def mesh(self):
        """The triangles it shows, as a mesh of their own corners (for oriented_triangles)."""
        corners = np.concatenate(list(self.markers.values()) or [np.zeros((0, 3, 3), np.float32)])
        n = 3 * len(corners)
        return corners.reshape(-1, 3), np.zeros((n, 3), np.uint8), np.arange(n).reshape(-1, 3)


def test_regions_hold_every_triangle_once_by_the_block_of_its_quad():
    fused = TsdfMap(0.05, max_blocks=100_000)
    for p in poses(4):
        fused.integrate(view(p, [WALL, FLOOR, OBSTACLE]))
    mesh = fused.mesh_regions()
    assert len(mesh) > 4 and mesh.generation == fused._generation
    vertices, colours, triangles = fused.mesh()
    whole = np.flatnonzero((fused._mesh[2].corners >= 0).all(1))
    np.testing.assert_array_equal(np.sort(mesh.order), whole)  # every whole quad once
    assert mesh.signatures[:, 1].sum() == len(triangles) and (np.diff(mesh.keys) > 0).all()
    size = REGION_BLOCKS * BLOCK * fused.voxel_size
    for r in range(len(mesh)):
        centres = mesh.vertices[mesh.region(r)].mean(1)
        cell = key_cells(mesh.keys[r:r + 1])[0]  # the region's index
        # a triangle's centre lies within a voxel of its quad's block, so within a voxel of its region
        assert (np.abs(centres - (cell + 0.5) * size) <= size / 2 + 2 * fused.voxel_size).all()
    assert mesh.vertices is vertices
    np.testing.assert_array_equal(np.sort(np.concatenate([mesh.region(r) for r in range(len(mesh))]), 0),
                                  np.sort(triangles, 0))


@pytest.mark.parametrize("max_blocks", [100_000, 5200])  # 5200: blocks are evicted on the way
def test_updates_bring_a_subscriber_to_the_whole_mesh_and_send_only_what_changed(max_blocks):
    """After each keyframe (an obstacle appearing and going, meshes made on copies and handed back
    as the node does, evictions), the subscriber that applied every update shows exactly the map's
    mesh; a keyframe that changes a part of the map resends only the regions there."""
    fused = TsdfMap(0.05, max_blocks=max_blocks)
    updates, shown = MeshUpdates(), Subscriber()
    late = None
    scenes = [[WALL, FLOOR]] * 3 + [[WALL, FLOOR, OBSTACLE]] * 4 + [[WALL, FLOOR]] * 6
    resent, evictions = [], 0
    for i, (p, scene) in enumerate(zip(poses(13), scenes)):
        before = len(fused)
        fused.integrate(view(p if i < 10 else pose(x=1.0, y=-2.0, yaw=-0.8), scene))
        evictions += len(fused) < before
        copy = fused.copy()
        mesh = copy.mesh_regions()
        fused.adopt(copy)
        before = shown.received
        if i == 6:  # a subscriber joins: everything goes out once more (to both: it is one topic)
            late = Subscriber()
        update = updates.update(mesh, everything=i == 6)
        for subscriber in (shown, late):
            if subscriber is not None:
                subscriber.apply(mesh, update)
        resent.append((shown.received - before, len(mesh), update[0]))
        whole = TsdfMap(0.05, max_blocks=max_blocks)
        whole.load_state(fused.state())
        want = oriented_triangles(whole.mesh())[0]
        np.testing.assert_array_equal(oriented_triangles(shown.mesh())[0], want)
        if late is not None:
            np.testing.assert_array_equal(oriented_triangles(late.mesh())[0], want)
    assert resent[0][0] == resent[0][1] and resent[0][2]  # the first: everything, after a clear
    # No clear but for the newcomer, evictions or not (an eviction sends the regions it changed);
    # some regions left alone.
    assert [i for i, (_, _, clear) in enumerate(resent) if clear] == [0, 6]
    assert any(sent < total for sent, total, _ in resent[1:]), resent
    assert (evictions > 2) == (max_blocks == 5200), evictions


def test_nothing_changed_sends_nothing_and_a_failed_publication_resends_everything():
    fused = TsdfMap(0.05, max_blocks=100_000)
    fused.integrate(view(poses(1)[0], [WALL, FLOOR]))
    updates = MeshUpdates()
    mesh = fused.mesh_regions()
    clear, send, delete = updates.update(mesh)
    assert clear and len(send) == len(mesh) and not delete
    assert updates.update(fused.mesh_regions()) == (False, [], [])
    updates.reset()
    clear, send, _ = updates.update(mesh)
    assert clear and len(send) == len(mesh)
    empty = RegionMesh.grouped(mesh.vertices, mesh.colours, np.zeros((0, 4), np.int64), np.zeros(0, np.int64),
                               np.zeros(0, np.int64), np.zeros(0, np.int64), mesh.generation)
    clear, send, delete = updates.update(empty)  # every region gone: each deleted
    assert not clear and not send and sorted(delete) == list(range(len(mesh)))


def slab_map(cells, tsdf):
    """A TsdfMap of the blocks `cells` (N, 3), every voxel observed once, tsdf(global voxel indices
    (N, VOXELS, 3)) -> (N, VOXELS) its field (white box: the state loaded as it is)."""
    from mapanything_ros.mapping.keys import pack
    from mapanything_ros.mapping.tsdf import _OFFSETS, VOXELS

    fused = TsdfMap(0.05, max_blocks=1000)
    cells = np.asarray(cells, np.int64)
    keys = pack(cells.T.copy())
    order = np.argsort(keys)
    field = np.clip(tsdf(cells[:, None, :] * BLOCK + _OFFSETS[None]), -0.9, 0.9).astype(np.float32)
    state = fused.state()
    state.update(keys=keys[order], tsdf=field[order], weight=np.ones((len(cells), VOXELS), np.float32),
                 rgb=np.zeros((len(cells), VOXELS, 3), np.uint8), looks=np.ones((len(cells), VOXELS), np.uint8),
                 front=np.ones((len(cells), VOXELS), bool))
    fused.load_state(state)
    return fused


def changed(fused, cell, voxels, value):
    """Set the voxels (a mask over the block's VOXELS) of block `cell` to `value`, as a fusion would."""
    slot = fused._slots[fused._find(np.array([cell]))[0]]
    fused._tsdf[slot, voxels] = value
    fused._fusions += 1
    fused._fused[slot] = fused._fusions


def assert_shown_is_the_mesh(fused, updates, shown):
    mesh = fused.mesh_regions()
    shown.apply(mesh, updates.update(mesh))
    whole = TsdfMap(0.05, max_blocks=1000)
    whole.load_state(fused.state())
    want = oriented_triangles(whole.mesh())[0]
    assert len(want)
    np.testing.assert_array_equal(oriented_triangles(shown.mesh())[0], want)


def test_a_region_is_resent_when_only_the_vertices_its_triangles_share_moved():
    """A quad of a block joins cells of the blocks below it, whose change does not mesh the block
    again: across a region boundary (y block 15 | 16), the region above is resent all the same
    (its triangles' vertex stamps)."""
    from mapanything_ros.mapping.tsdf import _OFFSETS

    cells = [(0, y, 0) for y in range(REGION_BLOCKS - 2, REGION_BLOCKS + 2)]
    fused = slab_map(cells, lambda v: (v[..., 0] - 1.5) / 3)  # a plane between voxels x 1 and 2
    updates, shown = MeshUpdates(), Subscriber()
    assert_shown_is_the_mesh(fused, updates, shown)
    assert len(shown.markers) == 2
    # the crossing moves in the last voxel row (y = 63) of the block below the boundary only
    changed(fused, (0, REGION_BLOCKS - 1, 0), (_OFFSETS[:, 1] == BLOCK - 1) & (_OFFSETS[:, 0] == 2), 0.05)
    assert_shown_is_the_mesh(fused, updates, shown)


def test_a_region_is_resent_when_an_older_part_of_it_lost_its_triangles():
    """Two surfaces in one region meshed at different fusions: when the older one goes, the
    region's newest stamp stays that of the other, and its triangle count tells."""
    from mapanything_ros.mapping.tsdf import _OFFSETS

    cells = [(0, 0, 0), (3, 0, 0)]
    fused = slab_map(cells, lambda v: (v[..., 0] % BLOCK - 1.5) / 3)  # a plane in each block
    updates, shown = MeshUpdates(), Subscriber()
    assert_shown_is_the_mesh(fused, updates, shown)
    changed(fused, (3, 0, 0), _OFFSETS[:, 0] == 2, 0.05)  # the second plane moves: meshed later
    assert_shown_is_the_mesh(fused, updates, shown)
    changed(fused, (0, 0, 0), slice(None), 0.5)  # the first plane goes: all in front of a surface no more
    assert_shown_is_the_mesh(fused, updates, shown)


def whole(volume):
    """A map loaded from `volume`'s state: every output of it a whole search."""
    out = TsdfMap(volume.voxel_size, max_blocks=10**6)
    out.load_state(volume.state())
    return out


@pytest.mark.parametrize("seed", range(8))
def test_outputs_through_random_fusions_evictions_and_late_copies_equal_whole_searches(seed, monkeypatch):
    """Random fusions into a small bound (evictions in integrate, some overflowing), evictions of
    random blocks, copies whose outputs are made later and adopted (as the node makes them while
    fusion goes on), two evictions remembered: each output of the map and of every copy equals a
    whole search of the same state, and a display applying every ~/mesh update shows the last
    published mesh."""
    monkeypatch.setattr(tsdf, "EVICTIONS_KEPT", 2)
    rng = np.random.default_rng(seed)
    fused = TsdfMap(0.1, max_blocks=int(rng.choice([300, 800])))
    updates, shown, pending, band = MeshUpdates(), Subscriber(), [], (0.2, 1.2)
    evicted = 0
    for _ in range(40):
        op = rng.choice(["fuse", "fuse", "evict", "copy", "publish", "check"])
        if op == "fuse":
            before = len(fused._evictions), fused._forgotten
            fused.integrate(view(pose(x=rng.uniform(-1, 1), y=rng.uniform(-1.5, 1.5), yaw=rng.uniform(-1.2, 1.2)),
                                 [WALL, FLOOR] + [OBSTACLE] * int(rng.integers(2))))
            evicted += (len(fused._evictions), fused._forgotten) != before
        elif op == "evict" and len(fused):
            fused._keep(rng.choice(len(fused), int(rng.integers(len(fused))), replace=False))
            evicted += 1
        elif op == "copy":
            pending.append(fused.copy())
        elif op == "publish" and pending:
            copy = pending.pop(int(rng.integers(len(pending))))
            mesh = copy.mesh_regions()
            surface, grid = copy.surface(), copy.occupancy(*band)
            done = whole(copy)
            for a, b in zip(sorted_surface(surface), sorted_surface(done.surface())):
                np.testing.assert_array_equal(a, b)
            assert_same_grid(grid, done.occupancy(*band))
            fused.adopt(copy)
            shown.apply(mesh, updates.update(mesh))
            np.testing.assert_array_equal(oriented_triangles(shown.mesh())[0], oriented_triangles(done.mesh())[0])
        elif op == "check":
            done = whole(fused)
            for a, b in zip(sorted_surface(fused.surface()), sorted_surface(done.surface())):
                np.testing.assert_array_equal(a, b)
            for a, b in zip(oriented_triangles(fused.mesh()), oriented_triangles(done.mesh())):
                np.testing.assert_array_equal(a, b)
            assert_same_grid(fused.occupancy(*band), done.occupancy(*band))
    assert evicted

