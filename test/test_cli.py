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
    # An output bag already there: refused with the reason (it was a rosbags WriterError traceback).
    with pytest.raises(SystemExit, match="bag exists: remove it"):
        main(["replay", bag, *oracle, "--out", str(replay_dir), "--write-bag"])


def test_accuracy_command_has_its_own_options(capsys):
    with pytest.raises(SystemExit) as done:
        main(["accuracy", "--help"])
    assert done.value.code == 0 and "--profiles" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["demo", "--no-such-option"])


def test_replay_refuses_bad_parameters(tmp_path):
    with pytest.raises(SystemExit, match="unknown parameters"):
        main(["replay", str(tmp_path), "-p", "no_such:=1"])


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
