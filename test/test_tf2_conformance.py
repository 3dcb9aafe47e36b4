"""The built-in TF buffer against tf2_ros.Buffer (geometry2 0.39, built by tools/dev) on random trees.

Random scenarios (several trees, chains of depth 3-5, static and dynamic edges, samples out of
order and too old for the cache, repeated stamps, re-parenting, static <-> dynamic switches,
leading slashes, invalid transforms, loops, clear(), a short cache so pruning happens) go into
both buffers through the same TransformStamped messages; then thousands of lookups at stamp 0,
at sample stamps and between them, with known, unknown, empty and slashed frame ids, must give
the same transform (1e-9) or the same failure kind.

Deliberate differences (not generated here; each has its own test below): the built-in buffer
refuses an infinite translation (tf2 stores it and answers inf/NaN), and a negative lookup stamp
raises InvalidArgument (rclpy's Time cannot hold one, so tf2 is never asked).
"""

import numpy as np
import pytest

pytest.importorskip("rclpy")
tf2_ros = pytest.importorskip("tf2_ros", reason="tf2_ros not built (tools/dev builds it)")
from geometry_msgs.msg import TransformStamped  # noqa: E402
from rclpy.duration import Duration  # noqa: E402
from rclpy.time import Time  # noqa: E402

from mapanything_ros.geometry.tf_tree import (  # noqa: E402
    ConnectivityError,
    ExtrapolationError,
    InvalidArgument,
    TransformError,
    TransformNotFound,
    TransformTree,
)
from mapanything_ros.ros.tf import set_from_message, transform_to_matrix  # noqa: E402

SEC = 1_000_000_000
CACHE_S = 2.0
KINDS = ((tf2_ros.LookupException, TransformNotFound), (tf2_ros.ConnectivityException, ConnectivityError),
         (tf2_ros.ExtrapolationException, ExtrapolationError), (tf2_ros.InvalidArgumentException, InvalidArgument))


def message(parent, child, stamp_ns, quat, trans):
    msg = TransformStamped()
    msg.header.frame_id, msg.child_frame_id = parent, child
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), SEC)
    r, t = msg.transform.rotation, msg.transform.translation
    r.x, r.y, r.z, r.w = (float(v) for v in quat)
    t.x, t.y, t.z = (float(v) for v in trans)
    return msg


class Pair:
    """tf2_ros.Buffer and TransformTree fed the same messages; compare() runs one lookup on both."""

    def __init__(self):
        self.tf2 = tf2_ros.Buffer(cache_time=Duration(seconds=CACHE_S))
        self.tree = TransformTree(max_history_s=CACHE_S)
        self.lookups, self.failures = 0, {}

    def set(self, msg, static):
        (self.tf2.set_transform_static if static else self.tf2.set_transform)(msg, "test")
        try:
            set_from_message(self.tree, msg, static)
        except ValueError:
            pass  # tf2 logs and ignores these too

    def clear(self):
        self.tf2.clear()
        self.tree.clear()

    def compare(self, target, source, stamp_ns):
        """None if both agree, else a description of the disagreement."""
        self.lookups += 1
        try:
            tf = self.tf2.lookup_transform_core(target, source, Time(nanoseconds=stamp_ns))
            theirs = transform_to_matrix(tf.transform)
        except tf2_ros.TransformException as e:
            theirs = next(mine for kind, mine in KINDS if isinstance(e, kind))
        try:
            ours = self.tree.lookup(target, source, stamp_ns)
        except TransformError as e:
            ours = type(e)
        name = theirs.__name__ if isinstance(theirs, type) else "ok"
        self.failures[name] = self.failures.get(name, 0) + 1
        if isinstance(theirs, type) or isinstance(ours, type):
            return None if theirs is ours else f"tf2 {theirs!r:.60} vs ours {ours!r:.60}"
        err = float(np.abs(theirs - ours).max())
        return None if err <= 1e-9 else f"max error {err:.3g}"


def random_quat(rng):
    """A random rotation, one time in ten not of unit length (both buffers normalise it)."""
    q = rng.normal(size=4)
    return q / np.linalg.norm(q) * (rng.uniform(0.5, 2.0) if rng.random() < 0.1 else 1.0)


def run_scenario(seed, events=250, lookups_per_event=5):
    """One random history; returns (pair, [disagreements])."""
    rng = np.random.default_rng(seed)
    pair = Pair()
    frames, parent, static = [], {}, {}
    for k in range(int(rng.integers(2, 4))):  # separate trees
        names = [f"t{k}_f{i}" for i in range(int(rng.integers(3, 6)) + 1)]  # a chain of depth 3-5 ...
        for i, name in enumerate(names[1:], 1):
            parent[name] = names[i - 1]
        for j in range(int(rng.integers(0, 3))):  # ... with branches
            parent[f"t{k}_b{j}"] = names[int(rng.integers(0, len(names) - 1))]
            names.append(f"t{k}_b{j}")
        frames += names
    for child in parent:
        static[child] = bool(rng.random() < 0.4)
    stamps = {child: [] for child in parent}
    now = SEC
    bad = []

    def slash(name):
        return "/" + name if rng.random() < 0.1 else name

    def send(child, stamp_ns, quat=None, trans=None):
        quat = random_quat(rng) if quat is None else quat
        trans = rng.uniform(-5, 5, 3) if trans is None else trans
        pair.set(message(slash(parent[child]), slash(child), stamp_ns, quat, trans), static[child])
        if not static[child]:
            stamps[child].append(stamp_ns)

    for child in parent:  # every edge once, so that most lookups can succeed
        send(child, 0 if static[child] else now)
    for _ in range(events):
        now += int(rng.uniform(0.02, 0.3) * SEC)
        child = list(parent)[int(rng.integers(len(parent)))]
        u = rng.random()
        if u < 0.04:  # re-parent (sometimes into another tree, sometimes closing a loop)
            parent[child] = frames[int(rng.integers(len(frames)))]
            if parent[child] == child:
                parent[child] = "elsewhere"
            send(child, 0 if static[child] else now)
        elif u < 0.07:  # static <-> dynamic
            static[child] = not static[child]
            send(child, 0 if static[child] else now)
        elif u < 0.08:
            pair.clear()
        elif u < 0.10:  # transforms both refuse
            pair.set(message(child, child, now, random_quat(rng), (0, 0, 0)), False)
            pair.set(message(parent[child], "", now, random_quat(rng), (0, 0, 0)), False)
            pair.set(message(parent[child], child, now, (0, 0, 0, 0), (0, 0, 0)), False)
            pair.set(message(parent[child], child, now, (np.nan, 0, 0, 1), (0, 0, 0)), False)
        elif static[child]:
            send(child, 0)
        elif u < 0.16 and stamps[child]:  # a repeated stamp (sometimes the identical sample)
            stamp = stamps[child][int(rng.integers(len(stamps[child])))]
            send(child, stamp)
        elif u < 0.30:  # out of order, sometimes older than the cache keeps
            send(child, max(1, now - int(rng.uniform(0, 3.0) * SEC)))
        else:
            send(child, now)
        for _ in range(lookups_per_event):
            names = [frames[int(rng.integers(len(frames)))] for _ in range(2)]
            v = rng.random()
            if v < 0.05:
                names[1] = names[0]
            elif v < 0.08:
                names[int(rng.integers(2))] = "/" + names[0]
            elif v < 0.10:
                names[int(rng.integers(2))] = ""
            elif v < 0.13:
                names[int(rng.integers(2))] = "unknown"
            w = rng.random()
            if w < 0.3:
                stamp = 0
            elif w < 0.6 and any(stamps.values()):
                known = [s for ss in stamps.values() for s in ss[-20:]]
                stamp = known[int(rng.integers(len(known)))]
            else:
                stamp = max(1, now - int(rng.uniform(-0.3, 2.5) * SEC))
            problem = pair.compare(names[0], names[1], stamp)
            if problem:
                bad.append(f"seed {seed}: lookup({names[0]!r}, {names[1]!r}, {stamp}): {problem}")
    return pair, bad


def test_builtin_buffer_agrees_with_tf2_ros_on_random_trees(capsys):
    total, failures, bad = 0, {}, []
    for seed in range(24):
        pair, problems = run_scenario(seed)
        total += pair.lookups
        bad += problems
        for kind, n in pair.failures.items():
            failures[kind] = failures.get(kind, 0) + n
    with capsys.disabled():
        print(f"\n[tf2 conformance] {total} lookups, outcomes {failures}, {len(bad)} disagreements")
    assert total >= 5000
    assert all(failures.get(k, 0) > 50 for k in ("ok", "TransformNotFound", "ConnectivityError",
                                                 "ExtrapolationError", "InvalidArgument")), failures
    assert not bad, "\n".join(bad[:20])


def test_deliberate_difference_infinite_translation():
    """tf2 checks only for NaN and stores an infinite translation; the built-in buffer refuses it."""
    pair = Pair()
    pair.set(message("map", "odom", 0, (0, 0, 0, 1), (np.inf, 0, 0)), True)
    assert not np.isfinite(transform_to_matrix(pair.tf2.lookup_transform_core("map", "odom", Time()).transform)).all()
    assert not pair.tree.has_frame("odom")


def test_deliberate_difference_negative_stamp():
    """rclpy's Time refuses a negative stamp (ValueError) before tf2 sees it; the built-in buffer
    raises InvalidArgument, a TransformError, so callers need only catch TransformError."""
    with pytest.raises(ValueError):
        Time(nanoseconds=-1)
    with pytest.raises(InvalidArgument):
        TransformTree().lookup("map", "odom", -1)
