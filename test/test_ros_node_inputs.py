"""The node in-process: one test per kind of bad input (a diagnostic with the expected level and
message, the node keeps running, nothing published for it), parameters at run time.

The node gets its own context; a second node on it publishes crafted messages and listens.
"""

import array
import math
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
import rclpy.executors  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image, PointCloud2  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from mapanything_ros.sync import LIDAR_SOURCE  # noqa: E402
from mapanything_ros.ros import node as node_module  # noqa: E402
from mapanything_ros.ros.node import MapAnythingNode  # noqa: E402
from mapanything_ros.ros.player import make_header, model_to_camera_info, rgb_to_image, timed_cloud  # noqa: E402
from mapanything_ros.ros.tf import TF_QOS, TF_STATIC_QOS, matrix_to_transform  # noqa: E402
from mapanything_ros.srv import MapFile  # noqa: E402
from mapanything_ros.synthetic.presets import make_scene  # noqa: E402

SEC = 1_000_000_000
CAM = "front_optical"


@pytest.fixture(scope="module")
def scene():
    return make_scene("small", 0)


class Rig:
    """The node under test plus a peer node publishing inputs and recording outputs."""

    def __init__(self, overrides):
        self.context = rclpy.context.Context()
        rclpy.init(context=self.context)
        base = {"cameras": [CAM], "backend": "oracle", "oracle_preset": "small", "long_side": 112}
        base.update(overrides)  # a value None leaves that parameter unset
        self.node = MapAnythingNode(context=self.context, parameter_overrides=[Parameter(k, value=v)
                                                                               for k, v in base.items() if v is not None])
        self.peer = rclpy.create_node("peer", context=self.context)
        # the node's own executor (ros/node.py main): callbacks run in the spinning (test) thread
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.peer)
        self.got = {}
        for topic, kind in (("/mapanything/points", PointCloud2), (f"/mapanything/{CAM}/depth", Image),
                            ("/mapanything/window", None)):
            if kind is not None:
                self.peer.create_subscription(kind, topic, self._keep(topic), 10)
        self.peer.create_subscription(DiagnosticArray, "/diagnostics", self._keep("diagnostics"), 10)
        self.pubs = {}

    def _keep(self, key):
        return lambda msg: self.got.setdefault(key, []).append(msg)

    def publish(self, topic, msg, kind=None, qos=10):
        if topic not in self.pubs:
            self.pubs[topic] = self.peer.create_publisher(kind or type(msg), topic, qos)
            end = time.monotonic() + 5.0  # discovery
            while not self.pubs[topic].get_subscription_count() and time.monotonic() < end:
                self.spin(0.05)
        self.pubs[topic].publish(msg)

    def spin(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.02)

    def status(self, suffix, seconds=10.0):
        """Statuses whose name ends with `suffix` from the first diagnostics message that has them
        (waiting up to `seconds`: delivery is slower on a loaded machine)."""
        self.got.pop("diagnostics", None)
        self.node.publish_diagnostics()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.02)
            found = [s for m in self.got.get("diagnostics", []) for s in m.status if s.name.endswith(suffix)]
            if found:
                return found
        return []

    def assert_problem(self, suffix, level, text, seconds=10.0):
        """Wait (republishing diagnostics) until a status named *suffix has `level` and `text`."""
        end = time.monotonic() + seconds
        statuses = []
        while time.monotonic() < end:
            statuses = self.status(suffix, seconds=min(2.0, max(0.1, end - time.monotonic())))
            if any(s.level == level and text in s.message for s in statuses):
                return
        raise AssertionError([(s.level, s.message) for s in statuses])

    def trigger(self, service, cls=Trigger, **request):
        """Call a service (std_srvs/Trigger, or `cls` with the `request` fields) from the peer: its
        response (None: none within 5 s)."""
        client = self.peer.create_client(cls, service)
        assert client.wait_for_service(timeout_sec=5.0), service
        future = client.call_async(cls.Request(**request))
        end = time.monotonic() + 5
        while not future.done() and time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.05)
        self.peer.destroy_client(client)
        return future.result()

    def outputs(self):
        return {k: len(v) for k, v in self.got.items() if k != "diagnostics"}

    def close(self):
        if not self.context.ok():
            return
        self.node.shutdown()
        self.executor.shutdown()
        self.node.destroy_node()
        self.peer.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def rig():
    made = []

    def make(**overrides):
        made.append(Rig(overrides))
        return made[-1]

    yield make
    for r in made:
        r.close()


def send_frame(rig, scene, stamp_ns, image=None, info=None, tf=True):
    view = scene.render(CAM, stamp_ns)
    header = make_header(CAM, stamp_ns)
    if tf:
        rig.publish("/tf_static", TFMessage(transforms=[
            matrix_to_transform(scene.world_from_camera(CAM, stamp_ns), "odom", CAM, stamp_ns)]), qos=TF_STATIC_QOS)
    rig.publish(f"{CAM}/camera_info", info or model_to_camera_info(view.camera, header))
    rig.spin(0.05)
    rig.publish(f"{CAM}/image_raw", image or rgb_to_image(view.image, header), Image)
    rig.spin(0.1)


def test_unsupported_encoding(rig, scene):
    r = rig()
    view = scene.render(CAM, SEC)
    image = Image(header=make_header(CAM, SEC), height=view.image.shape[0], width=view.image.shape[1],
                  encoding="8UC3", step=3 * view.image.shape[1])
    image.data = array.array("B", view.image.tobytes())
    send_frame(r, scene, SEC, image=image)
    r.assert_problem(f"camera {CAM}", DiagnosticStatus.ERROR, "unsupported image encoding '8UC3'")
    assert r.outputs() == {} and r.node.session.pipeline.stats().captures == 0


def test_image_size_disagreeing_with_camera_info(rig, scene):
    r = rig()
    big = make_scene("default", 0).rig_camera(CAM).camera
    send_frame(r, scene, SEC, info=model_to_camera_info(big, make_header(CAM, SEC)))
    r.assert_problem(f"camera {CAM}", DiagnosticStatus.ERROR, "CameraInfo describes a 640x480 image")
    assert r.outputs() == {} and r.node.session.pipeline.stats().captures == 0


@pytest.mark.parametrize("k0", [0.0, math.nan])
def test_zero_or_nan_intrinsics(rig, scene, k0):
    r = rig()
    info = model_to_camera_info(scene.rig_camera(CAM).camera, make_header(CAM, SEC))
    info.k[0] = k0
    send_frame(r, scene, SEC, info=info)
    r.assert_problem(f"camera {CAM}", DiagnosticStatus.ERROR, "invalid calibration")
    r.assert_problem(f"camera {CAM}", DiagnosticStatus.ERROR, "no valid CameraInfo")
    assert r.outputs() == {} and r.node.session.pipeline.stats().captures == 0


def test_empty_and_all_nan_clouds(rig, scene):
    r = rig(depth_source="lidar")
    header = make_header("lidar", SEC)
    r.publish("lidar/points", timed_cloud(np.zeros((0, 3)), np.zeros(0), header))
    r.publish("lidar/points", timed_cloud(np.full((8, 3), np.nan), np.zeros(8), header))
    r.spin(0.2)
    r.assert_problem("depth", DiagnosticStatus.WARN, "empty or all-NaN cloud")
    assert r.node.session.sync.stats()["depth"][LIDAR_SOURCE]["received"] == 0
    assert r.outputs() == {}


def test_points_with_a_nan_time_are_said(rig, scene):
    """A float time field with NaN on some points: those points dropped and said (silently before)."""
    from sensor_msgs.msg import PointField

    r = rig(depth_source="lidar")
    points = np.zeros(8, np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("time", "<f4")]))
    points["z"], points["time"][::2] = 2.0, np.nan
    cloud = PointCloud2(header=make_header("lidar", SEC), height=1, width=8, point_step=16, row_step=128,
                        fields=[PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                                for i, n in enumerate(("x", "y", "z", "time"))], is_dense=False)
    cloud.data = array.array("B", points.tobytes())
    r.publish("lidar/points", cloud)
    r.assert_problem("depth", DiagnosticStatus.WARN, "lidar/points: 4 of 8 points with a NaN or infinite time ignored")


def test_a_depth_image_stamped_0_is_refused(rig, scene):
    """As an image stamped 0 (TF time 0 is "the latest"; the sync took it for time going back and
    cleared its buffers): refused, said on the depth status, nothing else cleared."""
    from mapanything_ros.layout import DEPTH_IMAGE_TOPIC

    r = rig(depth_source="depth_image")
    depth = Image(header=make_header(CAM, 0), height=4, width=4, encoding="32FC1", step=16)
    depth.data = array.array("B", np.ones((4, 4), np.float32).tobytes())
    r.publish(f"{CAM}/{DEPTH_IMAGE_TOPIC}", depth)
    r.assert_problem("depth", DiagnosticStatus.ERROR, f"/{CAM}/{DEPTH_IMAGE_TOPIC}: depth image stamped 0")
    assert r.node.session.sync.stats()["resets"] == 0


def test_missing_tf_drops_the_capture_after_tf_timeout(rig, scene):
    r = rig(tf_timeout=0.2)
    send_frame(r, scene, SEC, tf=False)
    r.spin(0.5)
    r.assert_problem("tf", DiagnosticStatus.WARN, "no transform within tf_timeout")
    assert r.node.session.drops["tf_timeout"] == 1 and r.node.session.pipeline.stats().captures == 0
    assert r.outputs() == {}
    send_frame(r, scene, SEC + SEC // 10)  # the node still serves: with TF the next capture goes through
    r.spin(1.0)
    assert r.node.session.pipeline.stats().captures == 1 and r.outputs().get("/mapanything/points")


def test_stamps_going_backwards_reset_sync_and_window(rig, scene):
    r = rig()
    for stamp in (10 * SEC, 10 * SEC + SEC // 10, 5 * SEC):
        send_frame(r, scene, stamp)
    r.spin(1.0)
    r.assert_problem("sync", DiagnosticStatus.WARN, "time jumped back by 5.100 s on camera front_optical")
    stats = r.node.session.pipeline.stats()
    assert stats.window_resets == 1 and stats.captures == 3


def test_silent_camera_is_named(rig, scene):
    other = "left_fisheye_optical"
    r = rig(cameras=[CAM, other], camera_timeout=0.5)
    r.spin(1.2)
    r.assert_problem(f"camera {other}", DiagnosticStatus.WARN,
                     f"no image on /{other}/image_raw for 0.5 s (parameter camera_timeout)")
    assert r.outputs() == {}


def test_bad_weights_path_keeps_the_node_alive(rig, tmp_path):
    r = rig(backend="mapanything", weights=str(tmp_path / "nowhere"), device="cpu")
    assert r.node.session is None
    r.assert_problem("pipeline", DiagnosticStatus.ERROR, "MapAnything checkpoint")
    answer = r.trigger("/mapanything/save_map", MapFile)
    assert answer.success is False and "not running" in answer.message
    assert r.outputs() == {}


def test_tf_from_the_future_or_not_finite_is_refused_and_mapping_goes_on(rig, scene):
    """One transform stamped an hour ahead used to make every later one of its frame "old data" in
    tf2's buffer for that hour; NaN made tf2 log every message. Both are refused before the buffer."""
    r = rig(tf_timeout=2.0)
    now = time.time_ns()
    ahead = matrix_to_transform(scene.world_from_camera(CAM, SEC), "odom", CAM, now + 3600 * SEC)
    r.publish("/tf", TFMessage(transforms=[ahead]), qos=TF_QOS)
    r.assert_problem("tf", DiagnosticStatus.WARN, "beyond the limit ahead of the clock refused")
    nan = matrix_to_transform(np.eye(4), "odom", CAM, now)
    nan.transform.translation.x = float("nan")
    r.publish("/tf", TFMessage(transforms=[nan]), qos=TF_QOS)
    r.assert_problem("tf", DiagnosticStatus.WARN, f"transform odom <- {CAM} with non-finite values refused")
    view = scene.render(CAM, SEC)
    for k in range(3):
        stamp = time.time_ns()
        header = make_header(CAM, stamp)
        r.publish("/tf", TFMessage(transforms=[
            matrix_to_transform(scene.world_from_camera(CAM, SEC + k * SEC // 5), "odom", CAM, stamp)]), qos=TF_QOS)
        r.publish(f"{CAM}/camera_info", model_to_camera_info(view.camera, header))
        r.spin(0.05)
        r.publish(f"{CAM}/image_raw", rgb_to_image(view.image, header), Image)
        r.spin(0.3)
    assert r.outputs().get("/mapanything/points") and r.node.session.drops["tf_timeout"] == 0
    answer = r.trigger("/mapanything/reset")
    assert answer.success and "buffered TF" in answer.message
    assert not r.node.tf.can_transform("odom", CAM, stamp)  # the dynamic transforms are gone


def test_tf_messages_lost_before_the_node_reads_them_are_said(rig):
    """A /tf flood beyond what the node takes in overwrites messages in its queue before the
    executor reads them; tf then interpolates across the gaps. That used to go unsaid (a hostile
    run saw window poses 1.6 cm off with nothing in the log); now a WARN names the count and the
    fix, and /diagnostics counts them (where rclpy gives each message's publisher: Kilted on)."""
    import rclpy.subscription
    from rclpy.duration import Duration

    r = rig(**{"qos_overrides./tf.subscription.depth": 5, "qos_overrides./tf_static.subscription.depth": 5})
    start = time.time_ns() - 10 * SEC

    def tf(k, child="base"):
        return TFMessage(transforms=[matrix_to_transform(np.eye(4), "odom", child, start + k * SEC // 100)])

    values = {v.key: v.value for v in r.status("tf")[0].values}
    assert values["lost_tf_messages"] == "0"  # none yet
    r.publish("/tf", tf(0), qos=TF_QOS)

    def burst(first, count, topic="/tf"):  # messages sent while the executor reads none: the queue keeps the last 5
        child = "base" if topic == "/tf" else "fixed"
        end = time.monotonic() + 10
        while not r.node.tf.can_transform("odom", child, start + (first - 1) * SEC // 100):  # the one before read
            assert time.monotonic() < end
            r.spin(0.05)
        for k in range(first, first + count):
            r.pubs[topic].publish(tf(k, child))
        assert r.pubs[topic].wait_for_all_acked(Duration(seconds=10))

    burst(1, 30)
    if "publisher_gid" in getattr(getattr(rclpy.subscription, "MessageInfo", None), "__annotations__", {}):
        r.assert_problem("tf", DiagnosticStatus.WARN, "25 /tf messages lost before the node read them since the "
                         "last check, 25 since the start (its subscription keeps the last 5): TF is interpolated "
                         "across the gaps")
        values = {v.key: v.value for v in r.status("tf")[0].values}
        assert (values["lost_tf_messages"], values["lost_tf_static_messages"]) == ("25", "0")
        burst(31, 20)  # the next check says those since the last one
        r.assert_problem("tf", DiagnosticStatus.WARN, "15 /tf messages lost before the node read them since the "
                         "last check, 40 since the start")
        assert {v.key: v.value for v in r.status("tf")[0].values}["lost_tf_messages"] == "40"
        r.publish("/tf_static", tf(60, "fixed"), qos=TF_STATIC_QOS)
        r.publish("/tf", tf(71), qos=TF_QOS)
        end = time.monotonic() + 10
        while not (r.node.tf.can_transform("odom", "fixed", 0) and
                   r.node.tf.can_transform("odom", "base", start + 71 * SEC // 100)):  # both read
            assert time.monotonic() < end
            r.spin(0.05)
        for k in range(61, 71):  # 5 lost on /tf_static, 1 on /tf, read in one spin: said in one check
            r.pubs["/tf_static"].publish(tf(k, "fixed"))
        for k in range(72, 78):
            r.pubs["/tf"].publish(tf(k))
        assert all(r.pubs[t].wait_for_all_acked(Duration(seconds=10)) for t in ("/tf", "/tf_static"))
        end = time.monotonic() + 10
        while True:  # each topic's WARN its own: neither replaces the other
            status = (r.status("tf") or [None])[0]
            if status and "1 /tf messages lost" in status.message and "5 /tf_static messages lost" in status.message:
                break
            assert time.monotonic() < end, status
        values = {v.key: v.value for v in status.values}
        assert (values["lost_tf_messages"], values["lost_tf_static_messages"]) == ("41", "5")
    else:
        r.spin(0.5)
        values = {v.key: v.value for v in r.status("tf")[0].values}
        assert values["lost_tf_messages"] == values["lost_tf_static_messages"] == \
            "not counted: this rclpy gives no message's publisher (Kilted's and later do)"
    assert r.node.tf.can_transform("odom", "base", start + 30 * SEC // 100)  # the last five of the first burst


def documented_diagnostics():
    """{(status, key pattern)} of docs/node.md's Diagnostics table (`<x>` placeholders as regexes)."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "node.md").read_text()
    table = text[text.index("### Diagnostics"):text.index("## Messages")]
    rows = set()
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != 3 or not cells[1].startswith("`"):
            continue
        status = re.sub(r" \(.*\)", "", cells[0]).replace("`<name>`", "<name>")
        for key in re.findall(r"`([^`]+)`", cells[1]):
            rows.add((re.sub(r"<[a-z]+>", ".+", status), re.sub(r"<[a-z]+>", "[a-z_]+", key)))
    return rows


def test_every_diagnostic_value_is_documented(rig, scene):
    """docs/node.md's Diagnostics table names every value the node puts on /diagnostics, and
    nothing it does not (the backend's device values aside: the oracle has none)."""
    import re

    published = set()
    for source in ("lidar", "depth_image"):  # (a registered depth image's source is its camera)
        r = rig(depth_source=source)
        send_frame(r, scene, SEC)
        r.spin(1.0)
        assert r.node.session.pipeline.drain(10)
        assert r.status("pipeline")  # a diagnostics message (every status in one)
        published |= {(s.name.split(": ", 1)[1], v.key) for s in r.got["diagnostics"][-1].status for v in s.values}
        r.close()
    documented = documented_diagnostics()

    def matches(pattern, pair):
        return re.fullmatch(pattern[0], pair[0]) and re.fullmatch(pattern[1], pair[1])

    assert {("camera front_optical", "received"), ("tf", "lost_tf_messages"), ("depth", "lidar_missing"),
            ("pipeline", "total_latency_p95_s")} <= published
    assert [p for p in published if not any(matches(d, p) for d in documented)] == []
    runtime = {"device", "compute_dtype", "name", "threads", "memory_allocated", "max_memory_allocated"}
    assert [d for d in documented if d[1] not in runtime and not any(matches(d, p) for p in published)] == []


def slow_save(rig, scene, tmp_path, monkeypatch, seconds):
    """A node mapping one frame whose saves take `seconds` longer; (rig, save_map client, Event set when a
    save starts)."""
    r = rig(save_map_directory=str(tmp_path), save_map_path=str(tmp_path / "map.npz"))
    send_frame(r, scene, SEC)
    r.spin(1.0)
    save, started = r.node.session.save_map, threading.Event()

    def slow(*args):
        started.set()
        time.sleep(seconds)
        return save(*args)

    monkeypatch.setattr(r.node.session, "save_map", slow)
    client = r.peer.create_client(MapFile, "/mapanything/save_map")
    assert client.wait_for_service(timeout_sec=5.0)
    return r, client, started


def test_save_map_runs_off_the_executor_and_a_second_request_is_answered(rig, scene, tmp_path, monkeypatch):
    """A save takes seconds for a large map: the executor goes on meanwhile (inputs, timers), and a
    request while one runs is refused at once with the reason, never left unanswered."""
    r, client, _ = slow_save(rig, scene, tmp_path, monkeypatch, 2.0)
    first = client.call_async(MapFile.Request())
    r.spin(0.3)
    second = client.call_async(MapFile.Request())
    r.got.pop("diagnostics", None)
    end = time.monotonic() + 10
    while not (first.done() and second.done()) and time.monotonic() < end:
        r.executor.spin_once(timeout_sec=0.05)
    assert second.result().success is False and "busy with a save" in second.result().message
    assert first.result().success and (tmp_path / "map.npz").exists() and (tmp_path / "map.ply").exists(), \
        first.result().message
    assert r.got.get("diagnostics"), "the 1 Hz diagnostics timer did not run during the save"


def test_a_save_in_progress_at_a_stop_is_answered(rig, scene, tmp_path, monkeypatch):
    """A stop (or the lifecycle shutdown) while ~/save_map ran: the file was written, the request never
    answered (a hostile tester's finding); run.main answers it before the executor ends."""
    from mapanything_ros.ros.node import MAP_QOS
    from mapanything_ros.ros.run import answer_pending

    r, client, started = slow_save(rig, scene, tmp_path, monkeypatch, 1.0)
    r.peer.create_subscription(PointCloud2, "/mapanything/map", lambda _: None, MAP_QOS)  # its timer has work
    call = client.call_async(MapFile.Request())
    while not started.is_set():
        r.executor.spin_once(timeout_sec=0.05)
    assert r.node.shutdown(timeout=10.0) and r.node.map_file_busy  # written, not answered
    r.node._on_output_timer("map")  # while it is answered: nothing for the map thread, shut down (it raised)
    answer_pending(r.node, r.executor, 10.0)
    assert not r.node.map_file_busy
    end = time.monotonic() + 10
    while not call.done() and time.monotonic() < end:
        r.executor.spin_once(timeout_sec=0.05)
    assert call.result().success and (tmp_path / "map.npz").exists(), call.result().message


def test_a_burst_of_service_calls_is_answered_every_one(rig):
    """50 requests at once: the default service queue (10) dropped 40 of them, unanswered for ever."""
    r = rig()
    client = r.peer.create_client(Trigger, "/mapanything/reset")
    assert client.wait_for_service(timeout_sec=5.0)
    calls = [client.call_async(Trigger.Request()) for _ in range(50)]
    end = time.monotonic() + 30
    while not all(c.done() for c in calls) and time.monotonic() < end:
        r.executor.spin_once(timeout_sec=0.05)
    assert sum(c.done() for c in calls) == 50 and all(c.result().success for c in calls)


def test_unknown_parameters_and_a_second_node_of_the_same_name_are_said(rig, monkeypatch):
    monkeypatch.setattr(node_module, "DUPLICATE_CHECK_S", 0.5)
    r = rig(keyframe_intervall=0.5, map_min_confidence=2.0)  # a typo, a parameter replaced
    r.assert_problem("pipeline", DiagnosticStatus.WARN, "unknown parameters ignored: keyframe_intervall, "
                     "map_min_confidence (replaced by map_confidence_quantile")
    status, = r.status("pipeline")  # named after the node's full name: instances in two namespaces stay apart
    assert status.name == "/mapanything: pipeline" and status.hardware_id == "cpu"
    camera, = r.status(f"camera {CAM}")  # a sensor's status: its hardware is the sensor (its topic)
    assert camera.hardware_id == f"/{CAM}/image_raw"
    twin = MapAnythingNode(context=r.context, parameter_overrides=[Parameter("cameras", value=[CAM]),
                                                                   Parameter("backend", value="oracle")])
    try:
        r.executor.add_node(twin)
        r.assert_problem("pipeline", DiagnosticStatus.WARN, "another node named /mapanything is running")
    finally:
        r.executor.remove_node(twin)
        twin.shutdown()
        twin.destroy_node()


def test_parameters_read_only_bad_and_good(rig, scene, tmp_path):
    r = rig(save_map_directory=str(tmp_path))
    node = r.node
    result = node.set_parameters([Parameter("window_size", value=4)])[0]
    assert not result.successful and "read-only" in result.reason
    for name, value, why in (("sync_slop", 0.0, "sync_slop must be > 0.0"),
                             ("tf_timeout", -1.0, "tf_timeout must be > 0.0"),
                             ("keyframe_translation", -0.1, "")):
        result = node.set_parameters([Parameter(name, value=value)])[0]
        assert not result.successful and why in result.reason
    assert node.get_parameter("sync_slop").value == 0.02
    good = [Parameter("keyframe_interval", value=0.1), Parameter("use_poses", value=False),
            Parameter("sync_slop", value=0.05), Parameter("map_confidence_quantile", value=0.2),
            Parameter("save_map_path", value=str(tmp_path / "map.npz"))]
    assert all(res.successful for res in node.set_parameters(good))
    assert node.session.pipeline.window.policy.elapsed_s == 0.1 and not node.session.pipeline.config.batch.use_poses
    assert node.session.sync.slop_ns == 50_000_000 and node.session.pipeline.config.confidence_quantile == 0.2
    send_frame(r, scene, SEC)
    r.spin(1.0)
    window = r.got.get("/mapanything/points")
    assert window and window[-1].header.frame_id == "map"  # image-only: the chain frame is published as map_frame
    assert r.trigger("/mapanything/save_map", MapFile).success and (tmp_path / "map.npz").exists()


def test_a_node_that_did_not_start_refuses_changes_it_would_not_take(rig):
    """The plain node starts once: with a bad start-up value it reports why and runs nothing, so a
    value set right afterwards is refused with how to start it (it was accepted, and changed
    nothing while /diagnostics kept the old reason)."""
    r = rig(sync_slop=-1.0)
    assert r.node.fatal.startswith("bad parameters") and "sync_slop" in r.node.fatal
    result = r.node.set_parameters([Parameter("sync_slop", value=0.05)])[0]
    assert not result.successful and "the node is not running (bad parameters" in result.reason
    assert "-p name:=value" in result.reason and r.node.get_parameter("sync_slop").value == -1.0


def test_the_node_clock_going_back_restarts_the_window(rig):
    """use_sim_time and /clock set back (a bag loop): the window restarts at once, not at the first
    capture of the new timeline, so that a window in flight does not publish outputs and TF
    stamped ahead of the new clock (tf2 would take every later transform of its frame as old)."""
    from builtin_interfaces.msg import Time
    from rosgraph_msgs.msg import Clock

    r = rig(use_sim_time=True)
    clock = r.peer.create_publisher(Clock, "/clock", 10)
    for sec in (1000, 1001, 1001, 940):
        clock.publish(Clock(clock=Time(sec=sec)))
        r.spin(0.3)
    stats = r.node.session.pipeline.stats()
    assert stats.window_resets == 1 and stats.reasons[-1] == "window: the node's clock jumped back by 61.000 s"


@pytest.mark.parametrize("use_poses", [False, True])
def test_a_map_odom_correction_ends_with_its_chain(rig, scene, use_poses):
    """tf_output map_odom, republished at tf_publish_rate: an image-only window's correction holds
    in its chain frame, which ~/reset (or time going back) ends; it went out on, relating odom to
    a chain that was gone. With poses it relates odom to the world frame and stays."""
    r = rig(tf_output="map_odom", use_poses=use_poses, tf_publish_rate=50.0)
    for k in range(3):
        send_frame(r, scene, SEC + k * SEC // 2)
        r.spin(0.5)
    end = time.monotonic() + 10
    while r.node._correction is None and time.monotonic() < end:
        r.spin(0.1)
    assert r.node._correction is not None
    assert r.trigger("/mapanything/reset").success
    r.node._publish_correction()
    assert (r.node._correction is None) == (not use_poses)


def test_save_then_restart_and_load_reproduces_the_map_exactly(rig, scene, tmp_path):
    """~/save_map, a new node (a restart), ~/load_map: the same volume, the same ~/map; then the
    start-up parameter load_map_path does the same, and a bad path is refused with the reason."""
    r = rig(save_map_directory=str(tmp_path), map_publish_rate=0.0)
    for k in range(3):
        send_frame(r, scene, SEC + k * SEC // 2)
        r.spin(0.5)
    assert r.node.session.pipeline.drain(10)
    saved = r.trigger("/mapanything/save_map", MapFile, path="maps.npz")
    assert saved is not None and saved.success and "surface points" in saved.message, saved
    before = r.node.session.pipeline.map.state()
    points = r.node.session.map(0)[0].points
    assert len(before["keys"]) > 100
    r.close()  # one node of that name at a time: services reach either
    for kind in ("service", "parameter"):
        extra = {"load_map_path": "maps.npz"} if kind == "parameter" else {}
        again = rig(save_map_directory=str(tmp_path), map_publish_rate=0.0, **extra)
        if kind == "service":
            loaded = again.trigger("/mapanything/load_map", MapFile, path=str(tmp_path / "maps.npz"))
            assert loaded.success and f"loaded {len(before['keys'])} blocks" in loaded.message, loaded
        else:
            end = time.monotonic() + 30
            while not again.node.session.pipeline.map_version and time.monotonic() < end:  # the load is over
                again.spin(0.1)
        after = again.node.session.pipeline.map.state()
        for name in ("keys", "tsdf", "weight", "rgb", "looks", "front"):
            np.testing.assert_array_equal(after[name], before[name])
        np.testing.assert_array_equal(again.node.session.map(0)[0].points, points)
        if kind == "service":
            refused = again.trigger("/mapanything/load_map", MapFile, path="../elsewhere.npz")
            assert not refused.success and "outside" in refused.message
        again.close()
    bad = rig(save_map_directory=str(tmp_path), load_map_path="missing.npz")
    bad.assert_problem("pipeline", DiagnosticStatus.ERROR, "load_map_path: could not load the map")


def cloud_floats(cloud):
    """(N, fields) float32 of a PointCloud2 whose fields are all float32 (as the node's are)."""
    assert not cloud.is_bigendian and cloud.point_step == 4 * len(cloud.fields)
    return np.frombuffer(bytes(cloud.data), "<f4").reshape(cloud.width, len(cloud.fields))


def test_occupancy_grid_and_its_distance_field_are_published_when_subscribed(rig, scene):
    from nav_msgs.msg import OccupancyGrid

    from mapanything_ros.mapping import distance_slice
    from mapanything_ros.ros.node import MAP_QOS

    r = rig(map_publish_rate=5.0, occupancy_min_height=0.2, occupancy_max_height=1.0, esdf_max_distance=0.5)
    grids, fields = [], []
    r.peer.create_subscription(OccupancyGrid, "/mapanything/occupancy", grids.append, MAP_QOS)
    r.peer.create_subscription(PointCloud2, "/mapanything/esdf", fields.append, MAP_QOS)
    for k in range(3):
        send_frame(r, scene, SEC + k * SEC // 2)
        r.spin(0.5)
    end = time.monotonic() + 10
    while not (grids and fields and r.node.session.pipeline.stats().pending == 0
               and r.node._due("occupancy") is None and r.node._due("esdf") is None) and time.monotonic() < end:
        r.spin(0.1)
    grid = grids[-1]
    cells = np.array(grid.data, np.int8).reshape(grid.info.height, grid.info.width)
    assert grid.header.frame_id == "odom" and grid.info.resolution == pytest.approx(0.05)
    assert (cells == 0).sum() > 100 and (cells == 100).sum() > 10 and set(np.unique(cells)) <= {-1, 0, 100}
    want, _, _ = r.node.session.occupancy(0)
    assert want.cells.shape == cells.shape
    # ~/esdf: a point at each known cell's centre of the same grid, at the band's bottom, with its
    # distance to the nearest occupied cell
    cloud = fields[-1]
    assert cloud.header == grid.header and [f.name for f in cloud.fields] == ["x", "y", "z", "distance"]
    got = cloud_floats(cloud)
    xyz, distance = distance_slice(want, 0.5).points(0.2)
    np.testing.assert_allclose(got[:, :3], xyz)
    np.testing.assert_allclose(got[:, 3], distance, rtol=1e-6)
    assert len(distance) == np.count_nonzero(cells >= 0) and distance.max() == pytest.approx(0.5)
    assert np.count_nonzero(distance == 0) == np.count_nonzero(cells == 100)
    # image-only, no reset: no height band; said, and the latched grid and field replaced by empty
    # ones (not the world map's, which was cleared), also for a subscriber that joins later
    r.node.set_parameters([Parameter("use_poses", value=False)])
    for k in range(3, 6):
        send_frame(r, scene, SEC + k * SEC // 2)
        r.spin(0.5)
    r.assert_problem("pipeline", DiagnosticStatus.WARN,
                     "~/occupancy and ~/esdf published empty: the map is in the image-only")
    r.spin(1.0)  # the empty ones on their way
    late = []
    r.peer.create_subscription(OccupancyGrid, "/mapanything/occupancy", late.append, MAP_QOS)
    r.spin(1.0)
    for got in (grids[-1], late[-1]):
        # (one unknown cell: Nav2's static layer and RViz refuse a 0 x 0 map and keep the last)
        assert (got.info.width, got.info.height, list(got.data)) == (1, 1, [-1]) and got.header.frame_id == "odom"
    assert fields[-1].width == 0
    # the map changes on, still image-only: the empty grid every subscriber has is not sent again (a Nav2
    # static layer takes each grid as a new map)
    sent, version = (len(grids), len(late), len(fields)), r.node.session.pipeline.map_version
    for k in range(6, 9):
        send_frame(r, scene, SEC + k * SEC // 2)
        r.spin(0.5)
    end = time.monotonic() + 10
    while not (r.node.session.pipeline.map_version > version and r.node.session.pipeline.stats().pending == 0
               and r.node._due("occupancy") is None and r.node._due("esdf") is None) and time.monotonic() < end:
        r.spin(0.1)
    r.spin(0.5)
    assert r.node.session.pipeline.map_version > version and (len(grids), len(late), len(fields)) == sent
    # but to a subscriber that joins (volatile, as RViz's displays: the latched one does not reach it), and
    # at another resolution
    volatile = []
    r.peer.create_subscription(OccupancyGrid, "/mapanything/occupancy", volatile.append, 1)
    end = time.monotonic() + 10
    while not volatile and time.monotonic() < end:
        r.spin(0.1)
    assert [(g.info.width, g.info.resolution) for g in volatile] == [(1, pytest.approx(0.05))]
    r.node.set_parameters([Parameter("occupancy_resolution", value=0.2)])
    end = time.monotonic() + 10
    while late[-1].info.resolution != pytest.approx(0.2) and time.monotonic() < end:
        r.spin(0.1)
    assert (late[-1].info.width, late[-1].info.resolution) == (1, pytest.approx(0.2))
    # poses again: the world map's grid is sent as soon as there is one, even when ~/esdf's field fails
    # after it went out (a bug injected) ...
    esdf = r.node.session.esdf
    r.node.session.esdf = lambda *args: 1 / 0
    r.node.set_parameters([Parameter("use_poses", value=True)])
    for k in range(9, 12):
        send_frame(r, scene, SEC + k * SEC // 2)
        r.spin(0.5)
    end = time.monotonic() + 10
    while not (grids[-1].info.width > 1 and late[-1].info.width > 1) and time.monotonic() < end:
        r.spin(0.1)
    assert grids[-1].info.width > 1 and late[-1].info.width > 1 and fields[-1].width == 0
    # ... and image-only after that failure: the empty grid replaces the world map's (its record of the
    # empty one sent before is gone)
    r.node.set_parameters([Parameter("use_poses", value=False)])
    for k in range(12, 15):
        send_frame(r, scene, SEC + k * SEC // 2)
        r.spin(0.5)
    end = time.monotonic() + 10
    while grids[-1].info.width > 1 and time.monotonic() < end:
        r.spin(0.1)
    assert (grids[-1].info.width, late[-1].info.width) == (1, 1)
    r.node.session.esdf = esdf
    r.node.set_parameters([Parameter("use_poses", value=True)])
    for k in range(15, 18):
        send_frame(r, scene, SEC + k * SEC // 2)
        r.spin(0.5)
    end = time.monotonic() + 10
    while not (grids[-1].info.width > 1 and fields[-1].width > 0) and time.monotonic() < end:
        r.spin(0.1)
    assert grids[-1].info.width > 1 and fields[-1].width > 0


def test_occupancy_follows_a_parameter_change_made_while_its_job_waits(rig, scene):
    """A grid job queued under occupancy_resolution A runs under B (changed meanwhile), then the
    parameter goes back to A before the next timer tick: the grid made under B is recorded as B's,
    so A's grid is published again (recording the key _due computed when it queued the job, A's,
    left B's grid on the latched topic for good)."""
    import threading

    from nav_msgs.msg import OccupancyGrid

    from mapanything_ros.ros.node import MAP_QOS

    r = rig(map_publish_rate=20.0, occupancy_resolution=0.05)
    grids = []
    r.peer.create_subscription(OccupancyGrid, "/mapanything/occupancy", grids.append, MAP_QOS)
    for k in range(2):
        send_frame(r, scene, SEC + k * SEC // 2)
        r.spin(0.5)

    def settled(seconds=10.0):
        end = time.monotonic() + seconds
        while not (grids and r.node.session.pipeline.stats().pending == 0 and r.node._due("occupancy") is None
                   and r.node._output_jobs["map"].done()) and time.monotonic() < end:
            r.spin(0.1)
        r.spin(0.3)  # the last grid on its way
        return grids[-1].info.resolution

    assert settled() == pytest.approx(0.05)
    gate = threading.Event()
    r.node._map_thread.submit(gate.wait, 10.0)  # the map thread busy: the next grid job waits behind it
    r.node.set_parameters([Parameter("occupancy_resolution", value=0.1)])
    end = time.monotonic() + 10
    while r.node._output_jobs["map"].done() and time.monotonic() < end:  # the timer queues a job (for 0.1)
        r.spin(0.02)
    queued = r.node._output_jobs["map"]
    assert not queued.done()
    r.node.set_parameters([Parameter("occupancy_resolution", value=0.2)])  # before that job runs
    before = len(grids)
    gate.set()
    queued.result(timeout=10)
    r.node.set_parameters([Parameter("occupancy_resolution", value=0.1)])  # before the timer sees 0.2
    assert settled() == pytest.approx(0.1)
    assert [g.info.resolution for g in grids[before:]][0] == pytest.approx(0.2)  # made under what was in force
    want, _, _ = r.node.session.occupancy(0)
    got = grids[-1]
    assert (got.info.height, got.info.width) == want.cells.shape
    np.testing.assert_array_equal(np.array(got.data, np.int8).reshape(want.cells.shape), want.cells)


class MarkerDisplay:
    """What RViz's MarkerArray display shows of ~/mesh: markers by id, as the arrays say."""

    def __init__(self):
        self.markers, self.arrays = {}, []

    def __call__(self, msg):
        from visualization_msgs.msg import Marker

        self.arrays.append(msg)
        for marker in msg.markers:
            if marker.action == Marker.DELETEALL:
                self.markers.clear()
            elif marker.action == Marker.DELETE:
                self.markers.pop(marker.id, None)
            else:
                assert marker.type == Marker.TRIANGLE_LIST and len(marker.points) == len(marker.colors)
                self.markers[marker.id] = marker

    def triangles(self):
        """(F, 9) the triangles shown, each its corners' coordinates, rows sorted."""
        corners = np.array([[p.x, p.y, p.z] for m in self.markers.values() for p in m.points]).reshape(-1, 9)
        return corners[np.lexsort(corners.T)]


def mesh_triangles(mesh):
    """(F, 9) the triangles of a RegionMesh, as Display.triangles."""
    triangles = np.concatenate([mesh.region(r) for r in range(len(mesh))] + [np.zeros((0, 3), np.int64)])
    corners = mesh.vertices.astype(np.float64)[triangles].reshape(-1, 9)
    return corners[np.lexsort(corners.T)]


def test_mesh_is_published_when_subscribed_and_its_rate_changes_at_run_time(rig, scene):
    """~/mesh sends a marker per region: what a display made of every array it got is the map's
    mesh; a subscriber that joins later gets all of it (after a DELETEALL) while the first keeps
    its own."""
    from rclpy.duration import Duration
    from rclpy.event_handler import SubscriptionEventCallbacks
    from rclpy.qos import QoSProfile
    from visualization_msgs.msg import Marker, MarkerArray

    from mapanything_ros.ros.node import MAP_QOS

    r = rig(mesh_publish_rate=0.0)  # off: nothing, even when subscribed
    # A reader whose QoS the node cannot offer (a deadline) is in the graph but never matched:
    # nothing is made for it.
    strict = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, deadline=Duration(nanoseconds=1_000_000))
    r.peer.create_subscription(MarkerArray, "/mapanything/mesh", lambda _: None, strict,
                               event_callbacks=SubscriptionEventCallbacks(incompatible_qos=lambda _: None))
    r.node.set_parameters([Parameter("mesh_publish_rate", value=5.0)])
    for k in range(2):
        send_frame(r, scene, SEC // 2 + k * SEC // 4)
        r.spin(0.5)
    r.spin(1.0)
    assert r.node.get_subscriptions_info_by_topic("/mapanything/mesh") and r.node._due("mesh") is None
    r.node.set_parameters([Parameter("mesh_publish_rate", value=0.0)])
    shown = MarkerDisplay()
    r.peer.create_subscription(MarkerArray, "/mapanything/mesh", shown, MAP_QOS)
    for k in range(3):
        send_frame(r, scene, SEC + k * SEC // 2)
        r.spin(0.5)
    r.spin(1.0)
    assert not shown.arrays
    r.node.set_parameters([Parameter("mesh_publish_rate", value=5.0)])

    def settled(*displays):
        """The map's mesh once every display shows it (or 10 s passed)."""
        end = time.monotonic() + 10
        while time.monotonic() < end:
            r.spin(0.1)
            if r.node.session.pipeline.stats().pending == 0 and all(d.arrays for d in displays):
                want = mesh_triangles(r.node.session.mesh(0)[0])
                if all(d.triangles().shape == want.shape and np.allclose(d.triangles(), want, atol=1e-6)
                       for d in displays):
                    break
        return r.node.session.mesh(0)

    mesh, frame_id, _ = settled(shown)
    first = shown.arrays[0].markers
    assert first[0].action == Marker.DELETEALL and all(m.header.frame_id == "odom" for m in first)
    assert mesh.signatures[:, 1].sum() > 100 and len(shown.markers) == len(mesh) and frame_id == "odom"
    np.testing.assert_allclose(shown.triangles(), mesh_triangles(mesh), atol=1e-6)
    count = len(shown.arrays)
    late = MarkerDisplay()  # volatile, as RViz's displays are by default
    r.peer.create_subscription(MarkerArray, "/mapanything/mesh", late, 10)
    send_frame(r, scene, SEC + 2 * SEC)
    mesh, _, _ = settled(shown, late)
    assert len(shown.arrays) > count
    for display in (shown, late):
        np.testing.assert_allclose(display.triangles(), mesh_triangles(mesh), atol=1e-6)
    count = len(shown.arrays)
    send_frame(r, scene, SEC + 5 * SEC // 2)  # the regions that changed (what follows refreshes after them)
    mesh, _, _ = settled(shown, late)
    assert len(shown.arrays) > count and shown.arrays[-1].markers[0].action != Marker.DELETEALL
    for display in (shown, late):
        np.testing.assert_allclose(display.triangles(), mesh_triangles(mesh), atol=1e-6)
    # A change of the map that leaves its mesh as it was (a keyframe that fused nothing) sends nothing.
    count = len(shown.arrays)
    r.node.session.pipeline._map_changed()
    r.spin(1.0)
    assert r.node._due("mesh") is None and len(shown.arrays) == count
    # mesh_refresh_period after the last whole mesh, regions having been sent since: all of it
    # again, the map unchanged; then nothing more until the map changes.
    r.node.set_parameters([Parameter("mesh_refresh_period", value=0.5)])
    end = time.monotonic() + 10
    while len(shown.arrays) == count and time.monotonic() < end:
        r.spin(0.1)
    r.spin(1.5)
    assert len(shown.arrays) == count + 1 and shown.arrays[count].markers[0].action == Marker.DELETEALL
    np.testing.assert_allclose(shown.triangles(), mesh_triangles(mesh), atol=1e-6)


def test_qos_follows_ros_qos_overrides():
    """ROS 2's QoS overrides (qos_overrides.<topic>.<entity>.<policy>) set an input's and an
    output's QoS; the node does not call them unknown parameters."""
    r = Rig({"qos": "sensor_data", "tf_output": "map_odom",
             f"qos_overrides./{CAM}/image_raw.subscription.reliability": "reliable",
             "qos_overrides./mapanything/points.publisher.reliability": "best_effort",
             "qos_overrides./tf.subscription.reliability": "best_effort"})
    try:
        (sub,) = r.node.get_subscriptions_info_by_topic(f"/{CAM}/image_raw")
        (pub,) = r.node.get_publishers_info_by_topic("/mapanything/points")
        assert sub.qos_profile.reliability == ReliabilityPolicy.RELIABLE
        assert pub.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT  # (reliable by default)
        tf = [i for i in r.node.get_subscriptions_info_by_topic("/tf") if i.node_name == r.node.get_name()]
        assert [i.qos_profile.reliability for i in tf] == [ReliabilityPolicy.BEST_EFFORT]  # /tf too
        # ... and only the subscription: the node's /tf publisher (map -> odom) stays reliable, as TF_QOS
        out = [i for i in r.node.get_publishers_info_by_topic("/tf") if i.node_name == r.node.get_name()]
        assert [i.qos_profile.reliability for i in out] == [ReliabilityPolicy.RELIABLE]
        assert TF_QOS.reliability == ReliabilityPolicy.RELIABLE
        info = r.node.get_subscriptions_info_by_topic(f"/{CAM}/camera_info")[0]
        assert info.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT  # the qos parameter's
        assert r.node.fatal is None and "unknown parameters" not in " ".join(
            m for _, m in r.node.problems.active("pipeline"))
    finally:
        r.close()


def test_outputs_add_nothing_to_the_executors_wait():
    """Each QoS-event handler is a waitable the executor walks at every wait (rclpy's default: two
    per publisher and subscription; 28 publishers made a wait 2-3x dearer, bench_executor.py): the
    node's publishers have none, its inputs keep rclpy's incompatible-QoS warnings."""
    r = Rig({"tf_output": "map_odom"})
    try:
        mine = [p for p in r.node.publishers if p.topic_name != "/parameter_events"]  # rclpy's own
        assert {"/tf", "/diagnostics", "/mapanything/points"} <= {p.topic_name for p in mine}
        assert not [p.topic_name for p in mine if p.event_handlers]
        assert all(s.event_handlers for s in r.node.subscriptions)
    finally:
        r.close()


def test_map_outputs_are_made_and_published_off_the_executor_thread(rig, scene):
    """~/map, ~/occupancy, ~/esdf and ~/mesh are gathered, packed and published on the map thread:
    the executor (inputs, TF, timers) never waits for a large map (issue 21)."""
    import threading

    from nav_msgs.msg import OccupancyGrid
    from visualization_msgs.msg import MarkerArray

    from mapanything_ros.ros.node import MAP_QOS

    r = rig(map_publish_rate=5.0, mesh_publish_rate=5.0)
    threads = {}

    def recorded(name, call):
        def wrapper(*args, **kwargs):
            threads.setdefault(name, set()).add(threading.current_thread().name)
            return call(*args, **kwargs)
        return wrapper

    for name in ("map", "occupancy", "esdf", "mesh"):
        pub = getattr(r.node, f"{name}_pub")
        pub.publish = recorded(f"~/{name} publish", pub.publish)
        setattr(r.node.session, name, recorded(f"~/{name} made", getattr(r.node.session, name)))
    got = []
    for topic, kind in (("map", PointCloud2), ("occupancy", OccupancyGrid), ("esdf", PointCloud2),
                        ("mesh", MarkerArray)):
        r.peer.create_subscription(kind, f"/mapanything/{topic}", got.append, MAP_QOS)
    for k in range(3):
        send_frame(r, scene, SEC + k * SEC // 2)
        r.spin(0.5)
    end = time.monotonic() + 10
    while len(threads) < 8 and time.monotonic() < end:
        r.spin(0.1)
    assert len(threads) == 8 and got, threads
    executor = threading.current_thread().name  # the test spins the node's executor in this thread
    assert all(names and executor not in names and all(n.startswith("mapanything-map") for n in names)
               for names in threads.values()), threads


def test_an_unchanged_map_is_not_made_again(rig, scene):
    """~/map, ~/occupancy, ~/esdf and ~/mesh are latched: once they carry the map as it is, later
    ticks make nothing until a window changes the map (or, for ~/occupancy and ~/esdf, their
    parameters change)."""
    from nav_msgs.msg import OccupancyGrid
    from visualization_msgs.msg import MarkerArray

    from mapanything_ros.ros.node import MAP_QOS

    r = rig(map_publish_rate=10.0, mesh_publish_rate=10.0)
    got = {"map": [], "occupancy": [], "esdf": [], "mesh": []}
    for topic, kind in (("map", PointCloud2), ("occupancy", OccupancyGrid), ("esdf", PointCloud2),
                        ("mesh", MarkerArray)):
        r.peer.create_subscription(kind, f"/mapanything/{topic}", got[topic].append, MAP_QOS)
    send_frame(r, scene, SEC)

    def settle():  # until the map thread has nothing left to send (it publishes a map at most every 0.1 s)
        end = time.monotonic() + 10
        while time.monotonic() < end and (r.node.session.pipeline.stats().pending or
                                          any(r.node._due(t) is not None for t in got)):
            r.spin(0.1)
        r.spin(1.0)

    settle()
    counts = {t: len(v) for t, v in got.items()}
    assert all(counts.values()), counts
    r.spin(1.0)  # ten ticks of each timer: nothing new
    assert {t: len(v) for t, v in got.items()} == counts
    send_frame(r, scene, SEC + SEC // 2)  # a new window changes the map: each topic once more, or a few times
    settle()
    assert all(len(got[t]) > counts[t] for t in got), ({t: len(v) for t, v in got.items()}, counts)
    counts = {t: len(v) for t, v in got.items()}
    r.node.set_parameters([Parameter("occupancy_max_height", value=0.8)])  # the grid's band changes
    r.spin(1.0)
    assert len(got["occupancy"]) == counts["occupancy"] + 1 and len(got["esdf"]) == counts["esdf"] + 1
    assert len(got["map"]) == counts["map"] and len(got["mesh"]) == counts["mesh"]
    r.node.set_parameters([Parameter("esdf_max_distance", value=0.3)])  # the distance field's alone
    r.spin(1.0)
    assert len(got["esdf"]) == counts["esdf"] + 2 and len(got["occupancy"]) == counts["occupancy"] + 1
    assert cloud_floats(got["esdf"][-1])[:, 3].max() == pytest.approx(0.3)
    # A late subscriber with volatile durability (RViz's displays by default) gets the unchanged map.
    late = []
    r.peer.create_subscription(PointCloud2, "/mapanything/map", late.append, 10)
    end = time.monotonic() + 10
    while not late and time.monotonic() < end:
        r.spin(0.1)
    assert late and late[-1].width == got["map"][-1].width


def test_a_subscriber_listed_before_it_is_matched_is_waited_for(rig, scene, monkeypatch):
    """The ROS graph and DDS matching arrive apart: a subscriber the graph lists before the map's
    publisher has matched it would miss a publication and be counted as served (a volatile display
    then never gets a map that stopped changing). ~/map waits for it, MATCH_WAIT_S at most: a
    reader that never matches (incompatible QoS, another type) is then served without."""
    from rclpy.duration import Duration
    from rclpy.qos import QoSProfile

    from mapanything_ros.ros.node import MAP_QOS

    r = rig(map_publish_rate=10.0)
    got, late = [], []
    first = r.peer.create_subscription(PointCloud2, "/mapanything/map", got.append, MAP_QOS)
    send_frame(r, scene, SEC)
    end = time.monotonic() + 10
    while not (got and r.node.session.pipeline.stats().pending == 0 and r.node._due("map") is None) \
            and time.monotonic() < end:
        r.spin(0.1)
    count = len(got)
    assert count and r.node._due("map") is None
    publisher, matched = r.node.map_pub, r.node.map_pub.get_subscription_count
    monkeypatch.setattr(publisher, "get_subscription_count", lambda: min(matched(), 1))  # the newcomer unmatched
    monkeypatch.setattr(node_module, "MATCH_WAIT_S", 3600.0)
    volatile = r.peer.create_subscription(PointCloud2, "/mapanything/map", late.append, 10)  # as RViz's
    end = time.monotonic() + 10
    while len(r.node.get_subscriptions_info_by_topic("/mapanything/map")) < 2 and time.monotonic() < end:
        r.spin(0.1)
    r.spin(1.0)  # ten ticks
    assert r.node._due("map") is None and len(got) == count and not late  # waiting for the newcomer
    monkeypatch.setattr(publisher, "get_subscription_count", matched)  # matched
    end = time.monotonic() + 10
    while not late and time.monotonic() < end:
        r.spin(0.1)
    assert late and late[-1].width == got[-1].width and r.node._due("map") is None
    # A reader that never matches (a deadline the publisher does not offer; the graph lists it) is
    # waited for MATCH_WAIT_S, then the map goes out without it, and it is not waited for again.
    monkeypatch.setattr(node_module, "MATCH_WAIT_S", 1.0)
    never = r.peer.create_subscription(PointCloud2, "/mapanything/map", lambda msg: None,
                               QoSProfile(depth=1, deadline=Duration(seconds=1)))
    end = time.monotonic() + 10
    while len(r.node.get_subscriptions_info_by_topic("/mapanything/map")) < 3 and time.monotonic() < end:
        r.spin(0.1)
    assert r.node.map_pub.get_subscription_count() == 2
    count, seen = len(got), len(late)
    send_frame(r, scene, SEC + SEC // 2)  # the map changes
    end = time.monotonic() + 10
    while not (len(got) > count and len(late) > seen) and time.monotonic() < end:
        r.spin(0.1)
    assert len(got) == count + 1 and len(late) == seen + 1
    assert r.node._due("map") is None and r.node._never["map"] == 1
    # Subscribers coming and going every 0.3 s beside it (`ros2 topic echo --once` in a loop) do not
    # hold the map back (a wait restarted at each change of the subscribers held it for ever; a
    # reviewer's finding): the next map reaches the others.
    count, seen, churn = len(got), len(late), None
    send_frame(r, scene, SEC + 2 * SEC // 2)
    end = time.monotonic() + 15
    while not (len(got) > count and len(late) > seen) and time.monotonic() < end:
        if churn is None:
            churn = r.peer.create_subscription(PointCloud2, "/mapanything/map", lambda msg: None, 10)
        else:
            r.peer.destroy_subscription(churn)
            churn = None
        r.spin(0.3)
    assert len(got) > count and len(late) > seen
    # Everyone leaves: the allowance for the reader waited for in vain goes with it (a reviewer: it
    # stayed, so the next newcomer not matched yet was not waited for).
    for subscription in (churn, first, volatile, never):
        if subscription is not None:
            r.peer.destroy_subscription(subscription)
    end = time.monotonic() + 10
    while r.node.get_subscriptions_info_by_topic("/mapanything/map") and time.monotonic() < end:
        r.spin(0.1)
    r.spin(0.3)
    assert r.node._due("map") is None and r.node._never["map"] == 0
    # A reader the graph dropped before DDS unmatched it (more matched than listed) makes no negative
    # allowance (which would hold the map MATCH_WAIT_S once all are matched).
    r.peer.create_subscription(PointCloud2, "/mapanything/map", lambda msg: None, 10)
    end = time.monotonic() + 10
    while not (r.node.get_subscriptions_info_by_topic("/mapanything/map") and matched()) and time.monotonic() < end:
        r.spin(0.1)
    monkeypatch.setattr(publisher, "get_subscription_count", lambda: matched() + 1)
    r.node._due("map")
    assert r.node._never["map"] == 0
