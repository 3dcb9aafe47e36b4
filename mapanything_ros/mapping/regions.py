"""The map's mesh in regions, so that ~/mesh sends again only the regions that changed (numpy, no
ROS): TsdfMap.mesh_regions gives the mesh by region (mesh.Mesh keeps its quads in region order),
MeshUpdates remembers what a topic has sent.

A region is a cube of REGION_BLOCKS³ blocks (3.2 m at 5 cm voxels); a triangle belongs to the
region of the block that owns its quad (the low voxel of the voxel edge it crosses). A region's
signature (the newest fusion count its triangles' parts were meshed at, its triangle count)
changes whenever its triangles do, within one generation of the map's storage (TsdfMap: a new
generation after every reset or load): parts meshed again carry the current fusion count, newer
than any before; triangles that go (an evicted block's too) lower the count, unless new ones,
newer, come (an eviction counts as a fusion, and the blocks whose mesh read an evicted one are
meshed again after it).
"""

from dataclasses import dataclass

import numpy as np

REGION_BLOCKS = 16  # blocks per region edge


@dataclass(frozen=True)
class RegionMesh:
    """A mesh of quads (vertices (V, 3) float32 metres in the map's frame, colours (V, 3) uint8 RGB,
    quads (Q, 4) integer vertex rows, each two triangles (0, 1, 2) and (0, 2, 3)) cut into regions:
    region r holds the quads quads[order[starts[r]:starts[r + 1]]]; keys (R,) int64 its packed
    region index, signatures (R, 2) int64 (newest fusion count, triangle count), generation the
    map's storage generation the signatures belong to. Only the quads at `order` belong to a
    region: others may name a vertex row -1 (mesh.Mesh: a corner without a vertex)."""

    vertices: np.ndarray
    colours: np.ndarray
    quads: np.ndarray
    keys: np.ndarray
    signatures: np.ndarray
    order: np.ndarray
    starts: np.ndarray
    generation: int

    @classmethod
    def grouped(cls, vertices, colours, quads, order, regions, stamps, generation):
        """RegionMesh of the quads at rows `order` of `quads`, sorted by their packed region keys
        `regions` (as `order`), meshed at `stamps` (as `order`)."""
        first = np.flatnonzero(np.concatenate(([True], regions[1:] != regions[:-1]))) if len(regions) else \
            np.zeros(0, np.int64)
        starts = np.append(first, len(regions))
        newest = np.maximum.reduceat(np.asarray(stamps, np.int64), first) if len(first) else np.zeros(0, np.int64)
        return cls(vertices, colours, quads, regions[first], np.stack([newest, 2 * np.diff(starts)], 1), order,
                   starts, generation)

    def __len__(self):
        """Number of regions."""
        return len(self.keys)

    def region(self, r):
        """Triangles (n, 3) of region r (vertex rows, of the quads' integer type): its quads' first
        triangles, then their second ones."""
        quads = self.quads[self.order[self.starts[r]:self.starts[r + 1]]]
        return np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])


class MeshUpdates:
    """What a mesh topic has sent, region by region: which regions to send again, which to delete."""

    def __init__(self):
        self.reset()

    def reset(self):
        """Forget what was sent (a publication that failed): the next update sends everything."""
        self._sent = None  # region key -> (marker id, signature)
        self._generation = None
        self._next_id = 0

    def update(self, mesh, everything=False):
        """(clear, send [(marker id, region index)], delete [marker ids]) that bring a subscriber
        holding what was sent so far to the RegionMesh `mesh`, and remember it as sent. clear: the
        subscriber drops every marker first, and every region is sent (the first mesh, another
        generation of the map's storage, or `everything`: a subscriber that has nothing yet)."""
        clear = everything or self._sent is None or mesh.generation != self._generation
        old = {} if clear else self._sent
        if clear:
            self._next_id = 0
        sent, send = {}, []
        for r, (key, signature) in enumerate(zip(mesh.keys.tolist(), map(tuple, mesh.signatures.tolist()))):
            marker, was = old.get(key, (None, None))
            if marker is None:
                marker, self._next_id = self._next_id, self._next_id + 1
            if signature != was:
                send.append((marker, r))
            sent[key] = (marker, signature)
        delete = [marker for key, (marker, _) in old.items() if key not in sent]
        self._sent, self._generation = sent, mesh.generation
        return clear, send, delete
