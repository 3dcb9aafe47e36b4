"""encode.pack_cloud: the bytes of a structured-array construction, colour checks, is_dense, read back;
decode.cloud_to_xyz's gathering paths (cv2 for aligned native float32, numpy otherwise) agree."""

import sys
from types import SimpleNamespace

import numpy as np
import pytest

from mapanything_ros.decode import FLOAT32, cloud_to_xyz, unpack_rgb
from mapanything_ros.encode import pack_cloud

ORDER = "<" if sys.byteorder == "little" else ">"


def reference_bytes(points, colors=None, confidence=None):
    """The layout built field by field in a numpy structured array (the writer before issue 9)."""
    names = ["x", "y", "z"] + ["rgb"] * (colors is not None) + ["confidence"] * (confidence is not None)
    out = np.zeros(len(points), np.dtype([(n, ORDER + ("u4" if n == "rgb" else "f4")) for n in names]))
    for i, n in enumerate("xyz"):
        out[n] = np.asarray(points)[:, i]
    if colors is not None:
        c = np.asarray(colors).astype(np.uint32)
        out["rgb"] = (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]
    if confidence is not None:
        out["confidence"] = confidence
    return out.tobytes()


def as_msg(packed):
    fields = [SimpleNamespace(name=n, offset=4 * i, datatype=FLOAT32, count=1) for i, n in enumerate(packed.names)]
    return SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=0, nanosec=0)), height=1,
                           width=packed.width, fields=fields, is_bigendian=packed.is_bigendian,
                           point_step=packed.point_step, row_step=packed.point_step * packed.width, data=packed.data)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("parts", ["xyz", "rgb", "confidence", "all"])
def test_bytes_match_a_structured_array(dtype, parts):
    rng = np.random.default_rng(4)
    n = 10_001
    points = (rng.normal(0, 30, (n, 3)) * rng.choice([1e-6, 1, 1e6], (n, 3))).astype(dtype)
    points[::97, 1] = np.nan
    colors = rng.integers(0, 256, (n, 3), dtype=np.uint8) if parts in ("rgb", "all") else None
    conf = rng.random(n) if parts in ("confidence", "all") else None
    packed = pack_cloud(points, colors, conf)
    assert bytes(packed.data) == reference_bytes(points, colors, conf)
    assert packed.point_step == 4 * len(packed.names) and packed.width == n and not packed.is_dense
    assert packed.data.typecode == "B" and packed.is_bigendian == (sys.byteorder == "big")
    got, _ = cloud_to_xyz(as_msg(packed))
    finite = np.isfinite(points).all(axis=1)
    assert np.array_equal(got, points[finite].astype(np.float32).astype(np.float64))
    if colors is not None:
        raw = np.frombuffer(packed.data, np.float32).reshape(n, -1)
        assert np.array_equal(unpack_rgb(raw[:, 3]), colors)


def test_colours_are_checked_not_truncated():
    pts = np.zeros((2, 3))
    ok = pack_cloud(pts, np.array([[0, 128, 255], [1, 2, 3]], np.int64))  # integers in range are taken
    assert bytes(ok.data) == reference_bytes(pts, np.array([[0, 128, 255], [1, 2, 3]]))
    for bad, match in [(np.full((2, 3), 0.5), "must be uint8"), (np.array([[0, 300, 0], [0, 0, 0]]), "0..300"),
                       (np.array([[-1, 0, 0], [0, 0, 0]], np.int16), "-1..0"), (np.ones((2, 3), bool), "bool"),
                       (np.zeros((3, 3), np.uint8), r"\(2, 3\)")]:
        with pytest.raises(ValueError, match=match):
            pack_cloud(pts, bad)


def test_is_dense_and_empty():
    assert pack_cloud(np.ones((3, 3))).is_dense
    assert not pack_cloud(np.array([[0.0, np.inf, 0.0]])).is_dense
    assert not pack_cloud(np.array([[0.0, 1e39, 0.0]])).is_dense  # beyond float32: written as inf
    empty = pack_cloud(np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros(0))
    assert empty.width == 0 and len(empty.data) == 0 and empty.is_dense and empty.point_step == 20
    assert cloud_to_xyz(as_msg(empty))[0].shape == (0, 3)
    with pytest.raises(ValueError, match=r"points must be \(N, 3\)"):
        pack_cloud(np.zeros(3))


@pytest.mark.parametrize("shift", [0, 1])  # 1: the buffer starts at an odd address (numpy path)
@pytest.mark.parametrize("order", ["<", ">"])
def test_reader_paths_agree(shift, order):
    rng = np.random.default_rng(6)
    h, w, step, row = 5, 7, 28, 28 * 7 + 12  # organised, padding in points and at row ends
    offsets = {"z": 0, "x": 8, "y": 16, "t": 24}
    grid = np.zeros((h, row), np.uint8)
    truth = rng.normal(0, 5, (h, w, 3)).astype(np.float32)
    truth[1, 2, 0], truth[3, 3, 2], truth[4, 6, 1] = np.nan, np.inf, -np.inf
    times = rng.integers(0, 10**8, (h, w)).astype(np.uint32)
    for i, name in enumerate("xyz"):
        for r in range(h):
            grid[r, :w * step].reshape(w, step)[:, offsets[name]:offsets[name] + 4] = \
                truth[r, :, i].astype(order + "f4").view(np.uint8).reshape(w, 4)
    for r in range(h):
        grid[r, :w * step].reshape(w, step)[:, 24:28] = times[r].astype(order + "u4").view(np.uint8).reshape(w, 4)
    buf = np.empty(grid.size + shift, np.uint8)[shift:]
    buf[:] = grid.reshape(-1)
    fields = [SimpleNamespace(name=n, offset=o, datatype=6 if n == "t" else FLOAT32, count=1)
              for n, o in offsets.items()]
    msg = SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=1, nanosec=0)), height=h, width=w,
                          fields=fields, is_bigendian=order == ">", point_step=step, row_step=row, data=buf)
    points, t = cloud_to_xyz(msg)
    keep = np.isfinite(truth).all(axis=-1).reshape(-1)
    assert np.array_equal(points, truth.reshape(-1, 3)[keep].astype(np.float64))
    assert np.array_equal(t, times.reshape(-1)[keep].astype(np.int64) + 10**9)
