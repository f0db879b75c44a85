/* The training loop. See include/softprompt/train.h for the contract and docs/usage.md
 * ("Training") for the user-facing behaviour. All ranks run this code in lockstep; only rank 0
 * writes files, in an output directory it owns and locks for the run's life. */
#include <assert.h>
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/fileutil.h"
#include "softprompt/checkpoint.h"
#include "train/internal.h"
#include "train/params.h"
#include "util/clock.h"

typedef struct trainer {
    const sp_train_config *c;
    const sp_dist *d;
    sp_model model;
    sp_team *team; /* one engine worker per thread of this rank */
    sp_dataset *train, *valid;
    int P, dim;          /* the data's soft slots, the model's width */
    sp__params prm;      /* what is trained (the method's segments) */
    size_t n_params;     /* prm.n_in: the engine's gradient, what ranks reduce */
    double *reduce;      /* default mode: [n_params + R_COUNT]; deterministic: [G, n_params + 3] */
    double *bad;         /* [G]: 1 for the batch positions whose loss/gradient is not finite */
    float *example_grad; /* deterministic: [n_params] scratch */
    sp_optim opt[SP__SEG_MAX]; /* one per segment of prm */
    sp__data_order order;
    sp_rng rng;
    int64_t step, total_steps, tokens_seen;
    int threads;        /* per rank */
    int64_t *batch_ids; /* [global_batch] */
    sp_batch_data mb;
    sp__run_log log;
    char model_fp[17], data_fp[17];
    char ckpt_dir[4096], best_path[4096];
    double metric, best_metric; /* NaN when none */
    int64_t best_step;
    const char *metric_name;       /* "valid_accuracy" | "valid_loss" */
    sp__run_lock lock;             /* rank 0: the output directory is this run's */
    int created_out, created_ckpt; /* rank 0 made them (a refused run removes them again) */
    int started;                   /* the run wrote into its directory (config.json and on) */
    int fault_rank;                /* SP_FAULT_RANK=R:S (tests): rank R fails at step S; -1 none */
    int64_t fault_step;
} trainer;

/* Default mode: the scalars allreduced after the gradient sum [P*d], by slot. */
enum { R_LOSS, R_TARGETS, R_TOKENS, R_STOP, R_NONFINITE, R_COUNT };
/* Deterministic mode: each example's row of the table holds its gradient [P*d], then these. */
enum { E_LOSS, E_TARGETS, E_TOKENS, E_COUNT };

/* Per-step totals over the global batch. */
typedef struct step_totals {
    double loss_sum, n_targets, n_tokens;
    int stop;
} step_totals;

static int all_finite(const float *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i])) return 0;
    return 1;
}

static int is_rank0(const trainer *t) {
    return t->d->rank == 0;
}

/* ---------------------------------------------------------------- setup */

/* mkdir unless it exists (as a directory); *created (may be NULL) says whether it was made. */
static int make_dir(const char *path, int *created, sp_error *err) {
    int made = mkdir(path, 0777) == 0;
    if (created) *created = made;
    if (made || errno == EEXIST) {
        struct stat st;
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return 0;
        return sp_fail(err, "%s exists and is not a directory", path);
    }
    return sp_fail(err, "cannot create directory %s: %s", path, strerror(errno));
}

static int same_file(const char *a, const char *b) {
    struct stat x, y;
    return stat(a, &x) == 0 && stat(b, &y) == 0 && x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}

static int open_data(trainer *t, sp_error *err) {
    const sp_train_config *c = t->c;
    if (c->valid_path && same_file(c->train_path, c->valid_path))
        return sp_fail(err,
                       "--valid %s is the training set (--train %s): accuracy on the examples "
                       "being trained on says nothing about new ones; prepare a validation "
                       "split (softprompt prepare --split train=0.9,valid=0.1)",
                       c->valid_path, c->train_path);
    if (!(t->train = sp_dataset_open(c->train_path, err))) return -1;
    int64_t n = sp_dataset_n_examples(t->train);
    if (c->global_batch > n)
        return sp_fail(err,
                       "--global-batch %d is larger than the training set (%lld examples in %s): "
                       "every step would hold some examples twice; use --global-batch %lld or "
                       "less",
                       c->global_batch, (long long)n, c->train_path, (long long)n);
    const sp_dataset_meta *meta = sp_dataset_get_meta(t->train);
    t->P = meta->n_soft;
    if (t->P <= 0 && sp_method_has_prompt(c->method))
        return sp_fail(err,
                       "%s: the template has no soft-prompt slots ({soft:N}): nothing to "
                       "train",
                       c->train_path);
    if (c->valid_path) {
        if (!(t->valid = sp_dataset_open(c->valid_path, err))) return -1;
        const sp_dataset_meta *vm = sp_dataset_get_meta(t->valid);
        if (vm->n_soft != t->P || strcmp(vm->tokenizer_hash, meta->tokenizer_hash) != 0)
            return sp_fail(err,
                           "%s and %s were not prepared alike (soft slots %d vs %d, "
                           "tokenizer %s vs %s)",
                           c->train_path, c->valid_path, meta->n_soft, vm->n_soft,
                           meta->tokenizer_hash, vm->tokenizer_hash);
    }
    return 0;
}

/* Rank 0 checks the datasets against the model before the first step, so a bad example fails
 * the run now instead of at its step (and again at every resume). */
static int check_data(trainer *t, sp_error *err) {
    const sp_train_config *c = t->c;
    sp_dataset *sets[2] = {t->train, t->valid};
    int rc = is_rank0(t)
                 ? sp_train_check_datasets(&t->model, sets, 2,
                                           c->tokenizer_dir ? c->tokenizer_dir : c->model_dir,
                                           c->allow_tokenizer_mismatch, err)
                 : 0;
    return sp_dist_rank0_agree(rc, "check the datasets", err) ? -1 : 0;
}

static int64_t derive_total_steps(const sp_train_config *c, int64_t n_examples) {
    if (c->steps > 0) return c->steps;
    double steps = ceil(c->epochs * (double)n_examples / c->global_batch);
    return steps < 1 ? 1 : (int64_t)steps;
}

/* Rank 0 hashes the model (every weight) and the dataset; the others receive the result
 * rather than reading the same shared pages again. */
static int fingerprints(trainer *t, sp_error *err) {
    int rc = 0;
    if (is_rank0(t)) {
        sp_model_fingerprint(&t->model, t->model_fp);
        rc = sp_dataset_fingerprint(t->train, t->data_fp, err);
    }
    if (sp_dist_rank0_agree(rc, "fingerprint the data", err)) return -1;
    sp_dist_bcast(t->model_fp, sizeof t->model_fp);
    sp_dist_bcast(t->data_fp, sizeof t->data_fp);
    return 0;
}

/* Rank 0 makes sure --out may hold this run and, unless only checking, creates and locks it
 * before anything else, so a second trainer is refused at once. */
static int claim_out_dir(trainer *t, sp_error *err) {
    const sp_train_config *c = t->c;
    int rc = 0;
    if (is_rank0(t)) {
        rc = sp__run_dir_check(c->out_dir, err);
        if (rc == 0 && c->check)
            rc = sp__run_lock_probe(c->out_dir, err);
        else if (rc == 0 && (make_dir(c->out_dir, &t->created_out, err) ||
                             sp__run_lock_acquire(&t->lock, c->out_dir, err)))
            rc = -1;
    }
    if (sp_dist_rank0_agree(rc, "claim the output directory", err)) return -1;
    return 0;
}

/* The method's parameter vector: the data's soft slots are the prompt, the prefix has
 * --prefix-length rows (default: as many as the soft slots). */
static int init_params(trainer *t, sp_error *err) {
    const sp_train_config *c = t->c;
    int n_prefix = c->prefix_length > 0 ? c->prefix_length : t->P;
    if (sp_method_has_prefix(c->method) && n_prefix < 1)
        return sp_fail(err,
                       "--method %s: %s has no soft slots to take the prefix length from; give "
                       "--prefix-length N",
                       sp_method_name(c->method), c->train_path);
    if (sp_method_has_prefix(c->method) && n_prefix >= t->model.cfg.n_ctx)
        return sp_fail(err, "--prefix-length %d leaves no position of the model's %d", n_prefix,
                       t->model.cfg.n_ctx);
    return sp__params_init(&t->prm, c->method, &t->model.cfg, t->P, n_prefix, c->prefix_hidden,
                           c->prefix_dropout, err);
}

/* One optimizer per segment, each over its own matrix view; gradient clipping is global (over
 * all segments, in train_step), so theirs is off. */
static int init_optimizers(trainer *t, sp_error *err) {
    sp_optim_config oc = t->c->optim;
    if (oc.total_steps <= 0) oc.total_steps = t->total_steps;
    for (int i = 0; i < t->prm.n_seg; i++) {
        const sp__segment *s = &t->prm.seg[i];
        if (sp_optim_init(&t->opt[i], &oc, s->rows, s->cols, err))
            return sp_fail_prefix(err, "the optimizer of %s", s->name);
        t->opt[i].cfg.clip_norm = 0.0;
    }
    return 0;
}

static int setup(trainer *t, sp_error *err) {
    const sp_train_config *c = t->c;
    if (claim_out_dir(t, err)) return -1;
    int capped = 0, threads = sp_dist_threads(t->d, c->threads, &capped);
    openblas_set_num_threads(threads);
    t->threads = threads;
    if (capped && is_rank0(t))
        fprintf(stderr,
                "softprompt train: %d threads per rank would oversubscribe the cores; "
                "using %d\n",
                capped, threads);
    if (sp_model_load_shared(&t->model, c->model_dir, c->weights, sp_dist_model_share(), err))
        return -1;
    if (open_data(t, err) || check_data(t, err)) return -1;
    sp_dataset *sets[2] = {t->train, t->valid};
    if (sp__train_check_memory(&t->model, sets, 2, c->micro_batch, t->d->local_size, err))
        return -1;
    t->dim = sp_config_embed_dim(&t->model.cfg); /* the prompt's width: inputs_embeds' */
    if (init_params(t, err)) return -1;
    t->n_params = t->prm.n_in;
    t->total_steps = derive_total_steps(c, sp_dataset_n_examples(t->train));
    t->team = sp_team_new(&t->model, threads);
    t->example_grad = calloc(t->n_params, sizeof(float));
    size_t reduce_n = c->deterministic ? (size_t)c->global_batch * (t->n_params + E_COUNT)
                                       : t->n_params + R_COUNT;
    t->reduce = calloc(reduce_n, sizeof(double));
    t->bad = calloc((size_t)c->global_batch, sizeof(double));
    t->batch_ids = calloc((size_t)c->global_batch, sizeof(int64_t));
    sp_batch_data_init(&t->mb);
    if (!t->team || !t->example_grad || !t->reduce || !t->bad || !t->batch_ids)
        return sp_fail(err, "out of memory");
    if (init_optimizers(t, err)) return -1;
    if (sp__data_order_init(&t->order, sp_dataset_n_examples(t->train), c->seed, err)) return -1;
    sp_rng_seed(&t->rng, c->seed);
    if (fingerprints(t, err)) return -1;
    snprintf(t->ckpt_dir, sizeof t->ckpt_dir, "%s/checkpoints", c->out_dir);
    snprintf(t->best_path, sizeof t->best_path, "%s/best.h5", c->out_dir);
    t->metric = t->best_metric = NAN;
    t->best_step = -1;
    int classify = sp_dataset_get_meta(t->train)->task == SP_TASK_CLASSIFICATION;
    const char *metric = c->metric && *c->metric ? c->metric : (classify ? "accuracy" : "loss");
    if (strcmp(metric, "accuracy") == 0 && !classify)
        return sp_fail(err, "--metric accuracy needs a classification dataset");
    t->metric_name = strcmp(metric, "accuracy") == 0 ? "valid_accuracy" : "valid_loss";
    int rc = 0;
    if (is_rank0(t) && !c->check) rc = make_dir(t->ckpt_dir, &t->created_ckpt, err);
    if (sp_dist_rank0_agree(rc, "create the checkpoint directory", err)) return -1;
    return 0;
}

/* ---------------------------------------------------------------- checkpoints */

/* The checkpoint's tensor holding segment s, with s's shape; NULL after a message otherwise. */
static const float *ckpt_segment(const sp_checkpoint *ck, const sp__segment *s, const char *path,
                                 sp_error *err) {
    if (strcmp(s->name, "prompt") == 0) {
        if (ck->n_prompt == s->dims[0] && ck->d == s->dims[1]) return ck->prompt;
        sp_fail(err, "%s: prompt [%d, %d], expected [%d, %d]", path, ck->n_prompt, ck->d,
                s->dims[0], s->dims[1]);
        return NULL;
    }
    for (int i = 0; i < ck->n_tensors; i++) {
        const sp_checkpoint_tensor *a = &ck->tensors[i];
        if (strcmp(a->name, s->name) != 0) continue;
        int same = a->rank == s->rank;
        for (int k = 0; same && k < s->rank; k++) same = a->dims[k] == s->dims[k];
        if (same) return a->data;
        sp_fail(err, "%s: dataset \"%s\" has another shape than this run's (%d-D, %lld x ...)",
                path, s->name, a->rank, (long long)a->dims[0]);
        return NULL;
    }
    sp_fail(err, "%s: missing dataset \"%s\" that this run's method trains", path, s->name);
    return NULL;
}

/* A reparametrized run's checkpoint stores the encoder and its output (what eval and export
 * read): the output must be what the encoder computes, bit for bit. */
static int check_encoder_output(trainer *t, const sp_checkpoint *ck, const char *path,
                                sp_error *err) {
    const float *stored = NULL;
    for (int i = 0; i < ck->n_tensors; i++)
        if (strcmp(ck->tensors[i].name, "prefix") == 0 &&
            ck->tensors[i].n == t->prm.n_prefix_values)
            stored = ck->tensors[i].data;
    if (!stored)
        return sp_fail(err,
                       "%s: missing dataset \"prefix\" (the encoder's output) of shape "
                       "[%d, 2, %d, %d]",
                       path, t->prm.n_layer, t->prm.n_prefix, t->prm.kv_dim);
    sp__params_forward(&t->prm, 0, NULL);
    if (memcmp(stored, t->prm.prefix, t->prm.n_prefix_values * sizeof(float)) != 0)
        return sp_fail(err,
                       "%s: dataset \"prefix\" is not the output of the stored prefix_encoder: "
                       "the file was altered",
                       path);
    return 0;
}

/* Every segment from the checkpoint, which must hold nothing else trainable. */
static int restore_params(trainer *t, const sp_checkpoint *ck, const char *path, sp_error *err) {
    for (int i = 0; i < t->prm.n_seg; i++) {
        const sp__segment *s = &t->prm.seg[i];
        const float *src = ckpt_segment(ck, s, path, err);
        if (!src) return -1;
        memcpy(t->prm.theta + s->offset, src, s->n * sizeof(float));
    }
    int expected = t->prm.n_seg - (t->prm.n_prompt > 0) + (t->prm.hidden > 0); /* + "prefix" */
    if (ck->n_tensors != expected || (ck->n_prompt > 0) != (t->prm.n_prompt > 0))
        return sp_fail(err, "%s: holds other trainable tensors than method %s trains", path,
                       sp_method_name(t->c->method));
    if (t->prm.hidden > 0) /* the stored prefix is the encoder's output: recompute, compare */
        return check_encoder_output(t, ck, path, err);
    return 0;
}

static int restore_optimizers(trainer *t, const sp_checkpoint *ck, const char *path,
                              sp_error *err) {
    int used = 0;
    for (int s = 0; s < t->prm.n_seg; s++) {
        sp_optim_array arrays[4];
        int n = sp_optim_state(&t->opt[s], arrays);
        for (int i = 0; i < n; i++) {
            char name[64];
            snprintf(name, sizeof name, "%s%s", t->prm.seg[s].optim, arrays[i].name);
            int found = 0;
            for (int j = 0; j < ck->n_optim && !found; j++) {
                if (strcmp(ck->optim[j].name, name) != 0) continue;
                if (ck->optim[j].n != arrays[i].n)
                    return sp_fail(err, "%s: optimizer state '%s' has %zu values, expected %zu",
                                   path, name, ck->optim[j].n, arrays[i].n);
                memcpy(arrays[i].data, ck->optim[j].data, arrays[i].n * sizeof(float));
                found = 1, used++;
            }
            if (!found) return sp_fail(err, "%s: optimizer state '%s' is missing", path, name);
        }
    }
    if (used != ck->n_optim)
        return sp_fail(err, "%s: holds optimizer state this run's method (%s) does not use", path,
                       sp_method_name(t->c->method));
    return 0;
}

static int restore(trainer *t, const sp_checkpoint *ck, const char *path, sp_error *err) {
    if (strcmp(ck->model_fingerprint, t->model_fp) != 0)
        return sp_fail(err, "%s was trained with another model (fingerprint %s, %s has %s)", path,
                       ck->model_fingerprint, t->c->model_dir, t->model_fp);
    if (strcmp(ck->dataset_fingerprint, t->data_fp) != 0)
        return sp_fail(err, "%s was trained on another dataset (fingerprint %s, %s has %s)", path,
                       ck->dataset_fingerprint, t->c->train_path, t->data_fp);
    if (sp__train_config_check_resume(ck->config_json, t->c, t->P, t->total_steps, path, err))
        return -1;
    if (sp_checkpoint_check_resume_state(ck, path, t->train, t->c->seed, t->c->global_batch, err))
        return -1;
    if (ck->step > t->total_steps)
        return sp_fail(err,
                       "%s: the run is at step %lld, past the %lld steps asked for: a run can be "
                       "continued for more steps (constant schedule), not cut short",
                       path, (long long)ck->step, (long long)t->total_steps);
    if (restore_params(t, ck, path, err) || restore_optimizers(t, ck, path, err)) return -1;
    for (int i = 0; i < t->prm.n_seg; i++) t->opt[i].step = ck->optim_step;
    t->step = ck->step;
    t->order.epoch = ck->epoch, t->order.position = ck->epoch_position;
    t->tokens_seen = ck->tokens_seen;
    memcpy(t->rng.s, ck->rng, sizeof t->rng.s);
    t->metric = ck->metric, t->best_metric = ck->best_metric, t->best_step = ck->best_step;
    return 0;
}

/* Rank 0 picks the checkpoint (newest valid one for "auto"); every rank reads it. */
static int resume_or_init(trainer *t, int *resumed, sp_error *err) {
    const sp_train_config *c = t->c;
    char path[4096] = "";
    int rc = 0;
    *resumed = 0;
    if (is_rank0(t) && strcmp(c->resume, "never") != 0 && strcmp(c->resume, "auto") != 0) {
        snprintf(path, sizeof path, "%s", c->resume);
    } else if (is_rank0(t)) {
        char *found = NULL, *warnings = NULL;
        int never = strcmp(c->resume, "never") == 0;
        rc = sp_checkpoint_find_latest(t->ckpt_dir, &found, &warnings, err);
        if (rc == 0 && found && never)
            rc = sp_fail(err,
                         "%s already holds a run (%s): continue it with --resume auto, or "
                         "start the new run in another --out directory",
                         c->out_dir, found);
        else if (rc == 0 && !found && warnings)
            /* starting afresh would replace that run's metrics and checkpoints */
            rc = sp_fail(err,
                         "%s holds checkpoints of a run but none can be resumed:\n%suse another "
                         "--out for a new run (or remove %s if that run is not wanted)",
                         t->ckpt_dir, warnings, t->ckpt_dir);
        else if (rc == 0 && warnings)
            fprintf(stderr, "softprompt train: warning: %s", warnings);
        if (rc == 0 && found) snprintf(path, sizeof path, "%s", found);
        free(found), free(warnings);
    }
    if (sp_dist_rank0_agree(rc, "find checkpoints", err)) return -1;
    sp_dist_bcast(path, sizeof path);
    if (path[0]) {
        sp_checkpoint ck;
        rc = sp_checkpoint_read(path, &ck, err);
        if (rc == 0) rc = restore(t, &ck, path, err);
        sp_checkpoint_free(&ck); /* zeroed by a failed read, so always safe */
        if (rc == 0 && is_rank0(t) && !c->quiet)
            fprintf(stderr, "softprompt train: resuming from %s (step %lld)\n", path,
                    (long long)t->step);
        *resumed = rc == 0;
        return rc;
    }
    if (is_rank0(t)) rc = sp__params_init_values(&t->prm, &t->model, c, t->train, &t->rng, err);
    if (sp_dist_rank0_agree(rc, "initialise the prompt", err)) return -1;
    sp_dist_bcast(t->prm.theta, t->prm.n * sizeof(float));
    sp_dist_bcast(t->rng.s, sizeof t->rng.s); /* rank 0 drew from it; dropout draws on every rank */
    return 0;
}

/* The checkpoint's view of the parameters: the prompt, the other segments as tensors, and a
 * reparametrized run's prefix (the encoder's output, what eval and export read). */
static void describe_params(trainer *t, sp_checkpoint *ck) {
    for (int i = 0; i < t->prm.n_seg; i++) {
        const sp__segment *s = &t->prm.seg[i];
        float *x = t->prm.theta + s->offset;
        if (strcmp(s->name, "prompt") == 0) {
            ck->n_prompt = s->dims[0], ck->d = s->dims[1], ck->prompt = x;
            continue;
        }
        sp_checkpoint_tensor *a = &ck->tensors[ck->n_tensors++];
        snprintf(a->name, sizeof a->name, "%s", s->name);
        a->rank = s->rank, a->data = x, a->n = s->n;
        for (int k = 0; k < 4; k++) a->dims[k] = s->dims[k];
    }
    if (t->prm.hidden) {
        sp__params_forward(&t->prm, 0, NULL);
        sp_checkpoint_tensor *a = &ck->tensors[ck->n_tensors++];
        snprintf(a->name, sizeof a->name, "prefix");
        a->rank = 4, a->data = t->prm.prefix, a->n = t->prm.n_prefix_values;
        int64_t dims[4] = {t->prm.n_layer, 2, t->prm.n_prefix, t->prm.kv_dim};
        memcpy(a->dims, dims, sizeof dims);
    }
}

/* Every segment's optimizer arrays, named <segment prefix><array> (the prompt's keep m, v, ...). */
static int describe_optim(trainer *t, sp_checkpoint *ck) {
    int finite = 1;
    for (int s = 0; s < t->prm.n_seg; s++) {
        sp_optim_array arrays[4];
        int n = sp_optim_state(&t->opt[s], arrays);
        for (int i = 0; i < n; i++) {
            sp_checkpoint_array *a = &ck->optim[ck->n_optim++];
            snprintf(a->name, sizeof a->name, "%s%s", t->prm.seg[s].optim, arrays[i].name);
            a->data = arrays[i].data, a->n = arrays[i].n;
            finite = finite && all_finite(a->data, a->n);
        }
    }
    return finite;
}

static int save_checkpoint(trainer *t, const char *path, sp_error *err) {
    /* the step guards keep non-finite values out of the state; this keeps them off the disk */
    sp_checkpoint ck;
    memset(&ck, 0, sizeof ck);
    int finite = describe_optim(t, &ck) && all_finite(t->prm.theta, t->prm.n);
    if (!finite)
        return sp_fail(err, "%s: not written: the prompt or optimizer state is not finite", path);
    describe_params(t, &ck);
    ck.step = t->step, ck.epoch = t->order.epoch, ck.epoch_position = t->order.position;
    ck.tokens_seen = t->tokens_seen;
    memcpy(ck.rng, t->rng.s, sizeof ck.rng);
    ck.optim_step = t->opt[0].step;
    json_t *cfg = sp__train_config_to_json(t->c, t->P, t->total_steps);
    ck.config_json = json_dumps(cfg, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(cfg);
    ck.model_fingerprint = t->model_fp, ck.dataset_fingerprint = t->data_fp;
    ck.metric_name = (char *)t->metric_name;
    ck.metric = t->metric, ck.best_metric = t->best_metric, ck.best_step = t->best_step;
    ck.created_by = "softprompt " SP_VERSION;
    int rc = sp_checkpoint_write(path, &ck, err);
    free(ck.config_json);
    return rc;
}

/* Rank 0 writes step-N.h5 (and best.h5 when this step is the best), prunes; all ranks learn
 * whether it worked. */
static int checkpoint(trainer *t, int is_best, sp_error *err) {
    int rc = 0;
    if (is_rank0(t)) {
        char *path = sp_checkpoint_path(t->ckpt_dir, t->step);
        rc = save_checkpoint(t, path, err);
        if (rc == 0 && is_best) rc = save_checkpoint(t, t->best_path, err);
        if (rc == 0) rc = sp_checkpoint_prune(t->ckpt_dir, t->c->keep, NULL, err);
        free(path);
    }
    if (sp_dist_rank0_agree(rc, "write a checkpoint", err)) return -1;
    return 0;
}

/* ---------------------------------------------------------------- one step */

/* Examples of the global batch as the engine runs them: without an input prompt the template's
 * soft slots are removed (prefix tuning feeds nothing into the input). *tokens: the examples'
 * tokens in the dataset, soft slots included (what tokens_seen counts and resume checks). */
static int read_batch(trainer *t, const int64_t *ids, int n, double *tokens, sp_error *err) {
    if (sp_dataset_read_batch(t->train, ids, n, &t->mb, err)) return -1;
    *tokens = t->mb.seq_start[t->mb.n_seq];
    return t->prm.n_prompt == 0 && t->P > 0 ? sp_batch_data_strip_soft(&t->mb, err) : 0;
}

/* Points pass's gradients into g [n_params]: the prompt's first, then the prefix's. */
static void pass_grad(const trainer *t, sp_pass *pass, float *g) {
    pass->grad = t->prm.n_prompt ? g : NULL;
    pass->kv_prefix_grad = t->prm.n_prefix ? g + (size_t)t->prm.n_prompt * t->prm.d : NULL;
}

/* The examples of positions [lo, lo + n) of the global batch run one at a time: marks in
 * t->bad those whose loss or gradient is not finite (all n if none is alone). */
static int find_nonfinite(trainer *t, int lo, int n, sp_error *err) {
    sp_pass pass;
    sp__params_pass(&t->prm, &pass, 0);
    pass_grad(t, &pass, t->example_grad);
    int found = 0;
    for (int i = lo; i < lo + n; i++) {
        double l;
        double n_tok;
        if (read_batch(t, t->batch_ids + i, 1, &n_tok, err)) return -1;
        sp_batch b = sp_batch_data_view(&t->mb);
        memset(t->example_grad, 0, t->n_params * sizeof(float));
        if (sp_team_run(t->team, &b, &pass, &l, err)) return -1;
        if (!isfinite(l) || !all_finite(t->example_grad, t->n_params)) t->bad[i] = 1, found = 1;
    }
    for (int i = lo; !found && i < lo + n; i++) t->bad[i] = 1;
    return 0;
}

/* Every rank has the same t->bad: names the step's non-finite examples (the batch's ids). */
static int fail_nonfinite(trainer *t, sp_error *err) {
    char list[256] = "";
    int n = 0;
    for (int i = 0; i < t->c->global_batch; i++) {
        if (t->bad[i] == 0) continue;
        size_t len = strlen(list);
        if (n++ < 8)
            snprintf(list + len, sizeof list - len, "%s%lld", len ? ", " : "",
                     (long long)t->batch_ids[i]);
    }
    sp_fail(err,
            "the loss or gradient is not finite on %d example%s of %s (%s%s): the "
            "model's weights or the prompt hold non-finite values (softprompt info "
            "MODEL_DIR checks the weights), or the learning rate made the prompt diverge; "
            "nothing of this step was applied or saved",
            n, n == 1 ? "" : "s", t->c->train_path, list, n > 8 ? ", ..." : "");
    return sp_fail_all_ranks(err); /* every rank reached this same verdict */
}

static void local_share(const trainer *t, int *lo, int *hi) {
    int G = t->c->global_batch, r = t->d->rank, W = t->d->size;
    assert(W >= 1 && r >= 0 && r < W && G >= 1);
    *lo = (int)((int64_t)G * r / W), *hi = (int)((int64_t)G * (r + 1) / W);
    assert(0 <= *lo && *lo <= *hi && *hi <= G);
}

/* Default mode: micro-batches of the local share, gradient sums accumulated in float, then one
 * allreduce (in double) of [grad sum, loss sum, targets, tokens, stop flag]. */
static int step_packed(trainer *t, step_totals *tot, sp_error *err) {
    int lo, hi, M = t->c->micro_batch;
    local_share(t, &lo, &hi);
    float *grad = t->prm.in_grad;
    memset(grad, 0, t->n_params * sizeof(float));
    double loss = 0, targets = 0, tokens = 0;
    int bad_lo = -1, bad_n = 0;
    sp_pass pass;
    sp__params_pass(&t->prm, &pass, 1);
    for (int i = lo; i < hi && bad_lo < 0; i += M) {
        int n = hi - i < M ? hi - i : M;
        double l, n_tok;
        if (read_batch(t, t->batch_ids + i, n, &n_tok, err)) return -1;
        sp_batch b = sp_batch_data_view(&t->mb);
        if (sp_team_run(t->team, &b, &pass, &l, err)) return -1;
        loss += l, targets += b.n_targets, tokens += n_tok;
        if (!isfinite(l) || !all_finite(grad, t->n_params)) bad_lo = i, bad_n = n;
    }
    double *buf = t->reduce, *r = buf + t->n_params;
    for (size_t k = 0; k < t->n_params; k++) buf[k] = grad[k];
    r[R_LOSS] = loss, r[R_TARGETS] = targets, r[R_TOKENS] = tokens;
    r[R_STOP] = sp__signals_stop_requested() != 0, r[R_NONFINITE] = bad_lo >= 0;
    sp_dist_sum_double(buf, t->n_params + R_COUNT);
    if (r[R_NONFINITE] > 0) { /* rare: find the examples, agree on them, stop */
        memset(t->bad, 0, (size_t)t->c->global_batch * sizeof(double));
        if (bad_lo >= 0 && find_nonfinite(t, bad_lo, bad_n, err)) return -1;
        sp_dist_sum_double(t->bad, (size_t)t->c->global_batch);
        return fail_nonfinite(t, err);
    }
    tot->loss_sum = r[R_LOSS], tot->n_targets = r[R_TARGETS];
    tot->n_tokens = r[R_TOKENS], tot->stop = r[R_STOP] > 0;
    for (size_t k = 0; k < t->n_params; k++) grad[k] = (float)buf[k];
    return 0;
}

/* Deterministic mode: every example runs alone (so its result cannot depend on which examples
 * share its micro-batch) into its own row of a [G, P*d + E_COUNT] table; the allreduce only adds
 * zeros to each row (exact), and every rank then sums the rows in global example order. */
static int step_deterministic(trainer *t, step_totals *tot, sp_error *err) {
    int lo, hi, G = t->c->global_batch;
    size_t row = t->n_params + E_COUNT;
    local_share(t, &lo, &hi);
    memset(t->reduce, 0, (size_t)G * row * sizeof(double));
    sp_pass pass;
    sp__params_pass(&t->prm, &pass, 0);
    pass_grad(t, &pass, t->example_grad);
    for (int i = lo; i < hi; i++) {
        double l, n_tok, *r = t->reduce + (size_t)i * row;
        if (read_batch(t, t->batch_ids + i, 1, &n_tok, err)) return -1;
        sp_batch b = sp_batch_data_view(&t->mb);
        memset(t->example_grad, 0, t->n_params * sizeof(float));
        if (sp_team_run(t->team, &b, &pass, &l, err)) return -1;
        for (size_t k = 0; k < t->n_params; k++) r[k] = t->example_grad[k];
        double *e = r + t->n_params;
        e[E_LOSS] = l, e[E_TARGETS] = b.n_targets, e[E_TOKENS] = n_tok;
    }
    int stop = sp_dist_any(sp__signals_stop_requested() != 0);
    sp_dist_sum_double(t->reduce, (size_t)G * row);
    memset(tot, 0, sizeof *tot);
    tot->stop = stop;
    int nonfinite = 0;
    for (int i = 0; i < G; i++) {
        const double *r = t->reduce + (size_t)i * row;
        int ok = isfinite(r[t->n_params + E_LOSS]);
        for (size_t k = 0; ok && k < t->n_params; k++) ok = isfinite(r[k]);
        t->bad[i] = !ok, nonfinite |= !ok;
    }
    if (nonfinite) return fail_nonfinite(t, err);
    for (size_t k = 0; k < t->n_params; k++) {
        double s = 0;
        for (int i = 0; i < G; i++) s += t->reduce[(size_t)i * row + k];
        t->prm.in_grad[k] = (float)s;
    }
    for (int i = 0; i < G; i++) {
        const double *r = t->reduce + (size_t)i * row;
        const double *e = r + t->n_params;
        tot->loss_sum += e[E_LOSS], tot->n_targets += e[E_TARGETS], tot->n_tokens += e[E_TOKENS];
    }
    return 0;
}

/* Fault injection for the tests (docs/reliability.md): one rank fails alone at a given step,
 * as a rank whose node loses its file system would. */
static void read_fault(trainer *t) {
    const char *s = getenv("SP_FAULT_RANK");
    long long step;
    if (s && sscanf(s, "%d:%lld", &t->fault_rank, &step) == 2)
        t->fault_step = step;
    else
        t->fault_rank = -1;
}

/* Clips the whole gradient by its global norm, then every segment's optimizer updates it. */
static int update(trainer *t, double *grad_norm, sp_error *err) {
    *grad_norm = sp_optim_clip(t->prm.grad, t->prm.n, t->c->optim.clip_norm);
    for (int i = 0; i < t->prm.n_seg; i++) {
        const sp__segment *s = &t->prm.seg[i];
        sp_optim_step(&t->opt[i], t->prm.theta + s->offset, t->prm.grad + s->offset, NULL);
    }
    if (!all_finite(t->prm.theta, t->prm.n))
        return sp_fail(err,
                       "step %lld: the update made the %s non-finite (gradient norm %g, "
                       "learning rate %g): lower --lr or clip with --clip-norm; nothing of this "
                       "step was saved",
                       (long long)t->step + 1, t->prm.n_prefix ? "prefix" : "prompt", *grad_norm,
                       sp_optim_lr(&t->opt[0].cfg, t->step + 1));
    return 0;
}

static int train_step(trainer *t, step_totals *tot, double *grad_norm, sp_error *err) {
    if (t->d->rank == t->fault_rank && t->step + 1 == t->fault_step)
        return sp_fail(err, "step %lld: injected failure (SP_FAULT_RANK)", (long long)t->step + 1);
    sp__data_order_next(&t->order, t->batch_ids, t->c->global_batch);
    sp__params_forward(&t->prm, 1, &t->rng);
    int rc = t->c->deterministic ? step_deterministic(t, tot, err) : step_packed(t, tot, err);
    if (rc) return sp_fail_prefix(err, "step %lld", (long long)t->step + 1);
    if (tot->n_targets <= 0)
        return sp_fail(err, "step %lld: the global batch has no target tokens",
                       (long long)t->step + 1);
    /* Hugging Face's loss is the mean over every target token of the global batch. */
    float scale = (float)(1.0 / tot->n_targets);
    for (size_t k = 0; k < t->n_params; k++) t->prm.in_grad[k] *= scale;
    assert(all_finite(t->prm.in_grad, t->n_params)); /* the step functions refused those */
    sp__params_backward(&t->prm);
    if (update(t, grad_norm, err)) return -1;
    t->step++;
    t->tokens_seen += (int64_t)tot->n_tokens;
    return 0;
}

/* ---------------------------------------------------------------- evaluation */

/* Evaluates on the validation set; sets t->metric and returns whether it is the best so far. */
static int evaluate(trainer *t, int *is_best, sp_error *err) {
    *is_best = 0;
    if (!t->valid) return 0;
    sp_eval_result r;
    sp_pass tuned;
    sp__params_forward(&t->prm, 0, NULL);
    sp__params_pass(&t->prm, &tuned, 0);
    if (sp_evaluate(t->team, t->valid, &tuned, t->c->micro_batch, t->c->max_eval_examples, t->d, &r,
                    err))
        return -1;
    int accuracy = strcmp(t->metric_name, "valid_accuracy") == 0;
    t->metric =
        accuracy ? (double)r.correct / (double)r.n_examples : r.loss_sum / (double)r.n_targets;
    if (isnan(t->best_metric) ||
        (accuracy ? t->metric > t->best_metric : t->metric < t->best_metric)) {
        t->best_metric = t->metric, t->best_step = t->step, *is_best = 1;
    }
    if (is_rank0(t)) sp__run_log_eval(&t->log, t->step, "valid", &r);
    sp_eval_result_free(&r);
    return 0;
}

/* ---------------------------------------------------------------- the loop */

static int write_run_config(trainer *t, sp_error *err) {
    if (!is_rank0(t)) return 0;
    json_t *cfg = sp__train_config_to_json(t->c, t->P, t->total_steps);
    json_object_set_new(cfg, "ranks", json_integer(t->d->size));
    json_object_set_new(cfg, "threads_per_rank", json_integer(t->threads));
    json_object_set_new(cfg, "weights", json_string(sp_weights_name(t->model.weights)));
    if (t->model.weights == SP_WEIGHTS_BF16)
        json_object_set_new(cfg, "bf16_compute", json_string(sp_bf16_compute()));
    json_object_set_new(cfg, "model_fingerprint", json_string(t->model_fp));
    json_object_set_new(cfg, "dataset_fingerprint", json_string(t->data_fp));
    char *s = json_dumps(cfg, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(cfg);
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", t->c->out_dir);
    int rc = sp__write_file_atomic(path, s, strlen(s), err);
    free(s);
    return rc;
}

/* What is trained, for messages: "prompt 20 x 768", "prefix 12 x 2 x 20 x 768 (MLP 512)". */
static void describe_trained(const trainer *t, char *buf, size_t n) {
    const sp__params *p = &t->prm;
    int k = 0;
    if (p->n_prompt) k = snprintf(buf, n, "prompt %d x %d", p->n_prompt, p->d);
    if (p->n_prefix && k >= 0 && (size_t)k < n)
        snprintf(buf + k, n - (size_t)k, "%sprefix %d x 2 x %d x %d (%s%s%d values)",
                 k ? " and " : "", p->n_layer, p->n_prefix, p->kv_dim, sp_method_name(p->method),
                 p->hidden ? ", through an MLP, " : ", ", (int)p->n);
}

static void print_start(const trainer *t) {
    if (!is_rank0(t) || t->c->quiet) return;
    const sp_optim_config *o = &t->opt[0].cfg;
    char what[160];
    describe_trained(t, what, sizeof what);
    fprintf(stderr,
            "softprompt train: %d rank%s x %d thread%s, %s, global batch %d "
            "(micro-batch %d), steps %lld to %lld, %s lr %g (%s schedule)%s\n",
            t->d->size, t->d->size > 1 ? "s" : "", t->threads, t->threads > 1 ? "s" : "", what,
            t->c->global_batch, t->c->micro_batch, (long long)t->step + 1,
            (long long)t->total_steps, sp_optim_kind_name(o->kind), o->lr,
            sp_sched_kind_name(o->schedule), t->c->deterministic ? ", deterministic" : "");
}

/* Steps, tokens and time of this invocation (a resumed run reports only what it did). */
static void print_summary(trainer *t, int64_t steps, int64_t tokens, double seconds,
                          double last_loss) {
    if (!is_rank0(t) || t->c->quiet) return;
    if (steps == 0)
        fprintf(stderr, "done: the run was already at its last step (%lld); nothing to train\n",
                (long long)t->step);
    else
        fprintf(stderr,
                "done: step %lld (%lld in this run), final train loss %.4f, %.1f s, "
                "%.0f tokens/s\n",
                (long long)t->step, (long long)steps, last_loss, seconds,
                seconds > 0 ? (double)tokens / seconds : 0.0);
    if (!isnan(t->best_metric))
        fprintf(stderr, "best %s %.4f at step %lld (%s)\n", t->metric_name, t->best_metric,
                (long long)t->best_step, t->best_path);
    fprintf(stderr, "checkpoints in %s, metrics in %s/metrics.jsonl, adapter in %s/adapter\n",
            t->ckpt_dir, t->c->out_dir, t->c->out_dir);
}

/* The adapter PEFT has for the method: PROMPT_TUNING of the prompt, PREFIX_TUNING of the prefix
 * (a reparametrized one as its encoder's output); PEFT has none for both at once. */
static int write_adapter(trainer *t, const char *dir, sp_error *err) {
    const sp_train_config *c = t->c;
    if (t->prm.n_prompt && t->prm.n_prefix) {
        fprintf(stderr,
                "softprompt train: no adapter written: PEFT has no adapter type for a prompt and "
                "a prefix together (method %s); the checkpoints hold both\n",
                sp_method_name(c->method));
        return 0;
    }
    if (t->prm.n_prompt)
        return sp_peft_export(dir, sp__params_prompt(&t->prm), t->prm.n_prompt, &t->model,
                              c->base_model, sp_init_kind_name(c->init),
                              c->init == SP_INIT_TEXT ? c->init_arg : NULL, err);
    sp__params_forward(&t->prm, 0, NULL);
    return sp_peft_export_prefix(dir, t->prm.prefix, t->prm.n_prefix, &t->model, c->base_model,
                                 t->prm.hidden, err);
}

/* Rank 0 writes out/adapter (only when missing if only_missing); all ranks learn the outcome. */
static int export_adapter(trainer *t, int only_missing, sp_error *err) {
    int rc = 0;
    if (is_rank0(t)) {
        char dir[4200], file[4300];
        struct stat st;
        snprintf(dir, sizeof dir, "%s/adapter", t->c->out_dir);
        snprintf(file, sizeof file, "%s/adapter_model.safetensors", dir);
        if (!only_missing || stat(file, &st) != 0) rc = write_adapter(t, dir, err);
    }
    if (sp_dist_rank0_agree(rc, "export the adapter", err)) return -1;
    return 0;
}

/* The end of a run: the last evaluation, the final checkpoint (the only checkpoint ever
 * written at the last step, so a resume that finds one knows the run is finished), the
 * adapter. */
static int finish(trainer *t, sp_error *err) {
    int is_best;
    if (evaluate(t, &is_best, err) || checkpoint(t, is_best, err)) return -1;
    return export_adapter(t, 0, err);
}

/* Resumed at the last step: everything was written; only an adapter lost to a crash after the
 * final checkpoint is written again. Nothing else changes (metrics, checkpoints, config). */
static int already_finished(trainer *t, sp_error *err) {
    if (export_adapter(t, 1, err)) return -1;
    if (is_rank0(t)) /* even with --quiet: it says why nothing happened */
        fprintf(stderr,
                "softprompt train: the run in %s finished at step %lld; nothing to do (its "
                "checkpoints, metrics and adapter are unchanged)\n",
                t->c->out_dir, (long long)t->step);
    return 0;
}

static int loop(trainer *t, sp_error *err) {
    const sp_train_config *c = t->c;
    double t0 = sp__now(), last_loss = NAN;
    int64_t first_step = t->step, first_tokens = t->tokens_seen;
    print_start(t);
    while (t->step < t->total_steps) {
        step_totals tot;
        double gnorm = 0, ts = sp__now();
        if (train_step(t, &tot, &gnorm, err)) return -1;
        last_loss = tot.loss_sum / tot.n_targets;
        if (is_rank0(t))
            sp__run_log_step(&t->log, t->step, last_loss, sp_optim_lr(&t->opt[0].cfg, t->step),
                             gnorm, (int64_t)tot.n_tokens, sp__now() - ts,
                             c->log_every > 0 && t->step % c->log_every == 0);
        if (tot.stop && t->step < t->total_steps) {
            if (is_rank0(t))
                fprintf(stderr, "\nsoftprompt train: stop requested; checkpointing step %lld\n",
                        (long long)t->step);
            return checkpoint(t, 0, err) ? -1 : SP_EXIT_STOPPED;
        }
        if (t->step == t->total_steps) break;
        int is_best = 0, evaluated = c->eval_every > 0 && t->step % c->eval_every == 0;
        if (evaluated && evaluate(t, &is_best, err)) return -1;
        if ((c->save_every > 0 && t->step % c->save_every == 0) || is_best)
            if (checkpoint(t, is_best, err)) return -1;
    }
    double seconds = sp__now() - t0;
    if (finish(t, err)) return -1;
    print_summary(t, t->step - first_step, t->tokens_seen - first_tokens, seconds, last_loss);
    return 0;
}

/* train --check: everything a run needs was found in order; what the run would do. */
static void report_check(const trainer *t, int resumed) {
    if (!is_rank0(t)) return;
    const sp_train_config *c = t->c;
    char what[160];
    describe_trained(t, what, sizeof what);
    printf("ok: %s: %s, %d layers, d %d; %s: %lld examples%s%s; %s; ", c->model_dir,
           sp_arch_model_type(t->model.cfg.arch), t->model.cfg.n_layer, t->model.cfg.d_model,
           c->train_path, (long long)sp_dataset_n_examples(t->train),
           c->valid_path ? ", valid " : "", c->valid_path ? c->valid_path : "", what);
    if (!resumed)
        printf("a new run of %lld steps in %s\n", (long long)t->total_steps, c->out_dir);
    else if (t->step == t->total_steps)
        printf("the run in %s is finished (step %lld): nothing to do\n", c->out_dir,
               (long long)t->step);
    else
        printf("continues the run in %s at step %lld of %lld\n", c->out_dir, (long long)t->step,
               (long long)t->total_steps);
}

static void teardown(trainer *t) {
    /* a run refused before it started removes what it made: the lock, the directories */
    sp__run_lock_release(&t->lock, !t->started);
    if (!t->started && t->created_ckpt) rmdir(t->ckpt_dir);
    if (!t->started && t->created_out) rmdir(t->c->out_dir);
    sp__run_log_close(&t->log);
    sp_batch_data_free(&t->mb);
    sp__data_order_free(&t->order);
    for (int i = 0; i < SP__SEG_MAX; i++) sp_optim_free(&t->opt[i]);
    sp__params_free(&t->prm);
    free(t->batch_ids), free(t->reduce), free(t->bad), free(t->example_grad);
    sp_team_free(t->team);
    if (t->valid) sp_dataset_close(t->valid);
    if (t->train) sp_dataset_close(t->train);
    sp_model_free(&t->model);
}

int sp_train_run(const sp_train_config *c, const sp_dist *d, sp_error *err) {
    trainer t;
    memset(&t, 0, sizeof t);
    t.c = c, t.d = d;
    read_fault(&t);
    sp__signals_install();
    int resumed = 0, rc = setup(&t, err);
    if (rc == 0) rc = resume_or_init(&t, &resumed, err);
    if (rc == 0 && c->check) {
        report_check(&t, resumed);
    } else if (rc == 0 && resumed && t.step == t.total_steps) {
        rc = already_finished(&t, err);
    } else if (rc == 0) {
        t.started = 1;
        rc = write_run_config(&t, err);
        if (rc == 0 && is_rank0(&t))
            rc = sp__run_log_open(&t.log, c->out_dir, resumed ? t.step : -1, c->quiet,
                                  t.total_steps, err);
        if (sp_dist_rank0_agree(rc, "write the run's configuration or metrics", err)) rc = -1;
        if (rc == 0) rc = loop(&t, err);
    }
    teardown(&t);
    return rc;
}
