/* The surface, mesh and occupancy extraction of mapping/tsdf.py (TsdfMap._crossings, _mesh_parts,
 * _solid), compiled: one pass over each searched block's voxels and the neighbours' voxels it reads,
 * the neighbours found by binary search in the map's sorted block keys.
 *
 * Built by CMakeLists.txt (colcon, and tools/dev's environment) as mapanything_ros._tsdf_extract.
 * tsdf.py runs the same steps in numpy when this module is missing; test_tsdf.py checks that both
 * give the same surface, mesh and occupancy grid, bit for bit.
 *
 * Arguments of the three functions:
 *   tsdf, weight  float32 pools (VOXELS = 64 per block slot, flat; a block's voxel (i, j, k) at 16 i + 4 j + k)
 *   rgb           uint8 (3 per voxel)
 *   looks         uint8 (1 per voxel; bit 7, FRONT: seen in front of a surface, within its band)
 *   keys          int64 (m,): the map's packed block keys (mapping/keys.py), sorted
 *   slots         int32 (m,): each key's pool slot
 *   which         intp (n,): the indices into keys of the blocks to search
 *   min_weight    a voxel is observed at a weight of at least this (compared in float32, as numpy does)
 *   voxel_size    metres
 *
 * crossings(tsdf, weight, rgb, looks, keys, slots, which, min_weight, voxel_size)
 *   -> (slots int32 (N,), points float32 (N * 3), colours uint8 (N * 3), weights float32 (N,)) as bytearrays:
 *   surface()'s zero crossings between each voxel of the blocks and its +x, +y and +z neighbour, in
 *   _crossings' order (by axis, then block, then voxel).
 * mesh(tsdf, weight, rgb, looks, keys, slots, which, min_weight, voxel_size)
 *   -> (vertex slots int32 (V,), cell keys int64 (V,), vertices float32 (V * 3), colours uint8 (V * 3),
 *       quad slots int32 (Q,), quads int64 (Q * 4)) as bytearrays: _mesh_parts' parts but their fusion
 *   counts, in its order (vertices by block then cell; quads by axis, then block, then voxel).
 * solid(tsdf, weight, rgb, looks, keys, slots, which, min_weight, voxel_size, reach)
 *   -> bytearray of bool (n * 64): _solid's voxels of the blocks, SOLID_REACH = reach.
 * The GIL is released while the blocks are searched.
 *
 * Each step is tsdf.py's, in its precision: the crossing's fraction t0 / (t0 - t1) in float32, a
 * cell's sums of edge crossings in float32 in the order numpy adds them, a point's metres in double,
 * rounded once to float32, the solid test's products in float32 (built without fused multiply-adds:
 * CMakeLists.txt). Why compiled code: numpy's version makes a few hundred passes over padded copies
 * of the blocks, each a temporary array (docs/performance.md#rigs, "The outputs' searches compiled").
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_buffers.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#define BLOCK 4
#define VOXELS 64
#define PAD (BLOCK + 1) /* a block's voxels and one more along +x, +y and +z */
#define KEY_BITS 21
#define KEY_OFFSET (INT64_C(1) << (KEY_BITS - 1))
#define KEY_MASK ((INT64_C(1) << KEY_BITS) - 1)
#define FRONT 0x80

typedef struct {
    const float *tsdf, *weight;
    const uint8_t *rgb, *looks;
    const int64_t *keys;
    const int32_t *slots;
    Py_ssize_t m;
    float min_weight;
    double voxel;
} Map;

/* keys.pack of one index triple (in the packable range; as numpy computes it). */
static int64_t pack(const int64_t c[3])
{
    uint64_t key = 0;
    for (int a = 0; a < 3; a++) key = (key << KEY_BITS) | (uint64_t)(c[a] + KEY_OFFSET);
    return (int64_t)key;
}

/* keys.key_cells of one key. */
static void unpack(int64_t key, int64_t c[3])
{
    for (int a = 0; a < 3; a++) c[a] = ((key >> (KEY_BITS * (2 - a))) & KEY_MASK) - KEY_OFFSET;
}

/* The pool slot of the block with indices c, -1 where the map has none (or c is out of the packable
 * range), its key known to sort at or after keys[lo] (the +x, +y and +z neighbours of the block at
 * keys[lo - 1]; the +z one most often right there). */
static int32_t find(const Map *map, const int64_t c[3], Py_ssize_t lo)
{
    for (int a = 0; a < 3; a++)
        if (c[a] < -KEY_OFFSET || c[a] >= KEY_OFFSET) return -1;
    const int64_t key = pack(c);
    if (lo < map->m && map->keys[lo] >= key) return map->keys[lo] == key ? map->slots[lo] : -1;
    Py_ssize_t hi = map->m;
    while (lo < hi) {
        const Py_ssize_t mid = lo + (hi - lo) / 2;
        if (map->keys[mid] < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < map->m && map->keys[lo] == key ? map->slots[lo] : -1;
}

/* A block with one more voxel along +x, +y and +z (TsdfMap._padded: tsdf 1 and weight 0 where there
 * is no neighbour), and per voxel: observed within the band (ok), _sides (side), tsdf > 0 (pos). */
typedef struct {
    float t[PAD][PAD][PAD], w[PAD][PAD][PAD];
    uint8_t rgb[PAD][PAD][PAD][3];
    uint8_t ok[PAD][PAD][PAD], side[PAD][PAD][PAD], pos[PAD][PAD][PAD];
    int64_t cell[3]; /* the block's indices */
    int32_t slot;
} Padded;

/* Fills p with the block at keys[index] and its neighbours at +(0/1, 0/1, 0/1) (faces_only: the three
 * face neighbours only, for crossings, which read no other voxel: the edge and corner voxels are
 * left unwritten, where numpy's _padded leaves them unobserved); whether any voxel that a crossing
 * can start from may bound one: an own voxel for crossings (else the neighbours are not read), any
 * of the 5 x 5 x 5 for the mesh (a cell's edges reach into the neighbours). */
static int load(const Map *map, Py_ssize_t index, int faces_only, Padded *p)
{
    unpack(map->keys[index], p->cell);
    p->slot = map->slots[index];
    int any = 0;
    for (int o = 0; o < 8; o++) {
        const int oi = o >> 2, oj = (o >> 1) & 1, ok_ = o & 1; /* the neighbour's offset */
        if (faces_only && (oi + oj + ok_ > 1 || (o > 0 && !any))) continue;
        const int64_t c[3] = {p->cell[0] + oi, p->cell[1] + oj, p->cell[2] + ok_};
        const int32_t slot = o == 0 ? p->slot : find(map, c, index + 1);
        for (int i = oi * BLOCK; i < (oi ? PAD : BLOCK); i++)
            for (int j = oj * BLOCK; j < (oj ? PAD : BLOCK); j++)
                for (int k = ok_ * BLOCK; k < (ok_ ? PAD : BLOCK); k++) {
                    float t = 1, w = 0;
                    uint8_t front = 0;
                    p->rgb[i][j][k][0] = p->rgb[i][j][k][1] = p->rgb[i][j][k][2] = 0;
                    if (slot >= 0) {
                        const Py_ssize_t v = (Py_ssize_t)slot * VOXELS + (i - oi * BLOCK) * 16 + (j - oj * BLOCK) * 4 +
                                             (k - ok_ * BLOCK);
                        t = map->tsdf[v], w = map->weight[v];
                        memcpy(p->rgb[i][j][k], map->rgb + 3 * v, 3);
                        front = map->looks[v] & FRONT;
                    }
                    p->t[i][j][k] = t, p->w[i][j][k] = w;
                    p->ok[i][j][k] = w >= map->min_weight && fabsf(t) < 1; /* NaN: not observed */
                    p->side[i][j][k] = p->ok[i][j][k] && (t <= 0 || front);
                    p->pos[i][j][k] = t > 0;
                    any |= p->side[i][j][k] && (o == 0 || !faces_only);
                }
    }
    return any;
}

/* Growable bytes, filled with the GIL released (PyMem_Raw*). */
typedef struct {
    char *data;
    Py_ssize_t size, cap;
} Out;

static int put(Out *out, const void *src, Py_ssize_t n)
{
    if (out->size + n > out->cap) {
        Py_ssize_t cap = out->cap ? out->cap : 4096;
        while (cap < out->size + n) cap *= 2;
        char *data = PyMem_RawRealloc(out->data, (size_t)cap);
        if (data == NULL) return 0;
        out->data = data, out->cap = cap;
    }
    memcpy(out->data + out->size, src, (size_t)n);
    out->size += n;
    return 1;
}

/* A point's metres (world frame) of a voxel-index coordinate: its global index plus a fraction. */
static float metres(double index, double voxel) { return (float)(index * voxel + voxel / 2); }

enum { CROSSING_PARTS = 4, VERTEX_PARTS = 4 };

/* The crossings of one block into out[axis][part] (part: slot, point, colour, weight). */
static int block_crossings(const Map *map, const Padded *p, Out out[3][CROSSING_PARTS])
{
    for (int axis = 0; axis < 3; axis++)
        for (int i = 0; i < BLOCK; i++)
            for (int j = 0; j < BLOCK; j++)
                for (int k = 0; k < BLOCK; k++) {
                    const int n[3] = {i + (axis == 0), j + (axis == 1), k + (axis == 2)};
                    if (!(p->side[i][j][k] && p->side[n[0]][n[1]][n[2]] && p->pos[i][j][k] != p->pos[n[0]][n[1]][n[2]]))
                        continue;
                    const float t0 = p->t[i][j][k], t1 = p->t[n[0]][n[1]][n[2]];
                    const float frac = t0 / (t0 - t1);
                    const int own[3] = {i, j, k};
                    float point[3];
                    for (int a = 0; a < 3; a++) {
                        const double index = (double)own[a] + (a == axis ? (double)frac : 0.0);
                        point[a] = metres((double)(p->cell[a] * BLOCK) + index, map->voxel);
                    }
                    const uint8_t *colour = frac < 0.5f ? p->rgb[i][j][k] : p->rgb[n[0]][n[1]][n[2]];
                    const float wa = p->w[i][j][k], wb = p->w[n[0]][n[1]][n[2]];
                    const float weight = wb < wa ? wb : wa;
                    if (!put(&out[axis][0], &p->slot, 4) || !put(&out[axis][1], point, 12) ||
                        !put(&out[axis][2], colour, 3) || !put(&out[axis][3], &weight, 4))
                        return 0;
                }
    return 1;
}

/* The mesh parts of one block: its cells' vertices into vertices[part] (slot, key, vertex, colour),
 * its crossed edges' quads into quads[axis][part] (slot, the four cell keys). */
static int block_mesh(const Map *map, const Padded *p, Out vertices[VERTEX_PARTS], Out quads[3][2])
{
    /* Crossed voxel edges from p to p + e_axis, and where the surface crosses them (as a fraction). */
    uint8_t crossed[3][PAD][PAD][PAD] = {{{{0}}}};
    float frac[3][PAD][PAD][PAD];
    for (int axis = 0; axis < 3; axis++)
        for (int i = 0; i < PAD - (axis == 0); i++)
            for (int j = 0; j < PAD - (axis == 1); j++)
                for (int k = 0; k < PAD - (axis == 2); k++) {
                    const int a = i + (axis == 0), b = j + (axis == 1), c = k + (axis == 2);
                    crossed[axis][i][j][k] = p->side[i][j][k] && p->side[a][b][c] && p->pos[i][j][k] != p->pos[a][b][c];
                    if (crossed[axis][i][j][k]) frac[axis][i][j][k] = p->t[i][j][k] / (p->t[i][j][k] - p->t[a][b][c]);
                }
    /* Cells (min corner at own voxels): the mean of their crossed edges' crossings, coloured by the
     * observed corner voxel nearest the surface (the first one of the least |tsdf|). */
    for (int i = 0; i < BLOCK; i++)
        for (int j = 0; j < BLOCK; j++)
            for (int k = 0; k < BLOCK; k++) {
                float total[3] = {0, 0, 0};
                int count = 0;
                for (int axis = 0; axis < 3; axis++) {
                    const int o0 = axis == 0 ? 1 : 0, o1 = axis == 2 ? 1 : 2; /* the other axes, in order */
                    for (int d1 = 0; d1 < 2; d1++)
                        for (int d2 = 0; d2 < 2; d2++) {
                            int q[3] = {i, j, k};
                            q[o0] += d1, q[o1] += d2;
                            if (!crossed[axis][q[0]][q[1]][q[2]]) continue;
                            total[axis] += frac[axis][q[0]][q[1]][q[2]];
                            total[o0] += (float)d1;
                            total[o1] += (float)d2;
                            count++;
                        }
                }
                if (count == 0) continue;
                const int own[3] = {i, j, k};
                int64_t corner[3];
                float vertex[3];
                for (int a = 0; a < 3; a++) {
                    corner[a] = p->cell[a] * BLOCK + own[a];
                    vertex[a] = metres((double)corner[a] + (double)total[a] / (double)count, map->voxel);
                }
                float best = INFINITY; /* count > 0: a crossed edge's two ends are observed corners */
                const uint8_t *colour = NULL;
                for (int c = 0; c < 8; c++) {
                    const int a = i + (c >> 2), b = j + ((c >> 1) & 1), d = k + (c & 1);
                    const float near = p->ok[a][b][d] ? fabsf(p->t[a][b][d]) : INFINITY;
                    if (near < best) best = near, colour = p->rgb[a][b][d];
                }
                const int64_t key = pack(corner);
                if (!put(&vertices[0], &p->slot, 4) || !put(&vertices[1], &key, 8) || !put(&vertices[2], vertex, 12) ||
                    !put(&vertices[3], colour, 3))
                    return 0;
            }
    /* Quads: each crossed edge (q, q + e_axis) of an own voxel q joins the cells q, q - e_b, q - e_b - e_c
     * and q - e_c (b, c: the next axes), counter-clockwise about +axis, reversed where q is on the
     * free side. */
    for (int axis = 0; axis < 3; axis++) {
        const int b = (axis + 1) % 3, c = (axis + 2) % 3;
        for (int i = 0; i < BLOCK; i++)
            for (int j = 0; j < BLOCK; j++)
                for (int k = 0; k < BLOCK; k++) {
                    if (!crossed[axis][i][j][k]) continue;
                    const int own[3] = {i, j, k};
                    int64_t q[4][3], keys[4];
                    for (int a = 0; a < 3; a++) q[0][a] = p->cell[a] * BLOCK + own[a];
                    memcpy(q[1], q[0], sizeof q[0]), q[1][b] -= 1;
                    memcpy(q[2], q[1], sizeof q[0]), q[2][c] -= 1;
                    memcpy(q[3], q[0], sizeof q[0]), q[3][c] -= 1;
                    const int flip = p->pos[i][j][k];
                    for (int n = 0; n < 4; n++) keys[flip ? 3 - n : n] = pack(q[n]);
                    if (!put(&quads[axis][0], &p->slot, 4) || !put(&quads[axis][1], keys, 32)) return 0;
                }
    }
    return 1;
}

/* _solid's voxels of the block at keys[index] into out (VOXELS bools): observed at or behind a surface,
 * or observed in front of one, seen so (FRONT), within the band, with a zero crossing to a face
 * neighbour observed behind it (within the band) lying within `reach` voxels of it. */
static void block_solid(const Map *map, Py_ssize_t index, double reach, uint8_t *out)
{
    const int32_t slot = map->slots[index];
    int64_t cell[3];
    unpack(map->keys[index], cell);
    int32_t faces[3][2]; /* the neighbouring blocks' slots along -axis and +axis, -1 where none: looked up */
    for (int axis = 0; axis < 3; axis++) faces[axis][0] = faces[axis][1] = -2; /* when first needed */
    const float keep = (float)(1 - reach), step = (float)reach; /* float32, as numpy multiplies by them */
    for (int v = 0; v < VOXELS; v++) {
        const Py_ssize_t at = (Py_ssize_t)slot * VOXELS + v;
        const float t = map->tsdf[at];
        const int observed = map->weight[at] >= map->min_weight;
        uint8_t solid = observed && t <= 0;
        if (observed && fabsf(t) < 1 && t > 0 && (map->looks[at] & FRONT)) {
            const int own[3] = {v >> 4, (v >> 2) & 3, v & 3};
            for (int axis = 0; axis < 3 && !solid; axis++)
                for (int side = 0; side < 2 && !solid; side++) {
                    int n[3] = {own[0], own[1], own[2]};
                    n[axis] += side ? 1 : -1;
                    int32_t s = slot;
                    if (n[axis] < 0 || n[axis] >= BLOCK) {
                        if (faces[axis][side] == -2) {
                            int64_t c[3] = {cell[0], cell[1], cell[2]};
                            c[axis] += side ? 1 : -1;
                            faces[axis][side] = find(map, c, side ? index + 1 : 0);
                        }
                        s = faces[axis][side], n[axis] = (n[axis] + BLOCK) % BLOCK;
                    }
                    if (s < 0) continue;
                    const Py_ssize_t nb = (Py_ssize_t)s * VOXELS + n[0] * 16 + n[1] * 4 + n[2];
                    const float tn = map->tsdf[nb];
                    solid = map->weight[nb] >= map->min_weight && fabsf(tn) < 1 && tn <= 0 && t * keep < -tn * step;
                }
        }
        out[v] = solid;
    }
}

/* Parses the common arguments (PyArg_ParseTuple's `format`) into map and the blocks' indices, and
 * where `reach` is not NULL one more number into it; fills b[7] (released by the caller). */
static int parse(PyObject *args, const char *format, Py_buffer b[7], Map *map, const Py_ssize_t **which,
                 Py_ssize_t *n, double *reach)
{
    PyObject *o[7];
    double min_weight, voxel;
    if (!PyArg_ParseTuple(args, format, &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6], &min_weight, &voxel, reach))
        return 0;
    if (!(voxel > 0 && voxel < INFINITY)) {
        PyErr_SetString(PyExc_ValueError, "voxel_size: not a positive number of metres");
        return 0;
    }
    if (!(min_weight >= 0) || (reach != NULL && !(*reach >= 0 && *reach <= 1))) {
        PyErr_SetString(PyExc_ValueError, "min_weight: not >= 0, or reach: not in [0, 1]");
        return 0;
    }
    if (get(o[0], &b[0], "tsdf", "f", -1, 0) < 0) return 0;
    const Py_ssize_t pool = b[0].len / 4;
    if (pool % VOXELS != 0) {
        PyErr_SetString(PyExc_ValueError, "tsdf: not a whole number of blocks");
        return 0;
    }
    if (get(o[1], &b[1], "weight", "f", pool, 0) < 0 || get(o[2], &b[2], "rgb", "B", 3 * pool, 0) < 0 ||
        get(o[3], &b[3], "looks", "B", pool, 0) < 0 || get(o[4], &b[4], "keys", "q", -1, 0) < 0 ||
        get(o[5], &b[5], "slots", "i", b[4].len / 8, 0) < 0 || get(o[6], &b[6], "which", "n", -1, 0) < 0)
        return 0;
    *map = (Map){b[0].buf, b[1].buf, b[2].buf, b[3].buf, b[4].buf, b[5].buf, b[4].len / 8, (float)min_weight, voxel};
    *which = b[6].buf;
    *n = b[6].len / (Py_ssize_t)sizeof(Py_ssize_t);
    for (Py_ssize_t s = 0; s < map->m; s++)
        if (map->slots[s] < 0 || map->slots[s] >= pool / VOXELS) {
            PyErr_SetString(PyExc_IndexError, "slots: a slot outside the pools");
            return 0;
        }
    for (Py_ssize_t s = 0; s < *n; s++)
        if ((*which)[s] < 0 || (*which)[s] >= map->m) {
            PyErr_SetString(PyExc_IndexError, "which: an index outside the keys");
            return 0;
        }
    return 1;
}

/* A tuple of `count` bytearrays, each the concatenation of `rows` Outs (parts[row * stride + part]). */
static PyObject *joined(Out *parts, int rows, int stride, int count)
{
    PyObject *result = PyTuple_New(count);
    for (int part = 0; result != NULL && part < count; part++) {
        Py_ssize_t size = 0;
        for (int r = 0; r < rows; r++) size += parts[r * stride + part].size;
        PyObject *bytes = PyByteArray_FromStringAndSize(NULL, size);
        if (bytes == NULL) {
            Py_CLEAR(result);
            break;
        }
        char *dst = PyByteArray_AS_STRING(bytes);
        for (int r = 0; r < rows; r++) {
            const Out *o = &parts[r * stride + part];
            if (o->size) memcpy(dst, o->data, (size_t)o->size);
            dst += o->size;
        }
        PyTuple_SET_ITEM(result, part, bytes);
    }
    return result;
}

static void release(Py_buffer b[7], Out *outs, int n)
{
    for (int i = 0; i < 7; i++)
        if (b[i].obj != NULL) PyBuffer_Release(&b[i]);
    for (int i = 0; i < n; i++) PyMem_RawFree(outs[i].data);
}

static PyObject *crossings(PyObject *self, PyObject *args)
{
    Py_buffer b[7];
    memset(b, 0, sizeof b);
    Out out[3][CROSSING_PARTS];
    memset(out, 0, sizeof out);
    Map map;
    const Py_ssize_t *which;
    Py_ssize_t n;
    PyObject *result = NULL;
    (void)self;
    if (parse(args, "OOOOOOOdd:crossings", b, &map, &which, &n, NULL)) {
        Padded *p = PyMem_RawMalloc(sizeof(Padded));
        int ok = p != NULL;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t s = 0; ok && s < n; s++)
            if (load(&map, which[s], 1, p)) ok = block_crossings(&map, p, out);
        Py_END_ALLOW_THREADS
        PyMem_RawFree(p);
        result = ok ? joined(&out[0][0], 3, CROSSING_PARTS, CROSSING_PARTS) : PyErr_NoMemory();
    }
    release(b, &out[0][0], 3 * CROSSING_PARTS);
    return result;
}

static PyObject *mesh(PyObject *self, PyObject *args)
{
    Py_buffer b[7];
    memset(b, 0, sizeof b);
    Out out[VERTEX_PARTS]; /* vertex slots, cell keys, vertices, colours */
    Out quads[3][2];       /* by axis: quad slots, quads */
    memset(out, 0, sizeof out);
    memset(quads, 0, sizeof quads);
    Map map;
    const Py_ssize_t *which;
    Py_ssize_t n;
    PyObject *result = NULL;
    (void)self;
    if (parse(args, "OOOOOOOdd:mesh", b, &map, &which, &n, NULL)) {
        Padded *p = PyMem_RawMalloc(sizeof(Padded));
        int ok = p != NULL;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t s = 0; ok && s < n; s++)
            if (load(&map, which[s], 0, p)) ok = block_mesh(&map, p, out, quads);
        Py_END_ALLOW_THREADS
        PyMem_RawFree(p);
        PyObject *vertices = ok ? joined(out, 1, VERTEX_PARTS, VERTEX_PARTS) : PyErr_NoMemory();
        PyObject *faces = vertices != NULL ? joined(&quads[0][0], 3, 2, 2) : NULL;
        if (faces != NULL) result = PySequence_Concat(vertices, faces);
        Py_XDECREF(vertices);
        Py_XDECREF(faces);
    }
    release(b, out, VERTEX_PARTS);
    for (int a = 0; a < 3; a++) PyMem_RawFree(quads[a][0].data), PyMem_RawFree(quads[a][1].data);
    return result;
}

static PyObject *solid(PyObject *self, PyObject *args)
{
    Py_buffer b[7];
    memset(b, 0, sizeof b);
    Map map;
    const Py_ssize_t *which;
    Py_ssize_t n;
    double reach;
    PyObject *result = NULL;
    (void)self;
    if (parse(args, "OOOOOOOddd:solid", b, &map, &which, &n, &reach))
        result = n <= PY_SSIZE_T_MAX / VOXELS ? PyByteArray_FromStringAndSize(NULL, n * VOXELS) : PyErr_NoMemory();
    if (result != NULL) {
        uint8_t *out = (uint8_t *)PyByteArray_AS_STRING(result);
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t s = 0; s < n; s++) block_solid(&map, which[s], reach, out + s * VOXELS);
        Py_END_ALLOW_THREADS
    }
    release(b, NULL, 0);
    return result;
}

static PyMethodDef methods[] = {
    {"crossings", crossings, METH_VARARGS,
     "crossings(tsdf, weight, rgb, looks, keys, slots, which, min_weight, voxel_size) -> (slots, points, colours, "
     "weights) as bytearrays of int32, float32 (N * 3), uint8 (N * 3) and float32: surface()'s zero crossings in "
     "the blocks at sorted indices `which` (see _tsdf_extract.c)."},
    {"mesh", mesh, METH_VARARGS,
     "mesh(tsdf, weight, rgb, looks, keys, slots, which, min_weight, voxel_size) -> (vertex slots, cell keys, "
     "vertices, colours, quad slots, quads) as bytearrays of int32, int64, float32 (V * 3), uint8 (V * 3), int32 "
     "and int64 (Q * 4): mesh()'s parts of the blocks at sorted indices `which` (see _tsdf_extract.c)."},
    {"solid", solid, METH_VARARGS,
     "solid(tsdf, weight, rgb, looks, keys, slots, which, min_weight, voxel_size, reach) -> bytearray of bool "
     "(n * 64): the occupancy grid's solid voxels of the blocks at sorted indices `which` (see _tsdf_extract.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_tsdf_extract", .m_size = -1, .m_methods = methods,
};

PyMODINIT_FUNC PyInit__tsdf_extract(void) { return PyModule_Create(&module); }
