"""Sim(3): Umeyama recovers a known similarity exactly, the robust fit ignores outliers, helpers agree."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapanything_ros.geometry.similarity import (
    fit_similarity,
    robust_similarity,
    similarity,
    similarity_inverse,
    similarity_parts,
    similarity_pose,
    symmetric_scale,
)
from mapanything_ros.geometry.transforms import pose_from_quat_trans, quat_to_matrix, transform_points

FAST = settings(max_examples=40, deadline=None)
seeds = st.integers(0, 2**32 - 1)


def random_similarity(rng):
    """A similarity with scale in [1e-2, 1e2], any rotation, translation within 100 m."""
    return similarity(10 ** rng.uniform(-2, 2), quat_to_matrix(rng.normal(size=4)), rng.uniform(-100, 100, 3))


def close(a, b, transform):
    """a and b agree to 1e-9 relative to the transform's size."""
    return np.abs(a - b).max() <= 1e-9 * (1 + np.abs(transform).max())


@FAST
@given(seeds, st.integers(3, 60))
def test_umeyama_recovers_a_similarity_exactly(seed, n):
    rng = np.random.default_rng(seed)
    truth = random_similarity(rng)
    src = rng.normal(size=(n, 3)) * rng.uniform(0.1, 10)
    fit = fit_similarity(src, transform_points(truth, src), rng.uniform(0.1, 10, n))
    assert close(fit, truth, truth)


@FAST
@given(seeds)
def test_robust_fit_ignores_30_percent_outliers(seed):
    rng = np.random.default_rng(seed)
    truth = random_similarity(rng)
    src = rng.normal(size=(200, 3))
    dst = transform_points(truth, src)
    bad = rng.permutation(200) < 60
    dst[bad] += rng.normal(size=(60, 3)) * np.abs(truth[:3, :3]).max() * 3
    fit, inliers = robust_similarity(src, dst, seed=seed)
    assert close(fit, truth, truth)
    np.testing.assert_array_equal(inliers, ~bad)


def test_robust_fit_with_noise_keeps_the_inliers():
    rng = np.random.default_rng(3)
    truth = random_similarity(rng)
    src = rng.normal(size=(300, 3))
    dst = transform_points(truth, src + rng.normal(size=(300, 3)) * 1e-3)
    dst[:90] = transform_points(truth, rng.normal(size=(90, 3)))  # wrong partners
    fit, inliers = robust_similarity(src, dst)
    assert inliers[90:].mean() > 0.95 and inliers[:90].mean() < 0.05
    np.testing.assert_allclose(fit[:3, :3] / similarity_parts(fit)[0], truth[:3, :3] / similarity_parts(truth)[0],
                               atol=1e-3)
    assert similarity_parts(fit)[0] == pytest.approx(similarity_parts(truth)[0], rel=1e-3)


def test_weights_select_the_points_that_count():
    rng = np.random.default_rng(4)
    truth = random_similarity(rng)
    src = rng.normal(size=(20, 3))
    dst = transform_points(truth, src)
    dst[:5] += 7.0
    weights = np.r_[np.zeros(5), np.ones(15)]
    assert close(fit_similarity(src, dst, weights), truth, truth)


@FAST
@given(seeds)
def test_parts_inverse_and_pose(seed):
    rng = np.random.default_rng(seed)
    b_from_a = random_similarity(rng)
    scale, rot, trans = similarity_parts(b_from_a)
    assert close(similarity(scale, rot, trans), b_from_a, b_from_a)
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
    assert close(similarity_inverse(b_from_a) @ b_from_a, np.eye(4), b_from_a)
    a_from_cam = pose_from_quat_trans(rng.normal(size=4), rng.uniform(-5, 5, 3))
    b_from_cam = similarity_pose(b_from_a, a_from_cam)
    np.testing.assert_allclose(b_from_cam[:3, :3] @ b_from_cam[:3, :3].T, np.eye(3), atol=1e-12)
    x_cam = rng.normal(size=(5, 3))  # a point at x_cam (frame a lengths) sits at scale·x_cam in frame b
    expected = transform_points(b_from_a, transform_points(a_from_cam, x_cam))
    assert close(transform_points(b_from_cam, scale * x_cam), expected, b_from_a)


def test_degenerate_input_is_refused():
    line = np.outer(np.arange(5.0), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="line"):
        fit_similarity(line, line)
    with pytest.raises(ValueError, match="at least 3"):
        fit_similarity(np.eye(3)[:2], np.eye(3)[:2])


def test_symmetric_scale_has_no_regression_dilution():
    """Both point sets noisy (two windows' predictions of the same pixels): Umeyama's scale, a regression of
    dst on src, shrinks by about the noise-to-spread variance ratio; the symmetric scale does not."""
    rng = np.random.default_rng(0)
    truth = similarity(1.3, quat_to_matrix(rng.normal(size=4)), rng.uniform(-5, 5, 3))
    points = rng.normal(size=(20000, 3))
    noise = 0.3  # per axis, spread 1 per axis: variance ratio 0.09
    src = points + rng.normal(scale=noise, size=points.shape)
    dst = transform_points(truth, points) + rng.normal(scale=1.3 * noise, size=points.shape)
    plain = fit_similarity(src, dst)
    fixed = symmetric_scale(plain, src, dst)
    assert similarity_parts(plain)[0] == pytest.approx(1.3 / (1 + noise ** 2), rel=0.01)
    assert similarity_parts(fixed)[0] == pytest.approx(1.3, rel=0.01)
    np.testing.assert_allclose(similarity_parts(fixed)[1], similarity_parts(plain)[1])
    np.testing.assert_allclose(transform_points(fixed, src).mean(axis=0), dst.mean(axis=0), atol=1e-9)
    exact = symmetric_scale(truth, points, transform_points(truth, points), rng.uniform(0.5, 2, len(points)))
    np.testing.assert_allclose(exact, truth, atol=1e-9)
    with pytest.raises(ValueError):
        symmetric_scale(truth, np.zeros((5, 3)), np.ones((5, 3)))
