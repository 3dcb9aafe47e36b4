"""Sliding-window forward time with and without the image-encoder feature cache.

Random weights (timing only). Default: the tiny fixture config at 518x392; `--config` takes
any upstream config.json (e.g. test/data/map-anything-v1.1-config.json on a GPU).
Usage: python bench/model_feature_cache.py [--config PATH] [--window 4] [--steps 6]
       [--size 392 518] [--device cpu] [--threads N] [--json PATH]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mapanything_ros.model.network import MapAnything  # noqa: E402

TINY_CONFIG = Path(__file__).resolve().parents[2] / "shared/fixtures/mapanything_tiny/config.json"


def run(model: MapAnything, frames: list[torch.Tensor], window: int, cached: bool) -> dict:
    model.clear_feature_cache()
    model.images_encoded = model.encoder_calls = 0
    times = []
    for step in range(len(frames) - window + 1):
        views = [{"img": frames[i], **({"frame_id": i} if cached else {})}
                 for i in range(step, step + window)]
        start = time.perf_counter()
        with torch.inference_mode():
            model(views)
        if frames[0].device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    steady = sorted(times[1:])[len(times[1:]) // 2] if len(times) > 1 else times[0]
    return {"first_step_s": times[0], "median_later_step_s": steady,
            "images_encoded": model.images_encoded, "steps": len(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=TINY_CONFIG)
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--size", type=int, nargs=2, default=(392, 518), metavar=("H", "W"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = MapAnything(json.loads(args.config.read_text()), feature_cache_size=2 * args.window)
    model = model.to(args.device).eval()
    frames = [torch.randn(1, 3, *args.size, device=args.device)
              for _ in range(args.window + args.steps - 1)]
    run(model, frames[:args.window], args.window, cached=False)  # warm-up
    plain = run(model, frames, args.window, cached=False)
    cached = run(model, frames, args.window, cached=True)
    ratio = plain["median_later_step_s"] / cached["median_later_step_s"]
    print(f"config `{args.config.name}`, window {args.window}, {plain['steps']} steps, "
          f"{args.size[0]}x{args.size[1]}, {args.device}, {torch.get_num_threads()} threads\n")
    print("| mode | first step ms | median later step ms | images encoded |")
    print("|---|---|---|---|")
    for name, r in (("no cache", plain), ("feature cache", cached)):
        print(f"| {name} | {r['first_step_s'] * 1e3:.1f} | {r['median_later_step_s'] * 1e3:.1f} "
              f"| {r['images_encoded']} |")
    print(f"\nspeed-up per later step: {ratio:.2f}x; images encoded ratio "
          f"{plain['images_encoded'] / cached['images_encoded']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"no_cache": plain, "feature_cache": cached,
                                         "speedup": ratio, "config": str(args.config),
                                         "size": args.size, "window": args.window}, indent=2))


if __name__ == "__main__":
    main()
