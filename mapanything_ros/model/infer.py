"""Upstream-`infer`-style pre- and post-processing around `MapAnything.forward`.

Pre-processing turns user-level views into forward inputs: intrinsics (B, 3, 3) -> unit rays
at integer pixel indices; given `ray_directions` are normalised by (|r| + 1e-8); `depth_z`
(B, H, W) -> depth along the ray; `camera_poses` (B, 4, 4) cam2world -> (x, y, z, w)
quaternion with w >= 0 and translation (or a (quats, trans) tuple passed through);
`is_metric_scale` defaults to True. Post-processing adds img_no_norm, depth_z, intrinsics
(least-squares pinhole fit of the predicted rays), camera_poses (4x4 cam2world) and masks.
Behaviour read from map-anything `utils/inference.py`; AMP and devices are the caller's job.
"""

from collections.abc import Sequence

import numpy as np
import torch

from ..geometry.camera import CameraModel
from ..geometry.depth import z_to_ray_depth
from ..geometry.transforms import matrix_to_quat, quat_to_matrix
from .masks import edge_mask

# DINOv2 / ImageNet normalisation of `img` (uniception `image_normalizations.py`).
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
USER_KEYS = {"img", "data_norm_type", "intrinsics", "ray_directions", "depth_z", "camera_poses",
             "is_metric_scale", "frame_id"}


def _rays_from_intrinsics(k: torch.Tensor, height: int, width: int) -> torch.Tensor:
    rays = []
    for kb in k.detach().cpu().double().numpy():
        cam = CameraModel.pinhole(kb[0, 0], kb[1, 1], kb[0, 2], kb[1, 2], width, height)
        rays.append(cam.ray_map(grid="index"))
    return torch.from_numpy(np.stack(rays)).to(device=k.device, dtype=torch.float32)


def _pose_inputs(index: int, poses) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(poses, tuple) and len(poses) == 2:
        return poses
    if isinstance(poses, torch.Tensor) and poses.ndim == 3 and poses.shape[-2:] == (4, 4):
        m = poses.detach().cpu().double().numpy()
        quats = torch.from_numpy(matrix_to_quat(m[:, :3, :3])).to(poses.device, torch.float32)
        return quats, poses[:, :3, 3].float()
    raise ValueError(f"view {index}: 'camera_poses' must be a (B, 4, 4) tensor or a "
                     "(quats (B, 4) xyzw, trans (B, 3)) tuple")


def preprocess_views(views: Sequence[dict], ignore_calibration_inputs: bool = False,
                     ignore_depth_inputs: bool = False, ignore_pose_inputs: bool = False
                     ) -> list[dict]:
    """Forward-ready view dicts from user views (keys in USER_KEYS). The ignore_* flags drop
    that modality from the model input (rays are still used to convert depth_z)."""
    out = []
    for i, view in enumerate(views):
        unknown = sorted(set(view) - USER_KEYS)
        if unknown:
            raise ValueError(f"view {i}: {unknown[0]!r} is not an accepted key")
        if "img" not in view:
            raise ValueError(f"view {i}: 'img' is missing")
        img = view["img"]
        batch, _, height, width = img.shape
        res = {k: view[k] for k in ("img", "data_norm_type", "frame_id") if k in view}
        rays = None
        if "intrinsics" in view:
            k = view["intrinsics"]
            if not isinstance(k, torch.Tensor) or tuple(k.shape) != (batch, 3, 3):
                raise ValueError(f"view {i}: 'intrinsics' must be a ({batch}, 3, 3) tensor")
            rays = _rays_from_intrinsics(k, height, width)
        elif "ray_directions" in view:
            r = view["ray_directions"]
            rays = r / (r.norm(dim=-1, keepdim=True) + 1e-8)
        if "depth_z" in view:
            if rays is None:
                raise ValueError(f"view {i}: 'depth_z' needs 'intrinsics' or 'ray_directions'")
            z = view["depth_z"]
            if not isinstance(z, torch.Tensor) or tuple(z.shape) != (batch, height, width):
                raise ValueError(f"view {i}: 'depth_z' must be a ({batch}, {height}, {width}) tensor")
            d = z_to_ray_depth(z.detach().cpu().numpy(), rays.detach().cpu().numpy())
            if not ignore_depth_inputs:
                res["depth_along_ray"] = torch.from_numpy(d).to(z.device, torch.float32)[..., None]
        if rays is not None and not ignore_calibration_inputs:
            res["ray_directions_cam"] = rays
        if "camera_poses" in view and not ignore_pose_inputs:
            res["camera_pose_quats"], res["camera_pose_trans"] = _pose_inputs(i, view["camera_poses"])
        res["is_metric_scale"] = view.get(
            "is_metric_scale", torch.ones(batch, dtype=torch.bool, device=img.device))
        out.append(res)
    return out


def intrinsics_from_rays(rays: torch.Tensor) -> torch.Tensor:
    """Pinhole K (B, 3, 3) fitted to rays (B, H, W, 3) at integer pixel indices: least squares
    of x = cx + fx * dx/dz and y = cy + fy * dy/dz on a grid subsampled by max(1, H//50) x
    max(1, W//50); above 1 Mpx a 5-ray rule (centre and quarter points) is used instead."""
    b, h, w, _ = rays.shape
    r = rays.detach().double()
    if h * w > 1_000_000:
        ch, cw = h // 2, w // 2
        pts = {"c": (ch, cw), "l": (ch, w // 4), "r": (ch, 3 * w // 4), "t": (h // 4, cw),
               "b": (3 * h // 4, cw)}
        u = {k: r[:, i, j] / r[:, i, j, 2:3] for k, (i, j) in pts.items()}
        fx = ((w // 4 - cw) / (u["l"][:, 0] - u["c"][:, 0])
              + (3 * w // 4 - cw) / (u["r"][:, 0] - u["c"][:, 0])) / 2
        fy = ((h // 4 - ch) / (u["t"][:, 1] - u["c"][:, 1])
              + (3 * h // 4 - ch) / (u["b"][:, 1] - u["c"][:, 1])) / 2
        cx, cy = cw - fx * u["c"][:, 0], ch - fy * u["c"][:, 1]
    else:
        rows = torch.arange(0, h, max(1, h // 50), device=r.device)
        cols = torch.arange(0, w, max(1, w // 50), device=r.device)
        sub = r[:, rows][:, :, cols].reshape(b, -1, 3)
        ys, xs = torch.meshgrid(rows.double(), cols.double(), indexing="ij")

        def fit(pix: torch.Tensor, ratio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            a = torch.stack([torch.ones_like(ratio), ratio], dim=2)
            sol = torch.linalg.solve(a.transpose(1, 2) @ a,
                                     a.transpose(1, 2) @ pix.reshape(1, -1, 1).expand(b, -1, 1))
            return sol[:, 0, 0], sol[:, 1, 0]

        cx, fx = fit(xs, sub[..., 0] / sub[..., 2])
        cy, fy = fit(ys, sub[..., 1] / sub[..., 2])
    k = torch.zeros(b, 3, 3, dtype=torch.float64, device=r.device)
    k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2], k[:, 2, 2] = fx, fy, cx, cy, 1.0
    return k.float()


def postprocess_outputs(outputs: list[dict], views: Sequence[dict], apply_mask: bool = True,
                        mask_edges: bool = True, edge_normal_threshold: float = 5.0,
                        edge_depth_threshold: float = 0.03, apply_confidence_mask: bool = False,
                        confidence_percentile: float = 10) -> list[dict]:
    """Add img_no_norm (B, H, W, 3), depth_z (B, H, W, 1) m, intrinsics (B, 3, 3) px,
    camera_poses (B, 4, 4) cam2world in view 0's frame, and with `apply_mask` a `mask`
    (B, H, W, 1) = non-ambiguous [& confidence above the percentile] & not an edge, applied
    to pts3d, pts3d_cam, depth_along_ray and depth_z."""
    result = []
    for out, view in zip(outputs, views):
        res = dict(out)
        img = view["img"]
        mean = torch.tensor(IMAGE_MEAN, device=img.device)[:, None, None]
        std = torch.tensor(IMAGE_STD, device=img.device)[:, None, None]
        res["img_no_norm"] = (img.float() * std + mean).clip(0, 1).permute(0, 2, 3, 1)
        res["depth_z"] = out["pts3d_cam"][..., 2:3]
        res["intrinsics"] = intrinsics_from_rays(out["ray_directions"])
        rot = quat_to_matrix(out["cam_quats"].detach().cpu().double().numpy())
        pose = torch.eye(4, device=img.device).repeat(img.shape[0], 1, 1)
        pose[:, :3, :3] = torch.from_numpy(rot).to(img.device, torch.float32)
        pose[:, :3, 3] = out["cam_trans"]
        res["camera_poses"] = pose
        if apply_mask:
            mask = out["non_ambiguous_mask"].cpu().numpy()
            if apply_confidence_mask:
                conf = out["conf"].float().cpu()
                thresh = torch.quantile(conf.reshape(conf.shape[0], -1), confidence_percentile / 100,
                                        dim=1)
                mask = mask & (conf > thresh[:, None, None]).numpy()
            if mask_edges:
                pts = res["pts3d"].float().cpu().numpy()
                depth = res["depth_z"][..., 0].float().cpu().numpy()
                edges = [edge_mask(pts[b], depth[b], mask[b], edge_normal_threshold,
                                   edge_depth_threshold) for b in range(mask.shape[0])]
                mask = mask & np.stack(edges)
            m = torch.from_numpy(mask).to(out["pts3d"].device)[..., None]
            for key in ("pts3d", "pts3d_cam", "depth_along_ray", "depth_z"):
                res[key] = res[key] * m
            res["mask"] = m
        result.append(res)
    return result


@torch.inference_mode()
def infer(model, views: Sequence[dict], apply_mask: bool = True, mask_edges: bool = True,
          edge_normal_threshold: float = 5.0, edge_depth_threshold: float = 0.03,
          apply_confidence_mask: bool = False, confidence_percentile: float = 10,
          ignore_calibration_inputs: bool = False, ignore_depth_inputs: bool = False,
          ignore_pose_inputs: bool = False, ignore_depth_scale_inputs: bool = False,
          ignore_pose_scale_inputs: bool = False) -> list[dict]:
    """Pre-process user views, run `model.forward`, post-process (upstream `infer` semantics;
    run it under the caller's device/autocast settings). Returns one dict per view."""
    inputs = preprocess_views(views, ignore_calibration_inputs, ignore_depth_inputs,
                              ignore_pose_inputs)
    outputs = model(inputs, use_depth_scale=not ignore_depth_scale_inputs,
                    use_pose_scale=not ignore_pose_scale_inputs)
    return postprocess_outputs(outputs, inputs, apply_mask, mask_edges, edge_normal_threshold,
                               edge_depth_threshold, apply_confidence_mask, confidence_percentile)
