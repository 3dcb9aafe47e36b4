"""Binary little-endian PLY files of coloured points with confidence, and of coloured triangle
meshes (numpy, no ROS).

Format: Paul Bourke's PLY description (ASCII header, then one packed record per vertex).
"""

import numpy as np

# One vertex record as this module writes it: 19 bytes, packed, little-endian.
VERTEX = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                   ("red", "u1"), ("green", "u1"), ("blue", "u1"), ("confidence", "<f4")])

# One vertex of a mesh file: 15 bytes, packed; and one triangle: a count (3) and three int indices.
MESH_VERTEX = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
_FACE = np.dtype([("n", "u1"), ("v", "<i4", (3,))])

# PLY scalar type names (both spellings of the specification) as little-endian numpy types.
SCALARS = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "<i2", "int16": "<i2", "ushort": "<u2", "uint16": "<u2",
    "int": "<i4", "int32": "<i4", "uint": "<u4", "uint32": "<u4",
    "float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8",
}
_WRITE_NAMES = {"<f4": "float", "|u1": "uchar"}
PLY_MAGIC = b"ply\n"  # the first bytes of every PLY file


def _comments(comments):
    """PLY comment lines of a {name: value} dict (one line each, "comment name value")."""
    lines = []
    for name, value in dict(comments or {}).items():
        text = f"{name} {value}"
        if "\n" in text or "\r" in text or not text.isascii():
            raise ValueError(f"a PLY comment must be one ASCII line, got {text!r}")
        lines.append(f"comment {text}")
    return lines


def ply_header(count, comments=None, vertex=VERTEX, faces=None):
    """The header (bytes, ending with its newline) of a file of `count` `vertex` records (VERTEX,
    or MESH_VERTEX), then `faces` triangles when not None, with comments ({name: value}: one
    "comment name value" line each)."""
    lines = [PLY_MAGIC.decode().strip(), "format binary_little_endian 1.0", *_comments(comments),
             f"element vertex {int(count)}"]
    lines += [f"property {_WRITE_NAMES[vertex[name].str]} {name}" for name in vertex.names]
    if faces is not None:
        lines += [f"element face {int(faces)}", "property list uchar int vertex_indices"]
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


def _vertices(dtype, points, colors):
    """Records of `dtype` with x y z from points (N, 3) and red green blue from colors (N, 3) uint8."""
    if colors.dtype != np.uint8:
        raise ValueError(f"colors must be uint8, got {colors.dtype}")
    records = np.empty(len(points), dtype)
    for axis, name in enumerate("xyz"):
        records[name] = points[:, axis]
    for channel, name in enumerate(("red", "green", "blue")):
        records[name] = colors[:, channel]
    return records


def _write(path, *chunks):
    """The byte strings `chunks` to `path` (a path, or a binary file open for writing)."""
    if hasattr(path, "write"):
        for chunk in chunks:
            path.write(chunk)
        return
    with open(path, "wb") as f:
        for chunk in chunks:
            f.write(chunk)


def write_ply(path, points, colors, confidence, comments=None):
    """Write points (N, 3) metres, colors (N, 3) uint8 RGB and confidence (N,) to a binary
    little-endian PLY at `path` (a path, or a binary file open for writing) (x y z float, red
    green blue uchar, confidence float), with header comments ({name: value}, e.g. the frame).

    Returns the number of vertices written.
    """
    points = np.asarray(points).reshape(-1, 3)
    colors = np.asarray(colors).reshape(-1, 3)
    confidence = np.asarray(confidence).reshape(-1)
    if not len(points) == len(colors) == len(confidence):
        raise ValueError(f"lengths differ: {len(points)} points, {len(colors)} colors, {len(confidence)} confidences")
    records = _vertices(VERTEX, points, colors)
    records["confidence"] = confidence
    _write(path, ply_header(len(records), comments), records.tobytes())
    return len(records)


def write_mesh_ply(path, vertices, colors, triangles, comments=None):
    """Write a triangle mesh to a binary little-endian PLY at `path` (a path, or a binary file open
    for writing): vertices (V, 3) metres (x y z float) with colors (V, 3) uint8 RGB (red green blue
    uchar), and triangles (F, 3) vertex indices (a face list of uchar count, int indices) in the
    order given (counter-clockwise = the front, as MeshLab and Open3D take it), with header
    comments as write_ply. Returns (V, F)."""
    vertices = np.asarray(vertices).reshape(-1, 3)
    colors = np.asarray(colors).reshape(-1, 3)
    triangles = np.asarray(triangles).reshape(-1, 3)
    if len(vertices) != len(colors) or colors.dtype != np.uint8:
        raise ValueError(f"colors must be uint8, one per vertex: {len(vertices)} vertices, {len(colors)} {colors.dtype}")
    if len(triangles) and not (0 <= triangles.min() and triangles.max() < len(vertices)):
        raise ValueError("triangles index vertices that do not exist")
    records = _vertices(MESH_VERTEX, vertices, colors)
    faces = np.empty(len(triangles), _FACE)
    faces["n"], faces["v"] = 3, triangles
    _write(path, ply_header(len(records), comments, MESH_VERTEX, len(faces)), records.tobytes(), faces.tobytes())
    return len(records), len(faces)


def read_ply(path):
    """(points (N, 3) float32, colors (N, 3) uint8 or None, confidence (N,) float32 or None) of the
    vertices of a binary little-endian PLY file.

    The vertex element needs scalar properties x, y, z; red, green, blue and confidence are
    returned when present. Scalar-only elements before the vertex element are skipped; list
    properties are only allowed in elements after it.
    """
    with open(path, "rb") as f:
        data = f.read()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise ValueError(f"{path}: not a PLY file")
    body = end + len(b"end_header\n")
    elements = []  # [name, count, [(property, numpy type) or None for a list]]
    for line in data[:end].decode("ascii").splitlines()[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and words[1:] != ["binary_little_endian", "1.0"]:
            raise ValueError(f"{path}: unsupported format {' '.join(words[1:])!r}")
        elif words[0] == "element":
            elements.append([words[1], int(words[2]), []])
        elif words[0] == "property":
            elements[-1][2].append(None if words[1] == "list" else (words[2], SCALARS[words[1]]))
    offset = 0
    for name, count, props in elements:
        if None in props:
            raise ValueError(f"{path}: element {name!r} before the vertices has a list property")
        dtype = np.dtype(props)
        if name == "vertex":
            vertices = np.frombuffer(data, dtype, count, body + offset)
            break
        offset += count * dtype.itemsize
    else:
        raise ValueError(f"{path}: no vertex element")
    names = dtype.names

    def columns(keys, out):
        return np.stack([vertices[k] for k in keys], -1).astype(out) if all(k in names for k in keys) else None

    points = columns("xyz", np.float32)
    if points is None:
        raise ValueError(f"{path}: vertices lack x, y or z")
    conf = vertices["confidence"].astype(np.float32) if "confidence" in names else None
    return points, columns(("red", "green", "blue"), np.uint8), conf
