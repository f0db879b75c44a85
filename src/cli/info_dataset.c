/* `softprompt info FILE.h5`: what a dataset holds (counts, lengths, label balance, how it was
 * made); checkpoints are handed to sp_checkpoint_describe. */
#include "cli/info_dataset.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* softprompt_core keeps the HDF5 include directory private; Debian's serial headers are under
 * hdf5/serial when it is not on the include path. */
#if __has_include(<hdf5.h>)
#include <hdf5.h>
#else
#include <hdf5/serial/hdf5.h>
#endif

#include "io/h5util.h"
#include "softprompt/checkpoint.h"
#include "softprompt/dataset.h"
#include "softprompt/template.h"
#include "util/escape.h"

#define BAR_WIDTH 30
#define N_BUCKETS 8

int sp__info_is_hdf5(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return 0;
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    unsigned char sig[8];
    size_t n = fread(sig, 1, sizeof sig, f);
    fclose(f);
    return n == 8 && !memcmp(sig, "\x89HDF\r\n\x1a\n", 8);
}

/* The root attribute "format" of path into out ("" when absent); -1 with err set when the file
 * cannot be read, is not HDF5, or is damaged where the attribute lives. */
static int read_format(const char *path, char *out, size_t cap, sp_error *err) {
    sp__h5_quiet();
    if (sp__h5_precheck(path, err) != 0) return -1;
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return sp__h5_fail(err, "%s: cannot open as an HDF5 file", path);
    int rc = sp__h5_root_format(f, path, out, cap, err);
    H5Fclose(f);
    return rc;
}

/* 37702 -> "37,702" */
static const char *commas(char *buf, size_t cap, int64_t v) {
    char d[32];
    int n = snprintf(d, sizeof d, "%" PRId64, v < 0 ? -v : v);
    size_t k = 0;
    if (v < 0) buf[k++] = '-';
    for (int i = 0; i < n && k + 2 < cap; i++) {
        if (i > 0 && (n - i) % 3 == 0) buf[k++] = ',';
        buf[k++] = d[i];
    }
    buf[k] = '\0';
    return buf;
}

static void bar(int64_t n, int64_t max) {
    int w = max > 0 ? (int)((double)n * BAR_WIDTH / (double)max + 0.5) : 0;
    if (n > 0 && w == 0) w = 1;
    for (int i = 0; i < w; i++) putchar('#');
    for (int i = w; i < BAR_WIDTH; i++) putchar(' ');
}

static int floor_log2(int64_t v) {
    int k = 0;
    while (v > 1) v >>= 1, k++;
    return k;
}

/* Up to N_BUCKETS power-of-two buckets from the shortest example's; the last one is open. */
static void print_histogram(const sp_dataset *ds) {
    int64_t n = sp_dataset_n_examples(ds);
    if (n == 0) return;
    int64_t mn = INT64_MAX, mx = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t L = sp_dataset_example_length(ds, i);
        if (L < mn) mn = L;
        if (L > mx) mx = L;
    }
    int lo = floor_log2(mn), hi = floor_log2(mx);
    int nb = hi - lo + 1 > N_BUCKETS ? N_BUCKETS : hi - lo + 1;
    int64_t count[N_BUCKETS] = {0}, top = 0;
    for (int64_t i = 0; i < n; i++) {
        int b = floor_log2(sp_dataset_example_length(ds, i)) - lo;
        if (b >= nb) b = nb - 1;
        count[b]++;
    }
    for (int b = 0; b < nb; b++)
        if (count[b] > top) top = count[b];
    printf("%-14s%s\n", "lengths", "tokens per example");
    for (int b = 0; b < nb; b++) {
        char range[48];
        int64_t a = (int64_t)1 << (lo + b), z = ((int64_t)1 << (lo + b + 1)) - 1;
        if (b == nb - 1 && hi - lo + 1 > N_BUCKETS)
            snprintf(range, sizeof range, ">= %" PRId64, a);
        else
            snprintf(range, sizeof range, "%" PRId64 "-%" PRId64, a, z);
        printf("  %12s  ", range);
        bar(count[b], top);
        printf(" %" PRId64 "\n", count[b]);
    }
}

static void print_labels(const sp_dataset *ds, const sp_dataset_meta *m) {
    int64_t n = sp_dataset_n_examples(ds);
    const int32_t *labels = sp_dataset_labels(ds);
    int64_t *cnt = calloc((size_t)m->n_classes, sizeof *cnt), top = 0;
    if (!cnt || !labels) {
        free(cnt);
        return;
    }
    for (int64_t i = 0; i < n; i++) cnt[labels[i]]++;
    for (int c = 0; c < m->n_classes; c++)
        if (cnt[c] > top) top = cnt[c];
    /* The words come from the verbalizer string when it parses to the same classes. */
    sp_verbalizer v;
    sp_error ignored;
    int have_words =
        m->verbalizer_spec[0] && sp_verbalizer_parse(&v, m->verbalizer_spec, &ignored) == 0;
    if (have_words && v.n_classes != m->n_classes) sp_verbalizer_free(&v), have_words = 0;
    for (int c = 0; have_words && c < m->n_classes; c++)
        if (strcmp(v.values[c], m->class_names[c]) != 0) sp_verbalizer_free(&v), have_words = 0;
    char name[128], word[96] = "", tok[160];
    int wname = 4;
    for (int c = 0; c < m->n_classes; c++) {
        int len = (int)strlen(sp__escape(m->class_names[c], name, sizeof name));
        if (len > wname) wname = len;
    }
    if (wname > 24) wname = 24;
    printf("%-14s%s\n", "labels", "class, verbalizer token, examples");
    for (int c = 0; c < m->n_classes; c++) {
        if (have_words) sp__escape(v.words[c], word, sizeof word);
        snprintf(tok, sizeof tok, "%s%s%s(token %d)", have_words ? "\"" : "", word,
                 have_words ? "\" " : "", (int)m->verbalizer[c]);
        printf("  %-*s  %-26s %7" PRId64 " %5.1f%%  ", wname,
               sp__escape(m->class_names[c], name, sizeof name), tok, cnt[c],
               n ? 100.0 * (double)cnt[c] / (double)n : 0.0);
        bar(cnt[c], top);
        printf("\n");
    }
    if (have_words) sp_verbalizer_free(&v);
    free(cnt);
}

/* One "label  value" line of a string from the file, escaped; absent when it is empty. */
static void print_string(const char *label, const char *value, const char *absent) {
    char shown[1024];
    printf("%-14s%s\n", label, value[0] ? sp__escape(value, shown, sizeof shown) : absent);
}

static int info_dataset(const char *path) {
    sp_error err;
    sp_dataset *ds = sp_dataset_open(path, &err);
    if (!ds) {
        fprintf(stderr, "softprompt info: %s\n", err.msg);
        return 1;
    }
    const sp_dataset_meta *m = sp_dataset_get_meta(ds);
    int64_t n = m->n_examples, mn = 0, mx = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t L = sp_dataset_example_length(ds, i);
        if (i == 0 || L < mn) mn = L;
        if (L > mx) mx = L;
    }
    char a[32], b[32], c[32];
    printf("%-14s%s\n", "dataset", path);
    if (m->task == SP_TASK_CLASSIFICATION)
        printf("%-14sclassification, %d classes\n", "task", m->n_classes);
    else
        printf("%-14sgeneration\n", "task");
    printf("%-14s%s\n", "examples", commas(a, sizeof a, n));
    printf("%-14s%s (%.1f per example, shortest %" PRId64 ", longest %" PRId64 ")\n", "tokens",
           commas(b, sizeof b, m->n_tokens), n ? (double)m->n_tokens / (double)n : 0.0, mn, mx);
    printf("%-14s%s (%.2f per example)\n", "targets", commas(c, sizeof c, m->n_targets),
           n ? (double)m->n_targets / (double)n : 0.0);
    printf("%-14s%d\n", "soft tokens", m->n_soft);
    if (m->max_length > 0)
        printf("%-14s%d, %" PRId64 " examples truncated to it\n", "max length", m->max_length,
               m->n_truncated);
    else
        printf("%-14snone, %" PRId64 " examples truncated\n", "max length", m->n_truncated);
    print_histogram(ds);
    if (m->task == SP_TASK_CLASSIFICATION) print_labels(ds, m);
    print_string("template", m->template_spec, "");
    print_string("target", m->target_spec, "");
    if (m->verbalizer_spec[0]) print_string("verbalizer", m->verbalizer_spec, "");
    print_string("tokenizer", m->tokenizer_hash, "(not recorded)");
    print_string("source", m->source, "(not recorded)");
    print_string("split", m->split, "(not recorded)");
    printf("%-14s%" PRIu64 "\n", "seed", m->seed);
    print_string("created by", m->created_by, "(not recorded)");
    printf("%-14s%s version %d\n", "format", SP_DATASET_FORMAT, SP_DATASET_VERSION);
    sp_dataset_close(ds);
    return 0;
}

int sp__info_h5(const char *path) {
    char format[128], shown[160];
    sp_error err;
    if (read_format(path, format, sizeof format, &err) != 0) {
        fprintf(stderr, "softprompt info: %s\n", err.msg);
        return 1;
    }
    if (!strcmp(format, SP_DATASET_FORMAT)) return info_dataset(path);
    if (!strcmp(format, SP_CHECKPOINT_FORMAT)) {
        if (sp_checkpoint_describe(stdout, path, &err) != 0) {
            fprintf(stderr, "softprompt info: %s\n", err.msg);
            return 1;
        }
        return 0;
    }
    if (format[0])
        fprintf(stderr,
                "softprompt info: %s: not a softprompt dataset or checkpoint (root attribute "
                "\"format\" is \"%s\")\n",
                path, sp__escape(format, shown, sizeof shown));
    else
        fprintf(stderr,
                "softprompt info: %s: not a softprompt dataset or checkpoint (an HDF5 file without "
                "the root attribute \"format\")\n",
                path);
    return 1;
}
