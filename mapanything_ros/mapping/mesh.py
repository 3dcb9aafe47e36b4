"""The map's mesh: its per-block parts joined, kept up to date by what changed (numpy, no ROS).

TsdfMap.mesh() finds, per block, a vertex for each cell of 2 × 2 × 2 voxel centres the surface
passes (with the cell's packed key) and a quad for each crossed voxel edge (the keys of the four
cells it joins, and its region: regions.py). Joining them means finding each quad corner's vertex
among the vertex keys. Done anew at every call (a sort of every vertex key, then a search for
every corner), the join was 80 % of an incremental mesh at 2 M vertices: 0.5 s a call, for the few
blocks a keyframe changes. Mesh keeps the join instead: the vertex keys in sorted order with
their rows, each quad's four vertex rows, the quads in region order. After a refresh of the parts
(the rows of the blocks not searched again kept, in their order, then the new rows) it maps the
kept rows to their new numbers, merges the new keys into the sorted ones and searches only the
new quads' corners and the kept corners whose vertex went or was missing: a missing vertex can
only come with a new part, so those search the new keys alone.
"""

from functools import cached_property

import numpy as np

from .regions import RegionMesh

ROW = np.int32  # vertex and quad rows


class Mesh:
    """Mesh parts joined: `parts` as TsdfMap._mesh_blocks gives them (pool slot, cell key, vertex
    (V, 3) float32 metres, colour (V, 3) uint8, meshed at (V,) of each vertex; pool slot, the four
    cell keys (Q, 4), meshed at (Q,), packed region key (Q,) of each quad), `generation` the map
    storage's (RegionMesh). corners (Q, 4): each quad corner's vertex row, -1 where its cell has
    none; whole (Q,): the quads with all four (the others are left out); stamps (Q,): the newest
    of a quad's meshed-at count and its vertices' (exact for whole quads). Build with Mesh.of or
    updated; read-only."""

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
        keys, quads, regions = parts[1], parts[6], parts[8]
        order = np.argsort(keys, kind="stable").astype(ROW)
        sorted_keys = keys[order]
        corners = _rows_of(sorted_keys, order, quads)
        whole, stamps = _whole_and_stamps(corners, parts[7], parts[4])
        q = np.argsort(regions, kind="stable").astype(ROW)
        return cls(parts, generation, corners, whole, stamps, sorted_keys, order, regions[q], q)

    def updated(self, parts, kept_vertices, kept_quads):
        """The Mesh of `parts`, a refresh of this one's: its first rows of each kind are this one's
        rows `kept_vertices` and `kept_quads` (ascending), the rest new."""
        keys, quads, regions = parts[1], parts[6], parts[8]
        nv, nq = len(kept_vertices), len(kept_quads)
        vertex = _renumbering(len(self.parts[1]), kept_vertices)
        # The vertex keys in order: the kept ones (renumbered, still in order), the new ones merged in.
        stays = vertex[self._rows]
        kept_keys, kept_rows = self._keys[stays >= 0], stays[stays >= 0]
        new_order = np.argsort(keys[nv:], kind="stable").astype(ROW)
        new_keys, new_rows = keys[nv:][new_order], new_order + ROW(nv)
        at = np.searchsorted(kept_keys, new_keys)
        sorted_keys, rows = np.insert(kept_keys, at, new_keys), np.insert(kept_rows, at, new_rows)
        # The kept quads' corners through the renumbering (vertex[-1] is -1: missing stays missing);
        # where none now, among the new vertices (a found one is newer than the quad's stamp).
        kept = vertex[np.take(self.corners, kept_quads, axis=0)].reshape(-1)  # (take: 6x faster than [] here)
        whole, stamps = self.whole[kept_quads], self.stamps[kept_quads]
        missing = np.flatnonzero(kept < 0)
        found = _rows_of(new_keys, new_rows, quads[:nq].reshape(-1)[missing])
        kept[missing] = found
        whole[missing // 4] = True
        whole[missing[found < 0] // 4] = False
        stamps[missing[found >= 0] // 4] = parts[4][found[found >= 0]]
        # The new quads' among all.
        new = _rows_of(sorted_keys, rows, quads[nq:])
        corners = np.concatenate([kept.reshape(-1, 4), new])
        whole, stamps = (np.concatenate(pair) for pair in zip((whole, stamps),
                                                               _whole_and_stamps(new, parts[7][nq:], parts[4])))
        # The quads in region order, likewise.
        quad = _renumbering(len(self.parts[6]), kept_quads)
        stays = quad[self._quads]
        kept_regions, kept_order = self._regions[stays >= 0], stays[stays >= 0]
        new_order = np.argsort(regions[nq:], kind="stable").astype(ROW)
        new_regions = regions[nq:][new_order]
        at = np.searchsorted(kept_regions, new_regions)
        return Mesh(parts, self.generation, corners, whole, stamps, sorted_keys, rows,
                    np.insert(kept_regions, at, new_regions), np.insert(kept_order, at, new_order + ROW(nq)))

    def triangles(self):
        """(vertices (V, 3) float32 metres, colours (V, 3) uint8, triangles (F, 3) int64 vertex
        rows): each whole quad's two triangles (0, 1, 2) then (0, 2, 3), all first ones first;
        read-only. Made at each call, not kept (24 bytes a triangle: ~/mesh sends regions)."""
        quads = self.corners[self.whole].astype(np.int64)
        triangles = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
        triangles.flags.writeable = False
        return self.parts[2], self.parts[3], triangles

    @cached_property
    def regions(self):
        """regions.RegionMesh of the whole quads, in the region order kept (no sort of the mesh)."""
        whole = self.whole[self._quads]
        order = self._quads[whole]
        return RegionMesh.grouped(self.parts[2], self.parts[3], self.corners, order, self._regions[whole],
                                  self.stamps[order], self.generation)


def _whole_and_stamps(corners, quad_at, vertex_at):
    """(whole (Q,) bool, stamps (Q,) int64) of quads with vertex rows `corners` (Q, 4) (-1: none),
    meshed at `quad_at`, their vertices at `vertex_at`."""
    whole = (corners >= 0).all(1)
    return whole, np.maximum(quad_at, vertex_at[np.maximum(corners, 0)].max(1, initial=0))


def _renumbering(count, kept):
    """(count + 1,) ROW: each of `count` old rows' new number (the position in `kept`), -1 where
    dropped; the extra last entry maps row -1 to -1."""
    out = np.full(count + 1, -1, ROW)
    out[kept] = np.arange(len(kept), dtype=ROW)
    return out


def _rows_of(sorted_keys, rows, keys):
    """ROW array shaped as `keys`: the row of each key among `sorted_keys` (rows: theirs), -1 where
    absent."""
    if len(sorted_keys) == 0:
        return np.full(keys.shape, -1, ROW)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return np.where(sorted_keys[at] == keys, rows[at], ROW(-1))
