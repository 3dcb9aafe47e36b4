"""sensor_msgs Image / CompressedImage / CameraInfo <-> numpy.

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
"""

import array

import cv2
import numpy as np
from sensor_msgs.msg import Image

from ..geometry.camera import CameraModel
from ..geometry.depth import depth_image_to_meters as _depth_to_meters

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
ENCODINGS = tuple(_COLOR) + tuple(f"bayer_{p}{b}" for b in (8, 16) for p in _BAYER)


def pixels(msg, dtype, channels):
    """(H, W, channels) native-endian view (or copy, when byte-swapped) of an Image's data."""
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    dtype = np.dtype(dtype)
    if h <= 0 or w <= 0:
        raise ValueError(f"image {msg.encoding!r} has zero size {w}x{h}")
    row = w * channels * dtype.itemsize
    if step < row:
        raise ValueError(f"image step {step} is less than width {w} x {channels * dtype.itemsize} bytes per pixel")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size != step * h:
        raise ValueError(f"image data has {data.size} bytes, step x height = {step} x {h} = {step * h}")
    stored = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    view = np.ndarray((h, w, channels), stored, data, strides=(step, channels * dtype.itemsize, dtype.itemsize))
    return view if stored.isnative else view.astype(dtype)


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


def compressed_to_rgb(msg):
    """(H, W, 3) uint8 RGB from a sensor_msgs/CompressedImage in jpeg or png.

    `format` is "jpeg", "png" or image_transport's "<encoding>; <jpeg|png> compressed <encoding>".
    The payload is decoded as a normal colour file (OpenCV decodes to BGR, swapped here); grey
    files become three equal channels and 16-bit png keeps its high byte. compressedDepth and
    other formats, and undecodable data, raise ValueError.
    """
    fmt = msg.format.lower()
    if "compresseddepth" in fmt or not any(k in fmt for k in ("jpeg", "jpg", "png")):
        raise ValueError(f"unsupported CompressedImage format {msg.format!r}; expected jpeg or png")
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if bgr is None:
        raise ValueError(f"could not decode {buf.size} bytes of CompressedImage ({msg.format!r})")
    return bgr[..., ::-1].copy()


def depth_image_to_meters(msg):
    """(H, W) float32 metres, 0 = invalid, from a 16UC1/mono16 (millimetres) or 32FC1 (metres) Image."""
    if msg.encoding not in _DEPTH:
        raise ValueError(f"unsupported depth encoding {msg.encoding!r}; expected one of {sorted(_DEPTH)}")
    return _depth_to_meters(pixels(msg, _DEPTH[msg.encoding], 1)[..., 0], msg.encoding)


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


def camera_info_to_model(msg):
    """CameraModel from a sensor_msgs/CameraInfo; ValueError (from CameraModel) for invalid calibrations."""
    roi = msg.roi
    return CameraModel.from_camera_info_fields(
        msg.width, msg.height, msg.k, msg.d, msg.distortion_model, msg.binning_x, msg.binning_y,
        (roi.x_offset, roi.y_offset, roi.height, roi.width, roi.do_rectify),
    )


def check_image_matches(camera, height, width):
    """Raise ValueError unless an image of height x width is what `camera` publishes (ROI and binning applied)."""
    w, h = camera.image_size
    if (int(height), int(width)) != (h, w):
        raise ValueError(
            f"image is {width}x{height} but its CameraInfo describes a {w}x{h} image "
            f"(calibration {camera.width}x{camera.height}, roi {camera.roi[:4]}, binning {camera.binning})"
        )

