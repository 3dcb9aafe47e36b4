"""A time-indexed tree of rigid transforms with ROS 2 tf2's semantics (numpy only, no ROS).

Frames are strings, stamps int nanoseconds, and each child frame holds the 4x4 float64 transforms
parent_from_child it was given. The rules are those of tf2's BufferCore and TimeCache in ROS 2
(ros2/geometry2 0.39, read for behaviour; test_tf2_conformance checks them against tf2_ros):

- One leading '/' is stripped from frame ids when setting; a lookup with an empty frame id or one
  starting with '/' raises InvalidArgument, one with a frame never named raises TransformNotFound. A
  frame looked up against itself is the identity, known or not. Frames stay known forever.
- A child frame's data is either static (one value, valid at any time) or dynamic (samples); a
  sample of the other kind replaces its history. Each dynamic sample names its parent, so a frame
  can be re-parented: at a stamp, the parent is that of the newest sample at or before it, and
  two neighbouring samples with different parents are not interpolated (the older one is used).
- Dynamic samples are interpolated between their two neighbours (slerp, linear), never
  extrapolated. Inserting first forgets samples older than the newest minus `max_history_s`,
  then refuses a sample older than that. A repeated stamp is stored beside the earlier sample
  (an identical duplicate is dropped); the later one answers at that stamp, except at the oldest.
- Stamp 0 asks for the latest time common to the dynamic edges of the path (their newest stamps).
- A path walks at most 1000 edges; a tree containing a loop fails lookups that go round it with
  TransformNotFound ("contains a loop"), as tf2 does; setting such an edge is accepted.
"""

from bisect import bisect_left, bisect_right

import numpy as np

from ..units import SEC
from .transforms import interpolate_pose, se3_inverse

LATEST = 0  # the stamp asking for the latest common time, as tf2's Time(0)
MAX_DEPTH = 1000  # edges a walk follows before it declares a loop (tf2's MAX_GRAPH_DEPTH)


class TransformError(LookupError):
    """A transform that cannot be looked up (tf2.TransformException)."""


class TransformNotFound(TransformError):
    """A frame that is not in the tree, or a loop in the tree (tf2.LookupException)."""


class ConnectivityError(TransformError):
    """Two known frames in different trees (tf2.ConnectivityException)."""


class ExtrapolationError(TransformError):
    """A stamp outside the buffered samples of an edge on the path (tf2.ExtrapolationException)."""


class InvalidArgument(TransformError):
    """An empty frame id, one starting with '/', or a negative stamp (tf2.InvalidArgumentException)."""


def _seconds(stamp_ns):
    return f"{stamp_ns / SEC:.9f} s"


class _Static:
    """parent_from_child of a child frame that does not move: one value, valid at any time."""

    static = True

    def __init__(self):
        self.parent = self.pose = None

    def insert(self, parent, stamp_ns, pose, history_ns):
        self.parent, self.pose = parent, pose
        return True

    def latest(self):
        """(newest stamp, its parent): stamp 0 for static data."""
        return 0, self.parent

    def at(self, child, stamp_ns):
        return self.parent, self.pose

    def clear(self):
        """Static data survives clear()."""


class _Dynamic:
    """Samples of one child frame: stamps ascending; among equal stamps, in arrival order."""

    static = False

    def __init__(self):
        self.stamps, self.parents, self.poses = [], [], []

    def insert(self, parent, stamp_ns, pose, history_ns):
        """Store one sample; False (nothing stored) if it is older than the history allows."""
        stamps = self.stamps
        if stamps:
            oldest_kept = stamps[-1] - history_ns
            drop = bisect_left(stamps, oldest_kept)
            if drop:
                del stamps[:drop], self.parents[:drop], self.poses[:drop]
            if stamp_ns < oldest_kept:
                return False
        i = bisect_right(stamps, stamp_ns)
        for j in range(bisect_left(stamps, stamp_ns), i):
            if self.parents[j] == parent and np.array_equal(self.poses[j], pose):
                return True  # an identical duplicate
        stamps.insert(i, stamp_ns)
        self.parents.insert(i, parent)
        self.poses.insert(i, pose)
        return True

    def latest(self):
        return (self.stamps[-1], self.parents[-1]) if self.stamps else (0, None)

    def at(self, child, stamp_ns):
        """(parent, parent_from_child) at stamp_ns (0: the newest sample); ExtrapolationError if none."""
        stamps = self.stamps
        if not stamps:
            raise ExtrapolationError(f"{child}: no data at {_seconds(stamp_ns)} (cleared)")
        if stamp_ns == LATEST:
            i = len(stamps) - 1
        elif len(stamps) == 1:
            if stamp_ns != stamps[0]:
                raise ExtrapolationError(
                    f"{child}: lookup at {_seconds(stamp_ns)} but its only sample is at {_seconds(stamps[0])}")
            i = 0
        elif stamp_ns == stamps[-1]:
            i = len(stamps) - 1
        elif stamp_ns == stamps[0]:
            i = 0
        elif stamp_ns > stamps[-1]:
            raise ExtrapolationError(
                f"{child} -> {self.parents[-1]} would need extrapolation {_seconds(stamp_ns - stamps[-1])} into "
                f"the future: requested {_seconds(stamp_ns)}, newest data at {_seconds(stamps[-1])}")
        elif stamp_ns < stamps[0]:
            raise ExtrapolationError(
                f"{child} -> {self.parents[0]} would need extrapolation {_seconds(stamps[0] - stamp_ns)} into "
                f"the past: requested {_seconds(stamp_ns)}, oldest data at {_seconds(stamps[0])}")
        else:
            i = bisect_right(stamps, stamp_ns) - 1  # older neighbour; i + 1 is newer
            if self.parents[i] == self.parents[i + 1] and stamps[i] != stamp_ns:
                pose = interpolate_pose(stamp_ns, stamps[i], self.poses[i], stamps[i + 1], self.poses[i + 1])
                return self.parents[i], pose
        return self.parents[i], self.poses[i]

    def clear(self):
        self.stamps, self.parents, self.poses = [], [], []


def frame_id_problem(frame_id):
    """Why tf2 refuses `frame_id` for a lookup ("is empty", "starts with '/'"), or None."""
    if not frame_id:
        return "is empty"
    return "starts with '/'" if frame_id.startswith("/") else None


def _strip(frame):
    return frame[1:] if frame.startswith("/") else frame


class TransformTree:
    """Buffered parent_from_child transforms of a frame tree, looked up at any buffered stamp.

    Not thread-safe: callers sharing one tree between threads hold a lock around it.
    """

    def __init__(self, max_history_s=10.0):
        self.history_ns = int(round(max_history_s * SEC))
        self._frames = {}  # every frame ever named -> its data as a child (None: a root so far)

    def set_transform(self, parent, child, stamp_ns, parent_from_child, static=False):
        """Add parent_from_child (4x4, rigid, metres) of `child` at stamp_ns (int ns).

        A static transform replaces the frame's data and is valid at any stamp; a sample of the
        other kind than the frame's data replaces it. Returns False when a dynamic sample is older
        than the frame's history allows. Raises ValueError for an invalid transform (tf2 logs and
        ignores those): empty or equal frame ids, a non-finite or non-4x4 pose, a negative stamp.
        """
        if not (isinstance(parent, str) and isinstance(child, str)):
            raise ValueError(f"frame ids must be strings, got {parent!r}, {child!r}")
        parent, child = _strip(parent), _strip(child)
        pose = np.array(parent_from_child, dtype=np.float64)
        stamp_ns = int(stamp_ns)
        if not (parent and child):
            raise ValueError(f"frame ids must be non-empty, got {parent!r}, {child!r}")
        if parent == child:
            raise ValueError(f"frame {child!r} cannot be its own parent")
        if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
            raise ValueError(f"{parent} <- {child}: need a finite 4x4 transform, got shape {pose.shape}")
        if stamp_ns < 0:
            raise ValueError(f"negative stamp {stamp_ns} ns")
        data = self._frames.get(child)
        if data is None or data.static != static:
            data = self._frames[child] = _Static() if static else _Dynamic()
        self._frames.setdefault(parent, None)
        return data.insert(parent, stamp_ns, pose, self.history_ns)

    def lookup(self, target, source, stamp_ns):
        """target_from_source (4x4) at stamp_ns (int ns; LATEST = 0 for the latest common time).

        Raises InvalidArgument for an empty frame id, one starting with '/' or a negative stamp,
        TransformNotFound for an unknown frame or a loop, ConnectivityError for frames in different
        trees, ExtrapolationError when an edge of the path has no data around stamp_ns.
        """
        stamp_ns = int(stamp_ns)
        if stamp_ns < 0:
            raise InvalidArgument(f"negative stamp {stamp_ns} ns")
        if target == source:
            return np.eye(4)
        for role, frame in (("target", target), ("source", source)):
            why = frame_id_problem(frame)
            if why:
                raise InvalidArgument(f"{role} frame id {frame!r} {why}" if frame else f"{role} frame id {why}")
            if frame not in self._frames:
                raise TransformNotFound(f"{role} frame {frame!r} does not exist")
        if stamp_ns == LATEST:
            stamp_ns = self._latest_common(target, source)
        return self._walk(target, source, stamp_ns)

    def can_transform(self, target, source, stamp_ns):
        """Whether lookup(target, source, stamp_ns) would succeed."""
        try:
            self.lookup(target, source, stamp_ns)
        except TransformError:
            return False
        return True

    def has_frame(self, frame):
        """Whether `frame` was ever named as a child or a parent (and the tree not rebuilt)."""
        return frame in self._frames

    def clear(self):
        """Forget all dynamic samples; static data and known frames stay (as tf2's Buffer.clear)."""
        for data in self._frames.values():
            if data is not None:
                data.clear()

    def _loop(self):
        return TransformNotFound(f"the tf tree is invalid because it contains a loop ({MAX_DEPTH} edges walked)")

    def _latest_common(self, target, source):
        """The newest stamp at which every dynamic edge between source and target has data (0: none)."""
        up, common = [], None  # (newest stamp, parent) of each edge above source, bottom up
        for stamp, parent in self._edges_up(source):
            common = _older(common, stamp)
            up.append((stamp, parent))
            if parent == target:
                return common or 0
        parents = [p for _, p in up]
        common, meet = None, None
        for stamp, parent in self._edges_up(target):
            common = _older(common, stamp)
            if parent in parents:
                meet = parent
                break
            if parent == source:
                return common or 0
        if meet is None:
            raise ConnectivityError(f"{source!r} and {target!r} are not in the same tree")
        for stamp, parent in up:
            common = _older(common, stamp)
            if parent == meet:
                break
        return common or 0

    def _edges_up(self, frame):
        """(newest stamp, parent) of each edge from `frame` up to its root, bottom up; raises after
        MAX_DEPTH + 1 edges (a loop)."""
        for _ in range(MAX_DEPTH + 1):
            data = self._frames[frame]
            if data is None:
                return
            stamp, parent = data.latest()
            if parent is None:
                return
            yield stamp, parent
            frame = parent
        raise self._loop()

    def _walk(self, target, source, stamp_ns):
        """target_from_source at stamp_ns (> 0, or 0 when no dynamic edge constrains the time)."""
        top_from_source, frame, top, depth = np.eye(4), source, source, 0
        pending = None  # the extrapolation that stopped the walk up from source
        while (data := self._frames[frame]) is not None:
            try:
                parent, pose = data.at(frame, stamp_ns)
            except ExtrapolationError as e:
                pending = e
                break
            if frame == target:
                return top_from_source
            top_from_source = pose @ top_from_source
            frame = parent
            depth += 1
            if depth > MAX_DEPTH:
                raise self._loop()
        top = frame
        top_from_target, frame, depth = np.eye(4), target, 0
        while frame != top and (data := self._frames[frame]) is not None:
            parent, pose = data.at(frame, stamp_ns)
            if frame == source:
                return se3_inverse(top_from_target)
            top_from_target = pose @ top_from_target
            frame = parent
            depth += 1
            if depth > MAX_DEPTH:
                raise self._loop()
        if frame != top:
            if pending is not None:
                raise ExtrapolationError(f"{pending}, looking up {source!r} in {target!r}") from None
            raise ConnectivityError(f"{source!r} and {target!r} are not in the same tree")
        return se3_inverse(top_from_target) @ top_from_source


def _older(common, stamp):
    """The older of a running common stamp (None: none yet) and an edge's newest stamp (0: static)."""
    if not stamp:
        return common
    return stamp if common is None else min(common, stamp)
