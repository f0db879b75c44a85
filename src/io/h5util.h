/* HDF5 helpers shared by the dataset (src/data/dataset_*.c) and checkpoint
 * (src/train/checkpoint_*.c) readers and writers. */
#ifndef SP_IO_H5UTIL_H
#define SP_IO_H5UTIL_H

#include <stddef.h>

#include <hdf5.h>

#include "softprompt/error.h"

/* Turns HDF5's automatic error printing off (the library never prints). */
void sp__h5_quiet(void);

/* A creation property list of class cls (H5P_FILE_CREATE, H5P_GROUP_CREATE, H5P_DATASET_CREATE)
 * that records no object times: HDF5 otherwise stamps every object header with its creation and
 * modification time, so the same contents written twice would differ in a few bytes. Every
 * object softprompt writes is created with one, so its files are byte-reproducible. */
hid_t sp__h5_untimed(hid_t cls);

/* Checks that path can be opened for reading before HDF5 tries (whose own message for an
 * unreadable file is "not an HDF5 file"): "cannot open: <strerror>" (e.g. Permission denied),
 * "is a directory", "not a regular file", "empty file". 0 or -1. */
int sp__h5_precheck(const char *path, sp_error *err);

/* Like sp_fail, and appends HDF5's innermost error description when there is one; clears
 * HDF5's error stack. Returns -1. A failed metadata checksum is reported as what it means,
 * "(metadata checksum mismatch: the file is damaged)", and a failed inflate as damaged
 * compressed data. HDF5 clears its error stack at the start of every API call, so call this
 * right after the failing call, before any cleanup. */
int sp__h5_fail(sp_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Closes an HDF5 identifier of any kind if it is valid (>= 0). */
void sp__h5_close(hid_t id);

/* Refuses dataset d when its declared size exceeds what the bytes the file stores for it can
 * hold at deflate's best ratio (1032:1): unwritten chunks or a doctored dataspace would
 * otherwise make a reader allocate what a few hundred bytes of header claim. */
#define SP_H5_MAX_DEFLATE_RATIO 1032
int sp__h5_check_storage(hid_t d, const char *path, const char *name, sp_error *err);

/* Fixed-length UTF-8 string type of size bytes (>= 1) with the given padding; close it with
 * H5Tclose. Fixed, not variable-length, strings: variable-length data live in HDF5's global
 * heap, which has no checksum, and libhdf5 1.10 can crash on a damaged one; fixed strings sit in
 * the checksummed object header. */
hid_t sp__h5_utf8_type(size_t size, H5T_str_t pad);

/* Creates scalar attribute name of loc holding *value (mem_type in memory, file_type in the
 * file). Failure: "<path>: cannot write attribute \"<name>\"" and -1. */
int sp__h5_write_attr(hid_t loc, const char *name, hid_t file_type, hid_t mem_type,
                      const void *value, const char *path, sp_error *err);

/* Opens root attribute name of file f, which must hold a single value. Returns the attribute;
 * -2 when there is no such attribute (err untouched: the caller says what is missing); or -1
 * with a message naming path. */
hid_t sp__h5_open_root_attr(hid_t f, const char *name, const char *path, sp_error *err);

/* The root attribute "format" of file f as a string into out (cap bytes; "" when there is no
 * such attribute, or it is not a string). -1 with a message naming path when HDF5 cannot look
 * (e.g. a damaged root object header), so that damage is never taken for a missing attribute. */
int sp__h5_root_format(hid_t f, const char *path, char *out, size_t cap, sp_error *err);

#endif
