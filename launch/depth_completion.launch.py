"""Depth completion from cameras and a LiDAR: mapping.launch.py with config/depth_completion.yaml.

    ros2 launch mapanything_ros depth_completion.launch.py lidar_topic:=/ouster/points

Takes every argument of mapping.launch.py (cameras, lidar_topic, weights, device, ...); only the
default of `config` differs.
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    default_config = PathJoinSubstitution([FindPackageShare("mapanything_ros"), "config",
                                           "depth_completion.yaml"])
    # A plain path (not ThisLaunchFileDir) so that `ros2 launch --show-args` can load the included
    # file without a context and list its arguments; works in the source and the install tree.
    mapping = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mapping.launch.py")
    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=default_config, description="ROS 2 parameter file"),
        IncludeLaunchDescription(PythonLaunchDescriptionSource(mapping),
                                 launch_arguments={"config": LaunchConfiguration("config")}.items()),
    ])
