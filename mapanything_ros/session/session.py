"""Session: everything between received messages and published outputs, ROS-free, one copy.

The live node (ros/node.py) and the offline replay (replay.py) are thin translators onto it: they
hand it messages (rclpy or rosbags objects: decode.py reads the fields both have) with the time
they arrived, and turn each WindowOutput into messages or files. Every input rule lives here:

- Images: dropped (reported) before a valid CameraInfo, without header.frame_id, stamped 0 (TF
  time 0 means "the latest pose"; depth images and LiDAR sweeps too), or undecodable as far as can be told without decoding (the
  decoding waits until the image is a keyframe's, on the pipeline's prepare thread). Stamps more than
  CLOCK_SKEW_S from the arrival clock are reported.
- sync.CaptureSync groups images and depth into captures. Depth never stalls the cameras: a
  capture takes the LiDAR sweep within depth_tolerance that is already buffered (its points are
  carried to the image time through TF), and waits, at most DEPTH_WAIT_S (session.config) of message time,
  only for a sweep when none is, or for a registered depth image nearer its stamp. Message time
  between messages is the arrival clock less the smallest lag (arrival - stamp) of the last
  LAG_IMAGES images: the inputs' latency, or the offset of a foreign clock.
- Poses and depth come from TF without ever waiting: world_frame <- image frame_id at each image
  stamp, camera <- LiDAR extrinsics, the LiDAR's poses over its sweep (FrameBuilder). A capture
  whose transforms are not there yet waits in a small ordered queue (PendingCaptures, retried at
  every input and tick) and is dropped once it waited `tf_timeout` of the arrival clock (or goes
  out without its LiDAR sweep when only the sweep's transforms are missing).
- Time jumping back (sync resets) clears the queue and is reported once; captures whose cameras
  repeat a frame_id are dropped and reported; a depth source that misses DEPTH_MISSING_RUN
  captures in a row, silent cameras and depth sources (check_silence) are reported.

Every admitted frame carries a Keyframe record (Frame.meta: camera, CameraInfo, TF pose at its
image stamp) for exactly as long as it is in the window. Threads: the caller's input thread
(inputs, tick, configure, reset: one lock) and the pipeline's threads (preparation, inference, the
outputs on its publish thread, the map). The parameters are
an immutable snapshot: `configure` makes a new one, and each window is made and published
entirely with the snapshot in force when its keyframe was admitted (WindowOutput.values).

Stamps of the outputs (one per output, what it shows): a camera's depth, confidence and
CameraInfo carry its image stamp; the window (points, window message, map_odom) carries the
image stamp of its reference view, the view its poses are anchored at; camera_refined carries
each camera's image stamp; the map the stamp of the newest window inserted into it.
"""

import math
import os
import re
import shutil
import stat
import tempfile
import threading
import time
import zipfile
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np

from .. import decode, interface
from ..geometry import se3_compose, se3_inverse
from ..geometry.depth import MAX_DEPTH_M
from ..geometry.rectify import rectification, rectify_depth
from ..geometry.tf_tree import TransformError, frame_id_problem
from ..mapping.chain import CHAIN_FRAME
from ..mapping.completion import MAX_SCALE
from ..mapping.distance import distance_slice
from ..mapping.grid import Grid2D
from ..mapping.ply import PLY_MAGIC, write_mesh_ply, write_ply
from ..pipeline import Pipeline
from ..sync import LIDAR_SOURCE
from ..units import SEC
from .config import DEPTH_WAIT_S, camera_timeout_ns, make_sync, pipeline_config, slop_ns
from .inputs import CameraImage, Cloud, DepthImage, FrameBuilder, PendingCaptures, image_decoder
from .report import ERROR, WARN

PENDING_MAX = 10  # captures waiting for TF
NO_INFO_GRACE = 10  # images dropped for want of a first CameraInfo before that is reported
INFO_HISTORY = 32  # CameraInfos kept per camera by stamp, to pair each image with its own (_paired)
CLOCK_SKEW_S = 10.0  # image stamps further than this from the arrival clock are reported
LAG_IMAGES = 50  # images over which the arrival clock's lead on the stamps is measured
DEPTH_MISSING_RUN = 10  # captures in a row without a depth source's data (while it publishes) before that is reported
UNSTAMPED = "stamped 0 (header.stamp not set): dropped, since TF time 0 means 'the latest pose'"
DROPS = ("tf_timeout", "queue", "bad_input", "no_camera_info", "frame_id")
MAP_SUFFIX = ".npz"
MESH_SUFFIX = ".mesh.ply"  # the mesh save_map writes beside the volume
NPZ_MAGIC = b"PK\x03\x04"  # a .npz is a zip archive
UMASK = os.umask(0o022)  # the process's, read once at import (os.umask can only read it by setting it)
os.umask(UMASK)


@dataclass(frozen=True, eq=False)
class CameraView:
    """One published view of a window (a camera of its newest capture): index in the
    reconstruction, camera namespace, optical frame id, image stamp (ns), CameraInfo message."""

    index: int
    camera: str
    frame_id: str
    stamp_ns: int
    info: object


@dataclass(frozen=True, eq=False)
class WindowOutput:
    """What is published for one window.

    sequence: 1, 2, ... per published window; frame_id: the frame of its poses and points
    (world_frame, or map_frame image-only); stamp_ns: the window's stamp (module doc); result:
    the pipeline.Result; values: the parameter snapshot it was made with; cameras: the
    CameraViews of its newest capture; transforms: the TF outputs, (parent_from_child 4x4,
    parent, child, stamp_ns)."""

    sequence: int
    frame_id: str
    stamp_ns: int
    result: object
    values: MappingProxyType
    cameras: tuple
    transforms: tuple

    @property
    def reconstruction(self):
        return self.result.reconstruction

    def points(self):
        """(xyz, rgb, confidence) of points_scope: the newest capture's views or the whole window."""
        return self.reconstruction.cloud(self._scope())

    def point_parts(self):
        """points() view by view, not concatenated (Reconstruction.cloud_parts): what ~/points packs."""
        return self.reconstruction.cloud_parts(self._scope())

    def _scope(self):
        """The view indices of points_scope (None: the newest capture's, the selected views)."""
        return None if self.values["points_scope"] == "newest" else range(len(self.reconstruction.frames))

    def view(self, camera):
        """The native-resolution mapping view (depth, confidence, world_from_camera) of a CameraView."""
        return self.reconstruction.view(camera.index)

    def rectified(self, camera):
        """(z-depth (H, W) float32 metres NaN = none, geometry.rectify.Rectification) of a CameraView
        on the rectified pinhole camera of its CameraInfo (P, R): what `depth_rect` publishes."""
        rect = rectification(self.reconstruction.frames[camera.index].camera, camera.info.p, camera.info.r)
        return rectify_depth(self.view(camera).depth, rect), rect

    def views(self):
        """Per view in model order: (image stamp ns, frame id, refined world_from_camera 4x4,
        used intrinsics, used pose, used depth)."""
        recon = self.reconstruction
        return [(f.stamp_ns, f.frame_id, pose, "ray_directions_cam" in passed, "camera_pose_quats" in passed,
                 "depth_along_ray" in passed) for f, pose, passed in zip(recon.frames, recon.poses, recon.batch.passed)]

    @property
    def metric_inputs(self):
        batch = self.result.config.batch
        return bool(batch.metric_poses and batch.metric_depth)


class Session:
    """See the module doc.

    values: parameters (settings.SPECS names, `cameras` set); backend: a backends.Backend;
    lookup(target, source, stamp_ns): the TF lookup (4x4, raising TransformError); report: a
    report.Reporter; emit(WindowOutput): the outputs, called on the publish thread (threaded) or in the
    input call (threaded=False: each keyframe's window is made before the call returns);
    topics: {("image"|"info", camera) or ("depth", source): name} for messages; clock_hint: the
    arrival clock's name and what to do about a stamp far from it.
    """

    def __init__(self, values, backend, lookup, report, emit, threaded=True, topics=None, clock_hint="clock"):
        self._values = MappingProxyType(dict(values))
        self._esdf = None  # the distance field made last (esdf)
        self.cameras = list(values["cameras"])
        self.report, self.emit, self.threaded = report, emit, threaded
        self.topics = topics or {}
        self.clock_hint = clock_hint
        self.drops = dict.fromkeys(DROPS, 0)
        self.images = dict.fromkeys(self.cameras, 0)  # received per camera
        self.infos = {}  # camera -> (CameraModel, CameraInfo message) or None after an invalid one
        self._info_at = {}  # camera -> OrderedDict {stamp ns: (CameraModel, CameraInfo message)}, the last valid ones
        self.sync = make_sync(values)
        self.builder = FrameBuilder(lookup)
        self.pipeline = Pipeline(pipeline_config(values), backend)
        self.pipeline.on_result(self._on_result)
        self.pipeline.on_error(lambda seq, err: report("pipeline", "window", ERROR, f"window {seq} failed: {err}"))
        self.pipeline.on_publish_error(
            lambda seq, err: report.exception("pipeline", "publish", f"publishing window {seq} failed (a bug; "
                                              "the map is updated all the same)", err))
        self._lock = threading.RLock()  # inputs, the TF queue, configure, reset
        self._pending = PendingCaptures(PENDING_MAX, self.drops)
        self._lags = deque(maxlen=LAG_IMAGES)
        self._missing_run = {}  # depth source -> (captures in a row without it, its messages received before them)
        self._depth_arrival = {}  # depth source -> arrival clock (ns) of its newest message handed to the sync
        self._ignored = Counter()  # depth source -> its messages attached to captures but not used
        self._unplaced_since = None  # arrival clock (ns) since when sweeps keep captures from being built
        self._after_sync_reset = False
        self._published = 0  # publish thread only
        self._overflows = self._outside = 0  # pipeline map_overflows, map_outside already reported
        self._matching = None  # (images dropped unmatched, captures, images per camera) at the last check_silence
        self._frames = 0  # frames submitted (keyframes or not)

    @property
    def values(self):
        """The parameter snapshot in force (read-only mapping)."""
        return self._values

    def start(self):
        if self.threaded:
            self.pipeline.start()

    def stop(self, timeout=None):
        """Stop the pipeline's threads (see Pipeline.stop); True when they ended within `timeout` s."""
        return self.pipeline.stop(timeout)

    # ---------------------------------------------------------------- inputs

    def bad_input(self, status, key, level, message):
        """Report bad input (dropped, counted in drops["bad_input"]); translators call it for what
        they parse themselves (the replay's TF)."""
        with self._lock:
            self.drops["bad_input"] += 1
        self.report(status, key, level, message)

    def _topic(self, kind, name):
        return self.topics.get((kind, name), f"{name} {kind}")

    def camera_info(self, cam, msg):
        """A CameraInfo of camera namespace `cam`."""
        try:
            model = decode.camera_info_to_model(msg)
        except ValueError as err:
            with self._lock:
                self.infos[cam] = None
                self._info_at.get(cam, {}).pop(decode.stamp_ns(msg.header), None)
            self.bad_input(f"camera {cam}", "camera_info", ERROR, f"{self._topic('info', cam)}: invalid calibration: {err}")
            return
        with self._lock:
            self.infos[cam] = (model, msg)
            at = self._info_at.setdefault(cam, OrderedDict())
            at[decode.stamp_ns(msg.header)] = (model, msg)
            while len(at) > INFO_HISTORY:
                at.popitem(last=False)

    def image(self, cam, msg, now_ns):
        """An Image or CompressedImage of camera `cam` arriving at `now_ns` (the arrival clock)."""
        topic = self._topic("image", cam)
        with self._lock:
            self.images[cam] += 1
            info = self.infos.get(cam)
            if info is None:  # an image before its first CameraInfo is normal at start-up: reported when it lasts
                self.drops["no_camera_info"] += 1
                if cam in self.infos or self.drops["no_camera_info"] > NO_INFO_GRACE:  # (counted above only)
                    self.report(f"camera {cam}", "image_without_info", ERROR if cam in self.infos else WARN,
                                f"{topic}: image dropped, no valid CameraInfo on {self._topic('info', cam)}")
                return
            if not msg.header.frame_id:
                self.bad_input(f"camera {cam}", "image", ERROR, f"{topic}: image without header.frame_id (needed for TF)")
                return
            stamp = decode.stamp_ns(msg.header)
            if stamp == 0:
                self.bad_input(f"camera {cam}", "stamp", ERROR, f"{topic}: image {UNSTAMPED}")
                return
            self._check_clock(topic, stamp, now_ns)
            try:  # checks what needs no decoding; the decoding waits until the image is a keyframe's
                image = image_decoder(msg, info[0], topic)
            except ValueError as err:
                self.bad_input(f"camera {cam}", "image", ERROR, str(err))
                return
            payload = CameraImage(image, info[0], msg.header.frame_id, stamp, cam, info[1])
            self._feed(self.sync.add_image(cam, stamp, payload), now_ns)
            if now_ns:
                self._note_lag(now_ns - stamp)

    def lidar(self, msg, now_ns):
        """A LiDAR PointCloud2 arriving at `now_ns`."""
        topic = self._topic("depth", LIDAR_SOURCE)
        try:
            points, times, far, untimed = decode.read_cloud(msg, max_abs=MAX_DEPTH_M)
        except ValueError as err:
            self.bad_input("depth", "lidar", ERROR, f"{topic}: {err}")
            return
        if far:
            self.report("depth", "lidar_far", WARN, f"{topic}: {far} of {len(points) + far + untimed} points more than "
                        f"{MAX_DEPTH_M / 1000:,.0f} km out (garbage, not a reading) ignored")
        if untimed:
            self.report("depth", "lidar_untimed", WARN, f"{topic}: {untimed} of {len(points) + far + untimed} points "
                        "with a NaN or infinite time ignored (their place in the sweep is unknown)")
        if len(points) == 0:
            self.bad_input("depth", "lidar_empty", WARN, f"{topic}: empty or all-NaN cloud ignored")
            return
        stamp = decode.stamp_ns(msg.header)
        if stamp == 0:
            self.bad_input("depth", "lidar_stamp", ERROR, f"{topic}: sweep {UNSTAMPED}")
            return
        frame = msg.header.frame_id
        if frame_id_problem(frame):  # (a capture would wait for TF that can never place it)
            self.bad_input("depth", "lidar_frame", ERROR, f"{topic}: sweep " + (
                f"frame_id {frame!r} starts with '/', which tf2 refuses (ROS 2 frame ids have none): fix the driver"
                if frame else "without header.frame_id (needed for TF)"))
            return
        cloud, problem = Cloud.checked(points, times, msg.header.frame_id, stamp)
        if problem:
            self.report("depth", "lidar_times", WARN, f"{topic}: {problem}")
        with self._lock:
            self._depth_arrival[LIDAR_SOURCE] = now_ns
            self._feed(self.sync.add_depth(LIDAR_SOURCE, stamp, cloud, cloud.span), now_ns)

    def depth_image(self, cam, msg, now_ns):
        """A registered depth Image of camera `cam` arriving at `now_ns`."""
        topic = self._topic("depth", cam)
        try:
            depth = decode.depth_image_to_meters(msg)
        except ValueError as err:
            self.bad_input("depth", f"depth {cam}", ERROR, f"{topic}: {err}")
            return
        stamp = decode.stamp_ns(msg.header)
        if stamp == 0:
            self.bad_input("depth", f"depth {cam} stamp", ERROR, f"{topic}: depth image {UNSTAMPED}")
            return
        with self._lock:
            self._depth_arrival[cam] = now_ns
            self._feed(self.sync.add_depth(cam, stamp, DepthImage(depth, msg.header.frame_id)), now_ns)

    def tick(self, now_ns):
        """Let time pass (call often, e.g. at 20 Hz, or after every bag message): captures whose
        depth wait is over go out, captures waiting for TF are tried again."""
        with self._lock:
            self._feed(self.sync.poll(self.message_now(now_ns)), now_ns)

    def finish(self, now_ns):
        """The end of the input (a bag): every wait ends, the captures still waiting for TF get a
        last try, and the window's keyframes not in the map yet enter it (map_insert oldest)."""
        with self._lock:
            end = now_ns + int(DEPTH_WAIT_S * SEC) + 1
            self._feed(self.sync.poll(end), end, final=True)
        if self.threaded:
            self.pipeline.drain()
        self.pipeline.flush_map()
        if self.threaded:
            self.pipeline.drain()

    def message_now(self, now_ns):
        """The arrival clock in the stamps' time base: minus the smallest lag of the recent images
        (the inputs' transport and driver latency, or the offset of a foreign clock), so that a
        capture waits for its depth DEPTH_WAIT_S after its images could arrive, and silence is
        measured from when messages would arrive. None while that base is unknown: no image
        since start-up or since the node's clock jumped back, or a sim clock not started (now_ns 0)."""
        if not now_ns or not self._lags:
            return None
        return now_ns - max(0, min(self._lags))

    def _note_lag(self, lag):
        """Note an image's lag behind the arrival clock (ns). One longer than the recent ones by
        more than camera_timeout is a new timeline of stamps (a bag looping without /clock): the
        old lags go, and the sync's clock made from them (max-sticky) with them."""
        if self._lags and lag - min(self._lags) > self.sync.camera_timeout_ns:
            self._lags.clear()
            self.sync.forget_now()
        self._lags.append(lag)

    def _check_clock(self, topic, stamp, now_ns):
        """Report an image stamp far from the arrival clock (not before a sim clock has started: now 0)."""
        if now_ns == 0:
            return
        if abs(stamp - now_ns) > CLOCK_SKEW_S * SEC:
            self.report("sync", "clock", WARN, f"{topic}: stamp {(stamp - now_ns) / SEC:+.1f} s from the "
                        f"{self.clock_hint}")

    # ---------------------------------------------------------------- captures -> frames -> pipeline

    def _feed(self, captures, now_ns, final=False):
        """Queue new captures (in stamp order) and submit every one whose transforms are there (under the lock)."""
        values = self._values
        for reason in self.sync.take_refusals():
            self.report("sync", "early", WARN, reason)
        for reason in self.sync.take_resets():
            self.report("sync", "reset", WARN, f"input time jumped back: {reason}")
            self._pending.clear()
            self._after_sync_reset = True
        self._count_missing_depth(captures, values)

        def drain():
            return self._pending.drain(lambda c: self._build(c, values, now_ns), now_ns,
                                       values["tf_timeout"] * SEC, self._on_tf_timeout, final)

        ready, dropped = ([] if captures else drain()), 0  # no capture: those waiting whose transforms came
        for cap in captures:  # queued one at a time and tried at once: a burst whose TF is there (the backlog
            dropped += self._pending.push([cap], now_ns)  # a camera declared silent releases) waits for nothing
            ready += drain()
        for _, (frames, ignored) in ready:
            for cam, level, why in ignored:
                self._ignored[cam] += 1
                self.report("depth", f"ignored {cam}", level,
                            f"{self._topic('depth', cam)}: depth image {why}; ignored")
            if frames:
                self._submit(frames, values)
        if dropped:
            self.report("tf", "queue", WARN, f"{dropped} capture(s) dropped: {PENDING_MAX} "
                        "were already waiting for their transforms (a capture needs TF stamped at or after its "
                        "images: TF arrives late, or too seldom)")

    def _paired(self, capture):
        """The capture with each image's CameraInfo the one stamped with the image (as image_transport's
        CameraSubscriber pairs them; its CameraPublisher sends the image first) where that has come and
        describes the size the image was checked for at its arrival against the newest; else, and for a
        capture built before its images' CameraInfos came, that newest one."""
        images = dict(capture.images)
        for cam, (stamp, img) in capture.images.items():
            own = self._info_at.get(cam, {}).get(stamp)
            if own is not None and own[1] is not img.info and own[0].image_size == img.model.image_size:
                images[cam] = (stamp, replace(img, model=own[0], info=own[1]))
        return replace(capture, images=images)

    def _submit(self, frames, values):
        ids = [f.frame_id for f in frames]
        if len(set(ids)) != len(ids):
            self.drops["frame_id"] += 1
            same = sorted({(f.meta.camera, f.frame_id) for f in frames if ids.count(f.frame_id) > 1})
            self.report("sync", "frame_id", ERROR,
                        "cameras " + ", ".join(c for c, _ in same) + f" publish images with the same frame_id "
                        f"{same[0][1]!r}: captures dropped (each camera needs its own optical frame for TF; set "
                        "the drivers' frame_id)")
            return
        self._frames += len(frames)
        if self.threaded:
            submission = self.pipeline.submit(frames, context=values)
        else:
            submission, _ = self.pipeline.process(frames, context=values)
        if submission.reset and not self._after_sync_reset:  # else the sync reset said why
            self.report("pipeline", "window_reset", WARN, submission.reset)
        self._after_sync_reset = False

    def _build(self, cap, values, now_ns):
        """builder.frames of a capture (CameraInfo paired). Once sweeps have kept captures whose
        cameras' poses are there from being built for tf_timeout (a frame TF does not know, or TF
        later than that), captures go out at once without them until a sweep is placed again: each
        waiting for tf_timeout, the TF queue overflowed at camera rates of 20 Hz and more and every
        capture was dropped. Raises TransformError otherwise."""
        try:
            built = self.builder.frames(self._paired(cap), values)
        except TransformError as err:
            if LIDAR_SOURCE not in cap.depth:
                raise
            built = self._cameras_only(cap, values)  # (raises the cameras' error when theirs is missing too)
            if self._unplaced_since is None:
                self._unplaced_since = now_ns
            if now_ns - self._unplaced_since <= values["tf_timeout"] * SEC:  # (its TF at start-up, say)
                raise
            return self._sweep_left_out(cap, built, f"no transform for it for tf_timeout ({values['tf_timeout']} s)",
                                        err)
        if LIDAR_SOURCE in cap.depth:
            self._unplaced_since = None
        return built

    def _cameras_only(self, cap, values):
        """builder.frames of the capture without its LiDAR sweep (raises TransformError)."""
        return self.builder.frames(self._paired(replace(cap, depth={k: v for k, v in cap.depth.items()
                                                                      if k != LIDAR_SOURCE})), values)

    def _sweep_left_out(self, cap, built, why, err):
        """`built`, the capture's frames without its sweep: said and counted (lidar_ignored)."""
        self._ignored[LIDAR_SOURCE] += 1
        self.report("tf", "lidar_timeout", WARN,
                    f"capture at {cap.stamp_ns / SEC:.3f} s goes out without its LiDAR sweep: {why}: {err}")
        return built

    def _on_tf_timeout(self, cap, err):
        """A capture whose transforms did not come within tf_timeout: built without its LiDAR sweep
        when the cameras' poses are there, else dropped; said either way (with the cameras' missing
        transform when that is one)."""
        waited = f"within tf_timeout ({self._values['tf_timeout']} s)"
        if LIDAR_SOURCE in cap.depth:
            try:
                return self._sweep_left_out(cap, self._cameras_only(cap, self._values), f"no transform for it {waited}",
                                            err)
            except TransformError:
                pass  # (err is then the cameras' own: _build raises theirs first)
        self.report("tf", "timeout", WARN,
                    f"capture at {cap.stamp_ns / SEC:.3f} s dropped: no transform {waited}: {err}")
        return None

    def _count_missing_depth(self, captures, values):
        """Report a depth source whose messages arrive but miss DEPTH_MISSING_RUN captures in a row
        (a source that stopped arriving is check_silence's to say)."""
        if not captures or not self.sync.depth_sources:
            return
        received = {s: d["received"] for s, d in self.sync.stats()["depth"].items()}
        for cap in captures:
            for source in self.sync.depth_sources:
                run, since = self._missing_run.get(source, (0, received[source]))
                run, since = (0, received[source]) if source in cap.depth else (run + 1, since)
                self._missing_run[source] = run, since
                if run >= DEPTH_MISSING_RUN and received[source] > since:  # messages came during the run
                    self.report("depth", f"missing {source}", WARN,
                                f"{run} captures in a row without depth from {self._topic('depth', source)}: no "
                                f"message within depth_tolerance ({values['depth_tolerance']} s, parameter "
                                "depth_tolerance) of their stamps; check the stamps of both")

    def check_map(self):
        """Report keyframes too large for the map's memory bound, and keyframes beyond the map's
        extent, since the last call (the node's 1 Hz check_silence calls it; the replay at the end)."""
        values = self._values
        stats = self.pipeline.stats()
        outside, seen = stats.map_outside, self._outside
        self._outside = outside  # (fewer after counters were reset)
        if outside > seen:
            extent = self.pipeline.map.extent
            self.report("pipeline", "map_outside", WARN,
                        f"a keyframe view's camera lies more than {extent / 1000:.3g} km from the origin of the map's "
                        f"frame along an axis: the map holds ±{extent / 1000:.3g} km at map_voxel_size "
                        f"{values['map_voxel_size']} m, so nothing there is mapped ({outside} keyframe views so far); "
                        "map in a local frame (world_frame) or raise map_voxel_size")
        overflows, seen = stats.map_overflows, self._overflows
        self._overflows = overflows  # (fewer after counters were reset)
        if overflows > seen:
            self.report("pipeline", "map_overflow", WARN,
                        f"a keyframe's view reaches more map blocks (its surface band and the free space it sees) than "
                        f"map_max_voxels ({values['map_max_voxels']}) keeps at map_voxel_size "
                        f"{values['map_voxel_size']} m: only its nearest stay and the rest of the map is lost "
                        f"({overflows} keyframe views so far); raise map_max_voxels or map_voxel_size, or lower "
                        "map_max_range or map_truncation_ratio")

    def check_silence(self, now_ns):
        """Report silent cameras and depth sources, and keyframes too large for the map's memory
        bound (check_map; call at about 1 Hz with the arrival clock)."""
        self.check_map()
        values = self._values
        timeout = f"for {values['camera_timeout']} s (parameter camera_timeout)"
        arrival = now_ns
        with self._lock:  # before any image the arrival clock; a sim clock not started (0): message time alone
            now_ns = None if not now_ns else self.message_now(now_ns) if self._lags else now_ns
            arrived = dict(self._depth_arrival)
        self._check_matching()
        for cam in self.sync.silent_cameras(now_ns):
            self.report(f"camera {cam}", "silent", WARN,
                        f"no image on {self._topic('image', cam)} {timeout}: check the driver, the topic "
                        "(parameters cameras, image_transport) and qos" + (
                            "; no captures until it is back (silent_camera: drop maps on with the others)"
                            if values["silent_camera"] == "wait" else "; captures go on without it"))
        for source in self.sync.silent_depth_sources():
            kind, param = ("LiDAR sweep", "lidar_topic") if source == LIDAR_SOURCE else ("depth image",
                                                                                          "depth_image_topic")
            topic = self._topic("depth", source)
            if arrival and arrival - arrived.get(source, -math.inf) < self.sync.camera_timeout_ns:
                self.report("depth", f"silent {source}", WARN,
                            f"{kind}s arrive on {topic} but none stamped within camera_timeout of the images "
                            f"{timeout}: captures go out without depth; compare the stamps of both (another "
                            "clock?)")
            else:
                self.report("depth", f"silent {source}", WARN,
                            f"no {kind} on {topic} {timeout} while images arrive: captures go out without depth; "
                            f"check the driver, the topic (parameter {param}) and qos (a large message may never "
                            "arrive best effort: qos:=reliable)")

    def _check_matching(self):
        """Report cameras whose images arrive but do not make captures: since the last check, fewer
        captures than half the images of the camera that sent fewest, and images dropped unmatched
        (stamps never within sync_slop of each other: cameras not triggered together, or on
        different clocks; a faster camera's extra images alone are no reason)."""
        st = self.sync.stats()
        now, before = (st["dropped"]["unmatched"], st["captures"], st["images"]), self._matching
        self._matching = now
        if before is None or len(self.cameras) < 2:
            return
        dropped, made = now[0] - before[0], now[1] - before[1]
        slowest = min(now[2].get(c, 0) - before[2].get(c, 0) for c in self.cameras)
        if slowest >= 2 and made < slowest / 2 and dropped > 0:
            latest, first = st["latest"], self.cameras[0]
            offsets = ", ".join(f"{c} {(latest[c] - latest[first]) / SEC:+.3f} s" for c in self.cameras
                                if c in latest and first in latest)
            self.report("sync", "unmatched", WARN,
                        f"{dropped} images dropped unmatched and {made} captures made since the last check: the "
                        f"cameras' stamps are not within sync_slop ({self._values['sync_slop']} s) of each other "
                        f"(newest stamps: {offsets}); trigger the cameras together on one clock, or raise sync_slop")

    # ---------------------------------------------------------------- outputs (pipeline publish thread)

    def _on_result(self, result):
        values = result.context
        recon = result.reconstruction
        frame_id = self.frame_id(recon.pose_frame, values)
        cameras = tuple(CameraView(i, f.meta.camera, f.frame_id, f.stamp_ns, f.meta.info)
                        for i in recon.selected for f in [recon.frames[i]])
        self._published += 1
        output = WindowOutput(self._published, frame_id, result.stamp_ns, result, values, cameras,
                              tuple(_transforms(recon, values, frame_id, result.stamp_ns)))
        if result.map_reset:
            self.report("pipeline", "map_reset", WARN, f"map cleared: {result.map_reset}")
        for view in cameras:
            ratio = recon.refused(view.index)
            if ratio is not None:
                self.report("depth", "implausible", WARN,
                            f"measured depth on {view.camera} is {ratio:.3g} times the prediction (more than "
                            f"{MAX_SCALE:g}x apart): not used; check its unit (metres; 16UC1 depth images millimetres)")
        self.emit(output)
        for view in cameras:  # (after: the outputs go out first)
            if not recon.estimated(view.index):
                self.report("pipeline", "no_estimate", WARN,
                            f"window {output.sequence}: the network gave no usable depth for {view.camera} (every "
                            f"pixel masked, not finite or more than {MAX_DEPTH_M / 1000:,.0f} km out): its outputs "
                            "are empty (bad weights, a diverged network, or a view with nothing to see)")

    def tf_refusal(self, tf, now_ns, static=False):
        """(kind, message), reported, when a geometry_msgs/TransformStamped must not enter the TF
        buffer (decode.transform_refusal; a dynamic one stamped more than tf_future_limit ahead of
        now_ns, the arrival clock, unless that is 0: a sim clock not started), else None."""
        limit = self._values["tf_future_limit"]
        refusal = decode.transform_refusal(tf, None if static or not now_ns or not limit else now_ns + int(limit * SEC))
        if refusal:
            self.report("tf", refusal[0], WARN, refusal[1])
        return refusal

    @staticmethod
    def frame_id(pose_frame, values):
        """The frame id of poses in pose_frame ("world": world_frame, else map_frame)."""
        return values["world_frame"] if pose_frame == "world" else values["map_frame"]

    # ---------------------------------------------------------------- control

    def configure(self, values):
        """A new parameter snapshot (settings.SPECS names; read-only ones unchanged) for what is
        admitted from now on; checked by the caller (settings.check)."""
        values = MappingProxyType(dict(values))
        with self._lock:
            self.pipeline.configure(pipeline_config(values))
            self.sync.configure(slop_ns(values), int(values["depth_tolerance"] * SEC),
                                camera_timeout_ns(values))
            self._values = values

    def clock_jumped_back(self, now_ns, jump_ns):
        """The node's clock went back by `jump_ns` to `now_ns` (sim time: a bag loop, /clock set
        back): what is of the old timeline goes (the sync's buffers and its messages still on their
        way, the captures waiting for TF, the window and its windows in flight) and the arrival
        clock's lags are measured again."""
        with self._lock:
            self._pending.clear()
            self._depth_arrival.clear()  # (arrival times on the old clock)
            self._unplaced_since = None
            stamps_now = self.message_now(now_ns)  # (the stamps jump with the clock: the lag holds)
            self._lags.clear()
            self.sync.jumped_back(stamps_now, jump_ns)
            self.pipeline.restart_window(f"the node's clock jumped back by {jump_ns / SEC:.3f} s")

    def reset(self):
        """Clear the window, the map and the captures waiting for TF."""
        with self._lock:
            self._pending.clear()
            self.pipeline.reset()
            self._esdf = None

    def map(self, now_ns):
        """(pipeline.MapSnapshot, frame id of its points, stamp ns: that of the newest window in the
        map, or now_ns when it is empty)."""
        snap = self.pipeline.map_points()
        stamp = snap.stamp_ns if snap.stamp_ns is not None else now_ns
        return snap, self.frame_id(snap.pose_frame or "world", self._values), stamp

    def mesh(self, now_ns):
        """(regions.RegionMesh: TsdfMap.mesh_regions, frame id, stamp ns) as map() gives them."""
        mesh, pose_frame, stamp = self.pipeline.map_mesh()
        return mesh, self.frame_id(pose_frame or "world", self._values), stamp if stamp is not None else now_ns

    def occupancy(self, now_ns, values=None):
        """(grid.Grid2D of the map's height band, frame id, stamp ns: that of the newest window in the
        map, or now_ns when it is empty) under the occupancy_* parameters of `values` (a `values`
        snapshot; None: the live one). ValueError when there is none to give: a map in the
        image-only chain frame (no known up: the band needs world_frame's z), or a band upside down."""
        v = self._values if values is None else values
        low, high = v["occupancy_min_height"], v["occupancy_max_height"]
        if high < low:
            raise ValueError(f"occupancy_max_height {high} is below occupancy_min_height {low}")
        grid, pose_frame, stamp = self.pipeline.occupancy(low, high, v["occupancy_resolution"] or None)
        if pose_frame not in (None, "world"):
            raise ValueError("the map is in the image-only chain frame (use_poses false): its up is unknown, "
                             "so it has no height band")
        return grid, self.frame_id("world", v), stamp if stamp is not None else now_ns

    def no_grid(self, now_ns, values=None):
        """(an empty grid.Grid2D (no cell known) at the band's resolution, the world frame id,
        now_ns): what replaces a latched grid when occupancy() has none to give."""
        v = self._values if values is None else values
        grid = Grid2D.empty(max(v["occupancy_resolution"], v["map_voxel_size"]))
        return grid, self.frame_id("world", v), now_ns

    def esdf(self, grid, values=None):
        """(mapping.DistanceSlice of an occupancy grid (occupancy()'s) clipped at esdf_max_distance,
        the height to show it at: occupancy_min_height, metres), both of `values` (the snapshot the
        grid was made under; None: the live one). Updated from the field made last (kept until a
        reset): only the cells near what changed are computed again."""
        v = self._values if values is None else values
        self._esdf = distance_slice(grid, v["esdf_max_distance"], self._esdf)
        return self._esdf, v["occupancy_min_height"]

    def save_map(self, path, directory=None):
        """Save the map: the volume at `path` (numpy .npz: the TSDF blocks, voxel size, truncation,
        frame id, pose frame, stamp; load_map reads it back exactly) and, for other tools, beside
        it its surface points as a PLY (the same path with the suffix .ply) and its mesh
        (TsdfMap.mesh, suffix .mesh.ply). `path` is ~ expanded and,
        when relative, taken in `directory`. The three are written beside their places, then
        renamed over them, the volume last: a partial file is never left, and a save that fails
        while writing (a full disk) replaces none of them. Refuses a path outside `directory`
        (None: anywhere; links and ".." resolved first), an empty map, a missing directory, a path
        not ending in .npz, and files there of another kind. Returns (surface points written, absolute path of
        the volume); raises OSError or ValueError saying why."""
        path = _map_path(path, directory)
        ply = path[:-len(MAP_SUFFIX)] + ".ply"
        mesh_ply = path[:-len(MAP_SUFFIX)] + MESH_SUFFIX
        for target, magic, kind in ((path, NPZ_MAGIC, "numpy .npz"), (ply, PLY_MAGIC, "PLY"), (mesh_ply, PLY_MAGIC, "PLY")):
            longest = _name_max(os.path.dirname(target))
            if len(os.fsencode(os.path.basename(target))) > longest:
                raise ValueError(f"{os.path.basename(target)!r} is longer than a file name may be there "
                                 f"({longest} bytes): nothing written")
            if os.path.exists(target):
                if not os.path.isfile(target):  # (opening a FIFO would wait for a writer for ever)
                    raise ValueError(f"{target} exists and is not a regular file: left as it is")
                with open(target, "rb") as f:
                    if f.read(len(magic)) != magic:
                        raise ValueError(f"{target} exists and is not a {kind} file: left as it is")
        try:
            state, volume = self.pipeline.map_state()  # the volume, surface and mesh of one map
        except ValueError as err:
            raise ValueError(f"{err}: {path} left as it was") from None
        points, colors, weights = volume.surface()
        mesh = volume.mesh()
        state["frame_id"] = np.array(self.frame_id(str(state["pose_frame"]), self._values))
        about = {"frame_id": str(state["frame_id"]), "voxel_size_m": float(state["voxel_size"]),
                 "stamp_ns": int(state["stamp_ns"]), "units": "metres"}
        _replace_atomically([(ply, lambda f: write_ply(f, points, colors, weights, about)),
                             (mesh_ply, lambda f: write_mesh_ply(f, *mesh, comments=about)),
                             (path, lambda f: np.savez(f, **state))])  # the volume, what loads, renamed last
        return len(points), path

    def load_map(self, path, directory=None):
        """Replace the map by one save_map wrote at `path` (resolved as there); mapping goes on into
        it. Refuses a file of another kind or version, a map whose voxel size, truncation or size
        do not fit this node's map parameters, one in the world frame while this node maps without
        poses or the other way round, and one saved in another frame than this node would map it
        in (world_frame / map_frame). Returns (blocks loaded, absolute path); raises
        OSError or ValueError saying why; the map is unchanged then."""
        path = _map_path(path, directory, must_exist=True)
        with open(path, "rb") as f:
            if f.read(len(NPZ_MAGIC)) != NPZ_MAGIC:
                raise ValueError(f"{path} is not a numpy .npz file")
        try:
            with np.load(path, allow_pickle=False) as data:
                _check_sizes(data, 2 * self._values["map_max_voxels"] * MAP_FILE_BYTES_PER_VOXEL + (1 << 20))
                state = {k: data[k] for k in data.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"{path} cannot be read as a saved map: {err}") from None
        missing = {"format", "pose_frame", "frame_id", "stamp_ns", "keys"} - set(state)
        if missing:
            raise ValueError(f"{path} is not a saved map: it lacks {sorted(missing)}")
        pose_frame, poses = str(state["pose_frame"]), self._values["use_poses"]
        if pose_frame not in ("world", CHAIN_FRAME):
            raise ValueError(f"{path} is not a saved map: its pose frame is {pose_frame!r}")
        if (pose_frame == "world") != poses:  # its next window would clear it (pipeline.Pipeline._map_frame)
            raise ValueError(f"{path} holds a map in the {pose_frame} frame, but this node maps "
                             f"{'with' if poses else 'without'} poses (use_poses {str(poses).lower()}): "
                             "its next window would clear it")
        frame = self.frame_id(pose_frame, self._values)
        if str(state["frame_id"]) != frame:
            raise ValueError(f"{path} was saved in frame {str(state['frame_id'])!r}; this node maps "
                             f"{str(state['pose_frame'])} poses in {frame!r}")
        self.pipeline.load_map(state)
        return len(state["keys"]), path

    def status_values(self):
        """The counters grouped as the node's diagnostic statuses, in order: {"pipeline": {...},
        "camera <ns>": {...} per camera, "sync": {...}, "tf": {...}, "depth": {...} (with a depth
        source)}; latencies per pipeline.STAGES in seconds."""
        st = self.stats()
        s, sync, drops = st["pipeline"], st["sync"], st["drops"]
        pipeline = dict(captures=s.captures, keyframes=s.keyframes, windows_done=s.done, windows_failed=s.failed,
                        publish_failed=s.publish_failed, dropped_pipeline_queue=s.dropped, pending=s.pending,
                        window_resets=s.window_resets, map_resets=s.map_resets, map_dropped=s.map_dropped,
                        map_blocks=s.map_blocks, map_overflows=s.map_overflows, map_outside=s.map_outside)
        for stage, latency in s.latency.items():
            pipeline[f"{stage}_latency_p50_s"] = f"{latency['p50']:.4f}"
            pipeline[f"{stage}_latency_p95_s"] = f"{latency['p95']:.4f}"
        values = {"pipeline": pipeline}
        for cam in self.cameras:
            values[f"camera {cam}"] = {"received": sync["images"][cam],
                                       "camera_info": "ok" if self.infos.get(cam) else "missing"}
        values["sync"] = {"captures": sync["captures"], "resets": sync["resets"], "queued_for_tf": st["queued_for_tf"],
                          **{f"dropped_sync_{k}": v for k, v in sync["dropped"].items()},
                          **{f"dropped_{k}": v for k, v in drops.items()}}
        values["tf"] = {"world_frame": self._values["world_frame"], "dropped_tf_timeout": drops["tf_timeout"],
                        "dropped_queue": drops["queue"]}
        if self.sync.depth_sources:
            values["depth"] = {f"{src}_{k}": v for src, d in sync["depth"].items()
                               for k, v in {**d, "ignored": st["ignored"][src]}.items()}
        return values

    def stats(self):
        """Counters for diagnostics and summaries: {"pipeline": pipeline.Stats, "sync":
        CaptureSync.stats(), "drops": {...}, "queued_for_tf": int, "images": {camera: received},
        "frames": frames submitted to the pipeline, "ignored": {depth source: its messages attached to
        captures but not used (a depth image not registered to its camera or without a valid pixel, a
        sweep TF cannot place)}}."""
        with self._lock:
            return {"pipeline": self.pipeline.stats(), "sync": self.sync.stats(), "drops": dict(self.drops),
                    "queued_for_tf": len(self._pending), "images": dict(self.images), "frames": self._frames,
                    "ignored": {src: self._ignored[src] for src in self.sync.depth_sources}}


def _transforms(recon, values, frame_id, stamp_ns):
    """The TF outputs of a window (interface.TF_OUTPUTS): map_odom, from the reference view's
    refined pose and its TF pose at its image stamp; camera_refined, each published camera's
    refined pose at its image stamp."""
    if values["tf_output"] == "map_odom":
        ref = recon.frames[0]
        if ref.meta is None or ref.meta.tf_pose is None:
            return []
        out = interface.TF_OUTPUTS["map_odom"]
        correction = se3_compose(recon.poses[0], se3_inverse(ref.meta.tf_pose))
        return [(correction, interface.resolve(out.parent, values), interface.resolve(out.child, values), stamp_ns)]
    if values["tf_output"] == "camera_refined":
        child = interface.TF_OUTPUTS["camera_refined"].child
        return [(recon.poses[i], frame_id, interface.resolve(child, values, frame_id=recon.frames[i].frame_id),
                 recon.frames[i].stamp_ns) for i in recon.selected]
    return []


MAP_FILE_BYTES_PER_VOXEL = 16  # a saved map's arrays: tsdf and weight 4 bytes, rgb 3, looks 1, front 1, keys 8 a block


def _check_sizes(npz, limit):
    """Raise ValueError when an array of the open .npz file `npz` declares more bytes than the file
    holds for it (a damaged or crafted header: numpy allocates what it declares first), or all of
    them more than `limit` bytes (a compressed member decompresses to what it declares). Members
    that are not .npy arrays are left to np.load."""
    headers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    members, total = set(npz.zip.namelist()), 0
    for name in npz.files:
        info = npz.zip.getinfo(name + ".npy" if name + ".npy" in members else name)
        with npz.zip.open(info) as f:
            if f.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
                continue
            version = tuple(f.read(2))
            if version not in headers:
                raise ValueError(f"array {name!r} has .npy version {version}, which maps are not saved in")
            shape, _, dtype = headers[version](f)
        size = math.prod(shape) * dtype.itemsize
        if size > info.file_size:
            raise ValueError(f"array {name!r} declares {shape} {dtype}, more than the {info.file_size} bytes stored")
        total += size
        if total > limit:
            raise ValueError(f"its arrays declare more than {limit} bytes, more than a map of map_max_voxels holds")


def _map_path(path, directory, must_exist=False):
    """The absolute map path of `path` (~ expanded; relative: in `directory`), checked: inside
    `directory` (None: anywhere; links and ".." resolved first), ending in MAP_SUFFIX, in an
    existing directory, not a directory, and existing when `must_exist`."""
    root = os.path.realpath(os.path.expanduser(directory or os.sep))
    path = os.path.realpath(os.path.join(root, os.path.expanduser(path)))  # a link: its target is used
    if os.path.commonpath([root, path]) != root:
        raise ValueError(f"{path} is outside {root} (parameter save_map_directory, set at launch)")
    if not path.endswith(MAP_SUFFIX):
        raise ValueError(f"{path} does not end in {MAP_SUFFIX} (the map is a numpy .npz archive)")
    if not os.path.isdir(os.path.dirname(path)):
        raise ValueError(f"{os.path.dirname(path)} is not a directory (it is not created)")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a directory")
    if must_exist and not os.path.isfile(path):
        raise ValueError(f"{path} does not exist")
    return path


TEMP_PREFIX = ".mapanything-"  # + pid + "-" + mkstemp's letters + the suffix: a save's file before its rename
_TEMP = re.compile(re.escape(TEMP_PREFIX) + r"([0-9]{1,9})-[A-Za-z0-9_]+\.(npz|ply)")
ORPHAN_AGE_S = 600  # a dead writer's file this old at least is removed (a writer's pid may be another namespace's)
_STARTED = time.time()  # (this module's import: the node's start)


def _remove_orphans(directory):
    """Remove from `directory` the temporary files of saves killed mid-write: regular files named by
    _replace_atomically whose writer is gone, i.e. older than this process with its pid (a pid used
    again after a restart), or, with another pid that runs no process here, ORPHAN_AGE_S old (a
    process in another pid namespace writing to a shared directory looks dead; its files are young).
    Never raises: a file it cannot check or remove stays."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    now = time.time()
    for name in names:
        match = _TEMP.fullmatch(name)
        if not match:
            continue
        path = os.path.join(directory, name)
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                continue
            pid = int(match.group(1))
            if pid == os.getpid():
                orphan = st.st_mtime < _STARTED
            else:
                orphan = now - st.st_mtime >= ORPHAN_AGE_S and not _runs(pid)
            if orphan:
                os.unlink(path)
        except OSError:  # gone meanwhile, or not ours to remove (another user's, in a sticky directory)
            continue


def _name_max(directory):
    """The longest file name `directory`'s filesystem takes (bytes; 255 where it does not say:
    Linux's filesystems, eCryptfs 143). A save checks its names first: one too long would fail
    after the others' renames."""
    try:
        longest = os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255
    return longest if longest > 0 else 255


def _runs(pid):
    """Whether a process `pid` runs (or may: one of another user's)."""
    try:
        os.kill(pid, 0)  # (signal 0: nothing sent)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _replace_atomically(writes):
    """For each (path, write): call write(binary file) on a new file beside `path`, flush it to disk
    and give it the mode of the file it replaces (or the umask's); once all are written, rename
    each over its path. A failure while writing (a full disk) replaces none and leaves nothing
    (a rename needs no room on most filesystems; one that fails leaves the earlier renames done).
    The new files' names hold this process's id: what a process killed
    mid-write left there is removed first (_remove_orphans)."""
    made = []
    try:
        for path, write in writes:
            directory = os.path.dirname(path)
            _remove_orphans(directory)
            fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=os.path.splitext(path)[1],
                                       dir=directory)
            made.append(tmp)
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            if os.path.exists(path):
                shutil.copymode(path, tmp)
            else:  # mkstemp's 0600: the mode a plain open() would give
                os.chmod(tmp, 0o666 & ~UMASK)
        for (path, _), tmp in zip(writes, made):
            os.replace(tmp, path)
    finally:
        for tmp in made:
            if os.path.exists(tmp):
                os.unlink(tmp)
