"""rosbag2 bags written and read with rosbags (no ROS runtime): synthetic runs with ground truth."""

from .synthetic import BagSummary, camera_topics, write_synthetic_bag

__all__ = ["BagSummary", "camera_topics", "write_synthetic_bag"]
