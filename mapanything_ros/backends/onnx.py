"""Backend running the exported ONNX graphs with onnxruntime (`mapanything-ros export-onnx`)."""

from .prediction import Backend, prediction_from_outputs


class OnnxBackend(Backend):
    """Runs `model` (a model.onnx.OnnxMapAnything: graphs, execution providers, feature cache)."""

    def __init__(self, model):
        self.model = model

    def predict(self, batch):
        return prediction_from_outputs(self.model(batch.views, **batch.forward_kwargs), batch)
