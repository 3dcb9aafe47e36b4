/* The per-voxel fusion loop of mapping/tsdf.py (TsdfMap._fuse), compiled, with the projection of
 * each voxel centre into the view's model pixels (geometry.ModelPixels) done in the same pass.
 *
 * Built by CMakeLists.txt (colcon, and tools/dev's environment) as mapanything_ros._tsdf_fuse.
 * tsdf.py runs the same steps in numpy when this module is missing; test_tsdf.py checks that both
 * give the same map, and that project() gives the lens models' pixels (geometry/distortion.py).
 *
 * fuse(tsdf, weight, rgb, looks, free, slots, corners, offsets, lens, pixel, ranges, weights, colors, width,
 *      (truncation, ratio, voxel_size, max_weight, max_range, spread, free_level, min_weight), color_looks)
 *      -> int
 *   tsdf, weight  writable float32 pools (VOXELS = 64 per block slot, flat); rgb writable uint8 (3 per
 *                 voxel); looks writable uint8 (1 per voxel); free writable bool (1 per slot)
 *   slots         int32 (m,): the pool slots to fuse (unique)
 *   corners       float32 (m * 3): each slot's camera-frame offset (m); a voxel's centre in the camera
 *                 frame is its slot's corner plus its own offset
 *   offsets       float32 (64 * 3): the voxels' offsets within a block, rotated into the camera frame
 *   lens          (kind, (8 coefficients), limit): distortion.<lens>.spec()
 *   pixel         (fx, skew, cx, fy, cy, grid offset, sx, sy, crop x, crop y): K (binning and ROI in),
 *                 then the resize to the model image (geometry.ModelPixels.projection)
 *   ranges        float32 (height * width): metres along the rays, 0 = none
 *   weights       float32 (height * width): each pixel's observation weight
 *   colors        uint8 (height * width * 3)
 *   max_range <= 0: no limit.
 * Voxels the lens does not see or outside (-0.5, width - 0.5) x (-0.5, height - 0.5) are not
 * observed. After a slot's voxels, free[slot] says whether all of them are at or above free_level
 * with a weight of at least min_weight. Returns the number of voxels updated. The GIL is released
 * while the pools are written.
 *
 * project(cam, lens, pixel) -> (col, row, valid): the same projection of float32 (n * 3) camera-frame
 * points, as float32, float32 and bool arrays (n,) (for the tests).
 *
 * The projection follows distortion.py step by step, in single precision where numpy computes in
 * single precision (the voxel centres are float32) and in double where NumPy 2 does (K and the
 * resize); built without fused multiply-adds (CMakeLists.txt). With NumPy 2 it gives the same
 * pixels bit for bit for pinhole and radial-tangential lenses; for the fisheye, numpy's float32
 * arctan2 is not libm's atan2f and the pixels differ by up to about 1e-4 px (NumPy 1 also
 * multiplies by K in single precision: a few 1e-5 px).
 *
 * Per candidate, as tsdf.py documents: the nearest pixel's range r; near the surface the bilinear
 * range in inverse depth when the four pixels around agree within `spread`; T = max(truncation,
 * ratio * r); sdf = r - dist; skipped without a range, behind -T or beyond max_range; observation
 * min(sdf, T) / T with weight w * (truncation / T)^2 (in front of the band, sdf >= T: T at the voxel's
 * own distance, max(truncation, ratio * dist)), falling linearly to 0 from one voxel behind
 * the surface to -T; weighted mean into tsdf, weight capped at max_weight; within the band the
 * colour is the mean of the last color_looks looks.
 *
 * Why compiled code: the numpy version makes about fifty passes over the voxels (several hundred
 * thousand per keyframe), each a temporary array; this is one pass (docs/performance.md#map-fusion).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    float truncation, ratio, voxel, max_weight, max_range, spread, free_level, min_weight;
    int color_looks;
} Params;

enum { PINHOLE = 0, RADTAN = 1, EQUIDISTANT = 2 }; /* distortion.py's spec() kinds */

typedef struct {
    int kind;
    float k[8];   /* RADTAN: k1..k6, p1, p2; EQUIDISTANT: k1..k4 */
    float limit;  /* RADTAN: max_radius²; EQUIDISTANT: max_angle */
    double fx, skew, cx, fy, cy, offset, sx, sy, crop_x, crop_y;
} Projection;

/* Model-pixel coordinates (col, row) of a camera-frame point; 0 where the lens does not see it. */
static inline int project_point(const Projection *q, float x, float y, float z, float *col, float *row)
{
    float xd, yd;
    int ok = isfinite(x) && isfinite(y) && isfinite(z);
    if (q->kind == EQUIDISTANT) {
        const float rho = hypotf(x, y), theta = atan2f(rho, z), t2 = theta * theta;
        ok = ok && theta < q->limit && (rho > 0 || z > 0);
        const float poly = 1 + t2 * (q->k[0] + t2 * (q->k[1] + t2 * (q->k[2] + t2 * q->k[3])));
        const float scale = rho > 0 ? theta * poly / rho : 0.0f;
        xd = x * scale;
        yd = y * scale;
    } else {
        const float xn = x / z, yn = y / z;
        ok = ok && z > 0;
        if (q->kind == RADTAN) {
            const float *k = q->k, p1 = k[6], p2 = k[7];
            const float s = xn * xn + yn * yn;
            ok = ok && isfinite(xn) && isfinite(yn) && s <= q->limit;
            const float g = (1 + s * (k[0] + s * (k[1] + s * k[2]))) / (1 + s * (k[3] + s * (k[4] + s * k[5])));
            xd = xn * g + (2 * p1) * xn * yn + p2 * (s + 2 * xn * xn);
            yd = yn * g + p1 * (s + 2 * yn * yn) + (2 * p2) * xn * yn;
        } else {
            xd = xn;
            yd = yn;
        }
    }
    const double u = q->fx * xd + q->skew * yd + q->cx, v = q->fy * yd + q->cy;
    ok = ok && isfinite(u) && isfinite(v);
    *col = (float)((u - q->offset + 0.5) * q->sx - 0.5 - q->crop_x);
    *row = (float)((v - q->offset + 0.5) * q->sy - 0.5 - q->crop_y);
    return ok;
}

/* fmaxf, fminf and nearbyintf are library calls unless NaN and rounding-mode rules are relaxed;
 * these are inlined. The values here are never NaN, and round_half_up takes values >= -0.5 (pixel
 * coordinates inside the image, colours). */
static inline float max_f(float a, float b) { return a > b ? a : b; }
static inline float min_f(float a, float b) { return a < b ? a : b; }
static inline Py_ssize_t round_half_up(float x) { return (Py_ssize_t)(x + 0.5f); }

/* The range at (c, r) (see the file comment); rn: the nearest pixel's. */
static inline float sample(const float *ranges, Py_ssize_t w, Py_ssize_t h, float c, float r, float rn, float spread)
{
    if (w < 2 || h < 2) return rn;
    float fc0 = floorf(c), fr0 = floorf(r);
    Py_ssize_t c0 = (Py_ssize_t)fc0, r0 = (Py_ssize_t)fr0;
    if (c0 < 0) c0 = 0;
    if (c0 > w - 2) c0 = w - 2;
    if (r0 < 0) r0 = 0;
    if (r0 > h - 2) r0 = h - 2;
    float fc = c - (float)c0, fr = r - (float)r0;
    fc = fc < 0 ? 0 : (fc > 1 ? 1 : fc);
    fr = fr < 0 ? 0 : (fr > 1 ? 1 : fr);
    const float *p = ranges + r0 * w + c0;
    const float a = p[0], b = p[1], cc = p[w], d = p[w + 1];
    const float lo = min_f(min_f(a, b), min_f(cc, d)), hi = max_f(max_f(a, b), max_f(cc, d));
    if (!(lo > 0) || !(hi <= lo * (1 + spread))) return rn;
    return 1 / ((1 - fr) * ((1 - fc) / a + fc / b) + fr * ((1 - fc) / cc + fc / d));
}

#define VOXELS 64

/* Fuse one voxel (flat pool index v, centre at distance d, seen at pixel (c, r)); 1 if updated. */
static inline int fuse_voxel(float *tsdf, float *weight, uint8_t *rgb, uint8_t *looks, int64_t v, float c, float r,
                             float d, const float *ranges, const float *pw, const uint8_t *colors, Py_ssize_t w,
                             Py_ssize_t h, const Params *p)
{
    const Py_ssize_t pix = round_half_up(r) * w + round_half_up(c);
    float range = ranges[pix];
    if (!(range > 0)) return 0;
    float t = max_f(p->truncation, p->ratio * range);
    if (fabsf(range - d) < t + p->spread * range) {
        range = sample(ranges, w, h, c, r, range, p->spread);
        t = max_f(p->truncation, p->ratio * range);
    }
    const float sdf = range - d;
    if (!(sdf >= -t)) return 0;
    if (p->max_range > 0 && d > p->max_range) return 0;
    const float ratio = p->truncation / (sdf >= t ? max_f(p->truncation, p->ratio * d) : t);
    float wt = pw[pix] * ratio * ratio;
    if (sdf < -p->voxel) wt *= (t + sdf) / (t - p->voxel);
    if (!(wt > 0)) return 0;
    const float obs = (sdf < t ? sdf : t) / t;
    const float old = weight[v], total = old + wt;
    tsdf[v] = (tsdf[v] * old + obs * wt) / total;
    weight[v] = total < p->max_weight ? total : p->max_weight;
    if (sdf < t) {
        const int seen = looks[v];
        const float f = 1.0f / (float)(seen + 1);
        for (int k = 0; k < 3; k++)
            rgb[3 * v + k] = (uint8_t)round_half_up((float)rgb[3 * v + k] * (1 - f) + (float)colors[3 * pix + k] * f);
        looks[v] = (uint8_t)(seen + 1 < p->color_looks ? seen + 1 : p->color_looks);
    }
    return 1;
}

static Py_ssize_t fuse_all(float *tsdf, float *weight, uint8_t *rgb, uint8_t *looks, uint8_t *free_,
                           const int32_t *slots, Py_ssize_t m, const float *corners, const float *offsets,
                           const Projection *q, const float *ranges, const float *pw, const uint8_t *colors,
                           Py_ssize_t w, Py_ssize_t h, Params p)
{
    Py_ssize_t updated = 0;
    const float wmin = p.min_weight > 1e-12f ? p.min_weight : 1e-12f;
    for (Py_ssize_t s = 0; s < m; s++) {
        const int64_t base = (int64_t)slots[s] * VOXELS;
        const float *corner = corners + 3 * s;
        for (Py_ssize_t o = 0; o < VOXELS; o++) {
            const float x = corner[0] + offsets[3 * o], y = corner[1] + offsets[3 * o + 1],
                        z = corner[2] + offsets[3 * o + 2];
            float c, r;
            if (!project_point(q, x, y, z, &c, &r) ||
                !(c > -0.5f && c < (float)w - 0.5f && r > -0.5f && r < (float)h - 0.5f))
                continue;
            const float d = sqrtf(x * x + y * y + z * z);
            updated += fuse_voxel(tsdf, weight, rgb, looks, base + o, c, r, d, ranges, pw, colors, w, h, &p);
        }
        int all_free = 1;
        for (Py_ssize_t o = 0; o < VOXELS && all_free; o++)
            all_free = tsdf[base + o] >= p.free_level && weight[base + o] >= wmin;
        free_[slots[s]] = (uint8_t)all_free;
    }
    return updated;
}

static const char *native_format(const Py_buffer *view)
{
    const char *f = view->format != NULL ? view->format : "B";
    return f[0] == '@' || f[0] == '=' ? f + 1 : f;
}

/* A C-contiguous (writable when asked) buffer of format fmt with at least `items` items (-1: any). */
static int get(PyObject *obj, Py_buffer *view, const char *name, const char *fmt, Py_ssize_t items, int writable)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    const char *f = native_format(view);
    const int ok_fmt = strcmp(f, fmt) == 0 || (fmt[0] == 'q' && strcmp(f, "l") == 0 && sizeof(long) == 8);
    if (!ok_fmt || (items >= 0 && view->len != items * view->itemsize)) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd items of format '%s', got %zd bytes of '%s'", name, items,
                     fmt, view->len, f);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* A Projection from the (kind, (8 coefficients), limit) and 10-number pixel tuples; 0 on error. */
static int parse_projection(PyObject *lens, PyObject *pixel, Projection *q)
{
    double k[8], limit;
    if (!PyArg_ParseTuple(lens, "i(dddddddd)d;lens: (kind, (8 coefficients), limit)", &q->kind, &k[0], &k[1], &k[2],
                          &k[3], &k[4], &k[5], &k[6], &k[7], &limit) ||
        !PyArg_ParseTuple(pixel, "dddddddddd;pixel: (fx, skew, cx, fy, cy, offset, sx, sy, crop_x, crop_y)", &q->fx,
                          &q->skew, &q->cx, &q->fy, &q->cy, &q->offset, &q->sx, &q->sy, &q->crop_x, &q->crop_y))
        return 0;
    if (q->kind != PINHOLE && q->kind != RADTAN && q->kind != EQUIDISTANT) {
        PyErr_Format(PyExc_ValueError, "lens: unknown kind %d", q->kind);
        return 0;
    }
    for (int i = 0; i < 8; i++) q->k[i] = (float)k[i];
    q->limit = (float)limit;
    return 1;
}

static PyObject *fuse(PyObject *self, PyObject *args)
{
    enum { N = 11 };
    PyObject *o[N], *lens, *pixel, *result = NULL;
    Py_buffer b[N];
    memset(b, 0, sizeof b);
    Py_ssize_t width;
    double tr, ra, vx, mw, mr, sp, fl, mn;
    int color_looks;
    Projection q;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOOOn(dddddddd)i:fuse", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6],
                          &o[7], &lens, &pixel, &o[8], &o[9], &o[10], &width, &tr, &ra, &vx, &mw, &mr, &sp, &fl, &mn,
                          &color_looks) ||
        !parse_projection(lens, pixel, &q))
        return NULL;
    static const char *names[N] = {"tsdf", "weight", "rgb", "looks", "free", "slots", "corners", "offsets",
                                   "ranges", "weights", "colors"};
    if (get(o[0], &b[0], names[0], "f", -1, 1) < 0) goto done;
    const Py_ssize_t pool = b[0].len / 4;
    if (pool % VOXELS != 0) {
        PyErr_SetString(PyExc_ValueError, "tsdf: not a whole number of blocks");
        goto done;
    }
    if (get(o[1], &b[1], names[1], "f", pool, 1) < 0 || get(o[2], &b[2], names[2], "B", 3 * pool, 1) < 0 ||
        get(o[3], &b[3], names[3], "B", pool, 1) < 0 || get(o[4], &b[4], names[4], "?", pool / VOXELS, 1) < 0 ||
        get(o[5], &b[5], names[5], "i", -1, 0) < 0)
        goto done;
    const Py_ssize_t m = b[5].len / 4;
    if (get(o[6], &b[6], names[6], "f", 3 * m, 0) < 0 || get(o[7], &b[7], names[7], "f", 3 * VOXELS, 0) < 0 ||
        get(o[8], &b[8], names[8], "f", -1, 0) < 0)
        goto done;
    const Py_ssize_t pixels = b[8].len / 4;
    if (width <= 0 || pixels % width != 0) {
        PyErr_SetString(PyExc_ValueError, "ranges: not a whole number of rows of `width`");
        goto done;
    }
    if (get(o[9], &b[9], names[9], "f", pixels, 0) < 0 || get(o[10], &b[10], names[10], "B", 3 * pixels, 0) < 0)
        goto done;
    const int32_t *slots = b[5].buf;
    for (Py_ssize_t s = 0; s < m; s++)
        if (slots[s] < 0 || slots[s] >= pool / VOXELS) {
            PyErr_SetString(PyExc_IndexError, "slots: a slot outside the pools");
            goto done;
        }
    Params p = {(float)tr, (float)ra, (float)vx, (float)mw, (float)mr, (float)sp, (float)fl, (float)mn, color_looks};
    Py_ssize_t updated;
    Py_BEGIN_ALLOW_THREADS
    updated = fuse_all(b[0].buf, b[1].buf, b[2].buf, b[3].buf, b[4].buf, slots, m, b[6].buf, b[7].buf, &q, b[8].buf,
                       b[9].buf, b[10].buf, width, pixels / width, p);
    Py_END_ALLOW_THREADS
    result = PyLong_FromSsize_t(updated);
done:
    for (int k = 0; k < N; k++) PyBuffer_Release(&b[k]);
    return result;
}

static PyObject *project(PyObject *self, PyObject *args)
{
    PyObject *cam_obj, *lens, *pixel;
    Py_buffer cam;
    Projection q;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOO:project", &cam_obj, &lens, &pixel) || !parse_projection(lens, pixel, &q))
        return NULL;
    if (get(cam_obj, &cam, "cam", "f", -1, 0) < 0) return NULL;
    if (cam.len % 12 != 0) {
        PyErr_SetString(PyExc_ValueError, "cam: not a whole number of (x, y, z) float32 points");
        PyBuffer_Release(&cam);
        return NULL;
    }
    const Py_ssize_t n = cam.len / 12;
    PyObject *col = PyByteArray_FromStringAndSize(NULL, 4 * n), *row = PyByteArray_FromStringAndSize(NULL, 4 * n),
             *valid = PyByteArray_FromStringAndSize(NULL, n), *result = NULL;
    if (col != NULL && row != NULL && valid != NULL) {
        const float *x = cam.buf;
        float *c = (float *)PyByteArray_AS_STRING(col), *r = (float *)PyByteArray_AS_STRING(row);
        char *ok = PyByteArray_AS_STRING(valid);
        for (Py_ssize_t i = 0; i < n; i++) ok[i] = (char)project_point(&q, x[3 * i], x[3 * i + 1], x[3 * i + 2], c + i, r + i);
        result = Py_BuildValue("OOO", col, row, valid);
    }
    Py_XDECREF(col);
    Py_XDECREF(row);
    Py_XDECREF(valid);
    PyBuffer_Release(&cam);
    return result;
}

static PyMethodDef methods[] = {
    {"fuse", fuse, METH_VARARGS,
     "fuse(tsdf, weight, rgb, looks, free, slots, corners, offsets, lens, pixel, ranges, weights, colors, width, "
     "(truncation, ratio, voxel_size, max_weight, max_range, spread, free_level, min_weight), color_looks) -> int: "
     "fuse one keyframe into the pool slots `slots` (see _tsdf_fuse.c)."},
    {"project", project, METH_VARARGS,
     "project(cam, lens, pixel) -> (col, row, valid) as bytearrays of float32, float32 and bool: the projection "
     "fuse() makes, of float32 camera-frame points (n, 3)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_tsdf_fuse", .m_size = -1, .m_methods = methods,
};

PyMODINIT_FUNC PyInit__tsdf_fuse(void) { return PyModule_Create(&module); }
