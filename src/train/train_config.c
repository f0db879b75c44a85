#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train/internal.h"

static const char *const INIT_NAMES[] = {
    [SP_INIT_RANDOM] = "random", [SP_INIT_VOCAB] = "vocab",   [SP_INIT_VOCAB_TOP] = "vocab-top",
    [SP_INIT_TEXT] = "text",     [SP_INIT_LABELS] = "labels", [SP_INIT_FILE] = "file",
};

const char *sp_init_kind_name(sp_init_kind k) {
    return INIT_NAMES[k];
}

int sp_init_kind_parse(const char *name, sp_init_kind *out) {
    for (int k = 0; k <= SP_INIT_FILE; k++)
        if (strcmp(name, INIT_NAMES[k]) == 0) return *out = (sp_init_kind)k, 0;
    return -1;
}

void sp_train_config_default(sp_train_config *c) {
    memset(c, 0, sizeof *c);
    c->global_batch = 32; /* Lester et al. */
    c->micro_batch = 8;
    sp_optim_config_default(&c->optim, SP_OPTIM_ADAFACTOR);
    c->init = SP_INIT_VOCAB_TOP;
    c->seed = 42;
    c->log_every = 10;
    c->keep = 2;
    c->resume = "auto";
    c->epochs = 1.0;
}

/* The method's keys, written only for methods other than prompt: a prompt run's configuration
 * (and so its checkpoints) are what they were before methods existed. */
static void add_method(json_t *cfg, const sp_train_config *c) {
    if (c->method == SP_METHOD_PROMPT) return;
    json_object_set_new(cfg, "method", json_string(sp_method_name(c->method)));
    json_object_set_new(cfg, "prefix_length", json_integer(c->prefix_length));
    json_object_set_new(cfg, "prefix_hidden", json_integer(c->prefix_hidden));
    json_object_set_new(cfg, "prefix_dropout", json_real(c->prefix_dropout));
}

json_t *sp__train_config_to_json(const sp_train_config *c, int n_prompt, int64_t total_steps) {
    const sp_optim_config *o = &c->optim;
    json_t *optim = json_pack(
        "{s:s, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:b, s:f, s:s, s:I, s:I}", "kind",
        sp_optim_kind_name(o->kind), "lr", o->lr, "weight_decay", o->weight_decay, "beta1",
        o->beta1, "beta2", o->beta2, "eps", o->eps, "decay_rate", o->decay_rate, "eps1", o->eps1,
        "eps2", o->eps2, "clip_threshold", o->clip_threshold, "scale_parameter", o->scale_parameter,
        "clip_norm", o->clip_norm, "schedule", sp_sched_kind_name(o->schedule), "warmup_steps",
        (json_int_t)o->warmup_steps, "total_steps", (json_int_t)o->total_steps);
    json_t *cfg = json_pack(
        "{s:s, s:s, s:s?, s:I, s:I, s:i, s:i, s:i, s:o, s:s, s:s?, s:I, s:b, "
        "s:I, s:I, s:i, s:s, s:I}",
        "model", c->model_dir, "train", c->train_path, "valid", c->valid_path, "steps",
        (json_int_t)total_steps, "seed", (json_int_t)c->seed, "prompt_length", n_prompt,
        "global_batch", c->global_batch, "micro_batch", c->micro_batch, "optimizer", optim, "init",
        sp_init_kind_name(c->init), "init_arg", c->init_arg, "eval_every",
        (json_int_t)c->eval_every, "deterministic", c->deterministic, "save_every",
        (json_int_t)c->save_every, "max_eval_examples", (json_int_t)c->max_eval_examples, "keep",
        c->keep, "metric", c->metric ? c->metric : "", "log_every", (json_int_t)c->log_every);
    if (cfg) add_method(cfg, c);
    return cfg;
}

/* Values must match exactly: a resumed run is only bitwise the same run if they do. ("steps"
 * is checked separately: with a constant schedule the lr of a step does not depend on the
 * total, so a run may be continued for more steps.) */
static const char *const TRAJECTORY_KEYS[] = {"seed", "prompt_length", "global_batch",
                                              "deterministic"};
static const char *const OPTIM_KEYS[] = {
    "kind",       "lr",           "weight_decay", "beta1",          "beta2",           "eps",
    "decay_rate", "eps1",         "eps2",         "clip_threshold", "scale_parameter", "clip_norm",
    "schedule",   "warmup_steps", "total_steps"};

static int compare_key(json_t *saved, json_t *now, const char *key, const char *prefix,
                       const char *path, sp_error *err) {
    json_t *a = json_object_get(saved, key), *b = json_object_get(now, key);
    if (a && b && json_equal(a, b)) return 0;
    char *sa = a ? json_dumps(a, JSON_ENCODE_ANY) : strdup("(absent)");
    char *sb = b ? json_dumps(b, JSON_ENCODE_ANY) : strdup("(absent)");
    sp_fail(err,
            "%s: the checkpoint was made with %s%s = %s, this run has %s; resume with the "
            "same settings or start a new output directory",
            path, prefix, key, sa, sb);
    free(sa), free(sb);
    return -1;
}

/* A run continues with the method and prefix shape it was started with (a configuration
 * without "method" is a prompt run's). */
static int compare_method(json_t *saved, json_t *now, const char *path, sp_error *err) {
    json_t *a = json_object_get(saved, "method"), *b = json_object_get(now, "method");
    const char *sa = json_is_string(a) ? json_string_value(a) : "prompt";
    const char *sb = json_is_string(b) ? json_string_value(b) : "prompt";
    if (strcmp(sa, sb) != 0)
        return sp_fail(err,
                       "%s: the checkpoint was made with --method %s, this run has --method %s: "
                       "the trained values are of another kind; resume with --method %s or start "
                       "a new output directory",
                       path, sa, sb, sa);
    static const char *const keys[] = {"prefix_length", "prefix_hidden", "prefix_dropout"};
    for (size_t i = 0; a && i < sizeof keys / sizeof *keys; i++)
        if (compare_key(saved, now, keys[i], "", path, err)) return -1;
    return 0;
}

int sp__train_config_check_resume(const char *ckpt_json, const sp_train_config *c, int n_prompt,
                                  int64_t total_steps, const char *ckpt_path, sp_error *err) {
    json_error_t jerr;
    json_t *saved = json_loads(ckpt_json, 0, &jerr);
    if (!saved) return sp_fail(err, "%s: unreadable configuration: %s", ckpt_path, jerr.text);
    json_t *now = sp__train_config_to_json(c, n_prompt, total_steps);
    int rc = 0;
    if (rc == 0) rc = compare_method(saved, now, ckpt_path, err);
    for (size_t i = 0; rc == 0 && i < sizeof TRAJECTORY_KEYS / sizeof *TRAJECTORY_KEYS; i++)
        rc = compare_key(saved, now, TRAJECTORY_KEYS[i], "", ckpt_path, err);
    json_t *so = json_object_get(saved, "optimizer"), *no = json_object_get(now, "optimizer");
    json_t *sched = json_object_get(so, "schedule");
    int constant = json_is_string(sched) && strcmp(json_string_value(sched), "constant") == 0;
    if (rc == 0 && !constant) rc = compare_key(saved, now, "steps", "", ckpt_path, err);
    for (size_t i = 0; rc == 0 && i < sizeof OPTIM_KEYS / sizeof *OPTIM_KEYS; i++)
        rc = compare_key(so, no, OPTIM_KEYS[i], "optimizer.", ckpt_path, err);
    json_decref(saved);
    json_decref(now);
    return rc;
}
