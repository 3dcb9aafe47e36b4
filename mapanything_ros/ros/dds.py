"""The Fast DDS shared-memory segment this process runs with, for the node's start-up check: a
burst of messages larger than the segment (one frame of every camera plus a LiDAR sweep) is lost
between processes when best effort (docs/development.md, "DDS stays on this machine")."""

import os
import xml.etree.ElementTree as ET

DEFAULT_SEGMENT = 512 * 1024  # Fast DDS's shared-memory segment without a profile saying otherwise (bytes)
_NS = "{http://www.eprosima.com}"


def shm_segment():
    """(bytes, where it comes from) of the shared-memory segment, or None when the middleware is
    not Fast DDS (RMW_IMPLEMENTATION names another) or the profile uses no shared memory."""
    rmw = os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    if not rmw.startswith("rmw_fastrtps"):
        return None
    path = os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE") or os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE")
    if not path:
        return DEFAULT_SEGMENT, "Fast DDS's default (no FASTDDS_DEFAULT_PROFILES_FILE)"
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
