"""MapAnything: images + optional geometry of V views -> metric 3D per view.

Checkpoint-compatible re-implementation of facebookresearch/map-anything `MapAnything`
(v1.1 architecture): DINOv2 encoder, geometric-input encoders fused by addition + LayerNorm,
alternating-attention multi-view transformer with a scale token, DPT dense head, pose head,
scale head. `state_dict()` keys are exactly the keys of the released `model.safetensors`.
The geometric encoders, the fusion and the heads always run in float32 (autocast disabled),
as upstream; only the image encoder and the transformer follow an enclosing autocast.
Views are stacked view-major: row v * B + b is sample b of view v.
"""

from collections.abc import Hashable, Sequence

import torch
from torch import nn

from .blocks import layer_norm
from .cache import FeatureCache, encode_cached
from .config import ModelConfig, parse_config
from .dpt import DPTFeature, DPTRegressor
from .geometric import (DenseEncoder, GlobalEncoder, log1p_norm, normalize_depth,
                        normalize_translations, quat_to_rotmat, relative_poses)
from .heads import PoseHead, ScaleHead, activate, dense_outputs, pose_outputs
from .inputs import frame_ids, geometric_inputs, validate_views
from .transformer import MultiViewTransformer, TransformerOutput
from .vit import ImageEncoder


def _float32_region(device: torch.device):
    return torch.autocast(device_type=device.type, enabled=False)


class MapAnything(nn.Module):
    """The network. `config` is the upstream `config.json` dict.

    Attributes: `config` (the dict given), `feature_cache` (FeatureCache, capacity
    `feature_cache_size` images, 0 = off), `encoder_calls` / `images_encoded` (counters of
    image-encoder runs and images encoded), `head_chunk` (None, or the number of view-samples per dense-head pass to bound memory).
    """

    def __init__(self, config: dict, feature_cache_size: int = 0):
        super().__init__()
        cfg = parse_config(config)
        self.config = config
        self.cfg: ModelConfig = cfg
        dim, patch = cfg.dim, cfg.patch_size
        self.encoder = ImageEncoder(cfg.vit)
        self.ray_dirs_encoder = DenseEncoder(3, dim, patch, cfg.ray_dims)
        self.depth_encoder = DenseEncoder(1, dim, patch, cfg.depth_dims)
        self.depth_scale_encoder = GlobalEncoder(1, dim, cfg.depth_scale_dims)
        self.cam_rot_encoder = GlobalEncoder(4, dim, cfg.rot_dims)
        self.cam_trans_encoder = GlobalEncoder(3, dim, cfg.trans_dims)
        self.cam_trans_scale_encoder = GlobalEncoder(1, dim, cfg.trans_scale_dims)
        self.fusion_norm_layer = layer_norm(dim)
        self.scale_token = nn.Parameter(torch.zeros(dim))
        self.info_sharing = MultiViewTransformer(cfg.transformer)
        width = cfg.transformer.dim
        self.dense_head = nn.ModuleList([
            DPTFeature((dim, width, width, width), cfg.dpt_layer_dims, cfg.dpt_feature_dim,
                       cfg.dpt_hooks),
            DPTRegressor(cfg.dpt_feature_dim, cfg.regressor_hidden, cfg.regressor_out),
        ])
        self.pose_head = PoseHead(width, patch, cfg.pose_res_blocks, cfg.rot_dim)
        self.scale_head = ScaleHead(width, cfg.scale_hidden, cfg.scale_layers)
        self.feature_cache = FeatureCache(feature_cache_size)
        self.encoder_calls = 0
        self.images_encoded = 0
        self.head_chunk: int | None = None

    def reset_buffers(self) -> None:
        """Recompute the buffers derived from the config (after building on the meta device
        and loading with assign=True, in case the file lacks them)."""
        self.info_sharing.reset_buffers()

    def clear_feature_cache(self) -> None:
        """Forget all cached image-encoder outputs."""
        self.feature_cache.clear()

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """nn.Module.load_state_dict that also clears the feature cache (weights changed)."""
        self.clear_feature_cache()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # --- stages -------------------------------------------------------------------------

    def _run_encoder(self, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.encoder_calls += 1
        self.images_encoded += imgs.shape[0]
        return self.encoder(imgs)

    def encode_images(self, views: Sequence[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """Image-encoder outputs for all views: patch features (V*B, C, h, w) and
        cls/register tokens (V*B, C, T). Uses the feature cache for views with `frame_id`."""
        batch = views[0]["img"].shape[0]
        ids = [frame_ids(v, batch, i) for i, v in enumerate(views)]
        imgs = torch.cat([v["img"] for v in views], dim=0)
        if self.feature_cache.max_items == 0 or all(i is None for i in ids):
            return self._run_encoder(imgs)
        keys: list[Hashable | None] = [None if i is None else i[b] for i in ids for b in range(batch)]
        return encode_cached(self.feature_cache, imgs, keys, self._run_encoder)

    def fuse_inputs(self, views: Sequence[dict], feats: torch.Tensor, use_depth_scale: bool = True,
                    use_pose_scale: bool = True) -> torch.Tensor:
        """`fuse` for upstream-style view dicts (see `inputs.geometric_inputs`)."""
        return self.fuse(feats, len(views), **geometric_inputs(views, use_depth_scale, use_pose_scale))

    def fuse(self, feats: torch.Tensor, num_views: int, rays: torch.Tensor | None = None,
             ray_mask: torch.Tensor | None = None, depth: torch.Tensor | None = None,
             depth_mask: torch.Tensor | None = None, depth_scale_mask: torch.Tensor | None = None,
             quats: torch.Tensor | None = None, trans: torch.Tensor | None = None,
             pose_mask: torch.Tensor | None = None, pose_scale_mask: torch.Tensor | None = None
             ) -> torch.Tensor:
        """Add the encoded geometric inputs to the image features (V*B, C, h, w) and apply the
        fusion LayerNorm. Tensors only (the form the ONNX graphs take); rows view-major.

        rays (V*B, H, W, 3) unit, camera frame; depth (V*B, H, W, 1) m along the ray, 0 = none;
        quats (V*B, 4) xyzw and trans (V*B, 3) m: cam2world poses, turned into poses relative
        to each sample's view 0 here. Each *_mask (V*B,) bool says which rows have that input
        (rows without it contribute nothing; their filler values must be finite, quats
        non-zero); depth_scale_mask / pose_scale_mask: rows whose depth / pose scale is metric.
        A modality left None is absent from every row.
        """
        x = feats.float()
        batch = x.shape[0] // num_views
        if rays is not None:
            x = x + _gate(ray_mask, self.ray_dirs_encoder(rays.float().permute(0, 3, 1, 2)))
        if depth is not None:
            depth, factor = normalize_depth(depth.float())
            x = x + _gate(depth_mask, self.depth_encoder(log1p_norm(depth).permute(0, 3, 1, 2)))
            scale = self.depth_scale_encoder(torch.log(factor + 1e-8)[:, None])
            x = x + _gate(depth_scale_mask, scale[:, :, None, None])
        if quats is not None:
            quats, trans = quats.float(), trans.float()
            q0, t0 = _tile(quats[:batch], num_views), _tile(trans[:batch], num_views)
            q, t = relative_poses(q0, t0, quats, trans)
            keep = pose_mask[:, None]
            q = torch.where(keep, q, torch.tensor([0.0, 0.0, 0.0, 1.0], device=x.device))
            t = torch.where(keep, t, torch.zeros((), device=x.device))
            t, factor = normalize_translations(t.reshape(num_views, batch, 3).transpose(0, 1))
            t = t.transpose(0, 1).reshape(num_views * batch, 3)
            x = x + _gate(pose_mask, self.cam_rot_encoder(q)[:, :, None, None])
            x = x + _gate(pose_mask, self.cam_trans_encoder(t)[:, :, None, None])
            scale = self.cam_trans_scale_encoder(_tile(torch.log(factor + 1e-8)[:, None], num_views))
            x = x + _gate(pose_scale_mask, scale[:, :, None, None])
        return self.fusion_norm_layer(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()

    def share_information(self, fused: torch.Tensor, tokens: torch.Tensor, num_views: int,
                          view_mask: torch.Tensor | None = None) -> tuple[TransformerOutput, list[TransformerOutput]]:
        """Run the multi-view transformer on fused features (V*B, C, h, w); view_mask (V*B,)
        bool: the real views, the others padding (MultiViewTransformer.forward)."""
        batch = fused.shape[0] // num_views
        scale = self.scale_token[None, :, None].expand(batch, -1, 1)
        per_view = tokens if self.cfg.use_encoder_tokens else None
        return self.info_sharing(fused, num_views, per_view, scale, view_mask)

    def heads(self, fused: torch.Tensor, final: TransformerOutput,
              intermediates: list[TransformerOutput], num_views: int,
              image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Heads and output assembly (float32): the `forward` outputs of all views stacked
        view-major (V*B rows; metric_scaling_factor (B, 1))."""
        cfg = self.cfg.adaptor
        pyramid = [fused.float(), intermediates[0].features.float(),
                   intermediates[1].features.float(), final.features.float()]
        if self.head_chunk is None:
            raw = self.dense_head[1](self.dense_head[0](pyramid), image_size)
        else:
            step = self.head_chunk
            raw = torch.cat([self.dense_head[1](self.dense_head[0]([p[s:s + step] for p in pyramid]), image_size)
                             for s in range(0, fused.shape[0], step)])
        dense = dense_outputs(raw, cfg)
        trans, quats = pose_outputs(self.pose_head(pyramid[3]), cfg)
        raw_scale = self.scale_head(final.global_tokens.float())
        scale = activate(raw_scale[:, :, 0], cfg.scale_mode, cfg.scale_vmin, cfg.scale_vmax)  # one scale token

        pts_cam = dense["ray_directions"] * dense["depth_along_ray"]
        rot = quat_to_rotmat(quats)
        pts_world = torch.einsum("nij,nhwj->nhwi", rot, pts_cam) + trans[:, None, None, :]
        rows = _tile(scale, num_views)
        s4 = rows[:, :, None, None]
        logits = dense["non_ambiguous_mask_logits"]
        return {
            "ray_directions": dense["ray_directions"],
            "depth_along_ray": dense["depth_along_ray"] * s4,
            "pts3d_cam": pts_cam * s4,
            "cam_trans": trans * rows,
            "cam_quats": quats,
            "pts3d": pts_world * s4,
            "metric_scaling_factor": scale,
            "conf": dense["conf"],
            "non_ambiguous_mask_logits": logits,
            "non_ambiguous_mask": torch.sigmoid(logits) > 0.5,
        }

    def forward(self, views: Sequence[dict], use_depth_scale: bool = True,
                use_pose_scale: bool = True) -> list[dict[str, torch.Tensor]]:
        """Per-view predictions for upstream-style input dicts (see `model.inputs`).

        Outputs per view (s = metric_scaling_factor (B, 1); world = view 0's camera frame):
        ray_directions (B, H, W, 3) unit, camera frame; depth_along_ray (B, H, W, 1) m;
        pts3d_cam (B, H, W, 3) m; cam_trans (B, 3) m and cam_quats (B, 4) xyzw, cam2world;
        pts3d (B, H, W, 3) m, world; conf (B, H, W) >= 1; non_ambiguous_mask_logits and
        non_ambiguous_mask (B, H, W). `use_depth_scale` / `use_pose_scale` False treat the
        depth / pose inputs as non-metric whatever `is_metric_scale` says.
        """
        _, height, width = validate_views(views, self.cfg.patch_size, self.cfg.vit.data_norm_type)
        feats, tokens = self.encode_images(views)
        with _float32_region(feats.device):
            fused = self.fuse_inputs(views, feats, use_depth_scale, use_pose_scale)
        final, intermediates = self.share_information(fused, tokens, len(views))
        with _float32_region(feats.device):
            out = self.heads(fused, final, intermediates, len(views), (height, width))
        return split_views(out, len(views))


def split_views(stacked: dict[str, torch.Tensor], num_views: int) -> list[dict[str, torch.Tensor]]:
    """Per-view output dicts from view-major stacked outputs (metric_scaling_factor shared)."""
    batch = stacked["cam_quats"].shape[0] // num_views
    return [{k: v if k == "metric_scaling_factor" else v[i * batch:(i + 1) * batch]
             for k, v in stacked.items()} for i in range(num_views)]


def _tile(x: torch.Tensor, n: int) -> torch.Tensor:
    """x (B, C) stacked n times view-major -> (n * B, C) (`repeat` that exports with a symbolic n)."""
    return x.unsqueeze(0).expand(n, -1, -1).reshape(-1, x.shape[1])


def _gate(mask: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """value (N, ...) with the rows where mask (N,) is False set to zero."""
    return value * mask.to(value.dtype).reshape(-1, *([1] * (value.ndim - 1)))
