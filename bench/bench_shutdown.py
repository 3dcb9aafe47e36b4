"""How fast the node stops at SIGINT, and how: idle, mid-inference, and during start-up (issue 19).

The node is started as its console script starts it (ros/run.py: stop signals handled from the
first instant), the random backend on the CPU, two cameras. For each case, `--tries` times:
- idle: the node up (its first /diagnostics) with no input, then SIGINT;
- mid-inference: the synthetic player playing, window_size 32 at long side 1036 (one window
  takes far longer than the stop grace, ros/run.py STOP_GRACE_S), SIGINT once a window's
  inference is under way (a keyframe admitted, no window done yet);
- start-up: SIGINT 1 s after the process started (importing torch, building the node).
Reports the exit codes and the seconds from the signal to the exit (median, p95, max), and
whether any output holds a traceback or an abort.

    tools/dev run python bench/bench_shutdown.py [--tries 10] [--json PATH]
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

NODE = [sys.executable, "-c", "from mapanything_ros.ros.run import node; node()", "--ros-args",
        "-p", "cameras:=[front_optical, left_fisheye_optical]", "-p", "backend:=random", "-p", "device:=cpu",
        "-p", "keyframe_interval:=0.0"]
CASES = {"idle": ["-p", "long_side:=112", "-p", "window_size:=3"],
         "mid-inference": ["-p", "long_side:=1036", "-p", "window_size:=32"],
         "start-up": ["-p", "long_side:=112", "-p", "window_size:=3"]}


def pipeline_values(diags):
    """The node's latest pipeline diagnostic values, or None."""
    for msg in reversed(diags):
        for status in msg.status:
            if status.name.endswith("pipeline"):
                return {v.key: v.value for v in status.values}
    return None


def ready(case, diags):
    values = pipeline_values(diags)
    if values is None:
        return False
    if case == "mid-inference":
        return int(values.get("keyframes", 0)) >= 1 and int(values.get("windows_done", 0)) == 0
    return True


def one(case, executor, diags):
    """(exit code, seconds from SIGINT to exit, output) of one try."""
    diags.clear()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(NODE + CASES[case], stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        try:
            if case == "start-up":
                time.sleep(1.0)
            else:
                deadline = time.monotonic() + 180
                while not ready(case, diags) and proc.poll() is None and time.monotonic() < deadline:
                    executor.spin_once(timeout_sec=0.05)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGINT)
            try:
                code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            took = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        log.seek(0)
        return code, took, log.read()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=10)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray

    rclpy.init()
    probe = rclpy.create_node("shutdown_probe")
    diags = []
    probe.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    executor = rclpy.executors.SingleThreadedExecutor()
    executor.add_node(probe)
    player = subprocess.Popen([sys.executable, "-m", "mapanything_ros.ros.player", "--preset", "small",
                               "--lidar-rate", "0", "--duration", "3600"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=dict(os.environ))
    figures = {}
    try:
        for case in CASES:
            runs = [one(case, executor, diags) for _ in range(args.tries)]
            took = np.array([t for _, t, _ in runs])
            figures[case] = {"tries": len(runs), "exit_codes": sorted({c for c, _, _ in runs}),
                             "seconds": {"median": float(np.median(took)), "p95": float(np.percentile(took, 95)),
                                         "max": float(took.max())},
                             "tracebacks_or_aborts": sum(("Traceback" in o or "terminate called" in o)
                                                         for _, _, o in runs),
                             "abandoned_inference": sum("inference in progress is abandoned" in o
                                                        for _, _, o in runs)}
    finally:
        player.send_signal(signal.SIGINT)
        player.wait(timeout=30)
        probe.destroy_node()
        rclpy.shutdown()
    print(f"| case | tries | exit codes | SIGINT -> exit, median / p95 / max (s) | tracebacks or aborts | "
          "inference abandoned |\n|---|---|---|---|---|---|")
    for case, f in figures.items():
        s = f["seconds"]
        print(f"| {case} | {f['tries']} | {f['exit_codes']} | {s['median']:.2f} / {s['p95']:.2f} / {s['max']:.2f} | "
              f"{f['tracebacks_or_aborts']} | {f['abandoned_inference']} |")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=2)


if __name__ == "__main__":
    main()
