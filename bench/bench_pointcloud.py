"""PointCloud2 benchmark: writing and reading 1,000,000 points, side by side with baselines.

    python bench/bench_pointcloud.py [--json PATH] [--points N]

CPU time (time.process_time), median of repeats, one process.

1. Write: a PointCloud2 of x, y, z, rgb, confidence (20 bytes a point) from float64 and from
   float32 points (N, 3), uint8 colours (N, 3) and float32 confidence (N,), with ros.pointcloud.
   xyz_to_cloud (its compiled kernel, mapanything_ros/_pack_cloud.c, where built, and its OpenCV
   path, what runs where the kernel is not built), against
   - a structured-array baseline: the numpy structured array built field by field from the same
     inputs, then put into the message the way sensor_msgs_py does it (memoryview -> array.array);
   - the same message from a ready structured array (only the copy into the message);
   - the writer before issue 9 (kept below as `old_xyz_to_cloud`);
   - sensor_msgs_py's create_cloud from a ready structured array and from the inputs, when
     `import sensor_msgs_py` works (it is reported as absent otherwise).
   All must give the same bytes.
2. What rclpy's PointCloud2.data setter costs: an array.array('B') is adopted by a message that
   checks its fields (what xyz_to_cloud uses) and copied by a default one; bytes are copied;
   numpy arrays and memoryviews are converted element by element.
3. Read: x, y, z back as (N, 3) from a cloud with 1 % NaN points, with decode.cloud_to_xyz
   (float64, non-finite dropped) against an np.frombuffer structured-view baseline (NaN mask per
   field, boolean selection, to an (N, 3) array), the reader before issue 9 and sensor_msgs_py's
   read_points_numpy(skip_nans=True) when available. All must give the same values.
"""

import argparse
import array
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from builtin_interfaces.msg import Time  # noqa: E402
from sensor_msgs.msg import PointCloud2, PointField  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from timing import cpu_timed  # noqa: E402  (bench/timing.py, beside this script)
from mapanything_ros import decode, encode  # noqa: E402
from mapanything_ros.ros.pointcloud import _ADOPT_DATA, xyz_to_cloud  # noqa: E402

try:
    from sensor_msgs_py import point_cloud2 as smp
except ImportError as e:
    smp, SMP_MISSING = None, str(e)

NAMES = ("x", "y", "z", "rgb", "confidence")
FIELDS = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate(NAMES)]
DTYPE = np.dtype([(n, "<f4") for n in NAMES])


def structured(points, colors, confidence):
    """The (N,) structured array of the layout, built field by field."""
    out = np.empty(len(points), DTYPE)
    out["x"], out["y"], out["z"] = points.T
    c = colors.astype(np.uint32)
    out["rgb"] = ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).view(np.float32)
    out["confidence"] = confidence
    return out


def opencv_path(fn):
    """fn run with encode's OpenCV path (as where _pack_cloud is not built)."""
    def run():
        kernel, encode._pack_cloud = encode._pack_cloud, None
        try:
            return fn()
        finally:
            encode._pack_cloud = kernel
    return run


def message_from_structured(header, points):
    """A PointCloud2 holding a ready structured array, copied in as sensor_msgs_py does."""
    data = array.array("B")
    data.frombytes(memoryview(points).cast("B"))
    msg = PointCloud2(header=header, height=1, width=len(points), fields=FIELDS, is_bigendian=False,
                      point_step=points.dtype.itemsize, row_step=points.dtype.itemsize * len(points), is_dense=False)
    msg.data = data
    return msg


def old_xyz_to_cloud(points, header, colors, confidence):
    """ros.pointcloud.xyz_to_cloud before issue 9 (float64 copy, per-field assignment, tobytes)."""
    points = np.asarray(points, dtype=np.float64)
    c = np.asarray(colors, dtype=np.uint8).astype(np.uint32)
    columns = {"x": points[:, 0], "y": points[:, 1], "z": points[:, 2],
               "rgb": ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).view(np.float32), "confidence": confidence}
    out = np.empty(len(points), DTYPE)
    for name, values in columns.items():
        out[name] = values
    msg = PointCloud2(header=header, height=1, width=len(points), is_bigendian=False, point_step=20,
                      row_step=20 * len(points), is_dense=bool(np.isfinite(points).all()), fields=FIELDS)
    msg.data = array.array("B", out.tobytes())
    return msg


def frombuffer_xyz(msg):
    """Baseline reader: a structured np.frombuffer view, a NaN mask per field, boolean selection, (N, 3)."""
    view = np.frombuffer(msg.data, np.dtype({"names": list("xyz"), "formats": ["<f4"] * 3, "offsets": [0, 4, 8],
                                             "itemsize": msg.point_step}))
    keep = ~np.isnan(view["x"]) & ~np.isnan(view["y"]) & ~np.isnan(view["z"])
    view = view[keep]
    return np.stack([view["x"], view["y"], view["z"]], axis=-1)


def old_cloud_to_xyz(msg):
    """decode.cloud_to_xyz before issue 9, without times: per-field float64 copies, stack, mask."""
    fields = {f.name: f for f in msg.fields}
    view = decode._view(msg, {n: fields[n] for n in "xyz"}).reshape(-1)
    points = np.stack([view[n].astype(np.float64) for n in "xyz"], axis=-1)
    return points[np.isfinite(points).all(axis=1)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the figures to this path")
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    n, rep = args.points, args.repeat
    rng = np.random.default_rng(0)
    p64 = rng.uniform(-50, 50, (n, 3))
    p64[rng.random(n) < 0.01, 1] = np.nan
    p32 = p64.astype(np.float32)
    colors = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    conf = rng.uniform(0, 10, n).astype(np.float32)
    header = Header(frame_id="map", stamp=Time(sec=1, nanosec=2))
    ready = structured(p64, colors, conf)
    expected = ready.tobytes()

    write = {
        "xyz_to_cloud_float64": lambda: xyz_to_cloud(p64, header, colors, conf),
        "xyz_to_cloud_float32": lambda: xyz_to_cloud(p32, header, colors, conf),
        "xyz_to_cloud_float64_opencv": opencv_path(lambda: xyz_to_cloud(p64, header, colors, conf)),
        "xyz_to_cloud_float32_opencv": opencv_path(lambda: xyz_to_cloud(p32, header, colors, conf)),
        "structured_baseline_float64": lambda: message_from_structured(header, structured(p64, colors, conf)),
        "structured_baseline_float32": lambda: message_from_structured(header, structured(p32, colors, conf)),
        "ready_structured_array": lambda: message_from_structured(header, ready),
        "old_xyz_to_cloud_float64": lambda: old_xyz_to_cloud(p64, header, colors, conf),
    }
    if smp is not None:
        write["sensor_msgs_py_create_cloud_ready"] = lambda: smp.create_cloud(header, FIELDS, ready)
        write["sensor_msgs_py_create_cloud_float64"] = lambda: smp.create_cloud(
            header, FIELDS, structured(p64, colors, conf))
    figures = {"points": n, "sensor_msgs_py": smp is not None, "compiled_kernel": encode.COMPILED}
    rows = []
    for name, fn in write.items():
        seconds, msg = cpu_timed(fn, rep)
        same = bytes(msg.data) == expected
        figures[f"write_{name}_ms"] = seconds * 1e3
        figures[f"write_{name}_identical"] = same
        rows.append((f"write: {name}", seconds, same))
    new = figures["write_xyz_to_cloud_float64_ms"]
    ref = "sensor_msgs_py_create_cloud_ready" if smp is not None else "ready_structured_array"
    figures["write_reference"] = ref
    figures["write_float64_vs_reference"] = new / figures[f"write_{ref}_ms"]
    figures["write_float32_vs_reference"] = figures["write_xyz_to_cloud_float32_ms"] / figures[f"write_{ref}_ms"]
    figures["write_speedup_vs_old"] = figures["write_old_xyz_to_cloud_float64_ms"] / new
    figures["write_opencv_float32_vs_reference"] = (figures["write_xyz_to_cloud_float32_opencv_ms"]
                                                    / figures[f"write_{ref}_ms"])

    msg = xyz_to_cloud(p64, header, colors, conf)
    data = msg.data
    part = 20 * 20_000  # element-by-element conversions: timed on 20,000 points, scaled to n
    plain, checked = PointCloud2(), PointCloud2(**_ADOPT_DATA)
    setter = {
        "array.array, message checking fields (what xyz_to_cloud does)": (checked, data, 1),
        "array.array, default message": (plain, data, 1),
        "bytes, default message": (plain, bytes(data), 1),
        "numpy uint8 array, default message": (plain, np.frombuffer(data, np.uint8)[:part], len(data) / part),
        "memoryview, default message": (plain, memoryview(data)[:part], len(data) / part),
    }
    for name, (target, value, scale) in setter.items():
        seconds, _ = cpu_timed(lambda: setattr(target, "data", value), rep if scale == 1 else 3)
        key = "data_setter_" + name.split(",")[0].replace(" ", "_").replace(".", "_") + (
            "_adopted" if target is checked else "")
        figures[f"{key}_ms"] = seconds * scale * 1e3
        rows.append((f"PointCloud2.data = {name}", seconds * scale, None))
    figures["data_setter_adopts_array"] = checked.data is data

    truth = p32[np.isfinite(p32).all(axis=1)].astype(np.float64)
    read = {
        "cloud_to_xyz": lambda: decode.cloud_to_xyz(msg, time_field=None)[0],
        "frombuffer_baseline": lambda: frombuffer_xyz(msg),
        "old_cloud_to_xyz": lambda: old_cloud_to_xyz(msg),
    }
    if smp is not None:
        read["sensor_msgs_py_read_points_numpy"] = lambda: smp.read_points_numpy(msg, ["x", "y", "z"], skip_nans=True)
    for name, fn in read.items():
        seconds, pts = cpu_timed(fn, rep)
        same = bool(np.array_equal(np.asarray(pts, np.float64), truth))
        figures[f"read_{name}_ms"] = seconds * 1e3
        figures[f"read_{name}_identical"] = same
        rows.append((f"read: {name}", seconds, same))
    ref = "sensor_msgs_py_read_points_numpy" if smp is not None else "frombuffer_baseline"
    figures["read_reference"] = ref
    figures["read_vs_reference"] = figures["read_cloud_to_xyz_ms"] / figures[f"read_{ref}_ms"]
    figures["read_speedup_vs_old"] = figures["read_old_cloud_to_xyz_ms"] / figures["read_cloud_to_xyz_ms"]

    print(f"{n:,} points, x y z rgb confidence (20 bytes each), 1 % NaN; CPU time, median of {rep}")
    if smp is None:
        print(f"sensor_msgs_py is not importable ({SMP_MISSING}): compared with the in-bench structured-array "
              "baselines only")
    print("\n| measurement | ms | same bytes / values |\n|---|---|---|")
    for name, seconds, same in rows:
        print(f"| {name} | {seconds * 1e3:.2f} | {'' if same is None else ('yes' if same else 'NO')} |")
    print(f"\nwrite float64 / float32 inputs vs {figures['write_reference']}: "
          f"{figures['write_float64_vs_reference']:.2f}x / {figures['write_float32_vs_reference']:.2f}x the time "
          f"({'compiled kernel' if encode.COMPILED else 'OpenCV path: _pack_cloud is not built'}; OpenCV path, "
          f"float32: {figures['write_opencv_float32_vs_reference']:.2f}x); "
          f"{figures['write_speedup_vs_old']:.1f}x faster than before issue 9")
    print(f"read vs {figures['read_reference']}: {figures['read_vs_reference']:.2f}x the time; "
          f"{figures['read_speedup_vs_old']:.1f}x faster than before issue 9")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    if not all(v for k, v in figures.items() if k.endswith("_identical")):
        raise SystemExit("outputs differ")


if __name__ == "__main__":
    main()
