"""The session's inputs: sync payloads, captures to pipeline Frames, the TF wait queue (ROS-free).

sync.CaptureSync payloads: images are CameraImage (decoded only if they become keyframes, see
image_decoder), a LiDAR sweep is a Cloud under the depth source LIDAR_SOURCE, a registered
depth image is a DepthImage under its camera's name.
FrameBuilder turns a Capture into Frames with poses from a TF lookup: world_frame <- image
frame_id at each image stamp, and for LiDAR depth the camera <- LiDAR extrinsics and the
LiDAR's world poses at the sweep's first and last point times (motion compensation,
geometry.project_to_depth). Each Frame carries its image's own stamp (Frame.stamp_ns), the
capture's (Frame.capture_ns) and a Keyframe record (Frame.meta) with what the outputs need.
"""

from collections import deque
from dataclasses import dataclass
from functools import cached_property, partial

import numpy as np

from .. import decode
from ..geometry import CameraModel, MovingSweep, project_to_depth, se3_compose, se3_inverse
from ..geometry.tf_tree import TransformError
from ..sync import LIDAR_SOURCE
from ..units import SEC
from ..window import Frame
from .report import ERROR, WARN

MAX_SWEEP_NS = SEC  # point times further than this from a sweep's stamp are not believed


@dataclass(frozen=True)
class CameraImage:
    """A camera image: image, (H, W, 3) uint8 RGB or a function decoding it (image_decoder); its
    CameraModel, optical frame id, stamp (int ns), camera namespace, and its CameraInfo message
    as received (republished with the depth)."""

    image: object
    model: CameraModel
    frame_id: str
    stamp_ns: int
    camera: str = ""
    info: object = None


@dataclass(frozen=True, eq=False)
class Keyframe:
    """What the session keeps with a Frame (Frame.meta) for its outputs: the camera namespace,
    the CameraInfo message as received, the world_from_camera TF gave at the image stamp (also
    image-only, when TF has it; None otherwise)."""

    camera: str
    info: object
    tf_pose: np.ndarray | None


@dataclass(frozen=True, eq=False)
class DepthImage:
    """A decoded depth image: depth (H, W) float32 metres (0 = none) and its header.frame_id."""

    depth: np.ndarray
    frame_id: str

    @cached_property
    def empty(self):
        """Whether no pixel is valid (looked at once, for an image a capture uses)."""
        return not self.depth.any()


@dataclass(frozen=True)
class Cloud:
    """A decoded LiDAR sweep: points (N, 3) float64 metres in frame_id, per-point absolute times
    (N,) int64 ns or None, header stamp (int ns)."""

    points: np.ndarray
    times: np.ndarray | None
    frame_id: str
    stamp_ns: int

    @classmethod
    def checked(cls, points, times, frame_id, stamp_ns):
        """(Cloud, problem): the sweep, with its per-point times dropped when some lie more than
        MAX_SWEEP_NS from the stamp (another clock, or garbage: they would send the motion
        compensation's TF lookups far off, and make the sweep match images all along that
        span); it is then carried at its stamp. problem: what was wrong, or None."""
        if times is not None and len(times) and not (
                stamp_ns - MAX_SWEEP_NS <= int(times.min()) and int(times.max()) <= stamp_ns + MAX_SWEEP_NS):
            return cls(points, None, frame_id, stamp_ns), (
                f"per-point times more than {MAX_SWEEP_NS / SEC:g} s from the header stamp (another clock, "
                "or relative times in an absolute field?): ignored, the sweep is carried at its stamp")
        return cls(points, times, frame_id, stamp_ns), None

    @cached_property
    def span(self):
        """(first, last) int ns the sweep covers: its point times, else its stamp."""
        if self.times is None or not len(self.times):
            return self.stamp_ns, self.stamp_ns
        return int(self.times.min()), int(self.times.max())


def image_decoder(msg, camera, source):
    """A function returning the (H, W, 3) uint8 RGB of a sensor_msgs Image or CompressedImage `msg`
    (one that has a `format` field), checked against `camera` (a CameraModel) and decoded only when
    called: on the pipeline's prepare thread, for keyframes (window.Frame's deferred image). What can be
    checked without decoding is checked now: the encoding or format, the raw sizes against the
    message's data, the size (a compressed file's from its header) against the CameraInfo. Raises ValueError (naming `source`, e.g. the topic) now for
    those and when called for the rest (undecodable or wrongly sized compressed data)."""
    compressed = hasattr(msg, "format")
    try:
        if compressed:
            decode.check_compressed_format(msg)
            decode.check_image_matches(camera, *decode.compressed_size(msg)[::-1])
        else:
            decode.check_image_matches(camera, *decode.image_size(msg)[::-1])
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None

    def decoded():
        try:
            rgb = decode.compressed_to_rgb(msg) if compressed else decode.image_to_rgb(msg)
            if compressed:
                decode.check_image_matches(camera, *rgb.shape[:2])
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None
        return rgb
    return decoded


class FrameBuilder:
    """Frames of captures. lookup(target, source, stamp_ns) -> 4x4 target_from_source, raising
    TransformError when TF cannot answer."""

    def __init__(self, lookup):
        self.lookup = lookup

    def frames(self, capture, values):
        """(frames, ignored): the Frames of a sync.Capture under the parameters `values`
        (settings.SPECS names), in camera order, and the depth images attached but not used, as
        (camera, level, why): not registered to the camera's images (another frame_id, another
        size: REP 118's registered depth is in the image's frame at its size), or without a valid
        pixel. Raises TransformError when poses are used and TF has no pose (yet) for an image,
        or when LiDAR depth is used and a transform it needs is missing."""
        p = values
        frames, ignored = [], []
        lidar = None
        if p["use_depth"] and p["depth_source"] == "lidar" and LIDAR_SOURCE in capture.depth:
            lidar = self.lidar_depth(capture.depth[LIDAR_SOURCE][1], p["world_frame"])
        for cam, (stamp, img) in capture.images.items():
            try:
                tf_pose = self.lookup(p["world_frame"], img.frame_id, stamp)
            except TransformError:
                if p["use_poses"]:
                    raise
                tf_pose = None
            depth = None
            if lidar is not None:
                depth = lidar(img)
            elif p["use_depth"] and p["depth_source"] == "depth_image" and cam in capture.depth:
                given = capture.depth[cam][1]
                why = _unregistered(given, img)
                if why:
                    ignored.append((cam, ERROR, why))
                elif given.empty:
                    ignored.append((cam, WARN, "has no valid pixel (0, NaN or inf everywhere)"))
                else:
                    depth = given.depth
            frames.append(Frame(img.image, img.model, stamp, img.frame_id, tf_pose if p["use_poses"] else None,
                                depth, capture.stamp_ns, Keyframe(cam, img.info, tf_pose)))
        return frames, ignored

    def lidar_depth(self, cloud, world):
        """A function CameraImage -> the sparse z-depth of a Cloud in that camera, motion-compensated
        with per-point times (without times the sweep is carried at its stamp through world_frame),
        deferred: a function returning the (H, W) float32 map. The LiDAR's poses are looked up now,
        each camera's extrinsics when the function is called (raising TransformError when missing);
        the projection runs only when the depth is asked for (keyframes, see window.Frame), and the
        motion compensation once for all the cameras of the sweep (geometry.MovingSweep)."""
        lookup = self.lookup
        if cloud.times is None:
            world_from_lidar = lookup(world, cloud.frame_id, cloud.stamp_ns)

            def depth(image):
                cam_from_world = se3_inverse(lookup(world, image.frame_id, image.stamp_ns))
                cam_from_lidar = se3_compose(cam_from_world, world_from_lidar)
                return partial(project_to_depth, cloud.points, cam_from_lidar, image.model)
            return depth
        t0, t1 = cloud.span
        if t1 == t0:
            t1 = t0 + 1
        # the end first: the sweep covers its images, so a capture still waiting for TF fails at once
        end = lookup(world, cloud.frame_id, t1)
        sweep = MovingSweep(cloud.points, cloud.times, t0, lookup(world, cloud.frame_id, t0), t1, end,
                            extrapolate=True)

        def depth(image):
            cam_from_lidar = lookup(image.frame_id, cloud.frame_id, image.stamp_ns)
            return partial(sweep.depth, cam_from_lidar, image.model, image.stamp_ns)
        return depth


def _unregistered(given, image):
    """Why the DepthImage `given` is not registered to the CameraImage `image`, or None."""
    if given.frame_id != image.frame_id:
        return (f"is in frame {given.frame_id!r}, the camera's images in {image.frame_id!r}: not registered to them "
                "(use the driver's registered or aligned depth topic, or depth_image_proc's register node)")
    w, h = image.model.image_size
    if given.depth.shape != (h, w):
        return (f"is {given.depth.shape[1]}x{given.depth.shape[0]}, not registered to the {w}x{h} camera image (use "
                "the driver's registered or aligned depth topic, or depth_image_proc's register node)")
    return None


class PendingCaptures:
    """Captures waiting for their transforms, in stamp order (the session's TF wait queue).

    At most `max_len` wait (the oldest is dropped when full, counted in drops["queue"]). `drain`
    builds them in order and stops at the first whose transforms are not there yet, unless it has
    waited longer than the timeout: then it is dropped (drops["tf_timeout"]). Times are in the
    caller's clock (node clock or bag time), int ns. `drops` may be the caller's counter dict.
    Not thread-safe: the session holds its lock.
    """

    def __init__(self, max_len=10, drops=None):
        self.max_len = max_len
        self._queue = deque()  # (capture, first try ns)
        self.drops = {} if drops is None else drops
        self.drops.setdefault("queue", 0)
        self.drops.setdefault("tf_timeout", 0)

    def __len__(self):
        return len(self._queue)

    def clear(self):
        """Forget every waiting capture (counted as queue drops)."""
        self.drops["queue"] += len(self._queue)
        self._queue.clear()

    def push(self, captures, now_ns):
        """Queue new captures, first tried at now_ns; how many waiting ones were dropped for room."""
        dropped = 0
        for cap in captures:
            if len(self._queue) >= self.max_len:
                self._queue.popleft()
                dropped += 1
            self._queue.append((cap, now_ns))
        self.drops["queue"] += dropped
        return dropped

    def drain(self, build, now_ns, timeout_ns, on_expired, final=False):
        """[(capture, build(capture))] for the captures whose transforms are there, in order.

        build raises TransformError when they are not; a capture that has waited at most
        timeout_ns (and final is False) then stays queued with everything after it; for an older one
        on_expired(capture, error) is called: it returns what the capture is built as without
        what was missing (e.g. its LiDAR sweep), or None: the capture is dropped.
        """
        built = []
        while self._queue:
            cap, first = self._queue[0]
            try:
                result = build(cap)
            except TransformError as err:
                if not final and now_ns - first <= timeout_ns:
                    break
                self._queue.popleft()
                result = on_expired(cap, err)
                if result is None:
                    self.drops["tf_timeout"] += 1
                    continue
            else:
                self._queue.popleft()
            built.append((cap, result))
        return built
