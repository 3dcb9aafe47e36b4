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


def _warned(monkeypatch, segment, free, cameras, size, text):
    """Whether a node given one rgb8 image of `size` (width, height) per camera, with `segment`
    bytes of Fast DDS segment and `free` bytes free in /dev/shm, holds a pipeline problem with
    `text` (also seen on /diagnostics)."""
    pytest.importorskip("rclpy")
    from diagnostic_msgs.msg import DiagnosticStatus
    from sensor_msgs.msg import Image

    from mapanything_ros.ros import node as node_module
    from test_ros_node_inputs import Rig

    monkeypatch.setattr(node_module.dds, "shm_segment", lambda: (segment, "test profile"))
    monkeypatch.setattr(node_module.dds, "shm_free", lambda: free)
    r = Rig({"cameras": cameras})
    try:
        w, h = size
        for cam in cameras:
            r.node._on_image(cam, Image(height=h, width=w, encoding="rgb8", step=3 * w, data=bytes(3 * w * h)))
        said = text in " ".join(m for _, m in r.node.problems.active("pipeline"))
        if said:
            r.assert_problem("pipeline", DiagnosticStatus.WARN, text)
        return said
    finally:
        r.close()


def test_the_node_warns_when_a_capture_exceeds_the_segment(monkeypatch):
    """Two 1280x720 rgb8 cameras are 5.3 MiB a capture: fine with an 8 MiB segment, said with 4 MiB."""
    text = "one capture's messages (5.3 MiB: a 2.6 MiB, b 2.6 MiB) exceed the Fast DDS shared-memory segment"
    assert not _warned(monkeypatch, 8 * 2**20, 1 << 40, ["a", "b"], (1280, 720), text)
    assert _warned(monkeypatch, 4 * 2**20, 1 << 40, ["a", "b"], (1280, 720), text + " (4.0 MiB, test profile)")


def test_the_node_warns_when_dev_shm_is_smaller_than_a_segment(monkeypatch):
    """Docker's 64 MB /dev/shm cannot hold the shipped profile's 64 MiB segment: said, with the fix."""
    text = "/dev/shm has 60.0 MiB free, less than one Fast DDS shared-memory segment"
    assert not _warned(monkeypatch, 64 * 2**20, 1 << 40, ["a"], (64, 48), text)
    assert _warned(monkeypatch, 64 * 2**20, 60 * 2**20, ["a"], (64, 48), text)
    assert dds.shm_free() > 0  # this machine's /dev/shm, read
