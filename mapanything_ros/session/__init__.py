"""The session: one ROS-free path from received messages to published outputs (see session.py)."""

from .inputs import CameraImage, Cloud, FrameBuilder, Keyframe, PendingCaptures, image_decoder
from .report import ERROR, WARN, Reporter
from .session import CameraView, Session, WindowOutput

__all__ = ["ERROR", "WARN", "CameraImage", "CameraView", "Cloud", "FrameBuilder", "Keyframe", "PendingCaptures",
           "Reporter", "Session", "WindowOutput", "image_decoder"]
