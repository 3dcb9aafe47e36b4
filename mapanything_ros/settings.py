"""The node's parameters, ROS-free: specs, validation and parameter files (session.config builds
what they configure).

The live node (ros/node.py, declarations in ros/params.py) and offline replay read the same
SPECS. READ_ONLY parameters need a restart; the others may change at run time. Numeric bounds
are inclusive (low_open: the value must exceed `low`); choices and `check` apply everywhere.
"""

import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from . import layout

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
    type_: str | None = None

    @property
    def type_name(self):
        """ROS parameter type: bool, integer, double, string or string_array."""
        if self.type_:
            return self.type_
        return {bool: "bool", int: "integer", float: "double", str: "string"}[type(self.default)]


def _ro(default, description, **kw):
    return Spec(default, description, read_only=True, **kw)


SPECS = {
    # read-only: need a restart
    "cameras": _ro(None, "camera namespaces; per camera <ns>/image_raw[/compressed] and <ns>/camera_info",
                   type_="string_array"),
    "image_transport": _ro("raw", "raw: <ns>/image_raw; compressed: <ns>/image_raw/compressed",
                           choices=("raw", "compressed")),
    "depth_source": _ro("none", "sparse depth: none, lidar (lidar_topic) or depth_image (per camera)",
                        choices=("none", "lidar", "depth_image")),
    "lidar_topic": _ro(layout.LIDAR_TOPIC, "LiDAR PointCloud2 topic (per-point time fields are used when present)"),
    "depth_image_topic": _ro(layout.DEPTH_IMAGE_TOPIC,
                             "registered depth image topic, relative to each camera namespace"),
    "world_frame": _ro(layout.WORLD_FRAME, "frame of the cameras' TF poses and of the outputs"),
    "map_frame": _ro("map", "parent of the map -> world_frame correction; frame of image-only outputs"),
    "tf_output": _ro("none", "TF published: map_odom (map_frame -> world_frame), camera_refined "
                     "(world_frame -> <camera frame>_refined) or none", choices=("map_odom", "camera_refined", "none")),
    "backend": _ro("mapanything", "mapanything (weights, torch), onnxruntime (export-onnx graphs), oracle (synthetic "
                   "truth), emulated (synthetic truth with a network's errors) or random (tiny, meaningless)",
                   choices=("mapanything", "onnxruntime", "oracle", "emulated", "random")),
    "weights": _ro("facebook/map-anything", "checkpoint directory or Hugging Face repo id in the local cache; "
                   "onnxruntime: the export-onnx output directory"),
    "device": _ro("auto", "auto, cpu, cuda or cuda:N (torch backends)"),
    "onnx_providers": _ro("cpu", "onnxruntime execution providers in priority order, comma-separated: cpu, cuda, "
                          "tensorrt or full onnxruntime names"),
    "oracle_preset": _ro("default", "synthetic scene preset the oracle and emulated backends know",
                         choices=("default", "small", "small_moving", "small_ground", "surround")),  # synthetic.presets.PRESETS
    "oracle_seed": _ro(0, "synthetic scene seed the oracle and emulated backends know", low=0, high=2**31 - 1),
    "error_profile": _ro(1.0, "emulated backend: multiplier of its error model's magnitudes (0.5, 1 and 2 are "
                         "benchmarked; 0 = the oracle)", low=0.0, high=10.0),
    "error_seed": _ro(0, "emulated backend: seed of its error draws", low=0, high=2**31 - 1),
    "window_size": _ro(8, "keyframes per window", low=1, high=32),
    "long_side": _ro(518, "model input long side (pixels, multiple of 14)", low=112, high=1036, multiple_of=14),
    "map_voxel_size": _ro(0.05, "map voxel size (m)", low=0.005, high=1.0),
    "map_max_voxels": _ro(10_000_000, "map memory bound in voxels (about 12 bytes each; when passed, the blocks "
                          "farthest from the camera go)", low=1, high=2**31 - 1),
    "map_truncation": _ro(0.0, "map TSDF truncation distance, the least (m, 0 = 4 voxels; at least one voxel)",
                          low=0.0, high=10.0),
    "map_truncation_ratio": _ro(0.1, "map TSDF truncation as a share of the range (the larger of the two holds): "
                                "views average their depth errors only within it", low=0.0, high=0.99),
    "map_min_weight": _ro(0.25, "fused weight a map voxel needs to count as seen (one near look weighs up to 1, "
                          "a look from beyond map_truncation / map_truncation_ratio less, as 1 / range²)", low=0.0,
                          high=1e6),
    "map_max_weight": _ro(50.0, "cap of a map voxel's fused weight (about this many good looks: lower follows "
                          "change sooner, higher averages more noise)", low=1.0, high=1e6),
    "map_max_range": _ro(10.0, "depth farther than this is no surface in the map but still clears free space up "
                         "to it (m, 0 = no limit: free space is carved along every ray to its surface, whose cost "
                         "grows with the cube of the range; see docs/map.md)", low=0.0, high=INF),
    "map_insert": _ro("newest", "when a keyframe enters the map: newest (from its first window, at once) or oldest "
                      "(from its last window, with the most context; the map lags window_size keyframes)",
                      choices=("newest", "oldest")),
    "qos": _ro("sensor_data", "input QoS: sensor_data (best effort) or reliable; per topic, ROS 2's "
               "qos_overrides.<topic>.<publisher|subscription>.<policy> parameters win", choices=("sensor_data", "reliable")),
    # changeable at run time
    "use_poses": Spec(True, "give TF camera poses to the model (false: image-only, outputs in map_frame)"),
    "use_intrinsics": Spec(True, "give CameraInfo rays to the model"),
    "use_depth": Spec(True, "give sparse measured depth to the model"),
    "metric_poses": Spec(True, "the TF poses are metric"),
    "metric_depth": Spec(True, "the measured depth is metric"),
    "depth_without_scale": Spec(False, "pass depth but let the model ignore its scale"),
    "keyframe_translation": Spec(0.2, "new keyframe after this much camera translation (m; without poses: the "
                                 "speed of the last window's refined poses times the time elapsed)",
                                 low=0.0, high=INF),
    "keyframe_rotation": Spec(0.2, "new keyframe after this much camera rotation (rad; without "
                              "poses: estimated likewise)", low=0.0, high=INF),
    "keyframe_interval": Spec(1.0, "new keyframe after this much time (s)", low=0.0, high=INF),
    "sync_slop": Spec(0.02, "a capture's image stamps spread less than this (s, > 0)", low=0.0, high=10.0,
                      low_open=True),
    "depth_tolerance": Spec(0.05, "largest |depth stamp - image stamp| attached (s); a LiDAR sweep's stamp is "
                            "the span of its point times", low=0.0, high=10.0),
    "tf_timeout": Spec(0.5, "captures wait this long for TF, then are dropped (s, > 0)", low=0.0, high=60.0,
                       low_open=True),
    "tf_future_limit": Spec(5.0, "TF stamped more than this ahead of the node's clock is refused (s, 0 = no "
                             "limit): one wrongly stamped transform would hold back every later one", low=0.0,
                             high=3600.0),
    "camera_timeout": Spec(5.0, "silence before a camera is reported (s, > 0)", low=0.0,
                           high=3600.0, low_open=True),
    "silent_camera": _ro("wait", "once a camera is silent for camera_timeout: wait (no captures until it is back) "
                         "or drop (captures of the cameras still publishing, fewer views, until it is back)",
                         choices=("wait", "drop")),
    "map_confidence_quantile": Spec(0.0, "this fraction of each view's pixels, its least confident, is not fused "
                                    "into the map (0 = all fused; a quantile of the view's own confidence, since "
                                    "the network's has no absolute scale; the map already weighs each pixel by "
                                    "its confidence over the view's median)", low=0.0, high=0.99),
    "map_publish_rate": Spec(0.5, "~/map, ~/occupancy and ~/esdf publication rate (Hz, 0 = never, else at least "
                             "0.001; a map that did not change is not published again)", low=0.0, high=100.0),
    "mesh_publish_rate": Spec(0.2, "~/mesh publication rate (Hz, 0 = never, else at least 0.001; a map that "
                              "did not change is not meshed again)", low=0.0, high=100.0),
    "mesh_refresh_period": Spec(300.0, "~/mesh sends every region again (after a DELETEALL) this long (s) after "
                                "it last did, when it sent regions since: a display that missed an array (a newer "
                                "one replaced it on a slow link) is whole again; 0 = only to a new subscriber",
                                low=0.0, high=1e6),
    "tf_publish_rate": Spec(20.0, "tf_output map_odom: the newest correction is published at this rate (Hz)",
                            low=0.1, high=1000.0),
    "transform_tolerance": Spec(0.1, "tf_output map_odom: stamped this far ahead of the node clock (s), so that "
                                "lookups at the newest odometry stamp succeed (as Nav2's transform_tolerance)",
                                low=0.0, high=10.0),
    "occupancy_min_height": Spec(0.1, "~/occupancy: lowest height of the band (m above world_frame's z = 0)",
                                 low=-INF, high=INF),
    "occupancy_max_height": Spec(1.5, "~/occupancy: highest height of the band (m)", low=-INF, high=INF),
    "occupancy_resolution": Spec(0.0, "~/occupancy cell size (m, 0 = map_voxel_size; never finer)", low=0.0,
                                 high=100.0),
    "esdf_max_distance": Spec(2.0, "~/esdf: distances to the nearest occupied cell are clipped at this (m, > 0)",
                              low=0.0, high=1000.0, low_open=True),
    "points_scope": Spec("newest", "~/points holds the newest capture's points (newest) or every view of the "
                         "window (window: costs a reconstruction of each view per window)",
                         choices=("newest", "window")),
    "keep_measured_depth": Spec(False, "published depth keeps the measured values where measured (with "
                                "depth_correction: where they agree with the corrected prediction)"),
    "align_to_measured_depth": Spec(False, "scale each window (depths and translations) to the measured depth"),
    "depth_correction": Spec("none", "correct each view's depth with its measured depth: none, scale (a robust "
                             "per-view scale) or field (scale and a smooth residual field)",
                             choices=("none", "scale", "field")),
    "edge_threshold": Spec(0.05, "relative depth step read as a depth edge: no depth published across it (0 = no "
                           "cut)", low=0.0, high=10.0),
    "edge_noise_sigmas": Spec(4.0, "per view, the edge threshold rises to this many robust sigmas of the depth's "
                              "own pixel noise (0 = the fixed threshold only)", low=0.0, high=100.0),
    "save_map_path": Spec("~/.ros/mapanything_map.npz", "where ~/save_map writes the map (.npz, and its surface "
                          "beside it as .ply) and ~/load_map reads it when the request names no path (relative: "
                          "in save_map_directory)"),
    "save_map_directory": _ro("~/.ros", "~/save_map and ~/load_map use only this directory (set at launch; \"/\" "
                              "allows any path)"),
    "load_map_path": _ro("", "a map saved by ~/save_map to load at start-up and map on from (empty: none)"),
}
READ_ONLY = tuple(n for n, s in SPECS.items() if s.read_only)
# Parameters that were renamed or replaced: old name -> what to use now.
RENAMED = {"map_min_confidence": "map_confidence_quantile: each view's least confident fraction (the network's "
                                 "confidence has no absolute scale)"}


def unknown(name, shown=None):
    """How a parameter name that is not in SPECS is reported: `shown` (default: the name), and
    its replacement if it was renamed."""
    shown = name if shown is None else shown
    return f"{shown} (replaced by {RENAMED[name]})" if name in RENAMED else shown


def check(name, value):
    """Why `value` is not acceptable for parameter `name`, or None when it is (types are rclpy's job)."""
    spec = SPECS.get(name)
    if spec is None:
        return None
    if spec.choices and value not in spec.choices:
        return f"{name} must be one of {list(spec.choices)}, got {short_repr(value)}"
    if spec.low is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            return f"{name} must be a finite number, got {value}"
        if (value <= spec.low if spec.low_open else value < spec.low) or value > spec.high:
            low = f"> {spec.low}" if spec.low_open else f">= {spec.low}"
            return f"{name} must be {low}" + (f" and <= {spec.high}" if spec.high != INF else "") + f", got {value}"
        if spec.multiple_of and value % spec.multiple_of:
            return f"{name} must be a multiple of {spec.multiple_of}, got {value}"
    if name in ("map_publish_rate", "mesh_publish_rate") and 0 < value < 1e-3:
        return f"{name} must be 0 (never) or at least 0.001 Hz, got {value}"
    if name == "cameras":
        if not value or len(set(value)) != len(value) or not all(value):
            return f"cameras must be a non-empty list of distinct namespaces, got {list(value or [])}"
        if len({v.strip("/") for v in value}) != len(value):  # their outputs (~/<ns>/depth, ...) would be one
            return (f"cameras must be distinct without their slashes (each has outputs ~/<namespace>/...), got "
                    f"{list(value)}")
    if name == "onnx_providers" and not all(p.strip() for p in value.split(",")):
        return f"onnx_providers must be comma-separated provider names, got {value!r}"
    if name == "device" and not (value in ("auto", "cpu", "cuda") or
                                 (value.startswith("cuda:") and value[5:].isdigit())):
        return f"device must be auto, cpu, cuda or cuda:N, got {value!r}"
    return None


def short_repr(value, limit=60):
    """repr(value), cut after `limit` characters (for messages echoing what a user gave)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def problems(values):
    """{name: why} of every parameter in `values` that cannot run (a required one unset included)."""
    found = {n: check(n, v) for n, v in values.items() if n != "cameras" or v is not None}
    if values.get("cameras") is None:
        found["cameras"] = ("parameter cameras (string[]) is required: the camera namespaces, e.g. "
                            "-p cameras:=\"[front_optical]\" or cameras: [front_optical] in the parameter file")
    return {n: p for n, p in found.items() if p}


def defaults():
    """{name: default value} of every parameter ("cameras": None, it is required)."""
    return {name: spec.default for name, spec in SPECS.items()}


def given_problem(name, value):
    """Why a value given outside ROS (a file, the command line) cannot be parameter `name`: its type,
    as rclpy refuses it (1 is not a double), or check()'s reason; None when it can."""
    return _type_problem(name, value) or check(name, value)


def _type_problem(name, value):
    """Why `value` has the wrong type for `name` (as rclpy refuses it: 1 is not a double), or None."""
    spec = SPECS[name]
    if spec.type_name == "string_array":
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    else:
        ok = type(value) is type(spec.default)
    return None if ok else f"{name} must be a {spec.type_name}, got {value!r}"


# How rcl reads a parameter value (rcl_yaml_param_parser's get_value; checked against rclpy in
# test_cli.py): a scalar tagged !!str or quoted is a string; otherwise these words are booleans,
# then C's strtol(s, 0) when it takes the whole text in range (010 is 8, 0x10 16), then .nan/.inf and
# strtod in range (1e3, .5, inf, 0x1p3; 1e999 and 1e-310 out of it), else a string (~, 1_000 and 0o17
# too). YAML 1.2, which ruamel follows, differs.
RCL_BOOLS = {**dict.fromkeys(("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"), True),
             **dict.fromkeys(("n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"), False)}
_STRTOL = re.compile(r"\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)")
_STRTOD = re.compile(r"\s*[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|inf(inity)?|nan(\([0-9a-z_]*\))?)",
                     re.IGNORECASE)
_STRTOD_HEX = re.compile(r"\s*[+-]?0[xX]([0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)([pP][+-]?[0-9]+)?")
_YAML_SPECIAL = {**dict.fromkeys((".nan", ".NaN", ".NAN"), math.nan),
                 **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), math.inf),
                 **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), -math.inf)}


def read_yaml(text):
    """A parameter file or `-p` value read as ROS 2 reads it (the rule above): mappings as dicts with
    string keys, sequences as lists, scalars as rcl types them; an empty scalar is None. As rcl sets
    each parameter in turn, a key given twice in a mapping (`/**:` twice, or a name) and the
    documents of a text of several merge, the later value winning. Raises ruamel.yaml's YAMLError on
    bad YAML and on an alias (*name), which rcl refuses. Not as rcl: a sequence of mixed types is a
    list (rcl refuses it; the one array parameter, cameras, takes strings only and refuses it too)."""
    from ruamel.yaml import YAML, YAMLError, events  # a rosbags dependency: no PyYAML needed

    stack, doc = [], None  # stack: [container, key or None] being filled

    def add(value):
        """Put `value` where the stack's top expects it; returns what was put (a mapping given again
        under the same key, or a document's mapping after another's, is the one already there)."""
        nonlocal doc
        if not stack:
            if isinstance(value, dict) and isinstance(doc, dict):
                return doc
            doc = value
        elif isinstance(stack[-1][0], list):
            stack[-1][0].append(value)
        elif stack[-1][1] is None:  # a key: as written (rcl's names are strings)
            stack[-1][1] = str(value)
        else:
            mapping, key = stack[-1]
            stack[-1][1] = None
            if isinstance(value, dict) and isinstance(mapping.get(key), dict):
                return mapping[key]
            mapping[key] = value
        return value

    for event in YAML(typ="safe", pure=True).parse(text):
        if isinstance(event, events.ScalarEvent):
            key = bool(stack) and isinstance(stack[-1][0], dict) and stack[-1][1] is None
            add(event.value if key else _rcl_scalar(event.value, event.style, event.tag))
        elif isinstance(event, (events.MappingStartEvent, events.SequenceStartEvent)):
            stack.append([add({} if isinstance(event, events.MappingStartEvent) else []), None])
        elif isinstance(event, (events.MappingEndEvent, events.SequenceEndEvent)):
            stack.pop()
        elif isinstance(event, events.AliasEvent):
            raise YAMLError(f"line {event.start_mark.line + 1}: an alias (*{event.anchor}), which ROS 2 does not read")
    return doc


def _rcl_scalar(text, style, tag):
    """A scalar's value as rcl's get_value makes it (the rule above)."""
    if tag == "tag:yaml.org,2002:str" or style in ("'", '"'):
        return text
    if text == "":
        return None
    if text in RCL_BOOLS:
        return RCL_BOOLS[text]
    found = _STRTOL.fullmatch(text)
    if found:
        sign, digits = found.groups()
        value = int(digits, 16 if digits[:2] in ("0x", "0X") else 8 if digits.startswith("0") else 10)
        value = -value if sign == "-" else value
        if -2 ** 63 <= value < 2 ** 63:  # else strtol's ERANGE: strtod's turn
            return value
    if text in _YAML_SPECIAL:
        return _YAML_SPECIAL[text]
    return _strtod(text)


def _strtod(text):
    """C's strtod over the whole text, or the text when it stops short or sets ERANGE (overflow to
    inf, underflow to 0 or a subnormal)."""
    body = text.strip()
    if _STRTOD_HEX.fullmatch(text):
        mantissa, value = body.lower().split("p")[0].replace("0x", "", 1), float.fromhex(body)
    elif _STRTOD.fullmatch(text):
        if "nan" in body.lower():
            return math.nan
        if "inf" in body.lower():
            return float(body)
        mantissa, value = body.lower().split("e")[0], float(body)
    else:
        return text
    if math.isinf(value) or (abs(value) < sys.float_info.min and mantissa.strip("+-0.")):
        return text  # ERANGE
    return value


def load_params_file(path, node_name="mapanything"):
    """{name: value}: a ROS 2 parameter YAML file's values for node `node_name` merged over defaults().

    Sections apply in file order when their key is `/**`, the node name, or a fully qualified
    name ending in it (`/ns/mapanything`); each holds `ros__parameters`. Raises ValueError listing
    every unknown name, wrongly typed or invalid value, or when no section is for this node.
    """
    from ruamel.yaml import YAMLError

    try:
        doc = read_yaml(Path(path).read_text()) or {}
    except YAMLError as err:
        raise ValueError(f"{path}: not YAML: {' '.join(str(err).split())}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a ROS 2 parameter file (a mapping of node names to ros__parameters)")
    name = node_name.strip("/")
    sections = [body for key, body in doc.items()
                if key == "/**" or str(key).strip("/") == name or str(key).endswith("/" + name)]
    if not sections:
        raise ValueError(f"{path}: no parameters for node {node_name!r} (keys: {list(doc)})")
    values, found = defaults(), []
    for body in sections:
        given = (body or {}).get("ros__parameters") or {}
        for key, value in given.items():
            if key not in SPECS:
                found.append(f"unknown parameter {unknown(key, repr(key))}")
                continue
            found.append(given_problem(key, value))
            values[key] = value
    found = [p for p in found if p]
    if found:
        raise ValueError(f"{path}: " + "; ".join(found))
    return values
