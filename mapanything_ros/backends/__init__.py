"""Model backends: ViewBatch in, Prediction out (the network, the synthetic truth, or random weights)."""

from .network import MapAnythingBackend, RandomBackend
from .oracle import OracleBackend
from .prediction import Backend, Prediction
from .tiny import tiny_config


def make_backend(values):
    """(Backend, model.Runtime or None) named by the parameters `values` (settings.SPECS names:
    backend, weights, device, oracle_preset, oracle_seed). Raises when it cannot start (missing
    weights, unknown device, ...)."""
    from ..model import Runtime, load_model

    if values["backend"] == "oracle":
        from ..synthetic.presets import make_scene
        return OracleBackend(make_scene(values["oracle_preset"], values["oracle_seed"])), None
    runtime = Runtime(values["device"])
    if values["backend"] == "random":
        return RandomBackend(runtime=runtime), runtime
    return MapAnythingBackend(load_model(values["weights"], values["device"]), runtime), runtime


__all__ = ["Backend", "MapAnythingBackend", "OracleBackend", "Prediction", "RandomBackend", "make_backend",
           "tiny_config"]
