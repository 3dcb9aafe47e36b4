"""The node end to end across processes: the synthetic player and the node (oracle backend, sim time)
in subprocesses, this process checking the node's outputs against the scene's truth.

Real rclpy / Fast DDS, kept on loopback by test/conftest.py; the subprocesses inherit that environment.
"""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
import rclpy.executors  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import Image, PointCloud2  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from mapanything_ros.geometry import pose_from_quat_trans  # noqa: E402
from mapanything_ros.msg import ReconstructionWindow  # noqa: E402
from mapanything_ros.ros.pointcloud import cloud_to_xyz  # noqa: E402
from mapanything_ros.ros.tf import TF_QOS, transform_to_matrix  # noqa: E402
from mapanything_ros.synthetic.presets import make_scene  # noqa: E402

SEC = 1_000_000_000
CAMERAS = ["front_optical", "left_fisheye_optical"]


def stamp_ns(header):
    return header.stamp.sec * SEC + header.stamp.nanosec


def params_file(tmp_path, depth_source):
    text = f"""mapanything:
  ros__parameters:
    cameras: [{", ".join(CAMERAS)}]
    backend: oracle
    oracle_preset: small
    oracle_seed: 0
    use_sim_time: true
    depth_source: {depth_source}
    long_side: 168
    keyframe_interval: 0.25
    map_publish_rate: 2.0
"""
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def discontinuity_zone(true):
    """Pixels within 1 px of a depth step of more than 5% between neighbours (or of the lens border)."""
    z = np.where(true > 0, true, np.nan)
    edge = np.zeros(z.shape, bool)
    for axis in (0, 1):
        a, b = np.moveaxis(z, axis, 0)[:-1], np.moveaxis(z, axis, 0)[1:]
        step = ~(np.abs(a / b - 1) <= 0.05)
        np.moveaxis(edge, axis, 0)[:-1] |= step
        np.moveaxis(edge, axis, 0)[1:] |= step
    padded = np.pad(edge, 1)
    return np.lib.stride_tricks.sliding_window_view(padded, (3, 3)).any(axis=(2, 3))


@pytest.fixture
def listener():
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("node_test", context=context)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    yield node, executor
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=context)


@pytest.mark.parametrize("depth_source", ["none", "lidar"])
def test_node_outputs_match_the_truth(listener, tmp_path, depth_source):
    node, executor = listener
    got = {}

    def keep(key):
        return lambda msg: got.setdefault(key, []).append(msg)

    node.create_subscription(PointCloud2, "/mapanything/points", keep("points"), 10)
    node.create_subscription(PointCloud2, "/mapanything/map", keep("map"), 10)
    for cam in CAMERAS:
        node.create_subscription(Image, f"/mapanything/{cam}/depth", keep(cam), 10)
    node.create_subscription(ReconstructionWindow, "/mapanything/window", keep("window"), 10)
    node.create_subscription(TFMessage, "/tf", keep("tf"), TF_QOS)
    node.create_subscription(DiagnosticArray, "/diagnostics", keep("diagnostics"), 10)

    env = dict(os.environ)
    node_proc = subprocess.Popen([sys.executable, "-m", "mapanything_ros.ros.node", "--ros-args",
                                  "--params-file", str(params_file(tmp_path, depth_source))], env=env)
    player = subprocess.Popen([sys.executable, "-m", "mapanything_ros.ros.player", "--preset", "small", "--seed", "0",
                               "--duration", "1.5", "--start", "2", "--wait-subscribers", "30", "--linger", "1.5",
                               "--lidar-rate", "10" if depth_source == "lidar" else "0"],
                              env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and player.poll() is None:
            executor.spin_once(timeout_sec=0.05)
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
    finally:
        for proc in (player, node_proc):
            if proc.poll() is None:
                proc.terminate()
        node_proc.wait(timeout=20)
        player.wait(timeout=10)
    assert player.returncode == 0
    assert node_proc.returncode == 0, "the node did not shut down cleanly on SIGTERM"
    missing = [k for k in ["points", "window", "tf", "map", "diagnostics"] + CAMERAS if not got.get(k)]
    assert not missing, f"nothing received on {missing}"
    scene = make_scene("small", 0)

    # ~/window: poses are the true world poses; the frame is world_frame.
    for msg in got["window"]:
        assert msg.header.frame_id == "odom" and msg.backend == "oracle"
        assert all(msg.used_pose) and any(msg.used_depth) == (depth_source == "lidar")
        for stamp, frame_id, pose in zip(msg.stamps, msg.frame_ids, msg.poses):
            p, q = pose.position, pose.orientation
            np.testing.assert_allclose(pose_from_quat_trans([q.x, q.y, q.z, q.w], [p.x, p.y, p.z]),
                                       scene.world_from_camera(frame_id, stamp.sec * SEC + stamp.nanosec), atol=1e-5)

    # /tf: map -> odom is the identity with known poses.
    corrections = [t for m in got["tf"] for t in m.transforms if t.child_frame_id == "odom"]
    assert corrections and all(t.header.frame_id == "map" for t in corrections)
    for t in corrections:
        np.testing.assert_allclose(transform_to_matrix(t.transform), np.eye(4), atol=1e-6)

    # ~/<camera>/depth: the true z-depth; NaN only near discontinuities or outside the lens.
    for cam in CAMERAS:
        for msg in got[cam][-2:]:
            assert msg.encoding == "32FC1" and msg.header.frame_id == cam
            depth = np.frombuffer(msg.data, "<f4").reshape(msg.height, msg.width)
            true = scene.render(cam, stamp_ns(msg.header)).depth_z
            finite = np.isfinite(depth)
            assert not (finite & (true <= 0)).any()
            assert not (~finite & (true > 0) & ~discontinuity_zone(true)).any()
            rel = np.abs(depth[finite] / true[finite] - 1)
            # Upsampled from the model resolution (168 x 126) with edge-aware bilinear inverse depth:
            # exact on planes up to distortion; creases (wall corners) spread a little error.
            assert np.quantile(rel, 0.95) < 1e-3 and rel.max() < 0.2, (np.quantile(rel, 0.95), rel.max())

    # ~/points (the window) lie on the true surfaces, seen from the window's true camera poses.
    window = got["window"][-1]
    cloud = next(m for m in reversed(got["points"]) if stamp_ns(m.header) == stamp_ns(window.header))
    assert cloud.header.frame_id == "odom"
    points, _ = cloud_to_xyz(cloud)
    assert len(points) > 1000
    residual = np.full(len(points), np.inf)
    for stamp, frame_id in zip(window.stamps, window.frame_ids):
        origin = scene.world_from_camera(frame_id, stamp.sec * SEC + stamp.nanosec)[:3, 3]
        ray = points - origin
        dist = np.linalg.norm(ray, axis=1)
        cast, _ = scene.room.cast(np.broadcast_to(origin, ray.shape), ray / dist[:, None])
        residual = np.minimum(residual, np.abs(cast - dist))
    assert np.all(residual < 2e-3 * np.maximum(1.0, np.linalg.norm(points, axis=1))), residual.max()

    # ~/map: voxel centroids within half a voxel (+ 1 mm) of a surface, for nearly all points.
    map_points, _ = cloud_to_xyz(max(got["map"], key=lambda m: m.width))  # early ones may precede any window
    assert len(map_points) > 1000
    dist = np.full(len(map_points), np.inf)
    for frame_id, stamp in zip(window.frame_ids, window.stamps):
        origin = scene.world_from_camera(frame_id, stamp.sec * SEC + stamp.nanosec)[:3, 3]
        ray = map_points - origin
        d = np.linalg.norm(ray, axis=1)
        cast, _ = scene.room.cast(np.broadcast_to(origin, ray.shape), ray / d[:, None])
        dist = np.minimum(dist, np.abs(cast - d))
    assert np.mean(dist < 0.025 + 1e-3) > 0.95

    # /diagnostics: the pipeline is OK and counted windows.
    statuses = [s for m in got["diagnostics"] for s in m.status if s.name.endswith("pipeline")]
    assert all(s.level == s.OK for s in statuses)
    assert max(int(next(v.value for v in s.values if v.key == "windows_done")) for s in statuses) >= 1
