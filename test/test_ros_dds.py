"""The Fast DDS shared-memory segment check (ros/dds.py) and the node's warning when one capture's
messages exceed it."""

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mapanything_ros.ros import dds

PROFILE = Path(__file__).resolve().parents[1] / "config" / "fastdds_localhost.xml"


def test_the_shipped_profiles_segment_is_read():
    for major in (2, 3):
        env = {dds.profile_variable(major): str(PROFILE)}
        assert dds.shm_segment(major, env) == (64 * 2**20, str(PROFILE))


@pytest.mark.parametrize("old, new, major, loaded, said", [
    (None, "P", 3, "P", None), ("P", None, 3, "P", None), (None, None, 3, None, None),
    (str(PROFILE), "Q", 3, str(PROFILE), None),  # Fast DDS 3 reads both, the old name's default profile first,
    ("/absent.xml", str(PROFILE), 3, str(PROFILE), None),  # unless its file is not there
    ("P", None, 2, "P", None), ("P", "Q", 2, "P", None), ("", "P", 2, None, "FASTDDS_DEFAULT_PROFILES_FILE is set (P)"),
    (None, "P", 2, None, "FASTDDS_DEFAULT_PROFILES_FILE is set (P), but this Fast DDS 2"),  # Jazzy: not read
    (None, None, 2, None, None),
])
def test_the_profile_fast_dds_loads(monkeypatch, old, new, major, loaded, said):
    """Measured with the PyPI runtimes (the segments mapped: docs/development.md): Fast DDS 2.14
    (Jazzy) loads FASTRTPS_DEFAULT_PROFILES_FILE only, 3.2 (Kilted) both, the old name's default
    profile first."""
    env = {name: value for name, value in ((dds.OLD, old), (dds.NEW, new)) if value is not None}
    path, why = dds.loaded_profile(major, env)
    assert path == loaded and (why is None) == (said is None)
    if said:
        assert why.startswith(said) and "set FASTRTPS_DEFAULT_PROFILES_FILE instead" in why
        assert dds.shm_segment(major, env) == (dds.DEFAULT_SEGMENT, "Fast DDS's default: " + why)
    assert dds.loaded_profile(major, {**env, "RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}) == (None, None)
    for found, want in ((2, {dds.OLD: "Z"}), (3, {dds.NEW: "Z"}), (None, {dds.OLD: "Z", dds.NEW: "Z"})):
        out = {dds.OLD: "x", dds.NEW: "y", "OTHER": "o"}
        monkeypatch.setattr(dds, "fast_dds_major", lambda maps=None, environ=None, found=found: found)
        dds.use_profile("Z", out)  # for the Fast DDS found; both names when none is
        assert out == {**want, "OTHER": "o"}


def test_the_fast_dds_version_is_found(tmp_path):
    """The library mapped in the process first, else a ROS prefix's lib/ or LD_LIBRARY_PATH."""
    maps = tmp_path / "maps"
    maps.write_text("7f0000-7f1000 r-xp 00000000 08:01 1 /opt/ros/jazzy/lib/libfastrtps.so.2.14.5\n")
    assert dds.fast_dds_major(str(maps)) == 2
    maps.write_text("7f0000-7f1000 r-xp 00000000 08:01 1 /env/lib/libfastdds.so.3.2.2\n"
                    "7f2000-7f3000 r-xp 00000000 08:01 1 /env/lib/librmw_fastrtps_cpp.so\n")
    assert dds.fast_dds_major(str(maps)) == 3
    for prefix, libraries in (("jazzy", ["libfastrtps.so.2.14"]), ("kilted", ["libfastdds.so.3.2"]),
                              ("both", ["libfastrtps.so.2.14", "libfastdds.so.3.2"])):
        (tmp_path / prefix / "lib").mkdir(parents=True)
        for library in libraries:
            (tmp_path / prefix / "lib" / library).write_bytes(b"")
    (tmp_path / "none" / "lib").mkdir(parents=True)
    (tmp_path / "none" / "lib" / "libfastcdr.so.2").write_bytes(b"")
    absent = str(tmp_path / "absent")
    for prefixes, major in ((["missing", "none", "jazzy"], 2), (["kilted", "jazzy"], 3), (["none"], None),
                            (["both"], 3)):  # in name order, whatever the directory's
        env = {"AMENT_PREFIX_PATH": ":".join(str(tmp_path / p) for p in prefixes)}
        assert dds.fast_dds_major(absent, env) == major
    assert dds.fast_dds_major(absent, {"LD_LIBRARY_PATH": str(tmp_path / "jazzy" / "lib")}) == 2


def test_this_runtime_loads_the_shipped_profile():
    """The variable set by test/conftest.py (and tools/dev) is the one this ROS runtime's Fast DDS
    reads: a participant maps the profile's 64 MiB segment (with the variable Fast DDS 2 ignores
    it mapped only the default 512 KB one, and large best-effort images were lost)."""
    pytest.importorskip("rclpy")
    if not os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp").startswith("rmw_fastrtps"):
        pytest.skip("the middleware is not Fast DDS")
    script = (
        "import os, rclpy\n"
        "from mapanything_ros.ros import dds\n"
        "rclpy.init(); node = rclpy.create_node('dds_probe')\n"
        "maps = open('/proc/self/maps').read().split()\n"
        "sizes = [os.path.getsize(p) for p in set(maps) if p.startswith('/dev/shm/fast')]\n"
        "print(max(sizes), dds.fast_dds_major(), dds.loaded_profile()[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    largest, major, loaded = out.stdout.split()
    assert int(largest) >= 64 * 2**20 and loaded == str(PROFILE), out.stdout + out.stderr
    assert major in ("2", "3") and f"{dds.profile_variable(int(major))}={PROFILE}" in "\n".join(
        f"{k}={v}" for k, v in os.environ.items())


def test_defaults_other_middleware_and_profiles_without_shared_memory(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)
    monkeypatch.delenv("FASTRTPS_DEFAULT_PROFILES_FILE", raising=False)
    monkeypatch.delenv("RMW_IMPLEMENTATION", raising=False)
    assert dds.shm_segment(3) == (dds.DEFAULT_SEGMENT, "Fast DDS's default: no FASTDDS_DEFAULT_PROFILES_FILE")
    assert dds.shm_segment(2) == (dds.DEFAULT_SEGMENT, "Fast DDS's default: no FASTRTPS_DEFAULT_PROFILES_FILE")
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


def test_the_node_says_when_its_profile_is_not_loaded(monkeypatch):
    """Under Fast DDS 2 (Jazzy) a profile given as FASTDDS_DEFAULT_PROFILES_FILE is not read: said
    at start-up (log and /diagnostics), with the variable to set, and the segment warning points
    there too; nothing said under Fast DDS 3. (The environment the node reads is a fake one: Fast
    DDS 2 reads its profile once per process, so this process's must stay as conftest set it.)"""
    pytest.importorskip("rclpy")
    from diagnostic_msgs.msg import DiagnosticStatus

    from test_ros_node_inputs import Rig

    loaded, env = dds.loaded_profile, {dds.NEW: str(PROFILE)}
    for major, said in ((3, False), (2, True)):
        monkeypatch.setattr(dds, "loaded_profile", lambda major=major: loaded(major, env))
        r = Rig({"cameras": ["a"]})
        try:
            held = " ".join(m for _, m in r.node.problems.active("pipeline"))
            assert ("this Fast DDS 2 (Humble, Jazzy) reads only FASTRTPS_DEFAULT_PROFILES_FILE" in held) == said
            if said:
                r.assert_problem("pipeline", DiagnosticStatus.WARN, f"FASTDDS_DEFAULT_PROFILES_FILE is set ({PROFILE})")
        finally:
            r.close()
    text = "exceed the Fast DDS shared-memory segment (0.5 MiB, test profile): best-effort inputs from other " \
           "processes on this computer will be lost; set FASTRTPS_DEFAULT_PROFILES_FILE to the profile"
    assert _warned(monkeypatch, dds.DEFAULT_SEGMENT, 1 << 40, ["a"], (640, 480), text)


@pytest.mark.skipif(not os.environ.get("MAPANYTHING_ROS_ENV"), reason="run through tools/dev")
def test_tools_dev_gives_the_profile_in_the_variable_its_fast_dds_reads():
    """tools/dev (the demo, the benchmarks, `tools/dev run`) sets the variable this runtime's Fast
    DDS reads, and not the other, as test/conftest.py does."""
    repo = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k not in (dds.OLD, dds.NEW)}
    script = f"print(repr(os.environ.get({dds.OLD!r})), repr(os.environ.get({dds.NEW!r})))"
    out = subprocess.run([str(repo / "tools" / "dev"), "run", sys.executable, "-c", "import os; " + script],
                         env=env, capture_output=True, text=True, timeout=120, check=True).stdout.split()
    want = {dds.profile_variable(): repr(str(PROFILE))}
    assert out == [want.get(dds.OLD, "None"), want.get(dds.NEW, "None")]
