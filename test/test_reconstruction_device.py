"""Reconstruction with torch on a device (run here on the CPU: the same code as on CUDA) gives the
numpy results, and only the published arrays leave the device."""

import dataclasses

import numpy as np
import pytest
import torch

from mapanything_ros.backends import OracleBackend
from mapanything_ros.backends.prediction import ViewStack
from mapanything_ros.geometry import arrays
from mapanything_ros.geometry.resample import nearest, stencil
from mapanything_ros.mapping import reconstruct
from mapanything_ros.mapping.chain import WindowChain
from mapanything_ros.synthetic import capture_frames
from mapanything_ros.window import BatchConfig, Window, assemble

SEC = 1_000_000_000


@pytest.fixture(scope="module")
def batch(frames):
    return assemble(frames)


@pytest.fixture(scope="module")
def prediction(scene, batch):
    """The oracle's prediction, 1.3 times too deep, with what the validity test drops: a masked
    block, NaN, zero and negative depths, backward rays."""
    pred = OracleBackend(scene).predict(batch)
    depth, rays, mask = pred.depth_along_ray * np.float32(1.3), pred.ray_directions.copy(), pred.mask.copy()
    poses = pred.ref_from_camera.copy()
    poses[:, :3, 3] *= 1.3
    mask[0, 40:90, 100:180] = False
    depth[0, 10, 10:20] = np.nan
    depth[1, 20, 10:20] = 0
    depth[1, 30, 10:20] = -1
    rays[2, 50, 50:60, 2] *= -1
    return dataclasses.replace(pred, depth_along_ray=depth, ray_directions=rays, mask=mask, ref_from_camera=poses)


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
def test_torch_on_a_device_gives_the_numpy_results(batch, prediction, options):
    host = reconstruct(batch, prediction, **options)
    device = reconstruct(batch, stacks(prediction), device="cpu", **options)
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


def test_only_the_published_arrays_leave_the_device(batch, prediction, monkeypatch):
    """With the prediction on a device, no dense prediction output is converted to numpy; what
    comes back is the published views' native depth and confidence and their model-resolution
    points, colour index and confidence (and two scalars of the alignment)."""
    moved = []
    to_host = arrays.to_host
    monkeypatch.setattr(arrays, "to_host", lambda a: moved.append((tuple(a.shape), str(a.dtype))) or to_host(a))
    pred = stacks(prediction)
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
