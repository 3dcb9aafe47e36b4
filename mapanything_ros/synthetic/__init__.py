"""Synthetic test and demo data: a textured room with boxes, ray-cast in numpy, seen by a moving
camera rig and a spinning LiDAR, with true poses and depth."""

from .frames import capture_frames
from .mover import MovingBox
from .room import Room
from .scene import Sweep, SyntheticScene, View
from .sensors import (Lidar, RigCamera, default_cameras, default_lidar, mount, scaled_camera, sized_camera,
                      surround_cameras)
from .trajectory import Trajectory

__all__ = ["Lidar", "MovingBox", "RigCamera", "Room", "Sweep", "SyntheticScene", "Trajectory", "View",
           "capture_frames", "default_cameras", "default_lidar", "mount", "scaled_camera", "sized_camera",
           "surround_cameras"]
