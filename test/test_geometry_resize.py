"""Resize + center crop to the model resolution: sizes, ray geometry, image/depth resampling, way back."""

import numpy as np
import pytest

from mapanything_ros.geometry.camera import GRID_CENTER, GRID_INDEX, GRID_OFFSETS, CameraModel
from mapanything_ros.geometry.resample import native_inverse_depth, stencil
from mapanything_ros.geometry.resize import Resize, edge_cut, model_size

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


def min_pool_reference(r, depth):
    """The min rule pixel by pixel: each finite positive input pixel goes to the output pixel
    nearest its centre's output coordinates; the smallest value wins."""
    wo, ho = r.out_size
    out = np.full((ho, wo), np.inf, np.float32)
    for i, j in zip(*np.nonzero(np.isfinite(depth) & (depth > 0))):
        u, v = r.to_output(float(j), float(i))
        ou, ov = int(np.floor(u + 0.5)), int(np.floor(v + 0.5))
        if 0 <= ou < wo and 0 <= ov < ho:
            out[ov, ou] = min(out[ov, ou], depth[i, j])
    out[np.isinf(out)] = 0
    return out


@pytest.mark.parametrize("resize", [Resize.to_model(1280, 720), Resize.to_model(640, 480),
                                    Resize.cover((300, 200), (518, 392)), Resize.stretch((97, 61), (40, 70))],
                         ids=["shrink-crop-720p", "shrink-480p", "enlarge-crop", "stretch"])
def test_sparse_depth_min_matches_the_pixel_by_pixel_rule(resize):
    w, h = resize.in_size
    d = sparse_depth_map((w, h), density=0.03, seed=w)
    d[1, 5:9] = [np.inf, -np.inf, -2.0, np.nan]  # never measurements
    np.testing.assert_array_equal(resize.sparse_depth(d, "min"), min_pool_reference(resize, d))


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


# Native inverse depth in the normalised image plane (geometry.resample).

FISHEYE = CameraModel(128, 96, (57.5, 0, 64.1875, 0, 57.5, 47.5, 0, 0, 1), (0.02, -0.01, 0.002, 0.0), "equidistant")
PLANE = np.array([0.1, -0.1, 1.0]) / 2.5  # points X with PLANE · X = 1


def plane_inverse_depth(rays):
    """1/z of PLANE along rays (..., 3): PLANE · (x/z, y/z, 1); NaN where the ray misses it or z <= 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        inv = (rays @ PLANE) / rays[..., 2]
    return np.where((rays[..., 2] > 0) & (inv > 0), inv, np.nan)


@pytest.mark.parametrize("grid", [GRID_INDEX, GRID_CENTER])
@pytest.mark.parametrize("model", [(112, 84), (42, 32), (160, 112)])  # shrink, shrink by 3 (model pixels on native ones), enlarge
def test_native_inverse_depth_is_exact_on_planes_under_a_fisheye(grid, model):
    r = Resize.cover(FISHEYE.image_size, model)
    model_rays = r.rays(FISHEYE, grid)
    truth = plane_inverse_depth(FISHEYE.ray_map(grid=grid))
    native = native_inverse_depth(FISHEYE, r, grid, plane_inverse_depth(model_rays).astype(np.float32), 0.05)
    assert native.shape == (96, 128) and native.dtype == np.float32
    inside = np.isfinite(r.to_native(np.ones(model[::-1])))
    both = np.isfinite(native) & np.isfinite(truth)
    assert not (np.isfinite(native) & ~inside).any() and both.sum() > 0.9 * (inside & np.isfinite(truth)).sum()
    assert np.max(np.abs(native[both] / truth[both] - 1)) < 1e-6  # float32 rounding
    if model == (112, 84):  # interpolating in pixel coordinates misses by far more under this lens
        pixel = r.to_native(plane_inverse_depth(model_rays), "bilinear")
        assert np.nanmax(np.abs(pixel / truth - 1)) > 1e-4


def test_native_inverse_depth_copies_model_pixels_at_the_model_size():
    r = Resize.cover(FISHEYE.image_size, FISHEYE.image_size)
    inv = plane_inverse_depth(r.rays(FISHEYE)).astype(np.float32)
    inv[40, 50] = np.nan
    out = native_inverse_depth(FISHEYE, r, GRID_INDEX, inv, 0.05)
    np.testing.assert_array_equal(out, inv)  # a NaN stays one pixel


def test_native_inverse_depth_cuts_between_surfaces_only():
    r = Resize.cover(FISHEYE.image_size, (112, 84))
    rays = r.rays(FISHEYE)
    near = plane_inverse_depth(rays)
    step = np.where(np.arange(112) < 56, near, 0.5 * near).astype(np.float32)  # a far wall behind the right half
    plain = native_inverse_depth(FISHEYE, r, GRID_INDEX, step)
    aware = native_inverse_depth(FISHEYE, r, GRID_INDEX, step, max_jump=0.05)
    cut = np.isnan(aware) & np.isfinite(plain)
    assert cut.any() and np.all(np.isin(np.nonzero(cut)[1], np.arange(60, 68)))  # native columns around the step
    np.testing.assert_array_equal(aware[~cut], plain[~cut])


@pytest.mark.parametrize("out", [(112, 84), (518, 392), (128, 96), (70, 42)])
def test_stencil_cut_is_resize_cut_over_the_same_pairs(out):
    """The stencil's per-cell side masks give the cut of edge_cut over Resize.cut_pairs exactly,
    for enlarging, shrinking and same-size resizes (pixels on cell sides use fewer pairs)."""
    r = Resize.cover(FISHEYE.image_size, out)
    rng = np.random.default_rng(sum(out))
    values = (1.0 + rng.random(out[::-1]) * np.where(rng.random(out[::-1]) < 0.1, 3.0, 0.02)).astype(np.float32)
    st = stencil(FISHEYE, r)
    for jump in (0.01, 0.05, 0.5):
        expected = edge_cut(values, jump, *r.cut_pairs())
        np.testing.assert_array_equal(st.cut(values, jump), expected)


@pytest.mark.parametrize("r", [Resize.cover((640, 480), (112, 84)), Resize.cover((640, 480), (518, 392)),
                               Resize.stretch((160, 120), (320, 240)), Resize.stretch((320, 240), (160, 120)),
                               Resize.stretch((64, 48), (64, 48)), Resize.cover((97, 61), (56, 42)),
                               Resize.stretch((40, 30), (120, 90)), Resize.stretch((64, 30), (128, 90)),
                               Resize.stretch((60, 45), (180, 90))])
def test_cut_sides_and_pairs_are_the_pairs_bilinear_weights_use(r):
    """A side of the output cell around an input pixel counts where both its pixels have a nonzero
    bilinear weight; cut_sides' bits (top, bottom, left, right) and cut_pairs' pairs (across: top,
    bottom; down: left, right) say so, for shrinking, enlarging, exact 2x, 1/2x and 3x, same-size
    and mixed 2x / 3x resizes (input pixels on cell sides along one axis or both: weights of 0)."""
    wo, ho = r.out_size
    c0, fx, r0, fy, _ = r.cells()
    fx, fy = fx[None, :], fy[:, None]
    weight = {"tl": (1 - fx) * (1 - fy), "tr": fx * (1 - fy), "bl": (1 - fx) * fy, "br": fx * fy}
    counts = lambda a, b: (weight[a] != 0) & (weight[b] != 0)  # noqa: E731
    expected = [counts("tl", "tr"), counts("bl", "br"), counts("tl", "bl"), counts("tr", "br")]
    cells = [r0[:, None] * wo + c0, np.minimum(r0 + 1, ho - 1)[:, None] * wo + c0, r0[:, None] * wo + c0,
             r0[:, None] * wo + np.minimum(c0 + 1, wo - 1)]  # each pair's first pixel
    across, down = r.cut_pairs()
    sides = r.cut_sides()
    assert sides.dtype == np.uint8 and sides.shape == across.shape[1:] and sides.max() < 16
    for bit, (pairs, want, cell) in enumerate(zip((across[0], across[1], down[0], down[1]), expected, cells)):
        np.testing.assert_array_equal(sides >> bit & 1, want)
        np.testing.assert_array_equal(pairs, np.where(want, cell, wo * ho))


def test_plane_coords_are_nan_behind_the_camera():
    """Normalised image coordinates of rays: x/z, y/z; NaN for z <= 0 (a fisheye's rays beyond
    90 degrees) and for NaN rays."""
    from mapanything_ros.geometry.resample import _plane_coords

    rays = np.array([[0.6, -0.8, 2.0], [0.3, 0.4, 0.0], [0.1, 0.2, -0.5], [np.nan] * 3, [0.0, 0.0, 1.0]])
    out = _plane_coords(rays)
    np.testing.assert_array_equal(out, [[0.3, -0.4], [np.nan] * 2, [np.nan] * 2, [np.nan] * 2, [0.0, 0.0]])


@pytest.mark.parametrize("grid", [GRID_INDEX, GRID_CENTER])
def test_stencil_reads_the_native_rays_without_keeping_them(grid):
    """The stencil's native rays are CameraModel.ray_map's bits (the tables are those made from
    it), made for the stencil alone: no native ray map is left in the cache."""
    from mapanything_ros.geometry import camera as camera_module, resample

    r = Resize.to_model(*RATIONAL.image_size)
    camera_module.clear_ray_cache()
    built = resample._stencil.__wrapped__(RATIONAL, r, grid)
    assert camera_module._cached_ray_map.cache_info().currsize == 1  # the model-size map alone
    c0, fx, r0, fy, inside = r.cells()
    uv, p = (resample._plane_coords(m).reshape(-1, 2) for m in (RATIONAL.ray_map(grid=grid, resize=r),
                                                                RATIONAL.ray_map(grid=grid)))
    index, weight = resample._stencil_tables(uv, p, c0, fx, r0, fy, inside, *r.out_size)
    np.testing.assert_array_equal(built.index, index)
    np.testing.assert_array_equal(built.weight.view(np.uint32), weight.view(np.uint32))


def test_stencil_is_cached_per_grid_and_checks_its_resize():
    r = Resize.cover(FISHEYE.image_size, (112, 84))
    assert stencil(FISHEYE, r, GRID_INDEX) is stencil(FISHEYE, r)
    assert stencil(FISHEYE, r, GRID_CENTER) is not stencil(FISHEYE, r)
    pinhole = CameraModel.pinhole(60, 60, 64, 48, 128, 96)
    with pytest.raises(ValueError, match="grid"):
        stencil(FISHEYE, r, "corner")
    with pytest.raises(ValueError, match="resize"):
        stencil(pinhole, Resize.cover((640, 480), (112, 84)))


def _jump_maps(rng, shape):
    """Positive maps with steps, noise, NaN, infinities, zeros, values near float32's largest
    (differences that overflow) and denormals: every branch of the edge test."""
    v = (1.0 + rng.random(shape) * np.where(rng.random(shape) < 0.1, 3.0, 0.02)).astype(np.float32)
    specials = np.array([np.nan, np.inf, 0.0, 3e38, 1e-40, 1e-3, 1e3], np.float32)
    pick = rng.random(shape) < 0.15
    v[pick] = rng.choice(specials, int(pick.sum()))
    return v


@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (2, 1), (1, 9), (9, 1), (2, 2), (3, 3), (4, 4), (3, 5), (5, 3),
                                   (6, 7), (31, 17), (392, 518)])
def test_compiled_edge_jumps_give_numpys_bits(shape, monkeypatch):
    """_resample.jumps gives resize.edge_jumps' numpy result exactly: across and down, on maps of
    every small shape (lines of one to four pairs, where the first and last pairs meet) and a model
    map's, with NaN, infinite, zero, overflowing and denormal values, at integer and float
    thresholds (numpy rounds them to float32)."""
    from mapanything_ros.geometry import resize as module

    assert module._resample is not None, "mapanything_ros._resample is not built (CMakeLists.txt)"
    rng = np.random.default_rng(sum(shape))
    for trial in range(8):
        v = _jump_maps(rng, shape)
        for jump in (0.05, 0.3, 1e-7, 0, 2):
            compiled = module.edge_jumps(v, jump)
            with monkeypatch.context() as m:
                m.setattr(module, "_resample", None)
                with np.errstate(invalid="ignore", over="ignore"):  # inf - inf, 3e38 - -3e38
                    expected = module.edge_jumps(v, jump)
            for got, want in zip(compiled, expected):
                assert got.dtype == np.bool_ and got.shape == want.shape
                np.testing.assert_array_equal(got, want, err_msg=f"{shape} trial {trial} jump {jump}")


def test_compiled_edge_jumps_round_at_the_threshold_as_numpy(monkeypatch):
    """At the threshold itself (a step of max_jump times the smaller value, give or take a few
    float32 ulps, on rows a, a, x, x of many magnitudes) the compiled test decides as numpy's
    float32 arithmetic does: a product or comparison in double would differ on some rows."""
    from mapanything_ros.geometry import resize as module

    rng = np.random.default_rng(7)
    for jump in (0.05, 0.3):
        a = (10.0 ** rng.uniform(-1, 1, 4000)).astype(np.float32)
        x = (a * (1 + np.float32(jump))).astype(np.float32)
        rows = [np.stack([a, a, s, s], 1) for s in (x, *(np.nextafter(x, t) for t in (np.inf, 0)))]
        v = np.concatenate(rows)
        compiled = module.edge_jumps(v, jump)
        with monkeypatch.context() as m:
            m.setattr(module, "_resample", None)
            expected = module.edge_jumps(v, jump)
        assert 0 < compiled[0].sum() < len(v)  # both sides of the threshold are here
        for got, want in zip(compiled, expected):
            np.testing.assert_array_equal(got, want)


def test_compiled_edge_jumps_take_only_what_numpy_rounds_alike(monkeypatch):
    """The compiled test runs for float32 maps and Python-number or float32 thresholds; a float64
    threshold (numpy compares in float64 then), a float64 map or an empty one take the numpy path,
    and _resample.jumps checks its buffers."""
    from mapanything_ros.geometry import resize as module

    calls = []
    compiled = module._resample
    monkeypatch.setattr(module, "_resample", type("Spy", (), {
        "jumps": staticmethod(lambda *a: calls.append(1) or compiled.jumps(*a))}))
    v = _jump_maps(np.random.default_rng(0), (20, 30))
    module.edge_jumps(v, 0.05)
    module.edge_jumps(v, np.float32(0.05))
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf, 3e38 - -3e38 in numpy
        module.edge_jumps(v, np.float64(0.05))
        module.edge_jumps(v.astype(np.float64), 0.05)
    assert calls == [1, 1]
    for shape in ((3, 0), (0, 4), (0, 0)):  # nothing to compare: no pair is a jump
        for got in module.edge_jumps(np.zeros(shape, np.float32), 0.05):
            assert got.shape == (1,) and not got.any()
    across, down = np.ones((2, 20 * 30 + 1), bool)  # written whole, whatever they held
    compiled.jumps(v.ravel(), 30, 0.05, across, down)
    for got, want in zip((across, down), module.edge_jumps(v, 0.05)):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="width"):
        compiled.jumps(v.ravel(), 7, 0.05, across, down)
    with pytest.raises(ValueError, match="across"):
        compiled.jumps(v.ravel(), 30, 0.05, across[:-1], down)
    with pytest.raises(ValueError, match="v"):
        compiled.jumps(v.astype(np.float64).ravel(), 30, 0.05, across, down)


STENCIL_PINHOLE = CameraModel.pinhole(200, 200, 79.5, 59.5, 160, 120)
STENCIL_PLUMB = CameraModel(160, 120, (120, 0, 80.3, 0, 121, 59.4, 0, 0, 1), (-0.3, 0.1, 0.001, -0.002, 0.0), "plumb_bob")


def _tables_both_ways(monkeypatch, camera, r, grid):
    """The stencil of (camera, r, grid) built by the compiled tables and by numpy (uncached)."""
    from mapanything_ros.geometry import resample

    assert resample._resample is not None, "mapanything_ros._resample is not built (CMakeLists.txt)"
    compiled = resample._stencil.__wrapped__(camera, r, grid)
    monkeypatch.setattr(resample, "_resample", None)
    plain = resample._stencil.__wrapped__(camera, r, grid)
    monkeypatch.undo()
    return compiled, plain


@pytest.mark.parametrize("grid", [GRID_INDEX, GRID_CENTER])
@pytest.mark.parametrize("camera, out", [(RATIONAL, None), (RATIONAL, (112, 84)), (FISHEYE, None),
                                         (FISHEYE, (128, 96)), (FISHEYE, (70, 42)), (STENCIL_PINHOLE, (320, 240)),
                                         (STENCIL_PINHOLE, (80, 60)), (STENCIL_PLUMB, (320, 240))])
def test_compiled_stencil_is_numpys_to_the_bit(monkeypatch, camera, out, grid):
    """_resample.stencil gives _stencil_tables' index and weights bit for bit (NaN where numpy's
    are), for shrinking, enlarging and same-size resizes, and exact 2x and 1/2x stretches (native
    pixels on the model cells' sides and diagonals)."""
    if out is None:
        r = Resize.to_model(*camera.image_size)
    elif camera in (STENCIL_PINHOLE, STENCIL_PLUMB):
        r = Resize.stretch(camera.image_size, out)
    else:
        r = Resize.cover(camera.image_size, out)
    compiled, plain = _tables_both_ways(monkeypatch, camera, r, grid)
    for a, b in zip(compiled.tables, plain.tables):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a.view(np.uint32) if a.dtype == np.float32 else a,
                                      b.view(np.uint32) if b.dtype == np.float32 else b)
    assert (compiled.shape, compiled.model_size) == (plain.shape, plain.model_size)


def test_compiled_stencil_tables_on_random_and_special_coordinates():
    """Random model and native coordinates with NaN and infinities, pixel offsets on cell sides,
    corners and diagonals (the single-pixel cases) and either side of the diagonal, against
    _stencil_tables."""
    from mapanything_ros.geometry.resample import _resample, _stencil_tables

    assert _resample is not None, "mapanything_ros._resample is not built (CMakeLists.txt)"
    rng = np.random.default_rng(7)
    for wo, ho, w, h in [(9, 7, 23, 17), (2, 2, 5, 4), (1, 3, 4, 6), (5, 1, 7, 2)]:
        uv = rng.normal(size=(wo * ho, 2))
        uv[rng.random(uv.shape) < 0.05] = np.nan
        uv[rng.random(uv.shape) < 0.02] = np.inf
        p = rng.normal(size=(w * h, 2))
        p[rng.random(p.shape) < 0.05] = np.nan
        fx = rng.choice([0.0, 1.0, 0.5, -0.25, 1.25, 0.3, 0.7, 0.1, 0.9], w)
        fy = rng.choice([0.0, 1.0, 0.5, -0.25, 1.25, 0.3, 0.7, 0.9, 0.1], h)
        c0, r0 = rng.integers(0, max(wo - 1, 1), w), rng.integers(0, max(ho - 1, 1), h)
        inside = rng.random((h, w)) < 0.9
        want_index, want_weight = _stencil_tables(uv, p, c0, fx, r0, fy, inside, wo, ho)
        index, weight = np.empty((3, w * h), np.intp), np.empty((3, w * h), np.float32)
        _resample.stencil(uv, p, c0.astype(np.intp), fx, r0.astype(np.intp), fy, inside, wo, index, weight)
        np.testing.assert_array_equal(index, want_index)
        np.testing.assert_array_equal(weight.view(np.uint32), want_weight.view(np.uint32))
    with pytest.raises(ValueError, match="outside the model image"):
        _resample.stencil(uv, p, np.full(w, wo, np.intp), fx, r0.astype(np.intp), fy, inside, wo, index, weight)
    with pytest.raises(ValueError, match="width"):
        _resample.stencil(uv, p, c0.astype(np.intp), fx, r0.astype(np.intp), fy, inside, 0, index, weight)
    with pytest.raises(ValueError, match="uv"):
        _resample.stencil(uv.ravel()[:-1], p, c0.astype(np.intp), fx, r0.astype(np.intp), fy, inside, wo, index, weight)


@pytest.mark.parametrize("uv", [[[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [5.0, 5.0]],  # collinear: det 0
                                [[0.0, 0.0], [1e-160, 0.0], [0.0, 1e-160], [1e-160, 1e-160]],  # det underflows
                                [[0.0, 0.0], [1e300, 0.0], [0.0, 1e300], [1e300, 1e300]]])  # det overflows
def test_compiled_stencil_tables_on_degenerate_triangles(uv):
    """Collinear, vanishing and overflowing model triangles (one 2 x 2 model cell, native pixels
    either side of the diagonal and on it), against _stencil_tables."""
    from mapanything_ros.geometry.resample import _resample, _stencil_tables

    assert _resample is not None, "mapanything_ros._resample is not built (CMakeLists.txt)"
    uv = np.array(uv)
    rng = np.random.default_rng(3)
    p = np.concatenate([rng.normal(size=(18, 2)), rng.normal(size=(18, 2)) * 1e-160])
    fx = np.array([0.7, 0.3, 0.5, 0.0, 1.0, 0.1])
    fy = np.array([0.30000000000000004, 0.7, 0.5, 0.0, 0.9000000000000001, 0.9])
    c0, r0, inside = np.zeros(6, np.intp), np.zeros(6, np.intp), np.ones((6, 6), bool)
    want_index, want_weight = _stencil_tables(uv, p, c0, fx, r0, fy, inside, 2, 2)
    index, weight = np.empty((3, 36), np.intp), np.empty((3, 36), np.float32)
    _resample.stencil(uv, p, c0, fx, r0, fy, inside, 2, index, weight)
    np.testing.assert_array_equal(index, want_index)
    np.testing.assert_array_equal(weight.view(np.uint32), want_weight.view(np.uint32))
