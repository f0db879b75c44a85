/* Classification examples in memory for inference: rendered from records with prepare's
 * readers and formatter, or read from a prepared HDF5 set (prepare.h, "Examples in memory"). */
#include <stdlib.h>
#include <string.h>

#include "softprompt/dataset.h"
#include "softprompt/input.h"
#include "softprompt/prepare.h"
#include "softprompt/tokenizer.h"
#include "util/vec.h"

void sp_examples_free(sp_examples *ex) {
    if (!ex) return;
    for (int c = 0; ex->class_names && c < ex->n_classes; c++) free(ex->class_names[c]);
    free(ex->class_names), free(ex->verbalizer), free(ex->start), free(ex->tokens);
    free(ex->target_pos), free(ex->labels), free(ex->source);
    memset(ex, 0, sizeof *ex);
}

/* The classes (names and word ids) into ex. */
static int set_classes(sp_examples *ex, int n, const char *const *names, const int32_t *ids) {
    ex->class_names = calloc((size_t)n, sizeof *ex->class_names);
    ex->verbalizer = malloc((size_t)n * sizeof *ex->verbalizer);
    if (!ex->class_names || !ex->verbalizer) return -1;
    ex->n_classes = n;
    for (int c = 0; c < n; c++)
        if (!(ex->class_names[c] = strdup(names[c]))) return -1;
    memcpy(ex->verbalizer, ids, (size_t)n * sizeof *ids);
    return 0;
}

/* Appends one example: tokens [len], its target position and label. */
static int add(sp_examples *ex, const int32_t *tokens, int64_t len, int32_t tpos, int32_t label) {
    if (!ex->start && !(ex->start = calloc(1, sizeof *ex->start))) return -1;
    size_t n = (size_t)ex->n, have = (size_t)ex->start[n], cap_n = ex->cap_n;
    if (sp__vec_reserve(&ex->tokens, &ex->cap_tokens, have + (size_t)len, sizeof *ex->tokens) ||
        sp__vec_reserve(&ex->target_pos, &ex->cap_n, n + 1, sizeof *ex->target_pos))
        return -1;
    if (ex->cap_n != cap_n && (sp__vec_resize(&ex->labels, ex->cap_n, sizeof *ex->labels) ||
                               sp__vec_resize(&ex->start, ex->cap_n + 1, sizeof *ex->start)))
        return -1;
    memcpy(ex->tokens + have, tokens, (size_t)len * sizeof *tokens);
    ex->target_pos[n] = tpos, ex->labels[n] = label;
    ex->start[n + 1] = (int64_t)have + len;
    ex->n++;
    ex->n_labelled += label >= 0;
    return 0;
}

static int render_all(sp_input *in, sp_formatter *fmt, sp_examples *ex, sp_error *err) {
    sp_example one = {0};
    sp_record rec;
    char where[600];
    int rc;
    while ((rc = sp_input_next(in, &rec, err)) == 1) {
        sp_input_where(in, &rec, where, sizeof where);
        if (sp_formatter_render(fmt, &rec, where, &one, err) != 0) {
            rc = -1;
            break;
        }
        if (add(ex, one.tokens.ids, (int64_t)one.tokens.n, one.target_pos[0], one.label)) {
            rc = sp_fail(err, "%s: out of memory", where);
            break;
        }
    }
    sp_example_free(&one);
    if (rc == 0 && ex->n == 0) rc = sp_fail(err, "%s: no records", ex->source);
    return rc < 0 ? -1 : 0;
}

int sp_examples_from_records(const sp_prepare_options *o, sp_examples *ex, sp_error *err) {
    memset(ex, 0, sizeof *ex);
    if (!o->fmt.verbalizer_spec)
        return sp_fail(err, "a verbalizer is needed: predict scores the classes' words");
    sp_format_options fo = o->fmt;
    fo.target = SP_TARGET_OPTIONAL;
    sp_tokenizer *tok = sp_tokenizer_load(o->tokenizer, err);
    if (!tok) return sp_fail_prefix(err, "--tokenizer %s", o->tokenizer);
    sp_formatter *fmt = NULL;
    int rc = sp_prepare_input_eos(o->tokenizer, tok, &fo, err);
    if (rc == 0 && !(fmt = sp_formatter_new(tok, &fo, err))) rc = SP_PREPARE_BAD_OPTION;
    sp_input *in = NULL;
    if (rc == 0 && !(ex->source = strdup(o->input))) rc = sp_fail(err, "out of memory");
    if (rc == 0 && !(in = sp_input_open(o->input, o->format, err))) rc = -1;
    if (rc == 0) {
        const sp_verbalizer *v = sp_formatter_verbalizer(fmt);
        ex->n_soft = sp_formatter_n_soft(fmt);
        if (set_classes(ex, v->n_classes, (const char *const *)v->values,
                        sp_formatter_verbalizer_ids(fmt)))
            rc = sp_fail(err, "out of memory");
    }
    if (rc == 0) rc = render_all(in, fmt, ex, err);
    sp_input_close(in);
    sp_formatter_free(fmt);
    sp_tokenizer_free(tok);
    if (rc) sp_examples_free(ex);
    return rc;
}

/* Every example of ds into ex, read in pieces. */
static int read_all(sp_dataset *ds, sp_examples *ex, sp_error *err) {
    enum { PIECE = 256 };
    int64_t ids[PIECE], n = sp_dataset_n_examples(ds);
    sp_batch_data b = {0};
    int rc = 0;
    for (int64_t i = 0; rc == 0 && i < n; i += PIECE) {
        int k = (int)(n - i < PIECE ? n - i : PIECE);
        for (int j = 0; j < k; j++) ids[j] = i + j;
        if (sp_dataset_read_batch(ds, ids, k, &b, err)) {
            rc = -1;
            break;
        }
        for (int s = 0; rc == 0 && s < k; s++) {
            int32_t at = b.seq_start[s];
            if (add(ex, b.tokens + at, b.seq_start[s + 1] - at,
                    b.target_pos[b.target_start[s]] - at, b.labels[s]))
                rc = sp_fail(err, "out of memory");
        }
    }
    sp_batch_data_free(&b);
    return rc;
}

int sp_examples_from_dataset(const char *path, sp_examples *ex, sp_error *err) {
    memset(ex, 0, sizeof *ex);
    sp_dataset *ds = sp_dataset_open(path, err);
    if (!ds) return -1;
    const sp_dataset_meta *m = sp_dataset_get_meta(ds);
    int rc = 0;
    if (m->task != SP_TASK_CLASSIFICATION)
        rc = sp_fail(
            err, "%s: a generation set (no verbalizer): predict needs a classification set", path);
    else if (sp_dataset_n_examples(ds) == 0)
        rc = sp_fail(err, "%s: no examples", path);
    else if (!(ex->source = strdup(path)) ||
             set_classes(ex, m->n_classes, m->class_names, m->verbalizer))
        rc = sp_fail(err, "out of memory");
    ex->n_soft = m->n_soft;
    if (rc == 0) rc = read_all(ds, ex, err);
    sp_dataset_close(ds);
    if (rc) sp_examples_free(ex);
    return rc;
}

int sp_examples_strip_soft(sp_examples *ex, sp_error *err) {
    int64_t out = 0;
    for (int64_t i = 0; i < ex->n; i++) {
        int64_t begin = out, tpos = begin; /* the target's new position */
        for (int64_t t = ex->start[i]; t < ex->start[i + 1]; t++) {
            int64_t at = t - ex->start[i];
            int soft = SP_IS_SOFT(ex->tokens[t]);
            if (at == ex->target_pos[i]) tpos = soft ? out - 1 : out;
            if (!soft) ex->tokens[out++] = ex->tokens[t];
        }
        if (out == begin)
            return sp_fail(err,
                           "%s: example %lld consists of soft tokens only: nothing is left "
                           "without them",
                           ex->source, (long long)i);
        ex->target_pos[i] = (int32_t)(tpos < begin ? 0 : tpos - begin);
        ex->start[i] = begin;
    }
    ex->start[ex->n] = out;
    ex->n_soft = 0;
    return 0;
}
