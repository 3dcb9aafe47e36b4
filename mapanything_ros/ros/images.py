"""sensor_msgs/Image builders for publishing (decoding, ROS-free, is in decode.py).

Each writes its pixels once, into a buffer the message adopts (ros/buffers.py)."""

import numpy as np
from sensor_msgs.msg import Image

from ..encode import byte_buffer
from .buffers import adopting

_ADOPT = adopting(Image)


def float_image(values, header):
    """32FC1 little-endian Image of an (H, W) array (e.g. confidence), values unchanged."""
    msg, pixels = _float_image(values, header)
    pixels[...] = values
    return msg


def depth_to_image(depth, header):
    """32FC1 Image of z-depth (H, W) in metres; non-finite and <= 0 values become NaN (REP 118: no estimate)."""
    msg, pixels = _float_image(depth, header)
    pixels[...] = depth
    with np.errstate(invalid="ignore"):
        pixels[~(pixels > 0) | np.isinf(pixels)] = np.nan
    return msg


def _float_image(values, header):
    """(32FC1 Image of the shape of (H, W) `values`, its pixels as a writable (H, W) '<f4' view)."""
    shape = np.shape(values)
    if len(shape) != 2:
        raise ValueError(f"expected an (H, W) array, got shape {shape}")
    h, w = shape
    data = byte_buffer(4 * h * w)
    msg = Image(**_ADOPT, header=header, height=h, width=w, encoding="32FC1", is_bigendian=False, step=4 * w)
    msg.data = data  # adopted (see buffers.py)
    return msg, np.frombuffer(data, "<f4").reshape(h, w)
