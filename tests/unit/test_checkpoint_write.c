/* The checkpoint writer (src/train/checkpoint_write.c, checkpoint_values.c): bitwise write ->
 * read round trips (every field, edge values, arrays in name order, shapes, contiguous prompt,
 * mode 0644, overwriting), fields it refuses (empty prompt, arrays named twice or badly, bad
 * counters) and non-finite state it never persists, naming the array and element; atomic
 * writes that fail (missing directory, parent is a file, file size limit) leave the old file and
 * no temporary behind. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "testutil_ckpt.h"

enum { P = TU_CK_P, D = TU_CK_D };

START_TEST(round_trip_is_bitwise) {
    tu_ck_sample s;
    tu_ck_make_sample(&s, 12);
    char *path = tu_path(tu_dir, "ck.h5");
    sp_error err = {0};
    ck_assert_msg(sp_checkpoint_write(path, &s.c, &err) == 0, "%s", err.msg);
    sp_checkpoint r;
    tu_ck_read_ok(path, &r);
    tu_ck_assert_equal(&s.c, &r);
    ck_assert_str_eq(r.created_by, "softprompt test");
    /* Arrays come back in name order, shaped like the prompt where they have P*d elements. */
    ck_assert_str_eq(r.optim[0].name, "m");
    ck_assert_str_eq(r.optim[3].name, "vr");
    sp_checkpoint_free(&r);
    ck_assert_ptr_null(r.prompt);

    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t dm = H5Dopen2(f, "optimizer/m", H5P_DEFAULT),
          dvr = H5Dopen2(f, "optimizer/vr", H5P_DEFAULT);
    hid_t sm = H5Dget_space(dm), svr = H5Dget_space(dvr);
    ck_assert_int_eq(H5Sget_simple_extent_ndims(sm), 2);
    ck_assert_int_eq(H5Sget_simple_extent_ndims(svr), 1);
    hid_t dp = H5Dopen2(f, "prompt", H5P_DEFAULT), pl = H5Dget_create_plist(dp);
    ck_assert_int_eq(H5Pget_layout(pl), H5D_CONTIGUOUS);
    H5Pclose(pl), H5Dclose(dp), H5Sclose(sm), H5Sclose(svr), H5Dclose(dm), H5Dclose(dvr);
    H5Fclose(f);

    /* No temporary left behind; readable by other users (ranks, h5py). */
    ck_assert_int_eq(tu_count_entries(tu_dir, ".tmp."), 0);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0644);

    /* Overwriting with a later step replaces the contents. */
    tu_ck_make_sample(&s, 13);
    ck_assert_msg(sp_checkpoint_write(path, &s.c, &err) == 0, "%s", err.msg);
    tu_ck_read_ok(path, &r);
    tu_ck_assert_equal(&s.c, &r);
    sp_checkpoint_free(&r);
    free(path);
}
END_TEST

START_TEST(round_trip_edge_values) {
    /* No optimizer state, NaN metrics, no evaluation, NULL strings, a 100 KB configuration,
     * a 1 x 1 prompt holding -0.0, and default created_by. */
    float prompt[1] = {-0.0f};
    size_t big = 100000;
    char *cfg = malloc(big + 1);
    for (size_t i = 0; i < big; i++) cfg[i] = (char)('a' + i % 26);
    cfg[big] = '\0';
    sp_checkpoint c = {0};
    c.n_prompt = 1, c.d = 1, c.prompt = prompt;
    c.metric = NAN, c.best_metric = NAN, c.best_step = -1;
    c.config_json = cfg;
    char *path = tu_path(tu_dir, "edge.h5");
    sp_error err = {0};
    ck_assert_msg(sp_checkpoint_write(path, &c, &err) == 0, "%s", err.msg);
    sp_checkpoint r;
    tu_ck_read_ok(path, &r);
    tu_ck_assert_equal(&c, &r);
    ck_assert(signbit(r.prompt[0]));
    ck_assert(isnan(r.metric) && isnan(r.best_metric));
    ck_assert_str_eq(r.created_by, "softprompt");
    ck_assert_str_eq(r.metric_name, "");
    sp_checkpoint_free(&r);
    free(cfg);
    free(path);
}
END_TEST

START_TEST(write_refuses_invalid_checkpoints) {
    char *path = tu_path(tu_dir, "bad.h5");
    sp_error err = {0};
    tu_ck_sample s;
    tu_ck_make_sample(&s, 1);
    s.c.n_prompt = 0;
    ck_assert_int_eq(sp_checkpoint_write(path, &s.c, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "empty prompt"));
    tu_ck_make_sample(&s, 1);
    snprintf(s.c.optim[1].name, sizeof s.c.optim[1].name, "v");
    ck_assert_int_eq(sp_checkpoint_write(path, &s.c, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "twice"));
    tu_ck_make_sample(&s, 1);
    snprintf(s.c.optim[0].name, sizeof s.c.optim[0].name, "a/b");
    ck_assert_int_eq(sp_checkpoint_write(path, &s.c, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "invalid name"));
    tu_ck_make_sample(&s, 1);
    s.c.optim[2].n = 0;
    ck_assert_int_eq(sp_checkpoint_write(path, &s.c, &err), -1);
    tu_ck_make_sample(&s, 1);
    s.c.step = -3;
    ck_assert_int_eq(sp_checkpoint_write(path, &s.c, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, path));
    /* Nothing was created. */
    ck_assert_int_eq(tu_count_entries(tu_dir, "bad.h5"), 0);
    free(path);
}
END_TEST

/* Non-finite state is never persisted: the writer names the array and the element. */
START_TEST(write_refuses_non_finite_state) {
    char *path = tu_path(tu_dir, "nan.h5");
    sp_error err = {0};
    tu_ck_sample s;
    tu_ck_make_sample(&s, 1);
    s.prompt[2 * D + 3] = NAN;
    ck_assert_int_eq(sp_checkpoint_write(path, &s.c, &err), -1);
    ck_assert_msg(strstr(err.msg, path) && strstr(err.msg, "refusing to write") &&
                      strstr(err.msg, "dataset \"prompt\" element [2, 3] is nan"),
                  "%s", err.msg);
    tu_ck_make_sample(&s, 1);
    s.vr[4] = -INFINITY;
    ck_assert_int_eq(sp_checkpoint_write(path, &s.c, &err), -1);
    ck_assert_msg(strstr(err.msg, "dataset \"optimizer/vr\" element [4] is -inf"), "%s", err.msg);
    tu_ck_make_sample(&s, 1);
    s.m[P * D - 1] = INFINITY;
    ck_assert_int_eq(sp_checkpoint_write(path, &s.c, &err), -1);
    ck_assert_msg(strstr(err.msg, "\"optimizer/m\" element [4, 6] is inf"), "%s", err.msg);
    tu_ck_make_sample(&s, 1);
    s.c.best_metric = INFINITY;
    ck_assert_int_eq(sp_checkpoint_write(path, &s.c, &err), -1);
    ck_assert_msg(strstr(err.msg, "\"best_metric\" is inf"), "%s", err.msg);
    ck_assert_int_eq(tu_count_entries(tu_dir, "nan.h5"), 0);
    /* NaN metrics mean "none yet" and are written. */
    tu_ck_make_sample(&s, 1);
    s.c.metric = NAN, s.c.best_metric = NAN, s.c.best_step = -1;
    ck_assert_msg(sp_checkpoint_write(path, &s.c, &err) == 0, "%s", err.msg);
    free(path);
}
END_TEST

START_TEST(failed_writes_name_the_path_and_keep_the_old_file) {
    tu_ck_sample s;
    tu_ck_make_sample(&s, 1);
    sp_error err = {0};

    /* Parent is a regular file (tests run as root, so chmod 0555 would not stop a write). */
    char *file = tu_path(tu_dir, "regular");
    tu_write_file(file, "x", 1);
    char *under_file = tu_path(file, "ck.h5");
    ck_assert_int_eq(sp_checkpoint_write(under_file, &s.c, &err), -1);
    ck_assert_msg(strstr(err.msg, under_file) && strstr(err.msg, "Not a directory"), "%s", err.msg);
    char *nodir = tu_path(tu_dir, "no/such/dir/ck.h5");
    ck_assert_int_eq(sp_checkpoint_write(nodir, &s.c, &err), -1);
    ck_assert_msg(strstr(err.msg, nodir) && strstr(err.msg, "No such file or directory"), "%s",
                  err.msg);
    ck_assert_int_eq(sp_checkpoint_write(tu_dir, &s.c, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "is a directory"));

    /* The disk "fills up" mid-write (a file size limit makes write() fail with EFBIG, as ENOSPC
     * would): the error names the path, the old checkpoint survives, no temporary is left. */
    char *path = tu_ck_write_sample("ck.h5", 1);
    enum { BP = 64, BD = 1024 };
    float *big = calloc(BP * BD, sizeof *big);
    tu_ck_sample b;
    tu_ck_make_sample(&b, 2);
    b.c.n_prompt = BP, b.c.d = BD, b.c.prompt = big, b.c.n_optim = 0;
    struct rlimit old_lim, lim;
    ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old_lim), 0);
    lim = old_lim;
    lim.rlim_cur = 64 * 1024;
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rc = sp_checkpoint_write(path, &b.c, &err);
    setrlimit(RLIMIT_FSIZE, &old_lim);
    signal(SIGXFSZ, old_handler);
    ck_assert_int_eq(rc, -1);
    ck_assert_msg(strstr(err.msg, path) != NULL, "%s", err.msg);
    ck_assert_int_eq(tu_count_entries(tu_dir, ".tmp."), 0);
    sp_checkpoint r;
    tu_ck_read_ok(path, &r);
    tu_ck_assert_equal(&s.c, &r);
    sp_checkpoint_free(&r);
    free(big), free(path), free(file), free(under_file), free(nodir);
}
END_TEST

int main(void) {
    const TTest *tests[] = {round_trip_is_bitwise,
                            round_trip_edge_values,
                            write_refuses_invalid_checkpoints,
                            write_refuses_non_finite_state,
                            failed_writes_name_the_path_and_keep_the_old_file,
                            NULL};
    return tu_main("checkpoint_write", tests, tu_ck_quiet_hdf5, NULL);
}
