"""Model backends: ViewBatch in, Prediction out (the network, the synthetic truth, or random weights)."""

from .network import MapAnythingBackend, RandomBackend
from .oracle import OracleBackend
from .prediction import Backend, Prediction
from .tiny import tiny_config

__all__ = ["Backend", "MapAnythingBackend", "OracleBackend", "Prediction", "RandomBackend", "tiny_config"]
