"""Packed integer keys of voxel (or block) indices (numpy, no ROS).

A point p (metres, world frame) falls in cell i = floor(p / size) per axis. The three indices,
offset by 2**20, are packed into one int64 at 21 bits each, so every index must lie in
[-2**20, 2**20 - 1]: each coordinate within about ±2**20 · size of the origin (±52 km at 5 cm).
Packed keys sort as (ix, iy, iz).
"""

import numpy as np

KEY_BITS = 21
KEY_OFFSET = 1 << (KEY_BITS - 1)
KEY_MASK = (1 << KEY_BITS) - 1


def cells(coords, size):
    """(voxel indices (3, N) int64, in_range (N,) bool) of coordinate rows (3, N) float64; indices
    of points out of the packable range (or not finite) are 0 and flagged False."""
    out = np.empty(coords.shape, np.int64)
    ok = np.ones(coords.shape[1], bool)
    with np.errstate(invalid="ignore"):
        for row, dst in zip(coords, out):
            cell = np.floor(row / size)
            ok &= (cell >= -KEY_OFFSET) & (cell < KEY_OFFSET)
            dst[...] = cell
    out[:, ~ok] = 0
    return out, ok


def pack(cells):
    """Packed int64 keys (N,) of voxel indices (3, N) in the packable range."""
    keys = cells[0] + KEY_OFFSET
    for row in cells[1:]:
        keys <<= KEY_BITS
        keys |= row + KEY_OFFSET
    return keys


def key_cells(keys):
    """Voxel indices (N, 3) int64 of packed keys (N,); voxel i spans [i, i + 1) · size."""
    keys = np.asarray(keys, np.int64)
    return np.stack([(keys >> s) & KEY_MASK for s in (2 * KEY_BITS, KEY_BITS, 0)], -1) - KEY_OFFSET


def located(sorted_keys, keys):
    """(index into sorted_keys (N,), found (N,) bool) of `keys`: where each is, or would go (at most
    the last index), and whether sorted_keys holds it."""
    if len(sorted_keys) == 0:
        return np.zeros(np.shape(keys), np.intp), np.zeros(np.shape(keys), bool)
    pos = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return pos, sorted_keys[pos] == keys


def shifted(keys, offset):
    """(packed keys (N,) of the cells at `offset` (three ints, in cells) from those of the packed
    `keys` (N,) int64, in_range (N,) bool: False where a shifted index leaves the packable range,
    whose key is then another cell's or wrapped). Sorted keys stay sorted where in range."""
    out = np.array(keys, np.int64)
    ok = np.ones(len(out), bool)
    for shift, o in zip((2 * KEY_BITS, KEY_BITS, 0), offset):
        if o:
            field = (out >> shift) & KEY_MASK  # the index + KEY_OFFSET, in [0, KEY_MASK]
            ok &= (field >= -o) & (field <= KEY_MASK - o)
            out += int(o) << shift
    return out, ok
