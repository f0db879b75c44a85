/* predict's scoring and its rows: probabilities, predictions, the ensemble, metrics' counts and
 * the text of one example's row in JSONL, CSV or TSV (predict.h says what each value is). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "softprompt/predict.h"
#include "train/predict_internal.h"

/* probs [C] = softmax of logits [C] (double). */
static void softmax(const float *logits, int C, double *probs) {
    double mx = -INFINITY, z = 0;
    for (int c = 0; c < C; c++) mx = fmax(mx, (double)logits[c]);
    for (int c = 0; c < C; c++) z += probs[c] = exp((double)logits[c] - mx);
    for (int c = 0; c < C; c++) probs[c] /= z;
}

/* The largest logit, the lowest class on a tie (as eval). */
static int argmax_f(const float *x, int C) {
    int best = 0;
    for (int c = 1; c < C; c++)
        if (x[c] > x[best]) best = c;
    return best;
}

static int argmax_d(const double *x, int C) {
    int best = 0;
    for (int c = 1; c < C; c++)
        if (x[c] > x[best]) best = c;
    return best;
}

void sp_predict_score(const float *logits, int K, int C, double *probs, int *pred, double *mean,
                      int *predicted, int *vote) {
    for (int c = 0; c < C; c++) mean[c] = 0;
    for (int k = 0; k < K; k++) {
        softmax(logits + (size_t)k * C, C, probs + (size_t)k * C);
        pred[k] = argmax_f(logits + (size_t)k * C, C);
        for (int c = 0; c < C; c++) mean[c] += probs[(size_t)k * C + c];
    }
    for (int c = 0; c < C; c++) mean[c] /= K;
    *predicted = K == 1 ? pred[0] : argmax_d(mean, C);
    if (K == 1) {
        *vote = pred[0];
        return;
    }
    int best = -1, best_n = 0;
    for (int c = 0; c < C; c++) {
        int n = 0;
        for (int k = 0; k < K; k++) n += pred[k] == c;
        if (n > best_n || (n == best_n && n > 0 && mean[c] > mean[best])) best = c, best_n = n;
    }
    *vote = best;
}

/* ---- text ---------------------------------------------------------------------------------- */

/* s as a JSON string. */
static int add_json_str(sp__buf *b, const char *s) {
    int rc = sp__buf_addc(b, '"');
    for (; rc == 0 && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            rc = sp__buf_addf(b, "\\%c", c);
        else if (c < 0x20)
            rc = sp__buf_addf(b, "\\u%04x", c);
        else
            rc = sp__buf_addc(b, (char)c);
    }
    return rc ? rc : sp__buf_addc(b, '"');
}

/* s as a CSV field (quoted when it holds a comma, quote, CR or LF) or a TSV one (as is; the
 * names were checked to hold no TAB, CR or LF). */
static int add_field(sp__buf *b, sp_predict_format f, const char *prefix, const char *s) {
    if (f == SP_PREDICT_TSV || !strpbrk(s, ",\"\r\n")) return sp__buf_addf(b, "%s%s", prefix, s);
    int rc = sp__buf_addf(b, "\"%s", prefix);
    for (; rc == 0 && *s; s++) rc = *s == '"' ? sp__buf_add(b, "\"\"", 2) : sp__buf_addc(b, *s);
    return rc ? rc : sp__buf_addc(b, '"');
}

/* %.9g reads back to the same float; probabilities as %.9g too (deterministic text). */
static int add_num(sp__buf *b, double x) {
    return sp__buf_addf(b, "%.9g", x == 0 ? 0.0 : x); /* never "-0" */
}

static int add_json_nums(sp__buf *b, const char *key, const double *x, const float *y, int C) {
    int rc = sp__buf_addf(b, ",\"%s\":[", key);
    for (int c = 0; rc == 0 && c < C; c++)
        rc = (c ? sp__buf_addc(b, ',') : 0) || add_num(b, x ? x[c] : (double)y[c]);
    return rc ? rc : sp__buf_addc(b, ']');
}

static int add_json_class(sp__buf *b, const char *key, const sp_examples *ex, int c) {
    if (sp__buf_addf(b, ",\"%s\":", key)) return -1;
    return c < 0 ? sp__buf_add(b, "null", 4) : add_json_str(b, ex->class_names[c]);
}

static int json_row(sp__buf *b, const sp_examples *ex, int64_t i, const float *logits, int K,
                    const sp__scores *s) {
    int C = ex->n_classes, rc = sp__buf_addf(b, "{\"index\":%lld", (long long)i);
    rc = rc || add_json_class(b, "label", ex, ex->labels[i]);
    rc = rc || add_json_class(b, "predicted", ex, s->predicted);
    if (K > 1) rc = rc || add_json_class(b, "vote", ex, s->vote);
    rc = rc || sp__buf_add(b, ",\"classes\":[", 12);
    for (int c = 0; rc == 0 && c < C; c++)
        rc = (c ? sp__buf_addc(b, ',') : 0) || add_json_str(b, ex->class_names[c]);
    rc = rc || sp__buf_addc(b, ']');
    rc = rc || add_json_nums(b, "probabilities", K > 1 ? s->mean : s->probs, NULL, C);
    if (K == 1)
        return rc || add_json_nums(b, "logits", NULL, logits, C) || sp__buf_add(b, "}\n", 2);
    rc = rc || sp__buf_add(b, ",\"prompts\":[", 12);
    for (int k = 0; rc == 0 && k < K; k++) {
        rc = sp__buf_add(b, k ? ",{" : "{", k ? 2 : 1) || sp__buf_add(b, "\"prompt\":", 9) ||
             sp__buf_addf(b, "%d", k + 1) || add_json_class(b, "predicted", ex, s->pred[k]) ||
             add_json_nums(b, "probabilities", s->probs + (size_t)k * C, NULL, C) ||
             add_json_nums(b, "logits", NULL, logits + (size_t)k * C, C) || sp__buf_addc(b, '}');
    }
    return rc || sp__buf_add(b, "]}\n", 3);
}

static int sep(sp__buf *b, sp_predict_format f) {
    return sp__buf_addc(b, f == SP_PREDICT_TSV ? '\t' : ',');
}

static int table_class(sp__buf *b, sp_predict_format f, const sp_examples *ex, int c) {
    return sep(b, f) || (c >= 0 ? add_field(b, f, "", ex->class_names[c]) : 0);
}

static int table_row(sp__buf *b, sp_predict_format f, const sp_examples *ex, int64_t i,
                     const float *logits, int K, const sp__scores *s) {
    int C = ex->n_classes, rc = sp__buf_addf(b, "%lld", (long long)i);
    rc = rc || table_class(b, f, ex, ex->labels[i]) || table_class(b, f, ex, s->predicted);
    if (K > 1) rc = rc || table_class(b, f, ex, s->vote);
    const double *p = K > 1 ? s->mean : s->probs;
    for (int c = 0; rc == 0 && c < C; c++) rc = sep(b, f) || add_num(b, p[c]);
    for (int k = 0; rc == 0 && K > 1 && k < K; k++) {
        rc = table_class(b, f, ex, s->pred[k]);
        for (int c = 0; rc == 0 && c < C; c++)
            rc = sep(b, f) || add_num(b, s->probs[(size_t)k * C + c]);
    }
    for (int k = 0; rc == 0 && k < K; k++)
        for (int c = 0; rc == 0 && c < C; c++)
            rc = sep(b, f) || add_num(b, logits[(size_t)k * C + c]);
    return rc || sp__buf_add(b, f == SP_PREDICT_CSV ? "\r\n" : "\n", f == SP_PREDICT_CSV ? 2 : 1);
}

int sp__predict_row(sp__buf *b, sp_predict_format f, const sp_examples *ex, int64_t i,
                    const float *logits, int K, const sp__scores *s) {
    return f == SP_PREDICT_JSONL ? json_row(b, ex, i, logits, K, s)
                                 : table_row(b, f, ex, i, logits, K, s);
}

/* One header column per class: prefix + class name. */
static int class_columns(sp__buf *b, sp_predict_format f, const sp_examples *ex,
                         const char *prefix) {
    int rc = 0;
    for (int c = 0; rc == 0 && c < ex->n_classes; c++)
        rc = sep(b, f) || add_field(b, f, prefix, ex->class_names[c]);
    return rc;
}

int sp__predict_header(sp__buf *b, sp_predict_format f, const sp_examples *ex, int K) {
    if (f == SP_PREDICT_JSONL) return 0;
    int rc = sp__buf_addf(b, "index%clabel%cpredicted", f == SP_PREDICT_TSV ? '\t' : ',',
                          f == SP_PREDICT_TSV ? '\t' : ',');
    if (K > 1) rc = rc || sep(b, f) || sp__buf_add(b, "vote", 4);
    rc = rc || class_columns(b, f, ex, "p_");
    char prefix[64];
    for (int k = 0; rc == 0 && K > 1 && k < K; k++) {
        rc = sep(b, f) || sp__buf_addf(b, "prompt%d_predicted", k + 1);
        snprintf(prefix, sizeof prefix, "prompt%d_p_", k + 1);
        rc = rc || class_columns(b, f, ex, prefix);
    }
    for (int k = 0; rc == 0 && k < K; k++) {
        if (K > 1)
            snprintf(prefix, sizeof prefix, "prompt%d_logit_", k + 1);
        else
            snprintf(prefix, sizeof prefix, "logit_");
        rc = class_columns(b, f, ex, prefix);
    }
    return rc || sp__buf_add(b, f == SP_PREDICT_CSV ? "\r\n" : "\n", f == SP_PREDICT_CSV ? 2 : 1);
}

/* ---- metrics ------------------------------------------------------------------------------- */

void sp_predict_metrics_free(sp_predict_metrics *m) {
    free(m->confusion);
    memset(m, 0, sizeof *m);
}

static const int64_t *conf(const sp_predict_metrics *m, int k) {
    return m->confusion + (size_t)k * m->n_classes * m->n_classes;
}

double sp_predict_accuracy(const sp_predict_metrics *m, int k) {
    if (m->n_labelled == 0) return NAN;
    int64_t right = 0;
    for (int c = 0; c < m->n_classes; c++) right += conf(m, k)[c * m->n_classes + c];
    return (double)right / (double)m->n_labelled;
}

double sp_predict_macro_f1(const sp_predict_metrics *m, int k) {
    if (m->n_labelled == 0) return NAN;
    int C = m->n_classes, used = 0;
    const int64_t *x = conf(m, k);
    double sum = 0;
    for (int c = 0; c < C; c++) {
        int64_t tp = x[c * C + c], row = 0, col = 0;
        for (int j = 0; j < C; j++) row += x[c * C + j], col += x[j * C + c];
        if (row + col == 0) continue; /* neither a label nor a prediction */
        sum += 2.0 * (double)tp / (double)(row + col), used++;
    }
    return sum / used;
}

int sp_predict_majority(const sp_predict_metrics *m, double *accuracy) {
    int C = m->n_classes, best = 0;
    int64_t best_n = -1;
    for (int c = 0; c < C; c++) {
        int64_t n = 0;
        for (int j = 0; j < C; j++) n += conf(m, 0)[c * C + j];
        if (n > best_n) best = c, best_n = n;
    }
    *accuracy = m->n_labelled ? (double)best_n / (double)m->n_labelled : NAN;
    return best;
}
