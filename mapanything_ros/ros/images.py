"""sensor_msgs/Image builders for publishing (decoding, ROS-free, is in decode.py)."""

import array

import numpy as np
from sensor_msgs.msg import Image


def float_image(values, header):
    """32FC1 little-endian Image of an (H, W) array (e.g. confidence), values unchanged."""
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"expected an (H, W) array, got shape {values.shape}")
    h, w = values.shape
    msg = Image(header=header, height=h, width=w, encoding="32FC1", is_bigendian=False, step=4 * w)
    msg.data = array.array("B", np.ascontiguousarray(values, dtype="<f4").tobytes())
    return msg


def depth_to_image(depth, header):
    """32FC1 Image of z-depth (H, W) in metres; non-finite and <= 0 values become NaN (REP 118: no estimate)."""
    depth = np.asarray(depth, dtype=np.float32)
    with np.errstate(invalid="ignore"):
        return float_image(np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(np.nan)), header)
