/* `softprompt eval`: loss and accuracy of a prompt (or of the template alone) on a dataset. */
#include <cblas.h>
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/flags.h"
#include "cli/ranks.h"
#include "softprompt/checkpoint.h"
#include "softprompt/train.h"
#include "util/escape.h"

typedef struct eval_args {
    const char *model, *data, *prompt, *method;
    int micro_batch, threads, json;
    int allow_model_mismatch; /* --allow-model-mismatch: a checkpoint of another model is used */
    int allow_tokenizer_mismatch;
    const char *tokenizer;
    int64_t max_examples;
    sp_weights weights;
} eval_args;

#define CMD "eval"
#define AT(field) offsetof(eval_args, field)

static const sp__flag FLAGS[] = {
    SP_OPT_STR("model", AT(model), "DIR", "Hugging Face model directory",
               .flags = SP_FLAG_REQUIRED),
    SP_OPT_STR("data", AT(data), "FILE.h5", "dataset made by `softprompt prepare`",
               .flags = SP_FLAG_REQUIRED),
    SP_OPT_STR("prompt", AT(prompt), "PATH",
               "a checkpoint (.h5 with a \"prompt\" and/or \"prefix\" dataset) or a\n"
               "PEFT adapter (PROMPT_TUNING or PREFIX_TUNING; directory or\n"
               "adapter_model.safetensors); a prefix leaves the soft slots out"),
    SP_OPT_METHOD(AT(method), "what --prompt must hold (default: whatever it holds): prompt,\n"
                              "prefix, ptuning-v2 or prompt+prefix"),
    SP_OPT_INT("micro-batch", AT(micro_batch), "N", 1, 1 << 20, "examples per engine call (8)"),
    SP_OPT_INT64("max-examples", AT(max_examples), "N", 0, (double)((int64_t)1 << 40),
                 "only the first N examples"),
    SP_OPT_INT("threads", AT(threads), "N", 1, 4096, "threads per rank (as for train)"),
    SP_OPT_WEIGHTS(AT(weights)),
    SP_OPT_SWITCH("json", AT(json), 1, "print the result as one JSON object"),
    SP_OPT_STR("tokenizer", AT(tokenizer), "DIR",
               "the model's tokenizer, to check the dataset's against (default:\n"
               "the model directory)"),
    SP_OPT_SWITCH("allow-tokenizer-mismatch", AT(allow_tokenizer_mismatch), 1,
                  "evaluate a dataset prepared with another tokenizer than the model's"),
    SP_OPT_SWITCH("allow-model-mismatch", AT(allow_model_mismatch), 1,
                  "use a checkpoint trained for another model (a warning instead\n"
                  "of the refusal)"),
    {0},
};

static const sp__flag_spec SPEC = {
    .cmd = CMD,
    .usage = "usage: softprompt eval --model DIR --data FILE.h5 [--prompt CKPT] [options]\n",
    .about =
        "Evaluates a trained prompt on a dataset: mean cross-entropy over the target tokens and,\n"
        "for classification datasets, accuracy from the verbalizer logits with per-class counts.\n"
        "Without --prompt the soft slots are removed and the frozen model sees the template\n"
        "alone: the zero-shot baseline. Runs alone or under mpirun/srun (ranks split the data).\n",
    .flags = FLAGS,
};

static void usage(FILE *out) {
    sp__flags_usage(&SPEC, out);
}

static int parse_args(int argc, char **argv, eval_args *a) {
    memset(a, 0, sizeof *a);
    a->micro_batch = 8;
    char *pos[argc > 0 ? argc : 1];
    int n_pos;
    return sp__flags_parse(&SPEC, argc, argv, a, pos, &n_pos);
}

/* The result as one JSON object; loss (and accuracy) null when they are not numbers. */
static void print_json(const eval_args *a, const sp_eval_result *r, double loss, double acc) {
    json_t *j = json_pack("{s:I, s:I}", "examples", (json_int_t)r->n_examples, "targets",
                          (json_int_t)r->n_targets);
    json_object_set_new(j, "loss", isfinite(loss) ? json_real(loss) : json_null());
    if (r->n_classes) {
        json_object_set_new(j, "accuracy", isfinite(acc) ? json_real(acc) : json_null());
        json_object_set_new(j, "correct", json_integer((json_int_t)r->correct));
    }
    json_object_set_new(j, "prompt", a->prompt ? json_string(a->prompt) : json_null());
    char *s = json_dumps(j, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    if (s) printf("%s\n", s);
    free(s);
    json_decref(j);
}

static void print_result(const eval_args *a, const sp_eval_result *r, const sp_dataset *ds) {
    const sp_dataset_meta *meta = sp_dataset_get_meta(ds);
    double loss = r->loss_sum / (double)r->n_targets;
    double acc = (double)r->correct / (double)r->n_examples;
    if (a->json) {
        print_json(a, r, loss, acc);
        return;
    }
    printf("%s on %s: %lld examples, %lld targets\n",
           a->prompt ? a->prompt : "zero-shot (template only)", sp_dataset_path(ds),
           (long long)r->n_examples, (long long)r->n_targets);
    printf("loss      %.4f\n", loss);
    if (!r->n_classes) return;
    printf("accuracy  %.4f (%lld/%lld)\n", acc, (long long)r->correct, (long long)r->n_examples);
    printf("per class (rows: true class, columns: predicted)\n");
    for (int c = 0; c < r->n_classes; c++) {
        int64_t total = 0;
        char name[128];
        printf("  %-16s", sp__escape(meta->class_names[c], name, sizeof name));
        for (int p = 0; p < r->n_classes; p++) {
            printf(" %8lld", (long long)r->confusion[c * r->n_classes + p]);
            total += r->confusion[c * r->n_classes + p];
        }
        printf("   recall %.4f\n",
               total ? (double)r->confusion[c * r->n_classes + c] / total : 0.0);
    }
}

/* The prompt (sp_prompt_load: checkpoint, HDF5 file or PEFT adapter), checked against the model
 * and the dataset's soft slots. Warnings go to stderr on rank 0. */
static int load_prompt(const eval_args *a, const sp_model *m, const sp_dataset *ds,
                       sp_prompt_file *pf, int rank, sp_error *err) {
    char *warnings = NULL;
    if (sp_prompt_load(a->prompt, pf, err) ||
        sp_prompt_check_model(pf, m, a->allow_model_mismatch, &warnings, err))
        return -1;
    if (warnings && rank == 0) fprintf(stderr, "softprompt eval: warning: %s", warnings);
    free(warnings);
    int slots = sp_dataset_get_meta(ds)->n_soft;
    if (a->method && sp_prompt_check_method(pf, a->method, err)) return -1;
    if (pf->n_prompt == 0 && pf->n_prefix > 0) return 0; /* a prefix: the slots are left out */
    if (pf->n_prompt != slots)
        return sp_fail(err, "%s: the prompt has %d rows but %s has %d soft slots", a->prompt,
                       pf->n_prompt, sp_dataset_path(ds), slots);
    return 0;
}

/* Nothing to report is not a result: an empty set, or no target token to average the loss
 * over. A loss that is not a number means non-finite weights or activations. */
static int check_result(const sp_eval_result *r, const sp_dataset *ds, const eval_args *a,
                        sp_error *err) {
    if (r->n_examples == 0)
        return sp_fail(err, "%s holds no examples: nothing to evaluate", sp_dataset_path(ds));
    if (r->n_targets == 0)
        return sp_fail(err, "%s: the %lld examples evaluated have no target tokens: no loss",
                       sp_dataset_path(ds), (long long)r->n_examples);
    double loss = r->loss_sum / (double)r->n_targets;
    if (!isfinite(loss))
        return sp_fail(err,
                       "the loss is %g: the model %s or the prompt holds non-finite values, or "
                       "they overflow (`softprompt info %s` checks the weights); the result is "
                       "meaningless",
                       loss, a->model, a->model);
    return 0;
}

/* Rank 0 checks the dataset against the model before any batch (sp_train_check_datasets). */
static int check_data(const eval_args *a, const sp_model *m, sp_dataset *ds, const sp_dist *d,
                      sp_error *err) {
    int rc = d->rank == 0
                 ? sp_train_check_datasets(m, &ds, 1, a->tokenizer ? a->tokenizer : a->model,
                                           a->allow_tokenizer_mismatch, err)
                 : 0;
    return sp_dist_rank0_agree(rc, "check the dataset", err);
}

static int evaluate(const eval_args *a, const sp_dist *d, sp_error *err) {
    int capped, threads = sp_dist_threads(d, a->threads, &capped);
    openblas_set_num_threads(threads);
    sp_model m;
    if (sp_model_load_shared(&m, a->model, a->weights, sp_dist_model_share(), err)) return -1;
    sp_dataset *ds = sp_dataset_open(a->data, err);
    sp_prompt_file pf = {0};
    int rc = ds ? 0 : -1;
    if (rc == 0) rc = check_data(a, &m, ds, d, err);
    if (rc == 0 && a->prompt) rc = load_prompt(a, &m, ds, &pf, d->rank, err);
    sp_team *team = rc == 0 ? sp_team_new(&m, threads) : NULL;
    if (rc == 0 && !team) rc = sp_fail(err, "out of memory or threads for %d workers", threads);
    sp_eval_result r;
    if (rc == 0)
        rc = sp_evaluate(team, ds,
                         &(sp_pass){.prompt = pf.prompt,
                                    .n_prompt = pf.n_prompt,
                                    .kv_prefix = pf.prefix,
                                    .n_kv_prefix = pf.n_prefix},
                         a->micro_batch, a->max_examples, d, &r, err);
    if (rc == 0) {
        int bad = r.n_examples == 0 || r.n_targets == 0;
        if (d->rank == 0 && !bad) print_result(a, &r, ds); /* also a NaN loss, as null */
        rc = check_result(&r, ds, a, err);
        sp_eval_result_free(&r);
    }
    sp_team_free(team);
    sp_prompt_file_free(&pf);
    if (ds) sp_dataset_close(ds);
    sp_model_free(&m);
    return rc;
}

static int eval_body(void *args, const sp_dist *d, sp_error *err) {
    return evaluate(args, d, err) ? -1 : 0;
}

static int run(int argc, char **argv) {
    eval_args a;
    int rc = parse_args(argc, argv, &a);
    return rc ? rc : sp__cli_run_ranks("eval", &argc, &argv, eval_body, &a);
}

const sp__command SP_CMD_EVAL = {
    "eval", "evaluate a prompt, or the zero-shot template, on a dataset", run, usage};
