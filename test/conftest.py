"""Shared test set-up.

Keeps every test's DDS traffic on this machine, however pytest is started:
tools/dev sets these already; a bare `pytest` gets the same settings before
any test module imports rclpy. Also the synthetic-scene fixtures and one colcon build
of this package per session (colcon_install, sourced_env) for the install and launch tests.
"""

import logging
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
# The tests talk on a ROS domain of their own, never the shell's (a robot, a player or a bag
# playing there would answer them), drawn per run from ROS's safe range 1..101 so that two runs
# side by side rarely meet. Subprocesses inherit it.
SHELL_DOMAIN = os.environ.get("ROS_DOMAIN_ID")
os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().choice([d for d in range(1, 102) if str(d) != SHELL_DOMAIN]))
# The profile in the variable the ROS runtime's Fast DDS reads (2: FASTRTPS_..., 3: FASTDDS_...).
from mapanything_ros.ros.dds import use_profile  # noqa: E402 (no rclpy: plain os and xml)

use_profile(Path(__file__).resolve().parents[1] / "config" / "fastdds_localhost.xml")

# Importing launch (its pytest plugins, launch_pytest and launch_testing, do at start-up) makes every
# logger created afterwards a LaunchLogger that does not propagate, so the package's log records would
# never reach the root logger (and caplog) as they do in the node. Plain loggers again:
logging.setLoggerClass(logging.Logger)

from mapanything_ros.synthetic import SyntheticScene, capture_frames  # noqa: E402
from mapanything_ros.window import Window  # noqa: E402


SEC = 1_000_000_000
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def scene():
    """The default synthetic scene (seed 0): room, two-camera rig, LiDAR."""
    return SyntheticScene(seed=0)


@pytest.fixture(scope="session")
def frames(scene):
    """Window views of two captures (at 2 s and 3 s) of both rig cameras."""
    win = Window(max_keyframes=4)
    for stamp in (2 * SEC, 3 * SEC):
        assert win.add(capture_frames(scene, stamp)).admitted
    return win.views()


@pytest.fixture
def ros(request):
    """A node (named after the test module) with its own context and executor, torn down after the test."""
    rclpy = pytest.importorskip("rclpy")
    import rclpy.executors

    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(request.module.__name__.rpartition(".")[2], context=context)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    yield node, executor
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=context)


def _copy_sources(dest):
    """This source tree (tracked and untracked, not ignored files) into dest, as a clone would hold it."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True).stdout.split() if (REPO / ".git").exists() else None
    if not files:
        shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(".git", "build", "install", "log", "out",
                                                                  "__pycache__", ".hypothesis"))
        return
    for name in files:
        if not (REPO / name).is_file():  # tracked but deleted in the working tree
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, dest / name)


@pytest.fixture(scope="session")
def colcon_install(tmp_path_factory):
    """`colcon build` of this package in a fresh workspace, as on a robot: the install/ directory.

    Uses the sourced ROS (AMENT_PREFIX_PATH) or, with a pip-installed ROS, the interpreter's prefix.
    """
    if shutil.which("colcon") is None:
        pytest.skip("colcon is not installed")
    ws = tmp_path_factory.mktemp("ws")
    _copy_sources(ws / "src" / "mapanything_ros")
    env = dict(os.environ)
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    result = subprocess.run(
        ["colcon", "--log-base", "log", "build", "--merge-install", "--event-handlers", "console_direct-",
         "--cmake-args", "-DBUILD_TESTING=OFF"],
        cwd=ws, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return ws / "install"


@pytest.fixture(scope="session")
def pip_install(tmp_path_factory):
    """`pip install` of this package's sources (no dependencies: they are this environment's) into a
    fresh target directory, as setup.py builds it: (the directory, pip's verbose log)."""
    src, target = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("site")
    _copy_sources(src)
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-v", "--no-deps", "--no-build-isolation",
                             "--no-index", "--target", str(target), str(src)], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return target, result.stdout + result.stderr


@pytest.fixture(scope="session")
def sourced_env(colcon_install):
    """os.environ after `source install/setup.bash` of colcon_install (what a user's shell has)."""
    out = subprocess.run(["bash", "-c", f"source {colcon_install}/setup.bash && env -0"], capture_output=True,
                         check=True).stdout.decode()
    return dict(line.split("=", 1) for line in out.split("\0") if "=" in line)
