#include "io/h5util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void sp__h5_quiet(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

/* HDF5's I/O errors read "file write failed: time = ..., filename = ..., errno = 28, error
 * message = 'No space left on device', buf = ..." over two lines; the user needs only the
 * operation and the system's message. */
static void shorten_io_error(char *desc) {
    const char *key = "error message = '";
    char *colon = strstr(desc, ": time = "), *msg = strstr(desc, key);
    if (!colon || !msg) return;
    msg += strlen(key);
    char *end = strchr(msg, '\'');
    if (!end) return;
    size_t head = (size_t)(colon - desc), len = (size_t)(end - msg);
    memmove(desc + head + 2, msg, len);
    desc[head + 2 + len] = '\0';
}

typedef struct {
    char text[SP_ERROR_MAX / 2];
    int is_system; /* text is a system (errno) error */
} h5_detail;

/* H5Ewalk2 callback keeping the innermost description (the first one walking upward), unless
 * the stack holds a system error (errno) somewhere: that one says what really went wrong. */
static herr_t keep_detail(unsigned n, const H5E_error2_t *e, void *data) {
    h5_detail *d = data;
    if (d->is_system || !e->desc) return 0;
    d->is_system = strstr(e->desc, "error message = '") != NULL;
    if (d->is_system || n == 0) snprintf(d->text, sizeof d->text, "%s", e->desc);
    return 0;
}

int sp__h5_precheck(const char *path, sp_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return sp_fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    int e = fstat(fd, &st) != 0 ? errno : 0;
    close(fd);
    if (e) return sp_fail(err, "%s: cannot open: %s", path, strerror(e));
    if (S_ISDIR(st.st_mode)) return sp_fail(err, "%s: is a directory, not an HDF5 file", path);
    if (!S_ISREG(st.st_mode)) return sp_fail(err, "%s: not a regular file", path);
    if (st.st_size == 0) return sp_fail(err, "%s: empty file (truncated?)", path);
    return 0;
}

/* Says what HDF5's descriptions of damage mean. */
static void explain_damage(char *desc, size_t cap) {
    if (strstr(desc, "checksum"))
        snprintf(desc, cap, "metadata checksum mismatch: the file is damaged");
    else if (strstr(desc, "inflate() failed"))
        snprintf(desc, cap, "compressed data do not inflate: the file is damaged");
}

int sp__h5_fail(sp_error *err, const char *fmt, ...) {
    h5_detail d = {"", 0};
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, keep_detail, &d);
    H5Eclear2(H5E_DEFAULT);
    shorten_io_error(d.text);
    explain_damage(d.text, sizeof d.text);
    if (!err) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    size_t n = strlen(err->msg);
    int damage = !strncmp(d.text, "metadata checksum", 17) || !strncmp(d.text, "compressed", 10);
    if (d.text[0] && n + 16 < sizeof err->msg)
        snprintf(err->msg + n, sizeof err->msg - n, damage ? " (%s)" : " (HDF5: %s)", d.text);
    return -1;
}

int sp__h5_check_storage(hid_t d, const char *path, const char *name, sp_error *err) {
    hid_t space = H5Dget_space(d), type = H5Dget_type(d);
    hssize_t n = space < 0 ? -1 : H5Sget_simple_extent_npoints(space);
    size_t size = type < 0 ? 0 : H5Tget_size(type);
    sp__h5_close(space), sp__h5_close(type);
    if (n < 0 || size == 0) return sp__h5_fail(err, "%s: cannot size dataset \"/%s\"", path, name);
    uint64_t raw = (uint64_t)n * size, stored = H5Dget_storage_size(d);
    if (raw <= stored * SP_H5_MAX_DEFLATE_RATIO + 4096) return 0;
    return sp_fail(err,
                   "%s: dataset \"/%s\" declares %" PRIu64 " bytes of data but stores only %" PRIu64
                   " (more than deflate's maximum ratio of %d:1): the file is damaged or its "
                   "chunks were never written",
                   path, name, raw, stored, SP_H5_MAX_DEFLATE_RATIO);
}

void sp__h5_close(hid_t id) {
    if (id < 0) return;
    switch (H5Iget_type(id)) {
    case H5I_FILE:
        H5Fclose(id);
        break;
    case H5I_GROUP:
        H5Gclose(id);
        break;
    case H5I_DATATYPE:
        H5Tclose(id);
        break;
    case H5I_DATASPACE:
        H5Sclose(id);
        break;
    case H5I_DATASET:
        H5Dclose(id);
        break;
    case H5I_ATTR:
        H5Aclose(id);
        break;
    case H5I_GENPROP_LST:
        H5Pclose(id);
        break;
    default:
        break;
    }
}

hid_t sp__h5_utf8_type(size_t size, H5T_str_t pad) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, size);
    H5Tset_strpad(t, pad);
    H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
}

int sp__h5_write_attr(hid_t loc, const char *name, hid_t file_type, hid_t mem_type,
                      const void *value, const char *path, sp_error *err) {
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = space < 0 ? -1 : H5Acreate2(loc, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t st = a < 0 ? -1 : H5Awrite(a, mem_type, value);
    sp__h5_close(a), sp__h5_close(space);
    return st < 0 ? sp__h5_fail(err, "%s: cannot write attribute \"%s\"", path, name) : 0;
}

hid_t sp__h5_open_root_attr(hid_t f, const char *name, const char *path, sp_error *err) {
    htri_t has = H5Aexists(f, name);
    if (has < 0) return sp__h5_fail(err, "%s: cannot look up root attribute \"%s\"", path, name);
    if (!has) return -2;
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    if (a < 0) return sp__h5_fail(err, "%s: cannot open root attribute \"%s\"", path, name);
    hid_t space = H5Aget_space(a);
    hssize_t np = space < 0 ? -1 : H5Sget_simple_extent_npoints(space);
    sp__h5_close(space);
    if (np != 1) {
        H5Aclose(a);
        return sp_fail(err, "%s: root attribute \"%s\" must hold a single value", path, name);
    }
    return a;
}

int sp__h5_root_format(hid_t f, const char *path, char *out, size_t cap, sp_error *err) {
    out[0] = '\0';
    hid_t a = sp__h5_open_root_attr(f, "format", path, err);
    if (a == -2) return 0;
    if (a < 0) return -1;
    hid_t ft = H5Aget_type(a), mt = -1;
    int rc = 0;
    if (ft >= 0 && H5Tget_class(ft) == H5T_STRING) {
        mt = H5Tcopy(H5T_C_S1);
        H5Tset_cset(mt, H5Tget_cset(ft));
        if (H5Tis_variable_str(ft) > 0) {
            char *s = NULL;
            H5Tset_size(mt, H5T_VARIABLE);
            if (H5Aread(a, mt, &s) < 0)
                rc = sp__h5_fail(err, "%s: cannot read root attribute \"format\"", path);
            else
                snprintf(out, cap, "%s", s ? s : "");
            H5free_memory(s);
        } else {
            /* room for a terminator: a stored string may fill all n bytes (NULLPAD) */
            size_t n = H5Tget_size(ft);
            char *s = calloc(n + 2, 1);
            H5Tset_size(mt, n + 1);
            if (!s)
                rc = sp_fail(err, "%s: out of memory", path);
            else if (H5Aread(a, mt, s) < 0)
                rc = sp__h5_fail(err, "%s: cannot read root attribute \"format\"", path);
            else
                snprintf(out, cap, "%s", s);
            free(s);
        }
    }
    sp__h5_close(mt), sp__h5_close(ft), sp__h5_close(a);
    return rc;
}

hid_t sp__h5_untimed(hid_t cls) {
    hid_t p = H5Pcreate(cls);
    if (p >= 0) H5Pset_obj_track_times(p, 0);
    return p;
}
