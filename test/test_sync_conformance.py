"""CaptureSync against message_filters.ApproximateTimeSynchronizer on camera-only streams.

Random rigs of 2-4 cameras at one rate, each with its own offset, per-frame jitter and latency,
dropped frames, messages arriving interleaved in latency order (each camera in order): with a
slop below half the frame period, both give the same groups, in the same order.

Where they differ by design (test below): message_filters' Python synchronizer emits the first
set within the slop the moment a message arrives; CaptureSync waits while a later image of the
earliest camera could still make a tighter set (the aim of ROS's C++ ApproximateTime policy).
That only matters when the slop exceeds half the frame period.
"""

import numpy as np
import pytest

pytest.importorskip("rclpy")
message_filters = pytest.importorskip("message_filters", reason="message_filters not built (tools/dev builds it)")
from std_msgs.msg import Header  # noqa: E402

from mapanything_ros.sync import CaptureSync  # noqa: E402

MS = 1_000_000


class Stamped:
    """The part of a message message_filters reads: header.stamp."""

    def __init__(self, stamp_ns):
        self.header = Header()
        self.header.stamp.sec, self.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        self.stamp_ns = stamp_ns


def both(cameras, arrivals, slop_ns):
    """Groups [(stamp per camera)] from message_filters and from CaptureSync, fed `arrivals` [(camera, stamp)]."""
    inputs = {c: message_filters.SimpleFilter() for c in cameras}
    theirs = []
    sync = message_filters.ApproximateTimeSynchronizer([inputs[c] for c in cameras], queue_size=10,
                                                       slop=slop_ns / 1e9)
    sync.registerCallback(lambda *msgs: theirs.append(tuple(m.stamp_ns for m in msgs)))
    ours_sync, ours = CaptureSync(cameras, slop_ns), []
    for camera, stamp in arrivals:
        inputs[camera].signalMessage(Stamped(stamp))
        for capture in ours_sync.add_image(camera, stamp, None):
            ours.append(tuple(capture.images[c][0] for c in cameras))
    return theirs, ours


def rig_stream(rng, cameras, frames=150, period_ms=100):
    """[(camera, stamp)] in arrival order: offsets +-8 ms, jitter +-3 ms, 10 % dropped, latency 5-45 ms."""
    offsets = rng.uniform(-8, 8, len(cameras))
    sent = []
    for k in range(frames):
        for c, camera in enumerate(cameras):
            if rng.random() < 0.1:
                continue
            stamp = int((1000 + k * period_ms + offsets[c] + rng.uniform(-3, 3)) * MS)
            sent.append((stamp + int(rng.uniform(5, 45) * MS), camera, stamp))
    arrival, last = [], {}
    for when, camera, stamp in sorted(sent):
        arrival.append((camera, stamp))
        assert stamp > last.get(camera, 0)  # per camera in order, as one DDS topic delivers
        last[camera] = stamp
    return arrival


def test_same_groups_as_message_filters_on_camera_rigs():
    groups = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        cameras = [f"cam{i}" for i in range(int(rng.integers(2, 5)))]
        theirs, ours = both(cameras, rig_stream(rng, cameras), slop_ns=30 * MS)
        # CaptureSync may still hold the newest set (it waits for the next frame when unsure)
        assert len(theirs) - 1 <= len(ours) <= len(theirs), (seed, len(theirs), len(ours))
        assert ours == theirs[:len(ours)], seed
        groups += len(ours)
    assert groups > 1500


def test_deliberate_difference_tightest_set_with_a_slop_over_half_the_period():
    arrivals = [("a", 0), ("b", 60 * MS), ("a", 100 * MS), ("b", 160 * MS), ("a", 200 * MS), ("b", 260 * MS)]
    theirs, ours = both(["a", "b"], arrivals, slop_ns=80 * MS)
    assert theirs == [(0, 60 * MS), (100 * MS, 160 * MS), (200 * MS, 260 * MS)]  # first within the slop
    assert ours == [(100 * MS, 60 * MS), (200 * MS, 160 * MS)]  # 40 ms apart rather than 60


def test_same_groups_as_message_filters_on_whole_millisecond_stamps():
    """Stamps on whole milliseconds make spreads equal to the slop common: both refuse them (< slop)."""
    groups = 0
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        cameras = [f"cam{i}" for i in range(int(rng.integers(2, 4)))]
        arrivals = [(c, t // MS * MS) for c, t in rig_stream(rng, cameras)]
        theirs, ours = both(cameras, arrivals, slop_ns=8 * MS)
        assert len(theirs) - 1 <= len(ours) <= len(theirs), (seed, len(theirs), len(ours))
        assert ours == theirs[:len(ours)], seed
        assert all(max(g) - min(g) < 8 * MS for g in ours)
        groups += len(ours)
    assert groups > 400


def test_a_frame_late_within_its_camera_costs_its_own_set_only():
    """Each camera's stream with 3 % of its frames delivered one to three frames late (beyond the
    slop): message_filters still pairs a late frame with what is queued, out of stamp order;
    CaptureSync keeps its captures in stamp order, so a late frame's set is lost, and nothing else
    (no reset: before, every late frame cleared all buffers)."""
    for seed in range(10):
        rng = np.random.default_rng(200 + seed)
        cameras = [f"cam{i}" for i in range(int(rng.integers(2, 4)))]
        arrivals = rig_stream(rng, cameras)
        late = 0
        for i in range(len(arrivals) - 12):
            if rng.random() < 0.03:
                camera = arrivals[i][0]
                same = [j for j in range(i + 1, i + 12) if arrivals[j][0] == camera]
                later = same[min(int(rng.integers(0, 3)), len(same) - 1)]
                arrivals.insert(later, arrivals.pop(i))
                late += 1
        theirs, ours = both(cameras, arrivals, slop_ns=30 * MS)
        stamps = [min(g) for g in ours]
        assert stamps == sorted(stamps), seed
        assert set(ours) <= set(theirs), seed
        assert len(ours) >= len(theirs) - late - 1, (seed, len(theirs), len(ours), late)
