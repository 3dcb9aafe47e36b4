"""geometry/rectify.py: rectified pinhole depth of the synthetic rig's distorted cameras against the
scene's truth, projected with plain pinhole math (what depth_image_proc does with the rectified
CameraInfo)."""

import numpy as np
import pytest

from mapanything_ros.geometry import CameraModel
from mapanything_ros.geometry.rectify import info_fields, rectification, rectified_intrinsics, rectify_depth
from mapanything_ros.geometry.transforms import transform_points
from mapanything_ros.synthetic import SyntheticScene


def pinhole_points(z, k):
    """Camera-frame points (N, 3) of the finite pixels of a z-depth image through K, and the mask."""
    h, w = z.shape
    v, u = np.mgrid[0:h, 0:w]
    ok = np.isfinite(z)
    y = (v - k[1, 2]) / k[1, 1]
    x = (u - k[0, 2] - k[0, 1] * y) / k[0, 0]
    return np.stack([x * z, y * z, z], -1)[ok], ok


@pytest.fixture(scope="module")
def scene():
    return SyntheticScene(seed=0)


@pytest.mark.parametrize("name", ["front_optical", "left_fisheye_optical"])  # plumb_bob, equidistant
def test_rectified_depth_lands_on_the_scene(scene, name):
    view = scene.render(name, 3_000_000_000)
    k = np.reshape(view.camera.k, (3, 3))
    p = np.hstack([k, np.zeros((3, 1))]).ravel()  # as the player's CameraInfo
    rect = rectification(view.camera, p, np.eye(3).ravel())
    z = rectify_depth(view.depth_z, rect)
    points, ok = pinhole_points(z, rect.k)
    assert ok.mean() > 0.95
    d = scene.room.surface_distance(transform_points(view.world_from_camera, points))
    rel = d / points[:, 2]
    # nearest-pixel resampling: the error is the depth change across half a raw pixel
    assert np.median(rel) < 0.002 and np.quantile(rel, 0.99) < 0.01
    # the raw grid itself, read as pinhole, is wrong by the lens distortion
    raw_points, _ = pinhole_points(np.where(view.depth_z > 0, view.depth_z, np.nan), k)
    raw = scene.room.surface_distance(transform_points(view.world_from_camera, raw_points)) / raw_points[:, 2]
    assert np.quantile(raw, 0.9) > 5 * np.quantile(rel, 0.9)


def test_rectification_follows_p_r_binning_and_roi():
    cam = CameraModel(640, 480, (400.0, 0, 320, 0, 400.0, 240, 0, 0, 1), (-0.2, 0.05, 0, 0, 0), "plumb_bob",
                      binning_x=2, binning_y=2, roi=(64, 32, 400, 512, False))
    p = [300.0, 0, 330, -30.0, 0, 300.0, 250, 0, 0, 0, 1, 0]
    k = rectified_intrinsics(cam, p)
    np.testing.assert_allclose(k, [[150, 0, 133], [0, 150, 109], [0, 0, 1]])
    rect = rectification(cam, p, None)
    assert rect.size == cam.image_size == (256, 200)
    fields = info_fields(rect, p, cam.binning)
    assert fields["p"][3] == -15.0 and fields["d"] == [0.0] * 5 and (fields["width"], fields["height"]) == (256, 200)
    # P unset (all zeros, as some drivers publish): K is used
    np.testing.assert_allclose(rectified_intrinsics(cam, [0.0] * 12), cam.intrinsics)
    # R rotates the rectified frame: a flat wall at z = 2 m in the raw frame, seen rotated by R
    plain = CameraModel.pinhole(200, 200, 100, 75, 200, 150)
    angle = np.deg2rad(5)
    r = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    rotated = rectification(plain, None, r.ravel())
    z = rectify_depth(np.full((150, 200), 2.0, np.float32), rotated)
    points, _ = pinhole_points(z, rotated.k)
    np.testing.assert_allclose((points @ r)[:, 2], 2.0, atol=1e-4)  # back in the raw frame: on the wall
    with pytest.raises(ValueError, match="publishes"):
        rectify_depth(np.ones((10, 10)), rotated)
