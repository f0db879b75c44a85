/* io/fileutil's sp__commit and sp__write_file_atomic, the one ending of every atomic write, and
 * its one policy on a failed directory fsync, as the safetensors, dataset and checkpoint
 * writers see it: a failure before the rename leaves the target as it was and no temporary; a
 * file system that cannot sync directories (EINVAL) is accepted; an I/O error syncing the
 * directory is an error that says the file was written. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake_fsync.h"
#include "io/fileutil.h"
#include "softprompt/dataset.h"
#include "softprompt/engine.h"
#include "softprompt/safetensors.h"
#include "testutil.h"

static char *target(const char *name) {
    return tu_path(tu_dir, name);
}

static void expect_content(const char *path, const char *want) {
    size_t len;
    char *got = tu_read_file(path, &len);
    ck_assert_str_eq(got, want);
    free(got);
}

static int temporaries(void) {
    return tu_count_entries(tu_dir, ".tmp.");
}

/* A temporary beside path holding text, not yet committed; returns its descriptor. */
static int staged(const char *path, const char *text, char **tmp) {
    sp_error err = {0};
    int fd = sp__temp_beside(path, tmp, &err);
    ck_assert_msg(fd >= 0, "%s", err.msg);
    ck_assert_int_eq(sp__write_all(fd, text, strlen(text)), 0);
    return fd;
}

START_TEST(commit_publishes_and_leaves_no_temporary) {
    char *path = target("a.json"), *tmp;
    int fd;
    sp_error err = {0};
    fd = staged(path, "one", &tmp);
    ck_assert_int_eq(sp__commit(fd, tmp, path, &err), 0);
    free(tmp);
    expect_content(path, "one");
    /* fd -1: a file its writer closed already (HDF5) is opened to be synced */
    fd = staged(path, "two", &tmp);
    close(fd);
    ck_assert_int_eq(sp__commit(-1, tmp, path, &err), 0);
    free(tmp);
    expect_content(path, "two");
    ck_assert_int_eq(temporaries(), 0);
    free(path);
}
END_TEST

START_TEST(failure_before_the_rename_changes_nothing) {
    char *path = target("a.json"), *tmp;
    int fd;
    tu_write_file(path, "old", 3);
    sp_error err = {0};
    fake_fsync_reset();
    fake_fsync_file_fail = 1;
    fd = staged(path, "new", &tmp);
    ck_assert_int_eq(sp__commit(fd, tmp, path, &err), -1);
    ck_assert_msg(strstr(err.msg, "cannot sync the temporary file") && strstr(err.msg, path) &&
                      strstr(err.msg, "Input/output error"),
                  "%s", err.msg);
    free(tmp);
    expect_content(path, "old");
    ck_assert_int_eq(temporaries(), 0);
    /* a rename that fails: the target is a non-empty directory */
    char *dir = target("d"), *inner = tu_path(dir, "x");
    ck_assert_int_eq(mkdir(dir, 0755), 0);
    tu_write_file(inner, "x", 1);
    fake_fsync_reset();
    fd = staged(dir, "new", &tmp);
    ck_assert_int_eq(sp__commit(fd, tmp, dir, &err), -1);
    ck_assert_msg(strstr(err.msg, "cannot rename the temporary file"), "%s", err.msg);
    free(tmp);
    ck_assert_int_eq(temporaries(), 0);
    free(path), free(dir), free(inner);
}
END_TEST

/* Commits "new" to path while every directory fsync fails with errno e. */
static int commit_with_dir_errno(const char *path, int e, sp_error *err) {
    char *tmp;
    fake_fsync_reset();
    fake_fsync_dir_errno = e;
    int fd = staged(path, "new", &tmp);
    int rc = sp__commit(fd, tmp, path, err);
    free(tmp);
    return rc;
}

START_TEST(directory_that_cannot_be_synced_is_accepted) {
    char *path = target("a.json");
    sp_error err = {0};
    /* EINVAL: what some file systems answer for directories */
    ck_assert_int_eq(commit_with_dir_errno(path, EINVAL, &err), 0);
    ck_assert_int_eq(sp__write_file_atomic(path, "newer", 5, &err), 0);
    expect_content(path, "newer");
    free(path);
}
END_TEST

START_TEST(directory_io_error_is_reported) {
    char *path = target("a.json");
    sp_error err = {0};
    ck_assert_int_eq(commit_with_dir_errno(path, EIO, &err), SP_COMMIT_UNSYNCED);
    ck_assert_msg(strstr(err.msg, "written, but syncing directory") && strstr(err.msg, tu_dir),
                  "%s", err.msg);
    expect_content(path, "new"); /* the file itself is complete */
    ck_assert_int_eq(temporaries(), 0);
    ck_assert_int_eq(sp__write_file_atomic(path, "newer", 5, &err), -1);
    free(path);
}
END_TEST

/* The writers built on it share the policy (the safetensors and dataset writers ignored the
 * directory's fsync before; the checkpoint writer reported EIO). */
START_TEST(writers_report_a_directory_io_error) {
    sp_error err = {0};
    fake_fsync_reset();
    fake_fsync_dir_errno = EIO;
    char *st = target("w.safetensors");
    float v[2] = {1, 2};
    sp_st_out t = {.name = "w", .dtype = SP_DTYPE_F32, .ndim = 1, .shape = {2}, .data = v};
    ck_assert_int_eq(sp_st_write(st, &t, 1, NULL, 0, &err), -1);
    ck_assert_msg(strstr(err.msg, "syncing directory"), "%s", err.msg);
    /* a dataset whose directory did not sync is not left behind (prepare is all or nothing) */
    char *ds = target("d.h5");
    sp_dataset_meta m = {.task = SP_TASK_GENERATION, .n_soft = 1};
    sp_dataset_writer *w = sp_dataset_writer_open(ds, &m, 0, &err);
    ck_assert_msg(w != NULL, "%s", err.msg);
    int32_t tok[3] = {SP_SOFT(0), 5, 6}, pos[1] = {1}, ids[1] = {6};
    ck_assert_int_eq(sp_dataset_writer_add(w, tok, 2, pos, ids, 1, -1, &err), 0);
    ck_assert_int_eq(sp_dataset_writer_close(w, &err), -1);
    ck_assert_msg(strstr(err.msg, "syncing directory"), "%s", err.msg);
    ck_assert_int_eq(access(ds, F_OK), -1);
    ck_assert_int_eq(temporaries(), 0);
    free(st), free(ds);
}
END_TEST

int main(void) {
    Suite *s = suite_create("fileutil");
    TCase *tc = tcase_create("commit");
    tcase_add_checked_fixture(tc, tu_dir_setup, tu_dir_teardown);
    tcase_add_test(tc, commit_publishes_and_leaves_no_temporary);
    tcase_add_test(tc, failure_before_the_rename_changes_nothing);
    tcase_add_test(tc, directory_that_cannot_be_synced_is_accepted);
    tcase_add_test(tc, directory_io_error_is_reported);
    tcase_add_test(tc, writers_report_a_directory_io_error);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
