"""Which rclpy executor keeps up with the node's inputs: a node with the node's input
subscriptions (two 1280 x 720 rgb8 cameras at 30 Hz with their CameraInfo, a 100,000-point LiDAR
at 10 Hz, TF at 100 Hz: bench_node.py's load generator) and EMPTY callbacks (they only count),
plus the node's two wall timers (20 Hz and 1 Hz), run on each executor in turn against the same
load. Reports messages received / published and the node process's CPU, side by side in one run.

Executors: "multi" (MultiThreadedExecutor, all subscriptions in one mutually exclusive group: the
node's set-up before issue 9), "single" (SingleThreadedExecutor), "events"
(rclpy.experimental.EventsExecutor).

    tools/dev run python bench/bench_executor.py [--duration 20] [--json PATH]
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXECUTORS = ("multi", "single", "events")


def run_node(kind):
    """The empty node on executor `kind`; prints its counts as JSON at SIGINT."""
    import rclpy
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
    from rclpy.clock import Clock, ClockType
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
    from rclpy.experimental import EventsExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from tf2_msgs.msg import TFMessage

    from bench_node import LIDAR_TOPIC
    from mapanything_ros.ros.tf import TF_QOS, TF_STATIC_QOS
    from mapanything_ros.synthetic import default_cameras

    rclpy.init()
    node = rclpy.create_node("mapanything")
    counts = dict.fromkeys(("images", "camera_info", "lidar", "tf", "timer_20hz", "timer_1hz"), 0)

    def count(key):
        def callback(*_):
            counts[key] += 1
        return callback

    group = MutuallyExclusiveCallbackGroup() if kind == "multi" else None
    qos = qos_profile_sensor_data
    for cam in default_cameras():
        node.create_subscription(Image, f"{cam.name}/image_raw", count("images"), qos, callback_group=group)
        node.create_subscription(CameraInfo, f"{cam.name}/camera_info", count("camera_info"), qos,
                                 callback_group=group)
    node.create_subscription(PointCloud2, LIDAR_TOPIC, count("lidar"), qos, callback_group=group)
    node.create_subscription(TFMessage, "/tf", count("tf"), TF_QOS, callback_group=group)
    node.create_subscription(TFMessage, "/tf_static", count("tf"), TF_STATIC_QOS, callback_group=group)
    wall = Clock(clock_type=ClockType.STEADY_TIME)
    node.create_timer(0.05, count("timer_20hz"), clock=wall)

    node.create_timer(1.0, count("timer_1hz"), clock=wall)

    def report():  # from a thread of its own, so that the counts come out whatever the executor does
        while True:
            time.sleep(0.5)
            print(json.dumps(counts), flush=True)  # the parent reads the last line
    threading.Thread(target=report, daemon=True).start()
    executor = {"multi": MultiThreadedExecutor, "single": SingleThreadedExecutor, "events": EventsExecutor}[kind]()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        print(json.dumps(counts), flush=True)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(kind, duration):
    """{received, published, loss, cpu %} of the empty node on executor `kind` under the load."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    node = subprocess.Popen([sys.executable, __file__, "--role", kind], env=env, stdout=subprocess.PIPE, text=True)
    load = subprocess.Popen([sys.executable, str(HERE / "bench_node.py"), "--role", "load", "--duration",
                             str(duration)], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    events = {}
    for line in load.stdout:
        event = json.loads(line)
        events[event.pop("event")] = event
        if "start" in events and "cpu0" not in events:
            events["cpu0"] = (time.monotonic(), cpu_seconds(node.pid))
    load.wait()
    time.sleep(1.0)
    wall1, cpu1 = time.monotonic(), cpu_seconds(node.pid)
    node.send_signal(signal.SIGINT)
    try:
        out, stopped = node.communicate(timeout=10)[0], "exited on SIGINT"
    except subprocess.TimeoutExpired:
        node.kill()
        out, stopped = node.communicate()[0], "did not stop on SIGINT within 10 s (killed)"
    counts = json.loads(out.strip().splitlines()[-1])
    wall0, cpu0 = events["cpu0"]
    published = events["done"]["published"]
    sent = {"images": 2 * published["images_per_camera"], "camera_info": 2 * published["images_per_camera"],
            "lidar": published["lidar"], "tf": published["tf"]}
    lost = {k: 1 - min(counts[k], sent[k]) / sent[k] for k in sent}
    return {"executor": kind, "received": counts, "published": sent, "lost": lost,
            "cpu_percent": 100 * (cpu1 - cpu0) / (wall1 - wall0), "stopped": stopped}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="wall seconds of load per executor")
    parser.add_argument("--executors", default=",".join(EXECUTORS))
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--role", choices=EXECUTORS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        run_node(args.role)
        return
    rows = [measure(kind, args.duration) for kind in args.executors.split(",")]
    print(f"Empty-callback node under bench_node's load, {args.duration:.0f} s per executor\n")
    print("| executor | images lost | LiDAR lost | TF lost | 20 Hz timer ticks | node CPU (% of a core) | SIGINT |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['executor']} | {100 * r['lost']['images']:.1f} % | {100 * r['lost']['lidar']:.1f} % | "
              f"{100 * r['lost']['tf']:.1f} % | {r['received']['timer_20hz']} | {r['cpu_percent']:.0f} | "
              f"{r['stopped']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
