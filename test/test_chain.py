"""WindowChain: image-only windows, each in its own frame and an arbitrary scale, chained into one frame."""

import dataclasses

import numpy as np
import pytest

from mapanything_ros.backends import Backend, OracleBackend
from mapanything_ros.geometry import CameraModel
from mapanything_ros.geometry.similarity import fit_similarity, similarity_parts, similarity_pose
from mapanything_ros.geometry.transforms import transform_points
from mapanything_ros.mapping import reconstruct
from mapanything_ros.mapping.chain import CHAIN_FRAME, WindowChain
from mapanything_ros.synthetic import RigCamera, SyntheticScene, capture_frames, mount
from mapanything_ros.window import BatchConfig, KeyframePolicy, Window, assemble

SEC = 1_000_000_000
IMAGE_ONLY = BatchConfig(use_poses=False, use_depth=False, long_side=140)


class ScaledOracle(Backend):
    """The oracle's answer in an arbitrary scale per window: depths and translations times a
    random factor (recorded in `factors`); each window is already in its own frame (the reference camera)."""

    def __init__(self, scene, seed=0):
        self.oracle = OracleBackend(scene)
        self.rng = np.random.default_rng(seed)
        self.factors = []

    def predict(self, batch):
        pred = self.oracle.predict(batch)
        f = float(np.exp(self.rng.uniform(-1.5, 1.5)))
        self.factors.append(f)
        poses = pred.ref_from_camera.copy()
        poses[:, :3, 3] *= f
        return dataclasses.replace(pred, depth_along_ray=pred.depth_along_ray * np.float32(f), ref_from_camera=poses)


def small_scene(cameras):
    """The room seen by one or two small pinhole cameras (forward, and left-looking)."""
    cam = CameraModel.pinhole(100.0, 100.0, 79.5, 59.5, 160, 120)
    rig = [RigCamera("front_optical", cam, mount((0.15, 0.0, 0.1))),
           RigCamera("left_optical", cam, mount((0.0, 0.1, 0.1), yaw=np.pi / 2))]
    return SyntheticScene(cameras=rig[:cameras])


def run(scene, backend, stamps, chain, window=None):
    """(ChainResult, window reconstruction) of every admitted capture, image-only."""
    window = window or Window(max_keyframes=4, policy=KeyframePolicy(elapsed_s=0.3))
    out = []
    for stamp in stamps:
        if window.add(capture_frames(scene, stamp, poses=False, lidar=False)).admitted:
            batch = assemble(window.views(), IMAGE_ONLY)
            recon = reconstruct(batch, backend.predict(batch))
            out.append((chain.apply(recon), recon))
    return out


@pytest.fixture(scope="module", params=[1, 2], ids=["one_camera", "two_cameras"])
def chained(request):
    scene = small_scene(request.param)
    backend = ScaledOracle(scene, seed=request.param)
    stamps = [2 * SEC + i * SEC // 2 for i in range(22)]
    # Arbitrary scales (e^±1.5) per window: the chain must be exactly relative, no pull to the windows' own.
    return scene, backend, run(scene, backend, stamps, WindowChain(metric_pull=0))


def test_chained_trajectory_matches_the_truth_up_to_one_similarity(chained):
    scene, _, results = chained
    assert len(results) == 22
    est, true = [], []
    for res, _ in results:
        view = res.reconstruction.views[0]  # the newest keyframe's reference camera
        est.append(view.world_from_camera)
        true.append(scene.world_from_camera(view.frame.frame_id, view.frame.stamp_ns))
    est, true = np.stack(est), np.stack(true)
    world_from_chain = fit_similarity(est[:, :3, 3], true[:, :3, 3])
    aligned = np.stack([similarity_pose(world_from_chain, p) for p in est])
    length = np.sum(np.linalg.norm(np.diff(true[:, :3, 3], axis=0), axis=1))
    ate = np.sqrt(np.mean(np.sum((aligned[:, :3, 3] - true[:, :3, 3]) ** 2, axis=1)))
    assert length > 5.0
    assert ate < 1e-4 * length
    turn = np.einsum("nji,njk->nik", aligned[:, :3, :3], true[:, :3, :3])
    assert np.degrees(np.arccos(np.clip((np.trace(turn, axis1=1, axis2=2) - 1) / 2, -1, 1))).max() < 1e-3


def test_every_window_after_the_first_is_aligned_exactly(chained):
    scene, _, results = chained
    first, rest = results[0][0], [r for r, _ in results[1:]]
    assert not first.reset and first.residual is None and first.reason.startswith("first window")
    cameras = len(scene.cameras)
    assert [r.shared for r in rest] == [cameras * min(i + 1, 3) for i in range(len(rest))]
    for res in rest:
        assert not res.reset and res.reason is None
        assert res.residual < 1e-5 and res.inliers > 0.95  # float32 round-off: a Gaussian's 2.5-sigma tail
        assert res.reconstruction.pose_frame == CHAIN_FRAME


def test_depths_points_and_scale_follow_the_chain(chained):
    scene, backend, results = chained
    ests = [r.reconstruction.views[0].world_from_camera[:3, 3] for r, _ in results]
    trues = [scene.world_from_camera(r.reconstruction.views[0].frame.frame_id,
                                     r.reconstruction.views[0].frame.stamp_ns)[:3, 3] for r, _ in results]
    world_from_chain = fit_similarity(np.stack(ests), np.stack(trues))
    metres = similarity_parts(world_from_chain)[0]  # metres per chain unit
    for (res, recon), f in zip(results, backend.factors):
        # the chain scale undoes this window's factor relative to the first window's
        assert res.scale * f * metres == pytest.approx(1.0, rel=1e-5)
        for chained_view, view in zip(res.reconstruction.views, recon.views):
            np.testing.assert_allclose(chained_view.depth * metres, view.depth / f, rtol=1e-5)
            pose = scene.world_from_camera(view.frame.frame_id, view.frame.stamp_ns)
            points = transform_points(world_from_chain, chained_view.points) - pose[:3, 3]
            dist = np.linalg.norm(points, axis=1)
            hit = scene.ray_depth(pose, transform_points(np.linalg.inv(pose), points + pose[:3, 3]) / dist[:, None],
                                  view.frame.stamp_ns)
            np.testing.assert_allclose(dist, hit, rtol=1e-4)


def test_a_window_sharing_no_view_starts_a_new_segment():
    scene = small_scene(1)
    chain = WindowChain()
    backend = ScaledOracle(scene, seed=5)
    before = run(scene, backend, [2 * SEC, 3 * SEC], chain)
    after = run(scene, backend, [8 * SEC, 9 * SEC], chain)  # a fresh window: nothing in common
    jump, follow = after[0][0], after[1][0]
    assert not before[-1][0].reset
    assert jump.reset and jump.shared == 0 and "new segment" in jump.reason and jump.residual is None
    np.testing.assert_array_equal(jump.transform, np.eye(4))
    assert set(chain.seen) >= {(p.frame.key, p.resize.out_size) for p in jump.reconstruction.batch.prepared}
    assert {(p.frame.key, p.resize.out_size) for p in before[-1][0].reconstruction.batch.prepared}.isdisjoint(chain.seen)
    assert not follow.reset and follow.shared == 1 and follow.residual < 1e-5


def test_too_few_shared_views_reset_and_known_poses_pass_through():
    scene = small_scene(1)
    chain = WindowChain(min_shared_views=2)
    results = run(scene, ScaledOracle(scene), [2 * SEC, 3 * SEC], chain)
    assert results[1][0].reset and results[1][0].shared == 1
    frames = capture_frames(scene, 4 * SEC, poses=True, lidar=False)
    batch = assemble(frames, dataclasses.replace(IMAGE_ONLY, use_poses=True))
    recon = reconstruct(batch, OracleBackend(scene).predict(batch))
    res = chain.apply(recon)
    assert res.reconstruction is recon and recon.pose_frame == "world"
    assert res.reset and "world frame" in res.reason and not chain.seen


def test_pixels_the_windows_disagree_on_are_left_out():
    scene = small_scene(1)

    class Corrupted(ScaledOracle):
        def predict(self, batch):  # the newest view's top third is 30% too far: its next window disagrees
            pred = super().predict(batch)
            depth = pred.depth_along_ray.copy()
            depth[0, : depth.shape[1] // 3] *= 1.3
            return dataclasses.replace(pred, depth_along_ray=depth)

    results = run(scene, Corrupted(scene, seed=7), [2 * SEC + i * SEC // 2 for i in range(8)],
                  WindowChain(metric_pull=0))
    for res, _ in results[1:]:
        assert res.residual < 1e-5 and 0.5 < res.inliers < 0.9
    # the chained reference poses still agree with the truth up to one similarity
    est = np.stack([r.reconstruction.views[0].world_from_camera[:3, 3] for r, _ in results])
    true = np.stack([scene.world_from_camera("front_optical", r.reconstruction.views[0].frame.stamp_ns)[:3, 3]
                     for r, _ in results])
    aligned = transform_points(fit_similarity(est, true), est)
    assert np.abs(aligned - true).max() < 1e-4


class NoisyScaleOracle(ScaledOracle):
    """The oracle with a metric scale error of a few per cent per window, independent between windows
    (the first one 8 % too large), as a network's own metric estimate errs."""

    def predict(self, batch):
        pred = self.oracle.predict(batch)
        f = 1.08 if not self.factors else float(np.exp(self.rng.normal(0.0, 0.03)))
        self.factors.append(f)
        poses = pred.ref_from_camera.copy()
        poses[:, :3, 3] *= f
        return dataclasses.replace(pred, depth_along_ray=pred.depth_along_ray * np.float32(f), ref_from_camera=poses)


@pytest.mark.parametrize("pull", [0.0, 0.1])
def test_metric_pull_relaxes_the_chain_towards_the_windows_own_scale(pull):
    """Without the pull the chain keeps the first window's 8 % error for good; with it the chain's scale
    relaxes towards the windows' average (error-free on average) while each window still fits closely."""
    scene = small_scene(1)
    results = run(scene, NoisyScaleOracle(scene, seed=3), [2 * SEC + i * SEC // 2 for i in range(40)],
                  WindowChain(metric_pull=pull))
    res = results[-1][0]
    view = res.reconstruction.views[0]
    true = scene.render(view.frame.frame_id, view.frame.stamp_ns).depth_z
    ok = np.isfinite(view.depth) & (true > 0)
    error = float(np.median(view.depth[ok] / true[ok]) - 1)
    if pull == 0:
        assert error == pytest.approx(0.08, abs=2e-3)
    else:
        assert abs(error) < 0.03
        assert all(r.residual < 0.01 for r, _ in results[1:])
    with pytest.raises(ValueError):
        WindowChain(metric_pull=1.5)
