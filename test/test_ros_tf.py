"""The TfLookup contract, run over real rclpy against every implementation present.

A publisher node in its own context (a second DDS participant, as another process would be)
sends /tf and /tf_static; the lookup under test lives on a listener node in another context.
Frame names carry a per-run token so other /tf traffic on the machine cannot interfere.
"""

import time
import uuid

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs not built (tools/dev builds it for a pip-installed ROS)")
import rclpy.executors  # noqa: E402
import rclpy.subscription  # noqa: E402
from rclpy.duration import Duration  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from mapanything_ros.geometry.tf_tree import (  # noqa: E402
    ConnectivityError,
    ExtrapolationError,
    TransformError,
    TransformNotFound,
)
from mapanything_ros.geometry.transforms import interpolate_pose, pose_from_quat_trans, se3_inverse  # noqa: E402
from mapanything_ros.ros import tf as tf_module  # noqa: E402
from mapanything_ros.ros.tf import (  # noqa: E402
    HAVE_TF2,
    TF_QOS,
    TF_STATIC_QOS,
    BuiltinTfLookup,
    Tf2Lookup,
    make_tf_lookup,
    matrix_to_transform,
    transform_to_matrix,
)

SEC = 1_000_000_000
IMPLS = [
    pytest.param(BuiltinTfLookup, id="builtin"),
    pytest.param(
        Tf2Lookup,
        id="tf2",
        marks=pytest.mark.skipif(not HAVE_TF2, reason="tf2_ros not importable (pip-installed ROS)"),
    ),
]


def yaw(angle, xyz=(0.0, 0.0, 0.0)):
    return pose_from_quat_trans([0.0, 0.0, np.sin(angle / 2), np.cos(angle / 2)], xyz)


class Ros:
    """A publisher context/node and listener contexts/nodes, spun by hand in the test thread."""

    def __init__(self):
        self.token = uuid.uuid4().hex[:8]
        self._contexts, self._executors = [], []
        self.pub_node = self._node("tf_publisher")[0]
        self.tf = self.pub_node.create_publisher(TFMessage, "/tf", TF_QOS)
        self.tf_static = self.pub_node.create_publisher(TFMessage, "/tf_static", TF_STATIC_QOS)
        self.statics = []

    def _node(self, name, **options):
        context = rclpy.context.Context()
        rclpy.init(context=context)
        node = rclpy.create_node(f"{name}_{self.token}", context=context, **options)
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        self._contexts.append((context, node))
        self._executors.append(executor)
        return node, executor

    def listener(self, impl):
        node, executor = self._node("tf_listener")
        lookup = impl(node)
        self.spin_until(lambda: self.tf.get_subscription_count() > 0)
        return lookup, executor

    def frame(self, name):
        return f"{name}_{self.token}"

    def publish(self, parent, child, stamp_ns, pose, static=False):
        msg = matrix_to_transform(pose, self.frame(parent), self.frame(child), stamp_ns)
        if static:  # one latched message holding every static transform, as tf2's broadcaster sends
            self.statics.append(msg)
            self.tf_static.publish(TFMessage(transforms=self.statics))
        else:
            self.tf.publish(TFMessage(transforms=[msg]))

    def spin_until(self, done, timeout_s=10.0):
        deadline = time.monotonic() + timeout_s
        while not done():
            assert time.monotonic() < deadline, "timed out waiting for ROS"
            for executor in self._executors:
                executor.spin_once(timeout_sec=0.01)

    def close(self):
        for executor in self._executors:
            executor.shutdown()
        for context, node in self._contexts:
            node.destroy_node()
            rclpy.shutdown(context=context)


@pytest.fixture
def ros():
    ros = Ros()
    yield ros
    ros.close()


@pytest.fixture(params=IMPLS)
def rig(request, ros):
    """A listener of the parametrised implementation with a map -> odom -> base -> {cam, lidar} tree.

    map -> odom, base -> cam, base -> lidar are static; odom -> base has samples at 2, 3 and 4 s.
    """
    lookup, _ = ros.listener(request.param)
    ros.publish("map", "odom", 0, yaw(0.1, (5.0, 0.0, 0.0)), static=True)
    ros.publish("base", "cam", 0, yaw(0.3, (0.1, 0.0, 0.5)), static=True)
    ros.publish("base", "lidar", 0, yaw(-1.0, (0.0, 0.2, 0.8)), static=True)
    for s in (2, 3, 4):
        ros.publish("odom", "base", s * SEC, yaw(0.2 * s, (s, 2.0, 0.0)))
    f = ros.frame
    ros.spin_until(lambda: lookup.can_transform(f("map"), f("lidar"), 4 * SEC))
    ros.spin_until(lambda: lookup.can_transform(f("map"), f("lidar"), 2 * SEC))
    return lookup, f


def test_static_and_dynamic_chain_equals_the_composition(rig):
    lookup, f = rig
    map_from_cam = yaw(0.1, (5.0, 0.0, 0.0)) @ yaw(0.6, (3.0, 2.0, 0.0)) @ yaw(0.3, (0.1, 0.0, 0.5))
    assert np.allclose(lookup.lookup(f("map"), f("cam"), 3 * SEC), map_from_cam, atol=1e-9)
    assert np.allclose(lookup.lookup(f("cam"), f("map"), 3 * SEC), se3_inverse(map_from_cam), atol=1e-9)
    cam_from_lidar = se3_inverse(yaw(0.3, (0.1, 0.0, 0.5))) @ yaw(-1.0, (0.0, 0.2, 0.8))
    for stamp in (0, 100 * SEC):  # static-only path: any time
        assert np.allclose(lookup.lookup(f("cam"), f("lidar"), stamp), cam_from_lidar, atol=1e-9)


def test_interpolation_at_a_midpoint(rig):
    lookup, f = rig
    expected = interpolate_pose(2 * SEC + SEC // 2, 2 * SEC, yaw(0.4, (2, 2, 0)), 3 * SEC, yaw(0.6, (3, 2, 0)))
    assert np.allclose(expected, yaw(0.5, (2.5, 2.0, 0.0)), atol=1e-12)
    assert np.allclose(lookup.lookup(f("odom"), f("base"), 2 * SEC + SEC // 2), expected, atol=1e-9)


def test_extrapolation_into_the_future_and_past_raises_at_once(rig):
    lookup, f = rig
    with pytest.raises(ExtrapolationError, match="future"):
        lookup.lookup(f("map"), f("cam"), 5 * SEC)
    with pytest.raises(ExtrapolationError, match="past"):
        lookup.lookup(f("map"), f("cam"), 1 * SEC)
    assert not lookup.can_transform(f("map"), f("cam"), 5 * SEC)


def test_unknown_and_disconnected_frames(rig, ros):
    lookup, f = rig
    with pytest.raises(TransformNotFound):
        lookup.lookup(f("map"), f("nowhere"), 3 * SEC)
    ros.publish("elsewhere", "island", 0, np.eye(4), static=True)
    ros.spin_until(lambda: lookup.can_transform(f("elsewhere"), f("island"), 0))
    with pytest.raises(ConnectivityError):
        lookup.lookup(f("map"), f("island"), 0)
    assert issubclass(TransformNotFound, LookupError) and issubclass(ConnectivityError, TransformError)


def test_time_zero_is_the_latest_common_time(rig, ros):
    lookup, f = rig
    assert np.allclose(lookup.lookup(f("odom"), f("base"), 0), yaw(0.8, (4.0, 2.0, 0.0)), atol=1e-9)
    for s in (2, 3):  # a second dynamic edge whose data ends at 3 s
        ros.publish("base", "arm", s * SEC, yaw(0.0, (0.0, 0.0, s)))
    ros.spin_until(lambda: lookup.can_transform(f("odom"), f("arm"), 3 * SEC))
    at_3s = yaw(0.6, (3.0, 2.0, 0.0)) @ yaw(0.0, (0.0, 0.0, 3.0))
    assert np.allclose(lookup.lookup(f("odom"), f("arm"), 0), at_3s, atol=1e-9)


@pytest.mark.parametrize("impl", IMPLS)
def test_static_transforms_published_before_the_listener_starts_arrive(ros, impl):
    ros.publish("base", "cam", 0, yaw(0.3, (0.1, 0.0, 0.5)), static=True)
    ros.publish("base", "lidar", 0, yaw(-1.0), static=True)
    lookup, _ = ros.listener(impl)
    ros.spin_until(lambda: lookup.can_transform(ros.frame("cam"), ros.frame("lidar"), 0))
    expected = se3_inverse(yaw(0.3, (0.1, 0.0, 0.5))) @ yaw(-1.0)
    assert np.allclose(lookup.lookup(ros.frame("cam"), ros.frame("lidar"), 0), expected, atol=1e-9)


@pytest.mark.parametrize("impl", IMPLS)
def test_one_callback_takes_every_transform_queued(ros, impl):
    """An executor takes one message per subscription per wait; the /tf callback takes those
    queued behind it too, ten in all: TF at 100 Hz keeps up with ten waits a second, and a
    callback holds the executor for ten messages at most."""
    lookup, executor = ros.listener(impl)
    f = ros.frame
    for k in range(1, 12):  # one more than a callback takes
        ros.publish("odom", "base", k * SEC // 100, yaw(0.01 * k))
    assert ros.tf.wait_for_all_acked(Duration(seconds=10))  # delivered (reliable, depth 100); none taken yet
    deadline = time.monotonic() + 10
    while not lookup.can_transform(f("odom"), f("base"), SEC // 100):  # the first /tf callback
        assert time.monotonic() < deadline
        executor.spin_once(timeout_sec=0.01)
    last = 10 * SEC // 100
    assert np.allclose(lookup.lookup(f("odom"), f("base"), last), yaw(0.1), atol=1e-9)
    assert not lookup.can_transform(f("odom"), f("base"), last + 1)  # the next callback's
    ros.spin_until(lambda: lookup.can_transform(f("odom"), f("base"), last + SEC // 100))


@pytest.mark.parametrize("impl", IMPLS)
def test_a_callback_without_its_subscription_keeps_its_message(ros, impl):
    """A /tf callback run before its subscription is kept (a multi-threaded executor can) or after
    it is destroyed buffers its own message and takes no other."""
    node, _ = ros._node("tf_gone")
    lookup = impl(node)
    f = ros.frame
    kept, lookup.subscriptions = lookup.subscriptions, []
    lookup._receive(TFMessage(transforms=[matrix_to_transform(yaw(0.1), f("odom"), f("base"), SEC)]), None, False)
    lookup.subscriptions = kept
    node.destroy_subscription(kept[0])
    lookup._receive(TFMessage(transforms=[matrix_to_transform(yaw(0.3), f("odom"), f("base"), 3 * SEC)]), None, False)
    assert np.allclose(lookup.lookup(f("odom"), f("base"), 2 * SEC), yaw(0.2), atol=1e-9)


# rclpy gives the publisher of a message (MessageInfo's publisher_gid) from Kilted on; Jazzy's does not.
GIDS = "publisher_gid" in getattr(getattr(rclpy.subscription, "MessageInfo", None), "__annotations__", {})


@pytest.mark.parametrize("impl", IMPLS)
def test_messages_lost_before_they_are_read_are_counted(ros, impl):
    """A /tf flood beyond what the executor takes in overwrites messages in the subscription's
    queue before they are read; the gaps in each publisher's sequence numbers count them (a second
    publisher's messages, interleaved, are no gap)."""
    node, executor = ros._node("tf_lossy", parameter_overrides=[Parameter("qos_overrides./tf.subscription.depth",
                                                                          value=5)])
    lookup = impl(node)
    assert lookup.queues == {"/tf": ("/tf", 5), "/tf_static": ("/tf_static", 100)} and lookup.uncounted is None
    ros.spin_until(lambda: ros.tf.get_subscription_count() > 0)
    other = ros.pub_node.create_publisher(TFMessage, "/tf", TF_QOS)
    ros.spin_until(lambda: other.get_subscription_count() > 0)
    f = ros.frame

    def send(publisher, k):
        publisher.publish(TFMessage(transforms=[matrix_to_transform(yaw(0.01 * k), f("odom"), f("base"), k * SEC)]))

    for k in (1, 2):  # one message of each publisher read first: their sequence numbers' start
        send((ros.tf, other)[k - 1], k)
        ros.spin_until(lambda: lookup.can_transform(f("odom"), f("base"), k * SEC))
    for k in range(3, 34):  # 31 messages, 5 kept by the queue: 26 lost, 6 of them the other publisher's
        send(other if k % 5 == 0 else ros.tf, k)
    assert ros.tf.wait_for_all_acked(Duration(seconds=10)) and other.wait_for_all_acked(Duration(seconds=10))
    ros.spin_until(lambda: lookup.can_transform(f("odom"), f("base"), 33 * SEC))
    send(ros.tf, 34)  # read at once: no gap
    ros.spin_until(lambda: lookup.can_transform(f("odom"), f("base"), 34 * SEC))
    if GIDS:
        assert lookup.uncounted is None and lookup.lost == {"/tf": 26, "/tf_static": 0}
    else:
        assert "no message's publisher" in lookup.uncounted and lookup.lost == {"/tf": 0, "/tf_static": 0}


def test_lost_messages_are_counted_per_publisher_and_the_publishers_kept_are_bounded(ros, monkeypatch):
    monkeypatch.setattr(tf_module, "MAX_PUBLISHERS", 3)
    node, _ = ros._node("tf_count")
    lookup = BuiltinTfLookup(node)

    def read(publisher, number, static=False):
        lookup._count({"publisher_gid": {"data": bytes([publisher])}, "publication_sequence_number": number}, static)

    read(1, 1)
    read(2, 7)
    read(2, 8)
    read(1, 4)  # 2 and 3 of publisher 1 lost
    read(3, 1, static=True)
    read(3, 3, static=True)  # 2 of publisher 3 lost, on /tf_static
    assert lookup.lost == {"/tf": 2, "/tf_static": 1} and lookup.uncounted is None
    read(4, 1)  # a fourth publisher: the one heard longest ago (2) is forgotten
    read(1, 9)  # 5 to 8 lost
    assert lookup.lost == {"/tf": 6, "/tf_static": 1}
    read(2, 20)  # heard again as if new: no gap counted; 3 forgotten
    assert lookup.lost == {"/tf": 6, "/tf_static": 1}
    read(2, 23)
    assert lookup.lost == {"/tf": 8, "/tf_static": 1}
    read(2, 21)  # reordered on the way (a best-effort override, a relay): late, not lost
    read(2, 24)
    read(2, 23)  # a repeat
    assert lookup.lost == {"/tf": 8, "/tf_static": 1}
    lookup._count(None, False)  # no message info (a message handed over by hand): nothing counted
    assert lookup.lost == {"/tf": 8, "/tf_static": 1} and lookup.uncounted is None
    lookup._count({"publisher_gid": {"implementation_identifier": "rmw_cyclonedds_cpp", "data": b"5"},
                   "publication_sequence_number": None}, False)  # as rmw_cyclonedds gives it
    assert lookup.uncounted == "rmw_cyclonedds_cpp gives no sequence numbers"
    lookup._count({"publication_sequence_number": 3}, False)  # as rclpy before Kilted gives it
    assert lookup.uncounted == "this rclpy gives no message's publisher (Kilted's and later do)"


def test_builtin_forgets_dynamic_transforms_when_sim_time_jumps_back(ros):
    node, _ = ros._node("tf_sim", parameter_overrides=[Parameter("use_sim_time", value=True)])
    lookup = BuiltinTfLookup(node)
    clock = ros.pub_node.create_publisher(Clock, "/clock", 10)

    def set_clock(s):
        msg = Clock()
        msg.clock.sec = s
        ros.spin_until(lambda: clock.publish(msg) or node.get_clock().now().nanoseconds == s * SEC)

    set_clock(100)
    ros.spin_until(lambda: ros.tf.get_subscription_count() > 0)
    ros.publish("base", "cam", 0, yaw(0.3), static=True)
    ros.publish("odom", "base", 99 * SEC, np.eye(4))
    f = ros.frame
    ros.spin_until(lambda: lookup.can_transform(f("odom"), f("cam"), 99 * SEC))
    set_clock(50)  # a bag replay looping back: tf2 clears its buffer, and so does the built-in one
    assert not lookup.can_transform(f("odom"), f("base"), 99 * SEC)
    assert np.allclose(lookup.lookup(f("base"), f("cam"), 0), yaw(0.3), atol=1e-9)


def test_factory_picks_tf2_where_present_else_builtin(ros):
    node, _ = ros._node("tf_factory")
    assert isinstance(make_tf_lookup(node), Tf2Lookup if HAVE_TF2 else BuiltinTfLookup)
    assert isinstance(make_tf_lookup(node, prefer="builtin"), BuiltinTfLookup)
    with pytest.raises(ValueError):
        make_tf_lookup(node, prefer="tf3")
    if not HAVE_TF2:
        with pytest.raises(ImportError, match="pip-installed"):
            make_tf_lookup(node, prefer="tf2")


def test_transform_message_round_trip():
    pose = yaw(2.5, (1.0, -2.0, 3.0)) @ pose_from_quat_trans([0.3, 0.1, 0.0, 0.9], [0.0, 0.0, 0.0])
    msg = matrix_to_transform(pose, "map", "cam", 12 * SEC + 5)
    assert (msg.header.frame_id, msg.child_frame_id) == ("map", "cam")
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (12, 5)
    assert np.allclose(transform_to_matrix(msg.transform), pose, atol=1e-12)
