/* A batch of generation requests (softprompt/generate.h, sp_generator): prefix caches per
 * prompt, one prefill for the batch, then one decode step per token for the unfinished
 * requests, sampling, EOS, stop strings and the length limits. */
#include <stdlib.h>
#include <string.h>

#include "model/family.h"
#include "softprompt/generate.h"

const char *sp_finish_name(sp_finish f) {
    switch (f) {
    case SP_FINISH_EOS:
        return "eos";
    case SP_FINISH_STOP:
        return "stop";
    case SP_FINISH_LENGTH:
        return "length";
    }
    return "?";
}

void sp_gen_result_free(sp_gen_result *r) {
    if (!r) return;
    free(r->ids);
    free(r->text);
    memset(r, 0, sizeof *r);
}

/* A prompt and its prefix cache: the key/value prefix, then the soft tokens that start the
 * first request that used it (lead). */
typedef struct gen_prompt {
    const float *emb, *kv_prefix;
    int n_prompt, n_kv;
    int built;
    sp_kv_cache *shared; /* NULL until built, and when there is nothing to share */
    int32_t *lead;
    int n_lead;
} gen_prompt;

struct sp_generator {
    sp_worker *w;
    const sp_model *m;
    const sp_gen_options *o;
    size_t max_stop; /* longest stop string */
    int seq2seq;     /* an encoder-decoder (T5): a request's tokens are the encoder's input */
    gen_prompt *prompts;
    int n_prompts;
};

/* One request while it runs. */
typedef struct active {
    const sp_gen_request *req;
    const gen_prompt *p;
    int n_own;    /* its tokens that are not in the shared rows */
    int32_t *ctx; /* its vocabulary tokens, then the generated ones (repetition penalty) */
    size_t n_ctx;
    sp_rng rng;
    size_t shown;    /* bytes of text passed to on_text */
    size_t searched; /* bytes of text searched for stop strings */
    int done;
} active;

sp_generator *sp_generator_new(sp_worker *w, const sp_gen_options *o, sp_error *err) {
    if (sp_sampling_check(&o->sampling, err)) return NULL;
    if (o->max_new_tokens < 1) {
        sp_fail(err, "generate: max_new_tokens %d, expected >= 1", o->max_new_tokens);
        return NULL;
    }
    if (!o->tok && o->n_stop) {
        sp_fail(err, "generate: stop strings need a tokenizer to decode the text");
        return NULL;
    }
    sp_generator *g = calloc(1, sizeof *g);
    if (!g) {
        sp_fail(err, "out of memory");
        return NULL;
    }
    g->w = w, g->m = sp_worker_model(w), g->o = o;
    g->seq2seq = sp__family_of(g->m->cfg.arch)->mask == SP_MASK_SEQ2SEQ;
    for (int i = 0; i < o->n_stop; i++) {
        size_t n = strlen(o->stop[i]);
        if (n == 0) {
            sp_fail(err, "generate: stop string %d is empty", i + 1);
            free(g);
            return NULL;
        }
        g->max_stop = n > g->max_stop ? n : g->max_stop;
    }
    return g;
}

void sp_generator_free(sp_generator *g) {
    if (!g) return;
    for (int i = 0; i < g->n_prompts; i++) {
        sp_kv_cache_free(g->prompts[i].shared);
        free(g->prompts[i].lead);
    }
    free(g->prompts);
    free(g);
}

int sp_generator_add_prompt(sp_generator *g, const float *prompt, int n_prompt,
                            const float *kv_prefix, int n_kv_prefix, sp_error *err) {
    gen_prompt *p = realloc(g->prompts, ((size_t)g->n_prompts + 1) * sizeof *p);
    if (!p) return sp_fail(err, "out of memory");
    g->prompts = p;
    p[g->n_prompts] = (gen_prompt){.emb = prompt,
                                   .kv_prefix = kv_prefix,
                                   .n_prompt = prompt ? n_prompt : 0,
                                   .n_kv = kv_prefix ? n_kv_prefix : 0};
    return g->n_prompts++;
}

int sp_generator_shared_rows(const sp_generator *g, int p) {
    const gen_prompt *q = &g->prompts[p];
    return q->shared ? sp_kv_cache_len(q->shared) : 0;
}

/* ---- prefix caches ------------------------------------------------------------------------- */

/* The soft tokens that start tokens, leaving at least one token after them. */
static int leading_soft(const int32_t *tokens, int n) {
    int k = 0;
    while (k < n - 1 && SP_IS_SOFT(tokens[k])) k++;
    return k;
}

/* Builds p's prefix cache from the request r that uses it first: the key/value prefix, then
 * r's leading soft tokens (their keys and values depend on nothing else, so every request that
 * starts with the same ones can share them). An encoder-decoder shares only the key/value prefix
 * (its decoder's self-attention rows): its encoder is bidirectional, so every encoder row
 * depends on the whole input. */
static int build_shared(sp_generator *g, gen_prompt *p, const sp_gen_request *r, sp_error *err) {
    p->built = 1;
    int lead = g->seq2seq ? 0 : leading_soft(r->tokens, r->n_tokens);
    if (lead + p->n_kv == 0) return 0;
    p->lead = malloc((size_t)(lead > 0 ? lead : 1) * sizeof *p->lead);
    p->shared = sp_kv_cache_new(g->m, p->n_kv + lead);
    if (!p->lead || !p->shared) return sp_fail(err, "out of memory for a prompt's prefix cache");
    memcpy(p->lead, r->tokens, (size_t)lead * sizeof *p->lead);
    p->n_lead = lead;
    if (p->n_kv && sp_kv_cache_load_prefix(p->shared, p->kv_prefix, p->n_kv, err)) return -1;
    if (lead == 0) return 0;
    sp_gen_seq q = {NULL, p->shared, p->emb, p->n_prompt};
    int32_t start[2] = {0, lead};
    return sp_generate_extend(g->w, &q, 1, start, p->lead, NULL, err);
}

/* Whether request r can use p's shared rows: it starts with their soft tokens and has more. */
static int uses_shared(const gen_prompt *p, const sp_gen_request *r) {
    return p->shared && r->n_tokens > p->n_lead &&
           memcmp(r->tokens, p->lead, (size_t)p->n_lead * sizeof *p->lead) == 0;
}

/* ---- requests ------------------------------------------------------------------------------ */

static int check_request(const sp_generator *g, const sp_gen_request *r, int i, sp_error *err) {
    if (r->n_tokens < 1) return sp_fail(err, "request %d has no tokens", i);
    if (r->prompt < -1 || r->prompt >= g->n_prompts)
        return sp_fail(err, "request %d names prompt %d of %d", i, r->prompt, g->n_prompts);
    int n_kv = r->prompt >= 0 ? g->prompts[r->prompt].n_kv : 0;
    if (g->seq2seq && r->n_tokens > g->m->cfg.n_ctx)
        return sp_fail(err,
                       "request %d: %d tokens, more than the encoder's %d positions "
                       "(n_positions)",
                       i, r->n_tokens, g->m->cfg.n_ctx);
    if (g->seq2seq && n_kv >= g->m->cfg.n_ctx)
        return sp_fail(err,
                       "request %d: a key/value prefix of %d rows leaves no decoder position of "
                       "the model's %d (n_positions)",
                       i, n_kv, g->m->cfg.n_ctx);
    if (!g->seq2seq && n_kv + r->n_tokens > g->m->cfg.n_ctx)
        return sp_fail(err,
                       "request %d: %d tokens%s leave no room in the model's %d positions "
                       "(n_positions)",
                       i, r->n_tokens, n_kv ? " after the key/value prefix" : "", g->m->cfg.n_ctx);
    return 0;
}

/* Rows of the request's own cache: what it does not share, and what it generates (every
 * generated token but the last is fed back), within the model's positions. An encoder-decoder's:
 * its encoder rows (cross-attention) and one decoder row per generated token (the first is
 * decoder_start's), within the decoder's n_positions. */
static int own_rows(const sp_generator *g, const active *a, int shared_rows, int pre) {
    int n_ctx = g->m->cfg.n_ctx, max_new = g->o->max_new_tokens;
    if (g->seq2seq) /* the decoder's positions after its shared key/value prefix */
        return a->n_own + (max_new < n_ctx - shared_rows ? max_new : n_ctx - shared_rows);
    int room = n_ctx - shared_rows - pre - a->n_own, gen = max_new - 1;
    return pre + a->n_own + (gen < room ? gen : room);
}

/* The request's own cache, its random stream and its context (the repetition penalty's ids:
 * the request's vocabulary tokens; an encoder-decoder's, decoder_start, as transformers' generate()
 * passes the decoder's input ids to its logits processors). */
static int start_request(sp_generator *g, active *a, const sp_gen_request *r, sp_kv_cache **own,
                         sp_gen_seq *q, sp_error *err) {
    gen_prompt *p = r->prompt >= 0 ? &g->prompts[r->prompt] : NULL;
    if (p && !p->built && build_shared(g, p, r, err)) return -1;
    int shared = p && uses_shared(p, r);
    a->req = r, a->p = p;
    a->n_own = r->n_tokens - (shared ? p->n_lead : 0);
    int pre = p && !shared ? p->n_kv : 0; /* the prefix goes in its own rows */
    *own = sp_kv_cache_new(g->m, own_rows(g, a, shared ? sp_kv_cache_len(p->shared) : 0, pre));
    a->ctx = malloc(((size_t)r->n_tokens + (size_t)g->o->max_new_tokens) * sizeof *a->ctx);
    if (!*own || !a->ctx) return sp_fail(err, "out of memory for a request's cache");
    if (pre && sp_kv_cache_load_prefix(*own, p->kv_prefix, pre, err)) return -1;
    *q = (sp_gen_seq){shared ? p->shared : NULL, *own, p ? p->emb : NULL, p ? p->n_prompt : 0};
    if (g->seq2seq) a->ctx[a->n_ctx++] = g->m->cfg.decoder_start;
    for (int t = 0; t < r->n_tokens && !g->seq2seq; t++)
        if (!SP_IS_SOFT(r->tokens[t])) a->ctx[a->n_ctx++] = r->tokens[t];
    /* request i's stream: the seed and its index, mixed (splitmix64's constant) */
    sp_rng_seed(&a->rng, g->o->seed ^ ((r->index + 1) * 0x9E3779B97F4A7C15ull));
    return 0;
}

/* ---- text, stop strings, streaming --------------------------------------------------------- */

/* The first stop string in text at or after from: its offset, or -1. */
static long find_stop(const sp_gen_options *o, const char *text, size_t len, size_t from) {
    long best = -1;
    for (int i = 0; i < o->n_stop; i++) {
        size_t n = strlen(o->stop[i]);
        for (size_t at = from; at + n <= len && (best < 0 || (long)at < best); at++)
            if (memcmp(text + at, o->stop[i], n) == 0) {
                best = (long)at;
                break;
            }
    }
    return best;
}

/* Decodes the request's tokens into res->text, looks for a stop string in what is new, and
 * passes on the text no stop string can take back. Returns 1 when a stop string ended it. */
static int update_text(const sp_generator *g, active *a, sp_gen_result *res, int last,
                       sp_error *err) {
    const sp_gen_options *o = g->o;
    if (!o->tok) return 0; /* ids only */
    free(res->text);
    res->text = NULL;
    if (sp_tokenizer_decode(o->tok, res->ids, (size_t)res->n_ids, SP_TOK_SKIP_SPECIAL, &res->text,
                            &res->len, err))
        return -1;
    int stopped = 0;
    if (o->n_stop) {
        size_t from = a->searched + 1 > g->max_stop ? a->searched + 1 - g->max_stop : 0;
        long at = find_stop(o, res->text, res->len, from);
        a->searched = res->len;
        if (at >= 0) res->len = (size_t)at, res->text[at] = 0, stopped = 1;
    }
    /* a stop string may still end with the last max_stop - 1 bytes: they wait */
    size_t hold = g->max_stop > 0 ? g->max_stop - 1 : 0, final = res->len;
    if (!stopped && !last) final = res->len > hold ? res->len - hold : 0;
    if (o->on_text && final > a->shown) {
        o->on_text(o->ctx, (int)a->req->index, res->text + a->shown, final - a->shown);
        a->shown = final;
    }
    return stopped;
}

/* Takes token id for request a: EOS, a stop string or the length limits end it. */
static int accept(const sp_generator *g, active *a, sp_gen_result *res, int32_t id,
                  const sp_kv_cache *own, sp_error *err) {
    res->ids[res->n_ids++] = id;
    a->ctx[a->n_ctx++] = id;
    int eos = g->o->eos_id >= 0 && id == g->o->eos_id;
    int full =
        res->n_ids >= g->o->max_new_tokens || sp_kv_cache_len(own) >= sp_kv_cache_capacity(own);
    int stopped = update_text(g, a, res, eos || full, err);
    if (stopped < 0) return -1;
    if (eos || stopped || full) {
        res->finish = eos ? SP_FINISH_EOS : stopped ? SP_FINISH_STOP : SP_FINISH_LENGTH;
        a->done = 1;
    }
    return 0;
}

/* ---- a batch ------------------------------------------------------------------------------- */

typedef struct batch {
    active *act;
    sp_kv_cache **own;
    sp_gen_seq *seq, *step; /* every request's; the unfinished ones' of a decode step */
    int32_t *start, *tokens;
    float *logits;
    int *row; /* the request of each decode row */
} batch;

static void batch_free(batch *b, int n) {
    for (int i = 0; b->act && i < n; i++) free(b->act[i].ctx);
    for (int i = 0; b->own && i < n; i++) sp_kv_cache_free(b->own[i]);
    free(b->act), free(b->own), free(b->seq), free(b->step), free(b->start), free(b->tokens);
    free(b->logits), free(b->row);
}

static int batch_alloc(batch *b, int n, size_t n_tokens, int V) {
    memset(b, 0, sizeof *b);
    b->act = calloc((size_t)n, sizeof *b->act);
    b->own = calloc((size_t)n, sizeof *b->own);
    b->seq = calloc((size_t)n, sizeof *b->seq);
    b->step = calloc((size_t)n, sizeof *b->step);
    b->start = calloc((size_t)n + 1, sizeof *b->start);
    b->tokens = malloc((n_tokens > (size_t)n ? n_tokens : (size_t)n) * sizeof *b->tokens);
    b->logits = malloc((size_t)n * (size_t)V * sizeof *b->logits);
    b->row = calloc((size_t)n, sizeof *b->row);
    return b->act && b->own && b->seq && b->step && b->start && b->tokens && b->logits && b->row
               ? 0
               : -1;
}

/* Samples a token for each row of logits (rows[j]: its request) and accepts it. */
static int sample_rows(const sp_generator *g, batch *b, const int *rows, int n_rows,
                       sp_gen_result *out, sp_error *err) {
    int V = g->m->cfg.vocab_size;
    for (int j = 0; j < n_rows; j++) {
        active *a = &b->act[rows[j]];
        int32_t id = sp_sample_token(b->logits + (size_t)j * V, V, &g->o->sampling, a->ctx,
                                     a->n_ctx, &a->rng, err);
        if (id < 0 || accept(g, a, &out[rows[j]], id, b->own[rows[j]], err)) return -1;
    }
    return 0;
}

/* Prefill: every request's own tokens in one call, then its first token. */
static int prefill(sp_generator *g, batch *b, int n, sp_gen_result *out, sp_error *err) {
    for (int i = 0; i < n; i++) {
        const active *a = &b->act[i];
        int skip = a->req->n_tokens - a->n_own;
        memcpy(b->tokens + b->start[i], a->req->tokens + skip, (size_t)a->n_own * sizeof(int32_t));
        b->start[i + 1] = b->start[i] + a->n_own;
        b->row[i] = i;
    }
    if (sp_generate_extend(g->w, b->seq, n, b->start, b->tokens, b->logits, err)) return -1;
    return sample_rows(g, b, b->row, n, out, err);
}

/* Decode steps until every request is done. */
static int decode(sp_generator *g, batch *b, int n, sp_gen_result *out, sp_error *err) {
    for (;;) {
        int k = 0;
        for (int i = 0; i < n; i++) {
            if (b->act[i].done) continue;
            b->step[k] = b->seq[i], b->row[k] = i;
            b->tokens[k] = out[i].ids[out[i].n_ids - 1];
            b->start[k + 1] = k + 1;
            k++;
        }
        if (k == 0) return 0;
        b->start[0] = 0;
        if (sp_generate_extend(g->w, b->step, k, b->start, b->tokens, b->logits, err) ||
            sample_rows(g, b, b->row, k, out, err))
            return -1;
    }
}

int sp_generator_run(sp_generator *g, const sp_gen_request *reqs, int n, sp_gen_result *out,
                     sp_error *err) {
    memset(out, 0, (size_t)n * sizeof *out);
    size_t n_tokens = 0;
    for (int i = 0; i < n; i++) {
        if (check_request(g, &reqs[i], i, err)) return -1;
        n_tokens += (size_t)reqs[i].n_tokens;
    }
    batch b;
    int rc = batch_alloc(&b, n, n_tokens, g->m->cfg.vocab_size)
                 ? sp_fail(err, "out of memory for a batch of %d requests", n)
                 : 0;
    for (int i = 0; rc == 0 && i < n; i++) {
        out[i].ids = malloc((size_t)g->o->max_new_tokens * sizeof *out[i].ids);
        if (!out[i].ids) rc = sp_fail(err, "out of memory");
        if (rc == 0) rc = start_request(g, &b.act[i], &reqs[i], &b.own[i], &b.seq[i], err);
        if (rc) sp_fail_prefix(err, "request %d", i);
    }
    if (rc == 0) rc = prefill(g, &b, n, out, err);
    if (rc == 0) rc = decode(g, &b, n, out, err);
    batch_free(&b, n);
    if (rc)
        for (int i = 0; i < n; i++) sp_gen_result_free(&out[i]);
    return rc;
}
