"""A small version of bench/bench_accuracy.py: a 10 s synthetic run replayed with the emulated backend
(the oracle with a network's errors, profile 1) and with exact predictions (profile 0). Not a timed test:
it checks that what the package publishes is never worse than the network's raw prediction, that depth
completion corrects it, and that exact predictions stay exact. Tolerances come from the error model
(backends.emulated: raw AbsRel about 2-3 % with TF poses, 1.5 % with LiDAR, 5-8 % image-only) and from
the benchmark's 60 s, 3-seed figures (docs/accuracy.md), with room for one short run."""

import pytest

from mapanything_ros import accuracy

SETTINGS = ("mapping", "depth_completion", "image_only")


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("accuracy")
    found = accuracy.run(out, seeds=(0,), duration_s=10.0, profiles=(0.0, 1.0), settings_names=SETTINGS,
                         with_map=False, log=lambda _: None)
    return {(r["setting"], r["profile"]): r for r in found}


@pytest.mark.parametrize("setting", SETTINGS)
def test_published_depth_is_never_worse_than_the_raw_prediction(rows, setting):
    r = rows[(setting, 1.0)]
    assert r["windows"] > 5
    assert r["depth.abs_rel"] <= r["raw_depth.abs_rel"]
    assert r["depth.inlier_1_03"] >= r["raw_depth.inlier_1_03"]
    assert r["depth.outlier_10"] <= r["raw_depth.outlier_10"]
    assert r["depth.coverage"] >= 0.95  # the edge cut tells the network's noise from depth edges


def test_raw_errors_follow_the_inputs(rows):
    mapping, dc, image_only = (rows[(s, 1.0)]["raw_depth.abs_rel"] for s in SETTINGS)
    assert 0.007 < dc < mapping < image_only
    assert mapping < 0.05 and image_only < 0.12


def test_depth_completion_corrects_the_network(rows):
    r = rows[("depth_completion", 1.0)]
    assert r["depth.abs_rel"] <= 0.65 * r["raw_depth.abs_rel"]  # the bench: 0.5 over 60 s and 3 seeds
    assert r["ate_rmse"] < 0.005  # TF poses given: the alignment scales the depth, not the poses


def test_exact_predictions_stay_exact(rows):
    for setting in SETTINGS:
        r = rows[(setting, 0.0)]
        assert r["depth.abs_rel"] <= 1e-3 and r["depth.rmse"] <= 0.010, setting
        assert r["depth.coverage"] >= 0.99


def test_a_box_that_walked_away_leaves_no_ghost(tmp_path):
    """The moving-box run (synthetic.mover: the box stands 14 s in the middle of the room, walks
    1.2 m away, and its old place is seen for 14 s more) through the replay under the error model:
    the map and the occupancy grid keep nothing of its old place, and show it where it stands."""
    (row,) = accuracy.run_moving(tmp_path, seeds=(0,), duration_s=30.0, profiles=(1.0,), settings_names=("mapping",),
                                 log=lambda _: None)
    assert row["old_cells"] > 200  # the old place was seen again
    assert row["ghost_cells"] == 0 and row["cleared_cells"] == row["old_cells"]
    assert row["ghost_points"] == 0
    assert row["map.precision"] > 0.9 and row["occupancy.iou"] > 0.8
