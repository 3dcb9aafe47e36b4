"""CameraModel and distortion models: round trips, OpenCV cross-checks, binning/ROI, validation."""

import glob
import json

import cv2
import numpy as np
import pytest

from mapanything_ros.geometry.camera import GRID_CENTER, GRID_INDEX, CameraModel
from model_fixtures import TINY, needs_fixtures

PLUMB_BOB = CameraModel(640, 480, (525, 0, 319.5, 0, 527, 239.5, 0, 0, 1), (-0.28, 0.07, 1e-4, -2e-4, 0.02), "plumb_bob")
# Wide-angle rational model (about 120° diagonal) with coefficients of the size real calibrations have.
RATIONAL_WIDE = CameraModel(
    1280, 800, (420, 0, 640.3, 0, 421, 401.7, 0, 0, 1), (0.5, -2.6, 5e-4, -3e-4, 1.5, 0.39, -2.4, 1.4), "rational_polynomial"
)
# Strong barrel distortion whose radial map turns over inside the image: the corners are invalid.
RATIONAL_BARREL = CameraModel(
    960, 540, (500, 0, 480, 0, 500, 270, 0, 0, 1), (-0.3, 0.1, 1e-3, 1e-3, -0.02, 0.1, 0.02, 0.01), "rational_polynomial"
)
# 180°-class fisheye (valid up to ~126° off axis).
FISHEYE = CameraModel(1280, 1024, (330, 0, 640, 0, 331, 512, 0, 0, 1), (0.02, -0.01, 0.003, -0.0005), "equidistant")
# Rational camera published binned 2x with a region of interest.
BINNED_ROI = CameraModel(
    2560, 1600, (840, 0, 1280.6, 0, 842, 803.4, 0, 0, 1), (0.5, -2.6, 5e-4, -3e-4, 1.5, 0.39, -2.4, 1.4),
    "rational_polynomial", binning_x=2, binning_y=2, roi=(200, 100, 1200, 2000, False),
)
DISTORTED = [PLUMB_BOB, RATIONAL_WIDE, RATIONAL_BARREL, FISHEYE, BINNED_ROI]
IDS = ["plumb_bob", "rational_wide", "rational_barrel", "fisheye", "binned_roi"]


def pixel_grid(camera, step=7):
    w, h = camera.image_size
    v, u = np.mgrid[0:h:step, 0:w:step].astype(np.float64)
    return u + 0.37, v + 0.61


def directions_in_fov(camera, n=4000, fraction=0.97, seed=0):
    """Random unit directions within `fraction` of the valid half-angle that land in the image."""
    rng = np.random.default_rng(seed)
    theta = np.arccos(1 - rng.random(n) * (1 - np.cos(fraction * min(camera.max_angle, np.pi - 1e-3))))
    phi = rng.random(n) * 2 * np.pi
    d = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], -1)
    uv, valid = camera.project(d)
    w, h = camera.image_size
    inside = valid & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    return d[inside], uv[inside]


def cv_k_d(camera):
    return np.array(camera.k).reshape(3, 3), np.array(camera.d)


@pytest.mark.parametrize("camera", DISTORTED, ids=IDS)
def test_pixel_ray_pixel_round_trip(camera):
    u, v = pixel_grid(camera)
    rays = camera.rays(u, v)
    valid = np.isfinite(rays[..., 0])
    assert valid.mean() > 0.6
    assert np.allclose(np.linalg.norm(rays[valid], axis=-1), 1.0, atol=1e-12)
    uv, ok = camera.project(rays[valid])
    assert ok.all()
    err = np.hypot(uv[:, 0] - u[valid], uv[:, 1] - v[valid])
    assert err.max() < 1e-6


@pytest.mark.parametrize("camera", DISTORTED, ids=IDS)
def test_ray_pixel_ray_round_trip(camera):
    d, uv = directions_in_fov(camera)
    assert len(d) > 500
    back = camera.rays(uv[:, 0], uv[:, 1])
    assert np.isfinite(back).all()
    uv2, ok = camera.project(back)
    assert ok.all() and np.abs(uv2 - uv).max() < 1e-6
    assert np.abs(back - d).max() < 1e-8


def test_invalid_region_is_nan_and_not_projected():
    u, v = np.array([0.0, 480.0]), np.array([0.0, 270.0])  # corner beyond the turning radius, centre
    rays = RATIONAL_BARREL.rays(u, v)
    assert np.isnan(rays[0]).all() and np.isfinite(rays[1]).all()
    too_wide = np.array([np.sin(RATIONAL_BARREL.max_angle + 0.01), 0.0, np.cos(RATIONAL_BARREL.max_angle + 0.01)])
    uv, valid = RATIONAL_BARREL.project(np.stack([too_wide, [0, 0, -1.0], [np.nan, 0, 1]]))
    assert not valid.any() and np.isnan(uv).all()


@pytest.mark.parametrize("camera", [PLUMB_BOB, RATIONAL_WIDE, RATIONAL_BARREL], ids=IDS[:3])
def test_projection_matches_opencv(camera):
    d, _ = directions_in_fov(camera)
    pts = d * np.random.default_rng(1).uniform(0.5, 30.0, (len(d), 1))
    k, dist = cv_k_d(camera)
    ref = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), k, dist)[0][:, 0]
    uv, valid = camera.project(pts)
    assert valid.all()
    np.testing.assert_allclose(uv, ref, rtol=1e-9, atol=1e-9)


def test_fisheye_projection_matches_opencv():
    d, _ = directions_in_fov(FISHEYE)
    d = d[d[:, 2] > 1e-3]  # OpenCV's fisheye model divides by z
    k, dist = cv_k_d(FISHEYE)
    ref = cv2.fisheye.projectPoints(d[:, None], np.zeros(3), np.zeros(3), k, dist)[0][:, 0]
    uv, valid = FISHEYE.project(d)
    assert valid.all()
    np.testing.assert_allclose(uv, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("camera", [PLUMB_BOB, RATIONAL_WIDE, RATIONAL_BARREL], ids=IDS[:3])
def test_rays_match_opencv_undistort(camera):
    u, v = pixel_grid(camera, step=23)
    rays = camera.rays(u, v)
    valid = np.isfinite(rays[..., 0])
    k, dist = cv_k_d(camera)
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 500, 1e-15)
    px = np.stack([u[valid], v[valid]], -1)[:, None]
    xy = cv2.undistortPoints(px, k, dist, criteria=crit)[:, 0]
    # OpenCV's fixed-point iteration is not guaranteed to converge; compare where it did.
    ref_uv = cv2.projectPoints(np.concatenate([xy, np.ones((len(xy), 1))], 1), np.zeros(3), np.zeros(3), k, dist)[0][:, 0]
    converged = np.hypot(*(ref_uv - px[:, 0]).T) < 1e-6
    assert converged.mean() > 0.5
    ours = rays[valid][:, :2] / rays[valid][:, 2:]
    np.testing.assert_allclose(ours[converged], xy[converged], atol=1e-9)


def test_fisheye_rays_match_opencv_undistort():
    u, v = pixel_grid(FISHEYE, step=23)
    rays = FISHEYE.rays(u, v)
    front = np.isfinite(rays[..., 0]) & (rays[..., 2] > 0.05)
    k, dist = cv_k_d(FISHEYE)
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-15)
    xy = cv2.fisheye.undistortPoints(np.stack([u[front], v[front]], -1)[:, None], k, dist, criteria=crit)[:, 0]
    np.testing.assert_allclose(rays[front][:, :2] / rays[front][:, 2:], xy, rtol=1e-7, atol=1e-8)


def test_binning_and_roi_follow_image_geometry():
    assert BINNED_ROI.image_size == (1000, 600)
    full = CameraModel(2560, 1600, BINNED_ROI.k, BINNED_ROI.d, "rational_polynomial")
    u, v = pixel_grid(BINNED_ROI, step=13)
    # Published (u, v) is full-resolution (u * binning + x_offset, v * binning + y_offset).
    np.testing.assert_allclose(BINNED_ROI.rays(u, v), full.rays(2 * u + 200, 2 * v + 100), rtol=0, atol=1e-12)
    d, _ = directions_in_fov(BINNED_ROI)
    uv_b, ok_b = BINNED_ROI.project(d)
    uv_f, _ = full.project(d)
    assert ok_b.all()
    np.testing.assert_allclose(uv_b, (uv_f - [200, 100]) / 2, atol=1e-9)
    k, dist = cv_k_d(full)
    ref = cv2.projectPoints(d, np.zeros(3), np.zeros(3), k, dist)[0][:, 0]
    np.testing.assert_allclose(uv_b, (ref - [200, 100]) / 2, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(BINNED_ROI.intrinsics, [[420, 0, 540.3], [0, 421, 351.7], [0, 0, 1]])
    assert BINNED_ROI.ray_map().shape == (600, 1000, 3)


def test_pinhole_ray_map_grid_conventions():
    cam = CameraModel.pinhole(100.0, 110.0, 48.5, 34.2, 98, 70)
    v, u = np.mgrid[0:70, 0:98].astype(np.float64)
    for grid, off in ((GRID_INDEX, 0.0), (GRID_CENTER, 0.5)):
        ref = np.stack([(u + off - 48.5) / 100.0, (v + off - 34.2) / 110.0, np.ones_like(u)], -1)
        ref /= np.linalg.norm(ref, axis=-1, keepdims=True)
        np.testing.assert_allclose(cam.ray_map(grid=grid), ref, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="grid"):
        cam.ray_map(grid="corner")


@needs_fixtures
def test_pinhole_ray_map_matches_upstream_infer_fixtures():
    """Forward fixtures were made by upstream `infer` from aux intrinsics: index grid, no +0.5."""
    checked = 0
    for path in sorted(glob.glob(str(TINY / "cases" / "c*.npz"))):
        case = np.load(path)
        meta = json.loads(str(case["__meta__"]))
        for i in range(meta["num_views"]):
            if f"view{i}.ray_directions_cam" not in case or f"aux.view{i}.intrinsics" not in case:
                continue
            for b, k in enumerate(case[f"aux.view{i}.intrinsics"]):
                cam = CameraModel.pinhole(k[0, 0], k[1, 1], k[0, 2], k[1, 2], meta["width"], meta["height"])
                np.testing.assert_allclose(cam.ray_map(), case[f"view{i}.ray_directions_cam"][b], atol=3e-7)
                checked += 1
    assert checked >= 5


def test_ray_map_cache_is_keyed_on_all_parameters():
    first = RATIONAL_WIDE.ray_map()
    assert RATIONAL_WIDE.ray_map() is first
    assert not first.flags.writeable
    same = CameraModel(1280, 800, RATIONAL_WIDE.k, RATIONAL_WIDE.d, "rational_polynomial")
    assert same.ray_map() is first
    recalibrated = CameraModel(1280, 800, RATIONAL_WIDE.k, (0.5, -2.6, 5e-4, -3e-4, 1.5, 0.39, -2.4, 1.41), "rational_polynomial")
    assert recalibrated.ray_map() is not first
    assert not np.allclose(recalibrated.ray_map(), first)
    small = RATIONAL_WIDE.ray_map(height=400, width=640)
    assert small.shape == (400, 640, 3)
    # Stretching by exactly 2 samples the full-size image at (2j + 0.5, 2i + 0.5).
    np.testing.assert_allclose(small[5, 7], RATIONAL_WIDE.rays(14.5, 10.5), atol=1e-15)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(distortion_model="kannala_brandt"), "unknown distortion_model"),
        (dict(k=(np.nan, 0, 1, 0, 1, 1, 0, 0, 1)), "finite"),
        (dict(k=(0, 0, 1, 0, 1, 1, 0, 0, 1)), "fx"),
        (dict(k=(1, 0, 1, 0, -5, 1, 0, 0, 1)), "fy"),
        (dict(k=(1, 0, 1, 0, 1, 1, 0, 0)), "K must have 9"),
        (dict(k=(1, 0, 1, 0, 1, 1, 0, 0, 2)), "upper triangular"),
        (dict(d=(0.1, 0.2, 0.0)), "D has 3"),
        (dict(distortion_model="equidistant", d=(0.1, 0.0, 0.0, 0.0, 0.0)), "D has 5"),
        (dict(d=(0.1, np.inf, 0, 0)), "finite"),
        (dict(roi=(600, 0, 0, 100, False)), "roi"),
        (dict(binning_x=-1), "binning_x"),
        (dict(width=0), "width"),
    ],
)
def test_invalid_calibration_raises(kwargs, message):
    fields = dict(width=640, height=480, k=(500, 0, 320, 0, 500, 240, 0, 0, 1), d=(), distortion_model="plumb_bob")
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message):
        CameraModel(**fields)


def test_empty_or_zero_distortion_is_pinhole():
    k = (500, 0, 320, 0, 500, 240, 0, 0, 1)
    pin = CameraModel.pinhole(500, 500, 320, 240, 640, 480)
    u, v = pixel_grid(pin, step=31)
    for model, d in (("plumb_bob", ()), ("rational_polynomial", (0,) * 8), ("equidistant", (0,) * 4), ("", ())):
        cam = CameraModel.from_camera_info_fields(640, 480, k, d, model)
        assert type(cam.lens).__name__ == "Pinhole"
        np.testing.assert_array_equal(cam.rays(u, v), pin.rays(u, v))
