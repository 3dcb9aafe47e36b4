"""Soak (issue 11): the node with the depth-completion preset (config/depth_completion.yaml) fed by
the live synthetic player for a long run, as the README starts them (no use_sim_time: the player
stamps with the wall clock). Reports, per minute, the node's RSS and the end-to-end latency of
its windows (window stamp = newest capture's image stamp -> ~/window received here), and over
the run: RSS growth after warm-up (MB per minute, a least-squares slope over the samples after
the first `--warmup` minutes), windows, failed windows, LiDAR sweeps attached vs missing, and
every WARN/ERROR line the node logged (a clean run has none). The map's outputs are subscribed
(~/map, ~/mesh, ~/occupancy, ~/esdf: each is built while someone listens) and its size is followed per
minute (blocks from /diagnostics, with the keyframes dropped before fusion); `--map-max-voxels`
bounds it below the room's size so that it evicts all along (the robot goes round the same room).

Backend: oracle by default (the preset's mapanything needs weights; `--backend random` runs the
tiny random network instead). Three processes: the player (`python -m mapanything_ros.ros.player`,
default scene, started first), the node and this one, which samples the node's
/proc/<pid>/status VmRSS every `--sample` seconds.

    python bench/bench_soak.py [--minutes 10] [--backend oracle] [--map-max-voxels N] [--json PATH]
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
import rclpy.executors
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import OccupancyGrid
from rcl_interfaces.msg import Log
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from visualization_msgs.msg import MarkerArray

from mapanything_ros.msg import ReconstructionWindow

REPO = Path(__file__).resolve().parents[1]
SEC = 1_000_000_000
MB = 1 << 20


def vm_rss(pid):
    """VmRSS of process `pid` in bytes (None once it has gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        return None
    return None


def stamp_ns(header):
    return header.stamp.sec * SEC + header.stamp.nanosec


def run(minutes, backend, sample_s, warmup_min, map_max_voxels=None, node_log=subprocess.DEVNULL):
    env = dict(os.environ)
    # The robot first, as the README says (a node hearing no camera for camera_timeout says so).
    player = subprocess.Popen([sys.executable, "-m", "mapanything_ros.ros.player", "--duration",
                               str(minutes * 60 + 180)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    node = subprocess.Popen([sys.executable, "-m", "mapanything_ros.ros.node", "--ros-args", "--params-file",
                             str(REPO / "config" / "depth_completion.yaml"), "-p", f"backend:={backend}",
                             "-p", "device:=cpu"] + (["-p", f"map_max_voxels:={map_max_voxels}"] if map_max_voxels else []),
                            env=env, stdout=subprocess.DEVNULL, stderr=node_log)
    rclpy.init()
    probe = rclpy.create_node("soak_probe")
    latencies, diags, problems = [], [], []
    def on_window(msg):
        latencies.append((time.monotonic(), (time.time_ns() - stamp_ns(msg.header)) / SEC))

    probe.create_subscription(ReconstructionWindow, "/mapanything/window", on_window, 10)
    probe.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diags.append((time.monotonic(), m)), 10)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    outputs = {"map": 0, "mesh": 0, "occupancy": 0, "esdf": 0}
    for name, kind in (("map", PointCloud2), ("mesh", MarkerArray), ("occupancy", OccupancyGrid),
                       ("esdf", PointCloud2)):
        # raw (serialized bytes): as message objects the mesh's arrays would load the probe, which
        # times ~/window on receipt
        probe.create_subscription(kind, f"/mapanything/{name}", lambda _, n=name: outputs.__setitem__(n, outputs[n] + 1),
                                  latched, raw=True)
    probe.create_subscription(Log, "/rosout", lambda m: problems.append((m.level, m.msg))
                              if m.name == "mapanything" and m.level >= Log.WARN else None, 1000)
    executor = rclpy.executors.SingleThreadedExecutor()
    executor.add_node(probe)
    rss = []
    try:
        deadline = time.monotonic() + 180
        while not latencies and time.monotonic() < deadline:  # the first window starts the clock
            executor.spin_once(timeout_sec=0.1)
        t0 = time.monotonic()
        next_sample = t0
        while time.monotonic() < t0 + minutes * 60:
            executor.spin_once(timeout_sec=0.05)
            if time.monotonic() >= next_sample:
                rss.append((time.monotonic() - t0, vm_rss(node.pid)))
                next_sample += sample_s
        rss.append((time.monotonic() - t0, vm_rss(node.pid)))
    finally:
        for proc in (player, node):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        codes = {}
        for name, proc in (("player", player), ("node", node)):
            if proc is not None:
                try:
                    codes[name] = proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    codes[name] = "killed"
        executor.shutdown()
        probe.destroy_node()
        rclpy.try_shutdown()
    return {**summarise(t0, minutes, rss, latencies, diags, problems, codes, warmup_min),
            "outputs_received": outputs, "map_max_voxels": map_max_voxels}


def pipeline_values(msg):
    """{key: value} of a DiagnosticArray's pipeline and depth statuses."""
    return {v.key: v.value for status in msg.status if status.name.endswith(("pipeline", "depth")) for v in status.values}


def summarise(t0, minutes, rss, latencies, diags, problems, codes, warmup_min):
    per_minute = []
    for m in range(int(np.ceil(minutes))):
        lat = [v for t, v in latencies if m * 60 <= t - t0 < (m + 1) * 60]
        mem = [b for t, b in rss if m * 60 <= t < (m + 1) * 60 and b is not None]
        diag = [pipeline_values(msg) for t, msg in diags if m * 60 <= t - t0 < (m + 1) * 60]
        diag = diag[-1] if diag else {}
        blocks = [int(v["map_blocks"]) for t, msg in diags if m * 60 <= t - t0 < (m + 1) * 60
                  for v in [pipeline_values(msg)] if "map_blocks" in v]
        per_minute.append({"minute": m + 1, "windows": len(lat), "map_blocks": diag.get("map_blocks"),
                           "map_blocks_min": min(blocks) if blocks else None, "map_resets": diag.get("map_resets"),
                           "map_dropped": diag.get("map_dropped"),
                           "latency_p50_s": round(float(np.percentile(lat, 50)), 3) if lat else None,
                           "latency_p95_s": round(float(np.percentile(lat, 95)), 3) if lat else None,
                           "latency_max_s": round(float(max(lat)), 3) if lat else None,
                           "rss_mb": round(mem[-1] / MB, 1) if mem else None})
    steady = [(t / 60, b / MB) for t, b in rss if t >= warmup_min * 60 and b is not None]
    slope = float(np.polyfit(*zip(*steady), 1)[0]) if len(steady) >= 3 else None
    values = {}
    for _, msg in diags[-3:]:
        values.update(pipeline_values(msg))
    return {"minutes": minutes, "per_minute": per_minute,
            "rss_growth_after_warmup_mb_per_min": None if slope is None else round(slope, 2),
            "rss_first_mb": round(rss[0][1] / MB, 1), "rss_last_mb": round(rss[-1][1] / MB, 1),
            "windows_done": values.get("windows_done"), "windows_failed": values.get("windows_failed"),
            "lidar_attached": values.get("lidar_attached"), "lidar_missing": values.get("lidar_missing"),
            "warnings_and_errors": sorted({msg for _, msg in problems})[:20], "exit_codes": codes}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="wall minutes after the first window")
    parser.add_argument("--backend", choices=("oracle", "random"), default="oracle")
    parser.add_argument("--sample", type=float, default=5.0, help="RSS sampling period (s)")
    parser.add_argument("--warmup", type=float, default=2.0, help="minutes left out of the RSS growth fit")
    parser.add_argument("--map-max-voxels", type=int, help="the node's map_max_voxels (default: the preset's)")
    parser.add_argument("--node-log", help="write the node's stderr (its Python log lines) to this file")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    with open(args.node_log or os.devnull, "w") as node_log:
        figures = run(args.minutes, args.backend, args.sample, args.warmup, args.map_max_voxels, node_log)
    figures["backend"] = args.backend
    print(f"Soak: depth-completion preset, {args.backend} backend, live synthetic player, {args.minutes:g} min\n")
    print("| minute | windows | latency p50 (s) | p95 (s) | max (s) | node RSS (MB) | map blocks (least) | map resets | "
          "keyframes dropped before fusion |\n|---|---|---|---|---|---|---|---|---|")
    for row in figures["per_minute"]:
        print(f"| {row['minute']} | {row['windows']} | {row['latency_p50_s']} | {row['latency_p95_s']} | "
              f"{row['latency_max_s']} | {row['rss_mb']} | {row['map_blocks']} ({row['map_blocks_min']}) | "
              f"{row['map_resets']} | {row['map_dropped']} |")
    print()
    for key in ("rss_first_mb", "rss_last_mb", "rss_growth_after_warmup_mb_per_min", "windows_done",
                "windows_failed", "lidar_attached", "lidar_missing", "outputs_received", "exit_codes"):
        print(f"- {key}: {figures[key]}")
    print(f"- node WARN/ERROR lines: {figures['warnings_and_errors'] or 'none'}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
