/* Preparing datasets: labelled text records -> tokenized HDF5 datasets, one file per split
 * (what `softprompt prepare` runs; the user's guide is docs/usage.md, "Preparing datasets").
 *
 * Two passes over the input: the first checks every record's fields and labels without
 * tokenizing (so data errors are found before any output exists) and remembers each record's
 * class; the splits are then drawn (stratified by class, deterministic for a seed: each class's
 * records are shuffled and cut by the ratios); the second pass tokenizes each record and
 * appends it to its split's writer. Memory is O(records), not O(tokens).
 *
 * All or nothing: on any error no output file is left behind (the writers use temporary names,
 * and splits already published are removed), and an existing output is refused unless force. */
#ifndef SOFTPROMPT_PREPARE_H
#define SOFTPROMPT_PREPARE_H

#include <stdint.h>

#include "softprompt/error.h"
#include "softprompt/template.h"

#define SP_PREPARE_MAX_SPLITS 16
#define SP_PREPARE_DEFAULT_SPLIT "train=0.9,valid=0.1"
#define SP_PREPARE_DEFAULT_SEED 42
#define SP_PREPARE_DEFAULT_MAX_LENGTH 1024

typedef struct sp_prepare_options {
    const char *tokenizer; /* directory, as sp_tokenizer_load reads it */
    const char *input;     /* records: .jsonl, .csv, .tsv or .json (sp_input_open) */
    const char *format;    /* jsonl | json | csv | tsv; NULL: from the extension */
    const char *out;       /* PREFIX: the outputs are PREFIX-<split>.h5 */
    const char *split;     /* "name=ratio,..." adding up to 1, or one "name" */
    sp_format_options fmt; /* template, target, verbalizer, lengths (template.h) */
    uint64_t seed;         /* of the split shuffle */
    int force;             /* overwrite existing outputs */
    int skip_empty;        /* skip records whose text is empty (else an error) */
    int skip_unknown;      /* skip records whose label is not in the verbalizer (else an error) */
    /* Called with each of the formatter's warnings as soon as it is known, before the records
     * are read (they are in the report too); may be NULL. */
    void (*on_warning)(const char *warning, void *ctx);
    void *ctx;
} sp_prepare_options;

/* Resolves fmt->input_eos < 0 (automatic) for the tokenizer tok loaded from dir: 1 when tok
 * ends every sequence with EOS (sp_tokenizer_adds_eos: T5's "$A </s>") and dir's config.json
 * describes an encoder-decoder (is_encoder_decoder true or, without that key, the model_type of
 * an encoder-decoder family: t5), else 0 (no config.json: 0). An explicit 0 or 1 is kept.
 * Returns 0, or -1 with err naming config.json and the field when it is unreadable or wrong. */
int sp_prepare_input_eos(const char *dir, const sp_tokenizer *tok, sp_format_options *fmt,
                         sp_error *err);

/* The defaults of `softprompt prepare`: SP_PREPARE_DEFAULT_SPLIT, _SEED and _MAX_LENGTH, EOS
 * after generation targets, the default prompt length, input_eos automatic (-1); everything
 * else NULL / 0. */
void sp_prepare_options_default(sp_prepare_options *o);

typedef struct sp_prepare_split {
    char name[64];
    double ratio;
    char *path;          /* PREFIX-<name>.h5 */
    int64_t n_examples;  /* records written */
    int64_t n_tokens;    /* tokens of all examples (soft slots included) */
    int64_t n_targets;   /* scored target positions */
    int64_t n_truncated; /* examples cut to max_length */
    int64_t longest;     /* tokens of the longest example */
    int64_t *per_class;  /* [n_classes] examples of each class (classification) */
} sp_prepare_split;

typedef struct sp_prepare_report {
    int n_splits;
    sp_prepare_split splits[SP_PREPARE_MAX_SPLITS];
    int64_t n_records;         /* records read, skipped ones included */
    int64_t n_skipped_empty;   /* skipped for empty text (skip_empty) */
    int64_t n_skipped_unknown; /* skipped for a label not in the verbalizer (skip_unknown) */
    /* What the examples are. */
    int n_classes;           /* 0: generation */
    int n_soft;              /* soft slots of the template */
    int eos;                 /* generation: targets end with the EOS token */
    char *eos_token;         /* its text (NULL: no EOS after targets) */
    int max_length;          /* 0: no limit */
    char *template_spec;     /* the effective template (default soft slots included) */
    char *target_spec;       /* the effective target */
    char **class_values;     /* [n_classes] label text of each class */
    char **class_words;      /* [n_classes] its verbalizer word */
    int32_t *class_ids;      /* [n_classes] the word's token id */
    char tokenizer_hash[17]; /* sp_tokenizer_hash_hex */
    int starts_with_bos;     /* every example starts with the tokenizer's BOS */
    char *bos_token;         /* its text (NULL when the vocabulary has none) */
    int input_eos;           /* the input (before the target) ends with EOS: encoder-decoder */
    int n_warnings;
    char **warnings;        /* the formatter's warnings (sp_formatter_warning) */
    int64_t input_bytes;    /* size of the input file (0 when unknown) */
    double load_seconds;    /* loading the tokenizer and building the formatter */
    double records_seconds; /* reading, tokenizing and writing the records */
} sp_prepare_report;

/* sp_prepare's result for an invalid option (the split spec, the template, target, verbalizer
 * or lengths): what the command reports as a usage error. */
#define SP_PREPARE_BAD_OPTION (-2)

/* Prepares o->input into one dataset per split and fills r. Returns 0; -1 with err set when the
 * input, the tokenizer or I/O failed; SP_PREPARE_BAD_OPTION with err set. r holds what was known
 * when it stopped (the warnings, in particular); free it with sp_prepare_report_free in every
 * case. */
int sp_prepare(const sp_prepare_options *o, sp_prepare_report *r, sp_error *err);
void sp_prepare_report_free(sp_prepare_report *r);

/* ------------------------------------------------------------------------------------------ */
/* Examples in memory, for inference (`softprompt predict`)                                   */
/* ------------------------------------------------------------------------------------------ */

/* Classification examples held in memory: each one's tokens (ids and SP_SOFT(k)), the position
 * of its one target (the last template token, whose logits are scored) and its label (-1:
 * unlabelled), with the classes they are scored on. */
typedef struct sp_examples {
    int64_t n;
    int64_t *start;      /* [n + 1] example i is tokens [start[i], start[i + 1]) */
    int32_t *tokens;     /* [start[n]] */
    int32_t *target_pos; /* [n] position of the target within its example */
    int32_t *labels;     /* [n] class index, or -1 (no label) */
    int64_t n_labelled;  /* examples with a label */
    int n_soft;          /* soft slots of the template */
    int n_classes;
    char **class_names;  /* [n_classes] */
    int32_t *verbalizer; /* [n_classes] token id of each class's word */
    char *source;        /* the input file, for messages */
    size_t cap_tokens, cap_n;
} sp_examples;

/* Renders every record of o->input with o->tokenizer and o->fmt exactly as sp_prepare renders
 * them (the same readers and formatter; labels optional: o->fmt.target is SP_TARGET_OPTIONAL here),
 * in input order. o->fmt.verbalizer_spec is required (classification). o->out, o->split, o->seed
 * and o->force are not used. On failure (a bad record: "data.jsonl:17: field ..."; returns -1,
 * or SP_PREPARE_BAD_OPTION for an invalid template, target or verbalizer) ex is empty. */
int sp_examples_from_records(const sp_prepare_options *o, sp_examples *ex, sp_error *err);
/* Reads a prepared classification set (sp_dataset_open's checks; generation sets refused) into
 * ex, every example read and checked. */
int sp_examples_from_dataset(const char *path, sp_examples *ex, sp_error *err);
void sp_examples_free(sp_examples *ex);
/* Removes the soft slots of every example in place (a prompt method without input soft tokens,
 * such as prefix tuning, leaves them out as eval does: sp_batch_data_strip_soft); a target at a
 * soft position moves to the last preceding text position. -1 naming the example when one holds
 * soft tokens only (ex is then partly stripped: free it). */
int sp_examples_strip_soft(sp_examples *ex, sp_error *err);

#endif
