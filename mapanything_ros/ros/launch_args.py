"""Launch arguments of the mapanything node and their conversion to parameter overrides.

Kept free of `launch` imports so that the conversion is testable without a ROS launch install;
launch/mapping.launch.py declares the arguments listed here and calls `node_overrides` from an
OpaqueFunction. An empty argument means "keep the value from the parameter file".
"""

import re

# Launch arguments that override one node parameter each: name -> (default, description).
OVERRIDES = {
    "cameras": ("", "camera namespaces, e.g. 'front_optical,left_fisheye_optical', "
                    "'front left' or \"['front', 'left']\"; empty: from the config file"),
    "backend": ("", "mapanything | oracle | random; empty: from the config file"),
    "weights": ("", "checkpoint directory or Hugging Face repo id; empty: from the config file"),
    "device": ("", "auto | cpu | cuda | cuda:N; empty: from the config file"),
    "lidar_topic": ("", "LiDAR PointCloud2 topic (depth_source lidar); empty: from the config file"),
    "use_sim_time": ("false", "use /clock (true for bags and the synthetic player)"),
}

# A relative or absolute ROS namespace: tokens of letters, digits and underscores, not starting
# with a digit, separated by single slashes.
_NAME = re.compile(r"/?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*")


def parse_cameras(text):
    """Camera namespaces from one launch-argument string.

    Accepts comma and/or whitespace separated names, optionally as a YAML-style flow list with
    quoted items ("[front, 'left']"). Returns [] for an empty string; raises ValueError on an
    item that is not a valid ROS name.
    """
    body = text.strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    names = [item.strip("'\"") for item in re.split(r"[,\s]+", body) if item]
    for name in names:
        if not _NAME.fullmatch(name):
            raise ValueError(f"cameras: {name!r} is not a valid ROS namespace (from {text!r})")
    return names


def parse_bool(name, text):
    """A launch-argument boolean ('true'/'false', any case, or 1/0)."""
    value = text.strip().lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise ValueError(f"{name}: expected true or false, got {text!r}")


def node_overrides(values):
    """Parameter overrides {name: value} from performed launch arguments {name: string}.

    Arguments left empty are omitted so that the parameter file's value stays; `cameras` becomes a
    list of strings (a string array parameter, also for a single camera) and `use_sim_time` a bool.
    """
    out = {}
    for name, text in values.items():
        if name not in OVERRIDES:
            raise KeyError(f"{name!r} is not a launch argument of the mapanything node")
        text = text.strip()
        if name == "cameras":
            names = parse_cameras(text)
            if names:  # launch_ros cannot pass an empty array, so "[]" keeps the file's list too
                out[name] = names
        elif text:
            out[name] = parse_bool(name, text) if name == "use_sim_time" else text
    return out
