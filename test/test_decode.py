"""decode.py reads rosbags messages (numpy data, numeric PointField codes) as it reads rclpy messages."""

import array

import cv2
import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from mapanything_ros import decode

pytest.importorskip("rclpy")
from builtin_interfaces.msg import Time  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField, RegionOfInterest  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

T = get_typestore(Stores.ROS2_KILTED).types
RNG = np.random.default_rng(3)
STAMP = 12 * decode.SEC + 345


def headers():
    """(rosbags, rclpy) headers at STAMP."""
    sec, nsec = divmod(STAMP, decode.SEC)
    return (T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec), frame_id="cam"),
            Header(stamp=Time(sec=sec, nanosec=nsec), frame_id="cam"))


def images(samples, encoding, bigendian=False):
    """(rosbags, rclpy) Image of (H, W, C) samples, rows padded by 3 bytes."""
    h, w = samples.shape[:2]
    rows = samples.astype(samples.dtype.newbyteorder(">" if bigendian else "<")).view(np.uint8).reshape(h, -1)
    rows = np.concatenate([rows, np.zeros((h, 3), np.uint8)], axis=1)
    bag_header, ros_header = headers()
    fields = dict(height=h, width=w, encoding=encoding, is_bigendian=int(bigendian), step=rows.shape[1])
    bag = T["sensor_msgs/msg/Image"](header=bag_header, data=rows.reshape(-1), **fields)
    ros = Image(header=ros_header, **{**fields, "is_bigendian": bigendian})
    ros.data = array.array("B", rows.tobytes())
    return bag, ros


def test_point_field_codes_are_the_message_constants():
    names = ("INT8", "UINT8", "INT16", "UINT16", "INT32", "UINT32", "FLOAT32", "FLOAT64")
    assert [getattr(decode, n) for n in names] == [getattr(PointField, n) for n in names]


def test_stamp():
    bag, ros = headers()
    assert decode.stamp_ns(bag) == decode.stamp_ns(ros) == STAMP


@pytest.mark.parametrize("encoding, dtype, channels, bigendian",
                         [("bgr8", np.uint8, 3, False), ("rgba16", np.uint16, 4, True), ("bayer_rggb8", np.uint8, 1, False)])
def test_images(encoding, dtype, channels, bigendian):
    samples = RNG.integers(0, np.iinfo(dtype).max, (6, 8, channels), endpoint=True).astype(dtype)
    bag, ros = images(samples, encoding, bigendian)
    np.testing.assert_array_equal(decode.image_to_rgb(bag), decode.image_to_rgb(ros))


def test_depth_images():
    mm = RNG.integers(0, 5000, (5, 7, 1)).astype(np.uint16)
    bag, ros = images(mm, "16UC1", bigendian=True)
    got = decode.depth_image_to_meters(bag)
    np.testing.assert_array_equal(got, decode.depth_image_to_meters(ros))
    np.testing.assert_allclose(got, mm[..., 0] / 1000.0, rtol=1e-6)


def test_compressed():
    ok, buf = cv2.imencode(".png", RNG.integers(0, 256, (9, 11, 3), dtype=np.uint8))
    assert ok
    bag_header, ros_header = headers()
    bag = T["sensor_msgs/msg/CompressedImage"](header=bag_header, format="png", data=buf.reshape(-1))
    ros = CompressedImage(header=ros_header, format="png")
    ros.data = array.array("B", buf.tobytes())
    np.testing.assert_array_equal(decode.compressed_to_rgb(bag), decode.compressed_to_rgb(ros))


@pytest.mark.parametrize("ext,params", [(".png", []), (".png", [cv2.IMWRITE_PNG_COMPRESSION, 9]), (".jpg", []),
                                        (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])])
def test_compressed_size_is_read_from_the_header(ext, params):
    """The size of a JPEG or PNG from its header, in rclpy's and rosbags' containers, colour and
    grey; data that is neither, or cut before its size, is refused."""
    for shape in [(9, 11, 3), (1, 1, 3), (1200, 1920, 3), (7, 3)]:
        ok, buf = cv2.imencode(ext, RNG.integers(0, 256, shape, dtype=np.uint8), params)
        assert ok
        for data in (buf.reshape(-1), array.array("B", buf.tobytes())):
            assert decode.compressed_size(CompressedImage(format="jpeg", data=data)) == (shape[1], shape[0])
            bag = T["sensor_msgs/msg/CompressedImage"](header=headers()[0], format="png", data=buf.reshape(-1))
            assert decode.compressed_size(bag) == (shape[1], shape[0])
    if ext == ".jpg":  # fill bytes (0xFF) may precede a marker (ITU-T T.81 B.1.1.2)
        data = buf.tobytes()
        frame = next(i for i in range(2, len(data)) if data[i] == 0xFF and data[i + 1] in decode._JPEG_SOF)
        filled = array.array("B", data[:frame] + b"\xff\xff\xff" + data[frame:])
        assert decode.compressed_size(CompressedImage(format="jpeg", data=filled)) == (shape[1], shape[0])
        for extra in (b"\x00\x13", bytes(RNG.integers(0, 255, 100_000, dtype=np.uint8))):  # extraneous bytes:
            junk = array.array("B", data[:frame] + extra + data[frame:])  # skipped, as libjpeg does
            assert decode.compressed_size(CompressedImage(format="jpeg", data=junk)) == (shape[1], shape[0])
        many = data[:2] + b"\xff\xe0\x00\x02" * decode.JPEG_STEPS + data[2:]  # a frame header past the steps read
        with pytest.raises(ValueError, match="without a frame header"):
            decode.compressed_size(CompressedImage(format="jpeg", data=array.array("B", many)))
    for data, why in ((b"", "neither"), (b"GIF89a" + bytes(40), "neither"), (buf.tobytes()[:20], "without"),
                      (buf.tobytes()[:10], "without")):
        with pytest.raises(ValueError, match=why):
            decode.compressed_size(CompressedImage(format="jpeg", data=array.array("B", data)))


def test_an_exif_orientation_leaves_the_pixels_as_the_sensor_laid_them_out():
    """A JPEG 64 wide, 48 high with an EXIF orientation of 6 (rotate 90°): OpenCV turns it unless
    told not to; the CameraInfo describes the sensor's pixels, as the header's size does."""
    rgb = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    jpeg = cv2.imencode(".jpg", rgb)[1].tobytes()
    tiff = b"MM\x00\x2a\x00\x00\x00\x08\x00\x01" + bytes.fromhex("0112 0003 00000001 0006 0000") + bytes(4)
    app1 = b"Exif\x00\x00" + tiff
    exif = jpeg[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + jpeg[2:]
    assert cv2.imdecode(np.frombuffer(exif, np.uint8), cv2.IMREAD_COLOR).shape == (64, 48, 3)  # (what it guards)
    msg = CompressedImage(format="jpeg", data=array.array("B", exif))
    assert decode.compressed_to_rgb(msg).shape == (48, 64, 3) and decode.compressed_size(msg) == (64, 48)


def test_camera_info():
    k = np.array([300.0, 0, 160, 0, 310, 120, 0, 0, 1])
    d = np.array([-0.1, 0.01, 0.001, -0.002, 0.0])
    roi = dict(x_offset=8, y_offset=4, height=200, width=300, do_rectify=False)
    bag_header, ros_header = headers()
    fields = dict(height=240, width=320, distortion_model="plumb_bob", binning_x=2, binning_y=2)
    bag = T["sensor_msgs/msg/CameraInfo"](header=bag_header, d=d, k=k, r=np.eye(3).reshape(-1), p=np.zeros(12),
                                          roi=T["sensor_msgs/msg/RegionOfInterest"](**roi), **fields)
    ros = CameraInfo(header=ros_header, d=d.tolist(), k=k.tolist(), roi=RegionOfInterest(**roi), **fields)
    a, b = decode.camera_info_to_model(bag), decode.camera_info_to_model(ros)
    assert a.image_size == b.image_size == (150, 100)
    np.testing.assert_array_equal(a.ray_map(), b.ray_map())
    decode.check_image_matches(a, 100, 150)


@pytest.mark.parametrize("d, binning, why", [
    ([1e30, 0, 0, 0, 0], 0, "rays span 0 degrees across the image where K alone gives 53"),
    ([-5.0, 0, 0, 0, 0], 0, "rays are invalid at 92 % of the image"),
    ([0.0] * 5, 4_000_000_000, "leave a 0x480 image of the 640x480 calibration"),
])
def test_implausible_calibrations_are_refused_with_the_numbers(d, binning, why):
    info = CameraInfo(height=480, width=640, distortion_model="plumb_bob", d=d, binning_x=binning,
                      k=[500.0, 0, 320, 0, 500, 240, 0, 0, 1])
    with pytest.raises(ValueError, match=why):
        decode.camera_info_to_model(info)


def test_strong_but_real_lenses_pass(scene):
    for cam in scene.cameras:  # a pinhole with plumb_bob distortion and an equidistant fisheye
        assert decode.calibration_problem(cam.camera) is None
    barrel = CameraInfo(height=480, width=640, distortion_model="plumb_bob", d=[-0.3, 0.1, 0, 0, 0],
                        k=[500.0, 0, 320, 0, 500, 240, 0, 0, 1])
    assert decode.camera_info_to_model(barrel).image_size == (640, 480)
    circle = CameraInfo(height=1080, width=1920, distortion_model="equidistant", d=[0, 0, 0, -0.00128],
                        k=[361.0, 0, 960, 0, 361, 540, 0, 0, 1])  # a circular fisheye: 44 % of a 16:9 image
    assert decode.camera_info_to_model(circle).image_size == (1920, 1080)


def test_rows_far_longer_than_the_encoding_are_refused():
    rgb = RNG.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    _, ros = images(rgb, "rgb8")
    ros.encoding = "mono8"  # rgb8 bytes labelled mono8: step 3 x width
    with pytest.raises(ValueError, match=r"step 195 is 3.0 x width 64 x 1 bytes per pixel of 'mono8'"):
        decode.image_size(ros)
    _, padded = images(rgb[..., :1], "mono8")  # 3 bytes of row padding: fine
    assert decode.image_size(padded) == (64, 48)


def test_point_clouds():
    n = 10
    dtype = np.dtype({"names": ["x", "y", "z", "t"], "formats": [">f8", ">f8", ">f8", ">u4"],
                      "offsets": [0, 8, 16, 28], "itemsize": 36})
    data = np.zeros(n, dtype)
    for axis in "xyz":
        data[axis] = RNG.normal(size=n)
    data["t"] = RNG.integers(0, 10**8, n)
    raw = data.view(np.uint8).reshape(-1)
    codes = {"x": 8, "y": 8, "z": 8, "t": 6}  # FLOAT64, UINT32
    bag_header, ros_header = headers()
    common = dict(height=1, width=n, is_bigendian=True, point_step=36, row_step=36 * n, is_dense=True)
    bag_field = T["sensor_msgs/msg/PointField"]
    bag = T["sensor_msgs/msg/PointCloud2"](
        header=bag_header, data=raw, fields=[bag_field(name=k, offset=dtype.fields[k][1], datatype=c, count=1)
                                             for k, c in codes.items()], **common)
    ros = PointCloud2(header=ros_header, fields=[PointField(name=k, offset=dtype.fields[k][1], datatype=c, count=1)
                                                 for k, c in codes.items()], **common)
    ros.data = array.array("B", raw.tobytes())
    (pa, ta), (pb, tb) = decode.cloud_to_xyz(bag), decode.cloud_to_xyz(ros)
    np.testing.assert_array_equal(pa, pb)
    np.testing.assert_array_equal(ta, tb)
    np.testing.assert_array_equal(pa, np.stack([data[a] for a in "xyz"], axis=-1))
    np.testing.assert_array_equal(ta, data["t"].astype(np.int64) + STAMP)
