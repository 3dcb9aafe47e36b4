"""Sliding-window MapAnything on the CPU: image-encoder feature cache versus full re-encoding.

A window of N views slides over a stream of frames: each step adds one new frame and drops the
oldest. Mode "full" re-encodes all N images every step (cache off); mode "cached" passes a
`frame_id` per view and a cache of N images, so a step encodes only the new frame. Step 0
fills the window (N new images in both modes) and `--warmup` slides follow, untimed.
Every run is a fresh subprocess with `torch.set_num_threads(--threads)` (default 1: on this
shared 2-core machine, 2 threads made step times vary up to 7x whenever other work ran).
  - Time, one process per N: each timed slide (at least `--steps` and `--min-time` seconds)
    runs both modes on the same window, in alternating order, so load from other work hits
    both alike. Reported: median step wall
    time, median of the per-step ratios cached/full, images encoded per step, time in the
    image encoder and in `encode_images` outside it (cache look-up, fingerprints, stacking),
    and the max abs difference of all outputs between the modes over the timed slides.
  - Memory, one process per (N, mode): before `--mem-steps` slides the glibc heap is trimmed
    and the peak RSS reset (/proc/self/clear_refs, Linux >= 4.0), so `ru_maxrss` is the peak
    of those slides; the increase is that peak minus the RSS just before them. These runs set
    MALLOC_MMAP_THRESHOLD_=65536: blocks from 64 KiB up are mapped and unmapped on free, so
    RSS follows live tensor memory. (With glibc's adaptive threshold, freed blocks stay in the
    heap: the increase was about 2x larger and varied by +-15% from run to run.)
Random weights, timing only. Default model: `small_config` (below) derived from the v1.1
release config; `--config` takes any config.json as is.

    python bench/bench_model_cache.py [--windows 2 4 8 16] [--size 168 224] [--steps 5]
        [--min-time 10] [--warmup 1] [--mem-steps 2] [--threads 1] [--config PATH] [--json PATH]
"""

import argparse
import copy
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RELEASE_CONFIG = ROOT / "test" / "data" / "map-anything-v1.1-config.json"
MIB = 1024**2
MODES = ("full", "cached")

from memory import peak_rss_bytes, rss_bytes  # noqa: E402  (bench/memory.py, beside this script)


def small_config(release: dict) -> dict:
    """The v1.1 release config shrunk to ViT-S width, keeping its cost split.

    The release runs 24 DINOv2-giant blocks (dim 1536) per image, then a 16-block
    alternating-attention transformer (dim 1536, SwiGLU) over the same tokens: 24 of the 40
    blocks are in the image encoder. Here both shrink by the same factors, width 1536 -> 384
    and depth / 2:
      - encoder: DINOv2 "small" (dim 384, 6 heads, Mlp FFN), all 12 blocks kept;
      - transformer: dim 384, 6 heads, depth 8 (still SwiGLU), intermediate outputs after
        blocks 3 and 5 (release 7 and 11 of 16, halved and floored);
      - DPT: feature dim 64 and layer dims (48, 96, 192, 384) (release 256 and
        (96, 192, 384, 768)), as the ViT-S DPT of Depth-Anything-V2 (`model_configs`);
      - geometric input encoders: hidden widths / 4 (unused by an image-only window).
    The pose head's width is tied to the patch size (4 * 14^2) and stays as in the release.
    """
    cfg = copy.deepcopy(release)
    dim = 384
    cfg["encoder_config"].update(size="small", keep_first_n_layers=12,
                                 name="dinov2_small_12_layers")
    geo = cfg["geometric_input_config"]
    for key, dims in (("ray_dirs_encoder_config", [147, 192, 256]),
                      ("depth_encoder_config", [147, 192, 256]),
                      ("scale_encoder_config", [32, 64, 128]),
                      ("cam_rot_encoder_config", [32, 64, 128]),
                      ("cam_trans_encoder_config", [32, 64, 128])):
        geo[key].update(enc_embed_dim=dim, intermediate_dims=dims)
    cfg["info_sharing_config"]["module_args"].update(
        dim=dim, input_embed_dim=dim, num_heads=6, depth=8, indices=[3, 5],
        name="aat_8_layers_vits_dim_ifr", size="8_layers")
    head = cfg["pred_head_config"]
    head["feature_head"].update(feature_dim=64, layer_dims=[48, 96, 192, 384],
                                input_feature_dims=[dim] * 4)
    head["regressor_head"]["input_feature_dim"] = 64
    head["pose_head"]["input_feature_dim"] = dim
    head["scale_head"]["input_feature_dim"] = dim
    return cfg




def reset_peak_rss() -> None:
    """Return freed heap to the OS, then restart the peak-RSS count from the current RSS."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


class Stopwatch:
    """Accumulated wall time of calls to a callable."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


class Window:
    """Model with a cache of N images, a seeded frame stream and the views of each slide."""

    def __init__(self, args: argparse.Namespace, window: int):
        import torch

        from mapanything_ros.model.checkpoint import read_config
        from mapanything_ros.model.network import MapAnything

        torch.set_num_threads(args.threads)
        config = read_config(args.config) if args.config else small_config(read_config(RELEASE_CONFIG))
        torch.manual_seed(0)
        self.model = MapAnything(config, feature_cache_size=window).eval()
        self.gen = torch.Generator().manual_seed(1)
        self.size = args.size
        self.frames: list = []
        self.window = window
        self.encoder = self.model.encoder.forward = Stopwatch(self.model.encoder.forward)
        self.encode = self.model.encode_images = Stopwatch(self.model.encode_images)

    def step(self, step: int, mode: str) -> dict:
        """Run slide `step` (0 = fill) in `mode`; outputs, wall time and encoder figures."""
        import torch

        ids = range(step, step + self.window)
        while len(self.frames) < ids[-1] + 1:
            self.frames.append(torch.randn(1, 3, *self.size, generator=self.gen))
        views = [{"img": self.frames[i], **({"frame_id": i} if mode == "cached" else {})}
                 for i in ids]
        self.encoder.seconds = self.encode.seconds = 0.0
        encoded = self.model.images_encoded
        start = time.perf_counter()
        out = self.model(views)
        return {"out": out, "step_s": time.perf_counter() - start,
                "encoder_s": self.encoder.seconds,
                "overhead_s": self.encode.seconds - self.encoder.seconds,
                "images": self.model.images_encoded - encoded}


def time_child(args: argparse.Namespace, window: int) -> dict:
    """Both modes on the same slides, alternating which goes first; at least `--steps` timed
    slides and at least `--min-time` seconds of them."""
    import torch

    runner = Window(args, window)
    rows = {mode: [] for mode in MODES}
    diff, timed_s, step = 0.0, 0.0, 0
    with torch.inference_mode():
        while len(rows["full"]) < args.steps or timed_s < args.min_time:
            order = MODES if step % 2 == 0 else MODES[::-1]
            res = {mode: runner.step(step, mode) for mode in order}
            step += 1
            if step <= 1 + args.warmup:
                continue
            timed_s += sum(r["step_s"] for r in res.values())
            for mode in MODES:
                rows[mode].append({k: v for k, v in res[mode].items() if k != "out"})
            diff = max([diff] + [float((a[k] - b[k]).abs().max())
                                 for a, b in zip(res["full"]["out"], res["cached"]["out"])
                                 for k in a if a[k].is_floating_point()])
    result = {"window": window, "threads": torch.get_num_threads(), "max_abs_diff": diff,
              "slides": len(rows["full"]),
              "ratio_step_s": statistics.median(
                  c["step_s"] / f["step_s"] for f, c in zip(rows["full"], rows["cached"]))}
    for mode in MODES:
        result[mode] = {key: statistics.median(r[key] for r in rows[mode])
                        for key in ("step_s", "encoder_s", "overhead_s", "images")}
        result[mode]["step_s_all"] = [r["step_s"] for r in rows[mode]]
    return result


def memory_child(args: argparse.Namespace, window: int, mode: str) -> dict:
    """One mode: peak RSS of `--mem-steps` slides after the fill and warm-up."""
    import torch

    runner = Window(args, window)
    rss_start = rss_bytes()
    with torch.inference_mode():
        for step in range(1 + args.warmup + args.mem_steps):
            if step == 1 + args.warmup:
                reset_peak_rss()
                rss_before = rss_bytes()
            runner.step(step, mode)
    return {"window": window, "mode": mode, "rss_start": rss_start, "rss_before": rss_before,
            "peak_rss": peak_rss_bytes()}


def run_child(args: argparse.Namespace, role: str, window: int) -> dict:
    cmd = [sys.executable, __file__, "--child", role, str(window),
           "--size", *map(str, args.size), "--steps", str(args.steps),
           "--min-time", str(args.min_time), "--warmup", str(args.warmup),
           "--mem-steps", str(args.mem_steps),
           "--threads", str(args.threads)]
    if args.config:
        cmd += ["--config", str(args.config)]
    env = os.environ if role == "time" else {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--size", type=int, nargs=2, default=(168, 224), metavar=("H", "W"))
    parser.add_argument("--steps", type=int, default=5, help="min timed slides per window size")
    parser.add_argument("--min-time", type=float, default=10.0,
                        help="min seconds of timed slides (both modes) per window size")
    parser.add_argument("--warmup", type=int, default=1, help="untimed slides after the fill")
    parser.add_argument("--mem-steps", type=int, default=2, help="slides per memory run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--config", type=Path, default=None, help="default: small_config")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", nargs=2, metavar=("ROLE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        role, window = args.child[0], int(args.child[1])
        result = time_child(args, window) if role == "time" else memory_child(args, window, role)
        print(json.dumps(result))
        return

    import torch

    from mapanything_ros.model.checkpoint import read_config
    from mapanything_ros.model.network import MapAnything

    config = read_config(args.config) if args.config else small_config(read_config(RELEASE_CONFIG))
    with torch.device("meta"):
        model = MapAnything(config)
    params = {name: sum(p.numel() for p in getattr(model, name).parameters())
              for name in ("encoder", "info_sharing", "dense_head", "pose_head")}
    total = sum(p.numel() for p in model.parameters())

    start = time.perf_counter()
    rows = [{"time": run_child(args, "time", window),
             "memory": {mode: run_child(args, mode, window) for mode in MODES}}
            for window in args.windows]
    wall = time.perf_counter() - start

    name = args.config.name if args.config else "small_config(v1.1)"
    print(f"Model `{name}`: {total / 1e6:.1f} M parameters (encoder {params['encoder'] / 1e6:.1f} M, "
          f"transformer {params['info_sharing'] / 1e6:.1f} M, DPT {params['dense_head'] / 1e6:.1f} M, "
          f"pose head {params['pose_head'] / 1e6:.1f} M), random weights; images "
          f"{args.size[0]}x{args.size[1]} (H x W); CPU, {rows[0]['time']['threads']} thread(s); "
          f"per N, medians of >= {args.steps} slides and >= {args.min_time:g} s after the fill "
          f"and {args.warmup} warm-up slide(s); total {wall:.0f} s\n")
    print("| N | slides | full ms/step | cached ms/step | time cached/full "
          "| images/step full, cached | encoder ms/step full, cached | cache overhead ms/step "
          "| max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        t = row["time"]
        f, c = t["full"], t["cached"]
        print(f"| {t['window']} | {t['slides']} | {f['step_s'] * 1e3:.0f} | {c['step_s'] * 1e3:.0f} "
              f"| {t['ratio_step_s']:.2f} | {f['images']:g}, {c['images']:g} "
              f"| {f['encoder_s'] * 1e3:.0f}, {c['encoder_s'] * 1e3:.0f} "
              f"| {c['overhead_s'] * 1e3:.1f} | {t['max_abs_diff']:.1e} |")
    print(f"\nPeak RSS (`ru_maxrss`) of {args.mem_steps} slides, one process per N and mode; "
          "increase = peak - RSS before them.\n")
    print("| N | peak MiB full | peak MiB cached | peak cached/full "
          "| increase MiB full | increase MiB cached | increase cached/full |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        f, c = row["memory"]["full"], row["memory"]["cached"]
        inc_f, inc_c = f["peak_rss"] - f["rss_before"], c["peak_rss"] - c["rss_before"]
        print(f"| {f['window']} | {f['peak_rss'] / MIB:.0f} | {c['peak_rss'] / MIB:.0f} "
              f"| {c['peak_rss'] / f['peak_rss']:.2f} | {inc_f / MIB:.0f} | {inc_c / MIB:.0f} "
              f"| {inc_c / inc_f:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({
            "config": name, "parameters": {"total": total, **params}, "size": args.size,
            "threads": args.threads, "steps": args.steps, "min_time": args.min_time,
            "warmup": args.warmup,
            "mem_steps": args.mem_steps, "wall_s": wall, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
