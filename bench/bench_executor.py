"""Which rclpy executor keeps up with the node's inputs: a node with the node's input
subscriptions (two 1280 x 720 rgb8 cameras at 30 Hz with their CameraInfo, a 100,000-point LiDAR
at 10 Hz, TF at 100 Hz: bench_node.py's load generator) and EMPTY callbacks (they only count),
plus the node's two wall timers (20 Hz and 1 Hz), run on each executor in turn against the same
load. Reports messages received / published and the node process's CPU, side by side in one run;
--tf-rates runs each executor at several TF rates (what TF's dispatch costs).

Executors: "multi" (MultiThreadedExecutor, all subscriptions in one mutually exclusive group: the
node's set-up before issue 9), "single" (SingleThreadedExecutor), "events"
(rclpy.experimental.EventsExecutor).

Then, in-process: the CPU of the node's own /tf callback per message, and of one executor wait
with 28 publishers with and without rclpy's default QoS-event handlers (the node's outputs have
none: each handler is a waitable walked at every wait).

    tools/dev run python bench/bench_executor.py [--duration 20] [--executors single] [--tf-rates 100,10]
                                                 [--json PATH]
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

import numpy as np

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


def measure(kind, duration, tf_rate):
    """{received, published, loss, cpu %} of the empty node on executor `kind` under the load, TF at
    `tf_rate` Hz."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    node = subprocess.Popen([sys.executable, __file__, "--role", kind], env=env, stdout=subprocess.PIPE, text=True)
    load = subprocess.Popen([sys.executable, str(HERE / "bench_node.py"), "--role", "load", "--duration",
                             str(duration), "--tf-rate", str(tf_rate)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
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
    return {"executor": kind, "tf_hz": tf_rate, "received": counts, "published": sent, "lost": lost,
            "cpu_percent": 100 * (cpu1 - cpu0) / (wall1 - wall0), "stopped": stopped}


def tf_callback_cost(messages=5000):
    """Microseconds of CPU per /tf message in the node's own TF callback (TfLookup._add: the
    refusal checks, then the buffer: tf2_ros's where importable, else the built-in one), the
    node in-process with the oracle backend, one transform a message as the robot's odometry."""
    import rclpy
    from rclpy.parameter import Parameter
    from tf2_msgs.msg import TFMessage

    from mapanything_ros.ros.node import MapAnythingNode
    from mapanything_ros.ros.tf import matrix_to_transform

    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = MapAnythingNode(context=context, parameter_overrides=[
        Parameter("cameras", value=["front_optical"]), Parameter("backend", value="oracle"),
        Parameter("oracle_preset", value="small")])
    try:
        now = node.get_clock().now().nanoseconds
        pose = np.eye(4)
        stamps = now - (messages - np.arange(messages)) * 10_000_000  # 100 Hz up to now, in order
        msgs = [TFMessage(transforms=[matrix_to_transform(pose, "odom", "base_link", int(s))]) for s in stamps]
        t = time.process_time()
        for msg in msgs:
            node.tf._add(msg, False)
        return 1e6 * (time.process_time() - t) / messages, type(node.tf).__name__
    finally:
        node.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)


def wait_cost(publishers=28, seconds=3.0):
    """{default handlers: microseconds of CPU per executor wait (each runs one timer callback)} for
    a node with `publishers` publishers (the node's count at four cameras) and a 10 kHz timer, on a
    SingleThreadedExecutor: with rclpy's default QoS-event handlers on each publisher (two
    waitables each, walked at every wait) and without (the node's outputs since they were
    measured here); in the order with, without, without, with, the mean of the two of each."""
    import rclpy
    from rclpy.event_handler import PublisherEventCallbacks
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import Empty

    context = rclpy.context.Context()
    rclpy.init(context=context)
    cost = {True: [], False: []}
    try:
        for run, default in enumerate((True, False, False, True)):
            node = rclpy.create_node(f"bench_wait_{run}", context=context)
            events = PublisherEventCallbacks(use_default_callbacks=default)
            for k in range(publishers):
                node.create_publisher(Empty, f"bench_wait_{run}_{k}", 1, event_callbacks=events)
            ticks = [0]
            node.create_timer(1e-4, lambda: ticks.__setitem__(0, ticks[0] + 1))
            executor = SingleThreadedExecutor(context=context)
            executor.add_node(node)
            for _ in range(100):
                executor.spin_once(timeout_sec=0.1)
            ticks[0], cpu, end = 0, time.process_time(), time.monotonic() + seconds
            while time.monotonic() < end:
                executor.spin_once(timeout_sec=0.1)
            cost[default].append(1e6 * (time.process_time() - cpu) / ticks[0])
            executor.shutdown()
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
    return {default: float(np.mean(runs)) for default, runs in cost.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="wall seconds of load per executor")
    parser.add_argument("--executors", default=",".join(EXECUTORS))
    parser.add_argument("--tf-rates", default="100", help="TF rates (Hz), comma-separated: each executor at each")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--role", choices=EXECUTORS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        run_node(args.role)
        return
    rows = [measure(kind, args.duration, float(rate)) for kind in args.executors.split(",")
            for rate in args.tf_rates.split(",")]
    print(f"Empty-callback node under bench_node's load, {args.duration:.0f} s per executor\n")
    print("| executor | TF (Hz) | images lost | LiDAR lost | TF lost | 20 Hz timer ticks | node CPU (% of a core) | SIGINT |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['executor']} | {r['tf_hz']:g} | {100 * r['lost']['images']:.1f} % | {100 * r['lost']['lidar']:.1f} % | "
              f"{100 * r['lost']['tf']:.1f} % | {r['received']['timer_20hz']} | {r['cpu_percent']:.0f} | "
              f"{r['stopped']} |")
    per_message, lookup = tf_callback_cost()
    print(f"\nThe node's own /tf callback ({lookup}): {per_message:.0f} us of CPU per message")
    wait = wait_cost()
    print(f"One wait of a SingleThreadedExecutor, 28 publishers: {wait[True]:.0f} us of CPU with rclpy's default "
          f"QoS-event handlers, {wait[False]:.0f} us without (the node's outputs)")
    if args.json:
        Path(args.json).write_text(json.dumps({"executors": rows, "tf_callback_us": per_message,
                                               "tf_lookup": lookup, "wait_us": {"default_handlers": wait[True],
                                                                                "none": wait[False]}},
                                              indent=2) + "\n")


if __name__ == "__main__":
    main()
