"""TransformTree: tf2's lookup semantics on a pure numpy tree (no ROS)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapanything_ros.geometry.tf_tree import (
    LATEST,
    ConnectivityError,
    ExtrapolationError,
    TransformError,
    TransformNotFound,
    TransformTree,
)
from mapanything_ros.geometry.transforms import interpolate_pose, pose_from_quat_trans, quat_normalize, se3_inverse

SEC = 1_000_000_000
FAST = settings(max_examples=40, deadline=None)
unit = st.floats(-1.0, 1.0, allow_nan=False)
quats = st.tuples(unit, unit, unit, unit).filter(lambda q: np.linalg.norm(q) > 0.1).map(quat_normalize)
vec3 = st.tuples(*[st.floats(-20, 20, allow_nan=False)] * 3).map(np.array)
poses = st.builds(pose_from_quat_trans, quats, vec3)


def yaw(angle, xyz=(0.0, 0.0, 0.0)):
    return pose_from_quat_trans([0.0, 0.0, np.sin(angle / 2), np.cos(angle / 2)], xyz)


@st.composite
def trees(draw):
    """A random tree of frames f0..fn: each dynamic edge has samples covering [1 s, 3 s]."""
    n = draw(st.integers(2, 6))
    tree, samples = TransformTree(max_history_s=100.0), {}
    for i in range(1, n):
        parent, child = f"f{draw(st.integers(0, i - 1))}", f"f{i}"
        if draw(st.booleans()):
            samples[child] = (parent, {0: draw(poses)})
            tree.set_transform(parent, child, 0, samples[child][1][0], static=True)
            continue
        inner = draw(st.lists(st.integers(SEC + 1, 3 * SEC - 1), max_size=4, unique=True))
        stamps = draw(st.permutations([SEC, 3 * SEC] + inner))  # inserted in any order
        samples[child] = (parent, {s: draw(poses) for s in stamps})
        for s in stamps:
            assert tree.set_transform(parent, child, s, samples[child][1][s])
    return tree, n, samples


frame_triples = st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5))


@FAST
@given(trees(), frame_triples, st.integers(SEC, 3 * SEC))
def test_chains_compose_and_inverse_lookups_invert(built, ids, stamp):
    tree, n, _ = built
    a, b, c = (f"f{i % n}" for i in ids)
    a_from_c = tree.lookup(a, c, stamp)
    assert np.allclose(a_from_c, tree.lookup(a, b, stamp) @ tree.lookup(b, c, stamp), atol=1e-9)
    assert np.allclose(a_from_c @ tree.lookup(c, a, stamp), np.eye(4), atol=1e-9)
    assert np.array_equal(tree.lookup(a, a, stamp), np.eye(4))


@FAST
@given(trees())
def test_lookup_at_a_sample_stamp_is_exactly_the_sample(built):
    tree, _, samples = built
    for child, (parent, by_stamp) in samples.items():
        for stamp, pose in by_stamp.items():
            assert np.array_equal(tree.lookup(parent, child, stamp), pose)


@FAST
@given(poses, poses, st.integers(1, 10**9 - 1))
def test_between_samples_is_slerp_and_linear(pose0, pose1, offset):
    tree = TransformTree()
    tree.set_transform("odom", "base", 5 * SEC, pose0)
    tree.set_transform("odom", "base", 6 * SEC, pose1)
    stamp = 5 * SEC + offset
    expected = interpolate_pose(stamp, 5 * SEC, pose0, 6 * SEC, pose1)
    assert np.allclose(tree.lookup("odom", "base", stamp), expected, atol=1e-12)


def test_midpoint_of_a_quarter_turn():
    tree = TransformTree()
    tree.set_transform("odom", "base", 1 * SEC, yaw(0.0))
    tree.set_transform("odom", "base", 3 * SEC, yaw(np.pi / 2, (2.0, 4.0, 0.0)))
    assert np.allclose(tree.lookup("odom", "base", 2 * SEC), yaw(np.pi / 4, (1.0, 2.0, 0.0)), atol=1e-12)


def test_static_and_dynamic_chain_equals_the_composition():
    tree = TransformTree()
    base_from_cam, base_from_lidar = yaw(0.3, (0.1, 0.0, 0.5)), yaw(-1.0, (0.0, 0.2, 0.8))
    tree.set_transform("base", "cam", 0, base_from_cam, static=True)
    tree.set_transform("base", "lidar", 0, base_from_lidar, static=True)
    tree.set_transform("map", "odom", 0, yaw(0.1, (5.0, 0.0, 0.0)), static=True)
    tree.set_transform("odom", "base", 2 * SEC, yaw(0.7, (1.0, 2.0, 0.0)))
    tree.set_transform("odom", "base", 4 * SEC, yaw(0.9, (1.5, 2.0, 0.0)))
    expected = yaw(0.1, (5.0, 0.0, 0.0)) @ yaw(0.7, (1.0, 2.0, 0.0)) @ base_from_cam
    assert np.allclose(tree.lookup("map", "cam", 2 * SEC), expected, atol=1e-12)
    # Static-only paths hold at any time, including outside every dynamic edge's range.
    cam_from_lidar = se3_inverse(base_from_cam) @ base_from_lidar
    for stamp in (LATEST, 1, 100 * SEC):
        assert np.allclose(tree.lookup("cam", "lidar", stamp), cam_from_lidar, atol=1e-12)


def test_latest_is_the_newest_time_common_to_the_path():
    tree = TransformTree()
    for s in (1, 2, 3):
        tree.set_transform("odom", "base", s * SEC, yaw(0.0, (s, 0.0, 0.0)))
    for s in (1, 2):
        tree.set_transform("base", "arm", s * SEC, yaw(0.0, (0.0, s, 0.0)))
    tree.set_transform("base", "cam", 0, yaw(0.2), static=True)
    assert np.allclose(tree.lookup("odom", "base", LATEST)[:3, 3], [3, 0, 0])
    assert np.allclose(tree.lookup("odom", "arm", LATEST)[:3, 3], [2, 2, 0])  # arm ends at 2 s
    assert np.allclose(tree.lookup("base", "cam", LATEST), yaw(0.2))


def test_extrapolation_says_which_way_and_how_far():
    tree = TransformTree()
    tree.set_transform("odom", "base", 2 * SEC, np.eye(4))
    tree.set_transform("odom", "base", 3 * SEC, np.eye(4))
    with pytest.raises(ExtrapolationError, match=r"0\.500000000 s into the future"):
        tree.lookup("odom", "base", 3 * SEC + SEC // 2)
    with pytest.raises(ExtrapolationError, match=r"0\.250000000 s into the past"):
        tree.lookup("base", "odom", 2 * SEC - SEC // 4)
    assert not tree.can_transform("odom", "base", 4 * SEC)
    assert tree.can_transform("odom", "base", 2 * SEC + 1)


def test_a_single_sample_only_answers_at_its_own_stamp():
    tree = TransformTree()
    tree.set_transform("odom", "base", 2 * SEC, yaw(0.4))
    assert np.array_equal(tree.lookup("odom", "base", 2 * SEC), yaw(0.4))
    assert np.array_equal(tree.lookup("odom", "base", LATEST), yaw(0.4))
    with pytest.raises(ExtrapolationError):
        tree.lookup("odom", "base", 2 * SEC + 1)


def test_history_is_bounded_per_edge():
    tree = TransformTree(max_history_s=1.0)
    step = SEC // 10
    for i in range(100):  # 10 s at 10 Hz: many more samples than the initial arrays hold
        assert tree.set_transform("odom", "base", i * step, yaw(0.0, (i, 0.0, 0.0)))
    newest = 99 * step
    assert np.allclose(tree.lookup("odom", "base", newest - SEC)[:3, 3], [89, 0, 0])
    with pytest.raises(ExtrapolationError, match="past"):
        tree.lookup("odom", "base", newest - SEC - 1)
    assert not tree.set_transform("odom", "base", newest - SEC - 1, np.eye(4))  # too old: ignored
    assert not tree.set_transform("odom", "base", newest, np.eye(4))  # repeated stamp: first kept
    assert np.allclose(tree.lookup("odom", "base", newest)[:3, 3], [99, 0, 0])
    edge = tree._edges["base"]
    assert edge.hi - edge.lo == 11 and len(edge.stamps) <= 32


def test_late_samples_inside_the_history_are_merged_in_order():
    tree = TransformTree()
    for s in (1, 4, 2, 3):
        tree.set_transform("odom", "base", s * SEC, yaw(0.0, (s, 0.0, 0.0)))
    assert np.allclose(tree.lookup("odom", "base", 2 * SEC + SEC // 2)[:3, 3], [2.5, 0, 0])


def test_unknown_and_disconnected_frames():
    tree = TransformTree()
    tree.set_transform("map", "odom", 0, np.eye(4), static=True)
    tree.set_transform("world", "robot2", 0, np.eye(4), static=True)
    with pytest.raises(TransformNotFound, match="'nowhere'"):
        tree.lookup("map", "nowhere", LATEST)
    with pytest.raises(ConnectivityError):
        tree.lookup("odom", "robot2", LATEST)
    for error in (TransformNotFound, ConnectivityError, ExtrapolationError):
        assert issubclass(error, TransformError) and issubclass(error, LookupError)


@pytest.mark.parametrize(
    "parent, child, pose, static, message",
    [
        ("base", "cam", np.eye(4), False, "already has parent"),  # a second parent
        ("cam", "odom", np.eye(4), False, "loop"),
        ("odom", "base", np.eye(4), True, "already dynamic"),
        ("odom", "odom", np.eye(4), False, "own parent"),
        ("odom", "", np.eye(4), False, "non-empty"),
        ("odom", "base", np.full((4, 4), np.nan), False, "finite"),
        ("odom", "base", np.eye(3), False, "4x4"),
    ],
)
def test_invalid_transforms_are_refused(parent, child, pose, static, message):
    tree = TransformTree()
    tree.set_transform("odom", "base", SEC, np.eye(4))
    tree.set_transform("odom2", "cam", 0, np.eye(4), static=True)
    tree.set_transform("base", "odom2", SEC, np.eye(4))
    with pytest.raises(ValueError, match=message):
        tree.set_transform(parent, child, 2 * SEC, pose, static=static)


def test_clear_forgets_dynamic_and_keeps_static():
    tree = TransformTree()
    tree.set_transform("odom", "base", SEC, np.eye(4))
    tree.set_transform("base", "cam", 0, yaw(0.5), static=True)
    tree.clear()
    assert not tree.has_frame("odom")
    assert np.allclose(tree.lookup("base", "cam", 5 * SEC), yaw(0.5))
    tree.set_transform("odom", "base", 0, np.eye(4))  # time restarted: accepted again
    assert tree.can_transform("odom", "cam", LATEST)
