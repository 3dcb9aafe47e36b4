"""sensor_msgs/PointCloud2 builders for publishing (decoding, ROS-free, is in decode.py)."""

import array

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField


def pack_rgb(colors):
    """(N,) float32 of (N, 3) uint8 RGB packed as 0x00RRGGBB (the PCL / RViz `rgb` field)."""
    c = np.asarray(colors, dtype=np.uint8).astype(np.uint32)
    return ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).view(np.float32)


def xyz_to_cloud(points, header, colors=None, confidence=None):
    """Unorganised little-endian PointCloud2: x, y, z float32 (+ rgb packed float32, + confidence float32).

    points (N, 3) metres in header.frame_id; colors (N, 3) uint8 RGB; confidence (N,).
    is_dense is True when every point is finite.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got shape {points.shape}")
    n = points.shape[0]
    columns = {"x": points[:, 0], "y": points[:, 1], "z": points[:, 2]}
    if colors is not None:
        colors = np.asarray(colors)
        if colors.shape != (n, 3):
            raise ValueError(f"colors must be ({n}, 3), got shape {colors.shape}")
        columns["rgb"] = pack_rgb(colors)
    if confidence is not None:
        confidence = np.asarray(confidence)
        if confidence.shape != (n,):
            raise ValueError(f"confidence must be ({n},), got shape {confidence.shape}")
        columns["confidence"] = confidence
    dtype = np.dtype([(name, "<f4") for name in columns])
    out = np.empty(n, dtype)
    for name, values in columns.items():
        out[name] = values
    msg = PointCloud2(
        header=header, height=1, width=n, is_bigendian=False, point_step=dtype.itemsize,
        row_step=dtype.itemsize * n, is_dense=bool(np.isfinite(points).all()),
        fields=[PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                for i, name in enumerate(columns)],
    )
    msg.data = array.array("B", out.tobytes())
    return msg
