/* Shared helpers of the checkpoint tests (test_checkpoint_*.c): a checkpoint with every field
 * set, reading it back (or failing to, with the message), and checkpoints crafted with HDF5
 * where the writer would refuse, with a valid checksum. */
#ifndef SP_TESTUTIL_CKPT_H
#define SP_TESTUTIL_CKPT_H

#include "softprompt/checkpoint.h"
#include "testutil.h"

enum { TU_CK_P = 5, TU_CK_D = 7 };

/* A checkpoint of a TU_CK_P x TU_CK_D prompt with four optimizer arrays, counters, RNG state,
 * fingerprints, metrics and a configuration holding the marker "MARKER-0123456789". */
typedef struct tu_ck_sample {
    sp_checkpoint c;
    float prompt[TU_CK_P * TU_CK_D], m[TU_CK_P * TU_CK_D], v[TU_CK_P * TU_CK_D], vr[TU_CK_P],
        vc[TU_CK_D];
    char config[256];
} tu_ck_sample;

/* The sample of a step; values are bit-exact in float32 and distinct per array. */
void tu_ck_make_sample(tu_ck_sample *s, int64_t step);
/* Writes the sample of step as tu_dir/name; returns the malloc'd path. */
char *tu_ck_write_sample(const char *name, int64_t step);
/* a and b are equal field by field, bit for bit (optimizer arrays in any order). */
void tu_ck_assert_equal(const sp_checkpoint *a, const sp_checkpoint *b);
void tu_ck_read_ok(const char *path, sp_checkpoint *c);
/* Reading must fail with a message naming the file (and containing want, if given), leaving
 * the checkpoint empty. */
void tu_ck_read_fails(const char *path, const char *want);
/* Replace an attribute the checkpoint has (strings fixed-length, as softprompt writes them). */
void tu_ck_set_i64_attr(const char *path, const char *name, int64_t v);
void tu_ck_set_str_attr(const char *path, const char *name, const char *value);
/* Writes s as a checkpoint tu_dir/name even where the writer refuses (non-finite values, any
 * counters): a copy with writable values first, then every value of s written into it with
 * HDF5 and the checksum of s stored, as someone editing a file with h5py and recomputing the
 * checksum (docs/formats.md) would. Returns the malloc'd path. */
char *tu_ck_write_crafted(const char *name, const tu_ck_sample *s);

/* A fixture setup (for tu_main) that turns HDF5's printing of errors off. */
void tu_ck_quiet_hdf5(void);

#endif
