"""ViewBatch: the model inputs for the frames of a Window, at one model resolution.

Model resolution: all views share the size of the reference (first) frame's camera under the
upstream rule (geometry.model_size: long side `long_side`, sides multiples of `patch`); every
view is scaled to cover that size and centre-cropped with its own Resize, so cameras of other
sizes or aspects are cropped more. Rays are the exact rays of each camera's full model at the
model pixels (never a scaled K). Sparse depth is min-pooled to the model pixels (never
interpolated) and turned into depth along those rays. Poses are given in the reference view's
camera frame (view 0 has the identity). Pixels outside a lens's valid field of view get the ray
(0, 0, 1) and no depth (the network needs finite rays); `valid` marks them.
"""

from dataclasses import dataclass

import numpy as np
import torch

from ..geometry import GRID_INDEX, Resize, model_size, quat_trans_from_pose, relative_pose, z_to_ray_depth
from ..model.infer import IMAGE_MEAN, IMAGE_STD

MEAN = np.array(IMAGE_MEAN, dtype=np.float32)  # the model's "dinov2" image normalisation
STD = np.array(IMAGE_STD, dtype=np.float32)
FORWARD_RAY = np.array([0.0, 0.0, 1.0])


@dataclass(frozen=True)
class BatchConfig:
    """Which inputs go to the model and how.

    use_intrinsics / use_poses / use_depth: pass rays / poses / sparse depth where a frame has them.
    metric_poses / metric_depth: the poses / depths are in metres (else only up to scale).
    depth_without_scale: pass depth but let the model ignore its scale (upstream's advice when
    sparse LiDAR depth hurts): the depth is then treated as non-metric.
    grid: pixel-centre convention of the calibrations ("index" or "center", see geometry.camera).
    depth_pooling: "min" or "nearest" (see geometry.Resize.sparse_depth).
    """

    use_intrinsics: bool = True
    use_poses: bool = True
    use_depth: bool = True
    metric_poses: bool = True
    metric_depth: bool = True
    depth_without_scale: bool = False
    long_side: int = 518
    patch: int = 14
    grid: str = GRID_INDEX
    depth_pooling: str = "min"

    @property
    def depth_scale(self):
        """Whether the depth's scale is given to the model as metric."""
        return self.metric_depth and not self.depth_without_scale


@dataclass(frozen=True, eq=False)
class ViewBatch:
    """Model inputs plus what reconstruction needs to map outputs back.

    views: upstream `MapAnything.forward` dicts (B = 1), reference first; frames, resizes (model
    size from each camera's image); rays (H, W, 3) float64 exact unit rays at the model pixels of
    every view (whether passed or not) and valid (H, W) bool where they exist; ref_from_camera:
    the input pose of each view in the reference camera frame, or None; reference_world_from_camera:
    the reference frame's pose (4x4 or None), kept whether or not poses were passed; passed: per
    view, the frozenset of optional input keys given to the model; forward_kwargs: extra keyword
    arguments for `MapAnything.forward`; grid: the pixel-grid convention of `rays` (BatchConfig.grid).
    """

    views: list
    frames: tuple
    resizes: tuple
    rays: tuple
    valid: tuple
    ref_from_camera: tuple
    reference_world_from_camera: np.ndarray | None
    passed: tuple
    forward_kwargs: dict
    grid: str = GRID_INDEX

    @property
    def size(self):
        """(width, height) of the model input."""
        return self.resizes[0].out_size


def normalize_image(rgb):
    """(1, 3, H, W) float32 tensor of an (H, W, 3) uint8 RGB image, DINOv2-normalised."""
    x = (rgb.astype(np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def assemble(frames, config=BatchConfig()):
    """ViewBatch of frames (model view order, reference first; see Window.views)."""
    if not frames:
        raise ValueError("no frames to assemble")
    size = model_size(*frames[0].camera.image_size, config.long_side, config.patch)
    ref_pose = frames[0].world_from_camera
    poses = config.use_poses and ref_pose is not None  # view 0 must have a pose if any does
    views, resizes, rays, valid, rel_poses, passed = [], [], [], [], [], []
    for frame in frames:
        resize = Resize.cover(frame.camera.image_size, size)
        ray = resize.rays(frame.camera, config.grid)
        ok = np.all(np.isfinite(ray), axis=-1)
        view = {"img": normalize_image(resize.image(frame.image)), "data_norm_type": ["dinov2"],
                "frame_id": (frame.frame_id, frame.stamp_ns, *size)}
        if config.use_intrinsics:
            filled = np.where(ok[..., None], ray, FORWARD_RAY)
            view["ray_directions_cam"] = torch.from_numpy(filled.astype(np.float32))[None]
        rel = None
        if poses and frame.world_from_camera is not None:
            rel = relative_pose(ref_pose, frame.world_from_camera)
            q, t = quat_trans_from_pose(rel)
            view["camera_pose_quats"] = torch.from_numpy(q.astype(np.float32))[None]
            view["camera_pose_trans"] = torch.from_numpy(t.astype(np.float32))[None]
        if config.use_depth and frame.sparse_depth is not None:
            z = resize.sparse_depth(frame.sparse_depth, config.depth_pooling)
            depth = z_to_ray_depth(z, ray).astype(np.float32)
            view["depth_along_ray"] = torch.from_numpy(depth)[None, ..., None]
        metric = (rel is not None and config.metric_poses) or ("depth_along_ray" in view and config.depth_scale)
        view["is_metric_scale"] = torch.tensor([metric])
        views.append(view)
        resizes.append(resize)
        rays.append(ray)
        valid.append(ok)
        rel_poses.append(rel)
        passed.append(frozenset(view) & {"ray_directions_cam", "camera_pose_quats", "camera_pose_trans",
                                         "depth_along_ray"})
    kwargs = {"use_depth_scale": config.depth_scale, "use_pose_scale": config.metric_poses}
    return ViewBatch(views, tuple(frames), tuple(resizes), tuple(rays), tuple(valid), tuple(rel_poses),
                     ref_pose, tuple(passed), kwargs, config.grid)
