"""CameraModel and distortion models: round trips, OpenCV cross-checks, binning/ROI, validation; the
inverse (rays of pixels) with the compiled _lens and with the lens classes' numpy alike."""

import glob
import json

import cv2
import numpy as np
import pytest

from mapanything_ros.geometry import distortion
from mapanything_ros.geometry.camera import GRID_CENTER, GRID_INDEX, CameraModel, clear_ray_cache
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
PINHOLE = CameraModel(640, 480, (525, 0, 319.5, 0, 527, 239.5, 0, 0, 1), (), "")


@pytest.fixture(params=["compiled", "numpy"])
def inverse(request, monkeypatch):
    """Run the test with the compiled _lens (which must be built) and with the lens classes' numpy."""
    assert distortion._lens is not None, "mapanything_ros._lens is not built (CMakeLists.txt)"
    if request.param == "numpy":
        monkeypatch.setattr(distortion, "_lens", None)
    clear_ray_cache()  # ray maps made by the other inverse
    yield request.param
    clear_ray_cache()


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
@pytest.mark.usefixtures("inverse")
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
@pytest.mark.usefixtures("inverse")
def test_ray_pixel_ray_round_trip(camera):
    d, uv = directions_in_fov(camera)
    assert len(d) > 500
    back = camera.rays(uv[:, 0], uv[:, 1])
    assert np.isfinite(back).all()
    uv2, ok = camera.project(back)
    assert ok.all() and np.abs(uv2 - uv).max() < 1e-6
    assert np.abs(back - d).max() < 1e-8


@pytest.mark.usefixtures("inverse")
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
@pytest.mark.usefixtures("inverse")
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


@pytest.mark.usefixtures("inverse")
def test_fisheye_rays_match_opencv_undistort():
    u, v = pixel_grid(FISHEYE, step=23)
    rays = FISHEYE.rays(u, v)
    front = np.isfinite(rays[..., 0]) & (rays[..., 2] > 0.05)
    k, dist = cv_k_d(FISHEYE)
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-15)
    xy = cv2.fisheye.undistortPoints(np.stack([u[front], v[front]], -1)[:, None], k, dist, criteria=crit)[:, 0]
    np.testing.assert_allclose(rays[front][:, :2] / rays[front][:, 2:], xy, rtol=1e-7, atol=1e-8)


@pytest.mark.usefixtures("inverse")
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


@pytest.mark.usefixtures("inverse")
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


@pytest.mark.usefixtures("inverse")
def test_empty_or_zero_distortion_is_pinhole():
    k = (500, 0, 320, 0, 500, 240, 0, 0, 1)
    pin = CameraModel.pinhole(500, 500, 320, 240, 640, 480)
    u, v = pixel_grid(pin, step=31)
    for model, d in (("plumb_bob", ()), ("rational_polynomial", (0,) * 8), ("equidistant", (0,) * 4), ("", ())):
        cam = CameraModel.from_camera_info_fields(640, 480, k, d, model)
        assert type(cam.lens).__name__ == "Pinhole"
        np.testing.assert_array_equal(cam.rays(u, v), pin.rays(u, v))


def normalised(camera, step=3):
    """(xd, yd) of a grid of the camera's pixels and, around the edge of its lens's valid field,
    points whose distorted radius is 0.97 to 1.03 times the largest valid one (and that one and its
    neighbouring floats), and hostile ones."""
    k = camera.intrinsics
    u, v = pixel_grid(camera, step)
    yd = (v - k[1, 2]) / k[1, 1]
    xd = ((u - k[0, 2] - k[0, 1] * yd) / k[0, 0]).ravel()
    yd = yd.ravel()
    if type(camera.lens).__name__ != "Pinhole":
        rng = np.random.default_rng(3)
        edge = camera.lens.table[1][-1]
        radius = np.append(edge * rng.uniform(0.97, 1.03, 3000), [edge, np.nextafter(edge, 0), np.nextafter(edge, 9)])
        angle = np.append(rng.uniform(0, 2 * np.pi, 3000), [0, 0, 0])  # the last three on the edge, on the x axis
        xd, yd = np.append(xd, radius * np.cos(angle)), np.append(yd, radius * np.sin(angle))
    hostile = np.array([(np.nan, 0), (0, np.nan), (np.inf, 0), (-np.inf, 1), (0, 0), (-0.0, -0.0), (1e300, 1e300),
                        (1e-300, -1e-300), (5e-324, 0), (-1e-5, 2e-5)])
    return np.append(xd, hostile[:, 0]), np.append(yd, hostile[:, 1])


@pytest.mark.parametrize("camera", DISTORTED + [PINHOLE], ids=IDS + ["pinhole"])
def test_compiled_inverse_gives_the_numpy_rays(camera):
    """_lens.unproject against the lens's numpy unproject: the same valid points, NaN elsewhere; the
    same bits for the pinhole and the equidistant lens, at most 2e-14 apart for the radial-tangential
    ones (whose numpy Newton lets converged points take further steps: _lens.c)."""
    assert distortion._lens is not None, "mapanything_ros._lens is not built (CMakeLists.txt)"
    xd, yd = (a.reshape(-1, 1) for a in normalised(camera))  # any shape
    with np.errstate(all="ignore"):  # numpy's on the hostile points
        want, want_valid = camera.lens.unproject(xd, yd)
    got, got_valid = distortion.unproject(camera.lens, xd, yd)
    assert got.shape == want.shape == xd.shape + (3,) and got_valid.shape == want_valid.shape == xd.shape
    # A point near the valid field's edge, where Newton creeps, can take numpy's batch the 60 steps
    # (its converged points take further steps: _lens.c); numpy on it alone is what _lens gives.
    apart = np.flatnonzero(got_valid != want_valid)
    assert len(apart) <= 3
    with np.errstate(all="ignore"):
        for i in apart:
            want[i], want_valid[i] = camera.lens.unproject(xd[i], yd[i])
    np.testing.assert_array_equal(got_valid, want_valid)
    assert 0.5 < want_valid.mean() < 1  # the hostile points and those beyond the valid field are not valid
    assert np.isnan(got[~got_valid]).all() and np.isnan(want[~want_valid]).all()
    assert_rays_agree(camera, got, want)


def assert_rays_agree(camera, got, want):
    """_lens's rays against numpy's: the same bits for the pinhole; within an ulp for the fisheye
    (its sin and cos are the C library's, numpy's SIMD ones can be an ulp apart on some CPUs); at
    most 2e-14 apart for the radial-tangential lenses."""
    kind = type(camera.lens).__name__
    if kind == "Pinhole":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-14 if kind == "RadialTangential" else 2.3e-16)


def test_compiled_inverse_broadcasts_like_numpy():
    assert distortion._lens is not None, "mapanything_ros._lens is not built (CMakeLists.txt)"
    xd, yd = np.linspace(-0.5, 0.5, 7)[:, None], np.linspace(-0.4, 0.4, 5)[None, :]
    for camera in (PLUMB_BOB, FISHEYE, PINHOLE):
        want, want_valid = camera.lens.unproject(xd, yd)
        got, got_valid = distortion.unproject(camera.lens, xd, yd)
        assert got.shape == (7, 5, 3) and got_valid.shape == (7, 5) and got_valid.all()
        assert_rays_agree(camera, got, want)
        got, got_valid = distortion.unproject(camera.lens, np.zeros((0, 2)), np.zeros((0, 2)))  # nothing
        assert got.shape == (0, 2, 3) and got_valid.shape == (0, 2)
    ray, valid = distortion.unproject(PLUMB_BOB.lens, 0.1, -0.2)  # scalars
    assert ray.shape == (3,) and valid.shape == () and valid


@pytest.mark.parametrize("camera", [PLUMB_BOB, RATIONAL_BARREL, FISHEYE], ids=["plumb_bob", "rational_barrel", "fisheye"])
def test_compiled_inverse_on_the_table_and_a_table_of_two(camera):
    """Targets on the table's own values (searchsorted's ties: the bracket below each), between
    them and beyond it, on the lens's table and on one of two knots (the smallest the module
    takes): numpy's steps with the same table give the same valid points and rays."""
    assert distortion._lens is not None, "mapanything_ros._lens is not built (CMakeLists.txt)"
    kind, coefficients, limit = camera.lens.spec()
    knots, values = camera.lens.table
    two = (knots[[0, -1]].copy(), values[[0, -1]].copy())
    fn = camera.lens._radius_map if kind == distortion.RADTAN else camera.lens._theta_map
    for table in ((knots, values), two):
        targets = np.concatenate([table[1][::97], table[1][-3:], (table[1][1:] + table[1][:-1])[::89] / 2,
                                  [table[1][-1] * 1.01, 0.0]])
        angle = np.linspace(0, 2 * np.pi, len(targets))
        xd, yd = targets * np.cos(angle), targets * np.sin(angle)
        rays, valid = np.empty((len(xd), 3)), np.empty(len(xd), bool)
        distortion._lens.unproject(kind, coefficients, limit, *table, xd, yd, rays, valid)
        if kind == distortion.EQUIDISTANT:  # the numpy inverse with this table
            theta, want_valid = distortion._invert_monotone(fn, np.hypot(xd, yd), *table)
            want_valid &= theta < limit
            np.testing.assert_array_equal(valid, want_valid)
            with np.errstate(invalid="ignore", divide="ignore"):
                scale = np.where(np.hypot(xd, yd) > 0, np.sin(theta) / np.hypot(xd, yd), 1.0)
            want = np.stack([xd * scale, yd * scale, np.cos(theta)], -1)
            np.testing.assert_allclose(rays[valid], want[valid], rtol=0, atol=2.3e-16)
        else:  # the lens's own inverse (its table) where the module had it; valid rays project back
            assert valid[:-2].mean() > 0.5 and not valid[-2] and valid[-1]
            uv, ok = camera.project(rays[valid])
            assert ok.all()
            k = camera.intrinsics
            np.testing.assert_allclose(uv, np.stack([k[0, 0] * xd[valid] + k[0, 2], k[1, 1] * yd[valid] + k[1, 2]], -1),
                                       rtol=1e-9, atol=1e-6)  # plumb_bob's table reaches 1e10 pixels
            if table is not two:
                want, want_valid = camera.lens.unproject(xd, yd)
                np.testing.assert_array_equal(valid, want_valid)
                assert_rays_agree(camera, rays, want)


def test_compiled_inverse_refuses_what_does_not_fit():
    module = distortion._lens
    assert module is not None, "mapanything_ros._lens is not built (CMakeLists.txt)"
    kind, coefficients, limit = PLUMB_BOB.lens.spec()
    knots, table = PLUMB_BOB.lens.table
    x = np.zeros(4)
    rays, valid = np.empty((4, 3)), np.empty(4, bool)
    module.unproject(kind, coefficients, limit, knots, table, x, x, rays, valid)
    assert valid.all() and (rays == [0, 0, 1]).all()
    cases = [
        ((7, coefficients, limit, knots, table, x, x, rays, valid), "kind"),
        ((kind, coefficients, limit, knots, table[:-1], x, x, rays, valid), "knots, table"),
        ((kind, coefficients, limit, knots[:1], table[:1], x, x, rays, valid), "knots, table"),
        ((kind, coefficients, limit, knots, table, x, x[:3], rays, valid), "yd, rays, valid"),
        ((kind, coefficients, limit, knots, table, x, x, rays[:3], valid), "yd, rays, valid"),
        ((kind, coefficients, limit, knots, table, x, x, rays, valid[:3]), "yd, rays, valid"),
        ((kind, coefficients, limit, knots, table, x.astype(np.float32), x, rays, valid), "xd"),
        ((kind, coefficients, limit, knots, table, x, x, rays, valid.astype(np.uint8)), "valid"),
        ((kind, coefficients, limit, knots, table, x, x, rays.astype(np.float32), valid), "rays"),
        ((kind, coefficients[:7], limit, knots, table, x, x, rays, valid), ""),
    ]
    for args, message in cases:
        with pytest.raises((ValueError, TypeError), match=message):
            module.unproject(*args)
    frozen = rays.copy()
    frozen.setflags(write=False)
    with pytest.raises((ValueError, BufferError)):
        module.unproject(kind, coefficients, limit, knots, table, x, x, frozen, valid)
