/* The native-resolution depth of a model-resolution map through a geometry.resample.Stencil, in one
 * pass over the native pixels (mapping/reconstruction.py's _to_native, "bilinear" mode, numpy), the
 * depth-edge test of a map, and a view's world points (Reconstruction.points).
 *
 * Built by CMakeLists.txt (colcon, and tools/dev's environment) as mapanything_ros._resample.
 * reconstruction.py runs the same steps in numpy (and in torch on a device) when this module is
 * missing; test_reconstruction.py checks that both give the same bits.
 *
 * native(inv, conf, index, weight, cell, sides, across, down, width, depth, confidence) -> None
 *   inv, conf     float32 (n,): the model map's inverse z-depth and confidence (NaN = none), flat
 *   index         intp (3 * m): the stencil's three model pixels of each native pixel (Stencil.index)
 *   weight        float32 (3 * m): their weights (Stencil.weight; NaN where the pixel gets no value)
 *   cell, sides   intp (m), uint8 (m): each native pixel's model cell and the cell sides whose
 *                 discontinuities count there (Stencil.cell, Stencil.sides)
 *   across, down  None, or bool (n + 1) each: the model map's discontinuities (geometry.resize.
 *                 edge_jumps, False past the last column / row); a native pixel whose counting
 *                 sides jump gets NaN (Stencil.cut_at)
 *   width         the model map's width
 *   depth, confidence  writable float32 (m): the native z-depth 1 / (sum of weight * inv), NaN where
 *                 that is not > 0 or cut; the confidence resampled likewise, NaN wherever the depth is
 * An index or cell outside the model map (not made by a Stencil) gives NaN (a cell: where its sides count).
 * The sums are those of Stencil.apply on the complex64 map inv + i conf, with numpy's complex64
 * arithmetic: (a + ib)(w + 0i) = (a w - b 0) + i(a 0 + b w), so a NaN or infinite confidence makes
 * the depth NaN there as it does in numpy. The GIL is released while the outputs are written.
 *
 * jumps(v, width, max_jump, across, down) -> None
 *   v             float32 (h, width), C-contiguous (or flat): a positive map (NaN = none)
 *   max_jump      the relative threshold, rounded to float32
 *   across, down  writable bool (h * width + 1) each: geometry.resize.edge_jumps' outputs, written
 *                 whole (False past the last column / row and at the end)
 * The same steps as resize._jumps in float32, in its order: d = the difference of neighbours;
 * its deviation the smaller of |d - d_before| and |d - d_after| (a missing or NaN one counts as
 * infinite), |d| when both are; a jump where the deviation exceeds max_jump * the pair's smaller
 * value (never where either is NaN). test_geometry_resize.py checks that both give the same bits.
 *
 * points(rays, depth, index, ratio, scale, rotation, translation, rgbx, xyz, rgb) -> None
 *   rays, depth   float32 (n * 3), (n): a view's unit rays and depth along them at the model pixels
 *   index         intp (m): the model pixels with an estimate
 *   ratio, scale  None and a float, or float32 (m) and 1: the depth's factor at each indexed pixel
 *   rotation, translation  9 and 3 floats (rounded to float32): world_from_camera's, the rotation
 *                 times the window's scale (Reconstruction.points)
 *   rgbx          uint8 (n * 4): the model image's RGB and a pad byte per pixel
 *   xyz, rgb      writable float32 (m * 3), uint8 (m * 3): the world points, their colours
 * Per point, in float32: s = depth * factor, c = ray * s, then row j of rotation · c + translation as
 * ((c0 r_j0 + c1 r_j1) + c2 r_j2) + t_j; reconstruction.py's numpy fallback computes the same. An
 * index outside the rays raises ValueError (after the pass, whose point there is NaN).
 *
 * stencil(uv, p, cols, fx, rows, fy, inside, width, index, weight) -> None
 *   uv            float64 (n * 2): the model pixels' normalised image coordinates (x/z, y/z; NaN = none)
 *   p             float64 (m * 2): the native pixels' (an h x w image, m = h * w)
 *   cols, fx      intp (w), float64 (w): each native column's model column left of it and its offset
 *                 from it (Resize.cells); rows, fy likewise per native row (h)
 *   inside        bool (m): native pixels inside the model image's crop
 *   width         the model image's width
 *   index, weight writable intp (3 * m), float32 (3 * m): geometry.resample.Stencil's tables
 * The steps of resample._stencil_tables in float64, in its order: the triangle of the model cell
 * around each native pixel, its vertices' pixel weights, the barycentric weights of p in their uv
 * (1 and 0 where the pixel is a model pixel, which all three then index), NaN where one is not
 * finite, p is not, or the pixel is outside the crop. test_geometry_resize.py checks both give
 * the same bits. A model column or row outside the model image raises ValueError.
 *
 * Why compiled code: the numpy paths make a dozen or more passes over their pixels (jumps: 3.5 ms a
 * 518x392 view, native: 3.8 ms a 640x480 view; points: five gathers, the products and the transform;
 * the stencil, once per camera on its first outputs: 612 ms at 1920x1200 with the ray maps made;
 * docs/performance.md#rigs).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_buffers.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

static void resample(const float *inv, const float *conf, Py_ssize_t n, const Py_ssize_t *index,
                     const float *weight, const Py_ssize_t *cell, const uint8_t *sides, const uint8_t *across,
                     const uint8_t *down, Py_ssize_t width, Py_ssize_t m, float *depth, float *confidence)
{
    const float zero = 0.0f;
    for (Py_ssize_t k = 0; k < m; k++) {
        float re = 0, im = 0;
        int inside = 1;
        for (int j = 0; j < 3; j++) {
            const Py_ssize_t i = index[j * m + k];
            inside &= (size_t)i < (size_t)n;
            const float w = weight[j * m + k], a = inside ? inv[i] : NAN, b = inside ? conf[i] : NAN;
            const float tr = a * w - b * zero, ti = a * zero + b * w;
            if (j == 0) {
                re = tr;
                im = ti;
            } else {
                re += tr;
                im += ti;
            }
        }
        const Py_ssize_t c = cell[k];
        if (across != NULL) { /* the cell's sides: bit 0 top, 1 bottom, 2 left, 3 right (Stencil.cut_at) */
            const unsigned jump = (size_t)c >= (size_t)n ? 15u
                                  : (unsigned)across[c] | (c < n - width ? (unsigned)across[c + width] << 1 : 0u) |
                                        (unsigned)down[c] << 2 | (c < n - 1 ? (unsigned)down[c + 1] << 3 : 0u);
            if (jump & sides[k]) re = NAN;
        }
        const float z = 1 / re;
        const int ok = z > 0;
        depth[k] = ok ? z : NAN;
        confidence[k] = ok ? im : NAN;
    }
}

/* |a - b| with NaN as infinity (a missing neighbour's difference), in a form loops vectorise. */
static inline float deviation(float a, float b)
{
    const float e = fabsf(a - b);
    return e == e ? e : INFINITY;
}

/* Whether the pair (lo_v, hi_v) with difference d (hi_v - lo_v) and deviations e0, e1 from its
 * neighbours' differences (INFINITY where missing) is a jump: resize._jumps' test. */
static inline uint8_t jump(float d, float e0, float e1, float lo_v, float hi_v, float max_jump)
{
    float dev = e0 < e1 ? e0 : e1;
    dev = dev == INFINITY ? fabsf(d) : dev;
    const float least = lo_v < hi_v ? lo_v : hi_v; /* a NaN value makes d, so dev, NaN: no jump */
    return (uint8_t)(dev > max_jump * least);
}

/* Pair k's jump on a line of n values s apart from p (any k: the neighbours' differences where they exist). */
static inline uint8_t pair_jump(const float *p, Py_ssize_t n, Py_ssize_t s, Py_ssize_t k, float max_jump)
{
    const float a = p[k * s], b = p[(k + 1) * s], d = b - a;
    const float e0 = k >= 1 ? deviation(d, a - p[(k - 1) * s]) : INFINITY;
    const float e1 = k + 2 < n ? deviation(p[(k + 2) * s] - b, d) : INFINITY;
    return jump(d, e0, e1, a, b, max_jump);
}

/* resize.edge_jumps of v (h, w): the pairs with both neighbours' differences in loops without branches
 * (which the compiler vectorises), the first and last pair of each line by pair_jump. */
static void jumps(const float *v, Py_ssize_t h, Py_ssize_t w, float max_jump, uint8_t *across, uint8_t *down)
{
    memset(across, 0, (size_t)(h * w + 1));
    memset(down, 0, (size_t)(h * w + 1));
    for (Py_ssize_t r = 0; r < h && w >= 2; r++) {
        const float *p = v + r * w;
        uint8_t *out = across + r * w;
        out[0] = pair_jump(p, w, 1, 0, max_jump);
        for (Py_ssize_t c = 1; c + 2 < w; c++) {
            const float a = p[c], b = p[c + 1], d = b - a;
            out[c] = jump(d, deviation(d, a - p[c - 1]), deviation(p[c + 2] - b, d), a, b, max_jump);
        }
        if (w >= 3) out[w - 2] = pair_jump(p, w, 1, w - 2, max_jump);
    }
    for (Py_ssize_t r = 0; r + 1 < h; r++) {
        const float *p = v + r * w, *q = p + w;
        uint8_t *out = down + r * w;
        if (r == 0 || r + 2 >= h) {
            for (Py_ssize_t c = 0; c < w; c++) out[c] = pair_jump(v + c, h, w, r, max_jump);
            continue;
        }
        for (Py_ssize_t c = 0; c < w; c++) {
            const float a = p[c], b = q[c], d = b - a;
            out[c] = jump(d, deviation(d, a - p[c - w]), deviation(q[c + w] - b, d), a, b, max_jump);
        }
    }
}

static PyObject *edge_jumps(PyObject *self, PyObject *args)
{
    PyObject *o[3];
    Py_buffer b[3];
    Py_ssize_t width;
    double max_jump;
    (void)self;
    memset(b, 0, sizeof b);
    if (!PyArg_ParseTuple(args, "OndOO:jumps", &o[0], &width, &max_jump, &o[1], &o[2])) return NULL;
    int ok = get(o[0], &b[0], "v", "f", -1, 0) == 0;
    const Py_ssize_t n = ok ? b[0].len / 4 : 0;
    if (ok && (width <= 0 || n % width != 0)) {
        PyErr_SetString(PyExc_ValueError, "width: not the width of the map");
        ok = 0;
    }
    ok = ok && get(o[1], &b[1], "across", "?", n + 1, 1) == 0 && get(o[2], &b[2], "down", "?", n + 1, 1) == 0;
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        jumps(b[0].buf, n / width, width, (float)max_jump, b[1].buf, b[2].buf);
        Py_END_ALLOW_THREADS
    }
    for (int i = 0; i < 3; i++)
        if (b[i].obj != NULL) PyBuffer_Release(&b[i]);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static PyObject *native(PyObject *self, PyObject *args)
{
    enum { N = 10 };
    PyObject *o[N];
    Py_buffer b[N];
    Py_ssize_t width;
    (void)self;
    memset(b, 0, sizeof b);
    if (!PyArg_ParseTuple(args, "OOOOOOOOnOO:native", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6], &o[7],
                          &width, &o[8], &o[9]))
        return NULL;
    const int cut = o[6] != Py_None;
    int ok = get(o[0], &b[0], "inv", "f", -1, 0) == 0 && get(o[4], &b[4], "cell", "n", -1, 0) == 0;
    const Py_ssize_t n = ok ? b[0].len / 4 : 0, m = ok ? b[4].len / (Py_ssize_t)sizeof(Py_ssize_t) : 0;
    ok = ok && get(o[1], &b[1], "conf", "f", n, 0) == 0 && get(o[2], &b[2], "index", "n", 3 * m, 0) == 0 &&
         get(o[3], &b[3], "weight", "f", 3 * m, 0) == 0 && get(o[5], &b[5], "sides", "B", m, 0) == 0 &&
         (!cut || (get(o[6], &b[6], "across", "?", n + 1, 0) == 0 && get(o[7], &b[7], "down", "?", n + 1, 0) == 0)) &&
         get(o[8], &b[8], "depth", "f", m, 1) == 0 && get(o[9], &b[9], "confidence", "f", m, 1) == 0;
    if (ok && (width <= 0 || n % width != 0)) {
        PyErr_SetString(PyExc_ValueError, "width: not the width of the model map");
        ok = 0;
    }
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        resample(b[0].buf, b[1].buf, n, b[2].buf, b[3].buf, b[4].buf, b[5].buf, cut ? b[6].buf : NULL,
                 cut ? b[7].buf : NULL, width, m, b[8].buf, b[9].buf);
        Py_END_ALLOW_THREADS
    }
    for (int i = 0; i < N; i++)
        if (b[i].obj != NULL) PyBuffer_Release(&b[i]);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

/* The points of Reconstruction.points; returns how many indices fell outside the n pixels. */
static Py_ssize_t points(const float *rays, const float *depth, Py_ssize_t n, const Py_ssize_t *index, Py_ssize_t m,
                         const float *ratio, float scale, const float *r, const float *t, const uint8_t *rgbx,
                         float *xyz, uint8_t *rgb)
{
    Py_ssize_t bad = 0;
    for (Py_ssize_t k = 0; k < m; k++) {
        const Py_ssize_t p = index[k];
        float *out = xyz + 3 * k;
        if ((size_t)p >= (size_t)n) {
            out[0] = out[1] = out[2] = NAN;
            memset(rgb + 3 * k, 0, 3);
            bad++;
            continue;
        }
        const float s = depth[p] * (ratio != NULL ? ratio[k] : scale);
        const float c0 = rays[3 * p] * s, c1 = rays[3 * p + 1] * s, c2 = rays[3 * p + 2] * s;
        for (int j = 0; j < 3; j++) out[j] = ((c0 * r[3 * j] + c1 * r[3 * j + 1]) + c2 * r[3 * j + 2]) + t[j];
        memcpy(rgb + 3 * k, rgbx + 4 * p, 3);
    }
    return bad;
}

static PyObject *points_py(PyObject *self, PyObject *args)
{
    enum { N = 7 };
    PyObject *o[N];
    Py_buffer b[N];
    float scale, r[9], t[3];
    (void)self;
    memset(b, 0, sizeof b);
    if (!PyArg_ParseTuple(args, "OOOOf(fffffffff)(fff)OOO:points", &o[0], &o[1], &o[2], &o[3], &scale, &r[0], &r[1],
                          &r[2], &r[3], &r[4], &r[5], &r[6], &r[7], &r[8], &t[0], &t[1], &t[2], &o[4], &o[5], &o[6]))
        return NULL;
    const int scaled = o[3] == Py_None;
    int ok = get(o[1], &b[1], "depth", "f", -1, 0) == 0 && get(o[2], &b[2], "index", "n", -1, 0) == 0;
    const Py_ssize_t n = ok ? b[1].len / 4 : 0, m = ok ? b[2].len / (Py_ssize_t)sizeof(Py_ssize_t) : 0;
    ok = ok && get(o[0], &b[0], "rays", "f", 3 * n, 0) == 0 && (scaled || get(o[3], &b[3], "ratio", "f", m, 0) == 0) &&
         get(o[4], &b[4], "rgbx", "B", 4 * n, 0) == 0 && get(o[5], &b[5], "xyz", "f", 3 * m, 1) == 0 &&
         get(o[6], &b[6], "rgb", "B", 3 * m, 1) == 0;
    Py_ssize_t bad = 0;
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        bad = points(b[0].buf, b[1].buf, n, b[2].buf, m, scaled ? NULL : b[3].buf, scale, r, t, b[4].buf, b[5].buf,
                     b[6].buf);
        Py_END_ALLOW_THREADS
    }
    for (int i = 0; i < N; i++)
        if (b[i].obj != NULL) PyBuffer_Release(&b[i]);
    if (ok && bad) {
        PyErr_Format(PyExc_ValueError, "index: %zd of %zd outside the %zd pixels", bad, m, n);
        ok = 0;
    }
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

/* The tables of resample._stencil_tables for native pixels (h x w); returns 0, or -1 when a model column
 * or row is outside the model image (wo x ho). */
static int stencil(const double *uv, const double *p, const Py_ssize_t *cols, const double *fx,
                   const Py_ssize_t *rows, const double *fy, const uint8_t *inside, Py_ssize_t w, Py_ssize_t h,
                   Py_ssize_t wo, Py_ssize_t ho, Py_ssize_t *index, float *weight)
{
    const Py_ssize_t m = w * h;
    for (Py_ssize_t j = 0; j < w; j++)
        if (cols[j] < 0 || cols[j] >= wo) return -1;
    for (Py_ssize_t i = 0; i < h; i++)
        if (rows[i] < 0 || rows[i] >= ho) return -1;
    for (Py_ssize_t i = 0; i < h; i++) {
        const Py_ssize_t r0 = rows[i], r1 = r0 + 1 < ho ? r0 + 1 : ho - 1;
        for (Py_ssize_t j = 0; j < w; j++) {
            const Py_ssize_t k = i * w + j, c0 = cols[j], c1 = c0 + 1 < wo ? c0 + 1 : wo - 1;
            /* Corner k, its neighbour x along the row and y along the column, and their weights in pixels. */
            const int far = fx[j] + fy[i] > 1;
            const Py_ssize_t rk = far ? r1 : r0, ck = far ? c1 : c0, cx = far ? c0 : c1, ry = far ? r0 : r1;
            const double px = far ? 1 - fx[j] : fx[j], py = far ? 1 - fy[i] : fy[i];
            const Py_ssize_t at[3] = {rk * wo + ck, rk * wo + cx, ry * wo + ck};
            const int counts[3] = {1 - px - py != 0, px != 0, py != 0};
            const int single = counts[0] + counts[1] + counts[2] == 1;
            const double *a = uv + 2 * at[0], *b = uv + 2 * at[1], *c = uv + 2 * at[2], *q = p + 2 * k;
            double wt[3];
            if (single) {
                for (int v = 0; v < 3; v++) wt[v] = counts[v];
            } else {
                const double ab0 = b[0] - a[0], ab1 = b[1] - a[1], ac0 = c[0] - a[0], ac1 = c[1] - a[1];
                const double ap0 = q[0] - a[0], ap1 = q[1] - a[1];
                const double det = ab0 * ac1 - ab1 * ac0;
                const double wb = (ap0 * ac1 - ap1 * ac0) / det, wc = (ab0 * ap1 - ab1 * ap0) / det;
                wt[0] = 1 - wb - wc;
                wt[1] = wb;
                wt[2] = wc;
            }
            const int bad = !(isfinite(wt[0]) && isfinite(wt[1]) && isfinite(wt[2]) && isfinite(q[0]) &&
                              isfinite(q[1])) || !inside[k];
            const int first = counts[0] ? 0 : (counts[1] ? 1 : 2); /* the one model pixel, when single */
            for (int v = 0; v < 3; v++) {
                weight[v * m + k] = bad ? NAN : (float)wt[v];
                index[v * m + k] = single ? at[first] : at[v];
            }
        }
    }
    return 0;
}

static PyObject *stencil_py(PyObject *self, PyObject *args)
{
    enum { N = 9 };
    PyObject *o[N];
    Py_buffer b[N];
    Py_ssize_t width;
    (void)self;
    memset(b, 0, sizeof b);
    if (!PyArg_ParseTuple(args, "OOOOOOOnOO:stencil", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6], &width, &o[7],
                          &o[8]))
        return NULL;
    int ok = get(o[0], &b[0], "uv", "d", -1, 0) == 0 && get(o[2], &b[2], "cols", "n", -1, 0) == 0 &&
             get(o[4], &b[4], "rows", "n", -1, 0) == 0;
    const Py_ssize_t n = ok ? b[0].len / 16 : 0, w = ok ? b[2].len / (Py_ssize_t)sizeof(Py_ssize_t) : 0,
                     h = ok ? b[4].len / (Py_ssize_t)sizeof(Py_ssize_t) : 0;
    if (ok && b[0].len % 16 != 0) {
        PyErr_SetString(PyExc_ValueError, "uv: not pairs of coordinates");
        ok = 0;
    }
    const Py_ssize_t most = PY_SSIZE_T_MAX / (3 * (Py_ssize_t)sizeof(Py_ssize_t)); /* pixels whose tables' bytes fit */
    if (ok && (width <= 0 || n % width != 0 || w > most / (h > 0 ? h : 1))) {
        PyErr_SetString(PyExc_ValueError, "width: not the width of the model image, or too many native pixels");
        ok = 0;
    }
    const Py_ssize_t m = w * h;
    ok = ok && get(o[1], &b[1], "p", "d", 2 * m, 0) == 0 && get(o[3], &b[3], "fx", "d", w, 0) == 0 &&
         get(o[5], &b[5], "fy", "d", h, 0) == 0 && get(o[6], &b[6], "inside", "?", m, 0) == 0 &&
         get(o[7], &b[7], "index", "n", 3 * m, 1) == 0 && get(o[8], &b[8], "weight", "f", 3 * m, 1) == 0;
    int outside = 0;
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        outside = stencil(b[0].buf, b[1].buf, b[2].buf, b[3].buf, b[4].buf, b[5].buf, b[6].buf, w, h, width,
                          n / width, b[7].buf, b[8].buf);
        Py_END_ALLOW_THREADS
    }
    for (int i = 0; i < N; i++)
        if (b[i].obj != NULL) PyBuffer_Release(&b[i]);
    if (ok && outside) {
        PyErr_SetString(PyExc_ValueError, "cols, rows: a model column or row outside the model image");
        ok = 0;
    }
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"native", native, METH_VARARGS,
     "native(inv, conf, index, weight, cell, sides, across, down, width, depth, confidence) -> None: the native "
     "z-depth and confidence of a model map of inverse depth and confidence through a stencil (see _resample.c)."},
    {"jumps", edge_jumps, METH_VARARGS,
     "jumps(v, width, max_jump, across, down) -> None: geometry.resize.edge_jumps of a float32 map (see "
     "_resample.c)."},
    {"points", points_py, METH_VARARGS,
     "points(rays, depth, index, ratio, scale, rotation, translation, rgbx, xyz, rgb) -> None: the world points "
     "and colours of a view's model pixels (see _resample.c)."},
    {"stencil", stencil_py, METH_VARARGS,
     "stencil(uv, p, cols, fx, rows, fy, inside, width, index, weight) -> None: the tables of "
     "geometry.resample.Stencil (see _resample.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_resample", .m_size = -1, .m_methods = methods,
};

PyMODINIT_FUNC PyInit__resample(void) { return PyModule_Create(&module); }
