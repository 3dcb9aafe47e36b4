"""Backends on a synthetic batch: the oracle reproduces the truth; the network backends run and convert."""

import dataclasses

import numpy as np
import pytest
import torch

from mapanything_ros.backends import MapAnythingBackend, OracleBackend, RandomBackend
from mapanything_ros.geometry import se3_compose
from mapanything_ros.geometry.transforms import transform_points
from mapanything_ros.model import load_model
from mapanything_ros.window import BatchConfig, assemble

from model_fixtures import TINY, needs_fixtures

SMALL = BatchConfig(long_side=140)  # 140 x 112 model input: fast on CPU


def check_shapes(pred, batch):
    pred = dataclasses.replace(pred, **{k: np.asarray(getattr(pred, k)) for k in
                                        ("ray_directions", "depth_along_ray", "confidence", "mask")})
    v, (w, h) = len(batch.views), batch.size
    assert pred.ray_directions.shape == (v, h, w, 3) and pred.depth_along_ray.shape == (v, h, w)
    assert pred.confidence.shape == (v, h, w) and pred.mask.shape == (v, h, w) and pred.mask.dtype == bool
    assert pred.ref_from_camera.shape == (v, 4, 4) and pred.ref_from_camera.dtype == np.float64
    for a in (pred.ray_directions, pred.depth_along_ray, pred.ref_from_camera, pred.confidence):
        assert np.all(np.isfinite(a))
    np.testing.assert_allclose(np.linalg.norm(pred.ray_directions, axis=-1), 1.0, atol=1e-5)
    assert np.all(pred.confidence >= 1) and pred.metric_scale > 0


@pytest.mark.parametrize("config", [BatchConfig(), BatchConfig(use_poses=False, use_depth=False, long_side=280)])
def test_oracle_reproduces_true_depth_and_poses(scene, frames, config):
    batch = assemble(frames, config)
    pred = OracleBackend(scene).predict(batch)
    check_shapes(pred, batch)
    ref = scene.world_from_camera(frames[0].frame_id, frames[0].stamp_ns)
    for i, frame in enumerate(frames):
        world_from_cam = se3_compose(ref, pred.ref_from_camera[i])
        np.testing.assert_allclose(world_from_cam, scene.world_from_camera(frame.frame_id, frame.stamp_ns),
                                   atol=1e-12)
        m = pred.mask[i]
        assert m.mean() > 0.95
        cam = pred.ray_directions[i][m] * pred.depth_along_ray[i][m, None].astype(np.float64)
        assert np.max(scene.room.surface_distance(transform_points(world_from_cam, cam))) < 1e-4
    assert pred.metric_scale == 1.0


def test_oracle_reference_depth_matches_the_rendered_depth(scene, frames):
    """At the native resolution, the oracle's reference-view depth equals the renderer's."""
    batch = assemble(frames, BatchConfig())
    pred = OracleBackend(scene).predict(batch)
    resize, frame = batch.resizes[0], frames[0]
    native = resize.to_native(pred.depth_along_ray[0])
    truth = scene.render(frame.frame_id, frame.stamp_ns).depth_ray
    ok = np.isfinite(native)
    rel = np.abs(native[ok] - truth[ok]) / truth[ok]
    assert np.median(rel) < 5e-3  # nearest-neighbour resampling: only edges differ much


@needs_fixtures
def test_mapanything_backend_with_fixture_weights(frames):
    model = load_model(str(TINY))
    batch = assemble(frames, SMALL)
    pred = MapAnythingBackend(model).predict(batch)
    check_shapes(pred, batch)
    with torch.inference_mode():
        out = model(batch.views, **batch.forward_kwargs)
    np.testing.assert_allclose(np.asarray(pred.depth_along_ray), np.stack([o["depth_along_ray"][0, ..., 0] for o in out]),
                               rtol=1e-5)
    np.testing.assert_allclose(pred.ref_from_camera[:, :3, 3], np.stack([o["cam_trans"][0] for o in out]),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pred.metric_scale, float(out[0]["metric_scaling_factor"]), rtol=1e-6)


def test_random_backend_is_deterministic(frames):
    batch = assemble(frames[:2], SMALL)
    a, b = RandomBackend(seed=0).predict(batch), RandomBackend(seed=0).predict(batch)
    other = RandomBackend(seed=1).predict(batch)
    check_shapes(a, batch)
    np.testing.assert_array_equal(np.asarray(a.depth_along_ray), np.asarray(b.depth_along_ray))
    np.testing.assert_array_equal(a.ref_from_camera, b.ref_from_camera)
    assert not np.array_equal(np.asarray(a.depth_along_ray), np.asarray(other.depth_along_ray))


def test_only_the_published_views_leave_the_device(scene):
    """Through the pipeline, the network backend's dense outputs are copied to the host for the
    newest capture only (the published views, which also enter the map); the rest stay on the device."""
    from mapanything_ros.pipeline import Pipeline, PipelineConfig
    from mapanything_ros.synthetic import capture_frames

    backend, predictions = RandomBackend(seed=0), []
    predict = backend.predict
    backend.predict = lambda batch: predictions.append(predict(batch)) or predictions[-1]
    pipeline = Pipeline(PipelineConfig(window_size=3, batch=SMALL), backend)
    results = [pipeline.process(capture_frames(scene, (2 + k) * 1_000_000_000, lidar=False))[1] for k in range(4)]
    for result, pred in zip(results, predictions):
        newest = [i for i, f in enumerate(result.reconstruction.frames)
                  if f.stamp_ns == max(g.stamp_ns for g in result.reconstruction.frames)]
        assert len(result.reconstruction.frames) > len(newest) or result.seq == 1
        for stack in (pred.depth_along_ray, pred.ray_directions, pred.confidence, pred.mask):
            assert stack.copied == newest
