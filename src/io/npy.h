/* NumPy .npy files of one 2-D floating-point array (Lester et al.'s prompt files, KoboldAI's
 * tensor.npy): a strict reader and the writer (format: docs/formats.md, "NumPy .npy"). */
#ifndef SP_IO_NPY_H
#define SP_IO_NPY_H

#include <stddef.h>

#include "softprompt/error.h"

/* Parses len bytes of an .npy file (what names it in messages) into *out ([rows, cols] float32,
 * malloc'd). Accepted: format version 1.0, 2.0 or 3.0; a header that is exactly NumPy's dict of
 * 'descr', 'fortran_order' and 'shape'; descr '<f4' (or '<f2', '<f8', converted); fortran_order
 * False; a 2-D shape of positive sizes; exactly rows x cols values after the header, every one
 * finite. Object arrays (allow_pickle) are refused saying why and how to convert. */
int sp__npy_parse(const unsigned char *buf, size_t len, const char *what, float **out, int *rows,
                  int *cols, sp_error *err);

/* The bytes of a version 1.0 .npy file of x [rows, cols] float32 ('<f4', C order), as
 * numpy.save writes it (the header padded with spaces to a multiple of 64 bytes, ending in '\n').
 * *out is malloc'd ((*len) bytes); -1 when out of memory. */
int sp__npy_write(const float *x, int rows, int cols, unsigned char **out, size_t *len);

#endif
