"""Backends running the MapAnything network: trained weights, or a tiny random one for plumbing."""

import numpy as np
import torch

from ..geometry import pose_from_quat_trans
from ..model import MapAnything, Runtime, to_device
from .prediction import Backend, Prediction
from .tiny import tiny_config


class MapAnythingBackend(Backend):
    """Runs `model` (a MapAnything) with `runtime` (a model.Runtime; default CPU float32)."""

    def __init__(self, model, runtime=None):
        self.runtime = runtime or Runtime("cpu")
        self.model = model.to(self.runtime.device)

    def predict(self, batch):
        views = to_device(batch.views, self.runtime.device)
        with self.runtime.context():
            out = self.model(views, **batch.forward_kwargs)

        def stack(key):  # float outputs as float32 (they may be bf16 under autocast)
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


class RandomBackend(MapAnythingBackend):
    """A tiny MapAnything (the shape of the test fixture, tiny.tiny_config) with random weights drawn
    from `seed`: the same seed gives the same weights and outputs. Its outputs mean nothing."""

    def __init__(self, seed=0, runtime=None):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = MapAnything(tiny_config())
        super().__init__(model.eval().requires_grad_(False), runtime)
