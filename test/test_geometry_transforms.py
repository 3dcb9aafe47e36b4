"""SE(3) and quaternion helpers: hypothesis properties and the MapAnything fixture convention."""

import glob
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapanything_ros.geometry.transforms import (
    interpolate_pose,
    matrix_to_quat,
    pose_from_quat_trans,
    quat_angle,
    quat_canonical,
    quat_inverse,
    quat_multiply,
    quat_normalize,
    quat_to_matrix,
    quat_trans_from_pose,
    relative_pose,
    se3_compose,
    se3_inverse,
    slerp,
    transform_points,
)
from model_fixtures import TINY, needs_fixtures

FAST = settings(max_examples=60, deadline=None)
finite = st.floats(-1.0, 1.0, allow_nan=False)
quats = st.tuples(finite, finite, finite, finite).filter(lambda q: np.linalg.norm(q) > 0.1).map(quat_normalize)
vec3 = st.tuples(*[st.floats(-50, 50, allow_nan=False)] * 3).map(np.array)
poses = st.builds(pose_from_quat_trans, quats, vec3)
fractions = st.floats(0.0, 1.0)


def rotation_about(axis, angle):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    return np.append(axis * np.sin(angle / 2), np.cos(angle / 2))


@FAST
@given(quats)
def test_quat_matrix_round_trip(q):
    r = quat_to_matrix(q)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    back = matrix_to_quat(r)
    assert back[3] >= 0
    assert quat_angle(back, q) < 1e-7
    if abs(q[3]) > 1e-9:
        np.testing.assert_allclose(back, quat_canonical(q), atol=1e-12)


def converted(q):
    """quat_to_matrix(q), or the ValueError's message."""
    try:
        return quat_to_matrix(q)
    except ValueError as err:
        return str(err)


@FAST
@given(st.tuples(*[st.floats(allow_subnormal=True)] * 4))
def test_one_quaternion_converts_as_a_batch(q):
    """One quaternion (a TF message's, converted in floats) gives the batch's matrix to the bit, or
    its ValueError, for any float64: unnormalised, subnormal, huge, inf, NaN."""
    with np.errstate(over="ignore", invalid="ignore"):
        one, batch = converted(q), converted(np.array([q]))
    if isinstance(one, str):
        assert one == batch
    else:
        np.testing.assert_array_equal(one, batch[0])


@pytest.mark.parametrize("q", [(0, 0, 0, 0), (np.nan, 0, 0, 1), (np.inf, 0, 0, 1), (1e-13, 0, 0, 0)])
def test_degenerate_quaternions_are_refused_one_or_batched(q):
    for batch in (q, [q, (0, 0, 0, 1)]):
        with pytest.raises(ValueError, match="zero or non-finite norm"):
            quat_to_matrix(batch)
    np.testing.assert_array_equal(quat_to_matrix((0, 0, 2e-12, 0)), quat_to_matrix([(0, 0, 2e-12, 0)])[0])


@FAST
@given(quats)
def test_double_cover(q):
    np.testing.assert_allclose(quat_to_matrix(-q), quat_to_matrix(q), atol=1e-15)
    np.testing.assert_allclose(matrix_to_quat(quat_to_matrix(-q)), matrix_to_quat(quat_to_matrix(q)), atol=1e-15)


def test_matrix_to_quat_near_half_turns():
    """Shepperd pivoting keeps full precision where the trace is close to -1."""
    for axis in np.eye(3).tolist() + [[1, 1, 0], [1, -2, 3]]:
        for angle in (np.pi, np.pi - 1e-9, np.pi - 1e-4, 1e-9):
            q = rotation_about(axis, angle)
            np.testing.assert_allclose(matrix_to_quat(quat_to_matrix(q)), quat_canonical(q), atol=1e-12)


def test_pose_stack_converts_as_one_by_one():
    """window.batch.assemble converts a window's poses in one call: each gives the same bits as alone."""
    rng = np.random.default_rng(3)
    qs = [rotation_about(axis, angle) for axis in np.eye(3).tolist() + [[1, -2, 3]] for angle in (np.pi, 1e-9, 2.0)]
    qs += list(rng.normal(size=(40, 4)))
    poses = np.stack([pose_from_quat_trans(q, t) for q, t in zip(qs, rng.normal(size=(len(qs), 3)))])
    quats, trans = quat_trans_from_pose(poses)
    for pose, q, t in zip(poses, quats, trans):
        alone = quat_trans_from_pose(pose)
        assert q.tobytes() == alone[0].tobytes() and t.tobytes() == alone[1].tobytes()


@FAST
@given(quats, quats, vec3)
def test_quat_multiply_is_matrix_product(a, b, v):
    np.testing.assert_allclose(quat_to_matrix(quat_multiply(a, b)), quat_to_matrix(a) @ quat_to_matrix(b), atol=1e-12)
    np.testing.assert_allclose(quat_multiply(a, quat_inverse(a)), [0, 0, 0, 1], atol=1e-12)
    # Hamilton convention: i * j = k.
    np.testing.assert_array_equal(quat_multiply([1, 0, 0, 0], [0, 1, 0, 0]), [0, 0, 1, 0])


@FAST
@given(poses, vec3)
def test_se3_inverse(p, x):
    np.testing.assert_allclose(se3_compose(p, se3_inverse(p)), np.eye(4), atol=1e-12)
    y = transform_points(p, x[None])
    np.testing.assert_allclose(transform_points(se3_inverse(p), y)[0], x, atol=1e-10)


@FAST
@given(poses, poses, poses)
def test_se3_compose_associative(a, b, c):
    np.testing.assert_allclose(se3_compose(se3_compose(a, b), c), se3_compose(a, se3_compose(b, c)), atol=1e-9)
    np.testing.assert_allclose(se3_compose(a, b, c), a @ b @ c, atol=1e-9)


@FAST
@given(poses, poses)
def test_relative_pose(ref, cam):
    rel = relative_pose(ref, cam)
    np.testing.assert_allclose(se3_compose(ref, rel), cam, atol=1e-9)
    np.testing.assert_allclose(relative_pose(ref, ref), np.eye(4), atol=1e-12)


@FAST
@given(quats, quats, fractions)
def test_slerp_endpoints_norm_and_constant_speed(q0, q1, t):
    np.testing.assert_allclose(slerp(q0, q1, 0.0), quat_canonical(q0), atol=1e-9)
    assert quat_angle(slerp(q0, q1, 1.0), q1) < 1e-6
    qt = slerp(q0, q1, t)
    assert np.linalg.norm(qt) == pytest.approx(1.0)
    total = quat_angle(q0, q1)
    assert quat_angle(q0, qt) == pytest.approx(t * total, abs=1e-6)
    assert quat_angle(qt, q1) == pytest.approx((1 - t) * total, abs=1e-6)
    np.testing.assert_allclose(slerp(q0, -q1, t), qt, atol=1e-9)  # takes the short arc either way


def test_slerp_is_batched():
    q0 = np.array([0, 0, 0, 1.0])
    q1 = rotation_about([0, 0, 1], 1.2)
    t = np.linspace(0, 1, 7)
    out = slerp(q0, q1, t)
    np.testing.assert_allclose(out, [rotation_about([0, 0, 1], 1.2 * s) for s in t], atol=1e-12)


def test_interpolate_pose():
    p0 = pose_from_quat_trans([0, 0, 0, 1], [0, 0, 0])
    p1 = pose_from_quat_trans(rotation_about([0, 1, 0], 0.4), [2.0, 0, -1.0])
    t0, t1 = 1_700_000_000_000_000_000, 1_700_000_000_100_000_000
    mid = interpolate_pose(t0 + 25_000_000, t0, p0, t1, p1)
    np.testing.assert_allclose(mid, pose_from_quat_trans(rotation_about([0, 1, 0], 0.1), [0.5, 0, -0.25]), atol=1e-12)
    batch = interpolate_pose(np.array([t0, t1]), t0, p0, t1, p1)
    np.testing.assert_allclose(batch, [p0, p1], atol=1e-12)
    with pytest.raises(ValueError, match="outside"):
        interpolate_pose(t1 + 1, t0, p0, t1, p1)
    ext = interpolate_pose(t1 + 100_000_000, t0, p0, t1, p1, extrapolate=True)
    np.testing.assert_allclose(ext, pose_from_quat_trans(rotation_about([0, 1, 0], 0.8), [4.0, 0, -2.0]), atol=1e-12)
    np.testing.assert_allclose(interpolate_pose(t0, t0, p0, t0, p0), p0)
    with pytest.raises(ValueError):
        interpolate_pose(t0 + 1, t0, p0, t0, p0, extrapolate=True)


@needs_fixtures
def test_fixture_pose_quaternions_are_xyzw_of_cam2world():
    """MapAnything's camera_pose_quats/trans equal (matrix_to_quat(R), t) of the cam2world matrix."""
    checked = 0
    for path in sorted(glob.glob(str(TINY / "cases" / "c*.npz"))):
        case = np.load(path)
        for i in range(json.loads(str(case["__meta__"]))["num_views"]):
            if f"view{i}.camera_pose_quats" not in case:
                continue
            pose = case[f"aux.view{i}.camera_pose_cam2world"].astype(np.float64)
            q, t = quat_trans_from_pose(pose)
            np.testing.assert_allclose(case[f"view{i}.camera_pose_quats"], q, atol=2e-6)
            np.testing.assert_allclose(case[f"view{i}.camera_pose_trans"], t, atol=1e-6)
            np.testing.assert_allclose(quat_to_matrix(case[f"view{i}.camera_pose_quats"]), pose[:, :3, :3], atol=2e-6)
            checked += 1
    assert checked >= 8
