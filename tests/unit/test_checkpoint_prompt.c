/* The prompt reader of --init FILE.h5 (src/train/checkpoint_prompt.c): the prompt of a
 * checkpoint, verified in full, or the 2-D float dataset "prompt" of an h5py-made file
 * (float64 converted), with every wrong shape, type and non-finite value named. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil_ckpt.h"

enum { P = TU_CK_P, D = TU_CK_D };

/* An h5py-style file (default HDF5 format) with dataset "prompt" of the given shape/type. */
static char *write_plain(const char *name, const char *dset, int rank, const hsize_t *dims,
                         hid_t type, const double *values) {
    char *path = tu_path(tu_dir, name);
    tu_h5_write_dataset(path, dset, rank, dims, type, H5T_NATIVE_DOUBLE, values);
    return path;
}

static void prompt_fails(const char *path, const char *want) {
    float *p = (float *)1;
    int n = -1, d = -1;
    sp_error err = {0};
    ck_assert_int_eq(sp_prompt_read_h5(path, &p, &n, &d, &err), -1);
    ck_assert_ptr_null(p);
    ck_assert_msg(strstr(err.msg, path) && strstr(err.msg, want), "expected \"%s\" in: %s", want,
                  err.msg);
}

START_TEST(prompt_reader_accepts_checkpoints_and_h5py_files) {
    tu_ck_sample s;
    tu_ck_make_sample(&s, 4);
    char *ck = tu_ck_write_sample("ck.h5", 4);
    float *p;
    int n, d;
    sp_error err = {0};
    ck_assert_msg(sp_prompt_read_h5(ck, &p, &n, &d, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(n, P);
    ck_assert_int_eq(d, D);
    ck_assert(memcmp(p, s.prompt, sizeof s.prompt) == 0);
    free(p);

    double vals[12];
    for (int i = 0; i < 12; i++) vals[i] = 0.1 * (i - 6);
    hsize_t dims2[2] = {3, 4};
    char *f64 = write_plain("f64.h5", "prompt", 2, dims2, H5T_IEEE_F64LE, vals);
    ck_assert_msg(sp_prompt_read_h5(f64, &p, &n, &d, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(n, 3);
    ck_assert_int_eq(d, 4);
    for (int i = 0; i < 12; i++) ck_assert(p[i] == (float)vals[i]);
    free(p);

    hsize_t dims1[1] = {12}, dims3[3] = {2, 3, 2};
    char *one = write_plain("one.h5", "prompt", 1, dims1, H5T_IEEE_F32LE, vals);
    prompt_fails(one, "\"prompt\" must be 2-D (found 1-D)");
    char *three = write_plain("three.h5", "prompt", 3, dims3, H5T_IEEE_F32LE, vals);
    prompt_fails(three, "\"prompt\" must be 2-D (found 3-D)");
    char *none = write_plain("none.h5", "embeddings", 2, dims2, H5T_IEEE_F32LE, vals);
    prompt_fails(none, "missing dataset \"prompt\"");
    char *ints = write_plain("ints.h5", "prompt", 2, dims2, H5T_STD_I32LE, vals);
    prompt_fails(ints, "must be float32 (found integer)");
    vals[5] = NAN;
    char *nan = write_plain("nan.h5", "prompt", 2, dims2, H5T_IEEE_F64LE, vals);
    prompt_fails(nan, "element [1, 1] is nan");
    vals[5] = 1e300; /* finite as float64, infinite as float32 */
    char *huge = write_plain("huge.h5", "prompt", 2, dims2, H5T_IEEE_F64LE, vals);
    prompt_fails(huge, "not finite as float32");
    /* A checkpoint is verified in full. */
    char *bad = tu_path(tu_dir, "bad.h5");
    tu_copy_file(ck, bad);
    tu_flip_byte(bad, tu_h5_dataset_offset(bad, "prompt") + 8, 0x04);
    prompt_fails(bad, "checksum mismatch");
    char *txt = tu_path(tu_dir, "text.h5");
    tu_write_file(txt, "not hdf5", 8);
    prompt_fails(txt, "not an HDF5 file");
    free(ck), free(f64), free(one), free(three), free(none), free(ints), free(nan), free(huge);
    free(bad), free(txt);
}
END_TEST

int main(void) {
    const TTest *tests[] = {prompt_reader_accepts_checkpoints_and_h5py_files, NULL};
    return tu_main("checkpoint_prompt", tests, tu_ck_quiet_hdf5, NULL);
}
