"""What the README tells a user to do, in a shell: colcon build, source the install, start the
node with `ros2 launch mapanything_ros mapping.launch.py backend:=oracle` beside the synthetic
player, receive ~/points, change a runtime parameter with `ros2 param set`, stop both with
SIGINT (Ctrl-C): exit code 0 and no traceback.

Needs ros2launch, ros2param and launch_ros (tools/dev builds them for a pip-installed ROS).
"""

import os
import signal
import subprocess
import time

import pytest

rclpy = pytest.importorskip("rclpy")
import rclpy.executors  # noqa: E402
pytest.importorskip("ros2launch", reason="ros2launch not installed (tools/dev builds it)")
pytest.importorskip("ros2param", reason="ros2param not installed (tools/dev builds it)")
from sensor_msgs.msg import PointCloud2  # noqa: E402


def _shell(cmd, ws, log):
    """`source install/setup.bash && exec CMD` in the workspace, in its own process group (as a
    terminal's foreground job), output to `log`.

    A process started in the background of a non-interactive shell inherits SIGINT ignored (and
    would then ignore Ctrl-C); the child gets the default action back, as in a terminal.
    """
    return subprocess.Popen(["bash", "-c", f"source install/setup.bash && exec {cmd}"], cwd=ws,
                            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ), start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _run(cmd, ws, timeout=60):
    return subprocess.run(["bash", "-c", f"source install/setup.bash && {cmd}"], cwd=ws, capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ))


def _ctrl_c(proc):
    """SIGINT to the process group, as Ctrl-C in a terminal; then the exit code (None: killed after 30 s)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None


@pytest.fixture(scope="module")
def user_run(colcon_install, tmp_path_factory):
    """The whole session: {"points": first cloud, "set"/"get": CompletedProcess, "codes", "logs"}."""
    ws, logs_dir = colcon_install.parent, tmp_path_factory.mktemp("user_path")
    launch_log, player_log = open(logs_dir / "launch.log", "w+"), open(logs_dir / "player.log", "w+")
    launch = _shell("ros2 launch mapanything_ros mapping.launch.py backend:=oracle device:=cpu", ws, launch_log)
    player = _shell("ros2 run mapanything_ros mapanything_player --duration 600", ws, player_log)
    context = rclpy.Context()
    rclpy.init(context=context)
    probe = rclpy.create_node("user_path_probe", context=context)
    clouds = []
    probe.create_subscription(PointCloud2, "/mapanything/points", clouds.append, 5)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(probe)
    run = {"points": None, "set": None, "get": None}
    try:
        deadline = time.monotonic() + 180  # the node imports torch and waits for a full window
        while not clouds and launch.poll() is None and player.poll() is None and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.2)
        if clouds:
            run["points"] = clouds[0]
            run["set"] = _run("ros2 param set --no-daemon --spin-time 5 /mapanything keyframe_interval 0.5", ws)
            run["get"] = _run("ros2 param get --no-daemon --spin-time 5 /mapanything keyframe_interval", ws)
    finally:
        executor.shutdown()
        probe.destroy_node()
        rclpy.shutdown(context=context)
        run["codes"] = {"ros2 launch": _ctrl_c(launch), "player": _ctrl_c(player)}
        run["logs"] = {}
        for name, log in (("ros2 launch", launch_log), ("player", player_log)):
            log.seek(0)
            run["logs"][name] = log.read()
            log.close()
    run["report"] = "\n".join(f"--- {name} (exit {run['codes'][name]}):\n{text[-4000:]}"
                              for name, text in run["logs"].items())
    return run


@pytest.mark.timeout(300)
def test_points_arrive_and_ros2_param_set_changes_a_runtime_parameter(user_run):
    cloud = user_run["points"]
    assert cloud is not None, "no ~/points within 180 s\n" + user_run["report"]
    assert cloud.width * cloud.height > 0 and cloud.header.frame_id
    done, got = user_run["set"], user_run["get"]
    assert done.returncode == 0 and "Set parameter successful" in done.stdout, done.stdout + done.stderr
    assert got.returncode == 0 and "Double value is: 0.5" in got.stdout, got.stdout + got.stderr


@pytest.mark.timeout(300)
def test_ctrl_c_stops_launch_and_player_with_exit_0_and_no_traceback(user_run):
    report = user_run["report"]
    assert user_run["codes"] == {"ros2 launch": 0, "player": 0}, report
    # ros2 launch exits 0 whatever its processes do: the node's own exit is in its log
    assert "process has finished cleanly" in user_run["logs"]["ros2 launch"], report
    assert not any("Traceback" in text for text in user_run["logs"].values()), report
