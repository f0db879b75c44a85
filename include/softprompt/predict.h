/* Using a tuned prompt: class predictions for classification examples (`softprompt predict`,
 * docs/inference.md "Predict", "Ensembles", "Bulk inference on Slurm").
 *
 * Each example is scored by the logits of the verbalizer's words at its target position, one
 * engine pass per prompt: with several prompts an example appears once per prompt in the same
 * micro-batch, each copy reading its own prompt (sp_pass.seq_prompts). From the logits: each
 * prompt's probabilities (a softmax over the C verbalizer logits, in double) and prediction (the
 * largest logit, the lowest class on a tie: what `eval` counts), and with several prompts the
 * ensemble: the mean of the prompts' probabilities and its argmax ("predicted"), and the
 * majority vote of the prompts' predictions ("vote"; a tie goes to the tied class with the
 * larger mean probability, then to the lower class).
 *
 * Output: one row per example, in input order, written in chunks to OUT.partial beside OUT;
 * after every chunk OUT.partial is synced and OUT.progress.json (chunks done, bytes, the
 * metrics' counts, a fingerprint of everything that decides the bytes) replaced atomically.
 * Ranks split each round of chunks (rank r computes chunk first + r); rank 0 gathers their
 * logits (an exact sum: every value comes from one rank) and writes in order. A run stopped by
 * SIGTERM / SIGUSR1 / SIGINT finishes its round and returns SP_EXIT_STOPPED; the same command
 * continues after the last completed chunk, and the output is byte for byte that of one
 * uninterrupted run: micro-batches are cut the same way within every chunk whatever the ranks.
 * At the end OUT.partial becomes OUT (fsync, rename, directory fsync) and the progress record
 * is removed. */
#ifndef SOFTPROMPT_PREDICT_H
#define SOFTPROMPT_PREDICT_H

#include <stdint.h>

#include "softprompt/dist.h"
#include "softprompt/error.h"
#include "softprompt/prepare.h"
#include "softprompt/team.h"

#define SP_PREDICT_MAX_PROMPTS 64
#define SP_PREDICT_DEFAULT_CHUNK 4096

typedef enum sp_predict_format {
    SP_PREDICT_JSONL = 0,
    SP_PREDICT_CSV,
    SP_PREDICT_TSV,
} sp_predict_format;

typedef struct sp_predict_options {
    int n_prompts;               /* 1 .. SP_PREDICT_MAX_PROMPTS */
    const float *const *prompts; /* [n_prompts], each [n_prompt, d] (NULL with n_prompt 0) */
    int n_prompt;                /* the examples' soft slots */
    /* Optional per-layer key/value prefixes (prefix tuning): prompt k runs behind kv_prefixes[k]
     * [L, 2, n_kv_prefix[k], kv_dim] (NULL or 0 rows: none); kv_prefixes NULL: no prompt has
     * one. With prefixes every micro-batch runs one engine call per prompt. */
    const float *const *kv_prefixes;
    const int *n_kv_prefix;
    int micro_batch; /* examples per engine call (each n_prompts sequences) */
    int64_t chunk;   /* examples per output chunk */
    sp_predict_format format;
    const char *out;               /* the output file */
    int force;                     /* replace an existing OUT; start over a foreign progress */
    const char *model_fingerprint; /* recorded in the progress fingerprint */
    int check; /* only check: the options, OUT, a progress record (read); nothing computed or
                  written; m->chunks and m->resumed_from say where a run would start */
} sp_predict_options;

/* Counts over the labelled examples for each predictor: the prompts, then (n_prompts > 1) the
 * ensemble's mean probability and its vote. */
typedef struct sp_predict_metrics {
    int n_predictors, n_classes;
    int64_t n_examples, n_labelled;
    int64_t chunks, resumed_from; /* chunks in all; chunks already done when this run began */
    int64_t *confusion;           /* [n_predictors, C, C]: rows the label, columns the prediction */
} sp_predict_metrics;

/* Runs on every rank (the same ex, options and prompts). Returns 0 when OUT is published,
 * SP_EXIT_STOPPED (75) when stopped by a signal after a completed chunk, -1 with err. OUT
 * existing is refused unless force; a progress record of another run (its fingerprint differs)
 * is refused unless force, which starts over. m (every rank) receives the counts of all
 * examples, those of resumed chunks included; free with sp_predict_metrics_free. */
int sp_predict(sp_team *team, const sp_examples *ex, const sp_predict_options *o, const sp_dist *d,
               sp_predict_metrics *m, sp_error *err);
void sp_predict_metrics_free(sp_predict_metrics *m);

/* From the counts of predictor k: accuracy; macro-F1 (the mean over classes that occur as a
 * label or a prediction of 2 TP / (2 TP + FP + FN)); the majority class (the most frequent
 * label, the lower class on a tie) and its accuracy, the baseline. NaN without labels. */
double sp_predict_accuracy(const sp_predict_metrics *m, int k);
double sp_predict_macro_f1(const sp_predict_metrics *m, int k);
int sp_predict_majority(const sp_predict_metrics *m, double *accuracy);

/* The scoring of one example from its logits [n_prompts, C] (what the rows hold):
 * probs [n_prompts, C], pred [n_prompts], mean [C] and the ensemble's predicted class and vote
 * (both pred[0] with one prompt). */
void sp_predict_score(const float *logits, int n_prompts, int C, double *probs, int *pred,
                      double *mean, int *predicted, int *vote);

#endif
