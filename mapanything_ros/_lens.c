/* The inverse of the lens models of geometry/distortion.py: normalised image points to unit rays,
 * per point, in double precision (geometry.distortion.unproject).
 *
 * Built by CMakeLists.txt (colcon, and tools/dev's environment) as mapanything_ros._lens.
 * distortion.py's lens classes run the same steps in numpy when this module is missing;
 * test_geometry_camera.py compares both.
 *
 * unproject(kind, coefficients, limit, knots, table, xd, yd, rays, valid) -> None
 *   kind, coefficients, limit  the lens's spec(): PINHOLE 0, RADTAN 1 ((k1..k6, p1, p2), the valid
 *                 radius squared on the z = 1 plane), EQUIDISTANT 2 ((k1..k4, 0, 0, 0, 0), the valid
 *                 angle from the optical axis in radians)
 *   knots, table  float64 (m) each, m >= 2 (ignored for PINHOLE): the lens's radial map (RADTAN: r ->
 *                 r g(r²); EQUIDISTANT: θ -> θ_d) at increasing knots from 0 to the valid bound,
 *                 as the lens's `table` gives them (so the first guess is numpy's, bit for bit)
 *   xd, yd        float64 (n): distorted normalised coordinates
 *   rays, valid   writable float64 (n * 3), bool (n): the unit rays (NaN where not valid) and
 *                 whether each is valid (PINHOLE: where xd and yd are finite)
 * The steps and their order are those of the numpy lens classes (Pinhole, RadialTangential,
 * Equidistant .unproject):
 *   RADTAN       r from the table's linear interpolation of |(xd, yd)| (at most the table's last
 *                value), then 2-D Newton on the full model from (xd, yd) r / |(xd, yd)| until its
 *                update is below 1e-14 relative (at most 60 steps; a point still moving is not
 *                valid), valid inside the radius (1e-12 relative slack);
 *   EQUIDISTANT  θ by a safeguarded Newton from the table's guess (bisection whenever Newton leaves
 *                the bracket), the ray (sin θ xd / θ_d, sin θ yd / θ_d, cos θ).
 * The pinhole gives numpy's bits, and so does the equidistant inverse where numpy's sin and cos are
 * the C library's (each point's iteration is its own; numpy's SIMD sin and cos can be an ulp apart
 * on some CPUs). numpy's radial-tangential Newton lets points that have converged take further
 * steps for as long as fewer than half of its batch have (steps at the rounding floor), here each
 * point stops when it converges: the rays agree to a few units in the last place, and a point at
 * the edge of the valid field, where Newton creeps, can exhaust numpy's 60 steps in a batch and
 * not here (numpy on that point alone agrees with this code: test_geometry_camera.py).
 *
 * Why compiled code: a camera's rays at every native pixel (made once per camera when its first
 * outputs are made, for the native depth's stencil) take numpy dozens of passes over every pixel
 * per Newton step: 1.2-2.7 s for a 1920x1200 plumb_bob camera at start-up, 0.3 s here
 * (bench_geometry part 1; docs/performance.md#geometry).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_buffers.h"

#include <math.h>
#include <stdint.h>

enum { PINHOLE = 0, RADTAN = 1, EQUIDISTANT = 2 }; /* distortion.py's lens kinds */

#define NEWTON_ITERS 60 /* distortion._NEWTON_ITERS */
#define STEP 1e-14      /* distortion._STEP */

/* numpy's maximum: NaN when either is. */
static double maximum(double a, double b)
{
    if (isnan(a)) return a;
    if (isnan(b)) return b;
    return a > b ? a : b;
}

/* The table's interpolated inverse at target t (numpy's searchsorted 'left', clipped to [1, m - 1],
 * then lo + (t - f_lo) / (f_hi - f_lo) (hi - lo)); the bracket's knots in *lo, *hi. */
static double guess(const double *knots, const double *table, Py_ssize_t m, double t, double *lo, double *hi)
{
    Py_ssize_t a = 0, b = m; /* the first index whose value is >= t (neighbouring pixels' searches
                                 * take the same branches: faster here than a branch-free search) */
    while (a < b) {
        const Py_ssize_t mid = a + (b - a) / 2;
        if (table[mid] < t)
            a = mid + 1;
        else
            b = mid;
    }
    const Py_ssize_t i = a < 1 ? 1 : (a > m - 1 ? m - 1 : a);
    *lo = knots[i - 1];
    *hi = knots[i];
    return *lo + (t - table[i - 1]) / (table[i] - table[i - 1]) * (*hi - *lo);
}

/* The table's valid targets: finite, >= 0 and at most its last value. */
static int in_table(const double *table, Py_ssize_t m, double t) { return isfinite(t) && t >= 0 && t <= table[m - 1]; }

/* The unit ray of the z = 1 plane's point (x, y) where ok, else NaN; *valid = ok. */
static void plane_ray(double x, double y, int ok, double *ray, uint8_t *valid)
{
    *valid = (uint8_t)ok;
    if (!ok) {
        ray[0] = ray[1] = ray[2] = NAN;
        return;
    }
    const double norm = sqrt((x * x + y * y) + 1.0); /* np.linalg.norm's sum of (x, y, 1) */
    ray[0] = x / norm;
    ray[1] = y / norm;
    ray[2] = 1.0 / norm;
}

typedef struct {
    double k1, k2, k3, k4, k5, k6, p1, p2;
} Radtan;

/* g(s), dg/ds at s = r² (RadialTangential._radial). */
static void radial(const Radtan *c, double s, double *g, double *dg)
{
    const double num = 1 + s * (c->k1 + s * (c->k2 + s * c->k3));
    const double den = 1 + s * (c->k4 + s * (c->k5 + s * c->k6));
    const double dnum = c->k1 + s * (2 * c->k2 + s * 3 * c->k3);
    const double dden = c->k4 + s * (2 * c->k5 + s * 3 * c->k6);
    *g = num / den;
    *dg = (dnum * den - num * dden) / (den * den);
}

static void radtan(const Radtan *c, double radius2, const double *knots, const double *table, Py_ssize_t m,
                   double xd, double yd, double *ray, uint8_t *valid)
{
    const double rd = hypot(xd, yd);
    const double t = isnan(rd) || rd > table[m - 1] ? (isnan(rd) ? rd : table[m - 1]) : rd; /* np.minimum */
    int ok = in_table(table, m, t);
    double lo, hi;
    const double r = ok ? guess(knots, table, m, t, &lo, &hi) : NAN;
    const double ratio = rd > 0 ? r / rd : 1.0;
    double x = xd * ratio, y = yd * ratio;
    if (ok) { /* RadialTangential._newton */
        const double p1 = c->p1, p2 = c->p2;
        int done = 0;
        for (int it = 0; it < NEWTON_ITERS && !done; it++) {
            const double s = x * x + y * y;
            double g, dg;
            radial(c, s, &g, &dg);
            const double ex = (x * g + 2 * p1 * x * y + p2 * (s + 2 * x * x)) - xd;
            const double ey = (y * g + p1 * (s + 2 * y * y) + 2 * p2 * x * y) - yd;
            const double j00 = g + 2 * x * x * dg + 2 * p1 * y + 6 * p2 * x;
            const double j11 = g + 2 * y * y * dg + 6 * p1 * y + 2 * p2 * x;
            const double j01 = 2 * x * y * dg + 2 * p1 * x + 2 * p2 * y;
            const double det = j00 * j11 - j01 * j01;
            const double dx = (j11 * ex - j01 * ey) / det, dy = (j00 * ey - j01 * ex) / det;
            x = x - dx;
            y = y - dy;
            /* hypot only where it can exceed 1 (libm's is slow; the same bound either way) */
            const double reach = x * x + y * y < 0.5 ? 1.0 : maximum(hypot(x, y), 1.0);
            done = !(maximum(fabs(dx), fabs(dy)) > STEP * reach);
        }
        ok = done && x * x + y * y <= radius2 * (1 + 1e-12);
    }
    plane_ray(x, y, ok, ray, valid);
}

/* θ_d(θ) and its derivative (Equidistant._theta_map). */
static void theta_map(const double *k, double t, double *f, double *df)
{
    const double t2 = t * t;
    *f = t * (1 + t2 * (k[0] + t2 * (k[1] + t2 * (k[2] + t2 * k[3]))));
    *df = 1 + t2 * (3 * k[0] + t2 * (5 * k[1] + t2 * (7 * k[2] + t2 * 9 * k[3])));
}

static void equidistant(const double *k, double max_angle, const double *knots, const double *table, Py_ssize_t m,
                        double xd, double yd, double *ray, uint8_t *valid)
{
    const double theta_d = hypot(xd, yd);
    int ok = in_table(table, m, theta_d);
    double theta = NAN;
    if (ok) { /* distortion._invert_monotone with polish */
        double lo, hi;
        double x = guess(knots, table, m, theta_d, &lo, &hi);
        int done = 0;
        for (int it = 0; it < NEWTON_ITERS && !done; it++) {
            double f, df;
            theta_map(k, x, &f, &df);
            const double res = f - theta_d;
            if (res < 0) lo = x;
            if (res > 0) hi = x;
            double step = x - res / df;
            if (!(step >= lo && step <= hi)) step = 0.5 * (lo + hi);
            done = !(fabs(step - x) > STEP * maximum(x, 1.0));
            x = step;
        }
        ok = done && x < max_angle;
        theta = x;
    }
    *valid = (uint8_t)ok;
    if (!ok) {
        ray[0] = ray[1] = ray[2] = NAN;
        return;
    }
    const double scale = theta_d > 0 ? sin(theta) / theta_d : 1.0;
    ray[0] = xd * scale;
    ray[1] = yd * scale;
    ray[2] = cos(theta);
}

static PyObject *unproject(PyObject *self, PyObject *args)
{
    enum { N = 6 };
    PyObject *obj[N];
    Py_buffer b[N] = {{0}};
    int kind;
    double k[8], limit;
    (void)self;
    if (!PyArg_ParseTuple(args, "i(dddddddd)dOOOOOO:unproject", &kind, &k[0], &k[1], &k[2], &k[3], &k[4], &k[5],
                          &k[6], &k[7], &limit, &obj[0], &obj[1], &obj[2], &obj[3], &obj[4], &obj[5]))
        return NULL;
    static const char *names[N] = {"knots", "table", "xd", "yd", "rays", "valid"};
    static const char *formats[N] = {"d", "d", "d", "d", "d", "?"};
    PyObject *result = NULL;
    for (int i = 0; i < N; i++)
        if (get(obj[i], &b[i], names[i], formats[i], -1, i >= 4) < 0) goto done;
    const Py_ssize_t m = b[0].len / 8, n = b[2].len / 8;
    if (kind != PINHOLE && kind != RADTAN && kind != EQUIDISTANT) {
        PyErr_Format(PyExc_ValueError, "kind: unknown lens kind %d", kind);
        goto done;
    }
    if (b[1].len != b[0].len || (kind != PINHOLE && m < 2)) {
        PyErr_SetString(PyExc_ValueError, "knots, table: expected the same length, at least 2");
        goto done;
    }
    if (b[3].len != b[2].len || b[4].len / 24 != n || b[4].len % 24 != 0 || b[5].len != n) {
        PyErr_Format(PyExc_ValueError, "yd, rays, valid: expected %zd, %zd and %zd items", n, 3 * n, n);
        goto done;
    }
    const double *knots = b[0].buf, *table = b[1].buf, *xd = b[2].buf, *yd = b[3].buf;
    double *rays = b[4].buf;
    uint8_t *valid = b[5].buf;
    const Radtan c = {k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7]};
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        if (kind == RADTAN)
            radtan(&c, limit, knots, table, m, xd[i], yd[i], rays + 3 * i, valid + i);
        else if (kind == EQUIDISTANT)
            equidistant(k, limit, knots, table, m, xd[i], yd[i], rays + 3 * i, valid + i);
        else
            plane_ray(xd[i], yd[i], isfinite(xd[i]) && isfinite(yd[i]), rays + 3 * i, valid + i);
    }
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done: /* PyBuffer_Release ignores a view that holds no object */
    for (int i = 0; i < N; i++) PyBuffer_Release(&b[i]);
    return result;
}

static PyMethodDef methods[] = {
    {"unproject", unproject, METH_VARARGS,
     "unproject(kind, coefficients, limit, knots, table, xd, yd, rays, valid) -> None: the unit rays of "
     "normalised image points through a lens (see _lens.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_lens", .m_size = -1, .m_methods = methods,
};

PyMODINIT_FUNC PyInit__lens(void) { return PyModule_Create(&module); }
