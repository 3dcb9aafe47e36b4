"""Prediction (the factored model outputs, numpy) and the Backend interface."""

from dataclasses import dataclass

import numpy as np


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
