"""Encoding of the published point clouds to PointCloud2 bytes, ROS-free (decode.py reads them back).

The message builders (ros/pointcloud.py for rclpy, outputs.OutputBag for rosbags) only wrap a
PackedCloud into their message type. Layout: unorganised (height 1), in the host's byte order
(little-endian on x86 and ARM; `is_bigendian` says which), every field FLOAT32 with count 1 at
offset 4 x its index: x, y, z (metres), then `rgb` when colours are given (a float32 whose bits
are 0x00RRGGBB, the PCL / RViz convention), then `confidence` (or another name given) when given.

The buffer is an array.array('B') (what rclpy messages can adopt without a copy, see
ros/pointcloud.py), filled in one pass over the inputs by the compiled `_pack_cloud` module
(_pack_cloud.c, built by CMakeLists.txt: colcon and tools/dev's environment). Where it is not
built (a source tree on PYTHONPATH without the CMake build) the same bytes come from an OpenCV
path, about 1.6x slower at a million points: colours packed by one cv2.cvtColor of a single row,
then one cv2.mixChannels pass. `COMPILED` says which one runs; the node warns when it is False (compiled.py).

Inputs: points (N, 3) float32 or float64 (used as they are) or any other real dtype (cast to
float32); colours (N, 3) uint8 RGB, or integers that all lie in 0..255, anything else (floats,
out-of-range integers) raises ValueError rather than being wrapped or truncated; confidence (N,)
of any real dtype, cast to float32.
"""

import array
import sys
from dataclasses import dataclass

import cv2
import numpy as np

try:
    from . import _pack_cloud
except ImportError:  # not built: the OpenCV path below
    _pack_cloud = None

COMPILED = _pack_cloud is not None
# Clouds from this size on are written around the caches (non-temporal stores, see _pack_cloud.c).
# Measured here (32 MiB L3): from 7.6 MiB on they gain (0.8 vs 1.1x the time of create_cloud from a
# ready array at 15-19 MiB), at 3.8 MiB and below they lose 5 %.
STREAM_BYTES = 6 << 20


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


def pack_cloud(points, colors=None, confidence=None, scalar_name="confidence"):
    """PackedCloud of points (N, 3) metres with optional colours (N, 3) and confidence (N,)
    (dtypes as in the module docstring); the last field is named `scalar_name` (another float32 per
    point in the confidence's place: e.g. a distance)."""
    return pack_parts([(points, colors, confidence)], scalar_name)


def pack_parts(parts, scalar_name="confidence"):
    """PackedCloud of several clouds one after another, as pack_cloud packs their concatenation,
    without making it: parts is a non-empty sequence of (points, colors, confidence) as pack_cloud
    takes them, all with colours or all without, all with confidence or all without."""
    if not parts:
        raise ValueError("parts: expected at least one (points, colors, confidence)")
    parts = [_checked(*part) for part in parts]
    has_rgb, has_conf = parts[0][1] is not None, parts[0][2] is not None
    if any((rgb is not None) != has_rgb or (conf is not None) != has_conf for _, rgb, conf in parts):
        raise ValueError("parts: expected colours in all or none, confidence in all or none")
    names = ("x", "y", "z") + ("rgb",) * has_rgb + (scalar_name,) * has_conf
    step = 4 * len(names)
    n = sum(len(xyz) for xyz, _, _ in parts)
    data = byte_buffer(n * step)
    # A large cloud is written around the caches in every part (see STREAM_BYTES), a small one in none.
    stream_from = 0 if n * step >= STREAM_BYTES else n * step + 1
    dense, start = True, 0
    with memoryview(data) as view:
        for xyz, rgb, conf in parts:
            end = start + len(xyz) * step
            if _pack_cloud is not None:
                dense &= _pack_cloud.interleave(view[start:end], xyz, rgb, conf, stream_from)
            else:
                out = np.frombuffer(data, np.float32, (end - start) // 4, start).reshape(1, len(xyz), len(names))
                dense &= _interleave_cv2(out, xyz, rgb, conf)
            start = end
    return PackedCloud(names, n, step, data, bool(dense))


def _checked(points, colors, confidence):
    """(points (N, 3) C-contiguous float32 or float64, colours (N, 3) uint8 RGB or None, confidence
    (N,) float32 or None) of pack_cloud's inputs; ValueError for what it refuses."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got shape {points.shape}")
    n = points.shape[0]
    with np.errstate(over="ignore"):  # beyond the float32 range: inf, and is_dense False
        xyz = np.ascontiguousarray(points, points.dtype if points.dtype in (np.float32, np.float64) else np.float32)
    rgb = None if colors is None else rgb_bytes(colors, n)
    conf = None
    if confidence is not None:
        conf = np.asarray(confidence)
        if conf.shape != (n,):
            raise ValueError(f"confidence must be ({n},), got shape {conf.shape}")
        conf = np.ascontiguousarray(conf, dtype=np.float32)
    return xyz, rgb, conf


def _interleave_cv2(out, xyz, rgb, conf):
    """_pack_cloud.interleave with OpenCV: `out` (1, n, fields) float32; whether x, y, z are finite."""
    n = out.shape[1]
    with np.errstate(over="ignore", invalid="ignore"):  # inf beyond the float32 range, quiet signalling NaNs
        xyz = np.ascontiguousarray(xyz, dtype=np.float32)
    sources = [xyz.reshape(1, n, 3)]
    if rgb is not None:
        sources.append(_packed_rgb(rgb).view(np.float32).reshape(1, n, 1))
    if conf is not None:
        sources.append(conf.reshape(1, n, 1))
    if n:  # one interleaving pass: channel i of the sources -> field i
        cv2.mixChannels(sources, [out], [k for i in range(out.shape[2]) for k in (i, i)])
    return bool(np.isfinite(xyz).all())


def byte_buffer(nbytes):
    """array.array('B') of `nbytes` zero bytes (what rclpy messages adopt), made by repetition: no
    Python-level loop."""
    return array.array("B", b"\0") * int(nbytes)


def _packed_rgb(rgb):
    """(n,) uint32 0x00RRGGBB of (n, 3) uint8 RGB, through one SIMD colour conversion of a single
    row (cvtColor works row by row, so one long row is fast)."""
    n = len(rgb)
    if n == 0:
        return np.zeros(0, np.uint32)
    if sys.byteorder == "little":  # bytes B, G, R, A: clear A
        return cv2.cvtColor(rgb.reshape(1, n, 3), cv2.COLOR_RGB2BGRA).view(np.uint32).reshape(n) & 0x00FFFFFF
    return cv2.cvtColor(rgb.reshape(1, n, 3), cv2.COLOR_RGB2RGBA).view(np.uint32).reshape(n) >> 8
