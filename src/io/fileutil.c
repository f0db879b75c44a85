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

int sp_write_all(int fd, const void *buf, size_t len) {
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

int sp_temp_beside(const char *path, char **tmp, sp_error *err) {
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

int sp_fsync_parent_dir(const char *path) {
    char *dir = sp_dir_of(path);
    int fd = dir ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    free(dir);
    if (fd < 0) return 0;
    int e = fsync(fd) != 0 ? errno : 0;
    close(fd);
    return e;
}

int sp_check_file_size(const char *path, size_t max, const char *what, sp_error *err) {
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size <= max) return 0;
    return sp_fail(err, "%s: %s of %llu bytes is larger than the limit of %zu MiB", path, what,
                   (unsigned long long)st.st_size, max >> 20);
}
