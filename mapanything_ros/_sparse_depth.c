/* Sparse depth from a point sweep (geometry/depth.py): each point moved by the sweep's source pose at
 * its own time, and the points projected into a camera's depth map, one pass each.
 *
 * Built by CMakeLists.txt (colcon, and tools/dev's environment) as mapanything_ros._sparse_depth.
 * depth.py runs the same steps in numpy when this module is missing; test_geometry_depth_fast.py
 * checks that both give the same bits.
 *
 * compensate(points, order, starts, rows, x, y, z) -> None
 *   points        float64 (n * 3): the points in the source frame
 *   order         None, or intp (n): the order to read them in (depth._time_groups)
 *   starts        intp (g): where each run of equal times starts in that order (ascending, the first 0)
 *   rows          float64 (3 * 4 * g): the top three rows of world_from_source at each run's time,
 *                 entry (i, j) of run k at (i * 4 + j) * g + k (SourceMotion.rows)
 *   x, y, z       writable float64 (n): the world coordinates, in that order
 * Coordinate i is (x·m[i,0] + z·m[i,2]) + y·m[i,1] + m[i,3], depth._row's order.
 *
 * project(x, y, z, m, lens, pixel, resized, width, height, depth) -> None
 *   x, y, z       float64 (n): the points, in the frame m maps to the camera's
 *   m             12 floats: the top three rows of cam_from_that_frame, row-major
 *   lens          (kind, (8 coefficients), limit): distortion.<lens>.spec()
 *   pixel         (fx, skew, cx, fy, cy, grid offset, sx, sy, crop x, crop y): K, then the resize
 *                 to the output (geometry.Resize.to_output), applied when `resized` is true
 *   depth         writable float32 (height * width): the z-depth map, 0 where no point falls
 * depth._project's steps in its order and precision: z first (points with z <= 0 or NaN skipped),
 * then x and y, the lens model (distortion.py) in double, K, the grid offset, the resize; the point
 * goes to the pixel floor(u + 0.5), floor(v + 0.5) when inside; the nearest (float32 z) wins. The
 * same bits as numpy for pinhole and radial-tangential lenses; the fisheye's angle comes from
 * libm's atan2, which numpy's SIMD arctan2 (e.g. with AVX-512) may miss by an ulp: a point can then
 * land in the neighbouring pixel only where its projection lies within about 1e-12 px of a pixel's
 * edge, or be kept or dropped differently within an ulp of the lens's max_angle.
 *
 * Why compiled code: the numpy steps make about twenty passes over the sweep (a 100k-point sweep
 * took 2.8 ms a camera and 5-8 ms a sweep's compensation in a four-camera window; its per-point
 * transforms alone are 9.6 MB; docs/performance.md#rigs). The GIL is released while they run.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_buffers.h"

#include <math.h>
#include <string.h>

enum { PINHOLE = 0, RADTAN = 1, EQUIDISTANT = 2 }; /* distortion.py's spec() kinds */

/* The camera's projection: the lens (distortion.py's spec()), K, grid offset and resize
 * (geometry.ModelPixels.projection). */
typedef struct {
    int kind;
    double k[8];  /* RADTAN: k1..k6, p1, p2; EQUIDISTANT: k1..k4 */
    double limit; /* RADTAN: max_radius²; EQUIDISTANT: max_angle */
    double fx, skew, cx, fy, cy, offset, sx, sy, crop_x, crop_y;
    int resized;
} Projection;

/* The buffers were checked before the GIL was released; the bounds are kept here as well, so that
 * another thread changing starts or order meanwhile cannot make this write outside x, y, z. */
static void compensate(const double *p, const Py_ssize_t *order, Py_ssize_t n, const Py_ssize_t *starts,
                       Py_ssize_t g, const double *rows, double *x, double *y, double *z)
{
    for (Py_ssize_t k = 0; k < g; k++) {
        const Py_ssize_t begin = starts[k] < 0 ? 0 : starts[k], next = k + 1 < g ? starts[k + 1] : n;
        const Py_ssize_t end = next > n ? n : next;
        double m[12];
        for (int e = 0; e < 12; e++) m[e] = rows[e * g + k];
        for (Py_ssize_t s = begin; s < end; s++) {
            const Py_ssize_t at = order != NULL ? order[s] : s;
            if ((size_t)at >= (size_t)n) continue;
            const double *q = p + 3 * at;
            x[s] = (q[0] * m[0] + q[2] * m[2]) + q[1] * m[1] + m[3];
            y[s] = (q[0] * m[4] + q[2] * m[6]) + q[1] * m[5] + m[7];
            z[s] = (q[0] * m[8] + q[2] * m[10]) + q[1] * m[9] + m[11];
        }
    }
}

/* Normalised image coordinates (xd, yd) of a camera-frame point (project() passes only points with
 * z > 0), and whether the lens sees it: distortion.py's project(). */
static int distort(const Projection *lens, double x, double y, double z, double *xd, double *yd)
{
    const double *k = lens->k;
    if (lens->kind == EQUIDISTANT) {
        const double rho = hypot(x, y), theta = atan2(rho, z), t2 = theta * theta;
        const int ok = isfinite(x) && isfinite(y) && isfinite(z) && theta < lens->limit && (rho > 0 || z > 0);
        const double scale = rho > 0 ? theta * (1 + t2 * (k[0] + t2 * (k[1] + t2 * (k[2] + t2 * k[3])))) / rho : 0.0;
        *xd = x * scale;
        *yd = y * scale;
        return ok;
    }
    const double xn = x / z, yn = y / z;
    if (lens->kind == PINHOLE) {
        *xd = xn;
        *yd = yn;
        return z > 0 && isfinite(x) && isfinite(y) && isfinite(z);
    }
    const double s = xn * xn + yn * yn, p1 = k[6], p2 = k[7];
    const int ok = z > 0 && isfinite(xn) && isfinite(yn) && s <= lens->limit;
    const double g = (1 + s * (k[0] + s * (k[1] + s * k[2]))) / (1 + s * (k[3] + s * (k[4] + s * k[5])));
    *xd = xn * g + 2 * p1 * xn * yn + p2 * (s + 2 * xn * xn);
    *yd = yn * g + p1 * (s + 2 * yn * yn) + 2 * p2 * xn * yn;
    return ok;
}

static void project(const double *px, const double *py, const double *pz, Py_ssize_t n, const double *m,
                    const Projection *lens, Py_ssize_t w, Py_ssize_t h, float *depth)
{
    const Py_ssize_t size = w * h;
    for (Py_ssize_t i = 0; i < size; i++) depth[i] = NAN;
    for (Py_ssize_t i = 0; i < n; i++) {
        const double x = px[i], y = py[i], z = pz[i];
        const double cz = (x * m[8] + z * m[10]) + y * m[9] + m[11];
        if (!(cz > 0)) continue;
        const double cx = (x * m[0] + z * m[2]) + y * m[1] + m[3], cy = (x * m[4] + z * m[6]) + y * m[5] + m[7];
        double xd, yd;
        if (!distort(lens, cx, cy, cz, &xd, &yd)) continue;
        double u = lens->fx * xd + lens->skew * yd + lens->cx, v = lens->fy * yd + lens->cy;
        if (!isfinite(u) || !isfinite(v)) continue;
        if (lens->offset != 0) {
            u = u - lens->offset;
            v = v - lens->offset;
        }
        if (lens->resized) {
            u = (u + 0.5) * lens->sx - 0.5 - lens->crop_x;
            v = (v + 0.5) * lens->sy - 0.5 - lens->crop_y;
        }
        u = u + 0.5; /* pixel = floor(u + 0.5) */
        v = v + 0.5;
        if (!(u >= 0 && u < (double)w && v >= 0 && v < (double)h)) continue;
        float *d = depth + (Py_ssize_t)v * w + (Py_ssize_t)u;
        const float f = (float)cz;
        if (!(*d <= f)) *d = f; /* numpy's fmin: NaN (none yet) loses */
    }
    for (Py_ssize_t i = 0; i < size; i++)
        if (depth[i] != depth[i]) depth[i] = 0.0f;
}

static PyObject *compensate_py(PyObject *self, PyObject *args)
{
    enum { N = 7 };
    PyObject *o[N];
    Py_buffer b[N];
    (void)self;
    memset(b, 0, sizeof b);
    if (!PyArg_ParseTuple(args, "OOOOOOO:compensate", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6])) return NULL;
    const int ordered = o[1] != Py_None;
    int ok = get(o[0], &b[0], "points", "d", -1, 0) == 0 && get(o[2], &b[2], "starts", "n", -1, 0) == 0;
    if (ok && b[0].len % 24 != 0) {
        PyErr_SetString(PyExc_ValueError, "points: expected n * 3 float64 coordinates");
        ok = 0;
    }
    const Py_ssize_t n = ok ? b[0].len / 24 : 0, g = ok ? b[2].len / (Py_ssize_t)sizeof(Py_ssize_t) : 0;
    ok = ok && (!ordered || get(o[1], &b[1], "order", "n", n, 0) == 0) &&
         get(o[3], &b[3], "rows", "d", 12 * g, 0) == 0 && get(o[4], &b[4], "x", "d", n, 1) == 0 &&
         get(o[5], &b[5], "y", "d", n, 1) == 0 && get(o[6], &b[6], "z", "d", n, 1) == 0;
    if (ok) { /* starts must cut [0, n) into runs; an order must be a permutation's indices */
        const Py_ssize_t *s = b[2].buf, *order = ordered ? b[1].buf : NULL;
        int fine = (g == 0) == (n == 0) && (g == 0 || s[0] == 0);
        for (Py_ssize_t k = 1; k < g && fine; k++) fine = s[k] > s[k - 1] && s[k] < n;
        for (Py_ssize_t k = 0; order != NULL && k < n && fine; k++) fine = order[k] >= 0 && order[k] < n;
        if (!fine) {
            PyErr_SetString(PyExc_ValueError, "starts must begin at 0 and rise within the points; order index them");
            ok = 0;
        }
    }
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        compensate(b[0].buf, ordered ? b[1].buf : NULL, n, b[2].buf, g, b[3].buf, b[4].buf, b[5].buf, b[6].buf);
        Py_END_ALLOW_THREADS
    }
    for (int i = 0; i < N; i++)
        if (b[i].obj != NULL) PyBuffer_Release(&b[i]);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static PyObject *project_py(PyObject *self, PyObject *args)
{
    enum { N = 3 };
    PyObject *o[N], *depth;
    Py_buffer b[N], out;
    Projection lens;
    double m[12];
    Py_ssize_t w, h;
    (void)self;
    memset(b, 0, sizeof b);
    memset(&out, 0, sizeof out);
    memset(&lens, 0, sizeof lens);
    if (!PyArg_ParseTuple(args, "OOO(dddddddddddd)(i(dddddddd)d)(dddddddddd)pnnO:project", &o[0], &o[1], &o[2],
                          &m[0], &m[1], &m[2], &m[3], &m[4], &m[5], &m[6], &m[7], &m[8], &m[9], &m[10], &m[11],
                          &lens.kind, &lens.k[0], &lens.k[1], &lens.k[2], &lens.k[3], &lens.k[4], &lens.k[5],
                          &lens.k[6], &lens.k[7], &lens.limit, &lens.fx, &lens.skew, &lens.cx, &lens.fy, &lens.cy,
                          &lens.offset, &lens.sx, &lens.sy, &lens.crop_x, &lens.crop_y, &lens.resized, &w, &h,
                          &depth))
        return NULL;
    if (lens.kind < PINHOLE || lens.kind > EQUIDISTANT || w < 0 || h < 0 || (h > 0 && w > PY_SSIZE_T_MAX / 4 / h)) {
        PyErr_SetString(PyExc_ValueError, "project: unknown lens kind, or a size that is negative or too large");
        return NULL;
    }
    int ok = get(o[0], &b[0], "x", "d", -1, 0) == 0;
    const Py_ssize_t n = ok ? b[0].len / 8 : 0;
    ok = ok && get(o[1], &b[1], "y", "d", n, 0) == 0 && get(o[2], &b[2], "z", "d", n, 0) == 0 &&
         get(depth, &out, "depth", "f", w * h, 1) == 0;
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        project(b[0].buf, b[1].buf, b[2].buf, n, m, &lens, w, h, out.buf);
        Py_END_ALLOW_THREADS
    }
    for (int i = 0; i < N; i++)
        if (b[i].obj != NULL) PyBuffer_Release(&b[i]);
    if (out.obj != NULL) PyBuffer_Release(&out);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"compensate", compensate_py, METH_VARARGS,
     "compensate(points, order, starts, rows, x, y, z) -> None: world coordinates of a sweep's points, each "
     "moved by its run's pose (see _sparse_depth.c)."},
    {"project", project_py, METH_VARARGS,
     "project(x, y, z, m, lens, pixel, resized, width, height, depth) -> None: the nearest z-depth of points in each "
     "pixel (see _sparse_depth.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_sparse_depth", .m_size = -1, .m_methods = methods,
};

PyMODINIT_FUNC PyInit__sparse_depth(void) { return PyModule_Create(&module); }
