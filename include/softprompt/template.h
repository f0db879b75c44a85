/* Templates, targets and verbalizers: how a labelled text record becomes the token ids, soft
 * slots and scored targets of one training example (used by `softprompt prepare`; the user's
 * guide is docs/usage.md, "Preparing datasets").
 *
 * Template syntax ("{soft:20}{text} It was"):
 *   {name}     the text of record field `name` (any characters but braces; names are exact)
 *   {soft:N}   N consecutive NEW soft-prompt slots (1 <= N <= SP_TEMPLATE_MAX_SOFT)
 *   {soft}     one new soft slot (same as {soft:1})
 *   {mask}     the tokenizer's mask token ([MASK], <mask>): where a masked LM (BERT, RoBERTa)
 *              is scored; at most one, only in a template, and only with a verbalizer
 *   {{  }}     a literal '{' / '}'
 *   anything else is literal text, kept byte for byte (spaces included).
 * Slots are numbered left to right from 0: '{soft:2}{text}{soft}' uses slots 0, 1 | text | 2.
 * "soft" and "mask" are therefore not usable as field names. A template with no soft slot at all
 * gets `prompt_length` slots prepended (default SP_TEMPLATE_DEFAULT_SOFT = 20, PEFT's usual
 * num_virtual_tokens): '{text} It was' means '{soft:20}{text} It was', the placement of
 * Lester et al. (2021) and Hugging Face PEFT. The default template is '{text}'.
 *
 * A target spec has the same syntax without soft slots; the default is '{label}' (the label
 * field). A verbalizer ("0= terrible,1= great") makes the dataset a classification one:
 * comma-separated `value=word` entries; value is matched exactly against the label field's
 * text after trimming spaces around the value in the spec; word is everything after the first
 * '=' up to the next ',' with NOTHING trimmed (its leading space matters: " great" is one GPT-2
 * token, "great" another). Inside values and words, '\,' '\=' and '\\' stand for ',', '=' and
 * '\'. Class i is the i-th entry; every word must encode to exactly one token (checked at
 * setup, naming the word and its tokens), and two classes may not share a token.
 *
 * Rendering. The template is cut into segments at its soft slots: each maximal run of literal
 * text and fields between soft slots is rendered to one string and encoded AS A WHOLE, so its
 * ids are exactly those of encoding the rendered text (e.g. "Review: {text}" gives " The" for a
 * text starting with "The", as Hugging Face would). A soft slot is a hard boundary (the text on
 * either side is encoded separately, as Hugging Face PEFT does with its virtual tokens), and so
 * is a literal holding a special token such as "<|endoftext|>": such a literal is encoded on
 * its own with special tokens recognised. Field values never produce special tokens. The
 * target is encoded separately from the template (a prompt/answer boundary, as in the usual
 * recipes that tokenize the input and the target separately): '{text} =>' + ' {label}' gives
 * " =>" then " fromage", never a merge across the boundary.
 *
 *   classification (verbalizer given): tokens = rendered template; one target at the last
 *     position whose id is the verbalizer token of the record's class. With {mask} (masked
 *     LMs) the target is at the mask token's position instead, the mask token is a boundary
 *     like a soft slot (the text on either side is encoded separately), and a tokenizer that
 *     ends sequences with EOS (BERT's [SEP], RoBERTa's </s>) gets it after the template, as
 *     Hugging Face's tokenizer gives [CLS] ... [MASK] ... [SEP].
 *   generation (no verbalizer): the target spec is rendered and encoded (+ EOS when eos is
 *     set); tokens = template tokens + target tokens except the LAST one (it is never an input
 *     whose prediction is scored, so it is not stored); targets at every position whose next
 *     token is a target token: position L-1+j scores target token j (L = template length).
 *     This is Hugging Face's causal-LM loss restricted to the target tokens.
 *
 * Truncation (max_length > 0): when an example is longer than max_length tokens, the END of the
 * truncate field (default: the text field, when the template uses it exactly once) is cut and
 * nothing else: template literals, soft slots and targets are never cut. The cut keeps the
 * field's first k tokens (its own encoding), backs up to a whole UTF-8 character, re-encodes
 * the segment and shrinks k until the example fits, so the stored ids are still exactly the
 * encoding of the (shortened) rendered text. At least one token of the field must remain: a
 * record that cannot fit otherwise is an error.
 *
 * Records: a field the template or target needs must be present and text (missing / null /
 * array / object is an error naming the field). The text field (when the template uses it)
 * must not be empty or whitespace-only, and in classification the label must be one of the
 * verbalizer's values; both are reported as distinct outcomes (SP_REC_EMPTY_TEXT,
 * SP_REC_UNKNOWN_LABEL) so that a caller can choose to skip such records and count them.
 * Every message starts with the caller's `where` ("data.jsonl:17") and names the field. */
#ifndef SOFTPROMPT_TEMPLATE_H
#define SOFTPROMPT_TEMPLATE_H

#include <stddef.h>
#include <stdint.h>

#include "softprompt/error.h"
#include "softprompt/records.h"
#include "softprompt/tokenizer.h"

#define SP_TEMPLATE_DEFAULT_SOFT 20
#define SP_TEMPLATE_MAX_SOFT 4096

/* ------------------------------------------------------------------------------------------ */
/* Parsed templates                                                                           */
/* ------------------------------------------------------------------------------------------ */

typedef enum sp_piece_kind {
    SP_PIECE_LITERAL = 0,
    SP_PIECE_FIELD = 1,
    SP_PIECE_SOFT = 2,
    SP_PIECE_MASK = 3, /* {mask}: the tokenizer's mask token (masked LMs) */
} sp_piece_kind;

typedef struct sp_template_piece {
    sp_piece_kind kind;
    char *text;     /* literal text (escapes resolved) or field name; NULL for soft */
    size_t len;     /* bytes of text */
    int soft_first; /* SOFT: first slot index */
    int n_soft;     /* SOFT: number of slots */
    int column;     /* 1-based column (in characters) where the piece starts in the spec */
} sp_template_piece;

typedef struct sp_template {
    int n_pieces;
    sp_template_piece *pieces; /* adjacent literals are merged */
    int n_soft;                /* total slots */
    int n_mask;                /* {mask} pieces (0 or 1) */
} sp_template;

/* Parses spec into t. what names the option in messages ("--template"); errors give the
 * 1-based character column of the problem. allow_soft = 0 refuses soft slots (targets). */
int sp_template_parse(sp_template *t, const char *spec, int allow_soft, const char *what,
                      sp_error *err);
void sp_template_free(sp_template *t);
/* Number of pieces that insert field name. */
int sp_template_count_field(const sp_template *t, const char *name);

/* ------------------------------------------------------------------------------------------ */
/* Verbalizers                                                                                */
/* ------------------------------------------------------------------------------------------ */

typedef struct sp_verbalizer {
    int n_classes;
    char **values; /* [n] label text of class i (escapes resolved, trimmed) */
    char **words;  /* [n] word of class i (escapes resolved, not trimmed) */
} sp_verbalizer;

/* Parses "0= terrible,1= great". Duplicate or empty values and empty words are errors. */
int sp_verbalizer_parse(sp_verbalizer *v, const char *spec, sp_error *err);
void sp_verbalizer_free(sp_verbalizer *v);
/* Class index of label text, or -1. */
int sp_verbalizer_find(const sp_verbalizer *v, const char *value);

/* ------------------------------------------------------------------------------------------ */
/* Formatter: template + target + verbalizer + tokenizer                                      */
/* ------------------------------------------------------------------------------------------ */

/* What a record gives for the target, by use. */
typedef enum sp_target_mode {
    SP_TARGET_REQUIRED, /* training, eval: the label (classification) or target fields */
    /* Classification, for inference (`predict`): a record WITHOUT the label field is accepted,
     * its label -1 and its one target (at the last position) class 0's word, a stand-in whose
     * logits are what is wanted. A label that is present must still be a verbalizer value. */
    SP_TARGET_OPTIONAL,
    /* The template alone (`generate`): no target or verbalizer, the label field is not needed,
     * no target positions. */
    SP_TARGET_NONE,
} sp_target_mode;

typedef struct sp_format_options {
    const char *template_spec;   /* NULL: "{<text_field>}" */
    const char *target_spec;     /* NULL: "{<label_field>}" */
    const char *verbalizer_spec; /* NULL: generation */
    const char *text_field;      /* NULL: "text" */
    const char *label_field;     /* NULL: "label" */
    const char *truncate_field;  /* NULL: text_field if the template uses it, else none */
    int prompt_length; /* slots prepended to a template without any; < 0: the default 20 */
    int max_length;    /* 0: no limit */
    int eos;           /* generation: append the tokenizer's EOS to the target */
    /* 1: the input (the template, before the target) ends with the tokenizer's EOS, once, as
     * an encoder-decoder's tokenizer ends it (T5's "$A </s>"); 0: not; < 0 (auto) is 0 here and
     * resolved by sp_prepare_input_eos (prepare.h) from the model's config.json. */
    int input_eos;
    sp_target_mode target; /* what a record must give for the target (default: required) */
} sp_format_options;

typedef struct sp_formatter sp_formatter;

/* Validates everything that can be checked before reading data (syntax, field names, the
 * truncate field, single-token verbalizer words, EOS availability). tok must outlive f and is
 * used for encoding (so f, like tok, belongs to one thread). */
sp_formatter *sp_formatter_new(sp_tokenizer *tok, const sp_format_options *o, sp_error *err);
void sp_formatter_free(sp_formatter *f);

int sp_formatter_is_classification(const sp_formatter *f);
int sp_formatter_n_soft(const sp_formatter *f);
/* The effective template (with the default soft slots, if any were prepended) and target. */
const char *sp_formatter_template_spec(const sp_formatter *f);
const char *sp_formatter_target_spec(const sp_formatter *f);
const sp_template *sp_formatter_template(const sp_formatter *f);
/* Classification: the verbalizer and each class's token id ([n_classes]). */
const sp_verbalizer *sp_formatter_verbalizer(const sp_formatter *f);
const int32_t *sp_formatter_verbalizer_ids(const sp_formatter *f);

/* Warnings (not errors) about a template that is valid but probably not what was meant: it
 * inserts no record field (every example gets the same input), or not the text field, or a
 * field the target is made of (the answer leaks into the input: {label} in a classification
 * template). Up to 4, each a sentence naming the template and the field; valid while f lives.
 * sp_formatter_warning returns NULL for i outside [0, n). `softprompt prepare` prints them. */
int sp_formatter_n_warnings(const sp_formatter *f);
const char *sp_formatter_warning(const sp_formatter *f, int i);

/* Outcomes of sp_formatter_check / sp_formatter_render besides 0 and -1 (err filled). */
enum { SP_REC_EMPTY_TEXT = 1, SP_REC_UNKNOWN_LABEL = 2 };

/* Checks the record's fields without tokenizing; *label receives the class index
 * (classification) or -1. Returns 0, SP_REC_EMPTY_TEXT, SP_REC_UNKNOWN_LABEL or -1. */
int sp_formatter_check(const sp_formatter *f, const sp_record *rec, const char *where, int *label,
                       sp_error *err);

/* One rendered example; reuse it across records, free with sp_example_free. */
typedef struct sp_example {
    sp_token_buf tokens; /* ids and SP_SOFT(k) */
    int32_t *target_pos; /* [n_targets] positions within the example */
    int32_t *target_ids; /* [n_targets] */
    int n_targets, cap_targets;
    int label; /* class index, or -1 */
    int n_cut; /* tokens cut from the truncate field (0: not truncated) */
} sp_example;

void sp_example_free(sp_example *ex);

/* Renders rec into ex (see the top of this file). Returns 0, SP_REC_EMPTY_TEXT,
 * SP_REC_UNKNOWN_LABEL or -1. */
int sp_formatter_render(sp_formatter *f, const sp_record *rec, const char *where, sp_example *ex,
                        sp_error *err);

#endif
