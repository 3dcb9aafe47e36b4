"""MapAnything.forward reproduces the upstream reference cases (tiny random-weight model)."""

import pytest
import torch

from model_fixtures import (TOL, case_names, case_views, check_outputs, load_case, needs_fixtures, norm_err,
                            reference_outputs, tiny_model, to_numpy)

pytestmark = needs_fixtures


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.mark.parametrize("name", case_names("forward"))
def test_forward_matches_reference(model, name):
    with torch.no_grad():
        outputs = model(case_views(name))
    check_outputs(outputs, reference_outputs(name))


@pytest.mark.parametrize("name", ["c5_mixed_5v", "c7_batch2_calib_pose_depth_3v"])
def test_intermediates_match_reference(model, name):
    """Stage outputs against the stored `dbg.*` tensors."""
    _, data = load_case(name)
    views = case_views(name)
    with torch.no_grad():
        feats, tokens = model.encode_images(views)
        fused = model.fuse_inputs(views, feats)
        final, inter = model.share_information(fused, tokens, len(views))
    pairs = {
        "encoder_features": feats, "encoder_registers": tokens, "fused_features": fused,
        "info_intermediate0_features": inter[0].features,
        "info_intermediate1_features": inter[1].features,
        "info_final_features": final.features, "info_final_registers": final.view_tokens,
        "info_scale_token": final.global_tokens,
    }
    for key, value in pairs.items():
        assert norm_err(to_numpy(value), data[f"dbg.{key}"]) < TOL, key
    with torch.no_grad():
        pose = model.pose_head(final.features)
        scale = model.scale_head(final.global_tokens)
    assert norm_err(to_numpy(pose), data["dbg.pose_head_raw"]) < TOL
    assert norm_err(to_numpy(scale), data["dbg.scale_head_raw"]) < TOL


def test_head_chunking_gives_same_outputs(model):
    views = case_views("c3_calib_pose_metric_4v")
    with torch.no_grad():
        whole = model(views)
        model.head_chunk = 1
        try:
            chunked = model(views)
        finally:
            model.head_chunk = None
    for a, b in zip(whole, chunked):
        for key in a:
            if a[key].dtype != torch.bool:
                assert norm_err(to_numpy(b[key]), to_numpy(a[key])) < 1e-5, key


def test_outputs_are_consistent(model):
    """Factored outputs agree with each other (units and frames as documented)."""
    with torch.no_grad():
        out = model(case_views("c3_calib_pose_metric_4v"))
    for view in out:
        rays, depth, s = view["ray_directions"], view["depth_along_ray"], view["metric_scaling_factor"]
        assert torch.allclose(rays.norm(dim=-1), torch.ones(()), atol=1e-5)
        assert torch.allclose(view["pts3d_cam"], rays * depth, rtol=1e-5, atol=1e-6)
        assert torch.allclose(view["cam_quats"].norm(dim=-1), torch.ones(()), atol=1e-6)
        assert bool((view["conf"] >= 1).all())
        assert s.shape == (1, 1) and bool((s > 0).all())
    assert torch.equal(out[0]["metric_scaling_factor"], out[1]["metric_scaling_factor"])
