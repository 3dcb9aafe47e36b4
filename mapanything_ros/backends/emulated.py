"""EmulatedBackend: the synthetic truth with the errors a real MapAnything network makes (an error model).

No weights can be run where the package is tested, and the oracle (backends.oracle) is exact, so
everything the package does to cope with a network's errors (alignment to LiDAR, keeping
measured depth, chaining image-only windows, the edge cut, map fusion) would only ever be judged
against a perfect prediction. This backend answers with the oracle's prediction spoiled the way a
feed-forward network spoils it, seeded and deterministic, ROS-free:

- a global metric scale error, log-normal, shared by the window's depths and translations (the
  network predicts one metric scale per window, paper eq. 1); the same image in another window
  gets a correlated but not identical error (CORRELATION);
- a per-view scale error of the depth (views of one window disagree a little);
- a smooth low-frequency log-depth field across the image (low-order polynomial, unit RMS);
- per-pixel relative noise that grows with depth: pixel · (1 + depth / NOISE_DEPTH_M);
- flying pixels: a fraction of the pixels at depth edges (EDGE_STEP) get a depth between the
  two surfaces, as a network's regression blends across discontinuities;
- ray (calibration) errors when the calibration is not given: a focal and a principal point error;
- pose errors (rotation, translation) of the non-reference views, consistent within a window,
  small when poses are given (the network regresses them back) and larger when it must find them;
- confidence >= 1 that follows what a network can see of its own error (pixel noise and flying
  pixels, not the global scale or the smooth field): 1 + 1 / (CONF_FLOOR + seen relative error).

How large each error is depends on what the network was given, as the paper reports it improving
with intrinsics, poses and sparse depth ("by a significant factor", MapAnything, Keetha et al.
2025, Sec. 4 and Figures 3-4: the rel, tau (inlier ratio at 1.03 %), ATE and AUC@5 metrics fall
in that order of regimes). The paper's text gives the order of the regimes but not its figures'
values, so the magnitudes of REGIMES are ASSUMPTIONS chosen to give a raw depth AbsRel of about
7-8 % from images only, about 3 % with calibration and metric poses and about 1.5-2 % with metric
sparse depth (the levels the error-model issue measured and the paper's Figure 4 ranks), and
benchmarked at 0.5x, 1x and 2x (`profile`). The model rewards the inputs the node passes, per
view and per window, no more: a view without depth in a window with depth gets the depth's
scale (one scale per window) but its own dense errors.
"""

import zlib
from collections import OrderedDict
from dataclasses import dataclass, replace

import numpy as np

from ..geometry import quat_to_matrix
from .oracle import OracleBackend
from .prediction import Backend, Prediction

NOISE_DEPTH_M = 4.0  # per-pixel relative noise doubles at this depth
EDGE_STEP = 0.10  # a relative depth step between 4-neighbours above this is a depth edge
CORRELATION = 0.7  # share of an image's dense errors (noise, field) that stays the same in every window
CONF_FLOOR = 0.005  # confidence = 1 + 1 / (CONF_FLOOR + seen relative error): at most 201
TRANSLATION_FLOOR_M = 0.05  # translation errors are relative to the baseline plus this
FRAMES_CACHED = 64


@dataclass(frozen=True)
class ErrorLevels:
    """One-sigma error magnitudes of one input regime at profile 1 (module doc; assumptions).

    window_scale, view_scale: log scale errors (≈ relative); warp: RMS of the smooth log-depth
    field; pixel: relative per-pixel noise at depth 0 (grows with depth); flying: fraction of
    depth-edge pixels that fly; ray: relative focal error of predicted rays when the calibration is
    not given (principal point error: half of it, in normalised image units); rotation_deg:
    per-view rotation error; translation: per-view translation error relative to the baseline.
    """

    window_scale: float
    view_scale: float
    warp: float
    pixel: float
    flying: float
    ray: float
    rotation_deg: float
    translation: float


# Rows by what the network is given (see regime()). Assumed values, ordered as the paper ranks the regimes.
REGIMES = {
    "images": ErrorLevels(0.08, 0.03, 0.04, 0.008, 0.5, 0.03, 1.5, 0.04),
    "intrinsics": ErrorLevels(0.06, 0.02, 0.03, 0.007, 0.5, 0.0, 1.0, 0.03),
    "poses": ErrorLevels(0.012, 0.015, 0.025, 0.005, 0.5, 0.0, 0.05, 0.002),
    "depth": ErrorLevels(0.006, 0.010, 0.015, 0.003, 0.4, 0.0, 0.5, 0.015),
    "poses+depth": ErrorLevels(0.006, 0.010, 0.015, 0.003, 0.4, 0.0, 0.05, 0.002),
}
PROFILES = (0.5, 1.0, 2.0)  # the benchmarked multipliers of every magnitude


def regime(intrinsics, poses, depth):
    """REGIMES key of a view given rays (intrinsics), poses and metric depth: the row of the
    strongest geometric input; without intrinsics the ray error of "images" is added (levels())."""
    if poses and depth:
        return "poses+depth"
    if depth:
        return "depth"
    if poses:
        return "poses"
    return "intrinsics" if intrinsics else "images"


def levels(intrinsics, poses, depth, profile=1.0):
    """ErrorLevels of a view given those inputs, every magnitude times `profile`."""
    row = REGIMES[regime(intrinsics, poses, depth)]
    if not intrinsics:
        row = replace(row, ray=REGIMES["images"].ray)
    return ErrorLevels(*(profile * v for v in row.__dict__.values()))


@dataclass(frozen=True, eq=False)
class _ImageErrors:
    """The error draws that belong to one image at one model size (the same in every window):
    warp (H, W) unit-RMS smooth field; noise (H, W) standard normal; seen (H, W) standard normal
    (the part of the confidence that does not follow the noise); edge (H, W) bool; other (H, W)
    ray depth of the neighbour across the edge; blend (H, W) position between the two surfaces;
    fly (H, W) uniform draw compared with ErrorLevels.flying."""

    warp: np.ndarray
    noise: np.ndarray
    seen: np.ndarray
    edge: np.ndarray
    other: np.ndarray
    blend: np.ndarray
    fly: np.ndarray


class EmulatedBackend(Backend):
    """The oracle's prediction of `scene` with the error model of the module doc.

    profile: multiplier of every magnitude (PROFILES are benchmarked); seed: the error draws
    (independent of the scene's seed); bias: a relative error added to every view's depth (e.g.
    0.1: 10 % too far), on top of the model. Deterministic: the same batch gives the same prediction.
    """

    def __init__(self, scene, profile=1.0, seed=0, bias=0.0):
        if not (np.isfinite(profile) and profile >= 0):
            raise ValueError(f"profile must be a finite number >= 0, got {profile}")
        if not (np.isfinite(bias) and bias > -1):
            raise ValueError(f"bias must be a finite number > -1, got {bias}")
        self.log_bias = float(np.log1p(bias))
        self.oracle = OracleBackend(scene)
        self.profile = float(profile)
        self.seed = int(seed)
        self._images = OrderedDict()  # (Frame.key, model size) -> _ImageErrors

    @property
    def scene(self):
        """The synthetic scene whose truth is spoiled."""
        return self.oracle.scene

    def predict(self, batch):
        truth = self.oracle.predict(batch)
        rng = np.random.default_rng(self._entropy("window", *[f.key for f in batch.frames]))
        # What each view was given (its dense errors and pose follow it) ...
        has_poses = ["camera_pose_quats" in p for p in batch.passed]
        has_depth = ["depth_along_ray" in p for p in batch.passed]
        intrinsics = ["ray_directions_cam" in p for p in batch.passed]
        # ... and one metric scale per window, set by the strongest metric input of any view.
        metric_poses = any(has_poses) and batch.forward_kwargs.get("use_pose_scale", True)
        metric_depth = any(has_depth) and batch.forward_kwargs.get("use_depth_scale", True)
        window = levels(all(intrinsics), metric_poses, metric_depth, self.profile)
        log_scale = rng.normal() * window.window_scale
        depth, rays, conf, poses = [], [], [], []
        for i, prep in enumerate(batch.prepared):
            err = levels(intrinsics[i], has_poses[i], has_depth[i], self.profile)
            d, r, c = self._view(prep, truth.depth_along_ray[i], truth.ray_directions[i], err, log_scale, rng)
            depth.append(d)
            rays.append(r)
            conf.append(c)
            poses.append(_pose_error(truth.ref_from_camera[i], i == 0, err, log_scale, rng))
        return Prediction(ray_directions=np.stack(rays), depth_along_ray=np.stack(depth),
                          ref_from_camera=np.stack(poses), confidence=np.stack(conf), mask=truth.mask,
                          metric_scale=float(np.exp(log_scale)))

    def _view(self, prep, true_depth, true_rays, err, log_scale, rng):
        """(ray depth, rays, confidence) of one view with its errors."""
        valid = prep.valid & (true_depth > 0)
        img = self._image(prep, true_depth)
        keep, fresh = np.sqrt(CORRELATION), np.sqrt(1.0 - CORRELATION)
        shape = true_depth.shape
        noise = keep * img.noise + fresh * rng.standard_normal(shape, dtype=np.float32)
        warp = keep * img.warp + fresh * _smooth_field(shape, rng)
        sigma = err.pixel * (1.0 + true_depth / NOISE_DEPTH_M)
        log_depth = self.log_bias + log_scale + rng.normal() * err.view_scale + err.warp * warp + sigma * noise
        flying = valid & img.edge & (img.fly < err.flying)
        base = np.where(flying, true_depth + img.blend * (img.other - true_depth), true_depth)
        depth = np.where(valid, base * np.exp(log_depth), 0.0).astype(np.float32)
        # What a network can tell about its own error: the pixel noise (partly) and flying pixels.
        seen = np.abs(sigma * (0.7 * noise + 0.3 * img.seen)) + np.where(flying, np.abs(base / np.where(
            valid, true_depth, 1.0) - 1.0), 0.0)
        conf = np.where(prep.valid, 1.0 + 1.0 / (CONF_FLOOR + seen), 1.0).astype(np.float32)
        rays = true_rays if err.ray == 0 else _ray_error(true_rays, err.ray, rng)
        return depth, rays, conf

    def _image(self, prep, true_depth):
        """The _ImageErrors of a prepared view (drawn once per image and model size)."""
        key = (prep.frame.key, prep.resize.out_size)
        if key not in self._images:
            rng = np.random.default_rng(self._entropy("image", prep.frame.key, prep.resize.out_size))
            shape = true_depth.shape
            edge, other = _depth_edges(true_depth)
            self._images[key] = _ImageErrors(
                warp=_smooth_field(shape, rng), noise=rng.standard_normal(shape, dtype=np.float32),
                seen=rng.standard_normal(shape, dtype=np.float32), edge=edge, other=other,
                blend=rng.uniform(0.2, 0.8, shape).astype(np.float32), fly=rng.uniform(size=shape).astype(np.float32))
            while len(self._images) > FRAMES_CACHED:
                self._images.popitem(last=False)
        return self._images[key]

    def _entropy(self, *parts):
        """Integer entropy for a numpy SeedSequence from the seed and (nested) ints and strings."""
        out = [self.seed]

        def add(part):
            if isinstance(part, str):
                out.append(zlib.crc32(part.encode()))
            elif isinstance(part, (tuple, list)):
                for p in part:
                    add(p)
            else:
                out.append(int(part) & 0xFFFFFFFFFFFFFFFF)

        add(parts)
        return out


def _smooth_field(shape, rng):
    """(H, W) float32 low-order polynomial field of normalised image coordinates, unit RMS."""
    h, w = shape
    y, x = np.meshgrid(np.linspace(-1, 1, h, dtype=np.float32), np.linspace(-1, 1, w, dtype=np.float32),
                       indexing="ij")
    c = rng.standard_normal(6).astype(np.float32)
    field = c[0] * x + c[1] * y + c[2] * (x * x - 1 / 3) + c[3] * (y * y - 1 / 3) + c[4] * x * y + c[5] * x * y * y
    rms = float(np.sqrt(np.mean(field * field)))
    return field / rms if rms > 0 else field


def _depth_edges(depth):
    """(edge (H, W) bool, other (H, W) float32): pixels whose 4-neighbour differs in depth by more
    than EDGE_STEP relative, and that neighbour's depth (the largest step); both valid (> 0)."""
    h, w = depth.shape
    best = np.zeros((h, w), np.float32)
    other = depth.astype(np.float32).copy()
    padded = np.pad(depth.astype(np.float32), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            n = padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
            step = np.where((n > 0) & (depth > 0), np.abs(np.log(n / depth)), 0.0)
            better = step > best
            best = np.where(better, step, best)
            other = np.where(better, n, other)
    return best > np.log1p(EDGE_STEP), other


def _ray_error(rays, focal, rng):
    """Rays (H, W, 3) float32 as a network would predict them without the calibration: a relative
    focal error (normal, sigma `focal`) and a principal point error (sigma focal / 2, normalised
    units), renormalised. Works for any ray, fisheye rays beyond 90 degrees included."""
    f = rng.normal() * focal
    cx, cy = rng.normal(size=2) * focal / 2
    r = np.asarray(rays, np.float32)
    out = r.copy()
    out[..., 0] += f * r[..., 0] + cx * r[..., 2]
    out[..., 1] += f * r[..., 1] + cy * r[..., 2]
    out /= np.linalg.norm(out, axis=-1, keepdims=True)
    return out


def _pose_error(ref_from_camera, reference, err, log_scale, rng):
    """A view's predicted ref_from_camera: the reference view stays the identity; the others get a
    rotation error and a translation error relative to their baseline; every translation carries
    the window's scale error."""
    pose = np.array(ref_from_camera, np.float64)
    if reference:
        return np.eye(4)
    half = rng.normal(size=3) * np.deg2rad(err.rotation_deg) / np.sqrt(3) / 2  # half the axis-angle vector
    angle = np.linalg.norm(half)
    quat = np.r_[half * (np.sin(angle) / angle if angle > 0 else 1.0), np.cos(angle)]  # x, y, z, w
    pose[:3, :3] = quat_to_matrix(quat) @ pose[:3, :3]
    t = pose[:3, 3]
    t = t + rng.normal(size=3) * err.translation * (np.linalg.norm(t) + TRANSLATION_FLOOR_M) / np.sqrt(3)
    pose[:3, 3] = np.exp(log_scale) * t
    return pose
