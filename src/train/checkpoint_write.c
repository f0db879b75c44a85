/* sp_checkpoint_write: checks the fields, builds the whole HDF5 file in memory, reads that
 * image back in full (so a checkpoint that would not read is never written), then writes it to
 * a temporary beside the target, fsyncs, renames and fsyncs the directory. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/fileutil.h"
#include "train/checkpoint_internal.h"
#include "train/hash64.h"

static int check_tensors(const char *path, const sp_checkpoint *c, sp_error *err) {
    if (c->n_tensors < 0 || c->n_tensors > SP_CHECKPOINT_MAX_TENSORS)
        return sp_fail(err, "%s: %d trainable tensors (at most %d)", path, c->n_tensors,
                       SP_CHECKPOINT_MAX_TENSORS);
    for (int i = 0; i < c->n_tensors; i++) {
        const sp_checkpoint_tensor *a = &c->tensors[i];
        size_t n = 1;
        for (int k = 0; k < a->rank && a->rank <= 4; k++)
            n = a->dims[k] >= 1 && a->dims[k] <= SP_CKPT_PROMPT_MAX_DIM ? n * (size_t)a->dims[k]
                                                                        : 0;
        if (!sp__ckpt_tensor_name_ok(a->name))
            return sp_fail(err, "%s: trainable tensor %d has an invalid name", path, i);
        if (a->rank < 1 || a->rank > 4 || n == 0 || n != a->n || n > SP_CKPT_PROMPT_MAX_ELEMS ||
            !a->data)
            return sp_fail(err, "%s: trainable tensor \"%s\" has an invalid shape", path, a->name);
        for (int j = 0; j < i; j++)
            if (strcmp(c->tensors[j].name, a->name) == 0)
                return sp_fail(err, "%s: trainable tensor \"%s\" given twice", path, a->name);
    }
    return 0;
}

static int check_for_write(const char *path, const sp_checkpoint *c, sp_error *err) {
    int no_prompt = c->n_prompt == 0 && !c->prompt && c->n_tensors > 0;
    if (!no_prompt && (c->n_prompt < 1 || c->d < 1 || !c->prompt))
        return sp_fail(err, "%s: cannot write a checkpoint with an empty prompt (%d x %d)", path,
                       c->n_prompt, c->d);
    if (check_tensors(path, c, err)) return -1;
    if (c->n_prompt > SP_CKPT_PROMPT_MAX_DIM || c->d > SP_CKPT_PROMPT_MAX_DIM ||
        (size_t)c->n_prompt * (size_t)c->d > SP_CKPT_PROMPT_MAX_ELEMS)
        return sp_fail(err, "%s: prompt %d x %d is too large", path, c->n_prompt, c->d);
    if (c->n_optim < 0 || c->n_optim > SP_CHECKPOINT_MAX_OPTIM)
        return sp_fail(err, "%s: %d optimizer arrays (at most %d)", path, c->n_optim,
                       SP_CHECKPOINT_MAX_OPTIM);
    for (int i = 0; i < c->n_optim; i++) {
        const sp_checkpoint_array *a = &c->optim[i];
        size_t len = strnlen(a->name, sizeof a->name);
        if (len == 0 || len == sizeof a->name || strchr(a->name, '/') || a->name[0] == '.')
            return sp_fail(err, "%s: optimizer array %d has an invalid name", path, i);
        if (a->n < 1 || a->n > SP_CKPT_PROMPT_MAX_ELEMS || !a->data)
            return sp_fail(err, "%s: optimizer array \"%s\" is empty or too large (%zu floats)",
                           path, a->name, a->n);
        for (int j = 0; j < i; j++)
            if (strcmp(c->optim[j].name, a->name) == 0)
                return sp_fail(err, "%s: optimizer array \"%s\" given twice", path, a->name);
    }
    if (c->step < 0 || c->epoch < 0 || c->epoch_position < 0 || c->tokens_seen < 0 ||
        c->optim_step < 0 || c->best_step < -1)
        return sp_fail(err, "%s: negative step, epoch, position, token or optimizer counter", path);
    return sp__ckpt_check_values(c, path, err) ? sp_fail_prefix(err, "refusing to write") : 0;
}

/* Fixed-length UTF-8 strings: their bytes live in the attribute message itself, under HDF5's
 * metadata checksums. Variable-length strings would live in the global heap, which HDF5 1.10
 * does not checksum and whose corruption crashes H5Aread; checkpoints never use them. */
static int write_str(hid_t f, const char *name, const char *value, const char *path,
                     sp_error *err) {
    const char *v = sp__ckpt_nz(value);
    size_t n = strlen(v);
    hid_t t = sp__h5_utf8_type(n ? n : 1, H5T_STR_NULLPAD);
    int rc = sp__h5_write_attr(f, name, t, t, n ? v : "", path, err);
    H5Tclose(t);
    return rc;
}

static int write_i64(hid_t f, const char *name, int64_t v, const char *path, sp_error *err) {
    return sp__h5_write_attr(f, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v, path, err);
}

static int write_f64(hid_t f, const char *name, double v, const char *path, sp_error *err) {
    return sp__h5_write_attr(f, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v, path, err);
}

/* A contiguous (unchunked, uncompressed) dataset, so its bytes lie at one offset in the file. */
static int write_dataset(hid_t loc, const char *name, hid_t ftype, hid_t mtype, int rank,
                         const hsize_t *dims, const void *data, const char *path, sp_error *err) {
    hid_t space = H5Screate_simple(rank, dims, NULL), dcpl = sp__h5_untimed(H5P_DATASET_CREATE);
    hid_t d = space < 0 ? -1 : H5Dcreate2(loc, name, ftype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    herr_t st = d < 0 ? -1 : H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    sp__h5_close(d), sp__h5_close(dcpl), sp__h5_close(space);
    return st < 0 ? sp__h5_fail(err, "%s: cannot write dataset \"%s\"", path, name) : 0;
}

static int make_group(hid_t f, const char *name, const char *path, sp_error *err) {
    htri_t has = H5Lexists(f, name, H5P_DEFAULT);
    if (has > 0) return 0;
    hid_t gcpl = sp__h5_untimed(H5P_GROUP_CREATE);
    hid_t g = H5Gcreate2(f, name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
    sp__h5_close(gcpl);
    if (g < 0) return sp__h5_fail(err, "%s: cannot create group \"%s\"", path, name);
    H5Gclose(g);
    return 0;
}

/* "prefix" at the root, "prefix_encoder/w1" in its group, each with its own shape. */
static int write_tensors(hid_t f, const sp_checkpoint *c, const char *path, sp_error *err) {
    for (int i = 0; i < c->n_tensors; i++) {
        const sp_checkpoint_tensor *a = &c->tensors[i];
        const char *slash = strchr(a->name, '/');
        if (slash) {
            char group[40];
            snprintf(group, sizeof group, "%.*s", (int)(slash - a->name), a->name);
            if (make_group(f, group, path, err)) return -1;
        }
        hsize_t dims[4];
        for (int k = 0; k < a->rank; k++) dims[k] = (hsize_t)a->dims[k];
        if (write_dataset(f, a->name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, a->rank, dims, a->data,
                          path, err))
            return -1;
    }
    return 0;
}

static int write_contents(hid_t f, const sp_checkpoint *c, const char *created_by,
                          const char *checksum, const char *path, sp_error *err) {
    hsize_t pd[2] = {(hsize_t)c->n_prompt, (hsize_t)c->d}, four = 4;
    if (c->n_prompt > 0 &&
        write_dataset(f, "prompt", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, pd, c->prompt, path, err))
        return -1;
    if (write_tensors(f, c, path, err)) return -1;
    hid_t gcpl = sp__h5_untimed(H5P_GROUP_CREATE);
    hid_t g = H5Gcreate2(f, "optimizer", H5P_DEFAULT, gcpl, H5P_DEFAULT);
    sp__h5_close(gcpl);
    if (g < 0) return sp__h5_fail(err, "%s: cannot create group \"optimizer\"", path);
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
    if (n < body + 4 || memcmp(img, sp_ckpt_hdf5_signature, 8) != 0 || img[8] < 2 || img[8] > 3 ||
        img[9] != 8 || img[10] != 8)
        return;
    uint32_t sum = h5_lookup3(img, body);
    for (int i = 0; i < 4; i++) img[body + (size_t)i] = (unsigned char)(sum >> (8 * i));
}

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
        sp__h5_fail(err, "%s: internal error: the HDF5 image built in memory does not open", path);
        H5Pclose(fapl);
        return -1;
    }
    H5Pclose(fapl);
    sp_checkpoint c;
    memset(&c, 0, sizeof c);
    int rc = sp__ckpt_read_contents(f, &c, path, err);
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
    const char *created_by = sp__ckpt_created_by(c);
    char checksum[17];
    sp__h64_hex(sp__ckpt_checksum(c, created_by), checksum);
    *image = NULL, *size = 0;
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_core(fapl, 1 << 20, 0);
    /* The 1.8 file format (superblock v2, v2 object headers, dense attribute storage): HDF5
     * checksums all metadata, and every HDF5 since 1.8 (any h5py) reads it. */
    H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18);
    H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG); /* closing the file closes everything */
    hid_t fcpl = sp__h5_untimed(H5P_FILE_CREATE);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, fcpl, fapl);
    if (f < 0) sp__h5_fail(err, "%s: cannot create an HDF5 file in memory", path);
    H5Pclose(fcpl);
    H5Pclose(fapl);
    if (f < 0) return -1;
    int rc = write_contents(f, c, created_by, checksum, path, err);
    if (rc == 0 && H5Fflush(f, H5F_SCOPE_GLOBAL) < 0)
        rc = sp__h5_fail(err, "%s: cannot flush the HDF5 image", path);
    ssize_t n = rc == 0 ? H5Fget_file_image(f, NULL, 0) : -1;
    if (rc == 0 && n <= 0) rc = sp__h5_fail(err, "%s: cannot get the HDF5 file image", path);
    if (rc == 0 && !(*image = malloc((size_t)n)))
        rc = sp_fail(err, "%s: out of memory for a %zd-byte checkpoint", path, n);
    if (rc == 0 && H5Fget_file_image(f, *image, (size_t)n) != n)
        rc = sp__h5_fail(err, "%s: cannot get the HDF5 file image", path);
    if (H5Fclose(f) < 0 && rc == 0) rc = sp__h5_fail(err, "%s: cannot close the HDF5 image", path);
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

int sp_checkpoint_write(const char *path, const sp_checkpoint *c, sp_error *err) {
    sp__h5_quiet();
    if (check_for_write(path, c, err) != 0) return -1;
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return sp_fail(err, "%s: is a directory", path);
    void *image;
    size_t size;
    if (build_image(c, path, &image, &size, err) != 0) return -1;
    int rc = sp__write_file_atomic(path, image, size, err);
    free(image);
    return rc;
}
