"""Image-only mapping (cameras without TF poses or depth): mapping.launch.py with config/image_only.yaml.

    ros2 launch mapanything_ros image_only.launch.py cameras:=front_optical

Takes every argument of mapping.launch.py (cameras, weights, device, ...); only the default of
`config` differs.
"""

from mapanything_ros.ros.preset_launch import preset_launch


def generate_launch_description():
    return preset_launch("image_only.yaml", __file__)
