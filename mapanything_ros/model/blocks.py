"""Pre-norm transformer block shared by the DINOv2 encoder and the multi-view transformer.

Parameter names follow DINOv2 (facebookresearch/dinov2 `layers/`) and UniCeption
(`models/utils/transformer_blocks.py`), which use the same layout: `norm1`, `attn.qkv`,
`attn.proj`, `ls1.gamma`, `norm2`, `mlp.{fc1,fc2}` or `mlp.{w12,w3}`, `ls2.gamma`.
"""

import torch
import torch.nn.functional as F
from torch import nn

LAYER_NORM_EPS = 1e-6


def layer_norm(dim: int) -> nn.LayerNorm:
    """LayerNorm with the eps used everywhere in MapAnything (1e-6)."""
    return nn.LayerNorm(dim, eps=LAYER_NORM_EPS)


class Attention(nn.Module):
    """Multi-head self-attention over (B, N, C) tokens with a fused qkv projection."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_bias: bool = True,
                 qk_norm: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        head_dim = dim // num_heads
        self.q_norm = layer_norm(head_dim) if qk_norm else nn.Identity()
        self.k_norm = layer_norm(head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        """keys: (B, N) bool, the tokens attended to (None: all)."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        mask = None if keys is None else keys[:, None, None, :]
        y = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """Two-layer GELU MLP (`fc1`, `fc2`)."""

    def __init__(self, dim: int, hidden: int, bias: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLU(nn.Module):
    """SwiGLU FFN (`w12` packs both gates, `w3` projects back).

    DINOv2's "swiglufused" shrinks the nominal hidden width h to (int(2h/3) + 7) // 8 * 8,
    e.g. 6144 -> 4096 for ViT-g (dinov2 `layers/swiglu_ffn.py`).
    """

    def __init__(self, dim: int, hidden: int, bias: bool = True):
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden, bias=bias)
        self.w3 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class LayerScale(nn.Module):
    """Per-channel residual-branch scale `gamma`."""

    def __init__(self, dim: int, init_value: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


def make_ffn(kind: str, dim: int, mlp_ratio: float, bias: bool = True) -> nn.Module:
    """FFN by name: "mlp" (GELU) or "swiglufused" (SwiGLU, DINOv2 hidden-width rule)."""
    hidden = int(dim * mlp_ratio)
    if kind == "mlp":
        return Mlp(dim, hidden, bias)
    if kind in ("swiglufused", "swiglu"):
        return SwiGLU(dim, hidden, bias)
    raise ValueError(f"unknown FFN layer {kind!r}; expected 'mlp' or 'swiglufused'")


class Block(nn.Module):
    """x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x))); LayerScale only if init_values."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, ffn: str,
                 init_values: float | None, qkv_bias: bool = True, proj_bias: bool = True,
                 ffn_bias: bool = True, qk_norm: bool = False):
        super().__init__()
        self.norm1 = layer_norm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias, proj_bias, qk_norm)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = layer_norm(dim)
        self.mlp = make_ffn(ffn, dim, mlp_ratio, ffn_bias)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()

    def forward(self, x: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        """keys: (B, N) bool, the tokens attended to (None: all)."""
        x = x + self.ls1(self.attn(self.norm1(x), keys))
        return x + self.ls2(self.mlp(self.norm2(x)))
