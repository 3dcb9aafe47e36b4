"""The mapanything_ros node: rclpy messages in and out of a session.Session, which holds every rule
between them (synchronisation, the TF wait queue, keyframes, stamps, bad input: session/session.py).

Here: parameters (settings.SPECS, declared in ros/params.py; checked in on-set, applied in
post-set as a new session snapshot), topics, services and TF outputs (interface.ENDPOINTS /
TF_OUTPUTS; their reference: docs/node.md), timers (the session's tick at RETRY_HZ, diagnostics at
1 Hz, ~/map at map_publish_rate), the arrival clock (the node clock), logging and /diagnostics.
The process (signals, executor, shutdown) is ros/run.py.

Outputs are packed only when someone subscribes, on the pipeline's publish thread as soon as they are made;
~/map on a thread of its own, never on the executor. Bad input is logged (throttled,
session.Reporter) and reported on /diagnostics; nothing is published for it. A backend that cannot
start (e.g. missing weights) or bad parameters leave the node up, reporting the error only. What
the ROS-free modules log through python logging goes to the node's logger at DEBUG (with
tracebacks); the session reports those events itself.
"""

from . import run

if __name__ == "__main__":  # `python -m mapanything_ros.ros.node`: run as the console script does, with the stop
    raise SystemExit(run.node())  # signals handled before the imports below (a Ctrl-C during them was a traceback)

run.numpy_on_one_thread()  # first: numpy's BLAS threads are set as it loads


import copy
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType, JumpThreshold
from rclpy.duration import Duration
from rclpy.event_handler import PublisherEventCallbacks
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.task import Future
from rcl_interfaces.msg import SetParametersResult
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from nav_msgs.msg import OccupancyGrid
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import MarkerArray

from .. import compiled, interface, settings
from ..backends import make_backend, release_device_memory
from ..mapping.regions import MeshUpdates
from ..msg import ReconstructionWindow
from ..srv import MapFile
from ..session import ERROR, WARN, Reporter, Session
from ..sync import LIDAR_SOURCE
from ..units import SEC
from . import dds, diagnostics, params
from .diagnostics import Problems, Rates, make_status
from .images import depth_to_image, float_image
from .marker import mesh_markers
from .messages import make_header, occupancy_msg, rectified_info, tf_msg, window_msg, with_header
from .pointcloud import parts_to_cloud, xyz_to_cloud
from .tf import TF_QOS, TF_STATIC_QOS, make_tf_lookup

RETRY_HZ = 20.0
STOP_TIMEOUT_S = 10.0  # deactivate, cleanup: longest wait for the window in progress (s)
LEVELS = {WARN: diagnostics.WARN, ERROR: diagnostics.ERROR}  # session levels -> DiagnosticStatus levels
# After start-up, another node of the same name is looked for this often, this many times (over
# Fast DDS's default lease duration, 20 s, after which a node that ended unannounced is forgotten).
DUPLICATE_CHECK_S, DUPLICATE_LOOKS = 7.0, 4
# GIL switch interval of the node's process (s). The pipeline's threads and the executor share
# the GIL; at Python's default 5 ms, a callback making many short numpy calls waits up to 5 ms to
# get the GIL back after each one while the pipeline's threads compute (the "convoy effect"): measured with
# the oracle backend, an image callback stalled 2.4 s and the first window took 2.8 s instead of
# 0.1 s, best-effort inputs overflowed and captures went out without their LiDAR depth.
GIL_SWITCH_S = 0.0005
# The node's clock going back this far (tf2's threshold: a bag loop, /clock set back) restarts the window.
CLOCK_BACK = JumpThreshold(min_forward=None, min_backward=Duration(seconds=-1), on_clock_change=False)
MAP_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# A latched output waits this long at most for a subscriber the graph lists to be matched (DDS
# endpoint discovery and the ROS graph arrive apart) before it publishes without it (s).
MATCH_WAIT_S = 2.0
RELIABLE_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
# Services: the default request queue (depth 10) drops the 11th of a burst, whose caller then waits
# for ever; 1000 deep, as ROS's own parameter services (rclpy qos_profile_parameters).
SERVICE_QOS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
# interface.QOS names -> profiles ("input" follows the qos parameter)
QOS_OVERRIDES = QoSOverridingOptions.with_default_policies()
# The outputs' publishers without rclpy's default QoS-event handlers (incompatible QoS and type:
# two waitables each, which the executor walks at every wait: 28 publishers made a wait 2-3x
# dearer, bench/bench_executor.py). A reader with an incompatible QoS is still told by its own
# side (rclpy and rclcpp subscriptions warn by default); the inputs keep theirs.
QUIET = PublisherEventCallbacks(use_default_callbacks=False)
QOS = {"depth5": 5, "depth10": 10, "latched": MAP_QOS, "tf": TF_QOS, "tf_static": TF_STATIC_QOS}


class _MapAnything:
    """The node's behaviour, in the steps of a managed node's life: _setup (parameters, services,
    diagnostics: at construction), _configure (parameters checked, backend loaded, session made,
    topic names and TF: no inputs yet), _activate (subscriptions, publishers and timers; the
    pipeline runs), _deactivate (back to configured: the map and the backend stay), _cleanup (the
    session and the backend released). MapAnythingNode runs them all at construction;
    MapAnythingLifecycleNode at its transitions."""

    def _setup(self):
        # start-up values; the session holds the live snapshot (the lifecycle node's configure takes
        # restart ones set while it is unconfigured)
        self.p, self._declared = params.declare(self, writable=isinstance(self, LifecycleNode))
        self.problems, self.rates = Problems(), Rates()
        self.report = Reporter(self._log)
        self.session = self.runtime = self.fatal = self._saving = self._map_thread = self.tf = None
        self._active, self._io, self._loaded = False, None, False  # _io: the active state's entities
        self._output_jobs = {"map": None, "mesh": None}  # the map thread's ~/map and ~/mesh jobs (_on_output_timer)
        self._burst = {}  # input -> bytes of its first message (the DDS segment check)
        self._tf_lost = {}  # topic -> TF messages lost at the last diagnostics (_check_tf_loss)
        self._wall = Clock(clock_type=ClockType.STEADY_TIME)  # timers tick while a sim clock is paused
        self.diag_pub = self._pub(DiagnosticArray, "diagnostics")
        self.create_timer(1.0, self.publish_diagnostics, clock=self._wall)
        self.create_service(_checked(Trigger, "reset"), self._name("reset"), self._on_reset, qos_profile=SERVICE_QOS)
        # its own reentrant group: while a save is awaited, the node's other callbacks and a second
        # request go on (the default group is mutually exclusive for the whole of a callback)
        files = ReentrantCallbackGroup()
        self.create_service(_checked(MapFile, "save_map"), self._name("save_map"), self._on_save_map,
                            qos_profile=SERVICE_QOS, callback_group=files)
        self.create_service(_checked(MapFile, "load_map"), self._name("load_map"), self._on_load_map,
                            qos_profile=SERVICE_QOS, callback_group=files)
        self._check_names()
        ignored = dds.loaded_profile()[1]  # a profile this Fast DDS does not read (Fast DDS 2 and FASTDDS_...)
        if ignored:
            self._hold(diagnostics.WARN, "dds_profile", f"{ignored} (docs/development.md, DDS stays on this machine)")
        self.add_on_set_parameters_callback(self._check_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._clock_jump = self.get_clock().create_jump_callback(CLOCK_BACK, post_callback=self._on_clock_back)

    def _configure(self):
        """Check the parameters, load the backend, make the session; None, or why it failed."""
        self.p = params.current(self)  # runtime ones may have been set since start-up
        problems = list({**settings.problems(self.p), **self._declared}.values())  # rclpy's refusal, where it refused
        if problems:
            return "bad parameters: " + "; ".join(problems)
        self.cameras = list(self.p["cameras"])
        problems = self._resolve_topics()
        if problems:
            return "bad parameters: " + "; ".join(problems)
        try:
            backend, self.runtime = make_backend(self.p)
        except Exception as err:  # the node stays up to report it (missing weights, bad device, ...)
            return f"backend {self.p['backend']!r} could not start: {err}"
        sim = self.get_parameter("use_sim_time").value
        hint = ("node's sim (/clock) clock: is /clock from the same source as the stamps?" if sim else
                "node's system clock: for a bag or a simulator set use_sim_time:=true and publish /clock "
                "(ros2 bag play --clock); else synchronise the sensor's clock")
        if self.tf is None:  # made once: tf2's Buffer adds a service to the node; refuses all while unconfigured
            self.tf = make_tf_lookup(self, accept=lambda tf, static: self.session is not None and
                                     not self.session.tf_refusal(tf, self._now_ns(), static))
        self.session = Session(self.p, backend, self.tf.lookup, self.report, self._publish, topics=self._topics,
                               clock_hint=hint)
        self._map_thread = ThreadPoolExecutor(1, thread_name_prefix="mapanything-map")
        return None

    def _activate(self):
        """Inputs, outputs and timers; the pipeline runs."""
        self._make_io()
        self.session.start()
        self._active = True
        if self.p["load_map_path"] and not self._loaded:
            self._loaded = True
            self._map_thread.submit(self._load_at_start, self.p["load_map_path"])
        self.get_logger().info(f"running {self.p['backend']} on cameras {self.cameras}, depth {self.p['depth_source']}")
        slow = compiled.warning()
        if slow:
            self.get_logger().warning(slow)

    def _deactivate(self):
        """Inputs, outputs and timers gone, the pipeline stopped (the window in progress ends
        unpublished); the session, its map and the backend stay."""
        self._active = False
        self._stop_session()
        for job in self._output_jobs.values():  # a ~/map or ~/mesh being published ends first
            if job is not None:
                job.exception()
        self._drop_io()

    def _drop_io(self):
        """Destroy the active state's subscriptions, publishers and timers (those made so far)."""
        for entity in self._io or ():
            destroy = {"Subscription": self.destroy_subscription, "Publisher": self.destroy_publisher}
            destroy.get(type(entity).__name__, self.destroy_timer)(entity)
        self._io = None
        self._output_timers = dict.fromkeys(("map", "mesh", "tf"))

    def _stop_session(self):
        if not self.session.stop(timeout=STOP_TIMEOUT_S):
            self.get_logger().warning(f"the window in progress did not end within {STOP_TIMEOUT_S:g} s: it is "
                                      "abandoned (its result is dropped; the next start waits for it to end)")

    def _cleanup(self):
        """The session and the backend released (GPU memory with them: once an abandoned window
        has ended), the dynamic TF too."""
        self._stop_session()
        self._map_thread.shutdown(wait=True)
        self.tf.clear()
        self.session = self.runtime = self._map_thread = None
        self._loaded = False
        release_device_memory()

    # ---------------------------------------------------------------- set-up

    def _why_not(self):
        return self.fatal or "not configured (a managed node: configure it first)"

    def _fail(self, message):
        self.fatal = message
        self._hold(diagnostics.ERROR, "fatal", message)

    def _check_names(self):
        """Warn of parameters given to this node that it does not have (a typo in a parameter file
        passes silently otherwise), and, once discovery has had a moment, of another node with the
        same fully qualified name (parameters and services would reach either one)."""
        unknown = sorted(n for n in self._parameter_overrides
                         if not self.has_parameter(n) and not n.startswith("qos_overrides."))
        if unknown:
            self._hold(diagnostics.WARN, "unknown_parameters",
                       f"unknown parameters ignored: {', '.join(map(settings.unknown, unknown))} (check their spelling: docs/node.md)")
        seen = []

        def look():  # a node that just ended can linger on the graph: said when seen at every look
            seen.append(self.get_node_names_and_namespaces().count((self.get_name(), self.get_namespace())) > 1)
            if len(seen) == DUPLICATE_LOOKS:
                self.destroy_timer(timer)
                if all(seen):
                    self._hold(diagnostics.WARN, "duplicate_name",
                               f"another node named {self.get_fully_qualified_name()} is running: parameters and "
                               "services reach either one, their diagnostics and outputs mix; give each its own "
                               "name or namespace")
        timer = self.create_timer(DUPLICATE_CHECK_S, look, clock=self._wall)

    def _hold(self, level, key, message):
        """A lasting problem of the node's set-up: logged once, reported until the node ends."""
        if level == diagnostics.ERROR:  # one call site per severity (rclpy)
            self.get_logger().error(message)
        else:
            self.get_logger().warning(message)
        self.problems.report("pipeline", key, level, message, hold=None)

    def _name(self, key, camera=None):
        """The name of interface.ENDPOINTS[key] (for `camera`)."""
        return interface.resolve(interface.ENDPOINTS[key].name, self.p, **({} if camera is None else {"ns": camera}))

    def _qos(self, key):
        """A profile of its own for `key`'s topic (QoS overrides are written into the profile given)."""
        qos = interface.ENDPOINTS[key].qos
        return copy.copy(self._input_qos if qos == "input" else QOS[qos])

    # Every topic's QoS can be overridden as ROS 2 allows (read-only parameters
    # qos_overrides.<topic>.<publisher|subscription>.<policy>, e.g. in a parameter file).
    def _pub(self, cls, key, camera=None):
        return self._keep(self.create_publisher(_checked(cls, key), self._name(key, camera), self._qos(key),
                                                qos_overriding_options=QOS_OVERRIDES, event_callbacks=QUIET))

    def _sub(self, cls, key, callback, camera=None):
        return self._keep(self.create_subscription(_checked(cls, key), self._name(key, camera), callback,
                                                   self._qos(key), qos_overriding_options=QOS_OVERRIDES))

    def _timer(self, period_s, callback):
        return self._keep(self.create_timer(period_s, callback, clock=self._wall))

    def _keep(self, entity):
        """An input, output or timer of the active state (destroyed at deactivation)."""
        if self._io is not None:
            self._io.append(entity)
        return entity

    def _enabled(self, key):
        return interface.enabled(interface.ENDPOINTS[key], self.p)

    def _resolve_topics(self):
        """The input topics' resolved names (for messages naming them) and the inputs' QoS; returns
        why a parameter makes no valid topic name (rclpy's reason), one line per parameter."""
        self._input_qos = qos_profile_sensor_data if self.p["qos"] == "sensor_data" else RELIABLE_QOS
        image = "image_compressed" if self._enabled("image_compressed") else "image"
        wanted = {}  # (key, source): (parameter, name)
        for cam in self.cameras:
            wanted["image", cam] = "cameras", self._name(image, cam)
            wanted["info", cam] = "cameras", self._name("camera_info", cam)
            if self._enabled("depth_image"):
                wanted["depth", cam] = "depth_image_topic", self._name("depth_image", cam)
        if self._enabled("lidar"):
            wanted["depth", LIDAR_SOURCE] = "lidar_topic", self._name("lidar")
        self._topics, problems = {}, {}
        for key, (parameter, name) in wanted.items():
            try:
                self._topics[key] = self.resolve_topic_name(name)
            except Exception as err:  # rclpy's InvalidTopicNameException, or its RCLError for names it cannot expand
                problems.setdefault(parameter, f"parameter {parameter}: {name!r} is not a valid topic name "
                                               f"({str(err).splitlines()[0]})")
        return list(problems.values())

    def _make_io(self):
        p = self.p
        self._io = []
        compressed = self._enabled("image_compressed")
        image = "image_compressed" if compressed else "image"
        self.pubs = {}
        for cam in self.cameras:
            self._sub(CompressedImage if compressed else Image, image, lambda m, c=cam: self._on_image(c, m), cam)
            self._sub(CameraInfo, "camera_info", lambda m, c=cam: self.session.camera_info(c, m), cam)
            if self._enabled("depth_image"):
                self._sub(Image, "depth_image", lambda m, c=cam: self._on_depth_image(c, m), cam)
            self.pubs[cam] = {"depth": self._pub(Image, "depth", cam), "confidence": self._pub(Image, "confidence", cam),
                              "camera_info": self._pub(CameraInfo, "camera_info_out", cam),
                              "depth_rect": self._pub(Image, "depth_rect", cam),
                              "camera_info_rect": self._pub(CameraInfo, "camera_info_rect", cam)}
        if self._enabled("lidar"):
            self._sub(PointCloud2, "lidar", self._on_lidar)
        self.points_pub = self._pub(PointCloud2, "points")
        self.map_pub = self._pub(PointCloud2, "map")
        self.occupancy_pub = self._pub(OccupancyGrid, "occupancy")
        self.esdf_pub = self._pub(PointCloud2, "esdf")
        self.mesh_pub = self._pub(MarkerArray, "mesh")
        self.window_pub = self._pub(ReconstructionWindow, "window")
        self.tf_pub = self._pub(TFMessage, "tf_out") if self._enabled("tf_out") else None
        self._timer(1.0 / RETRY_HZ, lambda: self.session.tick(self._now_ns()))
        self._output_jobs = {"map": None, "mesh": None}
        self._sent = {}  # "map", "occupancy", "esdf", "mesh": (its _due() key, subscribers) at its last publication
        self._empty_sent = {}  # "occupancy", "esdf": (frame id, resolution) when the last one sent was an empty grid
        self._never = {}  # "map", …: how many of its subscribers were waited for in vain (_matching)
        self._waiting = {}  # "map", …: since when (monotonic s) it waits for a subscriber to be matched
        self._mesh_updates = MeshUpdates()  # the regions ~/mesh has sent
        self._mesh_whole_at, self._mesh_parts_since = time.monotonic(), False  # its last whole mesh, parts since
        self._output_timers = {"map": None, "mesh": None, "tf": None}
        # ((map_from_world 4x4, parent, child), the pipeline's epoch it holds in: image-only, else None)
        # of the newest window, for tf_output map_odom
        self._correction = None
        live = self.session.values  # rates set since configure (or while inactive) included
        self._set_rate("map", live["map_publish_rate"])
        self._set_rate("mesh", live["mesh_publish_rate"])
        if p["tf_output"] == "map_odom":
            self._set_rate("tf", live["tf_publish_rate"])

    def _set_rate(self, output, rate):
        """(Re)start the timer of "map" (~/map, ~/occupancy, ~/esdf), "mesh" or "tf" (map_odom) at `rate`
        Hz (0: none)."""
        if self._output_timers[output] is not None:
            self.destroy_timer(self._output_timers[output])
            self._io.remove(self._output_timers[output])
            self._output_timers[output] = None
        if rate > 0:
            tick = self._publish_correction if output == "tf" else lambda: self._on_output_timer(output)
            self._output_timers[output] = self._timer(1.0 / rate, tick)

    def _publish_correction(self):
        """map_odom at tf_publish_rate: the newest window's correction, stamped transform_tolerance
        ahead of the node clock (a consumer looking up map -> base_link at its newest odometry stamp
        finds map -> odom on both sides of it), as AMCL and RTAB-Map publish theirs."""
        held = self._correction
        if held is not None and held[1] not in (None, self.session.pipeline.epoch):  # ~/reset, time went back
            if self._correction is held:  # (unless the publish thread put a newer one meanwhile)
                self._correction = None
            return
        if held is not None:
            ahead = int(self.session.values["transform_tolerance"] * SEC)
            self.tf_pub.publish(tf_msg([(*held[0], self._now_ns() + ahead)]))

    def _now_ns(self):
        return self.get_clock().now().nanoseconds

    def _on_clock_back(self, jump):
        """The node's clock jumped back (use_sim_time: a bag loop, /clock set back): the windows in
        flight are of the old timeline (their outputs and TF would be stamped ahead of the new
        clock): the window restarts now, not at the first capture of the new timeline."""
        if self.session is not None:
            self.session.clock_jumped_back(self._now_ns(), -jump.delta.nanoseconds)

    def _log(self, status, key, level, message, log, traceback=None):
        """The session.Reporter's sink: a diagnostic problem, and a log line (with the traceback,
        when there is one) when not throttled."""
        if log:  # one call site per severity: rclpy refuses a severity change at a call site
            if level == ERROR:
                self.get_logger().error(message + (f"\n{traceback}" if traceback else ""))
            else:
                self.get_logger().warning(message)
        self.problems.report(status, key, LEVELS[level], message)

    # ---------------------------------------------------------------- inputs

    def _on_image(self, cam, msg):
        self.rates.tick(cam)
        if cam not in self._burst:
            self._check_burst(cam, len(msg.data))
        self.session.image(cam, msg, self._now_ns())

    def _on_lidar(self, msg):
        self.rates.tick(LIDAR_SOURCE)
        if LIDAR_SOURCE not in self._burst:
            self._check_burst(LIDAR_SOURCE, len(msg.data))
        self.session.lidar(msg, self._now_ns())

    def _check_burst(self, source, nbytes):
        """Once the first message of every input is in: warn when one capture's messages exceed the
        Fast DDS shared-memory segment (best effort loses them between processes), and when
        /dev/shm has less room than one segment."""
        self._burst[source] = nbytes
        inputs = set(self.cameras) | ({LIDAR_SOURCE} if self._enabled("lidar") else set())
        segment = dds.shm_segment()
        if set(self._burst) != inputs or segment is None:
            return
        free = dds.shm_free()
        if free is not None and free < segment[0]:
            self._hold(diagnostics.WARN, "dds_shm",
                       f"/dev/shm has {free / 2**20:.1f} MiB free, less than one Fast DDS shared-memory segment "
                       f"({segment[0] / 2**20:.1f} MiB, {segment[1]}), which every process maps there: large "
                       "messages between processes may fail; give /dev/shm more room (Docker: --shm-size) or "
                       "lower <segment_size> (docs/development.md, DDS stays on this machine)")
        if sum(self._burst.values()) <= segment[0]:
            return
        sizes = ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in self._burst.items())
        fix = (f"set {dds.OLD} to the profile" if dds.loaded_profile()[1] else "raise <segment_size> in the profile")
        self._hold(diagnostics.WARN, "dds_segment",
                   f"one capture's messages ({sum(self._burst.values()) / 2**20:.1f} MiB: {sizes}) exceed the Fast DDS "
                   f"shared-memory segment ({segment[0] / 2**20:.1f} MiB, {segment[1]}): best-effort inputs from "
                   f"other processes on this computer will be lost; {fix} "
                   "(docs/development.md, DDS stays on this machine)")

    def _on_depth_image(self, cam, msg):
        self.session.depth_image(cam, msg, self._now_ns())

    # ---------------------------------------------------------------- outputs (pipeline publish thread)

    def _publish(self, out):
        """Publish a session.WindowOutput: TF first (what the others are looked up through), then
        ~/points (it needs no native-resolution depth), each camera's depth, made (when wanted) and
        published in turn, and ~/window. Nothing once deactivated (a window that ends after it)."""
        if not self._active:
            return
        if self.tf_pub is not None and out.transforms:
            if out.values["tf_output"] == "map_odom":  # re-published by its timer
                first = self._correction is None
                # an image-only window's correction holds in its chain frame: until the chain restarts
                self._correction = (out.transforms[0][:3], None if out.values["use_poses"] else out.result.epoch)
                if first:
                    self._publish_correction()
            else:
                self.tf_pub.publish(tf_msg(out.transforms))
        if self.points_pub.get_subscription_count():
            self.points_pub.publish(parts_to_cloud(out.point_parts(), make_header(out.frame_id, out.stamp_ns)))
        for cam in out.cameras:
            header = make_header(cam.frame_id, cam.stamp_ns)
            pubs = self.pubs[cam.camera]
            if pubs["depth"].get_subscription_count():
                pubs["depth"].publish(depth_to_image(out.view(cam).depth, header))
            if pubs["confidence"].get_subscription_count():
                pubs["confidence"].publish(float_image(out.view(cam).confidence, header))
            if pubs["camera_info"].get_subscription_count():
                pubs["camera_info"].publish(with_header(cam.info, header))
            if pubs["depth_rect"].get_subscription_count() or pubs["camera_info_rect"].get_subscription_count():
                depth, rect = out.rectified(cam)
                pubs["depth_rect"].publish(depth_to_image(depth, header))
                pubs["camera_info_rect"].publish(rectified_info(cam.info, rect, header))
        if self.window_pub.get_subscription_count():
            self.window_pub.publish(window_msg(out))

    def _on_output_timer(self, output):
        """Hand "map" (~/map, ~/occupancy, ~/esdf) or "mesh" to the map thread when one of its topics
        is subscribed and has not published the map as it is now, and the previous job is out. The
        topics are latched: a map that did not change is not made again (a robot standing still
        with a large map costs nothing). Nothing once stopped (the map thread is shut down: a stop
        still spins to answer a save, run.answer_pending)."""
        if not self._active or (self._output_jobs[output] is not None and not self._output_jobs[output].done()):
            return
        topics = ("map", "occupancy", "esdf") if output == "map" else ("mesh",)
        due = {topic: key for topic in topics if (key := self._due(topic)) is not None}
        if due:
            self._output_jobs[output] = self._map_thread.submit(self.publish_mesh if output == "mesh"
                                                                else self.publish_map, due)

    def _due(self, topic):
        """(key, subscribers: their endpoint GIDs) of what `topic` would publish now (key: the map's
        version, and for ~/occupancy and ~/esdf their parameters), or None when it is not
        subscribed, or published that already and no subscriber joined since (a late volatile
        subscriber, as RViz's displays are by default, would otherwise never get a map that stopped
        changing; ~/mesh sends only what changed, so a newcomer needs all of it), or for ~/mesh when
        its refresh is due. Subscribers are told apart by GID: one that leaves as another joins
        counts. A subscriber the graph lists before DDS has matched it would not get what is sent
        and be counted as served: None while one is not matched yet, for MATCH_WAIT_S at most."""
        publisher = getattr(self, f"{topic}_pub")
        matched = publisher.get_subscription_count()
        subscribers = frozenset(bytes(info.endpoint_gid) for info in
                                self.get_subscriptions_info_by_topic(publisher.topic_name))
        unmatched = max(0, len(subscribers) - matched)  # (the graph may drop a leaving reader first)
        if not matched:  # nothing to send; readers waited for in vain may have left
            self._never[topic] = min(self._never.get(topic, 0), unmatched)
            return None
        if self._matching(topic, unmatched):
            return None
        if topic == "mesh" and self._mesh_refresh_due():
            self._sent.pop("mesh", None)  # all of it again (publish_mesh)
        key = self._key(topic, self.session.pipeline.map_version, self.session.values)
        sent, seen = self._sent.get(topic, (None, frozenset()))
        return None if sent == key and subscribers <= seen else (key, subscribers)

    def _matching(self, topic, unmatched):
        """Whether to wait for subscribers of `topic` the graph lists and DDS has not matched:
        while more are unmatched than were once waited for in vain (readers that never match, of
        QoS the publisher does not offer or of another type: the graph lists them too), for
        MATCH_WAIT_S at most from when the wait began (subscribers coming and going meanwhile do
        not prolong it)."""
        now = time.monotonic()
        if unmatched <= self._never.get(topic, 0):
            self._never[topic] = unmatched  # (one of them left)
            self._waiting.pop(topic, None)
            return False
        if now - self._waiting.setdefault(topic, now) < MATCH_WAIT_S:
            return True
        self._never[topic] = unmatched  # waited in vain: these never match
        del self._waiting[topic]
        return False

    @staticmethod
    def _key(topic, version, values):
        """What `topic` publishes of the map at `version` under the parameters `values`: the
        version, and for ~/occupancy and ~/esdf the parameters that shape them."""
        if topic not in ("occupancy", "esdf"):
            return version
        names = ("occupancy_min_height", "occupancy_max_height", "occupancy_resolution")
        names += ("esdf_max_distance",) if topic == "esdf" else ()
        return (version, *(values[name] for name in names))

    def publish_mesh(self, due):
        """Make and publish ~/mesh (serialized here: ros/marker.py): the regions that changed since
        its last publication, or all of them after a clear when a subscriber joined since (it holds
        nothing yet) or the map's storage changed; `due`: {"mesh": _due()'s}."""
        try:
            mesh, frame_id, stamp = self.session.mesh(self._now_ns())
            seen = self._sent.get("mesh", (None, frozenset()))[1]
            update = self._mesh_updates.update(mesh, everything=not due["mesh"][1] <= seen)
            if update != (False, [], []):  # (an empty array would replace one not yet delivered for nothing)
                self.mesh_pub.publish(mesh_markers(mesh, update, frame_id, stamp))
            if update[0]:
                self._mesh_whole_at, self._mesh_parts_since = time.monotonic(), False
            else:
                self._mesh_parts_since |= bool(update[1] or update[2])
            self._sent["mesh"] = due["mesh"]
        except Exception as err:  # a bug: said, and the next tick sends everything again
            self._mesh_updates.reset()
            self.report.exception("pipeline", "mesh", "publishing ~/mesh failed (a bug)", err)

    def _mesh_refresh_due(self):
        """Whether ~/mesh sent regions since it last sent all of them, mesh_refresh_period ago or
        more: a display that missed one of those arrays (on a slow link a newer array replaces one
        not yet received: the topic keeps the last only) is whole again after the next."""
        period = self.session.values["mesh_refresh_period"]
        return self._mesh_parts_since and period > 0 and time.monotonic() - self._mesh_whole_at >= period

    def publish_map(self, due):
        """Make and publish ~/map, ~/occupancy and ~/esdf, those in `due` ({topic: _due()'s}), each one
        consistent snapshot (~/esdf the distance field of ~/occupancy's grid, both under one
        parameter snapshot). What is recorded as sent is what was made: the parameters read here
        (they may have changed since _due) and the map's version read before its copy is taken
        (the copy holds that version or a newer one, so a change is never marked sent unseen)."""
        values, version = self.session.values, self.session.pipeline.map_version
        if "map" in due:
            try:
                snap, frame_id, stamp = self.session.map(self._now_ns())
                self.map_pub.publish(xyz_to_cloud(snap.points, make_header(frame_id, stamp), snap.colors,
                                                  snap.confidence))
                self._sent["map"] = (version, due["map"][1])
            except Exception as err:  # a bug: said, and the next tick tries again
                self.report.exception("pipeline", "map", "publishing ~/map failed (a bug)", err)
        grids = [topic for topic in ("occupancy", "esdf") if topic in due]  # one grid for both
        if grids:
            names = " and ".join(f"~/{topic}" for topic in grids)
            try:
                empty = None
                try:
                    grid, frame_id, stamp = self.session.occupancy(self._now_ns(), values)
                except ValueError as err:  # none to give: an empty grid replaces the latched one, so that
                    # no subscriber (a late one too: a Nav2 layer starting) gets a cleared map's grid
                    self.report("pipeline", "occupancy", WARN, f"{names} published empty: {err}")
                    grid, frame_id, stamp = self.session.no_grid(self._now_ns(), values)
                    empty = (frame_id, grid.resolution)
                # An empty grid every subscriber has already is not sent again at each map change (a Nav2
                # static layer takes each grid as a new map).
                send = [topic for topic in grids if empty is None or self._empty_sent.get(topic) != empty
                        or not due[topic][1] <= self._sent.get(topic, (None, frozenset()))[1]]
                for topic in send:  # unknown until it is sent: a failure midway leaves nothing to skip by
                    self._empty_sent.pop(topic, None)
                header = make_header(frame_id, stamp)
                if "occupancy" in send:
                    self.occupancy_pub.publish(occupancy_msg(grid, header))
                if "esdf" in send:
                    field, z = self.session.esdf(grid, values)
                    xyz, distance = field.points(z)
                    self.esdf_pub.publish(xyz_to_cloud(xyz, header, confidence=distance, scalar_name="distance"))
            except Exception as err:  # a bug: said, and the next tick tries again
                self.report.exception("pipeline", "occupancy", f"publishing {names} failed (a bug)", err)
                return
            self._sent.update({topic: (self._key(topic, version, values), due[topic][1]) for topic in grids})
            self._empty_sent.update(dict.fromkeys(grids, empty))

    # ---------------------------------------------------------------- services, parameters

    def _on_reset(self, request, response):
        if self.session is None:
            response.success, response.message = False, f"not running: {self._why_not()}"
            return response
        self.session.reset()
        self.tf.clear()
        response.success, response.message = True, ("window, map, pending captures and buffered TF (dynamic "
                                                     "transforms; static ones stay) cleared")
        self.get_logger().info(f"~/reset: {response.message}")
        return response

    @property
    def map_file_busy(self):
        """Whether a ~/save_map or ~/load_map request is in progress (not answered yet)."""
        return self._saving is not None

    async def _on_save_map(self, request, response):
        return await self._on_map_file("save", request, response)

    async def _on_load_map(self, request, response):
        return await self._on_map_file("load", request, response)

    async def _on_map_file(self, action, request, response):
        """~/save_map and ~/load_map: the work runs on the map thread (seconds for a large map; the
        executor goes on meanwhile) and the answer comes when it is done. One at a time: a request
        while another runs is refused at once, with the reason."""
        if self.session is None:
            response.success, response.message = False, f"not running: {self._why_not()}"
            return response
        if self._saving is not None:
            response.success, response.message = False, f"busy with {self._saving}: call again when it ends"
            return response
        path = request.path or self.session.values["save_map_path"]
        work = self.session.save_map if action == "save" else self.session.load_map
        self._saving, done = f"a {action} of {path}", Future()
        job = self._map_thread.submit(work, path, self.p["save_map_directory"])
        job.add_done_callback(lambda _: done.set_result(None))
        try:
            await done  # resumed by the executor once the map thread is done
            n, path = job.result()
            response.success = True
            response.message = f"wrote {n} surface points and the volume to {path}" if action == "save" else (
                f"loaded {n} blocks from {path}; mapping goes on into it")
            self.get_logger().info(f"~/{action}_map: {response.message}")
        except (OSError, ValueError) as err:
            response.success, response.message = False, f"could not {action} the map: {err}"
        except Exception as err:  # a bug: said, and the node goes on
            self.report.exception("pipeline", f"{action}_map", f"~/{action}_map failed (a bug)", err)
            response.success, response.message = False, f"could not {action} the map (a bug, see the log): {err!r}"
        finally:
            self._saving = None
        return response

    def _load_at_start(self, path):
        """load_map_path: the map to map on from (a failure is reported for as long as the node runs)."""
        try:
            n, path = self.session.load_map(path, self.p["save_map_directory"])
            self.get_logger().info(f"loaded {n} map blocks from {path} (load_map_path)")
        except (OSError, ValueError) as err:
            self._hold(diagnostics.ERROR, "load_map", f"load_map_path: could not load the map, mapping from "
                       f"nothing: {err}")
        except Exception as err:  # a bug: said (on the map thread it would end unseen in its future)
            self._hold(diagnostics.ERROR, "load_map", f"load_map_path: could not load the map (a bug, see the log), "
                       f"mapping from nothing: {err!r}")
            self.get_logger().error(f"load_map_path:\n{traceback.format_exc()}")

    def _check_parameters(self, parameters):
        """on-set: refuse wrong types and values with a readable reason (params.refusal), every
        change once the plain node failed to start (it starts once: nothing would take it), and the
        lifecycle node's restart parameters once configured (configure takes them)."""
        if self.fatal is not None and not isinstance(self, LifecycleNode):
            return SetParametersResult(successful=False, reason=(
                f"the node is not running ({self.fatal}): start it again with the value "
                "(-p name:=value), or run the lifecycle node, whose configure takes changes"))
        fixed = [p.name for p in parameters if p.name in settings.SPECS and settings.SPECS[p.name].read_only]
        if fixed and self.session is not None:  # (the plain node's are read-only: rclpy refused them)
            return SetParametersResult(successful=False, reason=(
                f"{', '.join(fixed)}: taken at configure, and the node is configured: `ros2 lifecycle set "
                f"{self.get_fully_qualified_name()} cleanup` (after deactivate), set it, then configure"))
        for param in parameters:
            refused = params.refusal(param)
            if refused is not None:
                return refused
        return SetParametersResult(successful=True)

    def _apply_parameters(self, parameters):
        """post-set: a new session snapshot with the changes (unconfigured: taken at configure)."""
        changes = {param.name: param.value for param in parameters if param.name in settings.SPECS}
        for name in changes:
            self._declared.pop(name, None)  # a start-up value refused, now set right
        if self.session is None:
            return
        if changes:
            self.session.configure({**self.session.values, **changes})
        if not self._active:
            return
        for output in ("map", "mesh"):
            if f"{output}_publish_rate" in changes:
                self._set_rate(output, changes[f"{output}_publish_rate"])
        if "tf_publish_rate" in changes and self.p["tf_output"] == "map_odom":
            self._set_rate("tf", changes["tf_publish_rate"])

    # ---------------------------------------------------------------- diagnostics

    def publish_diagnostics(self):
        """Publish one DiagnosticArray (called at 1 Hz): the session's counters, rates, problems."""
        values = {"pipeline": {"backend": self.p["backend"], **(self.runtime.describe() if self.runtime else {})}}
        if self.session is not None:
            self.session.check_silence(self._now_ns())
            for status, counters in self.session.status_values().items():
                values.setdefault(status, {}).update(counters)
            for cam in self.cameras:
                values[f"camera {cam}"].update(topic=self._topics["image", cam], rate_hz=self.rates.rate(cam))
            if self.p["depth_source"] == "lidar":
                values["depth"]["lidar_rate_hz"] = self.rates.rate(LIDAR_SOURCE)
            values["tf"].update(self._check_tf_loss())
        # Named after the node's full name (instances in two namespaces stay apart in an aggregator);
        # the hardware is the sensor a status is about (a camera's image topic, the LiDAR's), else
        # the device the backend runs on.
        device = values["pipeline"].get("device", "cpu")
        sensors = {f"camera {cam}": self._topics["image", cam] for cam in self.cameras} if self.session else {}
        if self.session and ("depth", LIDAR_SOURCE) in self._topics:
            sensors["depth"] = self._topics["depth", LIDAR_SOURCE]
        prefix = f"{self.get_fully_qualified_name()}: "
        msg = DiagnosticArray(status=[make_status(prefix + name, sensors.get(name, device),
                                                  self.problems.active(name), v) for name, v in values.items()])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)

    def _check_tf_loss(self):
        """The TF lookup's lost-message counters for /diagnostics, and a WARN when more were lost
        since the last call."""
        if self.tf.uncounted:
            return dict.fromkeys(("lost_tf_messages", "lost_tf_static_messages"), f"not counted: {self.tf.uncounted}")
        for topic, lost in self.tf.lost.items():
            new = lost - self._tf_lost.get(topic, 0)
            self._tf_lost[topic] = lost
            if new > 0:
                name, depth = self.tf.queues[topic]
                self.report("tf", f"lost {topic}", WARN,
                            f"{new} {name} messages lost before the node read them since the last check, {lost} "
                            f"since the start (its subscription keeps the last {depth}): "
                            + ("TF is interpolated across the gaps, and window poses may be off" if topic == "/tf" else
                               "static transforms may be missing")
                            + f"; raise qos_overrides.{name}.subscription.depth or publish TF less often")
        return {"lost_tf_messages": self.tf.lost["/tf"], "lost_tf_static_messages": self.tf.lost["/tf_static"]}

    def shutdown(self, timeout=10.0):
        """Stop the pipeline's threads (the job running ends after its current stage; see
        Pipeline.stop) and the node's map thread (publication, save, load); True when the pipeline's
        ended within `timeout` seconds."""
        if self.session is None:
            return True
        self._active = False
        stopped = self.session.stop(timeout=timeout)
        self._map_thread.shutdown(wait=stopped)
        return stopped


class MapAnythingLifecycleNode(_MapAnything, LifecycleNode):
    """The node as a managed (lifecycle) node, for Nav2-style bring-up (`mapanything_lifecycle_node`;
    `lifecycle:=true` in the launch files): configure = check the parameters and load the model (a
    failure, e.g. missing weights, fails the transition with the reason), activate = subscribe,
    publish and run, deactivate = stop inputs and outputs (map and model kept), cleanup = release
    the model (and its GPU memory), shutdown = end. Parameters and the services are there from
    construction; ~/reset, ~/save_map and ~/load_map answer once configured. when_finalized: called
    after the shutdown transition (the process ends then: ros/run.py)."""

    def __init__(self, name="mapanything", when_finalized=lambda: None, **kwargs):
        super().__init__(name, **kwargs)
        self._when_finalized = when_finalized
        self._setup()

    def _transition(self, name, step):
        """Run a transition's step; an exception (rclpy drops it unsaid) is logged and fails it,
        which takes the node through on_error."""
        try:
            step()
        except Exception:
            self.get_logger().error(f"{name} failed:\n{traceback.format_exc()}")
            return TransitionCallbackReturn.ERROR
        return TransitionCallbackReturn.SUCCESS

    def on_configure(self, state):
        try:
            failure = self._configure()
        except Exception as err:  # logged (rclpy drops it unsaid); on_error releases what was made
            self.get_logger().error(f"configure failed:\n{traceback.format_exc()}")
            self.fatal = f"configure failed (a bug, see the log): {err!r}"
            self.problems.report("pipeline", "fatal", diagnostics.ERROR, self.fatal, hold=None)
            return TransitionCallbackReturn.ERROR
        if failure is not None:
            self.fatal = failure
            self.get_logger().error(f"configure failed: {failure}")
            self.problems.report("pipeline", "fatal", diagnostics.ERROR, failure, hold=None)
            return TransitionCallbackReturn.FAILURE
        self.fatal = None
        self.problems.clear("pipeline", "fatal")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state):
        return self._transition("activate", self._activate)

    def on_deactivate(self, state):
        return self._transition("deactivate", self._deactivate)

    def on_cleanup(self, state):
        return self._transition("cleanup", self._cleanup)

    def on_shutdown(self, state):
        result = self._transition("shutdown", self._release)
        self._when_finalized()
        return result

    def on_error(self, state):
        """After a failed step: everything released, back to unconfigured (configure may be tried again)."""
        self.get_logger().error(f"error while {state.label}: inputs, outputs and the session are released")
        return self._transition("error recovery", self._release)

    def _release(self):
        """Back to unconfigured from any state (shutdown, error recovery): as deactivate (a ~/map or
        ~/mesh being published ends before its publisher goes: it raised InvalidHandle when the
        shutdown came from active), then cleanup."""
        self._active = False
        if self._io is not None:
            if self.session is not None:
                self._deactivate()
            else:
                self._drop_io()
        if self.session is not None:
            self._cleanup()


class MapAnythingNode(_MapAnything, Node):
    """See the module doc: configured and active from construction (or reporting why it cannot
    be). `parameter_overrides` etc. go to rclpy's Node."""

    def __init__(self, name="mapanything", **kwargs):
        super().__init__(name, **kwargs)
        self._setup()
        failure = self._configure()
        if failure is not None:
            self._fail(failure)
            return
        self._activate()


def _checked(cls, key):
    """`cls`, the message or service class of interface.ENDPOINTS[key] (whose type the docs show)."""
    package, kind = cls.__module__.split(".")[:2]
    if f"{package}/{kind}/{cls.__name__}" != interface.ENDPOINTS[key].type:
        raise TypeError(f"{key}: {cls.__name__} is not {interface.ENDPOINTS[key].type}")
    return cls

