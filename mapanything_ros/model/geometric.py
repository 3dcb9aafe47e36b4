"""Encoders for the optional geometric inputs and the normalisations applied before them.

Dense inputs (ray directions, depth) go through UniCeption's DenseRepresentationEncoder
layout: pixel-unshuffle by the patch size, 3x3 conv, GELU residual blocks, 1x1 conv to the
model width, LayerNorm. Global inputs (rotation, translation, log scales) go through
GlobalRepresentationEncoder: Linear+GELU stack, Linear to the model width, LayerNorm.
The normalisations follow map-anything `utils/geometry.py` (read for facts only).
Quaternions are (x, y, z, w), Hamilton product.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import layer_norm


class ResidualBlock(nn.Module):
    """conv3x3 -> GELU -> conv3x3, plus a (1x1 projected) skip, then GELU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.gelu(self.conv1(x)))
        return F.gelu(y + self.shortcut(x))


class DenseEncoder(nn.Module):
    """(N, C_in, H, W) map -> (N, dim, H/p, W/p) patch features."""

    def __init__(self, in_chans: int, dim: int, patch_size: int, hidden: tuple[int, ...]):
        super().__init__()
        self.unshuffle = nn.PixelUnshuffle(patch_size)
        self.conv_in = nn.Conv2d(in_chans * patch_size ** 2, hidden[0], 3, padding=1)
        layers: list[nn.Module] = [ResidualBlock(a, b) for a, b in zip(hidden[:-1], hidden[1:])]
        layers.append(nn.Conv2d(hidden[-1], dim, 1))
        self.encoder = nn.Sequential(*layers)
        self.norm_layer = layer_norm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.encoder(self.conv_in(self.unshuffle(x)))
        return self.norm_layer(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class GlobalEncoder(nn.Module):
    """(N, C_in) vector -> (N, dim).

    The Linear layers sit in nested Sequentials (UniCeption builds the stack by re-wrapping),
    so with 3 hidden widths the keys are encoder.0.0.0.0, encoder.0.0.1, encoder.0.1, encoder.1.
    """

    def __init__(self, in_chans: int, dim: int, hidden: tuple[int, ...]):
        super().__init__()
        stack = nn.Sequential(nn.Linear(in_chans, hidden[0]), nn.GELU())
        for a, b in zip(hidden[:-1], hidden[1:]):
            stack = nn.Sequential(stack, nn.Linear(a, b), nn.GELU())
        self.encoder = nn.Sequential(stack, nn.Linear(hidden[-1], dim))
        self.norm_layer = layer_norm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm_layer(self.encoder(x))


def normalize_depth(depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Divide (N, H, W, 1) depth by the mean over pixels > 0 (clipped >= 1e-8).

    Returns the normalised depth and the (N,) factors; without valid pixels the factor is 1e-8.
    """
    valid = depth > 0
    # upstream divides by count + 1e-8: in float32 that is count, or 1e-8 where the sum is 0 anyway;
    # clip(min=1) gives the same factors and survives the dynamo ONNX export (which dropped the + 1e-8)
    count = valid.sum(dim=(1, 2, 3)).to(depth.dtype).clip(min=1)
    factor = (depth * valid).sum(dim=(1, 2, 3)) / count
    factor = factor.clip(min=1e-8)
    return depth / factor[:, None, None, None], factor


def log1p_norm(x: torch.Tensor) -> torch.Tensor:
    """x / |x| * log1p(|x|) with the norm over the last axis (sign * log1p for 1 channel)."""
    norm = x.norm(dim=-1, keepdim=True)
    return x / norm.clip(min=1e-8) * torch.log1p(norm)


def normalize_translations(trans: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Divide (B, V, 3) translations by the mean norm over views with a non-zero norm.

    Returns the normalised translations and the (B,) factors (clipped >= 1e-8).
    """
    dist = trans.norm(dim=-1)
    factor = dist.sum(dim=1) / (dist > 0).sum(dim=1).to(dist.dtype).clip(min=1)  # as in normalize_depth
    factor = factor.clip(min=1e-8)
    return trans / factor[:, None, None], factor


def quat_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    """(N, 4) xyzw quaternions (normalised here) -> (N, 3, 3) rotation matrices."""
    x, y, z, w = (q / q.norm(dim=1, keepdim=True)).unbind(dim=1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=1).view(-1, 3, 3)


def quat_inverse(q: torch.Tensor) -> torch.Tensor:
    """(N, 4) xyzw inverse: conjugate / |q|^2."""
    return torch.cat([-q[:, :3], q[:, 3:]], dim=1) / (q * q).sum(dim=1, keepdim=True)


def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product a * b of (N, 4) xyzw quaternions."""
    x1, y1, z1, w1 = a.unbind(dim=1)
    x2, y2, z2, w2 = b.unbind(dim=1)
    return torch.stack([
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
    ], dim=1)


def relative_poses(q_ref: torch.Tensor, t_ref: torch.Tensor, q: torch.Tensor,
                   t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Express cam2world poses (q, t) in the frame of the reference camera (q_ref, t_ref).

    q_rel = q_ref^-1 * q, t_rel = R_ref^T t - R_ref^T t_ref (that order, as upstream, so the
    reference view itself gets exactly zero translation). All (N, 4) / (N, 3).
    """
    q_inv = quat_inverse(q_ref)
    r_inv = quat_to_rotmat(q_inv)
    t_rel = torch.einsum("nij,nj->ni", r_inv, t) + -torch.einsum("nij,nj->ni", r_inv, t_ref)
    return quat_multiply(q_inv, q), t_rel
