"""visualization_msgs/MarkerArray of the map's mesh, a marker per region (mapping/regions.py),
serialized straight to CDR bytes (numpy).

A TRIANGLE_LIST marker holds every triangle's three corners as geometry_msgs/Point messages and
a std_msgs/ColorRGBA per corner. Built as rclpy message objects that is one Python object per
corner and colour (0.46 s per 100k corners measured here: 1.5 s for a room's mesh of 110k
triangles, holding the GIL the whole time). Publisher.publish takes serialized bytes too
(rclpy publishes them as they are), so the message is written here in the middleware's
encoding: CDR, little-endian (encapsulation CDR_LE), each primitive aligned to its own size
counted from the end of the 4-byte encapsulation header, sequences as a uint32 length then their
elements, strings as a uint32 length (with the terminating NUL) then the bytes and the NUL (the
OMG CDR rules Fast DDS implements; test_ros_marker.py checks the bytes against rclpy's
deserializer). The field order is visualization_msgs/msg/Marker.msg of ROS 2 Kilted; a
MarkerArray is a sequence of them.
"""

import struct

import numpy as np

TRIANGLE_LIST = 11
ADD, DELETE, DELETEALL = 0, 2, 3  # Marker actions
_CDR_LE = b"\x00\x01\x00\x00"


class _Writer:
    """CDR little-endian writer: appends aligned fields."""

    def __init__(self):
        self.parts, self.size = [_CDR_LE], 0

    def _raw(self, data):
        self.parts.append(data)
        self.size += len(data)

    def _align(self, n):
        pad = -self.size % n
        if pad:
            self._raw(b"\0" * pad)

    def scalars(self, fmt, *values):
        """Primitives of one struct format letter each (all the same size)."""
        self._align(struct.calcsize("<" + fmt[0]))
        self._raw(struct.pack("<" + fmt, *values))

    def string(self, text):
        data = text.encode("utf-8") + b"\0"
        self.scalars("I", len(data))
        self._raw(data)

    def sequence(self, array, count, align):
        """A sequence of `count` elements whose little-endian bytes are `array`, elements aligned to `align`."""
        self.scalars("I", count)
        if count:
            self._align(align)
            self._raw(np.ascontiguousarray(array).tobytes())

    def bytes(self):
        return b"".join(self.parts)


def mesh_markers(mesh, update, frame_id, stamp_ns, ns="map_mesh"):
    """The serialized visualization_msgs/MarkerArray (bytes) that applies `update` (regions.MeshUpdates'
    (clear, send [(marker id, region index)], delete [marker ids])) of the regions.RegionMesh
    `mesh`: a DELETEALL marker first when clear, a DELETE per marker deleted, then per region sent
    a TRIANGLE_LIST marker (`ns`, the marker id) in `frame_id` at stamp_ns (int ns), identity pose,
    scale 1, frame-locked (RViz places every region through the newest transform of `frame_id`,
    not each through the one at its arrival), each corner coloured from its vertex (opaque),
    triangles counter-clockwise seen from the front. A display that applied every array before
    shows the whole mesh."""
    clear, send, delete = update
    stamp = divmod(int(stamp_ns), 10**9)
    w = _Writer()
    w.scalars("I", int(clear) + len(delete) + len(send))
    if clear:
        _marker(w, stamp, frame_id, ns, 0, DELETEALL)
    for marker_id in delete:
        _marker(w, stamp, frame_id, ns, marker_id, DELETE)
    for marker_id, r in send:  # (only the regions' corners are gathered and widened)
        corners = mesh.region(r).reshape(-1)
        rgba = np.ones((len(corners), 4), "<f4")
        rgba[:, :3] = np.asarray(mesh.colours)[corners] / np.float32(255)
        _marker(w, stamp, frame_id, ns, marker_id, ADD, np.asarray(mesh.vertices)[corners].astype("<f8"), rgba)
    return w.bytes()


def _marker(w, stamp, frame_id, ns, marker_id, action, corners=None, rgba=None):
    """Write one TRIANGLE_LIST visualization_msgs/Marker: stamp (sec, nanosec), corners (n, 3)
    little-endian float64 metres, rgba (n, 4) little-endian float32 (None: none)."""
    corners = np.zeros((0, 3), "<f8") if corners is None else corners
    rgba = np.zeros((0, 4), "<f4") if rgba is None else rgba
    w.scalars("iI", *stamp)  # header
    w.string(frame_id)
    w.string(ns)
    w.scalars("iii", marker_id, TRIANGLE_LIST, action)
    w.scalars("ddddddd", 0, 0, 0, 0, 0, 0, 1)  # pose: origin, identity quaternion (x, y, z, w)
    w.scalars("ddd", 1, 1, 1)  # scale
    w.scalars("ffff", 1, 1, 1, 1)  # color (the corners' own colours apply)
    w.scalars("iI", 0, 0)  # lifetime: forever
    w.scalars("?", True)  # frame_locked: shown through the newest TF, as the regions not resent are
    w.sequence(corners, len(corners), 8)  # points
    w.sequence(rgba, len(rgba), 4)  # colors
    w.string("")  # texture_resource
    w.scalars("iI", 0, 0)  # texture: sensor_msgs/CompressedImage, empty
    w.string("")
    w.string("")
    w.sequence(b"", 0, 1)
    w.sequence(b"", 0, 4)  # uv_coordinates
    w.string("")  # text
    w.string("")  # mesh_resource
    w.string("")  # mesh_file: filename, data
    w.sequence(b"", 0, 1)
    w.scalars("?", False)  # mesh_use_embedded_materials
