"""SIGINT (Ctrl-C sent to the process's PID alone) stops the node and the synthetic player with exit
code 0, no traceback, the node within 2 s: at idle and while working (the node mid-inference with
the tiny random backend fed by the player at its defaults, the player between and during renders).

Both run as subprocesses as a user starts them (console scripts mapanything_node and
mapanything_player, the node with the wall clock: no
use_sim_time, so the player's default stamps must follow that clock for windows to come out).
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402

from mapanything_ros.msg import ReconstructionWindow  # noqa: E402
from mapanything_ros.ros.run import STOP_GRACE_S  # noqa: E402
from test_ros_node import pipeline_statuses, spin_until  # noqa: E402

CAMERAS = "[front_optical, left_fisheye_optical]"
# A generous bound, so that a loaded machine passes: the time to stop is a benchmark figure (issue 19),
# here only "it stops, in order" is checked.
EXIT_S = 15.0


def start(args, log, module=False):
    """The console script `args[0]` (test_cli checks they are on tools/dev's PATH; elsewhere, or with
    `module`, `python -m` of the module behind it in this interpreter) with its output in the file `log`."""
    script = None if module else shutil.which(args[0])
    cmd = [script] if script else [sys.executable, "-m", f"mapanything_ros.ros.{args[0].split('_')[-1]}"]
    return subprocess.Popen(cmd + args[1:], env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)


def start_node(tmp_path, long_side=112, module=False):
    log = open(tmp_path / "node.log", "w+")
    proc = start(["mapanything_node", "--ros-args", "-p", f"cameras:={CAMERAS}", "-p", "backend:=random",
                  "-p", "device:=cpu", "-p", f"long_side:={long_side}", "-p", "window_size:=3",
                  "-p", "keyframe_interval:=0.0"], log, module)
    return proc, log


def inference_p50_s(diags):
    """The node's median inference time (s) from its latest pipeline diagnostic that has one."""
    stats = [{v.key: v.value for v in s.values} for s in pipeline_statuses({"diagnostics": diags})]
    return max([float(s["inference_latency_p50_s"]) for s in stats if "inference_latency_p50_s" in s], default=0.0)


def interrupt(proc, log, limit, sig=signal.SIGINT):
    """`sig` to `proc` alone; (exit code, seconds it took, its output). Killed (code None) after 30 s."""
    t0 = time.monotonic()
    proc.send_signal(sig)
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = None
    took = time.monotonic() - t0
    log.seek(0)
    text = log.read()
    log.close()
    assert code == 0 and took <= limit and "Traceback" not in text and "terminate called" not in text, \
        (code, took, text[-4000:])
    return text


def test_sigint_at_idle(ros, tmp_path):
    probe, executor = ros
    windows = probe.create_subscription(ReconstructionWindow, "/mapanything/window", lambda m: None, 10)
    node, node_log = start_node(tmp_path)
    player_log = open(tmp_path / "player.log", "w+")
    player = start(["mapanything_player", "--wait-subscribers", "60"], player_log)  # nobody subscribes
    try:
        assert spin_until(executor, lambda: windows.get_publisher_count() or node.poll() is not None, 60)
        assert node.poll() is None, "node died at start-up"
        time.sleep(2.0)  # the player is up and waiting for subscribers
        assert player.poll() is None
        interrupt(player, player_log, 30)
        interrupt(node, node_log, EXIT_S)
    finally:
        for proc in (node, player):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("long_side, abandoned", [(252, False), (1036, True)])
def test_sigint_mid_inference_and_mid_playback(ros, tmp_path, long_side, abandoned):
    """SIGINT while the worker infers: at long side 252 (about 0.25 s) the inference ends within the
    stop grace (ros/run.py STOP_GRACE_S); at 1036 it does not and is abandoned, ROS stopped in order
    all the same (it used to end in "terminate called without an active exception", exit 134). The
    abandoned case gets SIGINT twice, 0.3 s apart, as Ctrl-C in the terminal of `ros2 launch` reaches
    the node (from the terminal, then forwarded by launch): still exit 0 (it was 1, "insisted")."""
    probe, executor = ros
    got, diags = [], []
    probe.create_subscription(ReconstructionWindow, "/mapanything/window", got.append, 10)
    probe.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    node, node_log = start_node(tmp_path, long_side=long_side)
    player_log = open(tmp_path / "player.log", "w+")
    player = start(["mapanything_player", "--preset", "small", "--lidar-rate", "0", "--duration", "600",
                    "--wait-subscribers", "60"], player_log)
    try:
        # Every capture is a keyframe (keyframe_interval 0): the worker is busy while the player plays.
        assert spin_until(executor, lambda: len(got) >= 2 or node.poll() is not None or player.poll() is not None,
                          240), f"{len(got)} windows"
        assert node.poll() is None and player.poll() is None
        # Inference takes longer than the 0.1 s between keyframes: the worker is busy at the signal.
        assert spin_until(executor, lambda: inference_p50_s(diags) > 0.1, 10), inference_p50_s(diags)
        if abandoned:
            assert inference_p50_s(diags) > STOP_GRACE_S, inference_p50_s(diags)
            time.sleep(0.5)  # past the last window's map insertion: the next window's inference has begun
            node.send_signal(signal.SIGINT)
            time.sleep(0.3)
        text = interrupt(node, node_log, EXIT_S)
        assert not abandoned or "the inference in progress is abandoned" in text
        interrupt(player, player_log, 30)
    finally:
        for proc in (node, player):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("after_s, module", [(0.5, False), (2.0, False), (0.5, True)])
def test_a_stop_signal_during_start_up_exits_0_at_once(tmp_path, after_s, module):
    """While importing torch and the model, or starting up: SIGINT ends the process (exit 0, no
    KeyboardInterrupt traceback); SIGHUP likewise (it used to end the node with 129, unordered). The
    same with `python -m mapanything_ros.ros.node` (its imports ran before the handlers were set)."""
    for sig in (signal.SIGINT, signal.SIGHUP):
        node, node_log = start_node(tmp_path, module=module)
        time.sleep(after_s)
        interrupt(node, node_log, EXIT_S, sig)


@pytest.mark.parametrize("bad", [["-r", "a:=b:=c"], ["--log-level", "loud"], ["-r", "__ns:=/a//b"]])
def test_arguments_rcl_refuses_are_one_line(tmp_path, bad):
    """A remap or log level rcl cannot parse ended the node in a traceback from rclpy.init."""
    log = open(tmp_path / "node.log", "w+")
    proc = start(["mapanything_node", "--ros-args", "-p", f"cameras:={CAMERAS}", *bad], log)
    assert proc.wait(timeout=120) == 2
    log.seek(0)
    text = log.read()
    assert "ROS cannot start with these arguments" in text and "Traceback" not in text, text


@pytest.mark.parametrize("given", [None, "2"])
def test_the_node_process_loads_numpy_with_its_blas_on_one_thread(given):
    """ros/node.py loads numpy with OPENBLAS_NUM_THREADS=1 (its idle OpenBLAS threads cost 8 % of
    a core), for the console scripts and `python -m mapanything_ros.ros.node` alike, and takes the
    setting back afterwards (torch and child processes do not see it); a value the user set stays.
    The setting is read where OpenBLAS reads it: as numpy's import runs."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if given is not None:
        env["OPENBLAS_NUM_THREADS"] = given
    probe = """
import importlib.abc, os, sys
seen = []
class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "numpy":
            seen.append(os.environ.get("OPENBLAS_NUM_THREADS"))
        return None
sys.meta_path.insert(0, Watch())
import mapanything_ros.ros.node
print(seen, os.environ.get("OPENBLAS_NUM_THREADS"))
"""
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == ("['1'] None" if given is None else "['2'] 2")
