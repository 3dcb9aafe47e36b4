"""Edge masks for predicted point maps (numpy), as in upstream `infer` post-processing.

A pixel is dropped when it lies on both a depth edge (3x3 max - min of valid depths over the
depth exceeds `rtol`) and a normal edge (some valid 3x3 neighbour normal differs by more than
`tol` degrees, dilated by 3x3). Rules read from map-anything `utils/geometry.py`
(`points_to_normals`, `normals_edge`, `depth_edge`); one quirk is kept for parity: upstream
indexes the neighbour-validity window of `normals_edge` transposed (row and column offsets
swapped), see `_normal_edges`.
"""

import warnings

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _nanmax_3x3(x: np.ndarray) -> np.ndarray:
    """3x3 maximum ignoring NaN (NaN outside the image); all-NaN windows give NaN."""
    win = sliding_window_view(np.pad(x, 1, mode="constant", constant_values=np.nan), (3, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmax(win, axis=(-2, -1))


def point_normals(points: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals (H, W, 3) of a point map (H, W, 3) from the 4 neighbour cross products
    whose neighbours are valid; returns normals (0 where none) and their validity (H, W)."""
    h, w = mask.shape
    m = np.zeros((h + 2, w + 2), dtype=bool)
    m[1:-1, 1:-1] = mask
    p = np.zeros((h + 2, w + 2, 3), dtype=points.dtype)
    p[1:-1, 1:-1] = points
    c = p[1:-1, 1:-1]
    up, left, down, right = p[:-2, 1:-1] - c, p[1:-1, :-2] - c, p[2:, 1:-1] - c, p[1:-1, 2:] - c
    normals = np.stack([np.cross(up, left), np.cross(left, down), np.cross(down, right),
                        np.cross(right, up)])
    normals = normals / (np.linalg.norm(normals, axis=-1, keepdims=True) + 1e-12)
    mu, ml, md, mr = m[:-2, 1:-1], m[1:-1, :-2], m[2:, 1:-1], m[1:-1, 2:]
    valid = np.stack([mu & ml, ml & md, md & mr, mr & mu]) & m[None, 1:-1, 1:-1]
    normal = (normals * valid[..., None]).sum(axis=0)
    normal = normal / (np.linalg.norm(normal, axis=-1, keepdims=True) + 1e-12)
    ok = valid.any(axis=0)
    return np.where(ok[..., None], normal, 0), ok


def _normal_edges(normals: np.ndarray, mask: np.ndarray, tol_deg: float) -> np.ndarray:
    n = normals / (np.linalg.norm(normals, axis=-1, keepdims=True) + 1e-12)
    npad = np.pad(n, ((1, 1), (1, 1), (0, 0)), mode="edge")
    nwin = sliding_window_view(npad, (3, 3), axis=(0, 1))          # (H, W, 3, dr, dc)
    # Upstream builds the validity window with its axes swapped: entry (dr, dc) reads the
    # mask at offset (dc, dr). Kept for parity with the reference outputs.
    mwin = sliding_window_view(np.pad(mask, 1, mode="edge"), (3, 3)).swapaxes(-2, -1)
    with np.errstate(invalid="ignore"):
        angle = np.arccos((n[..., None, None] * nwin).sum(axis=2))
    angle = np.where(mwin, angle, 0).max(axis=(-2, -1))
    return _nanmax_3x3(angle) > np.deg2rad(tol_deg)


def _depth_edges(depth: np.ndarray, mask: np.ndarray, rtol: float) -> np.ndarray:
    spread = (_nanmax_3x3(np.where(mask, depth, -np.inf))
              + _nanmax_3x3(np.where(mask, -depth, -np.inf)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return spread / depth > rtol


def edge_mask(points: np.ndarray, depth_z: np.ndarray, mask: np.ndarray, normal_tol_deg: float = 5.0,
              depth_rtol: float = 0.03) -> np.ndarray:
    """(H, W) bool, False on pixels that are both depth and normal edges (and where `mask`
    is empty everywhere). points (H, W, 3) world or camera frame, depth_z (H, W), mask (H, W)."""
    if not mask.any():
        return np.zeros_like(mask)
    normals, ok = point_normals(points, mask)
    return ~(_depth_edges(depth_z, mask, depth_rtol) & _normal_edges(normals, ok, normal_tol_deg))
