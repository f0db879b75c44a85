/* `softprompt prepare`: the flags of sp_prepare (include/softprompt/prepare.h, which does the
 * work) and the summary of its report. */
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/flags.h"
#include "softprompt/prepare.h"
#include "util/escape.h"

#define CMD "prepare"

#define AT(field) offsetof(sp_prepare_options, field)
#define INPUT "input and tokenizer"
#define EXAMPLE "what an example is"
#define RECORDS "records"
#define OUTPUT "output"

static const sp__flag FLAGS[] = {
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
    SP_OPT_INPUT_FORMAT("format", AT(format),
                        "jsonl | json | csv | tsv (default: from the extension)"),
    SP_OPT_STR("text-field", AT(fmt.text_field), "NAME", "field holding the text (default: text)"),
    SP_OPT_STR("label-field", AT(fmt.label_field), "NAME",
               "field holding the label / target (default: label)"),
    SP_OPT_STR("template", AT(fmt.template_spec), "T",
               "e.g. '{soft:20}{text} It was': {field}, {soft:N} = N new\n"
               "soft tokens, {soft} = one, {{ and }} = literal braces,\n"
               "{mask} = the mask token where a masked LM (bert,\n"
               "roberta) is scored, with --verbalizer (default: '{text}');\n"
               "a template without soft tokens gets --prompt-length of them\n"
               "prepended",
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
                  "generation: end each target with the tokenizer's EOS (the default)"),
    SP_OPT_SWITCH("no-eos", AT(fmt.eos), 0, "generation: no end-of-text token after targets"),
    SP_OPT_SWITCH("input-eos", AT(fmt.input_eos), 1,
                  "end the input (the template) with the tokenizer's EOS, as\n"
                  "an encoder-decoder's tokenizer does (default: when DIR's\n"
                  "config.json is an encoder-decoder's, e.g. T5, and the\n"
                  "tokenizer appends EOS)"),
    SP_OPT_SWITCH("no-input-eos", AT(fmt.input_eos), 0, "no EOS after the input"),
    SP_OPT_INT("max-length", AT(fmt.max_length), "N", 0, 1 << 30,
               "longest example in tokens (default " SP_XSTR(
                   SP_PREPARE_DEFAULT_MAX_LENGTH) "; 0: no limit);\n"
                                                  "longer ones lose tokens from the end of the "
                                                  "truncate field"),
    SP_OPT_STR("truncate-field", AT(fmt.truncate_field), "NAME",
               "the only field that may be cut (default: the text field)"),
    SP_OPT_SWITCH("skip-empty", AT(skip_empty), 1,
                  "skip records whose text is empty (default: error)", .group = RECORDS),
    SP_OPT_SWITCH("skip-unknown-labels", AT(skip_unknown), 1,
                  "skip records whose label is not in the verbalizer\n(default: error)"),
    SP_OPT_STR("split", AT(split), "S",
               "name=ratio,... (default " SP_PREPARE_DEFAULT_SPLIT "); ratios add up\n"
               "to 1; stratified by class for classification",
               .group = OUTPUT),
    SP_OPT_U64("seed", AT(seed), "S",
               "seed of the split shuffle (default " SP_XSTR(SP_PREPARE_DEFAULT_SEED) ")"),
    SP_OPT_STR("out", AT(out), "PREFIX", "writes PREFIX-<split>.h5", .flags = SP_FLAG_REQUIRED),
    SP_OPT_SWITCH("force", AT(force), 1, "overwrite existing outputs"),
    {0},
};

static const sp__flag_spec SPEC = {
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
    sp__flags_usage(&SPEC, out);
}

/* Returns 0, or 2 after reporting a usage error. */
static int parse_args(int argc, char **argv, sp_prepare_options *o) {
    sp_prepare_options_default(o);
    char *pos[argc > 0 ? argc : 1];
    int n_pos, rc = sp__flags_parse(&SPEC, argc, argv, o, pos, &n_pos);
    if (rc) return rc;
    if (!o->out[0]) return sp__flag_bad(CMD, "--out", o->out, "a path prefix");
    if (!o->fmt.verbalizer_spec && o->skip_unknown)
        return sp__flag_usage_error(CMD, "--skip-unknown-labels needs --verbalizer");
    return 0;
}

/* A verbalizer word in quotes for the summary (" great" -> "\" great\""), escaped. */
static void print_word(FILE *out, const char *w) {
    char shown[256];
    fprintf(out, "\"%s\"", sp__escape(w, shown, sizeof shown));
}

static void print_warning(const char *warning, void *ctx) {
    (void)ctx;
    fprintf(stderr, "softprompt prepare: warning: %s\n", warning);
}

/* The sums over the splits, as the "total" row. */
static sp_prepare_split totals(const sp_prepare_report *r) {
    sp_prepare_split t = {.name = "total"};
    for (int k = 0; k < r->n_splits; k++) {
        const sp_prepare_split *sp = &r->splits[k];
        t.n_examples += sp->n_examples, t.n_tokens += sp->n_tokens;
        t.n_targets += sp->n_targets, t.n_truncated += sp->n_truncated;
        if (sp->longest > t.longest) t.longest = sp->longest;
    }
    return t;
}

/* Input, tokenizer, task, template and target, and the classes with their words. */
static void print_examples(const sp_prepare_options *o, const sp_prepare_report *r, int64_t kept) {
    printf("%-11s %s: %" PRId64 " records, %" PRId64 " examples", "input", o->input, r->n_records,
           kept);
    if (r->n_skipped_empty) printf(", %" PRId64 " skipped (empty text)", r->n_skipped_empty);
    if (r->n_skipped_unknown) printf(", %" PRId64 " skipped (unknown label)", r->n_skipped_unknown);
    printf("\n%-11s %s (hash %s)", "tokenizer", o->tokenizer, r->tokenizer_hash);
    if (r->starts_with_bos) printf(", examples start with %s", r->bos_token ? r->bos_token : "BOS");
    if (r->input_eos) printf(", inputs end with EOS (encoder-decoder)");
    printf("\n");
    if (r->n_classes)
        printf("%-11s classification, %d classes, %d soft tokens\n", "task", r->n_classes,
               r->n_soft);
    else if (r->eos)
        printf("%-11s generation, %d soft tokens, targets end with %s\n", "task", r->n_soft,
               r->eos_token ? r->eos_token : "EOS");
    else
        printf("%-11s generation, %d soft tokens, no EOS after targets\n", "task", r->n_soft);
    char shown[1024];
    printf("%-11s %s\n", "template", sp__escape(r->template_spec, shown, 1024));
    printf("%-11s %s\n", "target", sp__escape(r->target_spec, shown, 1024));
    if (!r->n_classes) return;
    printf("%-11s", "classes");
    for (int c = 0; c < r->n_classes; c++) {
        int64_t n = 0;
        for (int k = 0; k < r->n_splits; k++) n += r->splits[k].per_class[c];
        printf("%s%s -> ", c ? ",  " : " ", sp__escape(r->class_values[c], shown, sizeof shown));
        print_word(stdout, r->class_words[c]);
        printf(" (token %d): %" PRId64, (int)r->class_ids[c], n);
    }
    printf("\n");
}

/* One row of the splits table (per-class counts when given). */
static void print_split_row(const sp_prepare_report *r, const sp_prepare_split *sp,
                            const int64_t *per_class) {
    printf("%-11s %-10s %9" PRId64 " %10" PRId64 " %9" PRId64 " %8" PRId64 " %10" PRId64, "",
           sp->name, sp->n_examples, sp->n_tokens, sp->n_targets, sp->longest, sp->n_truncated);
    if (per_class) {
        char shown[1024];
        printf(" ");
        for (int c = 0; c < r->n_classes; c++)
            printf("%s%s: %" PRId64, c ? ", " : " ", sp__escape(r->class_values[c], shown, 1024),
                   per_class[c]);
    }
    printf("\n");
}

static void print_summary(const sp_prepare_options *o, const sp_prepare_report *r) {
    sp_prepare_split total = totals(r);
    print_examples(o, r, total.n_examples);
    printf("%-11s %-10s %9s %10s %9s %8s %10s%s\n", "splits", "", "examples", "tokens", "targets",
           "longest", "truncated", r->n_classes ? "  per class" : "");
    for (int k = 0; k < r->n_splits; k++)
        print_split_row(r, &r->splits[k], r->n_classes ? r->splits[k].per_class : NULL);
    print_split_row(r, &total, NULL);
    if (r->max_length > 0)
        printf("%-11s %" PRId64 " of %" PRId64 " examples cut to --max-length %d\n", "truncated",
               total.n_truncated, total.n_examples, r->max_length);
    printf("%-11s", "wrote");
    for (int k = 0; k < r->n_splits; k++) printf("%s%s", k ? ", " : " ", r->splits[k].path);
    double sec = r->records_seconds;
    printf("\n%-11s %.3f s to load the tokenizer, %.3f s for the records (%.0f records/s, %.2f "
           "MB/s of input)\n",
           "time", r->load_seconds, sec, sec > 0 ? (double)r->n_records / sec : 0,
           sec > 0 ? (double)r->input_bytes / 1e6 / sec : 0);
}

static int run(int argc, char **argv) {
    sp_prepare_options o;
    int rc = parse_args(argc, argv, &o);
    if (rc != 0) return rc < 0 ? 0 : rc;
    o.on_warning = print_warning;
    sp_prepare_report r;
    sp_error err;
    rc = sp_prepare(&o, &r, &err);
    if (rc == 0)
        print_summary(&o, &r);
    else
        fprintf(stderr, "softprompt prepare: %s\n", err.msg);
    sp_prepare_report_free(&r);
    return rc == 0 ? 0 : rc == SP_PREPARE_BAD_OPTION ? 2 : 1;
}

const sp__command SP_CMD_PREPARE = {
    .name = "prepare",
    .summary = "tokenize labelled text (JSONL/CSV/TSV/JSON) into HDF5 training datasets",
    .run = run,
    .usage = usage,
};
