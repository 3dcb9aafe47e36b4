"""Synthetic bags written with rosbags: read back with AnyReader, every message checked against the scene."""

import cv2
import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.interfaces import QosDurability
from rosbags.typesys import get_typestore

from mapanything_ros.bag import camera_topics, write_synthetic_bag
from mapanything_ros.bag.synthetic import LIDAR_TOPIC, SurfaceSampler, TYPESTORE
from mapanything_ros.evaluation import cloud_xyz, read_ground_truth
from mapanything_ros.geometry import pose_from_quat_trans
from mapanything_ros.layout import BASE_FRAME, LIDAR_FRAME, SURFACE_TOPIC, WORLD_FRAME, ground_truth_topics
from mapanything_ros.synthetic.presets import make_scene

SEC = 1_000_000_000
START = SEC
DURATION = 0.25  # s: cameras at 0, 0.1, 0.2 s; TF every 20 ms; LiDAR sweeps ending at 0.1, 0.2 s
SPACING = 0.05


def stamp_ns(msg):
    return msg.header.stamp.sec * SEC + msg.header.stamp.nanosec


def read_all(path):
    """{topic: [(record time, message)]} and {topic: connection}."""
    out, conns = {}, {}
    with AnyReader([path], default_typestore=get_typestore(TYPESTORE)) as reader:
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t, reader.deserialize(raw, conn.msgtype)))
            conns[conn.topic] = conn
    return out, conns


def transform_matrix(tf):
    r, t = tf.transform.rotation, tf.transform.translation
    return pose_from_quat_trans([r.x, r.y, r.z, r.w], [t.x, t.y, t.z])


@pytest.fixture(scope="module", params=["mcap", "sqlite3"])
def bag(request, tmp_path_factory):
    calls = []
    summary = write_synthetic_bag(tmp_path_factory.mktemp(request.param) / "run", preset="small", seed=3,
                                  duration_s=DURATION, storage=request.param, start_ns=START,
                                  surface_spacing=SPACING, progress=lambda done, total: calls.append((done, total)))
    messages, conns = read_all(summary.path)
    return summary, messages, conns, calls, make_scene("small", 3)


def test_counts_and_progress(bag):
    summary, messages, _, calls, scene = bag
    cams = [c.name for c in scene.cameras]
    expected = {"/tf_static": 1, "/tf": 13, LIDAR_TOPIC: 2, SURFACE_TOPIC: 1}
    for name in cams:
        for topic in camera_topics(name) + ground_truth_topics(name):
            expected[topic] = 3
    assert {k: len(v) for k, v in messages.items()} == expected
    assert summary.counts == expected
    ticks = len(set(range(START, START + SEC // 4, SEC // 50)) | set(range(START, START + SEC // 4, SEC // 10)))
    assert calls[-1] == (ticks, ticks) and len(calls) == ticks
    assert (summary.start_ns, summary.end_ns) == (START, START + 240_000_000)


def test_images_and_camera_info_match_scene(bag):
    _, messages, conns, _, scene = bag
    for rig in scene.cameras:
        image_topic, info_topic = camera_topics(rig.name)
        assert conns[image_topic].msgtype == "sensor_msgs/msg/Image"
        for (t, img), (t_info, info) in zip(messages[image_topic], messages[info_topic]):
            view = scene.render(rig.name, t)
            assert stamp_ns(img) == t == t_info == stamp_ns(info)
            assert img.header.frame_id == info.header.frame_id == rig.name
            assert (img.encoding, img.height, img.width, img.step) == ("rgb8", *view.image.shape[:2],
                                                                        3 * view.image.shape[1])
            np.testing.assert_array_equal(img.data.reshape(view.image.shape), view.image)
            cam = rig.camera
            assert (info.width, info.height, info.distortion_model) == (cam.width, cam.height, cam.distortion_model)
            np.testing.assert_array_equal(info.k, cam.k)
            np.testing.assert_array_equal(info.d, cam.d)
            np.testing.assert_array_equal(info.r, np.eye(3).ravel())
            p = np.hstack([np.reshape(cam.k, (3, 3)), np.zeros((3, 1))])
            np.testing.assert_array_equal(info.p.reshape(3, 4), p)
            assert (info.binning_x, info.binning_y) == (cam.binning_x, cam.binning_y)
            roi = info.roi
            assert (roi.x_offset, roi.y_offset, roi.height, roi.width, roi.do_rectify) == cam.roi


def test_lidar_clouds_match_scene(bag):
    _, messages, _, _, scene = bag
    for t, cloud in messages[LIDAR_TOPIC]:
        sweep = scene.sweep(t - scene.lidar.sweep_ns)
        assert stamp_ns(cloud) == sweep.start_ns and cloud.header.frame_id == LIDAR_FRAME
        assert [(f.name, f.offset, f.datatype, f.count) for f in cloud.fields] == [
            ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("t", 12, 6, 1)]
        assert (cloud.height, cloud.width) == (scene.lidar.rows, scene.lidar.columns)
        assert cloud.point_step == 16 and cloud.row_step == 16 * cloud.width and cloud.is_dense
        np.testing.assert_array_equal(cloud_xyz(cloud), sweep.points.astype(np.float32))
        offsets = cloud.data.reshape(-1, 16)[:, 12:].copy().view("<u4").ravel()
        np.testing.assert_array_equal(offsets, sweep.times_ns - sweep.start_ns)


def test_tf_matches_scene(bag):
    _, messages, conns, _, scene = bag
    for t, msg in messages["/tf"]:
        (tf,) = msg.transforms
        assert (tf.header.frame_id, tf.child_frame_id, stamp_ns(tf)) == (WORLD_FRAME, BASE_FRAME, t)
        np.testing.assert_allclose(transform_matrix(tf), scene.trajectory.world_from_body(t), atol=1e-12)
    (_, static), = messages["/tf_static"]
    mounts = {c.name: c.body_from_camera for c in scene.cameras} | {LIDAR_FRAME: scene.lidar.body_from_lidar}
    assert {tf.child_frame_id for tf in static.transforms} == set(mounts)
    for tf in static.transforms:
        assert tf.header.frame_id == BASE_FRAME
        np.testing.assert_allclose(transform_matrix(tf), mounts[tf.child_frame_id], atol=1e-12)
    (qos,) = conns["/tf_static"].ext.offered_qos_profiles
    assert qos.durability == QosDurability.TRANSIENT_LOCAL


def test_ground_truth_matches_scene(bag):
    summary, _, _, _, scene = bag
    gt = read_ground_truth(summary.path)
    assert gt.world_frame == WORLD_FRAME and gt.cameras == sorted(c.name for c in scene.cameras)
    stamps = [START, START + SEC // 10, START + 2 * SEC // 10]
    for stamp in stamps:
        for view in scene.capture(stamp):
            depth = gt.depth[view.name][stamp]
            np.testing.assert_array_equal(np.isnan(depth), view.depth_z == 0)
            np.testing.assert_array_equal(np.nan_to_num(depth), view.depth_z)
            np.testing.assert_allclose(gt.poses[view.name][stamp], view.world_from_camera, atol=1e-12)
    surface = gt.surface
    assert len(surface) == summary.surface_points > 1000
    assert scene.room.surface_distance(surface).max() < 1e-5  # float32 samples on the true surfaces
    keys = SurfaceSampler(scene.room.lo, scene.room.hi, SPACING).keys(surface)
    assert len(np.unique(keys)) == len(keys)  # one sample per cube
    # Every true depth pixel back-projects near a sample (within a cube's diagonal).
    view = scene.render(scene.cameras[0].name, START)
    rays = view.camera.ray_map(grid=scene.grid)
    pose = view.world_from_camera
    pts = pose[:3, 3] + (rays * view.depth_ray[..., None]).reshape(-1, 3) @ pose[:3, :3].T
    d = np.sqrt(((pts[::97, None] - surface[None]) ** 2).sum(-1)).min(axis=1)
    assert d.max() <= np.sqrt(3) * SPACING


def test_compressed_images(tmp_path):
    summary = write_synthetic_bag(tmp_path / "jpeg", preset="small", duration_s=0.05, lidar_rate_hz=0,
                                  tf_rate_hz=0, compressed=True, start_ns=START)
    messages, _ = read_all(summary.path)
    scene = make_scene("small")
    assert LIDAR_TOPIC not in messages and "/tf" not in messages
    for rig in scene.cameras:
        image_topic, _ = camera_topics(rig.name, compressed=True)
        assert image_topic.endswith("/image_raw/compressed")
        ((t, msg),) = messages[image_topic]
        assert msg.format == "rgb8; jpeg compressed bgr8"
        decoded = cv2.imdecode(msg.data, cv2.IMREAD_COLOR)[..., ::-1]
        assert np.abs(decoded.astype(int) - scene.render(rig.name, t).image).mean() < 8


def test_rejects_unknown_storage_and_existing_path(tmp_path):
    with pytest.raises(ValueError, match="storage"):
        write_synthetic_bag(tmp_path / "x", preset="small", duration_s=0.05, storage="rosbag1")
    (tmp_path / "exists").mkdir()
    with pytest.raises(Exception, match="exists"):
        write_synthetic_bag(tmp_path / "exists", preset="small", duration_s=0.05)


@pytest.mark.parametrize("dtype,encoding", [(">u2", "16UC1"), (">f4", "32FC1"), ("<f4", "32FC1"), ("u1", "mono8")])
def test_images_are_written_little_endian(dtype, encoding):
    # Big-endian arrays used to be written byte for byte with is_bigendian = 0 (issue 11).
    from mapanything_ros import decode
    from mapanything_ros.bag.synthetic import Messages

    msgs = Messages(get_typestore(TYPESTORE))
    values = np.arange(12).reshape(3, 4).astype(dtype)
    msg = msgs.image(values, encoding, msgs.header("cam", SEC))
    assert msg.is_bigendian == 0 and msg.step == 4 * values.itemsize
    read = decode.pixels(msg, values.dtype.newbyteorder("="), 1)[..., 0]
    np.testing.assert_array_equal(read, values)
