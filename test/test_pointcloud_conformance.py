"""The PointCloud2 writer (ros.pointcloud.xyz_to_cloud) and reader (decode.cloud_to_xyz) against
sensor_msgs_py.point_cloud2, the reference implementation of ROS 2 (built by tools/dev).

Writer: the same bytes and layout as create_cloud / create_cloud_xyz32 for the same float32
values. Reader: the same points, bit for bit, as read_points for clouds sensor_msgs_py writes,
organised, with padding inside and after each point, float64 fields, big-endian, with NaNs.

Deliberate differences: create_cloud always says is_dense=False, xyz_to_cloud says True when
every point is finite (what the flag means); read_points(skip_nans=True) keeps infinite points,
cloud_to_xyz drops every non-finite point. sensor_msgs_py ignores row_step (no padding between
rows), so row padding is tested in test_ros_conversions_cloud only.
"""

import copy

import numpy as np
import pytest

pytest.importorskip("rclpy")
point_cloud2 = pytest.importorskip("sensor_msgs_py.point_cloud2", reason="sensor_msgs_py not installed (tools/dev)")
from sensor_msgs.msg import PointField  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from mapanything_ros.decode import cloud_to_xyz  # noqa: E402
from mapanything_ros.ros.pointcloud import xyz_to_cloud  # noqa: E402

F32, F64 = PointField.FLOAT32, PointField.FLOAT64


def header():
    h = Header(frame_id="lidar")
    h.stamp.sec, h.stamp.nanosec = 12, 345
    return h


def layout(msg):
    return (msg.height, msg.width, msg.point_step, msg.row_step, msg.is_bigendian,
            [(f.name, f.offset, f.datatype, f.count) for f in msg.fields])


def reference_xyz(cloud, skip_nans=False):
    """(N, 3) float64 read by sensor_msgs_py (on a copy: read_points byte-swaps big-endian data in place)."""
    pts = point_cloud2.read_points(copy.deepcopy(cloud), field_names=["x", "y", "z"], skip_nans=skip_nans)
    return np.stack([pts[n].astype(np.float64) for n in "xyz"], axis=-1)


@pytest.mark.parametrize("n", [0, 1, 1000])
def test_writer_matches_create_cloud_xyz32(n):
    points = np.random.default_rng(n).normal(scale=20.0, size=(n, 3))
    ours = xyz_to_cloud(points, header())
    ref = point_cloud2.create_cloud_xyz32(header(), points.astype(np.float32))
    assert bytes(ours.data) == bytes(ref.data)
    assert layout(ours) == layout(ref)
    assert ours.header == ref.header
    assert ours.is_dense and not ref.is_dense  # deliberate: every point is finite


def test_writer_with_colour_and_confidence_matches_create_cloud():
    rng = np.random.default_rng(1)
    points, colors, conf = rng.normal(size=(500, 3)), rng.integers(0, 256, (500, 3)), rng.random(500)
    ours = xyz_to_cloud(points, header(), colors=colors, confidence=conf)
    fields = [PointField(name=n, offset=4 * i, datatype=F32, count=1)
              for i, n in enumerate(("x", "y", "z", "rgb", "confidence"))]
    values = np.zeros(500, point_cloud2.dtype_from_fields(fields))
    for i, n in enumerate("xyz"):
        values[n] = points[:, i]
    c = colors.astype(np.uint32)  # PCL / RViz packing: 0x00RRGGBB in the bits of a float32
    values["rgb"] = ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).view(np.float32)
    values["confidence"] = conf
    ref = point_cloud2.create_cloud(header(), fields, values)
    assert bytes(ours.data) == bytes(ref.data)
    assert layout(ours) == layout(ref)


def test_writer_output_reads_back_in_sensor_msgs_py():
    points = np.random.default_rng(2).normal(size=(300, 3))
    points[::7, 1] = np.nan
    cloud = xyz_to_cloud(points, header())
    assert not cloud.is_dense
    assert np.array_equal(reference_xyz(cloud), points.astype(np.float32).astype(np.float64), equal_nan=True)


def _cloud(rng, shape, fields, point_step, nan_every=0):
    """A sensor_msgs_py cloud of random values, points of `shape` ((N,) or organised (A, B))."""
    values = np.zeros(shape, point_cloud2.dtype_from_fields(fields, point_step=point_step))
    for f in fields:
        values[f.name] = rng.normal(scale=10.0, size=shape)
    if nan_every:
        flat = values.reshape(-1)
        flat["x"][::nan_every] = np.nan
        flat["z"][1::nan_every] = np.nan
    return point_cloud2.create_cloud(header(), fields, values, point_step=point_step)


def _big_endian(cloud):
    """The same cloud with every field byte-swapped and is_bigendian set."""
    out = copy.deepcopy(cloud)
    data = np.frombuffer(bytes(cloud.data), np.uint8).copy().reshape(-1, cloud.point_step)
    for f in cloud.fields:
        size = point_cloud2.dtype_from_fields([PointField(name="v", offset=0, datatype=f.datatype, count=1)]).itemsize
        data[:, f.offset:f.offset + size] = data[:, f.offset:f.offset + size][:, ::-1]
    out.data = data.tobytes()
    out.is_bigendian = True
    return out


XYZ = [PointField(name=n, offset=4 * i, datatype=F32, count=1) for i, n in enumerate("xyz")]
PADDED = [PointField(name="intensity", offset=0, datatype=F32, count=1),
          *[PointField(name=n, offset=8 + 4 * i, datatype=F32, count=1) for i, n in enumerate("xyz")],
          PointField(name="ring", offset=24, datatype=PointField.UINT16, count=1)]
DOUBLE = [PointField(name=n, offset=8 * i, datatype=F64, count=1) for i, n in enumerate("zyx")]
CASES = {
    "plain": ((400,), XYZ, 12),
    "organised": ((16, 32), XYZ, 12),
    "padded": ((400,), PADDED, 32),
    "organised_padded": ((8, 64), PADDED, 48),
    "float64": ((400,), DOUBLE, 24),
}


@pytest.mark.parametrize("big_endian", [False, True], ids=["little", "big"])
@pytest.mark.parametrize("nan_every", [0, 5], ids=["finite", "nan"])
@pytest.mark.parametrize("case", CASES)
def test_reader_matches_read_points(case, nan_every, big_endian):
    shape, fields, step = CASES[case]
    cloud = _cloud(np.random.default_rng(3), shape, fields, step, nan_every)
    if big_endian:
        little, cloud = cloud, _big_endian(cloud)
        assert np.array_equal(reference_xyz(cloud), reference_xyz(little), equal_nan=True)
    ours, times = cloud_to_xyz(cloud)
    assert times is None
    expected = reference_xyz(cloud, skip_nans=True)
    assert len(expected) == (np.prod(shape) - (2 * -(-np.prod(shape) // nan_every) if nan_every else 0))
    assert ours.dtype == np.float64 and np.array_equal(ours, expected)


def test_deliberate_difference_infinite_points():
    points = np.array([[1.0, 2.0, 3.0], [np.inf, 0.0, 0.0], [np.nan, 0.0, 0.0]])
    cloud = point_cloud2.create_cloud_xyz32(header(), points.astype(np.float32))
    assert len(reference_xyz(cloud, skip_nans=True)) == 2  # sensor_msgs_py keeps the infinite point
    assert np.array_equal(cloud_to_xyz(cloud)[0], points[:1])
