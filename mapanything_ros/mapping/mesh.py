"""The map's mesh: its per-block parts joined, kept up to date by what changed (numpy, no ROS).

TsdfMap.mesh() finds, per block, a vertex for each cell of 2 × 2 × 2 voxel centres the surface
passes (with the cell's packed key) and a quad for each crossed voxel edge (the keys of the four
cells it joins, and its region: regions.py). Joining them means finding each quad corner's vertex
among the vertex keys. Done anew at every call (a sort of every vertex key, then a search for
every corner), the join was about 80 % of an incremental mesh beside 2 M other surface points
(0.5–0.85 s a call), for the few blocks a keyframe changes. Mesh keeps the join instead: the
vertex keys in sorted order with their rows, each quad's four vertex rows, the quads in region
order. After a refresh of the parts (the rows of the blocks not searched again kept, in their
order, then the new rows) it maps the kept rows to their new numbers, merges the new keys into
the sorted ones and searches only the new quads' corners and the kept corners whose vertex went
or was missing: a cell's vertex lies in the block that owns the cell, so a missing one can only
come with that block's new parts, and those corners search the new keys alone.
"""

from functools import cached_property

import numpy as np

from .keys import located
from .regions import RegionMesh

ROW = np.int32  # vertex and quad rows
# The parts (TsdfMap._mesh_blocks): per vertex (pool slot, cell key, vertex, colour, meshed at), per
# quad (pool slot, cell keys, meshed at, region key); the indices of those the join reads.
KEYS, VERTICES, COLOURS, VERTEX_AT, QUADS, QUAD_AT, REGIONS = 1, 2, 3, 4, 6, 7, 8


class Mesh:
    """Mesh parts joined: `parts` as TsdfMap._mesh_blocks gives them (pool slot, cell key, vertex
    (V, 3) float32 metres in the map's (world) frame, colour (V, 3) uint8 RGB, meshed at (V,) of
    each vertex; pool slot, the four cell keys (Q, 4), meshed at (Q,), packed region key (Q,) of
    each quad), `generation` the map storage's (RegionMesh). corners (Q, 4): each quad corner's
    vertex row, -1 where its cell has none; whole (Q,): the quads with all four (the others are
    left out); stamps (Q,): for a whole quad the newest of its own and its vertices' meshed-at
    counts (others: not read). Build with Mesh.of or updated; read-only."""

    def __init__(self, parts, generation, corners, whole, stamps, keys, rows, regions, quads):
        self.parts, self.generation = parts, generation
        self.corners, self.whole, self.stamps = corners, whole, stamps
        self._keys, self._rows = keys, rows  # vertex keys, sorted; their rows
        self._regions, self._quads = regions, quads  # quad region keys, sorted; the quads' rows
        for a in (corners, whole, stamps, keys, rows, regions, quads):
            a.flags.writeable = False

    @classmethod
    def of(cls, parts, generation):
        """The Mesh of `parts`, joined anew."""
        keys, rows = _sorted(parts[KEYS])
        corners = _rows_of(keys, rows, parts[QUADS])
        whole, stamps = _whole_and_stamps(corners, parts[QUAD_AT], parts[VERTEX_AT])
        return cls(parts, generation, corners, whole, stamps, keys, rows, *_sorted(parts[REGIONS]))

    def updated(self, parts, kept_vertices, kept_quads):
        """The Mesh of `parts`, a refresh of this one's: its first rows of each kind are this one's
        rows `kept_vertices` and `kept_quads` (ascending), the rest new."""
        nq = len(kept_quads)
        vertex = _renumbering(len(self.parts[KEYS]), kept_vertices)
        keys, rows, new_keys, new_rows = _merged(self._keys, self._rows, vertex, parts[KEYS], len(kept_vertices))
        quads = parts[QUADS]
        corners = np.empty(quads.shape, ROW)
        whole, stamps = np.empty(len(quads), bool), np.empty(len(quads), np.int64)
        # The kept quads' corners through the renumbering (vertex[-1] is -1: missing stays missing);
        # where none now, among the new vertices (a found one is newer than the quad's stamp).
        kept = corners[:nq].reshape(-1)
        kept[:] = vertex[np.take(self.corners, kept_quads, axis=0)].reshape(-1)  # (take: 6x faster than [] here)
        np.take(self.whole, kept_quads, out=whole[:nq])
        np.take(self.stamps, kept_quads, out=stamps[:nq])
        missing = np.flatnonzero(kept < 0)
        found = _rows_of(new_keys, new_rows, quads[:nq].reshape(-1)[missing])
        kept[missing] = found
        whole[missing // 4] = True
        whole[missing[found < 0] // 4] = False
        stamps[missing[found >= 0] // 4] = parts[VERTEX_AT][found[found >= 0]]
        # The new quads' among all.
        corners[nq:] = _rows_of(keys, rows, quads[nq:])
        whole[nq:], stamps[nq:] = _whole_and_stamps(corners[nq:], parts[QUAD_AT][nq:], parts[VERTEX_AT])
        # The quads in region order, likewise.
        regions, order, _, _ = _merged(self._regions, self._quads, _renumbering(len(self.parts[QUADS]), kept_quads),
                                       parts[REGIONS], nq)
        return Mesh(parts, self.generation, corners, whole, stamps, keys, rows, regions, order)

    def triangles(self):
        """(vertices (V, 3) float32 metres in the map's (world) frame, colours (V, 3) uint8 RGB,
        triangles (F, 3) int64 vertex rows): each whole quad's two triangles (0, 1, 2) then
        (0, 2, 3), all first ones first; read-only. Made at each call, not kept (24 bytes a
        triangle: ~/mesh sends regions)."""
        quads = self.corners[self.whole].astype(np.int64)
        triangles = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
        triangles.flags.writeable = False
        return self.parts[VERTICES], self.parts[COLOURS], triangles

    @cached_property
    def regions(self):
        """regions.RegionMesh of the whole quads, in the region order kept (no sort of the mesh)."""
        whole = self.whole[self._quads]
        order = self._quads[whole]
        return RegionMesh.grouped(self.parts[VERTICES], self.parts[COLOURS], self.corners, order, self._regions[whole],
                                  self.stamps[order], self.generation)


def _sorted(keys):
    """(keys sorted, their rows (ROW))."""
    rows = np.argsort(keys, kind="stable").astype(ROW)
    return keys[rows], rows


def _merged(sorted_keys, rows, renumbering, keys, first_new):
    """(sorted keys, their rows, the new keys sorted, their rows) of the rows kept and the new ones:
    sorted_keys (with rows) an old order, renumbering the old rows' new numbers (_renumbering),
    keys all the rows' keys now, the new ones from row first_new on."""
    stays = renumbering[rows]
    kept = stays >= 0
    kept_keys = sorted_keys[kept]
    new_keys, new_rows = _sorted(keys[first_new:])
    new_rows += ROW(first_new)
    at = np.searchsorted(kept_keys, new_keys)
    return np.insert(kept_keys, at, new_keys), np.insert(stays[kept], at, new_rows), new_keys, new_rows


def _whole_and_stamps(corners, quad_at, vertex_at):
    """(whole (Q,) bool, stamps (Q,) int64) of quads with vertex rows `corners` (Q, 4) (-1: none),
    meshed at `quad_at`, their vertices at `vertex_at`: a whole quad's stamp is the newest of its
    own and its vertices' (the others': their own)."""
    whole = (corners >= 0).all(1)
    stamps = np.array(quad_at, np.int64)
    stamps[whole] = np.maximum(stamps[whole], vertex_at[corners[whole]].max(1, initial=0))
    return whole, stamps


def _renumbering(count, kept):
    """(count + 1,) ROW: each of `count` old rows' new number (the position in `kept`), -1 where
    dropped; the extra last entry maps row -1 to -1."""
    out = np.full(count + 1, -1, ROW)
    out[kept] = np.arange(len(kept), dtype=ROW)
    return out


def _rows_of(sorted_keys, rows, keys):
    """ROW array shaped as `keys`: the row of each key among `sorted_keys` (rows: theirs), -1 where
    absent."""
    at, found = located(sorted_keys, keys)
    return np.where(found, rows[at] if len(rows) else ROW(-1), ROW(-1))
