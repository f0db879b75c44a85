/* Progress on rank 0's stderr and metrics as JSON lines in out/metrics.jsonl (non-finite values
 * as null). */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/fileutil.h"
#include "train/internal.h"
#include "util/clock.h"
#include "util/vec.h"

/* A resumed run repeats the steps after its checkpoint: drop their old lines first, so the
 * file reads as one uninterrupted run. A fresh run (resume_step < 0) starts an empty file. */
static int keep_lines_up_to(const char *path, int64_t resume_step, sp_error *err) {
    FILE *in = fopen(path, "r");
    if (!in) return errno == ENOENT ? 0 : sp_fail(err, "%s: %s", path, strerror(errno));
    sp__buf kept = {0};
    char *line = NULL;
    size_t lcap = 0;
    ssize_t n;
    int rc = 0;
    while (rc == 0 && resume_step >= 0 && (n = getline(&line, &lcap, in)) > 0) {
        json_t *j = json_loads(line, 0, NULL);
        json_t *s = j ? json_object_get(j, "step") : NULL;
        int keep = s && json_is_integer(s) && json_integer_value(s) <= resume_step;
        json_decref(j);
        if (keep && sp__buf_add(&kept, line, (size_t)n) != 0)
            rc = sp_fail(err, "%s: out of memory", path);
    }
    free(line);
    fclose(in);
    if (rc == 0) rc = sp__write_file_atomic(path, kept.p ? kept.p : "", kept.len, err);
    sp__buf_free(&kept);
    return rc;
}

int sp__run_log_open(sp__run_log *l, const char *out_dir, int64_t resume_step, int quiet,
                     int64_t total_steps, sp_error *err) {
    memset(l, 0, sizeof *l);
    char path[4096];
    snprintf(path, sizeof path, "%s/metrics.jsonl", out_dir);
    if (keep_lines_up_to(path, resume_step, err)) return -1;
    l->metrics = fopen(path, "a");
    if (!l->metrics) return sp_fail(err, "%s: %s", path, strerror(errno));
    l->tty = isatty(2);
    l->quiet = quiet;
    l->t_start = sp__now();
    l->first_step = resume_step > 0 ? resume_step : 0;
    l->total_steps = total_steps;
    return 0;
}

/* JSON has no NaN or infinity (jansson refuses them, and the row would be lost): a value that
 * is not a number is written as null, so the row, and the fact, are kept. */
static json_t *num(double v) {
    return isfinite(v) ? json_real(v) : json_null();
}

static void write_json_line(sp__run_log *l, json_t *j) {
    char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(9));
    if (s) fprintf(l->metrics, "%s\n", s);
    fflush(l->metrics); /* a killed run keeps every line it logged */
    free(s);
    json_decref(j);
}

static void format_duration(char *buf, size_t n, double s) {
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else if (t >= 60)
        snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(buf, n, "%lds", t);
}

void sp__run_log_step(sp__run_log *l, int64_t step, double loss, double lr, double grad_norm,
                      int64_t tokens, double step_seconds, int print) {
    double elapsed = sp__now() - l->t_start;
    write_json_line(l, json_pack("{s:I, s:o, s:o, s:o, s:I, s:o, s:o}", "step", (json_int_t)step,
                                 "loss", num(loss), "lr", num(lr), "grad_norm", num(grad_norm),
                                 "tokens", (json_int_t)tokens, "tokens_per_s",
                                 num(step_seconds > 0 ? tokens / step_seconds : 0.0), "elapsed_s",
                                 num(elapsed)));
    if (l->quiet || (!print && !l->tty)) return;
    double per_step = elapsed / (double)(step - l->first_step);
    char eta[32];
    format_duration(eta, sizeof eta, per_step * (double)(l->total_steps - step));
    fprintf(stderr, "%sstep %lld/%lld  loss %.4f  lr %.3g  |g| %.3g  %.0f tok/s  ETA %s%s",
            l->tty ? "\r\033[K" : "", (long long)step, (long long)l->total_steps, loss, lr,
            grad_norm, step_seconds > 0 ? tokens / step_seconds : 0.0, eta, l->tty ? "" : "\n");
}

void sp__run_log_eval(sp__run_log *l, int64_t step, const char *split, const sp_eval_result *r) {
    double loss = r->n_targets ? r->loss_sum / (double)r->n_targets : NAN;
    json_t *j = json_pack("{s:I, s:s, s:o, s:I}", "step", (json_int_t)step, "split", split, "loss",
                          num(loss), "examples", (json_int_t)r->n_examples);
    if (r->n_classes > 0) {
        json_object_set_new(j, "accuracy", num((double)r->correct / (double)r->n_examples));
        json_t *per = json_array();
        for (int c = 0; c < r->n_classes; c++) {
            int64_t total = 0;
            for (int p = 0; p < r->n_classes; p++) total += r->confusion[c * r->n_classes + p];
            json_array_append_new(per, json_pack("{s:I, s:I}", "correct",
                                                 (json_int_t)r->confusion[c * r->n_classes + c],
                                                 "total", (json_int_t)total));
        }
        json_object_set_new(j, "per_class", per);
    }
    write_json_line(l, j);
    if (l->quiet) return;
    if (l->tty) fputc('\n', stderr);
    if (r->n_classes > 0)
        fprintf(stderr, "eval %s @ step %lld: loss %.4f  accuracy %.4f (%lld/%lld)\n", split,
                (long long)step, loss, (double)r->correct / (double)r->n_examples,
                (long long)r->correct, (long long)r->n_examples);
    else
        fprintf(stderr, "eval %s @ step %lld: loss %.4f over %lld targets\n", split,
                (long long)step, loss, (long long)r->n_targets);
}

void sp__run_log_close(sp__run_log *l) {
    if (l->metrics) fclose(l->metrics);
    if (l->tty && !l->quiet) fputc('\n', stderr);
    l->metrics = NULL;
}
