"""The node under a realistic sensor load (issue 5): by default two 1280 x 720 cameras at 30 Hz and
a 100,000-point LiDAR at 10 Hz, oracle backend, wall-clock stamps; other rigs by option (issue 21:
cameras, resolution, LiDAR size, map voxel size, ~/map subscribed, the Fast DDS profile). Reports message loss at the
input, drops by reason, backlog (queue depths, early vs late latency), end-to-end latency
(image stamp -> ~/points received) and the node's CPU and RSS.

Three processes: this one (orchestrator and measuring subscriber), the node
(`python -m mapanything_ros.ros.node --ros-args --params-file F`) and a load generator (this
script with `--role load`). Rendering the synthetic scene live is far too slow, so the load
generator pre-renders a short loop of captures and sweeps once and cycles them with the current
stamps. TF odom -> base_link follows the true trajectory at those stamps, so the poses are
consistent and the oracle answers the truth for them; the cycled pixels and LiDAR points are not
(load only; correctness is tested in test/test_ros_node.py).

Rig: the first --cameras of the surround rig (synthetic.surround_cameras: front, left fisheye,
right, rear; the first two are the default rig's), images scaled to --size columns and cropped to
its rows about the centre (synthetic.sized_camera); a LiDAR of 80 beams x (--lidar-points / 80)
columns on the default mount. The node's oracle uses preset "surround": same room, trajectory
and mounts; it takes the rays from the published CameraInfo, so the image size does not matter to
it. --subscribe-map also subscribes to ~/map and ~/occupancy (their publication then runs) and
reports their latency, --subscribe-mesh to ~/esdf and ~/mesh (counted; ~/mesh as serialized bytes:
deserializing its arrays into Python objects would load this process); --profile runs all three
processes with that Fast DDS profile.

    python bench/bench_node.py [--duration 60] [--window-size 4] [--cameras 2] [--size 1280x720]
        [--lidar-points 100000] [--voxel-size M] [--map-rate HZ] [--subscribe-map] [--subscribe-mesh]
        [--profile XML] [--json PATH]
"""

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace

import numpy as np

from mapanything_ros.sync import LIDAR_SOURCE
from mapanything_ros.pipeline import STAGES
from mapanything_ros.ros import dds
from mapanything_ros.synthetic import SyntheticScene, default_lidar, sized_camera, surround_cameras

SEC = 1_000_000_000
NODE = "mapanything"
LIDAR_ROWS = 80
LIDAR_HZ = 10.0
WORLD, BASE, LIDAR = "odom", "base_link", "lidar"
LIDAR_TOPIC = "lidar/points"
RENDER_START_NS = SEC


# ------------------------------------------------------------------------------------ the scene

def load_scene(args, seed=0):
    """The rig of the options (see the module doc)."""
    width, height = map(int, args.size.split("x"))
    cameras = [replace(c, camera=sized_camera(c.camera, width, height)) for c in surround_cameras()[:args.cameras]]
    columns = max(1, round(args.lidar_points / LIDAR_ROWS))
    return SyntheticScene(seed=seed, cameras=cameras, lidar=replace(default_lidar(), rows=LIDAR_ROWS, columns=columns))


# ------------------------------------------------------------------------------- load generator

def emit(event, **values):
    """One JSON line on stdout for the orchestrator."""
    print(json.dumps({"event": event, **values}), flush=True)


def run_load(args):
    """Pre-render, wait for the node's subscriptions, then publish for args.duration wall seconds."""
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from rclpy.time import Time
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from tf2_msgs.msg import TFMessage

    from mapanything_ros.ros.player import make_header, model_to_camera_info, rgb_to_image, timed_cloud
    from mapanything_ros.ros.tf import TF_QOS, TF_STATIC_QOS, matrix_to_transform

    scene = load_scene(args)
    t0 = time.perf_counter()
    captures = [scene.capture(RENDER_START_NS + k * 400_000_000) for k in range(args.loop)]
    sweeps = [scene.sweep(RENDER_START_NS + k * scene.lidar.sweep_ns) for k in range(args.loop)]
    render_s = time.perf_counter() - t0

    rclpy.init()
    node = rclpy.create_node("bench_load")
    try:
        images = [[(v.name, rgb_to_image(v.image, make_header(v.name, 0))) for v in cap] for cap in captures]
        infos = {c.name: model_to_camera_info(c.camera, make_header(c.name, 0)) for c in scene.cameras}
        clouds = [timed_cloud(s.points, s.times_ns - s.start_ns, make_header(LIDAR, 0), scene.lidar.rows)
                  for s in sweeps]
        qos = qos_profile_sensor_data
        image_pubs = {c.name: node.create_publisher(Image, f"{c.name}/image_raw", qos) for c in scene.cameras}
        info_pubs = {c.name: node.create_publisher(CameraInfo, f"{c.name}/camera_info", qos) for c in scene.cameras}
        lidar_pub = node.create_publisher(PointCloud2, LIDAR_TOPIC, qos)
        tf_pub = node.create_publisher(TFMessage, "/tf", TF_QOS)
        static = [matrix_to_transform(c.body_from_camera, BASE, c.name, time.time_ns()) for c in scene.cameras]
        static.append(matrix_to_transform(scene.lidar.body_from_lidar, BASE, LIDAR, time.time_ns()))
        node.create_publisher(TFMessage, "/tf_static", TF_STATIC_QOS).publish(TFMessage(transforms=static))
        emit("rendered", render_s=render_s, captures=args.loop)

        pubs = [*image_pubs.values(), *info_pubs.values(), lidar_pub, tf_pub]
        deadline = time.monotonic() + 60
        while min(p.get_subscription_count() for p in pubs) == 0:
            if time.monotonic() > deadline:
                emit("error", message="the node's input subscriptions did not appear within 60 s")
                return 1
            time.sleep(0.02)

        period = {"tf": round(SEC / args.tf_rate), "camera": round(SEC / args.camera_hz), "lidar": round(SEC / LIDAR_HZ)}
        start = time.time_ns() + SEC // 5
        due = {"tf": start, "camera": start, "lidar": start + scene.lidar.sweep_ns}  # a sweep goes out at its end
        end = start + int(args.duration * SEC)
        count = dict.fromkeys(period, 0)
        lag = []  # publication time - stamp (ns): how late the generator is
        emit("start", start_ns=start, end_ns=end)
        while True:
            kind = min(due, key=lambda k: (due[k], k != "tf"))  # TF first: the pose precedes data at its stamp
            stamp = due[kind]
            if stamp >= end:
                break
            wait = (stamp - time.time_ns()) / SEC
            if wait > 0:
                time.sleep(wait)
            if kind == "tf":
                pose = scene.trajectory.world_from_body(stamp)
                tf_pub.publish(TFMessage(transforms=[matrix_to_transform(pose, WORLD, BASE, stamp)]))
            elif kind == "camera":
                header_stamp = Time(nanoseconds=stamp).to_msg()
                for name, msg in images[count["camera"] % len(images)]:
                    info = infos[name]
                    info.header.stamp = msg.header.stamp = header_stamp
                    info_pubs[name].publish(info)
                    image_pubs[name].publish(msg)
            else:
                cloud = clouds[count["lidar"] % len(clouds)]
                cloud.header.stamp = Time(nanoseconds=stamp - scene.lidar.sweep_ns).to_msg()
                lidar_pub.publish(cloud)
            lag.append(time.time_ns() - stamp)
            count[kind] += 1
            due[kind] += period[kind]
        lag_ms = np.array(lag) / 1e6
        emit("done", published={"images_per_camera": count["camera"], "lidar": count["lidar"], "tf": count["tf"]},
             lag_p50_ms=float(np.median(lag_ms)), lag_p95_ms=float(np.percentile(lag_ms, 95)),
             lag_max_ms=float(lag_ms.max()))
        time.sleep(0.5)  # let reliable TF drain
        return 0
    except KeyboardInterrupt:
        return 1
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


# --------------------------------------------------------------------------------- measurement

def proc_sample(pid):
    """(utime + stime in seconds, VmRSS bytes, VmHWM bytes) of process `pid` (Linux /proc); None once
    it has exited."""
    try:
        return _proc_sample(pid)
    except (OSError, KeyError):  # gone, or a zombie (no memory lines)
        return None


def _proc_sample(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14, 15
    mem = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                mem[key] = int(value.split()[0]) * 1024
    return cpu, mem["VmRSS"], mem["VmHWM"]


def shm_used():
    """Bytes used in /dev/shm (Fast DDS's shared-memory segments live there)."""
    st = os.statvfs("/dev/shm")
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def params_text(args, cameras):
    extra = "".join(f"\n    {k}: {v}" for k, v in (("map_voxel_size", args.voxel_size),
                                                    ("map_publish_rate", args.map_rate)) if v is not None)
    return f"""{NODE}:
  ros__parameters:
    cameras: [{", ".join(cameras)}]
    backend: oracle
    oracle_preset: surround
    oracle_seed: 0
    use_sim_time: false
    depth_source: lidar
    lidar_topic: {LIDAR_TOPIC}
    world_frame: {WORLD}
    window_size: {args.window_size}{extra}
"""


class Measure:
    """The measuring subscriber: receipt wall time vs header stamp of the node's outputs, and /diagnostics."""

    def __init__(self, node, cameras, subscribe_map=False, subscribe_mesh=False):
        from diagnostic_msgs.msg import DiagnosticArray
        from nav_msgs.msg import OccupancyGrid
        from sensor_msgs.msg import Image, PointCloud2
        from visualization_msgs.msg import MarkerArray

        from mapanything_ros.msg import ReconstructionWindow

        self.latency = {}  # topic key -> [(stamp ns, receipt - stamp ns)]
        self.diagnostics = []  # (receipt wall ns, {status short name: {key: value}})
        topics = {"points": (PointCloud2, f"/{NODE}/points"), "window": (ReconstructionWindow, f"/{NODE}/window")}
        topics.update({f"depth {c}": (Image, f"/{NODE}/{c}/depth") for c in cameras})
        self.subs = [node.create_subscription(kind, topic, lambda m, k=key: self._on_output(k, m), 10)
                     for key, (kind, topic) in topics.items()]
        self.map_points = []  # points of each ~/map received
        if subscribe_map:  # the node's latched outputs (ros/node.py MAP_QOS): reliable, depth 1
            for key, kind in (("map", PointCloud2), ("occupancy", OccupancyGrid)):
                self.subs.append(node.create_subscription(kind, f"/{NODE}/{key}",
                                                          lambda m, k=key: self._on_output(k, m), 1))
        self.mesh_bytes = []  # serialized size of each ~/mesh array received
        if subscribe_mesh:
            self.subs.append(node.create_subscription(PointCloud2, f"/{NODE}/esdf",
                                                      lambda m: self._on_output("esdf", m), 1))
            # raw: as rclpy message objects, one Python object per corner, the arrays took this
            # process half a core and delayed its receipt of the other topics by seconds
            self.subs.append(node.create_subscription(MarkerArray, f"/{NODE}/mesh",
                                                      lambda data: self.mesh_bytes.append(len(data)), 1, raw=True))
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_output(self, key, msg):
        now = time.time_ns()
        stamp = msg.header.stamp.sec * SEC + msg.header.stamp.nanosec
        self.latency.setdefault(key, []).append((stamp, now - stamp))
        if key == "map":
            self.map_points.append(msg.width * msg.height)

    def _on_diagnostics(self, msg):
        prefix = f"/{NODE}: "  # the node's fully qualified name (ros/node.py publish_diagnostics)
        statuses = {s.name[len(prefix):]: {kv.key: kv.value for kv in s.values}
                    for s in msg.status if s.name.startswith(prefix)}
        if statuses:
            self.diagnostics.append((time.time_ns(), statuses))

    def matched(self):
        return all(s.get_publisher_count() for s in self.subs)


def settled(m, end_ns):
    """Whether a diagnostics message sent after `end_ns` shows every keyframe's job finished or dropped."""
    if not m.diagnostics or m.diagnostics[-1][0] < end_ns + SEC:
        return False
    p = {k: int(v) for k, v in m.diagnostics[-1][1]["pipeline"].items() if v.lstrip("-").isdigit()}
    return p["pending"] == 0 and p["keyframes"] == p["windows_done"] + p["windows_failed"] + p["dropped_pipeline_queue"]


def stop(proc, name):
    """SIGINT, then SIGKILL after 15 s; returns how it ended."""
    if proc is None or proc.poll() is not None:
        return None if proc is None else f"{name} exited {proc.returncode}"
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
        return f"{name} stopped by SIGINT ({proc.returncode})"
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return f"{name} killed (SIGKILL) after SIGINT timed out"


def rig_args(args):
    """The options the load generator needs to publish the same rig."""
    return ["--duration", str(args.duration), "--loop", str(args.loop), "--tf-rate", str(args.tf_rate),
            "--cameras", str(args.cameras), "--size", args.size, "--camera-hz", str(args.camera_hz),
            "--lidar-points", str(args.lidar_points)]


def read_events(stream, events):
    for line in stream:
        try:
            events.put(json.loads(line))
        except json.JSONDecodeError:
            sys.stderr.write(line)


def pct(values, q):
    return float(np.percentile(values, q)) if len(values) else float("nan")


def measure(args):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    load_avg = os.getloadavg()
    cameras = [c.name for c in surround_cameras()[:args.cameras]]
    logdir = tempfile.mkdtemp(prefix="bench_node_")
    params = os.path.join(logdir, "params.yaml")
    with open(params, "w") as f:
        f.write(params_text(args, cameras))
    if args.profile:  # this process (before rclpy loads Fast DDS) and the ones it starts
        dds.use_profile(os.path.abspath(args.profile))
    env = dict(os.environ)
    rclpy.init()
    me = rclpy.create_node("bench_measure")
    executor = SingleThreadedExecutor()
    executor.add_node(me)
    m = Measure(me, cameras, args.subscribe_map, args.subscribe_mesh)
    node_proc = load_proc = None
    samples = {"node": [], "load": [], "bench": []}  # per process: [(wall ns, cpu s, rss, hwm)]
    shm = [shm_used()]  # bytes used in /dev/shm (the DDS segments), before and every second
    events, info = queue.Queue(), {}
    ended = []
    try:
        with open(os.path.join(logdir, "node.log"), "w") as log:
            node_proc = subprocess.Popen([sys.executable, "-m", "mapanything_ros.ros.node", "--ros-args",
                                          "--params-file", params], env=env, stdout=log, stderr=subprocess.STDOUT)
        with open(os.path.join(logdir, "load.log"), "w") as log:
            load_proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--role", "load",
                                          *rig_args(args)], env=env, stdout=subprocess.PIPE,
                                         stderr=log, text=True)
        threading.Thread(target=read_events, args=(load_proc.stdout, events), daemon=True).start()
        drain_until = idle_since = None
        next_sample = time.monotonic()
        deadline = time.monotonic() + 180 + args.duration
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.02)
            if time.monotonic() >= next_sample:
                for name, pid in (("node", node_proc.pid), ("load", load_proc.pid), ("bench", os.getpid())):
                    sample = proc_sample(pid)
                    if sample is not None:
                        samples[name].append((time.time_ns(), *sample))
                shm.append(shm_used())
                next_sample += 1.0
            while not events.empty():
                event = events.get()
                info[event.pop("event")] = event
            if "error" in info or node_proc.poll() is not None:
                raise RuntimeError(f"{info.get('error')} / node exit {node_proc.poll()}; logs in {logdir}")
            if drain_until is None and ("done" in info or load_proc.poll() is not None):
                drain_until, idle_since = time.monotonic() + args.drain, None
            if drain_until is not None:
                if idle_since is None and settled(m, info["start"]["end_ns"]):
                    idle_since = time.monotonic()
                if time.monotonic() > drain_until or (idle_since and time.monotonic() > idle_since + 1.5):
                    break
        info["settled"] = idle_since is not None
        if "done" not in info:
            raise RuntimeError(f"the load generator did not finish ({info}); logs in {logdir}")
    finally:
        ended = [stop(load_proc, "load generator"), stop(node_proc, "node")]
        executor.shutdown()
        me.destroy_node()
        rclpy.try_shutdown()
    return summarise(args, m, samples, info, cameras, load_avg, logdir, ended, shm)


def summarise(args, m, samples, info, cameras, load_avg, logdir, ended, shm):
    start, end = info["start"]["start_ns"], info["start"]["end_ns"]
    published = info["done"]["published"]
    def cpu_percent(rows):
        return 100.0 * (rows[-1][1] - rows[0][1]) / ((rows[-1][0] - rows[0][0]) / SEC)

    run = [s for s in samples["node"] if start <= s[0] <= end]
    cpu = cpu_percent(run)
    others = {k: cpu_percent([s for s in samples[k] if start <= s[0] <= end]) for k in ("load", "bench")}
    per_second = [100.0 * (b[1] - a[1]) / ((b[0] - a[0]) / SEC) for a, b in zip(run, run[1:])]
    final = m.diagnostics[-1][1]  # after the drain: every counter is final
    during = [d for t, d in m.diagnostics if start <= t <= end + SEC]
    span = min(10.0, args.duration / 3) * SEC

    def lat(key, lo=start, hi=end + args.drain * SEC):
        return np.array([v for s, v in m.latency.get(key, []) if lo <= s < hi]) / 1e6

    def series(status, key):
        return [int(float(d[status][key])) for d in during if key in d.get(status, {})]

    def count_at(t_ns, status, key):
        """A counter of the node's diagnostics as the last message up to t_ns said it (0 before any)."""
        said = [int(float(d[status][key])) for t, d in m.diagnostics if t <= t_ns and key in d.get(status, {})]
        return said[-1] if said else 0

    points = lat("points")
    first, last = lat("points", start, start + span), lat("points", end - span, end)
    sync = final["sync"]
    lidar_received = int(final.get("depth", {}).get(f"{LIDAR_SOURCE}_received", 0))
    figures = {
        "duration_s": args.duration, "window_size": args.window_size, "cameras": cameras,
        "camera": f"{args.size} rgb8 @ {args.camera_hz:g} Hz",
        "lidar_points": LIDAR_ROWS * max(1, round(args.lidar_points / LIDAR_ROWS)), "voxel_size": args.voxel_size,
        "map_subscribed": args.subscribe_map, "dds_profile": dds.loaded_profile()[0],
        "lidar_hz": LIDAR_HZ, "tf_hz": args.tf_rate, "load_average_at_start": load_avg,
        "render_s": info["rendered"]["render_s"], "loop_captures": args.loop,
        "published": published,
        "received": {c: int(final[f"camera {c}"]["received"]) for c in cameras} | {"lidar": lidar_received},
        "drops": {k: int(v) for k, v in sync.items() if k.startswith("dropped")}
        | {f"pipeline_{k}": int(final["pipeline"][k]) for k in ("dropped_pipeline_queue", "windows_failed")}
        | {f"lidar_{k}": int(final.get("depth", {}).get(f"{LIDAR_TOPIC}_{k}", 0))
           for k in ("attached", "missing", "stale", "overflow")},
        "map": {k: int(final["pipeline"].get(k, -1)) for k in ("map_blocks", "map_dropped", "map_overflows")},
        "captures": int(sync["captures"]), "keyframes": int(final["pipeline"]["keyframes"]),
        "windows_done": int(final["pipeline"]["windows_done"]),
        "points_received": len(m.latency.get("points", [])),
        "map_received": len(m.map_points), "map_points_max": max(m.map_points, default=0),
        "map_age_ms": {"p50": pct(lat("map"), 50), "max": pct(lat("map"), 100)},
        "occupancy_received": len(m.latency.get("occupancy", [])),
        "mesh_subscribed": args.subscribe_mesh, "esdf_received": len(m.latency.get("esdf", [])),
        "mesh_arrays_received": len(m.mesh_bytes), "mesh_mb_received": sum(m.mesh_bytes) / 1e6,
        "latency_points_ms": {"p50": pct(points, 50), "p95": pct(points, 95), "max": pct(points, 100)},
        "latency_window_ms": {"p50": pct(lat("window"), 50), "p95": pct(lat("window"), 95)},
        **{f"latency_depth_{c}_ms": {"p50": pct(lat(f"depth {c}"), 50), "p95": pct(lat(f"depth {c}"), 95)}
           for c in cameras},
        "latency_points_first_last_ms": {"span_s": span / SEC, "first_p50": pct(first, 50),
                                         "last_p50": pct(last, 50)},
        "node_total_latency_s": {k: float(final["pipeline"].get(f"total_latency_{k}_s", "nan")) for k in ("p50", "p95")},
        "node_inference_latency_s": {k: float(final["pipeline"].get(f"inference_latency_{k}_s", "nan"))
                                     for k in ("p50", "p95")},
        "node_stage_latency_p50_ms": {stage: 1e3 * float(final["pipeline"].get(f"{stage}_latency_p50_s", "nan"))
                                      for stage in STAGES},
        "max_pipeline_pending": max(series("pipeline", "pending"), default=None),
        "pipeline_dropped_first": {"span_s": span / SEC,
                                   "dropped": count_at(start + span, "pipeline", "dropped_pipeline_queue")},
        "max_queued_for_tf": max(series("sync", "queued_for_tf"), default=None),
        "tf_lost": final["tf"].get("lost_tf_messages", "not reported"),
        "node_cpu_percent_of_one_core": cpu, "node_cpu_percent_max_1s": max(per_second, default=float("nan")),
        "node_rss_mb": {"final": run[-1][2] / 2**20, "peak_sampled": max(s[2] for s in run) / 2**20,
                        "peak_hwm": samples["node"][-1][3] / 2**20},
        "dev_shm_used_mb": {"before": shm[0] / 2**20, "peak": max(shm) / 2**20},
        "cpu_count": os.cpu_count(), "load_cpu_percent": others["load"], "bench_cpu_percent": others["bench"],
        "load_lag_ms": {k: info["done"][f"lag_{k}_ms"] for k in ("p50", "p95", "max")},
        "node_finished_all_windows_before_stop": info["settled"], "shutdown": ended, "logs": logdir,
        "node_samples": [{"t_s": (t - start) / SEC, "cpu_s": c, "rss_mb": r / 2**20} for t, c, r, _ in samples["node"]],
    }
    return figures


def table(f):
    cams = f["cameras"]
    rows = [("load average at start (1/5/15 min); CPUs", " / ".join(f"{v:.2f}" for v in f["load_average_at_start"])
             + f"; {f['cpu_count']}")]
    for c in cams:
        got, sent = f["received"][c], f["published"]["images_per_camera"]
        rows.append((f"images {c}: received / published (loss)", f"{got} / {sent} ({100 * (1 - got / sent):.1f} %)"))
    got, sent = f["received"]["lidar"], f["published"]["lidar"]
    rows.append(("LiDAR clouds: received / published (loss)", f"{got} / {sent} ({100 * (1 - got / sent):.1f} %)"))
    rows.append(("drops by reason (non-zero)", ", ".join(f"{k} {v}" for k, v in f["drops"].items() if v) or "none"))
    rows += [("captures / keyframes / windows done / ~/points received",
              f"{f['captures']} / {f['keyframes']} / {f['windows_done']} / {f['points_received']}"),
             ("latency image stamp -> ~/points received, p50 / p95 / max (ms)",
              " / ".join(f"{f['latency_points_ms'][k]:.0f}" for k in ("p50", "p95", "max"))),
             ("~/map received (most points) / age at receipt p50 / max (ms) / ~/occupancy received",
              f"{f['map_received']} ({f['map_points_max']:,}) / {f['map_age_ms']['p50']:.0f} / "
              f"{f['map_age_ms']['max']:.0f} / {f['occupancy_received']}" if f["map_subscribed"] else "not subscribed"),
             ("~/esdf received / ~/mesh arrays received (MB)",
              f"{f['esdf_received']} / {f['mesh_arrays_received']} ({f['mesh_mb_received']:.1f})"
              if f["mesh_subscribed"] else "not subscribed"),
             ("map blocks of 64 voxels / keyframes dropped before fusion (map thread behind) / too large "
              "for the bound", " / ".join(f"{f['map'][k]:,}" for k in ("map_blocks", "map_dropped", "map_overflows"))),
             ("latency -> ~/window received, p50 / p95 (ms)",
              " / ".join(f"{f['latency_window_ms'][k]:.0f}" for k in ("p50", "p95")))]
    rows += [(f"latency -> ~/{c}/depth received, p50 / p95 (ms)",
              " / ".join(f"{f[f'latency_depth_{c}_ms'][k]:.0f}" for k in ("p50", "p95"))) for c in cams]
    fl = f["latency_points_first_last_ms"]
    rows += [(f"~/points latency p50, first vs last {fl['span_s']:.0f} s (ms)",
              f"{fl['first_p50']:.0f} vs {fl['last_p50']:.0f} (x{fl['last_p50'] / fl['first_p50']:.2f})"),
             ("node pipeline latency (its diagnostics) p50 / p95 (ms)",
              " / ".join(f"{1e3 * f['node_total_latency_s'][k]:.0f}" for k in ("p50", "p95"))),
             ("of which the backend (its diagnostics: inference) p50 / p95 (ms)",
              " / ".join(f"{1e3 * f['node_inference_latency_s'][k]:.0f}" for k in ("p50", "p95"))),
             ("pipeline stages p50 (ms): " + ", ".join(f["node_stage_latency_p50_ms"]),
              " / ".join(f"{v:.1f}" for v in f["node_stage_latency_p50_ms"].values())),
             (f"windows dropped by the latest-wins queues in the first {f['pipeline_dropped_first']['span_s']:g} s "
              "of load / in all",
              f"{f['pipeline_dropped_first']['dropped']} / {f['drops']['pipeline_dropped_pipeline_queue']}"),
             ("max pipeline jobs pending (before preparation and before the worker) / max captures waiting "
              "for TF (bounds 2 / 10)",
              f"{f['max_pipeline_pending']} / {f['max_queued_for_tf']}"),
             ("/tf messages lost before the node read them (its diagnostics)", f"{f['tf_lost']}"),
             ("node CPU, % of one core (run mean / max 1 s)",
              f"{f['node_cpu_percent_of_one_core']:.0f} / {f['node_cpu_percent_max_1s']:.0f}"),
             ("node RSS at end of load / peak during load / VmHWM (MB)",
              " / ".join(f"{f['node_rss_mb'][k]:.0f}" for k in ("final", "peak_sampled", "peak_hwm"))),
             ("/dev/shm used before / peak (MB; the DDS segments of the three processes)",
              f"{f['dev_shm_used_mb']['before']:.0f} / {f['dev_shm_used_mb']['peak']:.0f}"),
             ("CPU of the load generator / this measuring process, % of one core",
              f"{f['load_cpu_percent']:.0f} / {f['bench_cpu_percent']:.0f}"),
             ("load generator lateness p50 / p95 / max (ms)",
              " / ".join(f"{f['load_lag_ms'][k]:.1f}" for k in ("p50", "p95", "max")))]
    print(f"Node under load: oracle backend, {len(cams)} x {f['camera']}, {f['lidar_points']:,}-point LiDAR @ "
          f"{f['lidar_hz']:g} Hz, TF @ {f['tf_hz']:g} Hz, window {f['window_size']}, {f['duration_s']:g} s, "
          f"map voxel {f['voxel_size'] or 'default'}, DDS profile {f['dds_profile']}\n")
    print("| figure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="wall seconds of load")
    parser.add_argument("--window-size", type=int, default=4, help="node parameter window_size")
    parser.add_argument("--tf-rate", type=float, default=100.0, help="odom -> base_link rate (Hz)")
    parser.add_argument("--loop", type=int, default=3, help="pre-rendered captures and sweeps cycled")
    parser.add_argument("--cameras", type=int, default=2, choices=range(1, 5), help="cameras of the surround rig")
    parser.add_argument("--size", default="1280x720", help="camera image size WxH")
    parser.add_argument("--camera-hz", type=float, default=30.0, help="camera rate (Hz)")
    parser.add_argument("--lidar-points", type=int, default=100_000, help="points per LiDAR sweep (80 beams)")
    parser.add_argument("--voxel-size", type=float, help="node parameter map_voxel_size (m)")
    parser.add_argument("--map-rate", type=float, help="node parameter map_publish_rate (Hz)")
    parser.add_argument("--subscribe-map", action="store_true", help="also subscribe to ~/map and ~/occupancy")
    parser.add_argument("--subscribe-mesh", action="store_true", help="also subscribe to ~/esdf and ~/mesh")
    parser.add_argument("--profile", help="Fast DDS profile XML for the three processes (default: the environment's)")
    parser.add_argument("--drain", type=float, default=20.0,
                        help="at most this many wall seconds after the load for the node to finish its windows")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--role", choices=("measure", "load"), default="measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "load":
        return run_load(args)
    figures = measure(args)
    table(figures)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
