"""Launch arguments of the mapanything node and their conversion to parameter overrides.

Kept free of `launch` imports so that the conversion is testable without a ROS launch install;
launch/mapping.launch.py declares the arguments listed here and calls `node_overrides` from an
OpaqueFunction. An empty argument means "keep the value from the parameter file".
"""

import re

from .. import interface, layout
from ..settings import SPECS

_FROM_FILE = "; empty: from the config file"

# Launch arguments that override one node parameter each: name -> (default, description).
OVERRIDES = {
    "cameras": ("", "camera namespaces, e.g. 'front_optical,left_fisheye_optical', "
                    "'front left' or \"['front', 'left']\"" + _FROM_FILE),
    **{name: ("", SPECS[name].description + _FROM_FILE)
       for name in ("backend", "weights", "device", "onnx_providers", "depth_source", "lidar_topic",
                    "world_frame", "map_frame", "tf_output")},
    "use_sim_time": ("", "use /clock (true for bags and the synthetic player)" + _FROM_FILE + ", false if not there"),
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


def parse_remappings(text):
    """[(from, to)] from "FROM:=TO[,FROM:=TO ...]" (comma or whitespace separated): topic remaps
    of the node, as `--ros-args -r` takes them; raises ValueError on a malformed pair."""
    pairs = []
    for item in re.split(r"[,\s]+", text.strip()):
        if not item:
            continue
        source, sep, target = item.partition(":=")
        if not sep or not source or not target or ":=" in target:
            raise ValueError(f"remappings: {item!r} is not FROM:=TO (from {text!r})")
        pairs.append((source, target))
    return pairs


LOG_LEVELS = ("debug", "info", "warn", "error", "fatal", "unset")  # what rcl's --log-level takes, any case


def parse_log_level(text):
    """The `--log-level` value of "LEVEL" or "LOGGER:=LEVEL" (LOG_LEVELS, any case), stripped;
    raises ValueError otherwise (rcl refused it at the node's start with a traceback)."""
    value = text.strip()
    logger, sep, level = value.rpartition(":=")
    if level.lower() not in LOG_LEVELS or (sep and (not logger or ":=" in logger)):
        raise ValueError(f"log_level: expected {' | '.join(LOG_LEVELS)} (or LOGGER:=LEVEL), got {text!r}")
    return value


def file_parameters(text, namespace="", node="mapanything"):
    """The parameters a ROS 2 parameter file's text gives the node `node` in `namespace`: its
    `/**` section, then the section of its name or full name, which wins."""
    import yaml

    doc = yaml.safe_load(text) or {}
    full = f"{namespace.strip('/')}/{node}".strip("/")
    found = {}
    for key in ("/**", node, full, "/" + full):
        section = doc.get(key)
        if isinstance(section, dict):
            found.update(section.get("ros__parameters") or {})
    return found


_RVIZ_LINES = {  # the lines of config/mapanything.rviz this rewrites, by what they show
    "image": "Value: /front_optical/image_raw",
    "depth": "Value: /mapanything/front_optical/depth",
    "points": "Value: /mapanything/points",
    "map": "Value: /mapanything/map",
    "mesh": "Value: /mapanything/mesh",
    "occupancy": "Value: /mapanything/occupancy",
    "occupancy_updates": "Value: /mapanything/occupancy_updates",  # RViz's name for the grid's updates
    "esdf": "Value: /mapanything/esdf",
    "fixed": "Fixed Frame: odom",
}


def rviz_config(template, values, namespace="", node="mapanything", remappings=()):
    """The RViz layout `template` (config/mapanything.rviz's text) for the node `node` in
    `namespace` with parameters `values` and topic `remappings` [(from, to)]: its topics as the
    node resolves them, the first camera's image and depth, and the fixed frame its outputs are
    in (world_frame with TF poses, map_frame image-only)."""
    camera = (values.get("cameras") or ["front_optical"])[0]
    remap = {layout.absolute(a, namespace, node): layout.absolute(b, namespace, node) for a, b in remappings}
    topic = {}
    for key in ("image", "depth", "points", "map", "mesh", "occupancy", "esdf"):
        name = layout.absolute(interface.resolve(interface.ENDPOINTS[key].name, values, ns=camera), namespace, node)
        topic[key] = remap.get(name, name)
    topic["occupancy_updates"] = topic["occupancy"] + "_updates"
    if values.get("image_transport") == "compressed":
        topic["image"] = topic["image"].removesuffix("/compressed")  # RViz picks the transport itself
    poses = values.get("use_poses", SPECS["use_poses"].default)
    name = "world_frame" if poses else "map_frame"
    frame = values.get(name) or SPECS[name].default
    new = {line: f"Fixed Frame: {frame}" if key == "fixed" else f"Value: {topic[key]}"
           for key, line in _RVIZ_LINES.items()}
    lines = template.split("\n")
    missing = set(new) - {line.strip() for line in lines}
    if missing:
        raise ValueError(f"the RViz layout has no line {sorted(missing)[0]!r}")
    # whole lines, each once: one line's new text is never taken for another's
    return "\n".join(line.replace(line.strip(), new[line.strip()]) if line.strip() in new else line
                     for line in lines)
