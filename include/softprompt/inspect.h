/* Reading a tuned prompt (`softprompt inspect`, Lester et al. 2021, section 7): for each soft
 * token its nearest vocabulary embeddings by cosine similarity, and its norm against the norms
 * of the model's input embedding table. */
#ifndef SOFTPROMPT_INSPECT_H
#define SOFTPROMPT_INSPECT_H

#include <stdint.h>

#include "softprompt/error.h"
#include "softprompt/model.h"

/* Norms of the rows of the input embedding table (wte / embed_tokens). Percentiles are NumPy's
 * default (linear interpolation between the sorted norms). */
typedef struct sp_norm_stats {
    double mean, std, min, max;
    double p1, p5, p25, p50, p75, p95, p99;
} sp_norm_stats;

typedef struct sp_prompt_view {
    int n_prompt, top;
    sp_norm_stats vocab;
    double *norm;      /* [n_prompt] each soft token's L2 norm */
    double *norm_rank; /* [n_prompt] percent of vocabulary norms below it (0..100) */
    int32_t *nearest;  /* [n_prompt, top] vocabulary ids, most similar first (ties: lower id) */
    double *cosine;    /* [n_prompt, top] their cosine similarity (0 for a zero vector) */
} sp_prompt_view;

/* prompt [n_prompt, d_model] against m's input embeddings; top in 1..vocab_size. */
int sp_prompt_inspect(const sp_model *m, const float *prompt, int n_prompt, int top,
                      sp_prompt_view *out, sp_error *err);
void sp_prompt_view_free(sp_prompt_view *v);

/* A key/value prefix (prefix tuning, P-tuning v2) read the same way. A layer-0 key or value
 * depends on the token and its position alone, so each prefix row j is compared with the
 * layer-0 key and value every vocabulary token produces at position j (sp_engine_first_kv):
 * the score of a token is the mean of the two cosines (keys and values apart, so neither's scale
 * decides), and a row captured from a token (`--init text`, `vocab`, ...) names that token with
 * score 1. Deeper layers' keys and values depend on the context: their norms are shown. */
typedef struct sp_prefix_view {
    int n_layer, n_prefix, kv_dim, top;
    /* norms of the vocabulary's layer-0 keys and values, every token at positions 0..n_prefix-1 */
    sp_norm_stats vocab_key, vocab_value;
    double *key_norm, *value_norm;     /* [n_layer, n_prefix] each row's L2 norms */
    double *key_rank, *value_rank;     /* [n_prefix] layer 0: percent of the vocabulary's below */
    int32_t *nearest;                  /* [n_prefix, top] best score first (ties: lower id) */
    double *score;                     /* [n_prefix, top] (key cosine + value cosine) / 2 */
    double *key_cosine, *value_cosine; /* [n_prefix, top] the two cosines */
} sp_prefix_view;

/* prefix [n_layer, 2, n_prefix, kv_dim] (sp_pass.kv_prefix's layout) of m; top in
 * 1..vocab_size. Runs the model's first layer over the vocabulary at position 0 (rotary, ALiBi:
 * the prefix's keys turned back) or over vocab_size x n_prefix positions (learned positions). */
int sp_prefix_inspect(const sp_model *m, const float *prefix, int n_layer, int n_prefix, int kv_dim,
                      int top, sp_prefix_view *out, sp_error *err);
void sp_prefix_view_free(sp_prefix_view *v);

#endif
