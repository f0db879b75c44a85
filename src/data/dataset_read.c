/* HDF5 dataset reader: validation at open, hyperslab reads of exactly the examples a batch
 * needs. The small per-example arrays (offsets, target offsets, labels) are read once at open;
 * tokens and targets are read per batch. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/dataset_internal.h"
#include "util/escape.h"
#include "util/vec.h"

/* ------------------------------------------------------------------------------------------ */
/* Attributes                                                                                 */
/* ------------------------------------------------------------------------------------------ */

/* Opens root attribute name; missing is an error only when required (returns -1 then, or
 * -2 when absent and optional). */
static hid_t open_attr(sp_dataset *ds, const char *name, int required, sp_error *err) {
    hid_t a = sp__h5_open_root_attr(ds->file, name, ds->path, err);
    if (a == -2 && required)
        return sp_fail(err, "%s: missing root attribute \"%s\" (not a softprompt dataset?)",
                       ds->path, name);
    return a;
}

/* Reads a string attribute (variable or fixed length, any character set) into a malloc'd
 * string; *out = strdup(dflt) when optional and absent. */
static int read_str_attr(sp_dataset *ds, const char *name, int required, const char *dflt,
                         char **out, sp_error *err) {
    hid_t a = open_attr(ds, name, required, err);
    if (a == -2) return (*out = strdup(dflt)) ? 0 : sp_fail(err, "%s: out of memory", ds->path);
    if (a < 0) return -1;
    hid_t ft = H5Aget_type(a);
    hid_t mt = H5Tcopy(ft);
    int rc = 0;
    *out = NULL;
    if (H5Tget_class(ft) != H5T_STRING) {
        rc = sp_fail(err, "%s: root attribute \"%s\" must be a string", ds->path, name);
    } else if (H5Tis_variable_str(ft) > 0) {
        char *v = NULL;
        if (H5Aread(a, mt, &v) < 0)
            rc = sp__h5_fail(err, "%s: cannot read root attribute \"%s\"", ds->path, name);
        else if (!(*out = strdup(v ? v : "")))
            rc = sp_fail(err, "%s: out of memory", ds->path);
        H5free_memory(v);
    } else {
        size_t n = H5Tget_size(ft);
        char *v = calloc(n + 1, 1);
        if (!v)
            rc = sp_fail(err, "%s: out of memory", ds->path);
        else if (H5Aread(a, mt, v) < 0)
            rc = sp__h5_fail(err, "%s: cannot read root attribute \"%s\"", ds->path, name);
        else if (H5Tget_strpad(ft) == H5T_STR_SPACEPAD)
            while (n > 0 && v[n - 1] == ' ') v[--n] = '\0';
        *out = rc == 0 ? v : (free(v), NULL);
    }
    H5Tclose(mt), H5Tclose(ft), H5Aclose(a);
    return rc;
}

/* Reads an integer attribute (any integer type; HDF5 converts) into *out; absent optional
 * attributes leave *out unchanged. */
static int read_int_attr(sp_dataset *ds, const char *name, int required, int64_t lo, int64_t hi,
                         int64_t *out, sp_error *err) {
    hid_t a = open_attr(ds, name, required, err);
    if (a == -2) return 0;
    if (a < 0) return -1;
    hid_t ft = H5Aget_type(a);
    int is_int = H5Tget_class(ft) == H5T_INTEGER;
    int is_u64 = is_int && H5Tget_sign(ft) == H5T_SGN_NONE && H5Tget_size(ft) >= 8;
    H5Tclose(ft);
    int64_t v = 0;
    uint64_t u = 0;
    int rc =
        is_int ? 0 : sp_fail(err, "%s: root attribute \"%s\" must be an integer", ds->path, name);
    if (is_int &&
        (is_u64 ? H5Aread(a, H5T_NATIVE_UINT64, &u) : H5Aread(a, H5T_NATIVE_INT64, &v)) < 0)
        rc = sp__h5_fail(err, "%s: cannot read root attribute \"%s\"", ds->path, name);
    H5Aclose(a);
    if (rc != 0) return -1;
    if (is_u64) v = u > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)u;
    if (v < lo || v > hi)
        return sp_fail(
            err, "%s: root attribute \"%s\" is %" PRId64 ", outside [%" PRId64 ", %" PRId64 "]",
            ds->path, name, v, lo, hi);
    *out = v;
    return 0;
}

/* The seed is a full uint64 (numpy/h5py may store it as int64 too). */
static int read_seed(sp_dataset *ds, sp_error *err) {
    hid_t a = open_attr(ds, "seed", 0, err);
    if (a == -2) return 0;
    if (a < 0) return -1;
    hid_t ft = H5Aget_type(a);
    int is_int = H5Tget_class(ft) == H5T_INTEGER;
    H5Tclose(ft);
    int rc = is_int ? 0 : sp_fail(err, "%s: root attribute \"seed\" must be an integer", ds->path);
    if (is_int && H5Aread(a, H5T_NATIVE_UINT64, &ds->meta.seed) < 0)
        rc = sp__h5_fail(err, "%s: cannot read root attribute \"seed\"", ds->path);
    H5Aclose(a);
    return rc;
}

static int read_format_attrs(sp_dataset *ds, sp_error *err) {
    char *format = NULL, *task = NULL;
    int64_t version = 0;
    int rc = read_str_attr(ds, "format", 1, "", &format, err);
    char shown[128];
    if (rc == 0 && strcmp(format, SP_DATASET_FORMAT) != 0)
        rc = sp_fail(err, "%s: root attribute \"format\" is \"%s\", expected \"%s\"", ds->path,
                     sp__escape(format, shown, sizeof shown), SP_DATASET_FORMAT);
    if (rc == 0) rc = read_int_attr(ds, "format_version", 1, INT64_MIN, INT64_MAX, &version, err);
    if (rc == 0 && version != SP_DATASET_VERSION)
        rc = sp_fail(err,
                     "%s: format_version %" PRId64 " is not supported (this build reads version "
                     "%d%s)",
                     ds->path, version, SP_DATASET_VERSION,
                     version > SP_DATASET_VERSION ? "; the file is from a newer softprompt" : "");
    if (rc == 0) rc = read_str_attr(ds, "task", 1, "", &task, err);
    if (rc == 0 && !strcmp(task, "classification"))
        ds->meta.task = SP_TASK_CLASSIFICATION;
    else if (rc == 0 && !strcmp(task, "generation"))
        ds->meta.task = SP_TASK_GENERATION;
    else if (rc == 0)
        rc = sp_fail(err,
                     "%s: root attribute \"task\" is \"%s\", expected \"classification\" or "
                     "\"generation\"",
                     ds->path, sp__escape(task, shown, sizeof shown));
    free(format), free(task);
    return rc;
}

static int read_meta_attrs(sp_dataset *ds, sp_error *err) {
    sp_dataset_meta *m = &ds->meta;
    int64_t n_soft = 0, n_classes = 0, max_length = 0, trunc = 0;
    static const char *const names[8] = {"tokenizer_hash", "template", "target",     "verbalizer",
                                         "source",         "split",    "created_by", NULL};
    if (read_int_attr(ds, "n_examples", 1, 0, INT64_MAX - 1, &m->n_examples, err) ||
        read_int_attr(ds, "n_tokens", 1, 0, INT64_MAX, &m->n_tokens, err) ||
        read_int_attr(ds, "n_targets", 1, 0, INT64_MAX, &m->n_targets, err) ||
        read_int_attr(ds, "n_soft", 1, 0, INT32_MAX, &n_soft, err) ||
        read_int_attr(ds, "n_classes", 1, 0, INT32_MAX, &n_classes, err) ||
        read_int_attr(ds, "max_length", 0, 0, INT32_MAX, &max_length, err) ||
        read_int_attr(ds, "n_truncated", 0, 0, INT64_MAX, &trunc, err) || read_seed(ds, err))
        return -1;
    m->n_soft = (int)n_soft, m->n_classes = (int)n_classes, m->max_length = (int)max_length;
    m->n_truncated = trunc;
    for (int i = 0; names[i]; i++)
        if (read_str_attr(ds, names[i], 0, "", &ds->strings[i], err) != 0) return -1;
    m->tokenizer_hash = ds->strings[0], m->template_spec = ds->strings[1];
    m->target_spec = ds->strings[2], m->verbalizer_spec = ds->strings[3];
    m->source = ds->strings[4], m->split = ds->strings[5], m->created_by = ds->strings[6];
    if (m->task == SP_TASK_CLASSIFICATION && m->n_classes < 1)
        return sp_fail(err, "%s: classification dataset with n_classes = %d", ds->path,
                       m->n_classes);
    if (m->task == SP_TASK_GENERATION && m->n_classes != 0)
        return sp_fail(err, "%s: generation dataset with n_classes = %d (must be 0)", ds->path,
                       m->n_classes);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Datasets: presence, type, shape                                                            */
/* ------------------------------------------------------------------------------------------ */

static const char *class_name(H5T_class_t c) {
    switch (c) {
    case H5T_INTEGER:
        return "integer";
    case H5T_FLOAT:
        return "floating-point";
    case H5T_STRING:
        return "string";
    case H5T_COMPOUND:
        return "compound";
    case H5T_ENUM:
        return "enum";
    case H5T_ARRAY:
        return "array";
    default:
        return "non-numeric";
    }
}

/* 0 when link /name exists; -1 with "missing dataset" when it does not, or with HDF5's reason
 * when it cannot tell (a damaged file is not reported as a missing dataset). */
static int has_dataset(const sp_dataset *ds, const char *name, sp_error *err) {
    htri_t has = H5Lexists(ds->file, name, H5P_DEFAULT);
    if (has < 0) return sp__h5_fail(err, "%s: cannot look up dataset \"/%s\"", ds->path, name);
    return has ? 0 : sp_fail(err, "%s: missing dataset \"/%s\"", ds->path, name);
}

/* Opens 1-D dataset /name of signed integers of `bytes` bytes (int32: 4, int64: 8) holding
 * exactly n elements. The type check keeps HDF5 from silently clamping wider values. */
static hid_t open_int_dataset(sp_dataset *ds, const char *name, size_t bytes, int64_t n,
                              sp_error *err) {
    if (has_dataset(ds, name, err) != 0) return -1;
    hid_t d = H5Dopen2(ds->file, name, H5P_DEFAULT);
    if (d < 0) return sp__h5_fail(err, "%s: cannot open dataset \"/%s\"", ds->path, name);
    hid_t t = H5Dget_type(d), s = H5Dget_space(d);
    H5T_class_t cls = H5Tget_class(t);
    size_t size = H5Tget_size(t);
    int is_signed = cls == H5T_INTEGER && H5Tget_sign(t) == H5T_SGN_2;
    int rank = H5Sget_simple_extent_ndims(s);
    hsize_t dim = 0;
    if (rank == 1) H5Sget_simple_extent_dims(s, &dim, NULL);
    H5Tclose(t), H5Sclose(s);
    int rc = 0;
    if (!is_signed || size != bytes)
        rc = sp_fail(err,
                     "%s: dataset \"/%s\" has %zu-byte %s%s elements, expected %zu-byte signed "
                     "integers (numpy dtype int%zu)",
                     ds->path, name, size, cls == H5T_INTEGER && !is_signed ? "unsigned " : "",
                     class_name(cls), bytes, 8 * bytes);
    else if (rank != 1)
        rc = sp_fail(err, "%s: dataset \"/%s\" has rank %d, expected 1", ds->path, name, rank);
    else if ((int64_t)dim != n)
        rc = sp_fail(err, "%s: dataset \"/%s\" has %llu elements, expected %" PRId64, ds->path,
                     name, (unsigned long long)dim, n);
    else
        rc = sp__h5_check_storage(d, ds->path, name, err);
    if (rc != 0) {
        H5Dclose(d);
        return -1;
    }
    return d;
}

/* Reads all n elements of an int dataset opened with open_int_dataset into a new array. */
static void *read_all(sp_dataset *ds, const char *name, size_t bytes, int64_t n, sp_error *err) {
    hid_t d = open_int_dataset(ds, name, bytes, n, err);
    if (d < 0) return NULL;
    void *buf = malloc(n > 0 ? (size_t)n * bytes : 1);
    hid_t mt = bytes == 8 ? H5T_NATIVE_INT64 : H5T_NATIVE_INT32;
    if (!buf)
        sp_fail(err, "%s: out of memory reading \"/%s\"", ds->path, name);
    else if (n > 0 && H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        sp__h5_fail(err, "%s: cannot read dataset \"/%s\"", ds->path, name);
        free(buf);
        buf = NULL;
    }
    H5Dclose(d);
    return buf;
}

/* /class_names: [n_classes] strings, variable or fixed length. */
static int read_class_names(sp_dataset *ds, sp_error *err) {
    int n = ds->meta.n_classes;
    const char *name = "class_names";
    if (has_dataset(ds, name, err) != 0) return -1;
    hid_t d = H5Dopen2(ds->file, name, H5P_DEFAULT);
    if (d < 0) return sp__h5_fail(err, "%s: cannot open dataset \"/%s\"", ds->path, name);
    hid_t ft = H5Dget_type(d), s = H5Dget_space(d), mt = H5Tcopy(ft);
    hsize_t dim = 0;
    int rank = H5Sget_simple_extent_ndims(s), rc = 0;
    if (rank == 1) H5Sget_simple_extent_dims(s, &dim, NULL);
    ds->class_names = calloc((size_t)n, sizeof *ds->class_names);
    size_t fixed = H5Tis_variable_str(ft) > 0 ? 0 : H5Tget_size(ft);
    int spacepad = fixed && H5Tget_strpad(ft) == H5T_STR_SPACEPAD;
    char *buf = calloc((size_t)n, fixed ? fixed : sizeof(char *));
    if (H5Tget_class(ft) != H5T_STRING)
        rc = sp_fail(err, "%s: dataset \"/%s\" must hold strings", ds->path, name);
    else if (rank != 1 || (int64_t)dim != n)
        rc = sp_fail(err, "%s: dataset \"/%s\" must have shape [n_classes] = [%d]", ds->path, name,
                     n);
    else if (!ds->class_names || !buf)
        rc = sp_fail(err, "%s: out of memory", ds->path);
    else if (H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
        rc = sp__h5_fail(err, "%s: cannot read dataset \"/%s\"", ds->path, name);
    for (int i = 0; rc == 0 && i < n; i++) {
        const char *v = fixed ? buf + (size_t)i * fixed : ((char **)buf)[i];
        size_t len = !v ? 0 : fixed ? strnlen(v, fixed) : strlen(v);
        while (spacepad && len > 0 && v[len - 1] == ' ') len--;
        if (!(ds->class_names[i] = strndup(v ? v : "", len)))
            rc = sp_fail(err, "%s: out of memory", ds->path);
    }
    if (!fixed && buf && rc == 0) H5Dvlen_reclaim(mt, s, H5P_DEFAULT, buf);
    free(buf);
    H5Tclose(mt), H5Tclose(ft), H5Sclose(s), H5Dclose(d);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Eager validation of the per-example arrays                                                 */
/* ------------------------------------------------------------------------------------------ */

/* off [n + 1] must start at 0, never decrease and end at total. */
static int check_offsets(const sp_dataset *ds, const char *name, const int64_t *off, int64_t n,
                         int64_t total, const char *total_name, sp_error *err) {
    if (off[0] != 0)
        return sp_fail(err, "%s: /%s[0] is %" PRId64 ", must be 0", ds->path, name, off[0]);
    for (int64_t i = 0; i < n; i++)
        if (off[i + 1] < off[i])
            return sp_fail(err,
                           "%s: /%s is not non-decreasing: /%s[%" PRId64 "] = %" PRId64
                           " < /%s[%" PRId64 "] = %" PRId64,
                           ds->path, name, name, i + 1, off[i + 1], name, i, off[i]);
    if (off[n] != total)
        return sp_fail(err, "%s: /%s ends at %" PRId64 " but %s is %" PRId64, ds->path, name,
                       off[n], total_name, total);
    return 0;
}

static int check_examples(const sp_dataset *ds, sp_error *err) {
    const sp_dataset_meta *m = &ds->meta;
    for (int64_t i = 0; i < m->n_examples; i++) {
        int64_t len = ds->offsets[i + 1] - ds->offsets[i];
        if (len == 0) return sp_fail(err, "%s: example %" PRId64 " is empty", ds->path, i);
        if (len > (m->max_length > 0 ? m->max_length : INT32_MAX))
            return sp_fail(err, "%s: example %" PRId64 " has %" PRId64 " tokens, over %s %d",
                           ds->path, i, len, m->max_length > 0 ? "max_length" : "the limit",
                           m->max_length > 0 ? m->max_length : INT32_MAX);
        if (ds->labels && (ds->labels[i] < 0 || ds->labels[i] >= m->n_classes))
            return sp_fail(err, "%s: /labels[%" PRId64 "] = %d is outside [0, n_classes = %d)",
                           ds->path, i, (int)ds->labels[i], m->n_classes);
    }
    for (int c = 0; c < m->n_classes; c++)
        if (ds->verbalizer[c] < 0)
            return sp_fail(err, "%s: /verbalizer[%d] = %d is not a token id", ds->path, c,
                           (int)ds->verbalizer[c]);
    return 0;
}

static int read_arrays(sp_dataset *ds, sp_error *err) {
    sp_dataset_meta *m = &ds->meta;
    int64_t n = m->n_examples;
    if (!(ds->offsets = read_all(ds, "offsets", 8, n + 1, err)) ||
        !(ds->toffsets = read_all(ds, "target_offsets", 8, n + 1, err)))
        return -1;
    if (m->task == SP_TASK_CLASSIFICATION &&
        (!(ds->labels = read_all(ds, "labels", 4, n, err)) ||
         !(ds->verbalizer = read_all(ds, "verbalizer", 4, m->n_classes, err)) ||
         read_class_names(ds, err) != 0))
        return -1;
    m->verbalizer = ds->verbalizer;
    m->class_names = (const char *const *)ds->class_names;
    if (check_offsets(ds, "offsets", ds->offsets, n, m->n_tokens, "n_tokens", err) ||
        check_offsets(ds, "target_offsets", ds->toffsets, n, m->n_targets, "n_targets", err) ||
        check_examples(ds, err))
        return -1;
    return 0;
}

/* Opens the datasets read per batch (HDF5's default 1 MiB chunk cache holds 64 chunks). */
static int open_batch_datasets(sp_dataset *ds, sp_error *err) {
    const sp_dataset_meta *m = &ds->meta;
    if ((ds->d_tokens = open_int_dataset(ds, "tokens", 4, m->n_tokens, err)) < 0 ||
        (ds->d_tpos = open_int_dataset(ds, "target_pos", 4, m->n_targets, err)) < 0 ||
        (ds->d_tids = open_int_dataset(ds, "target_ids", 4, m->n_targets, err)) < 0)
        return -1;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Open / close / accessors                                                                   */
/* ------------------------------------------------------------------------------------------ */

static int open_file(sp_dataset *ds, sp_error *err) {
    if (sp__h5_precheck(ds->path, err) != 0) return -1;
    if (H5Fis_hdf5(ds->path) <= 0) return sp__h5_fail(err, "%s: not an HDF5 file", ds->path);
    /* Take the (shared, read-only) lock where the file system supports locks, and go on
     * without one where it does not (common on parallel file systems). */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_file_locking(fapl, 1, 1);
    ds->file = H5Fopen(ds->path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (ds->file < 0) return sp__h5_fail(err, "%s: cannot open HDF5 file", ds->path);
    return 0;
}

sp_dataset *sp_dataset_open(const char *path, sp_error *err) {
    sp__h5_quiet();
    sp_dataset *ds = calloc(1, sizeof *ds);
    if (!ds || !(ds->path = strdup(path))) {
        free(ds);
        sp_fail(err, "%s: out of memory", path);
        return NULL;
    }
    ds->file = ds->d_tokens = ds->d_tpos = ds->d_tids = -1;
    if (open_file(ds, err) || read_format_attrs(ds, err) || read_meta_attrs(ds, err) ||
        read_arrays(ds, err) || open_batch_datasets(ds, err)) {
        sp_dataset_close(ds);
        H5Eclear2(H5E_DEFAULT);
        return NULL;
    }
    return ds;
}

void sp_dataset_close(sp_dataset *ds) {
    if (!ds) return;
    sp__h5_close(ds->d_tokens), sp__h5_close(ds->d_tpos), sp__h5_close(ds->d_tids);
    sp__h5_close(ds->file);
    for (int i = 0; i < 8; i++) free(ds->strings[i]);
    if (ds->class_names)
        for (int c = 0; c < ds->meta.n_classes; c++) free(ds->class_names[c]);
    free(ds->class_names), free(ds->verbalizer), free(ds->labels);
    free(ds->offsets), free(ds->toffsets), free(ds->scratch), free(ds->order);
    free(ds->path);
    free(ds);
}

const char *sp_dataset_path(const sp_dataset *ds) {
    return ds->path;
}
const sp_dataset_meta *sp_dataset_get_meta(const sp_dataset *ds) {
    return &ds->meta;
}
int64_t sp_dataset_n_examples(const sp_dataset *ds) {
    return ds->meta.n_examples;
}
const int64_t *sp_dataset_offsets(const sp_dataset *ds) {
    return ds->offsets;
}
const int32_t *sp_dataset_labels(const sp_dataset *ds) {
    return ds->labels;
}

int64_t sp_dataset_example_length(const sp_dataset *ds, int64_t i) {
    return ds->offsets[i + 1] - ds->offsets[i];
}

int64_t sp_dataset_example_targets(const sp_dataset *ds, int64_t i) {
    return ds->toffsets[i + 1] - ds->toffsets[i];
}

/* ------------------------------------------------------------------------------------------ */
/* Batch reads                                                                                */
/* ------------------------------------------------------------------------------------------ */

static int cmp_slot(const void *a, const void *b) {
    const slot *x = a, *y = b;
    if (x->id != y->id) return x->id < y->id ? -1 : 1;
    return x->seq - y->seq;
}

/* Sorts the request into ds->order and numbers the distinct examples in file order.
 * Returns the number of distinct examples, or -1. */
static int sort_request(sp_dataset *ds, const int64_t *ids, int n, sp_error *err) {
    if (sp__vec_reserve(&ds->order, &ds->cap_order, (size_t)n, sizeof *ds->order) != 0)
        return sp_fail(err, "%s: out of memory", ds->path);
    for (int s = 0; s < n; s++) {
        if (ids[s] < 0 || ids[s] >= ds->meta.n_examples)
            return sp_fail(err, "%s: example %" PRId64 " requested, but the dataset has %" PRId64,
                           ds->path, ids[s], ds->meta.n_examples);
        ds->order[s] = (slot){ids[s], s, 0};
    }
    qsort(ds->order, (size_t)n, sizeof *ds->order, cmp_slot);
    int u = -1;
    for (int k = 0; k < n; k++) {
        if (k == 0 || ds->order[k].id != ds->order[k - 1].id) u++;
        ds->order[k].unique = u;
    }
    return u + 1;
}

static int grow_scratch(sp_dataset *ds, size_t n, sp_error *err) {
    if (sp__vec_reserve(&ds->scratch, &ds->cap_scratch, n, sizeof *ds->scratch) != 0)
        return sp_fail(err, "%s: out of memory for a batch of %zu values", ds->path, n);
    return 0;
}

/* Total elements of the distinct requested examples' ranges [off[id], off[id+1]). */
static int64_t distinct_total(const sp_dataset *ds, const int64_t *off, int n) {
    int64_t total = 0;
    for (int k = 0; k < n; k++)
        if (k == 0 || ds->order[k].id != ds->order[k - 1].id)
            total += off[ds->order[k].id + 1] - off[ds->order[k].id];
    return total;
}

int sp__ds_read_block(const sp_dataset *ds, hid_t d, const char *name, int64_t start, int64_t len,
                      int32_t *dst, const char *what, sp_error *err) {
    hsize_t s0 = (hsize_t)start, n = (hsize_t)len;
    hid_t fspace = H5Dget_space(d), mspace = H5Screate_simple(1, &n, NULL);
    int rc = 0;
    if (fspace < 0 || mspace < 0 ||
        H5Sselect_hyperslab(fspace, H5S_SELECT_SET, &s0, NULL, &n, NULL) < 0 ||
        H5Dread(d, H5T_NATIVE_INT32, mspace, fspace, H5P_DEFAULT, dst) < 0)
        rc = sp__h5_fail(err, "%s: cannot read /%s[%" PRId64 ":%" PRId64 "] (%s)", ds->path, name,
                         start, start + len, what);
    sp__h5_close(mspace), sp__h5_close(fspace);
    return rc;
}

/* Reads the ranges [off[id], off[id+1]) of the distinct requested examples of dataset d
 * (name for messages) into ds->scratch, in file order. Runs of consecutive examples are read
 * as one block. One simple selection per run, not one union selection: HDF5 1.10 builds
 * unions of many blocks in quadratic time, while sorted runs let the chunk cache decompress
 * each chunk once. */
static int read_runs(sp_dataset *ds, hid_t d, const char *name, const int64_t *off, int n,
                     sp_error *err) {
    int64_t total = distinct_total(ds, off, n), pos = 0;
    if (grow_scratch(ds, (size_t)(total > 0 ? total : 1), err) != 0) return -1;
    for (int k = 0; k < n;) {
        int64_t first = ds->order[k].id, last = first;
        while (k < n && ds->order[k].id <= last + 1) last = ds->order[k++].id;
        int64_t len = off[last + 1] - off[first];
        char what[64];
        if (first == last)
            snprintf(what, sizeof what, "example %" PRId64, first);
        else
            snprintf(what, sizeof what, "examples %" PRId64 "-%" PRId64, first, last);
        if (len > 0 &&
            sp__ds_read_block(ds, d, name, off[first], len, ds->scratch + pos, what, err))
            return -1;
        pos += len;
    }
    return 0;
}

/* Start of each distinct example within the file-order scratch buffer: ustart[u]. */
static void unique_starts(const sp_dataset *ds, const int64_t *off, int n, int64_t *ustart) {
    int64_t pos = 0;
    for (int k = 0; k < n; k++) {
        if (k > 0 && ds->order[k].unique == ds->order[k - 1].unique) continue;
        ustart[ds->order[k].unique] = pos;
        pos += off[ds->order[k].id + 1] - off[ds->order[k].id];
    }
}

/* Sizes out for n sequences, n_tok tokens and n_tgt targets. */
static int reserve_batch(sp_batch_data *out, size_t n, size_t n_tok, size_t n_tgt) {
    if (n + 1 > out->cap_seq) {
        if (sp__vec_resize(&out->seq_start, n + 1, sizeof *out->seq_start) ||
            sp__vec_resize(&out->target_start, n + 1, sizeof *out->target_start) ||
            sp__vec_resize(&out->labels, n, sizeof *out->labels) ||
            sp__vec_resize(&out->example_ids, n, sizeof *out->example_ids))
            return -1;
        out->cap_seq = n + 1;
    }
    if (n_tok > out->cap_tokens || !out->tokens) {
        if (sp__vec_resize(&out->tokens, n_tok, sizeof *out->tokens)) return -1;
        out->cap_tokens = n_tok;
    }
    if (n_tgt > out->cap_targets || !out->target_pos) {
        if (sp__vec_resize(&out->target_pos, n_tgt, sizeof *out->target_pos) ||
            sp__vec_resize(&out->target_ids, n_tgt, sizeof *out->target_ids))
            return -1;
        out->cap_targets = n_tgt;
    }
    return 0;
}

/* Lays out seq_start / target_start for the request and checks the batch fits int32. */
static int plan_batch(sp_dataset *ds, const int64_t *ids, int n, sp_batch_data *out,
                      sp_error *err) {
    int64_t n_tok = 0, n_tgt = 0;
    for (int s = 0; s < n; s++) {
        n_tok += sp_dataset_example_length(ds, ids[s]);
        n_tgt += sp_dataset_example_targets(ds, ids[s]);
    }
    if (n_tok > INT32_MAX || n_tgt > INT32_MAX)
        return sp_fail(err,
                       "%s: a batch of %d examples has %" PRId64 " tokens, over the int32 "
                       "limit of a packed batch",
                       ds->path, n, n_tok);
    if (reserve_batch(out, (size_t)n, (size_t)n_tok, (size_t)n_tgt) != 0)
        return sp_fail(err, "%s: out of memory for a batch of %" PRId64 " tokens", ds->path, n_tok);
    out->n_seq = n, out->n_targets = (int)n_tgt, out->source = ds->path;
    out->seq_start[0] = out->target_start[0] = 0;
    for (int s = 0; s < n; s++) {
        out->seq_start[s + 1] = out->seq_start[s] + (int32_t)sp_dataset_example_length(ds, ids[s]);
        out->target_start[s + 1] =
            out->target_start[s] + (int32_t)sp_dataset_example_targets(ds, ids[s]);
        out->example_ids[s] = ids[s];
        out->labels[s] = ds->labels ? ds->labels[ids[s]] : -1;
    }
    return 0;
}

/* Copies each sequence's tokens from scratch and checks the soft indices. */
static int place_tokens(sp_dataset *ds, int n, const int64_t *ustart, sp_batch_data *out,
                        sp_error *err) {
    for (int k = 0; k < n; k++) {
        const slot *o = &ds->order[k];
        int32_t *dst = out->tokens + out->seq_start[o->seq];
        int32_t len = out->seq_start[o->seq + 1] - out->seq_start[o->seq];
        memcpy(dst, ds->scratch + ustart[o->unique], (size_t)len * sizeof *dst);
        for (int32_t t = 0; t < len; t++)
            if (SP_IS_SOFT(dst[t]) && SP_SOFT_INDEX(dst[t]) >= ds->meta.n_soft)
                return sp_fail(err,
                               "%s: /tokens[%" PRId64 "] (example %" PRId64 ", position %d) is "
                               "soft slot %d, but n_soft is %d",
                               ds->path, ds->offsets[o->id] + t, o->id, (int)t,
                               (int)SP_SOFT_INDEX(dst[t]), ds->meta.n_soft);
    }
    return 0;
}

/* Checks one sequence's targets (positions within the example) and converts them to packed
 * positions. */
static int check_targets(const sp_dataset *ds, const slot *o, sp_batch_data *out, sp_error *err) {
    int32_t b = out->target_start[o->seq], e = out->target_start[o->seq + 1];
    int32_t start = out->seq_start[o->seq], len = out->seq_start[o->seq + 1] - start;
    for (int32_t j = b; j < e; j++) {
        int32_t pos = out->target_pos[j];
        int64_t at = ds->toffsets[o->id] + (j - b);
        if (pos < 0 || pos >= len || (j > b && pos <= out->target_pos[j - 1] - start))
            return sp_fail(err,
                           "%s: /target_pos[%" PRId64 "] = %d (example %" PRId64 " of %d "
                           "tokens): positions must lie in [0, %d) and increase strictly",
                           ds->path, at, (int)pos, o->id, (int)len, (int)len);
        if (out->target_ids[j] < 0)
            return sp_fail(err,
                           "%s: /target_ids[%" PRId64 "] = %d (example %" PRId64 ") is not a "
                           "token id",
                           ds->path, at, (int)out->target_ids[j], o->id);
        out->target_pos[j] = start + pos;
    }
    if (!ds->labels) return 0;
    int32_t want = ds->verbalizer[ds->labels[o->id]];
    if (e - b != 1 || out->target_ids[b] != want)
        return sp_fail(err,
                       "%s: example %" PRId64 " (label %d): a classification example needs "
                       "exactly one target, with id /verbalizer[label] = %d",
                       ds->path, o->id, (int)ds->labels[o->id], (int)want);
    return 0;
}

/* Reads target_pos and target_ids of the request into out (same selection for both). */
static int place_targets(sp_dataset *ds, int n, int64_t *ustart, sp_batch_data *out,
                         sp_error *err) {
    unique_starts(ds, ds->toffsets, n, ustart);
    int32_t *dst[2] = {out->target_pos, out->target_ids};
    hid_t dsets[2] = {ds->d_tpos, ds->d_tids};
    const char *names[2] = {"target_pos", "target_ids"};
    for (int a = 0; a < 2; a++) {
        if (read_runs(ds, dsets[a], names[a], ds->toffsets, n, err) != 0) return -1;
        for (int k = 0; k < n; k++) {
            const slot *o = &ds->order[k];
            int32_t b = out->target_start[o->seq], e = out->target_start[o->seq + 1];
            memcpy(dst[a] + b, ds->scratch + ustart[o->unique], (size_t)(e - b) * sizeof(int32_t));
        }
    }
    for (int k = 0; k < n; k++)
        if (check_targets(ds, &ds->order[k], out, err) != 0) return -1;
    return 0;
}

int sp_dataset_read_batch(sp_dataset *ds, const int64_t *example_ids, int n, sp_batch_data *out,
                          sp_error *err) {
    if (n < 0) return sp_fail(err, "%s: negative batch size %d", ds->path, n);
    int n_unique = sort_request(ds, example_ids, n, err);
    if (n_unique < 0 || plan_batch(ds, example_ids, n, out, err) != 0) return -1;
    int64_t *ustart = malloc((size_t)(n_unique > 0 ? n_unique : 1) * sizeof *ustart);
    if (!ustart) return sp_fail(err, "%s: out of memory", ds->path);
    unique_starts(ds, ds->offsets, n, ustart);
    int rc = read_runs(ds, ds->d_tokens, "tokens", ds->offsets, n, err);
    if (rc == 0) rc = place_tokens(ds, n, ustart, out, err);
    if (rc == 0) rc = place_targets(ds, n, ustart, out, err);
    free(ustart);
    if (rc != 0) out->n_seq = out->n_targets = 0; /* never hand out a half-checked batch */
    return rc;
}
