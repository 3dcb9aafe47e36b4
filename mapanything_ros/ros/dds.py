"""Fast DDS's profile and shared-memory segment as this process runs with them, for the node's
start-up checks: a burst of messages larger than the segment (one frame of every camera plus a
LiDAR sweep) is lost between processes when best effort, and a profile set in the variable this
Fast DDS does not read is not loaded at all (docs/development.md, "DDS stays on this machine").

Which variable is read (measured with the PyPI runtimes, docs/development.md): Fast DDS 2 (Humble,
Jazzy) reads FASTRTPS_DEFAULT_PROFILES_FILE only; Fast DDS 3 (Kilted and later) reads both, and
when both are set the default profile of FASTRTPS_DEFAULT_PROFILES_FILE's file wins (with a
deprecation warning)."""

import os
import re
import xml.etree.ElementTree as ET

DEFAULT_SEGMENT = 512 * 1024  # Fast DDS's shared-memory segment without a profile saying otherwise (bytes)
OLD, NEW = "FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE"
_NS = "{http://www.eprosima.com}"
_LIBRARY = re.compile(r"lib(fastdds|fastrtps)\.so\.(\d+)")


def fast_dds_major(maps="/proc/self/maps", environ=os.environ):
    """Major version of Fast DDS: the library this process has loaded, else the first found in
    the lib/ directory of a ROS prefix (AMENT_PREFIX_PATH of `environ`) or in its LD_LIBRARY_PATH;
    None when none is found (2: libfastrtps.so.2, Humble and Jazzy; 3: libfastdds.so.3, Kilted and
    later)."""
    try:
        with open(maps) as f:
            found = _LIBRARY.search(f.read())
    except OSError:
        found = None
    if found:
        return int(found.group(2))
    dirs = [os.path.join(p, "lib") for p in environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    dirs += [d for d in environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if d]
    for directory in dirs:
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            found = _LIBRARY.match(name)
            if found:
                return int(found.group(2))
    return None


def profile_variable(major=None):
    """The variable that gives Fast DDS of `major` (default: this process's, fast_dds_major;
    unknown counts as 3) a profile file without warnings."""
    major = fast_dds_major() if major is None else major
    return OLD if major == 2 else NEW


def use_profile(path, environ=os.environ, major=None):
    """Make `path` the profile Fast DDS loads in processes started with `environ` (and in this one
    before it loads rclpy): the variable of Fast DDS `major` (default: this process's,
    fast_dds_major) set, the other removed (Fast DDS 3 would prefer a profile under the old name;
    Fast DDS 2 ignores the new one); both set when no Fast DDS is found (Fast DDS 3 then warns once
    that the old name is deprecated)."""
    major = fast_dds_major() if major is None else major
    names = {2: (OLD,), 3: (NEW,)}.get(major, (OLD, NEW))
    for name in (OLD, NEW):
        if name in names:
            environ[name] = str(path)
        else:
            environ.pop(name, None)


def _fast_dds(environ):
    """Whether the middleware is Fast DDS (RMW_IMPLEMENTATION unset or an rmw_fastrtps one)."""
    return environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp").startswith("rmw_fastrtps")


def loaded_profile(major=None, environ=os.environ):
    """(the profile file Fast DDS of `major` (default: this process's) loads with `environ`, None
    when none, and why a profile that is set is not loaded, None when none is left out); (None,
    None) when the middleware is not Fast DDS."""
    if not _fast_dds(environ):
        return None, None
    major = fast_dds_major() if major is None else major
    old, new = environ.get(OLD) or None, environ.get(NEW) or None
    if major == 2:
        why = None if old or not new else (
            f"{NEW} is set ({new}), but this Fast DDS 2 (Humble, Jazzy) reads only {OLD}: the profile is not "
            f"loaded; set {OLD} instead")
        return old, why
    return (old if old and (os.path.isfile(old) or not new) else new), None  # Fast DDS 3 reads both, the old first


def shm_segment(major=None, environ=os.environ):
    """(bytes, where it comes from) of the shared-memory segment, or None when the middleware is
    not Fast DDS (RMW_IMPLEMENTATION names another) or the profile uses no shared memory."""
    if not _fast_dds(environ):
        return None
    path, ignored = loaded_profile(major, environ)
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
