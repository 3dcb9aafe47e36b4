"""The few operations whose spelling differs between numpy arrays and torch tensors, so that one
kernel serves both: numpy on the host, torch on the device the model ran on (see
mapping.reconstruction). Everything else the kernels use (arithmetic, comparisons, masks, slices,
`take`, `reshape`, `where`, `isfinite`, `diff`, ...) is spelled alike; `namespace(a)` gives the
module to call them on.
"""

from functools import lru_cache

import numpy as np
import torch

_TORCH = {np.dtype(n): t for n, t in ((np.bool_, torch.bool), (np.uint8, torch.uint8), (np.int64, torch.int64),
                                      (np.float32, torch.float32), (np.float64, torch.float64))}


def namespace(a):
    """torch for a tensor, else numpy."""
    return torch if isinstance(a, torch.Tensor) else np


def astype(a, dtype):
    """a as dtype (a numpy dtype; the torch one for tensors), not copied when it already is."""
    if isinstance(a, torch.Tensor):
        return a.to(_TORCH[np.dtype(dtype)])
    return np.asarray(a).astype(dtype, copy=False)


def to(a, device):
    """Host array `a` on a torch device (copied there), or as it is for device None."""
    if device is None:
        return a
    a = np.asarray(a)
    if not a.flags.writeable or min(a.strides, default=0) < 0:  # torch.from_numpy refuses them
        a = a.copy()
    return torch.from_numpy(a).to(device)


def like(a, ref):
    """Host array `a` where ref is: as it is for numpy ref, else on ref's device."""
    return to(a, ref.device if isinstance(ref, torch.Tensor) else None)


def zeros(shape, dtype, ref):
    """Zeros of shape and (numpy) dtype where ref is."""
    return like(np.zeros(shape, dtype), ref)


def flatnonzero(mask):
    """(N,) int64 flat indices of the True elements of mask."""
    if isinstance(mask, torch.Tensor):
        return torch.nonzero(mask.reshape(-1)).reshape(-1)
    return np.flatnonzero(mask)


def rows(a, index):
    """The rows `index` (1-D int64) of a (N, ...)."""
    return a.index_select(0, index) if isinstance(a, torch.Tensor) else a.take(index, axis=0)


def affine_rows(points, rotation, translation):
    """points (N, 3) float32, a torch tensor, @ rotation.T + translation (rotation (3, 3), translation
    (3,), host float arrays), on the tensor's device. (On the host, Reconstruction.points makes its
    points in one compiled pass.)"""
    out = points @ like(np.asarray(rotation, np.float32).T.copy(), points)
    return out.add_(like(np.asarray(translation, np.float32), points))


def reciprocal(a):
    """a = 1 / a in place (float), returned."""
    if isinstance(a, torch.Tensor):
        return a.reciprocal_()
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.divide(1, a, out=a)


def complex_pair(real, imag):
    """complex64 map real + i·imag of two float32 maps (NaN in one part stays in that part)."""
    if isinstance(real, torch.Tensor):
        return torch.complex(real, imag)
    out = np.empty(real.shape, np.complex64)
    out.real, out.imag = real, imag
    return out


def copy(a):
    """A contiguous copy of a."""
    return a.clone(memory_format=torch.contiguous_format) if isinstance(a, torch.Tensor) else a.copy()


def median(a):
    """Median of a 1-D array as a float, as numpy.median (the mean of the middle two for an even count)."""
    if not isinstance(a, torch.Tensor):
        return float(np.median(a))
    s = torch.sort(a).values
    n = s.numel()
    return float((s[(n - 1) // 2] + s[n // 2]) / 2)


def to_host(a):
    """a as a numpy array on the host (copied from the device for a tensor off the CPU)."""
    return a.cpu().numpy() if isinstance(a, torch.Tensor) else a


def tables(owner, ref):
    """owner.tables (a tuple of read-only host arrays, owner hashable and immutable) as ref is:
    the host arrays, or tensors on ref's device, copied there once per (owner, device)."""
    if not isinstance(ref, torch.Tensor):
        return owner.tables
    return _on_device(owner, ref.device)


@lru_cache(maxsize=16)
def _on_device(owner, device):
    return tuple(torch.from_numpy(np.array(a)).to(device) for a in owner.tables)
