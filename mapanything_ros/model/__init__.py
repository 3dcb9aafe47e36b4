"""The MapAnything network, checkpoint loading and inference runtime (torch only, no ROS)."""

from .checkpoint import (
    CheckpointError,
    CheckpointNotFoundError,
    StateDictMismatchError,
    canonical_key,
    hub_cache_dir,
    load_model,
    load_weights,
    read_config,
    resolve_checkpoint,
)
from .network import MapAnything
from .runtime import Runtime, autocast_dtype, select_device, to_device

__all__ = [
    "CheckpointError",
    "CheckpointNotFoundError",
    "MapAnything",
    "Runtime",
    "StateDictMismatchError",
    "autocast_dtype",
    "canonical_key",
    "hub_cache_dir",
    "load_model",
    "load_weights",
    "read_config",
    "resolve_checkpoint",
    "select_device",
    "to_device",
]
