"""sensor_msgs/PointCloud2 <-> numpy, vectorised over a strided structured view of `data`.

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
Points with a non-finite coordinate or (when times are read) a non-finite time are dropped.
"""

import array

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField

# PointField datatype -> numpy type code
_TYPES = {
    PointField.INT8: "i1", PointField.UINT8: "u1", PointField.INT16: "i2", PointField.UINT16: "u2",
    PointField.INT32: "i4", PointField.UINT32: "u4", PointField.FLOAT32: "f4", PointField.FLOAT64: "f8",
}
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


def _absolute_ns(values, stamp_ns):
    """Absolute int64 ns from a time field's values (rules in the module docstring)."""
    if values.dtype.kind in "iu":
        return values.astype(np.int64) + stamp_ns
    v = values.astype(np.float64)
    if v.size == 0:
        return v.astype(np.int64)
    mid = float(np.median(v))
    scale = 1.0 if abs(mid) >= _NS_FLOAT else 1e9
    ns = v * scale
    offset = 0 if abs(mid * scale - stamp_ns) < abs(mid * scale) else stamp_ns
    if not np.all(np.abs(ns + offset) < 2.0**63):
        raise ValueError(f"time values around {mid} do not fit int64 nanoseconds")
    return np.round(ns).astype(np.int64) + offset


def cloud_to_xyz(msg, time_field="auto"):
    """(points (N, 3) float64 in the cloud's frame, times (N,) int64 absolute ns or None).

    time_field: "auto" takes the first of TIME_FIELDS present (None when there is none), a
    name requires that field, None reads no times. Non-finite points are dropped (see module).
    Raises ValueError naming what is wrong for missing or malformed fields and bad sizes.
    """
    fields = _fields(msg)
    for name in "xyz":
        if name not in fields:
            raise ValueError(f"PointCloud2 has no {name!r} field; fields: {sorted(fields)}")
        if fields[name].datatype not in (PointField.FLOAT32, PointField.FLOAT64):
            raise ValueError(f"field {name!r} has datatype {fields[name].datatype}; expected FLOAT32 or FLOAT64")
    tf = _find_time(fields, time_field)
    used = {n: fields[n] for n in "xyz"}
    if tf is not None:
        used["__time"] = tf
    view = _view(msg, used).reshape(-1)
    points = np.stack([view[n].astype(np.float64) for n in "xyz"], axis=-1)
    keep = np.isfinite(points).all(axis=1)
    if tf is None:
        return points[keep], None
    t = view["__time"]
    if t.dtype.kind == "f":
        keep &= np.isfinite(t)
    stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
    return points[keep], _absolute_ns(t[keep], stamp)


def pack_rgb(colors):
    """(N,) float32 of (N, 3) uint8 RGB packed as 0x00RRGGBB (the PCL / RViz `rgb` field)."""
    c = np.asarray(colors, dtype=np.uint8).astype(np.uint32)
    return ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).view(np.float32)


def unpack_rgb(packed):
    """(N, 3) uint8 RGB from packed `rgb` float32 values (inverse of pack_rgb)."""
    u = np.asarray(packed, dtype=np.float32).view(np.uint32)
    return np.stack([(u >> 16) & 255, (u >> 8) & 255, u & 255], axis=-1).astype(np.uint8)


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
