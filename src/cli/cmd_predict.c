/* `softprompt predict`: class predictions of one or more prompts for raw records or a prepared
 * set, written in input order (the work is sp_predict, include/softprompt/predict.h). */
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
#include "io/fileutil.h"
#include "softprompt/checkpoint.h"
#include "softprompt/predict.h"
#include "softprompt/train.h"
#include "util/escape.h"

typedef struct predict_args {
    const char *model, *input, *input_format, *data, *tokenizer, *out, *metrics, *format, *method;
    sp_format_options fmt;
    const char *prompts[SP_PREDICT_MAX_PROMPTS];
    int n_prompts;
    int micro_batch, threads, force, allow_model_mismatch, allow_tokenizer_mismatch, quiet, check;
    int64_t chunk;
    sp_weights weights;
} predict_args;

#define CMD "predict"
#define AT(field) offsetof(predict_args, field)

static const char *add_prompt(void *args, const char *value) {
    predict_args *a = args;
    if (a->n_prompts == SP_PREDICT_MAX_PROMPTS) return "at most " SP_XSTR(SP_PREDICT_MAX_PROMPTS);
    a->prompts[a->n_prompts++] = value;
    return NULL;
}

static const sp__flag FLAGS[] = {
    SP_OPT_STR("model", AT(model), "DIR", "Hugging Face model directory", .flags = SP_FLAG_REQUIRED,
               .group = "model and prompts"),
    SP_OPT_CUSTOM("prompt", 0, "PATH", add_prompt,
                  "a checkpoint (.h5: a prompt, a prefix or both), a PEFT adapter\n"
                  "(PROMPT_TUNING or PREFIX_TUNING; directory or\n"
                  "adapter_model.safetensors), a Lester .npy or a KoboldAI .zip;\n"
                  "repeat for an ensemble (each prompt and their mean and vote);\n"
                  "a prefix alone leaves the soft slots out",
                  .flags = SP_FLAG_REQUIRED | SP_FLAG_REPEAT),
    SP_OPT_METHOD(AT(method), "what every --prompt must hold (default: whatever it holds):\n"
                              "prompt, prefix, ptuning-v2 or prompt+prefix"),
    SP_OPT_SWITCH("allow-model-mismatch", AT(allow_model_mismatch), 1,
                  "use a checkpoint trained for another model (a warning instead\n"
                  "of the refusal)"),
    SP_OPT_STR("input", AT(input), "FILE",
               "raw records (.jsonl, .csv, .tsv, .json) rendered as `prepare`\n"
               "renders them; a record without the label field is unlabelled",
               .group = "input (one of --input and --data)"),
    SP_OPT_STR("data", AT(data), "FILE.h5",
               "a classification set made by `softprompt prepare` (its\n"
               "template and verbalizer are used)"),
    SP_OPT_INPUT_FORMAT("input-format", AT(input_format),
                        "jsonl | json | csv | tsv (default: from the extension)"),
    SP_OPT_STR("tokenizer", AT(tokenizer), "DIR",
               "tokenizer for --input, and to check --data against (default:\n"
               "the model's)"),
    SP_OPT_SWITCH("allow-tokenizer-mismatch", AT(allow_tokenizer_mismatch), 1,
                  "use --data prepared with another tokenizer than the model's"),
    SP_OPT_STR("template", AT(fmt.template_spec), "T",
               "as for prepare; a template without soft tokens gets the\n"
               "prompt's length of them prepended"),
    SP_OPT_STR("verbalizer", AT(fmt.verbalizer_spec), "V",
               "'0= terrible,1= great', as for prepare (required with --input)"),
    SP_OPT_STR("text-field", AT(fmt.text_field), "NAME", "field holding the text (default: text)"),
    SP_OPT_STR("label-field", AT(fmt.label_field), "NAME",
               "field holding the label, when there is one (default: label)"),
    SP_OPT_INT("prompt-length", AT(fmt.prompt_length), "N", 0, SP_TEMPLATE_MAX_SOFT,
               "soft tokens prepended to a template without any (default:\n"
               "the prompt's length)"),
    SP_OPT_INT("max-length", AT(fmt.max_length), "N", 0, 1 << 30,
               "longest example in tokens (default " SP_XSTR(
                   SP_PREPARE_DEFAULT_MAX_LENGTH) ", at most the model's\n"
                                                  "positions; 0: no limit)"),
    SP_OPT_STR("truncate-field", AT(fmt.truncate_field), "NAME",
               "the only field that may be cut (default: the text field)"),
    SP_OPT_STR("out", AT(out), "FILE",
               "one row per input, in input order (refused if it exists,\n"
               "unless --force; built in FILE.partial, resumable)",
               .flags = SP_FLAG_REQUIRED, .group = "output"),
    SP_OPT_STR("format", AT(format), "F", "jsonl (default) | csv | tsv"),
    SP_OPT_STR("metrics", AT(metrics), "FILE",
               "labelled inputs: accuracy, macro-F1, confusion matrices and the\n"
               "majority-class baseline as JSON"),
    SP_OPT_SWITCH("force", AT(force), 1,
                  "overwrite --out and --metrics; start over an unfinished run\n"
                  "of other inputs or options"),
    SP_OPT_SWITCH("quiet", AT(quiet), 1, "print nothing on success"),
    SP_OPT_SWITCH("check", AT(check), 1,
                  "check the model, prompts, inputs and output and say what a run\n"
                  "would do, computing and writing nothing (scripts/submit --predict)"),
    SP_OPT_INT("micro-batch", AT(micro_batch), "N", 1, 1 << 20,
               "examples per engine call (8); each is one sequence per prompt", .group = "running"),
    SP_OPT_INT64("chunk", AT(chunk), "N", 1, (double)((int64_t)1 << 40),
                 "examples per output chunk: the unit of progress, of resuming\n"
                 "and of the ranks' shares (default " SP_XSTR(SP_PREDICT_DEFAULT_CHUNK) ")"),
    SP_OPT_INT("threads", AT(threads), "N", 1, 4096, "threads per rank (as for train)"),
    SP_OPT_WEIGHTS(AT(weights)),
    {0},
};

static const sp__flag_spec SPEC = {
    .cmd = CMD,
    .usage = "usage: softprompt predict --model DIR --prompt PATH [--prompt PATH ...]\n"
             "                          (--input FILE --verbalizer V [--template T] | --data "
             "FILE.h5)\n"
             "                          --out FILE [--format jsonl|csv|tsv] [options]\n",
    .about =
        "Labels inputs with tuned prompts: for each input, in input order, the predicted class,\n"
        "the class names, each class's probability (a softmax over the verbalizer words'\n"
        "logits) and those logits. With several prompts: each prompt's prediction and the\n"
        "ensemble's (the mean probability's argmax, and the majority vote). Labelled inputs\n"
        "also give accuracy, macro-F1, the confusion matrix and the majority-class baseline.\n"
        "Runs alone or under mpirun/srun (ranks share the chunks); a run stopped by SIGTERM,\n"
        "SIGUSR1 or SIGINT exits with status " SP_XSTR(
            SP_EXIT_STOPPED) " and the same command continues it. See\n"
                             "docs/inference.md.\n",
    .flags = FLAGS,
    .epilog = "Exit status: 0 success, 1 bad input or I/O error (no output is published), 2 usage\n"
              "error, " SP_XSTR(SP_EXIT_STOPPED) " stopped by a signal (resumable).\n",
};

static void usage(FILE *out) {
    sp__flags_usage(&SPEC, out);
}

static int parse_format(const char *s, sp_predict_format *f) {
    if (!s || !strcmp(s, "jsonl")) return *f = SP_PREDICT_JSONL, 0;
    if (!strcmp(s, "csv")) return *f = SP_PREDICT_CSV, 0;
    if (!strcmp(s, "tsv")) return *f = SP_PREDICT_TSV, 0;
    return -1;
}

static int parse_args(int argc, char **argv, predict_args *a, sp_predict_format *f) {
    memset(a, 0, sizeof *a);
    a->micro_batch = 8, a->chunk = SP_PREDICT_DEFAULT_CHUNK;
    a->fmt.prompt_length = -1, a->fmt.max_length = -1;
    a->fmt.input_eos = -1; /* automatic, as prepare's default */
    char *pos[argc > 0 ? argc : 1];
    int n_pos, rc = sp__flags_parse(&SPEC, argc, argv, a, pos, &n_pos);
    if (rc) return rc;
    if (!a->input == !a->data)
        return sp__flag_usage_error(CMD, "give one of --input FILE and --data FILE.h5");
    if (a->input && !a->fmt.verbalizer_spec)
        return sp__flag_usage_error(CMD, "--input needs --verbalizer (the classes' words)");
    static const char *const example_flags[] = {"template",       "verbalizer",    "text-field",
                                                "label-field",    "prompt-length", "max-length",
                                                "truncate-field", "input-format"};
    for (size_t i = 0; a->data && i < sizeof example_flags / sizeof *example_flags; i++)
        if (sp__flags_given(argc, argv, example_flags[i]))
            return sp__flag_usage_error(CMD, "--%s is for --input; --data holds its examples",
                                        example_flags[i]);
    if (parse_format(a->format, f))
        return sp__flag_bad(CMD, "--format", a->format, "jsonl, csv or tsv");
    return 0;
}

/* ---- prompts and inputs -------------------------------------------------------------------- */

typedef struct loaded {
    sp_prompt_file pf[SP_PREDICT_MAX_PROMPTS];
    const float *prompts[SP_PREDICT_MAX_PROMPTS];
    const float *kv_prefixes[SP_PREDICT_MAX_PROMPTS];
    int n_kv_prefix[SP_PREDICT_MAX_PROMPTS];
    int n, any_prefix;
    sp_examples ex;
} loaded;

/* Every prompt, checked against the model and against the first one's length. */
static int load_prompts(const predict_args *a, const sp_model *m, loaded *l, int rank,
                        sp_error *err) {
    for (int k = 0; k < a->n_prompts; k++) {
        char *warnings = NULL;
        l->n = k + 1; /* freed by loaded_free whatever happens below */
        if (sp_prompt_load(a->prompts[k], &l->pf[k], err) ||
            sp_prompt_check_model(&l->pf[k], m, a->allow_model_mismatch, &warnings, err))
            return -1;
        if (warnings && rank == 0) fprintf(stderr, "softprompt predict: warning: %s", warnings);
        free(warnings);
        if (a->method && sp_prompt_check_method(&l->pf[k], a->method, err)) return -1;
        l->prompts[k] = l->pf[k].prompt;
        l->kv_prefixes[k] = l->pf[k].prefix, l->n_kv_prefix[k] = l->pf[k].n_prefix;
        l->any_prefix |= l->pf[k].n_prefix > 0;
        if (l->pf[k].n_prompt != l->pf[0].n_prompt)
            return sp_fail(err,
                           "%s: the prompt has %d rows but %s has %d: an ensemble's prompts "
                           "fill the same soft slots",
                           a->prompts[k], l->pf[k].n_prompt, a->prompts[0], l->pf[0].n_prompt);
    }
    return 0;
}

/* Rank 0 checks a prepared set against the model first, as eval does (tokenizer, lengths, ids). */
static int check_data(const predict_args *a, const sp_model *m, const sp_dist *d, sp_error *err) {
    int rc = 0;
    if (d->rank == 0) {
        sp_dataset *ds = sp_dataset_open(a->data, err);
        rc = ds ? sp_train_check_datasets(m, &ds, 1, a->tokenizer ? a->tokenizer : a->model,
                                          a->allow_tokenizer_mismatch, err)
                : -1;
        if (ds) sp_dataset_close(ds);
    }
    return sp_dist_rank0_agree(rc, "check the data", err);
}

/* A prefix without a prompt leaves the examples' soft slots out, as eval does. */
static int fit_examples(loaded *l, sp_error *err) {
    if (l->pf[0].n_prompt > 0 || l->ex.n_soft == 0) return 0;
    return sp_examples_strip_soft(&l->ex, err);
}

static int load_examples(const predict_args *a, const sp_model *m, loaded *l, const sp_dist *d,
                         sp_error *err) {
    if (a->data)
        return check_data(a, m, d, err) || sp_examples_from_dataset(a->data, &l->ex, err)
                   ? -1
                   : fit_examples(l, err);
    sp_prepare_options o;
    sp_prepare_options_default(&o);
    o.tokenizer = a->tokenizer ? a->tokenizer : a->model;
    o.input = a->input, o.format = a->input_format, o.fmt = a->fmt;
    if (o.fmt.prompt_length < 0) o.fmt.prompt_length = l->pf[0].n_prompt;
    if (o.fmt.max_length < 0) /* not given: prepare's default, within the model's positions */
        o.fmt.max_length = m->cfg.n_ctx < SP_PREPARE_DEFAULT_MAX_LENGTH
                               ? m->cfg.n_ctx
                               : SP_PREPARE_DEFAULT_MAX_LENGTH;
    int rc = sp_examples_from_records(&o, &l->ex, err);
    return rc == SP_PREPARE_BAD_OPTION ? -1 : rc ? rc : fit_examples(l, err);
}

static void loaded_free(loaded *l) {
    for (int k = 0; k < l->n; k++) sp_prompt_file_free(&l->pf[k]);
    sp_examples_free(&l->ex);
}

/* ---- metrics ------------------------------------------------------------------------------- */

static const char *predictor_name(const predict_args *a, int k) {
    return k < a->n_prompts    ? a->prompts[k]
           : k == a->n_prompts ? "ensemble (mean)"
                               : "ensemble (vote)";
}

static json_t *num(double x) {
    return isfinite(x) ? json_real(x) : json_null();
}

static json_t *metrics_json(const predict_args *a, const sp_predict_metrics *m,
                            const sp_examples *ex) {
    double base_acc;
    int major = sp_predict_majority(m, &base_acc);
    json_t *classes = json_array(), *preds = json_array();
    for (int c = 0; c < m->n_classes; c++)
        json_array_append_new(classes, json_string(ex->class_names[c]));
    for (int k = 0; k < m->n_predictors; k++) {
        json_t *conf = json_array();
        for (int t = 0; t < m->n_classes; t++) {
            json_t *row = json_array();
            for (int p = 0; p < m->n_classes; p++)
                json_array_append_new(
                    row,
                    json_integer(m->confusion[((size_t)k * m->n_classes + t) * m->n_classes + p]));
            json_array_append_new(conf, row);
        }
        json_array_append_new(preds,
                              json_pack("{s:s, s:o, s:o, s:o}", "name", predictor_name(a, k),
                                        "accuracy", num(sp_predict_accuracy(m, k)), "macro_f1",
                                        num(sp_predict_macro_f1(m, k)), "confusion", conf));
    }
    return json_pack("{s:I, s:I, s:o, s:{s:s, s:o}, s:o}", "examples", (json_int_t)m->n_examples,
                     "labelled", (json_int_t)m->n_labelled, "classes", classes, "majority_baseline",
                     "class", ex->class_names[major], "accuracy", num(base_acc), "predictors",
                     preds);
}

static void print_metrics(const predict_args *a, const sp_predict_metrics *m,
                          const sp_examples *ex) {
    printf("%s: %lld rows (%lld labelled)\n", a->out, (long long)m->n_examples,
           (long long)m->n_labelled);
    if (m->n_labelled == 0) return;
    double base_acc;
    int major = sp_predict_majority(m, &base_acc);
    char name[128];
    for (int k = 0; k < m->n_predictors; k++) {
        int64_t right = 0;
        for (int c = 0; c < m->n_classes; c++)
            right += m->confusion[((size_t)k * m->n_classes + c) * m->n_classes + c];
        printf("%-24s accuracy %.4f (%lld/%lld)  macro-F1 %.4f\n", predictor_name(a, k),
               sp_predict_accuracy(m, k), (long long)right, (long long)m->n_labelled,
               sp_predict_macro_f1(m, k));
    }
    printf("majority class %s: accuracy %.4f (the baseline)\n",
           sp__escape(ex->class_names[major], name, sizeof name), base_acc);
    int k = m->n_predictors > 1 ? a->n_prompts : 0; /* the ensemble's mean, or the prompt */
    printf("confusion of %s (rows: label, columns: predicted)\n", predictor_name(a, k));
    for (int t = 0; t < m->n_classes; t++) {
        printf("  %-16s", sp__escape(ex->class_names[t], name, sizeof name));
        for (int p = 0; p < m->n_classes; p++)
            printf(" %8lld",
                   (long long)m->confusion[((size_t)k * m->n_classes + t) * m->n_classes + p]);
        printf("\n");
    }
}

static int write_metrics(const predict_args *a, const sp_predict_metrics *m, const sp_examples *ex,
                         sp_error *err) {
    json_t *j = metrics_json(a, m, ex);
    char *text =
        j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17)) : NULL;
    json_decref(j);
    if (!text) return sp_fail(err, "%s: out of memory", a->metrics);
    size_t len = strlen(text);
    text[len] = '\n';
    int rc = sp__write_file_atomic(a->metrics, text, len + 1, err);
    free(text);
    return rc;
}

/* ---- the run ------------------------------------------------------------------------------- */

static void print_check(const predict_args *a, const loaded *l, const sp_predict_metrics *m) {
    printf("ok: %lld inputs (%lld labelled) of %s, %d prompt%s of %d soft tokens",
           (long long)l->ex.n, (long long)l->ex.n_labelled, l->ex.source, l->n, l->n > 1 ? "s" : "",
           l->pf[0].n_prompt);
    if (l->any_prefix) printf(" (and key/value prefixes)");
    printf(", %d classes; writes %s", l->ex.n_classes, a->out);
    if (m->resumed_from > 0)
        printf(", continuing after chunk %lld of %lld", (long long)m->resumed_from,
               (long long)m->chunks);
    printf("\n");
}

/* Rank 0 refuses existing --metrics before any work. */
static int check_metrics_path(const predict_args *a, sp_error *err) {
    FILE *f = a->metrics && !a->force ? fopen(a->metrics, "r") : NULL;
    if (!f) return 0;
    fclose(f);
    return sp_fail(err, "%s: already exists (use --force to overwrite it)", a->metrics);
}

static int predict(const predict_args *a, sp_predict_format format, const sp_dist *d,
                   sp_error *err) {
    int capped, threads = sp_dist_threads(d, a->threads, &capped);
    openblas_set_num_threads(threads);
    if (sp_dist_rank0_agree(d->rank == 0 ? check_metrics_path(a, err) : 0, "check --metrics", err))
        return -1;
    sp_model m;
    if (sp_model_load_shared(&m, a->model, a->weights, sp_dist_model_share(), err)) return -1;
    loaded l = {0};
    int rc = load_prompts(a, &m, &l, d->rank, err);
    if (rc == 0) rc = load_examples(a, &m, &l, d, err);
    sp_team *team = rc == 0 ? sp_team_new(&m, threads) : NULL;
    if (rc == 0 && !team) rc = sp_fail(err, "out of memory or threads for %d workers", threads);
    char fp[17];
    if (rc == 0) sp_model_fingerprint(&m, fp);
    sp_predict_options o = {.n_prompts = l.n,
                            .prompts = l.prompts,
                            .n_prompt = l.pf[0].n_prompt,
                            .kv_prefixes = l.any_prefix ? l.kv_prefixes : NULL,
                            .n_kv_prefix = l.n_kv_prefix,
                            .micro_batch = a->micro_batch,
                            .chunk = a->chunk,
                            .format = format,
                            .out = a->out,
                            .force = a->force,
                            .model_fingerprint = fp,
                            .check = a->check};
    sp_predict_metrics pm = {0};
    if (rc == 0) rc = sp_predict(team, &l.ex, &o, d, &pm, err);
    if (rc == 0 && a->check) {
        if (d->rank == 0) print_check(a, &l, &pm);
    } else if (rc >= 0 && d->rank == 0 && pm.resumed_from > 0)
        fprintf(stderr, "softprompt predict: %s: continued after chunk %lld of %lld\n", a->out,
                (long long)pm.resumed_from, (long long)pm.chunks);
    if (rc == 0 && d->rank == 0 && !a->quiet && !a->check) print_metrics(a, &pm, &l.ex);
    if (rc == 0 && a->metrics && !a->check)
        rc = sp_dist_rank0_agree(d->rank == 0 ? write_metrics(a, &pm, &l.ex, err) : 0,
                                 "write --metrics", err);
    sp_predict_metrics_free(&pm);
    sp_team_free(team);
    loaded_free(&l);
    sp_model_free(&m);
    return rc;
}

typedef struct body_args {
    predict_args a;
    sp_predict_format format;
} body_args;

static int predict_body(void *args, const sp_dist *d, sp_error *err) {
    body_args *b = args;
    int rc = predict(&b->a, b->format, d, err);
    return rc == SP_EXIT_STOPPED ? rc : rc ? -1 : 0;
}

static int run(int argc, char **argv) {
    body_args b;
    int rc = parse_args(argc, argv, &b.a, &b.format);
    return rc ? rc : sp__cli_run_ranks(CMD, &argc, &argv, predict_body, &b);
}

const sp__command SP_CMD_PREDICT = {
    "predict", "label inputs with one or more tuned prompts (and their ensemble)", run, usage};
