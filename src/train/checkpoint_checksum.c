/* The checkpoint checksum: a 64-bit hash (train/hash64.h) of the canonical serialization of
 * every field but the checksum itself (docs/formats-checkpoints.md). Writing stores it; reading
 * recomputes and compares it. */
#include <stdio.h>
#include <string.h>

#include "train/checkpoint_internal.h"
#include "train/hash64.h"

const char *sp__ckpt_created_by(const sp_checkpoint *c) {
    return c->created_by && c->created_by[0] ? c->created_by : "softprompt";
}

/* Optimizer array indices in strcmp order of their names. */
static void optim_order(const sp_checkpoint *c, int order[SP_CHECKPOINT_MAX_OPTIM]) {
    for (int i = 0; i < c->n_optim; i++) order[i] = i;
    for (int i = 1; i < c->n_optim; i++)
        for (int j = i; j > 0 && strcmp(c->optim[order[j - 1]].name, c->optim[order[j]].name) > 0;
             j--) {
            int t = order[j];
            order[j] = order[j - 1], order[j - 1] = t;
        }
}

static void tensor_order(const sp_checkpoint *c, int order[SP_CHECKPOINT_MAX_TENSORS]) {
    for (int i = 0; i < c->n_tensors; i++) order[i] = i;
    for (int i = 1; i < c->n_tensors; i++)
        for (int j = i;
             j > 0 && strcmp(c->tensors[order[j - 1]].name, c->tensors[order[j]].name) > 0; j--) {
            int t = order[j];
            order[j] = order[j - 1], order[j - 1] = t;
        }
}

static void field_i64(sp__h64 *h, const char *name, int64_t v) {
    sp__h64_str(h, name);
    sp__h64_i64(h, v);
}
static void field_f64(sp__h64 *h, const char *name, double v) {
    sp__h64_str(h, name);
    sp__h64_f64(h, v);
}
static void field_str(sp__h64 *h, const char *name, const char *v) {
    sp__h64_str(h, name);
    sp__h64_str(h, sp__ckpt_nz(v));
}

/* The canonical serialization of every field but the checksum (docs/formats-checkpoints.md):
 * prompt, optimizer arrays in name order, RNG state, then the attributes in name order. */
uint64_t sp__ckpt_checksum(const sp_checkpoint *c, const char *created_by) {
    sp__h64 h;
    sp__h64_init(&h);
    sp__h64_str(&h, "prompt");
    sp__h64_u64(&h, (uint64_t)c->n_prompt);
    sp__h64_u64(&h, (uint64_t)c->d);
    if (c->prompt) /* a prefix-only run has none */
        sp__h64_update(&h, c->prompt, (size_t)c->n_prompt * (size_t)c->d * sizeof(float));
    /* trainable tensors besides the prompt (prefix tuning) in name order; none for a prompt
     * run, whose checksum is unchanged by their introduction */
    int torder[SP_CHECKPOINT_MAX_TENSORS];
    tensor_order(c, torder);
    for (int k = 0; k < c->n_tensors; k++) {
        const sp_checkpoint_tensor *a = &c->tensors[torder[k]];
        sp__h64_str(&h, a->name);
        sp__h64_u64(&h, (uint64_t)a->rank);
        for (int i = 0; i < a->rank; i++) sp__h64_u64(&h, (uint64_t)a->dims[i]);
        sp__h64_update(&h, a->data, a->n * sizeof(float));
    }
    int order[SP_CHECKPOINT_MAX_OPTIM];
    optim_order(c, order);
    for (int k = 0; k < c->n_optim; k++) {
        const sp_checkpoint_array *a = &c->optim[order[k]];
        char name[64];
        snprintf(name, sizeof name, "optimizer/%s", a->name);
        sp__h64_str(&h, name);
        sp__h64_u64(&h, a->n);
        sp__h64_update(&h, a->data, a->n * sizeof(float));
    }
    sp__h64_str(&h, "rng_state");
    for (int i = 0; i < 4; i++) sp__h64_u64(&h, c->rng[i]);
    field_f64(&h, "best_metric", c->best_metric);
    field_i64(&h, "best_step", c->best_step);
    field_str(&h, "config_json", c->config_json);
    field_str(&h, "created_by", created_by);
    field_str(&h, "dataset_fingerprint", c->dataset_fingerprint);
    field_i64(&h, "epoch", c->epoch);
    field_i64(&h, "epoch_position", c->epoch_position);
    field_str(&h, "format", SP_CHECKPOINT_FORMAT);
    field_i64(&h, "format_version", SP_CHECKPOINT_VERSION);
    field_f64(&h, "metric", c->metric);
    field_str(&h, "metric_name", c->metric_name);
    field_str(&h, "model_fingerprint", c->model_fingerprint);
    field_i64(&h, "optim_step", c->optim_step);
    field_i64(&h, "step", c->step);
    field_i64(&h, "tokens_seen", c->tokens_seen);
    return sp__h64_final(&h);
}
