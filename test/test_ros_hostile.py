"""A hostile tester against one long-lived node (test_ros_node_inputs.Rig: oracle backend, jpeg
images, LiDAR depth): every row of the bad-input matrix in sequence, good captures between them.
The node must stay up (an exception in a callback would end the executor's spin here), report
each problem at least once in its log (/rosout) and in /diagnostics, and produce windows again
once good data returns. Then the parameter fuzz through the parameter service: every runtime
parameter at non-finite, zero, negative, huge and tiny values and wrong types, each answered,
refused with a readable reason or accepted and harmless (windows still come out afterwards).

Good stamps follow the wall clock (the node's clock without use_sim_time), so that silence is
measured as on a robot; the rows with stamps far from it check that this is reported.
"""

import array
import tempfile
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from rcl_interfaces.msg import Log  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, PointField  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from mapanything_ros import settings  # noqa: E402
from mapanything_ros.session.report import BURST, THROTTLE_S  # noqa: E402
from mapanything_ros.srv import MapFile  # noqa: E402
from mapanything_ros.session.session import DEPTH_MISSING_RUN  # noqa: E402
from mapanything_ros.ros.player import make_header, model_to_camera_info, rgb_to_compressed, timed_cloud  # noqa: E402
from mapanything_ros.ros.tf import TF_STATIC_QOS, matrix_to_transform  # noqa: E402
from mapanything_ros.synthetic.presets import make_scene  # noqa: E402
from test_ros_node_inputs import CAM, Rig  # noqa: E402

SEC = 1_000_000_000
ERROR, WARN = DiagnosticStatus.ERROR, DiagnosticStatus.WARN
TIMEOUT_S = 1.0  # camera_timeout: silence is reported after this much
IMAGE, INFO, LIDAR = f"{CAM}/image_raw/compressed", f"{CAM}/camera_info", "lidar/points"


class Hostile:
    """Sends good and bad inputs to a Rig and records its /rosout lines."""

    def __init__(self, rig, scene):
        self.r, self.scene = rig, scene
        self.log = []
        rig.peer.create_subscription(Log, "/rosout", lambda m: self.log.append(m) if m.name == "mapanything" else None,
                                     1000)
        view = scene.render(CAM, SEC)
        self.rgb, self.camera = view.image, view.camera
        rig.publish("/tf_static", TFMessage(transforms=[
            matrix_to_transform(scene.world_from_camera(CAM, SEC), "odom", CAM, 0),
            matrix_to_transform(scene.world_from_camera(CAM, SEC), "odom", "lidar", 0)]), qos=TF_STATIC_QOS)
        ray = np.stack(np.meshgrid(np.linspace(-0.5, 0.5, 30), np.linspace(-0.4, 0.4, 20)), -1).reshape(-1, 2)
        self.points = np.column_stack([ray * 2.0, np.full(len(ray), 2.0)])  # 2 m in front of the camera

    def info(self, stamp):
        return model_to_camera_info(self.camera, make_header(CAM, stamp))

    def image(self, stamp, rgb=None, frame_id=CAM):
        return rgb_to_compressed(self.rgb if rgb is None else rgb, make_header(frame_id, stamp))

    def cloud(self, stamp, points=None):
        points = self.points if points is None else points
        return timed_cloud(points, np.linspace(0, 0.01 * SEC, len(points)).astype(np.int64),
                           make_header("lidar", stamp))

    def send(self, stamp=None, image=None, info=None, cloud=True, spin=0.25):
        """One capture: CameraInfo, LiDAR sweep (unless cloud is False, or the given cloud) and image."""
        stamp = time.time_ns() if stamp is None else stamp
        self.r.publish(INFO, info or self.info(stamp))
        if cloud is not False:
            self.r.publish(LIDAR, self.cloud(stamp - SEC // 100) if cloud is True else cloud)
        self.r.publish(IMAGE, image or self.image(stamp), CompressedImage)
        self.r.spin(spin)
        return stamp

    def windows(self):
        return len(self.r.got.get("/mapanything/points", []))

    def good(self, n=3):
        """Good captures until a new window comes out (at most n rounds of 3)."""
        before = self.windows()
        for _ in range(3 * n):
            self.send()
            if self.windows() > before:
                return
        raise AssertionError(f"no window after good data: {self.r.node.session.sync.stats()}, {self.r.node.session.pipeline.stats()}, "
                             f"log: {self.lines()[-10:]}")

    def lines(self):
        return [(m.level, m.msg) for m in self.log]

    def expect(self, status, level, text, logged=None):
        """The problem is in /diagnostics under `status` with `text` and in the node's log with `logged`
        (default: `text`; the log says each kind of problem once per 5 s whatever its numbers)."""
        self.r.assert_problem(status, level, text)
        logged = logged or text
        end = time.monotonic() + 5.0  # /rosout may arrive after /diagnostics
        while not any(logged in m.msg for m in self.log) and time.monotonic() < end:
            self.r.spin(0.05)
        assert any(logged in m.msg for m in self.log), (logged, self.lines()[-10:])


def bad_cloud(h, stamp, **changes):
    msg = h.cloud(stamp)
    for k, v in changes.items():
        setattr(msg, k, v)
    return msg


@pytest.fixture(scope="module")
def hostile():
    r = Rig({"backend": "oracle", "image_transport": "compressed", "depth_source": "lidar", "depth_tolerance": 0.2,
             "keyframe_interval": 0.05, "window_size": 2, "camera_timeout": TIMEOUT_S, "tf_timeout": 0.3,
             "save_map_directory": tempfile.gettempdir()})
    try:
        yield Hostile(r, make_scene("small", 0))
    finally:
        r.close()


def test_bad_input_matrix(hostile):
    h = hostile
    h.good()
    # Images (decoded on the pipeline worker: a corrupt one fails its window, later ones go through).
    h.send(image=CompressedImage(header=make_header(CAM, time.time_ns()), format="bmp",
                                 data=array.array("B", b"BM" * 50)))
    h.expect(f"camera {CAM}", ERROR, "unsupported CompressedImage format 'bmp'")
    h.good()
    corrupt = h.image(time.time_ns())
    corrupt.data = array.array("B", bytes(corrupt.data[:200]) + b"\x00" * 300)
    h.send(image=corrupt)
    h.expect("pipeline", ERROR, "could not decode")
    h.good()
    h.send(image=h.image(time.time_ns(), rgb=np.zeros((48, 64, 3), np.uint8)))  # its size read from its header
    h.expect(f"camera {CAM}", ERROR, "image is 64x48 but its CameraInfo describes")
    h.good()
    # A JPEG of a few hundred bytes declaring 16384 x 16384 (800 MB decoded): refused before decoding.
    bomb = h.image(time.time_ns(), rgb=np.zeros((16, 16, 3), np.uint8))
    data = bytearray(bomb.data)
    frame = data.index(b"\xff\xc0")  # SOF0: length, precision, height, width
    data[frame + 5:frame + 9] = (16384).to_bytes(2, "big") * 2
    bomb.data = array.array("B", data)
    h.send(image=bomb)
    h.expect(f"camera {CAM}", ERROR, "image is 16384x16384 but its CameraInfo describes",
             "but its CameraInfo describes")  # (the log says it once per 5 s)
    h.good()
    h.send(image=h.image(time.time_ns(), frame_id=""))
    h.expect(f"camera {CAM}", ERROR, "without header.frame_id")
    h.send(image=h.image(0))
    h.expect(f"camera {CAM}", ERROR, "image stamped 0")
    h.good()
    # CameraInfo (an ERROR at one call site, then WARNs: the logger's severity must not matter).
    for field, value, text in (("k", [0.0] * 9, "invalid calibration"), ("k", [float("nan")] * 9, "K must be finite"),
                               ("width", 0, "width and height must be positive"),
                               ("distortion_model", "banana", "invalid calibration")):
        info = h.info(time.time_ns())
        setattr(info, field, value)
        h.send(info=info)
        h.expect(f"camera {CAM}", ERROR, text)
    h.expect(f"camera {CAM}", ERROR, "no valid CameraInfo")
    # LiDAR: malformed, empty and all-NaN, oversized (a 1 M point sweep is used, not a problem).
    h.send(cloud=bad_cloud(h, time.time_ns(), data=array.array("B", b"\x00" * 10)))
    h.expect("depth", ERROR, "PointCloud2 data has 10 bytes")
    h.send(cloud=bad_cloud(h, time.time_ns(), fields=[PointField(name="x", offset=0, datatype=7, count=1)]))
    h.expect("depth", ERROR, "has no 'y' field")
    h.send(cloud=h.cloud(time.time_ns(), np.full((50, 3), np.nan)))
    h.expect("depth", WARN, "empty or all-NaN cloud")
    h.good()
    stamp = time.time_ns()  # point times up to 4 s after the stamp: not believed, the sweep is still used
    h.send(cloud=timed_cloud(h.points, np.linspace(0, 4e9, len(h.points)).astype(np.int64),
                             make_header("lidar", stamp)), stamp=stamp)
    h.expect("depth", WARN, "per-point times more than 1 s from the header stamp")
    h.good()
    big = np.random.default_rng(0).uniform(-3, 3, (1_000_000, 3)) + [0, 0, 4]
    h.send(cloud=h.cloud(time.time_ns(), big), spin=1.0)
    h.good()
    # Garbage far out (finite: 1e38 m overflowed the ray depth and the network's depth normalisation,
    # failing every window its keyframe was in) is not a reading: ignored, said; mapping goes on.
    failed = h.r.node.session.pipeline.stats().failed
    h.send(cloud=h.cloud(time.time_ns(), np.vstack([h.points, np.full((5, 3), 1e38)])))
    h.expect("depth", WARN, f"5 of {len(h.points) + 5} points more than 100,000 km out (garbage, not a reading) ignored")
    h.good()
    h.send(cloud=h.cloud(0))
    h.expect("depth", ERROR, "sweep stamped 0 (header.stamp not set)")
    h.good()
    assert h.r.node.session.pipeline.stats().failed == failed
    # An oversized image (16 Mpx jpeg) of the wrong size for its CameraInfo: refused from its header.
    h.send(image=h.image(time.time_ns(), rgb=np.zeros((3000, 4000, 3), np.uint8)), spin=1.0)
    h.expect(f"camera {CAM}", ERROR, "image is 4000x3000 but its CameraInfo describes a", "but its CameraInfo describes")
    h.good()
    # TF missing for an image's frame: dropped after tf_timeout.
    h.r.publish(f"{CAM}/camera_info", CameraInfo())  # (an all-zero CameraInfo on the way)
    h.send(image=h.image(time.time_ns(), frame_id="ghost"), spin=0.6)
    h.expect("tf", WARN, "no transform within tf_timeout")
    h.good()
    # Stamps far from the node clock, and time jumping back.
    for offset in (-1e6, 1e6):
        h.send(stamp=time.time_ns() + int(offset * SEC))
        h.expect("sync", WARN, "s from the node's system clock")
    h.good()
    h.expect("sync", WARN, "time jumped back")
    now = time.time_ns()
    h.send(stamp=now)
    h.send(stamp=now - 5 * SEC)
    h.expect("sync", WARN, "time jumped back by 5.0", "time jumped back by")
    h.good()
    # LiDAR stops while images arrive, then misses every capture (stamped 30 s ahead of the images).
    end = time.monotonic() + 2.5 * TIMEOUT_S
    while time.monotonic() < end:
        h.send(cloud=False)
    h.expect("depth", WARN, "no LiDAR sweep on /lidar/points for 1.0 s (parameter camera_timeout)")
    for _ in range(DEPTH_MISSING_RUN + 1):
        stamp = time.time_ns()
        h.send(stamp=stamp, cloud=h.cloud(stamp + 30 * SEC))
    h.expect("depth", WARN, "captures in a row without depth from /lidar/points")
    h.good()
    # The camera goes silent.
    h.r.spin(2 * TIMEOUT_S)
    h.expect(f"camera {CAM}", WARN, f"no image on /{IMAGE} for 1.0 s (parameter camera_timeout)")
    h.good()
    assert h.r.node.fatal is None
    # Each problem is said once: the same line never twice within the node's THROTTLE_S.
    times = {}
    for m in h.log:
        times.setdefault(m.msg, []).append(m.stamp.sec + m.stamp.nanosec * 1e-9)
    for text, stamps in times.items():
        assert min(np.diff(stamps), default=THROTTLE_S) >= THROTTLE_S - 0.01, text


def test_second_round_findings_in_the_same_node(hostile, tmp_path):
    """Issue 19's findings against the same long-lived node, good captures between them: TF an
    hour ahead and NaN TF refused before the buffer, frame ids that change every message do not
    flood the log, calibrations that are finite but wrong refused with their numbers, and
    ~/save_map refusing what is not its own. Mapping goes on after each."""
    from mapanything_ros.ros.tf import TF_QOS

    h = hostile
    h.good()
    now = time.time_ns()
    ahead = matrix_to_transform(np.eye(4), "odom", "base_link", now + 3600 * SEC)
    h.r.publish("/tf", TFMessage(transforms=[ahead]), qos=TF_QOS)
    h.expect("tf", WARN, "beyond the limit ahead of the clock refused")
    nan = matrix_to_transform(np.eye(4), "odom", "base_link", now)
    nan.transform.rotation.w = float("nan")
    h.r.publish("/tf", TFMessage(transforms=[nan]), qos=TF_QOS)
    h.expect("tf", WARN, "with non-finite values refused")
    h.good()
    # Transforms tf2 refuses with an error line each (50 of each): refused first, said in at most BURST lines a kind.
    bad = [matrix_to_transform(np.eye(4), *frames, now) for frames in (("odom", "odom"), ("/odom", "odom"),
                                                                       ("", "base_link"), ("odom", ""))]
    for _ in range(50):
        h.r.publish("/tf", TFMessage(transforms=bad), qos=TF_QOS)
    h.r.spin(0.5)
    h.expect("tf", WARN, "refused: a frame's transform to itself")
    h.expect("tf", WARN, "frame id is empty")
    said = [m.msg for m in h.log if "refused" in m.msg and ("<- ?" in m.msg or "? <-" in m.msg or "itself" in m.msg)]
    assert 0 < len(said) <= 2 * BURST and not [m for m in h.log if "TF_SELF_TRANSFORM" in m.msg or "TF_NO_" in m.msg], said
    h.good()
    # Ten frame ids that each appear once (a driver naming frames by a UUID): at most BURST lines.
    for k in range(10):
        h.send(image=h.image(time.time_ns(), frame_id=f"ghost_{k:04x}-4e1a-9b2c-{k:012x}"), spin=0.05)
    h.r.spin(0.6)  # each waits tf_timeout, then is dropped with its frame named
    h.expect("tf", WARN, "no transform within tf_timeout")
    assert len([m for m in h.log if "ghost_" in m.msg]) <= BURST, [m.msg for m in h.log if "ghost_" in m.msg]
    h.good()
    # Finite but wrong calibrations: a radial coefficient of 1e30, binning that leaves no pixels.
    info = h.info(time.time_ns())
    info.d = [1e30, 0.0, 0.0, 0.0, 0.0]
    h.send(info=info)
    h.expect(f"camera {CAM}", ERROR, "rays span 0 degrees")
    info = h.info(time.time_ns())
    info.binning_x = 4_000_000_000
    h.send(info=info)
    h.expect(f"camera {CAM}", ERROR, "leave a 0x")
    h.good()
    # ~/save_map: a file that is not a map of the node's, a path out of its directory, new directories.
    notes = tmp_path / "notes.npz"
    notes.write_text("my notes")
    for path, text in ((str(notes), "exists and is not a numpy .npz file"), ("../outside.npz", "save_map_directory"),
                       (str(tmp_path / "new" / "deep" / "map.npz"), "is not a directory (it is not created)")):
        answer = _call(h, MapFile, "/mapanything/save_map", MapFile.Request(path=path))
        assert answer is not None and not answer.success and text in answer.message, (path, answer)
    assert notes.read_text() == "my notes" and not (tmp_path / "new").exists()
    h.good()
    assert h.r.node.fatal is None


def _call(h, kind, name, request):
    """A service call from the peer: the response (None: no answer within 10 s)."""
    client = h.r.peer.create_client(kind, name)
    assert client.wait_for_service(timeout_sec=5.0), name
    future = client.call_async(request)
    end = time.monotonic() + 10
    while not future.done() and time.monotonic() < end:
        h.r.executor.spin_once(timeout_sec=0.02)
    h.r.peer.destroy_client(client)
    return future.result() if future.done() else None


def _set(h, param):
    """SetParameters through the parameter service (as ros2 param set): the SetParametersResult."""
    response = _call(h, SetParameters, "/mapanything/set_parameters",
                     SetParameters.Request(parameters=[param.to_parameter_msg()]))
    assert response is not None, f"no answer to {param.name} := {param.value!r}"
    return response.results[0]


FUZZ = [float("inf"), float("-inf"), float("nan"), 0.0, -1.0, 1e300, 1e-300, 2**63 - 1, -(2**63), 0, -1,
        True, "", "x" * 1000, [1.0, 2.0], ["a"]]


def test_parameter_fuzz_then_save_after_reset(hostile, tmp_path):
    h = hostile
    runtime = {n: s for n, s in settings.SPECS.items() if not s.read_only}
    accepted = []
    for name, spec in runtime.items():
        for value in FUZZ:
            result = _set(h, Parameter(name, value=value))
            if result.successful:
                accepted.append((name, value))
                continue
            assert name in result.reason and "Type." not in result.reason, (name, value, result.reason)
            assert len(result.reason) < 200, result.reason  # a 1000-character value is not echoed whole
        h.r.spin(0.01)
    # Accepted: only finite in-range numbers, bools and strings where they are the parameter's type.
    for name, value in accepted:
        spec = runtime[name]
        assert type(value) is type(spec.default) and settings.check(name, value) is None, (name, value)
    assert ("keyframe_translation", 1e300) in accepted and ("use_poses", True) in accepted
    assert ("save_map_path", "") in accepted  # harmless: saving there fails with a reason, below
    assert not _call(h, MapFile, "/mapanything/save_map", MapFile.Request()).success
    for name, spec in runtime.items():
        assert _set(h, Parameter(name, value=spec.default)).successful, name
    path = tmp_path / "map.npz"
    assert _set(h, Parameter("save_map_path", value=str(path))).successful
    h.good()  # the node works after all that
    saved = _call(h, MapFile, "/mapanything/save_map", MapFile.Request())
    assert saved.success and path.stat().st_size > 1000, saved.message
    before = path.read_bytes()
    # ~/save_map right after ~/reset does not replace the saved map with an empty one.
    assert _call(h, Trigger, "/mapanything/reset", Trigger.Request()).success
    refused = _call(h, MapFile, "/mapanything/save_map", MapFile.Request())
    assert not refused.success and "the map is empty" in refused.message and path.read_bytes() == before


def test_start_up_values_are_reported_not_raised():
    """Values rclpy refuses (out of a declared range, wrong type) and values settings.check refuses
    (non-finite, open bounds, multiples) end in the node's own "bad parameters" report."""
    r = Rig({"window_size": 0, "long_side": 500, "sync_slop": float("inf"), "camera_timeout": 1e300,
             "map_publish_rate": 1e-300, "tf_timeout": 1})
    try:
        fatal = r.node.fatal
        assert fatal.startswith("bad parameters") and r.node.session is None, fatal
        for text in ("window_size", "long_side", "sync_slop must be a finite number", "camera_timeout",
                     "map_publish_rate", "tf_timeout"):
            assert text in fatal, (text, fatal)
        assert "Type." not in fatal
        r.assert_problem("pipeline", ERROR, "bad parameters")
    finally:
        r.close()


@pytest.mark.parametrize("given, text", [
    ({"cameras": ["cam-1", "front_optical"]}, "parameter cameras: 'cam-1/image_raw' is not a valid topic name"),
    ({"cameras": ["2nd_cam"]}, "parameter cameras: '2nd_cam/image_raw' is not a valid topic name"),
    ({"cameras": ["front_optical/"]}, "parameter cameras: 'front_optical//image_raw' is not a valid topic name"),
    ({"depth_source": "lidar", "lidar_topic": "velodyne-points"},
     "parameter lidar_topic: 'velodyne-points' is not a valid topic name"),
])
def test_names_that_make_no_topic_are_reported_not_raised(given, text):
    """Camera namespaces or a LiDAR topic that make no valid ROS topic name: the node's one-line
    report naming the parameter (they used to end the process in rclpy's exception)."""
    r = Rig(given)
    try:
        assert r.node.fatal.startswith("bad parameters") and text in r.node.fatal, r.node.fatal
        r.assert_problem("pipeline", ERROR, "bad parameters")
    finally:
        r.close()


@pytest.mark.parametrize("correction", ["field", "none"])
def test_lidar_in_millimetres_is_said_and_not_used(correction):
    """A LiDAR driver that sends millimetres (the depth-completion preset's settings, or measured
    depth kept without a correction): the node says so on /diagnostics and in the log, and
    publishes the prediction's depth, not 1000 times it (the map was carved away by depths of
    kilometres, silently)."""
    r = Rig({"backend": "oracle", "image_transport": "compressed", "depth_source": "lidar", "depth_tolerance": 0.2,
             "keyframe_interval": 0.05, "window_size": 2, "tf_timeout": 0.3, "depth_correction": correction,
             "keep_measured_depth": True, "align_to_measured_depth": True})
    try:
        h = Hostile(r, make_scene("small", 0))
        h.points = h.points * 1000.0
        h.good()
        h.expect("depth", WARN, "times the prediction (more than 4x apart): not used; check its unit")
        depth = r.got[f"/mapanything/{CAM}/depth"][-1]
        values = np.frombuffer(bytes(depth.data), np.float32)
        assert np.nanmax(values) < 20, np.nanmax(values)  # the small room's depths, not the LiDAR's 2000 m
    finally:
        r.close()


def test_parameter_descriptors_state_both_bounds():
    """`ros2 param describe` shows every bound the node checks: a closed range as rclpy's range,
    an open lower bound in words with the upper one (ROS ranges are closed)."""
    from mapanything_ros.ros.params import descriptor

    for name, spec in settings.SPECS.items():
        d = descriptor(name, spec)
        if spec.low_open:
            assert not d.floating_point_range and d.additional_constraints == f"> {spec.low} and <= {spec.high}", name
        elif spec.low is not None:
            (bound,) = d.integer_range or d.floating_point_range
            assert (bound.from_value, bound.to_value) == (spec.low, min(spec.high, 1.7976931348623157e308)), name
    assert descriptor("sync_slop", settings.SPECS["sync_slop"]).additional_constraints == "> 0.0 and <= 10.0"


@pytest.mark.parametrize("cameras, text", [
    (None, 'parameter cameras (string[]) is required: the camera namespaces, e.g. -p cameras:="[front_optical]"'),
    ("front_optical", 'parameter cameras (string_array): got the string \'front_optical\'; give a list, '
                      'e.g. cameras:="[front_optical]"'),
])
def test_cameras_missing_or_a_string_is_reported_not_raised(cameras, text):
    """A launch without cameras, or `-p cameras:=front` (a string, not a list): the node's own
    one-line report, not rclpy's traceback."""
    r = Rig({"cameras": cameras})
    try:
        assert r.node.fatal.startswith("bad parameters") and text in r.node.fatal, r.node.fatal
        assert r.node.fatal.count("parameter cameras") == 1, r.node.fatal  # one reason, not "required" too
        r.assert_problem("pipeline", ERROR, "bad parameters")
    finally:
        r.close()
