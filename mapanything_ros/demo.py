"""The demo: a synthetic robot run written to a bag, replayed through the pipeline, evaluated.

1. bag.write_synthetic_bag: two cameras (plumb_bob and fisheye), a spinning LiDAR, TF and
   ground truth, into out_dir/input_bag.
2. replay.replay with the node's depth-completion preset (config/depth_completion.yaml: cameras
   + LiDAR, TF poses), the refined camera poses on /tf (tf_output camera_refined) and the output
   bag; the backend is MapAnything when its weights are found (an explicit directory, or the
   Hugging Face repo id in the local cache), otherwise the oracle (the synthetic truth), with the
   reason. The model input long side defaults to 224 pixels: the small preset's images are
   160 x 120, and it keeps the network fast on a CPU.
3. evaluation.evaluate against the bag's ground truth; demo_depth.png is an enlarged preview of
   the last keyframe's depth.
"""

import os
from pathlib import Path

import cv2

from . import replay as replay_mod
from .evaluation import evaluate
from . import settings
from .bag import write_synthetic_bag
from .progress import Progress

PRESET_FILE = "depth_completion.yaml"
CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"


def preset_path(name=PRESET_FILE):
    """A parameter file of config/: in the source tree, else in an installed package's share directory."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    for folder in [CONFIG_DIR] + [Path(p) / "share" / "mapanything_ros" / "config" for p in prefixes]:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{name} not found in {CONFIG_DIR} nor in share/mapanything_ros/config of "
                            "AMENT_PREFIX_PATH")


def choose_backend(weights):
    """('mapanything' or 'oracle', why, where it looked): MapAnything when resolve_checkpoint finds `weights`."""
    from .model import CheckpointError, CheckpointNotFoundError, resolve_checkpoint

    try:
        config, _ = resolve_checkpoint(weights)
    except (CheckpointNotFoundError, CheckpointError) as err:
        return "oracle", "no MapAnything weights found, so the oracle backend (the synthetic truth) ran", str(err)
    return "mapanything", f"MapAnything weights found in {config.parent}", ""


DEMO_MARKER = ".mapanything_demo"


def run(out_dir="out/demo", preset="small", duration_s=10.0, seed=0, weights="facebook/map-anything",
        long_side=224, storage="mcap", progress=True, log=print):
    """Run the demo into out_dir; returns {"backend", "reason", "bag", "summary", "eval", "files"}.

    progress: as replay.replay's. log(str) reports each step.
    """
    out = Path(out_dir)
    replay_mod.fresh_output(out, DEMO_MARKER, "demo")  # a previous demo's outputs: the demo is rerun from scratch
    bag_path = out / "input_bag"
    log(f"[1/3] writing a {duration_s:g} s synthetic run (preset {preset}, seed {seed}) to {bag_path}")
    bar = None if progress is False else Progress("bag", "ticks", enabled=None if progress is True else True)
    bag = write_synthetic_bag(bag_path, preset=preset, seed=seed, duration_s=duration_s, storage=storage,
                              progress=None if bar is None else bar.update)
    if bar is not None:
        bar.close()
    backend, reason, looked = choose_backend(weights)
    params = {**settings.load_params_file(preset_path()), "backend": backend, "weights": str(weights),
              "oracle_preset": preset, "oracle_seed": seed, "long_side": long_side, "tf_output": "camera_refined"}
    log(f"[2/3] replaying with the {backend} backend: {reason}" + (f"\n{looked}" if looked else ""))
    summary = replay_mod.replay(bag_path, params, out / "replay", progress=progress, write_bag=True)
    log("[3/3] evaluating against the ground truth")
    metrics = evaluate(out / "replay", bag_path)
    files = {"map": out / "replay" / "map.ply", "map_picture": out / "replay" / "map.png",
             "summary": out / "replay" / "summary.json", "eval": out / "replay" / "eval.json",
             "output_bag": out / "replay" / "bag", "input_bag": bag.path}
    last = summary["outputs"]["last_preview"]
    if last:
        preview = cv2.imread(str(out / "replay" / last))
        files["depth_picture"] = out / "demo_depth.png"
        scale = max(1, 480 // preview.shape[0])
        cv2.imwrite(str(files["depth_picture"]), cv2.resize(preview, None, fx=scale, fy=scale,
                                                              interpolation=cv2.INTER_NEAREST))
    return {"backend": backend, "reason": reason, "bag": bag, "summary": summary, "eval": metrics, "files": files}
