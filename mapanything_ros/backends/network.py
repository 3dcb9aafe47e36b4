"""Backends running the MapAnything network: trained weights, or a tiny random one for plumbing."""

import torch

from ..model import MapAnything, Runtime, to_device
from .prediction import Backend, prediction_from_outputs
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
            return prediction_from_outputs(self.model(views, **batch.forward_kwargs), batch)


class RandomBackend(MapAnythingBackend):
    """A tiny MapAnything (the shape of the test fixture, tiny.tiny_config) with random weights drawn
    from `seed`: the same seed gives the same weights and outputs. Its outputs mean nothing."""

    def __init__(self, seed=0, runtime=None):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = MapAnything(tiny_config())
        super().__init__(model.eval().requires_grad_(False), runtime)
