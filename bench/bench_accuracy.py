"""Accuracy against a network that errs (mapanything_ros.accuracy): for each setting (mapping with
TF poses, depth completion with LiDAR, image-only) on synthetic runs (two cameras, the front
plumb_bob and the fisheye, a 16-beam LiDAR), the network's raw depth and what the package
publishes, both against the ground truth, with the emulated backend at error profiles 0 (exact
predictions), 0.5, 1 and 2; then the depth-completion steps one by one (ablation) and a 10 %
per-view depth bias added, at profile 1.

Figures (means over the seeds): depth AbsRel, RMSE, inlier ratio at 1.03 % (MapAnything's tau),
fraction more than 10 % off, coverage of the native pixels (raw and published); ATE of the
refined keyframe positions (image-only: after a Sim(3) alignment) and ATE per metre of path; map
accuracy, precision and completeness at 5 cm (profile 1, unless --no-map). With the map also the
moving-box runs and the mapping and depth-completion presets on the ground-robot rig
("small_ground": cameras 0.3 m above the floor, which the 1.3 m rig never sees at grazing angles),
profiles 0 and 1.

    tools/dev run python bench/bench_accuracy.py [--duration 60] [--seeds 0,1,2] [--profiles 0,0.5,1,2]
        [--no-map] [--out out/bench/accuracy] [--json PATH]

About 30-40 minutes with the defaults on the 2-core machine (`mapanything-ros accuracy` runs the same).
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mapanything_ros.accuracy import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
