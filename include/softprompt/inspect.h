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

#endif
