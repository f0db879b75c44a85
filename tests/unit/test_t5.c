/* T5 (src/model/t5.c, t5_generate.c): relative position buckets against transformers'
 * arithmetic, and the batches a T5 model refuses. Forward and backward against the float64
 * reference are in test_reference (the t5_* cases), finite differences in test_engine
 * (test_fd_t5). Generation:
 *  - cached and uncached computation agree: every decode step's logits through the cache (the
 *    encoder run once, the cross-attention keys and values of its output cached, one decoder
 *    self-attention row appended per step) are within 1e-5 normwise of sp_engine_run over the
 *    encoder input and the whole decoder prefix, greedy ids identical, with the prompt first,
 *    in the middle of the encoder's input and a per-request mix of prompts in one batch, for
 *    T5 1.0 (ReLU, tied head) and 1.1 (gated-GELU, untied); the worker within its estimate;
 *  - sp_generator: the same greedy ids, the repetition penalty over the decoder's ids
 *    (decoder_start and the generated ones, as transformers' generate() for encoder-decoders),
 *    EOS, the decoder's n_positions as the length limit;
 *  - greedy ids and step logits equal the float64 reference (tests/ref/t5_reference.py:
 *    generate.json, no cache);
 *  - bad input refused before anything is appended. */
#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/t5.h"
#include "softprompt/generate.h"
#include "softprompt/model_init.h"
#include "softprompt/rng.h"
#include "softprompt/safetensors.h"
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
 * neither part is; each part beyond it (the decoder's with a key/value prefix's rows) and a soft
 * token in the decoder's input are refused with what was expected. */
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
    int32_t cls[] = {4}; /* behind a key/value prefix of 2 (the decoder's self-attention) */
    ck_assert_msg(run_one(&m, tok, 5, cls, 1, 2, &err) == 0, "%s", err.msg);
    int32_t dec7[] = {4, 10}; /* 7 decoder positions and the prefix's 2 > 8 */
    ck_assert_msg(run_one(&m, tok, 11, dec7, 2, 0, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(run_one(&m, tok, 11, dec7, 2, 2, &err), -1);
    tu_assert_has(err.msg, "the target spans 7 decoder positions, more than the decoder's limit "
                           "n_positions = 8 less the key/value prefix's 2");
    ck_assert_int_eq(run_one(&m, tok, 9, NULL, 0, 0, &err), -1); /* no targets: whole length */
    tu_assert_has(err.msg, "sequence 0 has length 9, expected 1..8 (n_positions)");
    sp_model_free(&m);
}
END_TEST

/* ---- generation ------------------------------------------------------------------------------ */

#define GV 50   /* vocabulary of the generation models */
#define GCTX 24 /* their n_positions */
#define MAXT 64

/* A T5 model for generation: 8 buckets up to distance 20 (decoder positions reach the
 * logarithmic buckets), T5 1.0 (ReLU, tied head) or 1.1 (gated-GELU, untied head), decoder
 * start 0. */
static void gen_t5(sp_model *m, int gated, uint64_t seed) {
    sp_init_options o;
    sp_init_options_default(&o);
    o.cfg = (sp_model_config){.arch = SP_ARCH_T5,
                              .n_layer = 2,
                              .d_model = 24,
                              .n_head = 4,
                              .n_kv_head = 4,
                              .head_dim = 6,
                              .d_ff = 40,
                              .vocab_size = GV,
                              .n_ctx = GCTX,
                              .ln_eps = 1e-6f,
                              .tied = !gated,
                              .ff_gated = gated,
                              .rel_buckets = 8,
                              .rel_max_distance = 20};
    o.seed = seed, o.random_norms = 1, o.std = 0.3f;
    char name[32];
    snprintf(name, sizeof name, "t5-gen-%d-%llu", gated, (unsigned long long)seed);
    char *dir = tu_write_model(name, &o);
    tu_model_load_ok(m, dir);
    free(dir);
}

/* A request: its encoder input, its prompt, the ids generated so far. */
typedef struct greq {
    int32_t enc[MAXT];
    int n_enc;
    const float *prompt;
    int n_prompt;
    int32_t gen[MAXT];
    int n_gen;
} greq;

static void set_req(greq *r, const int32_t *t, int n, const float *prompt, int n_prompt) {
    memset(r, 0, sizeof *r);
    memcpy(r->enc, t, (size_t)n * sizeof *t);
    r->n_enc = n, r->prompt = prompt, r->n_prompt = n_prompt;
}

/* The logits after r's generated ids without a cache: sp_engine_run over the encoder input and
 * the whole decoder prefix (a target at the encoder's last position and one per generated id),
 * the last target's row. */
static void recompute(sp_worker *w, const greq *r, float *out) {
    const sp_model *m = sp_worker_model(w);
    int32_t tok[2 * MAXT], pos[MAXT], ids[MAXT] = {0}, n = r->n_enc + r->n_gen;
    memcpy(tok, r->enc, (size_t)r->n_enc * sizeof *tok);
    memcpy(tok + r->n_enc, r->gen, (size_t)r->n_gen * sizeof *tok);
    for (int j = 0; j <= r->n_gen; j++) pos[j] = r->n_enc - 1 + j;
    int32_t start[2] = {0, n};
    size_t V = (size_t)m->cfg.vocab_size;
    float *all = malloc(((size_t)r->n_gen + 1) * V * sizeof *all);
    sp_batch b = {1, start, tok, r->n_gen + 1, pos, ids, NULL, NULL};
    sp_pass p = {.prompt = r->prompt, .n_prompt = r->n_prompt, .target_logits = all};
    double loss;
    sp_error err = {0};
    ck_assert_msg(sp_engine_run(w, &b, &p, &loss, &err) == 0, "%s", err.msg);
    memcpy(out, all + (size_t)r->n_gen * V, V * sizeof *out);
    free(all);
}

static double rel_diff(const float *a, const float *b, int n) {
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d, den += (double)b[i] * b[i];
    }
    return sqrt(num / den);
}

static int32_t argmax(const float *x, int n) {
    int32_t k = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[k]) k = i;
    return k;
}

/* Greedy decoding of B requests together for `steps` tokens through their caches (one prefill
 * call for all, then one decode call per step); every step's logits of every request against
 * the recomputation. The ids go to r[b].gen. Returns the largest normwise difference. */
static double decode_and_compare(const sp_model *m, greq *r, int B, int steps) {
    int V = m->cfg.vocab_size;
    sp_worker *w = sp_worker_new(m), *ref = sp_worker_new(m);
    sp_gen_seq seq[8];
    sp_kv_cache *own[8];
    int32_t start[9] = {0}, packed[8 * MAXT];
    float *logits = malloc((size_t)B * V * sizeof *logits), *want = malloc(V * sizeof *want);
    int max_enc = 0;
    for (int b = 0; b < B; b++) {
        own[b] = sp_kv_cache_new(m, r[b].n_enc + steps);
        seq[b] = (sp_gen_seq){NULL, own[b], r[b].prompt, r[b].n_prompt};
        memcpy(packed + start[b], r[b].enc, (size_t)r[b].n_enc * sizeof(int32_t));
        start[b + 1] = start[b] + r[b].n_enc;
        max_enc = r[b].n_enc > max_enc ? r[b].n_enc : max_enc;
        r[b].n_gen = 0;
    }
    int rows = start[B];
    sp_error err = {0};
    ck_assert_msg(sp_generate_extend(w, seq, B, start, packed, logits, &err) == 0, "%s", err.msg);
    double worst = 0;
    for (int step = 0; step < steps; step++) {
        for (int b = 0; b < B; b++) {
            const float *got = logits + (size_t)b * V;
            recompute(ref, &r[b], want);
            double e = rel_diff(got, want, V);
            ck_assert_msg(e <= 1e-5, "request %d, step %d: cached logits differ by %g normwise", b,
                          step, e);
            worst = e > worst ? e : worst;
            int32_t id = argmax(got, V);
            ck_assert_int_eq(id, argmax(want, V));
            r[b].gen[r[b].n_gen++] = id;
            packed[b] = id, start[b + 1] = b + 1;
            ck_assert_int_eq(sp_kv_cache_len(own[b]), r[b].n_enc + step + 1);
        }
        if (step + 1 < steps)
            ck_assert_msg(sp_generate_extend(w, seq, B, start, packed, logits, &err) == 0, "%s",
                          err.msg);
    }
    /* the worker's buffers stay within the estimate the memory check uses (prefill's sizes) */
    size_t est = sp_model_generate_bytes(m, (size_t)rows, (size_t)B, max_enc, max_enc + steps);
    ck_assert_msg(sp_worker_bytes(w) <= est, "worker %zu bytes, estimate %zu", sp_worker_bytes(w),
                  est);
    /* and the caches are what sp_model_kv_cache_bytes counts: the encoder's rows and the
     * decoder's */
    for (int b = 0; b < B; b++) {
        ck_assert_int_eq(sp_kv_cache_capacity(own[b]), r[b].n_enc + steps);
        sp_kv_cache_free(own[b]);
    }
    free(logits), free(want);
    sp_worker_free(w), sp_worker_free(ref);
    return worst;
}

static const int32_t FIRST[] = {SP_SOFT(0), SP_SOFT(1), SP_SOFT(2), SP_SOFT(3), 12, 5, 33, 1};
static const int32_t MIDDLE[] = {7, 40, SP_SOFT(0), SP_SOFT(1), SP_SOFT(2), SP_SOFT(3), 9, 21, 1};
static const int32_t B_TOK[] = {SP_SOFT(0), SP_SOFT(1), SP_SOFT(2), 30, 31, 32, 2, 3, 4, 1};
static const int32_t PLAIN[] = {8, 3, 1};

/* The prompt first and in the middle alone, then a batch of four: prompt A first and in the
 * middle, prompt B, no prompt. */
static void check_cache(int gated) {
    sp_model m;
    gen_t5(&m, gated, 7);
    int d = m.cfg.d_model;
    float *pa = tu_random_rows(4 * (size_t)d, 11, 1.0f),
          *pb = tu_random_rows(3 * (size_t)d, 12, 1.0f);
    greq r[4];
    set_req(&r[0], FIRST, 8, pa, 4);
    decode_and_compare(&m, r, 1, 14);
    set_req(&r[0], MIDDLE, 9, pa, 4);
    decode_and_compare(&m, r, 1, 14);
    set_req(&r[0], FIRST, 8, pa, 4);
    set_req(&r[1], MIDDLE, 9, pa, 4);
    set_req(&r[2], B_TOK, 10, pb, 3);
    set_req(&r[3], PLAIN, 3, NULL, 0);
    double e = decode_and_compare(&m, r, 4, 14);
    printf("t5 %s: mixed batch of 4, 14 steps, largest normwise difference %.2e\n",
           gated ? "gated-gelu untied" : "relu tied", e);
    fflush(stdout);
    free(pa), free(pb);
    sp_model_free(&m);
}

START_TEST(cache_matches_recompute_relu_tied) {
    check_cache(0);
}
END_TEST

START_TEST(cache_matches_recompute_gated_untied) {
    check_cache(1);
}
END_TEST

/* sp_generator on T5: its greedy ids are the driver's (each request alone); with a repetition
 * penalty, the ids of a loop that penalises decoder_start and the generated ids (transformers
 * passes the decoder's input ids to its processors; the encoder's tokens are not penalised);
 * EOS ends a request; --max-new-tokens beyond the decoder's n_positions stops there. */
START_TEST(generator_on_t5) {
    sp_model m;
    gen_t5(&m, 1, 8);
    int d = m.cfg.d_model, V = m.cfg.vocab_size;
    float *pa = tu_random_rows(4 * (size_t)d, 21, 1.0f),
          *pb = tu_random_rows(3 * (size_t)d, 22, 1.0f);
    sp_worker *w = sp_worker_new(&m);
    sp_gen_options o = {.max_new_tokens = 9, .eos_id = -1};
    sp_sampling_default(&o.sampling);
    sp_error err = {0};
    sp_generator *g = sp_generator_new(w, &o, &err);
    ck_assert_int_eq(sp_generator_add_prompt(g, pa, 4, NULL, 0, &err), 0);
    ck_assert_int_eq(sp_generator_add_prompt(g, pb, 3, NULL, 0, &err), 1);
    sp_gen_request rq[4] = {
        {FIRST, 8, 0, 0}, {MIDDLE, 9, 0, 1}, {B_TOK, 10, 1, 2}, {PLAIN, 3, -1, 3}};
    sp_gen_result out[4];
    ck_assert_msg(sp_generator_run(g, rq, 4, out, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(sp_generator_shared_rows(g, 0), 0); /* nothing shared: bidirectional */
    const float *prompts[3] = {pa, pb, NULL};
    int n_prompts[3] = {4, 3, 0};
    for (int i = 0; i < 4; i++) {
        int p = rq[i].prompt < 0 ? 2 : rq[i].prompt;
        greq r;
        set_req(&r, rq[i].tokens, rq[i].n_tokens, prompts[p], n_prompts[p]);
        decode_and_compare(&m, &r, 1, 9);
        ck_assert_int_eq(out[i].n_ids, 9);
        ck_assert_int_eq(out[i].finish, SP_FINISH_LENGTH);
        for (int j = 0; j < 9; j++) ck_assert_int_eq(out[i].ids[j], r.gen[j]);
        sp_gen_result_free(&out[i]);
    }
    sp_generator_free(g);

    /* the repetition penalty's context: decoder_start, then the generated ids (a penalty below
     * 1 multiplies the positive logits of its ids by 100: an encoder token in the context would
     * be chosen) */
    o.sampling.repetition_penalty = 0.01;
    g = sp_generator_new(w, &o, &err);
    ck_assert_int_eq(sp_generator_add_prompt(g, pa, 4, NULL, 0, &err), 0);
    ck_assert_msg(sp_generator_run(g, rq, 1, out, &err) == 0, "%s", err.msg);
    sp_kv_cache *c = sp_kv_cache_new(&m, 8 + 9);
    sp_gen_seq q = {NULL, c, pa, 4};
    int32_t start[2] = {0, 8}, ctx[16] = {m.cfg.decoder_start}, tok[1];
    float *logits = malloc((size_t)V * sizeof *logits);
    sp_rng rng;
    sp_rng_seed(&rng, 1);
    ck_assert_int_eq(sp_generate_extend(w, &q, 1, start, FIRST, logits, &err), 0);
    for (int j = 0; j < 9; j++) {
        int32_t id = sp_sample_token(logits, V, &o.sampling, ctx, (size_t)j + 1, &rng, &err);
        ck_assert_int_eq(out[0].ids[j], id);
        ctx[j + 1] = tok[0] = id, start[1] = 1;
        if (j + 1 < 9) ck_assert_int_eq(sp_generate_extend(w, &q, 1, start, tok, logits, &err), 0);
    }
    sp_kv_cache_free(c), free(logits);
    sp_gen_result_free(&out[0]);
    sp_generator_free(g);

    /* EOS: the first greedy token as EOS ends the request after it */
    o.sampling.repetition_penalty = 1.0;
    g = sp_generator_new(w, &o, &err);
    ck_assert_int_eq(sp_generator_add_prompt(g, pa, 4, NULL, 0, &err), 0);
    ck_assert_msg(sp_generator_run(g, rq, 1, out, &err) == 0, "%s", err.msg);
    o.eos_id = out[0].ids[0];
    sp_gen_result_free(&out[0]);
    ck_assert_msg(sp_generator_run(g, rq, 1, out, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(out[0].finish, SP_FINISH_EOS);
    ck_assert_int_eq(out[0].n_ids, 1);
    sp_gen_result_free(&out[0]);
    sp_generator_free(g);

    /* the decoder's n_positions: a request stops after GCTX tokens, "length" */
    o.eos_id = -1, o.max_new_tokens = GCTX + 10;
    g = sp_generator_new(w, &o, &err);
    ck_assert_int_eq(sp_generator_add_prompt(g, pa, 4, NULL, 0, &err), 0);
    ck_assert_msg(sp_generator_run(g, rq, 2, out, &err) == 0, "%s", err.msg);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(out[i].n_ids, GCTX);
        ck_assert_int_eq(out[i].finish, SP_FINISH_LENGTH);
        sp_gen_result_free(&out[i]);
    }
    sp_generator_free(g);
    sp_worker_free(w);
    free(pa), free(pb);
    sp_model_free(&m);
}
END_TEST

/* ---- the float64 reference ------------------------------------------------------------------- */

/* As test_generator.c: ids compared while the reference's top-2 margin exceeds the float32
 * error of a logit difference. */
#define REF_MARGIN 1e-3

static float *case_prompt(const char *dir, int *n_prompt, int d) {
    char *path = tu_path(dir, "expected.safetensors");
    sp_st_file f;
    sp_error err = {0};
    ck_assert_msg(sp_st_open(&f, path, &err) == 0, "%s", err.msg);
    const sp_st_tensor *t = sp_st_find(&f, "prompt");
    ck_assert(t && t->dtype == SP_DTYPE_F32 && t->shape[1] == d);
    *n_prompt = (int)t->shape[0];
    float *p = malloc(t->nbytes);
    memcpy(p, t->data, t->nbytes);
    sp_st_close(&f);
    free(path);
    return p;
}

/* The case's key/value prefix [L, 2, n_kv, qd] (NULL and 0 without one). */
static float *case_kv_prefix(const char *dir, int *n_kv) {
    char *path = tu_path(dir, "expected.safetensors");
    sp_st_file f;
    sp_error err = {0};
    ck_assert_msg(sp_st_open(&f, path, &err) == 0, "%s", err.msg);
    const sp_st_tensor *t = sp_st_find(&f, "kv_prefix");
    float *kv = NULL;
    *n_kv = 0;
    if (t) {
        ck_assert(t->dtype == SP_DTYPE_F32 && t->ndim == 4);
        *n_kv = (int)t->shape[2];
        kv = malloc(t->nbytes);
        memcpy(kv, t->data, t->nbytes);
    }
    sp_st_close(&f);
    free(path);
    return kv;
}

/* Request i of the reference: the cached decoder fed the reference's ids (behind the key/value
 * prefix as shared rows, when the case has one), every step's logits within 1e-4 normwise of the
 * float64 ones. Returns the largest difference. */
static double teacher_forced(sp_worker *w, const float *prompt, int P, const float *kv, int n_kv,
                             const int32_t *enc, int n, json_t *req, int steps) {
    const sp_model *m = sp_worker_model(w);
    int V = m->cfg.vocab_size;
    sp_kv_cache *c = sp_kv_cache_new(m, n + steps), *pre = NULL;
    sp_gen_seq q = {NULL, c, prompt, P};
    sp_error err = {0};
    if (n_kv) {
        pre = sp_kv_cache_new(m, n_kv);
        ck_assert_msg(sp_kv_cache_load_prefix(pre, kv, n_kv, &err) == 0, "%s", err.msg);
        q.shared = pre;
    }
    int32_t start[2] = {0, n}, tok[1];
    float *logits = malloc((size_t)V * sizeof *logits), *want = malloc((size_t)V * sizeof *want);
    ck_assert_msg(sp_generate_extend(w, &q, 1, start, enc, logits, &err) == 0, "%s", err.msg);
    double worst = 0;
    json_t *ids = json_object_get(req, "ids"), *rows = json_object_get(req, "logits");
    for (int j = 0; j < steps; j++) {
        json_t *row = json_array_get(rows, j);
        ck_assert_int_eq(json_array_size(row), V);
        for (int v = 0; v < V; v++) want[v] = (float)json_real_value(json_array_get(row, v));
        double e = rel_diff(logits, want, V);
        ck_assert_msg(e <= 1e-4, "step %d: logits differ from the reference by %g normwise", j, e);
        worst = e > worst ? e : worst;
        tok[0] = (int32_t)json_integer_value(json_array_get(ids, j)), start[1] = 1;
        if (j + 1 < steps)
            ck_assert_msg(sp_generate_extend(w, &q, 1, start, tok, logits, &err) == 0, "%s",
                          err.msg);
    }
    sp_kv_cache_free(c), sp_kv_cache_free(pre);
    free(logits), free(want);
    return worst;
}

START_TEST(greedy_matches_float64_reference) {
    static const char *const cases[] = {"t5_l2_h2_d24_relu_tied_b8_f32",
                                        "t5_l2_h4_d32_kv6_gated_untied_f16",
                                        /* prefix tuning: the prefix as the requests' shared rows */
                                        "t5_l2_h2_d24_kv8_relu_untied_kvprefix3_f32"};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char *dir = tu_path(REF_DIR, cases[c]);
        tu_gen_ref ref;
        tu_gen_ref_load(&ref, dir);
        sp_model m;
        tu_model_load_ok(&m, dir);
        int P, n = ref.n, max_new = ref.max_new;
        float *prompt = case_prompt(dir, &P, m.cfg.d_model);
        int n_kv;
        float *kv = case_kv_prefix(dir, &n_kv);
        sp_gen_options o = {.max_new_tokens = max_new, .eos_id = -1};
        sp_sampling_default(&o.sampling);
        sp_worker *w = sp_worker_new(&m);
        sp_error err = {0};
        sp_generator *g = sp_generator_new(w, &o, &err);
        ck_assert_msg(g, "%s", err.msg);
        ck_assert_int_eq(sp_generator_add_prompt(g, prompt, P, kv, n_kv, &err), 0);
        sp_gen_result out[4];
        ck_assert_msg(sp_generator_run(g, ref.rq, n, out, &err) == 0, "%s", err.msg);
        int compared = 0;
        double worst = 0;
        for (int i = 0; i < n; i++) {
            compared += tu_gen_ref_compare(&ref, i, &out[i], REF_MARGIN, cases[c]);
            sp_gen_result_free(&out[i]);
            double e = teacher_forced(w, prompt, P, kv, n_kv, ref.tok[i], ref.rq[i].n_tokens,
                                      json_array_get(ref.reqs, i), max_new);
            worst = e > worst ? e : worst;
        }
        printf("%s: %d of %d greedy ids compared and equal, step logits within %.2e\n", cases[c],
               compared, n * max_new, worst);
        fflush(stdout);
        ck_assert_int_ge(compared, 3 * max_new); /* the margins leave most steps comparable */
        sp_generator_free(g);
        sp_worker_free(w);
        free(prompt), free(kv);
        sp_model_free(&m);
        tu_gen_ref_free(&ref);
        free(dir);
    }
}
END_TEST

/* ---- refusals -------------------------------------------------------------------------------- */

START_TEST(generate_refuses_bad_t5_input) {
    sp_model m;
    gen_t5(&m, 0, 9);
    sp_worker *w = sp_worker_new(&m);
    float *p = tu_random_rows(4 * (size_t)m.cfg.d_model, 1, 1.0f);
    sp_kv_cache *c = sp_kv_cache_new(&m, 64), *small = sp_kv_cache_new(&m, 8);
    sp_kv_cache *encoded = sp_kv_cache_new(&m, 64); /* holds an encoder's rows */
    int32_t many[64];
    for (int i = 0; i < 64; i++) many[i] = 2 + i % 40;
    sp_error err = {0};
    sp_gen_seq qe = {NULL, encoded, p, 4};
    int32_t five[2] = {0, 5};
    ck_assert_msg(sp_generate_extend(w, &qe, 1, five, FIRST, NULL, &err) == 0, "%s", err.msg);
    struct {
        sp_kv_cache *cache;
        const sp_kv_cache *shared;
        int n;
        const char *want;
    } bad[] = {{c, NULL, GCTX + 1,
                "sequence 0: an encoder input of 25 tokens, more than the encoder's n_positions "
                "= 24"},
               {small, NULL, 8, "8 encoder rows and the decoder's first row, the cache holds 8"},
               {c, encoded, 3, "t5 shares no encoder rows (its encoder is bidirectional"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sp_gen_seq q = {bad[i].shared, bad[i].cache, p, 4};
        int32_t start[2] = {0, bad[i].n};
        ck_assert_int_eq(sp_generate_extend(w, &q, 1, start, many, NULL, &err), -1);
        tu_assert_has(err.msg, bad[i].want);
        ck_assert_int_eq(sp_kv_cache_len(bad[i].cache), 0);
    }
    /* decoder tokens: no soft token, within the decoder's n_positions */
    sp_gen_seq q = {NULL, c, p, 4};
    int32_t start[2] = {0, 5};
    ck_assert_msg(sp_generate_extend(w, &q, 1, start, FIRST + 3, NULL, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(sp_kv_cache_len(c), 6); /* 5 encoder rows, decoder_start's */
    int32_t soft[1] = {SP_SOFT(0)};
    start[1] = 1;
    ck_assert_int_eq(sp_generate_extend(w, &q, 1, start, soft, NULL, &err), -1);
    tu_assert_has(err.msg, "new token 0 is a soft token in the decoder's input: t5 takes soft "
                           "tokens in the encoder's input");
    start[1] = GCTX;
    ck_assert_int_eq(sp_generate_extend(w, &q, 1, start, many, NULL, &err), -1);
    tu_assert_has(err.msg, "24 new decoder tokens after 1 decoder positions exceed the decoder's "
                           "n_positions = 24");
    ck_assert_int_eq(sp_kv_cache_len(c), 6);
    /* prefix tuning: a prefix of 2 rows as shared rows takes 2 of the decoder's positions */
    float *kv = calloc(2 * 2 * (size_t)GCTX * 24, sizeof *kv); /* [L, 2, up to 24 rows, qd] */
    sp_kv_cache_clear(small);
    ck_assert_msg(sp_kv_cache_load_prefix(small, kv, 2, &err) == 0, "%s", err.msg);
    sp_kv_cache_clear(c);
    sp_gen_seq qp = {small, c, p, 4};
    start[1] = 5;
    ck_assert_msg(sp_generate_extend(w, &qp, 1, start, FIRST + 3, NULL, &err) == 0, "%s", err.msg);
    start[1] = GCTX - 2;
    ck_assert_int_eq(sp_generate_extend(w, &qp, 1, start, many, NULL, &err), -1);
    tu_assert_has(err.msg, "22 new decoder tokens after 1 decoder positions exceed the decoder's "
                           "n_positions = 24 less the key/value prefix's rows");
    sp_gen_options o = {.max_new_tokens = 4, .eos_id = -1};
    sp_sampling_default(&o.sampling);
    sp_generator *g = sp_generator_new(w, &o, &err);
    /* a request longer than the encoder's positions, and a prefix leaving no decoder position,
     * named */
    ck_assert_int_eq(sp_generator_add_prompt(g, p, 4, NULL, 0, &err), 0);
    ck_assert_int_eq(sp_generator_add_prompt(g, p, 4, kv, GCTX, &err), 1);
    sp_gen_request rq[2] = {{PLAIN, 3, 0, 0}, {many, GCTX + 1, 0, 1}};
    sp_gen_result out[2];
    ck_assert_int_eq(sp_generator_run(g, rq, 2, out, &err), -1);
    tu_assert_has(err.msg, "request 1: 25 tokens, more than the encoder's 24 positions");
    sp_gen_request rp[1] = {{PLAIN, 3, 1, 0}};
    ck_assert_int_eq(sp_generator_run(g, rp, 1, out, &err), -1);
    tu_assert_has(err.msg, "request 0: a key/value prefix of 24 rows leaves no decoder position");
    sp_generator_free(g);
    free(kv);
    sp_kv_cache_free(c), sp_kv_cache_free(small), sp_kv_cache_free(encoded);
    free(p);
    sp_worker_free(w);
    sp_model_free(&m);
}
END_TEST

/* The memory check counts what a T5 request's cache can hold: its encoder rows and at most
 * n_positions decoder rows, whatever --max-new-tokens says (8 requests of 20 tokens and a
 * million new ones: 8 x 44 rows of 2 layers x 2 x 24 floats, not 8 x 1,000,020), and refuses
 * what does not fit, naming the caches. */
START_TEST(memory_check_counts_t5_caches) {
    sp_model m;
    gen_t5(&m, 1, 10);
    sp_error err = {0};
    setenv("SP_MAX_MEMORY", "1G", 1);
    ck_assert_msg(sp_generate_check_memory(&m, 8, 20, 1000000, 1, 4, 1, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(sp_model_kv_cache_bytes(&m, 20 + GCTX),
                      (size_t)(2 * 2 * 24 * 4) * (20 + GCTX));
    setenv("SP_MAX_MEMORY", "64K", 1);
    ck_assert_int_eq(sp_generate_check_memory(&m, 8, 20, 1000000, 1, 4, 1, &err), -1);
    tu_assert_has(err.msg, "key/value caches 0.00 GiB for 8 requests of up to 20 + 1000000 tokens");
    unsetenv("SP_MAX_MEMORY");
    sp_model_free(&m);
}
END_TEST

int main(void) {
    const TTest *tests[] = {buckets_match_transformers,
                            batches_t5_refuses,
                            cache_matches_recompute_relu_tied,
                            cache_matches_recompute_gated_untied,
                            generator_on_t5,
                            greedy_matches_float64_reference,
                            generate_refuses_bad_t5_input,
                            memory_check_counts_t5_caches,
                            NULL};
    return tu_main("t5", tests, NULL, NULL);
}
