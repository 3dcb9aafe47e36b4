"""CaptureSync: groups the images of several cameras, plus optional depth, into captures (no ROS).

The node's callbacks hand every message here (stamps int nanoseconds, payloads opaque) and a
timer calls `poll`; message_filters cannot do this because the depth inputs are optional.

Images (approximate time, in the spirit of ROS ApproximateTime): each camera has a bounded
queue in stamp order. The earliest queued image m0 either joins the set of the cameras' oldest
queued images (the "heads") or is dropped ("unmatched"):
- dropped as soon as some camera's earliest possible partner (its head, or for an empty queue
  anything newer than its last stamp) is more than `slop_ns` after m0;
- dropped when m0's camera already queued a successor that would make a set with a smaller
  stamp spread (max - min) with the other heads;
- otherwise the heads form a capture once no later image of m0's camera can give a tighter
  set. When that successor is not queued yet, its stamp is bounded below by the camera's
  smallest gap between stamps seen so far (cameras are assumed never to speed up); so with a
  slop below half the frame period, sets go out the moment they are complete, and only at
  start-up or for ambiguous stamps does a capture wait for one more frame of m0's camera (or
  until that camera counts as silent).
Every emitted capture's image stamps spread less than `slop_ns` (max - min < slop, the boundary
rule of message_filters' ApproximateTimeSynchronizer), captures come out in
increasing stamp order, and an image is in at most one capture. With one camera every image
is a capture. The capture stamp is the midpoint of its image stamps (raised to 1 ns after the
previous capture's if on_silent="drop" changed the camera set); `images` keeps the order of
`cameras` (the first listed camera comes first).

Depth (optional, never stalls the cameras): each source (`depth_sources`) has a bounded buffer.
A source named like a camera is that camera's registered depth image and is matched to that
camera's image stamp; any other name (a LiDAR) is shared by all cameras and matched to the
capture stamp. A depth message covers a time span: a LiDAR sweep's first to last point time
(`add_depth`'s `span`), else its stamp; its distance to a reference stamp is 0 inside the span,
else the gap to the nearer end. A capture gets, per source, the buffered message nearest in that
sense within `depth_tolerance_ns`, or none; one depth message may serve several captures.
A complete capture is released once every source is settled, or once message time has reached
the capture's completion time (its newest image stamp) + `depth_wait_ns`, or on overflow of
`max_pending`. A source is settled when nothing better can still come: its nearest message
covers the reference (distance 0), or a message starting further after the reference than that
nearest one was received (spans arrive in stamp order). A shared source (a LiDAR, whose points
the node carries to the image time through TF, motion compensation) is also settled as soon as
a message within tolerance is buffered: a capture does not wait for the sweep still being
recorded when one that ended within tolerance is at hand. A registered depth image is not
carried (its pixels belong to its own instant), so its camera waits for the nearest one.
Message time is the newest stamp received, or the `now_ns` given to `poll`, whichever is later:
`poll` needs the node clock in the stamps' time base (ROS time; sim time when replaying a bag
with /clock). With depth_wait_ns = 0 captures go out at once with whatever depth is buffered.

Bad input:
- A message older than its input's newest by at most the slop (depth: max(slop, tolerance)), or
  a repeated stamp, is dropped as "stale".
- A message older by more than that but by at most `camera_timeout_ns` is a late one (delivered
  out of order): dropped as "stale" too, nothing else touched, unless its input already sent
  LATE_RUN - 1 such messages in a row: then its clock went back.
- A message stamped more than `camera_timeout_ns` ahead of the newest stamp received and of the
  node clock given to `poll` (one message from a clock gone wrong, which would otherwise make
  every later message of its input look late) is dropped as "stale" with a reason for
  `take_refusals`, unless its input already sent LATE_RUN - 1 such messages in a row: then its
  clock jumped forward, and it is taken.
- A depth source's stamp further back, or that run, means its clock alone went back: its buffer is
  cleared and its new stamps are taken (with a reason for `take_refusals`); the cameras go on (its
  depth matches them again when its clock comes back; a bag loop resets everything at the
  cameras' jump).
- A camera's stamp further back, or that run, means time jumped back (a bag looping, a clock reset): all
  buffers are cleared (their images counted as dropped "reset") and the reason is recorded for
  `take_resets`; after each call the node takes the reasons, logs them and resets its window
  before using the returned captures (which all belong to the new timeline).
  Messages still on the old timeline from the other inputs (they loop a moment later: more than
  half the jump ahead of the new timeline) are then dropped as "stale" instead of causing a
  second reset, for `camera_timeout_ns` of the new timeline at most: an input still on the old
  one then never jumped (only one source's clock was wrong) and carries on (its stamps far from
  the jumped one's, no capture pairs them: the cameras' offsets are said, and with
  on_silent="drop" the one that stays behind counts as silent).
- A depth source silent for `camera_timeout_ns` of image time is reported by
  `silent_depth_sources` (captures go out without its depth meanwhile).
- A camera silent for `camera_timeout_ns` of message time (the other cameras' image stamps) is
  reported by `silent_cameras` (which also uses the node clock, for when nothing arrives at all).
  on_silent="wait" (default): no captures without it; its peers' queues stay bounded by dropping
  their oldest ("overflow"). on_silent="drop": captures are made from the cameras still
  publishing, so the pipeline gets fewer views until it is back (its old queued images are
  dropped as "unmatched"; a complete set still waiting on it can be lost). The timeout must exceed
  the largest difference of latency between cameras, or a lagging camera counts as silent.

Thread-safety: every public method takes one lock, so the node may call from callbacks of a
multi-threaded executor and a timer at once; returned captures belong to the caller.
"""

import threading
from collections import deque
from dataclasses import dataclass

from .units import MS, SEC

ON_SILENT = ("wait", "drop")
IMAGE_DROPS = ("unmatched", "overflow", "stale", "reset")
LIDAR_SOURCE = "lidar"  # the depth source name of the LiDAR (shared by all cameras)
LATE_RUN = 3  # this many late messages of one input in a row mean its clock went back
LEFTOVER_RUN = 30  # messages of an input still on the old timeline after a jump back dropped at most


@dataclass(frozen=True)
class Capture:
    """One synchronised capture.

    stamp_ns: midpoint of the image stamps (int ns). images: camera -> (stamp_ns, payload), in
    the order of the cameras list. depth: source -> (stamp_ns, payload) for the sources that had
    a message within tolerance.
    """

    stamp_ns: int
    images: dict
    depth: dict


@dataclass
class _Complete:
    """A capture whose image set is complete, waiting (at most until `deadline`) for depth."""

    stamp: int
    images: dict
    deadline: int


class CaptureSync:
    """Synchronises images of `cameras` (within `slop_ns`) and attaches optional depth; see module doc.

    depth_sources: names of depth inputs (a camera's name = its registered depth; else shared).
    depth_tolerance_ns: largest distance between a depth message's span and the reference stamp attached.
    depth_wait_ns: longest a complete capture waits for depth, in message time.
    max_pending: bound of every queue (images per camera, depth per source, waiting captures).
    camera_timeout_ns: message time without a camera before it counts as silent.
    on_silent: "wait" or "drop" (see module doc).
    """

    def __init__(self, cameras, slop_ns, depth_sources=(), depth_tolerance_ns=50 * MS, depth_wait_ns=100 * MS,
                 max_pending=30, camera_timeout_ns=1000 * MS, on_silent="wait"):
        cameras, depth_sources = list(cameras), list(depth_sources)
        if not cameras or len(set(cameras)) != len(cameras):
            raise ValueError(f"cameras must be a non-empty list of distinct names, got {cameras}")
        if len(set(depth_sources)) != len(depth_sources):
            raise ValueError(f"depth_sources must be distinct, got {depth_sources}")
        if min(slop_ns, depth_tolerance_ns, depth_wait_ns) < 0 or camera_timeout_ns <= 0 or max_pending < 1:
            raise ValueError("slop, depth tolerance and depth wait must be >= 0, camera timeout > 0, max_pending >= 1")
        if on_silent not in ON_SILENT:
            raise ValueError(f"on_silent must be one of {ON_SILENT}, got {on_silent!r}")
        self.cameras, self.depth_sources = cameras, depth_sources
        self.slop_ns, self.depth_tolerance_ns = int(slop_ns), int(depth_tolerance_ns)
        self.depth_wait_ns = int(depth_wait_ns)
        self.max_pending, self.camera_timeout_ns, self.on_silent = int(max_pending), int(camera_timeout_ns), on_silent
        self._lock = threading.Lock()
        self._gap = {}  # camera -> smallest positive gap between its successive stamps (kept across resets)
        self._received = dict.fromkeys(cameras, 0)
        self._dropped = dict.fromkeys(IMAGE_DROPS, 0)
        self._depth_stats = {s: dict.fromkeys(("received", "attached", "missing", "stale", "overflow"), 0)
                             for s in depth_sources}
        self._captures = 0
        self._reset_count = 0
        self._reasons = []
        self._refusals = []
        self._last_reason = None
        self._first_now = None
        self._clear()

    def configure(self, slop_ns, depth_tolerance_ns, camera_timeout_ns):
        """New slop, depth tolerance and camera timeout (ns) for what comes next, under the lock."""
        if min(slop_ns, depth_tolerance_ns) < 0 or camera_timeout_ns <= 0:
            raise ValueError("slop and depth tolerance must be >= 0, camera timeout > 0")
        with self._lock:
            self.slop_ns, self.depth_tolerance_ns = int(slop_ns), int(depth_tolerance_ns)
            self.camera_timeout_ns = int(camera_timeout_ns)

    def _clear(self):
        self._queues = {c: deque() for c in self.cameras}
        self._last = {}  # camera -> newest accepted image stamp
        self._depth = {s: [] for s in self.depth_sources}  # sorted (stamp, payload, first, last)
        self._depth_last = {}
        self._complete = deque()
        self._clock = None  # newest stamp received since the last reset (message time)
        self._image_clock = None  # newest image stamp since the last reset (what camera silence is measured in)
        self._origin = None  # first stamp since the last reset: when never-seen cameras start counting
        self._now = None  # latest poll time
        self._last_stamp = None  # stamp of the last emitted capture
        self._leftover = {}  # (kind, name) -> its newest stamp before a reset, until it too jumps back
        self._late = {}  # (kind, name) -> late messages in a row
        self._left_dropped = {}  # (kind, name) -> its messages dropped as still on the old timeline since the reset
        self._early = {}  # (kind, name) -> messages stamped far ahead in a row
        self._jump_ns = 0  # how far time jumped back at the last reset

    # ---- public API -------------------------------------------------------------------------

    def add_image(self, camera, stamp_ns, payload):
        """Buffers one image of `camera` (stamp int ns); returns the captures this completes."""
        stamp_ns = int(stamp_ns)
        with self._lock:
            if camera not in self._queues:
                raise ValueError(f"unknown camera {camera!r}; configured: {self.cameras}")
            self._received[camera] += 1
            if not self._admit("image", camera, stamp_ns, self._last.get(camera), self.slop_ns):
                self._dropped["stale"] += 1
                return []
            last = self._last.get(camera)
            if last is not None:
                self._gap[camera] = min(self._gap.get(camera, stamp_ns - last), stamp_ns - last)
            self._last[camera] = stamp_ns
            self._image_clock = stamp_ns if self._image_clock is None else max(self._image_clock, stamp_ns)
            queue = self._queues[camera]
            queue.append((stamp_ns, payload))
            if len(queue) > self.max_pending:
                queue.popleft()
                self._dropped["overflow"] += 1
            self._match()
            return self._release()

    def add_depth(self, source, stamp_ns, payload, span=None):
        """Buffers one depth message (registered depth image or LiDAR cloud) of `source`; returns released captures.

        span: (first_ns, last_ns) the data covers (a sweep's point times), if not just stamp_ns."""
        stamp_ns = int(stamp_ns)
        first, last = (stamp_ns, stamp_ns) if span is None else (int(span[0]), int(span[1]))
        if last < first:
            raise ValueError(f"depth span must be (first, last) with first <= last, got {span}")
        with self._lock:
            if source not in self._depth:
                raise ValueError(f"unknown depth source {source!r}; configured: {self.depth_sources}")
            stats = self._depth_stats[source]
            stats["received"] += 1
            threshold = max(self.slop_ns, self.depth_tolerance_ns)
            if not self._admit("depth", source, stamp_ns, self._depth_last.get(source), threshold):
                stats["stale"] += 1
                return []
            self._depth_last[source] = stamp_ns
            buffer = self._depth[source]
            buffer.append((stamp_ns, payload, first, last))
            if len(buffer) > self.max_pending:
                buffer.pop(0)
                stats["overflow"] += 1
            return self._release()

    def poll(self, now_ns):
        """Timer tick: `now_ns` is the node clock in the stamps' time base (None: not known now);
        returns captures whose depth wait ended."""
        with self._lock:
            if now_ns is not None:
                self._now = int(now_ns) if self._now is None else max(self._now, int(now_ns))
                if self._first_now is None:
                    self._first_now = self._now
            return self._release()

    def jumped_back(self, now_ns, jump_ns):
        """The node's clock jumped back by `jump_ns`, to `now_ns` in the stamps' time base (None:
        not known): the buffers are cleared as when the inputs jump back, and messages still on
        the old timeline (more than half the jump ahead of `now_ns`) are dropped as stale until
        their input jumps too, for camera_timeout_ns of the new timeline or LEFTOVER_RUN messages
        of that input at most."""
        with self._lock:
            self._reset(None, None)
            if now_ns is not None:
                self._clock = self._origin = int(now_ns)
            self._jump_ns = int(jump_ns)

    def forget_now(self):
        """Forget the node clock of the last polls (the stamps' time base it was made in changed)."""
        with self._lock:
            self._now = None

    def silent_cameras(self, now_ns=None):
        """Cameras without an image for camera_timeout_ns, by message time or `now_ns` (stamps' time base)."""
        with self._lock:
            if now_ns is not None and self._first_now is None:
                self._first_now = int(now_ns)
            clock = max((t for t in (self._image_clock, now_ns, self._now) if t is not None), default=None)
            origin = self._origin if self._origin is not None else self._first_now
            return self._silent(clock, origin)

    def silent_depth_sources(self):
        """Depth sources without an accepted message for camera_timeout_ns of image time (the cameras'
        newest stamp) since their last one, or since the first message after the last reset."""
        with self._lock:
            if self._image_clock is None or self._origin is None:
                return []
            return [s for s in self.depth_sources
                    if self._image_clock - self._depth_last.get(s, self._origin) >= self.camera_timeout_ns]

    def take_refusals(self):
        """Why messages were dropped as stamped far ahead, since the last call (oldest first)."""
        with self._lock:
            refusals, self._refusals = self._refusals, []
            return refusals

    def take_resets(self):
        """The reasons of the resets since the last call (oldest first); the node logs them and resets its window."""
        with self._lock:
            reasons, self._reasons = self._reasons, []
            return reasons

    def stats(self):
        """A snapshot of the counters (for diagnostics)."""
        with self._lock:
            return {
                "images": dict(self._received),
                "captures": self._captures,
                "dropped": dict(self._dropped),
                "latest": dict(self._last),  # each camera's newest image stamp
                "resets": self._reset_count,
                "last_reset": self._last_reason,
                "depth": {s: dict(v) for s, v in self._depth_stats.items()},
                "queued": {"images": {c: len(q) for c, q in self._queues.items()},
                           "depth": {s: len(b) for s, b in self._depth.items()},
                           "captures": len(self._complete)},
            }

    # ---- time checks ------------------------------------------------------------------------

    def _admit(self, kind, name, stamp, last, threshold):
        """False for a stale message; resets all buffers when time jumped back; True to keep the message."""
        key = (kind, name)
        old = self._leftover.get(key)
        if old is not None:  # this input has not jumped back yet since the last reset
            ahead = max(threshold, self._jump_ns // 2)
            dropped = self._left_dropped.get(key, 0)
            if (stamp >= old - threshold and self._clock is not None and stamp > self._clock + ahead
                    and self._clock - self._origin < self.camera_timeout_ns and dropped < LEFTOVER_RUN):
                self._left_dropped[key] = dropped + 1
                return False  # still on the old timeline (for a while at most)
            del self._leftover[key]
        elif last is not None and stamp < last - threshold:
            late = self._late.get(key, 0) + 1
            if last - stamp <= self.camera_timeout_ns and late < LATE_RUN:
                self._late[key] = late
                return False  # delivered out of order
            if kind == "depth":  # an optional input's clock alone: it starts again there, the cameras go on
                self._depth[name].clear()
                others = [*self._last.values(), *(t for s, t in self._depth_last.items() if s != name)]
                self._clock = max(others, default=None)  # (message time no longer counts its stamps ahead)
                self._refusals.append(f"depth source {name}: time jumped back by {(last - stamp) / SEC:.3f} s: its "
                                      "buffered messages dropped and its new stamps taken; the cameras go on (a bag "
                                      "loop resets everything when they jump too)")
            else:
                self._reset(key, f"time jumped back by {(last - stamp) / SEC:.3f} s on camera {name}: buffers "
                                 "cleared (a bag loop, a clock reset, or its previous message stamped ahead of time)")
                self._jump_ns = last - stamp
        elif last is not None and stamp <= last:
            return False
        ahead = stamp - max((t for t in (self._clock, self._now) if t is not None), default=stamp)
        if ahead > self.camera_timeout_ns:
            early = self._early.get(key, 0) + 1
            if early < LATE_RUN:
                self._early[key] = early
                label = "camera" if kind == "image" else "depth source"
                self._refusals.append(f"{label} {name}: a message stamped {ahead / SEC:.3f} s ahead of the other "
                                      f"inputs and the clock dropped (its clock jumped forward, or this stamp is "
                                      f"wrong; taken after {LATE_RUN} in a row)")
                return False
        self._early.pop(key, None)
        self._late.pop(key, None)
        self._clock = stamp if self._clock is None else max(self._clock, stamp)
        if self._origin is None:
            self._origin = stamp
        return True

    def _reset(self, key, reason):
        self._dropped["reset"] += sum(map(len, self._queues.values()))
        self._dropped["reset"] += sum(len(c.images) for c in self._complete)
        leftover = {("image", c): t for c, t in self._last.items()}
        leftover.update({("depth", s): t for s, t in self._depth_last.items()})
        leftover.pop(key, None)
        self._clear()
        self._leftover = leftover
        self._reset_count += 1
        if reason is not None:  # (None: the node's clock jumped back, which the node says itself)
            self._reasons.append(reason)
            self._last_reason = reason

    def _silent(self, clock, origin):
        if clock is None or origin is None:
            return []
        return [c for c in self.cameras if clock - self._last.get(c, origin) >= self.camera_timeout_ns]

    # ---- matching ---------------------------------------------------------------------------

    def _drop_head(self, camera, reason):
        self._queues[camera].popleft()
        self._dropped[reason] += 1

    def _match(self):
        """Moves every decidable image set from the camera queues to the complete captures."""
        while True:
            active = self.cameras
            if self.on_silent == "drop":
                silent = set(self._silent(self._image_clock, self._origin))
                for c in silent:
                    while self._queues[c]:
                        self._drop_head(c, "unmatched")
                active = [c for c in self.cameras if c not in silent]
            heads = {c: self._queues[c][0][0] for c in active if self._queues[c]}
            if not heads:
                return
            first = min(heads, key=heads.get)
            t0 = heads[first]
            # Earliest stamp each other camera could still pair with: its head, or newer than its last stamp.
            bounds = [heads.get(c, self._last[c] + 1 if c in self._last else None) for c in active if c != first]
            if any(b is not None and b - t0 >= self.slop_ns for b in bounds):
                self._drop_head(first, "unmatched")
                continue
            if len(heads) < len(active):
                return
            others = [t for c, t in heads.items() if c != first]
            spread = max(others, default=t0) - t0
            if spread > 0:
                low, high = min(others), max(others)
                queue = self._queues[first]
                if len(queue) > 1:  # would the successor of the earliest image make a tighter set?
                    nxt = queue[1][0]
                    if max(nxt, high) - min(nxt, low) < spread:
                        self._drop_head(first, "unmatched")
                        continue
                elif (self._last[first] + self._gap.get(first, 1) < low + spread
                      and first not in self._silent(self._image_clock, self._origin)):
                    return  # its next image might still pair more tightly: wait for it
            images = {c: self._queues[c].popleft() for c in self.cameras if c in heads}
            self._complete_set(images, t0, max(heads.values()))

    def _complete_set(self, images, low, high):
        stamp = (low + high) // 2
        if self._last_stamp is not None and stamp <= self._last_stamp:
            stamp = self._last_stamp + 1  # only when on_silent="drop" changes the set of cameras
        self._last_stamp = stamp
        self._complete.append(_Complete(stamp, images, high + self.depth_wait_ns))

    # ---- depth and release ------------------------------------------------------------------

    def _reference(self, capture, source):
        """The stamp `source` is matched to: its camera's image stamp, or the capture stamp for shared sources."""
        if source in self._queues:
            return capture.images[source][0] if source in capture.images else None
        return capture.stamp

    def _depth_settled(self, capture):
        """True when every source is settled for the capture (see the module doc)."""
        for source in self.depth_sources:
            ref = self._reference(capture, source)
            if ref is None:
                continue
            best = self._nearest_depth(source, ref)
            if best is not None and (best[0] == 0 or source not in self._queues):
                continue
            bound = self.depth_tolerance_ns if best is None else best[0]
            newest = self._depth[source][-1][2] if self._depth[source] else None
            if newest is None or newest < ref + bound:
                return False
        return True

    def _nearest_depth(self, source, ref):
        """(distance ns, message) of the buffered message of `source` nearest to `ref` within
        tolerance, or None."""
        best = min(((max(first - ref, ref - last, 0), (stamp, payload))
                    for stamp, payload, first, last in self._depth[source]), key=lambda m: m[0], default=None)
        return best if best is not None and best[0] <= self.depth_tolerance_ns else None

    def _release(self):
        """Emits the complete captures (oldest first) whose depth is settled or whose wait is over."""
        clock = max((t for t in (self._clock, self._now) if t is not None), default=None)
        out = []
        while self._complete:
            capture = self._complete[0]
            if not (len(self._complete) > self.max_pending or (clock is not None and clock >= capture.deadline)
                    or self._depth_settled(capture)):
                break
            self._complete.popleft()
            depth = {}
            for source in self.depth_sources:
                ref = self._reference(capture, source)
                found = self._nearest_depth(source, ref) if ref is not None else None
                if found is None:
                    self._depth_stats[source]["missing"] += 1
                else:
                    depth[source] = found[1]
                    self._depth_stats[source]["attached"] += 1
            out.append(Capture(capture.stamp, capture.images, depth))
        self._captures += len(out)
        self._prune_depth()
        return out

    def _prune_depth(self):
        """Forgets depth older than tolerance before the earliest stamp a future capture can have."""
        floors = [min(t for t, _ in c.images.values()) for c in self._complete]
        dropped = set(self._silent(self._image_clock, self._origin)) if self.on_silent == "drop" else set()
        for c in self.cameras:
            if self._queues[c]:
                floors.append(self._queues[c][0][0])
            elif c in self._last:
                floors.append(self._last[c] + 1)
            elif c not in dropped:
                return  # a camera that never published could still bring any stamp
        if not floors:
            return
        limit = min(floors) - self.depth_tolerance_ns
        for buffer in self._depth.values():
            while buffer and buffer[0][3] < limit:
                buffer.pop(0)
