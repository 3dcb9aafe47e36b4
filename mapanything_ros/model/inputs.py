"""Validation of the per-view input dicts of `MapAnything.forward` (before any compute).

Keys (upstream names; all but `img` optional, a missing key means "not given"):
- img (B, 3, H, W) float, normalised with the DINOv2 / ImageNet mean and std; H, W multiples
  of the patch size; the same B, H, W in every view.
- data_norm_type: list/tuple whose first item names the image normalisation ("dinov2").
- ray_directions_cam (B, H, W, 3) float: unit rays, camera optical frame (x right, y down, z fwd).
- depth_along_ray (B, H, W, 1) float, metres along the ray, >= 0, 0 = no measurement.
- camera_pose_quats (B, 4) float (x, y, z, w) and camera_pose_trans (B, 3) float: cam2world
  pose, both or neither; if any view has a pose, view 0 must have one.
- is_metric_scale (B,) bool.
- frame_id: cache key(s) for the image-encoder feature cache, see `frame_ids`.
Every error is a ValueError that names the view index and the key.
"""

from collections.abc import Hashable, Sequence

import torch

DENSE_KEYS = {"ray_directions_cam": 3, "depth_along_ray": 1}
VECTOR_KEYS = {"camera_pose_quats": 4, "camera_pose_trans": 3}
KNOWN_KEYS = {"img", "data_norm_type", "is_metric_scale", "frame_id", *DENSE_KEYS, *VECTOR_KEYS}


def _fail(view: int, key: str, msg: str) -> ValueError:
    return ValueError(f"view {view}: {key!r} {msg}")


def _check_float(view: int, key: str, x, shape: tuple[int, ...]) -> None:
    if not isinstance(x, torch.Tensor):
        raise _fail(view, key, f"must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise _fail(view, key, f"must be a floating-point tensor, got {x.dtype}")
    if tuple(x.shape) != shape:
        raise _fail(view, key, f"must have shape {shape}, got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise _fail(view, key, "contains non-finite values")


def frame_ids(view: dict, batch: int, index: int = 0) -> list[Hashable] | None:
    """The per-sample cache keys of a view: None without `frame_id`; for B == 1 any hashable
    that is not a list (a tuple is one id); for B > 1 a list or tuple of B hashables."""
    if "frame_id" not in view or view["frame_id"] is None:
        return None
    fid = view["frame_id"]
    if batch == 1 and not isinstance(fid, list):
        ids = [fid]
    elif isinstance(fid, (list, tuple)) and len(fid) == batch:
        ids = list(fid)
    else:
        raise _fail(index, "frame_id", f"must be one id per sample (a list of {batch} ids)")
    for i in ids:
        if not isinstance(i, Hashable):
            raise _fail(index, "frame_id", f"ids must be hashable, got {type(i).__name__}")
    return ids


def validate_views(views: Sequence[dict], patch_size: int, norm_type: str) -> tuple[int, int, int]:
    """Check every view; returns (B, H, W). Raises ValueError naming the view and key."""
    if not isinstance(views, (list, tuple)) or not views:
        raise ValueError("views must be a non-empty list of dicts")
    b = h = w = None
    for i, view in enumerate(views):
        if not isinstance(view, dict):
            raise ValueError(f"view {i}: must be a dict, got {type(view).__name__}")
        unknown = sorted(set(view) - KNOWN_KEYS)
        if unknown:
            raise _fail(i, unknown[0], f"is not an accepted key (accepted: {sorted(KNOWN_KEYS)})")
        if "img" not in view:
            raise _fail(i, "img", "is missing")
        img = view["img"]
        if not isinstance(img, torch.Tensor) or img.ndim != 4 or img.shape[1] != 3:
            shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
            raise _fail(i, "img", f"must be a (B, 3, H, W) tensor, got {shape}")
        if b is None:
            b, _, h, w = img.shape
            if h % patch_size or w % patch_size:
                raise _fail(i, "img", f"height {h} and width {w} must be multiples of {patch_size}")
        _check_float(i, "img", img, (b, 3, h, w))
        if "data_norm_type" in view:
            norm = view["data_norm_type"]
            if not isinstance(norm, (list, tuple)) or not norm or norm[0] != norm_type:
                raise _fail(i, "data_norm_type", f"must be [{norm_type!r}], got {norm!r}")
        for key, ch in DENSE_KEYS.items():
            if key in view:
                _check_float(i, key, view[key], (b, h, w, ch))
        if "depth_along_ray" in view and bool((view["depth_along_ray"] < 0).any()):
            raise _fail(i, "depth_along_ray", "contains negative depths (0 marks no measurement)")
        has = [k for k in VECTOR_KEYS if k in view]
        if len(has) == 1:
            missing = next(k for k in VECTOR_KEYS if k not in view)
            raise _fail(i, missing, f"is missing while {has[0]!r} is given")
        for key, n in VECTOR_KEYS.items():
            if key in view:
                _check_float(i, key, view[key], (b, n))
        if "camera_pose_quats" in view and bool((view["camera_pose_quats"].norm(dim=1) < 1e-6).any()):
            raise _fail(i, "camera_pose_quats", "contains a zero quaternion")
        if has and "camera_pose_quats" not in views[0]:
            raise _fail(i, "camera_pose_quats", "is given but view 0 (the reference) has no pose")
        if "is_metric_scale" in view:
            m = view["is_metric_scale"]
            if not isinstance(m, torch.Tensor) or m.dtype != torch.bool or tuple(m.shape) != (b,):
                desc = (f"{m.dtype} {tuple(m.shape)}" if isinstance(m, torch.Tensor)
                        else type(m).__name__)
                raise _fail(i, "is_metric_scale", f"must be a bool tensor of shape ({b},), got {desc}")
        frame_ids(view, b, i)
    return b, h, w


MODALITIES = ("rays", "poses", "depth")  # optional input groups, as the ONNX graphs name them


def modalities(views: Sequence[dict]) -> frozenset[str]:
    """The optional input groups given in any view: "rays", "poses", "depth"."""
    keys = {"rays": "ray_directions_cam", "poses": "camera_pose_quats", "depth": "depth_along_ray"}
    return frozenset(m for m, key in keys.items() if any(key in v for v in views))


def geometric_inputs(views: Sequence[dict], use_depth_scale: bool = True, use_pose_scale: bool = True,
                     include: frozenset[str] = frozenset()) -> dict[str, torch.Tensor]:
    """The optional inputs of (validated) views as `MapAnything.fuse` takes them: per modality
    given in a view (or named in `include`), view-major stacked tensors for all V*B rows and a
    row mask; rows without it get zeros (identity quaternions). Scale masks: rows whose
    `is_metric_scale` is True (and `use_depth_scale` / `use_pose_scale`). Keys in the order of
    the `MapAnything.fuse` arguments."""
    batch, _, height, width = views[0]["img"].shape
    dev = views[0]["img"].device

    def stack(key: str, fill: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [v[key].float() if key in v else fill.expand(batch, *fill.shape) for v in views]
        mask = [torch.full((batch,), key in v, dtype=torch.bool, device=dev) for v in views]
        return torch.cat(rows), torch.cat(mask)

    def metric(view: dict) -> torch.Tensor:
        flag = view.get("is_metric_scale")
        return flag.to(dev) if flag is not None else torch.zeros(batch, dtype=torch.bool, device=dev)

    given = modalities(views) | include
    metric_rows = torch.cat([metric(v) for v in views])
    out = {}
    if "rays" in given:
        out["rays"], out["ray_mask"] = stack("ray_directions_cam", torch.zeros(height, width, 3, device=dev))
    if "depth" in given:
        out["depth"], out["depth_mask"] = stack("depth_along_ray", torch.zeros(height, width, 1, device=dev))
        out["depth_scale_mask"] = out["depth_mask"] & metric_rows & use_depth_scale
    if "poses" in given:
        quats, mask = stack("camera_pose_quats", torch.tensor([0.0, 0.0, 0.0, 1.0], device=dev))
        trans, _ = stack("camera_pose_trans", torch.zeros(3, device=dev))
        out["quats"], out["trans"], out["pose_mask"] = quats, trans, mask
        out["pose_scale_mask"] = out["pose_mask"] & metric_rows & use_pose_scale
    return out
