"""Full-size MapAnything v1.1 on one CUDA GPU: sliding-window steps with and without the encoder cache.

One command, no weights file and no downloads: the v1.1 release architecture
(test/data/map-anything-v1.1-config.json, 1.23 B parameters) is built directly on the GPU with
random weights (seed 0; no CPU copy), parameters float32, run under bf16 autocast (fp16 where the
GPU lacks bf16) and inference_mode, as model.Runtime does. Inputs per view: image, unit rays and
a metric pose (the node's default images + rays + poses), 518x392 (W x H) by default.

Cases: N = 2, 4, 8, 16 views, each in two modes over the same frame stream (each step adds one
frame and drops the oldest):
  - full: no frame ids, every step encodes all N images;
  - cached: frame ids and a feature cache, a step encodes only the new image.
Per case: a fill step and `--warmup` steps untimed, then `--steps` timed steps (fewer if the
time budget runs short). Reported per step (medians, torch.cuda.synchronize around each part):
  - network_ms: `model(views)` on the device;
  - recon_device_ms / recon_host_ms: the newest view (the reference, view 0, as the node orders
    it) reconstructed at the native resolution (mapping.reconstruct with the node's defaults:
    bilinear, edge cut, its points and colours) on the device, only the published arrays copied
    to the host, versus its prediction copied to the host and reconstructed there in numpy. The
    window's images come from a camera of 5/4 the model size (a ViewBatch of blank frames; the
    network's inputs stay the random ones; its outputs are made plausible first, untimed: positive
    depths, forward rays, no ambiguous pixel). device_bytes / host_bytes: bytes copied from the
    device for it in either case;
  - peak_allocated_mib / peak_reserved_mib: torch.cuda peak memory over the timed steps.
`--compile` adds cases with the image encoder and the multi-view transformer under
torch.compile (their first step, compilation included, is reported as compile_s).
The whole run keeps to `--budget-s` (default 270 s, under 5 minutes on one H100): cases that no
longer fit are listed as skipped. Prints a table on stderr and a JSON summary on stdout.
`--dry-run` builds the model on the meta device (no GPU needed) and prints the planned cases.

    python bench/bench_gpu.py [--views 2 4 8 16] [--size 392 518] [--steps 5] [--warmup 2]
        [--compile] [--budget-s 270] [--dry-run] [--json PATH]
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RELEASE_CONFIG = ROOT / "test" / "data" / "map-anything-v1.1-config.json"
MIB = 1024**2
MODES = ("full", "cached")


def plan(args) -> list[dict]:
    cases = [{"views": n, "mode": mode, "compile": False} for n in args.views for mode in MODES]
    if args.compile:
        cases += [{"views": n, "mode": mode, "compile": True} for n in args.views for mode in MODES]
    return cases


def build(config: dict, device, cache: int):
    import torch

    from mapanything_ros.model.network import MapAnything

    torch.manual_seed(0)
    with torch.device(device):
        model = MapAnything(config, feature_cache_size=cache)
    return model.eval().requires_grad_(False)


class Stream:
    """Random frames on the device (image, unit rays, metric pose) and windows of them."""

    def __init__(self, size, device):
        import torch

        self.size, self.device, self.frames = size, device, []
        self.gen = torch.Generator(device=device).manual_seed(1)

    def views(self, step: int, n: int, ids: bool) -> list[dict]:
        import torch

        h, w = self.size
        while len(self.frames) < step + n:
            kw = {"generator": self.gen, "device": self.device}
            rays = torch.randn(1, h, w, 3, **kw) * 0.2 + torch.tensor([0.0, 0.0, 1.0], device=self.device)
            q = torch.randn(1, 4, **kw)
            self.frames.append({"img": torch.randn(1, 3, h, w, **kw),
                                "ray_directions_cam": rays / rays.norm(dim=-1, keepdim=True),
                                "camera_pose_quats": q / q.norm(), "camera_pose_trans": torch.randn(1, 3, **kw),
                                "is_metric_scale": torch.ones(1, dtype=torch.bool, device=self.device)})
        # newest first: view 0 is the reference, as in the node's windows
        window = [{**self.frames[i], **({"frame_id": i} if ids else {})} for i in range(step, step + n)]
        return window[::-1]


def window_batch(size, n: int):
    """A ViewBatch of n blank frames of a pinhole camera 5/4 the model size (H, W), whose model
    size is `size`: what the network's outputs are reconstructed against."""
    import numpy as np

    from mapanything_ros.geometry import CameraModel
    from mapanything_ros.window import BatchConfig, Frame, assemble

    h, w = size
    width, height = w * 5 // 4, h * 5 // 4
    camera = CameraModel.pinhole(0.8 * width, 0.8 * width, (width - 1) / 2, (height - 1) / 2, width, height)
    image = np.zeros((height, width, 3), np.uint8)
    frames = [Frame(image, camera, (n - k) * 10**8, f"cam{k}", np.eye(4)) for k in range(n)]
    batch = assemble(frames, BatchConfig(long_side=max(size)))
    if tuple(batch.size) != (w, h):
        raise SystemExit(f"no camera maps to the model size {w}x{h}")
    return batch


def plausible(out: list[dict]) -> list[dict]:
    """The outputs of random weights made what a trained model's look like to reconstruction
    (positive depths, forward rays, every pixel unambiguous), so that every pixel is reconstructed."""
    import torch

    fixed = []
    for o in out:
        rays = o["ray_directions"].float() * 0.1 + torch.tensor([0.0, 0.0, 1.0], device=o["ray_directions"].device)
        fixed.append({**o, "ray_directions": rays / rays.norm(dim=-1, keepdim=True),
                      "depth_along_ray": o["depth_along_ray"].float().abs() + 1,
                      "non_ambiguous_mask": torch.ones_like(o["non_ambiguous_mask"], dtype=torch.bool)})
    return fixed


def newest_view(out: list[dict], batch, device, sync=lambda: None) -> dict:
    """ms and bytes copied to the host for view 0 reconstructed on `device` and on the host (numpy)."""
    from mapanything_ros.backends.prediction import prediction_from_outputs
    from mapanything_ros.mapping import reconstruct

    result = {}
    for where in (device, "numpy"):
        sync()
        t0 = time.perf_counter()
        pred = prediction_from_outputs(out, batch)
        view = reconstruct(batch, pred, views=[0], device=where).views[0]
        sync()
        t1 = time.perf_counter()
        if where == "numpy":
            stacks = (pred.depth_along_ray, pred.ray_directions, pred.confidence, pred.mask)
            moved = sum(s[i].nbytes for s in stacks for i in s.copied)
            result.update(recon_host_ms=(t1 - t0) * 1e3, host_bytes=moved)
        else:  # the colours' flat indices (int64) came back too
            moved = sum(a.nbytes for a in (view.depth, view.confidence, view.points, view.point_confidence))
            result.update(recon_device_ms=(t1 - t0) * 1e3, device_bytes=moved + 8 * len(view.points),
                          points=len(view.points))
    return result


def run_case(model, runtime, stream, case, args, deadline) -> dict:
    import torch

    n, ids = case["views"], case["mode"] == "cached"
    model.clear_feature_cache()
    base = len(stream.frames)
    result = {**case}
    sync = torch.cuda.synchronize
    times = {"network_ms": [], "recon_device_ms": [], "recon_host_ms": [], "images": []}
    batch = window_batch(stream.size, n)
    step = 0
    while True:
        views = stream.views(base + step, n, ids)
        encoded = model.images_encoded
        sync()
        t0 = time.perf_counter()
        with runtime.context():
            out = model(views)
        sync()
        t1 = time.perf_counter()
        recon = newest_view(plausible(out), batch, runtime.device, sync)  # timed inside
        t2 = time.perf_counter()
        del out
        if step == 0 and case["compile"]:
            result["compile_s"] = t1 - t0
        if step == 1 + args.warmup:
            torch.cuda.reset_peak_memory_stats()
        if step >= 1 + args.warmup:
            times["network_ms"].append((t1 - t0) * 1e3)
            times["recon_device_ms"].append(recon["recon_device_ms"])
            times["recon_host_ms"].append(recon["recon_host_ms"])
            result.update(device_bytes=recon["device_bytes"], host_bytes=recon["host_bytes"])
            times["images"].append(model.images_encoded - encoded)
        step += 1
        timed = len(times["network_ms"])
        per_step = (t2 - t0)
        if timed >= args.steps or (timed >= 2 and time.perf_counter() + per_step > deadline):
            break
    result.update({k: statistics.median(v) for k, v in times.items()})
    result["network_ms_all"] = [round(t, 2) for t in times["network_ms"]]
    result["timed_steps"] = len(times["network_ms"])
    result["peak_allocated_mib"] = torch.cuda.max_memory_allocated() / MIB
    result["peak_reserved_mib"] = torch.cuda.max_memory_reserved() / MIB
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--views", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--size", type=int, nargs=2, default=(392, 518), metavar=("H", "W"))
    parser.add_argument("--steps", type=int, default=5, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after the fill")
    parser.add_argument("--compile", action="store_true", help="also run every case under torch.compile")
    parser.add_argument("--budget-s", type=float, default=270.0, help="wall-time budget of the whole run")
    parser.add_argument("--device", default="cuda", help="cuda or cuda:N")
    parser.add_argument("--dry-run", action="store_true", help="build on the meta device and print the plan")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON summary here")
    args = parser.parse_args()
    start = time.perf_counter()

    import torch

    from mapanything_ros.model.checkpoint import read_config
    from mapanything_ros.model.runtime import Runtime

    config = read_config(RELEASE_CONFIG)
    cases = plan(args)
    summary = {"config": RELEASE_CONFIG.name, "size_hw": list(args.size), "torch": torch.__version__,
               "inputs": "images + rays + poses"}
    if args.dry_run:
        model = build(config, "meta", max(args.views))
        summary.update(dry_run=True, device="meta", parameters=sum(p.numel() for p in model.parameters()),
                       cases=cases)
        print(json.dumps(summary, indent=1))
        return
    if not torch.cuda.is_available():
        raise SystemExit(f"CUDA is not available (torch {torch.__version__}); --dry-run shows the plan")
    runtime = Runtime(args.device)
    t0 = time.perf_counter()
    model = build(config, runtime.device, max(args.views))
    torch.cuda.synchronize()
    summary.update(device=torch.cuda.get_device_name(runtime.device), cuda=torch.version.cuda,
                   compute_dtype=str(runtime.autocast_dtype).removeprefix("torch."),
                   parameters=sum(p.numel() for p in model.parameters()), build_s=time.perf_counter() - t0,
                   weights_mib=torch.cuda.memory_allocated() / MIB)
    stream = Stream(tuple(args.size), runtime.device)
    deadline = start + args.budget_s
    results, compiled = [], False
    for case in cases:
        if time.perf_counter() > deadline - 5:
            results.append({**case, "skipped": "time budget"})
            continue
        if case["compile"] and not compiled:
            model.encoder = torch.compile(model.encoder)
            model.info_sharing = torch.compile(model.info_sharing)
            compiled = True
        try:
            results.append(run_case(model, runtime, stream, case, args, deadline))
        except torch.cuda.OutOfMemoryError as err:
            results.append({**case, "skipped": f"out of memory: {str(err).splitlines()[0]}"})
            torch.cuda.empty_cache()
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    summary["cases"] = results
    summary["total_s"] = time.perf_counter() - start

    print(f"\n{summary['device']}, torch {summary['torch']}, {summary['compute_dtype']} autocast, "
          f"{args.size[1]}x{args.size[0]} (W x H), images + rays + poses, random weights\n", file=sys.stderr)
    print("| N | mode | compile | network ms/step | images encoded/step | newest view on device ms (MB to host) "
          "| on host ms (MB to host) | peak allocated MiB |", file=sys.stderr)
    print("|---|---|---|---|---|---|---|---|", file=sys.stderr)
    for r in results:
        if "skipped" in r:
            print(f"| {r['views']} | {r['mode']} | {r['compile']} | skipped: {r['skipped']} | | | | |", file=sys.stderr)
        else:
            print(f"| {r['views']} | {r['mode']} | {r['compile']} | {r['network_ms']:.1f} | {r['images']:g} "
                  f"| {r['recon_device_ms']:.1f} ({r['device_bytes'] / 1e6:.2f}) "
                  f"| {r['recon_host_ms']:.1f} ({r['host_bytes'] / 1e6:.2f}) | {r['peak_allocated_mib']:.0f} |",
                  file=sys.stderr)
    text = json.dumps(summary, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
