"""Accuracy against a network that errs: synthetic runs replayed with the emulated backend
(backends.emulated), the network's raw prediction and what the package publishes both evaluated
against the ground truth.

For each seed one synthetic run is written (bag.write_synthetic_bag: two cameras, the front
plumb_bob and the fisheye, a LiDAR, TF and ground truth); each setting (SETTINGS: the node's
presets, image-only, and the depth-completion ablation) replays it (replay.replay, raw_depth=True)
with an EmulatedBackend of the same scene at an error `profile` (0 = the oracle's exact
prediction), and evaluation.evaluate compares both depths, the refined poses and the map with the
truth. Used by bench/bench_accuracy.py and `mapanything-ros accuracy`; the test suite runs a
small version (test/test_accuracy.py).
"""

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from . import replay as replay_mod
from .evaluation import distance_metrics, evaluate, ghost_metrics, occupancy_metrics
from .mapping.distance import distance_slice
from .pipeline import new_map
from .session.config import pipeline_config
from . import settings
from .backends import EmulatedBackend
from .bag import write_synthetic_bag
from .demo import preset_path
from .layout import SEC, START_NS
from .synthetic.presets import make_scene

PRESET = {name: f"{name}.yaml" for name in ("mapping", "depth_completion", "image_only")}
# name -> (parameter file, parameters over it)
SETTINGS = {
    "mapping": ("mapping", {}),
    "depth_completion": ("depth_completion", {}),
    "image_only": ("image_only", {}),
}
# The depth-completion preset with its steps turned on one by one (its first row: the preset before them).
ABLATION = {
    "dc: keep measured only (before)": {"align_to_measured_depth": False, "depth_correction": "none",
                                        "keep_measured_depth": True, "edge_noise_sigmas": 0.0},
    "dc: + noise-aware edge cut": {"align_to_measured_depth": False, "depth_correction": "none",
                                   "keep_measured_depth": True},
    "dc: window scale only": {"align_to_measured_depth": True, "depth_correction": "none",
                              "keep_measured_depth": False},
    "dc: per-view scale": {"depth_correction": "scale", "keep_measured_depth": False},
    "dc: + residual field": {"depth_correction": "field", "keep_measured_depth": False},
    "dc: + keep agreeing measured (preset)": {},
    "dc: preset + window scale": {"align_to_measured_depth": True},
}
DEPTH_KEYS = ("abs_rel", "rmse", "inlier_1_03", "outlier_10", "coverage")
SCENE, LONG_SIDE = "small", 224  # the rig (synthetic.presets) and the model input long side
MOVING = "small_moving"  # the same rig with a box that walks away and back (synthetic.mover)
GROUND = "small_ground"  # the same rig on a ground robot, cameras 0.3 m above the floor
GHOST_THRESHOLD = 0.05  # metres: a map point inside the box's old place and this far from any surface is a ghost


def run_setting(bag, seed, params, profile, out_dir, bias=0.0, scene=SCENE, long_side=LONG_SIDE, with_map=True):
    """replay + evaluate one setting on a synthetic bag; returns (summary, metrics)."""
    values = {**params, "backend": "emulated", "oracle_preset": scene, "oracle_seed": seed, "long_side": long_side,
              "error_profile": profile, "error_seed": seed, "tf_output": "camera_refined"}
    backend = EmulatedBackend(make_scene(scene, seed), profile, seed, bias=bias)
    out = Path(out_dir)
    shutil.rmtree(out, ignore_errors=True)
    summary = replay_mod.replay(bag, values, out, backend=backend, progress=False, raw_depth=True)
    metrics = evaluate(out, bag, with_map=with_map)
    metrics["occupancy"] = occupancy(out, {**settings.defaults(), **values}, backend.scene) if with_map else None
    return summary, metrics


def saved_map(out_dir, values):
    """The replay's saved map (map.npz) as a TsdfMap made from these parameter values, or None
    without a world-frame map."""
    path = Path(out_dir) / "map.npz"
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        state = {k: data[k] for k in data.files}
    if str(state["pose_frame"]) != "world":
        return None
    volume = new_map(pipeline_config(values))
    volume.load_state(state)
    return volume


def occupancy_grid(volume, values):
    """The occupancy grid the node's ~/occupancy makes of a map with these parameter values."""
    return volume.occupancy(values["occupancy_min_height"], values["occupancy_max_height"],
                            values["occupancy_resolution"] or None)


def occupancy(out_dir, values, scene):
    """evaluation.occupancy_metrics of the occupancy grid of the replay's saved map against the
    scene's room, with evaluation.distance_metrics of its distance field (~/esdf's) as esdf_mae,
    esdf_over, esdf_under; None without a world-frame map."""
    volume = saved_map(out_dir, values)
    if volume is None:
        return None
    grid = occupancy_grid(volume, values)
    low, high = values["occupancy_min_height"], values["occupancy_max_height"]

    def solid(centres, margin):
        return scene.room.solid_near(centres, low, high, margin)

    reach = values["esdf_max_distance"]
    esdf = distance_metrics(distance_slice(grid, reach), solid, reach)
    return {**occupancy_metrics(grid, solid), **{f"esdf_{k}": v for k, v in esdf.items()}}


def ghosts(out_dir, values, scene, start_ns, end_ns):
    """evaluation.ghost_metrics of the replay's saved map: what it kept of the places the scene's
    moving box stood at between the stamps, judged against the scene at end_ns. Not counted: map
    points inside the box as it stands then, and cells within a cell of what is solid then (the
    occupancy rule calls the cell in front of a surface occupied on purpose: occupied_wrong of
    occupancy_metrics counts those)."""
    volume = saved_map(out_dir, values)
    if volume is None:
        raise ValueError(f"{out_dir} has no world-frame map to look for ghosts in")
    grid = occupancy_grid(volume, values)
    now = scene.room_at(end_ns)
    low, high = values["occupancy_min_height"], values["occupancy_max_height"]
    # Points inside the box where it stands now are its inside (free space from before it came,
    # behind its new faces), not what it left.
    points = volume.surface()[0]
    lo, hi = scene.mover.bounds(end_ns)
    points = points[~np.all((points > lo) & (points < hi), axis=1)]
    return ghost_metrics(grid, points, scene.mover.footprints(start_ns, end_ns),
                         lambda centres, margin: now.solid_near(centres, low, high, margin),
                         now.surface_distance, GHOST_THRESHOLD, 1.5 * grid.resolution)


def row(name, seed, profile, bias, summary, metrics):
    """One flat result row (JSON-friendly)."""
    out = {"setting": name, "seed": seed, "profile": profile, "bias": bias, "keyframes": summary["keyframes"],
           "windows": summary["windows"]}
    for part in ("raw_depth", "depth"):
        for k in DEPTH_KEYS:
            out[f"{part}.{k}"] = (metrics[part] or {}).get(k, float("nan"))
    ate = metrics["ate"] or {}
    out["ate_rmse"] = ate.get("rmse", float("nan"))
    out["ate_per_path"] = ate.get("rmse", float("nan")) / ate["length"] if ate.get("length") else float("nan")
    out["path_m"] = ate.get("length", float("nan"))
    m = metrics["map"] or {}
    for k in ("accuracy_mean", "precision", "far_off", "completeness"):
        out[f"map.{k}"] = m.get(k, float("nan"))
    o = metrics.get("occupancy") or {}
    for k in ("iou", "free_wrong", "occupied_wrong", "ties", "esdf_mae", "esdf_over"):
        out[f"occupancy.{k}"] = o.get(k, float("nan"))
    return out


def synthetic_bag(path, scene, seed, duration_s, log):
    """The synthetic run of rig `scene` (synthetic.presets) at `path`, written unless there already."""
    if not (Path(path) / "metadata.yaml").is_file():
        shutil.rmtree(path, ignore_errors=True)
        log(f"writing a {duration_s:g} s synthetic run of the {scene!r} rig (seed {seed}) to {path}")
        write_synthetic_bag(path, preset=scene, seed=seed, duration_s=duration_s)
    return Path(path)


def run(out_dir, seeds=(0,), duration_s=60.0, profiles=(1.0,), settings_names=tuple(SETTINGS), ablation=False,
        biases=(0.0,), scene=SCENE, long_side=LONG_SIDE, with_map=True, log=print):
    """Every (seed, profile, bias, setting) row; bags and replays under out_dir. Another rig than
    SCENE names its bags and rows after it ("mapping (small_ground)")."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in seeds:
        prefix, suffix = ("run", "") if scene == SCENE else (scene, f" ({scene})")
        bag = synthetic_bag(out / f"{prefix}_seed{seed}_{duration_s:g}s", scene, seed, duration_s, log)
        jobs = [(name, *SETTINGS[name]) for name in settings_names]
        if ablation:
            jobs += [(name, "depth_completion", extra) for name, extra in ABLATION.items()]
        for profile in profiles:
            for bias in biases:
                for name, preset, extra in jobs:
                    clock = time.perf_counter()
                    params = {**settings.load_params_file(preset_path(PRESET[preset])), **extra}
                    summary, metrics = run_setting(bag, seed, params, profile, out / "replay", bias, scene,
                                                   long_side, with_map)
                    rows.append(row(name + suffix, seed, profile, bias, summary, metrics))
                    log(f"  {name}, seed {seed}, profile {profile:g}, bias {bias:g}: "
                        f"{time.perf_counter() - clock:.1f} s")
    return rows


def run_moving(out_dir, seeds=(0,), duration_s=60.0, profiles=(0.0, 1.0), settings_names=("mapping", "depth_completion"),
               long_side=LONG_SIDE, log=print):
    """Rows of the moving-box runs (the MOVING rig): each setting replayed as in run(), plus what
    the map kept, at the run's end, of the places the box stood at (ghost_cells, cleared_cells,
    old_cells, ghost_points: accuracy.ghosts)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in seeds:
        bag = synthetic_bag(out / f"moving_seed{seed}_{duration_s:g}s", MOVING, seed, duration_s, log)
        scene = make_scene(MOVING, seed)
        end_ns = START_NS + int(round(duration_s * SEC)) - 1
        for profile in profiles:
            for name in settings_names:
                clock = time.perf_counter()
                preset, extra = SETTINGS[name]
                params = {**settings.load_params_file(preset_path(PRESET[preset])), **extra}
                summary, metrics = run_setting(bag, seed, params, profile, out / "replay", scene=MOVING,
                                               long_side=long_side)
                r = row(f"{name}, moving box", seed, profile, 0.0, summary, metrics)
                values = {**settings.defaults(), **params}
                r.update(ghosts(out / "replay", values, scene, START_NS, end_ns))
                rows.append(r)
                log(f"  {name} with a moving box, seed {seed}, profile {profile:g}: "
                    f"{r['ghost_cells']} ghost cells of {r['old_cells']}, {r['ghost_points']} ghost points, "
                    f"{time.perf_counter() - clock:.1f} s")
    return rows


def summarise(rows):
    """Rows averaged over seeds: one per (setting, profile, bias), in first-seen order."""
    groups = {}
    for r in rows:
        groups.setdefault((r["setting"], r["profile"], r["bias"]), []).append(r)
    out = []
    for (name, profile, bias), group in groups.items():
        mean = {"setting": name, "profile": profile, "bias": bias, "seeds": len(group)}
        for k, v in group[0].items():
            if k not in mean and k != "seed" and isinstance(v, (int, float)):
                mean[k] = float(np.nanmean([g[k] for g in group])) if any(np.isfinite(g[k]) for g in group) \
                    else float("nan")
        out.append(mean)
    return out


def _f(value, fmt):
    return "–" if value is None or not np.isfinite(value) else format(value, fmt)


def markdown(summary):
    """The summary as a markdown table: raw prediction vs published, poses and map."""
    head = ("| setting | profile | bias | raw AbsRel | published AbsRel | published / raw | raw τ@1.03 % | "
            "published τ@1.03 % | published RMSE (mm) | > 10 % off | coverage | ATE (mm) | ATE / path | "
            "map precision | map > 10 cm off | map completeness | occupancy IoU | solid cells called free | "
            "ESDF error (mm) | ESDF cells over by > a cell |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for s in summary:
        ratio = s["depth.abs_rel"] / s["raw_depth.abs_rel"] if s["raw_depth.abs_rel"] > 0 else float("nan")
        lines.append(
            f"| {s['setting']} | {s['profile']:g} | {s['bias']:g} | {_f(s['raw_depth.abs_rel'], '.4f')} | "
            f"{_f(s['depth.abs_rel'], '.4f')} | {_f(ratio, '.2f')} | {_f(s['raw_depth.inlier_1_03'], '.3f')} | "
            f"{_f(s['depth.inlier_1_03'], '.3f')} | {_f(s['depth.rmse'] * 1e3, '.1f')} | "
            f"{_f(s['depth.outlier_10'], '.4f')} | {_f(s['depth.coverage'], '.3f')} | "
            f"{_f(s['ate_rmse'] * 1e3, '.1f')} | {_f(s['ate_per_path'] * 100, '.2f')} % | "
            f"{_f(s['map.precision'], '.3f')} | {_f(s['map.far_off'], '.3f')} | {_f(s['map.completeness'], '.3f')} | "
            f"{_f(s['occupancy.iou'], '.3f')} | {_f(s['occupancy.free_wrong'], '.4f')} | "
            f"{_f(s['occupancy.esdf_mae'] * 1e3, '.1f')} | {_f(s['occupancy.esdf_over'], '.4f')} |")
    return "\n".join(lines)


def moving_markdown(summary):
    """The moving-box rows of a summary as a markdown table."""
    head = ("| setting | profile | map precision | map completeness | occupancy IoU | ghost cells | "
            "cleared cells of the old place | ghost points |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for s in summary:
        if "ghost_cells" in s:
            lines.append(f"| {s['setting']} | {s['profile']:g} | {_f(s['map.precision'], '.3f')} | "
                         f"{_f(s['map.completeness'], '.3f')} | {_f(s['occupancy.iou'], '.3f')} | "
                         f"{s['ghost_cells']:g} | {s['cleared_cells']:g} of {s['old_cells']:g} | {s['ghost_points']:g} |")
    return "\n".join(lines)


def write(rows, path):
    """rows and their summary as JSON at path; returns the summary."""
    summary = summarise(rows)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1, default=float) + "\n")
    return summary


def parser(prog=None):
    """The command line of bench/bench_accuracy.py and `mapanything-ros accuracy`."""
    import argparse

    p = argparse.ArgumentParser(prog=prog, description="depth, pose and map accuracy under the emulated "
                                "backend's error model: the network's raw prediction vs what is published")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of each synthetic run (default: %(default)s)")
    p.add_argument("--seeds", default="0,1,2", help="scene and error seeds, comma-separated (default: %(default)s)")
    p.add_argument("--profiles", default="0,0.5,1,2",
                   help="error profiles of the settings table, comma-separated (default: %(default)s)")
    p.add_argument("--no-map", action="store_true", help="skip the map figures (the slowest part)")
    p.add_argument("--out", default="out/bench/accuracy", help="bags and replays (default: %(default)s)")
    p.add_argument("--json", help="write rows and summary to this path (default: OUT/accuracy.json)")
    return p


def main(argv=None, prog=None):
    """Run the settings table at every profile, then the ablation and the bias at profile 1; print tables."""
    args = parser(prog).parse_args(argv)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    profiles = tuple(float(p) for p in args.profiles.split(","))
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    rows = []
    for profile in profiles:
        rows += run(args.out, seeds, args.duration, (profile,), with_map=not args.no_map and profile == 1.0, log=log)
    rows += run(args.out, seeds, args.duration, (1.0,), settings_names=(), ablation=True, with_map=False, log=log)
    rows += run(args.out, seeds, args.duration, (0.0, 1.0), settings_names=("depth_completion",), biases=(0.1,),
                with_map=False, log=log)
    if not args.no_map:
        rows += run_moving(args.out, seeds, args.duration, log=log)
        rows += run(args.out, seeds, args.duration, (0.0, 1.0), settings_names=("mapping", "depth_completion"),
                    scene=GROUND, log=log)
    summary = write(rows, args.json or Path(args.out) / "accuracy.json")
    print(f"{args.duration:g} s runs, seeds {list(seeds)}, rig {SCENE!r} (synthetic.presets), long side {LONG_SIDE}\n")
    print(markdown([s for s in summary if "ghost_cells" not in s]))
    if not args.no_map:
        print(f"\nWith a moving box (rig {MOVING!r}): what the map kept of its old places at the end\n")
        print(moving_markdown(summary))
    return 0
