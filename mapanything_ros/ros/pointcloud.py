"""sensor_msgs/PointCloud2 for publishing: encode.pack_cloud's bytes in an rclpy message
(decoding, ROS-free, is in decode.py)."""

from sensor_msgs.msg import PointCloud2, PointField

from ..encode import pack_cloud, pack_parts
from .buffers import adopting

_ADOPT_DATA = adopting(PointCloud2)


def xyz_to_cloud(points, header, colors=None, confidence=None, scalar_name="confidence"):
    """Unorganised PointCloud2: x, y, z float32 (+ rgb packed float32, + confidence float32).

    points (N, 3) metres in header.frame_id; colors (N, 3) uint8 RGB (or integers in 0..255;
    anything else raises ValueError); confidence (N,), or another float32 per point in a field named
    `scalar_name`. is_dense is True when every point is finite. See encode.py for the layout.
    """
    return _message(pack_cloud(points, colors, confidence, scalar_name), header)


def parts_to_cloud(parts, header, scalar_name="confidence"):
    """xyz_to_cloud of several clouds one after another, (points, colors, confidence) each, without
    concatenating them first (encode.pack_parts)."""
    return _message(pack_parts(parts, scalar_name), header)


def _message(c, header):
    """The PointCloud2 of an encode.PackedCloud, its bytes adopted, not copied (see buffers.py)."""
    msg = PointCloud2(
        **_ADOPT_DATA, header=header, height=1, width=c.width, is_bigendian=c.is_bigendian, point_step=c.point_step,
        row_step=c.point_step * c.width, is_dense=c.is_dense,
        fields=[PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                for i, name in enumerate(c.names)],
    )
    msg.data = c.data
    return msg
