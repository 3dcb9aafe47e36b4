"""Encoding of the published point clouds to PointCloud2 bytes, ROS-free (decode.py reads them back).

The message builders (ros/pointcloud.py for rclpy, outputs.OutputBag for rosbags) only wrap a
PackedCloud into their message type. Layout: unorganised (height 1), in the host's byte order
(little-endian on x86 and ARM; `is_bigendian` says which), every field FLOAT32 with count 1 at
offset 4 x its index: x, y, z (metres), then `rgb` when colours are given (a float32 whose bits
are 0x00RRGGBB, the PCL / RViz convention), then `confidence` when given.

The buffer is an array.array('B'): rclpy's PointCloud2.data setter takes one without looking at
its elements (any other type is checked element by element, slower than the packing itself).
It is filled in one pass per source with cv2.mixChannels, which interleaves channels without
temporaries. Inputs: points (N, 3) float32 (used as they are) or any other real dtype (cast to
float32); colours (N, 3) uint8 RGB, or integers that all lie in 0..255, anything else (floats,
out-of-range integers) raises ValueError rather than being wrapped or truncated; confidence (N,)
of any real dtype, cast to float32.
"""

import array
import sys
from dataclasses import dataclass

import cv2
import numpy as np

# Byte offsets of R, G, B inside the 4 bytes of a 0x00RRGGBB uint32 in the host's byte order.
_RGB_BYTES = (2, 1, 0) if sys.byteorder == "little" else (1, 2, 3)


@dataclass(frozen=True)
class PackedCloud:
    """PointCloud2 content: field names (each FLOAT32, count 1, at offset 4 x index), width
    (points), point_step (bytes), data (array.array 'B', width x point_step bytes), is_dense
    (every x, y, z finite) and is_bigendian (the host's byte order)."""

    names: tuple
    width: int
    point_step: int
    data: array.array
    is_dense: bool
    is_bigendian: bool = sys.byteorder == "big"


def rgb_bytes(colors, n):
    """(n, 3) C-contiguous uint8 RGB of colours; ValueError for a wrong shape, non-integer dtype or
    values outside 0..255."""
    c = np.asarray(colors)
    if c.shape != (n, 3):
        raise ValueError(f"colors must be ({n}, 3), got shape {c.shape}")
    if c.dtype != np.uint8:
        if c.dtype.kind not in "iu":
            raise ValueError(f"colors must be uint8 RGB (or integers in 0..255), got {c.dtype}")
        if c.size and (c.min() < 0 or c.max() > 255):
            raise ValueError(f"colors must lie in 0..255, got values in {c.min()}..{c.max()}")
    return np.ascontiguousarray(c, dtype=np.uint8)


def pack_cloud(points, colors=None, confidence=None):
    """PackedCloud of points (N, 3) metres with optional colours (N, 3) and confidence (N,)
    (dtypes as in the module docstring)."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got shape {points.shape}")
    n = points.shape[0]
    with np.errstate(over="ignore"):  # beyond the float32 range: inf, and is_dense False
        xyz = np.ascontiguousarray(points, dtype=np.float32)
    names, sources, pairs = ["x", "y", "z"], [xyz.reshape(n, 1, 3)], [0, 0, 1, 1, 2, 2]
    rgb = None
    if colors is not None:
        rgb = rgb_bytes(colors, n)
        names.append("rgb")
    if confidence is not None:
        conf = np.asarray(confidence)
        if conf.shape != (n,):
            raise ValueError(f"confidence must be ({n},), got shape {conf.shape}")
        sources.append(np.ascontiguousarray(conf, dtype=np.float32).reshape(n, 1, 1))
        pairs += [3, len(names)]
        names.append("confidence")
    step = 4 * len(names)
    data = array.array("B", b"\0") * (n * step)  # zeroed: the pad byte of rgb stays 0
    if n:
        cv2.mixChannels(sources, [np.frombuffer(data, np.float32).reshape(n, 1, len(names))], pairs)
        if rgb is not None:
            at = 12 + np.array(_RGB_BYTES)
            cv2.mixChannels([rgb.reshape(n, 1, 3)], [np.frombuffer(data, np.uint8).reshape(n, 1, step)],
                            [0, int(at[0]), 1, int(at[1]), 2, int(at[2])])
    return PackedCloud(tuple(names), n, step, data, bool(np.isfinite(xyz).all()))
