/* Initial values of a run's parameters (train/params.h): the prompt as prompt_init.c does it;
 * the prefix at random (PEFT: N(0, 1)), as the keys and values of tokens run through the frozen
 * model (the tokens --init vocab, vocab-top, labels or text draw: such a prefix equals
 * prepending those tokens), or from any prompt file's prefix (a checkpoint, a PEFT
 * PREFIX_TUNING adapter); the reparametrization's MLP as
 * torch initialises PEFT's PrefixEncoder (embedding N(0, 1), Linear U(+-1/sqrt(fan_in))). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "softprompt/checkpoint.h"
#include "softprompt/engine.h"
#include "train/internal.h"
#include "train/params.h"

static void fill_normal(float *x, size_t n, sp_rng *rng) {
    for (size_t i = 0; i < n; i++) x[i] = (float)sp_rng_normal(rng);
}

static void fill_uniform(float *x, size_t n, double bound, sp_rng *rng) {
    for (size_t i = 0; i < n; i++) x[i] = (float)((2.0 * sp_rng_uniform(rng) - 1.0) * bound);
}

static int init_encoder(sp__params *p, const sp_train_config *c, sp_rng *rng, sp_error *err) {
    if (c->init != SP_INIT_RANDOM)
        return sp_fail(err,
                       "--prefix-hidden trains the prefix through an MLP that starts at random "
                       "(as PEFT's PrefixEncoder); --init %s is for a prefix trained directly: "
                       "use --init random",
                       sp_init_kind_name(c->init));
    for (int i = 0; i < p->n_seg; i++) {
        const sp__segment *s = &p->seg[i];
        float *x = p->theta + s->offset;
        if (strcmp(s->name, "prefix_encoder/embedding") == 0)
            fill_normal(x, s->n, rng);
        else if (strncmp(s->name, "prefix_encoder/", 15) == 0) /* w1, b1: fan_in t; w2, b2: h */
            fill_uniform(x, s->n, 1.0 / sqrt(s->name[16] == '1' ? p->kv_dim : p->hidden), rng);
    }
    return 0;
}

static int prefix_from_tokens(float *prefix, int n, const sp_model *m, const sp_train_config *c,
                              sp_dataset *train, sp_rng *rng, sp_error *err) {
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    sp_worker *w = sp_worker_new(m);
    int rc = ids && w ? 0 : sp_fail(err, "out of memory");
    if (rc == 0) rc = sp__init_token_ids(ids, n, m, c, train, rng, err);
    if (rc == 0) rc = sp_engine_capture_kv(w, ids, n, prefix, err);
    sp_worker_free(w);
    free(ids);
    return rc ? sp_fail_prefix(err, "--init %s of the prefix", sp_init_kind_name(c->init)) : 0;
}

static int prefix_from_file(sp__params *p, float *prefix, const char *path, sp_error *err) {
    sp_prompt_file pf;
    if (sp_prompt_load(path, &pf, err)) return sp_fail_prefix(err, "--init");
    int rc = 0;
    if (pf.n_prefix == 0)
        rc = sp_fail(err,
                     "--init %s holds no key/value prefix (a prompt of input soft tokens "
                     "only): this run trains a prefix of [%d, 2, %d, %d]",
                     path, p->n_layer, p->n_prefix, p->kv_dim);
    else if (pf.n_layer != p->n_layer || pf.n_prefix != p->n_prefix || pf.kv_dim != p->kv_dim)
        rc = sp_fail(err,
                     "--init %s: prefix has shape [%d, 2, %d, %d], this run needs [%d, 2, %d, "
                     "%d] (layers, keys/values, prefix length, kv_dim)",
                     path, pf.n_layer, pf.n_prefix, pf.kv_dim, p->n_layer, p->n_prefix, p->kv_dim);
    else
        memcpy(prefix, pf.prefix, p->n_prefix_values * sizeof *prefix);
    sp_prompt_file_free(&pf);
    return rc;
}

int sp__params_init_values(sp__params *p, const sp_model *m, const sp_train_config *c,
                           sp_dataset *train, sp_rng *rng, sp_error *err) {
    float *prompt = sp__params_prompt(p);
    if (prompt && sp__prompt_init(prompt, p->n_prompt, m, c, train, rng, err)) return -1;
    if (!p->n_prefix) return 0;
    if (p->hidden) return init_encoder(p, c, rng, err);
    float *prefix = p->theta + sp__params_find(p, "prefix")->offset;
    switch (c->init) {
    case SP_INIT_RANDOM:
        fill_normal(prefix, p->n_prefix_values, rng);
        return 0;
    case SP_INIT_FILE:
        return prefix_from_file(p, prefix, c->init_arg, err);
    default:
        return prefix_from_tokens(prefix, p->n_prefix, m, c, train, rng, err);
    }
}
