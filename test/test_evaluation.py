"""Evaluation metrics on inputs with known answers, the grid nearest neighbour against brute force,
and the RViz layout."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mapanything_ros.evaluation import (ate, depth_metrics, ghost_metrics, map_metrics, nearest_distance,
                                       occupancy_metrics)
from mapanything_ros.geometry.similarity import similarity
from mapanything_ros.synthetic.trajectory import rotation_zyx

RVIZ = Path(__file__).resolve().parents[1] / "config" / "mapanything.rviz"


def true_depth(seed=0):
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.5, 8.0, (2, 30, 40)).astype(np.float32)
    depth[:, :3] = np.nan  # no surface
    depth[:, -2:] = 0.0  # outside the lens
    return depth


def test_depth_perfect_and_scaled():
    t = true_depth()
    assert depth_metrics(t, t) == {"abs_rel": 0.0, "rmse": 0.0, "delta_1_25": 1.0, "inlier_1_03": 1.0,
                                   "outlier_10": 0.0, "coverage": 1.0}
    valid = np.isfinite(t) & (t > 0)
    for s in (0.7, 1.1, 1.3):
        m = depth_metrics(s * t, t)
        assert m["abs_rel"] == pytest.approx(abs(s - 1), rel=1e-6)
        assert m["rmse"] == pytest.approx(abs(s - 1) * np.sqrt(np.mean(t[valid].astype(float) ** 2)), rel=1e-6)
        assert m["delta_1_25"] == (1.0 if max(s, 1 / s) < 1.25 else 0.0)
        assert m["inlier_1_03"] == 0.0 and (m["outlier_10"] == 1.0 or s == 1.1)  # 10 % exactly: float rounding
    m = depth_metrics(1.01 * t, t)  # 1 % off: inliers at MapAnything's 1.03 % threshold
    assert m["inlier_1_03"] == 1.0 and m["outlier_10"] == 0.0


def test_depth_coverage_counts_missing_estimates():
    t = true_depth()
    pred = t.copy()
    pred[:, 3:8] = np.nan  # no estimate
    pred[:, 8:13] = 0.0  # no estimate either
    pred[:, 13:18] = 2 * t[:, 13:18]  # wrong by a factor of 2
    m = depth_metrics(pred, t)
    rows_true = 30 - 3 - 2
    assert m["coverage"] == pytest.approx((rows_true - 10) / rows_true)
    assert m["delta_1_25"] == pytest.approx((rows_true - 15) / (rows_true - 10))
    assert m["abs_rel"] == pytest.approx(5 / (rows_true - 10))
    none = depth_metrics(np.full_like(t, np.nan), t)
    assert none["coverage"] == 0.0 and np.isnan(none["abs_rel"]) and np.isnan(none["rmse"])
    with pytest.raises(ValueError, match="shape"):
        depth_metrics(t[0], t)


def loop(n=50):
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([2 * np.cos(a), np.sin(a), 0.3 * np.sin(2 * a)], -1)


def test_ate_recovers_known_similarity():
    gt = loop()
    est_from_gt = similarity(2.5, rotation_zyx(0.7, -0.2, 0.4), [1.0, -3.0, 0.5])
    est = gt @ est_from_gt[:3, :3].T + est_from_gt[:3, 3]
    m = ate(est, gt, align="sim3")
    assert m["rmse"] < 1e-9 and m["max"] < 1e-9
    assert m["scale"] == pytest.approx(1 / 2.5)
    assert m["length"] == pytest.approx(np.sum(np.linalg.norm(np.diff(gt, axis=0), axis=1)))
    # SE(3) cannot undo the scale: the error is that of the best rigid fit, and larger than zero.
    assert ate(est, gt, align="se3")["rmse"] > 0.5


def test_ate_rigid_and_unaligned():
    gt = loop()
    rigid = gt @ rotation_zyx(-1.0, 0.3, 0.1).T + [0.2, 0.4, -0.1]
    m = ate(rigid, gt, align="se3")
    assert m["rmse"] < 1e-9 and m["scale"] == 1.0
    shifted = ate(gt + [0.3, 0.0, 0.4], gt, align="none")
    assert shifted["rmse"] == pytest.approx(0.5) and shifted["max"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="align"):
        ate(gt, gt, align="sim2")


def plane(spacing=0.02, size=(2.0, 1.5)):
    g = np.stack(np.meshgrid(np.arange(0, size[0], spacing), np.arange(0, size[1], spacing), [0.0]), -1)
    return g.reshape(-1, 3)


def test_map_metrics_on_known_offset():
    surface = plane()
    offset = surface + [0.0, 0.0, 0.03]  # every map point 3 cm off the surface
    m = map_metrics(offset, surface, threshold=0.05)
    assert m["accuracy_mean"] == pytest.approx(0.03) and m["accuracy_median"] == pytest.approx(0.03)
    assert m["precision"] == 1.0 and m["completeness"] == 1.0
    tight = map_metrics(offset, surface, threshold=0.02)
    assert tight["precision"] == 0.0 and tight["completeness"] == 0.0
    half = surface[surface[:, 0] < 1.0 - 1e-9]  # the map covers half the surface
    assert map_metrics(half, surface, 0.005)["completeness"] == pytest.approx(0.5)
    far = map_metrics(surface + [0.0, 0.0, 3.0], surface, 0.05)  # exact even far beyond the threshold
    assert far["accuracy_mean"] == pytest.approx(3.0) and far["precision"] == 0.0
    empty = map_metrics(np.zeros((0, 3)), surface, 0.05)
    assert empty["completeness"] == 0.0 and np.isnan(empty["accuracy_mean"])


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 300), st.integers(0, 300), st.floats(0.01, 1.0))
def test_nearest_distance_equals_brute_force(seed, n, m, cell):
    rng = np.random.default_rng(seed)
    q = rng.normal(0, 1, (n, 3))
    r = rng.normal(0.5, 0.5, (m, 3))
    brute = np.sqrt(((q[:, None] - r[None]) ** 2).sum(-1)).min(axis=1) if m else np.full(n, np.inf)
    np.testing.assert_allclose(nearest_distance(q, r, cell), brute, rtol=1e-12)
    capped = nearest_distance(q, r, cell, max_distance=cell)
    near = brute <= cell
    np.testing.assert_allclose(capped[near], brute[near], rtol=1e-12)
    assert np.all(capped[~near] > cell)


def test_rviz_layout_names_the_topics():
    yaml = pytest.importorskip("yaml", reason="PyYAML parses the RViz layout")
    layout = yaml.safe_load(RVIZ.read_text())
    manager = layout["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == "odom"  # world_frame: there with every preset using TF
    displays = {d["Class"]: [] for d in manager["Displays"]}
    for d in manager["Displays"]:
        displays[d["Class"]].append(d.get("Topic", {}))
    assert {"rviz_default_plugins/Grid", "rviz_default_plugins/TF"} <= set(displays)
    images = {t["Value"] for t in displays["rviz_default_plugins/Image"]}
    assert images == {"/front_optical/image_raw", "/mapanything/front_optical/depth"}
    clouds = {d["Topic"]["Value"]: d for d in manager["Displays"] if d["Class"] == "rviz_default_plugins/PointCloud2"}
    assert set(clouds) == {"/mapanything/points", "/mapanything/map", "/mapanything/esdf"}
    assert all(clouds[f"/mapanything/{name}"]["Color Transformer"] == "RGB8" for name in ("points", "map"))
    assert clouds["/mapanything/esdf"]["Color Transformer"] == "Intensity"
    assert clouds["/mapanything/esdf"]["Channel Name"] == "distance"  # the field ~/esdf has
    (mesh,) = displays["rviz_default_plugins/MarkerArray"]
    (grid,) = displays["rviz_default_plugins/Map"]
    assert (mesh["Value"], grid["Value"]) == ("/mapanything/mesh", "/mapanything/occupancy")
    for topic in ("/mapanything/map", "/mapanything/esdf"):
        assert clouds[topic]["Topic"]["Durability Policy"] == "Transient Local"
    assert mesh["Durability Policy"] == grid["Durability Policy"] == "Transient Local"  # latched: the map as it is
    # ~/mesh's arrays are changes: a display queue of one would lose an array that arrives before
    # RViz took the one before it (docs/map.md)
    assert mesh["Depth"] >= 10


def test_occupancy_metrics_against_a_known_truth():
    from mapanything_ros.mapping import Grid2D
    from mapanything_ros.synthetic import Room

    cells = np.full((4, 6), -1, np.int8)  # rows along y from 0, columns along x from 0, 1 m cells
    cells[:, :3] = 0
    cells[:, 3] = 100
    cells[0, 2] = 100  # called occupied, truly free
    cells[3, 3] = 0  # called free, truly solid
    grid = Grid2D(cells, (0.0, 0.0), 1.0)
    beyond = lambda x: lambda c, margin: c[:, 0] + margin > x  # noqa: E731 (solid beyond x metres)
    m = occupancy_metrics(grid, beyond(3.2))  # the cells from x = 3 m hold solid
    assert m["known"] == 16 and m["ties"] == 0
    assert m["iou"] == pytest.approx(3 / 5) and m["free_wrong"] == pytest.approx(1 / 12)
    assert m["occupied_wrong"] == pytest.approx(1 / 4)
    # A face on the cells' edge (x = 3 m) makes the 4 known cells before it ties, left out: the
    # cell called occupied there is no longer wrong, and the rest is judged as before.
    tie = occupancy_metrics(grid, beyond(3.0))
    assert tie["ties"] == 4 and tie["known"] == 16
    assert tie["iou"] == pytest.approx(3 / 4) and tie["free_wrong"] == pytest.approx(1 / 9)
    assert tie["occupied_wrong"] == 0
    assert occupancy_metrics(grid, beyond(3.0 + 1e-3)) == m  # 1 mm off the edge: no tie
    room = Room(0)
    xy = np.array([[0.0, 0.0], [4.99, 0.0], [5.1, 0.0], [room.box_lo[0, 0] + 0.05, room.box_lo[0, 1] + 0.05]])
    np.testing.assert_array_equal(room.solid_near(xy, 0.1, 1.0, 0.025), [False, True, True, True])
    assert not room.solid_near(xy[3:], room.box_hi[0, 2] + 0.1, 3.0, 0.025)[0]  # above the box


def test_ghost_metrics_count_what_a_moved_object_left():
    from mapanything_ros.mapping import Grid2D

    cells = np.zeros((4, 6), np.int8)  # 1 m cells from (0, 0); the object stood on x in [1, 3], y in [0, 2]
    cells[0, 1] = 100  # a ghost
    cells[1, 2] = -1  # never seen again
    cells[:, 5] = 100  # what stands now: x >= 5
    grid = Grid2D(cells, (0.0, 0.0), 1.0)
    boxes = (np.array([[1.0, 0.0, 0.0], [4.2, 0.0, 0.0]]), np.array([[3.0, 2.0, 1.0], [6.0, 2.0, 1.0]]))
    points = np.array([[1.5, 0.5, 0.5],  # inside the old place, floating: a ghost
                       [1.5, 0.5, 0.01],  # the floor under it
                       [5.5, 0.5, 0.5]])  # inside what stands now (caller's business), on no surface
    metrics = ghost_metrics(grid, points, boxes, lambda c, margin: c[:, 0] + margin > 5.0,
                            lambda p: np.minimum(p[:, 2], np.abs(p[:, 0] - 5.0)), 0.05, 1.5)
    # footprint cells whose centre is inside a box and more than 1.5 cells from what stands now: x
    # centres 1.5, 2.5 (rows 0, 1); the cells at 4.5 are within the margin
    assert metrics == {"ghost_cells": 1, "cleared_cells": 2, "old_cells": 4, "ghost_points": 2}
