"""session.inputs: PendingCaptures (the session's TF wait queue) and the checks of a decoded sweep."""

import numpy as np

from mapanything_ros.geometry.tf_tree import TransformNotFound, TransformTree
from mapanything_ros.session.inputs import MAX_SWEEP_NS, Cloud, PendingCaptures


def test_waits_in_order_expires_and_stays_bounded():
    ready = {"a"}

    def build(cap):
        if cap not in ready:
            raise TransformNotFound(f"no pose for {cap}")
        return cap.upper()

    expired, drops = [], {"queue": 0, "tf_timeout": 0, "other": 5}
    q = PendingCaptures(max_len=3, drops=drops)
    q.push(["a", "b", "c"], now_ns=0)
    assert q.drain(build, 10, timeout_ns=100, on_expired=lambda c, e: expired.append(c)) == [("a", "A")]
    assert len(q) == 2 and not expired  # "b" blocks "c" while it may still get its TF
    q.push(["d", "e"], now_ns=20)  # full: the oldest waiting ("b") is dropped
    assert len(q) == 3 and drops["queue"] == 1
    ready.update({"d", "e"})
    assert q.drain(build, 200, timeout_ns=100, on_expired=lambda c, e: expired.append(c)) == [("d", "D"), ("e", "E")]
    assert expired == ["c"] and drops["tf_timeout"] == 1 and drops["other"] == 5
    q.push(["x"], now_ns=300)
    assert q.drain(build, 300, timeout_ns=100, on_expired=lambda c, e: expired.append(c), final=True) == []
    assert expired == ["c", "x"]
    q.push(["y"], 400)
    q.clear()
    assert len(q) == 0 and drops["queue"] == 2


def test_every_tf_lookup_failure_is_a_wait_not_an_exception():
    """Whatever TransformTree.lookup raises (unknown frame, '/' or empty frame id, negative stamp)
    is a TransformError, which drain treats as "no pose yet"."""
    tree = TransformTree()
    tree.set_transform("map", "cam", 0, np.eye(4), static=True)
    expired = []
    q = PendingCaptures()
    q.push([("cam", 5), ("/cam", 5), ("", 5), ("cam", -1), ("nowhere", 5)], now_ns=0)
    built = q.drain(lambda c: tree.lookup("map", *c), 10, timeout_ns=0, on_expired=lambda c, e: expired.append(c))
    assert [c for c, _ in built] == [("cam", 5)]
    assert expired == [("/cam", 5), ("", 5), ("cam", -1), ("nowhere", 5)]


def test_a_sweep_keeps_plausible_point_times_and_drops_the_others():
    points, stamp = np.zeros((3, 3)), 5_000_000_000
    good = np.array([stamp - 50_000_000, stamp, stamp + 100_000_000])
    cloud, problem = Cloud.checked(points, good, "lidar", stamp)
    assert problem is None and cloud.times is good and cloud.span == (stamp - 50_000_000, stamp + 100_000_000)
    for bad in (good + MAX_SWEEP_NS, np.array([stamp, stamp, -2**62])):
        cloud, problem = Cloud.checked(points, bad, "lidar", stamp)
        assert cloud.times is None and cloud.span == (stamp, stamp) and "from the header stamp" in problem
    cloud, problem = Cloud.checked(points, None, "lidar", stamp)
    assert problem is None and cloud.span == (stamp, stamp)
