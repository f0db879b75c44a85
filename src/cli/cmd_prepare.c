/* `softprompt prepare`: labelled text records -> tokenized HDF5 datasets, one file per split.
 *
 * Two passes over the input: the first checks every record's fields and labels without
 * tokenizing (so data errors are found before any output exists) and remembers each record's
 * class; the splits are then drawn (stratified by class, deterministic for a seed); the second
 * pass tokenizes each record and appends it to its split's writer. Memory is O(records), not
 * O(tokens). Every error removes what was written (writers use temporary names). */
#include <errno.h>
#include <stddef.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/flags.h"
#include "softprompt/dataset.h"
#include "softprompt/input.h"
#include "softprompt/rng.h"
#include "softprompt/template.h"
#include "softprompt/tokenizer.h"
#include "util/escape.h"

#define CMD "prepare"
#define MAX_SPLITS 16
#define DEFAULT_MAX_LENGTH 1024
#define DEFAULT_SEED 42
#define DEFAULT_SPLIT "train=0.9,valid=0.1"
#define SKIPPED (-2) /* class slot of a skipped record */

typedef struct split {
    char name[64];
    double ratio;
    char *path;
    sp_dataset_writer *w;
    int published;
    int64_t n_examples, n_tokens, n_targets, n_truncated, longest;
    int64_t *per_class; /* [n_classes] */
} split;

typedef struct opts {
    const char *tokenizer, *input, *format, *out, *split_spec;
    sp_format_options fmt;
    uint64_t seed;
    int force, skip_empty, skip_unknown;
} opts;

/* ------------------------------------------------------------------------------------------ */
/* Options                                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* "train=0.9,valid=0.1" (or a single "name" meaning name=1). */
static int parse_split(const char *spec, split *sp, int *n, sp_error *err) {
    *n = 0;
    const char *p = spec;
    double sum = 0;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        size_t nlen = eq ? (size_t)(eq - p) : len;
        if (*n == MAX_SPLITS) return sp_fail(err, "--split: more than %d splits", MAX_SPLITS);
        split *s = &sp[*n];
        if (nlen == 0 || nlen >= sizeof s->name)
            return sp_fail(err, "--split '%s': split %d has %s name", spec, *n + 1,
                           nlen ? "a too long" : "an empty");
        for (size_t i = 0; i < nlen; i++) {
            char c = p[i];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-' || c == '.'))
                return sp_fail(err,
                               "--split '%s': split names may use letters, digits, '_', '-' "
                               "and '.' only",
                               spec);
        }
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

#define AT(field) offsetof(opts, field)
#define INPUT "input and tokenizer"
#define EXAMPLE "what an example is"
#define RECORDS "records"
#define OUTPUT "output"

static const sp_flag FLAGS[] = {
    SP_OPT_STR("tokenizer", AT(tokenizer), "DIR",
               "tokenizer.json (+ tokenizer_config.json: GPT-2, Llama 2/3,\n"
               "Qwen2, SmolLM kinds), vocab.json + merges.txt, or\n"
               "encoder.json + vocab.bpe; with a BOS policy every example\n"
               "starts with BOS",
               .flags = SP_FLAG_REQUIRED, .group = INPUT),
    SP_OPT_STR("input", AT(input), "FILE",
               "records: .jsonl, .csv, .tsv, or .json (JSON lines or one\n"
               "JSON array of objects)",
               .flags = SP_FLAG_REQUIRED),
    SP_OPT_STR("format", AT(format), "F", "jsonl | json | csv | tsv (default: from the extension)"),
    SP_OPT_STR("text-field", AT(fmt.text_field), "NAME", "field holding the text (default: text)"),
    SP_OPT_STR("label-field", AT(fmt.label_field), "NAME",
               "field holding the label / target (default: label)"),
    SP_OPT_STR("template", AT(fmt.template_spec), "T",
               "e.g. '{soft:20}{text} It was': {field}, {soft:N} = N new\n"
               "soft tokens, {soft} = one, {{ and }} = literal braces\n"
               "(default: '{text}'); a template without soft tokens gets\n"
               "--prompt-length of them prepended",
               .group = EXAMPLE),
    SP_OPT_INT("prompt-length", AT(fmt.prompt_length), "N", 0, SP_TEMPLATE_MAX_SOFT,
               "soft tokens prepended to a template without any (default\n" SP_XSTR(
                   SP_TEMPLATE_DEFAULT_SOFT) "; 0: none)"),
    SP_OPT_STR("target", AT(fmt.target_spec), "T",
               "the target: a field template without soft tokens (default\n"
               "'{label}'); with --verbalizer it must be a single field"),
    SP_OPT_STR("verbalizer", AT(fmt.verbalizer_spec), "V",
               "classification: '0= terrible,1= great' maps label values\n"
               "to single-token words (the leading space matters; '\\,'\n"
               "'\\=' '\\\\' escape); without it the dataset is generation"),
    SP_OPT_SWITCH("eos", AT(fmt.eos), 1,
                  "generation: end each target with <|endoftext|> (the default)"),
    SP_OPT_SWITCH("no-eos", AT(fmt.eos), 0, "generation: no end-of-text token after targets"),
    SP_OPT_INT(
        "max-length", AT(fmt.max_length), "N", 0, 1 << 30,
        "longest example in tokens (default " SP_XSTR(
            DEFAULT_MAX_LENGTH) "; 0: no limit);\n"
                                "longer ones lose tokens from the end of the truncate field"),
    SP_OPT_STR("truncate-field", AT(fmt.truncate_field), "NAME",
               "the only field that may be cut (default: the text field)"),
    SP_OPT_SWITCH("skip-empty", AT(skip_empty), 1,
                  "skip records whose text is empty (default: error)", .group = RECORDS),
    SP_OPT_SWITCH("skip-unknown-labels", AT(skip_unknown), 1,
                  "skip records whose label is not in the verbalizer\n(default: error)"),
    SP_OPT_STR("split", AT(split_spec), "S",
               "name=ratio,... (default " DEFAULT_SPLIT "); ratios add up\n"
               "to 1; stratified by class for classification",
               .group = OUTPUT),
    SP_OPT_U64("seed", AT(seed), "S",
               "seed of the split shuffle (default " SP_XSTR(DEFAULT_SEED) ")"),
    SP_OPT_STR("out", AT(out), "PREFIX", "writes PREFIX-<split>.h5", .flags = SP_FLAG_REQUIRED),
    SP_OPT_SWITCH("force", AT(force), 1, "overwrite existing outputs"),
    {0},
};

static const sp_flag_spec SPEC = {
    .cmd = CMD,
    .usage = "usage: softprompt prepare --tokenizer DIR --input FILE [--template T] [--target T]\n"
             "                          [--verbalizer V] [options] --out PREFIX\n",
    .about = "Tokenizes labelled text records into training-ready HDF5 datasets, one per split:\n"
             "PREFIX-<split>.h5 (default PREFIX-train.h5 and PREFIX-valid.h5). See docs/usage.md,\n"
             "\"Preparing datasets\".\n",
    .flags = FLAGS,
    .epilog = "Exit status: 0 success, 1 bad input data or I/O error (nothing is left behind),\n"
              "2 usage error.\n",
};

static void usage(FILE *out) {
    sp_flags_usage(&SPEC, out);
}

static void opts_default(opts *o) {
    memset(o, 0, sizeof *o);
    o->fmt.prompt_length = -1; /* < 0: SP_TEMPLATE_DEFAULT_SOFT */
    o->fmt.max_length = DEFAULT_MAX_LENGTH;
    o->fmt.eos = 1;
    o->seed = DEFAULT_SEED;
    o->split_spec = DEFAULT_SPLIT;
}

/* Returns 0, or 2 after reporting a usage error. */
static int parse_args(int argc, char **argv, opts *o) {
    opts_default(o);
    char *pos[argc > 0 ? argc : 1];
    int n_pos, rc = sp_flags_parse(&SPEC, argc, argv, o, pos, &n_pos);
    if (rc) return rc;
    if (!o->out[0]) return sp_flag_bad(CMD, "--out", o->out, "a path prefix");
    if (!o->fmt.verbalizer_spec && o->skip_unknown)
        return sp_flag_usage_error(CMD, "--skip-unknown-labels needs --verbalizer");
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Helpers                                                                                    */
/* ------------------------------------------------------------------------------------------ */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static int fail1(const sp_error *err) {
    fprintf(stderr, "softprompt prepare: %s\n", err->msg);
    return 1;
}

/* A verbalizer word in quotes for the summary (" great" -> "\" great\""), escaped. */
static void print_word(FILE *out, const char *w) {
    char shown[256];
    fprintf(out, "\"%s\"", sp_escape(w, shown, sizeof shown));
}

/* Grows a per-record class array. */
static int push_class(int32_t **a, size_t *n, size_t *cap, int32_t v) {
    if (*n == *cap) {
        size_t c = *cap ? 2 * *cap : 1024;
        int32_t *p = realloc(*a, c * sizeof *p);
        if (!p) return -1;
        *a = p, *cap = c;
    }
    (*a)[(*n)++] = v;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* The command                                                                                */
/* ------------------------------------------------------------------------------------------ */

typedef struct state {
    opts o;
    sp_tokenizer *tok;
    sp_formatter *fmt;
    split sp[MAX_SPLITS];
    int n_split;
    int n_classes;
    int32_t *cls; /* [n_records] class, -1 (generation) or SKIPPED */
    size_t n_records, cap_records;
    uint8_t *split_of; /* [n_records] */
    int64_t n_skip_empty, n_skip_unknown;
    int64_t *class_total;
} state;

static void cleanup(state *s) {
    for (int i = 0; i < s->n_split; i++) {
        sp_dataset_writer_abort(s->sp[i].w);
        free(s->sp[i].path);
        free(s->sp[i].per_class);
    }
    free(s->cls), free(s->split_of), free(s->class_total);
    sp_formatter_free(s->fmt);
    sp_tokenizer_free(s->tok);
}

/* Pass 1: every record's class (or SKIPPED). */
static int scan_records(state *s, sp_error *err) {
    sp_input *in = sp_input_open(s->o.input, s->o.format, err);
    if (!in) return -1;
    sp_record rec;
    int rc;
    char where[600];
    while ((rc = sp_input_next(in, &rec, err)) == 1) {
        sp_input_where(in, &rec, where, sizeof where);
        int label;
        int st = sp_formatter_check(s->fmt, &rec, where, &label, err);
        if (st == SP_REC_EMPTY_TEXT && s->o.skip_empty)
            s->n_skip_empty++, label = SKIPPED, st = 0;
        else if (st == SP_REC_UNKNOWN_LABEL && s->o.skip_unknown)
            s->n_skip_unknown++, label = SKIPPED, st = 0;
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
        if (push_class(&s->cls, &s->n_records, &s->cap_records, label) != 0) {
            sp_fail(err, "out of memory");
            rc = -1;
            break;
        }
    }
    sp_input_close(in);
    return rc < 0 ? -1 : 0;
}

/* Stratified split: each class's records are shuffled with the seed and cut by the ratios. */
static int assign_splits(state *s, sp_error *err) {
    size_t n = s->n_records;
    int groups = s->n_classes > 0 ? s->n_classes : 1;
    if (!(s->split_of = calloc(n ? n : 1, 1))) return sp_fail(err, "out of memory");
    size_t *idx = malloc((n ? n : 1) * sizeof *idx);
    if (!idx) return sp_fail(err, "out of memory");
    sp_rng rng;
    sp_rng_seed(&rng, s->o.seed);
    size_t kept = 0;
    for (int g = 0; g < groups; g++) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (s->cls[i] != SKIPPED && (s->n_classes == 0 || s->cls[i] == g)) idx[m++] = i;
        kept += m;
        for (size_t i = m; i > 1; i--) { /* Fisher-Yates */
            size_t j = (size_t)sp_rng_below(&rng, i);
            size_t t = idx[i - 1];
            idx[i - 1] = idx[j], idx[j] = t;
        }
        double cum = 0;
        size_t start = 0;
        for (int k = 0; k < s->n_split; k++) {
            cum += s->sp[k].ratio;
            size_t end = k == s->n_split - 1 ? m : (size_t)((double)m * cum + 1e-9);
            if (end > m) end = m;
            for (size_t i = start; i < end; i++) s->split_of[idx[i]] = (uint8_t)k;
            start = end;
        }
    }
    free(idx);
    if (kept == 0) return sp_fail(err, "%s: no records to prepare", s->o.input);
    /* Count per split to refuse empty ones before writing anything. */
    int64_t cnt[MAX_SPLITS] = {0};
    for (size_t i = 0; i < n; i++)
        if (s->cls[i] != SKIPPED) cnt[s->split_of[i]]++;
    for (int k = 0; k < s->n_split; k++)
        if (cnt[k] == 0)
            return sp_fail(err,
                           "split '%s' would get no examples (%zu records%s; ratio %g) — use "
                           "more data, a larger ratio, or fewer splits",
                           s->sp[k].name, kept, s->n_classes ? ", cut per class" : "",
                           s->sp[k].ratio);
    return 0;
}

static int open_writers(state *s, sp_error *err) {
    char hash[17];
    sp_tokenizer_hash_hex(s->tok, hash);
    const sp_verbalizer *v = sp_formatter_verbalizer(s->fmt);
    char created_by[64];
    snprintf(created_by, sizeof created_by, "softprompt %s", SP_VERSION);
    for (int k = 0; k < s->n_split; k++) {
        sp_dataset_meta m = {0};
        m.task = s->n_classes ? SP_TASK_CLASSIFICATION : SP_TASK_GENERATION;
        m.n_soft = sp_formatter_n_soft(s->fmt);
        m.n_classes = s->n_classes;
        m.verbalizer = sp_formatter_verbalizer_ids(s->fmt);
        m.class_names = v ? (const char *const *)v->values : NULL;
        m.max_length = s->o.fmt.max_length;
        m.seed = s->o.seed;
        m.tokenizer_hash = hash;
        m.template_spec = sp_formatter_template_spec(s->fmt);
        m.target_spec = sp_formatter_target_spec(s->fmt);
        m.verbalizer_spec = s->o.fmt.verbalizer_spec ? s->o.fmt.verbalizer_spec : "";
        m.source = base_name(s->o.input);
        m.split = s->sp[k].name;
        m.created_by = created_by;
        if (!(s->sp[k].w = sp_dataset_writer_open(s->sp[k].path, &m, s->o.force, err))) return -1;
    }
    return 0;
}

/* Pass 2: render every kept record into its split. */
static int write_records(state *s, sp_error *err) {
    sp_input *in = sp_input_open(s->o.input, s->o.format, err);
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
        split *sp = &s->sp[s->split_of[i]];
        if (sp_dataset_writer_add(sp->w, ex.tokens.ids, (int)ex.tokens.n, ex.target_pos,
                                  ex.target_ids, ex.n_targets, ex.label, err) != 0) {
            sp_fail_prefix(err, "%s", where);
            rc = -1;
            break;
        }
        sp->n_examples++;
        sp->n_tokens += (int64_t)ex.tokens.n;
        sp->n_targets += ex.n_targets;
        sp->n_truncated += ex.n_cut > 0;
        if ((int64_t)ex.tokens.n > sp->longest) sp->longest = (int64_t)ex.tokens.n;
        if (s->n_classes) sp->per_class[ex.label]++;
        i++;
    }
    if (rc == 0 && i != s->n_records)
        rc = sp_fail(err, "%s: the input changed while it was being read", s->o.input);
    sp_example_free(&ex);
    sp_input_close(in);
    return rc < 0 ? -1 : 0;
}

static int close_writers(state *s, sp_error *err) {
    for (int k = 0; k < s->n_split; k++) {
        sp_dataset_writer_set_truncated(s->sp[k].w, s->sp[k].n_truncated);
        sp_dataset_writer *w = s->sp[k].w;
        s->sp[k].w = NULL;
        if (sp_dataset_writer_close(w, err) != 0) {
            /* A partial set of splits is not a result: remove the ones already published. */
            for (int j = 0; j < k; j++) unlink(s->sp[j].path);
            return -1;
        }
        s->sp[k].published = 1;
    }
    return 0;
}

static void print_summary(const state *s, double load_s, double seconds) {
    const sp_verbalizer *v = sp_formatter_verbalizer(s->fmt);
    const int32_t *vid = sp_formatter_verbalizer_ids(s->fmt);
    int64_t kept = 0, tokens = 0, targets = 0, trunc = 0, longest = 0;
    for (int k = 0; k < s->n_split; k++) {
        kept += s->sp[k].n_examples, tokens += s->sp[k].n_tokens;
        targets += s->sp[k].n_targets, trunc += s->sp[k].n_truncated;
        if (s->sp[k].longest > longest) longest = s->sp[k].longest;
    }
    struct stat st;
    double mb = stat(s->o.input, &st) == 0 ? (double)st.st_size / 1e6 : 0;
    char hash[17];
    sp_tokenizer_hash_hex(s->tok, hash);
    printf("%-11s %s: %zu records, %" PRId64 " examples", "input", s->o.input, s->n_records, kept);
    if (s->n_skip_empty) printf(", %" PRId64 " skipped (empty text)", s->n_skip_empty);
    if (s->n_skip_unknown) printf(", %" PRId64 " skipped (unknown label)", s->n_skip_unknown);
    printf("\n%-11s %s (hash %s)", "tokenizer", s->o.tokenizer, hash);
    /* Llama-style tokenizers start every example with BOS (before the first text). */
    if (sp_tokenizer_adds_bos(s->tok)) {
        const char *bos = sp_tokenizer_id_to_token(s->tok, sp_tokenizer_bos_id(s->tok), NULL);
        printf(", examples start with %s", bos ? bos : "BOS");
    }
    printf("\n");
    if (s->n_classes)
        printf("%-11s classification, %d classes, %d soft tokens\n", "task", s->n_classes,
               sp_formatter_n_soft(s->fmt));
    else
        printf("%-11s generation, %d soft tokens, %s\n", "task", sp_formatter_n_soft(s->fmt),
               s->o.fmt.eos ? "targets end with <|endoftext|>" : "no EOS after targets");
    char shown[1024];
    printf("%-11s %s\n", "template", sp_escape(sp_formatter_template_spec(s->fmt), shown, 1024));
    printf("%-11s %s\n", "target", sp_escape(sp_formatter_target_spec(s->fmt), shown, 1024));
    if (v) {
        printf("%-11s", "classes");
        for (int c = 0; c < v->n_classes; c++) {
            int64_t n = 0;
            for (int k = 0; k < s->n_split; k++) n += s->sp[k].per_class[c];
            printf("%s%s -> ", c ? ",  " : " ", sp_escape(v->values[c], shown, sizeof shown));
            print_word(stdout, v->words[c]);
            printf(" (token %d): %" PRId64, (int)vid[c], n);
        }
        printf("\n");
    }
    printf("%-11s %-10s %9s %10s %9s %8s %10s%s\n", "splits", "", "examples", "tokens", "targets",
           "longest", "truncated", v ? "  per class" : "");
    for (int k = 0; k < s->n_split; k++) {
        const split *sp = &s->sp[k];
        printf("%-11s %-10s %9" PRId64 " %10" PRId64 " %9" PRId64 " %8" PRId64 " %10" PRId64, "",
               sp->name, sp->n_examples, sp->n_tokens, sp->n_targets, sp->longest, sp->n_truncated);
        if (v) {
            printf(" ");
            for (int c = 0; c < v->n_classes; c++)
                printf("%s%s: %" PRId64, c ? ", " : " ", sp_escape(v->values[c], shown, 1024),
                       sp->per_class[c]);
        }
        printf("\n");
    }
    printf("%-11s %-10s %9" PRId64 " %10" PRId64 " %9" PRId64 " %8" PRId64 " %10" PRId64 "\n", "",
           "total", kept, tokens, targets, longest, trunc);
    if (s->o.fmt.max_length > 0)
        printf("%-11s %" PRId64 " of %" PRId64 " examples cut to --max-length %d\n", "truncated",
               trunc, kept, s->o.fmt.max_length);
    printf("%-11s", "wrote");
    for (int k = 0; k < s->n_split; k++) printf("%s%s", k ? ", " : " ", s->sp[k].path);
    printf("\n%-11s %.3f s to load the tokenizer, %.3f s for the records (%.0f records/s, %.2f "
           "MB/s of input)\n",
           "time", load_s, seconds, seconds > 0 ? (double)s->n_records / seconds : 0,
           seconds > 0 ? mb / seconds : 0);
}

static int run(int argc, char **argv) {
    state s;
    memset(&s, 0, sizeof s);
    int rc = parse_args(argc, argv, &s.o);
    if (rc != 0) return rc < 0 ? 0 : rc;
    double t0 = now_s();
    sp_error err;
    if (parse_split(s.o.split_spec, s.sp, &s.n_split, &err) != 0) {
        fprintf(stderr, "softprompt prepare: %s\n", err.msg);
        return 2;
    }
    /* Output names, refused early if they exist (the writers check again). */
    for (int k = 0; k < s.n_split; k++) {
        size_t n = strlen(s.o.out) + strlen(s.sp[k].name) + 8;
        if (!(s.sp[k].path = malloc(n))) {
            cleanup(&s);
            return fail1(&(sp_error){.msg = "out of memory"});
        }
        snprintf(s.sp[k].path, n, "%s-%s.h5", s.o.out, s.sp[k].name);
        struct stat st;
        if (!s.o.force && stat(s.sp[k].path, &st) == 0) {
            fprintf(stderr,
                    "softprompt prepare: %s: already exists (use --force to overwrite it)\n",
                    s.sp[k].path);
            cleanup(&s);
            return 1;
        }
    }
    if (!(s.tok = sp_tokenizer_load(s.o.tokenizer, &err))) {
        sp_fail_prefix(&err, "--tokenizer %s", s.o.tokenizer);
        cleanup(&s);
        return fail1(&err);
    }
    if (!(s.fmt = sp_formatter_new(s.tok, &s.o.fmt, &err))) {
        fprintf(stderr, "softprompt prepare: %s\n", err.msg);
        cleanup(&s);
        return 2;
    }
    for (int i = 0; i < sp_formatter_n_warnings(s.fmt); i++)
        fprintf(stderr, "softprompt prepare: warning: %s\n", sp_formatter_warning(s.fmt, i));
    double t1 = now_s();
    const sp_verbalizer *v = sp_formatter_verbalizer(s.fmt);
    s.n_classes = v ? v->n_classes : 0;
    for (int k = 0; k < s.n_split; k++)
        if (!(s.sp[k].per_class = calloc((size_t)s.n_classes + 1, sizeof(int64_t)))) {
            cleanup(&s);
            return fail1(&(sp_error){.msg = "out of memory"});
        }
    if (scan_records(&s, &err) != 0 || assign_splits(&s, &err) != 0 ||
        open_writers(&s, &err) != 0 || write_records(&s, &err) != 0 ||
        close_writers(&s, &err) != 0) {
        cleanup(&s);
        return fail1(&err);
    }
    print_summary(&s, t1 - t0, now_s() - t1);
    cleanup(&s);
    return 0;
}

const sp_command SP_CMD_PREPARE = {
    .name = "prepare",
    .summary = "tokenize labelled text (JSONL/CSV/TSV/JSON) into HDF5 training datasets",
    .run = run,
    .usage = usage,
};
