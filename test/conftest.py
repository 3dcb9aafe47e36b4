"""Shared test set-up.

Keeps every test's DDS traffic on this machine, however pytest is started:
tools/dev sets these already; a bare `pytest` gets the same settings before
any test module imports rclpy. Also the synthetic-scene fixtures.
"""

import os
from pathlib import Path

import pytest

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(
    Path(__file__).resolve().parents[1] / "config" / "fastdds_localhost.xml"
)

from mapanything_ros.synthetic import SyntheticScene, capture_frames  # noqa: E402
from mapanything_ros.window import Window  # noqa: E402


SEC = 1_000_000_000


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
