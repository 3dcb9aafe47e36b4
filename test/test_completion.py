"""Depth completion (mapping.completion): a per-view scale and a smooth field recovered from sparse
measured depth, outliers left out, exact predictions left alone; through reconstruct: the published
depth, the points and the map carry it."""

import numpy as np
import pytest

from mapanything_ros.backends import EmulatedBackend, OracleBackend
from mapanything_ros.mapping import CompletionConfig, reconstruct
from mapanything_ros.mapping.completion import BIAS_FLOOR, correct
from mapanything_ros.window import BatchConfig, assemble

H, W = 84, 112


def plane(rng, density=0.08):
    """(true z (H, W), measured z with 0 where none) of a tilted plane, `density` of the pixels measured."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    z = 2.0 + 0.01 * x + 0.005 * y
    measured = np.where(rng.uniform(size=(H, W)) < density, z, 0).astype(np.float32)
    return z.astype(np.float32), measured


def smooth(amplitude):
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    return amplitude * np.sin(x / W * np.pi) * np.cos(y / H * np.pi)


def test_exact_prediction_is_left_alone():
    z, measured = plane(np.random.default_rng(0))
    fix = correct(z, measured, np.ones_like(z))
    np.testing.assert_array_equal(fix.factor, 1.0)
    assert fix.scale == 1.0 and fix.agree[measured > 0].all() and fix.measured == np.count_nonzero(measured)
    assert correct(z, np.zeros_like(z), np.ones_like(z)) is None


def test_scale_and_field_are_recovered():
    rng = np.random.default_rng(1)
    z, measured = plane(rng)
    field = smooth(0.03)
    pred = z * 1.08 * np.exp(field)
    scaled = correct(pred, measured, np.ones_like(z), CompletionConfig(dense=False))
    full = correct(pred, measured, np.ones_like(z))
    before = np.mean(np.abs(pred / z - 1))
    after_scale = np.mean(np.abs(pred * scaled.factor / z - 1))
    after_field = np.mean(np.abs(pred * full.factor / z - 1))
    assert scaled.scale == pytest.approx(1 / 1.08, rel=0.02)
    assert after_field < 0.25 * after_scale < 0.25 * before
    assert after_field < 2 * BIAS_FLOOR


def test_occluded_measurements_are_left_out():
    """A fifth of the measured pixels see an occluder 30 % closer (LiDAR parallax): neither the scale nor
    the field follow them, and they do not agree with the corrected prediction."""
    rng = np.random.default_rng(2)
    z, measured = plane(rng)
    has = np.flatnonzero(measured)
    bad = rng.choice(has, len(has) // 5, replace=False)
    measured.flat[bad] *= 0.7
    pred = 1.05 * z
    fix = correct(pred, measured, np.ones_like(z))
    assert fix.scale == pytest.approx(1 / 1.05, rel=3e-3)
    np.testing.assert_allclose(pred * fix.factor, z, rtol=5e-3)
    assert not fix.agree.flat[bad].any() and fix.agree.flat[np.setdiff1d(has, bad)].mean() > 0.99


def test_confidence_weights_the_field():
    """Measured pixels where the network is unsure pull the field less."""
    rng = np.random.default_rng(3)
    z, measured = plane(rng, density=0.2)
    pred = z.copy()
    left = np.zeros((H, W), bool)
    left[:, : W // 2] = True
    pred[left] *= 1.04  # wrong on the left half only
    conf = np.where(left, 1.0, 100.0).astype(np.float32)
    fix = correct(pred, measured, conf, CompletionConfig(align=False))
    right = ~left
    right[:, : W // 2 + 20] = False  # away from the boundary
    assert np.mean(np.abs(pred[right] * fix.factor[right] / z[right] - 1)) < 0.004


@pytest.mark.parametrize("unit", [1000.0, 1e-3, 4.5])
def test_a_measurement_in_another_unit_corrects_nothing(unit):
    """Measured depth in millimetres (or km, or 4.5 times off): refused, factor 1, no pixel agrees;
    within MAX_SCALE it is a scale to correct."""
    z, measured = plane(np.random.default_rng(3))
    fix = correct(z, measured * np.float32(unit), np.ones_like(z))
    assert fix.refused and fix.factor == 1.0 and len(fix.agree_index) == 0 and fix.tolerance == 0.0
    assert fix.scale == pytest.approx(unit, rel=1e-4)
    near = correct(z, measured * np.float32(3.5), np.ones_like(z), CompletionConfig(dense=False))
    assert not near.refused and near.scale == pytest.approx(3.5, rel=1e-4)


@pytest.mark.parametrize("completion, align", [(CompletionConfig(), True), (CompletionConfig(), False),
                                               (None, True), (None, False)], ids=["field+align", "field", "align",
                                                                                 "keep-only"])
def test_reconstruct_keeps_no_measurement_in_another_unit(scene, frames, completion, align):
    """LiDAR depth in millimetres through reconstruct with keep_measured, with or without completion
    and alignment: the published depth and points stay the prediction's, no measured value is put
    back, and refused() says the ratio."""
    from dataclasses import replace

    batch = assemble(frames, BatchConfig(long_side=140))
    pred = OracleBackend(scene).predict(batch)
    mm = assemble([replace(f, sparse_depth=None if f.sparse_depth is None else f.sparse_depth * 1000) for f in frames],
                  BatchConfig(long_side=140))
    plain = reconstruct(batch, pred)
    fixed = reconstruct(mm, pred, completion=completion, align_to_measured=align, keep_measured=True)
    assert any(f.sparse_depth is not None for f in frames)
    for i, f in enumerate(frames):
        if f.sparse_depth is None:
            assert fixed.refused(i) is None
            continue
        assert fixed.refused(i) == pytest.approx(1000, rel=0.02)
        assert plain.refused(i) is None and (completion is None or fixed.correction(i).refused)
        np.testing.assert_array_equal(fixed.model_depth(i), plain.model_depth(i))
        depth = fixed.view(i).depth
        assert np.nanmax(depth) < 100 and np.nanmax(depth) == np.nanmax(plain.view(i).depth)


def test_reconstruct_carries_the_correction_to_depth_points_and_kept_measurements(scene, frames):
    batch = assemble(frames, BatchConfig(long_side=140))
    truth = OracleBackend(scene).predict(batch)
    pred = EmulatedBackend(scene, profile=1.0, seed=5, bias=0.08).predict(batch)
    raw = reconstruct(batch, pred)
    fixed = reconstruct(batch, pred, completion=CompletionConfig(), align_to_measured=True, keep_measured=True)
    exact = reconstruct(batch, truth)
    for i in range(len(frames)):
        ok = exact.model_depth(i) > 0
        err_raw = np.mean(np.abs(raw.model_depth(i)[ok] / exact.model_depth(i)[ok] - 1))
        err_fixed = np.mean(np.abs(fixed.model_depth(i)[ok] / exact.model_depth(i)[ok] - 1))
        assert err_fixed < 0.3 * err_raw, (i, err_raw, err_fixed)
        assert fixed.correction(i) is not None and raw.correction(i) is None
        # The points are the corrected depth's: their z in the camera frame is the corrected z.
        xyz, _, _ = fixed.points(i)
        cam = (xyz - fixed.poses[i][:3, 3]) @ fixed.poses[i][:3, :3]
        z = fixed.model_depth(i)
        np.testing.assert_allclose(np.sort(cam[:, 2]), np.sort(z[z > 0]), rtol=1e-4, atol=1e-4)
        # Kept measured depth at the native pixels where it agrees: exactly the measurement there.
        native = fixed.view(i).depth
        measured = frames[i].sparse_depth
        kept = (measured > 0) & np.isfinite(native) & (native == measured)
        assert kept.sum() > 0.5 * np.count_nonzero((measured > 0) & np.isfinite(native))
    # Metric poses were given: the alignment scales depth only, the poses stay the prediction's.
    np.testing.assert_allclose(fixed.poses, raw.poses, atol=1e-12)


def test_torch_path_matches_numpy(scene, frames):
    """The reconstruction's torch path (device "cpu": what runs on CUDA) applies the same correction."""
    batch = assemble(frames, BatchConfig(long_side=140))
    pred = EmulatedBackend(scene, profile=1.0, seed=6).predict(batch)
    options = dict(completion=CompletionConfig(), keep_measured=True)
    host, device = reconstruct(batch, pred, **options), reconstruct(batch, pred, device="cpu", **options)
    for i in range(len(frames)):
        np.testing.assert_allclose(device.model_depth(i), host.model_depth(i), rtol=1e-5)
        np.testing.assert_allclose(device.points(i)[0], host.points(i)[0], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(device.view(i).depth, host.view(i).depth, rtol=1e-4, equal_nan=True)


def test_a_carried_copy_keeps_its_scale_and_shares_the_fit(scene, frames):
    """A chain carries a window by a similarity: depth completion (fitted once, in the window's metric
    frame) must not undo the carried scale in depth, points or kept measurements."""
    from mapanything_ros.geometry.similarity import similarity

    batch = assemble(frames, BatchConfig(long_side=140, use_poses=False))
    pred = EmulatedBackend(scene, profile=1.0, seed=7).predict(batch)
    window = reconstruct(batch, pred, completion=CompletionConfig(), keep_measured=True)
    carried = window.carried(similarity(1.1, np.eye(3), np.zeros(3)), "chain")
    for i in range(len(frames)):
        np.testing.assert_allclose(carried.model_depth(i), 1.1 * window.model_depth(i), rtol=1e-6)
        np.testing.assert_allclose(carried.points(i)[0], 1.1 * window.points(i)[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(carried.view(i).depth, 1.1 * window.view(i).depth, rtol=1e-5, equal_nan=True)
        assert carried.correction(i) is window.correction(i)  # one fit
