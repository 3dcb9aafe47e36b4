"""Model backends: ViewBatch in, Prediction out (the network, the synthetic truth, or random weights)."""

from .emulated import EmulatedBackend
from .network import MapAnythingBackend, RandomBackend
from .onnx import OnnxBackend
from .oracle import OracleBackend
from .prediction import Backend, Prediction
from .tiny import tiny_config


def make_backend(values):
    """(Backend, its runtime or None) named by the parameters `values` (settings.SPECS names:
    backend, weights, device, onnx_providers, oracle_preset, oracle_seed, error_profile, error_seed,
    window_size, cameras).
    The runtime (model.Runtime, or the OnnxMapAnything) has `describe()` for diagnostics. The
    network backends keep the encoder features of window_size x cameras images (one window).
    Raises when it cannot start (missing weights or graphs, unknown device or provider, ...)."""
    from ..model import Runtime, load_model

    if values["backend"] == "oracle":
        from ..synthetic.presets import make_scene
        return OracleBackend(make_scene(values["oracle_preset"], values["oracle_seed"])), None
    if values["backend"] == "emulated":
        from ..synthetic.presets import make_scene
        scene = make_scene(values["oracle_preset"], values["oracle_seed"])
        return EmulatedBackend(scene, values["error_profile"], values["error_seed"]), None
    cache = values["window_size"] * len(values.get("cameras") or [None])
    if values["backend"] == "onnxruntime":
        from ..model.onnx import OnnxMapAnything
        model = OnnxMapAnything(values["weights"], values["onnx_providers"].split(","), feature_cache_size=cache)
        model.graph_for(inputs(values))  # the graph of windows with all their inputs, loaded now: a bad one fails here
        return OnnxBackend(model), model
    runtime = Runtime(values["device"])
    if values["backend"] == "random":
        return RandomBackend(runtime=runtime), runtime
    model = load_model(values["weights"], values["device"], feature_cache_size=cache)
    return MapAnythingBackend(model, runtime), runtime


def inputs(values):
    """The optional network inputs ("rays", "poses", "depth": model.inputs.MODALITIES) a window
    gives the network under the parameters `values` when all its measurements are there."""
    given = {"rays": values["use_intrinsics"], "poses": values["use_poses"],
             "depth": values["use_depth"] and values["depth_source"] != "none"}
    return frozenset(m for m, on in given.items() if on)


def release_device_memory():
    """Return the memory of backends let go to the device (the CUDA caching allocator keeps it
    otherwise); a no-op where torch is not loaded or has no CUDA."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


__all__ = ["Backend", "EmulatedBackend", "MapAnythingBackend", "OnnxBackend", "OracleBackend", "Prediction", "RandomBackend",
           "make_backend", "release_device_memory", "tiny_config"]
