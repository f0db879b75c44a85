/* HDF5 dataset writer: growing 1-D columns appended chunk by chunk into a temporary file that
 * is renamed over the final name only when everything has been written and synced. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/dataset_internal.h"
#include "io/fileutil.h"
#include "util/vec.h"

/* Buffered elements that trigger a flush of whole chunks (1 MiB of int32). */
#define FLUSH_ELEMS (64 * SP_DS_CHUNK)

/* One growing 1-D dataset and the elements not yet written to it. */
typedef struct column {
    const char *name; /* "/tokens", ... */
    hid_t dset;
    hid_t mem_type;
    size_t elem; /* bytes per element */
    char *buf;
    size_t n_buf, cap;
    hsize_t n_file; /* elements already in the file */
} column;

enum { C_TOKENS, C_OFFSETS, C_TOFFSETS, C_TPOS, C_TIDS, C_LABELS, N_COLUMNS };

struct sp_dataset_writer {
    char *final_path, *tmp_path;
    hid_t file;
    column col[N_COLUMNS];
    sp_dataset_meta meta; /* verbalizer copied into verbalizer_copy; strings not kept */
    int32_t *verbalizer_copy;
    int64_t n_examples, n_tokens, n_targets;
};

/* ------------------------------------------------------------------------------------------ */
/* Attributes and small datasets                                                              */
/* ------------------------------------------------------------------------------------------ */

/* Strings are fixed-length and NUL-terminated (see sp__h5_utf8_type). */
static int write_str_attr(hid_t file, const char *name, const char *value, const char *path,
                          sp_error *err) {
    const char *v = value ? value : "";
    hid_t t = sp__h5_utf8_type(strlen(v) + 1, H5T_STR_NULLTERM);
    int rc = sp__h5_write_attr(file, name, t, t, v, path, err);
    H5Tclose(t);
    return rc;
}

static int write_i64_attr(hid_t file, const char *name, int64_t value, const char *path,
                          sp_error *err) {
    return sp__h5_write_attr(file, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value, path, err);
}

/* Fixed-size 1-D dataset [n], compact when small (stored in the object header). */
static int write_small(hid_t file, const char *name, hid_t file_type, hid_t mem_type, size_t n,
                       const void *data, const char *path, sp_error *err) {
    hsize_t dim = n;
    hid_t space = H5Screate_simple(1, &dim, NULL);
    hid_t dcpl = sp__h5_untimed(H5P_DATASET_CREATE);
    if (n * H5Tget_size(file_type) <= SP_DS_COMPACT_MAX) H5Pset_layout(dcpl, H5D_COMPACT);
    hid_t d = H5Dcreate2(file, name, file_type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    herr_t st = d < 0 ? -1 : H5Dwrite(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    sp__h5_close(d), sp__h5_close(dcpl), sp__h5_close(space);
    if (st < 0) return sp__h5_fail(err, "%s: cannot write dataset \"%s\"", path, name);
    return 0;
}

static int write_header_attrs(sp_dataset_writer *w, sp_error *err) {
    const sp_dataset_meta *m = &w->meta;
    hid_t f = w->file;
    const char *p = w->final_path;
    uint64_t seed = m->seed;
    if (write_str_attr(f, "format", SP_DATASET_FORMAT, p, err) ||
        write_i64_attr(f, "format_version", SP_DATASET_VERSION, p, err) ||
        write_str_attr(f, "task", sp_task_name(m->task), p, err) ||
        write_i64_attr(f, "n_soft", m->n_soft, p, err) ||
        write_i64_attr(f, "n_classes", m->n_classes, p, err) ||
        write_i64_attr(f, "max_length", m->max_length, p, err) ||
        sp__h5_write_attr(f, "seed", H5T_STD_U64LE, H5T_NATIVE_UINT64, &seed, p, err) ||
        write_str_attr(f, "tokenizer_hash", m->tokenizer_hash, p, err) ||
        write_str_attr(f, "template", m->template_spec, p, err) ||
        write_str_attr(f, "target", m->target_spec, p, err) ||
        write_str_attr(f, "verbalizer", m->verbalizer_spec, p, err) ||
        write_str_attr(f, "source", m->source, p, err) ||
        write_str_attr(f, "split", m->split, p, err) ||
        write_str_attr(f, "created_by", m->created_by, p, err))
        return -1;
    return 0;
}

static int write_classes(sp_dataset_writer *w, sp_error *err) {
    const sp_dataset_meta *m = &w->meta;
    size_t n = (size_t)m->n_classes;
    if (write_small(w->file, "verbalizer", H5T_STD_I32LE, H5T_NATIVE_INT32, n, m->verbalizer,
                    w->final_path, err) != 0)
        return -1;
    /* [n][width] NUL-padded names, width = longest + 1. */
    size_t width = 1;
    for (size_t i = 0; i < n; i++)
        if (m->class_names[i] && strlen(m->class_names[i]) + 1 > width)
            width = strlen(m->class_names[i]) + 1;
    char *names = calloc(n, width);
    if (!names) return sp_fail(err, "%s: out of memory", w->final_path);
    for (size_t i = 0; i < n; i++)
        if (m->class_names[i])
            memcpy(names + i * width, m->class_names[i], strlen(m->class_names[i]));
    hid_t t = sp__h5_utf8_type(width, H5T_STR_NULLTERM);
    int rc = write_small(w->file, "class_names", t, t, n, names, w->final_path, err);
    H5Tclose(t);
    free(names);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Columns                                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* Creates an empty extendible 1-D dataset, chunked, shuffled and deflated. */
static int column_create(sp_dataset_writer *w, column *c, const char *name, hid_t file_type,
                         hid_t mem_type, sp_error *err) {
    c->name = name;
    c->mem_type = mem_type;
    c->elem = H5Tget_size(mem_type);
    hsize_t dim = 0, max = H5S_UNLIMITED, chunk = SP_DS_CHUNK;
    hid_t space = H5Screate_simple(1, &dim, &max);
    hid_t dcpl = sp__h5_untimed(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, &chunk);
    H5Pset_shuffle(dcpl);    /* byte planes: the high bytes of ids/offsets are near-constant */
    H5Pset_deflate(dcpl, 4); /* most of the gain of level 9 at a fraction of the time */
    H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER); /* every element is written */
    c->dset = H5Dcreate2(w->file, name, file_type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    sp__h5_close(dcpl), sp__h5_close(space);
    if (c->dset < 0)
        return sp__h5_fail(err, "%s: cannot create dataset \"%s\"", w->final_path, name);
    return 0;
}

/* Writes the first n buffered elements at the end of the dataset and drops them. */
static int column_write(column *c, size_t n, const char *path, sp_error *err) {
    if (n == 0) return 0;
    hsize_t start = c->n_file, count = n, total = c->n_file + n;
    hid_t fspace = -1, mspace = -1;
    herr_t st = H5Dset_extent(c->dset, &total);
    if (st >= 0) fspace = H5Dget_space(c->dset);
    if (fspace >= 0) st = H5Sselect_hyperslab(fspace, H5S_SELECT_SET, &start, NULL, &count, NULL);
    if (fspace >= 0 && st >= 0) mspace = H5Screate_simple(1, &count, NULL);
    st = mspace < 0 ? -1 : H5Dwrite(c->dset, c->mem_type, mspace, fspace, H5P_DEFAULT, c->buf);
    sp__h5_close(mspace), sp__h5_close(fspace);
    if (st < 0) return sp__h5_fail(err, "%s: cannot write dataset \"%s\"", path, c->name);
    c->n_file = total;
    c->n_buf -= n;
    memmove(c->buf, c->buf + n * c->elem, c->n_buf * c->elem);
    return 0;
}

/* Buffers n elements; once enough are buffered, writes all whole chunks (so every chunk is
 * compressed once; only the final, partial chunk is written at close). */
static int column_append(column *c, const void *data, size_t n, const char *path, sp_error *err) {
    if (c->n_buf + n > c->cap) {
        size_t cap = sp__vec_cap(c->cap, c->n_buf + n, SP_DS_CHUNK, c->elem);
        if (cap == 0 || sp__vec_resize(&c->buf, cap, c->elem) != 0)
            return sp_fail(err, "%s: out of memory buffering \"%s\"", path, c->name);
        c->cap = cap;
    }
    memcpy(c->buf + c->n_buf * c->elem, data, n * c->elem);
    c->n_buf += n;
    if (c->n_buf < FLUSH_ELEMS) return 0;
    return column_write(c, c->n_buf / SP_DS_CHUNK * SP_DS_CHUNK, path, err);
}

static int create_columns(sp_dataset_writer *w, sp_error *err) {
    column *c = w->col;
    if (column_create(w, &c[C_TOKENS], "tokens", H5T_STD_I32LE, H5T_NATIVE_INT32, err) ||
        column_create(w, &c[C_OFFSETS], "offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, err) ||
        column_create(w, &c[C_TOFFSETS], "target_offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, err) ||
        column_create(w, &c[C_TPOS], "target_pos", H5T_STD_I32LE, H5T_NATIVE_INT32, err) ||
        column_create(w, &c[C_TIDS], "target_ids", H5T_STD_I32LE, H5T_NATIVE_INT32, err))
        return -1;
    if (w->meta.task == SP_TASK_CLASSIFICATION &&
        column_create(w, &c[C_LABELS], "labels", H5T_STD_I32LE, H5T_NATIVE_INT32, err))
        return -1;
    /* Both offset arrays start with 0: example i spans [offsets[i], offsets[i+1]). */
    int64_t zero = 0;
    if (column_append(&c[C_OFFSETS], &zero, 1, w->final_path, err) ||
        column_append(&c[C_TOFFSETS], &zero, 1, w->final_path, err))
        return -1;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Open / add / close                                                                         */
/* ------------------------------------------------------------------------------------------ */

static int check_meta(const char *path, const sp_dataset_meta *m, sp_error *err) {
    if (m->task != SP_TASK_CLASSIFICATION && m->task != SP_TASK_GENERATION)
        return sp_fail(err, "%s: unknown task %d", path, (int)m->task);
    if (m->n_soft < 0 || m->max_length < 0 || m->n_classes < 0)
        return sp_fail(err, "%s: n_soft, n_classes and max_length must be >= 0", path);
    if (m->task == SP_TASK_GENERATION && m->n_classes != 0)
        return sp_fail(err, "%s: a generation dataset has no classes (n_classes = %d)", path,
                       m->n_classes);
    if (m->task == SP_TASK_CLASSIFICATION && (m->n_classes < 1 || !m->verbalizer))
        return sp_fail(err, "%s: a classification dataset needs n_classes >= 1 and a verbalizer",
                       path);
    for (int c = 0; c < m->n_classes; c++)
        if (m->verbalizer[c] < 0)
            return sp_fail(err, "%s: verbalizer token of class %d is %d (must be >= 0)", path, c,
                           (int)m->verbalizer[c]);
    return 0;
}

/* Creates final_path.tmp.XXXXXX; HDF5 then re-creates it by name. */
static int make_temp(sp_dataset_writer *w, sp_error *err) {
    int fd = sp__temp_beside(w->final_path, &w->tmp_path, err);
    if (fd < 0) return -1;
    close(fd);
    return 0;
}

static int check_target_path(const char *path, int force, sp_error *err) {
    struct stat st;
    if (stat(path, &st) != 0) return 0;
    if (S_ISDIR(st.st_mode)) return sp_fail(err, "%s: is a directory", path);
    if (!force) return sp_fail(err, "%s: already exists (use --force to overwrite it)", path);
    return 0;
}

sp_dataset_writer *sp_dataset_writer_open(const char *final_path, const sp_dataset_meta *meta,
                                          int force, sp_error *err) {
    sp__h5_quiet();
    if (check_meta(final_path, meta, err) || check_target_path(final_path, force, err)) return NULL;
    sp_dataset_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->final_path = strdup(final_path))) {
        free(w);
        sp_fail(err, "%s: out of memory", final_path);
        return NULL;
    }
    w->file = -1;
    for (int i = 0; i < N_COLUMNS; i++) w->col[i].dset = -1;
    w->meta = *meta;
    size_t vbytes = (size_t)meta->n_classes * sizeof(int32_t);
    if (vbytes && (w->verbalizer_copy = malloc(vbytes)))
        memcpy(w->verbalizer_copy, meta->verbalizer, vbytes);
    w->meta.verbalizer = w->verbalizer_copy;
    if (vbytes && !w->verbalizer_copy) {
        sp_fail(err, "%s: out of memory", final_path);
        sp_dataset_writer_abort(w);
        return NULL;
    }
    if (make_temp(w, err) != 0) {
        sp_dataset_writer_abort(w);
        return NULL;
    }
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_file_locking(fapl, 1, 1); /* lock where the file system can, go on where not */
    /* The 1.10 file format checksums all metadata (superblock, object headers, chunk indexes),
     * so HDF5 refuses damaged metadata instead of parsing it; readable by HDF5 >= 1.10. */
    H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110);
    hid_t fcpl = sp__h5_untimed(H5P_FILE_CREATE); /* the root group's times */
    w->file = H5Fcreate(w->tmp_path, H5F_ACC_TRUNC, fcpl, fapl);
    /* before H5Pclose, which clears HDF5's error stack and with it the reason (e.g. ENOSPC) */
    if (w->file < 0) sp__h5_fail(err, "%s: cannot create HDF5 file", final_path);
    H5Pclose(fcpl), H5Pclose(fapl);
    if (w->file < 0 || write_header_attrs(w, err) ||
        (meta->task == SP_TASK_CLASSIFICATION && write_classes(w, err)) || create_columns(w, err)) {
        sp_dataset_writer_abort(w);
        return NULL;
    }
    w->meta.class_names = NULL; /* written already; the caller's strings are not kept */
    return w;
}

/* Checks one example against the format's rules before anything is buffered. */
static int check_example(const sp_dataset_writer *w, const int32_t *tokens, int n_tokens,
                         const int32_t *pos, const int32_t *ids, int n_targets, int label,
                         sp_error *err) {
    const sp_dataset_meta *m = &w->meta;
    const char *p = w->final_path;
    long long ex = (long long)w->n_examples;
    if (n_tokens < 1) return sp_fail(err, "%s: example %lld has no tokens", p, ex);
    if (m->max_length > 0 && n_tokens > m->max_length)
        return sp_fail(err, "%s: example %lld has %d tokens, more than max_length %d", p, ex,
                       n_tokens, m->max_length);
    for (int t = 0; t < n_tokens; t++)
        if (SP_IS_SOFT(tokens[t]) && SP_SOFT_INDEX(tokens[t]) >= m->n_soft)
            return sp_fail(err, "%s: example %lld position %d: soft slot %d but n_soft is %d", p,
                           ex, t, (int)SP_SOFT_INDEX(tokens[t]), m->n_soft);
    if (n_targets < 0) return sp_fail(err, "%s: example %lld: negative target count", p, ex);
    for (int j = 0; j < n_targets; j++) {
        if (pos[j] < 0 || pos[j] >= n_tokens || (j > 0 && pos[j] <= pos[j - 1]))
            return sp_fail(err,
                           "%s: example %lld: target %d at position %d (positions must be "
                           "strictly increasing and within the %d tokens)",
                           p, ex, j, (int)pos[j], n_tokens);
        if (ids[j] < 0)
            return sp_fail(err, "%s: example %lld: target %d has token id %d", p, ex, j,
                           (int)ids[j]);
    }
    if (m->task != SP_TASK_CLASSIFICATION) return 0;
    if (label < 0 || label >= m->n_classes)
        return sp_fail(err, "%s: example %lld: label %d outside [0, %d)", p, ex, label,
                       m->n_classes);
    if (n_targets != 1 || ids[0] != m->verbalizer[label])
        return sp_fail(err,
                       "%s: example %lld: a classification example needs exactly one target "
                       "whose id is the verbalizer token of its label (%d)",
                       p, ex, (int)m->verbalizer[label]);
    return 0;
}

int sp_dataset_writer_add(sp_dataset_writer *w, const int32_t *tokens, int n_tokens,
                          const int32_t *target_pos, const int32_t *target_ids, int n_targets,
                          int label, sp_error *err) {
    if (check_example(w, tokens, n_tokens, target_pos, target_ids, n_targets, label, err) != 0)
        return -1;
    const char *p = w->final_path;
    int64_t tok_end = w->n_tokens + n_tokens, tgt_end = w->n_targets + n_targets;
    int32_t lab = label;
    column *c = w->col;
    if (column_append(&c[C_TOKENS], tokens, (size_t)n_tokens, p, err) ||
        column_append(&c[C_OFFSETS], &tok_end, 1, p, err) ||
        column_append(&c[C_TPOS], target_pos, (size_t)n_targets, p, err) ||
        column_append(&c[C_TIDS], target_ids, (size_t)n_targets, p, err) ||
        column_append(&c[C_TOFFSETS], &tgt_end, 1, p, err) ||
        (w->meta.task == SP_TASK_CLASSIFICATION && column_append(&c[C_LABELS], &lab, 1, p, err)))
        return -1;
    w->n_examples++;
    w->n_tokens = tok_end;
    w->n_targets = tgt_end;
    return 0;
}

void sp_dataset_writer_set_truncated(sp_dataset_writer *w, int64_t n_truncated) {
    w->meta.n_truncated = n_truncated;
}

/* Closes every HDF5 handle; returns -1 if closing the file failed (data not flushed). */
static int close_handles(sp_dataset_writer *w) {
    for (int i = 0; i < N_COLUMNS; i++) {
        sp__h5_close(w->col[i].dset);
        w->col[i].dset = -1;
    }
    herr_t st = w->file >= 0 ? H5Fclose(w->file) : 0;
    w->file = -1;
    return st < 0 ? -1 : 0;
}

static void free_writer(sp_dataset_writer *w) {
    for (int i = 0; i < N_COLUMNS; i++) free(w->col[i].buf);
    free(w->verbalizer_copy);
    free(w->tmp_path);
    free(w->final_path);
    free(w);
}

void sp_dataset_writer_abort(sp_dataset_writer *w) {
    if (!w) return;
    close_handles(w);
    H5Eclear2(H5E_DEFAULT);
    if (w->tmp_path) unlink(w->tmp_path);
    free_writer(w);
}

int sp_dataset_writer_close(sp_dataset_writer *w, sp_error *err) {
    const char *p = w->final_path;
    for (int i = 0; i < N_COLUMNS; i++)
        if (w->col[i].dset >= 0 && column_write(&w->col[i], w->col[i].n_buf, p, err) != 0)
            goto fail;
    if (write_i64_attr(w->file, "n_examples", w->n_examples, p, err) ||
        write_i64_attr(w->file, "n_tokens", w->n_tokens, p, err) ||
        write_i64_attr(w->file, "n_targets", w->n_targets, p, err) ||
        write_i64_attr(w->file, "n_truncated", w->meta.n_truncated, p, err))
        goto fail;
    if (close_handles(w) != 0) {
        sp__h5_fail(err, "%s: cannot close (flush) the HDF5 file", p);
        goto fail;
    }
    /* The temporary is removed on failure; a published file whose directory did not sync is
     * removed too, so that a failed close leaves nothing (prepare promises all or nothing). */
    int rc = sp__commit(-1, w->tmp_path, p, err);
    if (rc == SP_COMMIT_UNSYNCED) unlink(p);
    free(w->tmp_path);
    w->tmp_path = NULL;
    free_writer(w);
    return rc == 0 ? 0 : -1;
fail:
    sp_dataset_writer_abort(w);
    return -1;
}
