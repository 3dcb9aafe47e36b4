"""Frames, keyframe selection, the sliding window and the model's input batch (numpy/torch, no ROS)."""

from .batch import BatchConfig, ViewBatch, assemble, normalize_image
from .frame import Frame
from .policy import KeyframePolicy, motion
from .window import Admission, Window

__all__ = ["Admission", "BatchConfig", "Frame", "KeyframePolicy", "ViewBatch", "Window", "assemble", "motion",
           "normalize_image"]
