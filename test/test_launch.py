"""Launch files and parameter presets.

Without ROS launch: the presets in config/ hold only the node's parameters (mapanything_ros.settings)
with valid values and types, and the real node (subprocess, oracle backend) starts with each preset
plus an overrides file as launch_ros writes it; the launch files compile and name existing files and
executables; launch arguments convert to the right parameter overrides. With launch_pytest (an apt
ROS, or tools/dev, which builds it): both launch files of a colcon install bring the node up with
the expected parameters, each within a time limit.
"""

import ast
import configparser
import importlib.util
import os
import py_compile
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")
import yaml  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from rcl_interfaces.srv import GetParameters  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import parameter_value_to_python  # noqa: E402

from mapanything_ros.ros.launch_args import (OVERRIDES, file_parameters, node_overrides, parse_bool,  # noqa: E402
                                             parse_cameras, parse_log_level, parse_remappings, rviz_config)
from mapanything_ros.settings import SPECS, check  # noqa: E402

try:  # launch, launch_ros and launch_pytest come with an apt ROS, not with a pip-installed one
    import launch_pytest
    from launch import LaunchDescription
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
except ImportError:
    launch_pytest = None

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "config").glob("*.yaml"))
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))


def _parameters(path):
    doc = yaml.safe_load(path.read_text())
    assert list(doc) == ["/**"] and list(doc["/**"]) == ["ros__parameters"], path.name
    return doc["/**"]["ros__parameters"]


def _keywords(path):
    """{(keyword, constant)} of every call in a Python file, e.g. ("executable", "mapanything_node")."""
    return {(k.arg, k.value.value) for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)
            for k in n.keywords if isinstance(k.value, ast.Constant)}


def _console_scripts():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict((part.strip() for part in line.split("=", 1)) for line in lines)


def test_presets_exist():
    assert {p.name for p in PRESETS} >= {"mapping.yaml", "depth_completion.yaml", "image_only.yaml"}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_preset_holds_only_valid_node_parameters(path):
    params = _parameters(path)
    assert set(params) <= set(SPECS), f"not node parameters: {sorted(set(params) - set(SPECS))}"
    for name, value in params.items():
        default = SPECS[name].default
        # rclpy refuses a value whose type differs from the declared one (1 for a double, too).
        expected = list if default is None else type(default)
        assert type(value) is expected, f"{name}: {value!r} is not a {expected.__name__}"
        assert check(name, value) is None, check(name, value)
    assert all(isinstance(c, str) for c in params.get("cameras", []))


def test_mapping_preset_uses_known_intrinsics_and_poses():
    p = _parameters(REPO / "config" / "mapping.yaml")
    assert p["depth_source"] == "none" and p["use_poses"] and p["use_intrinsics"]
    assert p["window_size"] == 8 and p["tf_output"] == "none"  # map -> odom only when asked


def test_depth_completion_preset_feeds_metric_lidar_depth():
    p = _parameters(REPO / "config" / "depth_completion.yaml")
    assert p["depth_source"] == "lidar" and p["use_depth"] and p["keep_measured_depth"]
    assert p["metric_depth"] and p["metric_poses"] and not p["depth_without_scale"]
    assert 2 <= p["window_size"] <= 4 and p["tf_output"] in ("camera_refined", "none")


def test_image_only_preset_chains_windows_with_fewer_keyframes():
    p, posed = _parameters(REPO / "config" / "image_only.yaml"), _parameters(REPO / "config" / "mapping.yaml")
    assert not p["use_poses"] and p["depth_source"] == "none" and not p["use_depth"] and p["use_intrinsics"]
    assert p["keyframe_translation"] > posed["keyframe_translation"] and p["map_insert"] == "oldest"
    assert p["tf_output"] == "camera_refined"  # the refined poses are its only pose estimate


def test_launch_files_exist_and_compile(tmp_path):
    assert {p.name for p in LAUNCH_FILES} >= {"mapping.launch.py", "depth_completion.launch.py", "image_only.launch.py"}
    for path in LAUNCH_FILES:
        py_compile.compile(str(path), cfile=str(tmp_path / (path.name + "c")), doraise=True)


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_names_existing_files_and_executables(path):
    scripts = _console_scripts()
    for arg, value in _keywords(path):
        if arg == "package":
            assert value in ("mapanything_ros", "rviz2")
        if arg == "executable" and value != "rviz2":
            assert value in scripts, f"{value} is not a console script in setup.cfg"
            assert importlib.util.find_spec(scripts[value].split(":")[0]) is not None, scripts[value]
    tree = ast.parse(path.read_text())
    for name in (n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)):
        if name.endswith(".yaml"):
            assert (REPO / "config" / name).is_file(), name
        elif name.endswith(".launch.py"):
            assert (REPO / "launch" / name).is_file(), name


def test_mapping_launch_starts_the_node_executable():
    assert ("executable", "mapanything_node") in _keywords(REPO / "launch" / "mapping.launch.py")


def test_override_arguments_are_node_parameters():
    assert set(OVERRIDES) - {"use_sim_time"} <= set(SPECS)


@pytest.mark.parametrize("text, names", [
    ("front", ["front"]),
    ("front,left", ["front", "left"]),
    (" front , left ", ["front", "left"]),
    ("front left\tright", ["front", "left", "right"]),
    ("[front, left]", ["front", "left"]),
    ("['front', \"left\"]", ["front", "left"]),
    ("[/robot/front, left]", ["/robot/front", "left"]),
    ("", []),
    ("[]", []),
])
def test_parse_cameras_formats(text, names):
    assert parse_cameras(text) == names


@pytest.mark.parametrize("text", ["1front", "front-left", "front//left", "front/", "~/front", "[front", "a:b"])
def test_parse_cameras_rejects_invalid_names(text):
    with pytest.raises(ValueError, match="cameras"):
        parse_cameras(text)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True), min_size=1, max_size=5))
def test_parse_cameras_round_trips_every_format(names):
    for text in (",".join(names), " ".join(names), "[" + ", ".join(f"'{n}'" for n in names) + "]"):
        assert parse_cameras(text) == names


def test_node_overrides_drop_empty_arguments_and_type_the_rest():
    values = {name: default for name, (default, _) in OVERRIDES.items()}
    assert node_overrides(values) == {}  # use_sim_time too: the file's value stays (false when not there)
    values.update(cameras="front_optical", backend=" oracle ", use_sim_time="True", lidar_topic="/os/points")
    assert node_overrides(values) == {"cameras": ["front_optical"], "backend": "oracle", "use_sim_time": True,
                                      "lidar_topic": "/os/points"}
    assert node_overrides({"cameras": "[]"}) == {}


@pytest.mark.parametrize("text, pairs", [
    ("", []),
    ("front_optical/image_raw:=/cam0/image_raw", [("front_optical/image_raw", "/cam0/image_raw")]),
    ("a:=b, c:=/d  e:=f", [("a", "b"), ("c", "/d"), ("e", "f")]),
])
def test_parse_remappings(text, pairs):
    assert parse_remappings(text) == pairs


@pytest.mark.parametrize("text", ["a", "a:=", ":=b", "a=b", "a:=b:=c"])
def test_parse_remappings_rejects_malformed_pairs(text):
    with pytest.raises(ValueError, match="remappings"):
        parse_remappings(text)


@pytest.mark.parametrize("text, ok", [("info", True), (" WARN ", True), ("Fatal", True), ("mapanything:=debug", True),
                                      ("loud", False), ("", False), (":=debug", False), ("a:=loud", False),
                                      ("a:=b:=debug", False)])
def test_parse_log_level_takes_what_rcl_takes(text, ok):
    if ok:
        assert parse_log_level(text) == text.strip()
    else:
        with pytest.raises(ValueError, match="log_level: expected debug"):
            parse_log_level(text)


def test_file_parameters_take_the_nodes_own_section_over_the_wildcard():
    text = ("/**:\n  ros__parameters:\n    a: 1\n    b: 2\n/robot/mapanything:\n  ros__parameters:\n    b: 3\n"
            "other:\n  ros__parameters:\n    a: 9\n")
    assert file_parameters(text, "robot") == {"a": 1, "b": 3}
    assert file_parameters(text) == {"a": 1, "b": 2}  # /robot/mapanything is another node
    assert file_parameters("") == {}


RVIZ = (REPO / "config" / "mapanything.rviz").read_text()


def _rviz_values(text):
    """{line's field: value} of a few lines of an RViz layout."""
    lines = [line.strip() for line in text.splitlines()]
    return {"fixed": next(line for line in lines if line.startswith("Fixed Frame:")).split(": ")[1],
            "topics": [line.split(": ")[1] for line in lines if line.startswith("Value: /")]}


def test_rviz_layout_as_shipped_shows_the_default_node():
    assert _rviz_values(RVIZ) == _rviz_values(rviz_config(RVIZ, _parameters(REPO / "config" / "mapping.yaml")))


def test_rviz_layout_follows_namespace_node_camera_and_frames():
    values = {"cameras": ["left_fisheye_optical"], "world_frame": "robot1/odom", "image_transport": "compressed"}
    got = _rviz_values(rviz_config(RVIZ, values, namespace="robot1", node="mapper"))
    assert got == {"fixed": "robot1/odom",
                   "topics": ["/robot1/left_fisheye_optical/image_raw", "/robot1/mapper/left_fisheye_optical/depth",
                              "/robot1/mapper/points", "/robot1/mapper/map", "/robot1/mapper/mesh",
                              "/robot1/mapper/occupancy", "/robot1/mapper/occupancy_updates", "/robot1/mapper/esdf"]}
    remapped = _rviz_values(rviz_config(RVIZ, values, "robot1", "mapper", [("left_fisheye_optical/image_raw", "/c")]))
    assert remapped["topics"][0] == "/c"
    image_only = _rviz_values(rviz_config(RVIZ, {"cameras": ["/cam"], "use_poses": False, "map_frame": "m"}))
    assert image_only == {"fixed": "m", "topics": ["/cam/image_raw", "/mapanything/cam/depth", "/mapanything/points",
                                                   "/mapanything/map", "/mapanything/mesh", "/mapanything/occupancy",
                                                   "/mapanything/occupancy_updates", "/mapanything/esdf"]}


def test_node_overrides_reject_unknown_and_malformed_arguments():
    with pytest.raises(KeyError):
        node_overrides({"window": "8"})
    with pytest.raises(ValueError, match="use_sim_time"):
        parse_bool("use_sim_time", "yes")
    with pytest.raises(ValueError, match="cameras"):
        node_overrides({"cameras": "front-left"})


def _node_parameters(probe, node, names, alive=lambda: True, timeout_s=60.0):
    """{name: value} of the running node `node` (full name), once it publishes its ~/window."""
    topic = f"{node}/window"
    deadline = time.monotonic() + timeout_s  # the node imports torch and builds its backend first
    while probe.count_publishers(topic) == 0:
        assert alive(), f"{node} exited"
        assert time.monotonic() < deadline, f"no publisher on {topic} after {timeout_s} s"
        time.sleep(0.2)
    client = probe.create_client(GetParameters, f"{node}/get_parameters")
    assert client.wait_for_service(timeout_sec=10.0)
    future = client.call_async(GetParameters.Request(names=list(names)))
    executor = SingleThreadedExecutor(context=probe.context)
    executor.add_node(probe)
    executor.spin_until_future_complete(future, timeout_sec=10.0)
    assert future.done(), f"{node}/get_parameters did not answer"
    return {n: parameter_value_to_python(v) for n, v in zip(names, future.result().values)}


@pytest.fixture
def probe():
    """An rclpy node in its own context."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("launch_test_probe", context=context)
    yield node
    node.destroy_node()
    rclpy.shutdown(context=context)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_node_starts_with_preset_and_overrides(path, probe, tmp_path):
    """What the launch files do, without launch: the preset, then an overrides file as launch_ros
    writes it from node_overrides(), into the real node (oracle backend)."""
    pytest.importorskip("mapanything_ros.ros.node", reason="the node's message packages are not installed")
    overrides = node_overrides({"cameras": "front_optical", "backend": "oracle", "device": "cpu"})
    overrides_file = tmp_path / "overrides.yaml"
    overrides_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": overrides}}))
    cmd = [sys.executable, "-m", "mapanything_ros.ros.node", "--ros-args", "--params-file", str(path),
           "--params-file", str(overrides_file), "-r", "__ns:=/preset_test"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ))
    try:
        expected = {**_parameters(path), **overrides}
        got = _node_parameters(probe, "/preset_test/mapanything", expected, alive=lambda: proc.poll() is None)
        assert got == expected
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def installed(colcon_install, sourced_env, monkeypatch):
    """The colcon install of this package, sourced into os.environ (launch runs in this process)."""
    for name in ("AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH", "PYTHONPATH", "LD_LIBRARY_PATH", "PATH"):
        if name in sourced_env:
            monkeypatch.setenv(name, sourced_env[name])
    return colcon_install / "share" / "mapanything_ros"


def _launch(path, **args):
    """The installed launch file `path` with launch arguments, then ReadyToTest."""
    return LaunchDescription([
        IncludeLaunchDescription(PythonLaunchDescriptionSource(str(path)), launch_arguments=args.items()),
        launch_pytest.actions.ReadyToTest(),
    ])


# Without launch_pytest the fixtures are plain, unused pytest fixtures and the tests are reported
# as skipped with the reason below. The time limits turn a launch that never gets ready (launch
# waits for ReadyToTest forever) into a failure.
launch_fixture = launch_pytest.fixture if launch_pytest else pytest.fixture


@launch_fixture
def mapping_launch(installed, tmp_path):
    """mapping.launch.py with the oracle backend, two cameras, a LiDAR, a remapped image topic and
    rviz:=true (rviz2 is not installed here: the launch says so and goes on), in /launch_test; its
    config the installed preset with use_sim_time: true added."""
    config = tmp_path / "mapping.yaml"
    config.write_text(yaml.safe_dump({"/**": {"ros__parameters": {**_parameters(installed / "config" / "mapping.yaml"),
                                                                  "use_sim_time": True}}}))
    return _launch(installed / "launch" / "mapping.launch.py", config=str(config), backend="oracle", device="cpu",
                   cameras="front_optical left_fisheye_optical", namespace="launch_test", depth_source="lidar",
                   lidar_topic="/os/points", world_frame="launch_odom",
                   remappings="front_optical/image_raw:=/cam0/image_raw", rviz="true")


@launch_fixture
def depth_completion_launch(installed):
    """depth_completion.launch.py (its default config) with the oracle backend, in /launch_dc."""
    return _launch(installed / "launch" / "depth_completion.launch.py", backend="oracle", device="cpu",
                   namespace="launch_dc")


def _launch_test(fixture):
    if launch_pytest is None:
        return pytest.mark.skip(reason="launch_pytest not installed (tools/dev builds it)")
    return lambda test: pytest.mark.timeout(240)(pytest.mark.launch(fixture=fixture)(test))


@_launch_test(mapping_launch)
def test_mapping_launch_brings_up_the_node(probe):
    got = _node_parameters(probe, "/launch_test/mapanything", ["cameras", "backend", "window_size", "depth_source",
                                                               "lidar_topic", "world_frame", "use_sim_time"])
    # cameras:= with one string became a string array; backend:= and the others won over the preset;
    # use_sim_time, not given, is the file's
    assert got == {"cameras": ["front_optical", "left_fisheye_optical"], "backend": "oracle", "window_size": 8,
                   "depth_source": "lidar", "lidar_topic": "/os/points", "world_frame": "launch_odom",
                   "use_sim_time": True}
    assert probe.count_subscribers("/cam0/image_raw") == 1 and probe.count_subscribers("/os/points") == 1
    assert probe.count_subscribers("/launch_test/front_optical/image_raw") == 0


@_launch_test(depth_completion_launch)
def test_depth_completion_launch_brings_up_the_node_with_its_preset(probe, installed):
    preset = _parameters(installed / "config" / "depth_completion.yaml")
    names = ["backend", "depth_source", "use_depth", "window_size", "cameras"]
    got = _node_parameters(probe, "/launch_dc/mapanything", names)
    assert got == {**{n: preset[n] for n in names}, "backend": "oracle"}


def _map_odom_launch(installed, tmp_path, tf_output):
    """mapping.launch.py (oracle backend, the small scene, tf_output as given) in /launch_odom
    beside the synthetic player driving the robot round the room on the wall clock."""
    config = tmp_path / "mapping.yaml"
    params = {**_parameters(installed / "config" / "mapping.yaml"), "oracle_preset": "small", "long_side": 112,
              "window_size": 2, "tf_output": tf_output}
    config.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    from launch_ros.actions import Node

    player = Node(package="mapanything_ros", executable="mapanything_player", namespace="launch_odom",
                  arguments=["--preset", "small", "--duration", "120"], output="log")
    return LaunchDescription([
        player,
        IncludeLaunchDescription(PythonLaunchDescriptionSource(str(installed / "launch" / "mapping.launch.py")),
                                 launch_arguments={"config": str(config), "backend": "oracle", "device": "cpu",
                                                   "namespace": "launch_odom"}.items()),
        launch_pytest.actions.ReadyToTest(),
    ])


@launch_fixture
def map_odom_on(installed, tmp_path):
    return _map_odom_launch(installed, tmp_path, "map_odom")


@launch_fixture
def map_odom_off(installed, tmp_path):
    return _map_odom_launch(installed, tmp_path, "none")


def _windows(probe, count, timeout_s=120.0):
    """Spin `probe` until the node under test published `count` ~/window messages."""
    from mapanything_ros.msg import ReconstructionWindow

    got = []
    probe.create_subscription(ReconstructionWindow, "/launch_odom/mapanything/window", got.append, 10)
    executor = SingleThreadedExecutor(context=probe.context)
    executor.add_node(probe)
    deadline = time.monotonic() + timeout_s
    while len(got) < count:
        assert time.monotonic() < deadline, f"{len(got)} windows after {timeout_s} s"
        executor.spin_once(timeout_sec=0.1)
    return executor


@_launch_test(map_odom_on)
def test_map_odom_is_found_at_the_newest_odometry_stamp(probe):
    """As Nav2 looks it up: map -> base_link at the newest odom -> base_link stamp, every 20 ms
    for 10 s while the robot moves; the bar is 99 % (map -> odom stamped transform_tolerance ahead
    at tf_publish_rate; it was stamped with the image time and 0.6-1.4 s old, and all failed)."""
    from rclpy.time import Time
    from tf2_ros import Buffer, TransformException

    buffer = Buffer()
    probe.create_subscription(TFMessage, "/tf", lambda m: [buffer.set_transform(t, "probe") for t in m.transforms],
                              100)
    executor = _windows(probe, 3)
    tries = found = 0
    end = time.monotonic() + 10.0
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.02)
        try:
            stamp = buffer.lookup_transform("odom", "base_link", Time()).header.stamp
        except TransformException:
            continue
        tries += 1
        try:
            buffer.lookup_transform("map", "base_link", Time.from_msg(stamp))
            found += 1
        except TransformException:
            pass
    print(f"map -> base_link at the newest odometry stamp: {found} of {tries}")
    assert tries > 200 and found >= 0.99 * tries, (found, tries)


@_launch_test(map_odom_off)
def test_no_map_odom_unless_asked(probe):
    seen = set()
    probe.create_subscription(TFMessage, "/tf", lambda m: seen.update((t.header.frame_id, t.child_frame_id)
                                                                       for t in m.transforms), 100)
    executor = _windows(probe, 3)
    end = time.monotonic() + 3.0
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)
    assert ("odom", "base_link") in seen and not any(parent == "map" for parent, _ in seen), seen
