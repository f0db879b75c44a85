/* Generation (src/model/generate.c, generator.c, sample.c) against the engine itself:
 *  - cached and uncached computation agree: the logits of every decode step, computed through
 *    the key/value cache (a shared prefix cache of the leading soft tokens, the request's own
 *    rows), are within 1e-5 normwise of sp_engine_run over the whole sequence so far, and the
 *    greedy ids are identical, for GPT-2 (learned positions) and Llama with grouped-query heads
 *    (rotary), with the soft prompt prepended, in the middle of the template, with a
 *    per-request mix of prompts (and a request without one) in one batch, and behind a
 *    per-layer key/value prefix loaded as the cache's first rows; and for every other family
 *    (Qwen2, Qwen3's q/k norms, Gemma's scaled embeddings, Gemma 2's sandwich norms, soft-caps,
 *    query scale and window, Gemma 3's local rotary bases, Mistral's window), windows shorter
 *    than the sequences; the worker within its memory estimate;
 *  - sp_generator_run gives the same greedy ids, shares one prefix cache per prompt, stops on
 *    EOS, stop strings (spanning tokens) and the length limits, and its samples depend only on
 *    the seed and the request, not on the batch;
 *  - greedy ids equal an independent float64 reference (tests/ref/generate_reference.py: no
 *    cache, Hugging Face's math) for every family, three of them behind a key/value prefix,
 *    wherever the top-2 margin exceeds the float32 error;
 *  - sampling: transformers' repetition penalty, top-k and top-p semantics on small rows;
 *  - bad input is refused before anything is appended. */
#include <cblas.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model/kernels.h"
#include "softprompt/engine.h"
#include "softprompt/generate.h"
#include "softprompt/model_init.h"
#include "softprompt/rng.h"
#include "softprompt/safetensors.h"
#include "testutil.h"
#include "testutil_tok.h"

#define V_TINY 257 /* 256 byte tokens and <|endoftext|>: the tokenizer of tiny_tokenizer */
#define MAXT 64

static void load_vocab(sp_model *m, sp_arch a, uint64_t seed, int vocab) {
    sp_init_options o;
    sp_init_options_default(&o);
    o.cfg = (sp_model_config){.arch = a,
                              .n_layer = 2,
                              .d_model = 24,
                              .n_head = 4,
                              .d_ff = 40,
                              .vocab_size = vocab,
                              .n_ctx = 96,
                              .ln_eps = 1e-5f,
                              .tied = a == SP_ARCH_GPT2,
                              .rope_theta = 10000};
    if (a != SP_ARCH_GPT2 && a != SP_ARCH_OPT && a != SP_ARCH_GPT_NEOX && a != SP_ARCH_BLOOM)
        o.cfg.n_kv_head = 2, o.cfg.head_dim = 8; /* grouped-query heads */
    /* windows shorter than the sequences decoded (8 to 20 rows), caps the scores reach */
    if (a == SP_ARCH_MISTRAL) o.cfg.sliding_window = 6;
    if (a == SP_ARCH_GEMMA2 || a == SP_ARCH_GEMMA3) {
        o.cfg.sliding_window = 5, o.cfg.window_pattern = 2;
        o.cfg.attn_softcap = 2.0f, o.cfg.logit_softcap = 3.0f, o.cfg.query_scale = 0.3;
    }
    if (a == SP_ARCH_GEMMA3) o.cfg.rope_local_theta = 100;
    if (a == SP_ARCH_BERT) o.cfg.n_kv_head = 0, o.cfg.head_dim = 0, o.cfg.type_vocab_size = 2;
    o.cfg.qkv_bias = a == SP_ARCH_QWEN2; /* Qwen2 always has them */
    if (a == SP_ARCH_OPT) /* enable_bias, position 0 at row 2; an even seed: opt-350m's form */
        o.cfg.qkv_bias = o.cfg.o_bias = o.cfg.mlp_bias = 1, o.cfg.pos_offset = 2,
        o.cfg.post_norm = seed % 2 == 0, o.cfg.d_embed = seed % 2 == 0 ? 16 : 0;
    if (a == SP_ARCH_PHI) o.cfg.rotary_dim = 4;
    if (a == SP_ARCH_GPT_NEOX) /* Pythia's block */
        o.cfg.parallel_residual = o.cfg.gelu_exact = 1, o.cfg.rotary_dim = 2;
    if (a == SP_ARCH_BLOOM) /* 4 d, biases, residuals from the norms */
        o.cfg.d_ff = 96, o.cfg.qkv_bias = o.cfg.o_bias = o.cfg.mlp_bias = 1,
        o.cfg.residual_from_norm = 1;
    o.seed = seed, o.random_norms = 1, o.std = 0.3f;
    char name[32];
    snprintf(name, sizeof name, "%s-%llu", sp_arch_model_type(a), (unsigned long long)seed);
    char *dir = tu_path(tu_dir, name);
    sp_error err = {0};
    ck_assert_msg(sp_init_model_write(dir, &o, &err) == 0, "%s", err.msg);
    ck_assert_msg(sp_model_load(m, dir, &err) == 0, "%s", err.msg);
    free(dir);
}

static void load(sp_model *m, sp_arch a, uint64_t seed) {
    load_vocab(m, a, seed, V_TINY);
}

/* A request of the cache test: its tokens so far, its prompt and the shared cache it uses. */
typedef struct req {
    int32_t tok[MAXT];
    int n;
    const float *prompt;
    int n_prompt;
    sp_kv_cache *shared; /* NULL: none */
    int n_shared_tokens; /* its leading tokens held by shared (after the kv prefix rows) */
} req;

/* The logits at the last token of r computed without a cache: sp_engine_run over the whole
 * sequence (behind the kv prefix, when given). */
static void recompute(sp_worker *w, const req *r, const float *kv, int n_kv, float *out) {
    int32_t start[2] = {0, r->n}, pos = r->n - 1, id = 0;
    sp_batch b = {.n_seq = 1,
                  .seq_start = start,
                  .tokens = r->tok,
                  .n_targets = 1,
                  .target_pos = &pos,
                  .target_ids = &id};
    sp_pass p = {.prompt = r->prompt,
                 .n_prompt = r->n_prompt,
                 .target_logits = out,
                 .kv_prefix = kv,
                 .n_kv_prefix = n_kv};
    double loss;
    sp_error err = {0};
    ck_assert_msg(sp_engine_run(w, &b, &p, &loss, &err) == 0, "%s", err.msg);
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

/* Greedy decoding of B requests together for `steps` tokens through the cache; at every step
 * each request's logits are compared with the recomputation. The requests' shared caches are
 * already built; the generated ids are appended to r[b].tok. Returns the largest difference. */
static double decode_and_compare(const sp_model *m, req *r, int B, const float *kv, int n_kv,
                                 int steps) {
    int V = m->cfg.vocab_size;
    sp_worker *w = sp_worker_new(m), *ref = sp_worker_new(m);
    sp_gen_seq seq[8];
    sp_kv_cache *own[8];
    int32_t start[9] = {0}, packed[8 * MAXT];
    float *logits = malloc((size_t)B * V * sizeof *logits), *want = malloc(V * sizeof *want);
    for (int b = 0; b < B; b++) {
        int skip = r[b].shared ? r[b].n_shared_tokens : 0, pre = r[b].shared ? 0 : n_kv;
        own[b] = sp_kv_cache_new(m, pre + r[b].n - skip + steps);
        sp_error err = {0};
        if (pre) ck_assert_msg(sp_kv_cache_load_prefix(own[b], kv, n_kv, &err) == 0, "%s", err.msg);
        seq[b] = (sp_gen_seq){r[b].shared, own[b], r[b].prompt, r[b].n_prompt};
        memcpy(packed + start[b], r[b].tok + skip, (size_t)(r[b].n - skip) * sizeof(int32_t));
        start[b + 1] = start[b] + r[b].n - skip;
    }
    sp_error err = {0};
    ck_assert_msg(sp_generate_extend(w, seq, B, start, packed, logits, &err) == 0, "%s", err.msg);
    int rows = start[B], max_new = 0, max_past = 0; /* the prefill's sizes, for the estimate */
    for (int b = 0; b < B; b++) {
        int n = start[b + 1] - start[b], past = sp_kv_cache_len(own[b]) + steps;
        if (r[b].shared) past += sp_kv_cache_len(r[b].shared);
        max_new = n > max_new ? n : max_new, max_past = past > max_past ? past : max_past;
    }
    double worst = 0;
    for (int step = 0; step < steps; step++) {
        for (int b = 0; b < B; b++) {
            const float *got = logits + (size_t)b * V;
            recompute(ref, &r[b], kv, n_kv, want);
            double e = rel_diff(got, want, V);
            ck_assert_msg(e <= 1e-5, "request %d, step %d: cached logits differ by %g normwise", b,
                          step, e);
            worst = e > worst ? e : worst;
            int32_t id = argmax(got, V);
            ck_assert_int_eq(id, argmax(want, V));
            r[b].tok[r[b].n++] = id;
            packed[b] = id, start[b + 1] = b + 1;
        }
        if (step + 1 < steps)
            ck_assert_msg(sp_generate_extend(w, seq, B, start, packed, logits, &err) == 0, "%s",
                          err.msg);
    }
    /* the worker's buffers stay within the estimate the memory check uses */
    size_t est = sp_model_generate_bytes(m, (size_t)rows, (size_t)B, max_new, max_past);
    ck_assert_msg(sp_worker_bytes(w) <= est, "worker %zu bytes, estimate %zu", sp_worker_bytes(w),
                  est);
    for (int b = 0; b < B; b++) sp_kv_cache_free(own[b]);
    free(logits), free(want);
    sp_worker_free(w), sp_worker_free(ref);
    return worst;
}

/* A prompt's prefix cache: the kv prefix, then the n leading soft tokens of tokens. */
static sp_kv_cache *shared_cache(const sp_model *m, const float *prompt, int n_prompt,
                                 const int32_t *tokens, int n, const float *kv, int n_kv) {
    sp_kv_cache *c = sp_kv_cache_new(m, n_kv + n);
    sp_worker *w = sp_worker_new(m);
    sp_error err = {0};
    if (n_kv) ck_assert_msg(sp_kv_cache_load_prefix(c, kv, n_kv, &err) == 0, "%s", err.msg);
    sp_gen_seq q = {NULL, c, prompt, n_prompt};
    int32_t start[2] = {0, n};
    ck_assert_msg(sp_generate_extend(w, &q, 1, start, tokens, NULL, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(sp_kv_cache_len(c), n_kv + n);
    sp_worker_free(w);
    return c;
}

static void set_tokens(req *r, const int32_t *t, int n, const float *prompt, int n_prompt) {
    memset(r, 0, sizeof *r);
    memcpy(r->tok, t, (size_t)n * sizeof *t);
    r->n = n, r->prompt = prompt, r->n_prompt = n_prompt;
}

/* Soft tokens first (shared prefix cache) and in the middle (nothing shared), one request
 * each, then a batch of four: two requests of prompt A sharing one prefix cache, one of prompt
 * B, one without a prompt. */
static void check_arch_seed(sp_arch a, uint64_t seed) {
    sp_model m;
    load(&m, a, seed);
    int d = sp_config_embed_dim(&m.cfg); /* the prompt's width */
    float *pa = tu_random_rows(4 * (size_t)d, 11, 1.0f),
          *pb = tu_random_rows(3 * (size_t)d, 12, 1.0f);
    const int32_t first[] = {SP_SOFT(0), SP_SOFT(1), SP_SOFT(2), SP_SOFT(3), 72, 105, 33, 10};
    const int32_t middle[] = {72, 101, SP_SOFT(0), SP_SOFT(1), SP_SOFT(2), SP_SOFT(3), 32, 97};
    req r[4];
    set_tokens(&r[0], first, 8, pa, 4);
    r[0].shared = shared_cache(&m, pa, 4, first, 4, NULL, 0), r[0].n_shared_tokens = 4;
    decode_and_compare(&m, r, 1, NULL, 0, 12);
    sp_kv_cache_free(r[0].shared);
    set_tokens(&r[0], middle, 8, pa, 4);
    decode_and_compare(&m, r, 1, NULL, 0, 12);

    sp_kv_cache *ca = shared_cache(&m, pa, 4, first, 4, NULL, 0);
    const int32_t second[] = {SP_SOFT(0), SP_SOFT(1), SP_SOFT(2), SP_SOFT(3), 200, 3};
    const int32_t b_tok[] = {SP_SOFT(0), SP_SOFT(1), SP_SOFT(2), 50, 60, 70, 80, 90, 100};
    const int32_t plain[] = {1, 2, 3};
    set_tokens(&r[0], first, 8, pa, 4), r[0].shared = ca, r[0].n_shared_tokens = 4;
    set_tokens(&r[1], second, 6, pa, 4), r[1].shared = ca, r[1].n_shared_tokens = 4;
    set_tokens(&r[2], b_tok, 9, pb, 3);
    r[2].shared = shared_cache(&m, pb, 3, b_tok, 3, NULL, 0), r[2].n_shared_tokens = 3;
    set_tokens(&r[3], plain, 3, NULL, 0);
    double e = decode_and_compare(&m, r, 4, NULL, 0, 10);
    printf("%s: mixed batch, largest normwise difference %.2e\n", sp_arch_model_type(a), e);
    fflush(stdout);
    ck_assert_int_eq(sp_kv_cache_len(ca), 4); /* shared rows are never appended to */
    sp_kv_cache_free(ca), sp_kv_cache_free(r[2].shared);
    free(pa), free(pb);
    sp_model_free(&m);
}

static void check_arch(sp_arch a) {
    check_arch_seed(a, 7);
}

/* OPT in opt-350m's form: post-norm blocks, no final norm, 16-wide embeddings and prompts
 * through project_in, the head's input through project_out. */
START_TEST(cache_matches_recompute_opt350m) {
    check_arch_seed(SP_ARCH_OPT, 8);
}
END_TEST

START_TEST(cache_matches_recompute_gpt2) {
    check_arch(SP_ARCH_GPT2);
}
END_TEST

START_TEST(cache_matches_recompute_llama_gqa) {
    check_arch(SP_ARCH_LLAMA);
}
END_TEST

/* The families whose blocks differ from Llama's: per-head q/k norms (Qwen3); embeddings scaled
 * by sqrt(d), (1 + w) norms, GeGLU (Gemma); sandwich norms, soft-capped scores and logits, a
 * query scale and a window of 5 in every other layer (Gemma 2); Gemma 2's and q/k norms, local
 * rotary bases (Gemma 3); a window of 6 in every layer (Mistral); fused q/k/v and gate_up_proj's
 * halves (Phi-3); positions from the table's row 2 (OPT); parallel attention and MLP with
 * rotary over part of each head (GPT-NeoX, Phi-2); ALiBi, whose bias of a cached row must be
 * that of its position in the whole sequence, the embedding LayerNorm and the residuals from the
 * norms (BLOOM). The windows are shorter than the sequences, so rows leave them during decoding,
 * shared prompt rows included. */
START_TEST(cache_matches_recompute_every_family) {
    const sp_arch archs[] = {SP_ARCH_QWEN3,   SP_ARCH_GEMMA,    SP_ARCH_GEMMA2, SP_ARCH_GEMMA3,
                             SP_ARCH_MISTRAL, SP_ARCH_QWEN2,    SP_ARCH_PHI3,   SP_ARCH_OPT,
                             SP_ARCH_PHI,     SP_ARCH_GPT_NEOX, SP_ARCH_BLOOM};
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++) check_arch(archs[i]);
}
END_TEST

/* A per-layer key/value prefix as the first cache rows: in a shared prefix cache (with the
 * soft tokens after it) and in a request's own cache, against sp_engine_run with the prefix. */
START_TEST(kv_prefix_as_first_cache_rows) {
    sp_arch archs[] = {SP_ARCH_GPT2,   SP_ARCH_LLAMA,  SP_ARCH_QWEN3,
                       SP_ARCH_GEMMA2, SP_ARCH_GEMMA3, SP_ARCH_BLOOM};
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++) {
        sp_model m;
        load(&m, archs[i], 9);
        int d = m.cfg.d_model, kvd = sp_config_kv_heads(&m.cfg) * sp_config_head_dim(&m.cfg);
        int n_kv = 3;
        float *kv = tu_random_rows((size_t)m.cfg.n_layer * 2 * n_kv * kvd, 21, 1.0f);
        float *p = tu_random_rows(2 * (size_t)d, 22, 1.0f);
        const int32_t t[] = {SP_SOFT(0), SP_SOFT(1), 65, 66, 67};
        req r[2];
        set_tokens(&r[0], t, 5, p, 2);
        r[0].shared = shared_cache(&m, p, 2, t, 2, kv, n_kv), r[0].n_shared_tokens = 2;
        set_tokens(&r[1], t + 2, 3, p, 2); /* no shared rows: the prefix in its own cache */
        decode_and_compare(&m, r, 2, kv, n_kv, 8);
        /* the generator with the prefix as the prompt's first shared rows: the same ids (the
         * second request does not start with the soft tokens: the prefix in its own rows) */
        sp_gen_options o = {.max_new_tokens = 8, .eos_id = -1};
        sp_sampling_default(&o.sampling);
        sp_worker *w = sp_worker_new(&m);
        sp_error err = {0};
        sp_generator *g = sp_generator_new(w, &o, &err);
        ck_assert_int_eq(sp_generator_add_prompt(g, p, 2, kv, n_kv, &err), 0);
        sp_gen_request rq[2] = {{t, 5, 0, 0}, {t + 2, 3, 0, 1}};
        sp_gen_result out[2];
        ck_assert_msg(sp_generator_run(g, rq, 2, out, &err) == 0, "%s", err.msg);
        ck_assert_int_eq(sp_generator_shared_rows(g, 0), n_kv + 2);
        for (int k = 0; k < 2; k++) {
            ck_assert_int_eq(out[k].n_ids, 8);
            ck_assert_mem_eq(out[k].ids, r[k].tok + rq[k].n_tokens, 8 * sizeof(int32_t));
            sp_gen_result_free(&out[k]);
        }
        sp_generator_free(g);
        sp_worker_free(w);
        sp_kv_cache_free(r[0].shared);
        free(kv), free(p);
        sp_model_free(&m);
    }
}
END_TEST

/* ---- the generator ------------------------------------------------------------------------- */

/* A byte-level tokenizer of 257 tokens: the 256 bytes and <|endoftext|> (256), no merges. */
static sp_tokenizer *tiny_tokenizer(void) {
    char *dir = tu_path(tu_dir, "tok");
    ck_assert_int_eq(mkdir(dir, 0755), 0);
    static const char *const extra[] = {"<|endoftext|>", NULL};
    tu_tok_write_small_vocab(dir, -1, extra);
    tu_tok_write_str(dir, "merges.txt", "#version: 0.2\n");
    sp_tokenizer *t = tu_tok_load_ok(dir);
    free(dir);
    ck_assert_int_eq(sp_tokenizer_vocab_size(t), V_TINY);
    return t;
}

typedef struct gen_fixture {
    sp_model m;
    sp_tokenizer *tok;
    sp_worker *w;
    float *pa, *pb;
} gen_fixture;

static void gen_setup(gen_fixture *f, sp_arch a) {
    load(&f->m, a, 5);
    f->tok = tiny_tokenizer();
    f->w = sp_worker_new(&f->m);
    f->pa = tu_random_rows(4 * (size_t)f->m.cfg.d_model, 31, 1.0f);
    f->pb = tu_random_rows(2 * (size_t)f->m.cfg.d_model, 32, 1.0f);
}

static void gen_teardown(gen_fixture *f) {
    free(f->pa), free(f->pb);
    sp_worker_free(f->w);
    sp_tokenizer_free(f->tok);
    sp_model_free(&f->m);
}

static sp_gen_options greedy_options(const gen_fixture *f, int max_new) {
    sp_gen_options o = {.max_new_tokens = max_new, .eos_id = -1, .tok = f->tok};
    sp_sampling_default(&o.sampling);
    return o;
}

/* Runs the requests through a new generator with prompts A and B (indices 0 and 1). */
static void run_gen(gen_fixture *f, const sp_gen_options *o, const sp_gen_request *rq, int n,
                    sp_gen_result *out, int *shared_a) {
    sp_error err = {0};
    sp_generator *g = sp_generator_new(f->w, o, &err);
    ck_assert_msg(g, "%s", err.msg);
    ck_assert_int_eq(sp_generator_add_prompt(g, f->pa, 4, NULL, 0, &err), 0);
    ck_assert_int_eq(sp_generator_add_prompt(g, f->pb, 2, NULL, 0, &err), 1);
    ck_assert_msg(sp_generator_run(g, rq, n, out, &err) == 0, "%s", err.msg);
    if (shared_a) *shared_a = sp_generator_shared_rows(g, 0);
    sp_generator_free(g);
}

static const int32_t RA[] = {SP_SOFT(0), SP_SOFT(1), SP_SOFT(2), SP_SOFT(3), 'H', 'i'};
static const int32_t RA2[] = {SP_SOFT(0), SP_SOFT(1), SP_SOFT(2), SP_SOFT(3), 'O', 'k', '!'};
static const int32_t RB[] = {'a', SP_SOFT(0), SP_SOFT(1), 'b'};
static const int32_t RN[] = {'x', 'y'};

/* Greedy ids of the generator equal the cache test's driver (so the recomputation's), the
 * prompt A's prefix cache holds its 4 soft tokens, and finish reasons are "length". */
START_TEST(generator_greedy_matches_driver) {
    gen_fixture f;
    gen_setup(&f, SP_ARCH_LLAMA);
    sp_gen_request rq[4] = {{RA, 6, 0, 0}, {RA2, 7, 0, 1}, {RB, 4, 1, 2}, {RN, 2, -1, 3}};
    sp_gen_options o = greedy_options(&f, 9);
    sp_gen_result out[4];
    int shared;
    run_gen(&f, &o, rq, 4, out, &shared);
    ck_assert_int_eq(shared, 4);
    const float *prompts[3] = {f.pa, f.pb, NULL};
    int n_prompts[3] = {4, 2, 0};
    for (int i = 0; i < 4; i++) {
        req r;
        int p = rq[i].prompt < 0 ? 2 : rq[i].prompt;
        set_tokens(&r, rq[i].tokens, rq[i].n_tokens, prompts[p], n_prompts[p]);
        int n0 = r.n;
        decode_and_compare(&f.m, &r, 1, NULL, 0, 9);
        ck_assert_int_eq(out[i].n_ids, 9);
        ck_assert_int_eq(out[i].finish, SP_FINISH_LENGTH);
        for (int j = 0; j < 9; j++) ck_assert_int_eq(out[i].ids[j], r.tok[n0 + j]);
        sp_gen_result_free(&out[i]);
    }
    gen_teardown(&f);
}
END_TEST

/* EOS: with the first greedy token as EOS the request ends after it ("eos"), the text without
 * it. Stop strings: the text of the first greedy run, a stop string made of two bytes that
 * appear in it across two tokens, ends the request there ("stop"), the text cut before it. */
START_TEST(generator_eos_and_stop_strings) {
    gen_fixture f;
    gen_setup(&f, SP_ARCH_GPT2);
    sp_gen_request rq[1] = {{RA, 6, 0, 0}};
    sp_gen_options o = greedy_options(&f, 12);
    sp_gen_result free_run, out;
    run_gen(&f, &o, rq, 1, &free_run, NULL);
    o.eos_id = free_run.ids[0];
    run_gen(&f, &o, rq, 1, &out, NULL);
    ck_assert_int_eq(out.finish, SP_FINISH_EOS);
    ck_assert_int_eq(out.n_ids, 1);
    sp_gen_result_free(&out);

    o.eos_id = -1;
    /* every id < 256 is one byte: the stop string is bytes 3 and 4 of the free run */
    int k = 3;
    while (k < 11 && (free_run.ids[k] >= 256 || free_run.ids[k + 1] >= 256 ||
                      free_run.ids[k] == 0 || free_run.ids[k + 1] == 0))
        k++;
    ck_assert_int_lt(k, 11);
    char stop[3] = {(char)free_run.ids[k], (char)free_run.ids[k + 1], 0};
    const char *stops[2] = {"\x01never-in-text", stop};
    o.stop = stops, o.n_stop = 2;
    run_gen(&f, &o, rq, 1, &out, NULL);
    ck_assert_int_eq(out.finish, SP_FINISH_STOP);
    char *at = strstr(free_run.text, stop);
    ck_assert_ptr_nonnull(at);
    ck_assert_uint_eq(out.len, (size_t)(at - free_run.text));
    ck_assert_int_eq(memcmp(out.text, free_run.text, out.len), 0);
    ck_assert_ptr_null(strstr(out.text, stop));
    ck_assert_int_le(out.n_ids, k + 2);
    sp_gen_result_free(&out), sp_gen_result_free(&free_run);
    gen_teardown(&f);
}
END_TEST

/* Sampling with a seed: the same twice; a request's tokens do not depend on the batch it is in
 * (request 1 alone equals request 1 within a batch of three); another seed differs. */
START_TEST(generator_sampling_is_reproducible) {
    gen_fixture f;
    gen_setup(&f, SP_ARCH_GPT2);
    sp_gen_request rq[3] = {{RA, 6, 0, 0}, {RA2, 7, 0, 1}, {RB, 4, 1, 2}};
    sp_gen_options o = greedy_options(&f, 16);
    o.sampling.do_sample = 1, o.sampling.temperature = 1.5, o.sampling.top_k = 50;
    o.sampling.top_p = 0.95, o.seed = 1234;
    sp_gen_result a[3], b[3], alone, other;
    run_gen(&f, &o, rq, 3, a, NULL);
    run_gen(&f, &o, rq, 3, b, NULL);
    run_gen(&f, &o, &rq[1], 1, &alone, NULL);
    o.seed = 99;
    run_gen(&f, &o, &rq[1], 1, &other, NULL);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(a[i].n_ids, b[i].n_ids);
        ck_assert_int_eq(memcmp(a[i].ids, b[i].ids, (size_t)a[i].n_ids * 4), 0);
    }
    ck_assert_int_eq(alone.n_ids, a[1].n_ids);
    ck_assert_int_eq(memcmp(alone.ids, a[1].ids, (size_t)alone.n_ids * 4), 0);
    ck_assert_msg(memcmp(other.ids, a[1].ids, (size_t)other.n_ids * 4) != 0,
                  "another seed drew the same 16 tokens");
    for (int i = 0; i < 3; i++) sp_gen_result_free(&a[i]), sp_gen_result_free(&b[i]);
    sp_gen_result_free(&alone), sp_gen_result_free(&other);
    gen_teardown(&f);
}
END_TEST

/* ---- the float64 reference ----------------------------------------------------------------- */

/* A step's ids are compared while the reference's top-2 margin exceeds this: the engine's logits
 * agree with the float64 references within 1e-4 relative (test_reference.c) and are O(1-10)
 * here, so a float32 error of a logit difference stays far below 1e-3. */
#define REF_MARGIN 1e-3

/* Tensor name of the case's expected.safetensors, float32 of n values (checked). */
static float *case_tensor(const char *dir, const char *name, size_t n) {
    char *path = tu_path(dir, "expected.safetensors");
    sp_st_file f;
    sp_error err = {0};
    ck_assert_msg(sp_st_open(&f, path, &err) == 0, "%s", err.msg);
    const sp_st_tensor *t = sp_st_find(&f, name);
    ck_assert_msg(t && t->dtype == SP_DTYPE_F32 && t->nbytes == n * sizeof(float), "%s: %s", path,
                  name);
    float *p = malloc(n * sizeof *p);
    memcpy(p, t->data, n * sizeof *p);
    sp_st_close(&f);
    free(path);
    return p;
}

static float *case_prompt(const char *dir, int *n_prompt, int d) {
    char *path = tu_path(dir, "expected.safetensors");
    sp_st_file f;
    sp_error err = {0};
    ck_assert_msg(sp_st_open(&f, path, &err) == 0, "%s", err.msg);
    const sp_st_tensor *t = sp_st_find(&f, "prompt");
    ck_assert(t && t->dtype == SP_DTYPE_F32 && t->shape[1] == d);
    *n_prompt = (int)t->shape[0];
    sp_st_close(&f);
    free(path);
    return case_tensor(dir, "prompt", (size_t)*n_prompt * d);
}

START_TEST(greedy_matches_float64_reference) {
    static const char *const cases[] = {
        "l2_h2_d24_ninner40_f32",
        "llama_l2_h4_kv2_d32_bf16",
        "qwen2_l2_h4_kv2_d32_bias_tied_f16",
        "qwen3_l2_h4_kv2_d24_hd12_tied_f32",
        "gemma_l2_h4_kv1_d32_hd8_tied_bf16",
        "gemma2_l3_h4_kv2_d32_hd8_softcap_window5_tied_f32",
        "gemma3_l3_h4_kv2_d32_hd8_localrope_window5_tied_f32",
        "mistral_l2_h4_kv2_d32_window5_f32",
        "qwen3_l3_h2_kv1_d32_attnbias_kvprefix4_sharded3_bf16",
        "gemma2_l2_h2_kv1_d24_hd12_attnbias_kvprefix3_sharded2_bf16",
        "mistral_l2_h4_kv1_d24_window6_kvprefix3_tied_sharded2_bf16",
        "bloom_l2_h6_d48_tied_f32",
        "bloom_l3_h4_d32_normres_untied_kvprefix3_sharded2_bf16"};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char *dir = tu_path(SP_FIXTURES_DIR "/ref", cases[c]);
        tu_gen_ref ref;
        tu_gen_ref_load(&ref, dir);
        sp_model m;
        tu_model_load_ok(&m, dir);
        int P, n_kv = (int)json_integer_value(json_object_get(ref.root, "kv_prefix"));
        float *prompt = case_prompt(dir, &P, m.cfg.d_model), *kv = NULL;
        if (n_kv) /* every request behind the case's key/value prefix [L, 2, n_kv, kv_dim] */
            kv = case_tensor(dir, "kv_prefix",
                             (size_t)m.cfg.n_layer * 2 * n_kv * sp_config_kv_heads(&m.cfg) *
                                 sp_config_head_dim(&m.cfg));
        int n = ref.n, max_new = ref.max_new;
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
        for (int i = 0; i < n; i++) {
            compared += tu_gen_ref_compare(&ref, i, &out[i], REF_MARGIN, cases[c]);
            sp_gen_result_free(&out[i]);
        }
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

/* ---- sampling semantics -------------------------------------------------------------------- */

START_TEST(repetition_penalty_as_transformers) {
    float x[5] = {2.0f, -2.0f, 1.5f, -1.0f, 0.5f};
    const int32_t ctx[4] = {0, 1, 1, 4}; /* 1 twice: penalised once */
    sp_sampling s;
    sp_sampling_default(&s);
    s.repetition_penalty = 2.0;
    sp_rng r;
    sp_rng_seed(&r, 1);
    sp_error err = {0};
    ck_assert_int_eq(sp_sample_token(x, 5, &s, ctx, 4, &r, &err), 2);
    ck_assert(x[0] == 1.0f && x[1] == -4.0f && x[2] == 1.5f && x[3] == -1.0f && x[4] == 0.25f);
}
END_TEST

/* Frequencies of many draws: top-k 2 never draws beyond the two largest; top-p 0.6 over
 * probabilities (0.5, 0.3, 0.2) keeps two tokens (the mass before the third is 0.8 >= 0.6), top-p
 * 0.5 keeps one; plain sampling follows the softmax. */
START_TEST(top_k_top_p_as_transformers) {
    const float base[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
    struct {
        int top_k;
        double top_p;
        double want[3];
    } cases[] = {{0, 1.0, {0.5, 0.3, 0.2}},
                 {2, 1.0, {0.625, 0.375, 0}},
                 {0, 0.6, {0.625, 0.375, 0}},
                 {0, 0.5, {1, 0, 0}},
                 {1, 1.0, {1, 0, 0}}};
    sp_rng r;
    sp_rng_seed(&r, 3);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        sp_sampling s;
        sp_sampling_default(&s);
        s.do_sample = 1, s.top_k = cases[c].top_k, s.top_p = cases[c].top_p;
        int count[3] = {0};
        int n = 20000;
        for (int i = 0; i < n; i++) {
            float x[3] = {base[0], base[1], base[2]};
            sp_error err = {0};
            int32_t id = sp_sample_token(x, 3, &s, NULL, 0, &r, &err);
            ck_assert(id >= 0 && id < 3);
            count[id]++;
        }
        for (int j = 0; j < 3; j++)
            ck_assert_msg(fabs(count[j] / (double)n - cases[c].want[j]) < 0.015,
                          "case %zu token %d: %d of %d, expected p %.3f", c, j, count[j], n,
                          cases[c].want[j]);
    }
}
END_TEST

/* ---- refusals ------------------------------------------------------------------------------ */

START_TEST(extend_refuses_bad_input) {
    sp_model m;
    load(&m, SP_ARCH_GPT2, 3);
    sp_worker *w = sp_worker_new(&m);
    sp_kv_cache *c = sp_kv_cache_new(&m, 4), *c2 = sp_kv_cache_new(&m, 200);
    float *p = tu_random_rows(2 * (size_t)m.cfg.d_model, 1, 1.0f);
    sp_gen_seq q = {NULL, c, p, 2};
    sp_error err = {0};
    struct {
        int32_t tok[5];
        int n;
        const char *want;
    } bad[] = {{{SP_SOFT(2)}, 1, "soft token 2"},
               {{V_TINY}, 1, "id 257, expected < 257"},
               {{1, 2, 3, 4, 5}, 5, "the cache holds 4"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int32_t start[2] = {0, bad[i].n};
        ck_assert_int_eq(sp_generate_extend(w, &q, 1, start, bad[i].tok, NULL, &err), -1);
        ck_assert_msg(strstr(err.msg, bad[i].want), "%s", err.msg);
        ck_assert_int_eq(sp_kv_cache_len(c), 0);
    }
    int32_t many[100] = {0}, start[2] = {0, 97};
    sp_gen_seq q2 = {NULL, c2, NULL, 0};
    ck_assert_int_eq(sp_generate_extend(w, &q2, 1, start, many, NULL, &err), -1);
    ck_assert_msg(strstr(err.msg, "n_positions"), "%s", err.msg);
    sp_gen_seq twice[2] = {q2, q2};
    int32_t st2[3] = {0, 1, 2};
    ck_assert_int_eq(sp_generate_extend(w, twice, 2, st2, many, NULL, &err), -1);
    ck_assert_msg(strstr(err.msg, "share one own cache"), "%s", err.msg);
    ck_assert_int_eq(sp_kv_cache_len(c2), 0);
    free(p);
    sp_kv_cache_free(c), sp_kv_cache_free(c2);
    sp_worker_free(w);
    sp_model_free(&m);
}
END_TEST

/* A masked LM does not generate: refused by name, its cache untouched. */
START_TEST(extend_refuses_masked_lm) {
    sp_model m;
    load(&m, SP_ARCH_BERT, 4);
    sp_worker *w = sp_worker_new(&m);
    sp_kv_cache *c = sp_kv_cache_new(&m, 8);
    sp_gen_seq q = {NULL, c, NULL, 0};
    int32_t tok[2] = {1, 2}, start[2] = {0, 2};
    sp_error err = {0};
    ck_assert_int_eq(sp_generate_extend(w, &q, 1, start, tok, NULL, &err), -1);
    ck_assert_msg(strstr(err.msg, "generate: bert is a masked language model"), "%s", err.msg);
    ck_assert_int_eq(sp_kv_cache_len(c), 0);
    sp_kv_cache_free(c);
    sp_worker_free(w);
    sp_model_free(&m);
}
END_TEST

/* The memory estimate covers what a generator's worker allocates (its buffers at the batch's
 * prefill and decode sizes). */
START_TEST(worker_within_estimate) {
    gen_fixture f;
    gen_setup(&f, SP_ARCH_LLAMA);
    sp_gen_request rq[3] = {{RA, 6, 0, 0}, {RA2, 7, 0, 1}, {RB, 4, 1, 2}};
    sp_gen_options o = greedy_options(&f, 20);
    sp_gen_result out[3];
    run_gen(&f, &o, rq, 3, out, NULL);
    size_t est = sp_model_generate_bytes(&f.m, 3 * 7, 3, 7, 4 + 7 + 20);
    ck_assert_msg(sp_worker_bytes(f.w) <= est, "worker %zu bytes, estimate %zu",
                  sp_worker_bytes(f.w), est);
    for (int i = 0; i < 3; i++) sp_gen_result_free(&out[i]);
    gen_teardown(&f);
}
END_TEST

/* Decode steps of request 0 alone (on 1 thread) and beside another request (on 2 threads):
 * its prefill of at most SP_FEW_ROWS rows, then every step's logits bitwise the same. A step's
 * products compute each row's elements as one fixed sum whatever the rows beside it (a single
 * row included), and its attention over the caches is split over the threads without changing
 * any sum. */
static void decode_alone_and_beside(sp_arch a, int steps) {
    sp_model m;
    load_vocab(&m, a, 7, SP_FEW_NK_ROW_MIN); /* a head the one-row kernel serves */
    int V = m.cfg.vocab_size, d = sp_config_embed_dim(&m.cfg);
    float *p = tu_random_rows(2 * (size_t)d, 31, 1.0f);
    const int32_t t0[] = {SP_SOFT(0), SP_SOFT(1), 72, 105, 33, 10, 7, 9}, t1[] = {5, 6, 7, 8, 9};
    float *alone = malloc((size_t)(steps + 1) * V * sizeof *alone),
          *both = malloc(2 * (size_t)V * sizeof *both);
    ck_assert(alone && both);
    for (int B = 1; B <= 2; B++) { /* B = 1: request 0 alone; 2: beside request 1 */
        openblas_set_num_threads(B);
        sp_worker *w = sp_worker_new(&m);
        sp_kv_cache *own[2] = {sp_kv_cache_new(&m, 8 + steps), sp_kv_cache_new(&m, 5 + steps)};
        sp_gen_seq seq[2] = {{NULL, own[0], p, 2}, {NULL, own[1], NULL, 0}};
        int32_t start[3] = {0, 8, 13}, tok[13];
        memcpy(tok, t0, sizeof t0), memcpy(tok + 8, t1, sizeof t1);
        for (int step = 0; step <= steps; step++) {
            float *out = B == 1 ? alone + (size_t)step * V : both;
            sp_error err = {0};
            ck_assert_msg(sp_generate_extend(w, seq, B, start, tok, out, &err) == 0, "%s", err.msg);
            if (B == 2)
                ck_assert_msg(memcmp(both, alone + (size_t)step * V, (size_t)V * sizeof *both) == 0,
                              "%s, step %d: request 0's logits differ alone and beside another",
                              sp_arch_model_type(a), step);
            for (int b = 0; b < B; b++)
                tok[b] = argmax(out + (size_t)b * V, V), start[b + 1] = b + 1;
        }
        sp_kv_cache_free(own[0]), sp_kv_cache_free(own[1]);
        sp_worker_free(w);
    }
    openblas_set_num_threads(1);
    free(alone), free(both), free(p);
    sp_model_free(&m);
}

START_TEST(decode_step_independent_of_batch_and_threads) {
    if (!sp__gemm_few_ok(1)) {
        printf("  (no AVX-512 here: one row's products use sgemv, more rows' sgemm)\n");
        return;
    }
    /* [k, n] weights, the tied [n, k] head. Not Llama: one-row products of [n, k] weights below
     * SP_FEW_NK_ROW_MIN rows (its layers) are dot products along k, a different sum than 2..16
     * rows' */
    decode_alone_and_beside(SP_ARCH_GPT2, 6);
}
END_TEST

int main(void) {
    const TTest *tests[] = {cache_matches_recompute_gpt2,
                            cache_matches_recompute_llama_gqa,
                            cache_matches_recompute_every_family,
                            cache_matches_recompute_opt350m,
                            kv_prefix_as_first_cache_rows,
                            decode_step_independent_of_batch_and_threads,
                            generator_greedy_matches_driver,
                            generator_eos_and_stop_strings,
                            generator_sampling_is_reproducible,
                            greedy_matches_float64_reference,
                            repetition_penalty_as_transformers,
                            top_k_top_p_as_transformers,
                            extend_refuses_bad_input,
                            extend_refuses_masked_lm,
                            worker_within_estimate,
                            NULL};
    return tu_main("generator", tests, NULL, NULL);
}
