"""The network as ONNX graphs (export with torch.onnx) and their execution with onnxruntime.

Graph split, so that the image-encoder feature cache keeps working:
- `encoder.onnx`: img (N, 3, H, W) -> features (N, C, h, w), tokens (N, C, T). N is dynamic
  (a sliding window encodes only its new images). The position embedding of H x W is a
  constant of the graph, so H and W are fixed at export.
- one multi-view graph per input combination (`images.onnx`, `rays_poses.onnx`,
  `rays_poses_depth.onnx`, ...): features, tokens and the optional inputs of
  `MapAnything.fuse` (rays, ray_mask; depth, depth_mask, depth_scale_mask; quats, trans,
  pose_mask, pose_scale_mask) -> the `MapAnything.forward` outputs of all views stacked
  (V rows). Per-view masks express views without an input and the metric-scale flags, so a
  graph also serves every subset of its combination (at the cost of running its encoders on
  masked views). One sample per call (B = 1); V is dynamic with --dynamic-views, else fixed, and
  the graph takes a `view_mask`: OnnxMapAnything pads a window of fewer views with views that no
  token attends to (MultiViewTransformer.forward), so their outputs are those of the real views.
`manifest.json` beside the graphs records the config, the image size and the graphs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from .cache import FeatureCache, encode_cached
from .inputs import MODALITIES, frame_ids, geometric_inputs, modalities, validate_views
from .network import MapAnything, split_views

OUTPUTS = ("ray_directions", "depth_along_ray", "pts3d_cam", "cam_trans", "cam_quats", "pts3d",
           "metric_scaling_factor", "conf", "non_ambiguous_mask_logits", "non_ambiguous_mask")
INPUTS = {"rays": ("rays", "ray_mask"), "depth": ("depth", "depth_mask", "depth_scale_mask"),
          "poses": ("quats", "trans", "pose_mask", "pose_scale_mask")}
NODE_COMBINATIONS = (frozenset(), frozenset({"rays", "poses"}), frozenset({"rays", "poses", "depth"}))
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider"}
MANIFEST = "manifest.json"
EXPORTERS = ("dynamo", "torchscript")
OPSET = 18
EXTERNAL_DATA_BYTES = 1 << 30  # graphs with more weights keep them in a .data file (protobuf limit 2 GiB)


def combination_name(combo: Iterable[str]) -> str:
    """"images" for no optional input, else the modalities joined by "_" in MODALITIES order."""
    combo = set(combo)
    unknown = combo - set(MODALITIES)
    if unknown:
        raise ValueError(f"unknown inputs {sorted(unknown)}; expected a subset of {list(MODALITIES)}")
    return "_".join(m for m in MODALITIES if m in combo) or "images"


def parse_combination(text: str) -> frozenset[str]:
    """"images", "rays+poses", "rays+poses+depth", ... -> the set of optional modalities."""
    parts = [p for p in text.replace("_", "+").split("+") if p and p != "images"]
    combination_name(parts)  # validates
    return frozenset(parts)


class _EncoderGraph(nn.Module):
    def __init__(self, model: MapAnything, height: int, width: int):
        super().__init__()
        self.vit = model.encoder.model
        p = model.cfg.patch_size
        with torch.no_grad():
            pos = self.vit.position_embedding(height // p, width // p, torch.float32)
        self.register_buffer("pos", pos.detach().clone())

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vit(img, self.pos)


class _MultiViewGraph(nn.Module):
    def __init__(self, model: MapAnything, height: int, width: int):
        super().__init__()
        self.model = model
        self.size = (height, width)

    def forward(self, features, tokens, rays=None, ray_mask=None, depth=None, depth_mask=None,
                depth_scale_mask=None, quats=None, trans=None, pose_mask=None, pose_scale_mask=None,
                view_mask=None):
        given = {k: v for k, v in dict(rays=rays, ray_mask=ray_mask, depth=depth, depth_mask=depth_mask,
                                       depth_scale_mask=depth_scale_mask, quats=quats, trans=trans,
                                       pose_mask=pose_mask, pose_scale_mask=pose_scale_mask).items()
                 if v is not None}
        num_views = features.shape[0]
        fused = self.model.fuse(features, num_views, **given)
        final, intermediates = self.model.share_information(fused, tokens, num_views, view_mask)
        out = self.model.heads(fused, final, intermediates, num_views, self.size)
        return tuple(out[k] for k in OUTPUTS)


def _example_views(num_views: int, height: int, width: int, combo: frozenset[str]) -> list[dict]:
    """Random but valid inputs for tracing (metric flags mixed, so no branch is folded away)."""
    gen = torch.Generator().manual_seed(0)
    views = []
    for v in range(num_views):
        view = {"img": torch.randn(1, 3, height, width, generator=gen),
                "is_metric_scale": torch.tensor([v % 2 == 0])}
        if "rays" in combo:
            rays = torch.randn(1, height, width, 3, generator=gen) * 0.2 + torch.tensor([0.0, 0.0, 1.0])
            view["ray_directions_cam"] = rays / rays.norm(dim=-1, keepdim=True)
        if "depth" in combo:
            view["depth_along_ray"] = torch.rand(1, height, width, 1, generator=gen) * 5
        if "poses" in combo:
            q = torch.randn(1, 4, generator=gen)
            view["camera_pose_quats"] = q / q.norm()
            view["camera_pose_trans"] = torch.randn(1, 3, generator=gen)
        views.append(view)
    return views


def _param_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def export_onnx(model: MapAnything, out_dir, num_views: int, height: int, width: int,
                dynamic_views: bool = False, combinations: Sequence[frozenset[str]] = NODE_COMBINATIONS,
                exporter: str = "dynamo") -> dict:
    """Write encoder.onnx, one multi-view graph per input combination and manifest.json to
    `out_dir`; returns the manifest (with export seconds per graph). H and W must be multiples
    of the patch size. exporter: "dynamo" (torch.onnx.export(dynamo=True): torch.export +
    onnxscript, the supported one) or "torchscript" (dynamo=False: deprecated since torch 2.9,
    still in 2.13, ~10x faster to export, no onnxscript needed); opset 18 for both."""
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    model = model.eval().requires_grad_(False)
    patch = model.cfg.patch_size
    if height % patch or width % patch:
        raise ValueError(f"height {height} and width {width} must be multiples of {patch}")
    if num_views < 1:
        raise ValueError(f"--views must be >= 1, got {num_views}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trace_views = max(num_views, 2) if dynamic_views else num_views  # torch.export specialises 1
    views_dim = torch.export.Dim("views", min=1, max=256) if dynamic_views else None
    images_dim = torch.export.Dim("images", min=1, max=256)
    seconds = {}

    encoder = _EncoderGraph(model, height, width).eval()
    img = torch.randn(2, 3, height, width)
    start = time.perf_counter()
    _export(exporter, encoder, (img,), {}, ["img"], ["features", "tokens"], {"img": images_dim},
            out / "encoder.onnx", _param_bytes(encoder))
    seconds["encoder"] = time.perf_counter() - start

    graphs = {}
    multi = _MultiViewGraph(model, height, width).eval()
    for combo in combinations:
        name = combination_name(combo)
        views = _example_views(trace_views, height, width, combo)
        with torch.no_grad():
            feats, tokens = model.encoder(torch.cat([v["img"] for v in views]))
        extra = geometric_inputs(views, include=combo)
        if not dynamic_views:  # fewer views than exported: padding that no token attends to
            extra["view_mask"] = torch.arange(trace_views) < max(trace_views - 1, 1)
        names = ["features", "tokens", *extra]
        start = time.perf_counter()
        _export(exporter, multi, (feats, tokens), extra, names, list(OUTPUTS), dict.fromkeys(names, views_dim),
                out / f"{name}.onnx", _param_bytes(model) - _param_bytes(model.encoder))
        seconds[name] = time.perf_counter() - start
        graphs[name] = {"file": f"{name}.onnx", "inputs": sorted(combo), "feeds": names}

    manifest = {
        "format": 2, "config": model.config, "height": height, "width": width,
        "views": None if dynamic_views else num_views, "batch": 1,
        "encoder": "encoder.onnx", "graphs": graphs, "outputs": list(OUTPUTS),
        "exporter": f"torch.onnx.export(dynamo={exporter == 'dynamo'}), torch {torch.__version__}, opset {OPSET}",
        "export_seconds": {k: round(v, 2) for k, v in seconds.items()},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, allow_nan=True) + "\n")
    return manifest


def _export(exporter: str, module: nn.Module, args: tuple, kwargs: dict, names: list[str], outputs: list[str],
            dims: dict, path: Path, weight_bytes: int) -> None:
    """One graph; `dims`: input name -> torch.export.Dim of axis 0, or None (static)."""
    if exporter == "torchscript":
        axes = {n: {0: d.__name__} for n, d in dims.items() if d is not None}
        torch.onnx.export(module, args, str(path), kwargs=kwargs, dynamo=False, opset_version=OPSET,
                          input_names=names, output_names=outputs, dynamic_axes=axes or None)
        return
    shapes = {n: None if d is None else {0: d} for n, d in dims.items()}
    program = torch.onnx.export(module, args, kwargs=kwargs, dynamo=True, opset_version=OPSET, input_names=names,
                                output_names=outputs, dynamic_shapes=shapes)
    program.save(str(path), external_data=weight_bytes > EXTERNAL_DATA_BYTES)


def resolve_providers(names: Iterable[str]) -> list[str]:
    """onnxruntime provider names from aliases (cpu, cuda, tensorrt) or full names; raises
    ValueError naming the available ones when one is not installed."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    chosen = [PROVIDERS.get(n.strip().lower(), n.strip()) for n in names if n.strip()]
    missing = [n for n in chosen if n not in available]
    if not chosen or missing:
        raise ValueError(f"onnxruntime execution providers {missing or list(names)} are not available "
                         f"(onnxruntime {ort.__version__} has {available}; aliases: {sorted(PROVIDERS)})")
    return chosen


def _pad_rows(name: str, rows: torch.Tensor, pad: int) -> torch.Tensor:
    """`rows` (one per view) of the multi-view graph's input `name` and `pad` rows of padding: no
    input (masks False), identity quaternions, zeros elsewhere."""
    if not pad:
        return rows
    fill = torch.zeros((pad, *rows.shape[1:]), dtype=rows.dtype)
    if name == "quats":
        fill[:, 3] = 1.0
    return torch.cat([rows, fill])


class OnnxMapAnything:
    """The exported graphs of `directory` run with onnxruntime, called like `MapAnything.forward`.

    providers: execution providers in priority order (aliases cpu, cuda, tensorrt or ORT names);
    feature_cache_size: encoder outputs of that many images kept by frame id (as the torch
    model's `feature_cache`); threads: onnxruntime intra-op threads (0: its default).
    Counters `encoder_calls` / `images_encoded` as on the torch model. Inputs must have the
    exported image size; batches of B > 1 run one sample at a time.
    """

    def __init__(self, directory, providers: Sequence[str] = ("cpu",), feature_cache_size: int = 0,
                 threads: int = 0):
        import onnxruntime as ort

        from .config import parse_config

        self.directory = Path(directory)
        path = self.directory / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: export the graphs with "
                                    "`mapanything-ros export-onnx --weights DIR ... OUT_DIR`")
        try:
            self.manifest = json.loads(path.read_text())
            self.cfg = parse_config(self.manifest["config"])
            files = [self.manifest["encoder"], *(g["file"] for g in self.manifest["graphs"].values())]
        except (ValueError, KeyError, TypeError, AttributeError) as err:  # (json's errors are ValueErrors)
            raise ValueError(f"{path} is not a manifest export-onnx wrote: {err!r}") from None
        missing = [f for f in files if not (self.directory / str(f)).is_file()]
        if missing:  # (the graphs are loaded when first needed: a missing one failed every window then)
            raise FileNotFoundError(f"{self.directory}: {', '.join(map(str, missing))} missing (listed in {MANIFEST}); "
                                    "export the graphs again")
        self.providers = resolve_providers(providers)
        self._options = ort.SessionOptions()
        # without the CPU arena, memory held between windows of different sizes is returned:
        # small config, N = 8: peak RSS 0.80 instead of 1.19 GiB for ~3 % more time (bench_onnx.py)
        self._options.enable_cpu_mem_arena = False
        if threads:
            self._options.intra_op_num_threads = threads
            self._options.inter_op_num_threads = 1
        self._ort = ort
        self.encoder = self._session(self.manifest["encoder"])
        self._graphs: dict[str, object] = {}
        self.feature_cache = FeatureCache(feature_cache_size)
        self.encoder_calls = 0
        self.images_encoded = 0

    def _session(self, file: str):
        try:
            return self._ort.InferenceSession(str(self.directory / file), self._options, providers=self.providers)
        except self._ort.capi.onnxruntime_pybind11_state.InvalidProtobuf as err:
            raise ValueError(f"{self.directory / file} is not an ONNX graph: {err}") from None

    def graph_for(self, needed: frozenset[str]) -> tuple[str, object]:
        """(name, session) of the smallest exported graph taking every modality in `needed`."""
        fits = [(len(g["inputs"]), name) for name, g in self.manifest["graphs"].items()
                if needed <= set(g["inputs"])]
        if not fits:
            raise ValueError(f"no exported graph takes the inputs {sorted(needed)} (exported: "
                             f"{sorted(self.manifest['graphs'])}); export one with --inputs")
        name = min(fits)[1]
        if name not in self._graphs:
            self._graphs[name] = self._session(self.manifest["graphs"][name]["file"])
        return name, self._graphs[name]

    def _encode(self, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.encoder_calls += 1
        self.images_encoded += imgs.shape[0]
        feats, tokens = self.encoder.run(["features", "tokens"], {"img": imgs.float().contiguous().numpy()})
        return torch.from_numpy(feats), torch.from_numpy(tokens)

    def __call__(self, views: Sequence[dict], use_depth_scale: bool = True,
                 use_pose_scale: bool = True) -> list[dict[str, torch.Tensor]]:
        """Per-view outputs as `MapAnything.forward` returns them (CPU tensors)."""
        batch, height, width = validate_views(views, self.cfg.patch_size, self.cfg.vit.data_norm_type)
        size = (self.manifest["height"], self.manifest["width"])
        if (height, width) != tuple(size):
            raise ValueError(f"images are {height}x{width} but the graphs were exported for "
                             f"{size[0]}x{size[1]} (H x W)")
        n, fixed = len(views), self.manifest["views"]
        views = [{k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in view.items()} for view in views]
        name, session = self.graph_for(modalities(views))
        pad = 0 if fixed is None else fixed - n
        if pad < 0 or (pad and "view_mask" not in self.manifest["graphs"][name]["feeds"]):
            raise ValueError(f"{n} views but the graphs were exported for {'at most' if pad < 0 else 'exactly'} "
                             f"{fixed} (export again with --views {max(n, fixed)}, or --dynamic-views for any number)")
        combo = frozenset(self.manifest["graphs"][name]["inputs"])
        ids = [frame_ids(v, batch, i) for i, v in enumerate(views)]
        keys: list[Hashable | None] = [None if i is None else i[b] for i in ids for b in range(batch)]
        imgs = torch.cat([v["img"] for v in views])
        if self.feature_cache.max_items == 0 or all(k is None for k in keys):
            feats, tokens = self._encode(imgs)
        else:
            feats, tokens = encode_cached(self.feature_cache, imgs, keys, self._encode)
        wanted = {i.name for i in session.get_inputs()}
        samples = []
        for b in range(batch):
            rows = torch.arange(len(views)) * batch + b
            one = [{k: (v[b:b + 1] if isinstance(v, torch.Tensor) else v) for k, v in view.items()
                    if k != "frame_id"} for view in views]
            feed = {"features": feats[rows], "tokens": tokens[rows],
                    **geometric_inputs(one, use_depth_scale, use_pose_scale, include=combo)}
            if "view_mask" in wanted:
                feed = {k: _pad_rows(k, v, pad) for k, v in feed.items()}
                feed["view_mask"] = torch.arange(n + pad) < n
            feed = {k: v.contiguous().numpy() for k, v in feed.items() if k in wanted}
            out = dict(zip(OUTPUTS, (torch.from_numpy(a) for a in session.run(list(OUTPUTS), feed))))
            samples.append({k: v if k == "metric_scaling_factor" else v[:n] for k, v in out.items()})
        per_sample = [split_views(s, len(views)) for s in samples]
        return [{k: torch.cat([s[v][k] for s in per_sample]) for k in OUTPUTS} for v in range(len(views))]

    def describe(self) -> dict:
        """Diagnostics in the form of `Runtime.describe`: providers, onnxruntime version, threads."""
        return {"device": ",".join(self.encoder.get_providers()), "compute_dtype": "float32",
                "name": f"onnxruntime {self._ort.__version__}",
                "threads": self._options.intra_op_num_threads}
