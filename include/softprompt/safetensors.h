/* safetensors files: validated, memory-mapped reading and atomic writing.
 *
 * Layout: u64 little-endian header length N, N bytes of JSON
 *   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__":
 * {..}} then the data buffer; offsets are relative to the buffer start. Opening a file validates
 * everything a reader could trip on (lengths, JSON, dtypes, shapes, offsets in range and not
 * overlapping, byte size = elements x dtype size) so that later code can trust it. */
#ifndef SOFTPROMPT_SAFETENSORS_H
#define SOFTPROMPT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "softprompt/dtype.h"
#include "softprompt/error.h"

#define SP_ST_MAX_DIMS 8
/* Refuse headers larger than this before allocating (HF's own limit is 100 MB). */
#define SP_ST_MAX_HEADER_BYTES (100u * 1024u * 1024u)

typedef struct sp_st_tensor {
    char *name;
    sp_dtype dtype;
    int ndim;
    int64_t shape[SP_ST_MAX_DIMS];
    int64_t numel;
    const void *data; /* points into the read-only mapping; may be unaligned */
    size_t nbytes;
} sp_st_tensor;

typedef struct sp_st_file {
    char *path;
    void *map; /* whole file, PROT_READ, MAP_SHARED: ranks on a node share the pages */
    size_t map_len;
    int n_tensors;
    sp_st_tensor *tensors; /* in header order */
    int n_meta;
    char **meta_kv; /* [2 * n_meta] "__metadata__" keys and values, alternating */
} sp_st_file;

int sp_st_open(sp_st_file *f, const char *path, sp_error *err);
void sp_st_close(sp_st_file *f);
const sp_st_tensor *sp_st_find(const sp_st_file *f, const char *name);
/* Value of a "__metadata__" key, or NULL. */
const char *sp_st_metadata(const sp_st_file *f, const char *key);

/* One tensor to write; data holds numel x dtype-size bytes in the tensor's dtype. */
typedef struct sp_st_out {
    const char *name;
    sp_dtype dtype;
    int ndim;
    int64_t shape[SP_ST_MAX_DIMS];
    const void *data;
} sp_st_out;

/* Writes path atomically (temporary name in the same directory, fsync, rename, fsync of the
 * directory). metadata: NULL or n_meta key/value string pairs for "__metadata__". */
int sp_st_write(const char *path, const sp_st_out *tensors, int n, const char *const *meta_kv,
                int n_meta, sp_error *err);

/* Streaming form of sp_st_write for files larger than one wants in memory at once: open with the
 * tensor list (their data pointers are ignored), then put each tensor's bytes in the same order,
 * then commit (fsync + rename). Any failure, or abort, removes the temporary file and leaves
 * path untouched, except an I/O error syncing the directory after the rename (path is then the
 * new file, and the error says so); after a failed put or commit the writer is already freed.
 * Tensors are packed back to back in the given order after a header padded to 8 bytes, as Hugging
 * Face does. */
typedef struct sp_st_writer sp_st_writer;
sp_st_writer *sp_st_writer_open(const char *path, const sp_st_out *tensors, int n,
                                const char *const *meta_kv, int n_meta, sp_error *err);
int sp_st_writer_put(sp_st_writer *w, const void *data, size_t nbytes, sp_error *err);
int sp_st_writer_commit(sp_st_writer *w, sp_error *err);
void sp_st_writer_abort(sp_st_writer *w);

#endif
