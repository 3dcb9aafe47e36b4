"""The node's parameters (the fixed contract): declarations with descriptors, and validation.

READ_ONLY parameters need a restart (rclpy itself refuses to change them at run time);
RUNTIME ones are checked by `check` in the node's on-set-parameters callback. Numeric ranges
are declared with FloatingPointRange / IntegerRange where they are closed; open bounds (> 0)
and choices are checked by `check` (also at start-up).
"""

import sys
from dataclasses import dataclass

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.parameter import Parameter

INF = float("inf")


@dataclass(frozen=True)
class Spec:
    """One parameter: default (None: required, typed by `type_`), description, choices or numeric bounds
    (low/high inclusive; low_open: value must exceed low), multiple_of (ints), read_only."""

    default: object
    description: str
    read_only: bool = False
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    multiple_of: int | None = None
    type_: object = None


def _ro(default, description, **kw):
    return Spec(default, description, read_only=True, **kw)


SPECS = {
    # read-only: need a restart
    "cameras": _ro(None, "camera namespaces; per camera <ns>/image_raw[/compressed] and <ns>/camera_info",
                   type_=Parameter.Type.STRING_ARRAY),
    "image_transport": _ro("raw", "raw: <ns>/image_raw; compressed: <ns>/image_raw/compressed",
                           choices=("raw", "compressed")),
    "depth_source": _ro("none", "sparse depth: none, lidar (lidar_topic) or depth_image (per camera)",
                        choices=("none", "lidar", "depth_image")),
    "lidar_topic": _ro("lidar/points", "LiDAR PointCloud2 topic (per-point time fields are used when present)"),
    "depth_image_topic": _ro("depth/image_raw", "registered depth image topic, relative to each camera namespace"),
    "world_frame": _ro("odom", "frame of the cameras' TF poses and of the outputs"),
    "map_frame": _ro("map", "parent of the map -> world_frame correction; frame of image-only outputs"),
    "tf_output": _ro("map_odom", "TF published: map_odom (map_frame -> world_frame), camera_refined "
                     "(world_frame -> <camera frame>_refined) or none", choices=("map_odom", "camera_refined", "none")),
    "backend": _ro("mapanything", "mapanything (weights), oracle (synthetic truth) or random (tiny, meaningless)",
                   choices=("mapanything", "oracle", "random")),
    "weights": _ro("facebook/map-anything", "checkpoint directory or Hugging Face repo id in the local cache"),
    "device": _ro("auto", "auto, cpu, cuda or cuda:N"),
    "oracle_preset": _ro("default", "synthetic scene preset the oracle backend knows", choices=("default", "small")),
    "oracle_seed": _ro(0, "synthetic scene seed the oracle backend knows", low=0, high=2**31 - 1),
    "window_size": _ro(8, "keyframes per window", low=1, high=32),
    "long_side": _ro(518, "model input long side (pixels, multiple of 14)", low=112, high=1036, multiple_of=14),
    "map_voxel_size": _ro(0.05, "map voxel size (m)", low=0.005, high=1.0),
    "map_max_voxels": _ro(2_000_000, "map voxel budget", low=1, high=2**31 - 1),
    "qos": _ro("sensor_data", "input QoS: sensor_data (best effort) or reliable", choices=("sensor_data", "reliable")),
    # changeable at run time
    "use_poses": Spec(True, "give TF camera poses to the model (false: image-only, outputs in map_frame)"),
    "use_intrinsics": Spec(True, "give CameraInfo rays to the model"),
    "use_depth": Spec(True, "give sparse measured depth to the model"),
    "metric_poses": Spec(True, "the TF poses are metric"),
    "metric_depth": Spec(True, "the measured depth is metric"),
    "depth_without_scale": Spec(False, "pass depth but let the model ignore its scale"),
    "keyframe_translation": Spec(0.2, "new keyframe after this much camera translation (m)", low=0.0, high=INF),
    "keyframe_rotation": Spec(0.2, "new keyframe after this much camera rotation (rad)", low=0.0, high=INF),
    "keyframe_interval": Spec(1.0, "new keyframe after this much time (s)", low=0.0, high=INF),
    "sync_slop": Spec(0.02, "largest stamp spread of one capture's images (s, > 0)", low=0.0, high=INF, low_open=True),
    "depth_tolerance": Spec(0.05, "largest |depth stamp - image stamp| attached (s)", low=0.0, high=INF),
    "tf_timeout": Spec(0.5, "captures wait this long for TF, then are dropped (s, > 0)", low=0.0, high=INF,
                       low_open=True),
    "camera_timeout": Spec(5.0, "silence before a camera is reported (s, > 0)", low=0.0, high=INF, low_open=True),
    "map_min_confidence": Spec(0.0, "points below this confidence stay out of the map", low=0.0, high=INF),
    "map_publish_rate": Spec(0.5, "~/map publication rate (Hz, 0 = never)", low=0.0, high=INF),
    "keep_measured_depth": Spec(False, "published depth keeps the measured values where measured"),
    "align_to_measured_depth": Spec(False, "scale each window to the measured depth"),
    "save_map_path": Spec("~/.ros/mapanything_map.ply", "where ~/save_map writes the PLY"),
}
READ_ONLY = tuple(n for n, s in SPECS.items() if s.read_only)


def descriptor(name, spec):
    """ParameterDescriptor of a Spec (closed numeric ranges as Floating/IntegerRange)."""
    d = ParameterDescriptor(name=name, description=spec.description, read_only=spec.read_only)
    if spec.choices:
        d.additional_constraints = "one of: " + ", ".join(spec.choices)
    elif spec.multiple_of:
        d.additional_constraints = f"multiple of {spec.multiple_of}"
    elif spec.low_open:
        d.additional_constraints = f"> {spec.low}"
    if spec.low is not None and not spec.low_open:
        if isinstance(spec.default, int) and not isinstance(spec.default, bool):
            d.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high),
                                            step=spec.multiple_of or 1)]
        else:
            d.floating_point_range = [FloatingPointRange(from_value=float(spec.low),
                                                         to_value=min(float(spec.high), sys.float_info.max))]
    return d


def declare(node):
    """Declare every parameter on `node`; returns {name: value} (None for a required one left unset)."""
    values = {}
    for name, spec in SPECS.items():
        value = spec.type_ if spec.default is None else spec.default
        node.declare_parameter(name, value, descriptor(name, spec))
        param = node.get_parameter(name)
        values[name] = None if param.type_ == Parameter.Type.NOT_SET else param.value
    return values


def check(name, value):
    """Why `value` is not acceptable for parameter `name`, or None when it is (types are rclpy's job)."""
    spec = SPECS.get(name)
    if spec is None:
        return None
    if spec.choices and value not in spec.choices:
        return f"{name} must be one of {list(spec.choices)}, got {value!r}"
    if spec.low is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        if value != value or (value <= spec.low if spec.low_open else value < spec.low) or value > spec.high:
            low = f"> {spec.low}" if spec.low_open else f">= {spec.low}"
            return f"{name} must be {low}" + (f" and <= {spec.high}" if spec.high != INF else "") + f", got {value}"
        if spec.multiple_of and value % spec.multiple_of:
            return f"{name} must be a multiple of {spec.multiple_of}, got {value}"
    if name == "cameras":
        if not value or len(set(value)) != len(value) or not all(value):
            return f"cameras must be a non-empty list of distinct namespaces, got {list(value or [])}"
    if name == "device" and not (value in ("auto", "cpu", "cuda") or
                                 (value.startswith("cuda:") and value[5:].isdigit())):
        return f"device must be auto, cpu, cuda or cuda:N, got {value!r}"
    return None
