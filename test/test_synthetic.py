"""The synthetic scene: exact ray casting, consistent depth, LiDAR points on the surfaces, determinism."""

import numpy as np
import pytest

from mapanything_ros.geometry import se3_compose
from mapanything_ros.geometry.transforms import transform_points
from mapanything_ros.synthetic import Room, SyntheticScene

STAMP = 3_000_000_000


@pytest.fixture(scope="module")
def views(scene):
    return scene.capture(STAMP)


def test_ray_depth_lands_on_surfaces_and_z_matches(scene, views):
    for v in views:
        rays = v.camera.ray_map()
        valid = np.all(np.isfinite(rays), axis=-1)
        assert valid.mean() > 0.95
        assert np.all(v.depth_ray[valid] > 0) and np.all(v.depth_ray[~valid] == 0)
        cam_points = rays[valid] * v.depth_ray[valid, None].astype(np.float64)
        world = transform_points(v.world_from_camera, cam_points)
        assert np.max(scene.room.surface_distance(world)) < 1e-4  # float32 depth of ~8 m
        np.testing.assert_allclose(v.depth_z[valid], v.depth_ray[valid] * rays[valid, 2], rtol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_cast_from_one_origin_culls_nothing_it_should_hit(seed):
    """Rays from one origin (a camera's) are tested only against the boxes whose bounding spheres
    they pass: the same distances and faces, bit for bit, as the same rays tested against every
    box (one ray from elsewhere added, so that the origins differ): from the room, off a box's
    corner, and off a face near its end (inside the box's bounding sphere: rays hit it behind the
    centre's direction), directions off unit length (by far too: their squared lengths overflow or
    underflow), axis-aligned or NaN included."""
    room = Room(seed=seed)
    rng = np.random.default_rng(seed)
    lo, hi = room.box_lo[seed % len(room.box_lo)], room.box_hi[seed % len(room.box_hi)]
    beside = [lo[0] + 0.05, hi[1] + 0.02, (lo[2] + hi[2]) / 2]  # near the end of a face: hits behind its centre
    origins = [rng.uniform(room.lo + 0.3, room.hi - 0.3), hi + [0.02, 0.02, 0.02], np.array(beside)]
    for origin in origins:
        if room.surface_distance(origin[None])[0] < 0.01 or (np.all(origin > room.box_lo, 1)
                                                              & np.all(origin < room.box_hi, 1)).any():
            continue
        dirs = rng.normal(size=(20_000, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        dirs *= 1 + rng.uniform(-1e-6, 1e-6, (len(dirs), 1))
        dirs[1::89, rng.integers(3)] = 0.0  # (and their lengths below 1)
        dirs[2::83] *= 3.0
        dirs[3::79] *= 1.4e154  # the squared length overflows, not the product with the centre
        dirs[4::73] *= 1e-165  # the squared length underflows to 0
        dirs[::97] = np.nan
        one = room.cast(np.broadcast_to(origin, dirs.shape), dirs)
        other = np.vstack([np.broadcast_to(origin, dirs.shape), origin + 0.01])
        every = room.cast(other, np.vstack([dirs, [[1.0, 0.0, 0.0]]]))
        assert (one[1] >= 6).sum() > 100  # boxes hit
        np.testing.assert_array_equal(one[0], every[0][:-1])
        np.testing.assert_array_equal(one[1], every[1][:-1])


def test_cast_refuses_origins_and_directions_of_other_shapes():
    room = Room()
    with pytest.raises(ValueError, match="same shape"):
        room.cast(np.zeros((1, 3)), np.ones((4, 3)))
    with pytest.raises(ValueError, match="same shape"):
        room.cast(np.zeros((0, 3)), np.ones((1, 3)))
    assert [len(a) for a in room.cast(np.zeros((0, 3)), np.zeros((0, 3)))] == [0, 0]


def test_cast_hits_the_nearest_surface():
    room = Room(seed=3)
    rng = np.random.default_rng(1)
    origins = rng.uniform([-2.5, -2.0, 0.5], [2.5, 2.0, 2.5], size=(2000, 3))
    origins = origins[room.surface_distance(origins) > 0.05]
    dirs = rng.normal(size=origins.shape)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    dist, face = room.cast(origins, dirs)
    assert np.all(face >= 0) and np.all(face < room.num_faces)
    hit = origins + dirs * dist[:, None]
    assert np.max(room.surface_distance(hit)) < 1e-9
    # Nothing closer: half-way there the ray is still clear of every surface.
    assert np.all(room.surface_distance(origins + dirs * dist[:, None] * 0.5) > 0)
    # The face number names the plane that was hit.
    axis, owner = (face % 6) // 2, face // 6
    lo = np.where(owner[:, None] == 0, room.lo, room.box_lo[np.maximum(owner - 1, 0)])
    hi = np.where(owner[:, None] == 0, room.hi, room.box_hi[np.maximum(owner - 1, 0)])
    plane = np.where(face % 2 == 0, lo[np.arange(len(face)), axis], hi[np.arange(len(face)), axis])
    np.testing.assert_allclose(hit[np.arange(len(face)), axis], plane, atol=1e-9)


def test_images_have_texture(views):
    for v in views:
        assert v.image.dtype == np.uint8 and v.image.shape == (v.camera.height, v.camera.width, 3)
        assert v.image.std() > 20
        assert len(np.unique(v.image.reshape(-1, 3), axis=0)) > 1000
        assert np.abs(np.diff(v.image.astype(int), axis=1)).mean() > 1  # detail between neighbours


def test_lidar_points_lie_on_surfaces_at_their_own_times(scene):
    sweep = scene.sweep(STAMP)
    assert len(np.unique(sweep.times_ns)) == scene.lidar.columns
    assert sweep.times_ns.min() == STAMP and sweep.times_ns.max() < sweep.end_ns
    poses = scene.world_from_lidar(sweep.times_ns)
    world = np.einsum("nij,nj->ni", poses[:, :3, :3], sweep.points) + poses[:, :3, 3]
    assert np.max(scene.room.surface_distance(world)) < 1e-9
    # The sensor moves during the sweep: one pose for all points misplaces them.
    start = transform_points(scene.world_from_lidar(STAMP), sweep.points)
    assert np.max(scene.room.surface_distance(start)) > 5e-3


def test_lidar_depth_matches_true_depth(scene):
    name = scene.cameras[0].name
    stamp = STAMP + 50_000_000
    sweep = scene.sweep(STAMP)
    sparse = scene.lidar_depth(name, stamp, sweep)
    true = scene.render(name, stamp).depth_z
    hit = sparse > 0
    assert hit.sum() > 500
    rel = np.abs(sparse[hit] - true[hit]) / true[hit]
    assert np.median(rel) < 5e-3  # pixel quantisation only; edges make the tail
    assert np.mean(rel < 0.02) > 0.9


def test_trajectory_keeps_the_rig_clear_of_surfaces(scene):
    stamps = np.arange(0, int(scene.trajectory.period_s * 1e9), 100_000_000)
    body = scene.trajectory.world_from_body(stamps)
    assert np.min(scene.room.surface_distance(body[:, :3, 3])) > 0.5
    for cam in scene.cameras:
        pos = se3_compose(body, cam.body_from_camera)[:, :3, 3]
        assert np.min(scene.room.surface_distance(pos)) > 0.3
    steps = np.linalg.norm(np.diff(body[:, :3, 3], axis=0), axis=1)
    assert 0.01 < steps.min() and steps.max() < 0.1  # smooth: a few cm per 100 ms


def test_deterministic_from_seed(views):
    name = views[0].name
    again, other = SyntheticScene(seed=0).render(name, STAMP), SyntheticScene(seed=1).render(name, STAMP)
    np.testing.assert_array_equal(views[0].image, again.image)
    np.testing.assert_array_equal(views[0].depth_ray, again.depth_ray)
    assert not np.array_equal(views[0].image, other.image)


def test_a_moving_box_is_seen_where_it_stands_at_each_stamp():
    from mapanything_ros.synthetic import MovingBox
    from mapanything_ros.synthetic.presets import make_scene

    scene = make_scene("small_moving", 0)
    box = scene.mover
    assert isinstance(box, MovingBox)
    np.testing.assert_allclose(box.centre(int(10e9)), box.first)
    np.testing.assert_allclose(box.centre(int(30e9)), box.second)
    np.testing.assert_allclose(box.centre(int((box.stay_s + box.walk_s / 2) * 1e9)), np.add(box.first, box.second) / 2)
    np.testing.assert_allclose(box.centre(int(box.period_s * 1e9)), box.first)  # a cycle
    for stamp in (int(10e9), int(30e9)):
        view = scene.render("left_fisheye_optical", stamp)
        rays = view.camera.ray_map(grid=scene.grid)
        world = transform_points(view.world_from_camera, rays * view.depth_ray[..., None])[view.depth_ray > 0]
        lo, hi = box.bounds(stamp)
        on_box = np.all((world > lo - 1e-3) & (world < hi + 1e-3), axis=1)
        assert on_box.mean() > 0.02  # the fisheye looks at it
        assert np.max(scene.room_at(stamp).surface_distance(world)) < 1e-4
        assert np.max(scene.room.surface_distance(world[on_box])) > 0.2  # not part of the static room


def test_the_ground_rig_sees_the_floor_at_grazing_angles_from_0_3_m():
    from mapanything_ros.synthetic.presets import make_scene

    scene = make_scene("small_ground", 0)
    for stamp in range(0, int(20e9), int(2.5e9)):
        view = scene.render("front_optical", stamp)
        assert abs(view.world_from_camera[2, 3] - 0.3) < 0.01  # level: 0.2 m body + 0.1 m mount
        rays = view.camera.ray_map(grid=scene.grid)
        world = transform_points(view.world_from_camera, rays * view.depth_ray[..., None])[view.depth_ray > 0]
        floor = np.abs(world[:, 2]) < 1e-4
        assert floor.mean() > 0.2  # the lower part of the image is floor
        distance = np.linalg.norm(world[floor] - view.world_from_camera[:3, 3], axis=1)
        assert np.median(0.3 / distance) < 0.35  # seen at under 20 degrees from the floor's plane, mostly


def test_surround_preset_sees_the_room_in_four_directions():
    from mapanything_ros.synthetic.presets import make_scene

    scene = make_scene("surround")
    views = scene.capture(2_000_000_000)
    assert [v.name for v in views] == ["front_optical", "left_fisheye_optical", "right_optical", "rear_optical"]
    axes = []
    for v in views:
        assert (v.camera.width, v.camera.height) == (640, 480)
        assert (v.depth_z > 0.1).mean() > 0.9  # the room all round, the fisheye's corners excepted
        axes.append(v.world_from_camera[:3, 2])  # optical z: where the camera looks
    # forward, left, right and back: the front camera's axis against the others' (left is pitched down)
    assert [round(float(np.dot(axes[0][:2], a[:2]) / np.linalg.norm(a[:2]))) for a in axes] == [1, 0, 0, -1]
    def turn(a, b):  # z of a x b: > 0 when b lies to the left of a (counter-clockwise, seen from above)
        return float(a[0] * b[1] - a[1] * b[0])

    assert turn(axes[0], axes[1]) > 0 > turn(axes[0], axes[2])


def test_sized_camera_keeps_the_lens():
    from mapanything_ros.synthetic import default_cameras, sized_camera

    camera = default_cameras()[0].camera
    hd = sized_camera(camera, 1280, 720)  # scaled 2x to 1280 x 960, 120 rows cut at the top and bottom
    assert (hd.width, hd.height) == (1280, 720)
    # a pixel centre (j, i) of the original sees what (2j + 0.5, 2i + 0.5 - 120) sees in the sized one
    u, v = np.array([10.0, 320.0, 600.0]), np.array([130.0, 240.0, 350.0])
    np.testing.assert_allclose(hd.rays(2 * u + 0.5, 2 * v + 0.5 - 120), camera.rays(u, v), atol=1e-9)
    with pytest.raises(ValueError, match="fewer than"):
        sized_camera(camera, 640, 600)
