/* Generation with a tuned prompt: a key/value cache, prefill and decode (sp_generate_extend), a
 * prefix cache shared by the requests of one prompt, sampling, and a batch of requests run
 * together, each with its own prompt (sp_generator). docs/inference.md, "Generation" and "KV
 * cache and prefix cache", is the user's guide.
 *
 * The cache. Every layer's keys and values of the positions already computed are kept, so a new
 * position costs one row through every linear layer and attention over the cached rows, instead
 * of recomputing the sequence. A sequence's past has two parts: shared rows (read only, e.g. a
 * prompt's soft tokens, computed once and used by every request of that prompt) and its own rows
 * (its text and the tokens generated so far). A row's position is its index in that past, so
 * positions continue after the cached rows (learned positions: wpe[position]; rotary: the
 * angles of position), exactly as if the whole sequence were run at once by sp_engine_run.
 * A per-layer key/value prefix (prefix tuning, sp_pass.kv_prefix) is a cache's first rows: its
 * keys are used as given and the text's positions start after it, as in the engine. */
#ifndef SOFTPROMPT_GENERATE_H
#define SOFTPROMPT_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "softprompt/engine.h"
#include "softprompt/error.h"
#include "softprompt/model.h"
#include "softprompt/rng.h"
#include "softprompt/tokenizer.h"

/* ---- the key/value cache ------------------------------------------------------------------ */

typedef struct sp_kv_cache sp_kv_cache;

/* A cache of up to capacity rows of model m (every layer's keys and values:
 * sp_model_kv_cache_bytes(m, capacity) bytes). NULL when out of memory. */
sp_kv_cache *sp_kv_cache_new(const sp_model *m, int capacity);
void sp_kv_cache_free(sp_kv_cache *c);
int sp_kv_cache_len(const sp_kv_cache *c);
int sp_kv_cache_capacity(const sp_kv_cache *c);
/* Forgets every row (the memory is kept for the next sequence). */
void sp_kv_cache_clear(sp_kv_cache *c);
/* Copies a per-layer key/value prefix, laid out as sp_pass.kv_prefix [L, 2, n_rows, kv_dim], into
 * an empty cache as its first n_rows rows. -1 (err names what) when the cache is not empty or
 * too small. */
int sp_kv_cache_load_prefix(sp_kv_cache *c, const float *kv_prefix, int n_rows, sp_error *err);

/* Bytes of a cache of rows rows: L * 2 * rows * kv_dim * 4. */
size_t sp_model_kv_cache_bytes(const sp_model *m, size_t rows);
/* Bytes of the worker's buffers for one sp_generate_extend call of n_rows new rows with logits at
 * n_logits of them, the longest sequence max_new new rows behind at most max_past cached rows:
 * the engine's activation table (src/model/worker.c) for one layer, reused by every layer. */
size_t sp_model_generate_bytes(const sp_model *m, size_t n_rows, size_t n_logits, int max_new,
                               int max_past);

/* ---- prefill and decode ------------------------------------------------------------------- */

/* One sequence of a generation step. */
typedef struct sp_gen_seq {
    const sp_kv_cache *shared; /* rows before the sequence's own, read only (NULL: none) */
    sp_kv_cache *own;          /* the sequence's own rows; the new rows are appended to it */
    const float *prompt;       /* [n_prompt, d]: the embeddings of soft tokens SP_SOFT(k) */
    int n_prompt;
} sp_gen_seq;

/* Computes the new tokens of n_seq sequences, packed back to back (sequence s holds tokens
 * [seq_start[s], seq_start[s + 1]), vocabulary ids or SP_SOFT(k)), behind each one's cached
 * rows, appends their keys and values to each one's own cache and, when logits is not NULL,
 * writes the logits at each sequence's last new token to logits [n_seq, V]. Prefill is a call
 * with many tokens per sequence, decode one with one token each: every linear layer runs once
 * over all the new rows of the batch (one sgemm), attention per sequence over its cache. The
 * sequences may use different prompts and different shared rows. Validates first (ids, soft
 * indices, capacity, n_positions, the caches' model; an own cache used twice or as another's
 * shared rows): -1 with a message naming the sequence and position, nothing appended. */
int sp_generate_extend(sp_worker *w, const sp_gen_seq *seqs, int n_seq, const int32_t *seq_start,
                       const int32_t *tokens, float *logits, sp_error *err);

/* ---- sampling ----------------------------------------------------------------------------- */

/* Which token follows, from a row of logits: the repetition penalty over the context (the
 * request's vocabulary tokens and the tokens generated so far, each id once: positive logits
 * divided by it, negative ones multiplied), then, when sampling, temperature, top-k and top-p,
 * in that order (transformers' RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
 * TopKLogitsWarper, TopPLogitsWarper), and a draw from the softmax of what is left. Greedy
 * (do_sample 0) takes the first largest logit after the penalty. */
typedef struct sp_sampling {
    int do_sample;             /* 0: greedy */
    double temperature;        /* > 0; 1: none */
    int top_k;                 /* 0: none; else keep the logits >= the k-th largest */
    double top_p;              /* (0, 1]; 1: none; else keep the most likely tokens until their
                                  probability reaches top_p (at least one) */
    double repetition_penalty; /* > 0; 1: none */
} sp_sampling;

/* Greedy, no penalty. */
void sp_sampling_default(sp_sampling *s);
/* Checks the ranges above; -1 naming the field. */
int sp_sampling_check(const sp_sampling *s, sp_error *err);

/* The token chosen from logits [vocab] (processed in place) with rng for the draw. -1 with err
 * when out of memory or when no logit is finite. */
int32_t sp_sample_token(float *logits, int vocab, const sp_sampling *s, const int32_t *context,
                        size_t n_context, sp_rng *rng, sp_error *err);

/* ---- a batch of requests ------------------------------------------------------------------ */

typedef enum sp_finish {
    SP_FINISH_EOS,    /* the EOS token was generated */
    SP_FINISH_STOP,   /* a stop string appeared in the text */
    SP_FINISH_LENGTH, /* max_new_tokens, or the model's n_positions, was reached */
} sp_finish;
const char *sp_finish_name(sp_finish f); /* "eos", "stop", "length" */

typedef struct sp_gen_options {
    sp_sampling sampling;
    uint64_t seed;           /* request i draws from its own stream (seed, i): its output does
                                not depend on which requests share its batch */
    int max_new_tokens;      /* >= 1 */
    int32_t eos_id;          /* -1: none */
    const char *const *stop; /* [n_stop] stop strings (non-empty), matched on the decoded text */
    int n_stop;
    const sp_tokenizer *tok; /* decodes the generated tokens (the text, stop strings); NULL:
                                ids only (no text, no stop strings) */
    /* Optional: text of request `request` that is final (never taken back by a stop string),
     * as soon as it is known, for streaming. */
    void (*on_text)(void *ctx, int request, const char *text, size_t len);
    void *ctx;
} sp_gen_options;

typedef struct sp_gen_request {
    const int32_t *tokens; /* [n_tokens] the rendered template: ids and SP_SOFT(k) */
    int n_tokens;
    int prompt;     /* a prompt of the generator (sp_generator_add_prompt), -1: none */
    uint64_t index; /* the request's number: its random stream */
} sp_gen_request;

typedef struct sp_gen_result {
    int32_t *ids; /* [n_ids] generated tokens, the EOS or the token that completed a stop
                     string included */
    int n_ids;
    char *text; /* decoded without special tokens, cut before the stop string; NUL-terminated
                   (NULL without a tokenizer) */
    size_t len;
    sp_finish finish;
} sp_gen_result;
void sp_gen_result_free(sp_gen_result *r);

/* Runs batches of requests on one worker. Each prompt's prefix cache (its key/value prefix and
 * the soft tokens that start its requests) is computed once, the first time a request uses
 * it, and shared by every later request of that prompt, in this batch and the next ones. */
typedef struct sp_generator sp_generator;

/* o (and the strings it points to) must outlive g. NULL with err on bad options. */
sp_generator *sp_generator_new(sp_worker *w, const sp_gen_options *o, sp_error *err);
void sp_generator_free(sp_generator *g);
/* A prompt (embeddings [n_prompt, d], may be NULL with 0) and an optional per-layer key/value
 * prefix [L, 2, n_kv_prefix, kv_dim] (NULL with 0); both must outlive g. Returns its index, or
 * -1 when out of memory. */
int sp_generator_add_prompt(sp_generator *g, const float *prompt, int n_prompt,
                            const float *kv_prefix, int n_kv_prefix, sp_error *err);
/* Rows of the prefix cache of prompt p once built (0 before its first request). */
int sp_generator_shared_rows(const sp_generator *g, int p);
/* Generates for n requests at once (prefill together, then one decode step for all the
 * unfinished ones per token) and fills out [n] (free each with sp_gen_result_free; zeroed on
 * failure). -1 with err naming the request on bad input (a token out of range, a soft token
 * without a prompt, a request longer than n_positions). */
int sp_generator_run(sp_generator *g, const sp_gen_request *reqs, int n, sp_gen_result *out,
                     sp_error *err);

/* Memory of sp_generator_run for batches of up to batch requests of at most max_tokens tokens
 * each, max_new_tokens generated, with n_prompts prompts whose shared rows are at most
 * max_shared rows each: the model (its mapped bytes shared by local_ranks ranks), the worker's
 * buffers and every cache. Refused (-1, naming the figures and what to lower) when it exceeds
 * what this process may use (MemAvailable, the cgroup's limit, or SP_MAX_MEMORY), as train's
 * memory check does (src/train/memory_check.c). */
int sp_generate_check_memory(const sp_model *m, int batch, int max_tokens, int max_new_tokens,
                             int n_prompts, int max_shared, int local_ranks, sp_error *err);

#endif
