"""ViewBatch: the model inputs for the frames of a Window, at one model resolution.

Model resolution: all views share the size of the reference (first) frame's camera under the
upstream rule (geometry.model_size: long side `long_side`, sides multiples of `patch`); every
view is scaled to cover that size and centre-cropped with its own Resize, so cameras of other
sizes or aspects are cropped more. Rays are the exact rays of each camera's full model at the
model pixels (never a scaled K). Sparse depth is min-pooled to the model pixels (never
interpolated) and turned into depth along those rays. Poses are given in the reference view's
camera frame (view 0 has the identity). Pixels outside a lens's valid field of view get the ray
(0, 0, 1) and no depth (the network needs finite rays); `valid` marks them.

Cost. Everything that depends on one frame alone (decoding, the resized image, the normalised
image tensor, the sparse depth at the model resolution, float32 rays) is a PreparedView, made
once by `prepare` when the frame first enters a window; `assemble` only stacks what the
prepared views hold and adds the poses relative to the window's reference view.
"""

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import torch

from ..geometry import GRID_INDEX, Resize, model_size, quat_trans_from_pose, relative_pose, z_to_ray_depth
from ..model.infer import IMAGE_MEAN, IMAGE_STD

# The model's "dinov2" normalisation (x / 255 - mean) / std as one multiply-add per channel.
_SCALE = (1.0 / (255.0 * np.array(IMAGE_STD))).astype(np.float32)
_OFFSET = (-np.array(IMAGE_MEAN) / np.array(IMAGE_STD)).astype(np.float32)
FORWARD_RAY = np.array([0.0, 0.0, 1.0])
GEOMETRIC_INPUTS = frozenset({"ray_directions_cam", "camera_pose_quats", "camera_pose_trans", "depth_along_ray"})


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
class PreparedView:
    """What one frame contributes to any window at one model size (see `prepare`).

    frame: the resolved window.Frame (image decoded, sparse depth computed); resize: its
    geometry.Resize to the model size; image: (1, 3, H, W) float32 normalised tensor; colors:
    (H, W, 3) uint8 RGB at the model pixels, a view of rgbx: (H·W,) uint32, each pixel's
    R, G, B, 255 bytes (one 4-byte gather per point; the fourth byte is not read); rays: (H, W, 3)
    float64 exact unit rays, NaN outside the lens (read-only, shared per camera); filled_rays:
    (1, H, W, 3) float32 tensor, (0, 0, 1) where not valid (shared); valid: (H, W) bool (shared);
    depth: (1, H, W, 1) float32 tensor of the sparse depth along the rays (0 = none), or None
    without a measurement at the model pixels; measured: (H, W) float32 sparse z-depth at the
    model pixels (0 = none), or None without sparse depth.
    """

    frame: object
    resize: Resize
    image: torch.Tensor
    colors: np.ndarray
    rgbx: np.ndarray
    rays: np.ndarray
    filled_rays: torch.Tensor
    valid: np.ndarray
    depth: torch.Tensor | None
    measured: np.ndarray | None


@dataclass(frozen=True, eq=False)
class ViewBatch:
    """Model inputs plus what reconstruction needs to map outputs back.

    views: upstream `MapAnything.forward` dicts (B = 1), reference first; prepared: the
    PreparedView of every view (frame, resize, colours, rays, valid, measured depth);
    ref_from_camera: the input pose of each view in the reference camera frame, or None;
    reference_world_from_camera: the reference frame's pose (4x4 or None), kept whether or not
    poses were passed; passed: per view, the frozenset of optional input keys given to the model;
    forward_kwargs: extra keyword arguments for `MapAnything.forward`; grid: the pixel-grid
    convention of the rays (BatchConfig.grid).
    """

    views: list
    prepared: tuple
    ref_from_camera: tuple
    reference_world_from_camera: np.ndarray | None
    passed: tuple
    forward_kwargs: dict
    grid: str = GRID_INDEX

    @property
    def frames(self):
        """The window.Frames, in view order."""
        return tuple(p.frame for p in self.prepared)

    @property
    def resizes(self):
        """Each view's geometry.Resize to the model size."""
        return tuple(p.resize for p in self.prepared)

    @property
    def rays(self):
        """Each view's exact unit rays (H, W, 3) float64 at the model pixels, NaN outside the lens."""
        return tuple(p.rays for p in self.prepared)

    @property
    def valid(self):
        """Each view's (H, W) bool: model pixels inside the lens's valid field of view."""
        return tuple(p.valid for p in self.prepared)

    @property
    def size(self):
        """(width, height) of the model input."""
        return self.prepared[0].resize.out_size


def normalize_image(rgb):
    """(1, 3, H, W) float32 tensor of an (H, W, 3) uint8 RGB image, DINOv2-normalised."""
    h, w, _ = rgb.shape
    x = np.empty((3, h, w), np.float32)
    for c in range(3):  # planar output, one channel at a time: no interleaved temporary, no transpose copy
        np.multiply(rgb[..., c], _SCALE[c], out=x[c], dtype=np.float32)
        x[c] += _OFFSET[c]
    return torch.from_numpy(x)[None]


def batch_size(frames, config=BatchConfig()):
    """(width, height) of the model input for a window whose reference (first) frame is frames[0]."""
    return model_size(*frames[0].camera.image_size, config.long_side, config.patch)


def prepare(frame, size, config=BatchConfig()):
    """PreparedView of a window.Frame at model size (width, height): resolves the frame (decoding
    and sparse depth deferred to here, see window.Frame), resizes and normalises its image and
    pools its sparse depth. Raises ValueError when the frame cannot be resolved."""
    frame = frame.resolved()
    resize = Resize.cover(frame.camera.image_size, tuple(size))
    rays, filled, valid = _rays(frame.camera, resize, config.grid)
    rgbx = cv2.cvtColor(resize.image(frame.image), cv2.COLOR_RGB2RGBA)  # one SIMD pass; a strided copy: 1 ms
    colors = rgbx[..., :3]
    depth = measured = None
    if frame.sparse_depth is not None:
        measured = resize.sparse_depth(frame.sparse_depth, config.depth_pooling)
        if measured.any():  # a depth map without a measurement at the model pixels is not an input
            depth = torch.from_numpy(z_to_ray_depth(measured, rays).astype(np.float32, copy=False))[None, ..., None]
    return PreparedView(frame, resize, normalize_image(colors), colors, rgbx.view(np.uint32).reshape(-1), rays, filled,
                        valid, depth, measured)


def assemble(frames, config=BatchConfig(), prepared=None):
    """ViewBatch of frames (model view order, reference first; see Window.views).

    prepared: a dict kept by the caller across windows, mapping prepare_key(frame, size, config)
    to PreparedView; frames found there are not prepared again, new ones are added.
    """
    if not frames:
        raise ValueError("no frames to assemble")
    size = batch_size(frames, config)
    prepared = {} if prepared is None else prepared
    ref_pose = frames[0].world_from_camera
    poses = config.use_poses and ref_pose is not None  # view 0 must have a pose if any does
    rel_poses = [relative_pose(ref_pose, f.world_from_camera) if poses and f.world_from_camera is not None else None
                 for f in frames]
    given = [k for k, rel in enumerate(rel_poses) if rel is not None]
    # One quaternion conversion for the window's poses (elementwise: the same bits as one by one).
    pose_inputs = dict(zip(given, zip(*quat_trans_from_pose(np.stack([rel_poses[k] for k in given]))))) if given else {}
    views, preps, passed = [], [], []
    for k, (frame, rel) in enumerate(zip(frames, rel_poses)):
        key = prepare_key(frame, size, config)
        prep = prepared.get(key)
        if prep is None:
            prep = prepared[key] = prepare(frame, size, config)
        view = {"img": prep.image, "data_norm_type": ["dinov2"], "frame_id": (frame.frame_id, frame.stamp_ns, *size)}
        if config.use_intrinsics:
            view["ray_directions_cam"] = prep.filled_rays
        if rel is not None:
            q, t = pose_inputs[k]
            view["camera_pose_quats"] = torch.from_numpy(q.astype(np.float32))[None]
            view["camera_pose_trans"] = torch.from_numpy(t.astype(np.float32))[None]
        if config.use_depth and prep.depth is not None:
            view["depth_along_ray"] = prep.depth
        metric = (rel is not None and config.metric_poses) or ("depth_along_ray" in view and config.depth_scale)
        view["is_metric_scale"] = torch.tensor([metric])
        views.append(view)
        preps.append(prep)
        passed.append(frozenset(view) & GEOMETRIC_INPUTS)
    kwargs = {"use_depth_scale": config.depth_scale, "use_pose_scale": config.metric_poses}
    return ViewBatch(views, tuple(preps), tuple(rel_poses), ref_pose, tuple(passed), kwargs, config.grid)


def prepare_key(frame, size, config):
    """The key of a frame's PreparedView: the image, the model size and the preparation settings."""
    return frame.key, tuple(size), config.grid, config.depth_pooling


@lru_cache(maxsize=16)
def _rays(camera, resize, grid):
    """(exact rays (H, W, 3) float64 read-only, filled (1, H, W, 3) float32 tensor, valid (H, W) bool) per camera."""
    rays = resize.rays(camera, grid)
    valid = np.all(np.isfinite(rays), axis=-1)
    valid.setflags(write=False)
    filled = torch.from_numpy(np.where(valid[..., None], rays, FORWARD_RAY).astype(np.float32))[None]
    return rays, filled, valid
