"""Keep every test's DDS traffic on this machine, however pytest is started.

tools/dev sets these already; a bare `pytest` gets the same settings before
any test module imports rclpy.
"""

import os
from pathlib import Path

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(
    Path(__file__).resolve().parents[1] / "config" / "fastdds_localhost.xml"
)
