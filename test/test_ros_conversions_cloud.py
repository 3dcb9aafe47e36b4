"""PointCloud2 read (any layout, per-point time) and write (mapanything_ros.decode, ros.pointcloud)."""

import array
import struct
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

pytest.importorskip("rclpy")
from builtin_interfaces.msg import Time  # noqa: E402
from sensor_msgs.msg import PointCloud2, PointField  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from mapanything_ros.decode import cloud_to_xyz, read_cloud, unpack_rgb  # noqa: E402
from mapanything_ros.ros.pointcloud import parts_to_cloud, xyz_to_cloud  # noqa: E402

SEC = 1_000_000_000
CODES = {"i1": ("b", 1), "u1": ("B", 2), "i2": ("h", 3), "u2": ("H", 4), "i4": ("i", 5), "u4": ("I", 6),
         "f4": ("f", 7), "f8": ("d", 8)}


def header(stamp_ns=0):
    return Header(frame_id="lidar", stamp=Time(sec=stamp_ns // SEC, nanosec=stamp_ns % SEC))


def make_cloud(columns, layout, height, width, *, point_pad=0, row_pad=0, bigendian=False, stamp_ns=0,
               extra_bytes=0):
    """PointCloud2 written point by point with struct (independent of the reader).

    columns: name -> (N,) values or (N, count) for count > 1; layout: [(name, code, count), ...]
    in memory order; junk bytes fill gaps, point padding and row padding.
    """
    order = ">" if bigendian else "<"
    fields, offset = [], 0
    for i, (name, code, count) in enumerate(layout):
        offset += i % 3  # small gaps, unaligned offsets
        fields.append(PointField(name=name, offset=offset, datatype=CODES[code][1], count=count))
        offset += struct.calcsize(CODES[code][0]) * max(count, 1)
    point_step = offset + point_pad
    row_step = point_step * width + row_pad
    buf = bytearray(b"\xcd" * (row_step * height + extra_bytes))
    for f, (name, code, count) in zip(fields, layout):
        values = np.asarray(columns[name]).reshape(height * width, max(count, 1))
        fmt = order + CODES[code][0] * max(count, 1)
        for k in range(height * width):
            r, c = divmod(k, width)
            struct.pack_into(fmt, buf, r * row_step + c * point_step + f.offset, *values[k].tolist())
    msg = PointCloud2(header=header(stamp_ns), height=height, width=width, fields=fields, is_bigendian=bigendian,
                      point_step=point_step, row_step=row_step, is_dense=False)
    msg.data = array.array("B", bytes(buf))
    return msg


TIME_KINDS = {  # name, code, and how the stored values relate to absolute ns
    "ouster": ("t", "u4"), "livox": ("offset_time", "u4"), "velodyne": ("time", "f4"),
    "hesai": ("timestamp", "f8"), "ns_float": ("time_stamp", "f8"),
}


@st.composite
def clouds(draw):
    height, width = draw(st.integers(0, 4)), draw(st.integers(0, 9))
    n = height * width
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    # float ns times (stamp - up to 50 ms) must be >= 1e10 ns to be read as ns (see decode's module doc)
    stamp_ns = draw(st.integers(11 * SEC, 2_000_000_000 * SEC))
    xyz_codes = [draw(st.sampled_from(["f4", "f8"])) for _ in range(3)]
    truth = rng.uniform(-200, 200, (n, 3))
    truth[rng.random(n) < 0.2, rng.integers(0, 3)] = np.nan
    truth[rng.random(n) < 0.1, rng.integers(0, 3)] = rng.choice([np.inf, -np.inf])
    for i, code in enumerate(xyz_codes):  # what the stored type holds exactly
        truth[:, i] = truth[:, i].astype(code)
    columns = {"x": truth[:, 0], "y": truth[:, 1], "z": truth[:, 2]}
    layout = [(c, code, draw(st.sampled_from([0, 1]))) for c, code in zip("xyz", xyz_codes)]
    for name in draw(st.lists(st.sampled_from(["intensity", "ring", "ambient", "normal"]), unique=True, max_size=3)):
        code, count = draw(st.sampled_from(list(CODES))), draw(st.integers(0, 3))
        low, high = (-100, 100) if code[0] != "u" else (0, 200)
        columns[name] = rng.integers(low, high, (n, max(count, 1))).astype(code)
        layout.append((name, code, count))
    kind = draw(st.sampled_from([None, *TIME_KINDS]))
    times = None
    if kind is not None:
        name, code = TIME_KINDS[kind]
        offsets_ns = rng.integers(-50_000_000 if code[0] == "f" else 0, 100_000_000, n)
        stored = {"ouster": offsets_ns, "livox": offsets_ns, "velodyne": (offsets_ns / SEC).astype(np.float32),
                  "hesai": (stamp_ns + offsets_ns) / SEC, "ns_float": (stamp_ns + offsets_ns).astype(np.float64)}[kind]
        if code[0] == "f":
            stored[rng.random(n) < 0.1] = np.nan
        columns[name] = stored
        layout.append((name, code, 1))
        # ground truth: velodyne's float32 is exact as stored; float64 absolute times hold ~0.2 us
        times = stamp_ns + (np.float64(stored) * SEC if kind == "velodyne" else offsets_ns)
    layout = draw(st.permutations(layout))
    msg = make_cloud(columns, layout, height, width, point_pad=draw(st.integers(0, 5)),
                     row_pad=draw(st.integers(0, 7)), bigendian=draw(st.booleans()), stamp_ns=stamp_ns)
    keep = np.isfinite(truth).all(axis=1)
    if kind is not None:
        keep &= np.isfinite(np.asarray(columns[TIME_KINDS[kind][0]], dtype=np.float64))
    return msg, truth[keep], None if times is None else times[keep]


@settings(max_examples=60, deadline=None)
@given(clouds())
def test_random_layouts_read_back_the_ground_truth(case):
    msg, points, times = case
    got, got_times = cloud_to_xyz(msg)
    assert got.dtype == np.float64 and got.shape == points.shape
    np.testing.assert_array_equal(got, points)
    if times is None:
        assert got_times is None
    else:
        assert got_times.dtype == np.int64
        assert np.abs(got_times - times).max(initial=0) <= 1000  # ns; float64 seconds near 2e9 s
    assert cloud_to_xyz(msg, time_field=None)[1] is None
    # Points beyond ±100 m dropped too (read_cloud's max_abs), and counted apart from the non-finite ones.
    near, near_times, far, _ = read_cloud(msg, max_abs=100.0)
    inside = (np.abs(points) <= 100.0).all(axis=1)
    np.testing.assert_array_equal(near, points[inside])
    assert far == np.count_nonzero(~inside) and (near_times is None) == (times is None)
    if times is not None:
        np.testing.assert_array_equal(near_times, got_times[inside])


@settings(max_examples=40, deadline=None)
@given(case=clouds(), cut=st.integers(1, 3), field=st.sampled_from(["x", "y", "z"]))
def test_damaged_clouds_are_rejected(case, cut, field):
    msg = case[0]
    short = PointCloud2(header=msg.header, height=msg.height, width=msg.width, fields=msg.fields,
                        is_bigendian=msg.is_bigendian, point_step=msg.point_step, row_step=msg.row_step)
    short.data = array.array("B", bytes(msg.data)[:-cut] if len(msg.data) else b"\x00")
    with pytest.raises(ValueError, match="PointCloud2 data has"):
        cloud_to_xyz(short)
    msg.fields = [f for f in msg.fields if f.name != field]
    with pytest.raises(ValueError, match=f"no '{field}' field"):
        cloud_to_xyz(msg)


def test_write_read_round_trip():
    rng = np.random.default_rng(1)
    pts = rng.uniform(-50, 50, (500, 3))
    colors = rng.integers(0, 256, (500, 3), dtype=np.uint8)
    conf = rng.random(500).astype(np.float32)
    msg = xyz_to_cloud(pts, header(5 * SEC), colors, conf)
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("rgb", 12, 7, 1), ("confidence", 16, 7, 1)]
    assert (msg.height, msg.width, msg.point_step, msg.row_step, msg.is_bigendian, msg.is_dense) == (
        1, 500, 20, 10000, False, True)
    assert msg.header.frame_id == "lidar" and len(msg.data) == 10000
    got, times = cloud_to_xyz(msg)
    np.testing.assert_array_equal(got, pts.astype(np.float32))
    assert times is None
    raw = np.frombuffer(msg.data, np.dtype([("xyz", "<f4", 3), ("rgb", "<f4"), ("confidence", "<f4")]))
    np.testing.assert_array_equal(unpack_rgb(raw["rgb"]), colors)
    np.testing.assert_array_equal(raw["confidence"], conf)


def test_parts_make_the_cloud_of_their_concatenation():
    """parts_to_cloud (~/points: a part per view, not concatenated first) is xyz_to_cloud of the
    concatenation: fields, sizes, is_dense, bytes; its data adopted as an array.array."""
    rng = np.random.default_rng(2)
    parts = [(rng.uniform(-50, 50, (n, 3)).astype(np.float32), rng.integers(0, 256, (n, 3), dtype=np.uint8),
              rng.random(n).astype(np.float32)) for n in (301, 0, 7, 1202)]
    msg = parts_to_cloud(parts, header(5 * SEC))
    want = xyz_to_cloud(*(np.concatenate([p[0] for p in parts]), header(5 * SEC)),
                        *(np.concatenate([p[f] for p in parts]) for f in (1, 2)))
    assert msg == want and msg.width == 1510 and msg.is_dense
    assert isinstance(msg.data, array.array) and msg.data.typecode == "B"


def test_xyz_only_cloud_and_is_dense():
    msg = xyz_to_cloud(np.array([[1.0, 2.0, 3.0], [np.nan, 0.0, 0.0]]), header())
    assert [f.name for f in msg.fields] == ["x", "y", "z"] and msg.point_step == 12 and not msg.is_dense
    np.testing.assert_array_equal(cloud_to_xyz(msg)[0], [[1.0, 2.0, 3.0]])
    empty = xyz_to_cloud(np.zeros((0, 3)), header())
    assert empty.width == 0 and len(empty.data) == 0 and empty.is_dense
    assert cloud_to_xyz(empty)[0].shape == (0, 3)


def test_rgb_packing_is_the_pcl_layout():
    colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [1, 2, 3]], np.uint8)
    msg = xyz_to_cloud(np.zeros((4, 3)), header(), colors)
    assert isinstance(msg.data, array.array) and msg.data.typecode == "B"
    packed = np.frombuffer(msg.data, np.dtype([("xyz", "<f4", 3), ("rgb", "<u4")]))["rgb"]
    assert packed.tolist() == [0xFF0000, 0x00FF00, 0x0000FF, 0x010203]


def test_bad_write_inputs():
    with pytest.raises(ValueError, match=r"points must be \(N, 3\)"):
        xyz_to_cloud(np.zeros((4, 2)), header())
    with pytest.raises(ValueError, match="colors must be"):
        xyz_to_cloud(np.zeros((4, 3)), header(), colors=np.zeros((3, 3), np.uint8))
    with pytest.raises(ValueError, match="confidence must be"):
        xyz_to_cloud(np.zeros((4, 3)), header(), confidence=np.zeros(5))
    with pytest.raises(ValueError, match="colors must be uint8"):
        xyz_to_cloud(np.zeros((1, 3)), header(), colors=np.full((1, 3), 0.5))
    with pytest.raises(ValueError, match=r"colors must lie in 0..255, got values in 0..300"):
        xyz_to_cloud(np.zeros((1, 3)), header(), colors=np.array([[0, 300, 7]]))


def xyz_t(t_values, t_code, name, stamp_ns):
    n = len(t_values)
    cols = {"x": np.arange(n, dtype=np.float32), "y": np.zeros(n), "z": np.ones(n), name: t_values}
    return make_cloud(cols, [("x", "f4", 1), ("y", "f4", 1), ("z", "f4", 1), (name, t_code, 1)], 1, n,
                      stamp_ns=stamp_ns)


@pytest.mark.parametrize("name,code,values,expected", [
    ("t", "u4", [0, 50_000_000], [0, 50_000_000]),                          # Ouster: ns offsets
    ("offset_time", "u4", [10, 20], [10, 20]),                              # Livox: ns offsets
    ("time", "f4", [-0.05, 0.0, 0.025], [-50_000_000, 0, 25_000_000]),      # Velodyne: s offsets
    ("timestamp", "f8", [100.5, 100.625], [500_000_000, 625_000_000]),      # Hesai: absolute s
    ("timestamp", "f8", [100.5e9, 100.625e9], [500_000_000, 625_000_000]),  # absolute ns as float
])
def test_time_field_conventions(name, code, values, expected):
    stamp = 100 * SEC
    _, times = cloud_to_xyz(xyz_t(np.array(values), code, name, stamp))
    assert np.abs(times - stamp - np.array(expected)).max() <= 2  # float32 seconds round to ns


def test_sim_time_relative_and_absolute_floats():
    # Stamp 3 s (simulated clock): relative offsets stay offsets, absolute values stay absolute.
    assert cloud_to_xyz(xyz_t(np.array([0.0, 0.1]), "f8", "time", 3 * SEC))[1].tolist() == [3 * SEC, 3_100_000_000]
    assert cloud_to_xyz(xyz_t(np.array([2.9, 3.0]), "f8", "time", 3 * SEC))[1].tolist() == [2_900_000_000, 3 * SEC]


def test_garbage_times_leave_the_points_and_the_sweeps_times_are_dropped_with_a_warning():
    """A time that does not fit int64 ns (a float 1e30 among Velodyne offsets) is garbage: the
    cloud is read, that time far from its stamp, and session.inputs.Cloud.checked drops them all."""
    from mapanything_ros.session.inputs import Cloud

    stamp = 100 * SEC
    for garbage in (1e30, -3e38):
        values = np.array([0.0, 0.01, garbage, 0.02], np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # (numpy's cast of a float beyond int64: undefined)
            points, times = cloud_to_xyz(xyz_t(values, "f4", "time", stamp))
        assert len(points) == 4 and times[[0, 1, 3]].tolist() == [stamp, stamp + 10_000_000, stamp + 20_000_000]
        assert abs(int(times[2]) - stamp) > 2**61
        cloud, problem = Cloud.checked(points, times, "lidar", stamp)
        assert cloud.times is None and cloud.span == (stamp, stamp) and "per-point times more than" in problem


def test_points_without_a_finite_time_are_dropped_and_counted():
    """A NaN or infinite time: the point is dropped (its place in the sweep is unknown) and counted
    apart from the far and non-finite ones, for the session to say (it went unsaid)."""
    values = np.array([0.0, np.nan, 0.01, np.inf, 0.02, np.nan], np.float32)
    msg = xyz_t(values, "f4", "time", 100 * SEC)
    points, times, far, untimed = read_cloud(msg, max_abs=3.0)  # x 0..5: 4 and 5 far
    assert points[:, 0].tolist() == [0.0, 2.0] and untimed == 3 and far == 1  # x = 1, 3, 5 untimed; 4 far
    assert read_cloud(xyz_t(np.zeros(3, np.float32), "f4", "time", 100 * SEC)).untimed == 0


def test_time_field_selection():
    msg = xyz_t(np.array([1, 2], dtype=np.uint32), "u4", "ring_time", SEC)
    assert cloud_to_xyz(msg)[1] is None  # not a known name
    assert cloud_to_xyz(msg, time_field="ring_time")[1].tolist() == [SEC + 1, SEC + 2]
    with pytest.raises(ValueError, match="no time field 'stamp'"):
        cloud_to_xyz(msg, time_field="stamp")


def base_fields():
    return [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate("xyz")]


@pytest.mark.parametrize("edit,match", [
    (lambda m: setattr(m.fields[0], "datatype", PointField.INT16), "field 'x' has datatype 3"),
    (lambda m: setattr(m.fields[1], "count", 3), "field 'y' has count 3"),
    (lambda m: setattr(m.fields[2], "offset", 10), "field 'z' at offset 10 does not fit in point_step 12"),
    (lambda m: setattr(m.fields[2], "datatype", 9), "field 'z' has datatype 9"),
    (lambda m: m.fields.append(PointField(name="x", offset=0, datatype=7, count=1)), "field 'x' twice"),
    (lambda m: setattr(m, "row_step", 20), "row_step 20 is less than width 2 x point_step 12"),
    (lambda m: setattr(m, "data", array.array("B", bytes(25))), "25 bytes, row_step x height = 24 x 1 = 24"),
])
def test_malformed_clouds_are_clear_errors(edit, match):
    msg = PointCloud2(height=1, width=2, fields=base_fields(), point_step=12, row_step=24)
    msg.data = array.array("B", bytes(24))
    cloud_to_xyz(msg)
    edit(msg)
    with pytest.raises(ValueError, match=match):
        cloud_to_xyz(msg)


def test_large_cloud_is_vectorised():
    # 100k points with a time field and padding: the conversion uses numpy views only.
    n = 100_000
    dtype = np.dtype({"names": ["x", "y", "z", "t"], "formats": ["<f4", "<f4", "<f4", "<u4"],
                      "offsets": [0, 4, 8, 16], "itemsize": 32})
    raw = np.zeros(n, dtype)
    raw["x"], raw["t"] = np.arange(n), np.arange(n)
    msg = PointCloud2(header=header(SEC), height=1, width=n, point_step=32, row_step=32 * n,
                      fields=[PointField(name=k, offset=o, datatype=7 if k != "t" else 6, count=1)
                              for k, o in zip("xyzt", (0, 4, 8, 16))])
    msg.data = array.array("B", raw.tobytes())
    pts, times = cloud_to_xyz(msg)
    assert pts.shape == (n, 3) and pts[-1, 0] == n - 1 and times[-1] == SEC + n - 1
    assert xyz_to_cloud(pts, header(), confidence=np.ones(n)).width == n
