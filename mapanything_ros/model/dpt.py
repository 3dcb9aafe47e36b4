"""DPT dense head: feature pyramid + RefineNet fusion (`dense_head.0`) and regressor
(`dense_head.1`), after UniCeption `prediction_heads/dpt.py` and CroCo `dpt_block.py`.

Inputs are four (N, C, h, w) maps at patch resolution. They are brought to 4x, 2x, 1x and
1/2x resolution, fused coarse-to-fine with bilinear x2 upsampling (align_corners=True) to
8x, and the regressor resizes to the image size (bilinear, align_corners=True).
The 3x3 `input_process.N.1` convs are the checkpoint's only copy of the upstream aliases
`scratch.layerN_rn` / `scratch.layer_rn.N`.
"""

import torch
import torch.nn.functional as F
from torch import nn


class ResidualConvUnit(nn.Module):
    """x + conv2(relu(conv1(relu(x))))."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """(path [+ unit1(skip)]) -> unit2 -> bilinear x2 -> 1x1 conv."""

    def __init__(self, dim: int, with_skip: bool = True):
        super().__init__()
        self.out_conv = nn.Conv2d(dim, dim, 1)
        if with_skip:
            self.resConfUnit1 = ResidualConvUnit(dim)
        self.resConfUnit2 = ResidualConvUnit(dim)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class Scratch(nn.Module):
    """Holds the four RefineNet fusion blocks (`scratch.refinenet1..4`)."""

    def __init__(self, dim: int):
        super().__init__()
        self.refinenet1 = FusionBlock(dim)
        self.refinenet2 = FusionBlock(dim)
        self.refinenet3 = FusionBlock(dim)
        self.refinenet4 = FusionBlock(dim, with_skip=False)


def _resample(cin: int, cout: int, level: int) -> nn.Sequential:
    """1x1 projection then x4 / x2 transposed conv, identity, or stride-2 3x3 conv."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 1)]
    if level == 0:
        layers.append(nn.ConvTranspose2d(cout, cout, 4, stride=4))
    elif level == 1:
        layers.append(nn.ConvTranspose2d(cout, cout, 2, stride=2))
    elif level == 3:
        layers.append(nn.Conv2d(cout, cout, 3, stride=2, padding=1))
    return nn.Sequential(*layers)


class DPTFeature(nn.Module):
    """Four patch-resolution maps -> (N, feature_dim, 8h, 8w)."""

    def __init__(self, input_dims: tuple[int, ...], layer_dims: tuple[int, ...], feature_dim: int,
                 hooks: tuple[int, ...] = (0, 1, 2, 3)):
        super().__init__()
        self.hooks = hooks
        self.scratch = Scratch(feature_dim)
        self.input_process = nn.ModuleList(
            nn.Sequential(_resample(cin, cl, i), nn.Conv2d(cl, feature_dim, 3, padding=1, bias=False))
            for i, (cin, cl) in enumerate(zip(input_dims, layer_dims))
        )

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        l1, l2, l3, l4 = (proc(feats[h]) for proc, h in zip(self.input_process, self.hooks))
        s = self.scratch
        path = s.refinenet4(l4)[:, :, :l3.shape[2], :l3.shape[3]]
        path = s.refinenet3(path, l3)
        path = s.refinenet2(path, l2)
        return s.refinenet1(path, l1)


class DPTRegressor(nn.Module):
    """conv3x3 -> bilinear resize to (H, W) -> conv3x3 -> ReLU -> conv1x1 to `out` channels."""

    def __init__(self, dim: int, hidden: tuple[int, int], out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, hidden[0], 3, padding=1)
        self.conv2 = nn.Sequential(
            nn.Conv2d(hidden[0], hidden[1], 3, padding=1), nn.ReLU(), nn.Conv2d(hidden[1], out, 1))

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = F.interpolate(self.conv1(x), size=size, mode="bilinear", align_corners=True)
        return self.conv2(x)
