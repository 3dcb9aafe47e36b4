"""The synthetic player: a simulated clock, deterministic messages, and (across processes) exactly
the scene's images, calibrations, LiDAR sweeps and poses.

Real rclpy / Fast DDS, kept on loopback by test/conftest.py; the subprocess inherits that environment.
"""

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from mapanything_ros.geometry import CameraModel  # noqa: E402
from mapanything_ros.decode import camera_info_to_model, cloud_to_xyz, compressed_to_rgb, image_to_rgb  # noqa: E402
from mapanything_ros.ros.player import Clock, SyntheticPlayer  # noqa: E402
from mapanything_ros.ros.tf import TF_QOS, TF_STATIC_QOS, transform_to_matrix  # noqa: E402
from mapanything_ros.synthetic import Lidar, RigCamera, SyntheticScene, mount  # noqa: E402

SEC = 1_000_000_000
MS = 1_000_000


def stamp_ns(header):
    return header.stamp.sec * SEC + header.stamp.nanosec




@pytest.fixture(scope="module")
def small_scene():
    """One small fisheye camera and a 4 x 32 LiDAR: renders in milliseconds."""
    cam = CameraModel(64, 48, (30.0, 0, 31.5, 0, 30.0, 23.5, 0, 0, 1), (0.02, -0.01, 0.0, 0.0), "equidistant")
    return SyntheticScene(seed=3, cameras=[RigCamera("cam_optical", cam, mount((0.1, 0.0, 0.2), yaw=0.3))],
                          lidar=Lidar(mount((0.0, 0.0, 0.3), optical=False), rows=4, columns=32))


def test_step_is_deterministic_and_follows_the_simulated_clock(ros, small_scene):
    node, _ = ros
    a = SyntheticPlayer(node, small_scene, start_ns=5 * SEC, lidar_topic="a/points",
                        namespace_of_camera=lambda n: f"a/{n}")
    b = SyntheticPlayer(node, small_scene, start_ns=5 * SEC, lidar_topic="b/points",
                        namespace_of_camera=lambda n: f"b/{n}")
    ticks_a = [a.step() for _ in range(11)]
    time.sleep(0.05)  # wall time must not matter
    ticks_b = [b.step() for _ in range(11)]
    for ta, tb in zip(ticks_a, ticks_b):
        assert [t.replace("a/", "b/") for t, _ in ta] == [t for t, _ in tb]
        assert [m for _, m in ta] == [m for _, m in tb]  # field by field (CDR padding bytes vary)
    # TF every 20 ms from 5 s; the camera at 5.0 s and 5.1 s; the sweep [5.0, 5.1] s out at 5.1 s.
    assert a.now_ns == 5 * SEC + 200 * MS
    tf_stamps = [stamp_ns(m.transforms[0].header) for tick in ticks_a for t, m in tick if t == "/tf"]
    assert tf_stamps == [5 * SEC + 20 * MS * k for k in range(11)]
    image_stamps = [stamp_ns(m.header) for tick in ticks_a for t, m in tick if t == "a/cam_optical/image_raw"]
    assert image_stamps == [5 * SEC, 5 * SEC + 100 * MS, 5 * SEC + 200 * MS]
    clouds = [(i, m) for i, tick in enumerate(ticks_a) for t, m in tick if t == "a/points"]
    assert [(i, stamp_ns(m.header)) for i, m in clouds] == [(5, 5 * SEC), (10, 5 * SEC + 100 * MS)]
    if Clock is not None:  # /clock leads every tick
        clock = [tick[0][1].clock for tick in ticks_a]
        assert [c.sec * SEC + c.nanosec for c in clock] == tf_stamps
    # run() continues the same schedule: [5.22, 5.32) s holds 5 ticks.
    assert a.run(0.1, realtime=False) == 5 and a.now_ns == 5 * SEC + 300 * MS
    truth = a.truth(5 * SEC + 100 * MS)["cam_optical"]
    image = next(m for t, m in ticks_a[5] if t == "a/cam_optical/image_raw")
    assert np.array_equal(image_to_rgb(image), truth.image)
    np.testing.assert_allclose(truth.world_from_camera,
                               small_scene.world_from_camera("cam_optical", 5 * SEC + 100 * MS), atol=1e-12)


def test_compressed_images_and_camera_info(ros, small_scene):
    node, _ = ros
    player = SyntheticPlayer(node, small_scene, compressed=True, lidar_rate_hz=0, clock=False)
    assert sorted(player.publishers) == ["/tf", "cam_optical/camera_info", "cam_optical/image_raw/compressed"]
    msgs = dict(player.step())
    view = player.truth(player.now_ns)["cam_optical"]
    rgb = compressed_to_rgb(msgs["cam_optical/image_raw/compressed"])
    assert rgb.shape == view.image.shape
    psnr = 10 * np.log10(255.0**2 / np.mean((rgb.astype(float) - view.image) ** 2))
    swapped = 10 * np.log10(255.0**2 / np.mean((rgb[..., ::-1].astype(float) - view.image) ** 2))
    assert psnr > 25.0 and swapped < psnr - 5.0, (psnr, swapped)  # jpeg of a busy 64x48 texture, RGB order
    info = msgs["cam_optical/camera_info"]
    assert camera_info_to_model(info) == view.camera
    np.testing.assert_array_equal(np.reshape(info.p, (3, 4))[:, :3], np.reshape(info.k, (3, 3)))
    np.testing.assert_array_equal(np.reshape(info.r, (3, 3)), np.eye(3))


def spin_until(executor, proc, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        executor.spin_once(timeout_sec=0.05)
    for _ in range(20):  # drain what is still queued
        executor.spin_once(timeout_sec=0.01)


def play(executor, cmd):
    """Run the player `cmd` while spinning `executor`; its exit code (killed after 60 s)."""
    proc = subprocess.Popen(cmd, env=dict(os.environ))
    try:
        spin_until(executor, proc, 60.0)
    finally:
        proc.kill() if proc.poll() is None else None
        proc.wait()
    return proc.returncode


def test_catching_up_with_slow_rendering_ends_at_the_duration(ros, small_scene, monkeypatch):
    """Rendering slower than real time (the default scene on a small CPU) with catch_up: camera
    frames are skipped, and the run ends at its duration (it used to spin for ever once the
    skipped camera reached the end while TF and LiDAR had not)."""
    node, _ = ros
    player = SyntheticPlayer(node, small_scene, clock=False)
    render = player.truth
    monkeypatch.setattr(player, "truth", lambda stamp: time.sleep(0.3) or render(stamp))
    stop = threading.Event()
    done = []
    runner = threading.Thread(target=lambda: done.append(player.run(0.5, realtime=True, stop=stop, catch_up=True)))
    runner.start()
    runner.join(timeout=20)
    stop.set()
    runner.join()
    assert done and done[0] > 0 and player.next_ns >= SEC // 2 + player._first["tf"], "the run did not end"


def test_player_process_takes_ros_arguments(ros, scene):
    """`mapanything_player ... --ros-args -r __ns:=/robot1`, as launch_ros starts it in a namespace:
    its sensor topics move into the namespace (argparse refused the ROS arguments, exit 2)."""
    node, executor = ros
    got = []
    for c in scene.cameras:
        node.create_subscription(Image, f"/robot1/{c.name}/image_raw", got.append, qos_profile_sensor_data)
        node.create_subscription(CameraInfo, f"/robot1/{c.name}/camera_info", got.append, qos_profile_sensor_data)
    node.create_subscription(PointCloud2, "/robot1/lidar/points", got.append, qos_profile_sensor_data)
    node.create_subscription(TFMessage, "/tf", lambda msg: None, TF_QOS)
    cmd = [sys.executable, "-m", "mapanything_ros.ros.player", "--duration", "0.25", "--start", "2",
           "--wait-subscribers", "15", "--ros-args", "-r", "__ns:=/robot1"]
    assert play(executor, cmd) == 0
    assert {type(m).__name__ for m in got} == {"Image", "CameraInfo", "PointCloud2"}


def test_player_process_publishes_the_scene(ros, scene):
    node, executor = ros
    got = {}

    def keep(topic):
        return lambda msg: got.setdefault(topic, []).append(msg)

    names = [c.name for c in scene.cameras]
    for name in names:
        node.create_subscription(Image, f"{name}/image_raw", keep(f"{name}/image"), qos_profile_sensor_data)
        node.create_subscription(CameraInfo, f"{name}/camera_info", keep(f"{name}/info"), qos_profile_sensor_data)
    node.create_subscription(PointCloud2, "lidar/points", keep("lidar"), qos_profile_sensor_data)
    node.create_subscription(TFMessage, "/tf", keep("tf"), TF_QOS)
    node.create_subscription(TFMessage, "/tf_static", keep("tf_static"), TF_STATIC_QOS)
    if Clock is not None:
        node.create_subscription(Clock, "/clock", keep("clock"), 10)
    cmd = [sys.executable, "-m", "mapanything_ros.ros.player", "--seed", "0", "--duration", "0.25",
           "--rate", "10", "--start", "2", "--wait-subscribers", "15"]
    assert play(executor, cmd) == 0
    missing = [k for k in [f"{n}/{s}" for n in names for s in ("image", "info")] + ["lidar", "tf", "tf_static"]
               if not got.get(k)]
    assert not missing, f"nothing received on {missing}"

    # Images: exactly the scene's render at their stamp; CameraInfo: the same camera model.
    for name in names:
        image = got[f"{name}/image"][-1]
        stamp = stamp_ns(image.header)
        assert image.header.frame_id == name and stamp in (2 * SEC, 2 * SEC + 100 * MS, 2 * SEC + 200 * MS)
        assert np.array_equal(image_to_rgb(image), scene.render(name, stamp).image)
        info = got[f"{name}/info"][-1]
        assert info.header.frame_id == name
        assert camera_info_to_model(info) == scene.rig_camera(name).camera

    # LiDAR: the sweep from its header stamp, point times included (float32 coordinates).
    cloud = got["lidar"][-1]
    assert cloud.header.frame_id == "lidar" and (cloud.height, cloud.width) == (scene.lidar.rows,
                                                                                 scene.lidar.columns)
    points, times = cloud_to_xyz(cloud)
    sweep = scene.sweep(stamp_ns(cloud.header))
    np.testing.assert_allclose(points, sweep.points, atol=1e-5)
    np.testing.assert_array_equal(times, sweep.times_ns)

    # TF: world -> base is the trajectory pose at each stamp; static transforms are the rig mounts.
    dynamic = [t for m in got["tf"] for t in m.transforms]
    assert {(t.header.frame_id, t.child_frame_id) for t in dynamic} == {("odom", "base_link")}
    assert len(dynamic) >= 5
    for t in dynamic:
        assert (stamp_ns(t.header) - 2 * SEC) % (20 * MS) == 0
        np.testing.assert_allclose(transform_to_matrix(t.transform),
                                   scene.trajectory.world_from_body(stamp_ns(t.header)), atol=1e-9)
    static = {t.child_frame_id: t for m in got["tf_static"] for t in m.transforms}
    assert {t.header.frame_id for t in static.values()} == {"base_link"}
    assert sorted(static) == sorted(names + ["lidar"])
    for name in names:
        np.testing.assert_allclose(transform_to_matrix(static[name].transform),
                                   scene.rig_camera(name).body_from_camera, atol=1e-12)
    np.testing.assert_allclose(transform_to_matrix(static["lidar"].transform), scene.lidar.body_from_lidar,
                               atol=1e-12)
    if Clock is not None:
        clock = [m.clock.sec * SEC + m.clock.nanosec for m in got["clock"]]
        assert clock == sorted(clock) and clock[-1] <= 2 * SEC + 240 * MS
