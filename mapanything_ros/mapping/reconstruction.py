"""Reconstruction: a Prediction turned into metric z-depth at each camera's native resolution,
world points with colour, and refined world-from-camera poses.

Scale. Prediction.depth_along_ray and the translations of Prediction.ref_from_camera are
already metric (the network multiplies them by its metric scale, see model.network), so they
are used as they are; `metric_scale` is only reported. An optional alignment to measured depth
scales depth, points and relative translations together (the reconstruction is scaled about
the reference camera), or the depth alone when every view was given a metric pose. Optional
depth completion (mapping.completion) then corrects each view's depth with its own measured
pixels.

z-depth uses the PREDICTED rays: z = depth_along_ray · ray_z. The predicted ray and depth
together define the predicted 3D point, so its z is what the points and the depth image agree
on; mixing the predicted depth with the calibration rays would give a point the model never
predicted (the two coincide when the model reproduces its input rays, as the oracle does).

Frame. With the reference view's world pose known (ViewBatch.reference_world_from_camera),
results are in the world frame (pose_frame "world"); otherwise in the reference camera's
optical frame ("reference_camera"). One similarity `outer` carries the prediction's reference
camera frame into pose_frame: world_from_reference · (alignment scale), and a chain's
similarity on top in image-only mode (`carried`).

Cost. Poses of every view are made at once (cheap). Native-resolution depth and confidence are
made only for the views asked for (the pipeline asks for the newest capture, the one it
publishes), each once, on first use (`view(i)`); model-resolution points of any view likewise
(`points(i)`, what the map and ~/points take), in float32.

Where it runs. With the prediction's dense outputs on a torch device off the CPU (a network
backend's ViewStacks on CUDA), the per-view work (validity, z-depth, points, native resampling
with the stencil, the discontinuity cut, keep_measured, the alignment's medians, the chain's depth
samples) runs there in torch, and only the published arrays come to the host: native depth and
confidence of the views asked for, model-resolution points, colour indices and confidence of the
views whose points are read, the chain's depth samples and the alignment's two figures. The
stencil tables go to the device once (geometry.arrays.tables). Otherwise it runs in numpy on the
host. Both are the same code (geometry.arrays spells the few operations that differ): torch on
the CPU costs 3.7 ms (640x480) to 4-6 ms (1280x720) more per window than numpy on the pipeline's
critical path (bench/bench_pipeline.py, one thread), so host arrays stay numpy; reconstruct's
`device` picks either explicitly (device="cpu" runs the device code on the CPU, as the tests do).

Native depth. The default ("bilinear") interpolates inverse z-depth between the model pixels
around each native pixel, in the normalised image plane: barycentric weights of the native
pixel's calibrated ray in a triangle of model pixels' rays (geometry.resample), which reproduces
planes exactly under any lens model, fisheyes included. It is edge-aware: where two of those
neighbours straddle a depth discontinuity, or one of them has no estimate, the native pixel gets
NaN rather than a flying pixel between the two surfaces. A discontinuity is a step in inverse
depth between adjacent model pixels that departs from the local slope (the steps before and
after it) by more than `edge_threshold` (5% by default) relative (geometry.Resize.to_native,
max_jump): for a depth edge from z1 to z2 > z1 that is z2/z1 - 1, while a steep but smooth
surface (a floor seen at a grazing angle) keeps its depth. Over the outer half pixel of the crop
the border triangle is extrapolated. "nearest" copies the nearest model pixel.
"""

from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np
import torch

from ..backends.prediction import ViewStack
from ..geometry import arrays
from ..geometry.camera import ModelPixels
from ..geometry.depth import MAX_DEPTH_M
from ..geometry.resize import edge_jumps
from ..geometry.resample import nearest, stencil
from ..geometry.similarity import similarity, similarity_parts, similarity_pose
from .completion import correct, implausible, significant
from .tsdf import RangeView

try:  # the compiled native resampling (CMakeLists.txt builds it); _to_native does the same in numpy
    from .. import _resample
except ImportError:
    _resample = None

DEPTH_MODES = ("nearest", "bilinear")
EDGE_NOISE_SIGMAS = 4.0
CONFIDENCE_SAMPLES = 25_000  # range_view estimates a view's median confidence on every k-th pixel, at least this many
# (exact on 200k network confidences: 2.3 ms; on 25k: 0.1 ms)


@dataclass(frozen=True, eq=False)
class ViewReconstruction:
    """One view's results.

    frame: the input window.Frame; depth (H, W) float32 metres, z-depth at the camera's native
    resolution, NaN where there is no estimate; confidence (H, W) float32, NaN likewise;
    world_from_camera 4x4 float64 (in Reconstruction.pose_frame); points (N, 3) float32 metres in
    Reconstruction.pose_frame, from the model-resolution pixels that are valid and in the mask;
    colors (N, 3) uint8 RGB of those pixels; point_confidence (N,) float32.
    """

    frame: object
    depth: np.ndarray
    confidence: np.ndarray
    world_from_camera: np.ndarray
    points: np.ndarray
    colors: np.ndarray
    point_confidence: np.ndarray


class Reconstruction:
    """A window's metric results; see the module doc.

    batch, prediction: what it was made from; pose_frame: "world", "reference_camera" or a
    chain's frame; outer: 4x4 similarity pose_frame_from_prediction (reference camera frame);
    metric_scale: the model's reported metric scale (already applied by it); scale: the
    alignment factor applied to the prediction (1.0 without alignment); residual: median
    |s·predicted - measured| / measured over measured model pixels after alignment, or None;
    selected: the indices `views` holds (reconstruct's `views`); device: the torch.device the
    per-view work runs on, or None (numpy on the host).
    """

    def __init__(self, batch, prediction, outer, pose_frame, *, selected, depth_mode, edge_threshold, keep_measured,
                 device=None, scale=1.0, residual=None, model_cache=None, completion=None,
                 edge_noise_sigmas=EDGE_NOISE_SIGMAS, depth_scale=1.0, _carried_from=None):
        self.batch, self.prediction = batch, prediction
        self.outer, self.pose_frame = outer, pose_frame
        self.metric_scale = float(prediction.metric_scale)
        self.scale, self.residual = float(scale), residual
        self.selected = tuple(selected)
        self.device = device
        self._options = depth_mode, edge_threshold, keep_measured
        self._completion, self._edge_noise, self._depth_scale = completion, edge_noise_sigmas, float(depth_scale)
        self._size = similarity_parts(outer)[0]
        self._views, self._points = {}, {}
        self._model_cache = {} if model_cache is None else model_cache  # shared by carried copies
        # Depth completion is fitted once, in the metric frame of the window (measured depth is
        # metric): carried copies (a chain's scale on top) share the fit and its results.
        base = _carried_from
        self._metric_size = self._size if base is None else base._metric_size
        self._final_cache = {} if base is None else base._final_cache
        self._corrections = {} if base is None else base._corrections
        self._refusals = {} if base is None else base._refusals  # refused(): fitted in the metric frame too
        self._jump_cache = {} if base is None else base._jump_cache  # _jumps: scale-free, shared too

    @property
    def frames(self):
        """Every view's window.Frame, in view order (reference first)."""
        return self.batch.frames

    @cached_property
    def poses(self):
        """(V, 4, 4) float64 refined world_from_camera of every view, in pose_frame."""
        return np.stack([similarity_pose(self.outer, rel) for rel in self.prediction.ref_from_camera])

    @property
    def views(self):
        """The ViewReconstructions of the selected views (made on first use)."""
        return tuple(self.view(i) for i in self.selected)

    def estimated(self, i):
        """How many of view i's model pixels have an estimate: within the network's mask, with a
        finite depth in (0, MAX_DEPTH_M] along a finite ray and a finite confidence (0: the view's
        outputs are empty)."""
        return len(self._model(i)[0])

    def carried(self, transform, pose_frame):
        """This reconstruction carried by the similarity `transform` (new_frame_from_pose_frame)."""
        depth_mode, edge_threshold, keep_measured = self._options
        return Reconstruction(self.batch, self.prediction, np.asarray(transform) @ self.outer, pose_frame,
                              selected=self.selected, depth_mode=depth_mode, edge_threshold=edge_threshold,
                              keep_measured=keep_measured, device=self.device, scale=self.scale,
                              residual=self.residual, model_cache=self._model_cache, completion=self._completion,
                              edge_noise_sigmas=self._edge_noise, depth_scale=self._depth_scale, _carried_from=self)

    def model_depth(self, i, step=1):
        """(H_m, W_m) float32 z-depth of view i at the model pixels, in pose_frame's scale, 0 where
        none, on the host; step > 1: only every step-th row and column from step // 2 (only they
        leave the device)."""
        return arrays.to_host(self._scaled_z(i)[step // 2::step, step // 2::step])

    def points(self, i):
        """(points (N, 3) float32 m in pose_frame, colors (N, 3) uint8, confidence (N,) float32) of
        view i's model pixels with an estimate."""
        if i not in self._points:
            index, _, conf, ratio = self._final(i)
            d, rays, _, _ = self._dense(i)
            pose = self.poses[i]
            rotation, translation = np.float32(pose[:3, :3] * self._size), np.float32(pose[:3, 3])
            rgbx = self.batch.prepared[i].rgbx
            if self.device is None:
                xyz, colors = _host_points(rays, d, index, ratio, rotation, translation, rgbx)
            else:
                cam = arrays.rows(rays.reshape(-1, 3), index)
                d = d.reshape(-1).take(index)
                cam *= (d if ratio is None else d * ratio)[:, None]
                xyz = arrays.affine_rows(arrays.astype(cam, np.float32), rotation, translation)
                colors = _rgb(rgbx.take(arrays.to_host(index)))
            self._points[i] = arrays.to_host(xyz), colors, arrays.to_host(conf)
        return self._points[i]

    def cloud(self, indices=None):
        """(points (N, 3), colors (N, 3), confidence (N,)) of views `indices` (None: the selected
        views) together, as `points` gives them."""
        parts = self.cloud_parts(indices)
        return parts[0] if len(parts) == 1 else tuple(np.concatenate(a) for a in zip(*parts))

    def cloud_parts(self, indices=None):
        """cloud(indices) view by view, not concatenated: a list of (points, colors, confidence) as
        `points` gives them (one empty part where there are no views)."""
        parts = [self.points(i) for i in (self.selected if indices is None else indices)]
        return parts or [(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.float32))]

    def range_view(self, i, confidence_quantile=0.0):
        """View i at the model pixels as a tsdf.RangeView for fusion (on the host): metres from the
        camera along the predicted rays in pose_frame's scale, the rays, the pose, the colours, and
        a weight per pixel: the network's confidence relative to the view's median, at most 1 (so a
        few confident pixels do not outweigh the rest), 0 where there is no estimate, for the least
        confident `confidence_quantile` of the view's pixels with one (0 <= q < 1; pixels tied at
        the cut are kept; the network's confidence has no absolute scale, so the cut is relative to
        the view's own; median and cut are estimated on every k-th pixel, at least CONFIDENCE_SAMPLES), or on a
        depth discontinuity (the edge test of the native depth, at the
        model pixels: flying pixels are no surface)."""
        index, z, conf, _ = self._final(i)
        rays = arrays.to_host(self._dense(i)[1]).astype(np.float32, copy=False)
        index, conf, z = arrays.to_host(index), arrays.to_host(conf), arrays.to_host(z)
        h, w = rays.shape[:2]
        # Range = z |ray| / ray_z (the final z carries depth scale and completion); 0 without an estimate.
        x, y, forward = rays[..., 0], rays[..., 1], rays[..., 2]
        ranges = x * x
        ranges += y * y
        ranges += forward * forward  # three strided passes: a third of einsum's time on (N, 3) float32
        with np.errstate(invalid="ignore", divide="ignore"):
            np.sqrt(ranges, out=ranges)
            ranges /= forward
            ranges *= z
        ranges *= np.float32(self._size)
        ranges[~(z > 0)] = 0
        weights = np.zeros(h * w, np.float32)
        if len(conf):  # (finite: _model)
            sample = conf[::max(1, len(conf) // CONFIDENCE_SAMPLES)]
            weights[index] = np.minimum(conf / np.float32(max(np.median(sample), 1e-12)), 1)
            cut = np.quantile(sample, confidence_quantile) if confidence_quantile > 0 else -np.inf
            weights[index[~(conf >= cut)]] = 0  # pixels tied at the cut are kept
        weights = weights.reshape(h, w)
        jumps = self._jumps(i)
        if jumps is not None:
            weights[_edges(*(arrays.to_host(j) for j in jumps), h, w)] = 0
        prep = self.batch.prepared[i]
        return RangeView(ranges, rays, ModelPixels(prep.frame.camera, prep.resize, self.batch.grid),
                         self.poses[i], prep.rgbx.view(np.uint8).reshape(h, w, 4), weights)  # RGB + a pad byte: no copy

    def view(self, i):
        """ViewReconstruction of view i at its camera's native resolution (made once)."""
        if i not in self._views:
            self._views[i] = self._native(i)
        return self._views[i]

    def _model(self, i):
        """(index (N,) flat model pixels with an estimate, z (H, W) float32 z-depth (0 = none),
        confidence (N,) float32) of view i, before any scaling, where the reconstruction runs
        (numpy, or tensors on `device`). Camera-frame points are left to `points`: the chain and
        the alignment read only z."""
        cache = self._model_cache
        if i not in cache:
            d, rays, conf, mask = self._dense(i)
            xp = arrays.namespace(d)
            with np.errstate(invalid="ignore"):  # NaN compares False; a diverged network's values have no estimate
                ok = arrays.like(self.batch.prepared[i].valid, d) & mask & (d > 0) & (d <= MAX_DEPTH_M)
                ok &= (rays[..., 2] > 0) & xp.isfinite(rays).all(-1) & xp.isfinite(conf)
            z = d * rays[..., 2]
            z[~ok] = 0  # z > 0 only at indexed pixels (_native relies on it; an indexed z may underflow to 0)
            index = arrays.flatnonzero(ok)
            cache[i] = index, arrays.astype(z, np.float32), arrays.astype(conf.reshape(-1).take(index), np.float32)
        return cache[i]

    def _dense(self, i, names=("depth_along_ray", "ray_directions", "confidence", "mask")):
        """The prediction's fields `names` of view i (by default (depth along the ray, rays,
        confidence, mask)): numpy, or tensors on `device` (a ViewStack's view stays where it is when
        it is there already)."""
        fields = [getattr(self.prediction, name) for name in names]
        if self.device is None:
            return tuple(f[i] for f in fields)
        return tuple(f.tensor(i).to(self.device) if isinstance(f, ViewStack) else arrays.to(f[i], self.device)
                     for f in fields)

    def correction(self, i):
        """The completion.Correction of view i (None without completion or without measured depth)."""
        self._final(i)
        return self._corrections.get(i)

    def refused(self, i):
        """The ratio of view i's measured depth to its prediction when it lies beyond
        completion.MAX_SCALE (a measurement in another unit: completion, the alignment and
        keep_measured use none of it), else None (also without measured depth)."""
        prep = self.batch.prepared[i]
        if prep.measured is None:
            return None
        if i not in self._refusals:
            fix = self.correction(i)
            if fix is not None:
                self._refusals[i] = fix.scale if fix.refused else None
            else:  # no completion: the prediction as it is (an alignment within MAX_SCALE only scales it)
                z = self._final(i)[1] * np.float32(self._metric_size)
                measured = arrays.like(prep.measured, z)
                both = (measured > 0) & (z > 0)  # where the reconstruction runs: only the ratio leaves the device
                ratio = float(arrays.median(measured[both] / z[both])) if bool(both.any()) else None
                self._refusals[i] = ratio if ratio is not None and implausible(ratio) else None
        return self._refusals[i]

    def _final(self, i):
        """(index, z, confidence, ratio): _model(i) times depth_scale (the alignment's, when it
        scales depth only), then depth completion (when configured and view i has measured depth):
        z times the correction's factor. ratio: final / model z at the indexed pixels (what the
        depth along the ray is multiplied by; (N,) or a number), None when unchanged. The correction
        is fitted on the host (model resolution)."""
        if i not in self._final_cache:
            index, z, conf = self._model(i)
            self._final_cache[i] = (index, *self._corrected(i, z, index, conf))
        return self._final_cache[i]

    def _corrected(self, i, z, index, conf):
        """(z, confidence, ratio) of view i after depth_scale and depth completion (see _final). Only
        multiplies z, so it stays 0 where there is no estimate (_native relies on it)."""
        ratio = None
        if self._depth_scale != 1.0:
            z, ratio = z * np.float32(self._depth_scale), np.float32(self._depth_scale)
        prep = self.batch.prepared[i]
        if self._completion is None or prep.measured is None:
            return z, conf, ratio
        host_conf = np.zeros(z.shape, np.float32)
        host_conf.reshape(-1)[arrays.to_host(index)] = arrays.to_host(conf)
        fix = correct(arrays.to_host(z) * np.float32(self._metric_size), prep.measured, host_conf, self._completion)
        if fix is None:
            return z, conf, ratio
        self._corrections[i] = fix
        if isinstance(fix.factor, np.ndarray):
            factor = arrays.like(fix.factor, z)
            step = factor.reshape(-1).take(index)
        else:
            factor = step = np.float32(fix.factor)
        # Measured values are not put back at the model pixels (points, map): a min-pooled LiDAR depth
        # on a model pixel's ray is off the surface by up to the agreement tolerance (map precision
        # at 5 cm on exact predictions 0.9995 -> 0.988 when they were; 0.654 -> 0.659 at profile 1).
        return z * factor, conf, step * (ratio or np.float32(1))

    def _scaled_z(self, i):
        """z of _final(i) in pose_frame's scale."""
        return self._final(i)[1] * np.float32(self._size)

    def _jumps(self, i):
        """The discontinuities of view i's final inverse z-depth at the model pixels (edge_jumps with
        _edge_threshold, where the reconstruction runs), or None without an edge threshold: made once,
        for the native depth (_to_native cuts them) and the map (range_view gives their pixels no
        weight: flying pixels are no surface). The test is relative, so scale-free: carried copies
        share it."""
        _, edge_threshold, _ = self._options
        if edge_threshold is None:
            return None
        if i not in self._jump_cache:
            z = self._final(i)[1]
            with np.errstate(divide="ignore"):
                inv = arrays.namespace(z).where(z > 0, 1 / z, np.nan)
            inv = arrays.astype(inv, np.float32)
            self._jump_cache[i] = edge_jumps(inv, _edge_threshold(inv, edge_threshold, self._edge_noise))
        return self._jump_cache[i]

    def _native(self, i):
        depth_mode, _, keep_measured = self._options
        prep = self.batch.prepared[i]
        z = self._final(i)[1]
        # The network's confidence as it is: _to_native reads it only where z > 0, which are the
        # pixels with an estimate (_model), whose confidence _final keeps: no map with NaN elsewhere
        # to scatter first.
        conf = arrays.astype(self._dense(i, ("confidence",))[0], np.float32)
        native, conf = _to_native(prep.frame.camera, prep.resize, self.batch.grid, z, conf, depth_mode,
                                  None if depth_mode == "nearest" else self._jumps(i))
        native *= np.float32(self._size)
        if keep_measured and prep.frame.sparse_depth is not None and self.refused(i) is None:
            measured = arrays.like(_measured(prep.frame.sparse_depth), native)
            if self._size != self._metric_size:  # a chain's scale on top of the metric window
                measured *= np.float32(self._size / self._metric_size)
            has = measured > 0
            fix = self._corrections.get(i)
            if fix is not None:  # only where the measurement agrees with the corrected prediction, as there
                with np.errstate(invalid="ignore", divide="ignore"):
                    has &= arrays.namespace(native).abs(measured / native - 1) < fix.tolerance
            native[has] = measured[has]
        xyz, colors, point_conf = self.points(i)
        return ViewReconstruction(prep.frame, arrays.to_host(native), arrays.to_host(conf), self.poses[i], xyz,
                                  colors, point_conf)


def reconstruct(batch, prediction, *, views=None, depth_mode="bilinear", edge_threshold=0.05, keep_measured=False,
                align_to_measured=False, device=None, completion=None, edge_noise_sigmas=EDGE_NOISE_SIGMAS):
    """Reconstruction of a window.ViewBatch from its backends.Prediction.

    views: indices of the views whose native results `Reconstruction.views` holds (None: all;
    others stay available through Reconstruction.view(i)). depth_mode: how model-resolution maps
    go back to the native resolution ("bilinear": edge-aware interpolation of inverse depth in
    the normalised image plane, see the module doc; "nearest" copies the nearest model pixel).
    edge_threshold: the relative depth step, beyond the local slope, between interpolated
    neighbours above which a native pixel gets NaN (None: plain interpolation, which blends
    across edges). Native confidence is resampled the same way and NaN wherever the native depth
    is; edge_noise_sigmas: the threshold is raised, per view, to that many robust sigmas of the
    map's own second differences of inverse depth (so a network's pixel noise is not read as
    edges; 0: the fixed threshold only). align_to_measured: fit one scale s = median(measured /
    predicted) over the model pixels of all views where the sparse depth (min-pooled to the
    model pixels) has a measurement and the prediction an estimate, and apply it: to the depths
    only when every view was given a metric pose (those translations are metric), else to depths
    and translations (the window's scale, about the reference camera). completion: a mapping.completion.CompletionConfig to
    correct each view's depth with its measured depth (per-view scale, smooth residual field;
    see that module), or None. keep_measured: put each frame's measured z-depth back at its
    measured native pixels exactly (confidence there stays the model's); with completion, only
    where it agrees with the corrected prediction. device: where the
    per-view work runs: a torch device (e.g. "cuda", or "cpu" for torch on the host), "numpy"
    (numpy on the host), None: the prediction's device when its dense fields are ViewStacks off
    the CPU, else "numpy".
    """
    if depth_mode not in DEPTH_MODES:
        raise ValueError(f"unknown depth_mode {depth_mode!r}; expected one of {DEPTH_MODES}")
    n = len(batch.prepared)
    if prediction.depth_along_ray.shape[0] != n:
        raise ValueError(f"prediction has {prediction.depth_along_ray.shape[0]} views, batch {n}")
    if device is None:
        stack = prediction.depth_along_ray
        device = stack.device if isinstance(stack, ViewStack) and stack.device.type != "cpu" else "numpy"
    device = None if device == "numpy" else torch.device(device)
    selected = range(n) if views is None else views
    world_from_ref = batch.reference_world_from_camera
    pose_frame = "reference_camera" if world_from_ref is None else "world"
    outer = np.eye(4) if world_from_ref is None else np.asarray(world_from_ref, np.float64)
    options = dict(selected=selected, depth_mode=depth_mode, edge_threshold=edge_threshold,
                   keep_measured=keep_measured, device=device, completion=completion,
                   edge_noise_sigmas=edge_noise_sigmas)
    if not align_to_measured:
        return Reconstruction(batch, prediction, outer, pose_frame, **options)
    recon = Reconstruction(batch, prediction, outer, pose_frame, **{**options, "completion": None})
    scale, residual = _align(recon)
    if residual is None:  # nothing to align to (completion then refuses a measurement in another unit too)
        return Reconstruction(batch, prediction, outer, pose_frame, model_cache=recon._model_cache, **options)
    if batch.forward_kwargs.get("use_pose_scale") and all("camera_pose_quats" in p for p in batch.passed):
        # Metric poses were given: their translations are metric, only the depth is scaled.
        return Reconstruction(batch, prediction, outer, pose_frame, scale=scale, residual=residual,
                              model_cache=recon._model_cache, depth_scale=scale, **options)
    return Reconstruction(batch, prediction, outer @ similarity(scale, np.eye(3), np.zeros(3)), pose_frame,
                          scale=scale, residual=residual, model_cache=recon._model_cache, **options)


def _to_native(camera, resize, grid, z, conf, mode, jumps):
    """(z-depth, confidence) at the native resolution, float32, NaN = none (and confidence NaN
    wherever the depth is), of the model-resolution z-depth (0 = none) and confidence, numpy or
    tensors (on their device). jumps: the model map's discontinuities (Reconstruction._jumps),
    whose native pixels get NaN, or None. A native pixel gets a value only where every model pixel
    it reads has z > 0, so the confidence is read only there (elsewhere it may hold anything).

    Bilinear works on inverse depth: it is affine in the normalised image coordinates of a plane
    (geometry.resample), and its steps are what the discontinuity test looks at. Both maps go
    through the same gathers (one complex64 map).
    """
    xp = arrays.namespace(z)
    if mode == "nearest":
        table = nearest(resize)
        out, conf = table.apply(xp.where(z > 0, z, np.nan)), table.apply(conf)
    else:
        with np.errstate(divide="ignore"):
            inv = xp.where(z > 0, 1 / z, np.nan)
        st = stencil(camera, resize, grid)
        if xp is np and _resample is not None:
            return _native_compiled(st, inv, conf, jumps)
        with np.errstate(invalid="ignore"):  # an infinite confidence times a weight's 0 imaginary part: NaN
            both = st.apply(arrays.complex_pair(inv, conf))
        out, conf = arrays.copy(both.real), arrays.copy(both.imag)
        if jumps is not None:
            out[st.cut_at(*jumps)] = np.nan
        arrays.reciprocal(out)
    out[~(out > 0)] = np.nan
    conf[xp.isnan(out)] = np.nan
    return out, conf


def _native_compiled(st, inv, conf, jumps):
    """_to_native's bilinear mode on the host through the compiled _resample.native: the same bits."""
    st.check(inv.shape)
    out, out_conf = np.empty(st.shape, np.float32), np.empty(st.shape, np.float32)
    across, down = (None, None) if jumps is None else (np.ascontiguousarray(j, bool) for j in jumps)
    flat = (np.ascontiguousarray(a, np.float32).reshape(-1) for a in (inv, conf))
    _resample.native(*flat, st.index, st.weight, st.cell, st.sides, across, down, st.model_size[0], out, out_conf)
    return out, out_conf


def _edge_threshold(inv, threshold, sigmas):
    """The discontinuity threshold for a map of inverse depth (H, W) (NaN = none): `threshold`, or
    `sigmas` robust sigmas of its relative second differences along rows when that is larger. A
    smooth surface's second differences are its noise (sqrt(6) × the per-pixel noise for white
    noise), so noise is not cut while a depth edge, a step far above them, still is."""
    if not sigmas:
        return threshold
    xp = arrays.namespace(inv)
    rows = inv[::4]  # a quarter of the rows: tens of thousands of differences, plenty for a median
    with np.errstate(invalid="ignore"):
        second = xp.abs(rows[:, 2:] - 2 * rows[:, 1:-1] + rows[:, :-2]) / rows[:, 1:-1]
    second = second[xp.isfinite(second)]
    if second.shape[0] < 16:
        return threshold
    return max(float(threshold), sigmas * 1.4826 * float(arrays.median(second)))


def _host_points(rays, depth, index, ratio, rotation, translation, rgbx):
    """(points (N, 3) float32, colours (N, 3) uint8) of host arrays: rays (H, W, 3) and depth along
    them (H, W) float32 at the model pixels, the `index` (N,) of those with an estimate, the depth's
    `ratio` there (None, a float32 or (N,) float32), world_from_camera's float32 rotation (3, 3) (with
    the window's scale) and translation (3,), the model image's rgbx (H * W,) uint32. The compiled
    _resample.points, or numpy in its order (float32: ((c0 r_j0 + c1 r_j1) + c2 r_j2) + t_j)."""
    index = np.ascontiguousarray(index, np.intp)
    rays, depth = np.ascontiguousarray(rays, np.float32).reshape(-1, 3), np.ascontiguousarray(depth, np.float32)
    rotation, translation = np.asarray(rotation, np.float32), np.asarray(translation, np.float32)
    if ratio is not None:
        ratio = np.asarray(ratio, np.float32)
    if _resample is not None:
        xyz, colors = np.empty((len(index), 3), np.float32), np.empty((len(index), 3), np.uint8)
        per_point = ratio is not None and np.ndim(ratio) > 0
        _resample.points(rays.reshape(-1), depth.reshape(-1), index,
                         np.ascontiguousarray(ratio, np.float32) if per_point else None,
                         1.0 if ratio is None or per_point else float(ratio), tuple(map(float, rotation.ravel())),
                         tuple(map(float, translation)), rgbx.view(np.uint8), xyz, colors)
        return xyz, colors
    bad = np.count_nonzero((index < 0) | (index >= depth.size))
    if bad:  # as the compiled pass reports it (numpy's take would wrap a negative index)
        raise ValueError(f"index: {bad} of {len(index)} outside the {depth.size} pixels")
    cam = rays.take(index, axis=0)
    d = depth.reshape(-1).take(index)
    xyz = np.empty_like(cam)
    with np.errstate(invalid="ignore", over="ignore"):  # an infinite depth: NaN, as the compiled pass gives
        cam *= (d if ratio is None else d * ratio)[:, None]
        x, y, z = cam[:, 0], cam[:, 1], cam[:, 2]
        for j in range(3):
            r = rotation[j]
            xyz[:, j] = ((x * r[0] + y * r[1]) + z * r[2]) + translation[j]
    return xyz, _rgb(rgbx.take(index))


def _rgb(rgbx):
    """(N, 3) C-contiguous uint8 RGB of (N,) uint32 RGB + a pad byte (in memory order), through one
    SIMD colour conversion of a single row (a strided copy of the three bytes is 30x slower)."""
    if not len(rgbx):
        return np.zeros((0, 3), np.uint8)
    return cv2.cvtColor(rgbx.view(np.uint8).reshape(1, -1, 4), cv2.COLOR_RGBA2RGB).reshape(-1, 3)


def _edges(across, down, h, w):
    """(H, W) bool: the pixels of an (H, W) map on either side of a discontinuity with a neighbour,
    from its geometry.resize.edge_jumps."""
    across, down = across[:-1].reshape(h, w), down[:-1].reshape(h, w)
    out = across | down
    out[:, 1:] |= across[:, :-1]
    out[1:] |= down[:-1]
    return out


def _measured(depth):
    """Measured z-depth (H, W) float32 with 0 where none."""
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float32, copy=False)


def _align(recon):
    """(scale, residual): median ratio measured / predicted over the model pixels having both
    (within completion.BIAS_FLOOR of 1: 1), and the median absolute relative error after scaling.
    (1.0, None) when no pixel has both, or when the ratio is beyond MAX_SCALE. Runs where recon
    does; only the two figures leave the device."""
    pred, meas = [], []
    for i, prep in enumerate(recon.batch.prepared):
        if prep.measured is None:
            continue
        z = recon._scaled_z(i)
        measured = arrays.like(prep.measured, z)
        both = (measured > 0) & (z > 0)
        pred.append(arrays.astype(z[both], np.float64))
        meas.append(arrays.astype(measured[both], np.float64))
    if not pred or sum(p.shape[0] for p in pred) == 0:
        return 1.0, None
    xp = arrays.namespace(pred[0])
    pred, meas = xp.concatenate(pred), xp.concatenate(meas)
    ratio = float(arrays.median(meas / pred))
    if implausible(ratio):  # a measurement in another unit, not a scale to fit
        return 1.0, None
    scale = float(np.exp(significant(np.log(ratio))))
    return scale, arrays.median(xp.abs(scale * pred - meas) / meas)
