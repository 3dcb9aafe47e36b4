"""Prediction to Reconstruction (metric depth at native resolution, world points, refined poses),
chaining of image-only windows, and the voxel map (numpy, no ROS)."""

from .chain import ChainResult, WindowChain
from .reconstruction import Reconstruction, ViewReconstruction, reconstruct
from .voxel_map import VoxelMap

__all__ = ["ChainResult", "Reconstruction", "ViewReconstruction", "VoxelMap", "WindowChain", "reconstruct"]
