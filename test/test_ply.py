"""The PLY writer and reader (mapping.ply)."""

import io

import numpy as np
import pytest

from mapanything_ros.mapping.ply import read_ply, write_mesh_ply, write_ply


def test_ply_round_trip_and_header(tmp_path):
    rng = np.random.default_rng(1)
    xyz = rng.uniform(-3, 3, (2000, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (2000, 3)).astype(np.uint8)
    conf = rng.uniform(1, 9, 2000).astype(np.float32)
    path = tmp_path / "map.ply"
    assert write_ply(path, xyz, rgb, conf) == 2000
    data = path.read_bytes()
    header = ("ply\nformat binary_little_endian 1.0\nelement vertex 2000\nproperty float x\nproperty float y\n"
              "property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\n"
              "property float confidence\nend_header\n").encode()
    assert data.startswith(header) and len(data) == len(header) + 19 * 2000
    got = read_ply(path)
    np.testing.assert_array_equal(got[0], xyz)
    np.testing.assert_array_equal(got[1], rgb)
    np.testing.assert_array_equal(got[2], conf)
    # The first record by hand: 3 little-endian floats, 3 bytes, 1 float.
    first = data[len(header):len(header) + 19]
    assert np.frombuffer(first[:12], "<f4").tolist() == xyz[0].tolist() and list(first[12:15]) == rgb[0].tolist()
    assert np.frombuffer(first[15:], "<f4")[0] == conf[0]
    # To an open file: the same bytes.
    f = io.BytesIO()
    write_ply(f, xyz, rgb, conf)
    assert f.getvalue() == data


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


def test_mesh_ply_holds_vertices_colours_and_faces(tmp_path):
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], np.uint8)
    triangles = np.array([[0, 1, 2], [0, 3, 1]])
    path = tmp_path / "m.ply"
    assert write_mesh_ply(path, vertices, colors, triangles) == (4, 2)
    data = path.read_bytes()
    head, body = data.split(b"end_header\n", 1)
    assert b"element vertex 4" in head and b"element face 2" in head and b"property list uchar int vertex_indices" in head
    points, read_colors, _ = read_ply(path)  # the vertex element, as for any PLY of points
    np.testing.assert_array_equal(points, vertices)
    np.testing.assert_array_equal(read_colors, colors)
    faces = np.frombuffer(body[4 * 15:], np.dtype([("n", "u1"), ("v", "<i4", (3,))]))
    assert (faces["n"] == 3).all()
    np.testing.assert_array_equal(faces["v"], triangles)
    with pytest.raises(ValueError):
        write_mesh_ply(io.BytesIO(), vertices, colors, np.array([[0, 1, 4]]))


def test_header_comments_say_frame_voxel_and_stamp(tmp_path):
    about = {"frame_id": "odom", "voxel_size_m": 0.05, "stamp_ns": 12}
    path = tmp_path / "c.ply"
    write_ply(path, np.zeros((1, 3)), np.zeros((1, 3), np.uint8), np.ones(1), about)
    head = path.read_bytes().split(b"end_header")[0].decode()
    assert "comment frame_id odom\ncomment voxel_size_m 0.05\ncomment stamp_ns 12\n" in head
    assert read_ply(path)[0].shape == (1, 3)
    write_mesh_ply(tmp_path / "m.ply", np.zeros((3, 3)), np.zeros((3, 3), np.uint8), [[0, 1, 2]], about)
    assert b"comment frame_id odom" in (tmp_path / "m.ply").read_bytes()
    with pytest.raises(ValueError, match="one ASCII line"):
        write_ply(io.BytesIO(), np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros(0), {"frame_id": "a\nb"})
