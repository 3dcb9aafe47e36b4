"""Can the node correct odometry drift without loop closure? (issue 20: map -> odom)

With TF poses given to the network, each window is anchored at its reference view's TF pose, so
the refined pose of that view is the TF pose by construction: `map -> odom` stays the identity,
whatever the odometry's drift. The candidate source of a correction measured here is the one the
issue names: the newest keyframe's pose withheld from the network's inputs and estimated from the
window, chained keyframe to keyframe (each keyframe placed on the previous one's estimate, never
on odometry), which is what a correction that follows odometry's accumulated drift needs.

The synthetic room's trajectory (front camera), keyframes every --step seconds for --seconds;
odometry drifts as wheel odometry does: each step's translation scaled by (1 + scale error) and
turned by a yaw bias per metre travelled. The network is the error-model backend (backends/
emulated.py, profile 1): two-view windows, the previous keyframe with its pose (the reference),
the newest without its pose; with LiDAR depth (the depth-completion preset: the view's errors of
the "depth" regime) and without (the mapping preset: "intrinsics"). Reported: the newest camera's
position and heading error after the run, for odometry alone (what `map -> odom` = identity gives)
and for the chained estimate, over seeds.

    tools/dev run python bench/bench_drift.py [--seconds 60] [--step 0.5] [--seeds 3] [--json PATH]
"""

import argparse
import json
from dataclasses import replace

import numpy as np

SEC = 1_000_000_000
START_NS = SEC
CAMERA = "front_optical"
ODOMETRY = {"good (0.2 deg/m, 0.5 %)": (np.deg2rad(0.2), 0.005), "poor (2 deg/m, 2 %)": (np.deg2rad(2.0), 0.02)}


def yaw_about_z(angle):
    c, s = np.cos(angle), np.sin(angle)
    out = np.eye(4)
    out[:2, :2] = [[c, -s], [s, c]]
    return out


def odometry(bodies, yaw_per_m, scale_error):
    """world_from_body poses (K, 4, 4) of odometry that integrates the true steps with a scale
    error and a yaw bias per metre (turned about the body's z, up)."""
    out = [bodies[0]]
    for a, b in zip(bodies, bodies[1:]):
        step = np.linalg.inv(a) @ b
        metres = np.linalg.norm(step[:3, 3])
        step[:3, 3] *= 1 + scale_error
        out.append(out[-1] @ yaw_about_z(yaw_per_m * metres) @ step)
    return np.stack(out)


def pose_error(estimate, truth):
    """(position error m, heading error deg) of a camera pose against the truth."""
    rel = np.linalg.inv(truth) @ estimate
    angle = np.degrees(np.arccos(np.clip((np.trace(rel[:3, :3]) - 1) / 2, -1, 1)))
    return float(np.linalg.norm(estimate[:3, 3] - truth[:3, 3])), float(angle)


def run(seed, seconds, step_s, with_depth):
    """{odometry name: {"odometry": (m, deg), "chained": (m, deg)}, "path_m": ...} for one seed."""
    from mapanything_ros.backends import EmulatedBackend
    from mapanything_ros.synthetic.presets import make_scene
    from mapanything_ros.window import BatchConfig, Frame, assemble

    scene = make_scene("default", seed)
    rig = scene.rig_camera(CAMERA)
    stamps = START_NS + np.round(np.arange(0, seconds + 1e-9, step_s) * SEC).astype(np.int64)
    bodies = np.stack([scene.trajectory.world_from_body(int(t)) for t in stamps])
    truth = bodies @ rig.body_from_camera
    path = float(np.sum(np.linalg.norm(np.diff(truth[:, :3, 3], axis=0), axis=1)))
    backend = EmulatedBackend(scene, profile=1.0, seed=seed)
    config = BatchConfig()
    frames = []
    for t in stamps:
        view = scene.render(CAMERA, int(t))
        sparse = np.zeros_like(view.depth_z)
        sparse[::8, ::8] = view.depth_z[::8, ::8]  # LiDAR-like: one pixel in 64
        frames.append(Frame(view.image, view.camera, int(t), CAMERA, None, sparse if with_depth else None))
    # The network's estimate of each step, chained: keyframe k placed on keyframe k-1's estimate.
    steps, prepared = [], {}
    for k in range(1, len(frames)):
        pair = [replace(frames[k - 1], world_from_camera=truth[k - 1]), frames[k]]  # the newest: no pose
        batch = assemble(pair, config, prepared)
        steps.append(backend.predict(batch).ref_from_camera[1])
        prepared = {key: v for key, v in prepared.items() if key[0] == frames[k].key}
    out = {"path_m": path}
    for name, (yaw_per_m, scale_error) in ODOMETRY.items():
        odom = odometry(bodies, yaw_per_m, scale_error) @ rig.body_from_camera
        chained = [odom[0]]
        for rel in steps:
            chained.append(chained[-1] @ rel)
        out[name] = {"odometry": pose_error(odom[-1], truth[-1]), "chained": pose_error(chained[-1], truth[-1])}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--step", type=float, default=0.5, help="keyframe spacing (s)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    rows = {}
    for with_depth in (True, False):
        label = "LiDAR depth (depth-completion preset)" if with_depth else "no depth (mapping preset)"
        rows[label] = [run(seed, args.seconds, args.step, with_depth) for seed in range(args.seeds)]
    print(f"Newest camera pose error after {args.seconds:g} s (keyframes every {args.step:g} s), error-model "
          f"backend profile 1, {args.seeds} seeds: mean position error (m, % of path) / heading error (deg)\n")
    print("| network's inputs | odometry | path (m) | odometry alone (map -> odom = identity) | "
          "newest pose withheld, chained |\n|---|---|---|---|---|")
    for label, runs in rows.items():
        path = np.mean([r["path_m"] for r in runs])
        for name in ODOMETRY:
            cells = []
            for kind in ("odometry", "chained"):
                m = np.mean([r[name][kind][0] for r in runs])
                deg = np.mean([r[name][kind][1] for r in runs])
                cells.append(f"{m:.2f} m ({100 * m / path:.1f} %) / {deg:.1f} deg")
            print(f"| {label} | {name} | {path:.1f} | {cells[0]} | {cells[1]} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seconds": args.seconds, "step_s": args.step, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
