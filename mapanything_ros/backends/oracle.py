"""OracleBackend: the true factored outputs of the synthetic scene, for testing everything around the network."""

from collections import OrderedDict

import numpy as np

from ..geometry import relative_pose
from ..window.batch import FORWARD_RAY
from .prediction import Backend, Prediction


class OracleBackend(Backend):
    """Answers with the truth of `scene` (a synthetic.SyntheticScene) for the batch's frames.

    Rays: the exact rays of each camera at the model pixels (batch.rays). Depth: ray-cast along
    them from the true camera pose. Poses: true poses relative to the reference frame's true pose.
    Scale 1. confidence: `confidence` on valid pixels, 1 elsewhere; mask: the lens's valid pixels.
    Each frame's depth is ray-cast once and kept for the last `cached` frames (a frame stays in
    several windows), so that the oracle costs little next to the work it stands in for.
    """

    def __init__(self, scene, confidence=100.0, cached=64):
        self.scene = scene
        self.confidence = float(confidence)
        self.cached = int(cached)
        self._depth = OrderedDict()  # (Frame.key, model size) -> ray depth (H, W) float32, 0 where invalid

    def predict(self, batch):
        poses = [self.scene.world_from_camera(f.frame_id, f.stamp_ns) for f in batch.frames]
        valid = np.stack(batch.valid)
        return Prediction(
            ray_directions=np.stack([p.filled_rays[0].numpy() for p in batch.prepared]),
            depth_along_ray=np.stack([self._ray_depth(p, pose) for p, pose in zip(batch.prepared, poses)]),
            ref_from_camera=np.stack([relative_pose(poses[0], p) for p in poses]),
            confidence=np.where(valid, np.float32(self.confidence), np.float32(1.0)),
            mask=valid,
            metric_scale=1.0,
        )

    def _ray_depth(self, prep, pose):
        """Ray depth (H, W) float32 of a window.PreparedView along its exact rays, 0 outside the lens."""
        key = (prep.frame.key, prep.resize.out_size)
        if key not in self._depth:
            rays = np.where(prep.valid[..., None], prep.rays, FORWARD_RAY)
            self._depth[key] = np.where(prep.valid, self.scene.ray_depth(pose, rays, prep.frame.stamp_ns), 0.0).astype(np.float32)
            while len(self._depth) > self.cached:
                self._depth.popitem(last=False)
        return self._depth[key]
