/* sp_prepare: labelled text records -> one tokenized HDF5 dataset per split (see prepare.h for
 * the two passes, the stratified split and the all-or-nothing promise). */
#include "softprompt/prepare.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "softprompt/dataset.h"
#include "softprompt/input.h"
#include "softprompt/rng.h"
#include "softprompt/tokenizer.h"
#include "model/family.h"
#include "util/clock.h"
#include "util/path.h"
#include "util/vec.h"

#define SKIPPED (-2) /* class slot of a skipped record */

typedef struct state {
    const sp_prepare_options *o;
    sp_prepare_report *r;
    sp_tokenizer *tok;
    sp_formatter *fmt;
    sp_dataset_writer *w[SP_PREPARE_MAX_SPLITS];
    int32_t *cls; /* [n_records] class, -1 (generation) or SKIPPED */
    size_t n_records, cap_records;
    uint8_t *split_of; /* [n_records] */
} state;

void sp_prepare_options_default(sp_prepare_options *o) {
    memset(o, 0, sizeof *o);
    o->fmt.prompt_length = -1; /* < 0: SP_TEMPLATE_DEFAULT_SOFT */
    o->fmt.max_length = SP_PREPARE_DEFAULT_MAX_LENGTH;
    o->fmt.eos = 1;
    o->fmt.input_eos = -1; /* automatic: sp_prepare_input_eos */
    o->seed = SP_PREPARE_DEFAULT_SEED;
    o->split = SP_PREPARE_DEFAULT_SPLIT;
}

static void free_strings(char **v, int n) {
    for (int i = 0; v && i < n; i++) free(v[i]);
    free(v);
}

void sp_prepare_report_free(sp_prepare_report *r) {
    if (!r) return;
    for (int k = 0; k < r->n_splits; k++) free(r->splits[k].path), free(r->splits[k].per_class);
    free(r->template_spec), free(r->target_spec), free(r->bos_token), free(r->eos_token),
        free(r->class_ids);
    free_strings(r->class_values, r->n_classes);
    free_strings(r->class_words, r->n_classes);
    free_strings(r->warnings, r->n_warnings);
    memset(r, 0, sizeof *r);
}

/* ------------------------------------------------------------------------------------------ */
/* Options                                                                                    */
/* ------------------------------------------------------------------------------------------ */

static int split_name_ok(const char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

/* "train=0.9,valid=0.1" (or a single "name" meaning name=1) into r->splits. */
static int parse_split(const char *spec, sp_prepare_report *r, sp_error *err) {
    sp_prepare_split *sp = r->splits;
    int *n = &r->n_splits;
    const char *p = spec;
    double sum = 0;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        size_t nlen = eq ? (size_t)(eq - p) : len;
        if (*n == SP_PREPARE_MAX_SPLITS)
            return sp_fail(err, "--split: more than %d splits", SP_PREPARE_MAX_SPLITS);
        sp_prepare_split *s = &sp[*n];
        if (nlen == 0 || nlen >= sizeof s->name)
            return sp_fail(err, "--split '%s': split %d has %s name", spec, *n + 1,
                           nlen ? "a too long" : "an empty");
        if (!split_name_ok(p, nlen))
            return sp_fail(err,
                           "--split '%s': split names may use letters, digits, '_', '-' and '.' "
                           "only",
                           spec);
        memcpy(s->name, p, nlen);
        s->name[nlen] = '\0';
        for (int j = 0; j < *n; j++)
            if (!strcmp(sp[j].name, s->name))
                return sp_fail(err, "--split '%s': split '%s' appears twice", spec, s->name);
        if (eq) {
            char num[64];
            size_t vlen = len - nlen - 1;
            if (vlen == 0 || vlen >= sizeof num)
                return sp_fail(err, "--split '%s': split '%s' has no ratio", spec, s->name);
            memcpy(num, eq + 1, vlen);
            num[vlen] = '\0';
            char *e;
            s->ratio = strtod(num, &e);
            if (*e || e == num || !(s->ratio > 0 && s->ratio <= 1))
                return sp_fail(err, "--split '%s': ratio '%s' of split '%s' is not in (0, 1]", spec,
                               num, s->name);
        } else {
            s->ratio = -1;
        }
        sum += s->ratio;
        (*n)++;
        if (!end) break;
        p = end + 1;
    }
    if (*n == 1 && sp[0].ratio < 0) {
        sp[0].ratio = 1;
        return 0;
    }
    for (int j = 0; j < *n; j++)
        if (sp[j].ratio < 0)
            return sp_fail(err, "--split '%s': split '%s' needs a ratio (name=ratio)", spec,
                           sp[j].name);
    if (sum < 1 - 1e-6 || sum > 1 + 1e-6)
        return sp_fail(err, "--split '%s': the ratios add up to %g, not 1", spec, sum);
    return 0;
}

/* The output names, refused early if they exist (the writers check again). */
static int name_outputs(const sp_prepare_options *o, sp_prepare_report *r, sp_error *err) {
    for (int k = 0; k < r->n_splits; k++) {
        sp_prepare_split *s = &r->splits[k];
        size_t n = strlen(o->out) + strlen(s->name) + 8;
        if (!(s->path = malloc(n))) return sp_fail(err, "out of memory");
        snprintf(s->path, n, "%s-%s.h5", o->out, s->name);
        struct stat st;
        if (!o->force && stat(s->path, &st) == 0)
            return sp_fail(err, "%s: already exists (use --force to overwrite it)", s->path);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* The tokenizer and the formatter, and what the report says about them                        */
/* ------------------------------------------------------------------------------------------ */

static char **copy_strings(char *const *v, int n) {
    char **c = calloc(n > 0 ? (size_t)n : 1, sizeof *c);
    for (int i = 0; c && i < n; i++)
        if (!(c[i] = strdup(v[i]))) {
            free_strings(c, i);
            return NULL;
        }
    return c;
}

/* The formatter's warnings into the report, each also to o->on_warning. */
static int report_warnings(state *s) {
    sp_prepare_report *r = s->r;
    int n = sp_formatter_n_warnings(s->fmt);
    if (!(r->warnings = calloc(n > 0 ? (size_t)n : 1, sizeof *r->warnings))) return -1;
    for (int i = 0; i < n; i++) {
        if (!(r->warnings[i] = strdup(sp_formatter_warning(s->fmt, i)))) return -1;
        r->n_warnings++;
        if (s->o->on_warning) s->o->on_warning(r->warnings[i], s->o->ctx);
    }
    return 0;
}

/* Classes, specs and tokenizer facts of the report. */
static int describe_examples(state *s) {
    sp_prepare_report *r = s->r;
    const sp_verbalizer *v = sp_formatter_verbalizer(s->fmt);
    r->n_soft = sp_formatter_n_soft(s->fmt);
    r->eos = s->o->fmt.eos;
    r->max_length = s->o->fmt.max_length;
    sp_tokenizer_hash_hex(s->tok, r->tokenizer_hash);
    /* Llama-style tokenizers start every example with BOS (before the first text). */
    r->starts_with_bos = sp_tokenizer_adds_bos(s->tok);
    const char *bos = r->starts_with_bos
                          ? sp_tokenizer_id_to_token(s->tok, sp_tokenizer_bos_id(s->tok), NULL)
                          : NULL;
    const char *eos =
        r->eos ? sp_tokenizer_id_to_token(s->tok, sp_tokenizer_eos_id(s->tok), NULL) : NULL;
    if ((bos && !(r->bos_token = strdup(bos))) || (eos && !(r->eos_token = strdup(eos))) ||
        !(r->template_spec = strdup(sp_formatter_template_spec(s->fmt))) ||
        !(r->target_spec = strdup(sp_formatter_target_spec(s->fmt))))
        return -1;
    if (!v) return 0;
    if (!(r->class_values = copy_strings(v->values, v->n_classes)) ||
        !(r->class_words = copy_strings(v->words, v->n_classes)) ||
        !(r->class_ids = malloc((size_t)v->n_classes * sizeof *r->class_ids))) {
        free_strings(r->class_values, v->n_classes), free_strings(r->class_words, v->n_classes);
        r->class_values = r->class_words = NULL;
        return -1;
    }
    memcpy(r->class_ids, sp_formatter_verbalizer_ids(s->fmt),
           (size_t)v->n_classes * sizeof *r->class_ids);
    r->n_classes = v->n_classes;
    return 0;
}

/* Whether config.json's object root describes an encoder-decoder; -1 with err on a wrong key. */
static int config_is_encoder_decoder(json_t *root, const char *path, sp_error *err) {
    json_t *ed = json_object_get(root, "is_encoder_decoder");
    json_t *type = json_object_get(root, "model_type");
    if (ed && !json_is_boolean(ed))
        return sp_fail(err, "%s: field \"is_encoder_decoder\": expected true or false", path);
    if (ed) return json_is_true(ed);
    if (type && !json_is_string(type))
        return sp_fail(err, "%s: field \"model_type\": expected a string", path);
    sp_arch a;
    return type && sp__arch_from_model_type(json_string_value(type), &a) == 0 &&
           sp__family_of(a)->mask == SP_MASK_SEQ2SEQ;
}

int sp_prepare_input_eos(const char *dir, const sp_tokenizer *tok, sp_format_options *fmt,
                         sp_error *err) {
    if (fmt->input_eos >= 0) return 0;
    fmt->input_eos = 0;
    if (!sp_tokenizer_adds_eos(tok)) return 0;
    char *path = sp__path_join(dir, "config.json");
    if (!path) return sp_fail(err, "out of memory");
    int rc = 0;
    if (sp__is_file(path)) {
        json_error_t je;
        json_t *root = json_load_file(path, 0, &je);
        if (!root)
            rc = sp_fail(err, "%s:%d:%d: %s", path, je.line, je.column, je.text);
        else if (!json_is_object(root))
            rc = sp_fail(err, "%s: expected a JSON object", path);
        else if ((rc = config_is_encoder_decoder(root, path, err)) >= 0)
            fmt->input_eos = rc, rc = 0;
        json_decref(root);
    }
    free(path);
    return rc;
}

/* Returns 0, -1 (the tokenizer) or SP_PREPARE_BAD_OPTION (the formatter's options). */
static int load(state *s, sp_error *err) {
    const sp_prepare_options *o = s->o;
    if (!(s->tok = sp_tokenizer_load(o->tokenizer, err)))
        return sp_fail_prefix(err, "--tokenizer %s", o->tokenizer);
    sp_format_options fmt = o->fmt;
    if (sp_prepare_input_eos(o->tokenizer, s->tok, &fmt, err) != 0) return -1;
    s->r->input_eos = fmt.input_eos;
    if (!(s->fmt = sp_formatter_new(s->tok, &fmt, err))) return SP_PREPARE_BAD_OPTION;
    if (report_warnings(s) != 0 || describe_examples(s) != 0) return sp_fail(err, "out of memory");
    for (int k = 0; k < s->r->n_splits; k++)
        if (!(s->r->splits[k].per_class =
                  calloc((size_t)s->r->n_classes + 1, sizeof *s->r->splits[k].per_class)))
            return sp_fail(err, "out of memory");
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* The two passes                                                                             */
/* ------------------------------------------------------------------------------------------ */

/* Pass 1: every record's class (or SKIPPED). */
static int scan_records(state *s, sp_error *err) {
    sp_input *in = sp_input_open(s->o->input, s->o->format, err);
    if (!in) return -1;
    sp_record rec;
    int rc;
    char where[600];
    while ((rc = sp_input_next(in, &rec, err)) == 1) {
        sp_input_where(in, &rec, where, sizeof where);
        int label;
        int st = sp_formatter_check(s->fmt, &rec, where, &label, err);
        if (st == SP_REC_EMPTY_TEXT && s->o->skip_empty)
            s->r->n_skipped_empty++, label = SKIPPED, st = 0;
        else if (st == SP_REC_UNKNOWN_LABEL && s->o->skip_unknown)
            s->r->n_skipped_unknown++, label = SKIPPED, st = 0;
        if (st != 0) {
            const char *hint = st == SP_REC_EMPTY_TEXT ? " (--skip-empty skips such records)"
                               : st == SP_REC_UNKNOWN_LABEL
                                   ? " (--skip-unknown-labels skips such records)"
                                   : "";
            size_t len = strlen(err->msg);
            snprintf(err->msg + len, sizeof err->msg - len, "%s", hint);
            rc = -1;
            break;
        }
        if (SP_VEC_PUSH(s->cls, s->n_records, s->cap_records, label) != 0) {
            sp_fail(err, "out of memory");
            rc = -1;
            break;
        }
    }
    sp_input_close(in);
    s->r->n_records = (int64_t)s->n_records;
    return rc < 0 ? -1 : 0;
}

/* Records of group g (a class, or all when there are none) in idx, shuffled; returns their
 * count. */
static size_t shuffled_group(const state *s, int g, size_t *idx, sp_rng *rng) {
    size_t m = 0;
    for (size_t i = 0; i < s->n_records; i++)
        if (s->cls[i] != SKIPPED && (s->r->n_classes == 0 || s->cls[i] == g)) idx[m++] = i;
    for (size_t i = m; i > 1; i--) { /* Fisher-Yates */
        size_t j = (size_t)sp_rng_below(rng, i);
        size_t t = idx[i - 1];
        idx[i - 1] = idx[j], idx[j] = t;
    }
    return m;
}

/* Stratified split: each class's records are shuffled with the seed and cut by the ratios. */
static int assign_splits(state *s, sp_error *err) {
    const sp_prepare_report *r = s->r;
    size_t n = s->n_records;
    int groups = r->n_classes > 0 ? r->n_classes : 1;
    if (!(s->split_of = calloc(n ? n : 1, 1))) return sp_fail(err, "out of memory");
    size_t *idx = malloc((n ? n : 1) * sizeof *idx);
    if (!idx) return sp_fail(err, "out of memory");
    sp_rng rng;
    sp_rng_seed(&rng, s->o->seed);
    size_t kept = 0;
    for (int g = 0; g < groups; g++) {
        size_t m = shuffled_group(s, g, idx, &rng), start = 0;
        kept += m;
        double cum = 0;
        for (int k = 0; k < r->n_splits; k++) {
            cum += r->splits[k].ratio;
            size_t end = k == r->n_splits - 1 ? m : (size_t)((double)m * cum + 1e-9);
            if (end > m) end = m;
            for (size_t i = start; i < end; i++) s->split_of[idx[i]] = (uint8_t)k;
            start = end;
        }
    }
    free(idx);
    if (kept == 0) return sp_fail(err, "%s: no records to prepare", s->o->input);
    /* Count per split to refuse empty ones before writing anything. */
    int64_t cnt[SP_PREPARE_MAX_SPLITS] = {0};
    for (size_t i = 0; i < n; i++)
        if (s->cls[i] != SKIPPED) cnt[s->split_of[i]]++;
    for (int k = 0; k < r->n_splits; k++)
        if (cnt[k] == 0)
            return sp_fail(err,
                           "split '%s' would get no examples (%zu records%s; ratio %g) — use "
                           "more data, a larger ratio, or fewer splits",
                           r->splits[k].name, kept, r->n_classes ? ", cut per class" : "",
                           r->splits[k].ratio);
    return 0;
}

static int open_writers(state *s, sp_error *err) {
    const sp_prepare_report *r = s->r;
    const sp_verbalizer *v = sp_formatter_verbalizer(s->fmt);
    char created_by[64];
    snprintf(created_by, sizeof created_by, "softprompt %s", SP_VERSION);
    for (int k = 0; k < r->n_splits; k++) {
        sp_dataset_meta m = {0};
        m.task = r->n_classes ? SP_TASK_CLASSIFICATION : SP_TASK_GENERATION;
        m.n_soft = r->n_soft;
        m.n_classes = r->n_classes;
        m.verbalizer = sp_formatter_verbalizer_ids(s->fmt);
        m.class_names = v ? (const char *const *)v->values : NULL;
        m.max_length = s->o->fmt.max_length;
        m.seed = s->o->seed;
        m.tokenizer_hash = r->tokenizer_hash;
        m.template_spec = r->template_spec;
        m.target_spec = r->target_spec;
        m.verbalizer_spec = s->o->fmt.verbalizer_spec ? s->o->fmt.verbalizer_spec : "";
        m.source = sp__base_name(s->o->input);
        m.split = r->splits[k].name;
        m.created_by = created_by;
        if (!(s->w[k] = sp_dataset_writer_open(r->splits[k].path, &m, s->o->force, err))) return -1;
    }
    return 0;
}

/* Appends one rendered example to its split and counts it. */
static int add_example(state *s, size_t i, const sp_example *ex, const char *where, sp_error *err) {
    int k = s->split_of[i];
    sp_prepare_split *sp = &s->r->splits[k];
    if (sp_dataset_writer_add(s->w[k], ex->tokens.ids, (int)ex->tokens.n, ex->target_pos,
                              ex->target_ids, ex->n_targets, ex->label, err) != 0)
        return sp_fail_prefix(err, "%s", where);
    sp->n_examples++;
    sp->n_tokens += (int64_t)ex->tokens.n;
    sp->n_targets += ex->n_targets;
    sp->n_truncated += ex->n_cut > 0;
    if ((int64_t)ex->tokens.n > sp->longest) sp->longest = (int64_t)ex->tokens.n;
    if (s->r->n_classes) sp->per_class[ex->label]++;
    return 0;
}

/* Pass 2: render every kept record into its split. */
static int write_records(state *s, sp_error *err) {
    sp_input *in = sp_input_open(s->o->input, s->o->format, err);
    if (!in) return -1;
    sp_example ex = {0};
    sp_record rec;
    char where[600];
    size_t i = 0;
    int rc;
    while ((rc = sp_input_next(in, &rec, err)) == 1) {
        sp_input_where(in, &rec, where, sizeof where);
        if (i >= s->n_records) {
            rc = sp_fail(err, "%s: the input changed while it was being read", where);
            break;
        }
        int st = sp_formatter_render(s->fmt, &rec, where, &ex, err);
        int skipped = s->cls[i] == SKIPPED;
        if (skipped && (st == SP_REC_EMPTY_TEXT || st == SP_REC_UNKNOWN_LABEL)) {
            i++;
            continue;
        }
        if (st != 0) {
            rc = -1;
            break;
        }
        if (skipped || ex.label != s->cls[i]) {
            rc = sp_fail(err, "%s: the input changed while it was being read", where);
            break;
        }
        if (add_example(s, i, &ex, where, err) != 0) {
            rc = -1;
            break;
        }
        i++;
    }
    if (rc == 0 && i != s->n_records)
        rc = sp_fail(err, "%s: the input changed while it was being read", s->o->input);
    sp_example_free(&ex);
    sp_input_close(in);
    return rc < 0 ? -1 : 0;
}

static int close_writers(state *s, sp_error *err) {
    for (int k = 0; k < s->r->n_splits; k++) {
        sp_dataset_writer_set_truncated(s->w[k], s->r->splits[k].n_truncated);
        sp_dataset_writer *w = s->w[k];
        s->w[k] = NULL;
        if (sp_dataset_writer_close(w, err) != 0) {
            /* A partial set of splits is not a result: remove the ones already published. */
            for (int j = 0; j < k; j++) unlink(s->r->splits[j].path);
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* sp_prepare                                                                                 */
/* ------------------------------------------------------------------------------------------ */

static void cleanup(state *s) {
    for (int k = 0; k < SP_PREPARE_MAX_SPLITS; k++) sp_dataset_writer_abort(s->w[k]);
    free(s->cls), free(s->split_of);
    sp_formatter_free(s->fmt);
    sp_tokenizer_free(s->tok);
}

int sp_prepare(const sp_prepare_options *o, sp_prepare_report *r, sp_error *err) {
    memset(r, 0, sizeof *r);
    state s = {.o = o, .r = r};
    double t0 = sp__now();
    int rc = parse_split(o->split ? o->split : SP_PREPARE_DEFAULT_SPLIT, r, err) != 0
                 ? SP_PREPARE_BAD_OPTION
                 : 0;
    if (rc == 0) rc = name_outputs(o, r, err);
    if (rc == 0) rc = load(&s, err);
    double t1 = sp__now();
    r->load_seconds = t1 - t0;
    if (rc == 0 &&
        (scan_records(&s, err) != 0 || assign_splits(&s, err) != 0 || open_writers(&s, err) != 0 ||
         write_records(&s, err) != 0 || close_writers(&s, err) != 0))
        rc = -1;
    r->records_seconds = sp__now() - t1;
    struct stat st;
    r->input_bytes = stat(o->input, &st) == 0 ? (int64_t)st.st_size : 0;
    cleanup(&s);
    return rc;
}
