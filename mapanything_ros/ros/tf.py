"""TF lookups for the node: tf2_ros where it is importable, a built-in /tf listener where not.

Both implementations answer `lookup(target, source, stamp_ns)` with the 4x4 float64
target_from_source at an int-nanosecond stamp (0: the latest common time), never waiting for
data: a transform that has not arrived yet raises at once, so no callback ever blocks on TF.
Failures raise the exception classes of `geometry.tf_tree` (tf2's are translated), all
`TransformError`, a `LookupError`; nothing else leaves a lookup (a negative stamp or a frame id
that tf2 calls invalid raises `InvalidArgument`).

tf2_ros is part of every apt ROS 2 install but not of a pip-installed ROS (no wheel); there a
built-in `TransformTree` stands in for its Buffer. Both are fed by TfLookup's own /tf and
/tf_static subscriptions (the QoS tf2_ros's TransformListener uses: ros2/geometry2, read for
behaviour), which refuse what would poison or flood the buffer (see TfLookup).
"""

import abc
import copy
import threading

from geometry_msgs.msg import TransformStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import JumpThreshold
from rclpy.duration import Duration
from rclpy.exceptions import InvalidHandle
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.time import Time
from tf2_msgs.msg import TFMessage

from ..geometry.tf_tree import (
    ConnectivityError,
    ExtrapolationError,
    InvalidArgument,
    TransformError,
    TransformNotFound,
    TransformTree,
)
from ..decode import stamp_ns
from ..geometry.transforms import pose_from_quat_trans, quat_trans_from_pose

try:
    import tf2_ros
except ImportError:  # a pip-installed ROS has no tf2_ros
    tf2_ros = None

HAVE_TF2 = tf2_ros is not None
TF_QOS = QoSProfile(
    depth=100,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
TF_STATIC_QOS = QoSProfile(
    depth=100,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
# A /tf callback also takes the messages queued behind its own, TF_BATCH in all: an executor takes
# one message per subscription per wait, so TF at 100 Hz needed 100 waits a second, and a node busy
# with four cameras fell behind it (captures waited for transforms already sent; in bad runs the
# TF wait queue overflowed and dropped a tenth of the captures). Ten keep 100 Hz up with ten waits a
# second, and no callback holds the executor for more than ten messages (a robot's whole tree can
# come in one).
TF_BATCH = 10
# The publishers whose last sequence number TfLookup keeps (the longest unheard forgotten first).
MAX_PUBLISHERS = 1000
# tf2's Buffer clears itself when the clock jumps back (e.g. a bag replay loops) or changes.
_CLOCK_JUMP = JumpThreshold(min_forward=None, min_backward=Duration(seconds=-1), on_clock_change=True)


def transform_to_matrix(transform):
    """4x4 float64 parent_from_child of a geometry_msgs/Transform (rotation x, y, z, w; metres)."""
    r, t = transform.rotation, transform.translation
    return pose_from_quat_trans([r.x, r.y, r.z, r.w], [t.x, t.y, t.z])


def matrix_to_transform(parent_from_child, parent, child, stamp_ns):
    """geometry_msgs/TransformStamped (header.frame_id = parent) of a 4x4 rigid transform."""
    q, t = quat_trans_from_pose(parent_from_child)
    msg = TransformStamped()
    msg.header.frame_id, msg.child_frame_id = parent, child
    msg.header.stamp = Time(nanoseconds=int(stamp_ns)).to_msg()
    tr, rot = msg.transform.translation, msg.transform.rotation
    tr.x, tr.y, tr.z = (float(v) for v in t)
    rot.x, rot.y, rot.z, rot.w = (float(v) for v in q)
    return msg


def set_from_message(tree, tf, static=False):
    """Add a geometry_msgs/TransformStamped to a TransformTree as tf2's Buffer.set_transform(_static)
    does; False if too old, ValueError for a transform tf2 ignores."""
    pose = transform_to_matrix(tf.transform)  # normalises the quaternion, as tf2 does
    stamp = stamp_ns(tf.header)
    return tree.set_transform(tf.header.frame_id, tf.child_frame_id, stamp, pose, static)


class TfLookup(abc.ABC):
    """Non-blocking TF lookups at int-nanosecond stamps, fed by /tf and /tf_static on `node`.

    Each transform enters the buffer only when accept(transform, static) says so: the node refuses
    (session.Session.tf_refusal) what tf2 would refuse with a log line for every one (non-finite
    values, a quaternion far from unit length), and what is stamped far ahead of its clock (one
    such transform would make every later one of its frame "old data" until that time).
    The subscriptions use their own callback group, so a multi-threaded executor delivers TF
    while other callbacks run.

    `lost[topic]` counts the messages of /tf and /tf_static that never reached the lookup:
    overwritten in the subscription's queue before they were read (a flood beyond what the
    executor takes in), or lost on the way (a best-effort override); found as gaps in each
    publisher's sequence numbers (a message older than its publisher's last one read, reordered
    on the way, is no gap). `uncounted` says why nothing is counted where messages come without
    their publisher (rclpy before Kilted) or sequence numbers (rmw_cyclonedds); else None.
    """

    def __init__(self, node, accept=lambda tf, static: True):
        self._accept = accept
        self.lost = {"/tf": 0, "/tf_static": 0}
        self.uncounted = None
        self._sequence = {}  # publisher gid -> the sequence number of its last message read
        group = MutuallyExclusiveCallbackGroup()
        overrides = QoSOverridingOptions.with_default_policies()  # qos_overrides./tf.subscription.*, as other topics
        self.subscriptions = []  # the node destroys them when it lets the lookup go
        for topic, qos, static in (("/tf", TF_QOS, False), ("/tf_static", TF_STATIC_QOS, True)):
            # copies: rclpy writes the overrides into the profile given, and the node's /tf publisher copies TF_QOS
            self.subscriptions.append(node.create_subscription(
                TFMessage, topic, lambda m, info, static=static: self._receive(m, info, static), copy.copy(qos),
                callback_group=group, qos_overriding_options=overrides))
        # topic -> (its name after remapping, the depth of its subscription's queue)
        self.queues = {topic: (sub.topic_name, sub.qos_profile.depth)
                       for topic, sub in zip(("/tf", "/tf_static"), self.subscriptions)}

    @abc.abstractmethod
    def lookup(self, target, source, stamp_ns):
        """target_from_source (4x4 float64) at stamp_ns (0: latest common time).

        Raises TransformNotFound, ConnectivityError, ExtrapolationError or InvalidArgument (all
        TransformError).
        """

    @abc.abstractmethod
    def clear(self):
        """Forget every dynamic transform (static ones stay)."""

    @abc.abstractmethod
    def _set(self, tf, static):
        """Buffer one accepted geometry_msgs/TransformStamped."""

    def can_transform(self, target, source, stamp_ns):
        """Whether lookup(target, source, stamp_ns) would succeed now."""
        try:
            self.lookup(target, source, stamp_ns)
        except TransformError:
            return False
        return True

    def _receive(self, msg, info, static):
        """A TFMessage's callback (its rclpy MessageInfo, or None): it and those already queued
        behind it (TF_BATCH in all)."""
        self._count(info, static)
        self._add(msg, static)
        if len(self.subscriptions) <= static:  # called before its subscription was kept (a multi-threaded executor)
            return
        sub = self.subscriptions[static]
        for _ in range(TF_BATCH - 1):
            try:
                with sub.handle:  # as rclpy's executor takes a message (rclpy/executors.py)
                    taken = sub.handle.take_message(sub.msg_type, sub.raw)
            except InvalidHandle:  # destroyed meanwhile
                return
            if taken is None:
                return
            self._count(taken[1], static)
            self._add(taken[0], static)

    def _count(self, info, static):
        """Add the messages its publisher sent between the last one read and this one to `lost`
        (`info`: rclpy's MessageInfo; None, a message handed over by hand: nothing counted)."""
        if not info:
            return
        gid, number = info.get("publisher_gid"), info.get("publication_sequence_number")
        if gid is None:
            self.uncounted = "this rclpy gives no message's publisher (Kilted's and later do)"
            return
        if number is None:
            self.uncounted = f"{gid.get('implementation_identifier', 'the middleware')} gives no sequence numbers"
            return
        key = gid["data"]
        last = self._sequence.pop(key, None)  # re-inserted below: the dict's order is last heard
        if last is not None and number > last + 1:
            self.lost["/tf_static" if static else "/tf"] += number - last - 1
        self._sequence[key] = number if last is None else max(last, number)
        if len(self._sequence) > MAX_PUBLISHERS:
            del self._sequence[next(iter(self._sequence))]

    def _add(self, msg, static):
        for tf in msg.transforms:
            if self._accept(tf, static):
                self._set(tf, static)


class BuiltinTfLookup(TfLookup):
    """A TransformTree of `max_history_s`, cleared when the clock jumps back; a lock guards it."""

    def __init__(self, node, max_history_s=10.0, **kwargs):
        self._tree = TransformTree(max_history_s)
        self._lock = threading.Lock()
        self._logger = node.get_logger()
        super().__init__(node, **kwargs)
        self._jump = node.get_clock().create_jump_callback(_CLOCK_JUMP, post_callback=lambda jump: self.clear())

    def lookup(self, target, source, stamp_ns):
        with self._lock:
            return self._tree.lookup(target, source, stamp_ns)

    def clear(self):
        with self._lock:
            self._tree.clear()

    def _set(self, tf, static):
        try:
            with self._lock:
                set_from_message(self._tree, tf, static)
        except ValueError as e:
            self._logger.warning(f"ignoring transform: {e}", throttle_duration_sec=5.0)


class Tf2Lookup(TfLookup):
    """A tf2_ros.Buffer (which clears itself when the clock jumps back), fed by TfLookup's listener."""

    def __init__(self, node, max_history_s=10.0, **kwargs):
        if not HAVE_TF2:
            raise ImportError("tf2_ros is not importable (pip-installed ROS); use BuiltinTfLookup")
        self._buffer = tf2_ros.Buffer(cache_time=Duration(seconds=max_history_s), node=node)
        self._errors = (
            (tf2_ros.ConnectivityException, ConnectivityError),
            (tf2_ros.LookupException, TransformNotFound),
            (tf2_ros.ExtrapolationException, ExtrapolationError),
            (tf2_ros.InvalidArgumentException, InvalidArgument),
            (tf2_ros.TransformException, TransformError),
        )
        super().__init__(node, **kwargs)

    def lookup(self, target, source, stamp_ns):
        # The *_core calls never wait (Buffer.lookup_transform polls while given a timeout).
        if int(stamp_ns) < 0:  # rclpy's Time would raise ValueError
            raise InvalidArgument(f"negative stamp {int(stamp_ns)} ns")
        try:
            tf = self._buffer.lookup_transform_core(target, source, Time(nanoseconds=int(stamp_ns)))
        except tf2_ros.TransformException as e:
            ours = next(mine for theirs, mine in self._errors if isinstance(e, theirs))
            raise ours(str(e)) from e
        return transform_to_matrix(tf.transform)

    def can_transform(self, target, source, stamp_ns):
        if int(stamp_ns) < 0:
            return False
        return bool(self._buffer.can_transform_core(target, source, Time(nanoseconds=int(stamp_ns)))[0])

    def clear(self):
        self._buffer.clear()

    def _set(self, tf, static):
        # as tf2_ros.TransformListener does (ros2/geometry2, read for behaviour)
        if static:
            self._buffer.set_transform_static(tf, "default_authority")
        else:
            self._buffer.set_transform(tf, "default_authority")


def make_tf_lookup(node, prefer="auto", max_history_s=10.0, **kwargs):
    """A TfLookup on `node`: "auto" (tf2_ros if importable, else built-in), "tf2" or "builtin";
    kwargs (accept) as TfLookup's."""
    if prefer not in ("auto", "tf2", "builtin"):
        raise ValueError(f"prefer must be 'auto', 'tf2' or 'builtin', not {prefer!r}")
    if prefer == "tf2" or (prefer == "auto" and HAVE_TF2):
        return Tf2Lookup(node, max_history_s, **kwargs)
    return BuiltinTfLookup(node, max_history_s, **kwargs)


__all__ = [
    "HAVE_TF2", "BuiltinTfLookup", "ConnectivityError", "ExtrapolationError", "InvalidArgument", "Tf2Lookup",
    "TfLookup", "TransformError", "TransformNotFound", "make_tf_lookup", "matrix_to_transform", "set_from_message",
    "transform_to_matrix",
]
