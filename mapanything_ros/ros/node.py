"""The mapanything_ros node: a thin rclpy adapter over pipeline.Pipeline.

Parameters: settings.SPECS (declared in ros/params.py); topics, services and TF outputs:
interface.ENDPOINTS / TF_OUTPUTS; decoding: decode.py; captures to Frames: ingest.FrameBuilder.

Inputs, per camera namespace `ns` of `cameras`: `ns/image_raw` (or `ns/image_raw/compressed`) and
`ns/camera_info`; optionally one LiDAR cloud (`lidar_topic`) or a registered depth image per camera
(`ns/<depth_image_topic>`). sync.CaptureSync groups them into captures; depth never stalls the
cameras: a capture takes the LiDAR sweep within depth_tolerance that is already buffered (its
points are carried to the image time, below), and waits, at most settings.DEPTH_WAIT_S of message
time, only for a sweep when none is, or for a registered depth image nearer its stamp.

Poses and depth come from TF without ever waiting: world_frame <- image frame_id at each image
stamp, camera <- LiDAR extrinsics, and the LiDAR's world poses at the sweep's first and last
point times for motion compensation (geometry.project_to_depth). A capture whose transforms are
not there yet waits in a small ordered queue retried at RETRY_HZ, and is dropped (counted,
"tf_timeout") once it waited `tf_timeout` of node-clock time. Captures go to the pipeline in
stamp order.

Outputs (only packed when someone subscribes): ~/points (latest window) and ~/map (voxel map,
transient local) as PointCloud2 x, y, z, rgb, confidence; per camera of the newest capture
~/<ns>/depth (32FC1 z-depth, NaN = none), ~/<ns>/confidence, ~/<ns>/camera_info; ~/window
(ReconstructionWindow). Each goes out as soon as it is made: ~/points first (model resolution),
then each camera's native-resolution depth, made only when depth or confidence is subscribed.
Frames: with poses (use_poses, TF available) everything is in world_frame. Image-only
(use_poses false) the pipeline chains windows into its own chain frame, published as `map_frame`
(also in ~/window's header; the chain frame is the first window's reference camera).

TF output (REP 105). map_odom: map_frame -> world_frame = (refined world pose of the newest
capture's reference camera) * (its TF world pose)^-1. With poses the reconstruction is anchored
at the reference view, which is the newest keyframe, so the correction is the identity by
construction; image-only it maps the chain frame onto world_frame (when TF has the pose).
Use it only where nothing else publishes map_frame -> world_frame (a frame has one parent).
camera_refined: world_frame (image-only: map_frame) -> `<frame_id>_refined` per camera of the
newest capture (always new frames).

Bad input (undecodable or unsupported images, size disagreeing with CameraInfo, invalid
intrinsics, empty clouds, missing TF, time jumping back, stamps far from the node clock, silent
cameras, LiDAR or depth images, a backend that cannot start) is logged with throttling and
reported on /diagnostics; nothing is published for it. A backend that cannot start (e.g.
missing weights) leaves the node up, reporting the error only. What the ROS-free modules log
through python logging (window resets, failed windows, map resets) the node reports itself;
their python log records go to the node's logger at DEBUG (with tracebacks).

Message time: the sync measures waits (a capture's DEPTH_WAIT_S for its depth) and silence in
the stamps' time base; between messages the node clock stands in for it, less the smallest lag
(node clock - stamp at receipt) of the last LAG_IMAGES images. That lag is the inputs' latency
(a slow driver or player: without it every capture arriving later than DEPTH_WAIT_S would go
out at once, without its LiDAR sweep), or the offset of a foreign clock: image stamps more than
CLOCK_SKEW_S from the node clock (a bag or simulator without use_sim_time, a sensor clock not
synchronised) are reported. Silence: a camera or depth source without a message for
camera_timeout of message time.
"""

import importlib
import logging
import os
import re
import signal
import sys
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, replace

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Pose
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rcl_interfaces.msg import SetParametersResult
from sensor_msgs.msg import CameraInfo
from tf2_msgs.msg import TFMessage

from .. import encode, interface, settings
from ..backends import make_backend
from ..decode import camera_info_to_model, cloud_to_xyz, depth_image_to_meters, stamp_ns
from ..geometry import se3_compose, se3_inverse
from ..geometry.transforms import quat_trans_from_pose
from ..ingest import LIDAR_SOURCE, CameraImage, Cloud, FrameBuilder, PendingCaptures, image_decoder
from ..msg import ReconstructionWindow
from ..pipeline import Pipeline
from . import params
from .diagnostics import ERROR, WARN, Problems, Rates, make_status
from .images import depth_to_image, float_image
from .player import make_header
from .pointcloud import xyz_to_cloud
from .tf import TF_QOS, TF_STATIC_QOS, make_tf_lookup, matrix_to_transform

SEC = 1_000_000_000
RETRY_HZ = 20.0
PENDING_MAX = 10  # captures waiting for TF
THROTTLE_S = 5.0
LOGGED_MAX = 1000  # kinds of problem remembered for throttling
_NUMBER = re.compile(r"[-+]?\d[\d.e+-]*")
# GIL switch interval of the node's process (s). The pipeline worker and the executor threads share
# the GIL; at Python's default 5 ms, a callback making many short numpy calls waits up to 5 ms to
# get the GIL back after each one while the worker computes (the "convoy effect"): measured with
# the oracle backend, an image callback stalled 2.4 s and the first window took 2.8 s instead of
# 0.1 s, best-effort inputs overflowed and captures went out without their LiDAR depth.
GIL_SWITCH_S = 0.0005
NO_INFO_GRACE = 10  # images dropped for want of a first CameraInfo before that is reported
CLOCK_SKEW_S = 10.0  # image stamps further than this from the node clock are reported
LAG_IMAGES = 50  # images over which the node clock's lead on the stamps is measured
DEPTH_MISSING_RUN = 10  # captures in a row without a depth source's data (while it publishes) before that is reported
MAP_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
RELIABLE_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
# interface.QOS names -> profiles ("input" follows the qos parameter)
QOS = {"depth5": 5, "depth10": 10, "latched": MAP_QOS, "tf": TF_QOS, "tf_static": TF_STATIC_QOS}


def interface_class(type_name):
    """The Python class of a ROS interface type name ("sensor_msgs/msg/Image")."""
    package, kind, name = type_name.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


@dataclass(frozen=True)
class _Image(CameraImage):
    """An image waiting in CaptureSync (decoded later, on the worker), with what the outputs need."""

    camera: str  # namespace
    info: CameraInfo


@dataclass(frozen=True)
class _Sent:
    """What the node remembers of a frame it submitted, for the outputs."""

    image: _Image
    tf_pose: np.ndarray | None  # world_from_camera from TF (also in image-only mode, when available)


class MapAnythingNode(Node):
    """See the module doc. `parameter_overrides` etc. go to rclpy's Node."""

    def __init__(self, name="mapanything", **kwargs):
        super().__init__(name, **kwargs)
        self.p, declared = params.declare(self)
        self.problems, self.rates = Problems(), Rates()
        self._logged = {}  # (status, key, level, masked message) -> monotonic time of its last log line
        self.drops = dict.fromkeys(("tf_timeout", "queue", "bad_input", "no_camera_info"), 0)
        self.pipeline = self.sync = self.runtime = None
        self.fatal = None
        self._lock = threading.RLock()  # the TF queue and what was sent
        self._pending = PendingCaptures(PENDING_MAX, self.drops)  # waiting for TF, node-clock ns
        self._sent = OrderedDict()  # (frame_id, frame stamp) -> _Sent
        self._map_frame_id = self.p["world_frame"]
        self._seq = 0
        self._after_sync_reset = False  # the next window reset follows a reported sync reset
        self._lags = deque(maxlen=LAG_IMAGES)  # node clock - stamp at the receipt of the last images (ns)
        self._missing_run = {}  # depth source -> consecutive captures that went out without it
        self._wall = Clock(clock_type=ClockType.STEADY_TIME)  # timers tick while a sim clock is paused
        self.diag_pub = self._endpoint("diagnostics")
        self.create_timer(1.0, self.publish_diagnostics, clock=self._wall)
        self._endpoint("reset", self._on_reset)
        self._endpoint("save_map", self._on_save_map)
        problems = declared + settings.problems(self.p)
        if problems:
            self._fail("bad parameters: " + "; ".join(problems))
            return
        try:
            backend, self.runtime = make_backend(self.p)
        except Exception as err:  # the node stays up to report it (missing weights, bad device, ...)
            self._fail(f"backend {self.p['backend']!r} could not start: {err}")
            return
        self.pipeline = Pipeline(settings.pipeline_config(self.p), backend)
        self.pipeline.on_result(self._on_result)
        self.pipeline.on_error(self._on_pipeline_error)
        self.tf = make_tf_lookup(self)
        self.builder = FrameBuilder(self.p, self.tf.lookup)
        self._make_io()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.pipeline.start()
        self.get_logger().info(f"running {self.p['backend']} on cameras {self.cameras}, depth {self.p['depth_source']}")
        if not encode.COMPILED:
            self.get_logger().warning("mapanything_ros._pack_cloud is not built (the package's CMake build makes it): "
                                      "point clouds are packed by the OpenCV path, about 1.6x slower")

    # ---------------------------------------------------------------- set-up

    def _fail(self, message):
        self.fatal = message
        self.get_logger().error(message)
        self.problems.report("pipeline", "fatal", ERROR, message, hold=None)

    def _endpoint(self, key, callback=None, camera=None):
        """Create the publisher, subscription or service interface.ENDPOINTS[key] (for `camera`)."""
        e = interface.ENDPOINTS[key]
        name = interface.resolve(e.name, self.p, **({} if camera is None else {"ns": camera}))
        cls = interface_class(e.type)
        if e.kind == "service":
            return self.create_service(cls, name, callback)
        if e.kind == "publisher":
            return self.create_publisher(cls, name, QOS[e.qos])
        return self.create_subscription(cls, name, callback, self._input_qos if e.qos == "input" else QOS[e.qos])

    def _make_io(self):
        p = self.p
        self.cameras = list(p["cameras"])
        self._input_qos = qos_profile_sensor_data if p["qos"] == "sensor_data" else RELIABLE_QOS
        image = "image_compressed" if p["image_transport"] == "compressed" else "image"
        self.sync = settings.make_sync(p)
        self.infos = {}  # camera -> (CameraModel, CameraInfo) or None after an invalid one
        self.image_topics = {}
        self.pubs = {}
        endpoints = interface.ENDPOINTS
        for cam in self.cameras:
            self.image_topics[cam] = interface.resolve(endpoints[image].name, p, ns=cam)
            self._endpoint(image, lambda m, c=cam: self._on_image(c, m), cam)
            self._endpoint("camera_info", lambda m, c=cam: self._on_info(c, m), cam)
            if interface.enabled(endpoints["depth_image"], p):
                self._endpoint("depth_image", lambda m, c=cam: self._on_depth_image(c, m), cam)
            self.pubs[cam] = {"depth": self._endpoint("depth", camera=cam),
                              "confidence": self._endpoint("confidence", camera=cam),
                              "camera_info": self._endpoint("camera_info_out", camera=cam)}
        if interface.enabled(endpoints["lidar"], p):
            self._endpoint("lidar", self._on_lidar)
        self.points_pub = self._endpoint("points")
        self.map_pub = self._endpoint("map")
        self.window_pub = self._endpoint("window")
        self.tf_pub = self._endpoint("tf_out") if interface.enabled(endpoints["tf_out"], p) else None
        self.create_timer(1.0 / RETRY_HZ, self._on_retry, clock=self._wall)
        self._map_timer = None
        self._set_map_rate(p["map_publish_rate"])

    def _set_map_rate(self, rate):
        if self._map_timer is not None:
            self.destroy_timer(self._map_timer)
            self._map_timer = None
        if rate > 0:
            self._map_timer = self.create_timer(1.0 / rate, self.publish_map, clock=self._wall)

    def _now_ns(self):
        return self.get_clock().now().nanoseconds

    def _bad(self, status, key, level, message):
        """Report bad input (the input is dropped): see _report."""
        self.drops["bad_input"] += 1
        self._report(status, key, level, message)

    def _report(self, status, key, level, message):
        """A problem: a log line, at most one per THROTTLE_S for each (status, key, level) and message
        with its numbers masked (each kind of problem is said, whatever came just before), and a
        diagnostic problem `key` under `status`."""
        now = time.monotonic()
        kind = (status, key, level, _NUMBER.sub("#", message))
        if now - self._logged.get(kind, -np.inf) >= THROTTLE_S:
            if len(self._logged) > LOGGED_MAX:
                self._logged = {k: t for k, t in self._logged.items() if now - t < THROTTLE_S}
            self._logged[kind] = now
            if level == ERROR:  # one call site per severity: rclpy refuses a severity change at a call site
                self.get_logger().error(message)
            else:
                self.get_logger().warning(message)
        self.problems.report(status, key, level, message)

    # ---------------------------------------------------------------- inputs

    def _on_info(self, cam, msg):
        try:
            model = camera_info_to_model(msg)
        except ValueError as err:
            self.infos[cam] = None
            self._bad(f"camera {cam}", "camera_info", ERROR, f"{cam}/camera_info: invalid calibration: {err}")
            return
        self.infos[cam] = (model, msg)

    def _on_image(self, cam, msg):
        self.rates.tick(cam)
        topic = self.image_topics[cam]
        info = self.infos.get(cam)
        if info is None:  # an image before its first CameraInfo is normal at start-up: reported when it lasts
            self.drops["no_camera_info"] += 1
            if cam in self.infos or self.drops["no_camera_info"] > NO_INFO_GRACE:
                self._bad(f"camera {cam}", "image_without_info", ERROR if cam in self.infos else WARN,
                          f"{topic}: image dropped, no valid CameraInfo on {cam}/camera_info")
            return
        if not msg.header.frame_id:
            self._bad(f"camera {cam}", "image", ERROR, f"{topic}: image without header.frame_id (needed for TF)")
            return
        stamp = stamp_ns(msg.header)
        if stamp == 0:
            self._bad(f"camera {cam}", "stamp", ERROR, f"{topic}: image stamped 0 (header.stamp not set): dropped, "
                      "since TF time 0 means 'the latest pose'")
            return
        self._check_clock(topic, stamp)
        try:  # checks what needs no decoding; the decoding waits until the image is a keyframe's
            image = image_decoder(msg, info[0], topic)
        except ValueError as err:
            self._bad(f"camera {cam}", "image", ERROR, str(err))
            return
        self._feed(self.sync.add_image(cam, stamp, _Image(image, info[0], msg.header.frame_id, stamp, cam, info[1])))

    def _check_clock(self, topic, stamp):
        """Note the image's lag behind the node clock; report a stamp far from it (not before a sim
        clock has started)."""
        now = self._now_ns()
        if now == 0:
            return
        self._lags.append(now - stamp)
        if abs(stamp - now) > CLOCK_SKEW_S * SEC:
            sim = self.get_parameter("use_sim_time").value
            self._report("sync", "clock", WARN,
                         f"{topic}: stamp {(stamp - now) / SEC:+.1f} s from the node's "
                         f"{'sim (/clock)' if sim else 'system'} clock: "
                         + ("is /clock from the same source as the stamps?" if sim else
                            "for a bag or a simulator set use_sim_time:=true and publish /clock "
                            "(ros2 bag play --clock); else synchronise the sensor's clock"))

    def _on_lidar(self, msg):
        try:
            points, times = cloud_to_xyz(msg)
        except ValueError as err:
            self._bad("depth", "lidar", ERROR, f"{self.p['lidar_topic']}: {err}")
            return
        if len(points) == 0:
            self._bad("depth", "lidar_empty", WARN, f"{self.p['lidar_topic']}: empty or all-NaN cloud ignored")
            return
        self.rates.tick(LIDAR_SOURCE)
        stamp = stamp_ns(msg.header)
        cloud, problem = Cloud.checked(points, times, msg.header.frame_id, stamp)
        if problem:
            self._report("depth", "lidar_times", WARN, f"{self.p['lidar_topic']}: {problem}")
        self._feed(self.sync.add_depth(LIDAR_SOURCE, stamp, cloud, cloud.span))

    def _on_depth_image(self, cam, msg):
        try:
            depth = depth_image_to_meters(msg)
        except ValueError as err:
            self._bad("depth", f"depth {cam}", ERROR, f"{cam}/{self.p['depth_image_topic']}: {err}")
            return
        self.rates.tick(f"{cam} depth")
        self._feed(self.sync.add_depth(cam, stamp_ns(msg.header), depth))

    def _message_now(self):
        """The node clock in the stamps' time base: minus the smallest lag of the recent images (the
        inputs' transport and driver latency, or the offset of a foreign clock), so that a capture
        waits for its depth DEPTH_WAIT_S after its images could arrive, and silence is measured
        from when messages would arrive (the node clock itself before any image)."""
        return self._now_ns() - (max(0, min(self._lags)) if self._lags else 0)

    def _on_retry(self):
        self._feed(self.sync.poll(self._message_now()))

    # ---------------------------------------------------------------- captures -> frames

    def _feed(self, captures):
        """Queue new captures (in stamp order) and submit every one whose transforms are there."""
        with self._lock:
            resets = self.sync.take_resets()
            for reason in resets:
                self._report("sync", "reset", WARN, f"input time jumped back: {reason}")
                self._pending.clear()
                self._after_sync_reset = True
            self._count_missing_depth(captures)
            now = self._now_ns()
            self._pending.push(captures, now)
            for _, (frames, sent) in self._pending.drain(self._frames, now, self.p["tf_timeout"] * SEC,
                                                         self._on_tf_timeout):
                if not frames:
                    continue
                submission = self.pipeline.submit(frames)
                if submission.reset and not self._after_sync_reset:  # else the sync reset said why
                    self._report("pipeline", "window_reset", WARN, submission.reset)
                self._after_sync_reset = False
                if submission.admitted:  # only keyframes are ever published
                    self._sent.update(sent)
                    while len(self._sent) > 2 * len(self.cameras) * (self.p["window_size"] + 2):
                        self._sent.popitem(last=False)

    def _depth_topic(self, source):
        return self.p["lidar_topic"] if source == LIDAR_SOURCE else f"{source}/{self.p['depth_image_topic']}"

    def _count_missing_depth(self, captures):
        """Report a depth source whose messages arrive but miss DEPTH_MISSING_RUN captures in a row."""
        for cap in captures:
            for source in self.sync.depth_sources:
                run = 0 if source in cap.depth else self._missing_run.get(source, 0) + 1
                self._missing_run[source] = run
                if run >= DEPTH_MISSING_RUN and self.sync.stats()["depth"][source]["received"]:
                    self._report("depth", f"missing {source}", WARN,
                                 f"{run} captures in a row without depth from {self._depth_topic(source)}: no message "
                                 f"within depth_tolerance ({self.p['depth_tolerance']} s, parameter depth_tolerance) "
                                 "of their stamps; check the stamps of both")

    def _check_silence(self):
        """Report silent cameras and depth sources (see the module doc); at 1 Hz."""
        now = self._message_now()
        timeout = f"for {self.p['camera_timeout']} s (parameter camera_timeout)"
        for cam in self.sync.silent_cameras(now):
            self._report(f"camera {cam}", "silent", WARN,
                         f"no image on {self.image_topics[cam]} {timeout}: check the driver, the topic "
                         "(parameters cameras, image_transport) and qos")
        for source in self.sync.silent_depth_sources():
            kind = "LiDAR sweep" if source == LIDAR_SOURCE else "depth image"
            param = "lidar_topic" if source == LIDAR_SOURCE else "depth_image_topic"
            self._report("depth", f"silent {source}", WARN,
                         f"no {kind} on {self._depth_topic(source)} {timeout} while images arrive: captures go "
                         f"out without depth; check the driver, the topic (parameter {param}) and qos (a large "
                         "cloud may never arrive best effort: qos:=reliable)")

    def _on_tf_timeout(self, cap, err):
        message = (f"capture at {cap.stamp_ns / SEC:.3f} s dropped: no transform within tf_timeout "
                   f"({self.p['tf_timeout']} s): {err}")
        self._report("tf", "timeout", WARN, message)

    def _frames(self, cap):
        """The pipeline Frames of a capture and what to remember of them if they become a keyframe
        ({frame key: _Sent}); raises TransformError when TF is not there (yet)."""
        frames, problems = self.builder.frames(cap)
        for message in problems:
            self._bad("depth", message, ERROR, message)
        sent = {}
        for frame, (_, img) in zip(frames, cap.images.values()):
            tf_pose = frame.world_from_camera if self.p["use_poses"] else self.builder.tf_pose(img)
            sent[frame.key] = _Sent(img, tf_pose)
        return frames, sent

    # ---------------------------------------------------------------- outputs (pipeline worker thread)

    def _on_pipeline_error(self, seq, err):
        self._report("pipeline", "window", ERROR, f"window {seq} failed: {err}")

    def _on_result(self, result):
        if result.map_reset:
            self._report("pipeline", "map_reset", WARN, f"map cleared: {result.map_reset}")
        recon = result.reconstruction
        frame_id = self.p["world_frame"] if recon.pose_frame == "world" else self.p["map_frame"]
        self._map_frame_id = frame_id
        newest_stamp = recon.frames[recon.selected[0]].stamp_ns  # selected: the newest capture's views
        with self._lock:
            sent = {f.key: self._sent.get(f.key) for f in recon.frames}
        if self.points_pub.get_subscription_count():  # first: it needs no native-resolution depth
            scope = None if self.p["points_scope"] == "newest" else range(len(recon.frames))
            xyz, rgb, conf = recon.cloud(scope)
            self.points_pub.publish(xyz_to_cloud(xyz, make_header(frame_id, newest_stamp), rgb, conf))
        for i in recon.selected:  # each view's native depth made (when wanted) and published in turn
            frame = recon.frames[i]
            s = sent[frame.key]
            if s is None:
                continue
            header = make_header(frame.frame_id, s.image.stamp_ns)
            pubs = self.pubs[s.image.camera]
            if pubs["depth"].get_subscription_count():
                pubs["depth"].publish(depth_to_image(recon.view(i).depth, header))
            if pubs["confidence"].get_subscription_count():
                pubs["confidence"].publish(float_image(recon.view(i).confidence, header))
            if pubs["camera_info"].get_subscription_count():
                pubs["camera_info"].publish(_with_header(s.image.info, header))
        self._seq += 1
        if self.window_pub.get_subscription_count():
            self.window_pub.publish(self._window_msg(result, frame_id, newest_stamp))
        if self.tf_pub is not None:
            self._publish_tf(recon, sent, frame_id, newest_stamp)

    def _window_msg(self, result, frame_id, stamp):
        recon, cfg = result.reconstruction, self.pipeline.config.batch
        msg = ReconstructionWindow(header=make_header(frame_id, stamp), sequence=self._seq,
                                   reference_index=0, metric_scale=float(recon.metric_scale),
                                   metric_inputs=bool(cfg.metric_poses and cfg.metric_depth),
                                   backend=self.p["backend"], inference_time=float(result.timings.get("inference", 0)))
        for f, pose, passed in zip(recon.frames, recon.poses, recon.batch.passed):
            msg.stamps.append(make_header("", f.stamp_ns).stamp)
            msg.frame_ids.append(f.frame_id)
            msg.poses.append(_pose(pose))
            msg.used_intrinsics.append("ray_directions_cam" in passed)
            msg.used_pose.append("camera_pose_quats" in passed)
            msg.used_depth.append("depth_along_ray" in passed)
        return msg

    def _publish_tf(self, recon, sent, frame_id, stamp):
        if self.p["tf_output"] == "map_odom":
            s = sent.get(recon.frames[0].key)
            if s is None or s.tf_pose is None:
                return
            correction = se3_compose(recon.poses[0], se3_inverse(s.tf_pose))
            out = interface.TF_OUTPUTS["map_odom"]
            transforms = [matrix_to_transform(correction, interface.resolve(out.parent, self.p),
                                              interface.resolve(out.child, self.p), stamp)]
        else:
            child = interface.TF_OUTPUTS["camera_refined"].child
            transforms = [matrix_to_transform(recon.poses[i], frame_id,
                                              interface.resolve(child, self.p, frame_id=recon.frames[i].frame_id),
                                              stamp)
                          for i in recon.selected]
        self.tf_pub.publish(TFMessage(transforms=transforms))

    def publish_map(self):
        """Publish ~/map (when subscribed)."""
        if self.pipeline is None or not self.map_pub.get_subscription_count():
            return
        xyz, rgb, conf = self.pipeline.map_points()
        self.map_pub.publish(xyz_to_cloud(xyz, make_header(self._map_frame_id, self._now_ns()), rgb, conf))

    # ---------------------------------------------------------------- services, parameters

    def _on_reset(self, request, response):
        if self.pipeline is None:
            response.success, response.message = False, f"not running: {self.fatal}"
            return response
        with self._lock:
            self._pending.clear()
        self.pipeline.reset()
        response.success, response.message = True, "window, map and pending captures cleared"
        self.get_logger().info(f"~/reset: {response.message}")
        return response

    def _on_save_map(self, request, response):
        if self.pipeline is None:
            response.success, response.message = False, f"not running: {self.fatal}"
            return response
        path = os.path.expanduser(self.p["save_map_path"])
        if not len(self.pipeline.map):  # an empty map would replace the last saved one
            response.success = False
            response.message = (f"the map is empty (nothing mapped since start-up or ~/reset): {path} "
                                "left as it was")
            return response
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            n = self.pipeline.save_map(path)
        except OSError as err:
            response.success, response.message = False, f"could not write {path}: {err}"
            return response
        response.success, response.message = True, f"wrote {n} points to {path}"
        return response

    def set_parameters(self, parameter_list):
        """rclpy's, refusing wrong types and values with readable reasons first (params.refusal)."""
        return [params.refusal(p) or super(MapAnythingNode, self).set_parameters([p])[0] for p in parameter_list]

    def set_parameters_atomically(self, parameter_list):
        """rclpy's (the parameter service's path), refusing wrong types and values readably first."""
        refusals = [r for r in map(params.refusal, parameter_list) if r]
        return refusals[0] if refusals else super().set_parameters_atomically(parameter_list)

    def _on_set_parameters(self, parameters):
        changes = {}
        for param in parameters:
            if param.name not in settings.SPECS:
                continue
            reason = settings.check(param.name, param.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            changes[param.name] = param.value
        self.p.update(changes)
        cfg = settings.pipeline_config(self.p)
        self.pipeline.config = replace(self.pipeline.config, keyframes=cfg.keyframes, batch=cfg.batch,
                                       keep_measured=cfg.keep_measured, align_to_measured=cfg.align_to_measured,
                                       completion=cfg.completion, edge_threshold=cfg.edge_threshold,
                                       edge_noise_sigmas=cfg.edge_noise_sigmas, min_confidence=cfg.min_confidence)
        self.pipeline.window.policy = cfg.keyframes
        self.pipeline.map.min_confidence = cfg.min_confidence
        self.sync.slop_ns = int(self.p["sync_slop"] * SEC)
        self.sync.depth_tolerance_ns = int(self.p["depth_tolerance"] * SEC)
        self.sync.camera_timeout_ns = int(self.p["camera_timeout"] * SEC)
        if "map_publish_rate" in changes:
            self._set_map_rate(self.p["map_publish_rate"])
        return SetParametersResult(successful=True)

    # ---------------------------------------------------------------- diagnostics

    def publish_diagnostics(self):
        """Publish one DiagnosticArray (called at 1 Hz)."""
        hw = self.get_fully_qualified_name()
        prefix = f"{self.get_name()}: "
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        values = {"backend": self.p["backend"]}
        if self.runtime is not None:
            values.update(self.runtime.describe())
        if self.pipeline is not None:
            s = self.pipeline.stats()
            values.update(captures=s.captures, keyframes=s.keyframes, windows_done=s.done, windows_failed=s.failed,
                          dropped_pipeline_queue=s.dropped, pending=s.pending, window_resets=s.window_resets,
                          map_resets=s.map_resets, map_voxels=s.map_voxels)
            for stage, latency in s.latency.items():  # pipeline.STAGES
                values[f"{stage}_latency_p50_s"] = f"{latency['p50']:.4f}"
                values[f"{stage}_latency_p95_s"] = f"{latency['p95']:.4f}"
        msg.status.append(make_status(prefix + "pipeline", hw, self.problems.active("pipeline"), values))
        if self.sync is not None:
            self._check_silence()
            st = self.sync.stats()
            for cam in self.cameras:
                msg.status.append(make_status(f"{prefix}camera {cam}", hw, self.problems.active(f"camera {cam}"),
                                              {"topic": self.image_topics[cam], "rate_hz": self.rates.rate(cam),
                                               "received": st["images"][cam],
                                               "camera_info": "ok" if self.infos.get(cam) else "missing"}))
            sync_values = {"captures": st["captures"], "resets": st["resets"],
                           "queued_for_tf": len(self._pending), **{f"dropped_sync_{k}": v for k, v in
                                                                   st["dropped"].items()},
                           **{f"dropped_{k}": v for k, v in self.drops.items()}}
            msg.status.append(make_status(prefix + "sync", hw, self.problems.active("sync"), sync_values))
            msg.status.append(make_status(prefix + "tf", hw, self.problems.active("tf"),
                                          {"world_frame": self.p["world_frame"],
                                           "dropped_tf_timeout": self.drops["tf_timeout"]}))
            if self.p["depth_source"] != "none":
                depth_values = {f"{src}_{k}": v for src, d in st["depth"].items() for k, v in d.items()}
                if self.p["depth_source"] == "lidar":
                    depth_values["lidar_rate_hz"] = self.rates.rate(LIDAR_SOURCE)
                msg.status.append(make_status(prefix + "depth", hw, self.problems.active("depth"), depth_values))
        self.diag_pub.publish(msg)

    def shutdown(self):
        """Stop the pipeline worker (the job running ends after its current stage; see Pipeline.stop)."""
        if self.pipeline is not None:
            self.pipeline.stop(timeout=10.0)


def _with_header(info, header):
    """A copy of CameraInfo `info` with `header`."""
    return CameraInfo(header=header, height=info.height, width=info.width, distortion_model=info.distortion_model,
                      d=info.d, k=info.k, r=info.r, p=info.p, binning_x=info.binning_x, binning_y=info.binning_y,
                      roi=info.roi)


def _pose(world_from_camera):
    """geometry_msgs/Pose of a 4x4 (quaternion x, y, z, w)."""
    q, t = quat_trans_from_pose(world_from_camera)
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in t)
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (float(v) for v in q)
    return pose


class _DebugHandler(logging.Handler):
    """python logging records (tracebacks included) to an rclpy logger at DEBUG."""

    def __init__(self, logger):
        super().__init__(logging.DEBUG)
        self.logger = logger
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record):
        self.logger.debug(self.format(record))


def main(argv=None):
    """Run the node: `python -m mapanything_ros.ros.node --ros-args -p cameras:=[front] ...`.

    SIGINT and SIGTERM stop it in order: the executor (no more inputs), then the pipeline worker
    (the window being made ends after its current stage, unpublished), then the node and ROS.
    rclpy's own signal handler would shut ROS down first, under the worker's feet."""
    sys.setswitchinterval(GIL_SWITCH_S)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    node = MapAnythingNode()
    package_log = logging.getLogger("mapanything_ros")  # the node reports those events itself
    package_log.addHandler(_DebugHandler(node.get_logger().get_child("python")))
    package_log.propagate = False
    executor = SingleThreadedExecutor()  # measured against the others: bench/bench_executor.py
    executor.add_node(node)
    try:
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except ExternalShutdownException:
        pass
    finally:
        node.shutdown()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
