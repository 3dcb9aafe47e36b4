"""DINOv2-style ViT image encoder (parameter names as in facebookresearch/dinov2).

The learned position embedding covers a 37x37 grid (518 px / 14). For other image sizes the
grid is resized bicubically with *scale factors* ((h + 0.1) / 37, (w + 0.1) / 37) and no
antialiasing, as DINOv2's `interpolate_pos_encoding` does; the resize runs in float32.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Block, layer_norm
from .config import VitConfig


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection (B, 3, H, W) -> (B, H/p * W/p, C)."""

    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoVisionTransformer(nn.Module):
    """DINOv2 ViT without the mask token (unused at inference, absent from checkpoints)."""

    def __init__(self, cfg: VitConfig):
        super().__init__()
        self.cfg = cfg
        dim = cfg.embed_dim
        grid = cfg.img_size // cfg.patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        if cfg.num_register_tokens:
            self.register_tokens = nn.Parameter(torch.zeros(1, cfg.num_register_tokens, dim))
        self.patch_embed = PatchEmbed(cfg.patch_size, dim)
        self.blocks = nn.ModuleList(
            Block(dim, cfg.num_heads, cfg.mlp_ratio, cfg.ffn, cfg.init_values, cfg.qkv_bias,
                  cfg.proj_bias, cfg.ffn_bias)
            for _ in range(cfg.depth)
        )
        self.norm = layer_norm(dim) if cfg.final_norm else nn.Identity()

    def position_embedding(self, h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
        """(1, 1 + h*w, C) position embedding for an h x w patch grid."""
        table = self.pos_embed
        n = table.shape[1] - 1
        if n == h * w and h == w:
            return table
        m = int(math.sqrt(n))
        grid = table[:, 1:].float().reshape(1, m, m, -1).permute(0, 3, 1, 2)
        off = self.cfg.interpolate_offset
        if off:
            resize = {"scale_factor": ((h + off) / m, (w + off) / m)}
        else:
            resize = {"size": (h, w)}
        grid = F.interpolate(grid, mode="bicubic", antialias=self.cfg.interpolate_antialias,
                             **resize)
        if grid.shape[-2:] != (h, w):
            raise RuntimeError(f"position embedding resized to {tuple(grid.shape[-2:])}, "
                               f"expected {(h, w)}")
        grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat([table[:, :1].float(), grid], dim=1).to(dtype)

    def forward(self, img: torch.Tensor, pos_embed: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images (B, 3, H, W) -> patch features (B, C, H/p, W/p) and
        cls + register tokens (B, C, 1 + R). `pos_embed`: `position_embedding` of this image
        size computed in advance (the ONNX encoder graph holds it as a constant)."""
        b, _, height, width = img.shape
        h, w = height // self.cfg.patch_size, width // self.cfg.patch_size
        x = self.patch_embed(img)
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)
        x = x + (self.position_embedding(h, w, x.dtype) if pos_embed is None else pos_embed.to(x.dtype))
        if self.cfg.num_register_tokens:
            x = torch.cat([x[:, :1], self.register_tokens.expand(b, -1, -1), x[:, 1:]], dim=1)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        tokens = 1 + self.cfg.num_register_tokens
        patches = x[:, tokens:].transpose(1, 2).reshape(b, -1, h, w)
        return patches.contiguous(), x[:, :tokens].transpose(1, 2).contiguous()


class ImageEncoder(nn.Module):
    """Holds the ViT as `.model` so that keys read `encoder.model.*` as in the checkpoints."""

    def __init__(self, cfg: VitConfig):
        super().__init__()
        self.model = DinoVisionTransformer(cfg)

    def forward(self, img: torch.Tensor, pos_embed: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(img, pos_embed)
