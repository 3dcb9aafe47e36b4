"""Prediction to Reconstruction (metric depth at native resolution, world points, refined poses),
depth completion with measured depth, chaining of image-only windows, and the voxel map (numpy, no ROS)."""

from .chain import ChainResult, WindowChain
from .completion import CompletionConfig
from .reconstruction import Reconstruction, ViewReconstruction, reconstruct
from .voxel_map import VoxelMap

__all__ = ["ChainResult", "CompletionConfig", "Reconstruction", "ViewReconstruction", "VoxelMap", "WindowChain", "reconstruct"]
