"""The Fast DDS shared-memory segment check (ros/dds.py) and the node's warning when one capture's
messages exceed it."""

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mapanything_ros.ros import dds

PROFILE = Path(__file__).resolve().parents[1] / "config" / "fastdds_localhost.xml"


def test_the_shipped_profiles_segment_is_read(monkeypatch):
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", str(PROFILE))
    monkeypatch.delenv("RMW_IMPLEMENTATION", raising=False)
    assert dds.shm_segment() == (64 * 2**20, str(PROFILE))


def test_defaults_other_middleware_and_profiles_without_shared_memory(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)
    monkeypatch.delenv("FASTRTPS_DEFAULT_PROFILES_FILE", raising=False)
    monkeypatch.delenv("RMW_IMPLEMENTATION", raising=False)
    assert dds.shm_segment()[0] == dds.DEFAULT_SEGMENT
    monkeypatch.setenv("RMW_IMPLEMENTATION", "rmw_cyclonedds_cpp")
    assert dds.shm_segment() is None
    ns = 'xmlns="http://www.eprosima.com"'
    udp_only = f"<dds {ns}><profiles><participant profile_name='p'><rtps><useBuiltinTransports>false" \
               "</useBuiltinTransports></rtps></participant></profiles></dds>"
    assert dds.segment_in_profile(ET.fromstring(udp_only)) is None
    shm_default = f"<dds {ns}><profiles><transport_descriptors><transport_descriptor><transport_id>s</transport_id>" \
                  "<type>SHM</type></transport_descriptor></transport_descriptors></profiles></dds>"
    assert dds.segment_in_profile(ET.fromstring(shm_default)) == dds.DEFAULT_SEGMENT


def test_the_node_warns_when_a_capture_exceeds_the_segment(monkeypatch):
    """Two 1280x720 rgb8 cameras are 5.3 MiB a capture: fine with an 8 MiB segment, said with 4 MiB."""
    rclpy = pytest.importorskip("rclpy")  # noqa: F841
    from diagnostic_msgs.msg import DiagnosticStatus
    from sensor_msgs.msg import Image

    from mapanything_ros.ros import node as node_module
    from test_ros_node_inputs import Rig

    for segment, said in ((8 * 2**20, False), (4 * 2**20, True)):
        monkeypatch.setattr(node_module.dds, "shm_segment", lambda s=segment: (s, "test profile"))
        r = Rig({"cameras": ["a", "b"]})
        try:
            for cam in ("a", "b"):
                r.node._on_image(cam, Image(height=720, width=1280, encoding="rgb8", step=3840,
                                            data=bytes(1280 * 720 * 3)))
            problems = " ".join(m for _, m in r.node.problems.active("pipeline"))
            assert ("exceed the Fast DDS shared-memory segment (4.0 MiB, test profile)" in problems) == said, problems
            if said:
                r.assert_problem("pipeline", DiagnosticStatus.WARN, "one capture's messages (5.3 MiB")
        finally:
            r.close()


def test_the_node_warns_when_dev_shm_is_smaller_than_a_segment(monkeypatch):
    """Docker's 64 MB /dev/shm cannot hold the shipped profile's 64 MiB segment: said, with the fix."""
    rclpy = pytest.importorskip("rclpy")  # noqa: F841
    from diagnostic_msgs.msg import DiagnosticStatus
    from sensor_msgs.msg import Image

    from mapanything_ros.ros import node as node_module
    from test_ros_node_inputs import Rig

    monkeypatch.setattr(node_module.dds, "shm_segment", lambda: (64 * 2**20, "test profile"))
    for free, said in ((1 << 40, False), (60 * 2**20, True)):
        monkeypatch.setattr(node_module.dds, "shm_free", lambda f=free: f)
        r = Rig({"cameras": ["a"]})
        try:
            r.node._on_image("a", Image(height=48, width=64, encoding="rgb8", step=192, data=bytes(64 * 48 * 3)))
            problems = " ".join(m for _, m in r.node.problems.active("pipeline"))
            assert ("/dev/shm has 60.0 MiB free" in problems) == said, problems
            if said:
                r.assert_problem("pipeline", DiagnosticStatus.WARN, "Docker: --shm-size")
        finally:
            r.close()
    assert dds.shm_free() is None or dds.shm_free() > 0
