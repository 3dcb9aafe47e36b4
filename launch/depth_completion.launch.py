"""Depth completion from cameras and a LiDAR: mapping.launch.py with config/depth_completion.yaml.

    ros2 launch mapanything_ros depth_completion.launch.py lidar_topic:=/ouster/points

Takes every argument of mapping.launch.py (cameras, lidar_topic, weights, device, ...); only the
default of `config` differs.
"""

from mapanything_ros.ros.preset_launch import preset_launch


def generate_launch_description():
    return preset_launch("depth_completion.yaml", __file__)
