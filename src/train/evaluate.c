/* Evaluation of a prompt on a dataset: loss over all targets, and for classification datasets
 * accuracy from the verbalizer logits and a confusion matrix. Ranks split the examples into
 * contiguous shares and sum their counts. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "softprompt/train.h"

/* argmax over the verbalizer's logits of one target row [V]. */
static int predict_class(const float *logits, const int32_t *verbalizer, int n_classes) {
    int best = 0;
    for (int c = 1; c < n_classes; c++)
        if (logits[verbalizer[c]] > logits[verbalizer[best]]) best = c;
    return best;
}

typedef struct eval_state {
    sp_batch_data batch;
    float *logits;
    size_t cap_logits;
    int64_t *ids;
} eval_state;

static int eval_micro_batch(sp_team *team, sp_dataset *ds, eval_state *st, int64_t first, int n,
                            const sp_pass *tuned, double *counts, sp_error *err) {
    const sp_dataset_meta *meta = sp_dataset_get_meta(ds);
    for (int i = 0; i < n; i++) st->ids[i] = first + i;
    if (sp_dataset_read_batch(ds, st->ids, n, &st->batch, err)) return -1;
    if (tuned->n_prompt == 0 && sp_batch_data_strip_soft(&st->batch, err)) return -1;
    sp_batch b = sp_batch_data_view(&st->batch);
    int classify = meta->n_classes > 0;
    int V = sp_team_model(team)->cfg.vocab_size;
    size_t need = classify ? (size_t)b.n_targets * (size_t)V : 0; /* [n_targets, V] */
    if (need > st->cap_logits) {
        free(st->logits);
        st->logits = malloc(need * sizeof *st->logits);
        st->cap_logits = st->logits ? need : 0;
        if (!st->logits) return sp_fail(err, "out of memory for %d target logits", b.n_targets);
    }
    sp_pass pass = {.prompt = tuned->prompt,
                    .n_prompt = tuned->n_prompt,
                    .kv_prefix = tuned->kv_prefix,
                    .n_kv_prefix = tuned->n_kv_prefix,
                    .target_logits = classify ? st->logits : NULL};
    double loss;
    if (sp_team_run(team, &b, &pass, &loss, err)) return -1;
    /* NaN logits would still give an argmax (the first class): never score them */
    if (!isfinite(loss)) {
        char which[64];
        if (n > 1)
            snprintf(which, sizeof which, "examples %lld-%lld", (long long)first,
                     (long long)(first + n - 1));
        else
            snprintf(which, sizeof which, "example %lld", (long long)first);
        return sp_fail(err,
                       "the loss of %s is not finite (%g): the model or the prompt holds "
                       "non-finite values (softprompt info MODEL_DIR checks the weights)",
                       which, loss);
    }
    counts[0] += n, counts[1] += b.n_targets, counts[2] += loss;
    if (!classify) return 0;
    int K = meta->n_classes;
    for (int s = 0; s < b.n_seq; s++) {
        int j = st->batch.target_start[s]; /* classification: one target per example */
        int pred = predict_class(st->logits + (size_t)j * V, meta->verbalizer, K);
        int label = st->batch.labels[s];
        counts[3] += pred == label;
        counts[4 + label * K + pred] += 1;
    }
    return 0;
}

int sp_evaluate(sp_team *team, sp_dataset *ds, const sp_pass *tuned, int micro_batch,
                int64_t max_examples, const sp_dist *d, sp_eval_result *out, sp_error *err) {
    const sp_dataset_meta *meta = sp_dataset_get_meta(ds);
    int K = meta->task == SP_TASK_CLASSIFICATION ? meta->n_classes : 0;
    int64_t n = sp_dataset_n_examples(ds);
    if (max_examples > 0 && max_examples < n) n = max_examples;
    int64_t begin = n * d->rank / d->size, end = n * (d->rank + 1) / d->size;
    /* counts: examples, targets, loss sum, correct, confusion [K * K] — summed in one allreduce */
    size_t n_counts = 4 + (size_t)K * K;
    double *counts = calloc(n_counts, sizeof *counts);
    eval_state st = {.ids = malloc((size_t)micro_batch * sizeof(int64_t))};
    sp_batch_data_init(&st.batch);
    int rc = counts && st.ids ? 0 : sp_fail(err, "out of memory");
    for (int64_t i = begin; rc == 0 && i < end; i += micro_batch) {
        int nb = (int)(end - i < micro_batch ? end - i : micro_batch);
        rc = eval_micro_batch(team, ds, &st, i, nb, tuned, counts, err);
    }
    /* the rank is added by whoever reports the error (src/cli/ranks.c) */
    if (rc) sp_fail_prefix(err, "evaluating %s", sp_dataset_path(ds));
    /* Every rank reaches the reduction, so one failing rank cannot leave the others waiting on
     * it; the caller turns a failure into a job abort. */
    int failed = sp_dist_any(rc != 0);
    if (!failed) sp_dist_sum_double(counts, n_counts);
    memset(out, 0, sizeof *out);
    if (!failed) {
        out->n_examples = (int64_t)counts[0], out->n_targets = (int64_t)counts[1];
        out->loss_sum = counts[2], out->correct = (int64_t)counts[3], out->n_classes = K;
        out->confusion = calloc((size_t)K * K + 1, sizeof *out->confusion);
        for (size_t i = 0; i < (size_t)K * K; i++) out->confusion[i] = (int64_t)counts[4 + i];
    } else if (rc == 0) {
        rc = sp_fail(err, "evaluation failed on another rank");
    }
    sp_batch_data_free(&st.batch);
    free(st.logits), free(st.ids), free(counts);
    return rc;
}

void sp_eval_result_free(sp_eval_result *r) {
    free(r->confusion);
    memset(r, 0, sizeof *r);
}
