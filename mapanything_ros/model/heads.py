"""Pose head, scale head and the output activations ("adaptors").

Layouts after UniCeption `prediction_heads/pose_head.py`, `mlp_head.py` and `adaptors.py`.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .config import AdaptorConfig


class ResConvBlock(nn.Module):
    """x + relu(conv3(relu(conv2(relu(conv1(x)))))) with 1x1 convs."""

    def __init__(self, dim: int):
        super().__init__()
        self.res_conv1 = nn.Conv2d(dim, dim, 1)
        self.res_conv2 = nn.Conv2d(dim, dim, 1)
        self.res_conv3 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.res_conv1(x))
        y = F.relu(self.res_conv2(y))
        return x + F.relu(self.res_conv3(y))


class PoseHead(nn.Module):
    """(N, C, h, w) features -> (N, 3 + rot_dim): translation then quaternion (x, y, z, w).

    Width is 4 * patch_size^2 (784 for 14 px patches), as in Reloc3r / UniCeption.
    """

    def __init__(self, in_dim: int, patch_size: int, num_blocks: int = 2, rot_dim: int = 4):
        super().__init__()
        width = 4 * patch_size ** 2
        self.proj = nn.Conv2d(in_dim, width, 1)
        self.res_conv = nn.ModuleList(ResConvBlock(width) for _ in range(num_blocks))
        self.more_mlps = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width),
                                       nn.ReLU())
        self.fc_t = nn.Linear(width, 3)
        self.fc_rot = nn.Linear(width, rot_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        for block in self.res_conv:
            x = block(x)
        x = self.more_mlps(x.mean(dim=(2, 3)))
        return torch.cat([self.fc_t(x), self.fc_rot(x)], dim=1)


class ScaleHead(nn.Module):
    """(B, C, T) tokens -> (B, out, T): Linear (no activation), ReLU MLP layers, Linear."""

    def __init__(self, in_dim: int, hidden: int = 196, num_layers: int = 2, out: int = 1):
        super().__init__()
        self.proj = nn.Linear(in_dim, hidden)
        self.mlp = nn.ModuleList(nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU())
                                 for _ in range(num_layers))
        self.output_proj = nn.Linear(hidden, out)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.proj(tokens.transpose(1, 2))
        for layer in self.mlp:
            x = layer(x)
        return self.output_proj(x).transpose(1, 2)


def activate(x: torch.Tensor, mode: str, vmin: float, vmax: float) -> torch.Tensor:
    """Apply "linear" / "exp" / "square", then clip to [vmin, vmax] unless both are infinite."""
    if mode == "exp":
        x = torch.exp(x)
    elif mode == "square":
        x = x.square()
    elif mode != "linear":
        raise ValueError(f"unknown activation mode {mode!r}")
    if vmin == float("-inf") and vmax == float("inf"):
        return x
    return x.clip(vmin, vmax)


def confidence(x: torch.Tensor, cfg: AdaptorConfig) -> torch.Tensor:
    """Confidence >= vmin from raw logits ("exp": vmin + exp(x); "sigmoid": scaled)."""
    if cfg.conf_mode == "exp":
        return cfg.conf_vmin + x.exp().clip(max=cfg.conf_vmax - cfg.conf_vmin)
    if cfg.conf_mode == "sigmoid":
        return torch.sigmoid(x) * (cfg.conf_vmax - cfg.conf_vmin) + cfg.conf_vmin
    raise ValueError(f"unknown confidence type {cfg.conf_mode!r}")


def dense_outputs(raw: torch.Tensor, cfg: AdaptorConfig) -> dict[str, torch.Tensor]:
    """Regressor output (N, 6, H, W) -> unit rays (N, H, W, 3), depth (N, H, W, 1) (unscaled),
    confidence and mask logits (N, H, W)."""
    rays = raw[:, :3]
    rays = rays / rays.norm(dim=1, keepdim=True).clip(min=1e-8)
    depth = activate(raw[:, 3:4], cfg.depth_mode, cfg.depth_vmin, cfg.depth_vmax)
    return {
        "ray_directions": rays.permute(0, 2, 3, 1),
        "depth_along_ray": depth.permute(0, 2, 3, 1),
        "conf": confidence(raw[:, 4], cfg),
        "non_ambiguous_mask_logits": raw[:, 5],
    }


def pose_outputs(raw: torch.Tensor, cfg: AdaptorConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Pose head output (N, 7) -> translation (N, 3) (unscaled) and quaternion (N, 4) xyzw."""
    t, q = raw[:, :3], raw[:, 3:]
    if cfg.trans_mode != "linear":
        d = t.norm(dim=1, keepdim=True)
        t = t / d.clip(min=1e-8)
        if cfg.trans_mode == "square":
            t = t * d.square()
        elif cfg.trans_mode == "exp":
            t = t * torch.expm1(d)
        else:
            raise ValueError(f"unknown translation mode {cfg.trans_mode!r}")
    if cfg.quats_normalize:
        q = q / q.norm(dim=1, keepdim=True).clip(min=1e-8)
    return t, q
