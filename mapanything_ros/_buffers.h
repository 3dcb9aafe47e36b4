/* Buffer access shared by the compiled modules (_pack_cloud.c, _tsdf_fuse.c, _tsdf_extract.c, _resample.c,
 * _sparse_depth.c, _lens.c): each includes this file, so each keeps its own copy of these static functions. */

#ifndef MAPANYTHING_ROS_BUFFERS_H
#define MAPANYTHING_ROS_BUFFERS_H

#include <Python.h>
#include <string.h>

/* A buffer's struct format without its native byte-order prefix ('@' or '='). */
static const char *native_format(const Py_buffer *view)
{
    const char *f = view->format != NULL ? view->format : "B";
    return f[0] == '@' || f[0] == '=' ? f + 1 : f;
}

/* A C-contiguous (writable when asked) buffer of format fmt with `items` items (-1: any), else -1 and
 * ValueError. 'q' also takes numpy's 'l' where a long has 64 bits; 'n' is intp: whichever of 'i',
 * 'l' or 'q' has the size of a pointer. */
static int get(PyObject *obj, Py_buffer *view, const char *name, const char *fmt, Py_ssize_t items, int writable)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    const char *f = native_format(view);
    int ok = strcmp(f, fmt) == 0 || (fmt[0] == 'q' && strcmp(f, "l") == 0 && sizeof(long) == 8);
    if (fmt[0] == 'n')
        ok = view->itemsize == (Py_ssize_t)sizeof(Py_ssize_t) && f[0] != '\0' && strchr("ilq", f[0]) != NULL &&
             f[1] == '\0';
    if (!ok || (items >= 0 && view->len != items * view->itemsize)) {
        if (items >= 0)
            PyErr_Format(PyExc_ValueError, "%s: expected %zd items of format '%s', got %zd bytes of '%s'", name,
                         items, fmt, view->len, f);
        else
            PyErr_Format(PyExc_ValueError, "%s: expected format '%s', got '%s'", name, fmt, f);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

#endif
