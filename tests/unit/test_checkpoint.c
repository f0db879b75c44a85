/* Checkpoints: bitwise write -> read round trips; the checksum against flipped bytes in the
 * prompt, optimizer and RNG data and changed attributes; every single-byte corruption and
 * truncation of a file fails cleanly or reads back identical; garbage and foreign files; atomic
 * writes that fail (missing directory, parent is a file, file size limit) leave the old file
 * and no temporary behind; no non-finite state written or read back (crafted files with a
 * valid checksum); the resume-state checks against the training set, on crafted states and on
 * every checkpoint of real runs; find_latest skipping corrupt newer files; prune; the --init
 * reader (checkpoints and h5py-style float64 files); model and dataset fingerprints; PEFT
 * export; describe. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__) && __has_include(<sanitizer/lsan_interface.h>)
#include <sanitizer/lsan_interface.h>
#define LSAN_DISABLE() __lsan_disable()
#define LSAN_ENABLE() __lsan_enable()
#else
#define LSAN_DISABLE() ((void)0)
#define LSAN_ENABLE() ((void)0)
#endif

#include "softprompt/checkpoint.h"
#include "softprompt/model_init.h"
#include "softprompt/safetensors.h"
#include "softprompt/train.h"
#include "testutil.h"
#include "train/checkpoint_internal.h"
#include "train/hash64.h"
#include "train/internal.h"

static void setup(void) {
    tu_dir_setup();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

/* ------------------------------------------------------------------------------------------ */
/* A checkpoint with every field set                                                          */
/* ------------------------------------------------------------------------------------------ */

enum { P = 5, D = 7 };

typedef struct sample {
    sp_checkpoint c;
    float prompt[P * D], m[P * D], v[P * D], vr[P], vc[D];
    char config[256];
} sample;

/* Values are chosen to be bit-exact in float32 and distinct per array. */
static void make_sample(sample *s, int64_t step) {
    memset(s, 0, sizeof *s);
    for (int i = 0; i < P * D; i++) {
        s->prompt[i] = (float)(i - 17) * 0.125f + (float)step;
        s->m[i] = (float)i * -0.5f;
        s->v[i] = (float)i * 0.25f + 1e-20f;
    }
    for (int i = 0; i < P; i++) s->vr[i] = 3.0f + (float)i;
    for (int i = 0; i < D; i++) s->vc[i] = -1.0f / (float)(i + 1);
    snprintf(s->config, sizeof s->config,
             "{\"optimizer\": {\"kind\": \"adafactor\", \"lr\": 0.3}, \"n_soft\": %d, "
             "\"model\": \"gpt2\", \"marker\": \"MARKER-0123456789\"}",
             P);
    sp_checkpoint *c = &s->c;
    c->n_prompt = P, c->d = D, c->prompt = s->prompt;
    c->step = step, c->epoch = 2, c->epoch_position = 17, c->tokens_seen = 123456789012LL;
    c->rng[0] = 0x0123456789ABCDEFull, c->rng[1] = ~0ull, c->rng[2] = 0, c->rng[3] = 42;
    const char *names[4] = {"v", "m", "vr", "vc"}; /* deliberately not in name order */
    float *data[4] = {s->v, s->m, s->vr, s->vc};
    size_t n[4] = {P * D, P * D, P, D};
    c->n_optim = 4;
    for (int i = 0; i < 4; i++) {
        snprintf(c->optim[i].name, sizeof c->optim[i].name, "%s", names[i]);
        c->optim[i].data = data[i], c->optim[i].n = n[i];
    }
    c->optim_step = step;
    c->config_json = s->config;
    c->model_fingerprint = "0123456789abcdef";
    c->dataset_fingerprint = "fedcba9876543210";
    c->metric_name = "valid_accuracy";
    c->metric = 0.8125, c->best_metric = 0.875, c->best_step = step > 0 ? step - 1 : -1;
    c->created_by = "softprompt test";
}

static char *write_sample(const char *name, int64_t step) {
    sample s;
    make_sample(&s, step);
    char *path = tu_path(tu_dir, name);
    sp_error err = {0};
    ck_assert_msg(sp_checkpoint_write(path, &s.c, &err) == 0, "%s", err.msg);
    return path;
}

static const sp_checkpoint_array *find_array(const sp_checkpoint *c, const char *name) {
    for (int i = 0; i < c->n_optim; i++)
        if (strcmp(c->optim[i].name, name) == 0) return &c->optim[i];
    return NULL;
}

static int same_bits(double a, double b) {
    return memcmp(&a, &b, sizeof a) == 0;
}

static void assert_equal(const sp_checkpoint *a, const sp_checkpoint *b) {
    ck_assert_int_eq(a->n_prompt, b->n_prompt);
    ck_assert_int_eq(a->d, b->d);
    ck_assert(memcmp(a->prompt, b->prompt, (size_t)a->n_prompt * a->d * sizeof(float)) == 0);
    ck_assert_int_eq(a->n_optim, b->n_optim);
    for (int i = 0; i < a->n_optim; i++) {
        const sp_checkpoint_array *x = &a->optim[i], *y = find_array(b, x->name);
        ck_assert_msg(y != NULL, "optimizer array %s missing", x->name);
        ck_assert_uint_eq(x->n, y->n);
        ck_assert(memcmp(x->data, y->data, x->n * sizeof(float)) == 0);
    }
    ck_assert(memcmp(a->rng, b->rng, sizeof a->rng) == 0);
    ck_assert_int_eq(a->step, b->step);
    ck_assert_int_eq(a->epoch, b->epoch);
    ck_assert_int_eq(a->epoch_position, b->epoch_position);
    ck_assert_int_eq(a->tokens_seen, b->tokens_seen);
    ck_assert_int_eq(a->optim_step, b->optim_step);
    ck_assert_str_eq(a->config_json ? a->config_json : "", b->config_json);
    ck_assert_str_eq(a->model_fingerprint ? a->model_fingerprint : "", b->model_fingerprint);
    ck_assert_str_eq(a->dataset_fingerprint ? a->dataset_fingerprint : "", b->dataset_fingerprint);
    ck_assert_str_eq(a->metric_name ? a->metric_name : "", b->metric_name);
    ck_assert(same_bits(a->metric, b->metric));
    ck_assert(same_bits(a->best_metric, b->best_metric));
    ck_assert_int_eq(a->best_step, b->best_step);
}

static void read_ok(const char *path, sp_checkpoint *c) {
    sp_error err = {0};
    ck_assert_msg(sp_checkpoint_read(path, c, &err) == 0, "%s", err.msg);
}

/* Reading must fail with a message naming the file (and containing want, if given); c must be
 * left empty. Returns nothing; aborts the test otherwise. */
static void read_fails(const char *path, const char *want) {
    sp_checkpoint c;
    sp_error err = {0};
    ck_assert_msg(sp_checkpoint_read(path, &c, &err) == -1, "%s read although corrupt", path);
    ck_assert_msg(strstr(err.msg, path) != NULL, "message does not name the file: %s", err.msg);
    if (want) ck_assert_msg(strstr(err.msg, want) != NULL, "expected \"%s\" in: %s", want, err.msg);
    ck_assert_ptr_null(c.prompt);
    ck_assert_int_eq(c.n_optim, 0);
}

static void flip_byte(const char *path, long off, unsigned char mask) {
    FILE *f = fopen(path, "r+b");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fseek(f, off, SEEK_SET), 0);
    int ch = fgetc(f);
    ck_assert_int_ne(ch, EOF);
    ck_assert_int_eq(fseek(f, off, SEEK_SET), 0);
    fputc(ch ^ mask, f);
    ck_assert_int_eq(fclose(f), 0);
}

/* File offset of a contiguous dataset's bytes. */
static long dataset_offset(const char *path, const char *name) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    ck_assert_int_ge(f, 0);
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    ck_assert_int_ge(d, 0);
    haddr_t off = H5Dget_offset(d);
    ck_assert(off != HADDR_UNDEF);
    H5Dclose(d), H5Fclose(f);
    return (long)off;
}

/* Number of entries in tu_dir whose name contains part. */
static int count_entries(const char *dir, const char *part) {
    char *cmd;
    ck_assert_int_ge(asprintf(&cmd, "ls -a '%s' | grep -c -- '%s'", dir, part), 0);
    FILE *p = popen(cmd, "r");
    int n = -1;
    ck_assert_int_eq(fscanf(p, "%d", &n), 1);
    pclose(p);
    free(cmd);
    return n;
}

/* ------------------------------------------------------------------------------------------ */
/* Round trips                                                                                */
/* ------------------------------------------------------------------------------------------ */

START_TEST(round_trip_is_bitwise) {
    sample s;
    make_sample(&s, 12);
    char *path = tu_path(tu_dir, "ck.h5");
    sp_error err = {0};
    ck_assert_msg(sp_checkpoint_write(path, &s.c, &err) == 0, "%s", err.msg);
    sp_checkpoint r;
    read_ok(path, &r);
    assert_equal(&s.c, &r);
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
    ck_assert_int_eq(count_entries(tu_dir, ".tmp."), 0);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0644);

    /* Overwriting with a later step replaces the contents. */
    make_sample(&s, 13);
    ck_assert_msg(sp_checkpoint_write(path, &s.c, &err) == 0, "%s", err.msg);
    read_ok(path, &r);
    assert_equal(&s.c, &r);
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
    read_ok(path, &r);
    assert_equal(&c, &r);
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
    sample s;
    make_sample(&s, 1);
    s.c.n_prompt = 0;
    ck_assert_int_eq(sp_checkpoint_write(path, &s.c, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "empty prompt"));
    make_sample(&s, 1);
    snprintf(s.c.optim[1].name, sizeof s.c.optim[1].name, "v");
    ck_assert_int_eq(sp_checkpoint_write(path, &s.c, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "twice"));
    make_sample(&s, 1);
    snprintf(s.c.optim[0].name, sizeof s.c.optim[0].name, "a/b");
    ck_assert_int_eq(sp_checkpoint_write(path, &s.c, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "invalid name"));
    make_sample(&s, 1);
    s.c.optim[2].n = 0;
    ck_assert_int_eq(sp_checkpoint_write(path, &s.c, &err), -1);
    make_sample(&s, 1);
    s.c.step = -3;
    ck_assert_int_eq(sp_checkpoint_write(path, &s.c, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, path));
    /* Nothing was created. */
    ck_assert_int_eq(count_entries(tu_dir, "bad.h5"), 0);
    free(path);
}
END_TEST

/* Non-finite state is never persisted: the writer names the array and the element. */
START_TEST(write_refuses_non_finite_state) {
    char *path = tu_path(tu_dir, "nan.h5");
    sp_error err = {0};
    sample s;
    make_sample(&s, 1);
    s.prompt[2 * D + 3] = NAN;
    ck_assert_int_eq(sp_checkpoint_write(path, &s.c, &err), -1);
    ck_assert_msg(strstr(err.msg, path) && strstr(err.msg, "refusing to write") &&
                      strstr(err.msg, "dataset \"prompt\" element [2, 3] is nan"),
                  "%s", err.msg);
    make_sample(&s, 1);
    s.vr[4] = -INFINITY;
    ck_assert_int_eq(sp_checkpoint_write(path, &s.c, &err), -1);
    ck_assert_msg(strstr(err.msg, "dataset \"optimizer/vr\" element [4] is -inf"), "%s", err.msg);
    make_sample(&s, 1);
    s.m[P * D - 1] = INFINITY;
    ck_assert_int_eq(sp_checkpoint_write(path, &s.c, &err), -1);
    ck_assert_msg(strstr(err.msg, "\"optimizer/m\" element [4, 6] is inf"), "%s", err.msg);
    make_sample(&s, 1);
    s.c.best_metric = INFINITY;
    ck_assert_int_eq(sp_checkpoint_write(path, &s.c, &err), -1);
    ck_assert_msg(strstr(err.msg, "\"best_metric\" is inf"), "%s", err.msg);
    ck_assert_int_eq(count_entries(tu_dir, "nan.h5"), 0);
    /* NaN metrics mean "none yet" and are written. */
    make_sample(&s, 1);
    s.c.metric = NAN, s.c.best_metric = NAN, s.c.best_step = -1;
    ck_assert_msg(sp_checkpoint_write(path, &s.c, &err) == 0, "%s", err.msg);
    free(path);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* Corruption                                                                                 */
/* ------------------------------------------------------------------------------------------ */

START_TEST(checksum_catches_flipped_data_bytes) {
    char *good = write_sample("good.h5", 5);
    char *bad = tu_path(tu_dir, "bad.h5");
    static const struct {
        const char *dataset;
        long len;
    } where[] = {{"prompt", P * D * 4},
                 {"optimizer/m", P * D * 4},
                 {"optimizer/vc", D * 4},
                 {"rng_state", 32}};
    for (size_t w = 0; w < sizeof where / sizeof where[0]; w++) {
        long base = dataset_offset(good, where[w].dataset);
        long offs[] = {0, 1, where[w].len / 2, where[w].len - 1};
        for (int k = 0; k < 4; k++) {
            tu_copy_file(good, bad);
            flip_byte(bad, base + offs[k], (unsigned char)(1u << (k * 2)));
            read_fails(bad, "checksum mismatch: the file is corrupt (stored ");
        }
    }
    /* A single low mantissa bit of one prompt value. */
    tu_copy_file(good, bad);
    flip_byte(bad, dataset_offset(good, "prompt") + 4 * 11, 0x01);
    read_fails(bad, "computed ");
    free(good), free(bad);
}
END_TEST

/* Rewrites a scalar int64 attribute through the HDF5 API (HDF5's own metadata checksums stay
 * valid, so only softprompt's checksum can notice). */
/* Replace attributes the checkpoint has (strings fixed-length, as softprompt writes them). */
static void set_i64_attr(const char *path, const char *name, int64_t v) {
    ck_assert_int_eq(tu_h5_set_i64_attr(path, name, v), 1);
}

static void set_str_attr(const char *path, const char *name, const char *value) {
    ck_assert_int_eq(tu_h5_set_str_attr(path, name, value, 0), 1);
}

START_TEST(checksum_catches_changed_attributes) {
    char *good = write_sample("good.h5", 5);
    char *bad = tu_path(tu_dir, "bad.h5");
    const char *ints[] = {"step",        "epoch",      "epoch_position",
                          "tokens_seen", "optim_step", "best_step"};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        tu_copy_file(good, bad);
        set_i64_attr(bad, ints[i], 6);
        read_fails(bad, "checksum mismatch");
    }
    const char *strs[] = {"config_json", "model_fingerprint", "dataset_fingerprint", "metric_name",
                          "created_by"};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        tu_copy_file(good, bad);
        set_str_attr(bad, strs[i], "0123456789abcdee");
        read_fails(bad, "checksum mismatch");
    }
    tu_copy_file(good, bad);
    set_str_attr(bad, "checksum", "not-a-checksum");
    read_fails(bad, "not 16 hex digits");
    /* h5py-style variable-length strings are refused (HDF5 reads them from an unchecksummed
     * heap where corruption crashes it). */
    tu_copy_file(good, bad);
    ck_assert_int_eq(tu_h5_set_str_attr(bad, "metric_name", "valid_accuracy", 1), 1);
    read_fails(bad, "\"metric_name\" is a variable-length string");

    /* A flipped byte inside an attribute's stored value (found by a marker in config_json): HDF5's
     * metadata checksum or softprompt's catches it; either way a clean message. */
    size_t n;
    char *bytes = tu_read_file(good, &n);
    char *hit = memmem(bytes, n, "MARKER-0123456789", 17);
    ck_assert_ptr_nonnull(hit);
    long off = (long)(hit - bytes) + 9;
    free(bytes);
    tu_copy_file(good, bad);
    flip_byte(bad, off, 0x01);
    read_fails(bad, NULL);

    /* Format checks come first: a newer version says so instead of "checksum mismatch". */
    tu_copy_file(good, bad);
    set_i64_attr(bad, "format_version", 2);
    read_fails(bad, "newer than this softprompt reads");
    tu_copy_file(good, bad);
    set_str_attr(bad, "format", "softprompt-dataset");
    read_fails(bad, "not a softprompt checkpoint");
    free(good), free(bad);
}
END_TEST

/* Every single-byte corruption of the file either fails with a message naming the file or, when
 * the byte was unused (padding, free space), reads back exactly the original checkpoint. */
START_TEST(every_flipped_byte_fails_cleanly_or_is_harmless) {
    sample s;
    make_sample(&s, 9);
    char *good = write_sample("good.h5", 9);
    char *bad = tu_path(tu_dir, "bad.h5");
    size_t n;
    char *orig = tu_read_file(good, &n);
    int failed = 0, harmless = 0;
    /* HDF5 1.10.8 itself leaks a few hundred bytes on some failed opens of files with corrupt
     * metadata (allocations inside libhdf5 only); the leak check is paused for this loop alone,
     * the other corruption tests run with it. HDF5's free lists are emptied first so that the
     * loop cannot recycle (and leak) blocks allocated before it. */
    H5garbage_collect();
    LSAN_DISABLE();
    for (size_t i = 0; i < n; i++) {
        orig[i] ^= (char)0xA5;
        tu_write_file(bad, orig, n);
        orig[i] ^= (char)0xA5;
        sp_checkpoint c;
        sp_error err = {0};
        if (sp_checkpoint_read(bad, &c, &err) == 0) {
            assert_equal(&s.c, &c);
            sp_checkpoint_free(&c);
            harmless++;
        } else {
            ck_assert_msg(strstr(err.msg, bad) != NULL, "byte %zu: %s", i, err.msg);
            failed++;
        }
    }
    LSAN_ENABLE();
    /* Nearly every byte of the file matters. */
    ck_assert_msg(failed > (int)n / 2, "%d of %zu corruptions failed, %d harmless", failed, n,
                  harmless);
    free(orig), free(good), free(bad);
}
END_TEST

START_TEST(truncated_files_fail_cleanly) {
    char *good = write_sample("good.h5", 3);
    char *bad = tu_path(tu_dir, "bad.h5");
    size_t n;
    char *orig = tu_read_file(good, &n);
    size_t lens[] = {0, 1, 7, 8, 9, 48, 100, 512, 1024, n / 3, n / 2, n - 100, n - 8, n - 1};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        tu_write_file(bad, orig, lens[i]);
        read_fails(bad, lens[i] == 0 ? "empty file" : NULL);
    }
    for (size_t len = 0; len < n; len += 61) {
        tu_write_file(bad, orig, len);
        read_fails(bad, NULL);
    }
    tu_write_file(bad, orig, n / 2);
    read_fails(bad, "truncated");
    free(orig), free(good), free(bad);
}
END_TEST

START_TEST(garbage_and_foreign_files_fail_cleanly) {
    char *bad = tu_path(tu_dir, "garbage.h5");
    unsigned char buf[8192];
    uint64_t x = 88172645463325252ull;
    for (int round = 0; round < 40; round++) {
        size_t len = 1 + (size_t)(round * 211) % sizeof buf;
        for (size_t i = 0; i < len; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            buf[i] = (unsigned char)x;
        }
        if (round % 2 && len > 9) { /* a valid signature and superblock version, then noise */
            memcpy(buf, "\x89HDF\r\n\x1a\n", 8);
            buf[8] = (unsigned char)(2 + round % 2);
        }
        tu_write_file(bad, buf, len);
        read_fails(bad, NULL);
    }
    tu_write_file(bad, "hello, world\n", 13);
    read_fails(bad, "not an HDF5 file");

    char *missing = tu_path(tu_dir, "missing.h5");
    read_fails(missing, "No such file");
    read_fails(tu_dir, "not a regular file");

    /* A default (superblock v0) HDF5 file, as h5py makes: refused before HDF5 parses it. */
    char *old = tu_path(tu_dir, "old.h5");
    hid_t f = H5Fcreate(old, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(f);
    read_fails(old, "superblock version 0");

    /* A 1.10-format HDF5 file without our attributes. */
    char *plain = tu_path(tu_dir, "plain.h5");
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110);
    f = H5Fcreate(plain, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl), H5Fclose(f);
    read_fails(plain, "missing root attribute \"format\"");
    free(bad), free(missing), free(old), free(plain);
}
END_TEST

/* A valid checkpoint whose datasets are replaced by wrong ones: each is named. */
START_TEST(wrong_datasets_are_named) {
    char *good = write_sample("good.h5", 3);
    char *bad = tu_path(tu_dir, "bad.h5");
    struct {
        const char *name;
        int rank;
        hsize_t dims[2];
        hid_t type;
        const char *want;
    } cases[] = {
        {"prompt", 1, {35, 0}, H5T_IEEE_F32LE, "\"prompt\" must be 2-D"},
        {"prompt", 2, {5, 7}, H5T_IEEE_F64LE, "\"prompt\" must be float32"},
        {"rng_state", 1, {3, 0}, H5T_STD_U64LE, "\"rng_state\" must hold 4 values"},
        {"rng_state", 1, {4, 0}, H5T_STD_I32LE, "\"rng_state\" must be uint64"},
        {"optimizer/m", 2, {7, 5}, H5T_IEEE_F32LE, "must match the prompt"},
        {"optimizer/vr", 1, {5, 0}, H5T_STD_I32LE, "\"optimizer/vr\" must be float32"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tu_copy_file(good, bad);
        hid_t f = H5Fopen(bad, H5F_ACC_RDWR, H5P_DEFAULT);
        ck_assert_int_ge(H5Ldelete(f, cases[i].name, H5P_DEFAULT), 0);
        hid_t s = H5Screate_simple(cases[i].rank, cases[i].dims, NULL);
        hid_t d =
            H5Dcreate2(f, cases[i].name, cases[i].type, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        ck_assert_int_ge(d, 0);
        H5Dclose(d), H5Sclose(s), H5Fclose(f);
        read_fails(bad, cases[i].want);
    }
    tu_copy_file(good, bad);
    hid_t f = H5Fopen(bad, H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(f, "prompt", H5P_DEFAULT);
    H5Adelete(f, "tokens_seen");
    H5Fclose(f);
    read_fails(bad, "missing dataset \"prompt\"");
    tu_copy_file(good, bad);
    f = H5Fopen(bad, H5F_ACC_RDWR, H5P_DEFAULT);
    H5Adelete(f, "tokens_seen");
    H5Fclose(f);
    read_fails(bad, "missing root attribute \"tokens_seen\"");
    /* a prompt of 2^28 floats (1 GiB) declared in chunks that were never written */
    tu_copy_file(good, bad);
    f = H5Fopen(bad, H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(f, "prompt", H5P_DEFAULT);
    hsize_t dims[2] = {1 << 14, 1 << 14}, chunk[2] = {256, 256};
    hid_t s = H5Screate_simple(2, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 2, chunk);
    hid_t d = H5Dcreate2(f, "prompt", H5T_IEEE_F32LE, s, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    ck_assert_int_ge(d, 0);
    H5Dclose(d), H5Pclose(dcpl), H5Sclose(s), H5Fclose(f);
    read_fails(bad, "dataset \"/prompt\" declares 1073741824 bytes of data but stores only 0");
    free(good), free(bad);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* Failed writes                                                                              */
/* ------------------------------------------------------------------------------------------ */

START_TEST(failed_writes_name_the_path_and_keep_the_old_file) {
    sample s;
    make_sample(&s, 1);
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
    char *path = write_sample("ck.h5", 1);
    enum { BP = 64, BD = 1024 };
    float *big = calloc(BP * BD, sizeof *big);
    sample b;
    make_sample(&b, 2);
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
    ck_assert_int_eq(count_entries(tu_dir, ".tmp."), 0);
    sp_checkpoint r;
    read_ok(path, &r);
    assert_equal(&s.c, &r);
    sp_checkpoint_free(&r);
    free(big), free(path), free(file), free(under_file), free(nodir);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* The files of a run                                                                         */
/* ------------------------------------------------------------------------------------------ */

START_TEST(path_names) {
    char *p = sp_checkpoint_path("/runs/a", 123);
    ck_assert_str_eq(p, "/runs/a/step-000000000123.h5");
    free(p);
    ck_assert_ptr_null(sp_checkpoint_path("/runs/a", -1));
}
END_TEST

static void write_step(int64_t step) {
    sample s;
    make_sample(&s, step);
    char *path = sp_checkpoint_path(tu_dir, step);
    sp_error err = {0};
    ck_assert_msg(sp_checkpoint_write(path, &s.c, &err) == 0, "%s", err.msg);
    free(path);
}

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
    flip_byte(p5, dataset_offset(p5, "prompt") + 3, 0x10);
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
    ck_assert_int_eq(count_entries(tu_dir, "^step-0.*h5$"), 1);
    ck_assert_int_eq(access(tmp, F_OK), 0);
    ck_assert_int_eq(sp_checkpoint_prune(tu_dir, 0, NULL, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "keep_last"));
    char *missing = tu_path(tu_dir, "nope");
    ck_assert_int_eq(sp_checkpoint_prune(missing, 1, NULL, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, missing));
    free(tmp), free(other), free(p1), free(alias), free(missing);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* Crafted checkpoints: valid checksum, values no writer would store                          */
/* ------------------------------------------------------------------------------------------ */

/* sp_prompt_read_h5 fails on path with a message containing want. */
static void prompt_fails_any(const char *path, const char *want) {
    float *p = NULL;
    int n = 0, d = 0;
    sp_error err = {0};
    ck_assert_int_eq(sp_prompt_read_h5(path, &p, &n, &d, &err), -1);
    ck_assert_ptr_null(p);
    ck_assert_msg(strstr(err.msg, want) != NULL, "expected \"%s\" in: %s", want, err.msg);
}

static void write_attr(hid_t f, const char *name, hid_t mem_type, const void *v) {
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    ck_assert_int_ge(a, 0);
    ck_assert_int_ge(H5Awrite(a, mem_type, v), 0);
    H5Aclose(a);
}

static void write_floats(hid_t loc, const char *name, const float *v) {
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    ck_assert_int_ge(d, 0);
    ck_assert_int_ge(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v), 0);
    H5Dclose(d);
}

/* Writes s as a checkpoint at path even where the writer refuses (non-finite values, any
 * counters): a copy with writable values first, then every value of s written into it with
 * HDF5 and the checksum of s stored, as someone editing a file with h5py and recomputing the
 * checksum (docs/formats.md) would. */
static char *write_crafted(const char *name, const sample *s) {
    sample ok = *s;
    sp_checkpoint *c = &ok.c;
    c->prompt = ok.prompt;
    float *arrays[4] = {ok.v, ok.m, ok.vr, ok.vc};
    for (int i = 0; i < 4; i++) c->optim[i].data = arrays[i];
    for (size_t i = 0; i < sizeof ok.prompt / sizeof(float); i++) ok.prompt[i] = 0;
    c->step = c->epoch = c->epoch_position = c->tokens_seen = c->optim_step = 0;
    c->best_step = -1, c->metric = c->best_metric = NAN;
    for (int i = 0; i < 4; i++)
        for (size_t k = 0; k < c->optim[i].n; k++) c->optim[i].data[k] = 0;
    char *path = tu_path(tu_dir, name);
    sp_error err = {0};
    ck_assert_msg(sp_checkpoint_write(path, c, &err) == 0, "%s", err.msg);

    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    ck_assert_int_ge(f, 0);
    write_floats(f, "prompt", s->c.prompt);
    for (int i = 0; i < s->c.n_optim; i++) {
        char dset[64];
        snprintf(dset, sizeof dset, "optimizer/%s", s->c.optim[i].name);
        write_floats(f, dset, s->c.optim[i].data);
    }
    hid_t rng = H5Dopen2(f, "rng_state", H5P_DEFAULT);
    ck_assert_int_ge(H5Dwrite(rng, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, s->c.rng), 0);
    H5Dclose(rng);
    const char *ints[] = {"step",        "epoch",      "epoch_position",
                          "tokens_seen", "optim_step", "best_step"};
    const int64_t *vals[] = {&s->c.step,        &s->c.epoch,      &s->c.epoch_position,
                             &s->c.tokens_seen, &s->c.optim_step, &s->c.best_step};
    for (int i = 0; i < 6; i++) write_attr(f, ints[i], H5T_NATIVE_INT64, vals[i]);
    write_attr(f, "metric", H5T_NATIVE_DOUBLE, &s->c.metric);
    write_attr(f, "best_metric", H5T_NATIVE_DOUBLE, &s->c.best_metric);
    ck_assert_int_ge(H5Fclose(f), 0);
    char sum[17];
    sp_h64_hex(sp_ckpt_checksum(&s->c, sp_ckpt_created_by(&s->c)), sum);
    set_str_attr(path, "checksum", sum);
    return path;
}

START_TEST(crafted_checkpoints_read_back_what_was_crafted) {
    /* The helper itself: valid values other than the writer's read back exactly. */
    sample s;
    make_sample(&s, 9);
    s.c.epoch = 123, s.c.epoch_position = 1000000000000LL, s.prompt[0] = 42.5f;
    s.vc[3] = 7.25f, s.c.rng[2] = 99;
    char *path = write_crafted("crafted.h5", &s);
    sp_checkpoint r;
    read_ok(path, &r);
    assert_equal(&s.c, &r);
    sp_checkpoint_free(&r);
    free(path);
}
END_TEST

/* A file whose checksum verifies but whose prompt or optimizer state is not finite (a diverged
 * run written by an older softprompt, or an edited file) is refused, naming the element. */
START_TEST(read_refuses_non_finite_state) {
    sample s;
    make_sample(&s, 3);
    s.prompt[1 * D + 2] = NAN;
    char *p1 = write_crafted("nan-prompt.h5", &s);
    read_fails(p1, "dataset \"prompt\" element [1, 2] is nan");
    make_sample(&s, 3);
    s.v[0] = INFINITY;
    char *p2 = write_crafted("inf-v.h5", &s);
    read_fails(p2, "dataset \"optimizer/v\" element [0, 0] is inf");
    make_sample(&s, 3);
    s.vc[6] = NAN;
    char *p3 = write_crafted("nan-vc.h5", &s);
    read_fails(p3, "dataset \"optimizer/vc\" element [6] is nan");
    make_sample(&s, 3);
    s.c.metric = -INFINITY;
    char *p4 = write_crafted("inf-metric.h5", &s);
    read_fails(p4, "root attribute \"metric\" is -inf");
    /* --init and eval/export read prompts through the same reader. */
    prompt_fails_any(p1, "element [1, 2] is nan");
    free(p1), free(p2), free(p3), free(p4);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* Resume state against the training set                                                      */
/* ------------------------------------------------------------------------------------------ */

static char *make_dataset(const char *name, int variant);

/* Sets the data position, tokens and counters of c to what a trainer with this seed and global
 * batch has after `step` steps on ds (the trainer's data order, replayed). */
static void trained_state(sp_checkpoint *c, const sp_dataset *ds, uint64_t seed, int G,
                          int64_t step) {
    sp_data_order o;
    sp_error err = {0};
    ck_assert_int_eq(sp_data_order_init(&o, sp_dataset_n_examples(ds), seed, &err), 0);
    const int64_t *off = sp_dataset_offsets(ds);
    int64_t *ids = malloc((size_t)G * sizeof *ids), tokens = 0;
    for (int64_t s = 0; s < step; s++) {
        sp_data_order_next(&o, ids, G);
        for (int k = 0; k < G; k++) tokens += off[ids[k] + 1] - off[ids[k]];
    }
    c->step = c->optim_step = step, c->epoch = o.epoch, c->epoch_position = o.position;
    c->tokens_seen = tokens;
    c->best_step = step > 0 ? step - 1 : -1;
    c->best_metric = step > 0 ? 0.875 : NAN, c->metric = step > 0 ? 0.8125 : NAN;
    free(ids);
    sp_data_order_free(&o);
}

static void resume_ok(const sp_checkpoint *c, const sp_dataset *ds, uint64_t seed, int G) {
    sp_error err = {0};
    ck_assert_msg(sp_checkpoint_check_resume_state(c, "ck.h5", ds, seed, G, &err) == 0,
                  "step %lld epoch %lld position %lld: %s", (long long)c->step, (long long)c->epoch,
                  (long long)c->epoch_position, err.msg);
}

static void resume_fails(const sp_checkpoint *c, const sp_dataset *ds, uint64_t seed, int G,
                         const char *want) {
    sp_error err = {0};
    ck_assert_int_eq(sp_checkpoint_check_resume_state(c, "ck.h5", ds, seed, G, &err), -1);
    ck_assert_msg(strstr(err.msg, "ck.h5: ") == err.msg && strstr(err.msg, want),
                  "expected \"%s\" in: %s", want, err.msg);
}

START_TEST(resume_state_is_checked_against_the_data) {
    char *data = make_dataset("train.h5", 0); /* 20 examples */
    sp_dataset *ds = tu_dataset_open_ok(data);
    const uint64_t seed = 11;
    const int G = 3;
    sample s;
    make_sample(&s, 0);
    sp_checkpoint *c = &s.c;
    /* Consistent states: the start, mid-epoch, an epoch boundary (60 = 3 x 20: the trainer
     * moves to the next epoch lazily, so epoch 2, position 20), after it. */
    int64_t steps[] = {0, 1, 6, 7, 20, 21, 100};
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        trained_state(c, ds, seed, G, steps[i]);
        resume_ok(c, ds, seed, G);
    }
    trained_state(c, ds, seed, G, 20);
    ck_assert_int_eq(c->epoch, 2);
    ck_assert_int_eq(c->epoch_position, 20);

    /* The crash of issue 15: epoch_position 10^12, and one past the end (heap overflow). */
    trained_state(c, ds, seed, G, 7);
    c->epoch_position = 1000000000000LL;
    resume_fails(c, ds, seed, G,
                 "epoch_position 1000000000000 is past the end of the training "
                 "set (20 examples)");
    c->epoch_position = 21;
    resume_fails(c, ds, seed, G, "epoch_position 21 is past the end");
    /* Positions that do not follow from the step. */
    trained_state(c, ds, seed, G, 7);
    c->epoch_position++;
    resume_fails(c, ds, seed, G,
                 "step 7 x global batch 3 = 21 examples consumed, but epoch 1 "
                 "and epoch_position 2 of a 20-example training set are 22");
    trained_state(c, ds, seed, G, 7);
    c->epoch = 0;
    resume_fails(c, ds, seed, G, "the data position does not follow from the step");
    trained_state(c, ds, seed, G, 7);
    resume_fails(c, ds, seed, 4, "does not follow from the step"); /* another global batch */
    trained_state(c, ds, seed, G, 7);
    c->step = c->optim_step = INT64_MAX / 2;
    resume_fails(c, ds, seed, G, "is too large to be a position in the data");
    trained_state(c, ds, seed, G, 7);
    c->epoch = INT64_MAX / 4;
    resume_fails(c, ds, seed, G, "is too large to be a position in the data");
    /* Counters. */
    trained_state(c, ds, seed, G, 7);
    c->tokens_seen += 1;
    resume_fails(c, ds, seed, G, "tokens_seen is");
    trained_state(c, ds, seed, G, 7);
    resume_fails(c, ds, seed + 1, G, "tokens_seen is"); /* another order, other examples */
    trained_state(c, ds, seed, G, 7);
    c->optim_step = 6;
    resume_fails(c, ds, seed, G, "optim_step 6 differs from step 7");
    trained_state(c, ds, seed, G, 7);
    c->best_step = 8;
    resume_fails(c, ds, seed, G, "best_step 8 is not in [-1, step 7]");
    trained_state(c, ds, seed, G, 7);
    c->best_metric = NAN;
    resume_fails(c, ds, seed, G, "best_step 6 and best_metric nan disagree");
    trained_state(c, ds, seed, G, 7);
    c->metric = 1.5;
    resume_fails(c, ds, seed, G, "metric 1.5 is not a possible valid_accuracy");
    trained_state(c, ds, seed, G, 7);
    c->metric_name = "valid_loss", c->best_metric = -2;
    resume_fails(c, ds, seed, G, "best_metric -2 is not a possible valid_loss");
    trained_state(c, ds, seed, G, 7);
    c->metric_name = "bleu";
    resume_fails(c, ds, seed, G, "metric_name \"bleu\" is neither");
    trained_state(c, ds, seed, G, 7);
    memset(c->rng, 0, sizeof c->rng);
    resume_fails(c, ds, seed, G, "rng_state is all zero");

    /* The same through a file: the checksum verifies, the meaning does not. */
    trained_state(c, ds, seed, G, 7);
    c->epoch_position = 1000000000000LL;
    char *path = write_crafted("far.h5", &s);
    sp_checkpoint r;
    read_ok(path, &r);
    sp_error err = {0};
    ck_assert_int_eq(sp_checkpoint_check_resume_state(&r, path, ds, seed, G, &err), -1);
    ck_assert_msg(strstr(err.msg, path) && strstr(err.msg, "past the end"), "%s", err.msg);
    sp_checkpoint_free(&r);
    sp_dataset_close(ds);
    free(path), free(data);
}
END_TEST

static char *make_model(const char *name, uint64_t seed, int shards, int prefix, sp_dtype dt);

/* Every checkpoint a real run writes passes the checks, across epoch boundaries (20 examples,
 * 7 per step) and for both data paths (packed micro-batches, per-example deterministic). */
START_TEST(trainer_checkpoints_pass_the_resume_checks) {
    char *model = make_model("m", 4, 1, 0, SP_DTYPE_F32);
    char *data = make_dataset("train.h5", 0);
    sp_dataset *ds = tu_dataset_open_ok(data);
    for (int deterministic = 0; deterministic < 2; deterministic++) {
        char name[32];
        snprintf(name, sizeof name, "run%d", deterministic);
        char *out = tu_path(tu_dir, name);
        sp_train_config c;
        sp_train_config_default(&c);
        c.model_dir = model, c.train_path = data, c.out_dir = out;
        c.steps = 9, c.global_batch = 7, c.micro_batch = 3, c.save_every = 1, c.keep = 100;
        c.init = SP_INIT_RANDOM, c.quiet = 1, c.resume = "never", c.threads = 1, c.seed = 5;
        c.deterministic = deterministic;
        sp_dist one = {0, 1, 0, 1};
        sp_error err = {0};
        ck_assert_msg(sp_train_run(&c, &one, &err) == 0, "%s", err.msg);
        char *dir = tu_path(out, "checkpoints");
        for (int64_t step = 1; step <= 9; step++) {
            char *path = sp_checkpoint_path(dir, step);
            sp_checkpoint ck;
            read_ok(path, &ck);
            ck_assert_msg(sp_checkpoint_check_resume_state(&ck, path, ds, c.seed, 7, &err) == 0,
                          "%s", err.msg);
            /* and they are not accepted for another seed or global batch */
            ck_assert_int_eq(sp_checkpoint_check_resume_state(&ck, path, ds, c.seed, 6, &err), -1);
            sp_checkpoint_free(&ck);
            free(path);
        }
        free(dir), free(out);
    }
    sp_dataset_close(ds);
    free(model), free(data);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* --init FILE.h5                                                                             */
/* ------------------------------------------------------------------------------------------ */

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
    sample s;
    make_sample(&s, 4);
    char *ck = write_sample("ck.h5", 4);
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
    flip_byte(bad, dataset_offset(bad, "prompt") + 8, 0x04);
    prompt_fails(bad, "checksum mismatch");
    char *txt = tu_path(tu_dir, "text.h5");
    tu_write_file(txt, "not hdf5", 8);
    prompt_fails(txt, "not an HDF5 file");
    free(ck), free(f64), free(one), free(three), free(none), free(ints), free(nan), free(huge);
    free(bad), free(txt);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* Fingerprints                                                                               */
/* ------------------------------------------------------------------------------------------ */

static char *make_model(const char *name, uint64_t seed, int shards, int prefix, sp_dtype dt) {
    sp_init_options o;
    sp_init_options_default(&o);
    o.cfg = (sp_model_config){.n_layer = 2,
                              .d_model = 16,
                              .n_head = 2,
                              .d_ff = 64,
                              .vocab_size = 211, /* make_dataset's token ids are < 140 */
                              .n_ctx = 24,
                              .ln_eps = 1e-5f,
                              .tied = 1,
                              .model_type = "gpt2"};
    o.seed = seed, o.n_shards = shards, o.prefix = prefix, o.dtype = dt;
    o.random_norms = 1;
    char *dir = tu_path(tu_dir, name);
    sp_error err = {0};
    ck_assert_msg(sp_init_model_write(dir, &o, &err) == 0, "%s", err.msg);
    return dir;
}

static void model_fp(const char *dir, char out[17]) {
    sp_model m;
    sp_error err = {0};
    ck_assert_msg(sp_model_load(&m, dir, &err) == 0, "%s", err.msg);
    sp_model_fingerprint(&m, out);
    sp_model_free(&m);
    ck_assert_uint_eq(strlen(out), 16);
    ck_assert_uint_eq(strspn(out, "0123456789abcdef"), 16);
}

START_TEST(model_fingerprint_follows_the_weights) {
    char *a = make_model("a", 1, 1, 0, SP_DTYPE_F32);
    char *a_sharded = make_model("a3", 1, 3, 1, SP_DTYPE_F32);
    char *b = make_model("b", 2, 1, 0, SP_DTYPE_F32);
    char fa[17], fa3[17], fb[17], fa2[17], fc[17];
    model_fp(a, fa);
    model_fp(a_sharded, fa3);
    model_fp(b, fb);
    model_fp(a, fa2);
    ck_assert_str_eq(fa, fa2);
    ck_assert_str_eq(fa, fa3); /* same values, different files and names */
    ck_assert_str_ne(fa, fb);  /* different seed */

    /* One weight changed in a copy of the file: the last element of one layer's c_proj. */
    char *c = tu_path(tu_dir, "c");
    ck_assert_int_eq(mkdir(c, 0755), 0);
    const char *files[] = {"config.json", "model.safetensors"};
    for (int i = 0; i < 2; i++) {
        char *from = tu_path(a, files[i]), *to = tu_path(c, files[i]);
        tu_copy_file(from, to);
        free(from), free(to);
    }
    char *st_path = tu_path(c, "model.safetensors");
    sp_st_file f;
    sp_error err = {0};
    ck_assert_msg(sp_st_open(&f, st_path, &err) == 0, "%s", err.msg);
    const sp_st_tensor *t = sp_st_find(&f, "h.1.attn.c_proj.weight");
    ck_assert_ptr_nonnull(t);
    long off = (long)((const char *)t->data - (const char *)f.map) + (long)t->nbytes - 4;
    sp_st_close(&f);
    flip_byte(st_path, off, 0x01); /* lowest mantissa bit of a float32 */
    model_fp(c, fc);
    ck_assert_str_ne(fa, fc);
    free(a), free(a_sharded), free(b), free(c), free(st_path);
}
END_TEST

static const int32_t VERB[2] = {10, 20};
static const char *const CLASSES[2] = {"neg", "pos"};

/* A small classification dataset; variant changes one thing: 1 a label, 2 a length,
 * 3 the template attribute; source/split differ with name. */
static char *make_dataset(const char *name, int variant) {
    sp_dataset_meta m = {0};
    m.task = SP_TASK_CLASSIFICATION;
    m.n_soft = 2, m.n_classes = 2, m.verbalizer = VERB, m.class_names = CLASSES;
    m.max_length = 32, m.seed = 5;
    m.tokenizer_hash = "sha256:tok";
    m.template_spec =
        variant == 3 ? "<soft0> <soft1> {text} So it was" : "<soft0> <soft1> {text} It was";
    m.target_spec = "{label}";
    m.verbalizer_spec = "neg: 10, pos: 20";
    m.source = name, m.split = name, m.created_by = "test";
    char *path = tu_path(tu_dir, name);
    sp_error err = {0};
    sp_dataset_writer *w = sp_dataset_writer_open(path, &m, 0, &err);
    ck_assert_msg(w != NULL, "%s", err.msg);
    for (int i = 0; i < 20; i++) {
        int32_t tok[12];
        int len = 5 + i % 6 + (variant == 2 && i == 7);
        tok[0] = SP_SOFT(0), tok[1] = SP_SOFT(1);
        for (int t = 2; t < len; t++) tok[t] = 100 + i + t;
        int label = (i % 3 == 0) ^ (variant == 1 && i == 11);
        int32_t pos = len - 1, id = VERB[label];
        ck_assert_msg(sp_dataset_writer_add(w, tok, len, &pos, &id, 1, label, &err) == 0, "%s",
                      err.msg);
    }
    ck_assert_msg(sp_dataset_writer_close(w, &err) == 0, "%s", err.msg);
    return path;
}

static void dataset_fp(const char *path, char out[17]) {
    sp_error err = {0};
    sp_dataset *ds = sp_dataset_open(path, &err);
    ck_assert_msg(ds != NULL, "%s", err.msg);
    ck_assert_msg(sp_dataset_fingerprint(ds, out, &err) == 0, "%s", err.msg);
    sp_dataset_close(ds);
    ck_assert_uint_eq(strlen(out), 16);
}

START_TEST(dataset_fingerprint_follows_the_data) {
    char *a = make_dataset("a.h5", 0), *a2 = make_dataset("a-copy.h5", 0);
    char *l = make_dataset("label.h5", 1), *n = make_dataset("len.h5", 2),
         *t = make_dataset("tmpl.h5", 3);
    char fa[17], fa2[17], fl[17], fn[17], ft[17];
    dataset_fp(a, fa);
    dataset_fp(a2, fa2);
    dataset_fp(l, fl);
    dataset_fp(n, fn);
    dataset_fp(t, ft);
    ck_assert_str_eq(fa, fa2); /* file, source and split names do not matter */
    ck_assert_str_ne(fa, fl);
    ck_assert_str_ne(fa, fn);
    ck_assert_str_ne(fa, ft);
    free(a), free(a2), free(l), free(n), free(t);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* PEFT export and description                                                                */
/* ------------------------------------------------------------------------------------------ */

START_TEST(peft_export_writes_a_loadable_adapter) {
    char *mdir = make_model("m", 3, 1, 0, SP_DTYPE_F32);
    sp_model m;
    sp_error err = {0};
    ck_assert_msg(sp_model_load(&m, mdir, &err) == 0, "%s", err.msg);
    enum { NP = 4 };
    float prompt[NP * 16];
    for (int i = 0; i < NP * 16; i++) prompt[i] = (float)i / 7.0f;
    char *out = tu_path(tu_dir, "export/nested/adapter");
    ck_assert_msg(
        sp_peft_export(out, prompt, NP, &m, "openai-community/gpt2", "vocab", NULL, &err) == 0,
        "%s", err.msg);

    char *st = tu_path(out, "adapter_model.safetensors");
    sp_st_file f;
    ck_assert_msg(sp_st_open(&f, st, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(f.n_tensors, 1);
    const sp_st_tensor *t = sp_st_find(&f, "prompt_embeddings");
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->dtype, SP_DTYPE_F32);
    ck_assert_int_eq(t->ndim, 2);
    ck_assert_int_eq(t->shape[0], NP);
    ck_assert_int_eq(t->shape[1], 16);
    ck_assert(memcmp(t->data, prompt, sizeof prompt) == 0);
    ck_assert_str_eq(sp_st_metadata(&f, "format"), "pt");
    sp_st_close(&f);

    char *cfg_path = tu_path(out, "adapter_config.json");
    json_error_t je;
    json_t *cfg = json_load_file(cfg_path, JSON_REJECT_DUPLICATES, &je);
    ck_assert_msg(cfg != NULL, "%s", je.text);
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "peft_type")), "PROMPT_TUNING");
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "task_type")), "CAUSAL_LM");
    ck_assert_int_eq(json_integer_value(json_object_get(cfg, "num_virtual_tokens")), NP);
    ck_assert_int_eq(json_integer_value(json_object_get(cfg, "token_dim")), 16);
    ck_assert_int_eq(json_integer_value(json_object_get(cfg, "num_transformer_submodules")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(cfg, "num_attention_heads")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(cfg, "num_layers")), 2);
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "prompt_tuning_init")), "SAMPLE_VOCAB");
    ck_assert(json_is_null(json_object_get(cfg, "prompt_tuning_init_text")));
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "base_model_name_or_path")),
                     "openai-community/gpt2");
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "tokenizer_name_or_path")),
                     "openai-community/gpt2");
    ck_assert(json_is_true(json_object_get(cfg, "inference_mode")));
    const char *nulls[] = {"revision", "auto_mapping"};
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(cfg, nulls[i]);
        ck_assert_msg(v && json_is_null(v), "%s should be null", nulls[i]);
    }
    /* PEFT <= 0.13 raises TypeError on it (test_prompt_file checks every key). */
    ck_assert_ptr_null(json_object_get(cfg, "modules_to_save"));
    json_decref(cfg);

    /* Text init: TEXT only with its text (PEFT refuses TEXT without prompt_tuning_init_text). */
    ck_assert_int_eq(sp_peft_export(out, prompt, NP, &m, "gpt2", "vocab-top", NULL, &err), 0);
    cfg = json_load_file(cfg_path, 0, &je);
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "prompt_tuning_init")), "SAMPLE_VOCAB");
    json_decref(cfg);
    ck_assert_int_eq(sp_peft_export(out, prompt, NP, &m, "gpt2", "labels", NULL, &err), 0);
    cfg = json_load_file(cfg_path, 0, &je);
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "prompt_tuning_init")), "RANDOM");
    json_decref(cfg);
    ck_assert_int_eq(sp_peft_export(out, prompt, NP, &m, NULL, "text", NULL, &err), 0);
    cfg = json_load_file(cfg_path, 0, &je);
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "prompt_tuning_init")), "RANDOM");
    char *real = realpath(mdir, NULL); /* the default when no base model is named */
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "base_model_name_or_path")), real);
    free(real);
    json_decref(cfg);
    ck_assert_int_eq(sp_peft_export(out, prompt, NP, &m, "gpt2", "text", "Classify:", &err), 0);
    cfg = json_load_file(cfg_path, 0, &je);
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "prompt_tuning_init")), "TEXT");
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "prompt_tuning_init_text")),
                     "Classify:");
    json_decref(cfg);
    ck_assert_int_eq(count_entries(out, ".tmp."), 0);

    /* A directory that cannot be created. */
    char *file = tu_path(tu_dir, "file");
    tu_write_file(file, "x", 1);
    char *under = tu_path(file, "adapter");
    ck_assert_int_eq(sp_peft_export(under, prompt, NP, &m, NULL, NULL, NULL, &err), -1);
    ck_assert_msg(strstr(err.msg, under) != NULL, "%s", err.msg);
    sp_model_free(&m);
    free(mdir), free(out), free(st), free(cfg_path), free(file), free(under);
}
END_TEST

START_TEST(describe_summarises_a_checkpoint) {
    char *path = write_sample("ck.h5", 12);
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    sp_error err = {0};
    ck_assert_msg(sp_checkpoint_describe(out, path, &err) == 0, "%s", err.msg);
    fclose(out);
    const char *want[] = {"step              12",
                          "epoch 2, 17 examples",
                          "123456789012",
                          "[5, 7] float32, RMS",
                          "optimizer/m",
                          "optimizer/vr",
                          "valid_accuracy = 0.8125; best 0.875 at step 11",
                          "0123456789abcdef",
                          "fedcba9876543210",
                          "optimizer.lr = 0.3",
                          "softprompt test"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        ck_assert_msg(strstr(text, want[i]) != NULL, "missing \"%s\" in:\n%s", want[i], text);
    free(text);
    /* `softprompt info` tells the file apart by its format attribute, then describes it */
    char *cli_out = NULL, *cli_err = NULL;
    const char *args[] = {"info", path, NULL};
    int rc = tu_run_cli(args, &cli_out, &cli_err);
    ck_assert_msg(rc == 0, "info: %s", cli_err);
    ck_assert_msg(strstr(cli_out, "softprompt checkpoint (format_version 1, checksum verified)"),
                  "%s", cli_out);
    free(cli_out), free(cli_err);
    char *bad = tu_path(tu_dir, "bad.h5");
    tu_write_file(bad, "junk", 4);
    out = open_memstream(&text, &len);
    ck_assert_int_eq(sp_checkpoint_describe(out, bad, &err), -1);
    fclose(out);
    ck_assert_ptr_nonnull(strstr(err.msg, bad));
    free(text), free(path), free(bad);
}
END_TEST

int main(void) {
    Suite *s = suite_create("checkpoint");
    TCase *tc = tcase_create("checkpoint");
    tcase_add_checked_fixture(tc, setup, tu_dir_teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, round_trip_is_bitwise);
    tcase_add_test(tc, round_trip_edge_values);
    tcase_add_test(tc, write_refuses_invalid_checkpoints);
    tcase_add_test(tc, write_refuses_non_finite_state);
    tcase_add_test(tc, crafted_checkpoints_read_back_what_was_crafted);
    tcase_add_test(tc, read_refuses_non_finite_state);
    tcase_add_test(tc, resume_state_is_checked_against_the_data);
    tcase_add_test(tc, trainer_checkpoints_pass_the_resume_checks);
    tcase_add_test(tc, checksum_catches_flipped_data_bytes);
    tcase_add_test(tc, checksum_catches_changed_attributes);
    tcase_add_test(tc, every_flipped_byte_fails_cleanly_or_is_harmless);
    tcase_add_test(tc, truncated_files_fail_cleanly);
    tcase_add_test(tc, garbage_and_foreign_files_fail_cleanly);
    tcase_add_test(tc, wrong_datasets_are_named);
    tcase_add_test(tc, failed_writes_name_the_path_and_keep_the_old_file);
    tcase_add_test(tc, path_names);
    tcase_add_test(tc, find_latest_skips_corrupt_newer_files);
    tcase_add_test(tc, prune_keeps_the_newest_and_keep_also);
    tcase_add_test(tc, prompt_reader_accepts_checkpoints_and_h5py_files);
    tcase_add_test(tc, model_fingerprint_follows_the_weights);
    tcase_add_test(tc, dataset_fingerprint_follows_the_data);
    tcase_add_test(tc, peft_export_writes_a_loadable_adapter);
    tcase_add_test(tc, describe_summarises_a_checkpoint);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
