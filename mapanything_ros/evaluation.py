"""Evaluation against ground truth (numpy): depth errors, trajectory error (ATE), map accuracy and
completeness, and reading the ground truth of a synthetic bag (bag.synthetic).

Depth metrics follow the usual monocular-depth definitions (Eigen et al., NeurIPS 2014): AbsRel,
RMSE and the δ < 1.25 inlier ratio. ATE is the RMSE of camera positions after aligning the
estimate to the truth (Sturm et al., IROS 2012), here optionally with scale (Sim(3), Umeyama).
Map accuracy / completeness are nearest-neighbour distances map → surface and surface → map, as
in multi-view stereo benchmarks (e.g. DTU, Aanæs et al. 2016).
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .geometry import pose_from_quat_trans
from .geometry.similarity import fit_similarity, similarity_parts
from .mapping.distance import distance_slice
from .mapping.grid import Grid2D

_PAIR_BUDGET = 1_000_000  # candidate (query, reference) pairs evaluated at once by nearest_distance
_NEIGHBOURS = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(-1, 3)
# Metres: a grid cell whose edge lies within this of a solid face is a tie, neither truly solid nor
# truly free (the synthetic room's walls stand on whole metres, on the edges of a 5 cm grid's cells,
# where rounding decided them). Only faces within 0.1 mm of an edge: nothing a map resolves.
TIE = 1e-4


def depth_metrics(pred, true):
    """Depth errors of `pred` against `true` (same shape, metres, any number of images stacked).

    True pixels: finite and > 0. Estimated pixels: pred finite and > 0 (NaN or 0 = no estimate).
    Errors are over pixels both true and estimated: abs_rel = mean |p − t| / t, rmse (m),
    delta_1_25 = fraction with max(p/t, t/p) < 1.25; inlier_1_03 = fraction with |p − t| / t <
    1.03 % (MapAnything's "inlier ratio at a relative threshold of 1.03 %", tau); outlier_10 =
    fraction with |p − t| / t > 10 % (flying pixels and gross errors); coverage = estimated true
    pixels / true pixels. Errors are NaN when no pixel is both.
    """
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if pred.shape != true.shape:
        raise ValueError(f"pred {pred.shape} and true {true.shape} differ in shape")
    has_true = np.isfinite(true) & (true > 0)
    both = has_true & np.isfinite(pred) & (pred > 0)
    p, t = pred[both], true[both]
    n = p.size
    rel = np.abs(p - t) / t
    return {
        "abs_rel": float(np.mean(rel)) if n else float("nan"),
        "rmse": float(np.sqrt(np.mean((p - t) ** 2))) if n else float("nan"),
        "delta_1_25": float(np.mean(np.maximum(p / t, t / p) < 1.25)) if n else float("nan"),
        "inlier_1_03": float(np.mean(rel < 0.0103)) if n else float("nan"),
        "outlier_10": float(np.mean(rel > 0.10)) if n else float("nan"),
        "coverage": float(n / max(np.count_nonzero(has_true), 1)),
    }


def ate(estimated, true, align="sim3"):
    """Absolute trajectory error of positions estimated (N, 3) against true (N, 3), metres.

    align: "sim3" (rotation, translation and scale fitted, Umeyama), "se3" (rotation and
    translation) or "none". Returns rmse and max of the position error after alignment, the
    fitted scale (1 unless sim3) and the length of the true path (for a relative ATE = rmse / length).
    Alignment needs at least 3 positions not on one line (ValueError otherwise).
    """
    est, gt = np.asarray(estimated, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if est.shape != gt.shape or est.ndim != 2 or est.shape[1] != 3 or not len(est):
        raise ValueError(f"need (N, 3) estimated and true positions with N > 0, got {est.shape} and {gt.shape}")
    scale = 1.0
    if align in ("sim3", "se3"):
        fitted, rot, _ = similarity_parts(fit_similarity(est, gt))
        # The Umeyama rotation does not depend on the scale; only the translation does.
        scale = fitted if align == "sim3" else 1.0
        est = scale * est @ rot.T
        est = est + (gt.mean(axis=0) - est.mean(axis=0))
    elif align != "none":
        raise ValueError(f"align must be 'sim3', 'se3' or 'none', got {align!r}")
    err = np.linalg.norm(est - gt, axis=1)
    return {"rmse": float(np.sqrt(np.mean(err ** 2))), "max": float(err.max()), "scale": float(scale),
            "length": float(np.sum(np.linalg.norm(np.diff(gt, axis=0), axis=1)))}


def nearest_distance(query, ref, cell, max_distance=None):
    """Distance (N,) from each query point (N, 3) to its nearest ref point (M, 3), metres, exact.

    Grid search without a tree: ref points are bucketed in cubes of side `cell`; the 27 cubes
    around a query hold every ref point within `cell` of it, so a nearest found that close is
    the true one. Queries with none that close are searched again with cubes twice as large,
    until the cubes reach max_distance (distances beyond it may then be inf). Once the cubes are
    so large that the search would visit a quarter of all pairs, the remaining queries are
    compared with every ref point (blocked matrix products). inf when ref is empty. Cost is
    about N · 27 · (ref points per cube); pick `cell` near the distances of interest.
    """
    q = np.asarray(query, dtype=np.float64).reshape(-1, 3)
    r = np.asarray(ref, dtype=np.float64).reshape(-1, 3)
    cell = float(cell)
    if not cell > 0:
        raise ValueError(f"cell must be > 0, got {cell}")
    out = np.full(len(q), np.inf)
    todo = np.arange(len(q)) if len(r) else np.arange(0)
    while todo.size:
        d, exact = _grid_nearest(q[todo], r, cell)
        done = exact | (d <= cell)
        out[todo[done]] = d[done]
        todo = todo[~done]
        if max_distance is not None and cell >= max_distance:
            break
        cell *= 2.0
    return out


def _grid_nearest(q, r, cell):
    """(distance (N,) from q to the nearest r point among the 27 cubes of side `cell` around each
    q (inf when they are empty), whether that is the nearest of all (N,) bool)."""
    lo = np.minimum(q.min(axis=0), r.min(axis=0))
    qc = np.floor((q - lo) / cell).astype(np.int64) + 1  # + 1: neighbours of cube 0 stay >= 0
    rc = np.floor((r - lo) / cell).astype(np.int64) + 1
    dims = np.maximum(qc.max(axis=0), rc.max(axis=0)) + 2
    rkey = np.ravel_multi_index(rc.T, dims)
    order = np.argsort(rkey, kind="stable")
    rkey = rkey[order]
    nkey = np.ravel_multi_index((qc[:, None, :] + _NEIGHBOURS).transpose(2, 0, 1), dims)  # (N, 27)
    first = np.searchsorted(rkey, nkey, side="left")
    count = np.searchsorted(rkey, nkey, side="right") - first
    per_query = count.sum(axis=1)
    if per_query.sum() > 0.25 * len(q) * len(r):
        return _brute_nearest(q, r), np.ones(len(q), dtype=bool)
    best = np.full(len(q), np.inf)
    bounds = np.searchsorted(np.cumsum(per_query), np.arange(_PAIR_BUDGET, per_query.sum(), _PAIR_BUDGET))
    for a, b in zip(np.r_[0, bounds + 1], np.r_[bounds + 1, len(q)]):
        if a >= b:
            continue
        c, f = count[a:b].reshape(-1), first[a:b].reshape(-1)
        total = int(c.sum())
        if not total:
            continue
        within = np.arange(total) - np.repeat(np.cumsum(c) - c, c)
        ri = order[np.repeat(f, c) + within]
        n = per_query[a:b]
        qi = np.repeat(np.arange(a, b), n)
        d2 = np.sum((q[qi] - r[ri]) ** 2, axis=1)
        has = n > 0
        best[a:b][has] = np.minimum.reduceat(d2, (np.cumsum(n) - n)[has])
    return np.sqrt(best), np.zeros(len(q), dtype=bool)


def _brute_nearest(q, r):
    """Distance (N,) from q to the nearest of all r points: the nearest is chosen on
    |q|² − 2 q·r + |r|² (matrix products, in blocks), its distance recomputed directly."""
    out = np.empty(len(q))
    r2 = np.sum(r ** 2, axis=1)
    step = max(1, _PAIR_BUDGET // len(r))
    for a in range(0, len(q), step):
        block = q[a:a + step]
        nearest = np.argmin(r2[None] - 2.0 * block @ r.T, axis=1)
        out[a:a + step] = np.linalg.norm(block - r[nearest], axis=1)
    return out


def map_metrics(map_points, surface_points, threshold):
    """Map quality against dense samples of the true surface (both (N, 3) world points, metres).

    accuracy_mean / accuracy_median: distance from map points to the nearest surface sample;
    precision: fraction of map points within `threshold` of the surface; far_off: fraction more
    than 2 · threshold off; completeness: fraction of surface samples within `threshold` of a map
    point; points: the map's point count. NaN accuracy, precision and far_off for an empty map.
    """
    map_points = np.asarray(map_points, dtype=np.float64).reshape(-1, 3)
    surface = np.asarray(surface_points, dtype=np.float64).reshape(-1, 3)
    if not len(surface):
        raise ValueError("no surface samples")
    acc = nearest_distance(map_points, surface, threshold)
    comp = nearest_distance(surface, map_points, threshold, max_distance=threshold)
    has_map = len(map_points) > 0
    return {
        "accuracy_mean": float(acc.mean()) if has_map else float("nan"),
        "accuracy_median": float(np.median(acc)) if has_map else float("nan"),
        "precision": float(np.mean(acc <= threshold)) if has_map else float("nan"),
        "far_off": float(np.mean(acc > 2 * threshold)) if has_map else float("nan"),
        "completeness": float(np.mean(comp <= threshold)),
        "threshold": float(threshold),
        "points": len(map_points),
    }


def occupancy_metrics(grid, solid):
    """An occupancy grid against the truth: grid a mapping.Grid2D (-1 / 0 / 100); solid(centres (N,
    2), margin) -> (N,) bool, whether anything solid lies within `margin` metres in x and y of each
    point (see synthetic.Room.solid_near). A cell is solid when something solid lies within half a
    cell of its centre, free otherwise; a tie (a solid face within TIE of its edge) is left out,
    neither right nor wrong. Over the other cells the grid knows (not -1): iou = |occupied in both|
    / |occupied in either|, free_wrong = share of cells called free that are solid (obstacles a
    planner would drive into), occupied_wrong = share of cells called occupied that are free;
    known = how many cells the grid knows, ties = how many of them are ties."""
    cells = np.asarray(grid.cells).reshape(-1)
    known = cells != Grid2D.UNKNOWN
    called = cells[known] == Grid2D.OCCUPIED
    truth, tie = _truth(solid, _centres(grid.cells.shape, grid.origin, grid.resolution)[known], grid.resolution,
                        called)
    occupied, truth = called[~tie], truth[~tie]
    union = np.count_nonzero(occupied | truth)
    return {
        "iou": float(np.count_nonzero(occupied & truth) / union) if union else float("nan"),
        "free_wrong": float(np.mean(truth[~occupied])) if np.any(~occupied) else float("nan"),
        "occupied_wrong": float(np.mean(~truth[occupied])) if np.any(occupied) else float("nan"),
        "known": int(np.count_nonzero(known)),
        "ties": int(np.count_nonzero(tie)),
    }


def _truth(solid, centres, resolution, called):
    """((N,) bool whether the cells of `resolution` metres at centres (N, 2) are solid, a tie
    taking `called` (N,) bool, the grid's call; (N,) bool which are ties) (occupancy_metrics)."""
    half = resolution / 2
    inner = np.asarray(solid(centres, half - TIE), bool)
    tie = inner != np.asarray(solid(centres, half + TIE), bool)
    return np.where(tie, called, inner), tie


def _centres(shape, origin, resolution, pad=0):
    """(H·W, 2) centres (x, y) metres of a grid's cells in row-major order (rows along y), with `pad`
    more cells on every side."""
    rows, cols = np.indices((shape[0] + 2 * pad, shape[1] + 2 * pad)).reshape(2, -1)
    return (np.column_stack([cols, rows]) - pad + 0.5) * resolution + np.asarray(origin)


def distance_metrics(field, solid, max_distance):
    """A mapping.DistanceSlice (made with max_distance) against the truth; solid as for
    occupancy_metrics. The true distances are the same transform of the truth's own grid, over the
    slice's cells and max_distance around them (obstacles the map never saw count too; a tie takes
    the slice's call where it knows the cell, occupied at distance 0, else is free). Over the
    cells the slice knows: mae = mean |distance - true distance| (m), over = share of cells whose
    distance exceeds the truth's by more than a cell (clearance a planner would wrongly count on),
    under = share below it by more than a cell."""
    d = np.asarray(field.distance)
    res = field.resolution
    pad = int(np.ceil(max_distance / res))
    shape = (d.shape[0] + 2 * pad, d.shape[1] + 2 * pad)
    called = np.pad(d == 0, pad).reshape(-1)  # NaN (unknown) is not 0
    truth, _ = _truth(solid, _centres(d.shape, field.origin, res, pad), res, called)
    cells = np.where(truth, Grid2D.OCCUPIED, Grid2D.FREE).astype(np.int8).reshape(shape)
    origin = (field.origin[0] - pad * res, field.origin[1] - pad * res)
    truth = distance_slice(Grid2D(cells, origin, res), max_distance).distance[pad:shape[0] - pad, pad:shape[1] - pad]
    known = np.isfinite(d)
    error = d[known] - truth[known]
    nan = float("nan")
    return {
        "mae": float(np.abs(error).mean()) if error.size else nan,
        "over": float(np.mean(error > res + 1e-6)) if error.size else nan,
        "under": float(np.mean(error < -res - 1e-6)) if error.size else nan,
    }


def ghost_metrics(grid, points, boxes, solid, surface_distance, threshold, margin):
    """What a map kept of an object that has moved away. boxes: corners (lo (K, 3), hi (K, 3)) of
    the places it stood at; grid a mapping.Grid2D; points (N, 3) the map's surface points (world,
    metres); solid (as for occupancy_metrics) and surface_distance(points (N, 3)) -> (N,) metres:
    the truth as it is now. Counted where the object stood and nothing stands now (cells whose
    centre lies in a footprint and with nothing solid within `margin` metres of it, in x and y; the
    occupancy rule calls the cell in front of a surface occupied on purpose, and occupancy_metrics
    judges those): ghost_cells = those the grid calls occupied, cleared_cells = those it calls
    free, old_cells = all of them;
    ghost_points = map points inside a box that are more than `threshold` from the true surface
    now (the floor under it is no ghost)."""
    lo, hi = (np.asarray(a, float).reshape(-1, 3) for a in boxes)
    cells = np.asarray(grid.cells)
    centres = _centres(cells.shape, grid.origin, grid.resolution)
    inside = np.zeros(len(centres), bool)
    for a, b in zip(lo, hi):
        inside |= np.all((centres >= a[:2]) & (centres <= b[:2]), axis=1)
    old = np.flatnonzero(inside)
    old = old[~np.asarray(solid(centres[old], margin), bool)]
    values = cells.reshape(-1)[old]
    p = np.asarray(points, float).reshape(-1, 3)
    within = np.zeros(len(p), bool)
    for a, b in zip(lo, hi):
        within |= np.all((p >= a) & (p <= b), axis=1)
    ghosts = np.count_nonzero(np.asarray(surface_distance(p[within])) > threshold) if within.any() else 0
    return {"ghost_cells": int(np.count_nonzero(values == Grid2D.OCCUPIED)),
            "cleared_cells": int(np.count_nonzero(values == Grid2D.FREE)),
            "old_cells": int(len(old)), "ghost_points": int(ghosts)}


@dataclass
class GroundTruth:
    """Ground truth of a synthetic bag: per camera (frame id) and stamp (int ns), the true z-depth
    (H, W) float32 metres (NaN = none) and world_from_camera 4x4 (optical frame); the true
    surface samples (N, 3) float64 in world_frame."""

    world_frame: str = ""
    depth: dict = field(default_factory=dict)
    poses: dict = field(default_factory=dict)
    surface: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))

    @property
    def cameras(self):
        """Camera frame ids with ground truth, sorted."""
        return sorted(set(self.depth) | set(self.poses))


def read_ground_truth(bag_path):
    """GroundTruth of a rosbag2 written by bag.synthetic.write_synthetic_bag (MCAP or sqlite3)."""
    # Bag reading needs rosbags; imported here so the metrics above stay numpy-only.
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import get_typestore

    from .bag.synthetic import TYPESTORE
    from .decode import stamp_ns
    from .layout import SURFACE_TOPIC, TRUTH_PREFIX

    gt = GroundTruth()
    prefix = TRUTH_PREFIX + "/"
    with AnyReader([bag_path], default_typestore=get_typestore(TYPESTORE)) as reader:
        conns = [c for c in reader.connections if c.topic.startswith(prefix)]
        for conn, _, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            stamp = stamp_ns(msg.header)
            if conn.topic == SURFACE_TOPIC:
                gt.surface = cloud_xyz(msg)
                gt.world_frame = msg.header.frame_id
                continue
            camera, kind = conn.topic[len(prefix):].rsplit("/", 1)
            if kind == "depth":
                gt.depth.setdefault(camera, {})[stamp] = depth_32fc1(msg)
            elif kind == "pose":
                p, o = msg.pose.position, msg.pose.orientation
                gt.poses.setdefault(camera, {})[stamp] = pose_from_quat_trans([o.x, o.y, o.z, o.w], [p.x, p.y, p.z])
                gt.world_frame = msg.header.frame_id
    return gt


def depth_32fc1(msg):
    """(H, W) float32 array of a 32FC1 sensor_msgs/Image (any row step, either byte order)."""
    if msg.encoding != "32FC1":
        raise ValueError(f"expected a 32FC1 depth image, got {msg.encoding!r}")
    rows = np.asarray(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)
    pixels = np.ascontiguousarray(rows[:, :4 * msg.width]).view(">f4" if msg.is_bigendian else "<f4")
    return pixels.astype(np.float32)


def cloud_xyz(msg):
    """(N, 3) float64 x, y, z of a sensor_msgs/PointCloud2 with float32 x, y, z fields."""
    offsets = {f.name: f.offset for f in msg.fields}
    n = msg.width * msg.height
    dtype = np.dtype({"names": list("xyz"), "formats": [">f4" if msg.is_bigendian else "<f4"] * 3,
                      "offsets": [offsets[k] for k in "xyz"], "itemsize": msg.point_step})
    rows = np.asarray(msg.data, dtype=np.uint8).reshape(msg.height, msg.row_step)[:, :msg.width * msg.point_step]
    pts = np.frombuffer(rows.tobytes(), dtype, n)
    return np.stack([pts[k] for k in "xyz"], -1).astype(np.float64)


def evaluate(out_dir, bag_path, threshold=0.05, with_map=True):
    """Compare a replay's outputs (out_dir, replay.replay) with the ground truth of a synthetic bag.

    depth: evaluation.depth_metrics over every written keyframe depth with a true depth at the same
    camera and stamp (16-bit PNG values, so within 0.5 mm of what was computed); raw_depth: the same
    for the network's own depth when the replay wrote it (replay's raw_depth), else None; ate: of
    the refined keyframe positions of all cameras, without alignment when the poses are in the
    world frame, else Sim(3)-aligned (image-only: the chain's frame has no relation to the world),
    its "length" the longest camera's true path between its keyframes; map: evaluation.map_metrics
    of map.ply at `threshold` metres (None when not with_map), carried, when the trajectory was
    aligned, by a Sim(3) fitted on the keyframes of the map's own segment (those since it was last
    cleared), or None with "map_skipped" saying why when those cannot fix one (fit_similarity's
    rule: at least 3, not on a line). Returns the metrics dict and writes it to out_dir/eval.json.
    """
    from . import layout, outputs
    from .geometry.transforms import transform_points
    from .mapping.ply import read_ply

    out = Path(out_dir)
    summary = json.loads((out / "summary.json").read_text())
    gt = read_ground_truth(Path(bag_path))
    if not gt.depth and not gt.poses:
        raise ValueError(f"{bag_path}: no ground truth topics ({layout.TRUTH_PREFIX}/...)")
    pred, raw, true, est, ref, stamps_all, lengths, unmatched = [], [], [], [], [], [], [0.0], 0
    for frame_id, cam in summary["cameras"].items():
        truth = gt.depth.get(frame_id, {})
        for path in sorted((out / cam["depth"]).glob("*.png")):
            t = truth.get(int(path.stem))
            if t is None:
                unmatched += 1
                continue
            pred.append(outputs.read_depth_png(path).ravel())
            true.append(t.ravel())
            if cam.get("raw_depth"):
                raw.append(outputs.read_depth_png(out / cam["raw_depth"] / path.name).ravel())
        stamps, poses = outputs.read_tum(out / cam["trajectory"])
        path = []
        for stamp, pose in zip(stamps, poses):
            t = gt.poses.get(frame_id, {}).get(int(stamp))
            if t is not None:
                est.append(pose[:3, 3])
                ref.append(t[:3, 3])
                stamps_all.append(int(stamp))
                path.append(t[:3, 3])
        if len(path) > 1:
            lengths.append(float(np.sum(np.linalg.norm(np.diff(path, axis=0), axis=1))))
    world = summary["pose_frame"] == summary["parameters"]["world_frame"]
    align = "none" if world else "sim3"
    result = {"bag": str(bag_path), "keyframe_depths": len(pred), "unmatched_depths": unmatched,
              "depth": depth_metrics(np.concatenate(pred), np.concatenate(true)) if pred else None,
              "raw_depth": depth_metrics(np.concatenate(raw), np.concatenate(true)) if raw else None,
              "poses": len(est),
              "ate": dict(ate(np.array(est), np.array(ref), align=align), align=align, length=max(lengths))
              if est else None, "map": None}
    if not (with_map and len(gt.surface)):
        return _written(out, result)
    points, _, _ = read_ply(out / summary["outputs"]["map"])
    if align == "sim3":
        since = summary.get("map_since_ns") or 0
        mine = np.array([s >= since for s in stamps_all], bool)
        try:
            world_from_map = fit_similarity(np.array(est).reshape(-1, 3)[mine], np.array(ref).reshape(-1, 3)[mine])
        except ValueError as err:  # fewer than 3 positions, or on a line
            result["map_skipped"] = f"the map's segment does not fix a similarity to the world: {err}"
            return _written(out, result)
        points = transform_points(world_from_map, points)
    result["map"] = map_metrics(points, gt.surface, threshold)
    return _written(out, result)


def _written(out, result):
    """result, written to out/eval.json."""
    from .outputs import write_json

    write_json(out / "eval.json", result)
    return result
