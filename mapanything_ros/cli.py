"""The `mapanything-ros` command line: demo, bag replay, evaluation, benchmarks and ONNX export."""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"
DEBUG = "MAPANYTHING_ROS_DEBUG"  # set: errors of bad input raise with their traceback
SLOW_BENCHES = ("model_load", "gpu", "soak", "accuracy")  # 4.6 GB checkpoint, ~10 GB RAM; a CUDA GPU; 10 min; 30+ min: run only when named


def _value(text):
    """A parameter value written as in `ros2 run ... -p name:=value` (as rcl reads it: 0.5, true, yes, [a, b], text)."""
    from ruamel.yaml import YAMLError

    from .settings import read_yaml

    try:
        return read_yaml(text)
    except YAMLError as err:
        raise SystemExit(f"-p: {text!r} is not a YAML value: {' '.join(str(err).split())}") from None


def _positive(text):
    """An argparse type: a finite number > 0."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def _pairs(items, what):
    out = {}
    for item in items or []:
        name, sep, value = item.partition(":=")
        if not sep or not name:
            raise SystemExit(f"{what} must look like NAME:=VALUE, got {item!r}")
        out[name] = value
    return out


def _params(args):
    """Parameter values from --params FILE and -p NAME:=VALUE, and the shortcut options."""
    from . import settings

    values = settings.load_params_file(args.params) if args.params else settings.defaults()
    given = {k: _value(v) for k, v in _pairs(args.param, "-p").items()}
    unknown = sorted(set(given) - set(settings.SPECS))
    if unknown:
        raise SystemExit(f"unknown parameters: {', '.join(map(settings.unknown, unknown))}")
    found = [p for p in (settings.given_problem(k, v) for k, v in given.items()) if p]
    if found:
        raise SystemExit("bad parameters: " + "; ".join(found))
    values.update(given)
    for name in ("backend", "weights", "device"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if args.cameras:
        values["cameras"] = args.cameras.split(",")
    return values


def _warn_slow():
    """Say on stderr which compiled modules are not built (their numpy fallbacks are several times slower)."""
    from . import compiled

    slow = compiled.warning()
    if slow:
        print(f"warning: {slow}", file=sys.stderr)


def _print_eval(metrics):
    a, m = metrics["ate"], metrics["map"]
    for key, label in (("depth", "depth"), ("raw_depth", "the network's raw depth")):
        d = metrics.get(key)
        if d:
            print(f"  {label} ({metrics['keyframe_depths']} keyframe images): AbsRel {d['abs_rel']:.2e}, "
                  f"RMSE {d['rmse'] * 1e3:.2f} mm, inliers at 1.03 % {d['inlier_1_03']:.3f}, "
                  f"> 10 % off {d['outlier_10']:.4f}, coverage {d['coverage']:.3f}")
    if a:
        print(f"  poses ({metrics['poses']}): ATE {a['rmse'] * 1e3:.4f} mm RMSE, {a['max'] * 1e3:.4f} mm max "
              f"(alignment {a['align']}, path {a['length']:.2f} m)")
    if m and m["accuracy_mean"] != m["accuracy_mean"]:  # NaN: map_metrics of an empty map
        print(f"  map: empty (no points), completeness 0 at {m['threshold'] * 1e3:.0f} mm")
    elif m:
        print(f"  map: accuracy {m['accuracy_mean'] * 1e3:.1f} mm mean, precision {m['precision']:.4f}, "
              f"completeness {m['completeness']:.4f} at {m['threshold'] * 1e3:.0f} mm")


def _print_summary(s):
    t = s["timings"]
    print(f"  {s['frames']} frames in {s['captures']} captures, {s['keyframes']} keyframes, {s['windows']} windows "
          f"({s['windows_failed']} failed); {s['map']['points']} map points")
    total = t["window_latency_s"].get("total")
    window = f"; window p50 {total['p50'] * 1e3:.0f} ms" if total else ""
    print(f"  {t['wall_s']:.1f} s ({t['frames_per_s']:.1f} frames/s{window}), peak memory "
          f"{s['memory']['peak_rss_mb']:.0f} MiB")
    dropped = {k: v for k, v in s["dropped"].items() if v}
    if dropped:
        print(f"  dropped: {dropped}")
    for message, count in s["problems"].items():
        print(f"  problem ({count}x): {message}")
    if s["frames"] and s["missing_topics"]:  # (none at all: replay() says it on stderr)
        print(f"  missing topics (no message in the bag): {s['missing_topics']}")


def replay(args):
    from .evaluation import evaluate
    from .replay import replay as run

    _warn_slow()
    try:
        summary = run(args.bag, _params(args), args.out, progress="force" if args.progress else True,
                      write_bag=args.write_bag, namespace=args.namespace, remap=_pairs(args.remap, "--remap"),
                      node_name=args.node_name, raw_depth=args.raw_depth)
    except (ValueError, FileNotFoundError) as err:  # bad parameters, no camera or weights, an output bag there
        raise SystemExit(f"replay: {err}") from None
    print(f"replayed {args.bag} with the {summary['backend']} backend into {args.out}")
    _print_summary(summary)
    if not summary["frames"]:
        print(f"  nothing went through: missing topics {summary['missing_topics']}; check --namespace, --remap "
              "and --cameras against `ros2 bag info`", file=sys.stderr)
        return 1
    if args.eval:
        _print_eval(evaluate(args.out, args.bag, args.threshold))
    return 0


def evaluate(args):
    from .evaluation import evaluate as run

    metrics = run(args.out_dir, args.bag, args.threshold)
    print(f"{args.out_dir} against the ground truth of {args.bag} (also in {Path(args.out_dir) / 'eval.json'}):")
    _print_eval(metrics)
    if not (metrics["keyframe_depths"] or metrics["poses"] or (metrics["map"] or {}).get("points")):
        n = metrics["unmatched_depths"]
        unmatched = f" ({n} depth images at no true stamp)" if n else ""
        print(f"  nothing to evaluate: no depth or pose of {args.out_dir} matches the bag's ground truth{unmatched}, "
              "and there is no map to compare (was it the replay of another bag, or did nothing go through? its "
              "summary.json says)", file=sys.stderr)
        return 1
    return 0


def demo(args):
    from .demo import run

    _warn_slow()
    result = run(args.out, preset=args.preset, duration_s=args.duration, seed=args.seed, weights=args.weights,
                 long_side=args.long_side, storage=args.storage, progress="force" if args.progress else True)
    print(f"\nbackend: {result['backend']}: {result['reason']}")
    _print_summary(result["summary"])
    print("evaluation against the ground truth:")
    _print_eval(result["eval"])
    print("outputs:")
    for name, path in result["files"].items():
        print(f"  {name:14s} {path}")
    print(f"  {'depth':14s} {Path(args.out) / 'replay' / 'depth'}/<camera>/<stamp_ns>.png (16-bit mm), "
          f"previews in replay/preview, trajectories in replay/poses (TUM)")
    return 0


def accuracy(args):
    from .accuracy import main

    return main(args.rest, prog="mapanything-ros accuracy")  # its own options (accuracy.parser)


def bench(args):
    """Run bench/bench_<name>.py scripts (all but the slow ones by default); one JSON + markdown report."""
    if not BENCH_DIR.is_dir():
        raise SystemExit(f"no benchmarks at {BENCH_DIR} (run from a source tree)")
    names = args.names or sorted(p.stem[len("bench_"):] for p in BENCH_DIR.glob("bench_*.py")
                                 if p.stem[len("bench_"):] not in SLOW_BENCHES)
    report, rows, tables = {}, [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            script = BENCH_DIR / f"bench_{name}.py"
            if not script.is_file():
                raise SystemExit(f"no benchmark {script}")
            figures = Path(tmp) / f"{name}.json"
            print(f"running {script.name} ...", file=sys.stderr, flush=True)
            clock = time.perf_counter()
            done = subprocess.run([sys.executable, str(script), "--json", str(figures)], capture_output=True,
                                  text=True)
            seconds = time.perf_counter() - clock
            ok = done.returncode == 0
            report[name] = {"script": f"bench/{script.name}", "ok": ok, "seconds": round(seconds, 2),
                            "figures": json.loads(figures.read_text()) if ok and figures.is_file() else None,
                            "table": done.stdout.strip(), "error": None if ok else done.stderr.strip()[-2000:]}
            rows.append(f"| {script.name} | {'ok' if ok else 'FAILED'} | {seconds:.1f} |")
            tables.append(f"## bench/{script.name}\n\n" + (done.stdout.strip() if ok else
                                                              "```\n" + done.stderr.strip()[-2000:] + "\n```"))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    markdown = "\n".join(["| benchmark | status | time (s) |", "|---|---|---|", *rows, "", *tables]) + "\n"
    out.with_suffix(".md").write_text(markdown)
    print(markdown)
    print(f"report: {out} and {out.with_suffix('.md')}")
    return 0 if all(r["ok"] for r in report.values()) else 1


def export_onnx(args):
    import torch

    from .model import load_model
    from .model.onnx import export_onnx as export, parse_combination

    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    try:
        model = load_model(args.weights, "cpu")
    except (FileNotFoundError, ValueError) as err:  # no checkpoint there, or one that cannot be used
        raise SystemExit(f"export-onnx: {err}") from None
    loaded = time.perf_counter() - start
    manifest = export(model, args.out, args.views, args.height, args.width, args.dynamic_views,
                      [parse_combination(c) for c in args.inputs.split(",")], args.exporter)
    out = Path(args.out)
    views = "dynamic" if manifest["views"] is None else manifest["views"]
    print(f"exported {args.weights} for {args.height}x{args.width} (H x W) images, views: {views}, into {out} "
          f"(load {loaded:.1f} s; {manifest['exporter']})")
    files = [manifest["encoder"]] + [g["file"] for g in manifest["graphs"].values()]
    for file in files:
        name = Path(file).stem
        size = sum(p.stat().st_size for p in out.glob(f"{name}.onnx*"))
        print(f"  {file:24s} {size / 2**20:9.1f} MiB  {manifest['export_seconds'][name]:6.1f} s")
    return 0


def _param_options(p):
    p.add_argument("--params", help="ROS 2 parameter YAML (e.g. config/mapping.yaml); default: the node's defaults")
    p.add_argument("-p", "--param", action="append", metavar="NAME:=VALUE", help="set a parameter (repeatable)")
    p.add_argument("--cameras", help="camera namespaces, comma-separated (default: those of the bag or --params)")
    from .settings import SPECS

    p.add_argument("--backend", choices=SPECS["backend"].choices)
    p.add_argument("--weights", help="checkpoint directory or Hugging Face repo id in the local cache")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")


def main(argv=None):
    """Entry point of `mapanything-ros`."""
    parser = argparse.ArgumentParser(prog="mapanything-ros", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="synthetic run -> bag -> replay -> evaluation (the README's demo command)")
    p.add_argument("--out", default="out/demo", help="output directory (default: %(default)s)")
    p.add_argument("--preset", default="small", choices=("small", "default"),
                   help="synthetic rig: small (160x120 images) or default (640x480) (default: %(default)s)")
    p.add_argument("--duration", type=_positive, default=10.0, help="seconds of robot run (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="synthetic room seed (default: %(default)s)")
    p.add_argument("--weights", default="facebook/map-anything",
                   help="MapAnything checkpoint directory or repo id in the local cache (default: %(default)s)")
    p.add_argument("--long-side", type=int, default=224, help="model input long side, pixels (default: %(default)s)")
    p.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"))
    p.add_argument("--progress", action="store_true", help="draw progress bars even when not on a terminal")
    p.set_defaults(run=demo)

    p = sub.add_parser("replay", help="run the node's pipeline over a rosbag2 (MCAP or sqlite3)")
    p.add_argument("bag", help="rosbag2 directory (or .mcap / .db3 file)")
    _param_options(p)
    p.add_argument("--out", default="out/replay", help="output directory (default: %(default)s)")
    p.add_argument("--write-bag", action="store_true", help="also write the node's output topics to OUT/bag")
    p.add_argument("--namespace", default="", help="the node's namespace (relative topics resolve in it)")
    p.add_argument("--remap", action="append", metavar="FROM:=TO", help="read topic TO for the resolved name FROM")
    p.add_argument("--node-name", default="mapanything", help="node name of the output topics")
    p.add_argument("--raw-depth", action="store_true",
                   help="also write the network's unprocessed depth (OUT/raw), evaluated beside the published one")
    p.add_argument("--eval", action="store_true", help="evaluate against the bag's ground truth afterwards")
    p.add_argument("--threshold", type=_positive, default=0.05, help="map distance threshold, m (default: %(default)s)")
    p.add_argument("--progress", action="store_true", help="draw the progress bar even when not on a terminal")
    p.set_defaults(run=replay)

    p = sub.add_parser("eval", help="compare a replay's outputs with a synthetic bag's ground truth")
    p.add_argument("out_dir", help="output directory of a replay")
    p.add_argument("--bag", required=True, help="the replayed bag (with /ground_truth topics)")
    p.add_argument("--threshold", type=_positive, default=0.05, help="map distance threshold, m (default: %(default)s)")
    p.set_defaults(run=evaluate)

    p = sub.add_parser("accuracy", help="accuracy under the emulated network's errors (bench/bench_accuracy.py; "
                       "--help: its options)", add_help=False)
    p.set_defaults(run=accuracy)

    p = sub.add_parser("bench", help="run the benchmarks of bench/ into one report")
    p.add_argument("names", nargs="*", help="benchmark names (bench_<name>.py; default: all but model_load, gpu)")
    p.add_argument("--out", default="out/bench/report.json",
                   help="report JSON; the markdown goes next to it as .md (default: %(default)s)")
    p.set_defaults(run=bench)

    p = sub.add_parser("export-onnx", help="export the network as ONNX graphs (onnxruntime backend, TensorRT)")
    p.add_argument("out", metavar="OUT_DIR", help="directory for encoder.onnx, one graph per --inputs, manifest.json")
    p.add_argument("--weights", required=True, help="checkpoint directory or Hugging Face repo id in the local cache")
    p.add_argument("--views", type=int, default=8, help="views per window (default: %(default)s)")
    p.add_argument("--height", type=int, default=392, help="model input height, multiple of 14 (default: %(default)s)")
    p.add_argument("--width", type=int, default=518, help="model input width, multiple of 14 (default: %(default)s)")
    p.add_argument("--dynamic-views", action="store_true", help="any number of views (else exactly --views)")
    p.add_argument("--inputs", default="images,rays+poses,rays+poses+depth",
                   help="input combinations, comma-separated, one graph each; a graph also takes any subset "
                        "of its inputs (default: %(default)s)")
    p.add_argument("--exporter", default="dynamo", choices=("dynamo", "torchscript"),
                   help="torch.onnx exporter: dynamo (supported) or torchscript (deprecated, ~10x faster) "
                        "(default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    p.set_defaults(run=export_onnx)

    args, rest = parser.parse_known_args(argv)
    if args.command != "accuracy" and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    from rosbags.highlevel import AnyReaderError
    from rosbags.rosbag2 import ReaderError
    from rosbags.serde import SerdeError

    from .model.runtime import DeviceError

    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f"{args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, AnyReaderError, ReaderError, SerdeError, DeviceError) as err:
        if os.environ.get(DEBUG):  # a bug that raises one of these shows its traceback so
            raise
        # bad input (a bag, a path, weights, a parameter, a full disk): one line, no traceback
        raise SystemExit(f"{args.command}: {err} ({DEBUG}=1 shows where)") from None


if __name__ == "__main__":
    sys.exit(main())
