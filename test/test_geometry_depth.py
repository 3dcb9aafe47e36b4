"""Point cloud projection to sparse depth, depth image decoding, z-depth <-> ray depth."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from mapanything_ros.geometry.camera import GRID_CENTER, CameraModel
from mapanything_ros.geometry import depth as depth_module
from mapanything_ros.geometry.depth import (
    MovingSweep,
    SourceMotion,
    depth_image_to_meters,
    project_to_depth,
    ray_to_z_depth,
    z_to_ray_depth,
)
from mapanything_ros.geometry.resize import Resize
from mapanything_ros.geometry.transforms import pose_from_quat_trans, se3_inverse, transform_points

CAM = CameraModel.pinhole(100.0, 100.0, 32.0, 24.0, 64, 48)
FISHEYE = CameraModel(1280, 1024, (330, 0, 640, 0, 331, 512, 0, 0, 1), (0.02, -0.01, 0.003, -0.0005), "equidistant")
EYE = np.eye(4)


def test_points_land_on_expected_pixels():
    # (u, v) = (32 + 100 x / z, 24 + 100 y / z)
    pts = np.array([[0.0, 0.0, 2.0], [0.1, -0.05, 1.0], [0.95, 0.6, 5.0], [0.018, 0.0, 1.0]])
    depth = project_to_depth(pts, EYE, CAM)
    assert depth.dtype == np.float32 and depth.shape == (48, 64)
    assert depth[24, 32] == 2.0 and depth[19, 42] == 1.0 and depth[36, 51] == 5.0
    assert depth[24, 34] == 1.0  # u = 33.8 rounds to column 34
    assert (depth > 0).sum() == 4
    # Centre grid: pixel j spans [j, j + 1) in K coordinates, so u = 33.8 is in column 33.
    assert project_to_depth(pts[3:], EYE, CAM, grid=GRID_CENTER)[24, 33] == 1.0


def test_pose_is_applied():
    cam_from_lidar = np.array([[0, -1, 0, 0.0], [0, 0, -1, 0.1], [1, 0, 0, 0.0], [0, 0, 0, 1]])  # x fwd -> z fwd
    lidar_pts = np.array([[3.0, 0.0, 0.1]])  # 3 m ahead of the lidar
    cam_pt = transform_points(cam_from_lidar, lidar_pts)[0]
    assert cam_pt[2] == pytest.approx(3.0)
    depth = project_to_depth(lidar_pts, cam_from_lidar, CAM)
    u, v = 32 + 100 * cam_pt[0] / cam_pt[2], 24 + 100 * cam_pt[1] / cam_pt[2]
    assert depth[int(np.floor(v + 0.5)), int(np.floor(u + 0.5))] == pytest.approx(3.0)


def test_zbuffer_keeps_nearest_and_drops_invalid():
    pts = np.array(
        [[0, 0, 4.0], [0, 0, 2.5], [0.001, 0, 3.0],  # same pixel: 2.5 wins
         [0, 0, -1.0], [0, 0, 0.0],  # behind / on the camera plane
         [10.0, 0, 1.0], [0, -5.0, 1.0],  # outside the image
         [np.nan, 0, 1.0], [0, np.inf, 1.0]]
    )
    depth = project_to_depth(pts, EYE, CAM)
    assert depth[24, 32] == 2.5 and (depth > 0).sum() == 1
    rng = np.random.default_rng(0)
    many = rng.uniform([-1, -1, 1], [1, 1, 10], (5000, 3))
    depth = project_to_depth(many, EYE, CAM)
    uv = np.floor(CAM.project(many)[0] + 0.5).astype(int)
    for i, j in [(24, 32), (10, 10), (40, 60)]:
        hit = (uv[:, 0] == j) & (uv[:, 1] == i)
        assert depth[i, j] == (np.float32(many[hit, 2].min()) if hit.any() else 0.0)


def test_empty_and_all_nan_clouds():
    assert not project_to_depth(np.zeros((0, 3)), EYE, CAM).any()
    assert not project_to_depth(np.full((10, 3), np.nan), EYE, CAM).any()


def test_fisheye_drops_points_outside_field_of_view():
    side = np.array([[1.0, 0.0, -0.2]])  # ~101° off axis: inside this lens's valid cone, but z < 0
    assert not project_to_depth(side, EYE, FISHEYE).any()
    front = np.array([[1.0, 0.2, 1.0]])
    depth = project_to_depth(front, EYE, FISHEYE)
    (i, j), = np.argwhere(depth > 0)
    uv, _ = FISHEYE.project(front)
    assert (j, i) == tuple(np.floor(uv[0] + 0.5).astype(int)) and depth[i, j] == 1.0


def test_projection_at_model_resolution():
    cam = CameraModel.pinhole(600.0, 600.0, 640.0, 360.0, 1280, 720)
    r = Resize.to_model(1280, 720)
    pts = np.random.default_rng(1).uniform([-2, -1, 2], [2, 1, 20], (20000, 3))
    small = project_to_depth(pts, EYE, cam, resize=r)
    assert small.shape == (294, 518)
    # Each point goes to the output pixel nearest to its exact resized position; nearest wins.
    uv, _ = cam.project(pts)
    col, row = np.floor(np.stack(r.to_output(uv[:, 0], uv[:, 1])) + 0.5).astype(int)
    expected = {}
    for i, j, z in zip(row, col, pts[:, 2]):
        if 0 <= i < 294 and 0 <= j < 518:
            expected[i, j] = min(expected.get((i, j), np.inf), z)
    assert (small > 0).sum() == len(expected)
    assert all(small[i, j] == np.float32(z) for (i, j), z in expected.items())


def test_motion_compensation_recovers_true_points():
    """A sensor moving during the sweep: each point is measured from the pose at its own time."""
    t0, t1, stamp = 1_000_000_000, 1_100_000_000, 1_060_000_000
    world_from_s0 = pose_from_quat_trans([0, 0, 0, 1], [0.0, 0.0, 0.0])
    world_from_s1 = pose_from_quat_trans([0, np.sin(0.1), 0, np.cos(0.1)], [1.0, 0.0, 0.5])  # 0.2 rad yaw, 1.1 m
    motion = SourceMotion(t0, world_from_s0, t1, world_from_s1, stamp)
    rng = np.random.default_rng(2)
    world_pts = rng.uniform([-3, -2, 4], [3, 2, 12], (3000, 3))
    times = rng.integers(t0, t1 + 1, 3000)
    # What the sensor reports: each world point in the sensor frame at its measurement time.
    measured = np.einsum("nij,nj->ni", se3_inverse(motion.pose(times))[:, :3, :3], world_pts) + se3_inverse(
        motion.pose(times)
    )[:, :3, 3]
    world_from_cam = pose_from_quat_trans([0, 0, 0.05, np.sqrt(1 - 0.05**2)], [0.4, 0.1, 0.2])
    cam_from_source = se3_inverse(world_from_cam) @ motion.pose(stamp)  # extrinsic at the image time
    truth = project_to_depth(world_pts, se3_inverse(world_from_cam), CAM)
    compensated = project_to_depth(measured, cam_from_source, CAM, times=times, motion=motion)
    np.testing.assert_allclose(compensated, truth, rtol=1e-6)
    assert (truth > 0).sum() > 100
    seconds = project_to_depth(measured, cam_from_source, CAM, times=times * 1e-9, motion=motion)
    np.testing.assert_allclose(seconds, truth, rtol=1e-5)
    uncompensated = project_to_depth(measured, cam_from_source, CAM)
    assert np.abs(uncompensated - truth).max() > 0.1
    with pytest.raises(ValueError, match="times"):
        project_to_depth(measured, cam_from_source, CAM, motion=motion)
    with pytest.raises(ValueError, match="outside"):
        project_to_depth(measured, cam_from_source, CAM, times=times + 200_000_000, motion=motion)


def test_a_moving_sweep_projects_as_project_to_depth_and_moves_its_points_once(monkeypatch):
    """MovingSweep.depth gives project_to_depth's map bit for bit for any camera, stamp and resize, and
    moves the sweep's points into the world once for all of them, also when cameras ask at once."""
    t0, t1 = 1_000_000_000, 1_100_000_000
    world_from_s0 = pose_from_quat_trans([0, 0, 0, 1], [0.0, 0.0, 0.0])
    world_from_s1 = pose_from_quat_trans([0, np.sin(0.1), 0, np.cos(0.1)], [1.0, 0.0, 0.5])
    rng = np.random.default_rng(3)
    points = rng.uniform([-3, -2, 1], [3, 2, 12], (5000, 3))
    times = rng.integers(t0, t1 + 1, 5000)
    calls = []
    compensate = depth_module._compensate
    monkeypatch.setattr(depth_module, "_compensate", lambda *a: calls.append(1) or compensate(*a))
    sweep = MovingSweep(points, times, t0, world_from_s0, t1, world_from_s1, extrapolate=True)
    views = [(CAM, pose_from_quat_trans([0, 0, 0.05, np.sqrt(1 - 0.05**2)], [0.4, 0.1, 0.2]), 1_060_000_000, None),
             (FISHEYE, pose_from_quat_trans([0, 0.3, 0, np.sqrt(1 - 0.09)], [0.0, 0.2, 0.1]), 1_150_000_000, None),
             (FISHEYE, EYE, 1_020_000_000, Resize.to_model(1280, 1024))]
    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(lambda v: sweep.depth(v[1], v[0], v[2], resize=v[3]), views))
    assert len(calls) == 1
    for (camera, cam_from_source, stamp, resize), depth in zip(views, got):
        motion = SourceMotion(t0, world_from_s0, t1, world_from_s1, stamp, extrapolate=True)
        want = project_to_depth(points, cam_from_source, camera, times=times, motion=motion, resize=resize)
        np.testing.assert_array_equal(depth, want)
        assert (want > 0).sum() > 50
    assert len(calls) == 4  # project_to_depth compensates every time
    with pytest.raises(ValueError, match="times"):
        MovingSweep(points, times[:-1], t0, world_from_s0, t1, world_from_s1).depth(EYE, CAM, t0)


def test_depth_image_to_meters():
    mm = np.array([[0, 1000, 65535]], np.uint16)
    np.testing.assert_allclose(depth_image_to_meters(mm, "16UC1"), [[0.0, 1.0, 65.535]], rtol=1e-6)
    assert depth_image_to_meters(mm, "mono16").dtype == np.float32
    m = np.array([[np.nan, np.inf, -np.inf, -1.0, 0.0, 2.5, 65535.0, 1e8, 1.001e8, 3e38]], np.float32)
    np.testing.assert_array_equal(depth_image_to_meters(m, "32FC1"), [[0, 0, 0, 0, 0, 2.5, 65535.0, 1e8, 0, 0]])
    with pytest.raises(ValueError, match="encoding"):
        depth_image_to_meters(m, "8UC1")


def test_z_and_ray_depth_conversions():
    rays = CAM.ray_map()
    z = np.random.default_rng(3).uniform(0.5, 10, rays.shape[:2]).astype(np.float32)
    z[0, 0], z[1, 1], z[2, 2] = 0.0, np.nan, -1.0
    d = z_to_ray_depth(z, rays)
    assert d.dtype == np.float32 and d[0, 0] == 0 and d[1, 1] == 0 and d[2, 2] == 0
    # Ray depth is the Euclidean distance to the point whose z-depth is z.
    pts = rays / rays[..., 2:] * z[..., None]
    ok = z > 0
    np.testing.assert_allclose(d[ok], np.linalg.norm(pts, axis=-1)[ok], rtol=1e-6)
    np.testing.assert_allclose(ray_to_z_depth(d, rays)[ok], z[ok], rtol=1e-6)
    assert ray_to_z_depth(d, rays)[1, 1] == 0
    nan_rays = np.full((1, 3), np.nan)
    assert z_to_ray_depth(np.array([2.0]), nan_rays)[0] == 0
    # A map the rays' shape is divided only where z > 0: the same bits as the broadcasting path,
    # with bad depths (NaN, inf, negative, zero) and bad rays (NaN, backward, sideways, infinite).
    z[3, 3], z[4, 4] = np.inf, -np.inf
    bad = rays.copy()
    bad[5, 5], bad[6, 6, 2], bad[7, 7, 2], bad[8, 8, 2] = np.nan, -0.5, 0.0, np.inf
    for r in (rays, bad):
        sparse, dense = z_to_ray_depth(z, r), z_to_ray_depth(z, r[None])[0]
        assert sparse.dtype == dense.dtype == np.float32
        np.testing.assert_array_equal(sparse.view(np.uint32), dense.view(np.uint32))
    assert (z_to_ray_depth(z, bad)[[5, 6, 7], [5, 6, 7]] == 0).all()
    assert z_to_ray_depth(z.astype(np.float64), rays).dtype == np.float64
