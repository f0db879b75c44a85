/* safetensors reading (validate everything, then mmap) and atomic writing. */
#include "softprompt/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/fileutil.h"

/* ------------------------------------------------------------------------------------------ */
/* Reading                                                                                    */
/* ------------------------------------------------------------------------------------------ */

static uint64_t load_le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static void store_le64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static const char *json_kind(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "real number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    case JSON_NULL:
        return "null";
    }
    return "value";
}

/* "[2, 3]" into buf (truncated if tiny). */
static const char *fmt_shape(char *buf, size_t cap, const int64_t *shape, int ndim) {
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
    return buf;
}

/* Opens path, checks the 8-byte prefix against the file size and maps the whole file.
 * On success f->map/map_len are set and *hdr_len holds N. */
static int map_file(sp_st_file *f, const char *path, uint64_t *hdr_len, sp_error *err) {
    /* O_NONBLOCK: a FIFO given by mistake must not hang the open; no effect on regular files. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return sp_fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return sp_fail(err, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return sp_fail(err, "%s: not a regular file", path);
    }
    size_t size = (size_t)st.st_size;
    if (size < 8) {
        close(fd);
        return sp_fail(err,
                       "%s: truncated: the file is %zu bytes, but a safetensors file starts with "
                       "an 8-byte header length",
                       path, size);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    int e = errno;
    close(fd); /* the mapping keeps the file referenced */
    if (map == MAP_FAILED) return sp_fail(err, "%s: cannot mmap: %s", path, strerror(e));
    f->map = map;
    f->map_len = size;
    uint64_t n = load_le64(map);
    if (n > SP_ST_MAX_HEADER_BYTES)
        return sp_fail(err,
                       "%s: header length %" PRIu64 " exceeds the limit of %u bytes "
                       "(corrupt or not a safetensors file)",
                       path, n, SP_ST_MAX_HEADER_BYTES);
    if (n > size - 8)
        return sp_fail(err,
                       "%s: header length %" PRIu64 " runs past the end of the file "
                       "(%zu bytes follow the 8-byte prefix); truncated or not a safetensors file",
                       path, n, size - 8);
    *hdr_len = n;
    return 0;
}

/* Reads a JSON array of exactly want_n (or up to max_n when want_n < 0) non-negative integers. */
static int read_uint_array(json_t *a, int want_n, int max_n, int64_t *out, int *n_out,
                           const char *what, const char *path, const char *name, sp_error *err) {
    if (!json_is_array(a))
        return sp_fail(err, "%s: tensor '%s': \"%s\" is a JSON %s, expected an array of %s", path,
                       name, what, json_kind(a),
                       want_n == 2 ? "two integers [begin, end]" : "non-negative integers");
    size_t n = json_array_size(a);
    if (want_n >= 0 && n != (size_t)want_n)
        return sp_fail(err, "%s: tensor '%s': \"%s\" has %zu elements, expected [begin, end]", path,
                       name, what, n);
    if (n > (size_t)max_n)
        return sp_fail(err, "%s: tensor '%s': \"%s\" has %zu dimensions, at most %d are supported",
                       path, name, what, n, max_n);
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(a, i);
        if (!json_is_integer(v))
            return sp_fail(err, "%s: tensor '%s': \"%s\"[%zu] is a JSON %s, expected an integer",
                           path, name, what, i, json_kind(v));
        json_int_t x = json_integer_value(v);
        if (x < 0)
            return sp_fail(err,
                           "%s: tensor '%s': \"%s\"[%zu] is %lld, expected a non-negative integer",
                           path, name, what, i, (long long)x);
        out[i] = (int64_t)x;
    }
    *n_out = (int)n;
    return 0;
}

static json_t *required_key(json_t *obj, const char *key, const char *path, const char *name,
                            sp_error *err) {
    json_t *v = json_object_get(obj, key);
    if (!v)
        sp_fail(err,
                "%s: tensor '%s': missing \"%s\" (each entry needs dtype, shape, data_offsets)",
                path, name, key);
    return v;
}

/* Validates one header entry and fills t (except name). data/data_len: the data buffer. */
static int parse_tensor(sp_st_tensor *t, const char *name, json_t *v, const unsigned char *data,
                        size_t data_len, const char *path, sp_error *err) {
    if (!json_is_object(v))
        return sp_fail(err,
                       "%s: tensor '%s': entry is a JSON %s, expected an object with dtype, shape "
                       "and data_offsets",
                       path, name, json_kind(v));
    json_t *jd = required_key(v, "dtype", path, name, err);
    json_t *js = jd ? required_key(v, "shape", path, name, err) : NULL;
    json_t *jo = js ? required_key(v, "data_offsets", path, name, err) : NULL;
    if (!jo) return -1;
    if (!json_is_string(jd))
        return sp_fail(err,
                       "%s: tensor '%s': \"dtype\" is a JSON %s, expected a string like \"F32\"",
                       path, name, json_kind(jd));
    if (sp_dtype_from_name(json_string_value(jd), &t->dtype) != 0)
        return sp_fail(err,
                       "%s: tensor '%s': unknown dtype \"%s\" (known: F64, F32, F16, BF16, I64, "
                       "I32, I16, I8, U8, BOOL)",
                       path, name, json_string_value(jd));
    if (read_uint_array(js, -1, SP_ST_MAX_DIMS, t->shape, &t->ndim, "shape", path, name, err))
        return -1;
    int64_t off[2];
    int n_off;
    if (read_uint_array(jo, 2, 2, off, &n_off, "data_offsets", path, name, err)) return -1;

    char sh[256];
    fmt_shape(sh, sizeof sh, t->shape, t->ndim);
    int64_t numel = 1, nbytes;
    for (int i = 0; i < t->ndim; i++)
        if (__builtin_mul_overflow(numel, t->shape[i], &numel))
            return sp_fail(err, "%s: tensor '%s': shape %s has too many elements", path, name, sh);
    if (__builtin_mul_overflow(numel, (int64_t)sp_dtype_size(t->dtype), &nbytes))
        return sp_fail(err, "%s: tensor '%s': shape %s is too large for dtype %s", path, name, sh,
                       sp_dtype_name(t->dtype));
    if (off[0] > off[1])
        return sp_fail(err,
                       "%s: tensor '%s': data_offsets [%" PRId64 ", %" PRId64
                       "] begin after they end (expected begin <= end)",
                       path, name, off[0], off[1]);
    if ((uint64_t)off[1] > data_len)
        return sp_fail(err,
                       "%s: tensor '%s': data_offsets [%" PRId64 ", %" PRId64
                       "] run past the end of the data buffer (%zu bytes); truncated file?",
                       path, name, off[0], off[1], data_len);
    if (off[1] - off[0] != nbytes)
        return sp_fail(err,
                       "%s: tensor '%s': data_offsets [%" PRId64 ", %" PRId64 "] span %" PRId64
                       " bytes, but shape %s of %s needs %" PRId64 " (elements x dtype size)",
                       path, name, off[0], off[1], off[1] - off[0], sh, sp_dtype_name(t->dtype),
                       nbytes);
    t->numel = numel;
    t->nbytes = (size_t)nbytes;
    t->data = data + off[0];
    return 0;
}

static int parse_metadata(sp_st_file *f, json_t *v, const char *path, sp_error *err) {
    if (!json_is_object(v))
        return sp_fail(err, "%s: \"__metadata__\" is a JSON %s, expected an object of strings",
                       path, json_kind(v));
    f->meta_kv = calloc(2 * json_object_size(v) + 1, sizeof *f->meta_kv);
    if (!f->meta_kv) return sp_fail(err, "%s: out of memory", path);
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val) {
        if (!json_is_string(val))
            return sp_fail(err, "%s: \"__metadata__\" key '%s' is a JSON %s, expected a string",
                           path, key, json_kind(val));
        char *k = strdup(key), *s = strdup(json_string_value(val));
        f->meta_kv[2 * f->n_meta] = k;
        f->meta_kv[2 * f->n_meta + 1] = s;
        f->n_meta++;
        if (!k || !s) return sp_fail(err, "%s: out of memory", path);
    }
    return 0;
}

typedef struct range {
    size_t begin, end;
    int idx;
} range;

static int cmp_range(const void *a, const void *b) {
    const range *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return (x->end > y->end) - (x->end < y->end);
}

/* Rejects tensors sharing bytes. Empty tensors own no bytes and cannot overlap. */
static int check_overlaps(const sp_st_file *f, const unsigned char *data, const char *path,
                          sp_error *err) {
    range *r = malloc(((size_t)f->n_tensors + 1) * sizeof *r);
    if (!r) return sp_fail(err, "%s: out of memory", path);
    for (int i = 0; i < f->n_tensors; i++) {
        r[i].begin = (size_t)((const unsigned char *)f->tensors[i].data - data);
        r[i].end = r[i].begin + f->tensors[i].nbytes;
        r[i].idx = i;
    }
    qsort(r, (size_t)f->n_tensors, sizeof *r, cmp_range);
    size_t max_end = 0;
    int owner = -1, rc = 0;
    for (int i = 0; i < f->n_tensors && rc == 0; i++) {
        if (r[i].begin == r[i].end) continue;
        if (owner >= 0 && r[i].begin < max_end) {
            const sp_st_tensor *a = &f->tensors[r[i].idx], *b = &f->tensors[owner];
            size_t b_begin = (size_t)((const unsigned char *)b->data - data);
            rc =
                sp_fail(err,
                        "%s: tensor '%s': data_offsets [%zu, %zu] overlap those of tensor '%s' "
                        "[%zu, %zu] (tensors must not share bytes)",
                        path, a->name, r[i].begin, r[i].end, b->name, b_begin, b_begin + b->nbytes);
        }
        if (r[i].end > max_end) max_end = r[i].end, owner = r[i].idx;
    }
    free(r);
    return rc;
}

static int parse_header(sp_st_file *f, const char *hdr, size_t hdr_len, sp_error *err) {
    const char *path = f->path;
    json_error_t je;
    json_t *root = json_loadb(hdr, hdr_len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return sp_fail(err, "%s: header is not valid JSON: %s (at byte %d of the header)", path,
                       je.text, je.position);
    int rc = 0;
    if (!json_is_object(root)) {
        rc = sp_fail(err, "%s: header is a JSON %s, expected an object of tensors", path,
                     json_kind(root));
        goto done;
    }
    f->tensors = calloc(json_object_size(root) + 1, sizeof *f->tensors);
    if (!f->tensors) {
        rc = sp_fail(err, "%s: out of memory", path);
        goto done;
    }
    const unsigned char *data = (const unsigned char *)hdr + hdr_len;
    size_t data_len = f->map_len - 8 - hdr_len;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if ((rc = parse_metadata(f, val, path, err))) goto done;
            continue;
        }
        sp_st_tensor *t = &f->tensors[f->n_tensors];
        if (!(t->name = strdup(key))) {
            rc = sp_fail(err, "%s: out of memory", path);
            goto done;
        }
        f->n_tensors++;
        if ((rc = parse_tensor(t, key, val, data, data_len, path, err))) goto done;
    }
    rc = check_overlaps(f, data, path, err);
done:
    json_decref(root);
    return rc;
}

int sp_st_open(sp_st_file *f, const char *path, sp_error *err) {
    memset(f, 0, sizeof *f);
    if (!(f->path = strdup(path))) return sp_fail(err, "%s: out of memory", path);
    uint64_t hdr_len = 0;
    if (map_file(f, path, &hdr_len, err) != 0 ||
        parse_header(f, (const char *)f->map + 8, (size_t)hdr_len, err) != 0) {
        sp_st_close(f);
        return -1;
    }
    return 0;
}

void sp_st_close(sp_st_file *f) {
    if (f->map) munmap(f->map, f->map_len);
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    for (int i = 0; i < 2 * f->n_meta; i++) free(f->meta_kv[i]);
    free(f->meta_kv);
    free(f->path);
    memset(f, 0, sizeof *f);
}

const sp_st_tensor *sp_st_find(const sp_st_file *f, const char *name) {
    for (int i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *sp_st_metadata(const sp_st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_kv[2 * i], key) == 0) return f->meta_kv[2 * i + 1];
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Writing                                                                                    */
/* ------------------------------------------------------------------------------------------ */

struct sp_st_writer {
    char *path, *tmp;
    int fd;
    int n, next;    /* tensor count; index of the next tensor to put */
    size_t *nbytes; /* [n] */
    char **names;   /* [n] for error messages */
};

static void writer_free(sp_st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) free(w->names[i]);
    free(w->names);
    free(w->nbytes);
    free(w->tmp);
    free(w->path);
    free(w);
}

void sp_st_writer_abort(sp_st_writer *w) {
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    if (w->tmp) unlink(w->tmp);
    writer_free(w);
}

/* Validates one tensor description and returns its byte size in *nbytes. */
static int check_out(const sp_st_out *t, const char *path, size_t *nbytes, sp_error *err) {
    if (!t->name) return sp_fail(err, "%s: a tensor has no name", path);
    if (strcmp(t->name, "__metadata__") == 0)
        return sp_fail(err, "%s: '__metadata__' is reserved and cannot name a tensor", path);
    if ((unsigned)t->dtype >= SP_DTYPE_COUNT)
        return sp_fail(err, "%s: tensor '%s': invalid dtype %d", path, t->name, (int)t->dtype);
    if (t->ndim < 0 || t->ndim > SP_ST_MAX_DIMS)
        return sp_fail(err, "%s: tensor '%s': %d dimensions, expected 0 to %d", path, t->name,
                       t->ndim, SP_ST_MAX_DIMS);
    int64_t numel = 1, nb;
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] < 0)
            return sp_fail(err, "%s: tensor '%s': negative dimension %" PRId64, path, t->name,
                           t->shape[i]);
        if (__builtin_mul_overflow(numel, t->shape[i], &numel))
            return sp_fail(err, "%s: tensor '%s': too many elements", path, t->name);
    }
    if (__builtin_mul_overflow(numel, (int64_t)sp_dtype_size(t->dtype), &nb))
        return sp_fail(err, "%s: tensor '%s': too many bytes", path, t->name);
    *nbytes = (size_t)nb;
    return 0;
}

static json_t *tensor_entry(const sp_st_out *t, size_t begin, size_t end) {
    json_t *shape = json_array();
    for (int i = 0; i < t->ndim; i++) json_array_append_new(shape, json_integer(t->shape[i]));
    return json_pack("{s:s, s:o, s:[I, I]}", "dtype", sp_dtype_name(t->dtype), "shape", shape,
                     "data_offsets", (json_int_t)begin, (json_int_t)end);
}

/* Builds the header JSON (metadata first, tensors in order, packed back to back). */
static char *build_header(const sp_st_writer *w, const sp_st_out *tensors,
                          const char *const *meta_kv, int n_meta, sp_error *err) {
    json_t *root = json_object();
    int bad = !root;
    if (n_meta > 0) {
        json_t *meta = json_object();
        for (int i = 0; i < n_meta && meta; i++) {
            if (!meta_kv[2 * i] || !meta_kv[2 * i + 1]) {
                json_decref(meta), json_decref(root);
                sp_fail(err, "%s: metadata entry %d has a NULL key or value", w->path, i);
                return NULL;
            }
            bad |= json_object_set_new(meta, meta_kv[2 * i], json_string(meta_kv[2 * i + 1]));
        }
        bad |= json_object_set_new(root, "__metadata__", meta);
    }
    size_t off = 0;
    for (int i = 0; i < w->n && !bad; i++) {
        if (json_object_get(root, tensors[i].name)) {
            json_decref(root);
            sp_fail(err, "%s: tensor '%s' is listed twice", w->path, tensors[i].name);
            return NULL;
        }
        bad |= json_object_set_new(root, tensors[i].name,
                                   tensor_entry(&tensors[i], off, off + w->nbytes[i]));
        off += w->nbytes[i];
    }
    char *s = bad ? NULL : json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!s) sp_fail(err, "%s: cannot build the header (invalid UTF-8 in a name?)", w->path);
    return s;
}

/* Writes the 8-byte length and the header padded with spaces so the data starts 8-aligned. */
static int write_header(sp_st_writer *w, const char *hdr, sp_error *err) {
    size_t len = strlen(hdr), padded = (len + 7) & ~(size_t)7;
    unsigned char *buf = malloc(8 + padded);
    if (!buf) return sp_fail(err, "%s: out of memory", w->path);
    store_le64(buf, padded);
    memcpy(buf + 8, hdr, len);
    memset(buf + 8 + len, ' ', padded - len);
    int rc = sp__write_all(w->fd, buf, 8 + padded);
    int e = errno;
    free(buf);
    if (rc != 0) return sp_fail(err, "%s: write failed: %s", w->path, strerror(e));
    return 0;
}

sp_st_writer *sp_st_writer_open(const char *path, const sp_st_out *tensors, int n,
                                const char *const *meta_kv, int n_meta, sp_error *err) {
    sp_st_writer *w = calloc(1, sizeof *w);
    if (!w || n < 0 || n_meta < 0 || !(w->path = strdup(path))) {
        sp_fail(err, "%s: %s", path, w ? "invalid tensor or metadata count" : "out of memory");
        writer_free(w);
        return NULL;
    }
    w->fd = -1;
    w->nbytes = calloc((size_t)n + 1, sizeof *w->nbytes);
    w->names = calloc((size_t)n + 1, sizeof *w->names);
    if (!w->nbytes || !w->names) goto oom;
    for (; w->n < n; w->n++) {
        if (check_out(&tensors[w->n], path, &w->nbytes[w->n], err)) goto fail;
        if (!(w->names[w->n] = strdup(tensors[w->n].name))) goto oom;
    }
    char *hdr = build_header(w, tensors, meta_kv, n_meta, err);
    if (!hdr) goto fail;
    w->fd = sp__temp_beside(path, &w->tmp, err);
    int rc = w->fd < 0 ? -1 : write_header(w, hdr, err);
    free(hdr);
    if (rc != 0) goto fail;
    return w;
oom:
    sp_fail(err, "%s: out of memory", path);
fail:
    sp_st_writer_abort(w);
    return NULL;
}

int sp_st_writer_put(sp_st_writer *w, const void *data, size_t nbytes, sp_error *err) {
    int rc = 0;
    if (w->next >= w->n)
        rc = sp_fail(err, "%s: all %d tensors were already written", w->path, w->n);
    else if (nbytes != w->nbytes[w->next])
        rc = sp_fail(err, "%s: tensor '%s': got %zu bytes, its shape and dtype need %zu", w->path,
                     w->names[w->next], nbytes, w->nbytes[w->next]);
    else if (nbytes > 0 && !data)
        rc = sp_fail(err, "%s: tensor '%s': no data", w->path, w->names[w->next]);
    else if (sp__write_all(w->fd, data, nbytes) != 0)
        rc = sp_fail(err, "%s: write failed: %s", w->path, strerror(errno));
    if (rc != 0) {
        sp_st_writer_abort(w);
        return -1;
    }
    w->next++;
    return 0;
}

int sp_st_writer_commit(sp_st_writer *w, sp_error *err) {
    if (w->next != w->n) {
        sp_fail(err, "%s: only %d of %d tensors were written", w->path, w->next, w->n);
        sp_st_writer_abort(w);
        return -1;
    }
    int rc = sp__commit(w->fd, w->tmp, w->path, err);
    w->fd = -1;
    writer_free(w);
    return rc == 0 ? 0 : -1;
}

int sp_st_write(const char *path, const sp_st_out *tensors, int n, const char *const *meta_kv,
                int n_meta, sp_error *err) {
    sp_st_writer *w = sp_st_writer_open(path, tensors, n, meta_kv, n_meta, err);
    if (!w) return -1;
    for (int i = 0; i < n; i++)
        if (sp_st_writer_put(w, tensors[i].data, w->nbytes[i], err) != 0) return -1;
    return sp_st_writer_commit(w, err);
}
