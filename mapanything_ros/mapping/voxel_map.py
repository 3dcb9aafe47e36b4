"""Global map: world-frame points accumulated in voxels, with bounded memory (numpy, no ROS).

Keys. A point p (metres, world frame) falls in voxel i = floor(p / voxel_size) per axis. The
three indices, offset by 2**20, are packed into one int64 at 21 bits each, so every index must lie
in [-2**20, 2**20 - 1]: each coordinate within about ±2**20 · voxel_size of the origin (±52 km
at 5 cm). Points outside that range are dropped. Packed keys sort as (ix, iy, iz).

Averaging. A voxel keeps the sums Σc·p (float64), Σc·rgb (float32), Σc (float64) and the point
count n over the points it received, c being each point's confidence. Positions and colours are
confidence-weighted means (Σc·p / Σc): MapAnything's confidence (vmin + exp(x), see model.heads,
trained to be high where its error is low) is a relative precision, so a voxel follows the views that saw it best
rather than grazing or distant ones; with equal confidences this is the plain mean. The
reported confidence is the plain mean Σc / n. Points are dropped when not finite, when their
confidence is not finite, not positive (no weight) or below `min_confidence`, and, with
`max_distance` set, when farther than it from the camera.

Storage. Per-voxel sums live in dense arrays (one row per coordinate or channel, so per-axis
passes read contiguous memory) in arrival order; a sorted key array holds each voxel's dense
slot. A batch is sorted and reduced per voxel, looked up with np.searchsorted, added to the
voxels it hits, and its new voxels are appended and merged into the sorted keys: O(N log N +
M) per batch of N points into M voxels, with no per-point Python.

Bounded memory. The dense arrays grow by half their size at a time and never beyond
`max_voxels`. When a batch's new voxels would take the map past `max_voxels`, the stored voxels
whose means are farthest from the camera are evicted until LOW_WATER · max_voxels remain, so
evictions come once every several batches rather than on each. The voxels of the current view
(the batch's new voxels and the stored ones it added to) are exempt, so what the camera sees
now always stays in the map: ranking everything by distance alone would let the floor near and
behind the robot lock out the wall it faces. Only a view with more voxels than LOW_WATER ·
max_voxels on its own loses its farthest. With `max_distance` set, every insert also evicts the
stored voxels whose means are farther than it from the camera (an O(M) pass per insert).
"""

import numpy as np

from .ply import write_ply

KEY_BITS = 21
KEY_OFFSET = 1 << (KEY_BITS - 1)
KEY_MASK = (1 << KEY_BITS) - 1
LOW_WATER = 0.9  # fraction of max_voxels kept by an eviction
MIN_CAPACITY = 1024


def voxel_keys(points, voxel_size):
    """(int64 keys (N,), in_range (N,) bool) of world points (N, 3) metres; keys of points out of
    the packable range (or not finite) are meaningless and flagged False."""
    cells, ok = _cells(np.asarray(points, np.float64).reshape(-1, 3).T, voxel_size)
    return _pack(cells), ok


def _cells(coords, voxel_size):
    """(voxel indices (3, N) int64, in_range (N,) bool) of coordinate rows (3, N) float64; indices
    of points out of the packable range (or not finite) are 0 and flagged False."""
    cells = np.empty(coords.shape, np.int64)
    ok = np.ones(coords.shape[1], bool)
    with np.errstate(invalid="ignore"):
        for row, out in zip(coords, cells):
            cell = np.floor(row / voxel_size)
            ok &= (cell >= -KEY_OFFSET) & (cell < KEY_OFFSET)
            out[...] = cell
    cells[:, ~ok] = 0
    return cells, ok


def _pack(cells):
    """Packed int64 keys (N,) of voxel indices (3, N) in the packable range."""
    keys = cells[0] + KEY_OFFSET
    for row in cells[1:]:
        keys <<= KEY_BITS
        keys |= row + KEY_OFFSET
    return keys


def key_cells(keys):
    """Voxel indices (N, 3) int64 of packed keys (N,); voxel i spans [i, i + 1) · voxel_size."""
    keys = np.asarray(keys, np.int64)
    return np.stack([(keys >> s) & KEY_MASK for s in (2 * KEY_BITS, KEY_BITS, 0)], -1) - KEY_OFFSET


class VoxelMap:
    """Confidence-weighted voxel accumulation of world-frame points, at most `max_voxels` voxels.

    voxel_size: edge in metres; min_confidence: points below it are dropped; max_distance:
    metres from the latest camera beyond which points are dropped and voxels evicted (None: no
    limit). See the module docstring for keys, averaging and eviction.
    """

    # Bytes held per voxel: sorted key int64 + its dense slot int32, then the dense sums
    # Σc·p 3 x float64, Σc·rgb 3 x float32, Σc float64 and the count int32.
    BYTES_PER_VOXEL = 8 + 4 + 24 + 12 + 8 + 4

    def __init__(self, voxel_size=0.05, max_voxels=2_000_000, min_confidence=0.0, max_distance=None):
        if not (np.isfinite(voxel_size) and voxel_size > 0):
            raise ValueError(f"voxel_size must be a positive number of metres, got {voxel_size}")
        if not 1 <= int(max_voxels) < 2**31:
            raise ValueError(f"max_voxels must be in [1, 2**31), got {max_voxels}")
        if max_distance is not None and not max_distance > 0:
            raise ValueError(f"max_distance must be positive or None, got {max_distance}")
        self.voxel_size = float(voxel_size)
        self.max_voxels = int(max_voxels)
        self.min_confidence = float(min_confidence)
        self.max_distance = None if max_distance is None else float(max_distance)
        self.reset()

    def reset(self):
        """Forget every voxel and release the storage."""
        self._keys = np.empty(0, np.int64)  # sorted
        self._slots = np.empty(0, np.int32)  # dense slot of each sorted key
        self._xyz = np.empty((3, 0))  # Σc·p
        self._rgb = np.empty((3, 0), np.float32)  # Σc·rgb
        self._weight = np.empty(0)  # Σc
        self._count = np.empty(0, np.int32)  # n
        self._size = 0

    def __len__(self):
        """Number of occupied voxels."""
        return self._size

    @property
    def nbytes(self):
        """Bytes held by the map's arrays (at most max_voxels · BYTES_PER_VOXEL)."""
        return sum(a.nbytes for a in (self._keys, self._slots, self._xyz, self._rgb, self._weight, self._count))

    def insert(self, points, colors, confidence, camera_position, min_confidence=None):
        """Add world-frame points (N, 3) metres with colors (N, 3) uint8 RGB and confidence (N,),
        seen from the latest camera at camera_position (3,) metres, world frame; points below
        min_confidence (default: the map's) are left out.

        Returns the number of points accumulated into voxels the map still holds afterwards.
        """
        p = np.asarray(points).reshape(-1, 3).T.astype(np.float64, order="C")  # rows x, y, z: contiguous passes
        rgb = np.asarray(colors).reshape(-1, 3)
        c = np.asarray(confidence, np.float64).reshape(-1)
        if not p.shape[1] == len(rgb) == len(c):
            raise ValueError(f"lengths differ: {p.shape[1]} points, {len(rgb)} colors, {len(c)} confidences")
        cam = np.asarray(camera_position, np.float64).reshape(3)
        if not np.isfinite(cam).all():
            raise ValueError(f"camera_position must be finite, got {cam}")
        cells, ok = _cells(p, self.voxel_size)
        with np.errstate(invalid="ignore"):
            ok &= np.isfinite(c) & (c > 0) & (c >= (self.min_confidence if min_confidence is None else min_confidence))
            if self.max_distance is not None:
                ok &= _squared_distances(p, cam) <= self.max_distance**2
        if not ok.all():
            p, rgb, c, cells = p[:, ok], rgb[ok], c[ok], cells[:, ok]
        ukeys, group, counts = _groups(cells)
        # Per-voxel sums of the batch, rows Σc·x, Σc·y, Σc·z, Σc·r, Σc·g, Σc·b, Σc.
        sums = np.array([np.bincount(group, p[a] * c, len(ukeys)) for a in range(3)]
                        + [np.bincount(group, rgb[:, a] * c, len(ukeys)) for a in range(3)]
                        + [np.bincount(group, c, len(ukeys))]).reshape(7, len(ukeys))

        pos = np.searchsorted(self._keys, ukeys)
        hit = pos < self._size
        hit[hit] = self._keys[pos[hit]] == ukeys[hit]
        slot = self._slots[pos[hit]]
        self._xyz[:, slot] += sums[:3, hit]
        self._rgb[:, slot] += sums[3:6, hit]
        self._weight[slot] += sums[6, hit]
        self._count[slot] += counts[hit].astype(np.int32)
        hits = counts[hit]

        new = ~hit
        ukeys, sums, counts, pos = ukeys[new], sums[:, new], counts[new], pos[new]
        if self.max_distance is not None or self._size + len(ukeys) > self.max_voxels:
            touched = np.zeros(self._size, bool)
            touched[slot] = True
            keep_old, keep_new = self._survivors(cam, touched, sums[:3] / sums[6])
            if not keep_old.all():
                self._compact(keep_old)
                hits, pos = hits[keep_old[slot]], None
            ukeys, sums, counts = ukeys[keep_new], sums[:, keep_new], counts[keep_new]
            pos = None if pos is None else pos[keep_new]
        self._append(ukeys, sums, counts, pos)
        return int(hits.sum() + counts.sum())

    def points(self):
        """(means (M, 3) float32 metres world frame, mean colours (M, 3) uint8 RGB, mean confidence
        (M,) float32) of the occupied voxels, in key order."""
        s = self._slots
        w = self._weight[s]
        xyz = (self._xyz[:, s] / w).T.astype(np.float32, order="C")
        rgb = np.clip(np.rint(self._rgb[:, s] / w), 0, 255).T.astype(np.uint8, order="C")
        return xyz, rgb, (w / self._count[s]).astype(np.float32)

    def save_ply(self, path):
        """Write points() to a binary little-endian PLY at `path` (see ply.write_ply); returns the vertex count."""
        return write_ply(path, *self.points())

    def _survivors(self, cam, touched, new_means):
        """(keep (M,) over dense slots, keep (K,) over new voxels), given the stored voxels the
        batch touched (M,) bool and the new voxels' means as rows (3, K).

        Stored voxels beyond max_distance go. When the rest and the new voxels would pass
        max_voxels, LOW_WATER · max_voxels remain: the current view (touched and new voxels) and
        the untouched stored voxels nearest the camera, or, when the view alone is more, only
        the view's voxels nearest the camera.
        """
        n, k = self._size, new_means.shape[1]
        d2 = _squared_distances(self._xyz[:, :n] / self._weight[:n], cam)
        keep_old, keep_new = np.ones(n, bool), np.ones(k, bool)
        if self.max_distance is not None:
            keep_old = d2 <= self.max_distance**2
        if np.count_nonzero(keep_old) + k <= self.max_voxels:
            return keep_old, keep_new
        target = max(1, int(LOW_WATER * self.max_voxels))
        view = keep_old & touched
        room = target - np.count_nonzero(view) - k
        if room >= 0:
            nearest = np.argpartition(np.where(keep_old & ~touched, d2, np.inf), room)[:room]
            keep_old = view
            keep_old[nearest] = True
            return keep_old, keep_new
        d2 = np.concatenate([np.where(view, d2, np.inf), _squared_distances(new_means, cam)])
        keep = np.zeros(n + k, bool)
        keep[np.argpartition(d2, target - 1)[:target]] = True
        return keep[:n], keep[n:]

    def _compact(self, keep):
        """Drop the voxels in dense slots where keep (M,) is False, preserving slot order."""
        n = int(np.count_nonzero(keep))
        renumber = (np.cumsum(keep) - 1).astype(np.int32)
        kept = keep[self._slots]
        self._keys = self._keys[kept]
        self._slots = renumber[self._slots[kept]]
        for a in (self._xyz, self._rgb):
            a[:, :n] = a[:, :self._size][:, keep]
        for a in (self._weight, self._count):
            a[:n] = a[:self._size][keep]
        self._size = n

    def _append(self, keys, sums, counts, pos):
        """Store new voxels (sorted keys (K,), batch sums (7, K), counts (K,)); pos: their insertion
        points in the sorted keys, or None to search them."""
        k = len(keys)
        if k == 0:
            return
        n = self._size
        if n + k > len(self._weight):
            self._grow(min(self.max_voxels, max(n + k, len(self._weight) * 3 // 2, MIN_CAPACITY)))
        self._xyz[:, n:n + k] = sums[:3]
        self._rgb[:, n:n + k] = sums[3:6]
        self._weight[n:n + k] = sums[6]
        self._count[n:n + k] = counts
        if pos is None:
            pos = np.searchsorted(self._keys, keys)
        # pos is non-decreasing (keys are sorted), so new voxel j lands at pos[j] + j.
        at = pos + np.arange(k)
        old = np.ones(n + k, bool)
        old[at] = False
        merged_keys, merged_slots = np.empty(n + k, np.int64), np.empty(n + k, np.int32)
        merged_keys[at], merged_keys[old] = keys, self._keys
        merged_slots[at], merged_slots[old] = np.arange(n, n + k), self._slots
        self._keys, self._slots = merged_keys, merged_slots
        self._size = n + k

    def _grow(self, capacity):
        """Reallocate the dense arrays to `capacity` voxels, keeping the stored ones."""
        n = self._size

        def grown(a):
            out = np.zeros(a.shape[:-1] + (capacity,), a.dtype)
            out[..., :n] = a[..., :n]
            return out

        self._xyz, self._rgb = grown(self._xyz), grown(self._rgb)
        self._weight, self._count = grown(self._weight), grown(self._count)


def _squared_distances(coords, point):
    """Squared distances (N,) from point (3,) to coordinate rows (3, N)."""
    d2 = np.zeros(coords.shape[1])
    for row, x in zip(coords, point):
        delta = row - x
        d2 += delta * delta
    return d2


def _groups(cells):
    """(sorted unique packed keys (U,), group (N,) index of each point's voxel in them, counts (U,))
    of voxel indices (3, N).

    Sorting is by one np.sort of int64 words holding a point's voxel, numbered within the batch's
    bounding box in (x, y, z) order, above its index (SIMD sorts of plain integers are several
    times faster than an argsort); a box too large for those bits falls back to argsort of the
    packed keys, which sort in the same order.
    """
    n = cells.shape[1]
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    low = cells.min(axis=1)
    extent = [int(e) + 1 for e in cells.max(axis=1) - low]
    bits = max(1, (n - 1).bit_length())
    if extent[0] * extent[1] * extent[2] < 1 << (63 - bits):
        local = cells[0] - low[0]
        for row, lo, size in zip(cells[1:], low[1:], extent[1:]):
            local *= size
            local += row
            local -= lo
        local <<= bits
        local |= np.arange(n)
        local.sort()
        order = local & ((1 << bits) - 1)
        ordered = local >> bits
    else:
        keys = _pack(cells)
        order = np.argsort(keys)
        ordered = keys[order]
    first = np.empty(n, bool)
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    group = np.empty(n, np.int64)
    group[order] = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    return _pack(cells[:, order[starts]]), group, np.diff(np.append(starts, n))
