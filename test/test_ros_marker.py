"""ros/marker.py: the mesh marker's CDR bytes against rclpy's own (de)serializer."""

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from visualization_msgs.msg import Marker

from mapanything_ros.ros.marker import mesh_marker


@pytest.mark.parametrize("frame_id", ["odom", "a_longer_frame_id_of_odd_length", ""])
def test_mesh_marker_reads_back_as_the_triangle_list(frame_id):
    rng = np.random.default_rng(0)
    vertices = rng.uniform(-5, 5, (50, 3))
    colors = rng.integers(0, 256, (50, 3)).astype(np.uint8)
    triangles = rng.integers(0, 50, (31, 3))
    data = mesh_marker(vertices, colors, triangles, frame_id, 1_700_000_000_123_456_789, marker_id=3)
    msg = deserialize_message(data, Marker)
    assert (msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec) == (frame_id, 1_700_000_000, 123_456_789)
    assert (msg.ns, msg.id, msg.type, msg.action) == ("map_mesh", 3, Marker.TRIANGLE_LIST, Marker.ADD)
    assert msg.pose.orientation.w == 1 and (msg.scale.x, msg.scale.y, msg.scale.z) == (1, 1, 1)
    points = np.array([[p.x, p.y, p.z] for p in msg.points])
    np.testing.assert_array_equal(points, vertices[triangles.reshape(-1)])
    rgba = np.array([[c.r, c.g, c.b, c.a] for c in msg.colors])
    np.testing.assert_allclose(rgba[:, :3] * 255, colors[triangles.reshape(-1)], atol=1e-3)
    assert (rgba[:, 3] == 1).all()
    assert not msg.frame_locked and not msg.mesh_use_embedded_materials and msg.text == "" and not msg.uv_coordinates
    assert len(serialize_message(msg)) == len(data)  # same layout, padding included


def test_an_empty_mesh_is_an_empty_marker():
    msg = deserialize_message(mesh_marker(np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros((0, 3), int), "map", 0),
                              Marker)
    assert msg.type == Marker.TRIANGLE_LIST and not msg.points and not msg.colors
