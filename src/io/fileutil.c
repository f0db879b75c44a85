#include "io/fileutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/path.h"

int sp__write_all(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        size_t chunk = len < (1u << 30) ? len : (1u << 30);
        ssize_t w = write(fd, p, chunk);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -1;
        if (w == 0) {
            errno = EIO;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int sp__temp_beside(const char *path, char **tmp, sp_error *err) {
    size_t n = strlen(path) + sizeof ".tmp.XXXXXX";
    if (!(*tmp = malloc(n))) return sp_fail(err, "%s: out of memory", path);
    snprintf(*tmp, n, "%s.tmp.XXXXXX", path);
    int fd = mkostemp(*tmp, O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        free(*tmp);
        *tmp = NULL;
        return sp_fail(err, "%s: cannot create a temporary file next to it: %s", path, strerror(e));
    }
    fchmod(fd, 0644); /* mkstemp makes 0600 */
    return fd;
}

int sp__fsync_parent_dir(const char *path) {
    char *dir = sp__dir_of(path);
    int fd = dir ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    free(dir);
    if (fd < 0) return 0;
    int e = fsync(fd) != 0 ? errno : 0;
    close(fd);
    return e;
}

/* Closes fd (or opens tmp when fd < 0) after syncing it; 0, or -1 with err set. */
static int sync_close(int fd, const char *tmp, const char *path, sp_error *err) {
    if (fd < 0 && (fd = open(tmp, O_RDONLY | O_CLOEXEC)) < 0)
        return sp_fail(err, "%s: cannot open the temporary file %s to sync it: %s", path, tmp,
                       strerror(errno));
    int rc = 0;
    if (fsync(fd) != 0)
        rc = sp_fail(err, "%s: cannot sync the temporary file %s: %s", path, tmp, strerror(errno));
    if (close(fd) != 0 && rc == 0)
        rc = sp_fail(err, "%s: cannot close the temporary file %s: %s", path, tmp, strerror(errno));
    return rc;
}

int sp__commit(int fd, const char *tmp, const char *path, sp_error *err) {
    int rc = sync_close(fd, tmp, path, err);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = sp_fail(err, "%s: cannot rename the temporary file %s to it: %s", path, tmp,
                     strerror(errno));
    if (rc != 0) {
        unlink(tmp);
        return -1;
    }
    int e = sp__fsync_parent_dir(path);
    if (e != EIO) return 0;
    char *dir = sp__dir_of(path);
    sp_fail(err, "%s: written, but syncing directory %s failed: %s (a crash may undo the rename)",
            path, dir ? dir : ".", strerror(e));
    free(dir);
    return SP_COMMIT_UNSYNCED;
}

int sp__write_file_atomic(const char *path, const void *data, size_t len, sp_error *err) {
    char *tmp;
    int fd = sp__temp_beside(path, &tmp, err); /* 0644: read by every rank and by users */
    if (fd < 0) return -1;
    int rc;
    if (sp__write_all(fd, data, len) != 0) {
        rc = sp_fail(err, "%s: cannot write the temporary file %s: %s", path, tmp, strerror(errno));
        close(fd);
        unlink(tmp);
    } else {
        rc = sp__commit(fd, tmp, path, err);
    }
    free(tmp);
    return rc == 0 ? 0 : -1;
}

int sp__check_file_size(const char *path, size_t max, const char *what, sp_error *err) {
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size <= max) return 0;
    return sp_fail(err, "%s: %s of %llu bytes is larger than the limit of %zu MiB", path, what,
                   (unsigned long long)st.st_size, max >> 20);
}
