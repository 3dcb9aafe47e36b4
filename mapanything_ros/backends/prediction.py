"""Prediction (the factored model outputs, numpy) and the Backend interface."""

from dataclasses import dataclass

import numpy as np

from ..geometry import pose_from_quat_trans


@dataclass(frozen=True, eq=False)
class Prediction:
    """Per-view outputs at the model resolution, views in ViewBatch order (reference first).

    ray_directions (V, H, W, 3) float32 unit rays, camera optical frame; depth_along_ray
    (V, H, W) float32 metres along those rays (metric scale already applied); ref_from_camera
    (V, 4, 4) float64 camera poses in the reference camera's frame, translation in metres;
    confidence (V, H, W) float32 >= 1; mask (V, H, W) bool, pixels worth using; metric_scale:
    the factor the model applied to its normalised depths and translations (1 if already metric).
    """

    ray_directions: np.ndarray
    depth_along_ray: np.ndarray
    ref_from_camera: np.ndarray
    confidence: np.ndarray
    mask: np.ndarray
    metric_scale: float


class Backend:
    """Turns a window.ViewBatch into a Prediction."""

    def predict(self, batch):
        """Prediction for batch (a window.ViewBatch)."""
        raise NotImplementedError


def prediction_from_outputs(out, batch):
    """Prediction from `MapAnything.forward`-style per-view outputs (B = 1; torch tensors on any
    device, float outputs possibly bf16) for `batch` (the window.ViewBatch they were computed for)."""

    def stack(key):  # float outputs as float32
        return np.stack([(o[key][0].float() if o[key].is_floating_point() else o[key][0]).cpu().numpy()
                         for o in out])

    quats, trans = stack("cam_quats").astype(np.float64), stack("cam_trans").astype(np.float64)
    return Prediction(
        ray_directions=stack("ray_directions"),
        depth_along_ray=stack("depth_along_ray")[..., 0],
        ref_from_camera=pose_from_quat_trans(quats, trans),
        confidence=stack("conf"),
        mask=stack("non_ambiguous_mask") & np.stack(batch.valid),
        metric_scale=float(out[0]["metric_scaling_factor"][0, 0]),
    )
