"""TransformTree: ROS 2 tf2's lookup semantics on a pure numpy tree (no ROS; test_tf2_conformance
compares it with tf2_ros itself)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapanything_ros.geometry.tf_tree import (
    LATEST,
    ConnectivityError,
    ExtrapolationError,
    InvalidArgument,
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


def test_history_is_pruned_before_each_insert():
    tree = TransformTree(max_history_s=1.0)
    step = SEC // 10
    for i in range(100):  # 10 s at 10 Hz
        assert tree.set_transform("odom", "base", i * step, yaw(0.0, (i, 0.0, 0.0)))
    # Pruning is relative to the newest stamp before the insert (98 * step): 88 * step is kept.
    assert np.allclose(tree.lookup("odom", "base", 88 * step)[:3, 3], [88, 0, 0])
    with pytest.raises(ExtrapolationError, match="past"):
        tree.lookup("odom", "base", 88 * step - 1)
    assert not tree.set_transform("odom", "base", 89 * step - 1, np.eye(4))  # too old: refused
    with pytest.raises(ExtrapolationError, match="past"):  # ... but it pruned up to 89 * step
        tree.lookup("odom", "base", 88 * step)
    assert len(tree._frames["base"].stamps) == 11


def test_a_repeated_stamp_keeps_both_and_the_later_answers():
    tree = TransformTree()
    for s, x in ((1, 1.0), (2, 2.0), (2, 5.0), (3, 3.0), (3, 7.0)):
        assert tree.set_transform("odom", "base", s * SEC, yaw(0.0, (x, 0.0, 0.0)))
    assert tree.lookup("odom", "base", 2 * SEC)[0, 3] == 5.0  # an inner stamp: the later sample
    assert tree.lookup("odom", "base", 3 * SEC)[0, 3] == 7.0  # the newest stamp: the later sample
    assert np.isclose(tree.lookup("odom", "base", 2 * SEC + SEC // 2)[0, 3], 4.0)  # from 5 to the earlier 3
    tree.set_transform("odom", "base", 1 * SEC, yaw(0.0, (9.0, 0.0, 0.0)))
    assert tree.lookup("odom", "base", 1 * SEC)[0, 3] == 1.0  # the oldest stamp: the earlier sample


def test_a_frame_follows_its_newest_parent():
    tree = TransformTree()
    tree.set_transform("a", "c", 1 * SEC, yaw(0.0, (1.0, 0.0, 0.0)))
    tree.set_transform("a", "c", 2 * SEC, yaw(0.0, (2.0, 0.0, 0.0)))
    tree.set_transform("b", "c", 3 * SEC, yaw(0.0, (3.0, 0.0, 0.0)))
    assert tree.lookup("b", "c", LATEST)[0, 3] == 3.0
    assert tree.lookup("a", "c", 1 * SEC + SEC // 2)[0, 3] == 1.5
    # between samples of different parents: the older sample, not interpolated
    assert tree.lookup("a", "c", 2 * SEC + SEC // 2)[0, 3] == 2.0
    with pytest.raises(ConnectivityError):
        tree.lookup("b", "c", 2 * SEC)


def test_static_and_dynamic_replace_each_other():
    tree = TransformTree()
    tree.set_transform("odom", "base", 1 * SEC, yaw(0.0, (1.0, 0.0, 0.0)))
    tree.set_transform("odom", "base", 0, yaw(0.0, (5.0, 0.0, 0.0)), static=True)
    assert tree.lookup("odom", "base", 100 * SEC)[0, 3] == 5.0
    tree.set_transform("odom", "base", 2 * SEC, yaw(0.0, (2.0, 0.0, 0.0)))
    assert tree.lookup("odom", "base", LATEST)[0, 3] == 2.0
    with pytest.raises(ExtrapolationError):
        tree.lookup("odom", "base", 1 * SEC)  # the history before the static value is gone


def test_frame_ids_lose_one_leading_slash_and_lookups_refuse_it():
    tree = TransformTree()
    tree.set_transform("/map", "/odom", 0, yaw(0.3), static=True)
    assert np.allclose(tree.lookup("map", "odom", LATEST), yaw(0.3))
    for target, source in (("/map", "odom"), ("map", ""), ("", "odom")):
        with pytest.raises(InvalidArgument):
            tree.lookup(target, source, LATEST)
    with pytest.raises(InvalidArgument):
        tree.lookup("map", "odom", -1)


def test_a_frame_against_itself_is_the_identity_even_when_unknown():
    tree = TransformTree()
    assert np.array_equal(tree.lookup("cam", "cam", 5 * SEC), np.eye(4))
    with pytest.raises(TransformNotFound):
        tree.lookup("cam", "map", LATEST)


def test_a_loop_is_accepted_and_reported_by_lookups_that_go_round_it():
    tree = TransformTree()
    tree.set_transform("a", "b", 0, yaw(0.1), static=True)
    tree.set_transform("b", "c", 0, yaw(0.2), static=True)
    tree.set_transform("c", "a", 0, yaw(0.3), static=True)  # closes a loop: accepted
    tree.set_transform("x", "y", 0, yaw(0.4), static=True)
    assert np.allclose(tree.lookup("a", "c", LATEST), yaw(0.3))  # the walk from c meets a at once
    with pytest.raises(TransformNotFound, match="loop"):
        tree.lookup("x", "a", LATEST)


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
    for error in (TransformNotFound, ConnectivityError, ExtrapolationError, InvalidArgument):
        assert issubclass(error, TransformError) and issubclass(error, LookupError)


@pytest.mark.parametrize(
    "parent, child, pose, message",
    [
        ("odom", "odom", np.eye(4), "own parent"),
        ("/odom", "odom", np.eye(4), "own parent"),
        ("odom", "", np.eye(4), "non-empty"),
        ("odom", "/", np.eye(4), "non-empty"),
        ("odom", "base", np.full((4, 4), np.nan), "finite"),
        ("odom", "base", np.eye(3), "4x4"),
    ],
)
def test_invalid_transforms_are_refused(parent, child, pose, message):
    tree = TransformTree()
    with pytest.raises(ValueError, match=message):
        tree.set_transform(parent, child, 2 * SEC, pose)
    assert not tree.has_frame("odom")


def test_clear_forgets_dynamic_and_keeps_static():
    tree = TransformTree()
    tree.set_transform("odom", "base", SEC, np.eye(4))
    tree.set_transform("base", "cam", 0, yaw(0.5), static=True)
    tree.clear()
    assert tree.has_frame("odom")  # frames stay known, without data
    with pytest.raises(ExtrapolationError):
        tree.lookup("odom", "base", SEC)
    assert np.allclose(tree.lookup("base", "cam", 5 * SEC), yaw(0.5))
    tree.set_transform("odom", "base", 0, np.eye(4))  # time restarted: accepted again
    assert tree.can_transform("odom", "cam", LATEST)
