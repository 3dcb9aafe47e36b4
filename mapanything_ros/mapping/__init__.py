"""Prediction to Reconstruction (metric depth at native resolution, world points, refined poses),
depth completion with measured depth, chaining of image-only windows, and the volumetric map (numpy, no ROS)."""

from .chain import ChainResult, WindowChain
from .completion import CompletionConfig
from .distance import DistanceSlice, distance_slice
from .reconstruction import Reconstruction, ViewReconstruction, reconstruct
from .grid import Grid2D
from .tsdf import RangeView, TsdfMap

__all__ = ["ChainResult", "CompletionConfig", "DistanceSlice", "Grid2D", "RangeView", "Reconstruction", "TsdfMap",
           "ViewReconstruction", "WindowChain", "distance_slice", "reconstruct"]
