"""Frame validation, the keyframe policy and the sliding Window."""

import logging

import numpy as np
import pytest

from mapanything_ros.geometry import CameraModel
from mapanything_ros.synthetic.trajectory import rotation_zyx
from mapanything_ros.window import Frame, KeyframePolicy, MotionRate, Window, motion

CAM = CameraModel.pinhole(10.0, 10.0, 4.0, 3.0, 8, 6)
SEC = 1_000_000_000


def pose(x=0.0, yaw=0.0):
    p = np.eye(4)
    p[:3, :3] = rotation_zyx(np.float64(yaw), np.float64(0.0), np.float64(0.0))
    p[0, 3] = x
    return p


def frame(stamp, x=0.0, yaw=0.0, name="cam0", known=True):
    return Frame(np.zeros((6, 8, 3), np.uint8), CAM, stamp, name, pose(x, yaw) if known else None)


def test_frame_validates_shapes():
    with pytest.raises(ValueError, match="image"):
        Frame(np.zeros((5, 8, 3), np.uint8), CAM, 0, "cam0")
    with pytest.raises(ValueError, match="sparse_depth"):
        Frame(np.zeros((6, 8, 3), np.uint8), CAM, 0, "cam0", sparse_depth=np.zeros((6, 7), np.float32))
    with pytest.raises(ValueError, match="4x4"):
        Frame(np.zeros((6, 8, 3), np.uint8), CAM, 0, "cam0", world_from_camera=np.eye(3))
    assert frame(5).key == ("cam0", 5)


def test_motion_measures_translation_and_rotation():
    moved, turned = motion(pose(1.0, 0.3), pose(1.5, -0.2))
    assert moved == pytest.approx(0.5) and turned == pytest.approx(0.5)


@pytest.mark.parametrize("later, why", [
    (frame(SEC // 10, x=0.25), "moved"),
    (frame(SEC // 10, yaw=0.25), "turned"),
    (frame(2 * SEC), "elapsed"),
    (frame(SEC // 10, x=5.0, known=False), None),  # no pose: only time counts
    (frame(SEC // 10, x=0.1, yaw=0.1), None),
])
def test_policy_thresholds(later, why):
    reason = KeyframePolicy(translation_m=0.2, rotation_rad=0.2, elapsed_s=1.0).reason([frame(0)], [later])
    assert (reason is None) if why is None else (why in reason)


def test_motion_rate_is_taken_between_the_main_cameras_of_the_two_newest_captures():
    # Window.views order: the reference (newest) capture first, then oldest to newest; a second
    # camera of each capture (its own pose, far off) is not the main camera.
    frames = [frame(2 * SEC), frame(2 * SEC, name="cam1"), frame(0), frame(0, name="cam1"),
              frame(SEC), frame(SEC, name="cam1")]
    poses = [pose(1.0, 0.3), pose(9.0), pose(0.0), pose(9.0), pose(0.5, 0.1), pose(9.0)]
    rate = MotionRate.of(frames, poses)
    assert rate.speed == pytest.approx(0.5) and rate.turn == pytest.approx(0.2)
    assert MotionRate.of(frames[:2], poses[:2]) is None  # one capture: no rate
    # the capture before lacks the newest capture's main camera: no rate (not the rig's baseline)
    assert MotionRate.of([frames[0], frames[5]], [poses[0], poses[5]]) is None


@pytest.mark.parametrize("rate, later, why", [
    (MotionRate(0.5, 0.0), frame(SEC // 2, known=False), "moved about 0.250 m"),
    (MotionRate(0.0, 0.5), frame(SEC // 2, known=False), "turned about 0.250 rad"),
    (MotionRate(0.5, 0.5), frame(SEC // 4, known=False), None),  # 0.125 m, 0.125 rad
    (MotionRate(5.0, 5.0), frame(SEC // 2), None),  # a pose is known: it is measured, not estimated
    (None, frame(SEC // 2, known=False), None),
])
def test_captures_without_a_pose_are_admitted_by_the_estimated_motion(rate, later, why):
    reason = KeyframePolicy(translation_m=0.2, rotation_rad=0.2, elapsed_s=1.0).reason(
        [frame(0, known=False)], [later], rate)
    assert (reason is None) if why is None else (why in reason)


def test_window_keeps_newest_keyframes_and_evicts_oldest():
    win = Window(max_keyframes=3, policy=KeyframePolicy(translation_m=0.2))
    admitted = [win.add(frame(i * SEC // 10, x=0.15 * i)).admitted for i in range(10)]
    # Keyframes at x = 0, 0.3, 0.6, ... (every second frame moves 0.3 m > 0.2 m).
    assert admitted == [True, False] * 5
    assert [f.stamp_ns for f in win.views()] == [8 * SEC // 10, 4 * SEC // 10, 6 * SEC // 10]
    win.reference = "oldest"
    assert [f.stamp_ns for f in win.views()] == [4 * SEC // 10, 6 * SEC // 10, 8 * SEC // 10]


def test_capture_of_several_cameras_enters_together():
    win = Window(max_keyframes=2)
    assert win.add([frame(0, name="front"), frame(0, name="fisheye")]).admitted
    assert not win.add([frame(SEC // 10, name="front"), frame(SEC // 10, name="fisheye")]).admitted
    assert win.add([frame(SEC // 5, x=1.0, name="front"), frame(SEC // 5, x=1.0, name="fisheye")]).admitted
    assert [(f.frame_id, f.stamp_ns) for f in win.views()] == [
        ("front", SEC // 5), ("fisheye", SEC // 5), ("front", 0), ("fisheye", 0)]
    with pytest.raises(ValueError, match="one stamp"):
        win.add([frame(SEC, name="front"), frame(SEC + 1, name="fisheye")])
    with pytest.raises(ValueError, match="repeat"):
        win.add([frame(SEC), frame(SEC)])


def test_same_stamp_as_newest_keyframe_is_refused():
    win = Window()
    win.add(frame(SEC))
    result = win.add(frame(SEC, x=3.0))
    assert not result.admitted and "same stamp" in result.reason and len(win) == 1


def test_time_going_backwards_resets_with_reason(caplog):
    win = Window()
    for i in range(4):
        win.add(frame(i * SEC, x=float(i)))
    win.rate = MotionRate(1.0, 0.0)  # the motion of the last window is forgotten with it
    assert len(win) == 4
    with caplog.at_level(logging.WARNING, logger="mapanything_ros.window.window"):
        result = win.add(frame(SEC // 2))
    assert result.admitted and result.reason == "first keyframe"
    assert "backwards" in result.reset and "backwards" in caplog.text and win.rate is None
    assert [f.stamp_ns for f in win.views()] == [SEC // 2]


def test_window_rejects_bad_parameters():
    with pytest.raises(ValueError):
        Window(max_keyframes=0)
    with pytest.raises(ValueError):
        Window(reference="middle")


def test_adding_never_runs_deferred_work():
    """Window.add decides on stamps and poses alone: deferred images and depth are left for the
    pipeline's worker (window.prepare), and a frame whose deferred depth does not fit fails there."""
    calls = []

    def depth():
        calls.append(1)
        return np.ones((6, 8), np.float32)

    def image():
        calls.append(2)
        return np.zeros((6, 8, 3), np.uint8)

    win = Window(max_keyframes=4, policy=KeyframePolicy(translation_m=1.0, rotation_rad=1.0, elapsed_s=10.0))
    first = Frame(image, CAM, SEC, "cam0", pose(), depth)
    still = Frame(image, CAM, 2 * SEC, "cam0", pose(0.1), depth)
    assert win.add(first).admitted and not win.add(still).admitted and calls == []
    resolved = win.views()[0].resolved()
    assert resolved.image.shape == (6, 8, 3) and resolved.sparse_depth.shape == (6, 8) and sorted(calls) == [1, 2]
    bad = Frame(image, CAM, 3 * SEC, "cam0", pose(5.0), lambda: np.ones((5, 8), np.float32))
    assert win.add(bad).admitted
    with pytest.raises(ValueError, match="sparse_depth"):
        bad.resolved()
    assert win.discard(bad.key) and len(win) == 1 and not win.discard(bad.key)
