"""A textured room with boxes: exact ray casting, surface distance and procedural colour (numpy).

World frame: REP 103 (x forward, y left, z up), metres. The room is the inside of an
axis-aligned box; the obstacles are axis-aligned boxes inside it. Faces are numbered
6·s + 2·axis + side, where s = 0 is the room and s = b + 1 is box b, axis is 0/1/2 for the
face's normal axis x/y/z and side is 0 for the face at the lower bound, 1 at the upper.
"""

import copy

import numpy as np

ROOM = ((-5.0, -4.0, 0.0), (5.0, 4.0, 3.0))
# Box footprints (x, y centre) away from the default trajectory; sizes are jittered by the seed.
BOX_CENTRES = ((3.6, 2.6), (-3.7, -2.4), (3.5, -2.7), (-1.0, 3.1), (-3.9, 1.8))
WAVES = 6  # sinusoids per face texture


class Room:
    """The static scene. Deterministic from `seed` (box sizes, face colours and textures)."""

    def __init__(self, seed=0, room=ROOM, box_centres=BOX_CENTRES):
        rng = np.random.default_rng(seed)
        self.lo, self.hi = np.array(room[0], float), np.array(room[1], float)
        n = len(box_centres)
        half = rng.uniform([0.3, 0.3, 0.3], [0.7, 0.7, 1.0], size=(n, 3))
        centre = np.column_stack([np.array(box_centres, float).reshape(n, 2), half[:, 2] + self.lo[2]])
        self.box_lo, self.box_hi = centre - half, centre + half
        self.base, self.wave_k, self.wave_phase, self.wave_amp = _textures(rng, 6 * (n + 1))
        self._box_textures = _textures(np.random.default_rng([seed, 1]), 6)  # with_box's box

    def with_box(self, lo, hi):
        """A copy of this room with one more box, corners lo, hi (3,) metres (its textures drawn from
        the seed, the same for every such box): a moving object at one moment (synthetic.mover)."""
        out = copy.copy(self)
        out.box_lo, out.box_hi = np.vstack([self.box_lo, lo]), np.vstack([self.box_hi, hi])
        out.base, out.wave_k, out.wave_phase, out.wave_amp = (np.concatenate([a, b]) for a, b in zip(
            (self.base, self.wave_k, self.wave_phase, self.wave_amp), self._box_textures))
        return out

    @property
    def num_faces(self):
        """Number of faces: 6 for the room and 6 per box."""
        return self.base.shape[0]

    def cast(self, origins, directions):
        """(distance (N,), face (N,) int) of rays from origins (N, 3) along unit directions (N, 3).

        Origins must be inside the room and outside the boxes. distance is along the ray in
        metres; NaN (face -1) where the direction is not finite. Rays from one origin (a camera's)
        are tested only against the boxes whose bounding spheres they pass (the same results, about
        2x faster at a camera's view).
        """
        o = np.asarray(origins, float).reshape(-1, 3)
        d = np.asarray(directions, float).reshape(-1, 3)
        if o.shape != d.shape:
            raise ValueError(f"origins {o.shape} and directions {d.shape} must have the same shape (N, 3)")
        n = len(d)
        ok = np.all(np.isfinite(d), axis=1)
        single = n > 0 and bool((o == o[0]).all())
        o = o[0] if single else o.T.copy()  # one origin: scalars; else per-axis rows (fast 1-D ops)
        d = np.where(ok[:, None], d, 1.0).T.copy()
        with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
            inv = 1.0 / d
            dist, face = np.full(n, np.inf), np.full(n, -1)
            for a in range(3):  # inside the room: leave through the nearest exit plane
                exit_ = np.fmax((self.lo[a] - o[a]) * inv[a], (self.hi[a] - o[a]) * inv[a])
                closer = exit_ < dist
                dist = np.where(closer, exit_, dist)
                face = np.where(closer, 2 * a + (d[a] > 0), face)
            length2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2] if single else None
            for b in range(len(self.box_lo)):  # slab test; the entry plane is the face hit
                rays = self._near_box(b, o, d, length2) if single else slice(None)
                sub, o_b = inv[:, rays], o if single else o[:, rays]
                near, far = np.full(sub.shape[1], -np.inf), np.full(sub.shape[1], np.inf)
                axis = np.zeros(sub.shape[1], dtype=np.int64)
                for a in range(3):
                    t0, t1 = (self.box_lo[b, a] - o_b[a]) * sub[a], (self.box_hi[b, a] - o_b[a]) * sub[a]
                    lo_t = np.fmin(t0, t1)
                    later = lo_t > near
                    near = np.where(later, lo_t, near)
                    axis[later] = a
                    far = np.fmin(far, np.fmax(t0, t1))
                hit = np.flatnonzero((near <= far) & (near > 0) & (near < dist[rays]))
                at = hit if not single else rays[hit]
                side = d[axis[hit], at] < 0
                dist[at], face[at] = near[hit], 6 * (b + 1) + 2 * axis[hit] + side
        return np.where(ok, dist, np.nan), np.where(ok, face, -1)

    def _near_box(self, b, origin, d, length2):
        """Indices of the rays from `origin` (3,) along directions d (3, N) (squared lengths
        length2 (N,)) that pass within box b's bounding sphere (widened by 1 %, for rounding), and
        of those whose squared length is too large or too small for the test (kept)."""
        centre = (self.box_lo[b] + self.box_hi[b]) / 2
        radius = 1.01 * np.linalg.norm(self.box_hi[b] - self.box_lo[b]) / 2 + 1e-6
        v = centre - origin
        along = d[0] * v[0] + d[1] * v[1] + d[2] * v[2]  # |d| times the distance along the ray
        # Ahead of the sphere's far side, and the line's distance to its centre at most the radius.
        odd = ~((length2 > 1e-290) & (length2 < 1e290))  # its products would overflow or underflow
        return np.flatnonzero(((along > -radius * np.sqrt(length2))
                               & (along * along >= (v @ v - radius * radius) * length2)) | odd)

    def surface_distance(self, points):
        """Unsigned distance (N,) in metres from points (N, 3) to the nearest room or box surface."""
        p = np.asarray(points, float).reshape(-1, 3)
        # Room walls: distance to the boundary of the (convex) room box, inside or outside.
        inside = np.minimum(p - self.lo, self.hi - p)
        room = np.where(np.all(inside >= 0, axis=1), inside.min(axis=1),
                        np.linalg.norm(np.maximum(-inside, 0), axis=1))
        q = np.minimum(p[:, None] - self.box_lo[None], self.box_hi[None] - p[:, None])  # (N, M, 3)
        boxes = np.where(np.all(q >= 0, axis=2), q.min(axis=2), np.linalg.norm(np.maximum(-q, 0), axis=2))
        return np.minimum(room, boxes.min(axis=1))

    def solid_near(self, xy, z_min, z_max, margin):
        """(N,) bool: whether anything solid lies within `margin` metres (in x and y) of the points
        xy (N, 2) at some height in [z_min, z_max]: outside the room's walls, or a box whose
        height range meets the band. The truth of an occupancy grid (margin: half a cell)."""
        p = np.asarray(xy, float).reshape(-1, 2)
        out = np.any((p - margin < self.lo[:2]) | (p + margin > self.hi[:2]), axis=1)
        for lo, hi in zip(self.box_lo, self.box_hi):
            if lo[2] <= z_max and hi[2] >= z_min:
                out |= np.all((p + margin > lo[:2]) & (p - margin < hi[:2]), axis=1)
        return out

    def color(self, points, face):
        """RGB in [0, 1] (N, 3) of surface points (N, 3) on faces (N,) (face -1 gives black)."""
        p = np.asarray(points, float).reshape(-1, 3)
        face = np.asarray(face).reshape(-1)
        rgb = np.zeros((len(p), 3))
        for f in np.unique(face[face >= 0]):
            sel = face == f
            axis = (f % 6) // 2
            uv = np.nan_to_num(np.stack([p[sel, (axis + 1) % 3], p[sel, (axis + 2) % 3]], -1))
            k = self.wave_k[f]
            waves = np.sin(uv[:, :1] * k[:, 0] + uv[:, 1:] * k[:, 1] + self.wave_phase[f])
            checker = (np.floor(uv[:, 0] / 0.5) + np.floor(uv[:, 1] / 0.5)) % 2
            shade = (1.0 + np.einsum("nw,w->n", waves, self.wave_amp[f])) * (0.85 + 0.3 * checker)
            rgb[sel] = np.clip(self.base[f] * shade[:, None], 0.0, 1.0)
        return rgb


def _textures(rng, faces):
    """(base colour (F, 3), wave vectors (F, WAVES, 2), phases, amplitudes (F, WAVES)) of F faces."""
    base = rng.uniform(0.25, 0.85, size=(faces, 3))
    angle = rng.uniform(0, np.pi, size=(faces, WAVES))
    freq = rng.uniform(0.5, 8.0, size=(faces, WAVES))  # cycles per metre
    wave_k = 2 * np.pi * freq[..., None] * np.stack([np.cos(angle), np.sin(angle)], -1)
    phase = rng.uniform(0, 2 * np.pi, size=(faces, WAVES))
    amp = rng.uniform(0.03, 0.12, size=(faces, WAVES)) * rng.choice([-1, 1], size=(faces, WAVES))
    return base, wave_k, phase, amp
