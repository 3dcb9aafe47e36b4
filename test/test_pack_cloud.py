"""The compiled PointCloud2 interleave (mapanything_ros/_pack_cloud.c) against encode's OpenCV path:
the same bytes and is_dense for every layout, dtype, length (vector body and word-by-word rest),
store path (cached / non-temporal) and non-finite placement; bad arguments raise, never crash.

In tools/dev's environment (and so in CI) the module must be built: its absence is a failure."""

import os
import shutil
import subprocess
import sys
import sysconfig
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapanything_ros import encode

kernel = encode._pack_cloud
needs_kernel = pytest.mark.skipif(kernel is None and not os.environ.get("MAPANYTHING_ROS_ENV"),
                                  reason="_pack_cloud not built (CMake build of this package)")
NEVER, ALWAYS = 1 << 62, 0  # stream_from: cached stores only / non-temporal stores when aligned
# float64 values whose float32 conversion is an edge case: a NaN payload (signalling), a subnormal
# that vanishes, and both sides of the rounding boundary to inf above FLT_MAX
SPECIALS = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, 5e-324, 3.4e38, 1e39, 3.4028235677973362e38,
            -3.4028235677973366e38, float(np.array(0x7FF4000012345678, np.uint64).view(np.float64))]


def test_built_in_the_dev_environment():
    if not os.environ.get("MAPANYTHING_ROS_ENV"):
        pytest.skip("not in tools/dev's environment")
    assert encode.COMPILED and kernel is not None, "tools/build_env.sh builds mapanything_ros._pack_cloud"


def compiled(points, colors, conf, stream_from, shift=0):
    """(bytes, is_dense) from the kernel; the output starts `shift` bytes past a 16-byte boundary (0:
    the non-temporal stores run where stream_from lets them), between guard bytes it must not touch."""
    n = len(points)
    nbytes = 4 * (3 + (colors is not None) + (conf is not None)) * n
    store = np.full(nbytes + 64, 0xA5, np.uint8)
    start = -store.ctypes.data % 16 + 16 + shift
    out = store[start:start + nbytes]
    assert out.ctypes.data % 16 == shift % 16 or not nbytes
    dense = kernel.interleave(out, points, colors, conf, stream_from)
    assert (store[:start] == 0xA5).all() and (store[start + nbytes:] == 0xA5).all(), "written outside out"
    return out.tobytes(), dense


def inputs(rng, n, dtype, layout, bad=()):
    points = rng.normal(0, 20, (n, 3)).astype(dtype)
    for i, value in bad:
        points[i % n, i % 3] = value
    colors = rng.integers(0, 256, (n, 3), dtype=np.uint8) if layout in ("rgb", "all") else None
    conf = rng.random(n).astype(np.float32) if layout in ("confidence", "all") else None
    return points, colors, conf


def expected(points, colors, conf):
    """(bytes, is_dense) from encode's OpenCV path."""
    fields = 3 + (colors is not None) + (conf is not None)
    data = encode.byte_buffer(4 * fields * len(points))
    out = np.frombuffer(data, np.float32).reshape(1, len(points), fields)
    dense = encode._interleave_cv2(out, points, colors, conf)
    return bytes(data), dense


@needs_kernel
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["xyz", "rgb", "confidence", "all"])
@pytest.mark.parametrize("stream_from", [NEVER, ALWAYS])
@pytest.mark.parametrize("shift", [0, 4, 8, 12])  # 4 to 12: non-temporal from the first point on 16 bytes
def test_same_bytes_as_opencv(dtype, layout, stream_from, shift):
    rng = np.random.default_rng(7)
    for n in [*range(0, 14), 1001]:
        points, colors, conf = inputs(rng, n, dtype, layout)
        assert compiled(points, colors, conf, stream_from, shift) == expected(points, colors, conf), n


@needs_kernel
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stream_from", [NEVER, ALWAYS])
@pytest.mark.parametrize("shift", [0, 4, 8, 12])  # 4 to 12 streamed: the first points word by word
def test_non_finite_anywhere_clears_is_dense(dtype, stream_from, shift):
    rng = np.random.default_rng(8)
    values = [np.nan, np.inf, -np.inf] + ([1e39, -1e300] if dtype == np.float64 else [])
    for n in (4, 5, 8, 11, 13):  # in the vector body and in the rest (of 1 to 4 points)
        for i in range(3 * n):  # every coordinate: n is prime to 3, so i -> (i % n, i % 3) is onto
            points, colors, conf = inputs(rng, n, dtype, "all", bad=[(i, values[i % len(values)])])
            got = compiled(points, colors, conf, stream_from, shift)
            assert got == expected(points, colors, conf) and not got[1], (n, i)
        assert compiled(*inputs(rng, n, dtype, "all"), stream_from, shift)[1]


@needs_kernel
@settings(max_examples=150, deadline=None)
@given(n=st.integers(0, 40), dtype=st.sampled_from([np.float32, np.float64]),
       layout=st.sampled_from(["xyz", "rgb", "confidence", "all"]), seed=st.integers(0, 2**32 - 1),
       specials=st.lists(st.tuples(st.integers(0, 119), st.sampled_from(SPECIALS)), max_size=4),
       stream=st.booleans(), shift=st.sampled_from([0, 4, 8, 12]))
def test_property_same_as_opencv(n, dtype, layout, seed, specials, stream, shift):
    rng = np.random.default_rng(seed)
    with np.errstate(over="ignore"):
        points, colors, conf = inputs(rng, max(n, 1), dtype, layout, bad=specials)
    points, colors, conf = points[:n], None if colors is None else colors[:n], None if conf is None else conf[:n]
    points = np.ascontiguousarray(points)
    assert compiled(points, colors, conf, ALWAYS if stream else NEVER, shift) == expected(points, colors, conf)


@needs_kernel
def test_bad_arguments_raise():
    p, c, f = np.zeros((4, 3), np.float32), np.zeros((4, 3), np.uint8), np.zeros(4, np.float32)
    out = bytearray(80)
    assert kernel.interleave(out, p, c, f, NEVER) is True
    cases = [
        ((bytearray(79), p, c, f), ValueError, "out: expected 80 bytes"),
        ((bytes(80), p, c, f), TypeError, ""),  # read-only output
        ((out, p.astype(np.float16), c, f), ValueError, "points"),
        ((out, np.zeros((4, 2), np.float32), c, f), ValueError, "points"),
        ((out, np.zeros((4, 6), np.float32)[:, ::2], c, f), ValueError, "contiguous"),
        ((out, p, np.zeros((3, 3), np.uint8), f), ValueError, "colors"),
        ((out, p, c.astype(np.int32), f), ValueError, "colors"),
        ((out, p, c, f.astype(np.float64)), ValueError, "confidence"),
        ((out, p, c, None), ValueError, "out: expected 64 bytes"),
        ((out, "xyz", c, f), TypeError, ""),
    ]
    before = [sys.getrefcount(x) for x in (out, p, c, f)]
    for _ in range(100):  # no buffer or reference is leaked on success or on error
        for args, error, match in cases:
            with pytest.raises(error, match=match):
                kernel.interleave(*args, NEVER)
        kernel.interleave(out, p, c, f, ALWAYS)
    assert [sys.getrefcount(x) for x in (out, p, c, f)] == before
    out.extend(b"\0")  # an exported buffer would make this resize raise BufferError


@needs_kernel
def test_pack_cloud_without_the_kernel(monkeypatch):
    """encode.pack_cloud's OpenCV path (a source tree without the CMake build) gives the bytes the
    kernel gives."""
    rng = np.random.default_rng(9)
    points, colors, conf = inputs(rng, 1003, np.float64, "all", bad=[(5, np.nan)])
    with_kernel = encode.pack_cloud(points, colors, conf)
    monkeypatch.setattr(encode, "_pack_cloud", None)
    without = encode.pack_cloud(points, colors, conf)
    assert bytes(without.data) == bytes(with_kernel.data) and without.is_dense is with_kernel.is_dense is False


@pytest.mark.parametrize("kernel_built", [True, False])
@pytest.mark.parametrize("stream", [True, False])
def test_pack_parts_is_pack_cloud_of_the_concatenation(kernel_built, stream, monkeypatch):
    """Clouds packed one after another (encode.pack_parts: ~/points, a part per view) give the
    bytes and is_dense of pack_cloud on their concatenation, with the kernel and without, cached or
    non-temporal (each part then starts anywhere on 4 bytes), whatever their sizes and dtypes."""
    if kernel_built and kernel is None:
        pytest.skip("_pack_cloud not built")
    if not kernel_built:
        monkeypatch.setattr(encode, "_pack_cloud", None)
    monkeypatch.setattr(encode, "STREAM_BYTES", 0 if stream else 1 << 62)
    rng = np.random.default_rng(12)
    for layout in ("xyz", "rgb", "confidence", "all"):
        for sizes in ([5], [0, 3], [1, 2, 3, 5, 7, 0, 1001], [1001, 6, 13]):
            parts = [inputs(rng, n, (np.float32, np.float64)[k % 2], layout) for k, n in enumerate(sizes)]
            joined = [None if parts[0][f] is None else np.concatenate([p[f] for p in parts]) for f in range(3)]
            want = encode.pack_cloud(*joined, scalar_name="distance")
            got = encode.pack_parts(parts, scalar_name="distance")
            assert (got.names, got.width, got.point_step, bytes(got.data), got.is_dense) == (
                want.names, want.width, want.point_step, bytes(want.data), want.is_dense), (layout, sizes)
            assert got.is_dense
    # A non-finite point in one part only, among a part's first points (which, streamed, go word by
    # word before the first point on 16 bytes: 7 points of 20 bytes before it put it 12 bytes past)
    # or later: is_dense False, and every point of every part written all the same.
    for bad in (0, 1, 2, 3, 6):
        first = inputs(rng, 7, np.float32, "all")
        second = inputs(rng, 9, np.float64, "all", bad=[(bad, np.nan)])
        want = encode.pack_cloud(*(np.concatenate([first[f], second[f]]) for f in range(3)))
        got = encode.pack_parts([first, second])
        assert bytes(got.data) == bytes(want.data) and not got.is_dense and not want.is_dense, bad


def test_pack_parts_refuses_parts_that_do_not_agree():
    rng = np.random.default_rng(13)
    with pytest.raises(ValueError, match="at least one"):
        encode.pack_parts([])
    for a, b in (("all", "rgb"), ("rgb", "xyz"), ("confidence", "all")):
        with pytest.raises(ValueError, match="all or none"):
            encode.pack_parts([inputs(rng, 4, np.float32, a), inputs(rng, 4, np.float32, b)])
    points, colors, conf = inputs(rng, 4, np.float32, "all")
    with pytest.raises(ValueError, match="confidence must be"):
        encode.pack_parts([(points, colors, conf), (points, colors, conf[:3])])
    with pytest.raises(ValueError, match="points must be"):
        encode.pack_parts([(points, colors, conf), (points[:, :2], colors, conf)])


def unaligned(a, offset):
    """A C-contiguous copy of `a` whose data starts `offset` bytes past an aligned address."""
    store = np.zeros(a.nbytes + 16, np.uint8)
    start = -store.ctypes.data % 16 + offset
    out = store[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    assert out.ctypes.data % 16 == offset and out.flags.c_contiguous
    return out


@needs_kernel
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["xyz", "rgb", "confidence", "all"])
def test_unaligned_buffers(dtype, layout):
    """Points, confidence and output at any address (np.ascontiguousarray keeps an unaligned array,
    e.g. one from np.frombuffer at an odd offset, as it is): the same bytes."""
    rng = np.random.default_rng(10)
    for n in (1, 5, 13, 1001):
        points, colors, conf = inputs(rng, n, dtype, layout)
        want = expected(points, colors, conf)
        for offset in (1, 2, 3, 5):
            got = compiled(unaligned(points, offset), colors, None if conf is None else unaligned(conf, offset),
                           ALWAYS, shift=offset)
            assert got == want, (n, offset)


def test_no_misaligned_access_under_ubsan(tmp_path):
    """The kernel built with UBSan's alignment check (aborting on the first report) takes buffers at
    any address: a misaligned float / double / uint32_t access is undefined behaviour (and a fault
    on strict-alignment CPUs) even where x86 and AArch64 tolerate it, so it must not make one."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler")
    source = Path(encode.__file__).with_name("_pack_cloud.c")
    module = tmp_path / ("_pack_cloud" + sysconfig.get_config_var("EXT_SUFFIX"))
    build = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-fsanitize=alignment", "-fno-sanitize-recover=all",
                            "-I", sysconfig.get_paths()["include"], str(source), "-o", str(module)],
                           capture_output=True, text=True)
    if build.returncode != 0:
        pytest.skip(f"cannot build with -fsanitize=alignment: {build.stderr[-500:]}")
    code = f"""
import importlib.util, sys
import numpy as np
sys.path.insert(0, {str(Path(__file__).parent)!r})
spec = importlib.util.spec_from_file_location("_pack_cloud", {str(module)!r})
kernel = importlib.util.module_from_spec(spec); spec.loader.exec_module(kernel)
import test_pack_cloud as t
t.kernel = kernel
rng = np.random.default_rng(11)
for dtype in (np.float32, np.float64):
    for layout in ("xyz", "rgb", "confidence", "all"):
        points, colors, conf = t.inputs(rng, 13, dtype, layout)
        want = t.expected(points, colors, conf)
        for offset in (0, 1, 2, 3):
            got = t.compiled(t.unaligned(points, offset), colors,
                             None if conf is None else t.unaligned(conf, offset), t.ALWAYS, shift=offset)
            assert got == want, (dtype, layout, offset)
print("ok")
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


def test_opencv_path_converts_signalling_nan_silently():
    """The OpenCV path, like the kernel, converts a float64 signalling NaN without a RuntimeWarning
    ("invalid value encountered in cast"), which is an error where warnings are errors."""
    points = np.zeros((5, 3))
    points[2, 1] = SPECIALS[-1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert expected(points, None, None)[1] is False
