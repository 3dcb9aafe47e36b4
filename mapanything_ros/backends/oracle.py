"""OracleBackend: the true factored outputs of the synthetic scene, for testing everything around the network."""

import numpy as np

from ..geometry import relative_pose
from .prediction import Backend, Prediction


class OracleBackend(Backend):
    """Answers with the truth of `scene` (a synthetic.SyntheticScene) for the batch's frames.

    Rays: the exact rays of each camera at the model pixels (batch.rays). Depth: ray-cast along
    them from the true camera pose. Poses: true poses relative to the reference frame's true pose.
    Scale 1. confidence: `confidence` on valid pixels, 1 elsewhere; mask: the lens's valid pixels.
    """

    def __init__(self, scene, confidence=100.0):
        self.scene = scene
        self.confidence = float(confidence)

    def predict(self, batch):
        poses = [self.scene.world_from_camera(f.frame_id, f.stamp_ns) for f in batch.frames]
        valid = np.stack(batch.valid)
        rays = np.where(valid[..., None], np.stack(batch.rays), np.array([0.0, 0.0, 1.0]))
        depth = np.stack([self.scene.ray_depth(p, r) for p, r in zip(poses, rays)])
        return Prediction(
            ray_directions=rays.astype(np.float32),
            depth_along_ray=np.where(valid, depth, 0.0).astype(np.float32),
            ref_from_camera=np.stack([relative_pose(poses[0], p) for p in poses]),
            confidence=np.where(valid, self.confidence, 1.0).astype(np.float32),
            mask=valid,
            metric_scale=1.0,
        )
