"""mapping/mesh.py: a Mesh joined incrementally (Mesh.updated) is the Mesh joined anew (Mesh.of)."""

import numpy as np
import pytest

from mapanything_ros.mapping.mesh import Mesh


def parts(rng, keys, at, quads, quad_at, regions):
    """Mesh parts as TsdfMap._mesh_blocks gives them, with random vertices and colours (pool slots
    unused by the join: zeros)."""
    v, q = len(keys), len(quads)
    return (np.zeros(v, np.int32), keys, rng.uniform(-3, 3, (v, 3)).astype(np.float32),
            rng.integers(0, 256, (v, 3)).astype(np.uint8), at, np.zeros(q, np.int32), quads, quad_at, regions)


def refreshed(rng, old, fusion, cells):
    """(new parts, kept vertex rows, kept quad rows): `old`'s parts with a random share of their rows
    dropped (a block searched again or evicted), then new rows meshed at `fusion`: vertices of cells
    no kept vertex has (some the dropped ones' again, some never seen), quads joining any cells."""
    keys, quads = old[1], old[6]
    kept_vertices = np.flatnonzero(rng.random(len(keys)) < rng.uniform(0.5, 1))
    kept_quads = np.flatnonzero(rng.random(len(quads)) < rng.uniform(0.5, 1))
    free = np.setdiff1d(cells, keys[kept_vertices])
    new_keys = rng.permutation(free)[:rng.integers(0, len(free) + 1)]
    new_quads = rng.choice(cells, (int(rng.integers(0, 60)), 4))
    v, q = len(new_keys), len(new_quads)
    new = parts(rng, new_keys, np.full(v, fusion, np.int64), new_quads, np.full(q, fusion, np.int64),
                rng.integers(0, 5, q))
    joined = tuple(np.concatenate([a[rows], b]) for a, b, rows in
                   zip(old, new, [kept_vertices] * 5 + [kept_quads] * 4))
    return joined, kept_vertices, kept_quads


def assert_same(mesh, want):
    np.testing.assert_array_equal(mesh.corners, want.corners)
    np.testing.assert_array_equal(mesh.whole, want.whole)
    np.testing.assert_array_equal(mesh.stamps[mesh.whole], want.stamps[want.whole])
    for a, b in zip(mesh.triangles(), want.triangles()):
        np.testing.assert_array_equal(a, b)
    got, expected = mesh.regions, want.regions
    np.testing.assert_array_equal(got.keys, expected.keys)
    np.testing.assert_array_equal(got.signatures, expected.signatures)
    for r in range(len(got)):  # the same triangles, in any order
        np.testing.assert_array_equal(np.unique(got.region(r), axis=0), np.unique(expected.region(r), axis=0))


@pytest.mark.parametrize("seed", range(12))
def test_an_updated_mesh_is_the_mesh_joined_anew(seed):
    """Through eight refreshes, each dropping a random share of the rows and adding new ones:
    corners (quads missing a vertex among them: some found again later), whole quads, their
    stamps, the triangles and the regions with their signatures are those of Mesh.of."""
    rng = np.random.default_rng(seed)
    cells = rng.choice(2**40, 300, replace=False)  # the cells a vertex can have
    keys = rng.permutation(cells)[:200]
    quads = rng.choice(cells, (150, 4))
    mesh = Mesh.of(parts(rng, keys, np.zeros(200, np.int64), quads, np.zeros(150, np.int64), rng.integers(0, 5, 150)),
                   7)
    seen_missing = seen_found = 0
    for fusion in range(1, 9):
        new, kept_vertices, kept_quads = refreshed(rng, mesh.parts, fusion, cells)
        was_missing = ~mesh.whole[kept_quads]
        mesh = mesh.updated(new, kept_vertices, kept_quads)
        want = Mesh.of(new, 7)
        assert_same(mesh, want)
        seen_missing += int(was_missing.sum())
        seen_found += int(mesh.whole[:len(kept_quads)][was_missing].sum())  # a kept quad made whole by a new vertex
    assert seen_missing > 0 and seen_found > 0
    assert mesh.generation == 7 and not mesh.corners.flags.writeable


def test_an_empty_mesh_and_a_refresh_of_nothing():
    rng = np.random.default_rng(0)
    empty = parts(rng, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4), np.int64),
                  np.zeros(0, np.int64), np.zeros(0, np.int64))
    mesh = Mesh.of(empty, 0)
    assert len(mesh.regions) == 0 and mesh.triangles()[2].shape == (0, 3)
    cells = np.arange(10, dtype=np.int64)
    new = parts(rng, cells, np.ones(10, np.int64), np.array([[0, 1, 2, 3], [4, 5, 6, 11]]), np.ones(2, np.int64),
                np.array([3, 1]))
    grown = mesh.updated(new, np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert_same(grown, Mesh.of(new, 0))
    assert grown.whole.tolist() == [True, False] and len(grown.regions) == 1
    gone = grown.updated(empty, np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert_same(gone, mesh)
