/* Training checkpoints in HDF5: atomic, checksummed writing; verified reading; the step-*.h5
 * files of a run (newest valid one, pruning); the --init prompt reader; a text summary.
 *
 * Layout (format_version 1; docs/formats-checkpoints.md): /prompt float32 [P, d],
 * /optimizer/<name> float32 ([P, d] when it has P*d elements, else [n]), /rng_state uint64 [4],
 * and root attributes (counters, configuration, fingerprints, metrics, checksum), strings
 * fixed-length. Files use the HDF5 1.8 format (superblock v2, v2 object headers), where HDF5
 * checksums all metadata itself; the "checksum" attribute covers the raw data and the values
 * of every other field. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/fileutil.h"
#include "io/h5util.h"
#include "softprompt/checkpoint.h"
#include "train/hash64.h"

/* Bounds that keep a corrupt or hostile header from asking for absurd allocations. */
#define PROMPT_MAX_DIM (1 << 24)
#define PROMPT_MAX_ELEMS ((size_t)1 << 30)

static const unsigned char HDF5_SIGNATURE[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};

/* ------------------------------------------------------------------------------------------ */
/* Small helpers                                                                              */
/* ------------------------------------------------------------------------------------------ */

static const char *nz(const char *s) {
    return s ? s : "";
}

static const char *created_by_or_default(const sp_checkpoint *c) {
    return c->created_by && c->created_by[0] ? c->created_by : "softprompt";
}

/* ------------------------------------------------------------------------------------------ */
/* Checksum                                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* Optimizer array indices in strcmp order of their names. */
static void optim_order(const sp_checkpoint *c, int order[SP_CHECKPOINT_MAX_OPTIM]) {
    for (int i = 0; i < c->n_optim; i++) order[i] = i;
    for (int i = 1; i < c->n_optim; i++)
        for (int j = i; j > 0 && strcmp(c->optim[order[j - 1]].name, c->optim[order[j]].name) > 0;
             j--) {
            int t = order[j];
            order[j] = order[j - 1], order[j - 1] = t;
        }
}

static void field_i64(sp_h64 *h, const char *name, int64_t v) {
    sp_h64_str(h, name);
    sp_h64_i64(h, v);
}
static void field_f64(sp_h64 *h, const char *name, double v) {
    sp_h64_str(h, name);
    sp_h64_f64(h, v);
}
static void field_str(sp_h64 *h, const char *name, const char *v) {
    sp_h64_str(h, name);
    sp_h64_str(h, nz(v));
}

/* The canonical serialization of every field but the checksum (docs/formats-checkpoints.md):
 * prompt, optimizer arrays in name order, RNG state, then the attributes in name order. */
static uint64_t checkpoint_checksum(const sp_checkpoint *c, const char *created_by) {
    sp_h64 h;
    sp_h64_init(&h);
    sp_h64_str(&h, "prompt");
    sp_h64_u64(&h, (uint64_t)c->n_prompt);
    sp_h64_u64(&h, (uint64_t)c->d);
    sp_h64_update(&h, c->prompt, (size_t)c->n_prompt * (size_t)c->d * sizeof(float));
    int order[SP_CHECKPOINT_MAX_OPTIM];
    optim_order(c, order);
    for (int k = 0; k < c->n_optim; k++) {
        const sp_checkpoint_array *a = &c->optim[order[k]];
        char name[64];
        snprintf(name, sizeof name, "optimizer/%s", a->name);
        sp_h64_str(&h, name);
        sp_h64_u64(&h, a->n);
        sp_h64_update(&h, a->data, a->n * sizeof(float));
    }
    sp_h64_str(&h, "rng_state");
    for (int i = 0; i < 4; i++) sp_h64_u64(&h, c->rng[i]);
    field_f64(&h, "best_metric", c->best_metric);
    field_i64(&h, "best_step", c->best_step);
    field_str(&h, "config_json", c->config_json);
    field_str(&h, "created_by", created_by);
    field_str(&h, "dataset_fingerprint", c->dataset_fingerprint);
    field_i64(&h, "epoch", c->epoch);
    field_i64(&h, "epoch_position", c->epoch_position);
    field_str(&h, "format", SP_CHECKPOINT_FORMAT);
    field_i64(&h, "format_version", SP_CHECKPOINT_VERSION);
    field_f64(&h, "metric", c->metric);
    field_str(&h, "metric_name", c->metric_name);
    field_str(&h, "model_fingerprint", c->model_fingerprint);
    field_i64(&h, "optim_step", c->optim_step);
    field_i64(&h, "step", c->step);
    field_i64(&h, "tokens_seen", c->tokens_seen);
    return sp_h64_final(&h);
}

/* ------------------------------------------------------------------------------------------ */
/* Writing                                                                                    */
/* ------------------------------------------------------------------------------------------ */

static int check_for_write(const char *path, const sp_checkpoint *c, sp_error *err) {
    if (c->n_prompt < 1 || c->d < 1 || !c->prompt)
        return sp_fail(err, "%s: cannot write a checkpoint with an empty prompt (%d x %d)", path,
                       c->n_prompt, c->d);
    if (c->n_prompt > PROMPT_MAX_DIM || c->d > PROMPT_MAX_DIM ||
        (size_t)c->n_prompt * (size_t)c->d > PROMPT_MAX_ELEMS)
        return sp_fail(err, "%s: prompt %d x %d is too large", path, c->n_prompt, c->d);
    if (c->n_optim < 0 || c->n_optim > SP_CHECKPOINT_MAX_OPTIM)
        return sp_fail(err, "%s: %d optimizer arrays (at most %d)", path, c->n_optim,
                       SP_CHECKPOINT_MAX_OPTIM);
    for (int i = 0; i < c->n_optim; i++) {
        const sp_checkpoint_array *a = &c->optim[i];
        size_t len = strnlen(a->name, sizeof a->name);
        if (len == 0 || len == sizeof a->name || strchr(a->name, '/') || a->name[0] == '.')
            return sp_fail(err, "%s: optimizer array %d has an invalid name", path, i);
        if (a->n < 1 || a->n > PROMPT_MAX_ELEMS || !a->data)
            return sp_fail(err, "%s: optimizer array \"%s\" is empty or too large (%zu floats)",
                           path, a->name, a->n);
        for (int j = 0; j < i; j++)
            if (strcmp(c->optim[j].name, a->name) == 0)
                return sp_fail(err, "%s: optimizer array \"%s\" given twice", path, a->name);
    }
    if (c->step < 0 || c->epoch < 0 || c->epoch_position < 0 || c->tokens_seen < 0 ||
        c->optim_step < 0 || c->best_step < -1)
        return sp_fail(err, "%s: negative step, epoch, position, token or optimizer counter", path);
    return 0;
}

/* Fixed-length UTF-8 strings: their bytes live in the attribute message itself, under HDF5's
 * metadata checksums. Variable-length strings would live in the global heap, which HDF5 1.10
 * does not checksum and whose corruption crashes H5Aread; checkpoints never use them. */
static int write_str(hid_t f, const char *name, const char *value, const char *path,
                     sp_error *err) {
    const char *v = nz(value);
    size_t n = strlen(v);
    hid_t t = sp_h5_utf8_type(n ? n : 1, H5T_STR_NULLPAD);
    int rc = sp_h5_write_attr(f, name, t, t, n ? v : "", path, err);
    H5Tclose(t);
    return rc;
}

static int write_i64(hid_t f, const char *name, int64_t v, const char *path, sp_error *err) {
    return sp_h5_write_attr(f, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v, path, err);
}

static int write_f64(hid_t f, const char *name, double v, const char *path, sp_error *err) {
    return sp_h5_write_attr(f, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v, path, err);
}

/* A contiguous (unchunked, uncompressed) dataset, so its bytes lie at one offset in the file. */
static int write_dataset(hid_t loc, const char *name, hid_t ftype, hid_t mtype, int rank,
                         const hsize_t *dims, const void *data, const char *path, sp_error *err) {
    hid_t space = H5Screate_simple(rank, dims, NULL);
    hid_t d =
        space < 0 ? -1 : H5Dcreate2(loc, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t st = d < 0 ? -1 : H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    sp_h5_close(d), sp_h5_close(space);
    return st < 0 ? sp_h5_fail(err, "%s: cannot write dataset \"%s\"", path, name) : 0;
}

static int write_contents(hid_t f, const sp_checkpoint *c, const char *created_by,
                          const char *checksum, const char *path, sp_error *err) {
    hsize_t pd[2] = {(hsize_t)c->n_prompt, (hsize_t)c->d}, four = 4;
    if (write_dataset(f, "prompt", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, pd, c->prompt, path, err))
        return -1;
    hid_t g = H5Gcreate2(f, "optimizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return sp_h5_fail(err, "%s: cannot create group \"optimizer\"", path);
    H5Gclose(g);
    for (int i = 0; i < c->n_optim; i++) {
        const sp_checkpoint_array *a = &c->optim[i];
        /* Arrays shaped like the prompt (AdamW moments) are stored [P, d] for readability. */
        int matrix = a->n == (size_t)c->n_prompt * (size_t)c->d;
        hsize_t n = a->n;
        char name[48];
        snprintf(name, sizeof name, "optimizer/%s", a->name);
        if (write_dataset(f, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, matrix ? 2 : 1,
                          matrix ? pd : &n, a->data, path, err))
            return -1;
    }
    if (write_dataset(f, "rng_state", H5T_STD_U64LE, H5T_NATIVE_UINT64, 1, &four, c->rng, path,
                      err) ||
        write_str(f, "format", SP_CHECKPOINT_FORMAT, path, err) ||
        write_i64(f, "format_version", SP_CHECKPOINT_VERSION, path, err) ||
        write_i64(f, "step", c->step, path, err) || write_i64(f, "epoch", c->epoch, path, err) ||
        write_i64(f, "epoch_position", c->epoch_position, path, err) ||
        write_i64(f, "tokens_seen", c->tokens_seen, path, err) ||
        write_i64(f, "optim_step", c->optim_step, path, err) ||
        write_str(f, "config_json", c->config_json, path, err) ||
        write_str(f, "model_fingerprint", c->model_fingerprint, path, err) ||
        write_str(f, "dataset_fingerprint", c->dataset_fingerprint, path, err) ||
        write_str(f, "metric_name", c->metric_name, path, err) ||
        write_f64(f, "metric", c->metric, path, err) ||
        write_f64(f, "best_metric", c->best_metric, path, err) ||
        write_i64(f, "best_step", c->best_step, path, err) ||
        write_str(f, "created_by", created_by, path, err) ||
        write_str(f, "checksum", checksum, path, err))
        return -1;
    return 0;
}

/* Jenkins' lookup3 hashlittle(), byte by byte: the checksum of HDF5 metadata. */
static uint32_t rot32(uint32_t x, int k) {
    return (x << k) | (x >> (32 - k));
}

static uint32_t h5_lookup3(const unsigned char *k, size_t len) {
    uint32_t a, b, c;
    a = b = c = 0xdeadbeefu + (uint32_t)len;
    for (; len > 12; len -= 12, k += 12) {
        a += k[0] | (uint32_t)k[1] << 8 | (uint32_t)k[2] << 16 | (uint32_t)k[3] << 24;
        b += k[4] | (uint32_t)k[5] << 8 | (uint32_t)k[6] << 16 | (uint32_t)k[7] << 24;
        c += k[8] | (uint32_t)k[9] << 8 | (uint32_t)k[10] << 16 | (uint32_t)k[11] << 24;
        a -= c, a ^= rot32(c, 4), c += b;
        b -= a, b ^= rot32(a, 6), a += c;
        c -= b, c ^= rot32(b, 8), b += a;
        a -= c, a ^= rot32(c, 16), c += b;
        b -= a, b ^= rot32(a, 19), a += c;
        c -= b, c ^= rot32(b, 4), b += a;
    }
    if (len == 0) return c;
    uint32_t w[3] = {0, 0, 0};
    for (size_t i = 0; i < len; i++) w[i / 4] += (uint32_t)k[i] << (8 * (i % 4));
    a += w[0], b += w[1], c += w[2];
    c ^= b, c -= rot32(b, 14);
    a ^= c, a -= rot32(c, 11);
    b ^= a, b -= rot32(a, 25);
    c ^= b, c -= rot32(b, 16);
    a ^= c, a -= rot32(c, 4);
    b ^= a, b -= rot32(a, 14);
    c ^= b, c -= rot32(b, 24);
    return c;
}

/* H5Fget_file_image (HDF5 1.10.8) clears the "open for writing" flag in the image's version 2/3
 * superblock without recomputing its checksum, which makes the image unreadable. Recomputes it
 * (fields: signature, version, sizes, flags, 4 addresses of 8 bytes; checksum after them). */
static void fix_superblock_checksum(unsigned char *img, size_t n) {
    const size_t body = 8 + 4 + 4 * 8;
    if (n < body + 4 || memcmp(img, HDF5_SIGNATURE, 8) != 0 || img[8] < 2 || img[8] > 3 ||
        img[9] != 8 || img[10] != 8)
        return;
    uint32_t sum = h5_lookup3(img, body);
    for (int i = 0; i < 4; i++) img[body + (size_t)i] = (unsigned char)(sum >> (8 * i));
}

static int read_contents(hid_t f, sp_checkpoint *c, const char *path, sp_error *err);

/* Opens the image from memory and reads it back in full (checksum included), so a checkpoint
 * that would not read is never written. */
static int verify_image(void *image, size_t size, const char *path, sp_error *err) {
    /* The core driver reads an existing file of the given name instead of the image, so the
     * image gets a name that is not a file. */
    char *label = NULL;
    if (asprintf(&label, "%s.in-memory-image", path) < 0)
        return sp_fail(err, "%s: out of memory", path);
    struct stat st;
    int clash = stat(label, &st) == 0;
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_core(fapl, 1 << 20, 0);
    H5Pset_file_image(fapl, image, size); /* copies */
    H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
    hid_t f = clash ? -1 : H5Fopen(label, H5F_ACC_RDONLY, fapl);
    free(label);
    if (f < 0) {
        sp_h5_fail(err, "%s: internal error: the HDF5 image built in memory does not open", path);
        H5Pclose(fapl);
        return -1;
    }
    H5Pclose(fapl);
    sp_checkpoint c;
    memset(&c, 0, sizeof c);
    int rc = read_contents(f, &c, path, err);
    H5Fclose(f);
    H5Eclear2(H5E_DEFAULT);
    sp_checkpoint_free(&c);
    return rc == 0 ? 0 : sp_fail_prefix(err, "%s: internal error: verifying the image", path);
}

/* Builds the whole file in memory (HDF5's core driver, no backing store) and returns its image.
 * HDF5 never touches the disk: a full disk or an I/O error in the middle of H5Fflush/H5Fclose
 * leaves HDF5 1.10 with a half-closed file that crashes the process at exit (seen with a file
 * size limit), so the bytes are written by plain POSIX calls below, whose errors are clean. */
static int build_image(const sp_checkpoint *c, const char *path, void **image, size_t *size,
                       sp_error *err) {
    const char *created_by = created_by_or_default(c);
    char checksum[17];
    sp_h64_hex(checkpoint_checksum(c, created_by), checksum);
    *image = NULL, *size = 0;
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_core(fapl, 1 << 20, 0);
    /* The 1.8 file format (superblock v2, v2 object headers, dense attribute storage): HDF5
     * checksums all metadata, and every HDF5 since 1.8 (any h5py) reads it. */
    H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18);
    H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG); /* closing the file closes everything */
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (f < 0) sp_h5_fail(err, "%s: cannot create an HDF5 file in memory", path);
    H5Pclose(fapl);
    if (f < 0) return -1;
    int rc = write_contents(f, c, created_by, checksum, path, err);
    if (rc == 0 && H5Fflush(f, H5F_SCOPE_GLOBAL) < 0)
        rc = sp_h5_fail(err, "%s: cannot flush the HDF5 image", path);
    ssize_t n = rc == 0 ? H5Fget_file_image(f, NULL, 0) : -1;
    if (rc == 0 && n <= 0) rc = sp_h5_fail(err, "%s: cannot get the HDF5 file image", path);
    if (rc == 0 && !(*image = malloc((size_t)n)))
        rc = sp_fail(err, "%s: out of memory for a %zd-byte checkpoint", path, n);
    if (rc == 0 && H5Fget_file_image(f, *image, (size_t)n) != n)
        rc = sp_h5_fail(err, "%s: cannot get the HDF5 file image", path);
    if (H5Fclose(f) < 0 && rc == 0) rc = sp_h5_fail(err, "%s: cannot close the HDF5 image", path);
    H5Eclear2(H5E_DEFAULT);
    if (rc == 0) {
        fix_superblock_checksum(*image, (size_t)n);
        rc = verify_image(*image, (size_t)n, path, err);
    }
    if (rc != 0) {
        free(*image);
        *image = NULL;
        return -1;
    }
    *size = (size_t)n;
    return 0;
}

/* path.tmp.XXXXXX in the same directory: write, fsync, close, rename over path, fsync the
 * directory. Any failure removes the temporary and leaves an existing path untouched. */
static int write_atomically(const char *path, const void *data, size_t n, sp_error *err) {
    char *tmp;
    int fd = sp_temp_beside(path, &tmp, err); /* 0644: read by every rank and by users */
    if (fd < 0) return -1;
    int rc = 0;
    if (sp_write_all(fd, data, n) != 0)
        rc = sp_fail(err, "%s: cannot write the temporary file %s: %s", path, tmp, strerror(errno));
    else if (fsync(fd) != 0)
        rc = sp_fail(err, "%s: cannot sync the temporary file %s: %s", path, tmp, strerror(errno));
    if (close(fd) != 0 && rc == 0)
        rc = sp_fail(err, "%s: cannot close the temporary file %s: %s", path, tmp, strerror(errno));
    if (rc == 0 && rename(tmp, path) != 0)
        rc = sp_fail(err, "%s: cannot rename the temporary file %s to it: %s", path, tmp,
                     strerror(errno));
    if (rc != 0) {
        unlink(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    /* Some file systems refuse fsync on directories (EINVAL); only real I/O errors count. */
    int e = sp_fsync_parent_dir(path);
    if (e == EIO) {
        char *dir = sp_dir_of(path);
        rc = sp_fail(err, "%s: written, but syncing directory %s failed: %s", path, dir ? dir : ".",
                     strerror(e));
        free(dir);
    }
    return rc;
}

int sp_checkpoint_write(const char *path, const sp_checkpoint *c, sp_error *err) {
    sp_h5_quiet();
    if (check_for_write(path, c, err) != 0) return -1;
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return sp_fail(err, "%s: is a directory", path);
    void *image;
    size_t size;
    if (build_image(c, path, &image, &size, err) != 0) return -1;
    int rc = write_atomically(path, image, size, err);
    free(image);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Reading                                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* Checks that path is a regular, non-empty file starting with the HDF5 signature; with
 * need_v2, that its superblock is version 2 or later (metadata checksummed), as every
 * checkpoint is: older superblocks are unchecked and not something softprompt writes. */
static int precheck(const char *path, int need_v2, sp_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return sp_fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    unsigned char head[9];
    ssize_t got = -1;
    int e = 0;
    if (fstat(fd, &st) != 0)
        e = errno;
    else if (S_ISREG(st.st_mode) && (got = pread(fd, head, sizeof head, 0)) < 0)
        e = errno;
    close(fd);
    if (e) return sp_fail(err, "%s: cannot read: %s", path, strerror(e));
    if (!S_ISREG(st.st_mode)) return sp_fail(err, "%s: not a regular file", path);
    if (st.st_size == 0) return sp_fail(err, "%s: empty file (truncated?)", path);
    if (got < 9 || memcmp(head, HDF5_SIGNATURE, 8) != 0)
        return sp_fail(err, "%s: not an HDF5 file (no HDF5 signature at its start; %lld bytes)",
                       path, (long long)st.st_size);
    if (need_v2 && head[8] < 2)
        return sp_fail(err,
                       "%s: HDF5 superblock version %d: not a softprompt checkpoint (those use "
                       "version 2 or later, whose metadata HDF5 checksums)",
                       path, head[8]);
    return 0;
}

static hid_t open_h5(const char *path, sp_error *err) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
    /* Read-only opens need no lock; file systems without flock (some Lustre/NFS mounts) would
     * otherwise refuse the open. */
    H5Pset_file_locking(fapl, 0, 1);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (f < 0) sp_h5_fail(err, "%s: cannot open as HDF5 (truncated or corrupt file?)", path);
    H5Pclose(fapl); /* after sp_h5_fail: every HDF5 call clears the error stack */
    return f;
}

/* Opens scalar root attribute name (-1 with a message when absent or not scalar). */
static hid_t open_attr(hid_t f, const char *name, const char *path, sp_error *err) {
    hid_t a = sp_h5_open_root_attr(f, name, path, err);
    if (a == -2) return sp_fail(err, "%s: missing root attribute \"%s\"", path, name);
    return a;
}

/* Reads a fixed-length string attribute into a malloc'd string (trailing padding removed).
 * Variable-length strings are refused: they are read from HDF5's unchecksummed global heap,
 * where a flipped byte crashes HDF5 1.10 instead of failing. */
static int read_str(hid_t f, const char *name, char **out, const char *path, sp_error *err) {
    *out = NULL;
    hid_t a = open_attr(f, name, path, err);
    if (a < 0) return -1;
    hid_t ft = H5Aget_type(a);
    int rc = 0;
    if (ft < 0 || H5Tget_class(ft) != H5T_STRING) {
        rc = sp_fail(err, "%s: root attribute \"%s\" must be a string", path, name);
    } else if (H5Tis_variable_str(ft) != 0) {
        rc = sp_fail(err,
                     "%s: root attribute \"%s\" is a variable-length string; checkpoints store "
                     "fixed-length strings (was the file edited?)",
                     path, name);
    } else {
        size_t n = H5Tget_size(ft);
        char pad_char = H5Tget_strpad(ft) == H5T_STR_SPACEPAD ? ' ' : '\0';
        char *v = n < ((size_t)1 << 30) ? calloc(n + 1, 1) : NULL;
        if (!v)
            rc = sp_fail(err, "%s: root attribute \"%s\": out of memory", path, name);
        else if (H5Aread(a, ft, v) < 0)
            rc = sp_h5_fail(err, "%s: cannot read root attribute \"%s\"", path, name);
        else
            while (n > 0 && (v[n - 1] == pad_char || v[n - 1] == '\0')) v[--n] = '\0';
        if (rc == 0 && strlen(v) != n)
            rc = sp_fail(err, "%s: root attribute \"%s\" contains a NUL byte", path, name);
        *out = rc == 0 ? v : (free(v), NULL);
    }
    sp_h5_close(ft), H5Aclose(a);
    return rc;
}

static int read_i64(hid_t f, const char *name, int64_t lo, int64_t *out, const char *path,
                    sp_error *err) {
    hid_t a = open_attr(f, name, path, err);
    if (a < 0) return -1;
    hid_t ft = H5Aget_type(a);
    int ok = ft >= 0 && H5Tget_class(ft) == H5T_INTEGER && H5Tget_size(ft) <= 8 &&
             !(H5Tget_size(ft) == 8 && H5Tget_sign(ft) == H5T_SGN_NONE);
    sp_h5_close(ft);
    herr_t st = ok ? H5Aread(a, H5T_NATIVE_INT64, out) : -1;
    H5Aclose(a);
    if (!ok) return sp_fail(err, "%s: root attribute \"%s\" must be a signed integer", path, name);
    if (st < 0) return sp_h5_fail(err, "%s: cannot read root attribute \"%s\"", path, name);
    if (*out < lo)
        return sp_fail(err, "%s: root attribute \"%s\" is %" PRId64 " (must be >= %" PRId64 ")",
                       path, name, *out, lo);
    return 0;
}

static int read_f64(hid_t f, const char *name, double *out, const char *path, sp_error *err) {
    hid_t a = open_attr(f, name, path, err);
    if (a < 0) return -1;
    hid_t ft = H5Aget_type(a);
    int ok = ft >= 0 && H5Tget_class(ft) == H5T_FLOAT;
    sp_h5_close(ft);
    herr_t st = ok ? H5Aread(a, H5T_NATIVE_DOUBLE, out) : -1;
    H5Aclose(a);
    if (!ok) return sp_fail(err, "%s: root attribute \"%s\" must be a float", path, name);
    return st < 0 ? sp_h5_fail(err, "%s: cannot read root attribute \"%s\"", path, name) : 0;
}

static const char *class_name(hid_t t) {
    switch (H5Tget_class(t)) {
    case H5T_INTEGER:
        return "integer";
    case H5T_FLOAT:
        return "float";
    case H5T_STRING:
        return "string";
    case H5T_COMPOUND:
        return "compound";
    case H5T_ARRAY:
        return "array";
    case H5T_ENUM:
        return "enum";
    default:
        return "non-numeric";
    }
}

/* Opens dataset name under loc (shown as shown in messages) and checks its rank and element
 * type: kind 'f' float (size 4 when exact_size), 'u' unsigned 64-bit integer. dims receives the
 * shape. Returns the dataset or -1. */
static hid_t open_dataset(hid_t loc, const char *name, const char *shown, char kind, int exact_size,
                          int min_rank, int max_rank, hsize_t dims[2], const char *path,
                          sp_error *err) {
    htri_t has = H5Lexists(loc, name, H5P_DEFAULT);
    if (has < 0) return sp_h5_fail(err, "%s: cannot look up dataset \"%s\"", path, shown);
    if (!has) return sp_fail(err, "%s: missing dataset \"%s\"", path, shown);
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0) return sp_h5_fail(err, "%s: \"%s\" is not a readable dataset", path, shown);
    hid_t t = H5Dget_type(d), space = H5Dget_space(d);
    int rank = space < 0 ? -1 : H5Sget_simple_extent_ndims(space);
    int rc = 0;
    if (t < 0 || space < 0) {
        rc = sp_h5_fail(err, "%s: cannot inspect dataset \"%s\"", path, shown);
    } else if (kind == 'f' &&
               (H5Tget_class(t) != H5T_FLOAT || (exact_size && H5Tget_size(t) != 4))) {
        rc = H5Tget_class(t) == H5T_FLOAT
                 ? sp_fail(err, "%s: dataset \"%s\" must be float32 (found %zu-byte floats)", path,
                           shown, H5Tget_size(t))
                 : sp_fail(err, "%s: dataset \"%s\" must be float32 (found %s)", path, shown,
                           class_name(t));
    } else if (kind == 'u' && (H5Tget_class(t) != H5T_INTEGER || H5Tget_size(t) != 8 ||
                               H5Tget_sign(t) != H5T_SGN_NONE)) {
        rc = sp_fail(err, "%s: dataset \"%s\" must be uint64 (found %zu-byte %s)", path, shown,
                     H5Tget_size(t), class_name(t));
    } else if (rank < min_rank || rank > max_rank) {
        rc = min_rank == max_rank
                 ? sp_fail(err, "%s: dataset \"%s\" must be %d-D (found %d-D)", path, shown,
                           min_rank, rank)
                 : sp_fail(err, "%s: dataset \"%s\" must be %d-D to %d-D (found %d-D)", path, shown,
                           min_rank, max_rank, rank);
    } else {
        dims[0] = dims[1] = 1;
        H5Sget_simple_extent_dims(space, dims, NULL);
    }
    sp_h5_close(t), sp_h5_close(space);
    if (rc != 0) {
        H5Dclose(d);
        return -1;
    }
    return d;
}

/* Reads all of dataset d into a new buffer of n elements of mem_type (elem bytes each). */
static void *read_all(hid_t d, hid_t mem_type, size_t n, size_t elem, const char *shown,
                      const char *path, sp_error *err) {
    void *buf = malloc(n * elem);
    if (!buf) {
        sp_fail(err, "%s: dataset \"%s\": out of memory for %zu elements", path, shown, n);
        return NULL;
    }
    if (H5Dread(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        sp_h5_fail(err, "%s: cannot read dataset \"%s\" (truncated or corrupt file?)", path, shown);
        free(buf);
        return NULL;
    }
    return buf;
}

static int check_prompt_dims(const hsize_t dims[2], const char *path, sp_error *err) {
    if (dims[0] < 1 || dims[1] < 1 || dims[0] > PROMPT_MAX_DIM || dims[1] > PROMPT_MAX_DIM ||
        dims[0] * dims[1] > PROMPT_MAX_ELEMS)
        return sp_fail(err, "%s: dataset \"prompt\" has an invalid shape [%llu, %llu]", path,
                       (unsigned long long)dims[0], (unsigned long long)dims[1]);
    return 0;
}

static int read_prompt(hid_t f, sp_checkpoint *c, const char *path, sp_error *err) {
    hsize_t dims[2];
    hid_t d = open_dataset(f, "prompt", "prompt", 'f', 1, 2, 2, dims, path, err);
    if (d < 0) return -1;
    if (check_prompt_dims(dims, path, err) != 0) {
        H5Dclose(d);
        return -1;
    }
    c->n_prompt = (int)dims[0], c->d = (int)dims[1];
    c->prompt =
        read_all(d, H5T_NATIVE_FLOAT, dims[0] * dims[1], sizeof(float), "prompt", path, err);
    H5Dclose(d);
    return c->prompt ? 0 : -1;
}

static int read_optimizer(hid_t f, sp_checkpoint *c, const char *path, sp_error *err) {
    htri_t has = H5Lexists(f, "optimizer", H5P_DEFAULT);
    if (has <= 0)
        return has < 0 ? sp_h5_fail(err, "%s: cannot look up group \"optimizer\"", path)
                       : sp_fail(err, "%s: missing group \"optimizer\"", path);
    hid_t g = H5Gopen2(f, "optimizer", H5P_DEFAULT);
    H5G_info_t info;
    if (g < 0 || H5Gget_info(g, &info) < 0) {
        sp_h5_close(g);
        return sp_h5_fail(err, "%s: \"optimizer\" is not a readable group", path);
    }
    if (info.nlinks > SP_CHECKPOINT_MAX_OPTIM) {
        H5Gclose(g);
        return sp_fail(err, "%s: group \"optimizer\" holds %llu arrays (at most %d)", path,
                       (unsigned long long)info.nlinks, SP_CHECKPOINT_MAX_OPTIM);
    }
    int rc = 0;
    for (hsize_t i = 0; i < info.nlinks && rc == 0; i++) {
        sp_checkpoint_array *a = &c->optim[c->n_optim];
        ssize_t len = H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, a->name,
                                         sizeof a->name, H5P_DEFAULT);
        if (len < 0) {
            rc = sp_h5_fail(err, "%s: cannot list group \"optimizer\"", path);
            break;
        }
        if ((size_t)len >= sizeof a->name) {
            rc = sp_fail(err, "%s: optimizer array name \"optimizer/%s...\" is too long", path,
                         a->name);
            break;
        }
        char shown[48];
        snprintf(shown, sizeof shown, "optimizer/%s", a->name);
        hsize_t dims[2];
        hid_t d = open_dataset(g, a->name, shown, 'f', 1, 1, 2, dims, path, err);
        if (d < 0) {
            rc = -1;
            break;
        }
        int rank = 1;
        hid_t space = H5Dget_space(d);
        if (space >= 0) rank = H5Sget_simple_extent_ndims(space), H5Sclose(space);
        if (rank == 2 && (dims[0] != (hsize_t)c->n_prompt || dims[1] != (hsize_t)c->d))
            rc = sp_fail(err,
                         "%s: dataset \"%s\" is [%llu, %llu] but a 2-D optimizer array must "
                         "match the prompt [%d, %d]",
                         path, shown, (unsigned long long)dims[0], (unsigned long long)dims[1],
                         c->n_prompt, c->d);
        else if (rank == 1 && (dims[0] < 1 || dims[0] > PROMPT_MAX_ELEMS))
            rc = sp_fail(err, "%s: dataset \"%s\" has an invalid length %llu", path, shown,
                         (unsigned long long)dims[0]);
        if (rc == 0) {
            a->n = rank == 2 ? (size_t)(dims[0] * dims[1]) : (size_t)dims[0];
            a->data = read_all(d, H5T_NATIVE_FLOAT, a->n, sizeof(float), shown, path, err);
            if (a->data)
                c->n_optim++;
            else
                rc = -1;
        }
        H5Dclose(d);
    }
    H5Gclose(g);
    return rc;
}

static int read_rng(hid_t f, sp_checkpoint *c, const char *path, sp_error *err) {
    hsize_t dims[2];
    hid_t d = open_dataset(f, "rng_state", "rng_state", 'u', 1, 1, 1, dims, path, err);
    if (d < 0) return -1;
    int rc = 0;
    if (dims[0] != 4)
        rc = sp_fail(err, "%s: dataset \"rng_state\" must hold 4 values (found %llu)", path,
                     (unsigned long long)dims[0]);
    else if (H5Dread(d, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, c->rng) < 0)
        rc = sp_h5_fail(err, "%s: cannot read dataset \"rng_state\"", path);
    H5Dclose(d);
    return rc;
}

/* format and format_version, checked first so a foreign file gets a plain answer. */
static int read_format(hid_t f, const char *path, sp_error *err) {
    htri_t has = H5Aexists(f, "format");
    if (has <= 0)
        return has < 0 ? sp_h5_fail(err, "%s: cannot look up root attribute \"format\"", path)
                       : sp_fail(err,
                                 "%s: missing root attribute \"format\" (not a softprompt "
                                 "checkpoint)",
                                 path);
    char *format = NULL;
    if (read_str(f, "format", &format, path, err) != 0) return -1;
    int same = strcmp(format, SP_CHECKPOINT_FORMAT) == 0;
    if (!same)
        sp_fail(err, "%s: format is \"%.100s\", not \"%s\" (not a softprompt checkpoint)", path,
                format, SP_CHECKPOINT_FORMAT);
    free(format);
    if (!same) return -1;
    int64_t version;
    if (read_i64(f, "format_version", INT64_MIN, &version, path, err) != 0) return -1;
    if (version > SP_CHECKPOINT_VERSION)
        return sp_fail(err,
                       "%s: format_version %" PRId64
                       " is newer than this softprompt reads (%d); upgrade softprompt",
                       path, version, SP_CHECKPOINT_VERSION);
    if (version != SP_CHECKPOINT_VERSION)
        return sp_fail(err, "%s: unsupported format_version %" PRId64 " (expected %d)", path,
                       version, SP_CHECKPOINT_VERSION);
    return 0;
}

static int is_hex16(const char *s) {
    if (strlen(s) != 16) return 0;
    for (int i = 0; i < 16; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

static int read_contents(hid_t f, sp_checkpoint *c, const char *path, sp_error *err) {
    char *stored = NULL;
    if (read_format(f, path, err) || read_prompt(f, c, path, err) ||
        read_optimizer(f, c, path, err) || read_rng(f, c, path, err) ||
        read_i64(f, "step", 0, &c->step, path, err) ||
        read_i64(f, "epoch", 0, &c->epoch, path, err) ||
        read_i64(f, "epoch_position", 0, &c->epoch_position, path, err) ||
        read_i64(f, "tokens_seen", 0, &c->tokens_seen, path, err) ||
        read_i64(f, "optim_step", 0, &c->optim_step, path, err) ||
        read_str(f, "config_json", &c->config_json, path, err) ||
        read_str(f, "model_fingerprint", &c->model_fingerprint, path, err) ||
        read_str(f, "dataset_fingerprint", &c->dataset_fingerprint, path, err) ||
        read_str(f, "metric_name", &c->metric_name, path, err) ||
        read_f64(f, "metric", &c->metric, path, err) ||
        read_f64(f, "best_metric", &c->best_metric, path, err) ||
        read_i64(f, "best_step", -1, &c->best_step, path, err) ||
        read_str(f, "created_by", &c->created_by, path, err) ||
        read_str(f, "checksum", &stored, path, err))
        return -1;
    char computed[17];
    sp_h64_hex(checkpoint_checksum(c, c->created_by), computed);
    int rc = 0;
    if (!is_hex16(stored))
        rc = sp_fail(err,
                     "%s: root attribute \"checksum\" is \"%.40s\", not 16 hex digits: the file "
                     "is corrupt",
                     path, stored);
    else if (strcmp(stored, computed) != 0)
        rc = sp_fail(err, "%s: checksum mismatch: the file is corrupt (stored %s, computed %s)",
                     path, stored, computed);
    free(stored);
    return rc;
}

void sp_checkpoint_free(sp_checkpoint *c) {
    if (!c) return;
    free(c->prompt);
    for (int i = 0; i < c->n_optim && i < SP_CHECKPOINT_MAX_OPTIM; i++) free(c->optim[i].data);
    free(c->config_json), free(c->model_fingerprint), free(c->dataset_fingerprint);
    free(c->metric_name), free(c->created_by);
    memset(c, 0, sizeof *c);
}

int sp_checkpoint_read(const char *path, sp_checkpoint *c, sp_error *err) {
    memset(c, 0, sizeof *c);
    sp_h5_quiet();
    if (precheck(path, 1, err) != 0) return -1;
    hid_t f = open_h5(path, err);
    if (f < 0) return -1;
    int rc = read_contents(f, c, path, err);
    if (H5Fclose(f) < 0 && rc == 0) rc = sp_h5_fail(err, "%s: cannot close", path);
    H5Eclear2(H5E_DEFAULT);
    if (rc != 0) sp_checkpoint_free(c);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* --init FILE.h5                                                                             */
/* ------------------------------------------------------------------------------------------ */

/* 1 when the root attribute "format" says softprompt checkpoint, 0 otherwise. */
static int says_checkpoint(hid_t f) {
    if (H5Aexists(f, "format") <= 0) return 0;
    char *format = NULL;
    int yes =
        read_str(f, "format", &format, "", NULL) == 0 && strcmp(format, SP_CHECKPOINT_FORMAT) == 0;
    free(format);
    H5Eclear2(H5E_DEFAULT);
    return yes;
}

int sp_prompt_read_h5(const char *path, float **prompt, int *n_prompt, int *d, sp_error *err) {
    *prompt = NULL, *n_prompt = 0, *d = 0;
    sp_h5_quiet();
    if (precheck(path, 0, err) != 0) return -1;
    hid_t f = open_h5(path, err);
    if (f < 0) return -1;
    if (says_checkpoint(f)) {
        H5Fclose(f);
        sp_checkpoint c;
        if (sp_checkpoint_read(path, &c, err) != 0) return -1;
        *prompt = c.prompt, *n_prompt = c.n_prompt, *d = c.d;
        c.prompt = NULL;
        sp_checkpoint_free(&c);
        return 0;
    }
    hsize_t dims[2];
    hid_t ds = open_dataset(f, "prompt", "prompt", 'f', 0, 2, 2, dims, path, err);
    float *p = NULL;
    int rc = ds < 0 ? -1 : check_prompt_dims(dims, path, err);
    if (rc == 0) {
        /* HDF5 converts float64 (h5py's default) and other float widths to float32. */
        p = read_all(ds, H5T_NATIVE_FLOAT, dims[0] * dims[1], sizeof(float), "prompt", path, err);
        if (!p) rc = -1;
    }
    for (size_t i = 0; rc == 0 && i < dims[0] * dims[1]; i++)
        if (!isfinite(p[i]))
            rc = sp_fail(err,
                         "%s: dataset \"prompt\" element [%zu, %zu] is %g (not finite as "
                         "float32)",
                         path, i / (size_t)dims[1], i % (size_t)dims[1], (double)p[i]);
    sp_h5_close(ds);
    H5Fclose(f);
    H5Eclear2(H5E_DEFAULT);
    if (rc != 0) {
        free(p);
        return -1;
    }
    *prompt = p, *n_prompt = (int)dims[0], *d = (int)dims[1];
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* The step-*.h5 files of a run                                                               */
/* ------------------------------------------------------------------------------------------ */

char *sp_checkpoint_path(const char *dir, int64_t step) {
    if (step < 0) return NULL;
    char *p = NULL;
    if (asprintf(&p, "%s/step-%012lld.h5", dir, (long long)step) < 0) return NULL;
    return p;
}

/* step-<12 to 18 digits>.h5 exactly; returns the step or -1. */
static int64_t parse_step_name(const char *name) {
    if (strncmp(name, "step-", 5) != 0) return -1;
    const char *p = name + 5;
    int64_t v = 0;
    int n = 0;
    while (*p >= '0' && *p <= '9' && n < 19) v = v * 10 + (*p++ - '0'), n++;
    if (n < 12 || n > 18 || strcmp(p, ".h5") != 0) return -1;
    return v;
}

typedef struct step_file {
    int64_t step;
    char *name;
} step_file;

static int cmp_newest_first(const void *a, const void *b) {
    const step_file *x = a, *y = b;
    if (x->step != y->step) return x->step > y->step ? -1 : 1;
    return strcmp(x->name, y->name);
}

static void free_list(step_file *v, size_t n) {
    for (size_t i = 0; i < n; i++) free(v[i].name);
    free(v);
}

/* Lists dir's step-*.h5 names, newest first. *missing = 1 (and 0 files) when dir does not
 * exist. */
static int list_steps(const char *dir, step_file **out, size_t *count, int *missing,
                      sp_error *err) {
    *out = NULL, *count = 0;
    if (missing) *missing = 0;
    DIR *dp = opendir(dir);
    if (!dp) {
        if (errno == ENOENT && missing) {
            *missing = 1;
            return 0;
        }
        return sp_fail(err, "%s: cannot list the checkpoint directory: %s", dir, strerror(errno));
    }
    step_file *v = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(dp)) != NULL) {
        int64_t step = parse_step_name(e->d_name);
        if (step < 0) continue;
        if (n == cap) {
            size_t nc = cap ? 2 * cap : 16;
            step_file *nv = realloc(v, nc * sizeof *nv);
            if (!nv) {
                rc = sp_fail(err, "%s: out of memory", dir);
                break;
            }
            v = nv, cap = nc;
        }
        if (!(v[n].name = strdup(e->d_name))) {
            rc = sp_fail(err, "%s: out of memory", dir);
            break;
        }
        v[n++].step = step;
    }
    closedir(dp);
    if (rc != 0) {
        free_list(v, n);
        return -1;
    }
    if (n) qsort(v, n, sizeof *v, cmp_newest_first);
    *out = v, *count = n;
    return 0;
}

static char *join(const char *dir, const char *name) {
    char *p = NULL;
    return asprintf(&p, "%s/%s", dir, name) < 0 ? NULL : p;
}

int sp_checkpoint_find_latest(const char *dir, char **path, char **warnings, sp_error *err) {
    *path = NULL;
    if (warnings) *warnings = NULL;
    step_file *v;
    size_t n;
    int missing;
    if (list_steps(dir, &v, &n, &missing, err) != 0) return -1;
    char *warn = NULL;
    size_t warn_len = 0;
    FILE *w = warnings ? open_memstream(&warn, &warn_len) : NULL;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        char *p = join(dir, v[i].name);
        if (!p) {
            rc = sp_fail(err, "%s: out of memory", dir);
            break;
        }
        sp_checkpoint c;
        sp_error e = {{0}};
        if (sp_checkpoint_read(p, &c, &e) == 0) {
            sp_checkpoint_free(&c);
            *path = p;
            break;
        }
        /* The reason usually starts with the path already; do not say it twice. */
        size_t plen = strlen(p);
        const char *reason = strncmp(e.msg, p, plen) == 0 && strncmp(e.msg + plen, ": ", 2) == 0
                                 ? e.msg + plen + 2
                                 : e.msg;
        if (w) fprintf(w, "skipping %s: %s\n", p, reason);
        free(p);
    }
    if (w) fclose(w);
    free_list(v, n);
    if (rc != 0) {
        free(warn);
        return -1;
    }
    if (warnings) {
        if (warn && warn_len == 0) free(warn), warn = NULL;
        *warnings = warn;
    }
    return 0;
}

int sp_checkpoint_prune(const char *dir, int keep_last, const char *keep_also, sp_error *err) {
    if (keep_last < 1)
        return sp_fail(err, "%s: keep_last must be at least 1 (got %d)", dir, keep_last);
    struct stat keep_st;
    int have_keep = keep_also && stat(keep_also, &keep_st) == 0;
    step_file *v;
    size_t n;
    if (list_steps(dir, &v, &n, NULL, err) != 0) return -1;
    int rc = 0;
    for (size_t i = (size_t)keep_last; i < n; i++) {
        char *p = join(dir, v[i].name);
        if (!p) {
            rc = sp_fail(err, "%s: out of memory", dir);
            break;
        }
        struct stat st;
        int is_keep = have_keep && stat(p, &st) == 0 && st.st_dev == keep_st.st_dev &&
                      st.st_ino == keep_st.st_ino;
        if (!is_keep && unlink(p) != 0 && errno != ENOENT && rc == 0)
            rc = sp_fail(err, "%s: cannot delete old checkpoint: %s", p, strerror(errno));
        free(p);
    }
    free_list(v, n);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Description                                                                                */
/* ------------------------------------------------------------------------------------------ */

static double rms(const float *x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return n ? sqrt(s / (double)n) : 0;
}

/* One "  key = value" line per scalar of the configuration, nested objects as dotted names. */
static void describe_json(FILE *out, const char *prefix, json_t *v, int *lines) {
    const char *key;
    json_t *x;
    json_object_foreach(v, key, x) {
        char name[256];
        snprintf(name, sizeof name, "%s%s%s", prefix, prefix[0] ? "." : "", key);
        if (json_is_object(x)) {
            describe_json(out, name, x, lines);
            continue;
        }
        if (++*lines > 60) {
            if (*lines == 61) fprintf(out, "    ...\n");
            continue;
        }
        char *s = json_dumps(x, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(12));
        if (s && strlen(s) > 100) strcpy(s + 96, "...");
        fprintf(out, "    %s = %s\n", name, s ? s : "?");
        free(s);
    }
}

int sp_checkpoint_describe(FILE *out, const char *path, sp_error *err) {
    sp_checkpoint c;
    if (sp_checkpoint_read(path, &c, err) != 0) return -1;
    size_t np = (size_t)c.n_prompt * (size_t)c.d;
    fprintf(out, "%s: softprompt checkpoint (format_version %d, checksum verified)\n", path,
            SP_CHECKPOINT_VERSION);
    fprintf(out, "  created by        %s\n", c.created_by);
    fprintf(out, "  step              %" PRId64 " (optimizer step %" PRId64 ")\n", c.step,
            c.optim_step);
    fprintf(out, "  data position     epoch %" PRId64 ", %" PRId64 " examples into it\n", c.epoch,
            c.epoch_position);
    fprintf(out, "  tokens seen       %" PRId64 "\n", c.tokens_seen);
    fprintf(out, "  prompt            [%d, %d] float32, RMS %.6g\n", c.n_prompt, c.d,
            rms(c.prompt, np));
    if (c.n_optim == 0) fprintf(out, "  optimizer state   none\n");
    for (int i = 0; i < c.n_optim; i++)
        fprintf(out, "  optimizer/%-7s %zu floats, RMS %.6g\n", c.optim[i].name, c.optim[i].n,
                rms(c.optim[i].data, c.optim[i].n));
    fprintf(out,
            "  rng state         %016" PRIx64 " %016" PRIx64 " %016" PRIx64 " %016" PRIx64 "\n",
            c.rng[0], c.rng[1], c.rng[2], c.rng[3]);
    if (c.metric_name[0])
        fprintf(out, "  metric            %s = %.6g; best %.6g at step %" PRId64 "\n",
                c.metric_name, c.metric, c.best_metric, c.best_step);
    else
        fprintf(out, "  metric            none yet\n");
    fprintf(out, "  model             fingerprint %s\n",
            c.model_fingerprint[0] ? c.model_fingerprint : "(none)");
    fprintf(out, "  dataset           fingerprint %s\n",
            c.dataset_fingerprint[0] ? c.dataset_fingerprint : "(none)");
    json_error_t je;
    json_t *cfg = c.config_json[0] ? json_loads(c.config_json, 0, &je) : NULL;
    if (!c.config_json[0]) {
        fprintf(out, "  configuration     (none)\n");
    } else if (!json_is_object(cfg)) {
        fprintf(out, "  configuration     %zu bytes (not a JSON object)\n", strlen(c.config_json));
    } else {
        fprintf(out, "  configuration\n");
        int lines = 0;
        describe_json(out, "", cfg, &lines);
    }
    json_decref(cfg);
    sp_checkpoint_free(&c);
    return 0;
}
