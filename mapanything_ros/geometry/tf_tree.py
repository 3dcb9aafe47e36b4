"""A time-indexed tree of rigid transforms, kept the way tf2 keeps one (numpy only, no ROS).

Frames are strings, stamps int nanoseconds, and each edge holds the 4x4 float64 transforms
parent_from_child of one child frame. The lookup semantics follow tf2's BufferCore
(ros2/geometry2, read for behaviour only): every frame has one parent; static edges hold one
value valid at any time; dynamic edges are interpolated between their two nearest samples
(slerp for rotation, linear for translation) and never extrapolated; stamp 0 means the latest
time all dynamic edges of the path have data; each dynamic edge forgets samples older than its
newest minus `max_history_s`, and ignores samples arriving older than that or repeating a stamp.
"""

import numpy as np

from .transforms import interpolate_pose, se3_inverse

LATEST = 0  # the stamp asking for the latest common time, as tf2's Time(0)
_NS = 1_000_000_000


class TransformError(LookupError):
    """A transform that cannot be looked up (tf2.TransformException)."""


class TransformNotFound(TransformError):
    """A frame that is not in the tree (tf2.LookupException)."""


class ConnectivityError(TransformError):
    """Two known frames in different trees (tf2.ConnectivityException)."""


class ExtrapolationError(TransformError):
    """A stamp outside the buffered time range of an edge on the path (tf2.ExtrapolationException)."""


class _StaticEdge:
    """parent_from_child of a child frame that does not move: one value, valid at any time."""

    static = True

    def __init__(self, parent, pose):
        self.parent = parent
        self.pose = pose

    def at(self, child, stamp_ns):
        return self.pose


class _DynamicEdge:
    """parent_from_child samples of one child frame, sorted by stamp in growable numpy arrays.

    The live samples are `stamps[lo:hi]` / `poses[lo:hi]`; pruning moves `lo` forward and the
    arrays are compacted or doubled only when `hi` reaches their end (amortised O(1) appends).
    """

    static = False

    def __init__(self, parent):
        self.parent = parent
        self.stamps = np.empty(0, np.int64)
        self.poses = np.empty((0, 4, 4))
        self.lo = self.hi = 0

    @property
    def newest(self):
        return int(self.stamps[self.hi - 1])

    def insert(self, stamp_ns, pose, history_ns):
        """Store one sample; False (and nothing stored) if it is too old or its stamp repeats."""
        if self.hi > self.lo and stamp_ns < self.newest - history_ns:
            return False
        if self.hi == len(self.stamps):
            self._make_room()
        lo, hi = self.lo, self.hi
        i = lo + int(np.searchsorted(self.stamps[lo:hi], stamp_ns))
        if i < hi and self.stamps[i] == stamp_ns:
            return False
        self.stamps[i + 1 : hi + 1] = self.stamps[i:hi]
        self.poses[i + 1 : hi + 1] = self.poses[i:hi]
        self.stamps[i], self.poses[i] = stamp_ns, pose
        self.hi = hi + 1
        self.lo += int(np.searchsorted(self.stamps[self.lo : self.hi], self.newest - history_ns))
        return True

    def _make_room(self):
        n = self.hi - self.lo
        size = max(8, 2 * n)
        if size > len(self.stamps):
            stamps, poses = np.empty(size, np.int64), np.empty((size, 4, 4))
        else:
            stamps, poses = self.stamps, self.poses
        stamps[:n], poses[:n] = self.stamps[self.lo : self.hi], self.poses[self.lo : self.hi]
        self.stamps, self.poses, self.lo, self.hi = stamps, poses, 0, n

    def at(self, child, stamp_ns):
        """parent_from_child at stamp_ns: the stored sample at its stamp, else interpolated."""
        stamps = self.stamps[self.lo : self.hi]
        oldest, newest = int(stamps[0]), int(stamps[-1])
        if not oldest <= stamp_ns <= newest:
            way, by = ("future", stamp_ns - newest) if stamp_ns > newest else ("past", oldest - stamp_ns)
            raise ExtrapolationError(
                f"{child} -> {self.parent} would need extrapolation {by / _NS:.9f} s into the {way}: "
                f"requested {stamp_ns / _NS:.9f} s, data from {oldest / _NS:.9f} s to {newest / _NS:.9f} s"
            )
        i = int(np.searchsorted(stamps, stamp_ns))
        if stamps[i] == stamp_ns:
            return self.poses[self.lo + i]
        j = self.lo + i
        return interpolate_pose(stamp_ns, stamps[i - 1], self.poses[j - 1], stamps[i], self.poses[j])


class TransformTree:
    """Buffered parent_from_child transforms of a frame tree, looked up at any buffered stamp.

    Not thread-safe: callers sharing one tree between threads hold a lock around it.
    """

    def __init__(self, max_history_s=10.0):
        self.history_ns = int(round(max_history_s * _NS))
        self._edges = {}  # child frame -> its edge to the parent

    def set_transform(self, parent, child, stamp_ns, parent_from_child, static=False):
        """Add parent_from_child (4x4, rigid, metres) of `child` at stamp_ns (int ns).

        A static transform replaces the edge's value and is valid at any stamp. Returns False
        when a dynamic sample is ignored (older than the edge's history, or a repeated stamp,
        where tf2 keeps the first). Raises ValueError for an invalid transform, a second
        parent of `child`, a loop, or switching an edge between static and dynamic.
        """
        pose = np.array(parent_from_child, dtype=np.float64)
        stamp_ns = int(stamp_ns)
        if not (isinstance(parent, str) and isinstance(child, str) and parent and child):
            raise ValueError(f"frame names must be non-empty strings, got {parent!r}, {child!r}")
        if parent == child:
            raise ValueError(f"frame {child!r} cannot be its own parent")
        if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
            raise ValueError(f"{parent} <- {child}: need a finite 4x4 transform, got shape {pose.shape}")
        if stamp_ns < 0:
            raise ValueError(f"negative stamp {stamp_ns} ns")
        edge = self._edges.get(child)
        if edge is None:
            if child in self._ancestors(parent):
                raise ValueError(f"{parent} <- {child} would close a loop in the tree")
        elif edge.parent != parent:
            raise ValueError(f"frame {child!r} already has parent {edge.parent!r}, not {parent!r}")
        elif edge.static != static:
            kind = "static" if edge.static else "dynamic"
            raise ValueError(f"{edge.parent} <- {child} is already {kind}")
        if static:
            self._edges[child] = _StaticEdge(parent, pose)
            return True
        if edge is None:
            edge = self._edges[child] = _DynamicEdge(parent)
        return edge.insert(stamp_ns, pose, self.history_ns)

    def lookup(self, target, source, stamp_ns):
        """target_from_source (4x4) at stamp_ns (int ns; LATEST = 0 for the latest common time).

        Raises TransformNotFound for an unknown frame, ConnectivityError for frames in
        different trees, ExtrapolationError when an edge of the path has no data around stamp_ns.
        """
        for frame in (target, source):
            if not self.has_frame(frame):
                raise TransformNotFound(f"frame {frame!r} does not exist")
        up_source, up_target = self._ancestors(source), self._ancestors(target)
        common = next((f for f in up_target if f in up_source), None)
        if common is None:
            raise ConnectivityError(f"{source!r} and {target!r} are not in the same tree")
        path_source = up_source[: up_source.index(common)]
        path_target = up_target[: up_target.index(common)]
        stamp_ns = int(stamp_ns)
        if stamp_ns == LATEST:
            edges = [self._edges[c] for c in path_source + path_target]
            stamp_ns = min((e.newest for e in edges if not e.static), default=LATEST)
        elif stamp_ns < 0:
            raise ValueError(f"negative stamp {stamp_ns} ns")
        common_from_source = self._up(path_source, stamp_ns)
        common_from_target = self._up(path_target, stamp_ns)
        if common_from_target is None:
            return np.eye(4) if common_from_source is None else common_from_source.copy()
        target_from_common = se3_inverse(common_from_target)
        return target_from_common if common_from_source is None else target_from_common @ common_from_source

    def can_transform(self, target, source, stamp_ns):
        """Whether lookup(target, source, stamp_ns) would succeed."""
        try:
            self.lookup(target, source, stamp_ns)
        except TransformError:
            return False
        return True

    def has_frame(self, frame):
        """Whether `frame` is a child or parent of any edge."""
        return frame in self._edges or any(e.parent == frame for e in self._edges.values())

    def clear(self):
        """Forget all dynamic transforms; static ones stay (as tf2 does on a clock jump back)."""
        self._edges = {c: e for c, e in self._edges.items() if e.static}

    def _ancestors(self, frame):
        """[frame, its parent, ..., the root]."""
        chain = [frame]
        while chain[-1] in self._edges:
            chain.append(self._edges[chain[-1]].parent)
        return chain

    def _up(self, path, stamp_ns):
        """ancestor_from_path[0] through the edges of `path` (children, bottom up); None if empty."""
        out = None
        for child in path:
            pose = self._edges[child].at(child, stamp_ns)
            out = pose if out is None else pose @ out
        return out
