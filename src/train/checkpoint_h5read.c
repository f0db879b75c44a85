/* HDF5 reading primitives of the checkpoint readers: each checks presence, type, rank and range
 * before reading, and reports a bad file as a message naming the path and the dataset or
 * attribute, never as a crash. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "train/checkpoint_internal.h"

const unsigned char sp_ckpt_hdf5_signature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};

/* Checks that path is a regular, non-empty file starting with the HDF5 signature; with
 * need_v2, that its superblock is version 2 or later (metadata checksummed), as every
 * checkpoint is: older superblocks are unchecked and not something softprompt writes. */
int sp__ckpt_precheck(const char *path, int need_v2, sp_error *err) {
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
    if (got < 9 || memcmp(head, sp_ckpt_hdf5_signature, 8) != 0)
        return sp_fail(err, "%s: not an HDF5 file (no HDF5 signature at its start; %lld bytes)",
                       path, (long long)st.st_size);
    if (need_v2 && head[8] < 2)
        return sp_fail(err,
                       "%s: HDF5 superblock version %d: not a softprompt checkpoint (those use "
                       "version 2 or later, whose metadata HDF5 checksums)",
                       path, head[8]);
    return 0;
}

int sp__ckpt_says_checkpoint(hid_t f) {
    if (H5Aexists(f, "format") <= 0) return 0;
    char *format = NULL;
    int yes = sp__ckpt_read_str(f, "format", &format, "", NULL) == 0 &&
              strcmp(format, SP_CHECKPOINT_FORMAT) == 0;
    free(format);
    H5Eclear2(H5E_DEFAULT);
    return yes;
}

hid_t sp__ckpt_open_h5(const char *path, sp_error *err) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
    /* Read-only opens need no lock; file systems without flock (some Lustre/NFS mounts) would
     * otherwise refuse the open. */
    H5Pset_file_locking(fapl, 0, 1);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (f < 0) sp__h5_fail(err, "%s: cannot open as HDF5 (truncated or corrupt file?)", path);
    H5Pclose(fapl); /* after sp__h5_fail: every HDF5 call clears the error stack */
    return f;
}

/* Opens scalar root attribute name (-1 with a message when absent or not scalar). */
static hid_t open_attr(hid_t f, const char *name, const char *path, sp_error *err) {
    hid_t a = sp__h5_open_root_attr(f, name, path, err);
    if (a == -2) return sp_fail(err, "%s: missing root attribute \"%s\"", path, name);
    return a;
}

/* Reads a fixed-length string attribute into a malloc'd string (trailing padding removed).
 * Variable-length strings are refused: they are read from HDF5's unchecksummed global heap,
 * where a flipped byte crashes HDF5 1.10 instead of failing. */
int sp__ckpt_read_str(hid_t f, const char *name, char **out, const char *path, sp_error *err) {
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
            rc = sp__h5_fail(err, "%s: cannot read root attribute \"%s\"", path, name);
        else
            while (n > 0 && (v[n - 1] == pad_char || v[n - 1] == '\0')) v[--n] = '\0';
        if (rc == 0 && strlen(v) != n)
            rc = sp_fail(err, "%s: root attribute \"%s\" contains a NUL byte", path, name);
        *out = rc == 0 ? v : (free(v), NULL);
    }
    sp__h5_close(ft), H5Aclose(a);
    return rc;
}

int sp__ckpt_read_i64(hid_t f, const char *name, int64_t lo, int64_t *out, const char *path,
                      sp_error *err) {
    hid_t a = open_attr(f, name, path, err);
    if (a < 0) return -1;
    hid_t ft = H5Aget_type(a);
    int ok = ft >= 0 && H5Tget_class(ft) == H5T_INTEGER && H5Tget_size(ft) <= 8 &&
             !(H5Tget_size(ft) == 8 && H5Tget_sign(ft) == H5T_SGN_NONE);
    sp__h5_close(ft);
    herr_t st = ok ? H5Aread(a, H5T_NATIVE_INT64, out) : -1;
    H5Aclose(a);
    if (!ok) return sp_fail(err, "%s: root attribute \"%s\" must be a signed integer", path, name);
    if (st < 0) return sp__h5_fail(err, "%s: cannot read root attribute \"%s\"", path, name);
    if (*out < lo)
        return sp_fail(err, "%s: root attribute \"%s\" is %" PRId64 " (must be >= %" PRId64 ")",
                       path, name, *out, lo);
    return 0;
}

int sp__ckpt_read_f64(hid_t f, const char *name, double *out, const char *path, sp_error *err) {
    hid_t a = open_attr(f, name, path, err);
    if (a < 0) return -1;
    hid_t ft = H5Aget_type(a);
    int ok = ft >= 0 && H5Tget_class(ft) == H5T_FLOAT;
    sp__h5_close(ft);
    herr_t st = ok ? H5Aread(a, H5T_NATIVE_DOUBLE, out) : -1;
    H5Aclose(a);
    if (!ok) return sp_fail(err, "%s: root attribute \"%s\" must be a float", path, name);
    return st < 0 ? sp__h5_fail(err, "%s: cannot read root attribute \"%s\"", path, name) : 0;
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
hid_t sp__ckpt_open_dataset(hid_t loc, const char *name, const char *shown, char kind,
                            int exact_size, int min_rank, int max_rank, hsize_t *dims,
                            const char *path, sp_error *err) {
    htri_t has = H5Lexists(loc, name, H5P_DEFAULT);
    if (has < 0) return sp__h5_fail(err, "%s: cannot look up dataset \"%s\"", path, shown);
    if (!has) return sp_fail(err, "%s: missing dataset \"%s\"", path, shown);
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0) return sp__h5_fail(err, "%s: \"%s\" is not a readable dataset", path, shown);
    hid_t t = H5Dget_type(d), space = H5Dget_space(d);
    int rank = space < 0 ? -1 : H5Sget_simple_extent_ndims(space);
    int rc = 0;
    if (t < 0 || space < 0) {
        rc = sp__h5_fail(err, "%s: cannot inspect dataset \"%s\"", path, shown);
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
        for (int i = 0; i < max_rank; i++) dims[i] = 1;
        H5Sget_simple_extent_dims(space, dims, NULL);
    }
    sp__h5_close(t), sp__h5_close(space);
    if (rc != 0) {
        H5Dclose(d);
        return -1;
    }
    return d;
}

/* Reads all of dataset d into a new buffer of n elements of mem_type (elem bytes each). */
void *sp__ckpt_read_all(hid_t d, hid_t mem_type, size_t n, size_t elem, const char *shown,
                        const char *path, sp_error *err) {
    if (sp__h5_check_storage(d, path, shown, err)) return NULL;
    void *buf = malloc(n * elem);
    if (!buf) {
        sp_fail(err, "%s: dataset \"%s\": out of memory for %zu elements", path, shown, n);
        return NULL;
    }
    if (H5Dread(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        sp__h5_fail(err, "%s: cannot read dataset \"%s\" (truncated or corrupt file?)", path,
                    shown);
        free(buf);
        return NULL;
    }
    return buf;
}
