"""Image, CompressedImage, depth and CameraInfo conversions (mapanything_ros.decode, ros.images)."""

import array

import cv2
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

pytest.importorskip("rclpy")
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, RegionOfInterest  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from mapanything_ros.decode import (  # noqa: E402
    ENCODINGS,
    camera_info_to_model,
    check_image_matches,
    compressed_to_rgb,
    depth_image_to_meters,
    image_to_rgb,
    pixels,
)
from mapanything_ros.ros.images import depth_to_image, float_image  # noqa: E402

RNG = np.random.default_rng(0)
HEADER = Header(frame_id="cam")


def make_image(samples, encoding, pad=0, bigendian=False, extra=0):
    """Image of (H, W, C) samples with `pad` junk bytes after each row and `extra` bytes of length error."""
    h, w = samples.shape[:2]
    stored = samples.astype(samples.dtype.newbyteorder(">" if bigendian else "<")).view(np.uint8)
    stored = stored.reshape(h, w * samples.shape[2] * samples.itemsize)
    rows = np.concatenate([stored, np.full((h, pad), 0xAB, np.uint8)], axis=1)
    data = rows.tobytes() + b"\x01" * max(extra, 0)
    data = data[: len(data) + min(extra, 0)]
    msg = Image(header=HEADER, height=h, width=w, encoding=encoding, is_bigendian=bigendian, step=rows.shape[1])
    msg.data = array.array("B", data)
    return msg


def samples_for(encoding, rgb):
    """(samples in the message's layout, expected RGB output) for a ground-truth RGB image."""
    h, w, _ = rgb.shape
    alpha = RNG.integers(0, 256, (h, w, 1), dtype=np.uint8)
    grey = rgb[..., :1]
    base = {
        "rgb": rgb, "bgr": rgb[..., ::-1], "rgba": np.concatenate([rgb, alpha], -1),
        "bgra": np.concatenate([rgb[..., ::-1], alpha], -1), "mono": grey,
    }[encoding.rstrip("0123456789")]
    expected = np.repeat(grey, 3, axis=2) if encoding.startswith("mono") else rgb
    if encoding.endswith("16"):  # the low byte must be dropped, not rounded
        return base.astype(np.uint16) * 256 + RNG.integers(0, 256, base.shape, dtype=np.uint16), expected
    return base, expected


def bayer_mosaic(rgb, pattern):
    """Single-channel mosaic of an RGB image for a ROS pattern name (top-left 2x2 read row by row)."""
    idx = {"r": 0, "g": 1, "b": 2}
    mosaic = np.empty(rgb.shape[:2], rgb.dtype)
    for k, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, idx[pattern[k]]]
    return mosaic[..., None]


COLOR_ENCODINGS = [e for e in ENCODINGS if not e.startswith("bayer")]


@pytest.mark.parametrize("encoding", COLOR_ENCODINGS)
@pytest.mark.parametrize("pad,bigendian", [(0, False), (5, False), (3, True)])
def test_color_encodings_round_trip(encoding, pad, bigendian):
    rgb = RNG.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    samples, expected = samples_for(encoding, rgb)
    out = image_to_rgb(make_image(samples, encoding, pad, bigendian))
    assert out.dtype == np.uint8 and out.shape == (7, 9, 3)
    np.testing.assert_array_equal(out, expected)


def test_rgb8_without_padding_is_a_view_of_the_message():
    msg = make_image(RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8), "rgb8")
    assert np.shares_memory(image_to_rgb(msg), np.frombuffer(msg.data, np.uint8))


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
@pytest.mark.parametrize("bits", [8, 16])
def test_bayer_patterns_demosaic_to_the_mosaiced_colour(pattern, bits):
    colour = np.array([200, 100, 30], np.uint8)  # distinct channels: a swapped pattern changes it
    rgb = np.broadcast_to(colour, (8, 10, 3)).copy()
    mosaic = bayer_mosaic(rgb, pattern)
    if bits == 16:
        mosaic = mosaic.astype(np.uint16) * 256 + 77
    out = image_to_rgb(make_image(mosaic, f"bayer_{pattern}{bits}", pad=2))
    assert out.shape == (8, 10, 3)
    np.testing.assert_array_equal(out[2:-2, 2:-2], rgb[2:-2, 2:-2])


def test_bayer_follows_a_smooth_image():
    v, u = np.mgrid[0:32, 0:40]
    rgb = np.stack([4 * u + 40, 3 * v + 60, 200 - 2 * u - v], -1).astype(np.uint8)
    out = image_to_rgb(make_image(bayer_mosaic(rgb, "grbg"), "bayer_grbg8"))
    assert np.abs(out[2:-2, 2:-2].astype(int) - rgb[2:-2, 2:-2]).max() <= 2


@settings(max_examples=60, deadline=None)
@given(
    encoding=st.sampled_from(list(ENCODINGS) + ["8UC3", "8UC1", "yuv422", "32FC1", "", "RGB8"]),
    h=st.integers(0, 6), w=st.integers(0, 6), pad=st.integers(0, 5),
    bigendian=st.booleans(), extra=st.sampled_from([0, 0, 0, -1, 1, -7]), step_delta=st.sampled_from([0, 0, -1]),
)
def test_any_image_is_converted_correctly_or_rejected(encoding, h, w, pad, bigendian, extra, step_delta):
    rgb = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if encoding.startswith("bayer"):
        samples, expected = bayer_mosaic(rgb, encoding[6:10]), None
        if encoding.endswith("16"):
            samples = samples.astype(np.uint16)
    elif encoding in COLOR_ENCODINGS:
        samples, expected = samples_for(encoding, rgb)
    else:
        samples, expected = rgb, None
    msg = make_image(samples, encoding, pad, bigendian, extra)
    msg.step = max(msg.step + step_delta, 0)
    row = w * samples.shape[2] * samples.itemsize
    valid = (encoding in ENCODINGS and min(h, w) >= (2 if encoding.startswith("bayer") else 1)
             and msg.step >= row and len(msg.data) == msg.step * h)
    if not valid:
        with pytest.raises(ValueError):
            image_to_rgb(msg)
        return
    out = image_to_rgb(msg)  # a changed step with a matching length is valid, with other pixels
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    if expected is not None and not (extra or step_delta):
        np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("encoding", ["8UC3", "8UC1", "yuv422", "32FC1", "RGB8"])
def test_unsupported_encoding_is_named(encoding):
    with pytest.raises(ValueError, match=f"unsupported image encoding '{encoding}'"):
        image_to_rgb(make_image(np.zeros((2, 2, 3), np.uint8), encoding))


def test_bad_sizes_are_clear_errors():
    good = make_image(np.zeros((3, 4, 3), np.uint8), "rgb8")
    with pytest.raises(ValueError, match="37 bytes, step x height = 12 x 3 = 36"):
        image_to_rgb(make_image(np.zeros((3, 4, 3), np.uint8), "rgb8", extra=1))
    good.step = 11
    with pytest.raises(ValueError, match="step 11 is less than width 4"):
        image_to_rgb(good)
    with pytest.raises(ValueError, match="zero size"):
        image_to_rgb(Image(encoding="rgb8"))


@pytest.mark.parametrize("fmt,ext", [("jpeg", ".jpg"), ("png", ".png"), ("rgb8; jpeg compressed bgr8", ".jpg"),
                                     ("bgr8; png compressed bgr8", ".png")])
def test_compressed_round_trip(fmt, ext):
    v, u = np.mgrid[0:48, 0:64]
    rgb = np.stack([4 * u, 5 * v, 255 - 3 * u], -1).astype(np.uint8)
    ok, buf = cv2.imencode(ext, rgb[..., ::-1].copy())
    assert ok
    out = compressed_to_rgb(CompressedImage(header=HEADER, format=fmt, data=array.array("B", buf.tobytes())))
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    tol = 0 if ext == ".png" else 12
    assert np.abs(out.astype(int) - rgb).max() <= tol
    assert np.abs(out.astype(float) - rgb).mean() < (0.01 if ext == ".png" else 3)


def test_compressed_grey_png_becomes_three_channels():
    grey = RNG.integers(0, 256, (5, 6), dtype=np.uint8)
    buf = cv2.imencode(".png", grey)[1]
    out = compressed_to_rgb(CompressedImage(format="mono8; png compressed mono8", data=array.array("B", buf.tobytes())))
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=2))


@pytest.mark.parametrize("fmt,data,match", [
    ("jpeg", b"not a jpeg", "could not decode"),
    ("png", b"", "could not decode"),
    ("16UC1; compressedDepth png", b"\x00" * 20, "unsupported CompressedImage format"),
    ("theora", b"\x00" * 20, "unsupported CompressedImage format"),
])
def test_compressed_errors(fmt, data, match):
    with pytest.raises(ValueError, match=match):
        compressed_to_rgb(CompressedImage(format=fmt, data=array.array("B", data)))


@pytest.mark.parametrize("bigendian,pad", [(False, 0), (True, 3)])
def test_depth_16uc1_millimetres(bigendian, pad):
    mm = np.array([[0, 1000, 1234], [65535, 5, 0]], np.uint16)[..., None]
    out = depth_image_to_meters(make_image(mm, "16UC1", pad, bigendian))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, mm[..., 0] / 1000.0, rtol=1e-6)


def test_depth_32fc1_invalid_values_become_zero():
    m = np.array([[1.5, np.nan, -1.0], [np.inf, 0.0, 2.25]], np.float32)[..., None]
    out = depth_image_to_meters(make_image(m, "32FC1", pad=4, bigendian=True))
    np.testing.assert_array_equal(out, [[1.5, 0, 0], [0, 0, 2.25]])


def test_depth_rejects_colour_images():
    with pytest.raises(ValueError, match="unsupported depth encoding 'rgb8'"):
        depth_image_to_meters(make_image(np.zeros((2, 2, 3), np.uint8), "rgb8"))


def test_depth_image_publishes_nan_for_no_estimate():
    depth = np.array([[1.0, 0.0, np.nan], [-2.0, np.inf, 3.5]], np.float32)
    msg = depth_to_image(depth, HEADER)
    assert (msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian) == ("32FC1", 2, 3, 12, False)
    assert msg.header.frame_id == "cam"
    np.testing.assert_array_equal(pixels(msg, np.float32, 1)[..., 0], [[1.0, np.nan, np.nan], [np.nan, np.nan, 3.5]])
    np.testing.assert_array_equal(depth_image_to_meters(msg), [[1.0, 0, 0], [0, 0, 3.5]])


def test_float_image_keeps_values():
    conf = RNG.random((4, 6)).astype(np.float32)
    conf[1, 2] = np.nan
    np.testing.assert_array_equal(pixels(float_image(conf, HEADER), np.float32, 1)[..., 0], conf)
    with pytest.raises(ValueError, match="expected an"):
        float_image(conf[0], HEADER)


def camera_info(**kw):
    info = CameraInfo(width=640, height=480, distortion_model="plumb_bob", d=[0.1, -0.05, 0.001, 0.002, 0.0],
                      k=[500.0, 0, 320, 0, 510, 240, 0, 0, 1])
    for key, value in kw.items():
        setattr(info, key, value)
    return info


def test_camera_info_fields_reach_the_model():
    info = camera_info(binning_x=2, binning_y=2,
                       roi=RegionOfInterest(x_offset=40, y_offset=20, width=400, height=300, do_rectify=True))
    cam = camera_info_to_model(info)
    assert cam.image_size == (200, 150) and cam.roi == (40, 20, 300, 400, True)
    assert cam.d == (0.1, -0.05, 0.001, 0.002, 0.0) and cam.distortion_model == "plumb_bob"
    np.testing.assert_allclose(cam.intrinsics, [[250, 0, 140], [0, 255, 110], [0, 0, 1]])
    check_image_matches(cam, 150, 200)
    with pytest.raises(ValueError, match="image is 400x300 but its CameraInfo describes a 200x150 image"):
        check_image_matches(cam, 300, 400)


@pytest.mark.parametrize("change,match", [
    ({"k": [np.nan, 0, 320, 0, 510, 240, 0, 0, 1]}, "finite"),
    ({"k": [0.0] * 9}, "focal length"),
    ({"width": 0}, "positive"),
    ({"distortion_model": "kannala"}, "unknown distortion_model"),
    ({"d": [0.1, 0.2]}, "coefficients"),
])
def test_bad_camera_info_is_a_clear_error(change, match):
    with pytest.raises(ValueError, match=match):
        camera_info_to_model(camera_info(**change))
