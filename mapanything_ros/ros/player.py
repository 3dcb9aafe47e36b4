"""Publishes a SyntheticScene as a robot's drivers would: images, CameraInfo, LiDAR, TF and /clock.

Stamps come from a simulated clock the player advances itself, one tick at a time, so a run is
the same whatever the wall time (`run(realtime=False)` publishes as fast as it can render).
Per camera (frame id = the rig camera's name, already an optical frame, see synthetic.sensors):
`<ns>/image_raw` (rgb8) or `<ns>/image_raw/compressed` (jpeg), and `<ns>/camera_info`. The LiDAR
publishes an organised (rows x columns) PointCloud2 in frame `lidar` with x, y, z float32 and an
Ouster-style `t` uint32 nanosecond offset from the header stamp, which is the sweep's start (the
cloud goes out when the sweep ends). TF: `world_frame -> base_frame` on /tf; the rig's mounting
poses `base_frame -> camera / lidar` once on /tf_static (transient local).

Clock: from the command line, stamps start at the wall clock's now (the clock a node uses by
default, without use_sim_time), paced in real time, dropping ticks when rendering falls behind
(the default scene renders at about half real time on one core); --start S (simulated seconds)
or --fast start at S (default 1 s) instead and publish every tick, for a node with
use_sim_time:=true (the player publishes /clock). SIGINT or SIGTERM stops it after the tick
being rendered, exit code 0.

CLI: python -m mapanything_ros.ros.player --preset small --seed 0 --duration 10 --rate 10
"""

import argparse
import array
import collections
import signal
import sys
import threading
import time

import cv2
import numpy as np
import rclpy
from rclpy.signals import SignalHandlerOptions
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.time import Time
from rclpy.utilities import remove_ros_args
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from tf2_msgs.msg import TFMessage

from ..layout import BASE_FRAME, LIDAR_FRAME, LIDAR_TOPIC, START_NS, WORLD_FRAME, camera_topics
from ..synthetic.presets import PRESETS, make_scene
from ..units import SEC
from .messages import make_header
from .tf import TF_QOS, TF_STATIC_QOS, matrix_to_transform

try:
    from rosgraph_msgs.msg import Clock
except ImportError:  # no rosgraph_msgs: the player runs without /clock
    Clock = None

PROG = "mapanything_player"
CLOCK_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
_TRUTH_CACHE = 8  # captures kept for truth() (a default capture is about 5 MB)


def rgb_to_image(rgb, header):
    """rgb8 Image of an (H, W, 3) uint8 RGB array."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    msg = Image(header=header, height=h, width=w, encoding="rgb8", is_bigendian=False, step=3 * w)
    msg.data = array.array("B", rgb.tobytes())
    return msg


def rgb_to_compressed(rgb, header, quality=95):
    """jpeg CompressedImage of an (H, W, 3) uint8 RGB array (format as image_transport writes it)."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"could not jpeg-encode an image of shape {np.shape(rgb)}")
    msg = CompressedImage(header=header, format="rgb8; jpeg compressed bgr8")
    msg.data = array.array("B", buf.tobytes())
    return msg


def model_to_camera_info(camera, header):
    """CameraInfo of a CameraModel; R = identity and P = [K | 0] (monocular, full-resolution K)."""
    msg = CameraInfo(header=header, width=camera.width, height=camera.height,
                     distortion_model=camera.distortion_model,
                     binning_x=camera.binning_x, binning_y=camera.binning_y)
    msg.k = list(camera.k)
    msg.d = list(camera.d)
    msg.r = np.eye(3).ravel().tolist()
    msg.p = np.hstack([np.reshape(camera.k, (3, 3)), np.zeros((3, 1))]).ravel().tolist()
    x0, y0, h, w, rect = camera.roi
    msg.roi.x_offset, msg.roi.y_offset, msg.roi.height, msg.roi.width, msg.roi.do_rectify = x0, y0, h, w, rect
    return msg


def timed_cloud(points, offsets_ns, header, height=1):
    """PointCloud2 with x, y, z float32 and `t` uint32 (ns after header.stamp), Ouster style.

    points (N, 3) metres in header.frame_id; offsets_ns (N,) int; height > 1 makes an organised
    cloud of N / height columns (row-major). is_dense is True when every point is finite.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    offsets = np.asarray(offsets_ns, dtype=np.int64).reshape(-1)
    if offsets.shape[0] != points.shape[0] or points.shape[0] % height:
        raise ValueError(f"{points.shape[0]} points, {offsets.shape[0]} offsets and height {height} do not agree")
    if offsets.size and (offsets.min() < 0 or offsets.max() > np.iinfo(np.uint32).max):
        raise ValueError("time offsets must lie in [0, 2^32) ns after the header stamp")
    dtype = np.dtype({"names": ["x", "y", "z", "t"], "formats": ["<f4", "<f4", "<f4", "<u4"],
                      "offsets": [0, 4, 8, 12], "itemsize": 16})
    out = np.zeros(points.shape[0], dtype)
    out["x"], out["y"], out["z"], out["t"] = points[:, 0], points[:, 1], points[:, 2], offsets
    width = points.shape[0] // height
    msg = PointCloud2(
        header=header, height=height, width=width, is_bigendian=False, point_step=16, row_step=16 * width,
        is_dense=bool(np.isfinite(points).all()),
        fields=[PointField(name=n, offset=4 * i, datatype=PointField.UINT32 if n == "t" else PointField.FLOAT32,
                           count=1) for i, n in enumerate("xyzt")],
    )
    msg.data = array.array("B", out.tobytes())
    return msg


class SyntheticPlayer:
    """Publishes `scene` on `node` from a simulated clock starting at `start_ns`.

    Rates in Hz; 0 turns a stream off. Cameras capture at start_ns + k / camera_rate_hz; TF goes
    out at start_ns + k / tf_rate_hz; a LiDAR sweep starting at s is published at
    s + sweep duration, for s = start_ns + k / lidar_rate_hz. /clock (when rosgraph_msgs is
    importable and `clock`) carries every tick's stamp. Within a tick the order is /clock, /tf,
    then sensors, so a subscriber has the pose before the data stamped with it.
    """

    def __init__(self, node, scene, *, camera_rate_hz=10.0, lidar_rate_hz=10.0, tf_rate_hz=50.0,
                 start_ns=START_NS, world_frame=WORLD_FRAME, base_frame=BASE_FRAME, lidar_frame=LIDAR_FRAME,
                 namespace_of_camera=lambda name: name, compressed=False, lidar_topic=LIDAR_TOPIC,
                 qos=qos_profile_sensor_data, clock=True):
        self.node, self.scene = node, scene
        self.world_frame, self.base_frame, self.lidar_frame = world_frame, base_frame, lidar_frame
        self.compressed = compressed
        self._period = {k: int(round(SEC / r)) for k, r in
                        (("tf", tf_rate_hz), ("camera", camera_rate_hz), ("lidar", lidar_rate_hz)) if r > 0}
        first = {"tf": start_ns, "camera": start_ns, "lidar": start_ns + scene.lidar.sweep_ns}
        self._first = {k: int(first[k]) for k in self._period}
        self._count = dict.fromkeys(self._period, 0)
        self.now_ns = None  # stamp of the last published tick
        self._truth = collections.OrderedDict()

        self.publishers = {}
        if clock and Clock is not None:
            self.publishers["/clock"] = node.create_publisher(Clock, "/clock", CLOCK_QOS)
        if "tf" in self._period:
            self.publishers["/tf"] = node.create_publisher(TFMessage, "/tf", TF_QOS)
        self._camera_topics = {}
        if "camera" in self._period:
            for cam in scene.cameras:
                image, info = camera_topics(namespace_of_camera(cam.name), compressed)
                self.publishers[image] = node.create_publisher(
                    CompressedImage if compressed else Image, image, qos)
                self.publishers[info] = node.create_publisher(CameraInfo, info, qos)
                self._camera_topics[cam.name] = (image, info)
        self.lidar_topic = lidar_topic
        if "lidar" in self._period:
            self.publishers[lidar_topic] = node.create_publisher(PointCloud2, lidar_topic, qos)

        static = [matrix_to_transform(c.body_from_camera, base_frame, c.name, start_ns) for c in scene.cameras]
        static.append(matrix_to_transform(scene.lidar.body_from_lidar, base_frame, lidar_frame, start_ns))
        self._static_pub = node.create_publisher(TFMessage, "/tf_static", TF_STATIC_QOS)
        self._static_pub.publish(TFMessage(transforms=static))

    @property
    def next_ns(self):
        """Stamp (int ns) of the next tick: the earliest stamp any stream is due at."""
        return min(self._due(k) for k in self._period)

    def _due(self, kind):
        return self._first[kind] + self._count[kind] * self._period[kind]

    def step(self):
        """Publish everything due at the next tick, each message as soon as it is made (the cheap
        LiDAR sweep before the camera images, which take long to render); returns [(topic,
        message)] in publication order."""
        stamp = self.next_ns
        due = [k for k in self._period if self._due(k) == stamp]
        out = []

        def publish(topic, msg):
            self.publishers[topic].publish(msg)
            out.append((topic, msg))

        if "/clock" in self.publishers:
            msg = Clock()
            msg.clock = Time(nanoseconds=stamp).to_msg()
            publish("/clock", msg)
        if "tf" in due:
            pose = self.scene.trajectory.world_from_body(stamp)
            publish("/tf", TFMessage(transforms=[matrix_to_transform(pose, self.world_frame, self.base_frame, stamp)]))
        if "lidar" in due:
            sweep = self.scene.sweep(stamp - self.scene.lidar.sweep_ns)
            publish(self.lidar_topic, timed_cloud(sweep.points, sweep.times_ns - sweep.start_ns,
                                                  make_header(self.lidar_frame, sweep.start_ns), self.scene.lidar.rows))
        if "camera" in due:
            for name, view in self.truth(stamp).items():
                header = make_header(name, stamp)
                image_topic, info_topic = self._camera_topics[name]
                encode = rgb_to_compressed if self.compressed else rgb_to_image
                publish(image_topic, encode(view.image, header))
                publish(info_topic, model_to_camera_info(view.camera, header))
        for k in due:
            self._count[k] += 1
        self.now_ns = stamp
        return out

    def run(self, duration_s, realtime=True, stop=None, catch_up=False):
        """Publish the ticks stamped in [next_ns, next_ns + duration_s); returns how many.

        realtime: pace ticks by the wall clock (a tick whose rendering is late goes out late,
        stamps never change); otherwise publish as fast as possible. catch_up (with realtime):
        camera frames due more than one camera period ago are dropped, as a live camera drops
        frames, so that stamps keep up with the wall clock when rendering is slower than real
        time (TF and the cheap LiDAR sweeps are all published, so every image has its sweep).
        stop: a threading.Event ending the run early (checked between ticks).
        """
        stop = stop or threading.Event()
        sim0 = self.next_ns
        end = sim0 + int(round(duration_s * SEC))
        wall0 = time.monotonic()
        ticks = 0
        while self.next_ns < end and not stop.is_set():
            if realtime:
                due = sim0 + int((time.monotonic() - wall0) * SEC)
                if (catch_up and "camera" in self._period and self._due("camera") < end
                        and due - self._due("camera") > self._period["camera"]):
                    self.skip_to(min(due, end), kinds=("camera",))
                    continue
                if stop.wait(max(0.0, (self.next_ns - due) / SEC)):
                    break
            self.step()
            ticks += 1
        return ticks

    def skip_to(self, stamp_ns, kinds=None):
        """Skip every tick (of `kinds`, e.g. ("camera",); None: all) stamped before stamp_ns."""
        for k in self._period if kinds is None else kinds:
            self._count[k] = max(self._count[k], -(-(stamp_ns - self._first[k]) // self._period[k]))

    def truth(self, stamp_ns):
        """{camera frame id: synthetic.View} at stamp_ns: image, world_from_camera (world_frame from
        optical, 4x4), true z-depth and ray depth (metres). The last few captures are kept."""
        stamp_ns = int(stamp_ns)
        if stamp_ns not in self._truth:
            self._truth[stamp_ns] = {v.name: v for v in self.scene.capture(stamp_ns)}
            while len(self._truth) > _TRUTH_CACHE:
                self._truth.popitem(last=False)
        return self._truth[stamp_ns]

    def wait_for_subscribers(self, timeout_s, stop=None, count=1):
        """Wait (wall time) until the sensor and /tf publishers each have `count` subscribers;
        False on timeout or when the threading.Event `stop` is set."""
        stop = stop or threading.Event()
        pubs = [p for t, p in self.publishers.items() if t != "/clock"]
        deadline = time.monotonic() + timeout_s
        while min(p.get_subscription_count() for p in pubs) < count:
            if time.monotonic() > deadline or stop.wait(0.02):
                return False
        return True


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=PRESETS, default="default", help="scene (synthetic.presets)")
    p.add_argument("--seed", type=int, default=0, help="synthetic scene seed")
    p.add_argument("--duration", type=float, default=10.0, help="simulated seconds to publish")
    p.add_argument("--rate", type=float, default=10.0, help="camera rate (Hz)")
    p.add_argument("--lidar-rate", type=float, default=10.0, help="LiDAR sweep rate (Hz, 0: off)")
    p.add_argument("--tf-rate", type=float, default=50.0, help="world -> base TF rate (Hz)")
    p.add_argument("--start", type=float, default=None,
                   help=f"first stamp (simulated s; default: the wall clock's now, or {START_NS / SEC:g} with --fast)")
    p.add_argument("--world-frame", default=WORLD_FRAME)
    p.add_argument("--base-frame", default=BASE_FRAME)
    p.add_argument("--compressed", action="store_true", help="publish jpeg image_raw/compressed")
    p.add_argument("--no-clock", action="store_true", help="do not publish /clock")
    p.add_argument("--fast", action="store_true", help="do not pace by wall time")
    p.add_argument("--wait-subscribers", type=float, default=0.0, metavar="S",
                   help="first wait up to S wall seconds for subscribers on every sensor topic and /tf")
    p.add_argument("--subscribers", type=int, default=1, metavar="N",
                   help="with --wait-subscribers: wait for N subscribers on each (several nodes)")
    p.add_argument("--linger", type=float, default=0.5, metavar="S",
                   help="wall seconds to stay up after the last tick (lets reliable TF drain)")
    return p.parse_args(argv)


def main(argv=None):
    """Run the player from the command line (its own node, real time unless --fast).

    SIGINT (Ctrl-C) and SIGTERM end the run after the tick being rendered: exit code 0."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(remove_ros_args([PROG, *argv])[1:])  # `--ros-args -r __ns:=/robot1` goes to rclpy
    if args.start is None:
        start_ns = START_NS if args.fast else time.time_ns()
    else:
        start_ns = int(round(args.start * SEC))
    rclpy.init(args=[PROG, *argv], signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("synthetic_player")
    try:
        player = SyntheticPlayer(
            node, make_scene(args.preset, args.seed), camera_rate_hz=args.rate, lidar_rate_hz=args.lidar_rate,
            tf_rate_hz=args.tf_rate, start_ns=start_ns, world_frame=args.world_frame,
            base_frame=args.base_frame, compressed=args.compressed, clock=not args.no_clock)
        if Clock is None and not args.no_clock:
            node.get_logger().warning("rosgraph_msgs is not importable: not publishing /clock")
        if (args.wait_subscribers > 0 and not player.wait_for_subscribers(args.wait_subscribers, stop, args.subscribers)
                and not stop.is_set()):
            node.get_logger().warning(f"no subscribers after {args.wait_subscribers} s; publishing anyway")
        if args.start is None and not args.fast:
            player.skip_to(time.time_ns())  # the scene took a while to make: start at the wall clock's now
        ticks = player.run(args.duration, realtime=not args.fast, stop=stop, catch_up=args.start is None)
        node.get_logger().info(f"published {ticks} ticks up to stamp {player.now_ns} ns")
        stop.wait(args.linger)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
