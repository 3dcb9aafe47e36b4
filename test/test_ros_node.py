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
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from mapanything_ros.decode import cloud_to_xyz  # noqa: E402
from mapanything_ros.geometry import pose_from_quat_trans  # noqa: E402
from mapanything_ros.geometry.transforms import transform_points  # noqa: E402
from mapanything_ros.msg import ReconstructionWindow  # noqa: E402
from mapanything_ros.ros.tf import TF_QOS, transform_to_matrix  # noqa: E402
from mapanything_ros.synthetic.presets import make_scene  # noqa: E402
from truth import check_depth, check_on_surfaces, pose_error  # noqa: E402

SEC = 1_000_000_000
CAMERAS = ["front_optical", "left_fisheye_optical"]
MODEL_SIZE = (168, 126)  # long_side 168 at the cameras' 4:3
VOXEL = 0.05  # map_voxel_size (default)


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
    tf_output: map_odom
"""
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def received_all(got):
    """Whether `got` holds a window with its ~/points and both cameras' depth, a non-empty map, a
    map -> odom correction and a pipeline diagnostic counting a finished window."""
    stamps = {stamp_ns(m.header) for m in got.get("points", [])}
    for cam in CAMERAS:
        for key in (cam, f"{cam} rect", f"{cam} info_rect"):
            stamps &= {stamp_ns(m.header) for m in got.get(key, [])}
    return (any(stamp_ns(w.header) in stamps for w in got.get("window", []))
            and any(m.width for m in got.get("map", []))
            and any(t.child_frame_id == "odom" for m in got.get("tf", []) for t in m.transforms)
            and any(windows_done(s) for s in pipeline_statuses(got)))


def pipeline_statuses(got):
    return [s for m in got.get("diagnostics", []) for s in m.status if s.name.endswith("pipeline")]


def windows_done(status):
    return int(next(v.value for v in status.values if v.key == "windows_done"))


def spin_until(executor, condition, timeout):
    """Spin until condition() holds or `timeout` wall seconds passed; returns condition()."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    return condition()


@pytest.mark.parametrize("depth_source", ["none", "lidar"])
def test_node_outputs_match_the_truth(ros, tmp_path, depth_source):
    node, executor = ros
    got = {}

    def subscribe(kind, topic, key, qos=10):
        return node.create_subscription(kind, topic, lambda msg: got.setdefault(key, []).append(msg), qos)

    outputs = [subscribe(PointCloud2, "/mapanything/points", "points"),
               subscribe(PointCloud2, "/mapanything/map", "map"),
               subscribe(ReconstructionWindow, "/mapanything/window", "window"),
               subscribe(DiagnosticArray, "/diagnostics", "diagnostics")]
    outputs += [subscribe(Image, f"/mapanything/{cam}/depth", cam) for cam in CAMERAS]
    outputs += [subscribe(Image, f"/mapanything/{cam}/depth_rect", f"{cam} rect") for cam in CAMERAS]
    outputs += [subscribe(CameraInfo, f"/mapanything/{cam}/camera_info_rect", f"{cam} info_rect") for cam in CAMERAS]
    subscribe(TFMessage, "/tf", "tf", TF_QOS)

    env = dict(os.environ)
    node_proc = subprocess.Popen([sys.executable, "-m", "mapanything_ros.ros.node", "--ros-args",
                                  "--params-file", str(params_file(tmp_path, depth_source))], env=env)
    player = None
    try:
        # The node publishes an output only while it sees a subscriber: play once it is up and matched
        # (the player itself waits for the node's input subscriptions).
        assert spin_until(executor, lambda: all(s.get_publisher_count() for s in outputs), 40), "node not up"
        player = subprocess.Popen([sys.executable, "-m", "mapanything_ros.ros.player", "--preset", "small",
                                   "--seed", "0", "--duration", "1.5", "--start", "2", "--wait-subscribers", "30",
                                   "--linger", "1.0", "--lidar-rate", "10" if depth_source == "lidar" else "0"],
                                  env=env)
        spin_until(executor, lambda: player.poll() is not None, 40)
        spin_until(executor, lambda: received_all(got), 10)  # the node finishes its last window
    finally:
        for proc in (player, node_proc):
            if proc is not None and proc.poll() is None:
                proc.terminate()
        node_proc.wait(timeout=30)
        if player is not None:
            player.wait(timeout=30)
    assert player.returncode == 0
    assert node_proc.returncode == 0, "the node did not shut down cleanly on SIGTERM"
    assert received_all(got), {k: len(v) for k, v in got.items()}
    scene = make_scene("small", 0)

    # ~/window: poses are the true world poses (float64 in the message); the frame is world_frame.
    for msg in got["window"]:
        assert msg.header.frame_id == "odom" and msg.backend == "oracle" and all(msg.used_pose)
        for stamp, frame_id, pose in zip(msg.stamps, msg.frame_ids, msg.poses):
            p, q = pose.position, pose.orientation
            moved, turned = pose_error(pose_from_quat_trans([q.x, q.y, q.z, q.w], [p.x, p.y, p.z]),
                                       scene.world_from_camera(frame_id, stamp.sec * SEC + stamp.nanosec))
            assert moved < 1e-6 and turned < 1e-6, (moved, turned)
    # LiDAR depth reaches the model (a capture whose sweep comes too late goes without, by design).
    assert any(any(m.used_depth) for m in got["window"]) == (depth_source == "lidar")

    # /tf: map -> odom is the identity with known poses.
    corrections = [t for m in got["tf"] for t in m.transforms if t.child_frame_id == "odom"]
    assert all(t.header.frame_id == "map" for t in corrections)
    for t in corrections:
        np.testing.assert_allclose(transform_to_matrix(t.transform), np.eye(4), rtol=0, atol=1e-6)

    # ~/<camera>/depth: the true z-depth (truth.check_depth; neither camera is at the model size).
    for cam in CAMERAS:
        for msg in got[cam]:
            assert msg.encoding == "32FC1" and msg.header.frame_id == cam
            assert (msg.width, msg.height) != MODEL_SIZE
            depth = np.frombuffer(msg.data, "<f4").reshape(msg.height, msg.width)
            check_depth(depth, scene.render(cam, stamp_ns(msg.header)).depth_z, exact=False)

    # ~/<camera>/depth_rect with camera_info_rect, read with plain pinhole math as depth_image_proc
    # does: on the true surfaces (the plumb_bob and the equidistant camera alike).
    for cam in CAMERAS:
        infos = {stamp_ns(m.header): m for m in got[f"{cam} info_rect"]}
        for msg in got[f"{cam} rect"]:
            info = infos[stamp_ns(msg.header)]
            assert msg.encoding == "32FC1" and info.distortion_model == "plumb_bob" and not any(info.d)
            assert (info.width, info.height) == (msg.width, msg.height) and info.header.frame_id == cam
            z = np.frombuffer(msg.data, "<f4").reshape(msg.height, msg.width)
            k = np.reshape(info.k, (3, 3))
            v, u = np.mgrid[0:msg.height, 0:msg.width]
            ok = np.isfinite(z)
            assert ok.mean() > 0.8
            points = np.stack([(u - k[0, 2]) / k[0, 0] * z, (v - k[1, 2]) / k[1, 1] * z, z], -1)[ok]
            world = transform_points(scene.world_from_camera(cam, stamp_ns(msg.header)), points.astype(np.float64))
            rel = scene.room.surface_distance(world) / points[:, 2]
            assert np.median(rel) < 0.005 and np.quantile(rel, 0.95) < 0.02

    # ~/points (each window's points) lie on the true surfaces.
    for cloud in got["points"]:
        assert cloud.header.frame_id == "odom"
        points, _ = cloud_to_xyz(cloud)
        assert len(points) > 1000
        check_on_surfaces(scene.room, points, 1e-4)

    # ~/map: the TSDF's zero crossings on the surfaces (its band rounds corners and fills narrow gaps a
    # little even on exact predictions: docs/map.md).
    assert got["map"] and len(cloud_to_xyz(got["map"][-1])[0])
    for cloud in got["map"]:
        assert cloud.header.frame_id == "odom"
        d = scene.room.surface_distance(cloud_to_xyz(cloud)[0].astype(np.float64))
        assert not len(d) or (np.median(d) < 0.005 and np.mean(d < VOXEL / 2) > 0.95), (np.median(d), np.mean(d < 0.025))

    # /diagnostics: the pipeline is OK.
    assert all(s.level == s.OK for s in pipeline_statuses(got)), [(s.level, s.message) for s in pipeline_statuses(got)]


def test_two_instances_in_two_namespaces_stay_apart(ros, tmp_path):
    """Two nodes, /robot1/mapanything and /robot2/mapanything, on one player's cameras (absolute
    camera namespaces), each with its own map frame: their outputs, diagnostics and map -> odom
    frames do not mix (the diagnostics had the same names, both published map -> odom)."""
    node, executor = ros
    got = {}
    subs = []
    for robot in ("robot1", "robot2"):
        subs.append(node.create_subscription(PointCloud2, f"/{robot}/mapanything/points",
                                             lambda msg, r=robot: got.setdefault(r, []).append(msg), 10))
    node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: got.setdefault("diag", []).append(m), 10)
    node.create_subscription(TFMessage, "/tf", lambda m: got.setdefault("tf", []).append(m), TF_QOS)
    env = dict(os.environ)
    procs = []
    for robot in ("robot1", "robot2"):
        path = tmp_path / f"{robot}.yaml"
        path.write_text(f"""/**:
  ros__parameters:
    cameras: [{", ".join("/" + c for c in CAMERAS)}]
    backend: oracle
    oracle_preset: small
    use_sim_time: true
    long_side: 112
    keyframe_interval: 0.25
    tf_output: map_odom
    map_frame: {robot}/map
""")
        procs.append(subprocess.Popen([sys.executable, "-m", "mapanything_ros.ros.node", "--ros-args",
                                       "--params-file", str(path), "-r", f"__ns:=/{robot}"], env=env))
    try:
        assert spin_until(executor, lambda: all(s.get_publisher_count() for s in subs), 40), "nodes not up"
        procs.append(subprocess.Popen([sys.executable, "-m", "mapanything_ros.ros.player", "--preset", "small",
                                       "--duration", "1.5", "--start", "2", "--wait-subscribers", "30",
                                       "--subscribers", "2", "--lidar-rate", "0"], env=env))
        spin_until(executor, lambda: procs[-1].poll() is not None, 40)
        frames = lambda: {(t.header.frame_id, t.child_frame_id) for m in got.get("tf", []) for t in m.transforms}
        spin_until(executor, lambda: got.get("robot1") and got.get("robot2")
                   and {("robot1/map", "odom"), ("robot2/map", "odom")} <= frames(), 15)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert got.get("robot1") and got.get("robot2"), list(got)
    assert {("robot1/map", "odom"), ("robot2/map", "odom")} <= frames() and ("map", "odom") not in frames()
    names = {s.name for m in got["diag"] for s in m.status}
    assert {"/robot1/mapanything: pipeline", "/robot2/mapanything: pipeline"} <= names, names
