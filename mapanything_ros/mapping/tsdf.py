"""Volumetric map: a truncated signed distance field in sparse voxel blocks (numpy, no ROS).

What it stores. Space is cut into voxels of `voxel_size` metres, grouped in blocks of BLOCK³
voxels; only blocks a camera has seen into exist. Each voxel keeps a signed distance to the
nearest surface along the viewing rays, as a fraction of the truncation distance (tsdf in
[-1, 1]: +1 free space in front of a surface, 0 the surface, < 0 just behind it), the weight of
the observations fused into it (0: never observed, "unknown") and a colour.

Fusion (projective, as KinectFusion, voxblox and nvblox do it). A keyframe is a range image:
metric distances along the camera's unit rays, with a projection from camera-frame points to its
pixels (any lens the package knows: pinhole, plumb_bob, equidistant fisheye). Its blocks are
those its rays pass through up to the surface plus the band of ±T around the surface, allocated
on first sight. Every voxel of those blocks is projected into the image; with d its distance to
the camera and r the range there (bilinear in inverse range between the four pixels around, or
the nearest pixel's across a depth edge), sdf = r - d. Voxels with sdf < -T are behind the
surface, unobserved, left alone; the others take the weighted mean of their tsdf and
min(sdf, T) / T, so everything between the camera and the surface is carved towards +1 (free).

Truncation grows with range: T = max(truncation, truncation_ratio · r). A network's depth errs
in proportion to the range (scale, smooth warps), and views can only average their surfaces
where their bands overlap: with a fixed 20 cm band, maps under the emulated backend's error model
kept precision 0.43 at 5 cm over 10 s; with T = 10 % of the range, 0.85 (docs/map.md).

Weights. An observation weighs the pixel's weight (the caller's confidence weighting, at most 1)
times (truncation / T)²: 1 up to truncation / truncation_ratio metres, then falling as 1 / r² (a
network's error grows with range, and a wide far band blurs near structure). In front of the band
(free space) T is taken at the voxel's own distance instead: however far and uncertain the
surface, the ray surely passed the voxels near the camera, so they clear at full weight (a box
that walked away 2 m from the camera, seen through towards a wall 6 m off, is carved ten times
faster than with the wall's weight). It falls linearly to
0 from one voxel behind the surface to -T (voxblox's drop-off: what lies behind a surface is
less certain). Weights are capped at `max_weight`, so a voxel never becomes too sure to change:
something that moves away is carved out by the looks through its old place (dynamic clearing).
A voxel counts as observed (in surface() and occupancy()) from `min_weight`.

Ranges farther than `max_range` are no surface (nothing is allocated around them) but still
carve free space up to max_range along their rays. Without it every ray carves to its surface,
and the free space a keyframe finds grows with the cube of its farthest range (on a 518×392 view:
15 ms at 10 m, 160 ms at 30 m, 13 s and 38 M blocks at 100 m): the node's default is 10 m.
Pixels with weight 0 (no estimate, depth edges, low confidence) do nothing. Blocks a view only
looks through (outside its surface band) that are entirely free already are skipped: fusing +1
into +1 changes only a weight.

Outputs. surface(): points on the zero crossings of the field between neighbouring observed
voxels (linear interpolation, so sub-voxel), with colour and weight, where the crossing's free
side was seen in front of a surface, within its band, by some view (each voxel keeps that flag:
where the band behind a box's face meets free space carved past its edge the field steps through
zero too, but its free side was only ever seen far from any surface); mesh(): its triangle mesh
(surface nets), also cut into regions (mesh_regions(), for publishing only what changed);
occupancy(): a 2D grid of the height band [z_min, z_max] (world z up): occupied where a voxel in
the band is at or behind a surface, free where the band's lowest voxel was seen and none is
solid, unknown otherwise. All three search again only the blocks fused since their last call and the
neighbours whose search reaches into them (what they found elsewhere is kept, per block; after
an eviction their next search drops what they found in the evicted blocks and covers the kept
neighbours whose search reached into those; a load makes them search everything once). They
are computed from the stored
field, so they follow clearing. state() / load_state(): the whole map.

Memory. At most `max_blocks` blocks (BYTES_PER_BLOCK each). When a keyframe's new blocks would
pass it, the blocks farthest from the camera that the keyframe does not touch are dropped until
LOW_WATER · max_blocks remain (what the camera sees now always stays). Range limits integration
only; it evicts nothing.
"""

import copy
import itertools
from dataclasses import dataclass

import numpy as np

from .grid import Grid2D, GridCounts
from .keys import KEY_OFFSET, cells as cell_indices, key_cells, located, pack, shifted
from .mesh import Mesh
from .regions import REGION_BLOCKS

try:  # the compiled fusion loop (CMakeLists.txt builds it); _fuse below is the same in numpy
    from .. import _tsdf_fuse
except ImportError:
    _tsdf_fuse = None
try:  # the compiled surface, mesh and occupancy searches; _crossings, _mesh_parts and _solid below in numpy
    from .. import _tsdf_extract
except ImportError:
    _tsdf_extract = None

COMPILED = _tsdf_fuse is not None

BLOCK = 4  # voxels per block edge
VOXELS = BLOCK**3
LOW_WATER = 0.9  # fraction of max_blocks kept by an eviction
MIN_CAPACITY = 64  # blocks
FREE_STRIDE_M = 0.4  # at most this far between the free-space rays that find blocks, at their farthest reach
SPREAD = 0.1  # four pixels whose ranges differ more than this (relative) straddle a depth edge
COLOR_LOOKS = 16  # a voxel's colour follows its last this many looks
LOOKS, FRONT = 0x7F, 0x80  # a voxel's looks byte: its colour's looks, and whether it was seen in front of a surface
FREE = 0.999  # a voxel at or above this tsdf is free space
_GENERATIONS = itertools.count()  # TsdfMap._generation: a new one whenever the map is reset or loaded
REACH = tuple(o for o in np.ndindex(2, 2, 2) if any(o))  # a block's mesh cells read these neighbours too
FORMAT = "mapanything_ros.tsdf/2"
FORMATS = ("mapanything_ros.tsdf/1", FORMAT)  # load_state reads these (/1: without `front`)
SOLID_REACH = 0.6  # a voxel in front of a surface is solid when the zero crossing is this near (voxels)
_RUN_ROWS = 256  # rows a run of kept rows averages at least for _kept_then to copy runs as slices
_SEEN = 1  # TsdfMap._columns_of: band voxels of the column observed, but not its lowest

# Voxel offsets within a block, (VOXELS, 3) int, x slowest: voxel (i, j, k) is at (i·BLOCK + j)·BLOCK + k.
_OFFSETS = np.stack(np.meshgrid(*[np.arange(BLOCK)] * 3, indexing="ij"), -1).reshape(-1, 3)
_COLUMNS = _OFFSETS.reshape(BLOCK, BLOCK, BLOCK, 3)[:, :, 0, :2].reshape(-1, 2)  # (x, y) of a block's columns
_AXES = ((1, 0, 0), (0, 1, 0), (0, 0, 1))  # a block's surface crossings read these neighbours too
_FACES = _AXES + tuple(tuple(-c for c in o) for o in _AXES)  # and its grid columns these
EVICTIONS_KEPT = 16  # TsdfMap remembers its last this many evictions (_Eviction) for what it keeps of its outputs


@dataclass(frozen=True, eq=False)
class RangeView:
    """One keyframe to fuse.

    ranges (H, W) float32: metres from the camera along the pixels' rays, 0 or NaN = none; rays
    (H, W, 3) float32 the rays' directions in the camera frame, of any positive length (the fusion
    makes unit rays of those it samples; NaN outside the lens); pixels: a function (x, y, z)
    camera-frame float32 arrays (N,) -> (column, row, valid) of the pixel each point lies on
    (continuous pixel-index coordinates of this image; valid: the lens sees it): a
    geometry.ModelPixels, whose projection the compiled fusion computes itself (any other such
    function works, but is fused by the numpy loop, several times slower); world_from_camera
    (4, 4) rigid, metres; colors (H, W, 3) uint8 RGB, or (H, W, 4) with a fourth byte not read;
    weights (H, W) float32 >= 0, each pixel's observation weight (0 = not used).
    """

    ranges: np.ndarray
    rays: np.ndarray
    pixels: object
    world_from_camera: np.ndarray
    colors: np.ndarray
    weights: np.ndarray


class TsdfMap:
    """Sparse-block TSDF map; see the module doc.

    voxel_size, truncation (None: 4 voxels; at least one), max_range (None: none): metres;
    truncation_ratio: the truncation's share of the range; max_weight: the weight cap; max_blocks:
    the memory bound; min_weight: the weight a voxel needs to count as observed. overflow: how
    many blocks the last integrated keyframe reached when they alone were more than an eviction
    keeps (only its nearest stayed, the rest of the map was lost), else 0. outside: whether the
    last keyframe's camera lay beyond `extent` (metres from the origin along an axis: the packable
    block indices, keys.py), where nothing is mapped.
    """

    # tsdf, weight, rgb, looks; key, slot, origin, free, fusion stamp (not counted: the last
    # surface, mesh with its join, and grid columns with their per-cell counts kept for their
    # incremental extraction and the evictions remembered for them, docs/map.md)
    BYTES_PER_BLOCK = VOXELS * (4 + 4 + 3 + 1) + 8 + 4 + 24 + 1 + 8

    def __init__(self, voxel_size=0.05, truncation=None, max_weight=50.0, max_blocks=30_000, max_range=None,
                 min_weight=0.25, truncation_ratio=0.1):
        if not (np.isfinite(voxel_size) and voxel_size > 0):
            raise ValueError(f"voxel_size must be a positive number of metres, got {voxel_size}")
        truncation = 4 * voxel_size if truncation is None else float(truncation)
        if not truncation >= voxel_size:
            raise ValueError(f"truncation must be at least one voxel ({voxel_size} m), got {truncation}")
        if not 1 <= int(max_blocks) < 2**31:
            raise ValueError(f"max_blocks must be in [1, 2**31), got {max_blocks}")
        if max_range is not None and not max_range > 0:
            raise ValueError(f"max_range must be positive or None, got {max_range}")
        if not (max_weight > 0 and min_weight >= 0):
            raise ValueError(f"max_weight must be positive and min_weight >= 0, got {max_weight}, {min_weight}")
        if not 0 <= truncation_ratio < 1:
            raise ValueError(f"truncation_ratio must be in [0, 1), got {truncation_ratio}")
        self.voxel_size, self.truncation = float(voxel_size), truncation
        self.truncation_ratio = float(truncation_ratio)
        self.max_weight, self.min_weight = float(max_weight), float(min_weight)
        self.max_blocks = int(max_blocks)
        self.max_range = None if max_range is None else float(max_range)
        self.reset()

    def reset(self):
        """Forget every block and release the storage."""
        self._keys = np.empty(0, np.int64)  # sorted packed block indices
        self._slots = np.empty(0, np.int32)  # pool slot of each sorted key
        self._tsdf = np.ones((0, VOXELS), np.float32)
        self._weight = np.zeros((0, VOXELS), np.float32)
        self._rgb = np.zeros((0, VOXELS, 3), np.uint8)
        # Looks averaged into the colour (at most COLOR_LOOKS; bits LOOKS) and, bit FRONT, whether the
        # voxel was seen in front of a surface, within its band (_sides): one byte, as the fusion
        # writes both (a separate array of the flag cost 9 % more fusion time, docs/map.md#accuracy).
        self._looks = np.zeros((0, VOXELS), np.uint8)
        self._origin = np.zeros((0, 3), np.int64)  # each slot's first voxel index
        self._free = np.zeros(0, bool)  # each slot: every voxel observed and free
        self._fused = np.zeros(0, np.int64)  # each slot: the number of the fusion that last changed it
        self._fusions = 0  # fusions and evictions so far: each has its number
        # What surface(), mesh() and occupancy() last found, kept per block (pool slot) to search
        # again only the blocks fused since (_refresh): (fusions then, (pool slot of each point's
        # block, points, colours, weights)), (fusions then, _mesh_blocks parts, their mesh.Mesh)
        # and (band, (fusions then, _columns_of parts), their grid.GridCounts), each in the pool slots
        # of its time. An eviction (_keep) is remembered (_evictions, the last EVICTIONS_KEPT): the
        # next search drops the evicted blocks' parts, renumbers the moved ones and searches the
        # kept blocks that read an evicted one. Parts older than the evictions remembered
        # (_forgotten: the number of the newest one forgotten) are searched again whole.
        self._surface = self._mesh = self._columns = None
        self._evictions, self._forgotten = [], 0
        self._generation = next(_GENERATIONS)
        self._source = self._copied_at = None  # a copy(): the map it was (first) copied from, its fusions then
        self._size = 0
        self.overflow = 0  # blocks the last keyframe reached when they alone passed the bound (_allocate)
        self.outside = False  # the last keyframe's camera lay beyond `extent`

    def copy(self):
        """An independent copy: the same parameters and contents, sharing no storage."""
        out = copy.copy(self)
        n = self._size
        out._keys, out._slots = self._keys.copy(), self._slots.copy()
        for name in ("_tsdf", "_weight", "_rgb", "_looks", "_origin", "_free", "_fused"):
            setattr(out, name, getattr(self, name)[:n].copy())
        if self._source is None:  # (a copy's copy: of the map the first copy was of)
            out._source, out._copied_at = self, self._fusions
        return out

    def __len__(self):
        """Number of blocks."""
        return self._size

    @property
    def nbytes(self):
        """Bytes held by the map's arrays (the voxels' and the blocks'; not the last surface, mesh and
        grid columns (with the mesh's join and the grid's per-cell counts) kept for their incremental
        extraction, nor the evictions remembered for them)."""
        return sum(a.nbytes for a in (self._keys, self._slots, self._tsdf, self._weight, self._rgb, self._looks,
                                      self._origin, self._free, self._fused))

    @property
    def extent(self):
        """Metres from the origin along each axis that the map can hold (its packable block indices):
        about ±210 km at 5 cm voxels."""
        return KEY_OFFSET * BLOCK * self.voxel_size

    def integrate(self, view):
        """Fuse a RangeView; returns the number of voxels updated."""
        pose = np.asarray(view.world_from_camera, np.float64)
        rot, origin = pose[:3, :3], pose[:3, 3]
        if not np.isfinite(pose).all():
            raise ValueError("world_from_camera must be finite")
        self.outside = bool(((origin < -self.extent) | (origin >= self.extent)).any())  # blocks [-2**20, 2**20)
        ranges = np.asarray(view.ranges, np.float32)
        weights = np.asarray(view.weights, np.float32)
        with np.errstate(invalid="ignore"):
            rays = np.asarray(view.rays)
            use = (np.isfinite(ranges) & (ranges > 0) & (weights > 0) & np.isfinite(rays[..., 0])
                   & np.isfinite(rays[..., 1]) & np.isfinite(rays[..., 2]))  # not .all(-1): 10x slower
        band, free = self._blocks_seen(view, use, rot, origin)
        keys, slots = self._allocate(_unique(np.concatenate([band, free])), origin)
        # Blocks the view only looks through (not in its surface band) that are free already are
        # left as they are: fusing +1 into a voxel at +1 changes nothing but its weight.
        slots = slots[~(self._free[slots] & ~np.isin(keys, band, assume_unique=True))]
        if len(slots) == 0:
            return 0
        return self._update(view, np.where(use, ranges, 0).astype(np.float32), weights, slots, rot, origin)

    def _blocks_seen(self, view, use, rot, origin):
        """(surface band, free space): sorted unique packed keys of the blocks the view's rays reach
        in the band of ±truncation around its pixels' surface, and in front of it (sampled on a
        sparser grid of rays, every half block)."""
        block = self.voxel_size * BLOCK
        far = np.inf if self.max_range is None else self.max_range
        rays = np.asarray(view.rays, np.float32)
        ranges = np.asarray(view.ranges, np.float32)
        h, w = ranges.shape
        # Surface band: pixels every few, points from -trunc to +trunc along each ray at most half a
        # block apart (so no block of the band is skipped), as many as the pixel's own band needs.
        step = max(1, min(h, w) // 64)
        sub = use[::step, ::step] & (ranges[::step, ::step] <= far)
        r = ranges[::step, ::step][sub].astype(np.float64)
        band = self._truncation(r)
        count = np.maximum(np.ceil(4 * band / block).astype(np.int64) + 1, 3)
        band_keys = self._ray_keys(_unit(rays[::step, ::step][sub]), r - band, r + band, count, rot, origin, block)
        # Free space: rays every FREE_STRIDE_M at the farthest reach, points at most half a block
        # apart from the camera up to the surface's band (or max_range). r - truncation(r) grows with
        # r: the farthest range reaches farthest.
        with np.errstate(invalid="ignore"):
            farthest = float(np.max(ranges, where=use, initial=0))
        reach_max = min(farthest - float(self._truncation(np.float64(farthest))), far)
        if not reach_max > 0:
            return band_keys, np.empty(0, np.int64)
        pitch = _angular_pitch(rays)
        stride = max(1, int(FREE_STRIDE_M / max(reach_max * pitch, 1e-6)))
        stride = min(stride, max(1, min(h, w) // 4))
        rs = ranges[::stride, ::stride].astype(np.float64)
        with np.errstate(invalid="ignore"):
            rs = np.where(use[::stride, ::stride], np.minimum(rs - self._truncation(rs), far), 0)
        keep = rs > 0
        rs = rs[keep]
        count = np.ceil(rs / (block / 2)).astype(np.int64) + 1
        return band_keys, self._ray_keys(_unit(rays[::stride, ::stride][keep]), np.zeros_like(rs), rs, count, rot,
                                         origin, block)

    @staticmethod
    def _ray_keys(dirs, lo, hi, counts, rot, origin, block):
        """Sorted unique packed keys of the blocks that samples along rays fall in: counts[i] samples
        evenly spaced from lo[i] to hi[i] metres along each camera-frame direction dirs[i] (N, 3),
        in float64 (compiled: _tsdf_fuse.ray_keys, the same keys)."""
        dirs = np.ascontiguousarray(dirs, np.float32).reshape(-1, 3)
        lo, hi = np.ascontiguousarray(lo, np.float64), np.ascontiguousarray(hi, np.float64)
        counts = np.ascontiguousarray(counts, np.int64)
        rot, origin = np.asarray(rot, np.float64), np.asarray(origin, np.float64)
        if _tsdf_fuse is not None:
            return np.sort(np.frombuffer(_tsdf_fuse.ray_keys(dirs, lo, hi, counts, tuple(rot.ravel()), tuple(origin),
                                                             float(block)), np.int64))
        ray = np.repeat(np.arange(len(counts)), counts)
        k = np.arange(len(ray)) - np.repeat(np.cumsum(counts) - counts, counts)
        d = dirs.astype(np.float64)
        world = np.empty((3, len(ray)))  # in blocks
        with np.errstate(invalid="ignore", over="ignore"):  # inf or NaN coordinates: left out by cell_indices
            t = lo[ray] + k * ((hi - lo) / np.maximum(counts - 1, 1))[ray]
            for i in range(3):  # world direction row i = ((x r_i0 + y r_i1) + z r_i2), as the C computes it
                axis = d[:, 0] * rot[i, 0] + d[:, 1] * rot[i, 1]
                axis += d[:, 2] * rot[i, 2]
                np.multiply(axis[ray], t, out=world[i])
                world[i] += origin[i]
                world[i] *= 1 / block
        cells, ok = cell_indices(world, 1.0)
        return _unique(pack(cells if ok.all() else cells[:, ok]))

    def _allocate(self, keys, origin):
        """(keys, pool slots) of the blocks with packed keys (sorted unique) that the map holds
        afterwards, the missing ones added. Past max_blocks, LOW_WATER · max_blocks remain: the
        view's blocks and the others nearest `origin`, or, when the view alone has more, its own
        nearest (then `overflow` is how many it reached; else 0)."""
        self.overflow = 0
        pos, hit = self._lookup(keys)
        new = keys[~hit]
        if self._size + len(new) > self.max_blocks:
            target = max(1, int(LOW_WATER * self.max_blocks))
            touched = np.zeros(self._size, bool)
            touched[self._slots[pos[hit]]] = True
            dist = self._distances(self._origin[:self._size] // BLOCK, origin)
            if np.count_nonzero(touched) + len(new) <= target:
                dist[touched] = -1  # kept first
                self._keep(np.argsort(dist, kind="stable")[:target - len(new)])
            else:
                self.overflow = np.count_nonzero(touched) + len(new)
                dist[~touched] = np.inf
                ranked = np.concatenate([dist, self._distances(key_cells(new), origin)])
                nearest = np.argsort(ranked, kind="stable")[:target]
                self._keep(nearest[nearest < len(dist)])
                new = np.sort(new[nearest[nearest >= len(dist)] - len(dist)])
        self._append(new)
        pos, found = self._lookup(keys)
        return keys[found], self._slots[pos[found]]

    def _update(self, view, ranges, weights, slots, rot, origin):
        """Project every voxel of the pool slots into the view, fuse its signed distance and renew
        the slots' free flags (the compiled _tsdf_fuse, which projects as well when the view's
        pixels describe their projection (geometry.ModelPixels), or _fuse in numpy); returns how
        many voxels were updated."""
        v = self.voxel_size
        slots = np.ascontiguousarray(slots, np.int32)
        self._fusions += 1
        self._fused[slots] = self._fusions
        # Camera-frame voxel centres: each block's first voxel (float64), plus the rotated offsets (float32).
        corner = ((self._origin[slots] * v - origin) @ rot).astype(np.float32)
        offsets = ((_OFFSETS * v + v / 2) @ rot).astype(np.float32)
        colors = np.ascontiguousarray(view.colors, np.uint8)
        weights = np.ascontiguousarray(weights, np.float32)
        projection = getattr(view.pixels, "projection", None)
        if _tsdf_fuse is None or projection is None:
            cam = (corner[:, None, :] + offsets).reshape(-1, 3)
            col, row, valid = view.pixels(cam[:, 0], cam[:, 1], cam[:, 2])
            return self._fuse(slots, cam, np.asarray(col, np.float32), np.asarray(row, np.float32), valid, ranges,
                              weights, colors)
        return _tsdf_fuse.fuse(self._tsdf, self._weight, self._rgb, self._looks, self._free, slots, corner, offsets,
                               *projection, ranges, weights, colors, ranges.shape[1],
                               (self.truncation, self.truncation_ratio, v, self.max_weight, self.max_range or 0.0,
                                SPREAD, FREE, self.min_weight), COLOR_LOOKS)

    def _fuse(self, slots, cam, col, row, valid, ranges, weights, colors):
        """The fusion of _tsdf_fuse.c in numpy (its steps documented there and in the module doc)."""
        v = self.voxel_size
        h, w = ranges.shape
        with np.errstate(invalid="ignore"):
            index = np.flatnonzero(valid & (col > -0.5) & (col < w - 0.5) & (row > -0.5) & (row < h - 0.5))
        x, y, z = cam[index, 0], cam[index, 1], cam[index, 2]
        dist = np.sqrt(x * x + y * y + z * z)
        voxel = slots[index // VOXELS].astype(np.int64) * VOXELS + index % VOXELS  # flat indices into the pools
        col, row = col[index], row[index]
        pix = np.floor(row + 0.5).astype(np.int64) * w + np.floor(col + 0.5).astype(np.int64)  # halves up, as the C
        r = ranges.reshape(-1)[pix]
        # Near the surface, where the sub-pixel range matters, the bilinear range replaces the nearest.
        with np.errstate(invalid="ignore"):
            close = np.flatnonzero((r > 0) & (np.abs(r - dist) < self._truncation(r) + SPREAD * r))
        r[close] = _bilinear(ranges, col[close], row[close], r[close])
        sdf = r - dist
        trunc = self._truncation(r)
        # 1 / range² beyond the minimum truncation: in the band the surface's range, in front of it
        # the voxel's own distance (the ray surely passed it, however far the surface).
        ahead = sdf >= trunc
        wt = weights.reshape(-1)[pix] * (np.float32(self.truncation) / np.where(ahead, self._truncation(dist), trunc)) ** 2
        behind = sdf < -v
        wt[behind] *= (trunc[behind] + sdf[behind]) / (trunc[behind] - v)  # drop-off to 0 at -trunc
        keep = (r > 0) & (sdf >= -trunc) & (wt > 0)
        if self.max_range is not None:
            keep &= dist <= self.max_range
        keep = np.flatnonzero(keep)
        voxel, pix, sdf, trunc, wt = voxel[keep], pix[keep], sdf[keep], trunc[keep], wt[keep]
        obs = np.minimum(sdf, trunc) / trunc
        tsdf, weight = self._tsdf.reshape(-1), self._weight.reshape(-1)
        old = weight[voxel]
        total = old + wt
        tsdf[voxel] = (tsdf[voxel] * old + obs * wt) / total
        weight[voxel] = np.minimum(total, self.max_weight)
        # Colour: the mean of the last COLOR_LOOKS looks within the band (at the surface they see).
        near = np.flatnonzero(sdf < trunc)
        cv, cp = voxel[near], pix[near]
        rgb, looks = self._rgb.reshape(-1, 3), self._looks.reshape(-1)
        seen = looks[cv] & LOOKS
        f = (1 / (seen + np.float32(1)))[:, None]
        seen_rgb = colors.reshape(-1, colors.shape[-1])[cp, :3]
        rgb[cv] = np.floor(rgb[cv] * (1 - f) + seen_rgb * f + 0.5).astype(np.uint8)
        looks[cv] = np.minimum(seen + 1, COLOR_LOOKS) | (looks[cv] & FRONT) | np.where(sdf[near] >= 0, FRONT, 0)
        self._free[slots] = ((self._tsdf[slots] >= FREE) & (self._weight[slots] >= max(self.min_weight, 1e-12))).all(1)
        return len(voxel)

    def _truncation(self, ranges):
        """The truncation distance (metres, float32) of observations at `ranges` metres."""
        return np.maximum(np.float32(self.truncation), np.float32(self.truncation_ratio) * ranges)

    def surface(self):
        """(points (N, 3) float32 metres world frame, colours (N, 3) uint8 RGB, weights (N,) float32)
        on the field's zero crossings between neighbouring voxels that both are observed (weight at
        least min_weight) and lie within the truncation band; read-only arrays. Incremental: only
        the blocks fused since the last call, and their neighbours along -x, -y and -z (whose
        crossings reach into them), are searched again (after an eviction, also those whose crossings
        reached into an evicted block)."""
        self._surface, _ = self._refresh(self._surface, _AXES, self._crossings, (4,))
        return self._surface[1][1:]

    def _refresh(self, kept, offsets, search, groups):
        """The per-block parts of an incremental extraction (surface, mesh, grid columns) as they are
        now, and how they came: ((fusions now, parts), rows). parts: a tuple of read-only arrays by
        entry, in groups of the lengths `groups`, each led by its entries' pool slots. search(which)
        gives the parts of the blocks at sorted indices `which`: every block when `kept` (fusions
        then, parts in the pool slots of then) is None or older than the evictions remembered (rows
        None); else `kept` renumbered through the evictions since (_renumbered), its parts of the
        blocks fused since and of those at -offset from them or from a block evicted since (whose
        search reaches into them) replaced: the entries of kept's that stayed, in their order, then
        the new ones (rows: per group, the indices of those that stayed among kept's). Returns
        (`kept` itself, None) when nothing was fused or evicted since."""
        if kept is None or kept[0] < self._forgotten:
            parts, rows = search(np.arange(self._size)), None
        else:
            since, old = kept
            evictions = [e for e in self._evictions if e.count > since]
            dirty = self._dirty(since, offsets)
            if dirty is None and not evictions:
                return kept, None
            parts, rows = _renumbered(old, evictions, groups)
            if dirty is not None:
                stays = [self._kept(parts[start], dirty) for start in _starts(groups)]
                rows = tuple(k if r is None else r[k] for r, k in zip(rows, stays))
                stays = [k for k, n in zip(stays, groups) for _ in range(n)]
                parts = tuple(_kept_then(o, k, x) for o, k, x in zip(parts, stays, search(dirty)))
        for a in parts:
            a.flags.writeable = False
        return (self._fusions, parts), rows

    def _dirty(self, since, offsets):
        """Sorted indices of the blocks fused after fusion number `since` and of those at -offset
        from them or from a block evicted since (whose search reaches into them); None when none.
        By packed keys, which are sorted: each offset's neighbours are one sorted lookup."""
        fused = np.flatnonzero(self._fused[self._slots] > since)
        gone = [e.gone for e in self._evictions if e.count > since]
        if len(fused) == 0 and not any(len(g) for g in gone):
            return None
        near = np.zeros(self._size, bool)
        near[fused] = True
        for keys in [self._keys[fused]] + gone:
            for offset in offsets:
                near[self._present(*shifted(keys, [-o for o in offset]))] = True
        near = np.flatnonzero(near)
        return near if len(near) else None

    def _present(self, keys, in_range):
        """Sorted indices of the blocks with the packed `keys` where `in_range`, those the map holds."""
        pos, found = self._lookup(keys[in_range])
        return pos[found]

    def _lookup(self, keys):
        """(index into the sorted keys (N,), found (N,) bool) of packed `keys`: where each is, or
        would go, and whether the map holds it (an index is < len(self) where found)."""
        return located(self._keys[:self._size], keys)

    def _kept(self, slots, dirty):
        """Indices of the entries whose block (pool `slots`) is not among the blocks `dirty`."""
        searched = np.zeros(self._size, bool)
        searched[self._slots[dirty]] = True
        return np.flatnonzero(~searched[slots])

    def _crossings(self, which):
        """(pool slot of each point's block (N,), points, colours, weights) of surface() in the
        blocks at sorted indices `which` (compiled: _tsdf_extract.crossings, the same)."""
        if _tsdf_extract is not None:
            slots, points, colours, weights = self._extract(_tsdf_extract.crossings, which)
            return (np.frombuffer(slots, np.int32), np.frombuffer(points, np.float32).reshape(-1, 3),
                    np.frombuffer(colours, np.uint8).reshape(-1, 3), np.frombuffer(weights, np.float32))
        which = which[self._held(self._slots[which])]
        if len(which) == 0:
            return (np.zeros(0, np.int32), np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8),
                    np.zeros(0, np.float32))
        slots = self._slots[which]
        cells = key_cells(self._keys[which])
        t, w, c, f = self._padded(which, cells, faces_only=True)
        own = (slice(None),) + (slice(0, BLOCK),) * 3
        ta, wa = t[own], w[own]
        with np.errstate(invalid="ignore"):
            ok = _sides(t, w >= max(self.min_weight, 1e-12), f)
        pos = t > 0
        ok_a, pos_a = ok[own], pos[own]
        blocks, pts, cols, wts = [], [], [], []
        for axis in range(3):  # between each band voxel and its neighbour along +axis
            nxt = (slice(None),) + tuple(slice(1, BLOCK + 1) if a == axis else slice(0, BLOCK) for a in range(3))
            tb, wb = t[nxt], w[nxt]
            b, i, j, k = np.nonzero(ok_a & ok[nxt] & (pos_a != pos[nxt]))
            t0, t1 = ta[b, i, j, k], tb[b, i, j, k]
            frac = t0 / (t0 - t1)
            ijk = np.stack([i, j, k], -1).astype(np.float64)
            ijk[:, axis] += frac
            blocks.append(slots[b])
            pts.append(((cells[b] * BLOCK + ijk) * self.voxel_size + self.voxel_size / 2).astype(np.float32))
            cols.append(np.where((frac < 0.5)[:, None], c[own][b, i, j, k], c[nxt][b, i, j, k]))
            wts.append(np.minimum(wa[b, i, j, k], wb[b, i, j, k]))
        return np.concatenate(blocks), np.concatenate(pts), np.concatenate(cols), np.concatenate(wts)

    def _held(self, slots):
        """Whether each block of the pool `slots` holds an observed voxel within the band: the only
        blocks a zero crossing can start in (a free block, all at its far side, holds none)."""
        wmin = max(self.min_weight, 1e-12)
        with np.errstate(invalid="ignore"):
            return ((np.abs(self._tsdf[slots]) < 1) & (self._weight[slots] >= wmin)).any(1)

    def mesh(self):
        """The zero level set as a triangle mesh (surface nets: one vertex per cell of 2 × 2 × 2
        voxel centres the surface passes, at the mean of its edges' zero crossings; two triangles
        per crossed voxel edge, joining the four cells around it). Only crossings between voxels
        that surface() uses (observed, within the band) count, so the mesh follows the same
        surface. Returns read-only (vertices (V, 3) float32 metres world frame, colours (V, 3) uint8
        RGB (the cell's voxel nearest the surface), triangles (F, 3) int64 vertex indices,
        counter-clockwise seen from the free side). Incremental as surface(): only the blocks fused
        since the last call, and those whose cells reach into them, are meshed again."""
        return self._joined().triangles()

    def mesh_regions(self):
        """mesh() by region of REGION_BLOCKS³ blocks (regions.RegionMesh, its quads), for publishing
        only the regions that changed."""
        return self._joined().regions

    def _joined(self):
        """The mesh.Mesh of the map now: its parts searched again where fused or evicted since the
        last (_refresh), joined incrementally (Mesh.updated) onto the last."""
        kept = None if self._mesh is None else self._mesh[:2]
        found, rows = self._refresh(kept, REACH, self._mesh_blocks, (5, 4))  # per vertex, per quad
        if found is not kept:
            parts = found[1]
            mesh = Mesh.of(parts, self._generation) if rows is None else self._mesh[2].updated(parts, *rows)
            self._mesh = (*found, mesh)
        return self._mesh[2]

    def adopt(self, copied):
        """Keep what `copied`, a copy() of this map, extracted elsewhere (away from a lock: its
        surface(), mesh() and occupancy() grid columns) as this map's own, so that its next ones
        search only what was fused or evicted after the copy: each one newer than this map's own;
        none when this map has reset or loaded since the copy (its pool slots are of another
        storage), when the copy was fused itself (they are of another map), or when it is not a
        copy of this map (or a copy of one)."""
        if (copied._source is not self or copied._generation != self._generation
                or copied._fusions != copied._copied_at):
            return
        if copied._surface is not None and (self._surface is None or copied._surface[0] > self._surface[0]):
            self._surface = copied._surface
        if copied._mesh is not None and (self._mesh is None or copied._mesh[0] > self._mesh[0]):
            self._mesh = copied._mesh
        if copied._columns is not None and (self._columns is None or copied._columns[1][0] > self._columns[1][0]):
            self._columns = copied._columns

    def _meshable(self, which):
        """Whether each block at sorted indices `which` holds an observed band voxel or lies just
        below one along x, y or z (its cells reach into it): the blocks that can own a crossed
        edge or cell."""
        held = self._held(self._slots[which])
        cells = key_cells(self._keys[which])
        for offset in REACH:
            nb = self._find(cells + np.array(offset))
            has = nb >= 0
            held[has] |= self._held(self._slots[nb[has]])
        return held

    def _mesh_blocks(self, which):
        """_mesh_parts of the blocks at sorted indices `which`, then the packed key (Q,) of each
        quad's region (its block's: regions.py)."""
        parts = self._mesh_parts(which)  # (parts[5]: each quad's pool slot)
        return parts + (pack(np.ascontiguousarray((self._origin[parts[5]] // (BLOCK * REGION_BLOCKS)).T)),)

    def _mesh_parts(self, which):
        """The mesh's parts owned by the blocks at sorted indices `which`: (pool slot (V,), global
        cell key (V,), vertex (V, 3), colour (V, 3), meshed at (V,): the fusion count now) of each
        cell with a vertex, by the block of its min voxel; (pool slot (Q,), cell keys (Q, 4) of the
        four cells a quad joins, in its counter-clockwise order, meshed at (Q,)) of each quad, by
        the block of its crossed edge's low voxel (compiled: _tsdf_extract.mesh, the same)."""
        if _tsdf_extract is not None:
            slots, keys, vertices, colours, quad_slots, quads = self._extract(_tsdf_extract.mesh, which)
            keys, quads = np.frombuffer(keys, np.int64), np.frombuffer(quads, np.int64).reshape(-1, 4)
            return (np.frombuffer(slots, np.int32), keys, np.frombuffer(vertices, np.float32).reshape(-1, 3),
                    np.frombuffer(colours, np.uint8).reshape(-1, 3), np.full(len(keys), self._fusions, np.int64),
                    np.frombuffer(quad_slots, np.int32), quads, np.full(len(quads), self._fusions, np.int64))
        near = which[self._meshable(which)]
        wmin = max(self.min_weight, 1e-12)
        n = len(near)
        if n == 0:
            return (np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros((0, 3), np.float32),
                    np.zeros((0, 3), np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int32),
                    np.zeros((0, 4), np.int64), np.zeros(0, np.int64))
        slots = self._slots[near]
        cells = key_cells(self._keys[near])
        t, w, c, f = self._padded(near, cells)
        with np.errstate(invalid="ignore"):
            ok = (w >= wmin) & (np.abs(t) < 1)  # (n, B+1, B+1, B+1): observed in the band (the colours)
            sides = _sides(t, ok, f)
        pos = t > 0
        # Crossed voxel edges along each axis, between voxel p (own block) and p + e_axis.
        own = (slice(None),) + (slice(0, BLOCK),) * 3
        crossed, fracs = [], []
        for axis in range(3):
            nxt = tuple(slice(1, BLOCK + 1) if a == axis else slice(0, BLOCK + 1) for a in range(3))
            prev = tuple(slice(0, BLOCK) if a == axis else slice(0, BLOCK + 1) for a in range(3))
            lo, hi = (slice(None),) + prev, (slice(None),) + nxt
            e = sides[lo] & sides[hi] & (pos[lo] != pos[hi])
            ta, tb = t[lo], t[hi]
            with np.errstate(invalid="ignore", divide="ignore"):
                frac = np.where(e, ta / (ta - tb), 0)
            crossed.append(e)  # (n, ...) with BLOCK along axis, BLOCK + 1 along the others
            fracs.append(frac)
        # Cells (min corner at own voxels): mean of the crossing points of their 12 edges.
        total = np.zeros((n, BLOCK, BLOCK, BLOCK, 3), np.float32)
        count = np.zeros((n, BLOCK, BLOCK, BLOCK), np.int32)
        for axis in range(3):
            others = [a for a in range(3) if a != axis]
            for d1 in (0, 1):
                for d2 in (0, 1):
                    sel = [slice(0, BLOCK)] * 3
                    sel[others[0]] = slice(d1, d1 + BLOCK)
                    sel[others[1]] = slice(d2, d2 + BLOCK)
                    sel = (slice(None),) + tuple(sel)
                    e, f = crossed[axis][sel], fracs[axis][sel]
                    point = np.zeros(e.shape + (3,), np.float32)
                    point[..., axis] = f
                    point[..., others[0]] = d1
                    point[..., others[1]] = d2
                    total += np.where(e[..., None], point, 0)
                    count += e
        b, i, j, k = np.nonzero(count)
        local = total[b, i, j, k] / count[b, i, j, k, None]
        corner = cells[b] * BLOCK + np.stack([i, j, k], -1)  # global index of each cell's min voxel
        vertices = ((corner + local) * self.voxel_size + self.voxel_size / 2).astype(np.float32)
        # Colour: the cell's valid corner voxel nearest the surface.
        best = np.full(len(b), np.inf, np.float32)
        colours = np.zeros((len(b), 3), np.uint8)
        for di in (0, 1):
            for dj in (0, 1):
                for dk in (0, 1):
                    tt = np.where(ok[b, i + di, j + dj, k + dk], np.abs(t[b, i + di, j + dj, k + dk]), np.inf)
                    better = tt < best
                    best[better] = tt[better]
                    colours[better] = c[b[better], i[better] + di, j[better] + dj, k[better] + dk]
        # Quads: each crossed edge (p, p + e_axis) of an own voxel p joins cells p, p - e_b, p - e_b - e_c, p - e_c.
        quad_slots, quads = [], []
        for axis in range(3):
            bb, ii, jj, kk = np.nonzero(crossed[axis][own])
            p = cells[bb] * BLOCK + np.stack([ii, jj, kk], -1)
            eb, ec = np.eye(3, dtype=np.int64)[(axis + 1) % 3], np.eye(3, dtype=np.int64)[(axis + 2) % 3]
            quad = np.stack([_cell_keys(p - offset) for offset in (0, eb, eb + ec, ec)], -1)
            # The cycle's normal is +axis; flip it where the free side (tsdf > 0) is at p, the low end.
            flip = pos[bb, ii, jj, kk]
            quad[flip] = quad[flip][:, ::-1]
            quad_slots.append(slots[bb])
            quads.append(quad)
        quads = np.concatenate(quads)
        return (slots[b], _cell_keys(corner), vertices, colours, np.full(len(b), self._fusions, np.int64),
                np.concatenate(quad_slots), quads, np.full(len(quads), self._fusions, np.int64))

    def _extract(self, search, which, *args):
        """search(the map, which, *args): a compiled search (_tsdf_extract's crossings, mesh or solid)
        of the blocks at sorted indices `which`."""
        return search(self._tsdf, self._weight, self._rgb, self._looks, self._keys, self._slots,
                      np.ascontiguousarray(which, np.intp), max(self.min_weight, 1e-12), self.voxel_size, *args)

    def _solid(self, which, cells):
        """(n, VOXELS) bool of the blocks at sorted indices `which`: observed voxels at or behind a
        surface (tsdf <= 0), or in front of one whose zero crossing with an observed axis
        neighbour (both within the band; _sides: this voxel seen in front of a surface) lies
        within SOLID_REACH of a voxel of it (compiled: _tsdf_extract.solid, the same)."""
        if _tsdf_extract is not None:
            return np.frombuffer(self._extract(_tsdf_extract.solid, which, SOLID_REACH), bool).reshape(-1, VOXELS)
        n = len(which)
        wmin = max(self.min_weight, 1e-12)
        size = BLOCK + 2
        t = np.ones((n, size, size, size), np.float32)
        w = np.zeros_like(t)
        inner = (slice(None),) + (slice(1, BLOCK + 1),) * 3
        shape = (BLOCK, BLOCK, BLOCK)
        t[inner] = self._tsdf[self._slots[which]].reshape((-1,) + shape)
        w[inner] = self._weight[self._slots[which]].reshape((-1,) + shape)
        for axis in range(3):
            for step, dst_i, src_i in ((-1, 0, BLOCK - 1), (1, BLOCK + 1, 0)):
                offset = np.zeros(3, np.int64)
                offset[axis] = step
                nb = self._find(cells + offset)
                has = nb >= 0
                dst = [slice(None), slice(1, BLOCK + 1), slice(1, BLOCK + 1), slice(1, BLOCK + 1)]
                dst[axis + 1] = dst_i
                src = [slice(None)] * 4
                src[axis + 1] = src_i
                slots = self._slots[nb[has]]
                t[tuple(dst)][has] = self._tsdf[slots].reshape((-1,) + shape)[tuple(src)]
                w[tuple(dst)][has] = self._weight[slots].reshape((-1,) + shape)[tuple(src)]
        own_t, own_w = t[inner], w[inner]
        own_f = (self._looks[self._slots[which]] >= FRONT).reshape((-1,) + shape)
        solid = (own_w >= wmin) & (own_t <= 0)
        free_side = _sides(own_t, own_w >= wmin, own_f) & (own_t > 0)
        surface_side = _sides(t, w >= wmin, False)  # no flag: only tsdf <= 0 qualifies; once, for every neighbour
        for axis in range(3):
            for step in (-1, 1):
                sel = [slice(None), slice(1, BLOCK + 1), slice(1, BLOCK + 1), slice(1, BLOCK + 1)]
                sel[axis + 1] = slice(1 + step, BLOCK + 1 + step)
                sel = tuple(sel)
                solid |= free_side & surface_side[sel] & (own_t * (1 - SOLID_REACH) < -t[sel] * SOLID_REACH)
        return solid.reshape(n, VOXELS)

    def _padded(self, which, cells, faces_only=False):
        """(tsdf, weight, rgb, front) of the blocks at sorted indices `which` (block indices `cells`)
        with one more voxel along +x, +y and +z taken from the neighbouring blocks: (n, B+1, B+1,
        B+1[, 3]); weight 0 where there is no neighbour. faces_only: only the three face neighbours are
        read (the extra edge and corner voxels stay unobserved), enough for crossings along one axis."""
        n = len(which)
        t = np.ones((n, BLOCK + 1, BLOCK + 1, BLOCK + 1), np.float32)
        w = np.zeros_like(t)
        c = np.zeros(t.shape + (3,), np.uint8)
        f = np.zeros(t.shape, bool)
        shape = (BLOCK, BLOCK, BLOCK)
        for offset in np.ndindex(2, 2, 2):
            if faces_only and sum(offset) > 1:
                continue
            dst = (slice(None),) + tuple(slice(BLOCK, BLOCK + 1) if o else slice(0, BLOCK) for o in offset)
            src = (slice(None),) + tuple(slice(0, 1) if o else slice(0, BLOCK) for o in offset)
            nb = which if not any(offset) else self._find(cells + np.array(offset))
            has = nb >= 0
            slots = self._slots[nb[has]]
            t[dst][has] = self._tsdf[slots].reshape((-1,) + shape)[src]  # t[dst] is a view
            w[dst][has] = self._weight[slots].reshape((-1,) + shape)[src]
            c[dst][has] = self._rgb[slots].reshape((-1,) + shape + (3,))[src]
            f[dst][has] = self._looks[slots].reshape((-1,) + shape)[src] >= FRONT
        return t, w, c, f

    def occupancy(self, z_min, z_max, resolution=None):
        """Grid2D of the height band [z_min, z_max] metres (world z), cells of `resolution` metres
        (default and minimum: the voxel size; a coarser cell takes the worst of the voxel columns
        in it), spanning the observed voxels of the band: 100 where a voxel centred in the band is
        behind a surface or has one within 0.6 of a voxel (the zero crossing with a neighbour along
        x, y or z: _solid); 0 where the band's lowest voxel was observed (in every voxel column of
        the cell) and none is solid; -1 elsewhere. Free space seen only higher up says nothing of
        what stands under it (a box's inside under the free space seen over it, when no camera saw
        its top). Incremental: only the blocks fused since the last call for the same band, and
        their six face neighbours (whose solid rule reads them), are looked at again (after an
        eviction, also the face neighbours of the evicted blocks), and the grid's per-cell counts
        (grid.GridCounts) take away and add only those blocks' columns; for another band, all
        (another resolution: the counts made anew from every block's columns)."""
        v = self.voxel_size
        res = v if resolution is None else max(float(resolution), v)
        if self._size == 0 or z_max < z_min:
            return Grid2D.empty(res)
        return self._grid_counts(float(z_min), float(z_max), res).grid()

    def _grid_counts(self, z_min, z_max, res):
        """The grid.GridCounts (cells of `res` metres) of the band's voxel columns (_columns_of), kept
        with them between calls (self._columns: (band, (fusions then, parts), counts)): the last
        one updated by the columns of the blocks searched again or evicted since (_refresh), or
        made from every column (another band or resolution, or a whole search)."""
        old = self._columns if self._columns is not None and self._columns[0] == (z_min, z_max) else None
        kept = None if old is None else old[1]
        found, rows = self._refresh(kept, _FACES, lambda which: self._columns_of(which, z_min, z_max), (3,))
        counts = None if old is None or old[2].resolution != res else old[2]
        if counts is None or (rows is None and found is not kept):  # (rows None and found new: a whole search)
            height = BLOCK * self.voxel_size  # (a band of 1e308 m: its layers are more than a count needs)
            layers = np.floor(z_max / height) - np.floor(z_min / height) + 2
            layers = int(layers) if np.isfinite(layers) and layers < 2**32 else 2**32
            counts = GridCounts(self.voxel_size, res, layers).updated(_NO_COLUMNS, _known_columns(found[1]))
        elif found is not kept:
            stayed = rows[0]
            gone = np.ones(len(kept[1][0]), bool)
            gone[stayed] = False
            counts = counts.updated(_known_columns(kept[1], gone), _known_columns(found[1], slice(len(stayed), None)))
        self._columns = (z_min, z_max), found, counts
        return counts

    def _columns_of(self, which, z_min, z_max):
        """(pool slots (n,) int32, columns (n, BLOCK²) int8, the blocks' first voxel index along x
        and y (n, 2) int64) of the blocks at sorted indices `which` that hold an observed voxel
        centred in the band [z_min, z_max]: each (x, y) column of voxels of a block (x major, as
        _COLUMNS) is Grid2D.OCCUPIED where one of its band voxels is solid (_solid), else FREE where
        it holds the band's lowest voxel and that was observed, _SEEN where other band voxels were,
        else UNKNOWN."""
        v = self.voxel_size
        cells = key_cells(self._keys[which])
        bottom = cells[:, 2] * BLOCK * v
        crossing = (bottom <= z_max) & (bottom + BLOCK * v >= z_min)
        near, cells = which[crossing], cells[crossing]
        slots = self._slots[near]
        # By voxel index x·BLOCK² + y·BLOCK + z (_OFFSETS): a block's (x, y, z) voxels, z last. What
        # depends on height alone is (n, BLOCK), one entry per voxel layer.
        k = cells[:, 2, None] * BLOCK + np.arange(BLOCK)  # the layers' voxel indices along z
        zc = k * v + v / 2  # their centre heights
        layers = (zc >= z_min) & (zc <= z_max)
        lowest = layers & ((k - 1) * v + v / 2 < z_min)  # the band's lowest voxel: the one below is centred under it
        shape = (len(near), BLOCK, BLOCK, BLOCK)
        seen = (self._weight[slots] >= max(self.min_weight, 1e-12)).reshape(shape) & layers[:, None, None, :]
        has = seen.any((1, 2, 3))
        near, cells, slots, seen, lowest = near[has], cells[has], slots[has], seen[has], lowest[has]
        shape = (len(near), BLOCK, BLOCK, BLOCK)
        solid = self._solid(near, cells).reshape(shape) & seen
        columns = np.where(seen.any(3), _SEEN, Grid2D.UNKNOWN).astype(np.int8)
        columns[(seen & lowest[:, None, None, :]).any(3)] = Grid2D.FREE
        columns[solid.any(3)] = Grid2D.OCCUPIED
        return slots, columns.reshape(len(near), BLOCK * BLOCK), self._origin[slots, :2]

    def state(self):
        """The whole map as a dict of numpy arrays (see load_state): what save writes."""
        s = self._slots
        return {"format": np.array(FORMAT), "voxel_size": np.array(self.voxel_size),
                "truncation": np.array(self.truncation), "truncation_ratio": np.array(self.truncation_ratio),
                "block": np.array(BLOCK), "keys": self._keys.copy(),
                "tsdf": self._tsdf[s], "weight": self._weight[s], "rgb": self._rgb[s],
                "looks": self._looks[s] & LOOKS, "front": self._looks[s] >= FRONT}

    def load_state(self, state):
        """Replace the map by a state() dict (same voxel size, truncation, ratio and block, no more
        blocks than max_blocks); raises ValueError otherwise, leaving the map as it was. A map of
        the first format (saved before `front` was kept) takes every observed voxel as seen in front
        of a surface: its surface is what it was."""
        if "format" not in state or str(state["format"]) not in FORMATS:
            raise ValueError(f"not a {FORMAT} map: format {state.get('format')}")
        scalars = ("voxel_size", "truncation", "truncation_ratio", "block")
        arrays = ("keys", "tsdf", "weight", "rgb", "looks") + (("front",) if str(state["format"]) == FORMAT else ())
        missing = sorted(set(scalars + arrays) - set(state))
        if missing:
            raise ValueError(f"the map lacks {missing}")
        for name in scalars:
            if np.ndim(state[name]) != 0 or not np.issubdtype(np.asarray(state[name]).dtype, np.number):
                raise ValueError(f"the map's {name} is not a number: {state[name]!r:.60}")
        for name, mine in (("voxel_size", self.voxel_size), ("truncation", self.truncation),
                           ("truncation_ratio", self.truncation_ratio), ("block", BLOCK)):
            if not np.isclose(float(state[name]), mine):
                raise ValueError(f"the map has {name} {float(state[name])}, this map {mine}")
        keys = np.asarray(state["keys"], np.int64)
        if len(keys) > self.max_blocks:
            raise ValueError(f"the map has {len(keys)} blocks, more than max_blocks {self.max_blocks}")
        if len(keys) and not (np.diff(keys) > 0).all():
            raise ValueError("the map's block keys are not sorted and unique")
        tsdf, weight, rgb, looks = (np.asarray(state[k]) for k in ("tsdf", "weight", "rgb", "looks"))
        front = np.asarray(state["front"], bool) if str(state["format"]) == FORMAT else weight > 0
        if (tsdf.shape != (len(keys), VOXELS) or weight.shape != tsdf.shape or looks.shape != tsdf.shape
                or rgb.shape != tsdf.shape + (3,) or front.shape != tsdf.shape):
            raise ValueError("the map's arrays disagree with its block count")
        for name, a in (("tsdf", tsdf), ("weight", weight), ("rgb", rgb), ("looks", looks), ("front", front)):
            if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
                raise ValueError(f"the map's {name} are not numbers ({a.dtype})")
        if looks.size and looks.max() > LOOKS:
            raise ValueError(f"the map's colour looks go up to {looks.max()}, more than {LOOKS}")
        # Values fusion never makes (a damaged or hand-made file): ~/map would carry NaN confidence.
        top = float(np.finfo(np.float32).max)  # (the pools' type: beyond, a weight would be stored as inf)
        for name, a, low, high in (("tsdf", tsdf, -1, 1), ("weight", weight, 0, top), ("rgb", rgb, 0, 255),
                                   ("looks", looks, 0, LOOKS)):
            if a.size and not (np.isfinite(a).all() and a.min() >= low and a.max() <= high):
                raise ValueError(f"the map's {name} values are not all finite and within [{low}, {high}]")
        self.reset()
        self._append(keys)
        self._tsdf[:len(keys)], self._weight[:len(keys)], self._rgb[:len(keys)] = tsdf, weight, rgb
        self._looks[:len(keys)] = looks | np.where(front, FRONT, 0).astype(np.uint8)
        self._free[:len(keys)] = ((tsdf >= FREE) & (weight >= max(self.min_weight, 1e-12))).all(1)  # as fusion sets it

    def _find(self, cells):
        """Index into the sorted keys of blocks with indices cells (N, 3), -1 where absent (or out of
        the packable range, whose packed key would be another block's)."""
        pos, found = self._lookup(pack(cells.T.copy()))
        found &= ((cells >= -KEY_OFFSET) & (cells < KEY_OFFSET)).all(1)
        return np.where(found, pos, -1)

    def _distances(self, cells, origin):
        centre = (cells * BLOCK + BLOCK / 2) * self.voxel_size
        return np.linalg.norm(centre - origin, axis=1)

    def _keep(self, slots):
        """Drop every block but those in the pool slots `slots`: the kept blocks past the pool's new
        end move into the dropped blocks' slots below it, so an eviction moves at most as many
        blocks as it drops, not the map. The eviction is remembered (_Eviction), for what
        surface(), mesh() and occupancy() keep (_refresh)."""
        keep = np.zeros(self._size, bool)
        keep[slots] = True
        n = int(np.count_nonzero(keep))
        if n == self._size:
            return
        holes, movers = np.flatnonzero(~keep[:n]), n + np.flatnonzero(keep[n:])  # as many of each
        kept_sorted = keep[self._slots]
        eviction = _Eviction(self._fusions + 1, self._size, n, *(_frozen(a) for a in (
            holes.astype(np.int32), movers.astype(np.int32), self._keys[~kept_sorted])))
        for a in (self._tsdf, self._weight, self._rgb, self._looks, self._origin, self._free, self._fused):
            a[holes] = a[movers]
        self._keys = self._keys[kept_sorted]
        self._slots = eviction.moved()[self._slots[kept_sorted]]
        self._size, self._fusions = n, eviction.count
        log = self._evictions + [eviction]  # a new list: copies share the old one
        if len(log) > EVICTIONS_KEPT:
            self._forgotten = log[-EVICTIONS_KEPT - 1].count
        self._evictions = log[max(len(log) - EVICTIONS_KEPT, 0):]

    def _append(self, keys):
        """Add empty blocks with sorted packed keys absent from the map."""
        k = len(keys)
        if k == 0:
            return
        n = self._size
        if n + k > len(self._free):
            self._grow(max(n + k, len(self._free) * 3 // 2, MIN_CAPACITY))
        self._tsdf[n:n + k], self._weight[n:n + k], self._rgb[n:n + k], self._looks[n:n + k] = 1, 0, 0, 0
        self._free[n:n + k] = False
        self._fused[n:n + k] = 0  # empty: no crossing until fused
        self._origin[n:n + k] = key_cells(keys) * BLOCK
        pos = np.searchsorted(self._keys, keys) + np.arange(k)
        old = np.ones(n + k, bool)
        old[pos] = False
        merged_keys, merged_slots = np.empty(n + k, np.int64), np.empty(n + k, np.int32)
        merged_keys[pos], merged_keys[old] = keys, self._keys
        merged_slots[pos], merged_slots[old] = np.arange(n, n + k), self._slots
        self._keys, self._slots, self._size = merged_keys, merged_slots, n + k

    def _grow(self, capacity):
        """Room for `capacity` blocks. The slots past the map's blocks are left unwritten (_append
        fills a slot when it takes it; nothing reads one before): no pass over the new memory,
        whose pages the system then maps only as blocks take them."""
        n = self._size

        def grown(a):
            out = np.empty((capacity,) + a.shape[1:], a.dtype)
            out[:n] = a[:n]
            return out

        for name in ("_tsdf", "_weight", "_rgb", "_looks", "_origin", "_free", "_fused"):
            setattr(self, name, grown(getattr(self, name)))


def _unique(values):
    """The sorted unique values of a 1-D integer array (np.unique's), by a sort: numpy 2's hash-based
    np.unique took 8x as long on a keyframe's 10k block keys (0.9 against 0.12 ms)."""
    values = np.sort(values)
    return values[np.concatenate(([True], values[1:] != values[:-1]))] if len(values) else values


def _sides(t, observed, front):
    """Which voxels of tsdf t may bound a zero crossing: observed (a bool array), in the band, and,
    on the free side (tsdf > 0), seen in front of a surface, within its band, by some view (front).
    Beside a box, behind its front face as the cameras see it, the band's negative side meets free
    space that views looking past the box carved: that step through zero is no surface, and its free
    side was only ever seen far from one (docs/map.md#accuracy). Folded into the voxels, so that a
    crossing stays "two such neighbours of opposite signs" for surface(), mesh() and the occupancy
    grid's solid voxels."""
    with np.errstate(invalid="ignore"):
        return observed & (np.abs(t) < 1) & ((t <= 0) | front)


def _known_columns(parts, which=slice(None)):
    """(x, y, state): the voxel indices along x and y (m,) int64 and the states (m,) int8 of the
    known voxel columns (GridCounts.updated's) of the entries `which` (indices, a mask or a slice)
    of TsdfMap._columns_of parts."""
    _, columns, xy = parts
    columns, xy = columns[which], xy[which]
    b, o = np.nonzero(columns != Grid2D.UNKNOWN)
    return xy[b, 0] + _COLUMNS[o, 0], xy[b, 1] + _COLUMNS[o, 1], columns[b, o]


_NO_COLUMNS = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int8))


@dataclass(frozen=True, eq=False)
class _Eviction:
    """What TsdfMap._keep did as change number `count`: of a pool of `size` slots, the first `kept`
    stayed but for the slots `holes` (int32), into which the blocks at `movers` (int32, past `kept`)
    moved; the rest, the blocks with the packed keys `gone` (sorted), were dropped."""

    count: int
    size: int
    kept: int
    holes: np.ndarray
    movers: np.ndarray
    gone: np.ndarray

    def moved(self):
        """(size,) int32: each old slot's new slot, -1 where dropped."""
        out = np.full(self.size, -1, np.int32)
        out[:self.kept] = np.arange(self.kept, dtype=np.int32)
        out[self.holes] = -1
        out[self.movers] = self.holes
        return out


def _renumbered(parts, evictions, groups):
    """(parts, rows): an extraction's parts (in groups of the lengths `groups`, each led by its
    entries' pool slots) after the _Evictions `evictions` (in order), without the dropped blocks'
    entries, the others' slots renumbered; rows: per group, the indices of the entries kept.
    (`parts` itself and rows None when there are none.)"""
    if not evictions:
        return parts, (None,) * len(groups)
    moved = evictions[0].moved()
    for eviction in evictions[1:]:  # one map from the first pool to the last
        moved = np.where(moved >= 0, eviction.moved()[np.maximum(moved, 0)], -1)
    out, rows = [], []
    for start, n in zip(_starts(groups), groups):
        slots = moved[parts[start]]
        kept = np.flatnonzero(slots >= 0)
        out.append(slots[kept].astype(parts[start].dtype))
        out += [part[kept] for part in parts[start + 1:start + n]]
        rows.append(kept)
    return tuple(out), tuple(rows)


def _starts(groups):
    """The index of each group's first part, for parts in groups of the lengths `groups`."""
    return np.cumsum((0,) + tuple(groups[:-1])).tolist()


def _frozen(a):
    """`a`, read-only."""
    a.flags.writeable = False
    return a


def _kept_then(old, kept, new):
    """old's rows at the ascending indices `kept`, then new's rows, in one new array. What a
    refresh keeps is nearly all of it in a few runs (the blocks searched again were mostly
    searched last time too, so their rows are at the end): runs are copied as slices (2-3x
    faster than a gather for rows of several values, 10x for some), scattered rows gathered."""
    out = np.empty((len(kept) + len(new),) + old.shape[1:], old.dtype)
    breaks = np.flatnonzero(np.diff(kept) != 1) + 1
    if len(breaks) < len(kept) // _RUN_ROWS:  # runs of _RUN_ROWS rows or more on average
        at = 0
        for first, n in zip(kept[np.r_[0, breaks]].tolist(), np.diff(np.r_[0, breaks, len(kept)]).tolist()):
            out[at:at + n] = old[first:first + n]
            at += n
    else:
        np.take(old, kept, axis=0, out=out[:len(kept)])
    out[len(kept):] = new
    return out


def _cell_keys(index):
    """Packed int64 keys (N,) of global voxel indices (N, 3) (keys.pack)."""
    return pack(np.ascontiguousarray(index.T))


def _bilinear(ranges, col, row, nearest, spread=SPREAD):
    """Ranges (N,) float32 of an image of ranges (H, W) (0 = none) at continuous pixel-index
    coordinates inside it: bilinear in inverse range (exact for a plane seen through a pinhole,
    and close for any lens over one pixel) where the four pixels around have ranges within
    `spread` of each other, else `nearest` (N,), the nearest pixel's (a depth edge or a missing
    pixel: no range in between is true)."""
    h, w = ranges.shape
    flat = ranges.reshape(-1)
    c0 = np.clip(np.floor(col), 0, w - 2).astype(np.int64)
    r0 = np.clip(np.floor(row), 0, h - 2).astype(np.int64)
    fc = np.clip(col - c0, 0, 1).astype(np.float32)
    fr = np.clip(row - r0, 0, 1).astype(np.float32)
    i00 = r0 * w + c0
    a, b, c, d = flat[i00], flat[i00 + 1], flat[i00 + w], flat[i00 + w + 1]
    lo = np.minimum(np.minimum(a, b), np.minimum(c, d))
    hi = np.maximum(np.maximum(a, b), np.maximum(c, d))
    s = np.flatnonzero((lo > 0) & (hi <= lo * (1 + spread)))
    out = nearest.copy()
    fc, fr = fc[s], fr[s]
    out[s] = 1 / ((1 - fr) * ((1 - fc) / a[s] + fc / b[s]) + fr * ((1 - fc) / c[s] + fc / d[s]))
    return out


def _unit(rays):
    """Float32 rays (N, 3) scaled to unit length (in float64: any finite length)."""
    rays = np.asarray(rays, np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return (rays / np.sqrt(np.sum(rays * rays, axis=-1, keepdims=True))).astype(np.float32)


def _angular_pitch(rays):
    """Median angle (radians) between horizontally adjacent rays of a ray map (H, W, 3)."""
    h, w = rays.shape[:2]
    mid = _unit(rays[h // 2])
    with np.errstate(invalid="ignore"):
        dots = np.sum(mid[1:] * mid[:-1], axis=-1)
    dots = dots[np.isfinite(dots)]
    return float(np.arccos(np.clip(np.median(dots), -1, 1))) if len(dots) else 1.0 / max(w, 1)
