"""Mapping with known intrinsics and TF poses: one mapanything node with a parameter preset.

    ros2 launch mapanything_ros mapping.launch.py cameras:=front_optical,left_fisheye_optical
    ros2 launch mapanything_ros mapping.launch.py config:=/path/to/my.yaml device:=cuda

Parameters come from `config` (default: the installed config/mapping.yaml), then from the
non-empty override arguments (mapanything_ros.ros.launch_args.OVERRIDES), which win.
depth_completion.launch.py includes this file with another default config.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from mapanything_ros.ros.launch_args import OVERRIDES, node_overrides


def _node(context):
    # Converting here rather than with ParameterValue(value_type=List[str]) or a bare
    # LaunchConfiguration: launch_ros YAML-parses substituted values, so "front" would arrive as
    # a string, "front,left" as one string and "[]" would be refused (launch_ros
    # utilities/evaluate_parameters.py); plain Python lists of str stay string arrays.
    values = {name: LaunchConfiguration(name).perform(context) for name in OVERRIDES}
    return [Node(
        package="mapanything_ros",
        executable="mapanything_node",
        name=LaunchConfiguration("node_name"),
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("config"), node_overrides(values)],
        ros_arguments=["--log-level", LaunchConfiguration("log_level")],
        output="screen",
    )]


def generate_launch_description():
    # FindPackageShare is resolved only when the default is used, so a launch with an explicit
    # config:= also works from a source tree.
    default_config = PathJoinSubstitution([FindPackageShare("mapanything_ros"), "config", "mapping.yaml"])
    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=default_config, description="ROS 2 parameter file"),
        *(DeclareLaunchArgument(name, default_value=default, description=text)
          for name, (default, text) in OVERRIDES.items()),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("node_name", default_value="mapanything", description="name of the node"),
        DeclareLaunchArgument("log_level", default_value="info", description="debug | info | warn | error"),
        OpaqueFunction(function=_node),
    ])
