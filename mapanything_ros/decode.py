"""Decoding of sensor messages to numpy, ROS-free: rclpy messages and rosbags messages alike.

The functions read fields by name (the same in both), so any object with a message's fields
works; `data` may be bytes, array.array or a numpy uint8 array, and PointField datatypes are
the numeric codes of sensor_msgs/PointField (INT8 = 1 ... FLOAT64 = 8). Message builders for
publishing live in ros/images.py and ros/pointcloud.py (its bytes: encode.py).

Images (sensor_msgs Image / CompressedImage / CameraInfo).

Decoding reads `data` through a strided numpy view (rows `step` bytes apart, byte order from
`is_bigendian`) and copies only when the pixel format must change; so an rgb8 result may share
memory with the message. Colour results are (H, W, 3) uint8 RGB.

Encodings (names from sensor_msgs/image_encodings.hpp):
- rgb8, bgr8, rgba8, bgra8, mono8; rgb16, bgr16, rgba16, bgra16, mono16 are reduced to 8 bits
  by keeping the high byte (v >> 8: 0..65535 maps onto 0..255, no per-image stretching).
- bayer_rggb8, bayer_bggr8, bayer_gbrg8, bayer_grbg8 (and the *16 forms, high byte first):
  demosaiced with OpenCV. ROS names a mosaic by its top-left 2x2 block read row by row; OpenCV's
  classic COLOR_Bayer<XY>2RGB names it by the second and third pixel of the second row, so ROS
  rggb is OpenCV "BG" (the mapping cv_bridge uses; checked by a test on a synthetic mosaic).
- 8UC1 / 8UC3 / 8UC4 and other generic types are refused: they carry no channel meaning, and
  cv_bridge refuses them too ("[8UC3] is not a color format. but [rgb8] is").

Point clouds (sensor_msgs/PointCloud2).

Reading accepts any layout: fields at any offsets and in any order, padding inside a point
(point_step larger than the fields) and at row ends (row_step larger than width x point_step),
organised (height > 1) or not, either byte order. x, y, z must be FLOAT32 or FLOAT64. A field's
`count` of 0 or 1 means one value; x, y, z and the time field must not have count > 1 (raises),
other fields are ignored whatever their count.

Per-point time (for motion compensation), returned as absolute int64 nanoseconds:
- integer fields (Ouster `t` uint32, Livox `offset_time` uint32) are nanosecond offsets from the
  header stamp;
- float fields are seconds, or nanoseconds when their median magnitude is >= 1e10 (as seconds
  that would be after the year 2286; so float nanoseconds below 10 s, only possible on a
  simulated clock, are misread), either offsets from the header stamp (Velodyne `time` float32) or
  absolute (Hesai `timestamp` float64). One rule decides per cloud: the times are absolute when
  their median is closer to the header stamp than to zero, otherwise offsets.
Points with a non-finite coordinate or (when times are read) a non-finite time are dropped. Times
that do not fit int64 nanoseconds (garbage) are clipped far from the stamp (session.inputs.
Cloud.checked then drops the sweep's times, with a warning).
"""

import math
import sys
from functools import lru_cache
from typing import NamedTuple

import cv2
import numpy as np

from .geometry import pose_from_quat_trans
from .geometry.camera import CameraModel
from .geometry.depth import depth_image_to_meters as _depth_to_meters
from .units import SEC


def stamp_ns(header):
    """int ns of a std_msgs/Header stamp."""
    return int(header.stamp.sec) * SEC + int(header.stamp.nanosec)


# encoding -> (sample dtype, channels, channel indices giving R, G, B); None for grey
_COLOR = {
    "rgb8": (np.uint8, 3, (0, 1, 2)),
    "bgr8": (np.uint8, 3, (2, 1, 0)),
    "rgba8": (np.uint8, 4, (0, 1, 2)),
    "bgra8": (np.uint8, 4, (2, 1, 0)),
    "mono8": (np.uint8, 1, None),
    "rgb16": (np.uint16, 3, (0, 1, 2)),
    "bgr16": (np.uint16, 3, (2, 1, 0)),
    "rgba16": (np.uint16, 4, (0, 1, 2)),
    "bgra16": (np.uint16, 4, (2, 1, 0)),
    "mono16": (np.uint16, 1, None),
}
# ROS pattern -> OpenCV conversion (see the module docstring for the naming difference)
_BAYER = {
    "rggb": cv2.COLOR_BayerBG2RGB,
    "bggr": cv2.COLOR_BayerRG2RGB,
    "gbrg": cv2.COLOR_BayerGR2RGB,
    "grbg": cv2.COLOR_BayerGB2RGB,
}
_DEPTH = {"16UC1": np.uint16, "mono16": np.uint16, "32FC1": np.float32}
QUATERNION_TOLERANCE = 0.01  # |length^2 - 1| beyond which tf2 refuses a rotation (TF_DENORMALIZED_QUATERNION)
MAX_ROW_PADDING = 64  # bytes past width x bytes per pixel a row may carry (alignment) once it is twice as long
MIN_VALID_RAYS = 0.25  # share of the image a calibration's rays must cover (a circular fisheye: 0.44 of 16:9)
MIN_SPAN_RATIO = 0.1  # of the angle K alone gives across the image, that the rays must span
ENCODINGS = tuple(_COLOR) + tuple(f"bayer_{p}{b}" for b in (8, 16) for p in _BAYER)


def transform_refusal(tf, latest_ns=None):
    """(kind, message) when a geometry_msgs/TransformStamped must not enter a TF buffer, else None:
    an empty frame id ("empty_frame") or a frame's transform to itself ("self_transform"), which
    tf2 refuses with an error line for every one (a leading '/' stripped as it strips it);
    non-finite values ("nan"); a rotation quaternion of squared length off 1 by more than tf2's
    QUATERNION_TOLERANCE ("quaternion"); a stamp after latest_ns ("future"; None: no limit)."""
    t, r = tf.transform.translation, tf.transform.rotation
    name = f"{tf.header.frame_id or '?'} <- {tf.child_frame_id or '?'}"
    parent, child = (f[1:] if f.startswith("/") else f for f in (tf.header.frame_id, tf.child_frame_id))
    if not parent or not child:
        return "empty_frame", f"transform {name} refused: its {'parent' if not parent else 'child'} frame id is empty"
    if parent == child:
        return "self_transform", f"transform {name} refused: a frame's transform to itself"
    if not all(math.isfinite(v) for v in (t.x, t.y, t.z, r.x, r.y, r.z, r.w)):
        return "nan", f"transform {name} with non-finite values refused"
    norm = math.sqrt(r.x * r.x + r.y * r.y + r.z * r.z + r.w * r.w)
    if abs(norm * norm - 1.0) > QUATERNION_TOLERANCE:
        return "quaternion", f"transform {name} refused: its rotation quaternion has length {norm:.3g}, not 1"
    stamp = stamp_ns(tf.header)
    if latest_ns is not None and stamp > latest_ns:
        return "future", (f"transform {name} stamped {(stamp - latest_ns) / SEC:.1f} s beyond the limit ahead of the "
                          "clock refused (parameter tf_future_limit): the publisher's clock or stamps are wrong; "
                          "buffered, it would make every later transform of that frame look old")
    return None


def transforms(msg):
    """[(parent, child, stamp ns, parent_from_child 4x4)] of a tf2_msgs/TFMessage."""
    found = []
    for tf in msg.transforms:
        r, t = tf.transform.rotation, tf.transform.translation
        found.append((tf.header.frame_id, tf.child_frame_id, stamp_ns(tf.header),
                      pose_from_quat_trans([r.x, r.y, r.z, r.w], [t.x, t.y, t.z])))
    return found


def pixels(msg, dtype, channels):
    """(H, W, channels) native-endian view (or copy, when byte-swapped) of an Image's data."""
    h, w, step, data = _layout(msg, dtype, channels)
    dtype = np.dtype(dtype)
    stored = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    view = np.ndarray((h, w, channels), stored, data, strides=(step, channels * dtype.itemsize, dtype.itemsize))
    return view if stored.isnative else view.astype(dtype)


def _layout(msg, dtype, channels):
    """(height, width, step, data as a uint8 view) of an Image after checking its sizes; ValueError if they disagree."""
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    itemsize = np.dtype(dtype).itemsize
    if h <= 0 or w <= 0:
        raise ValueError(f"image {msg.encoding!r} has zero size {w}x{h}")
    row = w * channels * itemsize
    if step < row:
        raise ValueError(f"image step {step} is less than width {w} x {channels * itemsize} bytes per pixel")
    if step >= 2 * row and step - row > MAX_ROW_PADDING:
        raise ValueError(f"image step {step} is {step / row:.1f} x width {w} x {channels * itemsize} bytes per pixel "
                         f"of {msg.encoding!r}: is the encoding right (e.g. rgb8 data labelled mono8)?")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size != step * h:
        raise ValueError(f"image data has {data.size} bytes, step x height = {step} x {h} = {step * h}")
    return h, w, step, data


def image_size(msg):
    """(width, height) of a sensor_msgs/Image after the checks image_to_rgb makes before converting
    (encoding supported, sizes consistent): O(1), nothing is decoded. ValueError like image_to_rgb."""
    enc = msg.encoding
    if enc in _COLOR:
        dtype, channels, _ = _COLOR[enc]
    elif enc.startswith("bayer_") and enc[6:10] in _BAYER and enc[10:] in ("8", "16"):
        dtype, channels = (np.uint8 if enc[10:] == "8" else np.uint16), 1
        if min(int(msg.width), int(msg.height)) < 2:
            raise ValueError(f"bayer image must be at least 2x2, got {msg.width}x{msg.height}")
    else:
        raise ValueError(f"unsupported image encoding {enc!r}; supported: {', '.join(ENCODINGS)}")
    h, w, _, _ = _layout(msg, dtype, channels)
    return w, h


def _to_8bit(a):
    return a if a.dtype == np.uint8 else (a >> 8).astype(np.uint8)


def image_to_rgb(msg):
    """(H, W, 3) uint8 RGB from a sensor_msgs/Image; ValueError for unsupported encodings or bad sizes."""
    enc = msg.encoding
    if enc in _COLOR:
        dtype, channels, order = _COLOR[enc]
        a = _to_8bit(pixels(msg, dtype, channels))
        if order is None:
            return np.repeat(a, 3, axis=2)
        return a if order == (0, 1, 2) and channels == 3 else a[..., list(order)]
    if enc.startswith("bayer_") and enc[6:10] in _BAYER and enc[10:] in ("8", "16"):
        mosaic = _to_8bit(pixels(msg, np.uint8 if enc[10:] == "8" else np.uint16, 1))[..., 0]
        if min(mosaic.shape) < 2:
            raise ValueError(f"bayer image must be at least 2x2, got {msg.width}x{msg.height}")
        return cv2.cvtColor(np.ascontiguousarray(mosaic), _BAYER[enc[6:10]])
    raise ValueError(f"unsupported image encoding {enc!r}; supported: {', '.join(ENCODINGS)}")


def check_compressed_format(msg):
    """Raise ValueError unless a sensor_msgs/CompressedImage's format is one compressed_to_rgb decodes."""
    fmt = msg.format.lower()
    if "compresseddepth" in fmt or not any(k in fmt for k in ("jpeg", "jpg", "png")):
        raise ValueError(f"unsupported CompressedImage format {msg.format!r}; expected jpeg or png")


_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (DHT, JPG, DAC are not)
JPEG_STEPS = 1000  # segments and runs of extraneous bytes read before a JPEG's frame header (real files: tens)


def compressed_size(msg):
    """(width, height) of a sensor_msgs/CompressedImage's JPEG or PNG from its header, nothing
    decoded (a few bytes of a file declaring 16384 x 16384 would decode to 800 MB). PNG: the IHDR
    chunk after the signature; JPEG: the first start-of-frame segment (ITU-T T.81 B.2.2), reached
    through the segments' lengths. ValueError when the data is neither or its header is cut."""
    data = memoryview(msg.data).cast("B")  # (bytes, array.array or a numpy array: rclpy's, rosbags')
    if data[:8] == _PNG:
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ValueError("CompressedImage: a PNG without its IHDR header")
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] != b"\xff\xd8":
        raise ValueError(f"CompressedImage ({msg.format!r}) is neither a JPEG nor a PNG file")
    data, at = np.frombuffer(data, np.uint8), 2
    for _ in range(JPEG_STEPS):
        if at + 4 > len(data):
            break
        if data[at] != 0xFF:  # extraneous bytes between segments (libjpeg skips them too)
            at = _next_marker(data, at)
            continue
        marker = int(data[at + 1])
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # no length
            at += 2
            continue
        if marker in _JPEG_SOF and at + 9 <= len(data):
            return int(data[at + 7]) << 8 | int(data[at + 8]), int(data[at + 5]) << 8 | int(data[at + 6])
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before it
            break
        at += 2 + (int(data[at + 2]) << 8 | int(data[at + 3]))
    raise ValueError("CompressedImage: a JPEG without a frame header (its size) before its data")


def _next_marker(data, at):
    """The index of the next 0xFF byte of `data` (uint8) from `at` (len(data): none), in windows
    that double: the bytes before it are read once."""
    size = 64
    while at < len(data):
        hits = np.flatnonzero(data[at:at + size] == 0xFF)
        if hits.size:
            return at + int(hits[0])
        at, size = at + size, 2 * size
    return len(data)


def compressed_to_rgb(msg):
    """(H, W, 3) uint8 RGB from a sensor_msgs/CompressedImage in jpeg or png.

    `format` is "jpeg", "png" or image_transport's "<encoding>; <jpeg|png> compressed <encoding>".
    The payload is decoded as a normal colour file (OpenCV decodes to BGR, swapped here); grey
    files become three equal channels and 16-bit png keeps its high byte. compressedDepth and
    other formats, and undecodable data, raise ValueError.
    """
    check_compressed_format(msg)
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    # the pixels as the sensor laid them out, as the CameraInfo describes them (and the header's
    # size): an EXIF orientation tag would rotate them
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if buf.size else None
    if bgr is None:
        raise ValueError(f"could not decode {buf.size} bytes of CompressedImage ({msg.format!r})")
    return bgr[..., ::-1].copy()


def depth_image_to_meters(msg):
    """(H, W) float32 metres, 0 = invalid, from a 16UC1/mono16 (millimetres) or 32FC1 (metres) Image."""
    if msg.encoding not in _DEPTH:
        raise ValueError(f"unsupported depth encoding {msg.encoding!r}; expected one of {sorted(_DEPTH)}")
    return _depth_to_meters(pixels(msg, _DEPTH[msg.encoding], 1)[..., 0], msg.encoding)


def camera_info_to_model(msg):
    """CameraModel from a sensor_msgs/CameraInfo; ValueError for invalid calibrations (CameraModel's
    checks, and calibration_problem's)."""
    roi = msg.roi
    camera = CameraModel.from_camera_info_fields(
        msg.width, msg.height, msg.k, msg.d, msg.distortion_model, msg.binning_x, msg.binning_y,
        (roi.x_offset, roi.y_offset, roi.height, roi.width, roi.do_rectify),
    )
    problem = calibration_problem(camera)
    if problem:
        raise ValueError(problem)
    return camera


@lru_cache(maxsize=64)
def calibration_problem(camera):
    """Why a well-formed CameraModel cannot be a real camera's, or None: binning and ROI leaving no
    pixels; rays invalid (outside the lens model's field of view) at more than 1 - MIN_VALID_RAYS
    of the image; rays spanning less than MIN_SPAN_RATIO of the angle K alone gives across the
    image's middle row (a distortion that folds the image onto a point). Checked on a 32 x 24 grid
    of pixel centres; cached per model (CameraInfo comes with every image)."""
    w, h = camera.image_size
    if w < 1 or h < 1:
        return (f"binning {camera.binning} and roi {camera.roi[:4]} leave a {w}x{h} image of the "
                f"{camera.width}x{camera.height} calibration")
    u, v = np.meshgrid((np.arange(32) + 0.5) * w / 32, (np.arange(24) + 0.5) * h / 24)
    rays = camera.rays(u, v)
    valid = np.isfinite(rays).all(axis=-1)
    lens = f"{camera.distortion_model} d = {[float(f'{x:.3g}') for x in camera.d]}"
    if valid.mean() < MIN_VALID_RAYS:
        return (f"its rays are invalid at {100 * (1 - valid.mean()):.0f} % of the image ({lens}): check D and "
                "distortion_model")
    if valid[12].sum() < 2:
        return f"its rays are invalid across the image's middle row ({lens}): check D and distortion_model"
    row = rays[12][valid[12]]
    k = camera.intrinsics
    ends = u[12][valid[12]][[0, -1]]
    pinhole = abs(np.arctan((ends[1] - k[0, 2]) / k[0, 0]) - np.arctan((ends[0] - k[0, 2]) / k[0, 0]))
    span = np.arccos(np.clip(row[0] @ row[-1], -1.0, 1.0))
    if span < MIN_SPAN_RATIO * pinhole:
        return (f"its rays span {np.degrees(span):.2g} degrees across the image where K alone gives "
                f"{np.degrees(pinhole):.0f} ({lens}): not a plausible distortion")
    return None


def check_image_matches(camera, height, width):
    """Raise ValueError unless an image of height x width is what `camera` publishes (ROI and binning applied)."""
    w, h = camera.image_size
    if (int(height), int(width)) != (h, w):
        raise ValueError(
            f"image is {width}x{height} but its CameraInfo describes a {w}x{h} image "
            f"(calibration {camera.width}x{camera.height}, roi {camera.roi[:4]}, binning {camera.binning})"
        )


# sensor_msgs/PointField datatype codes -> numpy type code
INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = range(1, 9)
_TYPES = {INT8: "i1", UINT8: "u1", INT16: "i2", UINT16: "u2", INT32: "i4", UINT32: "u4", FLOAT32: "f4", FLOAT64: "f8"}
TIME_FIELDS = ("t", "time", "timestamp", "time_stamp", "offset_time")
_NS_FLOAT = 1e10  # float times this large are nanoseconds (as seconds they would be after 2286)


def _fields(msg):
    fields = {}
    for f in msg.fields:
        if f.name in fields:
            raise ValueError(f"PointCloud2 has the field {f.name!r} twice")
        fields[f.name] = f
    return fields


def _field_dtype(f, point_step, byteorder):
    if f.datatype not in _TYPES:
        raise ValueError(f"field {f.name!r} has unknown PointField datatype {f.datatype}")
    if f.count > 1:
        raise ValueError(f"field {f.name!r} has count {f.count}; only single values are supported")
    dtype = np.dtype(byteorder + _TYPES[f.datatype])
    if f.offset + dtype.itemsize > point_step:
        raise ValueError(f"field {f.name!r} at offset {f.offset} does not fit in point_step {point_step}")
    return dtype


def _view(msg, fields):
    """(height, width) structured view of the named fields (dict name -> PointField)."""
    h, w, step, row = int(msg.height), int(msg.width), int(msg.point_step), int(msg.row_step)
    order = ">" if msg.is_bigendian else "<"
    dtype = np.dtype({
        "names": list(fields),
        "formats": [_field_dtype(f, step, order) for f in fields.values()],
        "offsets": [f.offset for f in fields.values()],
        "itemsize": step,
    })
    if h * w and row < w * step:
        raise ValueError(f"row_step {row} is less than width {w} x point_step {step}")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size != row * h:
        raise ValueError(f"PointCloud2 data has {data.size} bytes, row_step x height = {row} x {h} = {row * h}")
    if h * w == 0:
        return np.zeros((0, 0), dtype)
    return np.ndarray((h, w), dtype, data, strides=(row, step))


def _find_time(fields, time_field):
    if time_field is None:
        return None
    if time_field == "auto":
        return next((fields[n] for n in TIME_FIELDS if n in fields), None)
    if time_field not in fields:
        raise ValueError(f"PointCloud2 has no time field {time_field!r}; fields: {sorted(fields)}")
    return fields[time_field]


def _absolute_ns(values, stamp):
    """Absolute int64 ns from a time field's values (rules in the module docstring)."""
    if values.dtype.kind in "iu":
        return values.astype(np.int64) + stamp
    v = values.astype(np.float64)
    if v.size == 0:
        return v.astype(np.int64)
    mid = float(np.median(v))
    scale = 1.0 if abs(mid) >= _NS_FLOAT else 1e9
    offset = 0 if abs(mid * scale - stamp) < abs(mid * scale) else stamp
    ns = np.clip(v * scale, -2.0**62, 2.0**62)  # garbage beyond: far from any stamp (and |stamp| < 2^62)
    return np.round(ns).astype(np.int64) + offset


def cloud_to_xyz(msg, time_field="auto"):
    """(points (N, 3) float64 in the cloud's frame, times (N,) int64 absolute ns or None).

    time_field: "auto" takes the first of TIME_FIELDS present (None when there is none), a
    name requires that field, None reads no times. Non-finite points are dropped (see module).
    Raises ValueError naming what is wrong for missing or malformed fields and bad sizes.
    """
    return read_cloud(msg, time_field)[:2]


class CloudPoints(NamedTuple):
    """read_cloud's: points (N, 3) float64 metres in the cloud's frame, times (N,) int64 absolute
    ns or None, far: points dropped for a coordinate beyond max_abs, untimed: points with finite
    coordinates dropped for a non-finite time (beyond max_abs or not)."""

    points: np.ndarray
    times: np.ndarray | None
    far: int
    untimed: int = 0


def read_cloud(msg, time_field="auto", max_abs=math.inf):
    """cloud_to_xyz's points and times, and points with a finite coordinate beyond ±max_abs
    (garbage) dropped too and counted (`far`). The test costs a min and a max of the
    coordinates where all are finite and within it (most clouds), the masks otherwise."""
    fields = _fields(msg)
    for name in "xyz":
        if name not in fields:
            raise ValueError(f"PointCloud2 has no {name!r} field; fields: {sorted(fields)}")
        if fields[name].datatype not in (FLOAT32, FLOAT64):
            raise ValueError(f"field {name!r} has datatype {fields[name].datatype}; expected FLOAT32 or FLOAT64")
    tf = _find_time(fields, time_field)
    used = {n: fields[n] for n in "xyz"}
    if tf is not None:
        used["__time"] = tf
    view = _view(msg, used)  # (height, width), no copy
    xyz = _xyz(msg, used, view)
    flat, keep, far = xyz.reshape(-1), None, None
    lo, hi = (flat.min(), flat.max()) if flat.size else (0.0, 0.0)  # (NaN propagates)
    if not (math.isfinite(lo) and math.isfinite(hi) and -max_abs <= lo and hi <= max_abs):
        finite = np.isfinite(flat)  # few points are invalid: mark their rows (NaN compares False)
        keep = np.ones(len(xyz), bool)
        keep[np.flatnonzero(~finite) // 3] = False
        lo, hi = np.fmin.reduce(flat), np.fmax.reduce(flat)  # (NaN left out; ±inf kept)
        if max_abs < math.inf and not (-max_abs <= lo and hi <= max_abs):
            far = np.zeros(len(xyz), bool)
            far[np.flatnonzero(finite & (np.abs(flat) > max_abs)) // 3] = True
            far &= keep
            keep &= ~far
    t = None if tf is None else view["__time"].reshape(-1)
    untimed = 0
    if t is not None and t.dtype.kind == "f" and not np.isfinite(t).all():
        timed = np.isfinite(t)
        finite = keep if far is None else keep | far  # (rows of finite coordinates; None: all)
        untimed = int(np.count_nonzero(~timed if finite is None else finite & ~timed))
        keep = timed if keep is None else keep & timed
        far = None if far is None else far & timed  # (dropped for their time: counted untimed, not far)
    if keep is not None:  # rows as single items: one selection pass
        xyz = xyz.view(f"V{3 * xyz.itemsize}").reshape(-1)[keep].view(xyz.dtype).reshape(-1, 3)
        t = None if t is None else t[keep]
    points = xyz.astype(np.float64, copy=False)
    return CloudPoints(points, None if t is None else _absolute_ns(t, stamp_ns(msg.header)),
                       0 if far is None else int(np.count_nonzero(far)), untimed)


def _xyz(msg, fields, view):
    """(height x width, 3) copy of x, y, z: float32 when all three are FLOAT32, else float64.

    Native-order float32 fields at 4-byte offsets are gathered by cv2.mixChannels (one pass over
    the buffer), others one strided numpy pass per coordinate (byte swap and cast included)."""
    f = [fields[n] for n in "xyz"]
    h, w = view.shape
    step, row = int(msg.point_step), int(msg.row_step)
    if all(x.datatype == FLOAT32 and x.offset % 4 == 0 for x in f) and h * w and step % 4 == 0 and (
            row % 4 == 0 and step <= 2048 and bool(msg.is_bigendian) == (sys.byteorder == "big")):
        data = np.frombuffer(msg.data, np.uint8)
        if data.ctypes.data % 4 == 0:
            src = np.ndarray((h, w, step // 4), np.float32, data, strides=(row, step, 4))
            out = np.empty((h, w, 3), np.float32)
            cv2.mixChannels([src], [out], [f[0].offset // 4, 0, f[1].offset // 4, 1, f[2].offset // 4, 2])
            return out.reshape(-1, 3)
    single = all(x.datatype == FLOAT32 for x in f)
    out = np.empty((h, w, 3), np.float32 if single else np.float64)
    for i, name in enumerate("xyz"):
        out[..., i] = view[name]
    return out.reshape(-1, 3)


def unpack_rgb(packed):
    """(N, 3) uint8 RGB from packed `rgb` float32 values (0x00RRGGBB, as encode.pack_cloud writes them)."""
    u = np.asarray(packed, dtype=np.float32).view(np.uint32)
    return np.stack([(u >> 16) & 255, (u >> 8) & 255, u & 255], axis=-1).astype(np.uint8)
