"""Resize + center crop to the model resolution: sizes, ray geometry, image/depth resampling, way back."""

import numpy as np
import pytest

from mapanything_ros.geometry.camera import GRID_CENTER, GRID_INDEX, GRID_OFFSETS, CameraModel
from mapanything_ros.geometry.resize import Resize, model_size

RATIONAL = CameraModel(
    1280, 720, (700, 0, 641.2, 0, 702, 359.3, 0, 0, 1), (0.5, -2.6, 5e-4, -3e-4, 1.5, 0.39, -2.4, 1.4), "rational_polynomial"
)


@pytest.mark.parametrize(
    "size, expected",
    [((640, 480), (518, 392)), ((1280, 720), (518, 294)), ((1920, 1080), (518, 294)), ((1000, 1000), (518, 518)),
     ((480, 640), (392, 518)), ((1440, 1080), (518, 392)), ((2048, 1000), (518, 252))],
)
def test_model_sizes(size, expected):
    assert model_size(*size) == expected
    r = Resize.to_model(*size)
    assert r.out_size == expected and max(expected) == 518 and all(s % 14 == 0 for s in expected)
    assert r.resized_size[0] >= expected[0] and r.resized_size[1] >= expected[1]
    # Aspect ratio is kept to within a pixel of rounding before the crop.
    assert abs(r.resized_size[0] / r.resized_size[1] - size[0] / size[1]) < 2 / min(r.resized_size)


def test_other_long_side_uses_longest_side_rule():
    assert model_size(1280, 720, long_side=448) == (448, 252)
    assert model_size(480, 640, long_side=224, patch=16) == (160, 224)
    w, h = model_size(1000, 333, long_side=700)
    assert w == 700 and h % 14 == 0


def test_resize_matches_upstream_crop_for_1280x720():
    r = Resize.to_model(1280, 720)
    # Upstream: s = 294/720 + 1e-8, floor(1280 s) = 522, center crop (522 - 518) // 2 = 2.
    assert r.resized_size == (522, 294) and r.crop == (2, 0)


@pytest.mark.parametrize("grid", [GRID_INDEX, GRID_CENTER])
def test_pinhole_rays_equal_scaled_intrinsics(grid):
    fx, fy, cx, cy = 600.0, 605.0, 319.7, 241.1
    cam = CameraModel.pinhole(fx, fy, cx, cy, 640, 480)
    r = Resize.to_model(640, 480)
    sx, sy = r.scale
    g = GRID_OFFSETS[grid]
    # Scaling with pixel centres at index + 0.5 in corner coordinates (upstream camera_matrix_of_crop).
    cx2 = (cx + 0.5 - g) * sx - 0.5 + g - r.crop[0]
    cy2 = (cy + 0.5 - g) * sy - 0.5 + g - r.crop[1]
    scaled = CameraModel.pinhole(fx * sx, fy * sy, cx2, cy2, *r.out_size)
    np.testing.assert_allclose(r.rays(cam, grid), scaled.ray_map(grid=grid), atol=1e-13)


def test_distorted_rays_use_the_exact_model():
    r = Resize.to_model(1280, 720)
    rays = r.rays(RATIONAL, GRID_INDEX)
    assert rays.shape == (294, 518, 3) and np.isfinite(rays).all()
    v, u = np.mgrid[0:294, 0:518]
    np.testing.assert_array_equal(rays, RATIONAL.rays(*r.to_source(u, v)))
    # Distortion acts on normalised coordinates, so the exact rays equal those of the same lens
    # with K scaled as above; they differ from a pinhole with that K (distortion ignored) and from
    # naive K scaling (cx * s without the half-pixel shift).
    sx, sy = r.scale
    k = RATIONAL.k
    k2 = (k[0] * sx, 0, (k[2] + 0.5) * sx - 0.5 - r.crop[0], 0, k[4] * sy, (k[5] + 0.5) * sy - 0.5 - r.crop[1], 0, 0, 1)
    same_lens = CameraModel(518, 294, k2, RATIONAL.d, "rational_polynomial")
    np.testing.assert_allclose(rays, same_lens.ray_map(), atol=1e-12)
    pinhole = CameraModel(518, 294, k2)
    assert np.abs(rays - pinhole.ray_map()).max() > 5e-3
    naive = CameraModel(518, 294, (k[0] * sx, 0, k[2] * sx - r.crop[0], 0, k[4] * sy, k[5] * sy - r.crop[1], 0, 0, 1),
                        RATIONAL.d, "rational_polynomial")
    assert np.abs(rays - naive.ray_map()).max() > 1e-4


def test_rays_checks_camera_size():
    with pytest.raises(ValueError, match="resize"):
        Resize.to_model(640, 480).rays(RATIONAL, GRID_INDEX)


@pytest.mark.parametrize("size", [(1280, 720), (300, 200)])
def test_image_resampling_is_centre_aligned(size):
    """A linear ramp resampled by the image path takes the value of to_source at each pixel."""
    r = Resize.to_model(*size)
    ramp_x = np.tile(np.arange(size[0], dtype=np.float32), (size[1], 1))
    ramp_y = np.tile(np.arange(size[1], dtype=np.float32)[:, None], (1, size[0]))
    out = r.image(np.stack([ramp_x, ramp_y], -1))
    assert out.shape == (r.out_size[1], r.out_size[0], 2)
    v, u = np.mgrid[0 : r.out_size[1], 0 : r.out_size[0]]
    su, sv = r.to_source(u, v)
    inner = (slice(3, -3), slice(3, -3))  # away from the clamped image border
    # OpenCV quantises sample positions/weights (1/32 px tables), so allow a few hundredths of a
    # pixel per sample but no systematic offset (a half-pixel convention error would be >= 0.25).
    for channel, ref in ((0, su), (1, sv)):
        err = out[..., channel][inner] - ref[inner]
        assert np.abs(err).max() < 0.08 and abs(err.mean()) < 0.01
    rgb = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    assert r.image(rgb).shape == (r.out_size[1], r.out_size[0], 3) and r.image(rgb).dtype == np.uint8


def sparse_depth_map(size, density=0.05, seed=0):
    rng = np.random.default_rng(seed)
    d = rng.uniform(0.5, 40.0, (size[1], size[0])).astype(np.float32)
    d[rng.random(d.shape) > density] = 0
    d[0, :5] = np.nan  # invalid entries are not measurements
    return d


@pytest.mark.parametrize("mode", ["nearest", "min"])
def test_sparse_depth_never_blends(mode):
    r = Resize.to_model(1280, 720)
    d = sparse_depth_map((1280, 720))
    out = r.sparse_depth(d, mode)
    assert out.shape == (294, 518) and out.dtype == np.float32
    inputs = set(d[np.isfinite(d)].tolist()) | {0.0}
    assert set(out.ravel().tolist()) <= inputs
    assert (out > 0).any()


def test_sparse_depth_min_keeps_nearest_measurement_per_block():
    r = Resize.stretch((8, 8), (2, 2))
    d = np.zeros((8, 8), np.float32)
    d[1, 1], d[2, 3], d[3, 0] = 5.0, 3.0, 4.0  # block (0, 0)
    d[5, 5] = 7.0  # block (1, 1)
    np.testing.assert_array_equal(r.sparse_depth(d, "min"), [[3.0, 0.0], [0.0, 7.0]])
    # Point sampling reads the input pixel nearest to each output centre (1.5 -> 2) and loses most.
    np.testing.assert_array_equal(r.sparse_depth(d, "nearest"), [[0.0, 0.0], [0.0, 0.0]])
    dense = np.arange(64, dtype=np.float32).reshape(8, 8) + 1
    np.testing.assert_array_equal(r.sparse_depth(dense, "nearest"), dense[[2, 6]][:, [2, 6]])
    with pytest.raises(ValueError, match="mode"):
        r.sparse_depth(d, "bilinear")


def test_sparse_depth_min_keeps_more_measurements_than_point_sampling():
    r = Resize.to_model(1280, 720)
    d = sparse_depth_map((1280, 720), density=0.02)
    assert (r.sparse_depth(d, "min") > 0).sum() > 3 * (r.sparse_depth(d, "nearest") > 0).sum()


def test_to_native_nearest_and_bilinear():
    r = Resize.to_model(1280, 720)
    wo, ho = r.out_size
    v, u = np.mgrid[0:ho, 0:wo].astype(np.float32)
    native = r.to_native(u, "nearest")
    assert native.shape == (720, 1280) and native.dtype == np.float32
    x, _ = r.to_output(np.arange(1280), np.arange(720))
    inside = (x >= -0.5) & (x < wo - 0.5)
    assert np.isnan(native[:, ~inside]).all() and np.isfinite(native[:, inside]).all()
    np.testing.assert_array_equal(native[0, inside], np.clip(np.floor(x[inside] + 0.5), 0, wo - 1))
    lin = r.to_native(np.stack([u, v], -1), "bilinear")
    assert lin.shape == (720, 1280, 2)
    xs, ys = r.to_output(np.arange(1280), np.arange(720))
    np.testing.assert_allclose(lin[:, inside, 0], np.broadcast_to(xs[inside], (720, inside.sum())), atol=1e-4)
    np.testing.assert_allclose(lin[:, inside, 1], np.broadcast_to(ys[:, None], (720, inside.sum())), atol=1e-4)
    with pytest.raises(ValueError):
        r.to_native(u[:-1])


def test_sparse_depth_then_to_native_returns_measured_values():
    r = Resize.to_model(640, 480)
    d = sparse_depth_map((640, 480), density=0.3)
    small = r.sparse_depth(d, "min")
    back = r.to_native(small, "nearest")
    vals = back[np.isfinite(back) & (back > 0)]
    assert set(vals.tolist()) <= set(d[np.isfinite(d)].tolist())
