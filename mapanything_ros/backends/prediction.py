"""Prediction (the factored model outputs, numpy) and the Backend interface."""

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..geometry import arrays, pose_from_quat_trans
from ..geometry.depth import MAX_DEPTH_M


@dataclass(frozen=True, eq=False)
class Prediction:
    """Per-view outputs at the model resolution, views in ViewBatch order (reference first).

    ray_directions (V, H, W, 3) float32 unit rays, camera optical frame; depth_along_ray
    (V, H, W) float32 metres along those rays (metric scale already applied); ref_from_camera
    (V, 4, 4) float64 camera poses in the reference camera's frame, translation in metres;
    confidence (V, H, W) float32 >= 1; mask (V, H, W) bool, pixels worth using; metric_scale:
    the factor the model applied to its normalised depths and translations (1 if already metric).
    The dense per-view fields may be ViewStacks (a network backend's: tensors left on the model's
    device) instead of arrays; reading them view by view as numpy works for both.
    """

    ray_directions: np.ndarray
    depth_along_ray: np.ndarray
    ref_from_camera: np.ndarray
    confidence: np.ndarray
    mask: np.ndarray
    metric_scale: float

    def check(self):
        """Raise ValueError when the poses or the metric scale cannot be a scene's (a network that
        diverged, or bad weights): non-finite, a scale <= 0, a camera more than MAX_DEPTH_M from the
        reference (LiDAR points that far are garbage too). Dense fields are screened per pixel by the
        reconstruction (mapping.reconstruction: a pixel without a finite, plausible estimate has none)."""
        scale = float(self.metric_scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"the network's metric scale is {scale} (bad weights, or a diverged network?)")
        poses = np.asarray(self.ref_from_camera)
        bad = np.flatnonzero(~np.isfinite(poses).reshape(len(poses), -1).all(axis=1))
        if len(bad):
            raise ValueError(f"the network's camera pose of view {int(bad[0])} is not finite (bad weights, or a "
                             "diverged network?)")
        far = np.linalg.norm(poses[:, :3, 3], axis=1)
        if far.max(initial=0) > MAX_DEPTH_M:
            view = int(far.argmax())
            raise ValueError(f"the network puts view {view} {far[view]:.3g} m from the reference view (more than "
                             f"{MAX_DEPTH_M / 1000:,.0f} km: garbage; bad weights, or a diverged network?)")


class ViewStack:
    """Per-view tensors (V, ...) that stay where the model made them (e.g. on the GPU).
    `stack.tensor(i)` is view i there (float outputs as float32), not copied: reconstruction runs
    on it where the model ran (mapping.reconstruction). `stack[i]` copies view i to the host once,
    as numpy; `np.asarray(stack)` copies all.

    views: one tensor per view.
    """

    def __init__(self, views):
        self._views = list(views)
        self._host = {}
        self.shape = (len(self._views), *self._views[0].shape) if self._views else (0,)

    def __len__(self):
        return len(self._views)

    def __getitem__(self, i):
        if not isinstance(i, (int, np.integer)):
            return np.asarray(self)[i]
        i = int(i)
        if i not in self._host:
            self._host[i] = self.tensor(i).cpu().numpy()
        return self._host[i]

    def __array__(self, dtype=None, copy=None):
        out = np.stack([self[i] for i in range(len(self))])
        return out if dtype is None else out.astype(dtype)

    def tensor(self, i):
        """View i on its device (float as float32), not copied to the host."""
        t = self._views[i]
        return t.float() if t.is_floating_point() else t

    @property
    def device(self):
        """The torch.device the views are on."""
        return self._views[0].device

    @property
    def copied(self):
        """The indices of the views copied to the host so far."""
        return sorted(self._host)


class Backend:
    """Turns a window.ViewBatch into a Prediction."""

    def predict(self, batch):
        """Prediction for batch (a window.ViewBatch)."""
        raise NotImplementedError


def prediction_from_outputs(out, batch):
    """Prediction from `MapAnything.forward`-style per-view outputs (B = 1; torch tensors on any
    device, float outputs possibly bf16) for `batch` (the window.ViewBatch they were computed for).
    Dense outputs stay where they are, per view (ViewStack), float32; the mask is and-ed with the
    batch's valid pixels there."""

    def per_view(key, last=None):
        return ViewStack(o[key][0] if last is None else o[key][0][..., last] for o in out)

    masks = [o["non_ambiguous_mask"][0] for o in out]
    mask = ViewStack(m & arrays.to(v, m.device) for m, v in zip(masks, batch.valid))
    quats = torch.stack([o["cam_quats"][0] for o in out]).float().cpu().numpy().astype(np.float64)
    trans = torch.stack([o["cam_trans"][0] for o in out]).float().cpu().numpy().astype(np.float64)
    return Prediction(
        ray_directions=per_view("ray_directions"),
        depth_along_ray=per_view("depth_along_ray", 0),
        ref_from_camera=pose_from_quat_trans(quats, trans),
        confidence=per_view("conf"),
        mask=mask,
        metric_scale=float(out[0]["metric_scaling_factor"][0, 0]),
    )
