"""VoxelMap (confidence-weighted voxel accumulation, bounded memory) and the PLY writer/reader."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapanything_ros.mapping.ply import read_ply, write_ply
from mapanything_ros.mapping.voxel_map import KEY_OFFSET, VoxelMap, key_cells, voxel_keys
from mapanything_ros.synthetic import SyntheticScene

ORIGIN = np.zeros(3)


def insert(vmap, points, colors=None, confidence=None, camera=ORIGIN):
    points = np.asarray(points, np.float32).reshape(-1, 3)
    colors = np.zeros((len(points), 3), np.uint8) if colors is None else np.asarray(colors, np.uint8)
    confidence = np.ones(len(points), np.float32) if confidence is None else np.asarray(confidence, np.float32)
    return vmap.insert(points, colors, confidence, camera)


def reference_means(batches, voxel):
    """Per-point Python accumulation: {cell: (weighted mean xyz, weighted mean rgb, mean confidence)}."""
    acc = {}
    for points, colors, conf in batches:
        for p, c, w in zip(points.astype(np.float64), colors.astype(np.float64), conf.astype(np.float64)):
            cell = tuple(math.floor(x / voxel) for x in p)
            s = acc.setdefault(cell, [np.zeros(3), np.zeros(3), 0.0, 0])
            s[0] += w * p
            s[1] += w * c
            s[2] += w
            s[3] += 1
    return {k: (s[0] / s[2], s[1] / s[2], s[2] / s[3]) for k, s in acc.items()}


def test_two_points_in_one_voxel_give_their_weighted_means():
    vmap = VoxelMap(voxel_size=0.1)
    points = [[0.01, 0.02, 0.03], [0.05, 0.08, 0.09], [0.25, 0.0, 0.0]]
    colors = [[10, 100, 200], [30, 200, 0], [1, 2, 3]]
    assert insert(vmap, points, colors, [1.0, 3.0, 2.0]) == 3
    xyz, rgb, conf = vmap.points()
    assert len(vmap) == 2 and xyz.dtype == np.float32 and rgb.dtype == np.uint8 and conf.dtype == np.float32
    np.testing.assert_allclose(xyz[0], (np.array(points[0]) + 3 * np.array(points[1])) / 4, atol=1e-7)
    np.testing.assert_array_equal(rgb[0], [25, 175, 50])  # (1·c0 + 3·c1) / 4
    assert conf[0] == pytest.approx(2.0)  # plain mean of 1 and 3
    np.testing.assert_allclose(xyz[1], points[2], atol=1e-7)
    np.testing.assert_array_equal(rgb[1], [1, 2, 3])
    assert conf[1] == pytest.approx(2.0)


def test_equal_confidence_gives_the_plain_mean_across_inserts():
    vmap = VoxelMap(voxel_size=0.1)
    insert(vmap, [[0.01, 0.01, 0.01]], [[0, 0, 0]], [2.0])
    insert(vmap, [[0.09, 0.05, 0.03]], [[100, 50, 255]], [2.0])
    xyz, rgb, conf = vmap.points()
    np.testing.assert_allclose(xyz, [[0.05, 0.03, 0.02]], atol=1e-7)
    np.testing.assert_array_equal(rgb, [[50, 25, 128]])  # (0 + 255) / 2 = 127.5 rounds to even: 128
    np.testing.assert_allclose(conf, [2.0])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), batches=st.integers(1, 4), voxel=st.sampled_from([0.05, 0.25, 1.0]))
def test_matches_a_per_point_reference(seed, batches, voxel):
    rng = np.random.default_rng(seed)
    vmap = VoxelMap(voxel_size=voxel)
    data = []
    for _ in range(batches):
        n = int(rng.integers(0, 300))
        data.append((rng.uniform(-1.0, 1.0, (n, 3)).astype(np.float32), rng.integers(0, 256, (n, 3), dtype=np.uint8),
                     rng.uniform(0.5, 4.0, n).astype(np.float32)))
        assert vmap.insert(*data[-1], ORIGIN) == n
    ref = reference_means(data, voxel)
    cells = sorted(ref)  # VoxelMap returns voxels in key order, which is (ix, iy, iz) order
    xyz, rgb, conf = vmap.points()
    assert len(vmap) == len(cells)
    if cells:
        np.testing.assert_allclose(xyz, [ref[k][0] for k in cells], atol=1e-6)
        assert np.abs(rgb.astype(float) - [ref[k][1] for k in cells]).max() <= 0.5 + 1e-4
        np.testing.assert_allclose(conf, [ref[k][2] for k in cells], rtol=1e-6)


@settings(max_examples=50, deadline=None)
@given(cells=st.lists(st.tuples(*[st.integers(-KEY_OFFSET, KEY_OFFSET - 1)] * 3), min_size=1, max_size=20))
def test_keys_pack_cells_and_sort_lexicographically(cells):
    cells = np.array(cells, np.int64)
    keys, ok = voxel_keys((cells + 0.5) * 0.05, 0.05)
    assert ok.all()
    np.testing.assert_array_equal(key_cells(keys), cells)
    np.testing.assert_array_equal(np.argsort(keys, kind="stable"), np.lexsort(cells.T[::-1]))


def test_drops_invalid_points_and_low_confidence():
    vmap = VoxelMap(voxel_size=0.1, min_confidence=1.5)
    edge = KEY_OFFSET * 0.1  # first coordinate outside the packable range
    points = [[0.0, 0.0, 0.0], [np.nan, 0, 0], [0, np.inf, 0], [0.5, 0, 0], [0.6, 0, 0], [0.7, 0, 0],
              [0.8, 0, 0], [edge * 1.001, 0, 0], [-edge * 0.999, 0, 0]]
    conf = [2.0, 2.0, 2.0, 1.0, np.nan, np.inf, 1.5, 2.0, 2.0]
    assert insert(vmap, points, confidence=conf) == 3
    xyz, _, _ = vmap.points()
    np.testing.assert_allclose(xyz[np.argsort(xyz[:, 0])], [[-edge * 0.999, 0, 0], [0, 0, 0], [0.8, 0, 0]], rtol=1e-6)
    assert insert(VoxelMap(), [[1.0, 2.0, 3.0]], confidence=[0.0]) == 0  # zero confidence carries no weight


def test_eviction_keeps_the_voxels_nearest_the_latest_camera():
    vmap = VoxelMap(voxel_size=0.1, max_voxels=50)
    line = lambda lo, n: np.column_stack([lo + 0.1 * np.arange(n) + 0.05, np.full((n, 2), 0.05)])  # noqa: E731
    assert insert(vmap, line(0.0, 40)) == 40
    assert len(vmap) == 40
    # 40 more voxels with the camera at their far end: 80 > 50, so the 45 (0.9 · 50) nearest remain.
    assert insert(vmap, line(4.0, 40), camera=[8.0, 0.05, 0.05]) == 40
    xyz, _, _ = vmap.points()
    np.testing.assert_allclose(xyz, line(3.5, 45), atol=1e-6)
    assert vmap.nbytes <= vmap.max_voxels * VoxelMap.BYTES_PER_VOXEL
    # The current view is exempt: its point in the farthest voxel (3.55 m) keeps that voxel, and
    # the untouched ones nearest the camera fill the rest of the 45.
    assert insert(vmap, np.vstack([[[3.56, 0.05, 0.05]], line(8.0, 10)]), camera=[8.0, 0.05, 0.05]) == 11
    np.testing.assert_array_equal(key_cells(voxel_keys(vmap.points()[0], 0.1)[0])[:, 0], [35, *range(46, 90)])
    # A view larger than the whole map keeps only its voxels nearest the camera; its point in a
    # stored voxel (3.55 m) is not counted as accepted, since that voxel is evicted.
    accepted = insert(vmap, np.vstack([line(-20.0, 200), [[3.56, 0.05, 0.05]]]), camera=[-20.0, 0.05, 0.05])
    assert accepted == 45 and len(vmap) == 45
    np.testing.assert_allclose(vmap.points()[0], line(-20.0, 45), atol=1e-6)


def test_a_first_view_larger_than_the_map_keeps_its_nearest_voxels():
    # nothing stored to evict: only the view's new voxels are cut (they crashed _append before)
    line = lambda lo, n: np.column_stack([lo + 0.1 * np.arange(n) + 0.05, np.full((n, 2), 0.05)])  # noqa: E731
    vmap = VoxelMap(voxel_size=0.1, max_voxels=50)
    assert insert(vmap, line(0.0, 80)) == 45
    np.testing.assert_allclose(vmap.points()[0], line(0.0, 45), atol=1e-6)
    assert insert(vmap, np.vstack([line(0.0, 45), line(4.5, 40)])) == 45  # every stored voxel touched
    np.testing.assert_allclose(vmap.points()[0], line(0.0, 45), atol=1e-6)


def test_max_distance_drops_far_points_and_evicts_voxels_left_behind():
    vmap = VoxelMap(voxel_size=0.1, max_distance=1.0)
    assert insert(vmap, [[0.5, 0, 0], [1.5, 0, 0], [0, -0.95, 0]]) == 2
    assert insert(vmap, [[1.2, 0, 0]], camera=[1.0, 0, 0]) == 1  # (0, -0.95, 0) is now 1.38 m away
    np.testing.assert_allclose(vmap.points()[0], [[0.5, 0, 0], [1.2, 0, 0]], atol=1e-6)


def test_reset_empties_and_releases():
    vmap = VoxelMap(voxel_size=0.1)
    insert(vmap, np.random.default_rng(0).uniform(-5, 5, (5000, 3)))
    assert len(vmap) > 0 and vmap.nbytes > 0
    vmap.reset()
    xyz, rgb, conf = vmap.points()
    assert len(vmap) == 0 and vmap.nbytes == 0 and xyz.shape == (0, 3) and rgb.shape == (0, 3) and conf.shape == (0,)
    assert insert(vmap, [[0.01, 0.01, 0.01]]) == 1 and len(vmap) == 1


def test_ply_round_trip_and_header(tmp_path):
    rng = np.random.default_rng(1)
    vmap = VoxelMap(voxel_size=0.2)
    insert(vmap, rng.uniform(-3, 3, (2000, 3)), rng.integers(0, 256, (2000, 3)), rng.uniform(1, 9, 2000))
    path = tmp_path / "map.ply"
    assert vmap.save_ply(path) == len(vmap)
    data = path.read_bytes()
    header = ("ply\nformat binary_little_endian 1.0\nelement vertex %d\nproperty float x\nproperty float y\n"
              "property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\n"
              "property float confidence\nend_header\n" % len(vmap)).encode()
    assert data.startswith(header) and len(data) == len(header) + 19 * len(vmap)
    xyz, rgb, conf = vmap.points()
    got = read_ply(path)
    np.testing.assert_array_equal(got[0], xyz)
    np.testing.assert_array_equal(got[1], rgb)
    np.testing.assert_array_equal(got[2], conf)
    # The first record by hand: 3 little-endian floats, 3 bytes, 1 float.
    first = data[len(header):len(header) + 19]
    assert np.frombuffer(first[:12], "<f4").tolist() == xyz[0].tolist() and list(first[12:15]) == rgb[0].tolist()
    assert np.frombuffer(first[15:], "<f4")[0] == conf[0]


def test_read_ply_skips_comments_and_other_elements(tmp_path):
    path = tmp_path / "other.ply"
    header = ("ply\nformat binary_little_endian 1.0\ncomment made by hand\nelement camera 1\nproperty double t\n"
              "element vertex 2\nproperty double x\nproperty double y\nproperty double z\n"
              "element face 0\nproperty list uchar int vertex_indices\nend_header\n").encode()
    path.write_bytes(header + np.float64([7.0, 1, 2, 3, 4, 5, 6]).tobytes())
    points, colors, conf = read_ply(path)
    np.testing.assert_array_equal(points, [[1, 2, 3], [4, 5, 6]])
    assert colors is None and conf is None
    empty = tmp_path / "empty.ply"
    assert write_ply(empty, np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros(0)) == 0
    assert read_ply(empty)[0].shape == (0, 3)
    path.write_bytes(header.replace(b"binary_little_endian", b"ascii"))
    with pytest.raises(ValueError, match="unsupported format"):
        read_ply(path)


def test_memory_stays_bounded_over_10000_synthetic_frames():
    """10,000 frames of a 16x12 ray-cast camera riding the synthetic trajectory (about 17 loops of
    the room) into a map far smaller than the room's surface: the bound holds after every insert,
    evictions happen throughout, every point of every view enters the map, and every voxel mean
    lies on a true surface (a mean of surface points in a cube is within half its diagonal of one)."""
    scene = SyntheticScene(seed=0)
    voxel, max_voxels, frames, chunk = 0.1, 4000, 10_000, 1000
    vmap = VoxelMap(voxel_size=voxel, max_voxels=max_voxels)
    bound = max_voxels * VoxelMap.BYTES_PER_VOXEL
    f = 8 / math.tan(math.radians(35))  # pinhole, 70° horizontal field of view
    u, v = np.meshgrid(np.arange(16) - 7.5, np.arange(12) - 5.5)
    rays = np.stack([u / f, v / f, np.ones_like(u)], -1).reshape(-1, 3)
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    rng = np.random.default_rng(0)
    evictions, previous, accepted = 0, 0, 0
    for start in range(0, frames, chunk):
        poses = scene.world_from_camera("front_optical", (np.arange(start, start + chunk) * 33_333_333))
        dirs = np.einsum("fij,nj->fni", poses[:, :3, :3], rays).reshape(-1, 3)
        origins = np.repeat(poses[:, :3, 3], len(rays), axis=0)
        dist, face = scene.room.cast(origins, dirs)
        points = origins + dirs * dist[:, None]
        colors = np.round(scene.room.base[face] * 255).astype(np.uint8)  # each face's plain colour
        conf = rng.uniform(1.0, 3.0, len(points)).astype(np.float32)
        points = points.astype(np.float32)
        for i in range(chunk):
            s = slice(i * len(rays), (i + 1) * len(rays))
            accepted += vmap.insert(points[s], colors[s], conf[s], poses[i, :3, 3])
            assert len(vmap) <= max_voxels and vmap.nbytes <= bound
            evictions += len(vmap) < previous
            previous = len(vmap)
        xyz, _, _ = vmap.points()
        assert scene.room.surface_distance(xyz).max() < voxel * math.sqrt(3) / 2 + 1e-5
    assert evictions > 1000
    assert accepted == frames * len(rays)  # the current view always enters the map


@pytest.mark.parametrize("span", [7, 2 * KEY_OFFSET - 1])
def test_grouping_matches_unique_of_the_packed_keys_in_small_and_huge_boxes(span):
    # a small box sorts (box number, index) words; one spanning the key range falls back to argsort
    from mapanything_ros.mapping.voxel_map import _groups, _pack

    rng = np.random.default_rng(span)
    cells = rng.integers(-KEY_OFFSET, -KEY_OFFSET + span + 1, (3, 5000))
    cells[:, ::7] = cells[:, :1]  # many points in one voxel
    ukeys, group, counts = _groups(cells)
    keys = _pack(cells)
    expected, inverse, expected_counts = np.unique(keys, return_inverse=True, return_counts=True)
    assert np.array_equal(ukeys, expected) and np.array_equal(group, inverse)
    assert np.array_equal(counts, expected_counts)
    empty = _groups(np.zeros((3, 0), np.int64))
    assert [len(a) for a in empty] == [0, 0, 0]
