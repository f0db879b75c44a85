/* The key/value cache and one step of generation (softprompt/generate.h): sp_generate_extend
 * validates a step, sizes the worker and runs the engine's own forward behind the caches
 * (sp__engine_extend, engine.c): the embedding, every block and the head of sp_engine_run, with
 * each sequence's new rows attending to its cached rows and appending their keys and values. In
 * the top layer, after attention, only each sequence's last row goes on (none when no logits are
 * asked for). Every layer reuses the same buffers (the activation table for one layer,
 * worker.c); nothing is kept for a backward pass. */
#include <stdlib.h>
#include <string.h>

#include "model/kernels.h"
#include "model/steps.h"
#include "model/t5.h"
#include "model/worker.h"
#include "softprompt/generate.h"

sp_kv_cache *sp_kv_cache_new(const sp_model *m, int capacity) {
    if (capacity < 0) return NULL;
    sp_kv_cache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    const sp_model_config *cfg = &m->cfg;
    c->m = m, c->cap = capacity, c->n_layer = cfg->n_layer;
    c->width = sp_config_kv_heads(cfg) * sp_config_head_dim(cfg);
    size_t rows = (size_t)capacity * (size_t)c->width;
    c->mem = malloc(sp_model_kv_cache_bytes(m, (size_t)capacity) + sizeof(float));
    c->layer = calloc((size_t)c->n_layer, sizeof *c->layer);
    if (!c->mem || !c->layer) {
        sp_kv_cache_free(c);
        return NULL;
    }
    for (int l = 0; l < c->n_layer; l++)
        c->layer[l] = (sp__kv_cache){c->mem + 2 * (size_t)l * rows,
                                     c->mem + (2 * (size_t)l + 1) * rows, 0, capacity, c->width};
    return c;
}

void sp_kv_cache_free(sp_kv_cache *c) {
    if (!c) return;
    free(c->mem);
    free(c->layer);
    free(c);
}

int sp_kv_cache_len(const sp_kv_cache *c) {
    return c->n_layer > 0 ? c->layer[0].len : 0;
}

int sp_kv_cache_capacity(const sp_kv_cache *c) {
    return c->cap;
}

void sp_kv_cache_clear(sp_kv_cache *c) {
    for (int l = 0; l < c->n_layer; l++) c->layer[l].len = 0;
    c->enc = 0;
}

int sp_kv_cache_load_prefix(sp_kv_cache *c, const float *kv_prefix, int n_rows, sp_error *err) {
    if (sp_kv_cache_len(c) != 0)
        return sp_fail(err, "key/value prefix: the cache already holds %d rows",
                       sp_kv_cache_len(c));
    if (n_rows < 0 || n_rows > c->cap)
        return sp_fail(err, "key/value prefix: %d rows, the cache has room for %d", n_rows, c->cap);
    size_t per = (size_t)n_rows * (size_t)c->width;
    for (int l = 0; l < c->n_layer; l++) {
        const float *k = kv_prefix + 2 * (size_t)l * per;
        sp__kv_past rows = {k, k + per, n_rows, c->width};
        sp__kv_append(&c->layer[l], &rows); /* fits: checked above */
    }
    return 0;
}

/* ---- validation ---------------------------------------------------------------------------- */

static int shared_len(const sp_gen_seq *q) {
    return q->shared ? sp_kv_cache_len(q->shared) : 0;
}

/* The caches of sequence s: made for m, an own cache, not used twice in the call. */
static int check_caches(const sp_model *m, const sp_gen_seq *seqs, int s, sp_error *err) {
    const sp_gen_seq *q = &seqs[s];
    if (!q->own) return sp_fail(err, "generate: sequence %d has no cache of its own", s);
    if (q->own->m != m || (q->shared && q->shared->m != m))
        return sp_fail(err, "generate: sequence %d: a cache made for another model", s);
    for (int r = 0; r < s; r++)
        if (seqs[r].own == q->own)
            return sp_fail(err, "generate: sequences %d and %d share one own cache", r, s);
    for (int r = 0; r < s; r++)
        if (seqs[r].shared == (const sp_kv_cache *)q->own || q->shared == seqs[r].own)
            return sp_fail(err,
                           "generate: sequences %d and %d: one's own cache is the other's "
                           "shared rows",
                           r, s);
    return 0;
}

static int check_tokens(const sp_model *m, const sp_gen_seq *q, int s, const int32_t *tok, int len,
                        sp_error *err) {
    for (int t = 0; t < len; t++) {
        int32_t id = tok[t];
        if (SP_IS_SOFT(id) ? SP_SOFT_INDEX(id) < q->n_prompt && q->prompt : id < m->cfg.vocab_size)
            continue;
        if (SP_IS_SOFT(id))
            return sp_fail(err, "generate: sequence %d, new token %d is soft token %d, but %s", s,
                           t, SP_SOFT_INDEX(id),
                           q->prompt ? "the prompt has fewer rows" : "it has no prompt");
        return sp_fail(err, "generate: sequence %d, new token %d is id %d, expected < %d", s, t, id,
                       m->cfg.vocab_size);
    }
    return 0;
}

/* Whether the family generates: a masked LM's attention is bidirectional, so a position's keys
 * change with every later token and there is no next-token distribution to sample from. */
static int check_generates(const sp_model *m, sp_error *err) {
    switch (sp__family_of(m->cfg.arch)->mask) {
    case SP_MASK_CAUSAL:
    case SP_MASK_SEQ2SEQ:
        return 0;
    case SP_MASK_FULL:
        return sp_fail(err,
                       "generate: %s is a masked language model (bidirectional attention), not a "
                       "causal one: it scores a {mask} position and does not generate text",
                       sp_arch_model_type(m->cfg.arch));
    }
    return 0;
}

/* A causal LM's sequence: its new tokens fit its cache and the model's positions. */
static int check_causal(const sp_model *m, const sp_gen_seq *q, int s, const int32_t *tok, int len,
                        sp_error *err) {
    int own = sp_kv_cache_len(q->own), past = shared_len(q) + own;
    if (len > q->own->cap - own)
        return sp_fail(err, "generate: sequence %d: %d new rows after %d, the cache holds %d", s,
                       len, own, q->own->cap);
    if (len > m->cfg.n_ctx - past)
        return sp_fail(err,
                       "generate: sequence %d: %d new tokens after %d positions exceed the "
                       "model's %d (n_positions)",
                       s, len, past, m->cfg.n_ctx);
    return check_tokens(m, q, s, tok, len, err);
}

/* An encoder-decoder's sequence (t5.h): with an empty cache its tokens are the encoder's input
 * (at most n_positions; the cache must hold them and the decoder's first row); otherwise they
 * are the decoder's next inputs (vocabulary ids, up to n_positions decoder positions). */
static int check_seq2seq(const sp_model *m, const sp_gen_seq *q, int s, const int32_t *tok, int len,
                         sp_error *err) {
    const char *type = sp_arch_model_type(m->cfg.arch);
    int own = sp_kv_cache_len(q->own), n_ctx = m->cfg.n_ctx, pre = shared_len(q);
    if (q->shared && q->shared->enc != 0)
        return sp_fail(err,
                       "generate: sequence %d: %s shares no encoder rows (its encoder is "
                       "bidirectional: every encoder row depends on the whole input); shared "
                       "rows are a key/value prefix of the decoder's self-attention",
                       s, type);
    if (own == 0) {
        if (len > n_ctx)
            return sp_fail(err,
                           "generate: sequence %d: an encoder input of %d tokens, more than the "
                           "encoder's n_positions = %d",
                           s, len, n_ctx);
        if (len + 1 > q->own->cap)
            return sp_fail(err,
                           "generate: sequence %d: %d encoder rows and the decoder's first row, "
                           "the cache holds %d",
                           s, len, q->own->cap);
        return check_tokens(m, q, s, tok, len, err);
    }
    int dec = own - q->own->enc;
    if (len > q->own->cap - own)
        return sp_fail(err, "generate: sequence %d: %d new rows after %d, the cache holds %d", s,
                       len, own, q->own->cap);
    if (len > n_ctx - dec - pre)
        return sp_fail(err,
                       "generate: sequence %d: %d new decoder tokens after %d decoder positions "
                       "exceed the decoder's n_positions = %d%s",
                       s, len, dec, n_ctx, pre ? " less the key/value prefix's rows" : "");
    for (int t = 0; t < len; t++)
        if (SP_IS_SOFT(tok[t]))
            return sp_fail(err,
                           "generate: sequence %d, new token %d is a soft token in the decoder's "
                           "input: %s takes soft tokens in the encoder's input",
                           s, t, type);
    return check_tokens(m, q, s, tok, len, err);
}

static int validate(const sp_model *m, const sp_gen_seq *seqs, int n_seq, const int32_t *start,
                    const int32_t *tokens, sp_error *err) {
    if (check_generates(m, err)) return -1;
    if (n_seq < 0 || (n_seq > 0 && start[0] != 0))
        return sp_fail(err, "generate: %d sequences starting at %d", n_seq,
                       n_seq > 0 ? start[0] : 0);
    int seq2seq = sp__family_of(m->cfg.arch)->mask == SP_MASK_SEQ2SEQ;
    for (int s = 0; s < n_seq; s++) {
        int len = start[s + 1] - start[s];
        if (len < 1) return sp_fail(err, "generate: sequence %d has %d new tokens", s, len);
        if (check_caches(m, seqs, s, err)) return -1;
        if ((seq2seq ? check_seq2seq : check_causal)(m, &seqs[s], s, tokens + start[s], len, err))
            return -1;
    }
    return 0;
}

/* ---- one step ------------------------------------------------------------------------------ */

int sp_generate_extend(sp_worker *w, const sp_gen_seq *seqs, int n_seq, const int32_t *seq_start,
                       const int32_t *tokens, float *logits, sp_error *err) {
    const sp_model *m = w->m;
    if (validate(m, seqs, n_seq, seq_start, tokens, err)) return -1;
    if (n_seq == 0) return 0;
    if (sp__family_of(m->cfg.arch)->mask == SP_MASK_SEQ2SEQ) {
        sp__linear_single_row_gemv(1);
        int rc = sp__t5_extend(w, seqs, n_seq, seq_start, tokens, logits);
        sp__linear_single_row_gemv(0);
        return rc ? sp_fail(err, "out of memory reserving activations for %d new tokens",
                            seq_start[n_seq])
                  : 0;
    }
    int max_new = 0, max_past = 0;
    for (int s = 0; s < n_seq; s++) {
        int len = seq_start[s + 1] - seq_start[s];
        int past = shared_len(&seqs[s]) + sp_kv_cache_len(seqs[s].own);
        max_new = len > max_new ? len : max_new;
        max_past = past > max_past ? past : max_past;
    }
    size_t N = (size_t)seq_start[n_seq], n_logits = logits ? (size_t)n_seq : 0;
    int32_t *last = malloc((size_t)n_seq * sizeof *last); /* the rows whose logits are wanted */
    if (!last || sp__worker_reserve_generate(w, N, n_logits, max_new, max_past)) {
        free(last);
        return sp_fail(err, "out of memory reserving activations for %zu new tokens", N);
    }
    for (int s = 0; s < n_seq; s++) last[s] = seq_start[s + 1] - 1;
    sp_batch b = {.n_seq = n_seq,
                  .seq_start = seq_start,
                  .tokens = tokens,
                  .n_targets = (int)n_logits,
                  .target_pos = last};
    sp__linear_single_row_gemv(1); /* a decode step of one request */
    sp__engine_extend(w, &b, seqs, logits);
    sp__linear_single_row_gemv(0);
    free(last);
    return 0;
}
