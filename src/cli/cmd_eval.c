/* `softprompt eval`: loss and accuracy of a prompt (or of the template alone) on a dataset. */
#include <cblas.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/commands.h"
#include "cli/flags.h"
#include "cli/ranks.h"
#include "softprompt/checkpoint.h"
#include "softprompt/safetensors.h"
#include "softprompt/train.h"

typedef struct eval_args {
    const char *model, *data, *prompt;
    int micro_batch, threads, json;
    int64_t max_examples;
} eval_args;

#define CMD "eval"
#define AT(field) offsetof(eval_args, field)

static const sp_flag FLAGS[] = {
    SP_OPT_STR("model", AT(model), "DIR", "Hugging Face model directory",
               .flags = SP_FLAG_REQUIRED),
    SP_OPT_STR("data", AT(data), "FILE.h5", "dataset made by `softprompt prepare`",
               .flags = SP_FLAG_REQUIRED),
    SP_OPT_STR("prompt", AT(prompt), "PATH",
               "a checkpoint (.h5 with a \"prompt\" dataset) or a PEFT adapter\n"
               "(directory or adapter_model.safetensors)"),
    SP_OPT_INT("micro-batch", AT(micro_batch), "N", 1, 1 << 20, "examples per engine call (8)"),
    SP_OPT_INT64("max-examples", AT(max_examples), "N", 0, (double)((int64_t)1 << 40),
                 "only the first N examples"),
    SP_OPT_INT("threads", AT(threads), "N", 1, 4096, "threads per rank (as for train)"),
    SP_OPT_SWITCH("json", AT(json), 1, "print the result as one JSON object"),
    {NULL},
};

static const sp_flag_spec SPEC = {
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
    sp_flags_usage(&SPEC, out);
}

static int parse_args(int argc, char **argv, eval_args *a) {
    memset(a, 0, sizeof *a);
    a->micro_batch = 8;
    char *pos[argc > 0 ? argc : 1];
    int n_pos;
    return sp_flags_parse(&SPEC, argc, argv, a, pos, &n_pos);
}

/* A PEFT adapter: adapter_model.safetensors with prompt_embeddings [P, d]. */
static int read_peft_prompt(const char *path, float **prompt, int *P, int *d, sp_error *err) {
    struct stat st;
    char file[4200];
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        snprintf(file, sizeof file, "%s/adapter_model.safetensors", path);
    else
        snprintf(file, sizeof file, "%s", path);
    sp_st_file f;
    if (sp_st_open(&f, file, err)) return -1;
    const sp_st_tensor *t = sp_st_find(&f, "prompt_embeddings");
    int rc = 0;
    if (!t || t->ndim != 2 || !sp_dtype_is_float(t->dtype))
        rc = sp_fail(err,
                     "%s: expected a floating tensor 'prompt_embeddings' [P, d] (a PEFT "
                     "prompt-tuning adapter)",
                     file);
    if (rc == 0) {
        *P = (int)t->shape[0], *d = (int)t->shape[1];
        *prompt = malloc((size_t)t->numel * sizeof(float));
        sp_convert_to_f32(t->dtype, t->data, *prompt, (size_t)t->numel);
    }
    sp_st_close(&f);
    return rc;
}

static int load_prompt(const char *path, float **prompt, int *P, int *d, sp_error *err) {
    size_t n = strlen(path);
    if (n > 3 && strcmp(path + n - 3, ".h5") == 0)
        return sp_prompt_read_h5(path, prompt, P, d, err);
    return read_peft_prompt(path, prompt, P, d, err);
}

static void print_result(const eval_args *a, const sp_eval_result *r, const sp_dataset *ds) {
    const sp_dataset_meta *meta = sp_dataset_get_meta(ds);
    double loss = r->n_targets ? r->loss_sum / (double)r->n_targets : 0;
    double acc = r->n_examples ? (double)r->correct / (double)r->n_examples : 0;
    if (a->json) {
        printf("{\"examples\": %lld, \"targets\": %lld, \"loss\": %.6f", (long long)r->n_examples,
               (long long)r->n_targets, loss);
        if (r->n_classes)
            printf(", \"accuracy\": %.6f, \"correct\": %lld", acc, (long long)r->correct);
        printf(", \"prompt\": %s%s%s}\n", a->prompt ? "\"" : "", a->prompt ? a->prompt : "null",
               a->prompt ? "\"" : "");
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
        printf("  %-16s", meta->class_names[c]);
        for (int p = 0; p < r->n_classes; p++) {
            printf(" %8lld", (long long)r->confusion[c * r->n_classes + p]);
            total += r->confusion[c * r->n_classes + p];
        }
        printf("   recall %.4f\n",
               total ? (double)r->confusion[c * r->n_classes + c] / total : 0.0);
    }
}

static int evaluate(const eval_args *a, const sp_dist *d, sp_error *err) {
    int capped, threads = sp_dist_threads(d, a->threads, &capped);
    openblas_set_num_threads(threads);
    sp_model m;
    if (sp_model_load(&m, a->model, err)) return -1;
    sp_dataset *ds = sp_dataset_open(a->data, err);
    float *prompt = NULL;
    int P = 0, dim = m.cfg.d_model, rc = ds ? 0 : -1;
    if (rc == 0 && a->prompt) rc = load_prompt(a->prompt, &prompt, &P, &dim, err);
    if (rc == 0 && a->prompt && (dim != m.cfg.d_model || P != sp_dataset_get_meta(ds)->n_soft))
        rc = sp_fail(err,
                     "%s: prompt [%d, %d] does not fit: the dataset has %d soft slots and the "
                     "model width is %d",
                     a->prompt, P, dim, sp_dataset_get_meta(ds)->n_soft, m.cfg.d_model);
    sp_team *team = rc == 0 ? sp_team_new(&m, threads) : NULL;
    if (rc == 0 && !team) rc = sp_fail(err, "out of memory or threads for %d workers", threads);
    sp_eval_result r;
    if (rc == 0) rc = sp_evaluate(team, ds, prompt, P, a->micro_batch, a->max_examples, d, &r, err);
    if (rc == 0 && d->rank == 0) print_result(a, &r, ds);
    if (rc == 0) sp_eval_result_free(&r);
    sp_team_free(team);
    free(prompt);
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
    return rc ? rc : sp_cli_run_ranks("eval", &argc, &argv, eval_body, &a);
}

const sp_command SP_CMD_EVAL = {
    "eval", "evaluate a prompt, or the zero-shot template, on a dataset", run, usage};
