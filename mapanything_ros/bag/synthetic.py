"""A synthetic robot run written to a rosbag2 bag (rosbags, no ROS runtime), with ground truth.

The sensor topics, frames, stamps and QoS are those of the live player (ros/player.py), so the
node parameters in config/ work on a replay of the bag unchanged:

- per camera `/<camera>/image_raw` (rgb8; `/<camera>/image_raw/compressed` jpeg when
  compressed) and `/<camera>/camera_info`, frame id = the camera name (an optical frame),
  stamped at each capture;
- `/lidar/points`: an organised PointCloud2 in frame `lidar`, x, y, z float32 and Ouster-style
  `t` uint32 (ns after the header stamp, which is the sweep's start), recorded when the sweep ends;
- `/tf`: odom -> base_link at the TF rate; `/tf_static`: base_link -> cameras and lidar, once,
  offered transient local.

Ground truth (for `evaluation.read_ground_truth`), all in the world frame `odom`:

- `/ground_truth/<camera>/depth`: 32FC1 true z-depth (m), NaN where the lens sees nothing;
- `/ground_truth/<camera>/pose`: PoseStamped, true world_from_camera (optical frame);
- `/ground_truth/surface`: PointCloud2 x, y, z float32, once (transient local): the true
  surfaces every camera view saw, one sample per occupied cube of `surface_spacing`.

Bag record times are the publication times (a LiDAR cloud at its sweep's end).
"""

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from .. import layout
from ..geometry import quat_trans_from_pose
from ..layout import BASE_FRAME, LIDAR_FRAME, SEC, START_NS, SURFACE_TOPIC, WORLD_FRAME
from ..synthetic.presets import make_scene

LIDAR_TOPIC = layout.absolute(layout.LIDAR_TOPIC)
TF_TOPIC, TF_STATIC_TOPIC = "/tf", "/tf_static"
STORAGES = {"mcap": (StoragePlugin.MCAP, 9), "sqlite3": (StoragePlugin.SQLITE3, 8)}
TYPESTORE = Stores.ROS2_KILTED


def camera_topics(camera, compressed=False):
    """(image topic, camera_info topic) of a camera (frame id) in the bag: layout.camera_topics at the root."""
    return tuple(layout.absolute(t) for t in layout.camera_topics(camera, compressed))


def _qos(depth, reliable, transient_local=False):
    never = QosTime(0, 0)  # rmw "unspecified": the default deadline, lifespan and lease
    return Qos(QosHistory.KEEP_LAST, depth, QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
               QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
               never, never, QosLiveliness.AUTOMATIC, never, False)


# The offered QoS the player's publishers use (rclpy's qos_profile_sensor_data, ros/tf.py's TF QoS).
SENSOR_QOS = _qos(5, reliable=False)
TF_QOS = _qos(100, reliable=True)
TF_STATIC_QOS = _qos(100, reliable=True, transient_local=True)
TRUTH_QOS = _qos(10, reliable=True)
SURFACE_QOS = _qos(1, reliable=True, transient_local=True)


@dataclass(frozen=True)
class BagSummary:
    """What write_synthetic_bag wrote: message counts per topic, first and last record time (ns),
    and the number of ground-truth surface samples."""

    path: Path
    storage: str
    counts: dict
    start_ns: int
    end_ns: int
    surface_points: int


class Messages:
    """ROS 2 messages as rosbags typestore objects, with the player's field layouts."""

    def __init__(self, typestore):
        self.ts = typestore
        self.t = typestore.types

    def header(self, frame_id, stamp_ns):
        """std_msgs/Header at an int-nanosecond stamp."""
        stamp_ns = int(stamp_ns)
        time = self.t["builtin_interfaces/msg/Time"](sec=stamp_ns // SEC, nanosec=stamp_ns % SEC)
        return self.t["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)

    def image(self, array, encoding, header):
        """sensor_msgs/Image of an (H, W) or (H, W, C) array, little-endian (big-endian arrays are
        converted), rows packed."""
        array = np.asarray(array)
        array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        h, w = array.shape[:2]
        return self.t["sensor_msgs/msg/Image"](
            header=header, height=h, width=w, encoding=encoding, is_bigendian=0,
            step=array.nbytes // h, data=array.view(np.uint8).reshape(-1))

    def compressed(self, rgb, header, quality=95):
        """jpeg sensor_msgs/CompressedImage of an RGB (H, W, 3) uint8 array (the player's format)."""
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError(f"could not jpeg-encode an image of shape {np.shape(rgb)}")
        return self.t["sensor_msgs/msg/CompressedImage"](
            header=header, format="rgb8; jpeg compressed bgr8", data=buf.reshape(-1))

    def camera_info(self, camera, header):
        """sensor_msgs/CameraInfo of a CameraModel; R = identity, P = [K | 0] (as the player)."""
        x0, y0, h, w, rect = camera.roi
        roi = self.t["sensor_msgs/msg/RegionOfInterest"](x_offset=x0, y_offset=y0, height=h, width=w,
                                                         do_rectify=bool(rect))
        k = np.asarray(camera.k, dtype=np.float64)
        return self.t["sensor_msgs/msg/CameraInfo"](
            header=header, height=camera.height, width=camera.width, distortion_model=camera.distortion_model,
            d=np.asarray(camera.d, dtype=np.float64), k=k, r=np.eye(3).reshape(-1),
            p=np.hstack([k.reshape(3, 3), np.zeros((3, 1))]).reshape(-1),
            binning_x=camera.binning_x, binning_y=camera.binning_y, roi=roi)

    def cloud(self, points, header, offsets_ns=None, height=1):
        """sensor_msgs/PointCloud2: x, y, z float32 (m), plus `t` uint32 (ns after header.stamp)
        when offsets_ns is given; height > 1 makes an organised cloud (row-major)."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        names = ["x", "y", "z"] + ([] if offsets_ns is None else ["t"])
        dtype = np.dtype({"names": names, "formats": ["<f4"] * 3 + ["<u4"] * (len(names) - 3),
                          "offsets": [4 * i for i in range(len(names))], "itemsize": 4 * len(names)})
        out = np.zeros(len(points), dtype)
        out["x"], out["y"], out["z"] = points.T
        if offsets_ns is not None:
            offsets = np.asarray(offsets_ns, dtype=np.int64)
            if offsets.size and (offsets.min() < 0 or offsets.max() > np.iinfo(np.uint32).max):
                raise ValueError("time offsets must lie in [0, 2^32) ns after the header stamp")
            out["t"] = offsets
        field = self.t["sensor_msgs/msg/PointField"]
        kinds = {"t": field.UINT32}
        fields = [field(name=n, offset=4 * i, datatype=kinds.get(n, field.FLOAT32), count=1)
                  for i, n in enumerate(names)]
        width = len(points) // height
        return self.t["sensor_msgs/msg/PointCloud2"](
            header=header, height=height, width=width, fields=fields, is_bigendian=False,
            point_step=dtype.itemsize, row_step=dtype.itemsize * width, data=out.view(np.uint8).reshape(-1),
            is_dense=bool(np.isfinite(points).all()))

    def transform(self, parent_from_child, parent, child, stamp_ns):
        """geometry_msgs/TransformStamped of a 4x4 rigid transform."""
        q, t = quat_trans_from_pose(parent_from_child)
        g = self.t
        tf = g["geometry_msgs/msg/Transform"](translation=g["geometry_msgs/msg/Vector3"](*map(float, t)),
                                              rotation=g["geometry_msgs/msg/Quaternion"](*map(float, q)))
        return g["geometry_msgs/msg/TransformStamped"](header=self.header(parent, stamp_ns), child_frame_id=child,
                                                       transform=tf)

    def tf(self, transforms):
        """tf2_msgs/TFMessage of TransformStamped messages."""
        return self.t["tf2_msgs/msg/TFMessage"](transforms=list(transforms))

    def pose(self, world_from_frame, header):
        """geometry_msgs/PoseStamped of a 4x4 rigid pose (quaternion x, y, z, w)."""
        q, t = quat_trans_from_pose(world_from_frame)
        g = self.t
        return g["geometry_msgs/msg/PoseStamped"](header=header, pose=g["geometry_msgs/msg/Pose"](
            position=g["geometry_msgs/msg/Point"](*map(float, t)),
            orientation=g["geometry_msgs/msg/Quaternion"](*map(float, q))))


class SurfaceSampler:
    """True surface points seen by camera views, thinned to one per occupied cube of `spacing`
    metres (the first seen) with a dense occupancy grid over the room's bounding box. The grid is
    offset by half a cube so that walls at whole multiples of the spacing pass through cube centres."""

    def __init__(self, lo, hi, spacing):
        self.spacing = float(spacing)
        self.lo = np.asarray(lo, float) - 1.5 * self.spacing
        extent = np.asarray(hi, float) + 1.5 * self.spacing - self.lo
        self.shape = tuple(np.ceil(extent / self.spacing).astype(int) + 1)
        self.seen = np.zeros(int(np.prod(self.shape)), dtype=bool)
        self.points = []

    def keys(self, points):
        """Flat cube index (N,) of world points (N, 3) (clipped to the grid)."""
        cell = np.floor((np.asarray(points, float) - self.lo) / self.spacing).astype(np.int64)
        return np.ravel_multi_index(np.clip(cell, 0, np.array(self.shape) - 1).T, self.shape)

    def add(self, view, rays):
        """Add the surface points of a synthetic.View given its camera-frame unit rays (H, W, 3)."""
        hit = view.depth_ray > 0
        pose = view.world_from_camera
        # Rounded to float32 first, as published, so a sample's cube is the same when read back.
        pts = (pose[:3, 3] + (rays[hit] * view.depth_ray[hit, None]) @ pose[:3, :3].T).astype(np.float32)
        key, first = np.unique(self.keys(pts), return_index=True)
        new = ~self.seen[key]
        self.seen[key[new]] = True
        self.points.append(pts[first[new]])

    def result(self):
        """(N, 3) float32 world points."""
        return np.concatenate(self.points) if self.points else np.zeros((0, 3), np.float32)


def write_synthetic_bag(path, preset="default", seed=0, duration_s=10.0, camera_rate_hz=10.0, lidar_rate_hz=10.0,
                        tf_rate_hz=50.0, storage="mcap", compressed=False, start_ns=START_NS,
                        surface_spacing=0.025, progress=None):
    """Write a synthetic run (synthetic.presets.make_scene(preset, seed)) to a new rosbag2 at `path`.

    Ticks as the player's: cameras at start_ns + k / camera_rate_hz, TF at start_ns + k / tf_rate_hz,
    LiDAR sweeps starting at start_ns + k / lidar_rate_hz recorded when they end; every tick in
    [start_ns, start_ns + duration_s). A rate of 0 turns a stream off. storage: "mcap" or "sqlite3".
    compressed: jpeg images on image_raw/compressed instead of rgb8 image_raw. Ground truth as in
    the module doc. progress(done, total) is called after each tick. Returns a BagSummary.
    """
    if storage not in STORAGES:
        raise ValueError(f"unknown storage {storage!r}; expected one of {sorted(STORAGES)}")
    scene = make_scene(preset, seed)
    plugin, version = STORAGES[storage]
    ts = get_typestore(TYPESTORE)
    msgs = Messages(ts)
    start_ns = int(start_ns)
    end = start_ns + int(round(duration_s * SEC))
    sweep_ns = scene.lidar.sweep_ns
    schedule = {k: (first, int(round(SEC / rate))) for k, first, rate in
                (("tf", start_ns, tf_rate_hz), ("camera", start_ns, camera_rate_hz),
                 ("lidar", start_ns + sweep_ns, lidar_rate_hz)) if rate > 0}
    ticks = sorted({s for first, period in schedule.values() for s in range(first, end, period)})
    due = {k: set(range(first, end, period)) for k, (first, period) in schedule.items()}
    sampler = SurfaceSampler(scene.room.lo, scene.room.hi, surface_spacing)
    counts = {}

    with Writer(Path(path), version=version, storage_plugin=plugin) as bag:
        conns = {}

        def write(topic, msg, time_ns, qos):
            if topic not in conns:
                conns[topic] = bag.add_connection(topic, msg.__msgtype__, typestore=ts, offered_qos_profiles=[qos])
            bag.write(conns[topic], int(time_ns), ts.serialize_cdr(msg, msg.__msgtype__))
            counts[topic] = counts.get(topic, 0) + 1

        static = [msgs.transform(c.body_from_camera, BASE_FRAME, c.name, start_ns) for c in scene.cameras]
        static.append(msgs.transform(scene.lidar.body_from_lidar, BASE_FRAME, LIDAR_FRAME, start_ns))
        write(TF_STATIC_TOPIC, msgs.tf(static), start_ns, TF_STATIC_QOS)
        for i, stamp in enumerate(ticks):
            if stamp in due.get("tf", ()):
                pose = scene.trajectory.world_from_body(stamp)
                write(TF_TOPIC, msgs.tf([msgs.transform(pose, WORLD_FRAME, BASE_FRAME, stamp)]), stamp, TF_QOS)
            if stamp in due.get("camera", ()):
                for view in scene.capture(stamp):
                    _write_view(write, msgs, view, compressed)
                    sampler.add(view, view.camera.ray_map(grid=scene.grid))
            if stamp in due.get("lidar", ()):
                sweep = scene.sweep(stamp - sweep_ns)
                cloud = msgs.cloud(sweep.points, msgs.header(LIDAR_FRAME, sweep.start_ns),
                                   sweep.times_ns - sweep.start_ns, scene.lidar.rows)
                write(LIDAR_TOPIC, cloud, stamp, SENSOR_QOS)
            if progress is not None:
                progress(i + 1, len(ticks))
        surface = sampler.result()
        write(SURFACE_TOPIC, msgs.cloud(surface, msgs.header(WORLD_FRAME, start_ns)), start_ns, SURFACE_QOS)
    return BagSummary(Path(path), storage, counts, start_ns, ticks[-1] if ticks else start_ns, len(surface))


def _write_view(write, msgs, view, compressed):
    """The messages of one camera view: image, CameraInfo, true depth and true pose."""
    header = msgs.header(view.name, view.stamp_ns)
    image_topic, info_topic = camera_topics(view.name, compressed)
    image = msgs.compressed(view.image, header) if compressed else msgs.image(view.image, "rgb8", header)
    write(image_topic, image, view.stamp_ns, SENSOR_QOS)
    write(info_topic, msgs.camera_info(view.camera, header), view.stamp_ns, SENSOR_QOS)
    depth_topic, pose_topic = layout.ground_truth_topics(view.name)
    depth = np.where(view.depth_z > 0, view.depth_z, np.nan).astype(np.float32)
    write(depth_topic, msgs.image(depth, "32FC1", header), view.stamp_ns, TRUTH_QOS)
    write(pose_topic, msgs.pose(view.world_from_camera, msgs.header(WORLD_FRAME, view.stamp_ns)),
          view.stamp_ns, TRUTH_QOS)
