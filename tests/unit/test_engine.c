/* Engine gradient and invariance tests on tiny random in-memory GPT-2 models.
 *
 * The prompt gradient is checked against central finite differences of the engine's own loss.
 * The engine computes in float32, so the differences are taken along random unit directions
 * (where the directional derivative is of the order of |grad|, far above rounding noise) and
 * along the largest single coordinates, with Richardson extrapolation
 * D = (4 D(h/2) - D(h)) / 3 removing the O(h^2) truncation term. The remaining error is the
 * float32 rounding of the loss, about 1e-6 relative to a loss sum of ~20 (2e-5 absolute), divided
 * by the step 2h/2 = 1e-2: ~2e-3 absolute in the worst case, ~1e-4 typically. The tolerances below
 * (5e-3 relative to |grad| plus 5e-4 absolute) sit above that bound; a wrong gradient term is
 * off by O(1) relative and fails by orders of magnitude (try breaking a kernel to see). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "softprompt/engine.h"
#include "softprompt/team.h"
#include "softprompt/rng.h"
#include "testutil.h"

typedef struct test_model {
    sp_model m;
    float *mem; /* one allocation holds every tensor */
} test_model;

static float *take(float **cursor, size_t n) {
    float *p = *cursor;
    *cursor += n;
    return p;
}

static void fill(float *p, size_t n, sp_rng *r, float mean, float std) {
    for (size_t i = 0; i < n; i++) p[i] = mean + std * (float)sp_rng_normal(r);
}

static void make_model(test_model *t, int L, int d, int H, int F, int V, int ctx, uint64_t seed) {
    memset(t, 0, sizeof *t);
    sp_model *m = &t->m;
    m->cfg = (sp_model_config){.n_layer = L,
                               .d_model = d,
                               .n_head = H,
                               .d_ff = F,
                               .vocab_size = V,
                               .n_ctx = ctx,
                               .ln_eps = 1e-5f,
                               .tied = 1,
                               .model_type = "gpt2"};
    size_t per_layer = 4 * (size_t)d + 3 * (size_t)d * d + 3 * d + (size_t)d * d + d +
                       (size_t)d * F + F + (size_t)F * d + d;
    size_t total = (size_t)V * d + (size_t)ctx * d + 2 * (size_t)d + L * per_layer;
    t->mem = malloc(total * sizeof(float));
    float *c = t->mem;
    sp_rng r;
    sp_rng_seed(&r, seed);
    /* Weights large enough that every nonlinearity (softmax, GELU, LayerNorm) is far from linear.
     */
    float ws = 1.0f / sqrtf((float)d);
    m->wte = take(&c, (size_t)V * d), fill((float *)m->wte, (size_t)V * d, &r, 0, 1.0f);
    m->wpe = take(&c, (size_t)ctx * d), fill((float *)m->wpe, (size_t)ctx * d, &r, 0, 0.5f);
    m->lnf_w = take(&c, d), fill((float *)m->lnf_w, d, &r, 1, 0.2f);
    m->lnf_b = take(&c, d), fill((float *)m->lnf_b, d, &r, 0, 0.1f);
    m->lm_head = m->wte;
    m->layers = calloc((size_t)L, sizeof *m->layers);
    for (int l = 0; l < L; l++) {
        sp_layer *y = &m->layers[l];
        float *p;
        y->ln1_w = p = take(&c, d), fill(p, d, &r, 1, 0.2f);
        y->ln1_b = p = take(&c, d), fill(p, d, &r, 0, 0.1f);
        y->qkv_w = p = take(&c, (size_t)d * 3 * d), fill(p, (size_t)d * 3 * d, &r, 0, 1.5f * ws);
        y->qkv_b = p = take(&c, 3 * (size_t)d), fill(p, 3 * (size_t)d, &r, 0, 0.1f);
        y->attn_proj_w = p = take(&c, (size_t)d * d), fill(p, (size_t)d * d, &r, 0, ws);
        y->attn_proj_b = p = take(&c, d), fill(p, d, &r, 0, 0.1f);
        y->ln2_w = p = take(&c, d), fill(p, d, &r, 1, 0.2f);
        y->ln2_b = p = take(&c, d), fill(p, d, &r, 0, 0.1f);
        y->fc_w = p = take(&c, (size_t)d * F), fill(p, (size_t)d * F, &r, 0, ws);
        y->fc_b = p = take(&c, F), fill(p, F, &r, 0, 0.1f);
        y->fc_proj_w = p = take(&c, (size_t)F * d),
        fill(p, (size_t)F * d, &r, 0, 1.0f / sqrtf((float)F));
        y->fc_proj_b = p = take(&c, d), fill(p, d, &r, 0, 0.1f);
    }
    ck_assert_ptr_eq(c, t->mem + total);
}

/* A Llama-family model: RMSNorm, rotary (theta 10000), grouped-query heads (hd = d / H * 2, so
 * the query width differs from d), SwiGLU; with q/k/v biases (Qwen2) when qkv_bias; untied. */
static void make_llama(test_model *t, int L, int d, int H, int Hkv, int F, int V, int ctx,
                       int qkv_bias, uint64_t seed) {
    memset(t, 0, sizeof *t);
    sp_model *m = &t->m;
    int hd = 2 * d / H, qd = H * hd, kvd = Hkv * hd;
    m->arch = SP_ARCH_LLAMA;
    m->cfg = (sp_model_config){.n_layer = L,
                               .d_model = d,
                               .n_head = H,
                               .n_kv_head = Hkv,
                               .head_dim = hd,
                               .d_ff = F,
                               .vocab_size = V,
                               .n_ctx = ctx,
                               .ln_eps = 1e-6f,
                               .qkv_bias = qkv_bias,
                               .rope_theta = 10000,
                               .model_type = "llama"};
    size_t per_layer = 2 * (size_t)d + (size_t)(qd + 2 * kvd) * d + (size_t)d * qd +
                       3 * (size_t)d * F + (size_t)(qd + 2 * kvd);
    size_t total = 2 * (size_t)V * d + (size_t)d + L * per_layer + (size_t)hd / 2;
    t->mem = malloc(total * sizeof(float));
    float *c = t->mem, *p;
    sp_rng r;
    sp_rng_seed(&r, seed);
    float ws = 1.0f / sqrtf((float)d);
    m->wte = p = take(&c, (size_t)V * d), fill(p, (size_t)V * d, &r, 0, 1.0f);
    m->lm_head = p = take(&c, (size_t)V * d), fill(p, (size_t)V * d, &r, 0, 1.0f);
    m->lnf_w = p = take(&c, d), fill(p, d, &r, 1, 0.2f);
    m->rope_inv_freq = p = take(&c, (size_t)hd / 2);
    for (int i = 0; i < hd / 2; i++) p[i] = (float)pow(10000.0, -2.0 * i / hd);
    m->layers = calloc((size_t)L, sizeof *m->layers);
    for (int l = 0; l < L; l++) {
        sp_layer *y = &m->layers[l];
        y->ln1_w = p = take(&c, d), fill(p, d, &r, 1, 0.2f);
        y->q_w = p = take(&c, (size_t)qd * d), fill(p, (size_t)qd * d, &r, 0, 1.5f * ws);
        y->k_w = p = take(&c, (size_t)kvd * d), fill(p, (size_t)kvd * d, &r, 0, 1.5f * ws);
        y->v_w = p = take(&c, (size_t)kvd * d), fill(p, (size_t)kvd * d, &r, 0, ws);
        y->q_b = p = take(&c, qd), fill(p, qd, &r, 0, 0.3f);
        y->k_b = p = take(&c, kvd), fill(p, kvd, &r, 0, 0.3f);
        y->v_b = p = take(&c, kvd), fill(p, kvd, &r, 0, 0.3f);
        if (!qkv_bias) y->q_b = y->k_b = y->v_b = NULL;
        y->attn_proj_w = p = take(&c, (size_t)d * qd), fill(p, (size_t)d * qd, &r, 0, ws);
        y->ln2_w = p = take(&c, d), fill(p, d, &r, 1, 0.2f);
        y->gate_w = p = take(&c, (size_t)F * d), fill(p, (size_t)F * d, &r, 0, 2 * ws);
        y->up_w = p = take(&c, (size_t)F * d), fill(p, (size_t)F * d, &r, 0, ws);
        y->down_w = p = take(&c, (size_t)d * F), fill(p, (size_t)d * F, &r, 0, 1 / sqrtf(F));
    }
    ck_assert_ptr_eq(c, t->mem + total);
}

static void free_model(test_model *t) {
    free(t->m.layers);
    free(t->mem);
}

/* A batch with everything the engine must handle: three sequences of different lengths;
 * soft tokens prepended (seq 0), in the middle with one index repeated (seq 1), none (seq 2);
 * one target (classification-like) and several targets (generation-like). */
enum { P = 4 };
static const int32_t SEQ_START[] = {0, 7, 19, 24};
static const int32_t TOKENS[] = {
    SP_SOFT(0), SP_SOFT(1), SP_SOFT(2), SP_SOFT(3), 5,          11, 2, /* seq 0 */
    7,          3,          9,          SP_SOFT(0), SP_SOFT(1), 4,  4,
    20,         SP_SOFT(2), 13,         SP_SOFT(0), 1,  /* seq 1 */
    8,          6,          30,         2,          17, /* seq 2 */
};
static const int32_t TARGET_POS[] = {6, 12, 13, 14, 17, 18, 21, 23};
static const int32_t TARGET_IDS[] = {3, 4, 20, 13, 1, 0, 2, 17};

static sp_batch test_batch(void) {
    return (sp_batch){3, SEQ_START, TOKENS, 8, TARGET_POS, TARGET_IDS, NULL, NULL};
}

static double loss_at(sp_worker *w, const sp_batch *b, const float *prompt) {
    sp_pass pass = {.prompt = prompt, .n_prompt = P};
    double loss;
    sp_error err;
    ck_assert_msg(sp_engine_run(w, b, &pass, &loss, &err) == 0, "%s", err.msg);
    return loss;
}

/* Richardson-extrapolated central difference of the loss along direction u. */
static double fd_directional(sp_worker *w, const sp_batch *b, const float *prompt, const float *u,
                             size_t n, double h) {
    float *q = malloc(n * sizeof *q);
    double d[2];
    for (int k = 0; k < 2; k++) {
        double step = k == 0 ? h : h / 2;
        for (size_t i = 0; i < n; i++) q[i] = prompt[i] + (float)(step * u[i]);
        double plus = loss_at(w, b, q);
        for (size_t i = 0; i < n; i++) q[i] = prompt[i] - (float)(step * u[i]);
        double minus = loss_at(w, b, q);
        d[k] = (plus - minus) / (2 * step);
    }
    free(q);
    return (4 * d[1] - d[0]) / 3;
}

/* Compares the engine's prompt gradient on the test batch with finite differences. */
static void check_model_gradient(test_model *t, uint64_t seed) {
    int L = t->m.cfg.n_layer, d = t->m.cfg.d_model, H = t->m.cfg.n_head;
    sp_worker *w = sp_worker_new(&t->m);
    sp_batch b = test_batch();
    size_t n = (size_t)P * d;
    float *prompt = malloc(n * sizeof *prompt), *grad = calloc(n, sizeof *grad);
    float *u = malloc(n * sizeof *u);
    sp_rng r;
    sp_rng_seed(&r, seed + 1);
    fill(prompt, n, &r, 0, 1.0f);
    sp_pass pass = {.prompt = prompt, .n_prompt = P, .grad = grad};
    double loss;
    sp_error err;
    ck_assert_msg(sp_engine_run(w, &b, &pass, &loss, &err) == 0, "%s", err.msg);
    double gnorm = 0;
    for (size_t i = 0; i < n; i++) gnorm += (double)grad[i] * grad[i];
    gnorm = sqrt(gnorm);
    ck_assert_msg(gnorm > 1e-2, "gradient norm %g too small to test anything", gnorm);

    for (int trial = 0; trial < 6; trial++) { /* random unit directions */
        double un = 0, an = 0;
        for (size_t i = 0; i < n; i++) u[i] = (float)sp_rng_normal(&r), un += (double)u[i] * u[i];
        for (size_t i = 0; i < n; i++) u[i] /= (float)sqrt(un), an += (double)u[i] * grad[i];
        double fd = fd_directional(w, &b, prompt, u, n, 2e-2);
        ck_assert_msg(fabs(fd - an) <= 5e-3 * gnorm + 5e-4,
                      "L=%d d=%d H=%d direction %d: analytic %.6g, finite difference %.6g "
                      "(|grad| %.4g)",
                      L, d, H, trial, an, fd, gnorm);
    }
    for (int trial = 0; trial < 6; trial++) { /* the largest remaining coordinates */
        size_t best = 0;
        for (size_t i = 0; i < n; i++) best = fabsf(grad[i]) > fabsf(grad[best]) ? i : best;
        memset(u, 0, n * sizeof *u);
        u[best] = 1.0f;
        double fd = fd_directional(w, &b, prompt, u, n, 2e-2);
        ck_assert_msg(fabs(fd - grad[best]) <= 5e-3 * fabs(grad[best]) + 5e-4,
                      "L=%d d=%d H=%d prompt[%zu][%zu]: analytic %.6g, finite difference %.6g", L,
                      d, H, best / d, best % d, grad[best], fd);
        grad[best] = 0.0f; /* next trial takes the next largest */
    }
    free(prompt), free(grad), free(u);
    sp_worker_free(w);
}

static void check_gradient(int L, int d, int H, int F, uint64_t seed) {
    test_model t;
    make_model(&t, L, d, H, F, 37, 24, seed);
    check_model_gradient(&t, seed);
    free_model(&t);
}

static void check_llama_gradient(int L, int d, int H, int Hkv, int F, int qkv_bias, uint64_t seed) {
    test_model t;
    make_llama(&t, L, d, H, Hkv, F, 37, 24, qkv_bias, seed);
    check_model_gradient(&t, seed);
    free_model(&t);
}

START_TEST(test_fd_llama_gqa) {
    check_llama_gradient(2, 16, 4, 2, 40, 0, 11); /* 2 query heads per key/value head */
    check_llama_gradient(3, 16, 4, 1, 24, 0, 12); /* one key/value head for all */
}
END_TEST

START_TEST(test_fd_qwen2_biases) {
    check_llama_gradient(2, 24, 2, 2, 48, 1, 13);
}
END_TEST

START_TEST(test_fd_two_layers_two_heads) {
    check_gradient(2, 16, 2, 64, 1);
}
END_TEST

START_TEST(test_fd_three_layers_four_heads) {
    check_gradient(3, 24, 4, 40, 2);
}
END_TEST

START_TEST(test_fd_one_layer_one_head) {
    check_gradient(1, 8, 1, 32, 3);
}
END_TEST

/* Runs the whole test batch once; returns the loss sum, fills grad [P, d] or [n_seq, P, d]. */
static double run_batch(sp_worker *w, const sp_batch *b, const float *prompt, float *grad,
                        int per_seq, float *logits, double *target_loss) {
    sp_pass pass = {prompt, P, grad, per_seq, logits, target_loss};
    double loss;
    sp_error err;
    ck_assert_msg(sp_engine_run(w, b, &pass, &loss, &err) == 0, "%s", err.msg);
    return loss;
}

/* Packing must not leak between sequences: the batch's loss and gradient equal the sums of each
 * sequence run alone (with its targets shifted to its own positions), and the per-sequence
 * gradients sum to the batch gradient. */
START_TEST(test_packing_matches_sequences_alone) {
    test_model t;
    make_model(&t, 2, 16, 4, 48, 37, 24, 7);
    sp_worker *w = sp_worker_new(&t.m);
    sp_batch b = test_batch();
    size_t n = (size_t)P * 16;
    float prompt[P * 16], grad[P * 16] = {0}, per_seq[3 * P * 16] = {0}, alone[P * 16];
    sp_rng r;
    sp_rng_seed(&r, 9);
    fill(prompt, n, &r, 0, 1.0f);
    double total = run_batch(w, &b, prompt, grad, 0, NULL, NULL);
    double again = run_batch(w, &b, prompt, per_seq, 1, NULL, NULL);
    ck_assert_double_eq(total, again);
    double sum = 0;
    for (int s = 0; s < 3; s++) {
        int start = SEQ_START[s], len = SEQ_START[s + 1] - start;
        int32_t seq_start[2] = {0, len}, pos[8], ids[8];
        int nt = 0;
        for (int j = 0; j < 8; j++)
            if (TARGET_POS[j] >= start && TARGET_POS[j] < start + len)
                pos[nt] = TARGET_POS[j] - start, ids[nt++] = TARGET_IDS[j];
        sp_batch one = {1, seq_start, TOKENS + start, nt, pos, ids, NULL, NULL};
        memset(alone, 0, sizeof alone);
        sum += run_batch(w, &one, prompt, alone, 0, NULL, NULL);
        for (size_t i = 0; i < n; i++)
            ck_assert_msg(fabsf(alone[i] - per_seq[s * n + i]) <= 1e-5f * (1 + fabsf(alone[i])),
                          "sequence %d, element %zu: alone %g, in the batch %g", s, i, alone[i],
                          per_seq[s * n + i]);
    }
    ck_assert_msg(fabs(sum - total) <= 1e-5 * total, "loss: sum alone %.9g, batch %.9g", sum,
                  total);
    for (size_t i = 0; i < n; i++) {
        float s3 = per_seq[i] + per_seq[n + i] + per_seq[2 * n + i];
        ck_assert_msg(fabsf(s3 - grad[i]) <= 1e-5f * (1 + fabsf(grad[i])), "element %zu", i);
    }
    for (size_t i = 0; i < n; i++)
        ck_assert_float_eq(per_seq[2 * n + i], 0.0f); /* no soft tokens */
    sp_worker_free(w);
    free_model(&t);
}
END_TEST

/* Forward-only returns the same loss, leaves no gradient, and its target logits and per-target
 * losses agree with a cross-entropy computed here from those logits. */
START_TEST(test_forward_outputs_consistent) {
    test_model t;
    make_model(&t, 2, 16, 2, 64, 37, 24, 11);
    sp_worker *w = sp_worker_new(&t.m);
    sp_batch b = test_batch();
    float prompt[P * 16], grad[P * 16] = {0}, logits[8 * 37];
    double tl[8];
    sp_rng r;
    sp_rng_seed(&r, 3);
    fill(prompt, P * 16, &r, 0, 1.0f);
    double with_grad = run_batch(w, &b, prompt, grad, 0, NULL, NULL);
    double fwd = run_batch(w, &b, prompt, NULL, 0, logits, tl);
    ck_assert_double_eq(with_grad, fwd);
    double sum = 0;
    for (int j = 0; j < 8; j++) {
        double mx = -INFINITY, z = 0;
        for (int v = 0; v < 37; v++) mx = fmax(mx, logits[j * 37 + v]);
        for (int v = 0; v < 37; v++) z += exp(logits[j * 37 + v] - mx);
        double ce = log(z) + mx - logits[j * 37 + TARGET_IDS[j]];
        ck_assert_msg(fabs(ce - tl[j]) <= 1e-6 * (1 + ce), "target %d: %g vs %g", j, ce, tl[j]);
        sum += tl[j];
    }
    ck_assert_msg(fabs(sum - fwd) <= 1e-9 * fwd, "sum of target losses %g, loss %g", sum, fwd);
    sp_worker_free(w);
    free_model(&t);
}
END_TEST

static void expect_batch_error(sp_batch b, int n_prompt, const char *needle) {
    test_model t;
    make_model(&t, 1, 8, 2, 16, 37, 24, 5);
    sp_worker *w = sp_worker_new(&t.m);
    float prompt[P * 8] = {0}, grad[P * 8] = {0};
    sp_pass pass = {prompt, n_prompt, grad, 0, NULL, NULL};
    double loss;
    sp_error err = {0};
    ck_assert_int_eq(sp_engine_run(w, &b, &pass, &loss, &err), -1);
    ck_assert_msg(strstr(err.msg, needle) != NULL, "message '%s' lacks '%s'", err.msg, needle);
    sp_worker_free(w);
    free_model(&t);
}

START_TEST(test_rejects_bad_batches) {
    sp_batch b = test_batch();
    expect_batch_error(b, 3, "soft token 3, expected < 3");
    int32_t big_tok[24];
    memcpy(big_tok, TOKENS, sizeof big_tok);
    big_tok[20] = 37;
    b.tokens = big_tok;
    expect_batch_error(b, P, "position 20 holds token id 37, expected < 37");
    b = test_batch();
    int32_t long_seq[] = {0, 25};
    int32_t zeros[25] = {0};
    sp_batch lb = {1, long_seq, zeros, 0, NULL, NULL, NULL, NULL};
    expect_batch_error(lb, P, "sequence 0 has length 25, expected 1..24");
    int32_t pos[] = {6, 6}, ids[] = {1, 2};
    b.n_targets = 2, b.target_pos = pos, b.target_ids = ids;
    expect_batch_error(b, P, "strictly increasing");
    int32_t bad_id[] = {1, 99}, pos2[] = {3, 4};
    b.target_pos = pos2, b.target_ids = bad_id;
    expect_batch_error(b, P, "target 1 has token id 99");
}
END_TEST

/* A worker sized by a large batch and reused for a smaller one (and back) gives the same
 * results as fresh workers: no state leaks between calls. */
START_TEST(test_worker_reuse) {
    test_model t;
    make_model(&t, 2, 16, 2, 64, 37, 24, 13);
    sp_worker *w = sp_worker_new(&t.m), *fresh = sp_worker_new(&t.m);
    sp_batch big = test_batch();
    int32_t one_start[] = {0, 7};
    sp_batch small = {1, one_start, TOKENS, 1, TARGET_POS, TARGET_IDS, NULL, NULL};
    float prompt[P * 16], g1[P * 16] = {0}, g2[P * 16] = {0};
    sp_rng r;
    sp_rng_seed(&r, 4);
    fill(prompt, P * 16, &r, 0, 1.0f);
    run_batch(w, &big, prompt, NULL, 0, NULL, NULL);
    double a = run_batch(w, &small, prompt, g1, 0, NULL, NULL);
    double b = run_batch(fresh, &small, prompt, g2, 0, NULL, NULL);
    ck_assert_double_eq(a, b);
    ck_assert_mem_eq(g1, g2, sizeof g1);
    ck_assert_uint_gt(sp_worker_bytes(w), 0);
    sp_worker_free(w);
    sp_worker_free(fresh);
    free_model(&t);
}
END_TEST

/* A team splits the batch by sequence over its threads: every output equals one worker's up
 * to the order of the float gradient sum, for any thread count (more threads than sequences
 * included), both gradient layouts, and repeated runs give identical bits. */
START_TEST(test_team_matches_one_worker) {
    test_model t;
    make_model(&t, 2, 16, 4, 48, 37, 24, 21);
    sp_worker *w = sp_worker_new(&t.m);
    sp_batch b = test_batch();
    enum { N = P * 16, V = 37 };
    float prompt[N], grad[N] = {0}, per_seq[3 * N] = {0}, logits[8 * V];
    double tloss[8];
    sp_rng r;
    sp_rng_seed(&r, 3);
    fill(prompt, N, &r, 0, 1.0f);
    double want = run_batch(w, &b, prompt, grad, 0, logits, tloss);
    run_batch(w, &b, prompt, per_seq, 1, NULL, NULL);
    const int thread_counts[] = {1, 2, 3, 5};
    for (int c = 0; c < 4; c++) {
        sp_team *team = sp_team_new(&t.m, thread_counts[c]);
        ck_assert_ptr_nonnull(team);
        float g[N], g_again[N], ps[3 * N] = {0}, lg[8 * V];
        double tl[8], loss, again;
        sp_error err;
        for (int rep = 0; rep < 2; rep++) {
            float *gr = rep ? g_again : g;
            memset(gr, 0, sizeof g);
            sp_pass pass = {prompt, P, gr, 0, lg, tl};
            ck_assert_msg(sp_team_run(team, &b, &pass, rep ? &again : &loss, &err) == 0, "%s",
                          err.msg);
        }
        ck_assert_double_eq(loss, again);
        ck_assert_mem_eq(g, g_again, sizeof g);
        ck_assert_msg(fabs(loss - want) <= 1e-6 * want, "%d threads: loss %.9g, one worker %.9g",
                      thread_counts[c], loss, want);
        for (int i = 0; i < N; i++)
            ck_assert_msg(fabsf(g[i] - grad[i]) <= 1e-5f * (1 + fabsf(grad[i])),
                          "%d threads, element %d: %g vs %g", thread_counts[c], i, g[i], grad[i]);
        for (int j = 0; j < 8; j++) ck_assert(fabs(tl[j] - tloss[j]) <= 1e-5 * (1 + tloss[j]));
        for (int i = 0; i < 8 * V; i++) ck_assert(fabsf(lg[i] - logits[i]) <= 1e-4f);
        sp_pass seq_pass = {prompt, P, ps, 1, NULL, NULL};
        ck_assert_msg(sp_team_run(team, &b, &seq_pass, &loss, &err) == 0, "%s", err.msg);
        for (int i = 0; i < 3 * N; i++)
            ck_assert(fabsf(ps[i] - per_seq[i]) <= 1e-5f * (1 + fabsf(per_seq[i])));
        ck_assert_uint_ge(sp_team_bytes(team), sp_worker_bytes(w));
        sp_team_free(team);
    }
    sp_worker_free(w);
    free_model(&t);
}
END_TEST

/* A bad batch is refused by the team with the position in the caller's batch (not a part's). */
START_TEST(test_team_reports_batch_positions) {
    test_model t;
    make_model(&t, 1, 8, 2, 16, 37, 24, 5);
    sp_team *team = sp_team_new(&t.m, 3);
    int32_t tok[24];
    memcpy(tok, TOKENS, sizeof tok);
    tok[22] = 40;
    sp_batch b = test_batch();
    b.tokens = tok;
    float prompt[P * 8] = {0}, grad[P * 8] = {0};
    sp_pass pass = {prompt, P, grad, 0, NULL, NULL};
    double loss;
    sp_error err = {0};
    ck_assert_int_eq(sp_team_run(team, &b, &pass, &loss, &err), -1);
    ck_assert_msg(strstr(err.msg, "position 22 holds token id 40") != NULL, "%s", err.msg);
    sp_team_free(team);
    free_model(&t);
}
END_TEST

Suite *engine_suite(void) {
    Suite *s = suite_create("engine");
    TCase *tc = tcase_create("finite differences");
    tcase_add_test(tc, test_fd_two_layers_two_heads);
    tcase_add_test(tc, test_fd_three_layers_four_heads);
    tcase_add_test(tc, test_fd_one_layer_one_head);
    tcase_add_test(tc, test_fd_llama_gqa);
    tcase_add_test(tc, test_fd_qwen2_biases);
    suite_add_tcase(s, tc);
    TCase *inv = tcase_create("invariants");
    tcase_add_test(inv, test_packing_matches_sequences_alone);
    tcase_add_test(inv, test_forward_outputs_consistent);
    tcase_add_test(inv, test_rejects_bad_batches);
    tcase_add_test(inv, test_worker_reuse);
    tcase_add_test(inv, test_team_matches_one_worker);
    tcase_add_test(inv, test_team_reports_batch_positions);
    suite_add_tcase(s, inv);
    return s;
}

int main(void) {
    return tu_run_suite(engine_suite());
}
