"""Backends running the MapAnything network: trained weights, or a tiny random one for plumbing."""

import numpy as np
import torch

from ..geometry import pose_from_quat_trans
from ..model import MapAnything, Runtime, to_device
from .prediction import Backend, Prediction, ViewStack
from .tiny import tiny_config


class MapAnythingBackend(Backend):
    """Runs `model` (a MapAnything) with `runtime` (a model.Runtime; default CPU float32)."""

    def __init__(self, model, runtime=None):
        self.runtime = runtime or Runtime("cpu")
        self.model = model.to(self.runtime.device)

    def predict(self, batch):
        """The Prediction of a ViewBatch. Dense outputs stay on the model's device per view
        (prediction.ViewStack): only the views reconstruction reads come to the host."""
        views = to_device(batch.views, self.runtime.device)
        with self.runtime.context():
            out = self.model(views, **batch.forward_kwargs)

        def per_view(key, last=None):  # float outputs as float32 (they may be bf16 under autocast)
            tensors = [o[key][0] if last is None else o[key][0][..., last] for o in out]
            return ViewStack(tensors, lambda t, i: (t.float() if t.is_floating_point() else t).cpu().numpy())

        valid = batch.valid
        mask = ViewStack([o["non_ambiguous_mask"][0] for o in out], lambda t, i: t.cpu().numpy() & valid[i])
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


class RandomBackend(MapAnythingBackend):
    """A tiny MapAnything (the shape of the test fixture, tiny.tiny_config) with random weights drawn
    from `seed`: the same seed gives the same weights and outputs. Its outputs mean nothing."""

    def __init__(self, seed=0, runtime=None):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = MapAnything(tiny_config())
        super().__init__(model.eval().requires_grad_(False), runtime)
