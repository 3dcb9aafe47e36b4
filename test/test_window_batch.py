"""ViewBatch assembly from synthetic frames: rays, relative poses, sparse ray depth, switches."""

import dataclasses

import numpy as np
import pytest
import torch

from mapanything_ros.geometry import CameraModel, Resize, pose_from_quat_trans, relative_pose
from mapanything_ros.window import BatchConfig, Frame, assemble
from mapanything_ros.model.infer import IMAGE_MEAN as MEAN, IMAGE_STD as STD

POSE_KEYS = {"camera_pose_quats", "camera_pose_trans"}


@pytest.fixture(scope="module")
def batch(frames):
    return assemble(frames)


def test_views_share_the_reference_model_size(batch, frames):
    assert batch.size == (518, 392)
    for view, frame, resize in zip(batch.views, frames, batch.resizes):
        assert view["img"].shape == (1, 3, 392, 518) and view["img"].dtype == torch.float32
        assert resize.in_size == frame.camera.image_size and resize.out_size == batch.size
        assert view["data_norm_type"] == ["dinov2"]
    assert len({v["frame_id"] for v in batch.views}) == len(frames)


def test_image_is_the_resized_frame_normalised(batch, frames):
    img = batch.views[1]["img"][0].numpy().transpose(1, 2, 0) * STD + MEAN
    expected = batch.resizes[1].image(frames[1].image).astype(np.float32) / 255
    np.testing.assert_allclose(img, expected, atol=1e-6)


def test_rays_are_the_exact_camera_rays(batch, frames):
    for view, frame, resize, valid in zip(batch.views, frames, batch.resizes, batch.valid):
        rays = view["ray_directions_cam"][0].numpy()
        exact = frame.camera.ray_map(resize=resize)
        np.testing.assert_allclose(rays[valid], exact[valid], atol=1e-7)
        np.testing.assert_allclose(np.linalg.norm(rays, axis=-1), 1.0, atol=1e-6)
        assert valid.mean() > 0.95


def test_poses_are_relative_to_the_reference(batch, frames, scene):
    ref = scene.world_from_camera(frames[0].frame_id, frames[0].stamp_ns)
    np.testing.assert_array_equal(batch.reference_world_from_camera, ref)
    for view, frame in zip(batch.views, frames):
        got = pose_from_quat_trans(view["camera_pose_quats"][0].numpy(), view["camera_pose_trans"][0].numpy())
        true = relative_pose(ref, scene.world_from_camera(frame.frame_id, frame.stamp_ns))
        np.testing.assert_allclose(got, true, atol=1e-6)
    np.testing.assert_allclose(batch.ref_from_camera[0], np.eye(4), atol=1e-12)


def test_a_view_without_a_pose_leaves_the_others_theirs(frames, scene):
    """The window's poses are converted together: a view in the middle without one shifts nothing."""
    k = len(frames) // 2
    assert 0 < k < len(frames) - 1
    gap = list(frames)
    gap[k] = dataclasses.replace(frames[k], world_from_camera=None)
    batch = assemble(gap, BatchConfig())
    ref = frames[0].world_from_camera
    assert "camera_pose_quats" not in batch.views[k] and batch.ref_from_camera[k] is None
    for i, (view, frame) in enumerate(zip(batch.views, frames)):
        if i == k:
            continue
        got = pose_from_quat_trans(view["camera_pose_quats"][0].numpy(), view["camera_pose_trans"][0].numpy())
        np.testing.assert_allclose(got, relative_pose(ref, frame.world_from_camera), atol=1e-6)


def test_sparse_depth_is_the_true_ray_depth_at_measured_pixels(batch, frames, scene):
    for view, frame, rays in zip(batch.views, frames, batch.rays):
        depth = view["depth_along_ray"][0, ..., 0].numpy()
        hit = depth > 0
        assert 200 < hit.sum() < 0.2 * hit.size  # sparse, min-pooled
        true = scene.ray_depth(frame.world_from_camera, rays[hit], frame.stamp_ns)
        rel = np.abs(depth[hit] - true) / true
        assert np.median(rel) < 1e-2 and np.mean(rel < 0.03) > 0.85  # edges and sub-pixel offsets


def test_switches_remove_inputs(frames):
    full = {"ray_directions_cam", "depth_along_ray"} | POSE_KEYS
    for switch, removed in (("use_intrinsics", {"ray_directions_cam"}), ("use_poses", POSE_KEYS),
                            ("use_depth", {"depth_along_ray"})):
        batch = assemble(frames, BatchConfig(**{switch: False}))
        for view, passed in zip(batch.views, batch.passed):
            assert passed == full - removed and not (removed & set(view))
    images_only = assemble(frames, BatchConfig(use_intrinsics=False, use_poses=False, use_depth=False))
    assert all(set(v) == {"img", "data_norm_type", "frame_id", "is_metric_scale"} for v in images_only.views)
    assert not any(bool(v["is_metric_scale"]) for v in images_only.views)


@pytest.mark.parametrize("config, metric, kwargs", [
    (BatchConfig(), True, (True, True)),
    (BatchConfig(metric_poses=False), True, (True, False)),
    (BatchConfig(metric_poses=False, metric_depth=False), False, (False, False)),
    (BatchConfig(use_poses=False, depth_without_scale=True), False, (False, True)),
    (BatchConfig(use_depth=False, metric_poses=False), False, (True, False)),
])
def test_metric_flags(frames, config, metric, kwargs):
    batch = assemble(frames[:2], config)
    assert [bool(v["is_metric_scale"]) for v in batch.views] == [metric, metric]
    assert all(v["is_metric_scale"].shape == (1,) for v in batch.views)
    assert (batch.forward_kwargs["use_depth_scale"], batch.forward_kwargs["use_pose_scale"]) == kwargs


def test_reference_without_pose_passes_no_poses(frames):
    ref = dataclasses.replace(frames[0], world_from_camera=None)
    batch = assemble([ref, *frames[1:]])
    assert not any(POSE_KEYS & set(v) for v in batch.views)
    assert batch.reference_world_from_camera is None


def test_other_camera_sizes_are_cropped_to_the_reference_size(frames):
    square = CameraModel.pinhole(200.0, 200.0, 149.5, 149.5, 300, 300)
    extra = Frame(np.full((300, 300, 3), 128, np.uint8), square, frames[0].stamp_ns, "square",
                  np.eye(4), np.zeros((300, 300), np.float32))
    batch = assemble([frames[0], extra])
    assert batch.resizes[1] == Resize.cover((300, 300), (518, 392))
    assert batch.views[1]["img"].shape == (1, 3, 392, 518)
    assert "depth_along_ray" not in batch.views[1]  # an all-empty depth map is not given to the model
    assert batch.prepared[1].measured is not None and not batch.prepared[1].measured.any()
    assert assemble([extra, frames[0]]).size == (518, 518)
