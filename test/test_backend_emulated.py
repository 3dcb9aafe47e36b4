"""The emulated backend (the oracle with a network's errors): deterministic, exact at profile 0, errors
that fall as the paper's input regimes add calibration, poses and depth, one metric scale per window,
confidence that follows the error it can see."""

import cv2
import numpy as np
import pytest

from mapanything_ros.backends import EmulatedBackend, OracleBackend
from mapanything_ros.backends.emulated import PROFILES, REGIMES, levels, regime
from mapanything_ros.window import BatchConfig, assemble

SMALL = dict(long_side=140)
REGIME_CONFIGS = {
    "images": BatchConfig(use_intrinsics=False, use_poses=False, use_depth=False, **SMALL),
    "intrinsics": BatchConfig(use_poses=False, use_depth=False, **SMALL),
    "poses": BatchConfig(use_depth=False, **SMALL),
    "poses+depth": BatchConfig(**SMALL),
}


def abs_rel(pred, truth):
    ok = (truth.depth_along_ray > 0) & (pred.depth_along_ray > 0)
    return float(np.mean(np.abs(pred.depth_along_ray[ok] / truth.depth_along_ray[ok] - 1)))


def test_deterministic_and_seeded(scene, frames):
    batch = assemble(frames, BatchConfig(**SMALL))
    a, b = EmulatedBackend(scene, seed=3).predict(batch), EmulatedBackend(scene, seed=3).predict(batch)
    for field in ("ray_directions", "depth_along_ray", "ref_from_camera", "confidence", "mask"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    c = EmulatedBackend(scene, seed=4).predict(batch)
    assert not np.array_equal(a.depth_along_ray, c.depth_along_ray)
    again = EmulatedBackend(scene, seed=3)
    again.predict(batch)
    np.testing.assert_array_equal(again.predict(batch).depth_along_ray, a.depth_along_ray)  # cached draws


def test_profile_zero_is_the_oracle(scene, frames):
    for config in REGIME_CONFIGS.values():
        batch = assemble(frames, config)
        exact, pred = OracleBackend(scene).predict(batch), EmulatedBackend(scene, profile=0.0).predict(batch)
        np.testing.assert_allclose(pred.depth_along_ray, exact.depth_along_ray, rtol=1e-6)
        np.testing.assert_allclose(pred.ray_directions, exact.ray_directions, atol=1e-6)
        np.testing.assert_allclose(pred.ref_from_camera, exact.ref_from_camera, atol=1e-12)
        assert pred.metric_scale == 1.0


def test_errors_fall_as_inputs_are_added(scene, frames):
    """Mean over seeds of the depth AbsRel: images > + intrinsics > + poses > + depth, as the paper ranks them,
    and each profile scales it."""
    errors = {}
    for name, config in REGIME_CONFIGS.items():
        batch = assemble(frames, config)
        truth = OracleBackend(scene).predict(batch)
        errors[name] = np.mean([abs_rel(EmulatedBackend(scene, seed=s).predict(batch), truth) for s in range(8)])
    assert errors["images"] > errors["intrinsics"] > errors["poses"] > errors["poses+depth"] > 0
    assert 0.03 < errors["images"] < 0.12 and 0.005 < errors["poses+depth"] < 0.03
    batch = assemble(frames, REGIME_CONFIGS["poses"])
    truth = OracleBackend(scene).predict(batch)
    by_profile = [np.mean([abs_rel(EmulatedBackend(scene, p, seed=s).predict(batch), truth) for s in range(8)])
                  for p in PROFILES]
    assert by_profile[0] < by_profile[1] < by_profile[2]
    assert by_profile[2] / by_profile[0] == pytest.approx(4.0, rel=0.35)  # 2x / 0.5x magnitudes


def test_levels_table():
    assert regime(False, False, False) == "images" and regime(True, True, True) == "poses+depth"
    assert levels(True, False, False).ray == 0 and levels(False, True, True).ray == REGIMES["images"].ray
    assert levels(True, True, False, 2.0).pixel == 2 * REGIMES["poses"].pixel
    with pytest.raises(ValueError):
        EmulatedBackend(None, profile=-1)


def test_rays_and_poses_err_only_where_not_given(scene, frames):
    given = assemble(frames, BatchConfig(**SMALL))
    truth = OracleBackend(scene).predict(given)
    pred = EmulatedBackend(scene, seed=1).predict(given)
    np.testing.assert_array_equal(pred.ray_directions, truth.ray_directions)
    np.testing.assert_array_equal(pred.ref_from_camera[0], np.eye(4))
    trans_err = np.linalg.norm(pred.ref_from_camera[1:, :3, 3] - truth.ref_from_camera[1:, :3, 3], axis=-1)
    free = assemble(frames, REGIME_CONFIGS["images"])
    loose = EmulatedBackend(scene, seed=1).predict(free)
    assert not np.allclose(loose.ray_directions, truth.ray_directions, atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(loose.ray_directions, axis=-1), 1.0, atol=1e-5)
    loose_err = np.linalg.norm(loose.ref_from_camera[1:, :3, 3] - truth.ref_from_camera[1:, :3, 3], axis=-1)
    assert loose_err.mean() > 3 * trans_err.mean()


def test_one_metric_scale_for_depths_and_translations(scene, frames):
    """Without poses the window's scale error carries the translations as the depths (one scale token)."""
    batch = assemble(frames, REGIME_CONFIGS["intrinsics"])
    truth = OracleBackend(scene).predict(batch)
    for seed in range(4):
        pred = EmulatedBackend(scene, seed=seed, profile=0.01).predict(batch)  # only the scale is large enough
        ratio = np.median(pred.depth_along_ray[truth.mask] / truth.depth_along_ray[truth.mask])
        trans = np.linalg.norm(pred.ref_from_camera[1:, :3, 3], axis=-1) / np.linalg.norm(
            truth.ref_from_camera[1:, :3, 3], axis=-1)
        np.testing.assert_allclose(trans, pred.metric_scale, rtol=2e-3)
        assert ratio == pytest.approx(pred.metric_scale, rel=2e-3)


def test_bias_and_confidence(scene, frames):
    batch = assemble(frames, REGIME_CONFIGS["poses"])
    truth = OracleBackend(scene).predict(batch)
    plain, biased = EmulatedBackend(scene, seed=2).predict(batch), EmulatedBackend(scene, seed=2, bias=0.1).predict(batch)
    ok = truth.mask
    np.testing.assert_allclose(biased.depth_along_ray[ok], 1.1 * plain.depth_along_ray[ok], rtol=1e-5)
    assert np.all(plain.confidence >= 1) and np.all(np.isfinite(plain.confidence))
    # What a network can see of its own error: the part that is not smooth across the image (the
    # global scale and the low-frequency field are invisible to it).
    log_ratio = np.where(ok, np.log(np.maximum(plain.depth_along_ray, 1e-6) / np.maximum(truth.depth_along_ray, 1e-6)),
                         0).astype(np.float32)
    local = np.abs(log_ratio - np.stack([cv2.GaussianBlur(v, (0, 0), 4) for v in log_ratio]))[ok]
    conf = plain.confidence[ok]
    # The quarter of the pixels the network is least sure of errs more than the surest quarter.
    low, high = conf < np.quantile(conf, 0.25), conf > np.quantile(conf, 0.75)
    assert np.median(local[low]) > 2 * np.median(local[high])


def test_made_from_the_node_parameters():
    from mapanything_ros import settings
    from mapanything_ros.backends import make_backend

    values = {**settings.defaults(), "backend": "emulated", "oracle_preset": "small", "oracle_seed": 2,
              "error_profile": 0.5, "error_seed": 7, "cameras": ["front_optical"]}
    backend, runtime = make_backend(values)
    assert isinstance(backend, EmulatedBackend) and runtime is None
    assert (backend.profile, backend.seed) == (0.5, 7) and backend.scene.cameras[0].camera.width == 160  # small
    assert settings.check("error_profile", -0.5) and settings.check("error_profile", 2.0) is None
