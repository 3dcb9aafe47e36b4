"""project_to_depth gives depth maps bit-identical to the implementation before issue 9
(test/reference_depth.py) on random clouds: points behind the camera, outside the image or the
lens's field of view, non-finite, many on one pixel; every lens model, ROI and binning, both pixel
grids, resize; static and motion-compensated with sorted, periodic, shuffled and unique times; the
compiled steps (_sparse_depth) and the numpy ones alike."""

import zlib

import numpy as np
import pytest

import reference_depth
from mapanything_ros.geometry import depth as depth_module
from mapanything_ros.geometry.camera import GRID_CENTER, GRID_INDEX, CameraModel, grid_offset
from mapanything_ros.geometry.depth import SourceMotion, _row, _time_groups, project_to_depth
from mapanything_ros.geometry.resize import Resize
from mapanything_ros.geometry.transforms import interpolate_pose, pose_from_quat_trans, transform_points

CAMERAS = {
    "pinhole": CameraModel.pinhole(300.0, 310.0, 159.5, 120.2, 320, 240),
    "plumb_bob": CameraModel(640, 480, (525, 0, 319.5, 0, 527, 239.5, 0, 0, 1), (-0.28, 0.07, 1e-4, -2e-4, 0.02),
                             "plumb_bob"),
    "rational_barrel": CameraModel(960, 540, (500, 0.3, 480, 0, 500, 270, 0, 0, 1),
                                   (-0.3, 0.1, 1e-3, 1e-3, -0.02, 0.1, 0.02, 0.01), "rational_polynomial"),
    "fisheye": CameraModel(1280, 1024, (330, 0, 640, 0, 331, 512, 0, 0, 1), (0.02, -0.01, 0.003, -0.0005),
                           "equidistant"),
    # valid to 50 deg only: beyond it theta_d falls again, back inside the image
    "fisheye_limited": CameraModel(640, 480, (200, 0, 320, 0, 200, 240, 0, 0, 1), (-0.5, 0.05, 0, 0), "equidistant"),
    "binned_roi": CameraModel(2560, 1600, (840, 0, 1280.6, 0, 842, 803.4, 0, 0, 1),
                              (0.5, -2.6, 5e-4, -3e-4, 1.5, 0.39, -2.4, 1.4), "rational_polynomial",
                              binning_x=2, binning_y=2, roi=(200, 100, 1200, 2000, False)),
}
T0 = 1_700_000_000_000_000_000
SWEEP = 100_000_000


def random_pose(rng, angle=np.pi, shift=1.0):
    axis = rng.normal(size=3)
    half = 0.5 * rng.uniform(-angle, angle)
    q = np.append(np.sin(half) * axis / np.linalg.norm(axis), np.cos(half))
    return pose_from_quat_trans(q, rng.normal(0, shift, 3))


def random_cloud(rng, n):
    """Points all around (half behind any camera), at 0.05-80 m, some non-finite, one pixel shared by many."""
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    p = d * rng.uniform(0.05, 80, (n, 1))
    p[rng.random(n) < 0.01, rng.integers(0, 3)] = np.nan
    p[rng.random(n) < 0.01, rng.integers(0, 3)] = np.inf
    p[1:200] = d[0] * rng.uniform(0.5, 5, (199, 1))  # one ray: duplicates of a pixel, nearest wins
    p[200:260] = p[1]  # exact duplicates
    return p


def bits(depth):
    return depth.view(np.uint32)


@pytest.fixture(params=["compiled", "numpy"])
def steps(request, monkeypatch):
    """Run the test with the compiled _sparse_depth (which must be built) and with numpy alone."""
    assert depth_module._sparse_depth is not None, "mapanything_ros._sparse_depth is not built (CMakeLists.txt)"
    if request.param == "numpy":
        monkeypatch.setattr(depth_module, "_sparse_depth", None)
    return request.param


@pytest.mark.parametrize("name", list(CAMERAS))
@pytest.mark.parametrize("grid", [GRID_INDEX, GRID_CENTER])
def test_static_projection_is_identical(name, grid, steps):
    camera = CAMERAS[name]
    rng = np.random.default_rng(zlib.crc32(f"{name} {grid}".encode()))
    for k in range(4):
        points = random_cloud(rng, 30_000)
        pose = random_pose(rng)
        resize = Resize.to_model(*camera.image_size) if k % 2 else None
        new = project_to_depth(points, pose, camera, grid=grid, resize=resize)
        with np.errstate(invalid="ignore"):  # the old fisheye model warned on inf coordinates
            old = reference_depth.project_to_depth(points, pose, camera, grid=grid, resize=resize)
        assert new.dtype == np.float32 and new.shape == old.shape
        assert np.array_equal(bits(new), bits(old))
        assert (old > 0).sum() > 100


def times_like(kind, rng, n):
    """Per-point int ns times of a 100 ms sweep laid out as `kind`."""
    columns = 1000
    if kind == "periodic":  # organised row-major sweep, one time per column (Ouster, the synthetic LiDAR)
        t = np.tile(np.arange(columns) * (SWEEP // columns), n // columns + 1)[:n]
    elif kind == "sorted":  # column-major: runs of equal times
        t = np.sort(rng.integers(0, columns, n)) * (SWEEP // columns)
    elif kind == "shuffled":
        t = rng.permutation(np.arange(n) % columns) * (SWEEP // columns)
    elif kind == "unique":  # a time per point (Velodyne-like firing times)
        t = rng.permutation(n) * (SWEEP // n)
    else:  # one time for all
        t = np.full(n, SWEEP // 2)
    return T0 + t.astype(np.int64)


@pytest.mark.parametrize("kind", ["periodic", "sorted", "shuffled", "unique", "single"])
@pytest.mark.parametrize("name", ["pinhole", "plumb_bob", "fisheye"])
def test_motion_compensated_projection_is_identical(kind, name, steps):
    camera = CAMERAS[name]
    rng = np.random.default_rng(zlib.crc32(f"{kind} {name}".encode()))
    n = 40_000
    points = random_cloud(rng, n)
    times = times_like(kind, rng, n)
    motion = SourceMotion(T0, random_pose(rng), T0 + SWEEP, random_pose(rng, 0.3, 0.5), T0 + SWEEP + 7_000_000,
                          extrapolate=True)
    pose = random_pose(rng)
    for t in (times, (times - T0) * 1e-9 + 1.7e9):  # int ns, float seconds
        new = project_to_depth(points, pose, camera, times=t, motion=motion)
        with np.errstate(invalid="ignore"):
            old = reference_depth.project_to_depth(points, pose, camera, times=t, motion=motion)
        assert np.array_equal(bits(new), bits(old))
        assert (old > 0).sum() > 100


@pytest.mark.parametrize("name", ["pinhole", "fisheye", "plumb_bob"])
def test_a_point_on_the_optical_axis_lands_on_the_principal_point(name, steps):
    """The fisheye's angle is 0 there (no division by its radius): random clouds never hit it exactly."""
    camera = CAMERAS[name]
    depth = project_to_depth(np.array([[0.0, 0.0, 2.5], [0.0, 0.0, -1.0]]), np.eye(4), camera)
    k = camera.intrinsics
    assert np.flatnonzero(depth).tolist() == [int(np.floor(k[1, 2] + 0.5)) * depth.shape[1] + int(np.floor(k[0, 2] + 0.5))]
    assert depth.max() == np.float32(2.5)


def test_compiled_steps_check_their_arguments():
    """_sparse_depth refuses buffers that do not fit, runs that do not cut the sweep and orders
    outside it, rather than read past them."""
    module = depth_module._sparse_depth
    assert module is not None, "mapanything_ros._sparse_depth is not built (CMakeLists.txt)"
    p, rows, out = np.zeros((4, 3)), np.zeros((3, 4, 2)), [np.empty(4) for _ in range(3)]
    module.compensate(p, None, np.array([0, 2], np.intp), rows, *out)  # fits
    for order, starts in ((None, np.array([1, 2], np.intp)), (None, np.array([0, 4], np.intp)),
                          (None, np.array([0, 0], np.intp)), (np.array([0, 1, 2, 4], np.intp), np.array([0, 2], np.intp))):
        with pytest.raises(ValueError, match="starts must begin at 0"):
            module.compensate(p, order, starts, rows, *out)
    with pytest.raises(ValueError, match="rows"):
        module.compensate(p, None, np.array([0, 2], np.intp), np.zeros((3, 4, 3)), *out)
    with pytest.raises(ValueError, match="x"):
        module.compensate(p, None, np.array([0, 2], np.intp), rows, np.empty(3), out[1], out[2])
    with pytest.raises(ValueError, match="points"):
        module.compensate(np.zeros(4), None, np.array([0], np.intp), np.zeros((3, 4, 1)), *out)
    with pytest.raises(ValueError, match="points"):  # float32 coordinates are not read as float64
        module.compensate(p.astype(np.float32), None, np.array([0, 2], np.intp), rows, *out)
    camera = CAMERAS["pinhole"]
    lens, pixel = camera.lens.spec(), (300.0, 0.0, 159.5, 310.0, 120.2, 0.0, 1.0, 1.0, 0.0, 0.0)
    m = tuple(float(a) for a in np.eye(4)[:3].ravel())
    xyz = [np.full(5, 0.1), np.full(5, 0.1), np.full(5, 2.0)]
    depth = np.zeros((240, 320), np.float32)
    module.project(*xyz, m, lens, pixel, False, 320, 240, depth)
    assert (depth > 0).sum() == 1 and depth.max() == 2.0
    with pytest.raises(ValueError, match="depth"):
        module.project(*xyz, m, lens, pixel, False, 320, 241, depth)
    with pytest.raises(ValueError, match="y"):
        module.project(xyz[0], np.ones(4), xyz[2], m, lens, pixel, False, 320, 240, depth)
    for w, h in ((-1, 240), (320, -1), (2**62, 4)):  # w * h would wrap: refused, not written past the map
        with pytest.raises(ValueError, match="too large"):
            module.project(*xyz, m, lens, pixel, False, w, h, np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="lens kind"):
        module.project(*xyz, m, (7, lens[1], lens[2]), pixel, False, 320, 240, depth)
    depth.flags.writeable = False
    with pytest.raises((ValueError, BufferError)):
        module.project(*xyz, m, lens, pixel, False, 320, 240, depth)


EDGE_LENSES = [name for name in CAMERAS if not name.startswith("fisheye")]


@pytest.mark.parametrize("name", list(CAMERAS))
def test_points_on_pixel_edges_project_alike(name, monkeypatch):
    """Points whose projections fall on pixel edges (where an ulp decides the pixel), compiled against
    numpy: the same maps for pinhole and radial-tangential lenses, every grid and resize; the fisheye's
    angle (libm's atan2 against numpy's, which may use SIMD) moves at most a few of its edge points."""
    camera = CAMERAS[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    w, h = camera.image_size
    for grid in (GRID_INDEX, GRID_CENTER):
        for resize in (None, Resize.to_model(w, h)):
            u = rng.integers(0, w, 4000) + rng.choice([-0.5, 0.5], 4000)
            v = rng.integers(0, h, 4000) + rng.choice([-0.5, 0.5], 4000)
            if resize is not None:  # the edges of the output pixels, in the camera's pixels
                u, v = resize.to_source(rng.integers(0, resize.out_size[0], 4000) + 0.5,
                                        rng.integers(0, resize.out_size[1], 4000) + 0.5)
            rays = camera.rays(u + grid_offset(grid), v + grid_offset(grid))
            points = rays * rng.uniform(0.5, 30, (4000, 1))
            points = points[np.isfinite(points).all(1)]
            maps = []
            for steps in (depth_module._sparse_depth, None):
                monkeypatch.setattr(depth_module, "_sparse_depth", steps)
                maps.append(project_to_depth(points, np.eye(4), camera, grid=grid, resize=resize))
            differ = np.count_nonzero(maps[0].view(np.uint32) != maps[1].view(np.uint32))
            assert differ == 0 if name in EDGE_LENSES else differ <= 0.02 * len(points), (grid, resize, differ)
            assert np.count_nonzero(maps[0]) > 0.5 * len(points) * (0.5 if resize is not None else 1)


def test_motion_errors_are_unchanged(steps):
    motion = SourceMotion(T0, np.eye(4), T0 + SWEEP, np.eye(4), T0)
    cam = CAMERAS["pinhole"]
    with pytest.raises(ValueError, match="needs per-point times"):
        project_to_depth(np.zeros((3, 3)), np.eye(4), cam, motion=motion)
    with pytest.raises(ValueError, match="2 times for 3 points"):
        project_to_depth(np.zeros((3, 3)), np.eye(4), cam, times=np.full(2, T0), motion=motion)
    with pytest.raises(ValueError, match="outside"):
        project_to_depth(np.zeros((3, 3)), np.eye(4), cam, times=np.full(3, T0 - 1), motion=motion)
    assert not project_to_depth(np.zeros((0, 3)), np.eye(4), cam, times=np.zeros(0, np.int64), motion=motion).any()


def test_row_matches_transform_points():
    rng = np.random.default_rng(3)
    p = rng.normal(0, 10, (50_000, 3)) * rng.choice([1e-3, 1, 1e3], (50_000, 3))
    m = random_pose(rng)
    expected = transform_points(m, p)
    for i in range(3):
        assert np.array_equal(_row(m, i, p[:, 0], p[:, 1], p[:, 2]), expected[:, i])


def test_time_groups():
    t = np.array([5, 3, 5, 3, 9, 9], np.int64)
    order, starts = _time_groups(t)
    assert t[order].tolist() == [3, 3, 5, 5, 9, 9] and starts.tolist() == [0, 2, 4]
    order, starts = _time_groups(np.array([1, 1, 2], np.int64))
    assert order is None and starts.tolist() == [0, 2]
    assert _time_groups(np.zeros(0, np.int64))[1].size == 0
    assert _time_groups(np.random.default_rng(0).permutation(100_000).astype(np.int64)) == (None, None)


def test_interpolate_pose_is_identical():
    rng = np.random.default_rng(5)
    for k in range(12):
        pose0 = random_pose(rng)
        pose1 = pose0 @ random_pose(rng, 1e-10 if k % 4 == 0 else np.pi, 1.0)  # also the small-angle branch
        for t in (T0 + rng.integers(-SWEEP, 2 * SWEEP, (7, 9)), np.int64(T0 + 12345), (T0 + 3e7) * 1e-9 * 1e9):
            new = interpolate_pose(t, T0, pose0, T0 + SWEEP, pose1, extrapolate=True)
            old = reference_depth.interpolate_pose(t, T0, pose0, T0 + SWEEP, pose1, extrapolate=True)
            assert new.shape == old.shape and np.array_equal(new, old)
    same = interpolate_pose(np.full(3, T0), T0, pose0, T0, pose1)
    assert same.shape == (3, 4, 4) and np.array_equal(same, np.broadcast_to(pose0, (3, 4, 4)))
    with pytest.raises(ValueError, match="outside"):
        interpolate_pose(T0 - 1, T0, pose0, T0 + SWEEP, pose1)
