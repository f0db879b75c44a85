/* Shared helpers of the checkpoint tests (testutil_ckpt.h). */
#include "testutil_ckpt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/checkpoint_internal.h"
#include "train/hash64.h"

enum { P = TU_CK_P, D = TU_CK_D };

void tu_ck_make_sample(tu_ck_sample *s, int64_t step) {
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

char *tu_ck_write_sample(const char *name, int64_t step) {
    tu_ck_sample s;
    tu_ck_make_sample(&s, step);
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

void tu_ck_assert_equal(const sp_checkpoint *a, const sp_checkpoint *b) {
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

void tu_ck_read_ok(const char *path, sp_checkpoint *c) {
    sp_error err = {0};
    ck_assert_msg(sp_checkpoint_read(path, c, &err) == 0, "%s", err.msg);
}

void tu_ck_read_fails(const char *path, const char *want) {
    sp_checkpoint c;
    sp_error err = {0};
    ck_assert_msg(sp_checkpoint_read(path, &c, &err) == -1, "%s read although corrupt", path);
    ck_assert_msg(strstr(err.msg, path) != NULL, "message does not name the file: %s", err.msg);
    if (want) ck_assert_msg(strstr(err.msg, want) != NULL, "expected \"%s\" in: %s", want, err.msg);
    ck_assert_ptr_null(c.prompt);
    ck_assert_int_eq(c.n_optim, 0);
}

void tu_ck_set_i64_attr(const char *path, const char *name, int64_t v) {
    ck_assert_int_eq(tu_h5_set_i64_attr(path, name, v), 1);
}

void tu_ck_set_str_attr(const char *path, const char *name, const char *value) {
    ck_assert_int_eq(tu_h5_set_str_attr(path, name, value, 0), 1);
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

char *tu_ck_write_crafted(const char *name, const tu_ck_sample *s) {
    tu_ck_sample ok = *s;
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
    sp__h64_hex(sp__ckpt_checksum(&s->c, sp__ckpt_created_by(&s->c)), sum);
    tu_ck_set_str_attr(path, "checksum", sum);
    return path;
}

void tu_ck_quiet_hdf5(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}
