"""session.inputs: PendingCaptures (the session's TF wait queue), the checks of a decoded sweep, and
FrameBuilder's LiDAR depth."""

import numpy as np
import pytest

from mapanything_ros.geometry import CameraModel, SourceMotion, project_to_depth, se3_compose, se3_inverse
from mapanything_ros.geometry import depth as depth_module
from mapanything_ros.geometry.tf_tree import ExtrapolationError, TransformNotFound, TransformTree
from mapanything_ros.geometry.transforms import pose_from_quat_trans
from mapanything_ros.session.inputs import MAX_SWEEP_NS, CameraImage, Cloud, FrameBuilder, PendingCaptures
from mapanything_ros.sync import LIDAR_SOURCE, Capture


def test_waits_in_order_expires_and_stays_bounded():
    ready = {"a"}

    def build(cap):
        if cap not in ready:
            raise TransformNotFound(f"no pose for {cap}")
        return cap.upper()

    expired, drops = [], {"queue": 0, "tf_timeout": 0, "other": 5}
    q = PendingCaptures(max_len=3, drops=drops)
    q.push(["a", "b", "c"], now_ns=0)
    assert q.drain(build, 10, timeout_ns=100, on_expired=lambda c, e: expired.append(c)) == [("a", "A")]
    assert len(q) == 2 and not expired  # "b" blocks "c" while it may still get its TF
    q.push(["d", "e"], now_ns=20)  # full: the oldest waiting ("b") is dropped
    assert len(q) == 3 and drops["queue"] == 1
    ready.update({"d", "e"})
    assert q.drain(build, 200, timeout_ns=100, on_expired=lambda c, e: expired.append(c)) == [("d", "D"), ("e", "E")]
    assert expired == ["c"] and drops["tf_timeout"] == 1 and drops["other"] == 5
    q.push(["x"], now_ns=300)
    assert q.drain(build, 300, timeout_ns=100, on_expired=lambda c, e: expired.append(c), final=True) == []
    assert expired == ["c", "x"]
    q.push(["y"], 400)
    q.clear()
    assert len(q) == 0 and drops["queue"] == 2


def test_every_tf_lookup_failure_is_a_wait_not_an_exception():
    """Whatever TransformTree.lookup raises (unknown frame, '/' or empty frame id, negative stamp)
    is a TransformError, which drain treats as "no pose yet"."""
    tree = TransformTree()
    tree.set_transform("map", "cam", 0, np.eye(4), static=True)
    expired = []
    q = PendingCaptures()
    q.push([("cam", 5), ("/cam", 5), ("", 5), ("cam", -1), ("nowhere", 5)], now_ns=0)
    built = q.drain(lambda c: tree.lookup("map", *c), 10, timeout_ns=0, on_expired=lambda c, e: expired.append(c))
    assert [c for c, _ in built] == [("cam", 5)]
    assert expired == [("/cam", 5), ("", 5), ("cam", -1), ("nowhere", 5)]


def test_a_sweep_keeps_plausible_point_times_and_drops_the_others():
    points, stamp = np.zeros((3, 3)), 5_000_000_000
    good = np.array([stamp - 50_000_000, stamp, stamp + 100_000_000])
    cloud, problem = Cloud.checked(points, good, "lidar", stamp)
    assert problem is None and cloud.times is good and cloud.span == (stamp - 50_000_000, stamp + 100_000_000)
    for bad in (good + MAX_SWEEP_NS, np.array([stamp, stamp, -2**62])):
        cloud, problem = Cloud.checked(points, bad, "lidar", stamp)
        assert cloud.times is None and cloud.span == (stamp, stamp) and "from the header stamp" in problem
    cloud, problem = Cloud.checked(points, None, "lidar", stamp)
    assert problem is None and cloud.span == (stamp, stamp)


def test_a_sweep_is_moved_once_for_all_the_cameras_of_a_capture(monkeypatch):
    """FrameBuilder's LiDAR depth: each camera's map is project_to_depth's, motion-compensated at its
    own image stamp (or, without point times, carried at the sweep's stamp), the sweep's points
    are moved into the world once for all the cameras, and every transform is looked up by frames()
    (a missing one is a TransformError there, the TF wait queue's "not yet"), none when the depth is
    resolved."""
    t0, t1, stamps = 1_000_000_000, 1_100_000_000, {"a": 1_040_000_000, "b": 1_060_000_000}
    tree = TransformTree()
    tree.set_transform("map", "lidar", t0, pose_from_quat_trans([0, 0, 0, 1], [0.0, 0.0, 0.0]))
    tree.set_transform("map", "lidar", t1, pose_from_quat_trans([0, 0, np.sin(0.1), np.cos(0.1)], [1.0, 0.0, 0.0]))
    lidar_from = {"a": pose_from_quat_trans([-0.5, 0.5, -0.5, 0.5], [0.1, 0.0, 0.0]),  # optical, looking along x
                  "b": pose_from_quat_trans([-0.5, 0.5, -0.5, 0.5], [0.1, 0.3, 0.0])}
    for cam, pose in lidar_from.items():
        tree.set_transform("lidar", cam, 0, pose, static=True)
    model = CameraModel.pinhole(60.0, 60.0, 39.5, 29.5, 80, 60)
    rng = np.random.default_rng(0)
    points = rng.uniform([2, -3, -1], [9, 3, 1], (4000, 3))
    times = rng.integers(t0, t1 + 1, 4000)
    images = {c: (s, CameraImage(np.zeros((60, 80, 3), np.uint8), model, c, s, c)) for c, s in stamps.items()}
    values = {"world_frame": "map", "use_poses": True, "use_depth": True, "depth_source": "lidar"}
    calls = []
    compensate = depth_module._compensate
    monkeypatch.setattr(depth_module, "_compensate", lambda *a: calls.append(1) or compensate(*a))
    tf_open = [True]

    def lookup(*args):  # TF answers while frames() runs, not when the depth is resolved later
        if not tf_open[0]:
            raise TransformNotFound("looked up after frames()")
        return tree.lookup(*args)

    builder = FrameBuilder(lookup)
    cloud = Cloud(points, times, "lidar", 1_050_000_000)
    frames, problems = builder.frames(Capture(1_050_000_000, images, {LIDAR_SOURCE: (1_050_000_000, cloud)}), values)
    assert not problems and not calls  # deferred: nothing projected yet
    tf_open[0] = False
    motion = {c: SourceMotion(t0, tree.lookup("map", "lidar", t0), t1, tree.lookup("map", "lidar", t1), s,
                              extrapolate=True) for c, s in stamps.items()}
    for frame in frames:
        want = project_to_depth(points, tree.lookup(frame.frame_id, "lidar", frame.stamp_ns), model, times=times,
                                motion=motion[frame.frame_id])
        np.testing.assert_array_equal(frame.resolved().sparse_depth, want)
        assert (want > 0).sum() > 200
    assert len(calls) == 1 + len(frames)  # one for the sweep, one for each reference projection
    still = Cloud(points, None, "lidar", 1_050_000_000)
    tf_open[0] = True
    frames, _ = builder.frames(Capture(1_050_000_000, images, {LIDAR_SOURCE: (1_050_000_000, still)}), values)
    tf_open[0] = False
    for frame in frames:
        cam_from_lidar = se3_compose(se3_inverse(tree.lookup("map", frame.frame_id, frame.stamp_ns)),
                                     tree.lookup("map", "lidar", 1_050_000_000))
        np.testing.assert_array_equal(frame.resolved().sparse_depth, project_to_depth(points, cam_from_lidar, model))


def test_a_capture_waiting_for_its_sweeps_end_costs_one_lookup_a_try():
    """A capture is tried again at every input callback while it waits for TF; the sweep's end,
    the latest stamp it needs, is looked up first, so each try stops at its first lookup."""
    t0, t1 = 1_000_000_000, 1_100_000_000
    tree = TransformTree()
    tree.set_transform("map", "lidar", t0, np.eye(4))
    tree.set_transform("lidar", "cam", 0, np.eye(4), static=True)
    model = CameraModel.pinhole(60.0, 60.0, 39.5, 29.5, 80, 60)
    images = {"cam": (t0, CameraImage(np.zeros((60, 80, 3), np.uint8), model, "cam", t0, "cam"))}
    cloud = Cloud(np.ones((5, 3)), np.linspace(t0, t1, 5).astype(np.int64), "lidar", t0)
    values = {"world_frame": "map", "use_poses": True, "use_depth": True, "depth_source": "lidar"}
    stamps = []
    builder = FrameBuilder(lambda *args: stamps.append(args[2]) or tree.lookup(*args))
    with pytest.raises(ExtrapolationError):
        builder.frames(Capture(t0, images, {LIDAR_SOURCE: (t0, cloud)}), values)
    assert stamps == [t1]
