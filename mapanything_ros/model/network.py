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
from .cache import FeatureCache
from .config import ModelConfig, parse_config
from .dpt import DPTFeature, DPTRegressor
from .geometric import (DenseEncoder, GlobalEncoder, log1p_norm, normalize_depth,
                        normalize_translations, quat_to_rotmat, relative_poses)
from .heads import PoseHead, ScaleHead, activate, dense_outputs, pose_outputs
from .inputs import frame_ids, validate_views
from .transformer import MultiViewTransformer, TransformerOutput
from .vit import ImageEncoder


def _float32_region(device: torch.device):
    return torch.autocast(device_type=device.type, enabled=False)


class MapAnything(nn.Module):
    """The network. `config` is the upstream `config.json` dict.

    Attributes: `feature_cache` (FeatureCache, capacity `feature_cache_size` images, 0 = off),
    `encoder_calls` / `images_encoded` (counters of image-encoder runs and images encoded),
    `head_chunk` (None, or the number of view-samples per dense-head pass to bound memory).
    """

    def __init__(self, config: dict, feature_cache_size: int = 0):
        super().__init__()
        cfg = parse_config(config)
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
        rows: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(keys)
        todo: list[int] = []
        first_row: dict[Hashable, int] = {}
        for r, key in enumerate(keys):
            if key is not None:
                if key in first_row:  # repeated id within this call: same image required
                    if not torch.equal(imgs[r], imgs[first_row[key]]):
                        raise ValueError(f"frame_id {key!r} is used for two different images")
                    continue
                rows[r] = self.feature_cache.get(key, imgs[r])
                first_row[key] = r
            if rows[r] is None:
                todo.append(r)
        if todo:
            feats, toks = self._run_encoder(imgs[todo])
            for j, r in enumerate(todo):
                rows[r] = (feats[j], toks[j])
                if keys[r] is not None:
                    self.feature_cache.put(keys[r], imgs[r], feats[j], toks[j])
        for r, key in enumerate(keys):
            if rows[r] is None:
                rows[r] = rows[first_row[key]]
        return torch.stack([f for f, _ in rows]), torch.stack([t for _, t in rows])

    def fuse_inputs(self, views: Sequence[dict], feats: torch.Tensor, use_depth_scale: bool = True,
                    use_pose_scale: bool = True) -> torch.Tensor:
        """Add the encoded geometric inputs to the image features (V*B, C, h, w) and apply
        the fusion LayerNorm. Views without an input contribute nothing for it."""
        nv = len(views)
        batch = feats.shape[0] // nv
        dev = feats.device
        x = feats.float()

        def rows(v: int) -> torch.Tensor:
            return torch.arange(v * batch, (v + 1) * batch, device=dev)

        def metric(view: dict) -> torch.Tensor:
            flag = view.get("is_metric_scale")
            return flag.to(dev) if flag is not None else torch.zeros(batch, dtype=torch.bool, device=dev)

        ray_views = [v for v, view in enumerate(views) if "ray_directions_cam" in view]
        if ray_views:
            idx = torch.cat([rows(v) for v in ray_views])
            rays = torch.cat([views[v]["ray_directions_cam"].float() for v in ray_views])
            x = x.index_add(0, idx, self.ray_dirs_encoder(rays.permute(0, 3, 1, 2)))

        depth_views = [v for v, view in enumerate(views) if "depth_along_ray" in view]
        if depth_views:
            idx = torch.cat([rows(v) for v in depth_views])
            depth, factor = normalize_depth(
                torch.cat([views[v]["depth_along_ray"].float() for v in depth_views]))
            x = x.index_add(0, idx, self.depth_encoder(log1p_norm(depth).permute(0, 3, 1, 2)))
            if use_depth_scale:
                keep = torch.cat([metric(views[v]) for v in depth_views])
                scale = self.depth_scale_encoder(torch.log(factor[keep] + 1e-8)[:, None])
                x = x.index_add(0, idx[keep], _broadcast(scale, x))

        pose_views = [v for v, view in enumerate(views) if "camera_pose_quats" in view]
        if pose_views:
            q0 = views[0]["camera_pose_quats"].float()
            t0 = views[0]["camera_pose_trans"].float()
            quats = torch.tensor([0.0, 0.0, 0.0, 1.0], device=dev).repeat(nv * batch, 1)
            trans = torch.zeros(nv * batch, 3, device=dev)
            for v in pose_views:
                q, t = relative_poses(q0, t0, views[v]["camera_pose_quats"].float(),
                                      views[v]["camera_pose_trans"].float())
                quats[v * batch:(v + 1) * batch] = q
                trans[v * batch:(v + 1) * batch] = t
            trans, factor = normalize_translations(trans.reshape(nv, batch, 3).transpose(0, 1))
            trans = trans.transpose(0, 1).reshape(nv * batch, 3)
            idx = torch.cat([rows(v) for v in pose_views])
            x = x.index_add(0, idx, _broadcast(self.cam_rot_encoder(quats[idx]), x))
            x = x.index_add(0, idx, _broadcast(self.cam_trans_encoder(trans[idx]), x))
            if use_pose_scale:
                keep = torch.cat([metric(views[v]) for v in pose_views])
                log_factor = torch.log(factor + 1e-8).repeat(len(pose_views))[keep]
                scale = self.cam_trans_scale_encoder(log_factor[:, None])
                x = x.index_add(0, idx[keep], _broadcast(scale, x))

        return self.fusion_norm_layer(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()

    def share_information(self, fused: torch.Tensor, tokens: torch.Tensor, num_views: int
                          ) -> tuple[TransformerOutput, list[TransformerOutput]]:
        """Run the multi-view transformer on fused features (V*B, C, h, w)."""
        batch = fused.shape[0] // num_views
        scale = self.scale_token[None, :, None].expand(batch, -1, 1)
        per_view = tokens if self.cfg.use_encoder_tokens else None
        return self.info_sharing(fused, num_views, per_view, scale)

    def predict(self, fused: torch.Tensor, final: TransformerOutput,
                intermediates: list[TransformerOutput], num_views: int,
                image_size: tuple[int, int]) -> list[dict[str, torch.Tensor]]:
        """Heads and output assembly (float32); returns the per-view output dicts."""
        cfg = self.cfg.adaptor
        pyramid = [fused.float(), intermediates[0].features.float(),
                   intermediates[1].features.float(), final.features.float()]
        n = fused.shape[0]
        step = self.head_chunk or n
        chunks = []
        for s in range(0, n, step):
            feat8 = self.dense_head[0]([p[s:s + step] for p in pyramid])
            chunks.append(self.dense_head[1](feat8, image_size))
        dense = dense_outputs(torch.cat(chunks), cfg)
        trans, quats = pose_outputs(self.pose_head(pyramid[3]), cfg)
        raw_scale = self.scale_head(final.global_tokens.float())
        scale = activate(raw_scale, cfg.scale_mode, cfg.scale_vmin, cfg.scale_vmax).squeeze(-1)

        pts_cam = dense["ray_directions"] * dense["depth_along_ray"]
        rot = quat_to_rotmat(quats)
        pts_world = torch.einsum("nij,nhwj->nhwi", rot, pts_cam) + trans[:, None, None, :]
        batch = n // num_views
        s4 = scale[:, :, None, None]
        out = []
        for v in range(num_views):
            r = slice(v * batch, (v + 1) * batch)
            logits = dense["non_ambiguous_mask_logits"][r]
            out.append({
                "ray_directions": dense["ray_directions"][r],
                "depth_along_ray": dense["depth_along_ray"][r] * s4,
                "pts3d_cam": pts_cam[r] * s4,
                "cam_trans": trans[r] * scale,
                "cam_quats": quats[r],
                "pts3d": pts_world[r] * s4,
                "metric_scaling_factor": scale,
                "conf": dense["conf"][r],
                "non_ambiguous_mask_logits": logits,
                "non_ambiguous_mask": torch.sigmoid(logits) > 0.5,
            })
        return out

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
            return self.predict(fused, final, intermediates, len(views), (height, width))


def _broadcast(vec: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N, C) -> (N, C, h, w) matching the spatial size of `like`."""
    return vec[:, :, None, None].expand(-1, -1, like.shape[2], like.shape[3])
