"""One session, two translators: the same bag through the live node (its messages published over DDS
by a peer, in bag order) and through the offline replay gives the same keyframes, the same windows
and the same outputs, bit for bit with the oracle backend.

The node looks TF up with the package's built-in buffer, the TransformTree the replay uses:
tf2_ros interpolates to the same poses within an ulp or two (test_tf2_conformance.py), which
bit-for-bit would not hold. The peer paces the bag: after each image it waits until the node has taken it and the window it
may start is done, so that no job is dropped for a busy worker (a live node under load drops
windows by design; that is not what this test compares).
"""

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.serialization import deserialize_message  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from mapanything_ros.bag import write_synthetic_bag  # noqa: E402
from mapanything_ros.msg import ReconstructionWindow  # noqa: E402
from mapanything_ros.outputs import OutputBag  # noqa: E402
from mapanything_ros.replay import _ordered, input_topics, replay  # noqa: E402
from mapanything_ros.ros import node as node_module  # noqa: E402
from mapanything_ros.ros.tf import TF_QOS, TF_STATIC_QOS, make_tf_lookup  # noqa: E402
from mapanything_ros import settings  # noqa: E402
from test_ros_node_inputs import Rig  # noqa: E402

CAMERAS = ["front_optical", "left_fisheye_optical"]
PARAMS = {"cameras": CAMERAS, "backend": "oracle", "oracle_preset": "small", "long_side": 112, "qos": "reliable",
          "keyframe_interval": 0.25, "tf_output": "camera_refined", "tf_timeout": 5.0}
TYPES = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CameraInfo": CameraInfo, "tf2_msgs/msg/TFMessage": TFMessage}


def ns(time_msg):
    return time_msg.sec * 1_000_000_000 + time_msg.nanosec


def stamp(header):
    return ns(header.stamp)


def window_key(w):
    """What a ReconstructionWindow says, as plain data (exact floats)."""
    poses = [(p.position.x, p.position.y, p.position.z, p.orientation.x, p.orientation.y, p.orientation.z,
              p.orientation.w) for p in w.poses]
    return (w.sequence, w.header.frame_id, stamp(w.header), tuple(ns(s) for s in w.stamps),
            tuple(w.frame_ids), tuple(poses), tuple(w.used_intrinsics), tuple(w.used_pose), tuple(w.used_depth))


def depth_key(msg):
    return msg.header.frame_id, stamp(msg.header)


def depth_array(msg):
    return np.frombuffer(bytes(msg.data), "<f4").reshape(msg.height, msg.width)


def replayed(bag, out):
    """The replay's windows and depth images ({(frame_id, stamp): array}) from its output bag."""
    from rosbags.highlevel import AnyReader

    replay(bag, {**settings.defaults(), **PARAMS}, out, progress=False, write_bag=True)
    with OutputBag(out / "scratch") as writer:  # a typestore with ReconstructionWindow
        store = writer.ts
    windows, depth = [], {}
    with AnyReader([out / "bag"], default_typestore=store) as reader:
        for conn, _, raw in reader.messages():
            if conn.topic == "/mapanything/window":
                windows.append(window_key(reader.deserialize(raw, conn.msgtype)))
            elif conn.topic.endswith("/depth"):
                msg = reader.deserialize(raw, conn.msgtype)
                depth[depth_key(msg)] = depth_array(msg)
    return windows, depth


def played(bag, monkeypatch):
    """The live node's windows and depth images for the bag, published in bag order."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import get_typestore

    from mapanything_ros.bag.synthetic import TYPESTORE

    monkeypatch.setattr(node_module, "make_tf_lookup", lambda node, **kw: make_tf_lookup(node, prefer="builtin", **kw))
    rig = Rig(PARAMS)
    try:
        node, peer = rig.node, rig.peer
        got = {"window": [], "depth": {}}
        peer.create_subscription(ReconstructionWindow, "/mapanything/window", got["window"].append, 10)
        for cam in CAMERAS:
            peer.create_subscription(Image, f"/mapanything/{cam}/depth",
                                     lambda m: got["depth"].__setitem__(depth_key(m), depth_array(m)), 10)
        kinds = input_topics({**settings.defaults(), **PARAMS})
        with AnyReader([bag], default_typestore=get_typestore(TYPESTORE)) as reader:
            conns = [c for c in reader.connections if c.topic in kinds]
            for conn, _, raw in _ordered(reader.messages(connections=conns), kinds):
                kind, cam = kinds[conn.topic]
                msg = deserialize_message(bytes(raw), TYPES[conn.msgtype])
                qos = {"tf": TF_QOS, "tf_static": TF_STATIC_QOS}.get(kind, 10)
                before = node.session.stats()["images"].get(cam, 0)
                rig.publish(conn.topic, msg, qos=qos)
                if kind == "info":  # another topic than the images: it could arrive after the first one
                    wait(rig, lambda: node.session.infos.get(cam) is not None)
                if kind == "image":
                    wait(rig, lambda: node.session.stats()["images"][cam] > before)
                    wait(rig, lambda: idle(node))
        wait(rig, lambda: idle(node) and len(got["window"]) == node.session.pipeline.stats().done)
        return [window_key(w) for w in got["window"]], got["depth"]
    finally:
        rig.close()


def idle(node):
    stats = node.session.stats()
    return stats["queued_for_tf"] == 0 and stats["pipeline"].pending == 0 and node.session.pipeline.drain(0.01)


def wait(rig, condition, timeout=30.0):
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "the node did not keep up"
        rig.spin(0.01)


def test_node_and_replay_make_the_same_windows_and_outputs(tmp_path, monkeypatch):
    bag = write_synthetic_bag(tmp_path / "bag", preset="small", duration_s=2.0, lidar_rate_hz=0).path
    want_windows, want_depth = replayed(bag, tmp_path / "out")
    got_windows, got_depth = played(bag, monkeypatch)
    assert len(want_windows) >= 5
    # the replay ends the bag's last waits (Session.finish); the node may still hold its last capture
    assert len(want_windows) - 1 <= len(got_windows) <= len(want_windows)
    assert got_windows == want_windows[:len(got_windows)]
    shared = sorted(set(got_depth) & set(want_depth))
    assert len(shared) == len(got_depth) >= 2 * (len(want_windows) - 1)
    for key in shared:
        np.testing.assert_array_equal(got_depth[key], want_depth[key], err_msg=str(key))
    # each depth image carries its own image stamp: one in the windows' per-view stamps
    stamps = {(f, s) for w in want_windows for f, s in zip(w[4], w[3])}
    assert set(want_depth) <= stamps

