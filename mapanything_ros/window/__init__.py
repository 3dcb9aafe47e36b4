"""Frames, keyframe selection, the sliding window and the model's input batch (numpy/torch, no ROS)."""

from .batch import BatchConfig, PreparedView, ViewBatch, assemble, batch_size, normalize_image, prepare
from .frame import Frame
from .policy import KeyframePolicy, MotionRate, motion
from .window import Admission, Window

__all__ = ["Admission", "BatchConfig", "Frame", "KeyframePolicy", "MotionRate", "PreparedView", "ViewBatch", "Window", "assemble",
           "batch_size", "motion", "normalize_image", "prepare"]
