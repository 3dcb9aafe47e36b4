"""Window: the last N keyframes (captures of one or more cameras), oldest evicted first.

A capture is the frames of all cameras with one capture stamp (Frame.capture_ns); it enters or
is refused as a whole.
Reference view (view 0 of the model, whose camera frame the model's outputs are expressed in):
the first frame of the newest keyframe (reference="newest", the default: a live node's
outputs are then about its freshest image) or of the oldest keyframe ("oldest": stays fixed
while the window slides, until that keyframe is evicted). The first frame of a capture is the
camera listed first, so a rig should list its main camera first.
A capture older than the last one seen (a bag looping, a clock reset) clears the window first;
the reason is logged and returned.
"""

import logging
from collections import deque
from dataclasses import dataclass

from .frame import Frame
from .policy import KeyframePolicy

log = logging.getLogger(__name__)
REFERENCES = ("newest", "oldest")


@dataclass(frozen=True)
class Admission:
    """What Window.add did: admitted (bool), reason (why or why not), reset (why the window was cleared, or None)."""

    admitted: bool
    reason: str
    reset: str | None = None


class Window:
    """At most `max_keyframes` captures, chosen by `policy`; `reference` is "newest" or "oldest"."""

    def __init__(self, max_keyframes=8, policy=None, reference="newest"):
        if max_keyframes < 1:
            raise ValueError(f"max_keyframes must be >= 1, got {max_keyframes}")
        if reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")
        self.policy = policy or KeyframePolicy()
        self.reference = reference
        self.keyframes = deque(maxlen=max_keyframes)
        self.last_stamp_ns = None
        self.rate = None  # policy.MotionRate of the last window, for captures without a pose

    def __len__(self):
        return len(self.keyframes)

    def clear(self):
        """Drop every keyframe and forget the last stamp and motion rate."""
        self.keyframes.clear()
        self.last_stamp_ns = None
        self.rate = None

    def add(self, capture):
        """Offer a capture (a Frame or a sequence of Frames with one capture_ns); returns an Admission."""
        frames = (capture,) if isinstance(capture, Frame) else tuple(capture)
        if not frames:
            raise ValueError("empty capture")
        stamp = frames[0].capture_ns
        if any(f.capture_ns != stamp for f in frames):
            raise ValueError(f"a capture needs one stamp, got {sorted({f.capture_ns for f in frames})}")
        if len({f.frame_id for f in frames}) != len(frames):
            raise ValueError("a capture holds one frame per camera; frame_ids repeat")
        reset = None
        if self.last_stamp_ns is not None and stamp < self.last_stamp_ns:
            reset = f"time went backwards from {self.last_stamp_ns} ns to {stamp} ns; window cleared"
            log.warning(reset)
            self.clear()
        self.last_stamp_ns = stamp
        if not self.keyframes:
            reason = "first keyframe"
        elif stamp == self.keyframes[-1][0].capture_ns:
            return Admission(False, "same stamp as the newest keyframe", reset)
        else:
            reason = self.policy.reason(self.keyframes[-1], frames, self.rate)
            if reason is None:
                return Admission(False, "below every keyframe threshold", reset)
        self.keyframes.append(frames)
        return Admission(True, reason, reset)

    def discard(self, key):
        """Drop the keyframe holding the frame with Frame.key `key` (a frame that could not be
        prepared, or whose first window failed); True if there was one."""
        for capture in self.keyframes:
            if any(f.key == key for f in capture):
                self.keyframes.remove(capture)
                return True
        return False

    def views(self):
        """All frames in model view order: the reference keyframe's frames first (reference view
        first), then the other keyframes oldest to newest. Empty if the window is."""
        captures = list(self.keyframes)
        if not captures:
            return []
        ref = captures.pop(-1 if self.reference == "newest" else 0)
        return [f for capture in [ref, *captures] for f in capture]
