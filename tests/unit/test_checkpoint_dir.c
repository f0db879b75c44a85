/* The step-*.h5 files of a run (src/train/checkpoint_dir.c): their names, the newest one that
 * verifies (skipping corrupt newer files and names that are not checkpoints), and pruning that
 * keeps the newest and keep_also and never touches other files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil_ckpt.h"

static void write_step(int64_t step) {
    tu_ck_sample s;
    tu_ck_make_sample(&s, step);
    char *path = sp_checkpoint_path(tu_dir, step);
    sp_error err = {0};
    ck_assert_msg(sp_checkpoint_write(path, &s.c, &err) == 0, "%s", err.msg);
    free(path);
}

/* A checkpoint's name: step-<12 digits>.h5. */
static int is_step_file(const char *dir, const char *name) {
    (void)dir;
    size_t n = strlen(name);
    return n == 20 && strncmp(name, "step-", 5) == 0 && strspn(name + 5, "0123456789") == 12 &&
           strcmp(name + 17, ".h5") == 0;
}

/* Number of checkpoint files in dir. */
static int count_steps(const char *dir) {
    int n;
    char **names = tu_list_dir(dir, is_step_file, &n);
    tu_free_list(names, n);
    return n;
}

START_TEST(path_names) {
    char *p = sp_checkpoint_path("/runs/a", 123);
    ck_assert_str_eq(p, "/runs/a/step-000000000123.h5");
    free(p);
    ck_assert_ptr_null(sp_checkpoint_path("/runs/a", -1));
}
END_TEST

START_TEST(find_latest_skips_corrupt_newer_files) {
    sp_error err = {0};
    char *path = (char *)1, *warn = (char *)1;
    /* Empty and missing directories hold no checkpoint. */
    ck_assert_int_eq(sp_checkpoint_find_latest(tu_dir, &path, &warn, &err), 0);
    ck_assert_ptr_null(path);
    ck_assert_ptr_null(warn);
    char *missing = tu_path(tu_dir, "nope");
    ck_assert_int_eq(sp_checkpoint_find_latest(missing, &path, &warn, &err), 0);
    ck_assert_ptr_null(path);

    for (int64_t s = 1; s <= 3; s++) write_step(s * 100);
    /* Newer, but truncated (preempted mid-copy) and flipped. */
    char *p3 = sp_checkpoint_path(tu_dir, 300), *p4 = sp_checkpoint_path(tu_dir, 400),
         *p5 = sp_checkpoint_path(tu_dir, 500);
    size_t n;
    char *bytes = tu_read_file(p3, &n);
    tu_write_file(p4, bytes, n / 2);
    tu_copy_file(p3, p5);
    tu_flip_byte(p5, tu_h5_dataset_offset(p5, "prompt") + 3, 0x10);
    /* Names that are not checkpoints: ignored, even when "newer". */
    char *other[] = {tu_path(tu_dir, "step-000000000900.h5.tmp.AbC123"),
                     tu_path(tu_dir, "step-900.h5"), tu_path(tu_dir, "notes.txt"),
                     tu_path(tu_dir, "step-000000000900.h5x")};
    for (int i = 0; i < 4; i++) tu_write_file(other[i], "junk", 4);
    free(bytes);

    ck_assert_msg(sp_checkpoint_find_latest(tu_dir, &path, &warn, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(path, p3);
    ck_assert_ptr_nonnull(warn);
    char *want4, *want5;
    ck_assert_int_ge(asprintf(&want4, "skipping %s: ", p4), 0);
    ck_assert_int_ge(asprintf(&want5, "skipping %s: checksum mismatch", p5), 0);
    ck_assert_msg(strstr(warn, want4) && strstr(warn, want5), "%s", warn);
    ck_assert_ptr_null(strstr(warn, ".tmp."));
    ck_assert_ptr_null(strstr(warn, "notes"));
    /* Newest first: step 500 is reported before 400. */
    ck_assert(strstr(warn, want5) < strstr(warn, want4));
    free(path), free(warn);

    /* warnings may be NULL. */
    ck_assert_int_eq(sp_checkpoint_find_latest(tu_dir, &path, NULL, &err), 0);
    ck_assert_str_eq(path, p3);
    free(path);

    /* A directory that cannot be listed. */
    ck_assert_int_eq(sp_checkpoint_find_latest(other[2], &path, &warn, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, other[2]));
    for (int i = 0; i < 4; i++) free(other[i]);
    free(missing), free(p3), free(p4), free(p5), free(want4), free(want5);
}
END_TEST

START_TEST(prune_keeps_the_newest_and_keep_also) {
    for (int64_t s = 1; s <= 6; s++) write_step(s);
    char *tmp = tu_path(tu_dir, "step-000000000000.h5.tmp.XyZ789");
    char *other = tu_path(tu_dir, "best.h5");
    tu_write_file(tmp, "t", 1);
    tu_write_file(other, "o", 1);
    sp_error err = {0};
    char *p1 = sp_checkpoint_path(tu_dir, 1);
    /* keep_also through another spelling of the same file. */
    char *alias;
    ck_assert_int_ge(asprintf(&alias, "%s/./step-000000000001.h5", tu_dir), 0);
    ck_assert_msg(sp_checkpoint_prune(tu_dir, 2, alias, &err) == 0, "%s", err.msg);
    for (int64_t s = 1; s <= 6; s++) {
        char *p = sp_checkpoint_path(tu_dir, s);
        int kept = access(p, F_OK) == 0;
        ck_assert_msg(kept == (s == 1 || s >= 5), "step %d kept=%d", (int)s, kept);
        free(p);
    }
    ck_assert_int_eq(access(tmp, F_OK), 0);
    ck_assert_int_eq(access(other, F_OK), 0);
    /* Again with keep 1 and no keep_also: only step 6 (and the foreign files) remain. */
    ck_assert_int_eq(sp_checkpoint_prune(tu_dir, 1, NULL, &err), 0);
    ck_assert_int_eq(count_steps(tu_dir), 1);
    ck_assert_int_eq(access(tmp, F_OK), 0);
    ck_assert_int_eq(sp_checkpoint_prune(tu_dir, 0, NULL, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "keep_last"));
    char *missing = tu_path(tu_dir, "nope");
    ck_assert_int_eq(sp_checkpoint_prune(missing, 1, NULL, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, missing));
    free(tmp), free(other), free(p1), free(alias), free(missing);
}
END_TEST

int main(void) {
    const TTest *tests[] = {path_names, find_latest_skips_corrupt_newer_files,
                            prune_keeps_the_newest_and_keep_also, NULL};
    return tu_main("checkpoint_dir", tests, tu_ck_quiet_hdf5, NULL);
}
