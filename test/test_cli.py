"""`mapanything-ros` commands end to end on small synthetic runs (oracle backend, no weights)."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mapanything_ros.cli import main


def test_demo_then_eval_and_replay(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))  # no weights: the oracle runs
    assert main(["demo", "--out", str(tmp_path / "demo"), "--duration", "2"]) == 0
    text = capsys.readouterr().out
    assert "backend: oracle: no MapAnything weights found" in text and "AbsRel" in text
    replay_dir = tmp_path / "demo" / "replay"
    for name in ("map.ply", "map.png", "summary.json", "eval.json", "bag/metadata.yaml"):
        assert (replay_dir / name).is_file(), name
    assert (tmp_path / "demo" / "demo_depth.png").is_file()
    assert json.loads((replay_dir / "eval.json").read_text())["depth"]["abs_rel"] < 1e-3

    assert main(["eval", str(replay_dir), "--bag", str(tmp_path / "demo" / "input_bag")]) == 0
    assert "ATE" in capsys.readouterr().out

    out = tmp_path / "again"
    assert main(["replay", str(tmp_path / "demo" / "input_bag"), "--params", "config/mapping.yaml",
                 "--backend", "emulated", "-p", "oracle_preset:=small", "-p", "long_side:=112",
                 "--out", str(out), "--raw-depth", "--eval"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["parameters"]["depth_source"] == "none" and summary["parameters"]["long_side"] == 112
    text = capsys.readouterr().out
    assert summary["keyframes"] > 0 and "ATE" in text and "the network's raw depth" in text
    metrics = json.loads((out / "eval.json").read_text())
    assert 0.005 < metrics["raw_depth"]["abs_rel"] < 0.1 and metrics["depth"]["abs_rel"] <= metrics["raw_depth"]["abs_rel"]

    # A namespace the bag does not have: said, exit non-zero (it found "0 frames" and exited 0).
    bag = str(tmp_path / "demo" / "input_bag")
    with pytest.raises(SystemExit, match="no camera under namespace '/robot1'.*front_optical/image_raw"):
        main(["replay", bag, "--namespace", "robot1", "--out", str(tmp_path / "ns")])
    # A relative --remap FROM resolves in the namespace (it was ignored): the cameras are found there.
    oracle = ["--backend", "oracle", "-p", "oracle_preset:=small", "-p", "long_side:=112"]
    code = main(["replay", bag, *oracle, "--namespace", "robot1", "--cameras", "front_optical",
                 "--out", str(tmp_path / "rm"), "--remap", "front_optical/image_raw:=/front_optical/image_raw",
                 "--remap", "front_optical/camera_info:=/front_optical/camera_info"])
    assert code == 0 and json.loads((tmp_path / "rm" / "summary.json").read_text())["frames"] > 0
    # Topics missing altogether: nothing goes through, said on stderr, exit 1.
    assert main(["replay", bag, *oracle, "--cameras", "nowhere", "--out", str(tmp_path / "none")]) == 1
    assert "nothing went through: missing topics" in capsys.readouterr().err
    # Some missing, others there: said with the summary (it was said only when nothing went through).
    assert main(["replay", bag, *oracle, "--cameras", "front_optical,nowhere", "-p", "silent_camera:=drop", "-p",
                 "camera_timeout:=0.3", "--out", str(tmp_path / "half")]) == 0
    assert "missing topics (no message in the bag): ['/nowhere/camera_info', '/nowhere/image_raw']" in \
        capsys.readouterr().out
    # Its evaluation has nothing to compare: said, exit 1, the empty map said (it printed "accuracy nan").
    assert main(["eval", str(tmp_path / "none"), "--bag", bag]) == 1
    text = capsys.readouterr()
    assert "map: empty (no points)" in text.out and "nan" not in text.out and "nothing to evaluate" in text.err
    # Into a previous replay's directory: its outputs are replaced, not mixed with the new ones (old
    # depth images stayed, and the evaluation globbed them all; its bag made a rosbags traceback); into
    # one holding other files, or a file: refused with the reason.
    stale = replay_dir / "depth" / "front_optical" / "1.png"
    stale.write_bytes(b"stale")
    assert main(["replay", bag, *oracle, "--out", str(replay_dir), "--write-bag"]) == 0
    assert not stale.exists() and (replay_dir / "bag").is_dir()
    with pytest.raises(SystemExit, match="lies in --out"):  # its output bag replayed into the same --out: kept
        main(["replay", str(replay_dir / "bag"), *oracle, "--out", str(replay_dir)])
    assert (replay_dir / "bag").is_dir()
    with pytest.raises(SystemExit, match="paths are missing"):  # checked before an earlier run's outputs go
        main(["replay", str(tmp_path / "no_bag"), *oracle, "--out", str(replay_dir)])
    assert (replay_dir / "summary.json").is_file()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="holds files replay did not write"):
        main(["replay", bag, *oracle, "--out", str(tmp_path / "mine")])
    with pytest.raises(SystemExit, match="is a file"):
        main(["replay", bag, *oracle, "--out", str(tmp_path / "mine" / "notes.txt")])
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"


def test_accuracy_command_has_its_own_options(capsys):
    with pytest.raises(SystemExit) as done:
        main(["accuracy", "--help"])
    assert done.value.code == 0 and "--profiles" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["demo", "--no-such-option"])


def test_replay_refuses_bad_parameters(tmp_path):
    with pytest.raises(SystemExit, match="unknown parameters"):
        main(["replay", str(tmp_path), "-p", "no_such:=1"])


def test_values_are_read_as_ros_reads_them(tmp_path):
    """-p and --params values as rcl gives them to the node (`-p use_poses:=yes` was refused as not a bool)."""
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node

    from mapanything_ros.cli import _value
    from mapanything_ros.settings import RCL_BOOLS, load_params_file

    words = [*RCL_BOOLS, "\"yes\"", "'On'", "!!str yes", "1e3", ".5", "5.", "0x10", "-2", "010", "08", "0o17", "1_000",
             "~", ".inf", "-.Inf", "inf", "99999999999999999999", "1e999", "1e-310", "0x1.8p1", "-0x0p0",
             "0x8000000000000000", "1:20", "text", "[a, b]", "[1.5, 2.0]", "[010, 2]"]
    names = [f"p{i}" for i in range(len(words))]
    (tmp_path / "p.yaml").write_text("/**:\n  ros__parameters:\n" + "".join(f"    f{i}: {w}\n" for i, w in enumerate(words)))
    context = Context()
    rclpy.init(args=["--ros-args", *[a for n, w in zip(names, words) for a in ("-p", f"{n}:={w}")],
                     "--params-file", str(tmp_path / "p.yaml")], context=context)
    try:
        node = Node("rcl_reads", context=context, automatically_declare_parameters_from_overrides=True)
        for i, word in enumerate(words):
            for name in (f"p{i}", f"f{i}"):
                given = node.get_parameter(name).value
                given = list(given) if isinstance(given, (list, tuple)) or type(given).__name__ == "array" else given
                assert (type(_value(word)), _value(word)) == (type(given), given), (name, word)
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
    (tmp_path / "m.yaml").write_text("mapanything:\n  ros__parameters: {cameras: [a], use_poses: no, weights: 'yes'}\n")
    values = load_params_file(tmp_path / "m.yaml")
    assert values["use_poses"] is False and values["weights"] == "yes"
    # A name or node given twice, and the documents of a file of several, merge as rcl merges them
    # (the second /** replaced the first, and only the last document was read).
    (tmp_path / "d.yaml").write_text(
        "/**:\n  ros__parameters:\n    cameras: [a]\n    use_poses: no\n    world_frame: odom\n    window_size: 3\n"
        "    window_size: 5\n/**:\n  ros__parameters:\n    world_frame: w2\n    map_frame: m2\n---\n"
        "mapanything:\n  ros__parameters:\n    window_size: 6\n---\n/**:\n  ros__parameters:\n    use_poses: yes\n")
    context = Context()
    rclpy.init(args=["--ros-args", "--params-file", str(tmp_path / "d.yaml")], context=context)
    try:
        node = Node("mapanything", context=context, automatically_declare_parameters_from_overrides=True)
        given = {n: node.get_parameter(n).value for n in ("use_poses", "world_frame", "map_frame", "window_size")}
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
    assert given == {"use_poses": True, "world_frame": "w2", "map_frame": "m2", "window_size": 6}
    values = load_params_file(tmp_path / "d.yaml")
    assert {n: values[n] for n in given} == given and values["cameras"] == ["a"]
    (tmp_path / "a.yaml").write_text("mapanything:\n  ros__parameters: {cameras: [a], world_frame: &w odom, map_frame: *w}\n")
    with pytest.raises(ValueError, match="line 2: an alias \\(\\*w\\), which ROS 2 does not read"):  # rcl: neither
        load_params_file(tmp_path / "a.yaml")


def test_export_onnx_says_where_it_looked_for_missing_weights(tmp_path, monkeypatch):
    """No checkpoint: one line naming the command and the places looked at, no traceback."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit, match=r"^export-onnx: .*facebook/map-anything"):
        main(["export-onnx", "--weights", "facebook/map-anything", str(tmp_path / "onnx")])
    with pytest.raises(SystemExit, match=r"^export-onnx: .*"):
        main(["export-onnx", "--weights", str(tmp_path / "nowhere"), str(tmp_path / "onnx")])


@pytest.mark.skipif(not os.environ.get("MAPANYTHING_ROS_ENV"), reason="PATH holds the console scripts in tools/dev")
def test_console_scripts_are_on_the_path():
    """The README's commands (mapanything_node, mapanything_player, ...) run as written in tools/dev."""
    text = (Path(__file__).resolve().parents[1] / "setup.cfg").read_text()
    names = re.findall(r"^\s+([\w.-]+)\s*=\s*[\w.]+:\w+\s*$", text, re.M)
    assert {"mapanything_node", "mapanything_player"} <= set(names)
    for name in names:
        assert shutil.which(name), f"{name} is not on PATH"
    done = subprocess.run(["mapanything_player", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--duration" in done.stdout, done.stderr


@pytest.mark.skipif(not os.environ.get("MAPANYTHING_ROS_ENV"), reason="tools/dev's ros2 CLI")
def test_ros2_interface_shows_the_packages_service():
    """`ros2 interface show` (ros2interface, built by tools/build_env.sh) reads the package's service."""
    done = subprocess.run(["ros2", "interface", "show", "mapanything_ros/srv/MapFile"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and "string path" in done.stdout and "bool success" in done.stdout, done.stderr


def test_bad_input_is_one_line_not_a_traceback(tmp_path, capsys, monkeypatch):
    """What a user gets wrong ends in one line naming it and a non-zero exit (a hostile tester saw
    tracebacks for each): a damaged bag, a topic of another type, -p values of the wrong type, a
    parameter file that is no YAML or no mapping, eval of a directory that is not there."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    damaged = tmp_path / "damaged.mcap"
    damaged.write_bytes(b"\x89MCAP0\r\n" + bytes(64))
    with pytest.raises(SystemExit, match=r"^replay: "):
        main(["replay", str(damaged), "--cameras", "front_optical", "--out", str(tmp_path / "a")])
    store = get_typestore(Stores.ROS2_KILTED)
    with Writer(tmp_path / "strings", version=9) as writer:
        for topic in ("/front_optical/image_raw", "/front_optical/camera_info"):
            conn = writer.add_connection(topic, "std_msgs/msg/String", typestore=store)
            writer.write(conn, 1, store.serialize_cdr(store.types["std_msgs/msg/String"](data="x"), "std_msgs/msg/String"))
    with pytest.raises(SystemExit, match="/front_optical/image_raw is std_msgs/msg/String, not sensor_msgs/msg/Image"):
        main(["replay", str(tmp_path / "strings"), "--cameras", "front_optical", "--out", str(tmp_path / "b")])
    with pytest.raises(SystemExit, match="window_size must be a integer, got 'abc'"):
        main(["replay", str(damaged), "-p", "window_size:=abc", "--out", str(tmp_path / "c")])
    with pytest.raises(SystemExit, match="is not a YAML value"):
        main(["replay", str(damaged), "-p", "window_size:=[1,2", "--out", str(tmp_path / "c")])
    for text, why in (("a: [b\n", "not YAML"), ("- a\n- b\n", "not a ROS 2 parameter file")):
        (tmp_path / "p.yaml").write_text(text)
        with pytest.raises(SystemExit, match=why):
            main(["replay", str(damaged), "--params", str(tmp_path / "p.yaml"), "--out", str(tmp_path / "c")])
    with pytest.raises(SystemExit, match=r"^eval: .*No such file.*MAPANYTHING_ROS_DEBUG=1 shows where"):
        main(["eval", str(tmp_path / "nowhere"), "--bag", str(damaged)])
    monkeypatch.setenv("MAPANYTHING_ROS_DEBUG", "1")
    with pytest.raises(FileNotFoundError):  # the traceback, for a bug that raises one of these
        main(["eval", str(tmp_path / "nowhere"), "--bag", str(damaged)])
    monkeypatch.delenv("MAPANYTHING_ROS_DEBUG")
    for argv in (["demo", "--duration", "0"], ["eval", str(tmp_path), "--bag", str(damaged), "--threshold", "nan"]):
        with pytest.raises(SystemExit) as refused:  # argparse's: before anything runs
            main(argv)
        assert refused.value.code == 2 and "must be a number > 0" in capsys.readouterr().err
    # Topics there with no message are missing too (the hint said "missing topics []").
    with Writer(tmp_path / "empty_topics", version=9) as writer:
        writer.add_connection("/front_optical/image_raw", "sensor_msgs/msg/Image", typestore=store)
        writer.add_connection("/front_optical/camera_info", "sensor_msgs/msg/CameraInfo", typestore=store)
    assert main(["replay", str(tmp_path / "empty_topics"), "--cameras", "front_optical", "--backend", "oracle",
                 "-p", "oracle_preset:=small", "--out", str(tmp_path / "d")]) == 1
    assert "missing topics ['/front_optical/camera_info', '/front_optical/image_raw']" in capsys.readouterr().err
