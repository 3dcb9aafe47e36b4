"""Prediction to Reconstruction: metric depth at native resolution, world points, refined poses (numpy, no ROS)."""

from .reconstruction import Reconstruction, ViewReconstruction, reconstruct

__all__ = ["Reconstruction", "ViewReconstruction", "reconstruct"]
