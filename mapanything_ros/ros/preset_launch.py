"""A launch file that is mapping.launch.py with another default `config` (one of the presets).

depth_completion.launch.py and image_only.launch.py are each one call of `preset_launch`; they take
every argument of mapping.launch.py.
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare


def preset_launch(preset, launch_file):
    """The LaunchDescription of mapping.launch.py (beside `launch_file`, the calling launch file's
    path) with `config` defaulting to the installed config/<preset>."""
    default_config = PathJoinSubstitution([FindPackageShare("mapanything_ros"), "config", preset])
    # A plain path (not ThisLaunchFileDir) so that `ros2 launch --show-args` can load the included
    # file without a context and list its arguments; works in the source and the install tree.
    mapping = os.path.join(os.path.dirname(os.path.abspath(launch_file)), "mapping.launch.py")
    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=default_config, description="ROS 2 parameter file"),
        IncludeLaunchDescription(PythonLaunchDescriptionSource(mapping),
                                 launch_arguments={"config": LaunchConfiguration("config")}.items()),
    ])
