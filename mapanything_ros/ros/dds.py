"""Fast DDS's profile and shared-memory segment as this process runs with them, for the node's
start-up checks: a burst of messages larger than the segment (one frame of every camera plus a
LiDAR sweep) is lost between processes when best effort, and a profile set in the variable this
Fast DDS does not read is not loaded at all (docs/development.md, "DDS stays on this machine").

Which variable is read (measured with the PyPI runtimes, docs/development.md): Fast DDS 2 (Humble,
Jazzy) reads FASTRTPS_DEFAULT_PROFILES_FILE only; Fast DDS 3 (Kilted and later) reads
FASTDDS_DEFAULT_PROFILES_FILE, and FASTRTPS_DEFAULT_PROFILES_FILE before it when both are set
(with a deprecation warning)."""

import os
import re
import xml.etree.ElementTree as ET

DEFAULT_SEGMENT = 512 * 1024  # Fast DDS's shared-memory segment without a profile saying otherwise (bytes)
OLD, NEW = "FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE"
_NS = "{http://www.eprosima.com}"
_LIBRARY = re.compile(r"lib(fastdds|fastrtps)\.so\.(\d+)")


def fast_dds_major(maps="/proc/self/maps"):
    """Major version of Fast DDS: the library this process has loaded, else the first found in
    the lib/ directory of a ROS prefix (AMENT_PREFIX_PATH) or in LD_LIBRARY_PATH; None when none
    is found (2: libfastrtps.so.2, Humble and Jazzy; 3: libfastdds.so.3, Kilted and later)."""
    try:
        with open(maps) as f:
            found = _LIBRARY.search(f.read())
    except OSError:
        found = None
    if found:
        return int(found.group(2))
    env = os.environ
    dirs = [os.path.join(p, "lib") for p in env.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    dirs += [d for d in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if d]
    for directory in dirs:
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            found = _LIBRARY.match(name)
            if found:
                return int(found.group(2))
    return None


def profile_variable(major=None):
    """The variable to set for Fast DDS of `major` (default: this process's, fast_dds_major;
    unknown counts as 3) to load a profile file without warnings."""
    major = fast_dds_major() if major is None else major
    return OLD if major == 2 else NEW


def use_profile(path, environ=os.environ, major=None):
    """Make `path` the profile Fast DDS loads in processes started with `environ` (and in this one
    before it loads rclpy): profile_variable() set, the other removed (Fast DDS 3 would read
    FASTRTPS_DEFAULT_PROFILES_FILE first; Fast DDS 2 ignores FASTDDS_DEFAULT_PROFILES_FILE)."""
    name = profile_variable(major)
    environ[name] = str(path)
    environ.pop(OLD if name == NEW else NEW, None)


def loaded_profile(major=None):
    """The profile file Fast DDS loads in this process (None when it loads none), and, when a
    profile is set in a variable this Fast DDS does not read, why it is not loaded."""
    major = fast_dds_major() if major is None else major
    if os.environ.get(OLD):
        return os.environ[OLD], None
    if os.environ.get(NEW):
        if major != 2:
            return os.environ[NEW], None
        return None, (f"{NEW} is set ({os.environ[NEW]}), but this Fast DDS 2 (Humble, Jazzy) reads only {OLD}: "
                      f"the profile is not loaded; set {OLD} instead")
    return None, None


def shm_segment(major=None):
    """(bytes, where it comes from) of the shared-memory segment, or None when the middleware is
    not Fast DDS (RMW_IMPLEMENTATION names another) or the profile uses no shared memory."""
    rmw = os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    if not rmw.startswith("rmw_fastrtps"):
        return None
    path, ignored = loaded_profile(major)
    if not path:
        return DEFAULT_SEGMENT, "Fast DDS's default: " + (ignored or f"no {profile_variable(major)}")
    try:
        size = segment_in_profile(ET.parse(path).getroot())
    except (OSError, ET.ParseError):
        return None  # Fast DDS itself says what is wrong with the file
    return None if size is None else (size, path)


def segment_in_profile(root):
    """The segment_size of the profile's SHM transport (its default when it gives none), None
    when it has none and turns the built-in transports off."""
    for descriptor in root.iter(f"{_NS}transport_descriptor"):
        if (descriptor.findtext(f"{_NS}type") or "").strip() == "SHM":
            return int(descriptor.findtext(f"{_NS}segment_size") or DEFAULT_SEGMENT)
    builtin = [e.text.strip().lower() for e in root.iter(f"{_NS}useBuiltinTransports") if e.text]
    return None if "false" in builtin else DEFAULT_SEGMENT


def shm_free(path="/dev/shm"):
    """Bytes free in the shared-memory file system where Fast DDS maps its segments, or None where
    there is none."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize
