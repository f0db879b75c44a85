/* The C API of libsoftprompt in one program: load a frozen model, a soft prompt and a dataset
 * made by `softprompt prepare`, run forward and backward (the prompt's gradient) over the
 * dataset's examples, and print the mean cross-entropy over the target tokens (what
 * `softprompt eval` reports as its loss) and the norm of the mean gradient.
 *
 *   sp_loss MODEL_DIR DATA.h5 PROMPT [MAX_EXAMPLES]
 *
 * PROMPT: a checkpoint of `softprompt train` (.h5) or a PEFT adapter. Build it against an
 * installed softprompt (docs/install.md):
 *   cc -O2 sp_loss.c $(pkg-config --cflags --libs softprompt) -lm -o sp_loss
 * or with CMake (find_package(softprompt), this directory's CMakeLists.txt). Exit status: 0, 1
 * for bad input (the message names the file and what is wrong), 2 for a usage error. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <softprompt/checkpoint.h>
#include <softprompt/dataset.h>
#include <softprompt/engine.h>
#include <softprompt/model.h>

#define MICRO_BATCH 8

typedef struct totals {
    double loss_sum;
    int64_t n_targets, n_examples;
} totals;

/* Runs the examples [0, n) of ds in micro-batches through the engine: loss sums and the
 * prompt's gradient (summed into grad). */
static int run_dataset(sp_worker *w, sp_dataset *ds, const sp_prompt_file *pf, int64_t n,
                       float *grad, totals *t, sp_error *err) {
    sp_batch_data bd;
    sp_batch_data_init(&bd);
    int rc = 0;
    for (int64_t first = 0; first < n && rc == 0; first += MICRO_BATCH) {
        int64_t ids[MICRO_BATCH];
        int k = 0;
        for (; k < MICRO_BATCH && first + k < n; k++) ids[k] = first + k;
        rc = sp_dataset_read_batch(ds, ids, k, &bd, err);
        if (rc != 0) break;
        sp_batch b = sp_batch_data_view(&bd);
        sp_pass pass = {.prompt = pf->prompt, .n_prompt = pf->n_prompt, .grad = grad};
        double loss = 0;
        rc = sp_engine_run(w, &b, &pass, &loss, err);
        t->loss_sum += loss;
        t->n_targets += b.n_targets;
        t->n_examples += k;
    }
    sp_batch_data_free(&bd);
    return rc;
}

/* Parses MAX_EXAMPLES: a whole number >= 1. */
static int parse_count(const char *s, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < 1) return -1;
    *out = v;
    return 0;
}

static int run(const char *model_dir, const char *data, const char *prompt, int64_t max_n,
               sp_error *err) {
    sp_model m = {0};
    sp_prompt_file pf = {0};
    sp_dataset *ds = NULL;
    sp_worker *w = NULL;
    float *grad = NULL;
    char *warnings = NULL;
    int rc = sp_model_load(&m, model_dir, err);
    if (rc == 0) rc = sp_prompt_load(prompt, &pf, err);
    if (rc == 0) rc = sp_prompt_check_model(&pf, &m, 0, &warnings, err);
    if (warnings) fputs(warnings, stderr);
    if (rc == 0 && !(ds = sp_dataset_open(data, err))) rc = -1;
    if (rc == 0) rc = sp_dataset_check_model(ds, &m.cfg, err);
    if (rc == 0 && sp_dataset_get_meta(ds)->n_soft != pf.n_prompt)
        rc = sp_fail(err, "%s: the dataset has %d soft slots, the prompt %s has %d vectors", data,
                     sp_dataset_get_meta(ds)->n_soft, prompt, pf.n_prompt);
    if (rc == 0 && !(w = sp_worker_new(&m))) rc = sp_fail(err, "out of memory (worker)");
    if (rc == 0 && !(grad = calloc((size_t)pf.n_prompt * (size_t)pf.d, sizeof *grad)))
        rc = sp_fail(err, "out of memory (gradient)");
    totals t = {0};
    if (rc == 0) {
        int64_t n = sp_dataset_n_examples(ds);
        rc = run_dataset(w, ds, &pf, max_n > 0 && max_n < n ? max_n : n, grad, &t, err);
    }
    if (rc == 0 && t.n_targets == 0) rc = sp_fail(err, "%s: no target tokens: no loss", data);
    if (rc == 0) {
        double norm = 0;
        for (size_t i = 0; i < (size_t)pf.n_prompt * (size_t)pf.d; i++)
            norm += (double)grad[i] * grad[i];
        printf("examples  %lld\n", (long long)t.n_examples);
        printf("targets   %lld\n", (long long)t.n_targets);
        printf("loss      %.9g\n", t.loss_sum / (double)t.n_targets);
        printf("grad_norm %.9g\n", sqrt(norm) / (double)t.n_targets);
    }
    free(grad);
    free(warnings);
    sp_worker_free(w);
    sp_dataset_close(ds);
    sp_prompt_file_free(&pf);
    sp_model_free(&m);
    return rc;
}

int main(int argc, char **argv) {
    int64_t max_n = 0;
    if (argc < 4 || argc > 5 || (argc == 5 && parse_count(argv[4], &max_n) != 0)) {
        fprintf(stderr, "usage: %s MODEL_DIR DATA.h5 PROMPT [MAX_EXAMPLES >= 1]\n", argv[0]);
        return 2;
    }
    sp_error err = {{0}};
    if (run(argv[1], argv[2], argv[3], max_n, &err) != 0) {
        fprintf(stderr, "sp_loss: %s\n", err.msg);
        return 1;
    }
    return 0;
}
