/* fsync fault injection for the tests of atomic writing. Include it in exactly one file of a
 * test executable: its fsync() replaces the C library's for the whole program (the library is
 * linked statically, so its calls resolve here) and passes through to the system call unless a
 * test asks for a failure:
 *   fake_fsync_dir_errno   every fsync of a directory fails with this errno (0: none);
 *   fake_fsync_file_fail   the Nth fsync of a regular file from now on fails with EIO (0: none).
 * fake_fsync_reset() clears both and the count. */
#ifndef SP_TEST_FAKE_FSYNC_H
#define SP_TEST_FAKE_FSYNC_H

#include <errno.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static int fake_fsync_dir_errno, fake_fsync_file_fail, fake_fsync_file_count;

static void fake_fsync_reset(void) {
    fake_fsync_dir_errno = fake_fsync_file_fail = fake_fsync_file_count = 0;
}

int fsync(int fd) {
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode) && fake_fsync_dir_errno) {
        errno = fake_fsync_dir_errno;
        return -1;
    }
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
        ++fake_fsync_file_count == fake_fsync_file_fail) {
        errno = EIO;
        return -1;
    }
    return (int)syscall(SYS_fsync, fd);
}

#endif
