"""Files written by offline replay: depth PNGs, TUM trajectories, JSON, a picture of the map, and a
bag of the node's output topics (rosbags, no ROS runtime).

- Depth: 16-bit PNG of z-depth in millimetres (rounded; 0 = no estimate or beyond 65.535 m), the
  convention of TUM RGB-D and many depth datasets, plus a preview: the camera image beside its depth
  coloured near = warm (turbo), no estimate = black.
- Trajectory: the TUM format (Sturm et al., IROS 2012): one `stamp tx ty tz qx qy qz qw` line per
  pose, stamp in seconds, world_from_camera (the camera's optical frame).
- Map picture: a top-down orthographic view of the map points, one pixel per voxel, with the
  highest point per pixel below a cut (so ceilings do not hide the room), shaded by height, the
  camera path drawn over it and a 1 m scale bar.
- Output bag: the node's topics under its name (`/<node>/points`, `/<node>/map`,
  `/<node>/<camera>/depth|confidence|camera_info`, `/<node>/window`) and `/tf`; message layouts
  as the node publishes them (ros/node.py).
"""

import json
import math
import os
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from .encode import pack_cloud
from .geometry import quat_trans_from_pose, pose_from_quat_trans
from .geometry.rectify import info_fields
from .units import SEC

MM = 1000.0
MSG_DIR = Path(__file__).resolve().parent.parent / "msg"
WINDOW_TYPE = "mapanything_ros/msg/ReconstructionWindow"


# ---------------------------------------------------------------- depth

def depth_to_mm(depth):
    """(H, W) uint16 millimetres of a z-depth map in metres (NaN, <= 0 or >= 65.5355 m -> 0)."""
    depth = np.asarray(depth, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        mm = np.where(np.isfinite(depth) & (depth > 0), np.round(depth * MM), 0.0)
    return np.where(mm <= np.iinfo(np.uint16).max, mm, 0).astype(np.uint16)


def write_depth_png(path, depth):
    """Write z-depth (H, W) metres as a 16-bit PNG of millimetres (see depth_to_mm)."""
    if not cv2.imwrite(str(path), depth_to_mm(depth)):
        raise OSError(f"could not write {path}")


def read_depth_png(path):
    """(H, W) float32 z-depth in metres of a 16-bit millimetre PNG; NaN where the PNG has 0."""
    mm = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mm is None or mm.dtype != np.uint16 or mm.ndim != 2:
        raise ValueError(f"{path}: not a single-channel 16-bit PNG")
    return np.where(mm > 0, mm / MM, np.nan).astype(np.float32)


def colorize_depth(depth, lo=None, hi=None):
    """BGR uint8 picture of z-depth (H, W) metres: lo (near) red ... hi (far) blue, none black.
    lo / hi default to the 2nd / 98th percentiles of the estimated pixels."""
    depth = np.asarray(depth, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(depth) & (depth > 0)
    if not ok.any():
        return np.zeros(depth.shape + (3,), np.uint8)
    lo = np.percentile(depth[ok], 2) if lo is None else lo
    hi = np.percentile(depth[ok], 98) if hi is None else hi
    near = 1.0 - np.clip((np.where(ok, depth, hi) - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    img = cv2.applyColorMap(np.round(near * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    img[~ok] = 0
    return img


def depth_preview(rgb, depth, scale=1):
    """BGR picture: the camera image (H, W, 3) uint8 RGB beside its coloured depth, both enlarged
    `scale` times (nearest), with the depth range written over the depth."""
    coloured = colorize_depth(depth)
    with np.errstate(invalid="ignore"):
        values = depth[np.isfinite(depth) & (depth > 0)]
    label = f"{np.percentile(values, 2):.2f}-{np.percentile(values, 98):.2f} m" if values.size else "no depth"
    pair = np.hstack([np.ascontiguousarray(rgb[..., ::-1]), coloured])
    pair = cv2.resize(pair, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    cv2.putText(pair, label, (pair.shape[1] // 2 + 4, 12 * scale), cv2.FONT_HERSHEY_SIMPLEX, 0.3 * scale,
                (255, 255, 255), 1, cv2.LINE_AA)
    return pair


def write_png(path, bgr):
    """Write a BGR uint8 picture."""
    if not cv2.imwrite(str(path), bgr):
        raise OSError(f"could not write {path}")


# ---------------------------------------------------------------- trajectories, JSON

def tum_line(stamp_ns, world_from_camera):
    """One TUM trajectory line: `seconds tx ty tz qx qy qz qw` of a 4x4 pose."""
    q, t = quat_trans_from_pose(world_from_camera)
    sec, ns = divmod(int(stamp_ns), SEC)
    return f"{sec}.{ns:09d} " + " ".join(f"{v:.9f}" for v in (*t, *q))


def read_tum(path):
    """(stamps (N,) int64 ns, world_from_camera (N, 4, 4)) of a TUM trajectory file ('#' comments skipped)."""
    stamps, rows = [], []
    for line in Path(path).read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if len(words) != 8:
            raise ValueError(f"{path}: expected 8 values per line, got {line!r}")
        sec, _, frac = words[0].partition(".")
        stamps.append(int(sec) * SEC + int((frac + "000000000")[:9]))
        rows.append([float(w) for w in words[1:]])
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 7)
    return np.asarray(stamps, dtype=np.int64), pose_from_quat_trans(rows[:, 3:], rows[:, :3])


def write_json(path, data):
    """Write `data` as indented JSON (NaN and inf as null)."""
    Path(path).write_text(json.dumps(_finite(data), indent=2) + "\n")


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# ---------------------------------------------------------------- map picture

def up_vector(world_from_cameras):
    """The mean 'up' of upright cameras (N, 4, 4): minus the optical y axes (y points down)."""
    up = -np.asarray(world_from_cameras)[:, :3, 1].mean(axis=0)
    norm = np.linalg.norm(up)
    return up / norm if norm > 0 else np.array([0.0, 0.0, 1.0])


def render_map(points, colors, path_points=(), up=(0.0, 0.0, 1.0), pixel=0.05, width=900, above=0.5):
    """BGR top-down picture of map points (N, 3) metres with colors (N, 3) uint8 RGB.

    Looking down `up`: per pixel (`pixel` metres), the highest point at most `above` metres over the
    highest path point (the cameras), shaded darker with depth below it; the path (M, 3) in red
    from a white dot; the picture enlarged to about `width` pixels; a 1 m scale bar.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    colors = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    track = np.asarray(path_points, dtype=np.float64).reshape(-1, 3)
    up = np.asarray(up, dtype=np.float64) / np.linalg.norm(up)
    side = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    side /= np.linalg.norm(side)
    fwd = np.cross(side, up)  # (fwd, side, up) is right-handed: fwd points right, side up the picture
    basis = np.stack([fwd, side, up])
    p, t = points @ basis.T, track @ basis.T
    if len(t):
        below = p[:, 2] <= t[:, 2].max() + above
        p, colors = p[below], colors[below]
    both = np.concatenate([p[:, :2], t[:, :2]]) if len(p) or len(t) else np.zeros((1, 2))
    lo, hi = both.min(axis=0) - 4 * pixel, both.max(axis=0) + 4 * pixel
    w, h = (np.ceil((hi - lo) / pixel).astype(int) + 1)
    img = np.zeros((h, w, 3), np.uint8)
    if len(p):
        col = ((p[:, 0] - lo[0]) / pixel).astype(int)
        row = h - 1 - ((p[:, 1] - lo[1]) / pixel).astype(int)
        order = np.argsort(p[:, 2], kind="stable")[::-1]  # highest first: np.unique keeps the first
        _, first = np.unique(row[order] * w + col[order], return_index=True)
        keep = order[first]
        height = p[keep, 2]
        shade = 0.45 + 0.55 * (height - height.min()) / max(np.ptp(height), 1e-6)
        img[row[keep], col[keep]] = (colors[keep][:, ::-1] * shade[:, None]).astype(np.uint8)
    scale = max(1, int(round(width / max(w, h))))
    img = cv2.resize(img, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)
    if len(t):
        px = np.stack([(t[:, 0] - lo[0]) / pixel, h - 1 - (t[:, 1] - lo[1]) / pixel], -1) * scale + scale / 2
        cv2.polylines(img, [np.round(px).astype(np.int32)], False, (0, 0, 255), max(1, scale // 2), cv2.LINE_AA)
        cv2.circle(img, tuple(int(v) for v in np.round(px[0])), max(3, scale), (255, 255, 255), -1, cv2.LINE_AA)
    bar = int(round(scale / pixel))
    y = img.shape[0] - 12
    cv2.line(img, (10, y), (10 + bar, y), (255, 255, 255), 2)
    cv2.putText(img, "1 m", (14 + bar, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return img


# ---------------------------------------------------------------- output bag

def window_msg_definition(prefixes=None):
    """Text of ReconstructionWindow.msg: next to the package (a source tree), else in an
    installed package's share directory (AMENT_PREFIX_PATH); None when not found."""
    if prefixes is None:
        prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    for folder in [MSG_DIR] + [Path(p) / "share" / "mapanything_ros" / "msg" for p in prefixes]:
        path = folder / "ReconstructionWindow.msg"
        if path.is_file():
            return path.read_text()
    return None


class OutputBag:
    """A rosbag2 (MCAP or sqlite3) of the node's output topics, written with rosbags.

    Message builders take int-nanosecond stamps; `time_ns` is the record time. ReconstructionWindow
    is registered from its .msg file; without the file `has_window` is False and windows are not
    written. Use as a context manager or call close().
    """

    def __init__(self, path, storage="mcap"):
        from rosbags.rosbag2 import Writer
        from rosbags.typesys import get_types_from_msg, get_typestore

        from .bag.synthetic import STORAGES, TYPESTORE, Messages

        if storage not in STORAGES:
            raise ValueError(f"unknown storage {storage!r}; expected one of {sorted(STORAGES)}")
        self.ts = get_typestore(TYPESTORE)
        definition = window_msg_definition()
        self.has_window = definition is not None
        if self.has_window:
            self.ts.register(get_types_from_msg(definition, WINDOW_TYPE))
        self.msgs = Messages(self.ts)
        self.path = Path(path)
        plugin, version = STORAGES[storage]
        self._writer = Writer(self.path, version=version, storage_plugin=plugin)
        self._writer.open()
        self._conns = {}
        self.counts = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Finish the bag (writes its metadata)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def write_raw(self, topic, msgtype, data, time_ns, transient_local=False):
        """Record serialized CDR `data` of type `msgtype` (e.g. copied from another bag)."""
        from .bag.synthetic import SURFACE_QOS, TF_QOS

        if topic not in self._conns:
            qos = SURFACE_QOS if transient_local else TF_QOS
            self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=self.ts,
                                                             offered_qos_profiles=[qos])
        self._writer.write(self._conns[topic], int(time_ns), bytes(data))
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def write(self, topic, msg, time_ns, transient_local=False):
        """Record a message of this bag's typestore."""
        self.write_raw(topic, msg.__msgtype__, self.ts.serialize_cdr(msg, msg.__msgtype__), time_ns, transient_local)

    def cloud(self, points, colors, confidence, frame_id, stamp_ns):
        """sensor_msgs/PointCloud2 as the node publishes it (encode.pack_cloud): x, y, z, rgb
        (packed 0x00RRGGBB), confidence, all float32, unorganised."""
        c = pack_cloud(np.asarray(points).reshape(-1, 3), np.asarray(colors).reshape(-1, 3),
                       np.asarray(confidence).reshape(-1))
        field = self.ts.types["sensor_msgs/msg/PointField"]
        return self.ts.types["sensor_msgs/msg/PointCloud2"](
            header=self.msgs.header(frame_id, stamp_ns), height=1, width=c.width,
            fields=[field(name=n, offset=4 * i, datatype=field.FLOAT32, count=1) for i, n in enumerate(c.names)],
            is_bigendian=c.is_bigendian, point_step=c.point_step, row_step=c.point_step * c.width,
            data=np.frombuffer(c.data, np.uint8), is_dense=c.is_dense)

    def float_image(self, values, frame_id, stamp_ns):
        """32FC1 sensor_msgs/Image of (H, W) values (depth: NaN = no estimate, REP 118)."""
        return self.msgs.image(np.asarray(values, dtype="<f4"), "32FC1", self.msgs.header(frame_id, stamp_ns))

    def camera_info(self, info, frame_id, stamp_ns):
        """A copy of a rosbags sensor_msgs/CameraInfo with a new header."""
        return replace(info, header=self.msgs.header(frame_id, stamp_ns))

    def rectified_info(self, info, rect, frame_id, stamp_ns):
        """The rosbags sensor_msgs/CameraInfo of a rectified image (geometry.rectify.info_fields) of
        the camera of CameraInfo `info`, with a new header."""
        fields = info_fields(rect, info.p, (max(info.binning_x, 1), max(info.binning_y, 1)))
        arrays = {name: np.asarray(fields[name], np.float64) for name in ("d", "k", "r", "p")}
        roi = replace(info.roi, x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        return replace(info, header=self.msgs.header(frame_id, stamp_ns), height=fields["height"], width=fields["width"],
                       distortion_model=fields["distortion_model"], binning_x=0, binning_y=0, roi=roi, **arrays)

    def tf(self, transforms):
        """tf2_msgs/TFMessage of (parent_from_child 4x4, parent, child, stamp_ns) tuples."""
        return self.msgs.tf([self.msgs.transform(*t) for t in transforms])

    def window(self, output):
        """mapanything_ros/msg/ReconstructionWindow of a session.WindowOutput."""
        t = self.ts.types
        views = output.views()
        poses = []
        for _, _, pose, *_ in views:
            q, p = quat_trans_from_pose(pose)
            poses.append(t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](*map(float, p)),
                                                     orientation=t["geometry_msgs/msg/Quaternion"](*map(float, q))))
        used = np.array([v[3:] for v in views], dtype=bool).reshape(-1, 3)
        return t[WINDOW_TYPE](
            header=self.msgs.header(output.frame_id, output.stamp_ns), sequence=int(output.sequence),
            stamps=[self.msgs.header("", v[0]).stamp for v in views], frame_ids=[v[1] for v in views],
            poses=poses, used_intrinsics=used[:, 0].copy(), used_pose=used[:, 1].copy(),
            used_depth=used[:, 2].copy(), reference_index=0,
            metric_scale=float(output.reconstruction.metric_scale), metric_inputs=output.metric_inputs,
            backend=str(output.values["backend"]),
            inference_time=float(output.result.timings.get("inference", 0.0)))
