/* Prompt initialisation (Lester et al. 2021, section 3; PEFT's PromptTuningInit). */
#include <stdlib.h>
#include <string.h>

#include "softprompt/checkpoint.h"
#include "softprompt/tokenizer.h"
#include "train/internal.h"

#define TOP_VOCAB 5000             /* Lester et al.: "the 5,000 most common tokens" */
#define FREQ_TOKEN_BUDGET 20000000 /* tokens counted for frequencies; enough for a stable top */

static void copy_embedding(float *dst, const sp_model *m, int32_t id) {
    sp_model_input_row(m, id, dst);
}

static int cmp_count_desc(const void *a, const void *b, void *counts) {
    const int64_t *c = counts;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (c[x] != c[y]) return c[x] < c[y] ? 1 : -1;
    return (x > y) - (x < y); /* ties by id: deterministic */
}

/* Ids of the most frequent vocabulary tokens of the training set (at most TOP_VOCAB, only
 * tokens that occur). */
static int top_tokens(sp_dataset *ds, int vocab, int32_t **out, int *n_out, sp_error *err) {
    int64_t *counts = calloc((size_t)vocab, sizeof *counts);
    int32_t *ids = malloc((size_t)vocab * sizeof *ids);
    int64_t batch_ids[256];
    sp_batch_data b;
    sp_batch_data_init(&b);
    int64_t n = sp_dataset_n_examples(ds), seen = 0;
    int rc = counts && ids ? 0 : sp_fail(err, "out of memory counting token frequencies");
    for (int64_t i = 0; rc == 0 && i < n && seen < FREQ_TOKEN_BUDGET; i += 256) {
        int nb = (int)(n - i < 256 ? n - i : 256);
        for (int k = 0; k < nb; k++) batch_ids[k] = i + k;
        rc = sp_dataset_read_batch(ds, batch_ids, nb, &b, err);
        for (int t = 0; rc == 0 && t < b.seq_start[b.n_seq]; t++, seen++)
            if (!SP_IS_SOFT(b.tokens[t]) && b.tokens[t] < vocab) counts[b.tokens[t]]++;
    }
    int n_present = 0;
    for (int v = 0; rc == 0 && v < vocab; v++)
        if (counts[v] > 0) ids[n_present++] = v;
    if (rc == 0) qsort_r(ids, (size_t)n_present, sizeof *ids, cmp_count_desc, counts);
    if (rc == 0 && n_present == 0) rc = sp_fail(err, "the training set has no vocabulary tokens");
    sp_batch_data_free(&b);
    free(counts);
    if (rc) return free(ids), -1;
    *out = ids, *n_out = n_present < TOP_VOCAB ? n_present : TOP_VOCAB;
    return 0;
}

static int init_sampled(int32_t *ids, int from, int n_prompt, const sp_model *m, int top_only,
                        sp_dataset *train, sp_rng *rng, sp_error *err) {
    int V = m->cfg.vocab_size;
    int32_t *top = NULL;
    int n_top = V;
    if (top_only && top_tokens(train, V, &top, &n_top, err)) return -1;
    for (int k = from; k < n_prompt; k++) {
        int pick = (int)sp_rng_below(rng, (uint64_t)n_top);
        ids[k] = top ? top[pick] : pick;
    }
    free(top);
    return 0;
}

static int init_text(int32_t *out, int n_prompt, const sp_model *m, const sp_train_config *c,
                     sp_error *err) {
    if (!c->init_arg || !*c->init_arg) return sp_fail(err, "--init text needs --init-text TEXT");
    const char *dir = c->tokenizer_dir ? c->tokenizer_dir : c->model_dir;
    sp_tokenizer *tok = sp_tokenizer_load(dir, err);
    if (!tok) return sp_fail_prefix(err, "--init text: loading the tokenizer");
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = sp_tokenizer_encode(tok, c->init_arg, strlen(c->init_arg), 0, &ids, &n, err);
    if (rc == 0 && n == 0) rc = sp_fail(err, "--init-text encodes to no tokens");
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (ids[i] >= m->cfg.vocab_size)
            rc = sp_fail(err,
                         "--init-text: token id %d is outside the model's vocabulary (%d): "
                         "tokenizer and model do not match",
                         ids[i], m->cfg.vocab_size);
    /* PEFT: repeat the text's tokens until P, then truncate. */
    for (int k = 0; rc == 0 && k < n_prompt; k++) out[k] = ids[(size_t)k % n];
    free(ids);
    sp_tokenizer_free(tok);
    return rc;
}

static int init_labels(int32_t *ids, int n_prompt, const sp_model *m, sp_dataset *train,
                       sp_rng *rng, sp_error *err) {
    const sp_dataset_meta *meta = sp_dataset_get_meta(train);
    if (meta->task != SP_TASK_CLASSIFICATION)
        return sp_fail(err, "--init labels needs a classification dataset (%s is %s)",
                       sp_dataset_path(train), sp_task_name(meta->task));
    int n = meta->n_classes < n_prompt ? meta->n_classes : n_prompt;
    for (int k = 0; k < n; k++) ids[k] = meta->verbalizer[k];
    return init_sampled(ids, n, n_prompt, m, 1, train, rng, err);
}

static int init_file(float *prompt, int n_prompt, const sp_model *m, const char *path,
                     sp_error *err) {
    sp_prompt_file pf;
    if (sp_prompt_load(path, &pf, err)) return sp_fail_prefix(err, "--init");
    int d = sp_config_embed_dim(&m->cfg), rc = 0;
    if (pf.n_prompt == 0)
        rc = sp_fail(err,
                     "--init %s holds a key/value prefix and no prompt (input soft tokens): "
                     "this run trains a prompt of [%d, %d]",
                     path, n_prompt, d);
    else if (pf.n_prompt != n_prompt || pf.d != d)
        rc = sp_fail(err,
                     "--init %s: prompt has shape [%d, %d], this run needs [%d, %d] (the "
                     "dataset's soft slots x the model's embedding width)",
                     path, pf.n_prompt, pf.d, n_prompt, d);
    else
        memcpy(prompt, pf.prompt, (size_t)n_prompt * d * sizeof *prompt);
    sp_prompt_file_free(&pf);
    return rc;
}

int sp__init_token_ids(int32_t *ids, int n, const sp_model *m, const sp_train_config *c,
                       sp_dataset *train, sp_rng *rng, sp_error *err) {
    switch (c->init) {
    case SP_INIT_VOCAB:
        return init_sampled(ids, 0, n, m, 0, train, rng, err);
    case SP_INIT_VOCAB_TOP:
        return init_sampled(ids, 0, n, m, 1, train, rng, err);
    case SP_INIT_TEXT:
        return init_text(ids, n, m, c, err);
    case SP_INIT_LABELS:
        return init_labels(ids, n, m, train, rng, err);
    case SP_INIT_RANDOM:
    case SP_INIT_FILE:
        break;
    }
    return sp_fail(err, "--init %s draws no tokens", sp_init_kind_name(c->init));
}

int sp__prompt_init(float *prompt, int n_prompt, const sp_model *m, const sp_train_config *c,
                    sp_dataset *train, sp_rng *rng, sp_error *err) {
    if (c->init == SP_INIT_RANDOM) {
        for (size_t i = 0; i < (size_t)n_prompt * sp_config_embed_dim(&m->cfg); i++)
            prompt[i] = (float)(sp_rng_uniform(rng) - 0.5);
        return 0;
    }
    if (c->init == SP_INIT_FILE) return init_file(prompt, n_prompt, m, c->init_arg, err);
    int32_t *ids = malloc((size_t)n_prompt * sizeof *ids);
    if (!ids) return sp_fail(err, "out of memory");
    int rc = sp__init_token_ids(ids, n_prompt, m, c, train, rng, err);
    for (int k = 0; rc == 0 && k < n_prompt; k++)
        copy_embedding(prompt + (size_t)k * sp_config_embed_dim(&m->cfg), m, ids[k]);
    free(ids);
    return rc;
}
