"""forward() rejects malformed views with a ValueError naming the view and key, before compute."""

import pytest
import torch

from model_fixtures import needs_fixtures, tiny_model

pytestmark = needs_fixtures
B, H, W = 1, 28, 42


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def view(**extra) -> dict:
    v = {"img": torch.zeros(B, 3, H, W), "data_norm_type": ["dinov2"]}
    v.update(extra)
    return v


def pose(b: int = B) -> dict:
    return {"camera_pose_quats": torch.tensor([[0.0, 0.0, 0.0, 1.0]] * b),
            "camera_pose_trans": torch.zeros(b, 3)}


NAN_RAYS = torch.full((B, H, W, 3), float("nan"))
BAD = [
    ("size not a multiple of 14", [view(), {"img": torch.zeros(B, 3, 30, 42)}], 1, "img"),
    ("first view size", [{"img": torch.zeros(B, 3, 30, 42)}], 0, "img"),
    ("other batch size", [view(), view(img=torch.zeros(2, 3, H, W))], 1, "img"),
    ("missing img", [view(), {"data_norm_type": ["dinov2"]}], 1, "img"),
    ("integer image", [view(img=torch.zeros(B, 3, H, W, dtype=torch.uint8))], 0, "img"),
    ("non-finite image", [view(img=torch.full((B, 3, H, W), float("inf")))], 0, "img"),
    ("non-finite rays", [view(), view(ray_directions_cam=NAN_RAYS)], 1, "ray_directions_cam"),
    ("rays channels-first", [view(ray_directions_cam=torch.zeros(B, 3, H, W))], 0,
     "ray_directions_cam"),
    ("depth without channel", [view(depth_along_ray=torch.zeros(B, H, W))], 0, "depth_along_ray"),
    ("negative depth", [view(depth_along_ray=-torch.ones(B, H, W, 1))], 0, "depth_along_ray"),
    ("pose not on view 0", [view(), view(**pose())], 1, "camera_pose_quats"),
    ("half a pose", [view(camera_pose_quats=torch.tensor([[0.0, 0, 0, 1]]))], 0,
     "camera_pose_trans"),
    ("zero quaternion", [view(camera_pose_quats=torch.zeros(B, 4), camera_pose_trans=torch.zeros(B, 3))],
     0, "camera_pose_quats"),
    ("metric flag (B, 1)", [view(is_metric_scale=torch.ones(B, 1, dtype=torch.bool))], 0,
     "is_metric_scale"),
    ("metric flag as float", [view(is_metric_scale=torch.ones(B))], 0, "is_metric_scale"),
    ("norm type as str", [view(data_norm_type="dinov2")], 0, "data_norm_type"),
    ("unknown key", [view(), view(depth=torch.zeros(B, H, W, 1))], 1, "depth"),
    ("wrong number of frame ids", [view(frame_id=["a", "b"])], 0, "frame_id"),
]


@pytest.mark.parametrize("views,index,key", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_views_raise_before_compute(model, views, index, key):
    before = model.encoder_calls
    with pytest.raises(ValueError) as err:
        model(views)
    assert f"view {index}" in str(err.value) and repr(key) in str(err.value)
    assert model.encoder_calls == before


def test_empty_view_list(model):
    with pytest.raises(ValueError):
        model([])


def test_valid_minimal_views_pass(model):
    with torch.no_grad():
        out = model([view(**pose()), view(is_metric_scale=torch.zeros(B, dtype=torch.bool))])
    assert out[1]["pts3d"].shape == (B, H, W, 3)
