/* T5 (src/model/t5.c): relative position buckets against transformers' arithmetic, and the
 * batches a T5 model refuses. Forward and backward against the float64 reference are in
 * test_reference (the t5_* cases), finite differences in test_engine (test_fd_t5). */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/t5.h"
#include "softprompt/generate.h"
#include "softprompt/model_init.h"
#include "testutil.h"

#define REF_DIR SP_FIXTURES_DIR "/ref"

/* The buckets of -300..300 the reference computed with torch (float32 logs, as transformers'
 * _relative_position_bucket) for each T5 case's buckets and distance, both directions. */
START_TEST(buckets_match_transformers) {
    static const char *const cases[] = {"t5_l2_h2_d24_relu_tied_b8_f32",
                                        "t5_l2_h4_d32_kv6_gated_untied_f16"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", REF_DIR, cases[i]);
        sp_model m;
        tu_model_load_ok(&m, path);
        snprintf(path, sizeof path, "%s/%s/expected.safetensors", REF_DIR, cases[i]);
        sp_st_file f;
        sp_error err = {0};
        ck_assert_msg(sp_st_open(&f, path, &err) == 0, "%s", err.msg);
        for (int bidir = 0; bidir < 2; bidir++) {
            const sp_st_tensor *t =
                sp_st_find(&f, bidir ? "buckets_bidirectional" : "buckets_causal");
            ck_assert(t && t->dtype == SP_DTYPE_F64 && t->shape[0] == 601);
            const double *want = t->data;
            for (int r = -300; r <= 300; r++) {
                int got = sp__t5_bucket(r, bidir, m.cfg.rel_buckets, m.cfg.rel_max_distance);
                ck_assert_msg(got == (int)want[r + 300], "%s: bucket of %d (%s): %d, expected %d",
                              cases[i], r, bidir ? "bidirectional" : "causal", got,
                              (int)want[r + 300]);
            }
        }
        sp_st_close(&f);
        sp_model_free(&m);
    }
}
END_TEST

/* A T5 model of n_positions 8 (tied, ReLU, 2 blocks each). */
static void tiny_t5(sp_model *m) {
    sp_init_options o;
    sp_init_options_default(&o);
    o.cfg = (sp_model_config){.arch = SP_ARCH_T5,
                              .n_layer = 2,
                              .d_model = 16,
                              .n_head = 2,
                              .n_kv_head = 2,
                              .head_dim = 8,
                              .d_ff = 24,
                              .vocab_size = 40,
                              .n_ctx = 8,
                              .ln_eps = 1e-6f,
                              .tied = 1,
                              .rel_buckets = 8,
                              .rel_max_distance = 20};
    char *dir = tu_write_model("t5", &o);
    tu_model_load_ok(m, dir);
    free(dir);
}

/* Runs a batch of one sequence; returns the engine's status, the message in err. */
static int run_one(const sp_model *m, const int32_t *tokens, int len, const int32_t *pos,
                   int n_targets, int n_kv, sp_error *err) {
    int32_t start[2] = {0, len}, ids[16] = {0};
    sp_batch b = {1, start, tokens, n_targets, pos, ids, NULL, NULL};
    float prompt[2 * 16] = {0}, grad[2 * 16] = {0};
    float *kv = calloc((size_t)m->cfg.n_layer * 2 * 16 * 4 + 1, sizeof *kv);
    sp_pass pass = {
        .prompt = prompt, .n_prompt = 2, .grad = grad, .kv_prefix = kv, .n_kv_prefix = n_kv};
    sp_worker *w = sp_worker_new(m);
    double loss;
    int rc = sp_engine_run(w, &b, &pass, &loss, err);
    if (rc == 0) ck_assert(isfinite(loss) && loss > 0);
    sp_worker_free(w);
    free(kv);
    return rc;
}

/* The encoder and the decoder are bounded apart: a sequence longer than n_positions runs when
 * neither part is; each part beyond it, a soft token in the decoder's input and a key/value
 * prefix are refused with what was expected. */
START_TEST(batches_t5_refuses) {
    sp_model m;
    tiny_t5(&m);
    int32_t tok[20];
    for (int i = 0; i < 20; i++) tok[i] = 2 + i;
    tok[0] = SP_SOFT(0), tok[3] = SP_SOFT(1);
    sp_error err = {0};
    int32_t ok_pos[] = {7, 8, 9, 10, 11, 12, 13, 14}; /* 8 encoder, 8 decoder positions */
    ck_assert_msg(run_one(&m, tok, 15, ok_pos, 8, 0, &err) == 0, "%s", err.msg);
    int32_t long_enc[] = {8};
    ck_assert_int_eq(run_one(&m, tok, 9, long_enc, 1, 0, &err), -1);
    tu_assert_has(err.msg, "the encoder's input (the 9 positions up to the first target) is "
                           "longer than n_positions = 8");
    int32_t long_dec[] = {2, 10};
    ck_assert_int_eq(run_one(&m, tok, 11, long_dec, 2, 0, &err), -1);
    tu_assert_has(err.msg, "the target spans 9 decoder positions, more than the decoder's limit "
                           "n_positions = 8");
    int32_t soft_dec[] = {1, 4};
    ck_assert_int_eq(run_one(&m, tok, 5, soft_dec, 2, 0, &err), -1);
    tu_assert_has(err.msg, "position 3: a soft token in the decoder's input");
    int32_t cls[] = {4};
    ck_assert_int_eq(run_one(&m, tok, 5, cls, 1, 2, &err), -1);
    tu_assert_has(err.msg, "key/value prefix (prefix tuning) is not implemented for T5");
    ck_assert_int_eq(run_one(&m, tok, 9, NULL, 0, 0, &err), -1); /* no targets: whole length */
    tu_assert_has(err.msg, "sequence 0 has length 9, expected 1..8 (n_positions)");
    sp_model_free(&m);
}
END_TEST

/* Generation is not implemented for T5: refused by name before anything runs. */
START_TEST(generate_refuses_t5) {
    sp_model m;
    tiny_t5(&m);
    sp_worker *w = sp_worker_new(&m);
    sp_gen_seq seq = {0};
    int32_t start[2] = {0, 1}, tok[1] = {5};
    sp_error err = {0};
    ck_assert_int_eq(sp_generate_extend(w, &seq, 1, start, tok, NULL, &err), -1);
    tu_assert_has(err.msg, "generate: t5 (encoder-decoder) generation is not implemented yet");
    sp_worker_free(w);
    sp_model_free(&m);
}
END_TEST

int main(void) {
    const TTest *tests[] = {buckets_match_transformers, batches_t5_refuses, generate_refuses_t5,
                            NULL};
    return tu_main("t5", tests, NULL, NULL);
}
