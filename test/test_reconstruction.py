"""Reconstruction from the oracle's prediction of the synthetic scene: native depth, poses, points, measured depth."""

import dataclasses

import cv2
import numpy as np
import pytest
import torch

from mapanything_ros.backends import OracleBackend
from mapanything_ros.backends.prediction import ViewStack
from mapanything_ros.geometry import CameraModel, Resize, arrays, relative_pose, se3_compose
from mapanything_ros.geometry.resample import nearest, stencil
from mapanything_ros.mapping import reconstruct
from mapanything_ros.mapping.reconstruction import CONFIDENCE_SAMPLES
from mapanything_ros.mapping.chain import WindowChain
from mapanything_ros.synthetic import RigCamera, SyntheticScene, capture_frames, mount
from mapanything_ros.synthetic.trajectory import rotation_zyx
from mapanything_ros.window import BatchConfig, Window, assemble

SEC = 1_000_000_000


@pytest.fixture(scope="module")
def batch(frames):
    return assemble(frames)


@pytest.fixture(scope="module")
def prediction(scene, batch):
    return OracleBackend(scene).predict(batch)


@pytest.fixture(scope="module")
def truth(scene, frames):
    """True native z-depth of each frame."""
    return [scene.render(f.frame_id, f.stamp_ns).depth_z for f in frames]


@pytest.fixture(scope="module")
def model_size_scene():
    """A scene seen by one pinhole camera whose native size is the model size (518 x 392)."""
    cam = CameraModel.pinhole(400.0, 400.0, 258.5, 195.5, 518, 392)
    return SyntheticScene(cameras=[RigCamera("front_optical", cam, mount((0.15, 0.0, 0.1)))])


@pytest.fixture(scope="module")
def model_size_frames(model_size_scene):
    """Two captures of the model-size camera, with sparse depth = the true z-depth on every 7th pixel."""
    out = []
    for stamp in (3 * SEC, 2 * SEC):
        frame = capture_frames(model_size_scene, stamp, lidar=False)[0]
        sparse = np.zeros((392, 518), np.float32)
        sparse[::7, ::7] = model_size_scene.render(frame.frame_id, stamp).depth_z[::7, ::7]
        out.append(dataclasses.replace(frame, sparse_depth=sparse))
    return out


def near_discontinuity(z, tol=1e-3):
    """Pixels within one pixel of a depth discontinuity of the true z-depth map, or of its edge.

    A discontinuity is where the second difference of z along a row, column or diagonal exceeds
    tol·z (planes have nearly none); the image border counts as an edge.
    """
    z = z.astype(np.float64)
    p = np.pad(z, 1, mode="edge")
    h, w = z.shape
    edge = np.zeros(z.shape, bool)
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a = p[1 - dy:1 - dy + h, 1 - dx:1 - dx + w]
        b = p[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
        edge |= np.abs(a + b - 2 * z) > tol * z
    edge[[0, -1]] = edge[:, [0, -1]] = True
    return cv2.dilate(edge.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def relative_error(depth, z):
    return np.abs(depth.astype(np.float64) - z) / z


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_depth_equals_the_truth_at_the_model_size(model_size_scene, model_size_frames, mode):
    batch = assemble(model_size_frames)
    pred = OracleBackend(model_size_scene).predict(batch)
    rec = reconstruct(batch, pred, depth_mode=mode)
    for view, frame in zip(rec.views, model_size_frames):
        z = model_size_scene.render(frame.frame_id, frame.stamp_ns).depth_z
        assert view.depth.shape == z.shape and view.depth.dtype == np.float32
        assert np.all(np.isfinite(view.depth))
        assert np.max(relative_error(view.depth, z)) < 1e-4
        np.testing.assert_array_equal(view.confidence, 100.0)


def test_bilinear_depth_is_true_and_has_no_flying_pixels(batch, prediction, truth):
    """The default (edge-aware bilinear): true depth up to the crop edge away from depth
    discontinuities; within one pixel of one, NaN or a value within the edge threshold of the truth."""
    rec = reconstruct(batch, prediction)
    for view, z, resize in zip(rec.views, truth, batch.resizes):
        inside = np.isfinite(resize.to_native(np.ones(resize.out_size[::-1], np.float32)))
        assert not inside.all()  # the 640 x 480 camera is cropped to the model aspect
        finite = np.isfinite(view.depth)
        assert not (finite & ~inside).any()
        np.testing.assert_array_equal(np.isfinite(view.confidence), finite)
        edge = near_discontinuity(z)
        smooth = inside & ~edge
        assert smooth.mean() > 0.9
        assert finite[smooth].all()
        assert np.max(relative_error(view.depth, z)[smooth]) < 1e-4
        near = inside & edge & finite
        assert near.sum() > 0.5 * (inside & edge).sum()  # NaN only where the neighbours straddle an edge
        assert np.max(relative_error(view.depth, z)[near]) <= 0.05


def test_plain_bilinear_blends_across_edges(batch, prediction, truth):
    """Without the edge test, bilinear puts flying pixels between surfaces (what the default removes)."""
    rec = reconstruct(batch, prediction, edge_threshold=None)
    errors = [relative_error(v.depth, z)[np.isfinite(v.depth)] for v, z in zip(rec.views, truth)]
    assert max(np.max(e) for e in errors) > 0.2


def test_to_native_bilinear_is_exact_for_affine_maps_up_to_the_crop_edge():
    r = Resize.to_model(640, 480, long_side=224)
    wo, ho = r.out_size
    v, u = np.mgrid[0:ho, 0:wo].astype(np.float64)
    native = r.to_native(2.0 + 0.3 * u - 0.1 * v, "bilinear")
    x, y = r.to_output(np.arange(640), np.arange(480))
    inside = ((y >= -0.5) & (y < ho - 0.5))[:, None] & ((x >= -0.5) & (x < wo - 0.5))[None, :]
    assert x[inside.any(axis=0)].min() < 0 and x[inside.any(axis=0)].max() > wo - 1  # an outer half pixel exists
    np.testing.assert_allclose(native[inside], (2.0 + 0.3 * x[None, :] - 0.1 * y[:, None])[inside], atol=1e-12)
    assert np.isnan(native[~inside]).all()


def test_to_native_max_jump_drops_pixels_between_surfaces_not_on_slopes():
    r = Resize.to_model(640, 480, long_side=224)
    wo, ho = r.out_size
    step = np.where(np.arange(wo) < wo // 2, 2.0, 3.0)[None, :].repeat(ho, 0)
    plain = r.to_native(step, "bilinear")
    aware = r.to_native(step, "bilinear", max_jump=0.05)
    between = (plain > 2.0 + 1e-9) & (plain < 3.0 - 1e-9)
    assert between.any() and np.isnan(aware[between]).all()
    np.testing.assert_allclose(aware[~between], plain[~between])
    assert np.isfinite(r.to_native(step, "bilinear", max_jump=0.6)[between]).all()  # a 50% step is under 60%
    v, u = np.mgrid[0:ho, 0:wo]
    ramp = 1.0 + 0.2 * u + 0.1 * v  # 20% steps per pixel, but smooth
    np.testing.assert_array_equal(r.to_native(ramp, "bilinear", max_jump=0.05), r.to_native(ramp, "bilinear"))


def test_to_native_ignores_neighbours_of_zero_weight():
    """At the model size each native pixel is one model pixel: a NaN there stays one pixel."""
    r = Resize.to_model(518, 392)
    values = np.ones((392, 518))
    values[100, 200] = np.nan
    out = r.to_native(values, "bilinear", max_jump=0.05)
    assert np.isnan(out).sum() == 1 and np.isnan(out[100, 200])


@pytest.mark.parametrize("cut", [True, False], ids=["cut", "no_cut"])
def test_compiled_native_depth_matches_numpy(batch, perturbed, cut, monkeypatch):
    """_resample.native gives _to_native's numpy bits (depth and confidence, NaN where numpy has it):
    with and without the edge cut, a NaN, an infinite and a zero confidence at pixels with depth (a
    NaN or infinite confidence makes numpy's complex64 depth NaN there, and the compiled one too)."""
    from mapanything_ros.mapping import reconstruction as module

    assert module._resample is not None, "mapanything_ros._resample is not built (CMakeLists.txt)"
    recon = reconstruct(batch, perturbed, edge_threshold=0.05 if cut else None)
    cases = []
    for i, prep in enumerate(batch.prepared):
        index, z, point_conf, _ = recon._final(i)
        conf = np.full_like(z, np.nan)
        conf.reshape(-1)[index] = point_conf
        conf.reshape(-1)[index[:3000:1000]] = (np.nan, np.inf, 0.0)
        cases.append((prep.frame.camera, prep.resize, batch.grid, z, conf, "bilinear", recon._jumps(i)))
    compiled = [module._to_native(*case) for case in cases]
    monkeypatch.setattr(module, "_resample", None)
    for case, got in zip(cases, compiled):
        want = module._to_native(*case)
        for a, b in zip(got, want):
            assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
            np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))  # bits, NaN payloads too
    assert sum(np.isnan(d).sum() for d, _ in compiled) > 1000


@pytest.mark.parametrize("options", [
    dict(depth_mode="bilinear"), dict(depth_mode="nearest"), dict(depth_mode="bilinear", numpy=True),
    dict(depth_mode="bilinear", align_to_measured=True), dict(depth_mode="bilinear", completion=True),
    dict(depth_mode="nearest", completion=True), dict(depth_mode="bilinear", device="cpu"),
], ids=["bilinear", "nearest", "numpy", "aligned", "completion", "nearest_completion", "device"])
def test_native_reads_the_confidence_only_where_there_is_depth(batch, perturbed, options, monkeypatch):
    """Each view's native depth and confidence (Reconstruction.view, which passes the network's own
    confidence) are those of a confidence map that is NaN wherever there is no estimate: NaN, inf
    and huge values there change nothing, whatever scales or corrects z (alignment, completion), on
    the host (compiled and numpy) and on a device. And z > 0 only at the indexed pixels."""
    from mapanything_ros.mapping import CompletionConfig
    from mapanything_ros.mapping import reconstruction as module

    options = dict(options)
    if options.pop("numpy", False):
        monkeypatch.setattr(module, "_resample", None)
    if options.pop("completion", False):
        options["completion"] = CompletionConfig()
    rng = np.random.default_rng(5)
    conf = rng.uniform(1, 50, perturbed.confidence.shape).astype(np.float32)
    junk = ~perturbed.mask | ~(perturbed.depth_along_ray > 0)
    conf[junk] = rng.choice(np.array([np.nan, np.inf, -np.inf, 1e30, 0.0], np.float32), junk.sum())
    pred = dataclasses.replace(perturbed, confidence=conf)
    recon = reconstruct(batch, stacks(pred) if options.get("device") else pred, **options)
    assert sum(recon.correction(i) is not None for i in range(len(batch.prepared))) or "completion" not in options
    for i, prep in enumerate(batch.prepared):
        index, z, point_conf, _ = recon._final(i)
        assert set(np.flatnonzero(arrays.to_host(z) > 0)) <= set(arrays.to_host(index).tolist())
        scattered = arrays.namespace(z).full_like(z, np.nan)
        scattered.reshape(-1)[index] = point_conf
        mode = options["depth_mode"]
        want = module._to_native(prep.frame.camera, prep.resize, batch.grid, z, scattered, mode,
                                 None if mode == "nearest" else recon._jumps(i))
        want_depth = arrays.to_host(want[0] * np.float32(recon._size))
        got = recon.view(i)
        np.testing.assert_array_equal(got.depth.view(np.uint32), want_depth.view(np.uint32))
        np.testing.assert_array_equal(got.confidence.view(np.uint32), arrays.to_host(want[1]).view(np.uint32))
        assert np.isfinite(got.confidence).sum() > 0.5 * got.confidence.size
        assert len(np.unique(got.confidence[np.isfinite(got.confidence)])) > 1000  # the view's own, not another's


def test_compiled_native_depth_matches_numpy_on_any_stencil(monkeypatch):
    """_resample.native against numpy on stencils of random tables: the cut's four side bits in any
    combination (the camera stencils count all four sides nearly everywhere), random jumps, weights
    with zeros and NaN, a map with holes; and the model map's shape checked as Stencil.apply does."""
    from mapanything_ros.geometry.resample import Stencil
    from mapanything_ros.mapping import reconstruction as module

    rng = np.random.default_rng(11)
    hm, wm, h, w = 9, 13, 20, 30
    n, m = hm * wm, h * w
    weight = rng.uniform(0, 1, (3, m)).astype(np.float32)
    weight[rng.random((3, m)) < 0.1] = 0
    weight[:, rng.random(m) < 0.05] = np.nan
    st = Stencil(rng.integers(0, n, (3, m)), weight, rng.integers(0, n, m), rng.integers(0, 16, m).astype(np.uint8),
                 (h, w), (wm, hm))
    z = rng.uniform(0.5, 5, (hm, wm)).astype(np.float32)
    z[rng.random((hm, wm)) < 0.1] = 0
    conf = rng.uniform(1, 3, (hm, wm)).astype(np.float32)
    jumps = [np.append(rng.random(n) < 0.3, False) for _ in range(2)]
    monkeypatch.setattr(module, "stencil", lambda *args: st)
    args = (None, None, None, z, conf, "bilinear")
    compiled = module._to_native(*args, jumps), module._to_native(*args, None)
    with pytest.raises(ValueError, match="map is"):
        module._to_native(None, None, None, z.T.copy(), conf.T.copy(), "bilinear", None)
    monkeypatch.setattr(module, "_resample", None)
    for got, want in zip(compiled, (module._to_native(*args, jumps), module._to_native(*args, None))):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    holes = [np.isnan(depth).sum() for depth, _ in compiled]
    assert 0.1 * m < holes[1] < holes[0] < 0.9 * m  # the cut adds holes, not everywhere


def test_compiled_native_depth_refuses_bad_tables():
    """_resample.native checks its buffers; a model pixel index outside the map gives NaN, not a read
    outside it."""
    from mapanything_ros.mapping.reconstruction import _resample

    inv, conf = np.array([1, 1, 1, 1, 1, -2], np.float32), np.ones(6, np.float32)
    far = 10**9  # far outside the map: reading there would crash
    index = np.array([[0, 4, far, 5], [0, 1, 2, 3], [0, 1, 2, 3]], np.intp).ravel()  # native pixels 0..3
    weight = np.array([[1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]], np.float32).ravel()
    cell, sides = np.zeros(4, np.intp), np.zeros(4, np.uint8)
    depth, out_conf = np.empty(4, np.float32), np.empty(4, np.float32)
    _resample.native(inv, conf, index, weight, cell, sides, None, None, 3, depth, out_conf)
    np.testing.assert_array_equal(depth, [1, 1, np.nan, np.nan])  # outside; a negative inverse depth
    np.testing.assert_array_equal(out_conf, [1, 1, np.nan, np.nan])
    # With the edge cut: a cell outside the map counts as cut where its sides count.
    no_jump = np.zeros(7, bool)
    cell[1], sides[1] = far, 1
    _resample.native(inv, conf, index, weight, cell, sides, no_jump, no_jump, 3, depth, out_conf)
    np.testing.assert_array_equal(depth, [1, np.nan, np.nan, np.nan])
    cell[1] = 0
    with pytest.raises(ValueError, match="width"):
        _resample.native(inv, conf, index, weight, cell, sides, None, None, 4, depth, out_conf)
    with pytest.raises(ValueError, match="weight"):
        _resample.native(inv, conf, index, weight.astype(np.float64), cell, sides, None, None, 3, depth, out_conf)
    with pytest.raises(ValueError, match="across"):
        _resample.native(inv, conf, index, weight, cell, sides, np.zeros(6, bool), np.zeros(7, bool), 3, depth,
                         out_conf)


def test_nearest_depth_copies_model_pixels(batch, prediction, truth):
    """Nearest resampling never blends across edges: every value is the z-depth of one model pixel,
    the model pixel nearest to the native pixel (so it lies within about one native pixel's slope of the truth)."""
    rec = reconstruct(batch, prediction, depth_mode="nearest")
    for i, (view, z) in enumerate(zip(rec.views, truth)):
        model_z = (prediction.depth_along_ray[i] * prediction.ray_directions[i][..., 2]).astype(np.float32)
        finite = np.isfinite(view.depth)
        assert np.isin(view.depth[finite], model_z).all()
        check = finite & ~near_discontinuity(z)
        assert np.median(relative_error(view.depth, z)[check]) < 5e-3


def test_metric_scale_is_reported_not_reapplied(batch, prediction):
    """The prediction's depth and translations already carry the model's metric scale."""
    rec = reconstruct(batch, prediction)
    again = reconstruct(batch, dataclasses.replace(prediction, metric_scale=2.0))
    assert again.metric_scale == 2.0 and rec.metric_scale == 1.0
    for a, b in zip(rec.views, again.views):
        np.testing.assert_array_equal(a.depth, b.depth)
        np.testing.assert_array_equal(a.world_from_camera, b.world_from_camera)


def pose_error(a, b):
    """(translation m, rotation rad) between two poses."""
    rel = relative_pose(a, b)
    return np.linalg.norm(rel[:3, 3]), np.arccos(np.clip((np.trace(rel[:3, :3]) - 1) / 2, -1, 1))


def noisy(pose, rng):
    """pose moved by up to 5 cm and turned by up to about 0.05 rad."""
    delta = np.eye(4)
    delta[:3, :3] = rotation_zyx(*rng.uniform(-0.03, 0.03, 3))
    delta[:3, 3] = rng.uniform(-0.05, 0.05, 3)
    return se3_compose(pose, delta)


def test_refined_poses_are_the_true_poses_despite_noisy_inputs(scene, frames):
    rng = np.random.default_rng(0)
    noisy_frames = [frames[0]] + [dataclasses.replace(f, world_from_camera=noisy(f.world_from_camera, rng))
                                  for f in frames[1:]]
    batch = assemble(noisy_frames)
    rec = reconstruct(batch, OracleBackend(scene).predict(batch))
    assert rec.pose_frame == "world"
    for view, frame, given in zip(rec.views, frames, noisy_frames):
        moved, turned = pose_error(view.world_from_camera, scene.world_from_camera(frame.frame_id, frame.stamp_ns))
        assert moved < 1e-6 and turned < 1e-6
        if given is not frames[0]:
            assert pose_error(view.world_from_camera, given.world_from_camera)[0] > 1e-3


def test_without_poses_the_frame_is_the_reference_camera(scene, frames):
    bare = [dataclasses.replace(f, world_from_camera=None) for f in frames]
    batch = assemble(bare, BatchConfig(use_poses=False))
    rec = reconstruct(batch, OracleBackend(scene).predict(batch))
    assert rec.pose_frame == "reference_camera"
    ref = scene.world_from_camera(frames[0].frame_id, frames[0].stamp_ns)
    np.testing.assert_allclose(rec.views[0].world_from_camera, np.eye(4), atol=1e-12)
    for view, frame in zip(rec.views, frames):
        expected = relative_pose(ref, scene.world_from_camera(frame.frame_id, frame.stamp_ns))
        assert max(pose_error(view.world_from_camera, expected)) < 1e-6
        world = view.points.astype(np.float64) @ ref[:3, :3].T + ref[:3, 3]
        assert np.max(scene.room.surface_distance(world)) < 1e-4


def test_points_lie_on_the_true_surfaces_with_image_colours(scene, batch, prediction):
    rec = reconstruct(batch, prediction)
    for i, view in enumerate(rec.views):
        keep = batch.valid[i] & prediction.mask[i]
        assert view.points.shape == (keep.sum(), 3) and view.points.dtype == np.float32
        assert np.max(scene.room.surface_distance(view.points)) < 1e-4
        np.testing.assert_array_equal(view.colors, batch.resizes[i].image(view.frame.image)[keep])
        assert view.colors.dtype == np.uint8
        np.testing.assert_array_equal(view.point_confidence, prediction.confidence[i][keep])


def test_masked_pixels_have_no_estimate(batch, prediction):
    mask = prediction.mask.copy()
    mask[0, :, :100] = False
    rec = reconstruct(batch, dataclasses.replace(prediction, mask=mask))
    assert len(rec.views[0].points) == mask[0].sum()
    native_masked = np.isnan(batch.resizes[0].to_native(np.where(mask[0], 1.0, np.nan)))
    assert np.all(np.isnan(rec.views[0].depth[native_masked]))
    assert np.all(np.isnan(rec.views[0].confidence[native_masked]))


def test_keep_measured_keeps_every_measured_value_exactly(batch, prediction):
    rec = reconstruct(batch, prediction, keep_measured=True)
    kept = 0
    for view in rec.views:
        measured = view.frame.sparse_depth > 0
        np.testing.assert_array_equal(view.depth[measured], view.frame.sparse_depth[measured])
        kept += measured.sum()
    assert kept > 1000


def scaled(prediction, factor):
    """The prediction with depths and relative translations scaled by factor (a metric scale error)."""
    poses = prediction.ref_from_camera.copy()
    poses[:, :3, 3] *= factor
    return dataclasses.replace(prediction, depth_along_ray=prediction.depth_along_ray * np.float32(factor),
                               ref_from_camera=poses)


def test_alignment_recovers_a_scale_error(model_size_scene, model_size_frames):
    batch = assemble(model_size_frames, BatchConfig(use_poses=False, use_depth=False))
    pred = OracleBackend(model_size_scene).predict(batch)
    rec = reconstruct(batch, scaled(pred, 1.3), align_to_measured=True, keep_measured=True)
    assert rec.scale == pytest.approx(1 / 1.3, rel=1e-6) and rec.residual < 1e-6
    for view, frame in zip(rec.views, model_size_frames):
        z = model_size_scene.render(frame.frame_id, frame.stamp_ns).depth_z
        assert np.max(relative_error(view.depth, z)) < 1e-4
        moved, turned = pose_error(view.world_from_camera,
                                   model_size_scene.world_from_camera(frame.frame_id, frame.stamp_ns))
        assert moved < 1e-6 and turned < 1e-6
        assert np.max(model_size_scene.room.surface_distance(view.points)) < 1e-4


def test_alignment_to_lidar_on_the_rig(batch, prediction):
    """LiDAR depth is motion-compensated and pixel-snapped, so close to but not exactly true."""
    rec = reconstruct(batch, scaled(prediction, 1.3), align_to_measured=True)
    assert rec.scale == pytest.approx(1 / 1.3, rel=1e-2) and rec.residual < 1e-2
    plain = reconstruct(batch, prediction)
    assert plain.scale == 1.0 and plain.residual is None


def test_range_view_leaves_out_each_views_least_confident_quantile(batch, prediction):
    """map_confidence_quantile: the fraction of a view's pixels with an estimate, its least
    confident, gets weight 0; the rest keep the weights they have without the cut."""
    rng = np.random.default_rng(3)
    conf = (1 + rng.exponential(2.0, prediction.confidence.shape)).astype(np.float32)
    conf[1] *= 50  # another view's confidence on another scale: the cut is each view's own
    recon = reconstruct(batch, dataclasses.replace(prediction, confidence=conf), edge_threshold=None)
    for i in range(len(batch.frames)):
        full = recon.range_view(i).weights
        estimated = recon.range_view(i).ranges > 0
        for q in (0.1, 0.5):
            cut = recon.range_view(i, q).weights
            dropped = estimated & (cut == 0)
            assert abs(dropped.sum() / estimated.sum() - q) < 0.01
            assert conf[i][dropped].max() <= conf[i][estimated & ~dropped].min()
            np.testing.assert_array_equal(cut[~dropped], full[~dropped])


def test_range_view_ranges_are_the_points_distances(batch, prediction):
    """The range view's ranges are the metric distances of the view's points from its camera, also
    for rays that are not exactly unit (a bf16 network's), with the alignment's scale; 0 where
    there is no estimate."""
    rng = np.random.default_rng(5)
    rays = prediction.ray_directions * rng.uniform(0.98, 1.02, prediction.ray_directions.shape[:-1] + (1,))
    rays[:, 5:7] = np.nan  # outside the lens
    mask = np.array(prediction.mask)
    mask[:, :5] = False
    recon = reconstruct(batch, dataclasses.replace(scaled(prediction, 1.3), ray_directions=rays.astype(np.float32),
                                                   mask=mask), align_to_measured=True)
    assert recon.scale != 1
    for i in range(len(batch.frames)):
        view = recon.range_view(i)
        index = recon._final(i)[0]
        points = recon.points(i)[0].astype(np.float64)
        distance = np.linalg.norm(points - recon.poses[i][:3, 3], axis=1)
        np.testing.assert_allclose(view.ranges.reshape(-1)[index], distance, rtol=2e-6, atol=1e-6)
        outside = np.ones(view.ranges.size, bool)
        outside[index] = False
        assert outside.any() and (view.ranges.reshape(-1)[outside] == 0).all()


def test_a_nan_confidence_is_no_estimate_and_the_rest_keeps_its_weight(batch, prediction):
    conf = np.array(prediction.confidence, np.float32)
    conf[0, :10] = np.nan
    recon = reconstruct(batch, dataclasses.replace(prediction, confidence=conf), edge_threshold=None)
    for q in (0.0, 0.2):
        view = recon.range_view(0, q)
        assert np.isfinite(view.weights).all() and (view.weights[:10] == 0).all() and (view.ranges[:10] == 0).all()
        assert (view.weights[10:][view.ranges[10:] > 0] > 0).mean() > 1 - q - 0.01
    assert np.isfinite(recon.points(0)[2]).all() and len(recon.points(0)[2]) == recon.estimated(0)
    # Only pixels off the grid the median is estimated on have a confidence: they still weigh.
    sparse = np.full_like(conf, np.nan)
    every = reconstruct(batch, prediction, edge_threshold=None)._final(0)[0]
    stride = len(every) // CONFIDENCE_SAMPLES
    assert stride > 1 and every.size == conf[0].size  # every pixel of view 0 has an estimate
    sparse[0].reshape(-1)[1::stride] = 2.0
    view = reconstruct(batch, dataclasses.replace(prediction, confidence=sparse), edge_threshold=None).range_view(0)
    assert ((view.weights > 0) == ~np.isnan(sparse[0])).all() and view.weights.max() == 1


def test_the_map_and_the_native_depth_share_one_edge_test(batch, prediction, monkeypatch):
    """range_view gives no weight to the model pixels on either side of a discontinuity of the view's
    inverse z-depth, the discontinuities whose native pixels the native depth cuts: one test, made
    once per view for both (and for a carried copy); without an edge threshold, none."""
    from mapanything_ros.mapping import reconstruction as module

    calls = []
    jumps = module.edge_jumps
    monkeypatch.setattr(module, "edge_jumps", lambda *a: calls.append(1) or jumps(*a))
    recon = reconstruct(batch, prediction)
    plain = reconstruct(batch, prediction, edge_threshold=None)
    for i in range(len(batch.frames)):
        view, native, carried = recon.range_view(i), recon.view(i), recon.carried(np.eye(4), "world").range_view(i)
        h, w = view.ranges.shape
        z = recon.model_depth(i)
        inv = np.where(z > 0, 1 / z, np.nan).astype(np.float32)
        across, down = jumps(inv, module._edge_threshold(inv, 0.05, module.EDGE_NOISE_SIGMAS))
        across, down = across[:-1].reshape(h, w), down[:-1].reshape(h, w)
        edge = across | down
        edge[:, 1:] |= across[:, :-1]
        edge[1:] |= down[:-1]
        assert edge.sum() > 100
        np.testing.assert_array_equal(view.weights == 0, (plain.range_view(i).weights == 0) | edge)
        np.testing.assert_array_equal(carried.weights, view.weights)
        assert np.isnan(native.depth).any()
    assert len(calls) == len(batch.frames)  # once a view, for its native depth, its range view and its copy


def test_rejects_unknown_depth_mode(batch, prediction):
    with pytest.raises(ValueError, match="depth_mode"):
        reconstruct(batch, prediction, depth_mode="cubic")


# Torch on a device (run here on the CPU: the same code as on CUDA) gives the numpy results, and
# only the published arrays leave the device.

@pytest.fixture(scope="module")
def perturbed(prediction):
    """The oracle's prediction, 1.3 times too deep, with what the validity test drops: a masked
    block, NaN, zero and negative depths, backward rays."""
    depth, rays = prediction.depth_along_ray * np.float32(1.3), prediction.ray_directions.copy()
    mask = prediction.mask.copy()
    poses = prediction.ref_from_camera.copy()
    poses[:, :3, 3] *= 1.3
    mask[0, 40:90, 100:180] = False
    depth[0, 10, 10:20] = np.nan
    depth[1, 20, 10:20] = 0
    depth[1, 30, 10:20] = -1
    rays[2, 50, 50:60, 2] *= -1
    return dataclasses.replace(prediction, depth_along_ray=depth, ray_directions=rays, mask=mask, ref_from_camera=poses)


def stacks(pred):
    """pred with its dense fields as ViewStacks of CPU tensors (as a network backend's)."""
    return dataclasses.replace(pred, **{k: ViewStack(torch.from_numpy(np.array(v)) for v in getattr(pred, k))
                                        for k in ("depth_along_ray", "ray_directions", "confidence", "mask")})


def assert_same_view(a, b):
    for x, y in ((a.depth, b.depth), (a.confidence, b.confidence)):
        assert x.dtype == y.dtype == np.float32
        np.testing.assert_array_equal(np.isnan(x), np.isnan(y))
        np.testing.assert_allclose(x, y, rtol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(a.world_from_camera, b.world_from_camera)
    assert a.points.dtype == b.points.dtype == np.float32
    np.testing.assert_allclose(a.points, b.points, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(a.colors, b.colors)
    np.testing.assert_array_equal(a.point_confidence, b.point_confidence)


@pytest.mark.parametrize("options", [
    dict(depth_mode="bilinear"),
    dict(depth_mode="bilinear", edge_threshold=None),
    dict(depth_mode="nearest"),
    dict(depth_mode="bilinear", keep_measured=True, align_to_measured=True),
    dict(depth_mode="nearest", keep_measured=True, align_to_measured=True),
], ids=["bilinear", "no_cut", "nearest", "bilinear_aligned_kept", "nearest_aligned_kept"])
def test_torch_on_a_device_gives_the_numpy_results(batch, perturbed, options):
    host = reconstruct(batch, perturbed, **options)
    device = reconstruct(batch, stacks(perturbed), device="cpu", **options)
    assert host.device is None and device.device == torch.device("cpu")
    assert device.scale == pytest.approx(host.scale, rel=1e-12)
    if options.get("align_to_measured"):
        assert host.scale == pytest.approx(1 / 1.3, rel=1e-2) and host.residual < 1e-2
        assert device.residual == pytest.approx(host.residual, rel=1e-9)
    np.testing.assert_array_equal(device.poses, host.poses)
    cut = 0
    for i in range(len(batch.prepared)):
        assert_same_view(device.view(i), host.view(i))
        np.testing.assert_array_equal(device.model_depth(i), host.model_depth(i))
        np.testing.assert_array_equal(device.model_depth(i, 7), host.model_depth(i)[3::7, 3::7])
        cut += np.isnan(host.view(i).depth).sum()
    assert cut > 1000  # the edges, the masked block and the invalid pixels are NaN in both


def test_chain_on_a_device_matches_the_host(scene):
    """Image-only windows chained from torch reconstructions fit the transforms of numpy ones."""
    config = BatchConfig(use_poses=False, use_depth=False, long_side=140)
    oracle, window = OracleBackend(scene), Window(max_keyframes=3)
    host, device = WindowChain(), WindowChain()
    for k in range(4):
        window.add(capture_frames(scene, 2 * SEC + k * SEC // 2, poses=False, lidar=False))
        batch = assemble(window.views(), config)
        pred = oracle.predict(batch)
        a = host.apply(reconstruct(batch, pred))
        b = device.apply(reconstruct(batch, stacks(pred), device="cpu"))
        assert b.reconstruction.device == torch.device("cpu")
        assert a.shared == b.shared and a.reset == b.reset
        np.testing.assert_allclose(b.transform, a.transform, rtol=1e-6, atol=1e-6)
        if a.residual is not None:
            assert b.residual == pytest.approx(a.residual, rel=1e-3, abs=1e-9)
        assert_same_view(b.reconstruction.views[0], a.reconstruction.views[0])
    assert a.shared > 0


def test_only_the_published_arrays_leave_the_device(batch, perturbed, monkeypatch):
    """With the prediction on a device, no dense prediction output is converted to numpy; what
    comes back is the published views' native depth and confidence and their model-resolution
    points, colour index and confidence (and two scalars of the alignment)."""
    moved = []
    to_host = arrays.to_host
    monkeypatch.setattr(arrays, "to_host", lambda a: moved.append((tuple(a.shape), str(a.dtype))) or to_host(a))
    pred = stacks(perturbed)
    newest = [0, 1]
    recon = reconstruct(batch, pred, views=newest, align_to_measured=True, keep_measured=True, device="cpu")
    views = recon.views
    for stack in (pred.depth_along_ray, pred.ray_directions, pred.confidence, pred.mask):
        assert stack.copied == []
    expected = []
    for i, view in zip(newest, views):
        n = len(view.points)
        assert 0 < n < batch.size[0] * batch.size[1]
        expected += [(view.depth.shape, "torch.float32")] * 2
        expected += [((n, 3), "torch.float32"), ((n,), "torch.int64"), ((n,), "torch.float32")]
    assert sorted(moved) == sorted(expected)


def test_tables_go_to_a_device_once(batch):
    prep = batch.prepared[0]
    like = torch.zeros(1)
    for table in (stencil(prep.frame.camera, prep.resize, batch.grid), nearest(prep.resize)):
        copies = arrays.tables(table, like)
        assert arrays.tables(table, like) is copies
        assert all(a is b for a, b in zip(arrays.tables(table, np.zeros(1)), table.tables))
        for host, dev in zip(table.tables, copies):
            np.testing.assert_array_equal(dev.numpy(), host)


@pytest.mark.parametrize("options", [dict(), dict(align_to_measured=True), dict(completion=True),
                                     dict(completion=False)], ids=["plain", "aligned", "field", "scale_only"])
def test_points_are_the_same_compiled_or_not(batch, perturbed, options, monkeypatch):
    """Reconstruction.points through the compiled pass and through numpy: the same bits for every
    factor the reconstruction gives the depth (none; the window's alignment; completion's per-pixel
    field, or its per-view scale alone); no points for no pixels; a bad index refused by both."""
    from mapanything_ros.mapping import CompletionConfig
    from mapanything_ros.mapping import reconstruction as module

    options = dict(options)
    if "completion" in options:
        options["completion"] = CompletionConfig(dense=options["completion"])
    made = [reconstruct(batch, perturbed, **options) for _ in range(2)]
    ratios = {type(r._final(0)[3]).__name__ for r in made[:1]}
    got = [made[0].points(i) for i in range(len(batch.prepared))]
    monkeypatch.setattr(module, "_resample", None)
    for i, (xyz, colors, conf) in enumerate(got):
        want = made[1].points(i)
        np.testing.assert_array_equal(xyz.view(np.uint32), want[0].view(np.uint32))
        np.testing.assert_array_equal(colors, want[1])
        np.testing.assert_array_equal(conf, want[2])
    assert ratios == {"NoneType"} if not options else ratios <= {"float32", "ndarray"}
    empty = module._host_points(np.zeros((2, 2, 3), np.float32), np.zeros((2, 2), np.float32), np.zeros(0, np.intp),
                                None, np.eye(3), np.zeros(3), np.zeros(4, np.uint32))
    assert empty[0].shape == (0, 3) and empty[1].shape == (0, 3)
    monkeypatch.undo()
    for compiled in (module._resample, None):
        monkeypatch.setattr(module, "_resample", compiled)
        with pytest.raises(ValueError, match="index: 1 of 2"):
            module._host_points(np.zeros((2, 2, 3), np.float32), np.zeros((2, 2), np.float32),
                                np.array([0, -1], np.intp), None, np.eye(3), np.zeros(3), np.zeros(4, np.uint32))


def test_affine_rows_agrees_with_float64():
    rng = np.random.default_rng(3)
    points = rng.normal(0, 5, (1000, 3)).astype(np.float32)
    rotation, translation = rng.normal(size=(3, 3)), rng.normal(size=3)
    expected = points.astype(np.float64) @ rotation.T + translation
    device = arrays.affine_rows(torch.from_numpy(points), rotation, translation).numpy()
    assert device.dtype == np.float32 and device.shape == (1000, 3)
    np.testing.assert_allclose(device, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("ratio", ["none", "scalar", "per point"])
def test_compiled_points_match_numpy(batch, perturbed, ratio, monkeypatch):
    """_resample.points gives the numpy fallback's bits (points and colours), whatever the depth's
    factor (none, the alignment's scale, completion's per-pixel one), NaN and inf depths included;
    both within float32 rounding of the float64 transform; an index past the pixels is refused."""
    from mapanything_ros.mapping import reconstruction as module

    assert module._resample is not None, "mapanything_ros._resample is not built (CMakeLists.txt)"
    rng = np.random.default_rng(7)
    recon = reconstruct(batch, perturbed)
    cases = []
    for i, prep in enumerate(batch.prepared):
        index = recon._final(i)[0]
        d, rays, _, _ = recon._dense(i)
        d = np.array(d, np.float32)
        d.reshape(-1)[index[:3000:1000]] = (np.nan, np.inf, 0.0)
        factor = {"none": None, "scalar": np.float32(1.3),
                  "per point": rng.uniform(0.8, 1.2, len(index)).astype(np.float32)}[ratio]
        pose = recon.poses[i]
        cases.append((rays, d, index, factor, np.float32(pose[:3, :3] * 2.5), np.float32(pose[:3, 3]), prep.rgbx))
    compiled = [module._host_points(*case) for case in cases]
    monkeypatch.setattr(module, "_resample", None)
    for case, (xyz, colors) in zip(cases, compiled):
        want_xyz, want_colors = module._host_points(*case)
        assert xyz.dtype == want_xyz.dtype == np.float32 and xyz.shape == want_xyz.shape == (len(case[2]), 3)
        np.testing.assert_array_equal(xyz.view(np.uint32), want_xyz.view(np.uint32))
        np.testing.assert_array_equal(colors, want_colors)
        rays, d, index, factor, rotation, translation, rgbx = case
        s = d.reshape(-1)[index].astype(np.float64) * (1.0 if factor is None else factor)
        with np.errstate(invalid="ignore"):  # the NaN and inf depths
            exact = (rays.reshape(-1, 3)[index] * s[:, None]) @ rotation.T.astype(np.float64) + translation
        ok = np.isfinite(exact).all(1)
        assert ok.sum() > 0.9 * len(index)
        np.testing.assert_allclose(xyz[ok], exact[ok], rtol=1e-5, atol=1e-4)
        assert np.array_equal(colors, rgbx.view(np.uint8).reshape(-1, 4)[index, :3])
    monkeypatch.undo()
    rays, d, index, factor, *rest = cases[0]
    if factor is not None and np.ndim(factor):
        factor = np.append(factor, np.float32(1))
    with pytest.raises(ValueError, match="index: 1 of"):
        module._host_points(rays, d, np.append(index, d.size), factor, *rest)


def test_host_arrays_with_negative_strides_go_to_a_device(batch, perturbed):
    """A prediction of numpy views with negative strides (a flipped array) reconstructs on a device
    as on the host (torch.from_numpy refuses negative strides)."""
    def flipped(a):
        return np.ascontiguousarray(np.asarray(a)[:, ::-1])[:, ::-1]

    pred = dataclasses.replace(perturbed, **{k: flipped(getattr(perturbed, k))
                                             for k in ("depth_along_ray", "ray_directions", "confidence", "mask")})
    host, device = reconstruct(batch, pred), reconstruct(batch, pred, device="cpu")
    for i in range(len(batch.prepared)):
        assert_same_view(device.view(i), host.view(i))
