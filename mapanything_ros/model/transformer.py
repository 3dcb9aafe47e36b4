"""Alternating-attention multi-view transformer (UniCeption `info_sharing`, IFR variant).

Token layout per sample: for each view its h*w patch tokens followed by its per-view tokens
(the DINOv2 cls token), then the global tokens (the scale token). Even blocks attend over
all tokens; odd blocks attend within each view and leave the global tokens untouched.
The reference view (view 0) gets row 0 of a sinusoid table ([0, 1, 0, 1, ...]) added to
all of its tokens. Outputs after the `indices` blocks and after the last block are passed
through the final LayerNorm.
"""

from dataclasses import dataclass

import torch
from torch import nn

from .blocks import Block, layer_norm
from .config import TransformerConfig


def sinusoid_table(rows: int, dim: int, base: float = 10000.0,
                   device: torch.device | None = None) -> torch.Tensor:
    """(rows, dim) float32 table: sin at even, cos at odd channels of pos / base^(2i/dim).

    Computed in float64 on the CPU, then moved to `device` (default: the current default
    device, so building under `torch.device("meta")` gives a meta buffer)."""
    pos = torch.arange(rows, dtype=torch.float64, device="cpu")[:, None]
    expo = 2 * (torch.arange(dim, device="cpu") // 2).to(torch.float64) / dim
    angles = pos / torch.pow(torch.tensor(base, dtype=torch.float64, device="cpu"), expo)
    table = torch.where(torch.arange(dim, device="cpu") % 2 == 0, angles.sin(), angles.cos())
    return table.float().to(device if device is not None else torch.get_default_device())


@dataclass
class TransformerOutput:
    """Per-layer outputs: patches (V*B, C, h, w) view-major, view tokens (V*B, C, T),
    global tokens (B, C, G)."""

    features: torch.Tensor
    view_tokens: torch.Tensor | None
    global_tokens: torch.Tensor


class MultiViewTransformer(nn.Module):
    """Alternating global / per-view attention over V views of h x w patch tokens."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.proj_embed = (nn.Linear(cfg.input_dim, cfg.dim) if cfg.input_dim != cfg.dim
                           else nn.Identity())
        self.self_attention_blocks = nn.ModuleList(
            Block(cfg.dim, cfg.num_heads, cfg.mlp_ratio, cfg.ffn, cfg.init_values,
                  qkv_bias=cfg.qkv_bias, qk_norm=cfg.qk_norm)
            for _ in range(cfg.depth)
        )
        self.norm = layer_norm(cfg.dim)
        if cfg.ref_view_embedding:
            self.register_buffer("view_pos_table", sinusoid_table(1, cfg.dim))

    def reset_buffers(self) -> None:
        """Recompute `view_pos_table` on the device of the weights (after a meta build)."""
        if self.cfg.ref_view_embedding:
            self.view_pos_table = sinusoid_table(1, self.cfg.dim, device=self.norm.weight.device)

    def forward(self, features: torch.Tensor, num_views: int, view_tokens: torch.Tensor | None,
                global_tokens: torch.Tensor, view_mask: torch.Tensor | None = None
                ) -> tuple[TransformerOutput, list[TransformerOutput]]:
        """features (V*B, C, h, w) view-major, view_tokens (V*B, C, T) or None,
        global_tokens (B, C, G). view_mask (V*B,) bool: the real views; the others are padding
        that no token attends to, so the real views' outputs are those of the real views alone
        (a graph exported for a fixed view count serves fewer views). Returns the final output
        and the intermediate outputs."""
        vb, c, h, w = features.shape
        b = vb // num_views
        x = features.reshape(num_views, b, c, h * w)
        if view_tokens is not None:
            x = torch.cat([x, view_tokens.reshape(num_views, b, c, -1)], dim=3)
        per_view = x.shape[3]
        x = x.permute(1, 0, 3, 2).reshape(b, num_views * per_view, c)
        x = torch.cat([x, global_tokens.transpose(1, 2)], dim=1)
        x = self.proj_embed(x)
        if self.cfg.ref_view_embedding:
            ref = x[:, :per_view] + self.view_pos_table[0].to(x.dtype)
            x = torch.cat([ref, x[:, per_view:]], dim=1)
        n_view_tokens = num_views * per_view
        n_global = global_tokens.shape[2]
        keys = None
        if view_mask is not None:  # (B, V * per_view + G): each view's tokens, then the global ones
            real = view_mask.reshape(num_views, b).transpose(0, 1)
            keys = torch.cat([real[:, :, None].expand(b, num_views, per_view).reshape(b, n_view_tokens),
                              torch.ones(b, n_global, dtype=torch.bool, device=x.device)], dim=1)
        intermediates = []
        for i, block in enumerate(self.self_attention_blocks):
            if i % 2 == 0:
                x = block(x, keys)
            else:
                views, extra = x[:, :n_view_tokens], x[:, n_view_tokens:]
                views = block(views.reshape(b * num_views, per_view, -1))
                x = torch.cat([views.reshape(b, n_view_tokens, -1), extra], dim=1)
            if i in self.cfg.indices:
                y = self.norm(x) if self.cfg.norm_intermediate else x
                intermediates.append(self._split(y, num_views, per_view, h, w, n_global))
        return self._split(self.norm(x), num_views, per_view, h, w, n_global), intermediates

    @staticmethod
    def _split(x: torch.Tensor, num_views: int, per_view: int, h: int, w: int,
               n_global: int) -> TransformerOutput:
        b, _, c = x.shape
        views = x[:, :num_views * per_view].reshape(b, num_views, per_view, c)
        views = views.permute(1, 0, 3, 2).reshape(num_views * b, c, per_view)
        patches = views[:, :, :h * w].reshape(num_views * b, c, h, w).contiguous()
        tokens = views[:, :, h * w:].contiguous() if per_view > h * w else None
        return TransformerOutput(patches, tokens, x[:, x.shape[1] - n_global:].transpose(1, 2))
