"""infer(): upstream-style pre-processing, post-processing and masks."""

import numpy as np
import pytest
import torch

from model_fixtures import (TOL, case_names, case_views, load_case, needs_fixtures, norm_err,
                            reference_outputs, tiny_model, to_numpy)

from mapanything_ros.model import masks
from mapanything_ros.model.infer import (infer, intrinsics_from_rays, postprocess_outputs,
                                         preprocess_views)

MAX_MASK_FLIPS = 1e-3  # fraction of pixels


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def sensitive_pixels(raw: dict, b: int) -> np.ndarray:
    """Where upstream's mask decision hinges on float32 rounding: logits ~ 0, or depth-edge
    pixels, whose normal-edge test uses arccos of dot products that round above 1 (NaN,
    then ignored by the max-pool) depending on the last bit of the predicted points."""
    nam = to_numpy(raw["non_ambiguous_mask"][b])
    depth = to_numpy(raw["pts3d_cam"][b, ..., 2])
    near_zero = np.abs(to_numpy(raw["non_ambiguous_mask_logits"][b])) < TOL
    return near_zero | (nam & masks._depth_edges(depth, nam, 0.03))


@needs_fixtures
@pytest.mark.parametrize("name", case_names("infer"))
def test_infer_matches_reference(model, name):
    meta, _ = load_case(name)
    kwargs = dict(meta["infer_kwargs"])
    assert kwargs.pop("use_amp") is False  # references are float32
    views = case_views(name)
    out = infer(model, views, **kwargs)
    with torch.no_grad():
        inputs = preprocess_views(views, kwargs.get("ignore_calibration_inputs", False))
        raw = model(inputs, use_pose_scale=not kwargs.get("ignore_pose_scale_inputs", False))
    for i, (o, ref) in enumerate(zip(out, reference_outputs(name))):
        assert set(o) == set(ref), i
        agree = np.ones(ref["pts3d"].shape[:3], dtype=bool)
        if "mask" in ref:
            mine, theirs = to_numpy(o["mask"])[..., 0], ref["mask"][..., 0]
            flips = mine != theirs
            assert flips.mean() <= MAX_MASK_FLIPS, (i, int(flips.sum()))
            for b in range(flips.shape[0]):
                assert np.all(sensitive_pixels(raw[i], b)[flips[b]]), (i, b)
            agree = ~flips
        for key, r in ref.items():
            a = to_numpy(o[key])
            if key == "non_ambiguous_mask":
                assert np.all(np.abs(ref["non_ambiguous_mask_logits"][a != r]) < TOL)
            elif r.dtype != bool:
                if a.shape[:3] == agree.shape:
                    a, r = a[agree], r[agree]
                assert norm_err(a, r) < TOL, (i, key)


@needs_fixtures
def test_preprocessing_reproduces_upstream_forward_inputs():
    """The forward cases were made from aux.* by upstream's infer pre-processing."""
    name = "c7_batch2_calib_pose_depth_3v"
    _, data = load_case(name)
    stored = case_views(name)
    user = [{"img": v["img"], "data_norm_type": ["dinov2"],
             "intrinsics": torch.from_numpy(data[f"aux.view{i}.intrinsics"]),
             "depth_z": torch.from_numpy(data[f"aux.view{i}.depth_z"]),
             "camera_poses": torch.from_numpy(data[f"aux.view{i}.camera_pose_cam2world"]),
             "is_metric_scale": v["is_metric_scale"]} for i, v in enumerate(stored)]
    for mine, ref in zip(preprocess_views(user), stored):
        assert set(mine) == set(ref)
        for key in ("ray_directions_cam", "depth_along_ray", "camera_pose_quats", "camera_pose_trans"):
            assert norm_err(to_numpy(mine[key]), to_numpy(ref[key])) < 1e-5, key
        assert torch.equal(mine["is_metric_scale"], ref["is_metric_scale"])


def test_preprocessing_defaults_and_errors():
    img = torch.zeros(1, 3, 14, 28)
    rays = torch.zeros(1, 14, 28, 3)
    rays[..., 2] = 2.0
    (v,) = preprocess_views([{"img": img, "ray_directions": rays,
                              "depth_z": torch.full((1, 14, 28), 3.0)}])
    assert torch.allclose(v["ray_directions_cam"][..., 2], torch.ones(()), atol=1e-7)
    assert torch.allclose(v["depth_along_ray"], torch.full((1, 14, 28, 1), 3.0))
    assert torch.equal(v["is_metric_scale"], torch.ones(1, dtype=torch.bool))
    (v,) = preprocess_views([{"img": img, "ray_directions": rays, "depth_z": torch.ones(1, 14, 28)}],
                            ignore_calibration_inputs=True)
    assert "ray_directions_cam" not in v and "depth_along_ray" in v
    with pytest.raises(ValueError, match="view 0: 'depth_z'"):
        preprocess_views([{"img": img, "depth_z": torch.ones(1, 14, 28)}])
    with pytest.raises(ValueError, match="view 0: 'camera_poses'"):
        preprocess_views([{"img": img, "camera_poses": torch.eye(3)[None]}])


@pytest.mark.parametrize("height,width", [(70, 98), (1036, 1036)])
def test_intrinsics_from_exact_pinhole_rays(height, width):
    k = torch.tensor([[[0.9 * width, 0.0, 0.45 * width], [0.0, 0.8 * width, 0.55 * height],
                       [0.0, 0.0, 1.0]]], dtype=torch.float64)
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float64),
                          torch.arange(width, dtype=torch.float64), indexing="ij")
    rays = torch.stack([(u - k[0, 0, 2]) / k[0, 0, 0], (v - k[0, 1, 2]) / k[0, 1, 1],
                        torch.ones_like(u)], dim=-1)
    rays = (rays / rays.norm(dim=-1, keepdim=True)).float()[None]
    assert torch.allclose(intrinsics_from_rays(rays), k.float(), rtol=1e-4, atol=1e-2)


def test_edge_mask_keeps_planes_and_drops_depth_steps():
    h, w = 20, 30
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    z = np.where(u < 15, 2.0, 4.0).astype(np.float32)
    points = np.stack([(u - 15) / 20 * z, (v - 10) / 20 * z, z], axis=-1)
    keep = masks.edge_mask(points, z, np.ones((h, w), dtype=bool))
    assert keep[:, :12].all() and keep[:, 18:].all()
    assert not keep[2:-2, 14:16].any()
    plane = masks.edge_mask(points[:, :12], z[:, :12], np.ones((h, 12), dtype=bool))
    assert plane.all()
    assert not masks.edge_mask(points, z, np.zeros((h, w), dtype=bool)).any()


@needs_fixtures
def test_postprocess_confidence_mask(model):
    _, data = load_case("i1_infer_images_only_2v")
    views = preprocess_views(case_views("i1_infer_images_only_2v"))
    with torch.no_grad():
        raw = model(views)
    out = postprocess_outputs(raw, views, mask_edges=False, apply_confidence_mask=True,
                              confidence_percentile=50)
    for i, (o, r) in enumerate(zip(out, raw)):
        m = o["mask"][..., 0]
        conf_kept = r["conf"] > torch.quantile(r["conf"].reshape(1, -1), 0.5, dim=1)[:, None, None]
        assert torch.equal(m, r["non_ambiguous_mask"] & conf_kept)
        assert torch.equal(o["pts3d"], r["pts3d"] * m[..., None])
        assert torch.allclose(o["camera_poses"][:, :3, 3], r["cam_trans"])
        assert norm_err(to_numpy(o["img_no_norm"]), data[f"aux.view{i}.rgb"]) < 1e-5
