"""The `mapanything-ros` command line."""

import argparse
import sys


def demo(args):
    from . import demo as geometry_demo

    summary = geometry_demo.run(args.out)
    print(f"LiDAR sweep: {summary['lidar_points']} points, projected into two distorted cameras")
    for name, cam in summary["cameras"].items():
        w, h = cam["model_size"]
        comp, raw = cam["compensated"], cam["raw"]
        print(f"  {name}: model input {w}x{h}, field of view {cam['fov_deg']} deg, {comp['pixels']} depth pixels; "
              f"depth error median/p95 {comp['median_abs_error_m'] * 1e3:.1f}/{comp['p95_abs_error_m'] * 1e3:.1f} mm "
              f"with motion compensation, {raw['median_abs_error_m'] * 1e3:.1f}/{raw['p95_abs_error_m'] * 1e3:.1f} mm without")
    print(f"pictures and summary.json in {args.out}")
    return 0


def main(argv=None):
    """Entry point of `mapanything-ros`."""
    parser = argparse.ArgumentParser(prog="mapanything-ros", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run the demo on generated data")
    p.add_argument("--out", default="out/demo", help="output directory (default: %(default)s)")
    p.set_defaults(run=demo)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
