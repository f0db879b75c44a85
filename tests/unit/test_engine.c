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

#include "model/worker.h" /* the keys and values a run computed (prefix tests) */
#include "softprompt/engine.h"
#include "softprompt/inspect.h"
#include "softprompt/rng.h"
#include "softprompt/team.h"
#include "testutil.h"

typedef struct test_model {
    sp_model m;
    float *mem;    /* one allocation holds every tensor */
    float *extra;  /* the variants' tensors (q/k norm gains), or NULL */
    float *extra2; /* more of them (Gemma 3), or NULL */
} test_model;

static float *take(float **cursor, size_t n) {
    float *p = *cursor;
    *cursor += n;
    return p;
}

static void fill(float *p, size_t n, sp_rng *r, float mean, float std) {
    for (size_t i = 0; i < n; i++) p[i] = mean + std * (float)sp_rng_normal(r);
}

/* A frozen float32 linear layer over w (layout as stored). */
static sp_linear lin(const float *w, const float *b, int in, int out, sp_wlayout layout) {
    return (sp_linear){w, b, in, out, layout, SP_WSTORE_F32, 0};
}

static void make_model(test_model *t, int L, int d, int H, int F, int V, int ctx, uint64_t seed) {
    memset(t, 0, sizeof *t);
    sp_model *m = &t->m;
    m->cfg = tu_gpt2_config(L, d, H, F, V, ctx);
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
    m->lnf.w = take(&c, d), fill((float *)m->lnf.w, d, &r, 1, 0.2f);
    m->lnf.b = take(&c, d), fill((float *)m->lnf.b, d, &r, 0, 0.1f);
    m->lm_head = lin(m->wte, NULL, d, V, SP_W_OUT_IN);
    m->layers = calloc((size_t)L, sizeof *m->layers);
    for (int l = 0; l < L; l++) {
        sp_layer *y = &m->layers[l];
        float *p, *b;
        y->ln1.w = p = take(&c, d), fill(p, d, &r, 1, 0.2f);
        y->ln1.b = p = take(&c, d), fill(p, d, &r, 0, 0.1f);
        p = take(&c, (size_t)d * 3 * d), fill(p, (size_t)d * 3 * d, &r, 0, 1.5f * ws);
        b = take(&c, 3 * (size_t)d), fill(b, 3 * (size_t)d, &r, 0, 0.1f);
        y->qkv = lin(p, b, d, 3 * d, SP_W_IN_OUT);
        p = take(&c, (size_t)d * d), fill(p, (size_t)d * d, &r, 0, ws);
        b = take(&c, d), fill(b, d, &r, 0, 0.1f);
        y->o = lin(p, b, d, d, SP_W_IN_OUT);
        y->ln2.w = p = take(&c, d), fill(p, d, &r, 1, 0.2f);
        y->ln2.b = p = take(&c, d), fill(p, d, &r, 0, 0.1f);
        p = take(&c, (size_t)d * F), fill(p, (size_t)d * F, &r, 0, ws);
        b = take(&c, F), fill(b, F, &r, 0, 0.1f);
        y->mlp_in = lin(p, b, d, F, SP_W_IN_OUT);
        p = take(&c, (size_t)F * d), fill(p, (size_t)F * d, &r, 0, 1.0f / sqrtf((float)F));
        b = take(&c, d), fill(b, d, &r, 0, 0.1f);
        y->mlp_out = lin(p, b, F, d, SP_W_IN_OUT);
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
    m->cfg = (sp_model_config){.arch = SP_ARCH_LLAMA,
                               .n_layer = L,
                               .d_model = d,
                               .n_head = H,
                               .n_kv_head = Hkv,
                               .head_dim = hd,
                               .d_ff = F,
                               .vocab_size = V,
                               .n_ctx = ctx,
                               .ln_eps = 1e-6f,
                               .qkv_bias = qkv_bias,
                               .rope_theta = 10000};
    size_t per_layer = 2 * (size_t)d + (size_t)(qd + 2 * kvd) * d + (size_t)d * qd +
                       3 * (size_t)d * F + (size_t)(qd + 2 * kvd);
    size_t total = 2 * (size_t)V * d + (size_t)d + L * per_layer + (size_t)hd / 2;
    t->mem = malloc(total * sizeof(float));
    float *c = t->mem, *p;
    sp_rng r;
    sp_rng_seed(&r, seed);
    float ws = 1.0f / sqrtf((float)d);
    m->wte = p = take(&c, (size_t)V * d), fill(p, (size_t)V * d, &r, 0, 1.0f);
    p = take(&c, (size_t)V * d), fill(p, (size_t)V * d, &r, 0, 1.0f);
    m->lm_head = lin(p, NULL, d, V, SP_W_OUT_IN);
    m->lnf.w = p = take(&c, d), fill(p, d, &r, 1, 0.2f);
    m->rope_inv_freq = p = take(&c, (size_t)hd / 2);
    for (int i = 0; i < hd / 2; i++) p[i] = (float)pow(10000.0, -2.0 * i / hd);
    m->layers = calloc((size_t)L, sizeof *m->layers);
    for (int l = 0; l < L; l++) {
        sp_layer *y = &m->layers[l];
        y->ln1.w = p = take(&c, d), fill(p, d, &r, 1, 0.2f);
        float *qw = take(&c, (size_t)qd * d), *kw = take(&c, (size_t)kvd * d);
        float *vw = take(&c, (size_t)kvd * d);
        fill(qw, (size_t)qd * d, &r, 0, 1.5f * ws), fill(kw, (size_t)kvd * d, &r, 0, 1.5f * ws);
        fill(vw, (size_t)kvd * d, &r, 0, ws);
        float *qb = take(&c, qd), *kb = take(&c, kvd), *vb = take(&c, kvd);
        fill(qb, qd, &r, 0, 0.3f), fill(kb, kvd, &r, 0, 0.3f), fill(vb, kvd, &r, 0, 0.3f);
        y->q = lin(qw, qkv_bias ? qb : NULL, d, qd, SP_W_OUT_IN);
        y->k = lin(kw, qkv_bias ? kb : NULL, d, kvd, SP_W_OUT_IN);
        y->v = lin(vw, qkv_bias ? vb : NULL, d, kvd, SP_W_OUT_IN);
        p = take(&c, (size_t)d * qd), fill(p, (size_t)d * qd, &r, 0, ws);
        y->o = lin(p, NULL, qd, d, SP_W_OUT_IN);
        y->ln2.w = p = take(&c, d), fill(p, d, &r, 1, 0.2f);
        p = take(&c, (size_t)F * d), fill(p, (size_t)F * d, &r, 0, 2 * ws);
        y->mlp_in = lin(p, NULL, d, F, SP_W_OUT_IN); /* gate_proj */
        p = take(&c, (size_t)F * d), fill(p, (size_t)F * d, &r, 0, ws);
        y->mlp_up = lin(p, NULL, d, F, SP_W_OUT_IN);
        p = take(&c, (size_t)d * F), fill(p, (size_t)d * F, &r, 0, 1 / sqrtf(F));
        y->mlp_out = lin(p, NULL, F, d, SP_W_OUT_IN); /* down_proj */
    }
    ck_assert_ptr_eq(c, t->mem + total);
}

static void free_model(test_model *t) {
    free(t->m.layers);
    free(t->mem);
    free(t->extra);
    free(t->extra2);
}

/* make_llama's model as Mistral with a sliding window (the family's attention window). */
static void make_mistral(test_model *t, int L, int d, int H, int Hkv, int F, int window,
                         uint64_t seed) {
    make_llama(t, L, d, H, Hkv, F, 37, 24, 0, seed);
    t->m.cfg.arch = SP_ARCH_MISTRAL;
    t->m.cfg.sliding_window = window;
}

/* make_llama's model as Qwen3: per-head RMSNorm gains of q and k (far from 1, so that the norms'
 * gradient matters), with q/k/v biases when qkv_bias. */
static void make_qwen3(test_model *t, int L, int d, int H, int Hkv, int F, int qkv_bias,
                       uint64_t seed) {
    make_llama(t, L, d, H, Hkv, F, 37, 24, qkv_bias, seed);
    t->m.cfg.arch = SP_ARCH_QWEN3;
    int hd = sp_config_head_dim(&t->m.cfg);
    t->extra = malloc((size_t)L * 2 * hd * sizeof *t->extra);
    sp_rng r;
    sp_rng_seed(&r, seed + 100);
    fill(t->extra, (size_t)L * 2 * hd, &r, 1, 0.5f);
    for (int l = 0; l < L; l++) {
        t->m.layers[l].q_norm.w = t->extra + (size_t)l * 2 * hd;
        t->m.layers[l].k_norm.w = t->extra + (size_t)l * 2 * hd + hd;
    }
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

/* The loss of pass, forward only. */
static double loss_of(sp_worker *w, const sp_batch *b, sp_pass pass) {
    pass.grad = NULL, pass.kv_prefix_grad = NULL;
    double loss;
    sp_error err;
    ck_assert_msg(sp_engine_run(w, b, &pass, &loss, &err) == 0, "%s", err.msg);
    return loss;
}

/* Richardson-extrapolated central difference of the loss along direction u of x [n], an input
 * pass reads (the prompt or the key/value prefix); x is restored. */
static double fd_directional(sp_worker *w, const sp_batch *b, const sp_pass *pass, float *x,
                             const float *u, size_t n, double h) {
    float *x0 = malloc(n * sizeof *x0);
    memcpy(x0, x, n * sizeof *x0);
    double d[2];
    for (int k = 0; k < 2; k++) {
        double step = k == 0 ? h : h / 2;
        for (size_t i = 0; i < n; i++) x[i] = x0[i] + (float)(step * u[i]);
        double plus = loss_of(w, b, *pass);
        for (size_t i = 0; i < n; i++) x[i] = x0[i] - (float)(step * u[i]);
        double minus = loss_of(w, b, *pass);
        d[k] = (plus - minus) / (2 * step);
    }
    memcpy(x, x0, n * sizeof *x0);
    free(x0);
    return (4 * d[1] - d[0]) / 3;
}

static double norm2(const float *g, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    return sqrt(s);
}

/* The analytic gradient grad [n] of the loss with respect to x (rows of width floats, named
 * what) against finite differences: along 6 random unit directions, then at the 6 largest
 * coordinates. grad is consumed. */
static void check_fd(sp_worker *w, const sp_batch *b, const sp_pass *pass, float *x, float *grad,
                     size_t n, size_t width, const char *what, sp_rng *r) {
    const sp_model_config *c = &sp_worker_model(w)->cfg;
    int L = c->n_layer, d = c->d_model, H = c->n_head;
    float *u = malloc(n * sizeof *u);
    double gnorm = norm2(grad, n);
    ck_assert_msg(gnorm > 1e-2, "%s: gradient norm %g too small to test anything", what, gnorm);
    for (int trial = 0; trial < 6; trial++) { /* random unit directions */
        double un = 0, an = 0;
        for (size_t i = 0; i < n; i++) u[i] = (float)sp_rng_normal(r), un += (double)u[i] * u[i];
        for (size_t i = 0; i < n; i++) u[i] /= (float)sqrt(un), an += (double)u[i] * grad[i];
        double fd = fd_directional(w, b, pass, x, u, n, 2e-2);
        ck_assert_msg(fabs(fd - an) <= 5e-3 * gnorm + 5e-4,
                      "L=%d d=%d H=%d %s direction %d: analytic %.6g, finite difference %.6g "
                      "(|grad| %.4g)",
                      L, d, H, what, trial, an, fd, gnorm);
    }
    for (int trial = 0; trial < 6; trial++) { /* the largest remaining coordinates */
        size_t best = 0;
        for (size_t i = 0; i < n; i++) best = fabsf(grad[i]) > fabsf(grad[best]) ? i : best;
        memset(u, 0, n * sizeof *u);
        u[best] = 1.0f;
        double fd = fd_directional(w, b, pass, x, u, n, 2e-2);
        ck_assert_msg(fabs(fd - grad[best]) <= 5e-3 * fabs(grad[best]) + 5e-4,
                      "L=%d d=%d H=%d %s[%zu][%zu]: analytic %.6g, finite difference %.6g", L, d, H,
                      what, best / width, best % width, grad[best], fd);
        grad[best] = 0.0f; /* next trial takes the next largest */
    }
    free(u);
}

/* Compares the engine's prompt gradient on batch b with finite differences. */
static void check_batch_gradient(test_model *t, const sp_batch *bp, uint64_t seed) {
    int d = sp_config_embed_dim(&t->m.cfg); /* the prompt's width */
    sp_worker *w = sp_worker_new(&t->m);
    sp_batch b = *bp;
    size_t n = (size_t)P * d;
    float *prompt = malloc(n * sizeof *prompt), *grad = calloc(n, sizeof *grad);
    sp_rng r;
    sp_rng_seed(&r, seed + 1);
    fill(prompt, n, &r, 0, 1.0f);
    sp_pass pass = {.prompt = prompt, .n_prompt = P, .grad = grad};
    double loss;
    sp_error err;
    ck_assert_msg(sp_engine_run(w, &b, &pass, &loss, &err) == 0, "%s", err.msg);
    check_fd(w, &b, &pass, prompt, grad, n, (size_t)d, "prompt", &r);
    free(prompt), free(grad);
    sp_worker_free(w);
}

/* The same on the test batch. */
static void check_model_gradient(test_model *t, uint64_t seed) {
    sp_batch b = test_batch();
    check_batch_gradient(t, &b, seed);
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

/* make_llama's model as Gemma: inputs scaled (prompt included), norms (1 + w), GeGLU. */
static void make_gemma(test_model *t, int L, int d, int H, int Hkv, int F, int qkv_bias,
                       uint64_t seed) {
    make_llama(t, L, d, H, Hkv, F, 37, 24, qkv_bias, seed);
    t->m.cfg.arch = SP_ARCH_GEMMA;
    t->m.embed_scale = 0.75f; /* the unit-variance embeddings stay in the nonlinear range */
    /* gains 1 + N(0, 0.2^2) as offsets: (1 + w) is make_llama's gain again */
    float *g[] = {(float *)t->m.lnf.w};
    for (int j = 0; j < d; j++) g[0][j] -= 1.0f;
    for (int l = 0; l < L; l++)
        for (int j = 0; j < d; j++)
            ((float *)t->m.layers[l].ln1.w)[j] -= 1.0f, ((float *)t->m.layers[l].ln2.w)[j] -= 1.0f;
}

/* make_gemma's model as Gemma 2: norms after attention and around the MLP, soft-capped scores and
 * logits (caps the unit-scale values reach), a query scale of its own, a window of 4 in every
 * other layer. */
static void make_gemma2(test_model *t, int L, int d, int H, int Hkv, int F, int qkv_bias,
                        uint64_t seed) {
    make_gemma(t, L, d, H, Hkv, F, qkv_bias, seed);
    sp_model_config *c = &t->m.cfg;
    c->arch = SP_ARCH_GEMMA2;
    c->attn_softcap = 2.0f, c->logit_softcap = 3.0f, c->query_scale = 0.3;
    c->sliding_window = 4, c->window_pattern = 2;
    t->extra = malloc((size_t)L * 2 * d * sizeof *t->extra);
    sp_rng r;
    sp_rng_seed(&r, seed + 200);
    fill(t->extra, (size_t)L * 2 * d, &r, 0, 0.2f); /* (1 + w) gains */
    for (int l = 0; l < L; l++) {
        t->m.layers[l].ln_post_attn.w = t->extra + (size_t)l * 2 * d;
        t->m.layers[l].ln_post_ff.w = t->extra + (size_t)l * 2 * d + d;
    }
}

/* make_gemma2's model as Gemma 3: (1 + w) norms of each q and k head, windows in 2 of every 3
 * layers, which rotate with a base of their own (rope_local_base_freq 1000, global 10000). */
static void make_gemma3(test_model *t, int L, int d, int H, int Hkv, int F, uint64_t seed) {
    make_gemma2(t, L, d, H, Hkv, F, 0, seed);
    sp_model_config *c = &t->m.cfg;
    int hd = sp_config_head_dim(c);
    c->arch = SP_ARCH_GEMMA3, c->window_pattern = 3, c->rope_local_theta = 1000;
    c->logit_softcap = 0; /* Gemma 3's default */
    t->extra2 = malloc(((size_t)L * 2 * hd + (size_t)hd / 2) * sizeof *t->extra2);
    sp_rng r;
    sp_rng_seed(&r, seed + 300);
    fill(t->extra2, (size_t)L * 2 * hd, &r, 0, 0.3f);
    for (int l = 0; l < L; l++) {
        t->m.layers[l].q_norm.w = t->extra2 + (size_t)l * 2 * hd;
        t->m.layers[l].k_norm.w = t->extra2 + (size_t)l * 2 * hd + hd;
    }
    float *f = t->m.rope_inv_freq_local = t->extra2 + (size_t)L * 2 * hd;
    for (int i = 0; i < hd / 2; i++) f[i] = (float)pow(1000.0, -2.0 * i / hd);
}

START_TEST(test_fd_gemma3) {
    test_model t;
    make_gemma3(&t, 3, 16, 4, 2, 40, 22);
    check_model_gradient(&t, 22);
    free_model(&t);
}
END_TEST

/* make_model's GPT-2 as GPT-NeoX: q/k/v interleaved per head in the fused projection, rotary
 * over rot of each head's columns (theta 10000, no learned positions), the MLP reading x
 * (parallel) or xmid, the erf or tanh GELU. */
static void make_neox(test_model *t, int L, int d, int H, int F, int rot, int parallel, int erf,
                      uint64_t seed) {
    make_model(t, L, d, H, F, 37, 24, seed);
    sp_model_config *c = &t->m.cfg;
    c->arch = SP_ARCH_GPT_NEOX, c->rotary_dim = rot, c->parallel_residual = parallel;
    c->gelu_exact = erf, c->rope_theta = 10000;
    t->m.wpe = NULL;
    float *f = t->extra = malloc((size_t)rot / 2 * sizeof *t->extra);
    for (int i = 0; i < rot / 2; i++) f[i] = (float)pow(10000.0, -2.0 * i / rot);
    t->m.rope_inv_freq = f;
}

/* make_llama's model as Phi-3: q/k/v through one fused [q | k | v] weight (make_llama's three
 * are contiguous), the rotary embedding over half of each head, a window of 5. */
static void make_phi3(test_model *t, int L, int d, int H, int Hkv, int F, uint64_t seed) {
    make_llama(t, L, d, H, Hkv, F, 37, 24, 0, seed);
    sp_model_config *c = &t->m.cfg;
    int hd = sp_config_head_dim(c), rot = hd / 2;
    c->arch = SP_ARCH_PHI3, c->rotary_dim = rot, c->sliding_window = 5;
    for (int l = 0; l < L; l++) {
        sp_layer *y = &t->m.layers[l];
        y->qkv = lin(y->q.w, NULL, d, (H + 2 * Hkv) * hd, SP_W_OUT_IN);
        memset(&y->q, 0, sizeof y->q), memset(&y->k, 0, sizeof y->k);
        memset(&y->v, 0, sizeof y->v);
    }
    float *f = (float *)t->m.rope_inv_freq;
    for (int i = 0; i < rot / 2; i++) f[i] = (float)pow(10000.0, -2.0 * i / rot);
}

START_TEST(test_fd_phi3) {
    test_model t;
    make_phi3(&t, 2, 16, 4, 2, 40, 25);
    check_model_gradient(&t, 25);
    free_model(&t);
}
END_TEST

/* make_model's GPT-2 as OPT: separate q/k/v (nn.Linear) with biases, ReLU, learned positions
 * read from row 2 of the table on (cfg.pos_offset, as the config sets it). */
static void make_opt(test_model *t, int L, int d, int H, int F, uint64_t seed) {
    make_model(t, L, d, H, F, 37, 24, seed);
    t->m.cfg.arch = SP_ARCH_OPT, t->m.cfg.mlp_bias = t->m.cfg.qkv_bias = t->m.cfg.o_bias = 1;
    t->m.cfg.pos_offset = 2, t->m.cfg.n_ctx = 22; /* the 24 rows less the first 2 */
    size_t per = 3 * (size_t)d * d + 3 * (size_t)d;
    float *e = t->extra = malloc((size_t)L * per * sizeof *t->extra);
    sp_rng r;
    sp_rng_seed(&r, seed + 400);
    fill(e, (size_t)L * per, &r, 0, 1.5f / sqrtf((float)d));
    for (int l = 0; l < L; l++, e += per) {
        sp_layer *y = &t->m.layers[l];
        y->q = lin(e, e + 3 * (size_t)d * d, d, d, SP_W_OUT_IN);
        y->k = lin(e + (size_t)d * d, e + 3 * (size_t)d * d + d, d, d, SP_W_OUT_IN);
        y->v = lin(e + 2 * (size_t)d * d, e + 3 * (size_t)d * d + 2 * d, d, d, SP_W_OUT_IN);
        memset(&y->qkv, 0, sizeof y->qkv);
    }
}

START_TEST(test_fd_opt) {
    test_model t;
    make_opt(&t, 2, 16, 2, 48, 26);
    check_model_gradient(&t, 26);
    free_model(&t);
}
END_TEST

/* make_opt as opt-350m: post-norm blocks (the layers' norms become post-norms, no final norm)
 * and word_embed_proj_dim e: a [V, e] table (the tied head's too) with project_in [d, e] and
 * project_out [e, d]; the prompt is e wide. */
static void make_opt350(test_model *t, int L, int d, int H, int F, int e, uint64_t seed) {
    make_opt(t, L, d, H, F, seed);
    sp_model *m = &t->m;
    m->cfg.post_norm = 1, m->cfg.d_embed = e;
    for (int l = 0; l < L; l++) {
        sp_layer *y = &m->layers[l];
        y->ln_post_attn = y->ln1, y->ln_post_ff = y->ln2;
        y->ln1 = y->ln2 = (sp_normw){0};
    }
    m->lnf = (sp_normw){0};
    size_t V = (size_t)m->cfg.vocab_size;
    float *p = t->extra2 = malloc((V * e + 2 * (size_t)d * e) * sizeof *t->extra2);
    sp_rng r;
    sp_rng_seed(&r, seed + 700);
    fill(p, V * e, &r, 0, 1.0f), fill(p + V * e, 2 * (size_t)d * e, &r, 0, 1.0f / sqrtf((float)e));
    m->wte = p;
    m->lm_head = lin(p, NULL, e, (int)V, SP_W_OUT_IN);
    m->project_in = lin(p + V * e, NULL, e, d, SP_W_OUT_IN);                  /* [d, e] */
    m->project_out = lin(p + V * e + (size_t)d * e, NULL, d, e, SP_W_OUT_IN); /* [e, d] */
}

START_TEST(test_fd_opt350) {
    test_model t;
    make_opt350(&t, 2, 16, 2, 48, 8, 30); /* e < d, as opt-350m's 512 under 1024 */
    check_model_gradient(&t, 30);
    free_model(&t);
    /* post-norm alone (e = d: no projections); seeds 31, 32 and 34 fail the largest-coordinate
     * check by 1-2% (gradients of 3-5 there; likely ReLU kinks within the 2e-2 steps); the float64
     * reference (opt_l2_h2_d16_postnorm_tied_f32) checks this block to 1e-6 */
    make_opt350(&t, 3, 16, 4, 40, 16, 33);
    t.m.cfg.d_embed = 0;
    check_model_gradient(&t, 33);
    free_model(&t);
}
END_TEST

/* make_opt's separate q/k/v as Phi-2: one LayerNorm per block read by attention and the MLP in
 * parallel, rotary over rot of each head, the tanh GELU, the head with a bias. */
static void make_phi(test_model *t, int L, int d, int H, int F, int rot, uint64_t seed) {
    make_opt(t, L, d, H, F, seed);
    sp_model_config *c = &t->m.cfg;
    c->arch = SP_ARCH_PHI, c->rotary_dim = rot, c->rope_theta = 10000;
    t->m.wpe = NULL;
    for (int l = 0; l < L; l++) t->m.layers[l].ln2 = t->m.layers[l].ln1;
    float *f = t->extra2 = malloc(((size_t)rot / 2 + 37) * sizeof *t->extra2);
    for (int i = 0; i < rot / 2; i++) f[i] = (float)pow(10000.0, -2.0 * i / rot);
    t->m.rope_inv_freq = f;
    sp_rng r;
    sp_rng_seed(&r, seed + 500);
    fill(f + rot / 2, 37, &r, 0, 0.5f); /* lm_head.bias over the 37 tokens */
    t->m.lm_head.b = f + rot / 2;
}

START_TEST(test_fd_phi) {
    test_model t;
    make_phi(&t, 2, 16, 2, 48, 4, 27);
    check_model_gradient(&t, 27);
    free_model(&t);
}
END_TEST

/* make_model's GPT-2 as BLOOM: the embedding LayerNorm (prompt rows included), ALiBi (slopes
 * larger than a 2-head BLOOM's, so that the bias matters over 20 positions), q/k/v interleaved
 * per head, the tanh GELU, the residuals from the norms' inputs or outputs. */
static void make_bloom(test_model *t, int L, int d, int H, int F, int norm_residual,
                       uint64_t seed) {
    make_model(t, L, d, H, F, 37, 24, seed);
    t->m.cfg.arch = SP_ARCH_BLOOM, t->m.cfg.residual_from_norm = norm_residual;
    t->m.wpe = NULL;
    float *e = t->extra = malloc(2 * (size_t)d * sizeof *t->extra);
    sp_rng r;
    sp_rng_seed(&r, seed + 600);
    fill(e, d, &r, 1, 0.2f), fill(e + d, d, &r, 0, 0.1f);
    t->m.emb_ln = (sp_normw){e, e + d};
    float *s = t->extra2 = malloc((size_t)H * sizeof *t->extra2);
    for (int h = 0; h < H; h++) s[h] = 0.5f / (float)(h + 1);
    t->m.alibi_slopes = s;
}

START_TEST(test_fd_bloom) {
    test_model t;
    make_bloom(&t, 2, 16, 2, 48, 0, 28); /* bloom-560m's residuals */
    check_model_gradient(&t, 28);
    free_model(&t);
    make_bloom(&t, 3, 16, 4, 40, 1, 29); /* apply_residual_connection_post_layernorm */
    check_model_gradient(&t, 29);
    free_model(&t);
}
END_TEST

START_TEST(test_fd_neox) {
    test_model t;
    make_neox(&t, 2, 16, 2, 48, 4, 1, 1, 23); /* Pythia's block: parallel, erf GELU */
    check_model_gradient(&t, 23);
    free_model(&t);
    make_neox(&t, 3, 16, 4, 40, 2, 0, 0, 24); /* sequential, tanh GELU */
    check_model_gradient(&t, 24);
    free_model(&t);
}
END_TEST

START_TEST(test_fd_gemma2) {
    test_model t;
    make_gemma2(&t, 2, 16, 4, 2, 40, 0, 20);
    check_model_gradient(&t, 20);
    free_model(&t);
    make_gemma2(&t, 3, 24, 2, 1, 48, 1, 21);
    check_model_gradient(&t, 21);
    free_model(&t);
}
END_TEST

START_TEST(test_fd_gemma) {
    test_model t;
    make_gemma(&t, 2, 16, 4, 1, 40, 0, 18);
    check_model_gradient(&t, 18);
    free_model(&t);
    make_gemma(&t, 3, 24, 2, 2, 48, 1, 19);
    check_model_gradient(&t, 19);
    free_model(&t);
}
END_TEST

/* Windows of 3 and 5 (the test batch's sequences are 5 to 12 long), grouped-query heads. */
START_TEST(test_fd_mistral_window) {
    test_model t;
    make_mistral(&t, 2, 16, 4, 2, 40, 3, 14);
    check_model_gradient(&t, 14);
    free_model(&t);
    make_mistral(&t, 3, 16, 4, 1, 24, 5, 15);
    check_model_gradient(&t, 15);
    free_model(&t);
}
END_TEST

START_TEST(test_fd_qwen3_qk_norm) {
    test_model t;
    make_qwen3(&t, 2, 16, 4, 2, 40, 0, 16);
    check_model_gradient(&t, 16);
    free_model(&t);
    make_qwen3(&t, 2, 24, 2, 2, 48, 1, 17);
    check_model_gradient(&t, 17);
    free_model(&t);
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

static void check_prefix_gradient(test_model *t, int n_kv, uint64_t seed);

/* A masked LM (BERT; RoBERTa with pos_offset 2): embedding LayerNorm with token type 0, post-LN
 * blocks, bidirectional attention, exact GELU, the MLM head (dense, GELU, LayerNorm, tied
 * decoder + bias). */
static void make_bert(test_model *t, int L, int d, int H, int F, int V, int ctx, int pos_offset,
                      uint64_t seed) {
    memset(t, 0, sizeof *t);
    sp_model *m = &t->m;
    m->cfg = (sp_model_config){.arch = pos_offset ? SP_ARCH_ROBERTA : SP_ARCH_BERT,
                               .n_layer = L,
                               .d_model = d,
                               .n_head = H,
                               .d_ff = F,
                               .vocab_size = V,
                               .n_ctx = ctx,
                               .ln_eps = 1e-5f,
                               .tied = 1,
                               .type_vocab_size = 2,
                               .pos_offset = pos_offset};
    size_t per_layer = 4 * ((size_t)d * d + d) + 4 * (size_t)d + 2 * (size_t)F * d + F + d;
    size_t total = (size_t)V * d + (size_t)(ctx + pos_offset) * d + 2 * (size_t)d + 4 * (size_t)d +
                   (size_t)d * d + d + V + L * per_layer;
    t->mem = malloc(total * sizeof(float));
    float *c = t->mem, *p, *b;
    sp_rng r;
    sp_rng_seed(&r, seed);
    float ws = 1.0f / sqrtf((float)d);
    m->wte = p = take(&c, (size_t)V * d), fill(p, (size_t)V * d, &r, 0, 1.0f);
    m->wpe = p = take(&c, (size_t)(ctx + pos_offset) * d);
    fill(p, (size_t)(ctx + pos_offset) * d, &r, 0, 0.5f);
    m->wtt = p = take(&c, 2 * (size_t)d), fill(p, 2 * (size_t)d, &r, 0, 0.5f);
    m->emb_ln.w = p = take(&c, d), fill(p, d, &r, 1, 0.2f);
    m->emb_ln.b = p = take(&c, d), fill(p, d, &r, 0, 0.1f);
    m->head_ln.w = p = take(&c, d), fill(p, d, &r, 1, 0.2f);
    m->head_ln.b = p = take(&c, d), fill(p, d, &r, 0, 0.1f);
    p = take(&c, (size_t)d * d), fill(p, (size_t)d * d, &r, 0, 2 * ws);
    b = take(&c, d), fill(b, d, &r, 0, 0.3f);
    m->head_dense = lin(p, b, d, d, SP_W_OUT_IN);
    b = take(&c, V), fill(b, V, &r, 0, 0.5f);
    m->lm_head = lin(m->wte, b, d, V, SP_W_OUT_IN);
    m->layers = calloc((size_t)L, sizeof *m->layers);
    for (int l = 0; l < L; l++) {
        sp_layer *y = &m->layers[l];
        sp_linear *proj[4] = {&y->q, &y->k, &y->v, &y->o};
        for (int k = 0; k < 4; k++) {
            p = take(&c, (size_t)d * d), fill(p, (size_t)d * d, &r, 0, (k < 2 ? 1.5f : 1) * ws);
            b = take(&c, d), fill(b, d, &r, 0, 0.1f);
            *proj[k] = lin(p, b, d, d, SP_W_OUT_IN);
        }
        y->ln_post_attn.w = p = take(&c, d), fill(p, d, &r, 1, 0.2f);
        y->ln_post_attn.b = p = take(&c, d), fill(p, d, &r, 0, 0.1f);
        y->ln_post_ff.w = p = take(&c, d), fill(p, d, &r, 1, 0.2f);
        y->ln_post_ff.b = p = take(&c, d), fill(p, d, &r, 0, 0.1f);
        p = take(&c, (size_t)F * d), fill(p, (size_t)F * d, &r, 0, 2 * ws);
        b = take(&c, F), fill(b, F, &r, 0, 0.3f);
        y->mlp_in = lin(p, b, d, F, SP_W_OUT_IN);
        p = take(&c, (size_t)d * F), fill(p, (size_t)d * F, &r, 0, 1 / sqrtf(F));
        b = take(&c, d), fill(b, d, &r, 0, 0.1f);
        y->mlp_out = lin(p, b, F, d, SP_W_OUT_IN);
    }
    ck_assert_ptr_eq(c, t->mem + total);
}

/* T5: an encoder and a decoder of L blocks each (RMS norms, relative position buckets, no
 * biases, ReLU or gated-GELU), heads of hd columns (H hd != d allowed), tied or untied head. */
static void make_t5(test_model *t, int L, int d, int H, int hd, int F, int gated, int tied,
                    uint64_t seed) {
    enum { V = 37, NB = 8 };
    memset(t, 0, sizeof *t);
    sp_model *m = &t->m;
    m->cfg = (sp_model_config){.arch = SP_ARCH_T5,
                               .n_layer = L,
                               .d_model = d,
                               .n_head = H,
                               .n_kv_head = H,
                               .head_dim = hd,
                               .d_ff = F,
                               .vocab_size = V,
                               .n_ctx = 64,
                               .ln_eps = 1e-6f,
                               .tied = tied,
                               .rel_buckets = NB,
                               .rel_max_distance = 20,
                               .ff_gated = gated,
                               .decoder_start = 0};
    size_t qd = (size_t)H * hd, mlp = (size_t)(gated ? 3 : 2) * F * d;
    size_t enc = 4 * qd * d + 2 * (size_t)d + mlp, dec = enc + 4 * qd * d + d;
    size_t total = (size_t)V * d * (tied ? 1 : 2) + 2 * (size_t)NB * H + 2 * (size_t)d +
                   (size_t)L * (enc + dec);
    t->mem = malloc(total * sizeof(float));
    float *c = t->mem, *p;
    sp_rng r;
    sp_rng_seed(&r, seed);
    float ws = 1.0f / sqrtf((float)d);
    m->wte = p = take(&c, (size_t)V * d), fill(p, (size_t)V * d, &r, 0, 1.0f);
    m->rel_bias = p = take(&c, (size_t)NB * H), fill(p, (size_t)NB * H, &r, 0, 1.0f);
    m->dec_rel_bias = p = take(&c, (size_t)NB * H), fill(p, (size_t)NB * H, &r, 0, 1.0f);
    m->enc_lnf.w = p = take(&c, d), fill(p, d, &r, 1, 0.2f);
    m->lnf.w = p = take(&c, d), fill(p, d, &r, 1, 0.2f);
    p = tied ? (float *)m->wte : take(&c, (size_t)V * d);
    if (!tied) fill(p, (size_t)V * d, &r, 0, 1.0f);
    m->lm_head = lin(p, NULL, d, V, SP_W_OUT_IN);
    m->layers = calloc(2 * (size_t)L, sizeof *m->layers);
    for (int l = 0; l < 2 * L; l++) {
        sp_layer *y = &m->layers[l];
        sp_linear *proj[8] = {&y->q, &y->k, &y->v, &y->o, &y->xq, &y->xk, &y->xv, &y->xo};
        for (int k = 0; k < (l < L ? 4 : 8); k++) {
            int out = k % 4 == 3 ? d : (int)qd, in = k % 4 == 3 ? (int)qd : d;
            p = take(&c, qd * d), fill(p, qd * d, &r, 0, (k % 4 < 2 ? 1.5f : 1) * ws);
            *proj[k] = lin(p, NULL, in, out, SP_W_OUT_IN);
        }
        y->ln1.w = p = take(&c, d), fill(p, d, &r, 1, 0.2f);
        y->ln2.w = p = take(&c, d), fill(p, d, &r, 1, 0.2f);
        if (l >= L) y->ln_cross.w = p = take(&c, d), fill(p, d, &r, 1, 0.2f);
        sp_linear *mats[3] = {&y->mlp_in, &y->mlp_up, &y->mlp_out};
        for (int k = gated ? 0 : 1; k < 3; k++) {
            int in = k == 2 ? F : d, out = k == 2 ? d : F;
            p = take(&c, (size_t)F * d), fill(p, (size_t)F * d, &r, 0, 2 / sqrtf((float)in));
            *mats[gated || k != 1 ? k : 0] = lin(p, NULL, in, out, SP_W_OUT_IN);
        }
    }
    ck_assert_ptr_eq(c, t->mem + total);
}

/* T5's batch: soft tokens only in the encoder's part (up to a sequence's first target); a
 * classification example (seq 0), a target of three tokens behind soft tokens in four places
 * (seq 1), two targets with an unscored one between them (seq 2). */
static const int32_t T5_START[] = {0, 7, 19, 24};
static const int32_t T5_TOKENS[] = {
    SP_SOFT(0), SP_SOFT(1), SP_SOFT(2), SP_SOFT(3), 5,          11, 2,                 /* seq 0 */
    7,          SP_SOFT(2), 9,          SP_SOFT(0), SP_SOFT(1), 4,  4, 20, SP_SOFT(0), /* seq 1 */
    13,         3,          1,                          /* its decoder input */
    8,          6,          30,         2,          17, /* seq 2 */
};
static const int32_t T5_TARGET_POS[] = {6, 16, 17, 18, 21, 23};
static const int32_t T5_TARGET_IDS[] = {3, 4, 20, 13, 1, 17};

/* Finite differences of T5's prompt gradient: through cross-attention into the encoder. */
START_TEST(test_fd_t5) {
    static const struct {
        int L, d, H, hd, F, gated, tied;
    } shapes[] = {{2, 24, 2, 8, 32, 1, 0}, {1, 16, 2, 8, 24, 1, 1}, {2, 16, 4, 4, 40, 0, 1}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        test_model t;
        make_t5(&t, shapes[i].L, shapes[i].d, shapes[i].H, shapes[i].hd, shapes[i].F,
                shapes[i].gated, shapes[i].tied, 60 + i);
        sp_batch b = {3, T5_START, T5_TOKENS, 6, T5_TARGET_POS, T5_TARGET_IDS, NULL, NULL};
        check_batch_gradient(&t, &b, 60 + i);
        free_model(&t);
    }
}
END_TEST

/* Finite differences of the masked LMs' prompt gradient (and of a key/value prefix's). */
START_TEST(test_fd_bert) {
    test_model t;
    make_bert(&t, 2, 16, 4, 40, 37, 24, 0, 40);
    check_model_gradient(&t, 40);
    check_prefix_gradient(&t, 3, 41);
    free_model(&t);
    make_bert(&t, 3, 24, 2, 48, 37, 24, 2, 42); /* RoBERTa's positions */
    check_model_gradient(&t, 42);
    free_model(&t);
}
END_TEST

START_TEST(test_fd_one_layer_one_head) {
    check_gradient(1, 8, 1, 32, 3);
}
END_TEST

/* Runs the whole test batch once; returns the loss sum, fills grad [P, d] or [n_seq, P, d]. */
static double run_batch(sp_worker *w, const sp_batch *b, const float *prompt, float *grad,
                        int per_seq, float *logits, double *target_loss) {
    sp_pass pass = {.prompt = prompt,
                    .n_prompt = P,
                    .grad = grad,
                    .per_sequence_grad = per_seq,
                    .target_logits = logits,
                    .target_loss = target_loss};
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
    sp_pass pass = {.prompt = prompt, .n_prompt = n_prompt, .grad = grad};
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
            sp_pass pass = {.prompt = prompt,
                            .n_prompt = P,
                            .grad = gr,
                            .target_logits = lg,
                            .target_loss = tl};
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
        sp_pass seq_pass = {.prompt = prompt, .n_prompt = P, .grad = ps, .per_sequence_grad = 1};
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
    sp_pass pass = {.prompt = prompt, .n_prompt = P, .grad = grad};
    double loss;
    sp_error err = {0};
    ck_assert_int_eq(sp_team_run(team, &b, &pass, &loss, &err), -1);
    ck_assert_msg(strstr(err.msg, "position 22 holds token id 40") != NULL, "%s", err.msg);
    sp_team_free(team);
    free_model(&t);
}
END_TEST

/* ---- a per-layer key/value prefix ---------------------------------------------------------- */

static size_t kv_dim(const sp_model_config *c) {
    return (size_t)sp_config_kv_heads(c) * (size_t)sp_config_head_dim(c);
}

/* A random prefix of n_kv rows per layer ([L, 2, n_kv, kv_dim], std 1). */
static float *random_prefix(const sp_model *m, int n_kv, sp_rng *r) {
    size_t n = (size_t)m->cfg.n_layer * 2 * n_kv * kv_dim(&m->cfg);
    float *x = malloc(n * sizeof *x);
    fill(x, n, r, 0, 1.0f);
    return x;
}

/* With a key/value prefix of n_kv rows per layer on the test batch: the prefix's gradient and,
 * behind it, the prompt's against finite differences; the per-sequence prefix gradients (asked
 * for alone) sum to the batch's, each the gradient of its sequence run alone. */
static void check_prefix_gradient(test_model *t, int n_kv, uint64_t seed) {
    const sp_model_config *c = &t->m.cfg;
    size_t d = (size_t)c->d_model, np = (size_t)P * d;
    size_t nkv = (size_t)c->n_layer * 2 * n_kv * kv_dim(c);
    sp_worker *w = sp_worker_new(&t->m);
    sp_batch b = test_batch();
    sp_rng r;
    sp_rng_seed(&r, seed + 2);
    float *prompt = malloc(np * sizeof *prompt), *grad = calloc(np, sizeof *grad);
    fill(prompt, np, &r, 0, 1.0f);
    float *prefix = random_prefix(&t->m, n_kv, &r), *kv_grad = calloc(nkv, sizeof *kv_grad);
    float *kv_seq = calloc(3 * nkv, sizeof *kv_seq);
    sp_pass pass = {.prompt = prompt,
                    .n_prompt = P,
                    .grad = grad,
                    .kv_prefix = prefix,
                    .n_kv_prefix = n_kv,
                    .kv_prefix_grad = kv_grad};
    double loss, again;
    sp_error err;
    ck_assert_msg(sp_engine_run(w, &b, &pass, &loss, &err) == 0, "%s", err.msg);
    sp_pass per_seq = pass;
    per_seq.grad = NULL, per_seq.per_sequence_grad = 1, per_seq.kv_prefix_grad = kv_seq;
    ck_assert_msg(sp_engine_run(w, &b, &per_seq, &again, &err) == 0, "%s", err.msg);
    ck_assert_double_eq(loss, again);
    for (size_t i = 0; i < nkv; i++) {
        float sum = kv_seq[i] + kv_seq[nkv + i] + kv_seq[2 * nkv + i];
        ck_assert_msg(fabsf(sum - kv_grad[i]) <= 1e-5f * (1 + fabsf(kv_grad[i])), "element %zu", i);
    }
    for (int q = 0; q < 3; q++) { /* each slice is its sequence's: run alone */
        int start = SEQ_START[q], len = SEQ_START[q + 1] - start, nt = 0;
        int32_t seq_start[2] = {0, len}, pos[8], ids[8];
        for (int j = 0; j < 8; j++)
            if (TARGET_POS[j] >= start && TARGET_POS[j] < start + len)
                pos[nt] = TARGET_POS[j] - start, ids[nt++] = TARGET_IDS[j];
        sp_batch one = {1, seq_start, TOKENS + start, nt, pos, ids, NULL, NULL};
        float *alone = calloc(nkv, sizeof *alone);
        sp_pass p1 = per_seq;
        p1.per_sequence_grad = 0, p1.kv_prefix_grad = alone;
        ck_assert_msg(sp_engine_run(w, &one, &p1, &again, &err) == 0, "%s", err.msg);
        for (size_t i = 0; i < nkv; i++)
            ck_assert_msg(fabsf(alone[i] - kv_seq[q * nkv + i]) <= 1e-5f * (1 + fabsf(alone[i])),
                          "sequence %d, element %zu: alone %g, in the batch %g", q, i, alone[i],
                          kv_seq[q * nkv + i]);
        free(alone);
    }
    check_fd(w, &b, &pass, prefix, kv_grad, nkv, kv_dim(c), "kv_prefix", &r);
    check_fd(w, &b, &pass, prompt, grad, np, d, "prompt behind a prefix", &r);
    free(prompt), free(grad), free(prefix), free(kv_grad), free(kv_seq);
    sp_worker_free(w);
}

START_TEST(test_fd_prefix) {
    test_model t;
    make_model(&t, 2, 16, 2, 64, 37, 24, 31);
    check_prefix_gradient(&t, 3, 31);
    free_model(&t);
    make_llama(&t, 2, 16, 4, 2, 40, 37, 24, 0, 32); /* grouped-query: kv_dim 16 of 32 */
    check_prefix_gradient(&t, 5, 32);
    free_model(&t);
    make_llama(&t, 2, 24, 2, 2, 48, 37, 24, 1, 33);
    check_prefix_gradient(&t, 1, 33);
    free_model(&t);
    make_mistral(&t, 2, 16, 4, 2, 40, 6, 34); /* the prefix of 4 leaves the window of 6 */
    check_prefix_gradient(&t, 4, 34);
    free_model(&t);
    make_qwen3(&t, 2, 16, 4, 2, 40, 0, 35);
    check_prefix_gradient(&t, 3, 35);
    free_model(&t);
    make_gemma(&t, 2, 16, 4, 2, 40, 1, 36);
    check_prefix_gradient(&t, 2, 36);
    free_model(&t);
    make_gemma2(&t, 2, 16, 4, 2, 40, 0, 37); /* the prefix of 3 leaves layer 0's window of 4 */
    check_prefix_gradient(&t, 3, 37);
    free_model(&t);
    make_gemma3(&t, 3, 16, 4, 2, 40, 38);
    check_prefix_gradient(&t, 3, 38);
    free_model(&t);
    make_neox(&t, 2, 16, 2, 48, 4, 1, 1, 39);
    check_prefix_gradient(&t, 3, 39);
    free_model(&t);
    make_phi3(&t, 2, 16, 4, 2, 40, 40);
    check_prefix_gradient(&t, 3, 40);
    free_model(&t);
    make_bloom(&t, 2, 16, 4, 40, 1, 41); /* prefix keys at positions 0..2 under ALiBi */
    check_prefix_gradient(&t, 3, 41);
    free_model(&t);
    /* (not OPT: steps of 1e-2 cross ReLU's kink at some of the largest prefix coordinates; its
     * prefix gradient is checked against the float64 reference, opt_l3_..._kvprefix3_...) */
}
END_TEST

/* A prefix holding the keys and values that n tokens produce at each layer gives what running
 * those tokens before the text gives: the same loss, logits at the text's targets and prompt
 * gradient. So the prefix is attended by every position, its keys are used as stored (rotary:
 * rotated at their own positions 0..n-1, not again), and the text's positions continue after
 * it (learned positions and rotary alike), as transformers runs past_key_values. */
static void check_prefix_is_prepended_tokens(test_model *t, uint64_t seed) {
    enum { N_PRE = 3, N_TEXT = 7 };
    const int32_t tokens[] = {5,          11, 2, /* the prefix's tokens */
                              SP_SOFT(0), 7,  SP_SOFT(1), 3, 9, SP_SOFT(0), 4};
    const int32_t pos_a[] = {N_PRE + 2, N_PRE + 4, N_PRE + 6}, pos_b[] = {2, 4, 6};
    const int32_t ids[] = {3, 30, 17}, start_a[] = {0, N_PRE + N_TEXT}, start_b[] = {0, N_TEXT};
    sp_batch with_tokens = {1, start_a, tokens, 3, pos_a, ids, NULL, NULL};
    sp_batch text_only = {1, start_b, tokens + N_PRE, 3, pos_b, ids, NULL, NULL};
    const sp_model_config *c = &t->m.cfg;
    size_t d = (size_t)c->d_model, kvd = kv_dim(c), V = (size_t)c->vocab_size;
    int qd = c->n_head * sp_config_head_dim(c), wq = qd + 2 * (int)kvd;
    sp_rng r;
    sp_rng_seed(&r, seed);
    float prompt[2 * 32], ga[2 * 32] = {0}, gb[2 * 32] = {0}, la[3 * 64], lb[3 * 64];
    ck_assert(d <= 32 && V <= 64);
    fill(prompt, 2 * d, &r, 0, 1.0f);
    sp_worker *wa = sp_worker_new(&t->m), *wb = sp_worker_new(&t->m);
    sp_pass a = {.prompt = prompt, .n_prompt = 2, .grad = ga, .target_logits = la};
    double loss_a, loss_b;
    sp_error err;
    ck_assert_msg(sp_engine_run(wa, &with_tokens, &a, &loss_a, &err) == 0, "%s", err.msg);
    /* the prefix: rows 0..N_PRE-1 of every layer's k and v, as the run computed them */
    float *prefix = malloc((size_t)c->n_layer * 2 * N_PRE * kvd * sizeof *prefix);
    for (int l = 0; l < c->n_layer; l++)
        for (int i = 0; i < N_PRE; i++) {
            const float *row = wa->acts[l].qkv + (size_t)i * wq;
            float *k = prefix + ((size_t)l * 2 * N_PRE + i) * kvd, *v = k + N_PRE * kvd;
            memcpy(k, row + qd, kvd * sizeof *k);
            memcpy(v, row + qd + kvd, kvd * sizeof *v);
        }
    /* sp_engine_capture_kv (the prefix init from tokens) returns the same rows, run alone */
    float *captured = malloc((size_t)c->n_layer * 2 * N_PRE * kvd * sizeof *captured);
    sp_worker *wc = sp_worker_new(&t->m);
    ck_assert_msg(sp_engine_capture_kv(wc, tokens, N_PRE, captured, &err) == 0, "%s", err.msg);
    for (size_t i = 0; i < (size_t)c->n_layer * 2 * N_PRE * kvd; i++)
        ck_assert_msg(fabsf(captured[i] - prefix[i]) <= 1e-5f * (1 + fabsf(prefix[i])),
                      "captured key/value %zu: %g, the run with the text computed %g", i,
                      captured[i], prefix[i]);
    sp_worker_free(wc);
    /* inspect reads each captured row back as its token: layer 0 depends on token and position
     * alone (sp_engine_first_kv), whatever the family's embedding, norm, positions or q/k/v */
    sp_prefix_view view;
    ck_assert_msg(sp_prefix_inspect(&t->m, captured, c->n_layer, N_PRE, (int)kvd, 2, &view, &err) ==
                      0,
                  "%s", err.msg);
    for (int j = 0; j < N_PRE; j++)
        ck_assert_msg(view.nearest[j * 2] == tokens[j] && view.score[j * 2] > 1 - 1e-5 &&
                          view.score[j * 2 + 1] < view.score[j * 2],
                      "%s: prefix row %d reads as token %d (score %.9f), captured from %d",
                      sp_arch_model_type(c->arch), j, view.nearest[j * 2], view.score[j * 2],
                      tokens[j]);
    sp_prefix_view_free(&view), free(captured);
    sp_pass b = {.prompt = prompt,
                 .n_prompt = 2,
                 .grad = gb,
                 .target_logits = lb,
                 .kv_prefix = prefix,
                 .n_kv_prefix = N_PRE};
    ck_assert_msg(sp_engine_run(wb, &text_only, &b, &loss_b, &err) == 0, "%s", err.msg);
    ck_assert_msg(fabs(loss_a - loss_b) <= 1e-5 * loss_a,
                  "%s: loss %.9g with the tokens, %.9g "
                  "with their prefix",
                  sp_arch_model_type(c->arch), loss_a, loss_b);
    float lmax = 0, gmax = 0;
    for (size_t i = 0; i < 3 * V; i++) lmax = fmaxf(lmax, fabsf(la[i]));
    for (size_t i = 0; i < 2 * d; i++) gmax = fmaxf(gmax, fabsf(ga[i]));
    ck_assert(gmax > 1e-3f);
    for (size_t i = 0; i < 3 * V; i++)
        ck_assert_msg(fabsf(la[i] - lb[i]) <= 1e-5f * lmax, "logit %zu: %g vs %g", i, la[i], lb[i]);
    for (size_t i = 0; i < 2 * d; i++)
        ck_assert_msg(fabsf(ga[i] - gb[i]) <= 1e-5f * gmax, "prompt gradient %zu: %g vs %g", i,
                      ga[i], gb[i]);
    free(prefix);
    sp_worker_free(wa), sp_worker_free(wb);
}

START_TEST(test_prefix_is_prepended_tokens) {
    test_model t;
    make_model(&t, 3, 16, 4, 48, 37, 24, 41); /* learned positions */
    check_prefix_is_prepended_tokens(&t, 41);
    free_model(&t);
    make_llama(&t, 3, 16, 4, 2, 40, 37, 24, 1, 42); /* rotary, grouped-query, biases */
    check_prefix_is_prepended_tokens(&t, 42);
    free_model(&t);
    /* a window of 4: the text's later rows no longer see the prefix, as they would not see the
     * tokens (transformers' mask over cache positions) */
    make_mistral(&t, 3, 16, 4, 2, 40, 4, 43);
    check_prefix_is_prepended_tokens(&t, 43);
    free_model(&t);
    make_qwen3(&t, 3, 16, 4, 2, 40, 1, 44); /* the prefix's keys were normed when computed */
    check_prefix_is_prepended_tokens(&t, 44);
    free_model(&t);
    make_gemma2(&t, 3, 16, 4, 2, 40, 0, 45); /* windows in layers 0 and 2 only */
    check_prefix_is_prepended_tokens(&t, 45);
    free_model(&t);
    make_gemma3(&t, 3, 16, 4, 2, 40, 46); /* local rotary in layers 0 and 1 */
    check_prefix_is_prepended_tokens(&t, 46);
    free_model(&t);
    make_neox(&t, 3, 16, 4, 40, 2, 1, 1, 47); /* partial rotary, q/k/v interleaved per head */
    check_prefix_is_prepended_tokens(&t, 47);
    free_model(&t);
    make_phi3(&t, 3, 16, 4, 2, 40, 48); /* fused q/k/v, half of each head rotating, a window */
    check_prefix_is_prepended_tokens(&t, 48);
    free_model(&t);
    make_opt(&t, 3, 16, 4, 48, 49); /* learned positions from the table's row 2 */
    check_prefix_is_prepended_tokens(&t, 49);
    free_model(&t);
    make_bloom(&t, 3, 16, 4, 48, 1, 50); /* ALiBi: the prefix rows at positions 0..2 */
    check_prefix_is_prepended_tokens(&t, 50);
    free_model(&t);
    make_phi(&t, 3, 16, 4, 48, 2, 50); /* one norm, parallel, partial rotary */
    check_prefix_is_prepended_tokens(&t, 50);
    free_model(&t);
}
END_TEST

/* A team adds the parts' prefix gradients like their prompt gradients. */
START_TEST(test_team_prefix_gradient) {
    test_model t;
    make_llama(&t, 2, 16, 4, 2, 40, 37, 24, 0, 51);
    sp_rng r;
    sp_rng_seed(&r, 51);
    sp_batch b = test_batch();
    size_t nkv = 2 * 2 * 4 * kv_dim(&t.m.cfg);
    float prompt[P * 16], *prefix = random_prefix(&t.m, 4, &r);
    fill(prompt, P * 16, &r, 0, 1.0f);
    float *want = calloc(nkv, 4), *got = calloc(nkv, 4), *seq = calloc(3 * nkv, 4);
    sp_pass pass = {.prompt = prompt, .n_prompt = P, .kv_prefix = prefix, .n_kv_prefix = 4};
    double loss;
    sp_error err;
    sp_worker *w = sp_worker_new(&t.m);
    pass.kv_prefix_grad = want;
    ck_assert_msg(sp_engine_run(w, &b, &pass, &loss, &err) == 0, "%s", err.msg);
    sp_team *team = sp_team_new(&t.m, 2);
    pass.kv_prefix_grad = got;
    ck_assert_msg(sp_team_run(team, &b, &pass, &loss, &err) == 0, "%s", err.msg);
    pass.kv_prefix_grad = seq, pass.per_sequence_grad = 1;
    ck_assert_msg(sp_team_run(team, &b, &pass, &loss, &err) == 0, "%s", err.msg);
    for (size_t i = 0; i < nkv; i++) {
        float sum = seq[i] + seq[nkv + i] + seq[2 * nkv + i];
        ck_assert(fabsf(got[i] - want[i]) <= 1e-5f * (1 + fabsf(want[i])));
        ck_assert(fabsf(sum - want[i]) <= 1e-5f * (1 + fabsf(want[i])));
    }
    sp_team_free(team);
    sp_worker_free(w);
    free(prefix), free(want), free(got), free(seq);
    free_model(&t);
}
END_TEST

/* A prefix without values, or too long for the context with the text, is refused. */
START_TEST(test_rejects_bad_prefixes) {
    test_model t;
    make_model(&t, 1, 8, 2, 16, 37, 24, 5);
    sp_worker *w = sp_worker_new(&t.m);
    sp_batch b = test_batch();
    float prompt[P * 8] = {0}, prefix[2 * 2 * 20 * 8] = {0};
    double loss;
    const struct {
        const float *kv;
        int n;
        const char *needle;
    } cases[] = {
        {NULL, 2, "a key/value prefix of 2 rows without its values"},
        {prefix, -1, "n_kv_prefix -1"},
        {prefix, 24, "a key/value prefix of 24 rows leaves no position of the 24"},
        {prefix, 20,
         "sequence 0 has length 7, expected 1..4 (n_positions 24 less the key/value "
         "prefix's 20)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sp_pass pass = {
            .prompt = prompt, .n_prompt = P, .kv_prefix = cases[i].kv, .n_kv_prefix = cases[i].n};
        sp_error err = {0};
        ck_assert_int_eq(sp_engine_run(w, &b, &pass, &loss, &err), -1);
        ck_assert_msg(strstr(err.msg, cases[i].needle), "'%s' lacks '%s'", err.msg,
                      cases[i].needle);
    }
    sp_worker_free(w);
    free_model(&t);
}
END_TEST

/* A prompt per sequence (forward only): in one mixed batch (a NULL entry takes pass.prompt),
 * through one worker and through a team, every target's logits and loss are bitwise those of
 * the same batch run with that sequence's prompt for all. A gradient request is refused. */
static void check_seq_prompts(test_model *t) {
    enum { NS = 3, NT = 8 };
    int d = t->m.cfg.d_model, V = t->m.cfg.vocab_size;
    size_t n = (size_t)P * d, nl = NT * (size_t)V;
    float *prompts = malloc(NS * n * sizeof *prompts), *logits = malloc(nl * sizeof(float));
    float *own = malloc(nl * sizeof(float));
    sp_rng r;
    sp_rng_seed(&r, 77);
    fill(prompts, NS * n, &r, 0, 1.0f);
    const float *per_seq[NS] = {prompts, NULL, prompts + 2 * n}; /* NULL: pass.prompt */
    sp_batch b = test_batch();
    double tl[NT], tl_own[NT], loss;
    sp_error err;
    sp_worker *w = sp_worker_new(&t->m);
    sp_team *team = sp_team_new(&t->m, 3); /* one sequence per thread */
    for (int run = 0; run < 2; run++) {
        sp_pass pass = {.prompt = prompts + n,
                        .n_prompt = P,
                        .seq_prompts = per_seq,
                        .target_logits = logits,
                        .target_loss = tl};
        int rc = run ? sp_team_run(team, &b, &pass, &loss, &err)
                     : sp_engine_run(w, &b, &pass, &loss, &err);
        ck_assert_msg(rc == 0, "%s", err.msg);
        for (int s = 0; s < NS; s++) {
            sp_pass one = {.prompt = prompts + (size_t)s * n,
                           .n_prompt = P,
                           .target_logits = own,
                           .target_loss = tl_own};
            rc = run ? sp_team_run(team, &b, &one, &loss, &err)
                     : sp_engine_run(w, &b, &one, &loss, &err);
            ck_assert_msg(rc == 0, "%s", err.msg);
            /* and the sequence alone, with its prompt: the same up to the packing's rounding
             * (sgemm over fewer rows: up to 1.5e-6 seen), within 1e-5 normwise per target, the
             * packing test's tolerance */
            int start = SEQ_START[s], len = SEQ_START[s + 1] - start, nt = 0, j0 = -1;
            int32_t one_start[2] = {0, len}, pos[NT], ids[NT];
            for (int j = 0; j < NT; j++)
                if (TARGET_POS[j] >= start && TARGET_POS[j] < start + len) {
                    if (j0 < 0) j0 = j;
                    pos[nt] = TARGET_POS[j] - start, ids[nt++] = TARGET_IDS[j];
                }
            sp_batch alone_b = {1, one_start, TOKENS + start, nt, pos, ids, NULL, NULL};
            sp_pass alone = {
                .prompt = prompts + (size_t)s * n, .n_prompt = P, .target_logits = own};
            ck_assert_msg(sp_engine_run(w, &alone_b, &alone, &loss, &err) == 0, "%s", err.msg);
            for (int j = 0; j < nt; j++) {
                double dd = 0, nn = 0;
                for (int v = 0; v < V; v++) {
                    double a = logits[(size_t)(j0 + j) * V + v], b = own[(size_t)j * V + v];
                    dd += (a - b) * (a - b), nn += b * b;
                }
                ck_assert_msg(sqrt(dd) <= 1e-5 * sqrt(nn),
                              "run %d, sequence %d, target %d: mixed vs alone differ by %g of %g",
                              run, s, j, sqrt(dd), sqrt(nn));
            }
            rc = run ? sp_team_run(team, &b, &one, &loss, &err)
                     : sp_engine_run(w, &b, &one, &loss, &err);
            ck_assert_msg(rc == 0, "%s", err.msg);
            for (int j = 0; j < NT; j++) {
                if (TARGET_POS[j] < SEQ_START[s] || TARGET_POS[j] >= SEQ_START[s + 1]) continue;
                ck_assert_msg(tl[j] == tl_own[j], "run %d, sequence %d, target %d: %.9g vs %.9g",
                              run, s, j, tl[j], tl_own[j]);
                ck_assert_msg(!memcmp(logits + (size_t)j * V, own + (size_t)j * V, V * 4),
                              "run %d, sequence %d, target %d: logits differ", run, s, j);
            }
        }
    }
    float *grad = calloc(n, sizeof *grad);
    sp_pass bad = {.prompt = prompts, .n_prompt = P, .seq_prompts = per_seq, .grad = grad};
    sp_error e2 = {0};
    ck_assert_int_eq(sp_engine_run(w, &b, &bad, &loss, &e2), -1);
    tu_assert_has(e2.msg, "a prompt per sequence is forward only");
    free(grad), free(prompts), free(logits), free(own);
    sp_team_free(team);
    sp_worker_free(w);
}

START_TEST(test_prompt_per_sequence) {
    test_model t;
    make_model(&t, 2, 16, 4, 48, 37, 24, 31);
    check_seq_prompts(&t);
    free_model(&t);
    make_llama(&t, 2, 16, 4, 2, 40, 37, 24, 0, 32);
    check_seq_prompts(&t);
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
    tcase_add_test(tc, test_fd_mistral_window);
    tcase_add_test(tc, test_fd_qwen3_qk_norm);
    tcase_add_test(tc, test_fd_gemma);
    tcase_add_test(tc, test_fd_bert);
    tcase_add_test(tc, test_fd_t5);
    tcase_add_test(tc, test_fd_gemma2);
    tcase_add_test(tc, test_fd_gemma3);
    tcase_add_test(tc, test_fd_neox);
    tcase_add_test(tc, test_fd_phi3);
    tcase_add_test(tc, test_fd_opt);
    tcase_add_test(tc, test_fd_opt350);
    tcase_add_test(tc, test_fd_bloom);
    tcase_add_test(tc, test_fd_phi);
    tcase_add_test(tc, test_fd_prefix);
    suite_add_tcase(s, tc);
    TCase *inv = tcase_create("invariants");
    tcase_add_test(inv, test_packing_matches_sequences_alone);
    tcase_add_test(inv, test_forward_outputs_consistent);
    tcase_add_test(inv, test_rejects_bad_batches);
    tcase_add_test(inv, test_worker_reuse);
    tcase_add_test(inv, test_team_matches_one_worker);
    tcase_add_test(inv, test_team_reports_batch_positions);
    tcase_add_test(inv, test_prompt_per_sequence);
    suite_add_tcase(s, inv);
    TCase *pre = tcase_create("key/value prefix");
    tcase_add_test(pre, test_prefix_is_prepended_tokens);
    tcase_add_test(pre, test_team_prefix_gradient);
    tcase_add_test(pre, test_rejects_bad_prefixes);
    suite_add_tcase(s, pre);
    return s;
}

int main(void) {
    return tu_run_suite(engine_suite());
}
