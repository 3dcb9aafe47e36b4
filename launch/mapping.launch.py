"""Mapping with known intrinsics and TF poses: one mapanything node with a parameter preset.

    ros2 launch mapanything_ros mapping.launch.py cameras:=front_optical,left_fisheye_optical
    ros2 launch mapanything_ros mapping.launch.py config:=/path/to/my.yaml device:=cuda rviz:=true
    ros2 launch mapanything_ros mapping.launch.py remappings:="front_optical/image_raw:=/cam0/image"

Parameters come from `config` (default: the installed config/mapping.yaml), then from the
non-empty override arguments (mapanything_ros.ros.launch_args.OVERRIDES), which win.
`lifecycle:=true` starts the managed node instead (configure loads the model, activate runs it).
`rviz:=true` also starts rviz2 (where it is installed) with config/mapanything.rviz rewritten for
this node: its namespace and name, its first camera, the frame its outputs are in.
depth_completion.launch.py and image_only.launch.py include this file with other default configs.
"""

import tempfile
from pathlib import Path

from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from mapanything_ros.ros.launch_args import (OVERRIDES, file_parameters, node_overrides, parse_bool,
                                             parse_log_level, parse_remappings, rviz_config)

RVIZ_LAYOUT = Path(__file__).resolve().parents[1] / "config" / "mapanything.rviz"


def _nodes(context):
    # Converting here rather than with ParameterValue(value_type=List[str]) or a bare
    # LaunchConfiguration: launch_ros YAML-parses substituted values, so "front" would arrive as
    # a string, "front,left" as one string and "[]" would be refused (launch_ros
    # utilities/evaluate_parameters.py); plain Python lists of str stay string arrays.
    arg = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    overrides = node_overrides({name: arg(name) for name in OVERRIDES})
    config, namespace, name = arg("config"), arg("namespace"), arg("node_name")
    remappings = parse_remappings(arg("remappings"))
    node = dict(package="mapanything_ros", name=name, namespace=namespace, parameters=[config, overrides],
                remappings=remappings, ros_arguments=["--log-level", parse_log_level(arg("log_level"))],
                output="screen")
    if parse_bool("lifecycle", arg("lifecycle")):  # unconfigured until its transitions (docs/node.md)
        actions = [Node(executable="mapanything_lifecycle_node", **node)]
    else:
        actions = [Node(executable="mapanything_node", **node)]
    if parse_bool("rviz", arg("rviz")):
        try:
            get_package_share_directory("rviz2")
        except PackageNotFoundError:
            return actions + [LogInfo(msg="rviz:=true but rviz2 is not installed: the node runs without it")]
        values = {**file_parameters(Path(config).read_text(), namespace, name), **overrides}
        layout = tempfile.NamedTemporaryFile("w", prefix="mapanything_", suffix=".rviz", delete=False)
        with layout:
            layout.write(rviz_config(RVIZ_LAYOUT.read_text(), values, namespace, name, remappings))
        actions.append(Node(package="rviz2", executable="rviz2", name="rviz2", namespace=namespace,
                            arguments=["-d", layout.name], output="log",
                            parameters=[{"use_sim_time": bool(values.get("use_sim_time", False))}]))  # the node's clock
    return actions


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
        DeclareLaunchArgument("remappings", default_value="",
                              description="topic remaps FROM:=TO, comma-separated, e.g. "
                                          "'front_optical/image_raw:=/cam0/image_raw'"),
        DeclareLaunchArgument("lifecycle", default_value="false",
                              description="a managed node: unconfigured until `ros2 lifecycle set` or a "
                                          "lifecycle manager configures and activates it"),
        DeclareLaunchArgument("rviz", default_value="false",
                              description="also start rviz2 (if installed) with a layout for this node"),
        DeclareLaunchArgument("log_level", default_value="info",
                              description="debug | info | warn | error | fatal, or LOGGER:=LEVEL"),
        OpaqueFunction(function=_nodes),
    ])
