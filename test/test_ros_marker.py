"""ros/marker.py: the mesh's MarkerArray as CDR bytes against rclpy's own (de)serializer."""

import numpy as np
import pytest

pytest.importorskip("rclpy")
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from mapanything_ros.mapping.regions import RegionMesh  # noqa: E402
from mapanything_ros.ros.marker import mesh_markers  # noqa: E402


def random_mesh(seed=0, vertices=50, quads=31):
    """A RegionMesh of random quads in three regions."""
    rng = np.random.default_rng(seed)
    regions = rng.integers(-1, 2, quads)
    order = np.argsort(regions, kind="stable")
    return RegionMesh.grouped(rng.uniform(-5, 5, (vertices, 3)).astype(np.float32),
                              rng.integers(0, 256, (vertices, 3)).astype(np.uint8),
                              rng.integers(0, vertices, (quads, 4)), order, regions[order], rng.integers(0, 9, quads), 0)


@pytest.mark.parametrize("frame_id", ["odom", "a_longer_frame_id_of_odd_length", ""])
def test_mesh_markers_read_back_as_the_update(frame_id):
    mesh = random_mesh()
    assert len(mesh) == 3
    update = (True, [(7, 2), (3, 0)], [5, 1])
    data = mesh_markers(mesh, update, frame_id, 1_700_000_000_123_456_789)
    msg = deserialize_message(data, MarkerArray)
    assert len(serialize_message(msg)) == len(data)  # same layout, padding included
    first, *deletes, a, b = msg.markers
    assert first.action == Marker.DELETEALL and first.ns == "map_mesh"
    assert [(m.action, m.id) for m in deletes] == [(Marker.DELETE, 5), (Marker.DELETE, 1)]
    for marker, (marker_id, r) in zip((a, b), update[1]):
        assert (marker.header.frame_id, marker.header.stamp.sec, marker.header.stamp.nanosec) == \
            (frame_id, 1_700_000_000, 123_456_789)
        assert (marker.ns, marker.id, marker.type, marker.action) == ("map_mesh", marker_id, Marker.TRIANGLE_LIST,
                                                                      Marker.ADD)
        assert marker.pose.orientation.w == 1 and (marker.scale.x, marker.scale.y, marker.scale.z) == (1, 1, 1)
        corners = mesh.region(r).reshape(-1)
        points = np.array([[p.x, p.y, p.z] for p in marker.points])
        np.testing.assert_array_equal(points, mesh.vertices[corners])
        rgba = np.array([[c.r, c.g, c.b, c.a] for c in marker.colors])
        np.testing.assert_allclose(rgba[:, :3] * 255, mesh.colours[corners], atol=1e-3)
        assert (rgba[:, 3] == 1).all()
        assert marker.frame_locked and not marker.mesh_use_embedded_materials and marker.text == ""
        assert not marker.uv_coordinates


def test_an_update_without_changes_is_an_empty_array():
    msg = deserialize_message(mesh_markers(random_mesh(), (False, [], []), "map", 0), MarkerArray)
    assert msg.markers == []
