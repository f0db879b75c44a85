/* The formatter: a parsed template, target and verbalizer bound to a tokenizer, which checks
 * records and renders each into the token ids, soft slots and targets of one example
 * (template.h describes the rendering and truncation rules; template.c parses the specs). */
#include "softprompt/template.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "softprompt/engine.h"
#include "util/escape.h"
#include "util/vec.h"

#define MAX_WARNINGS 4

/* ------------------------------------------------------------------------------------------ */
/* Small helpers                                                                              */
/* ------------------------------------------------------------------------------------------ */

/* Copies s into out as a double-quoted, escaped string for messages (truncated to fit). */
static const char *quote(const char *s, size_t n, char *out, size_t cap) {
    size_t k = 0;
    if (cap < 8) return "";
    out[k++] = '"';
    for (size_t i = 0; i < n && k + 6 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            out[k++] = '\\', out[k++] = (char)c;
        else if (c == '\n')
            out[k++] = '\\', out[k++] = 'n';
        else if (c == '\t')
            out[k++] = '\\', out[k++] = 't';
        else if (c < 0x20 || c == 0x7F)
            k += (size_t)snprintf(out + k, cap - k, "\\x%02X", c);
        else
            out[k++] = (char)c;
    }
    out[k++] = '"';
    out[k] = '\0';
    return out;
}

static int is_blank_text(const char *s) {
    for (; *s; s++)
        if (!strchr(" \t\n\r\v\f", *s)) return 0;
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Formatter                                                                                  */
/* ------------------------------------------------------------------------------------------ */

/* The template (or target) is cut into segments that are encoded one by one: soft slots, literal
 * pieces holding a special token (encoded alone, with special tokens recognised), and maximal
 * runs of other literals and fields, whose text is concatenated and encoded as ONE string so
 * that the ids equal those of the whole rendered text. */
typedef enum { SEG_SOFT, SEG_FIXED, SEG_TEXT } seg_kind;

typedef struct segment {
    seg_kind kind;
    int first, last; /* SEG_TEXT: pieces [first, last) */
    int soft_first, n_soft;
    int has_fields;   /* SEG_TEXT: 0 means the ids are cached */
    int is_mask;      /* SEG_FIXED: the {mask} token, where the target is */
    int trunc_piece;  /* the truncate field's piece if it is in this segment, else -1 */
    sp_token_buf ids; /* cached (fixed or literal-only) or the current record's */
} segment;

typedef struct segments {
    int n;
    segment *s;
} segments;

struct sp_formatter {
    sp_tokenizer *tok;
    sp_template tpl, tgt;
    segments tseg, gseg; /* template, target */
    char *tpl_spec, *tgt_spec;
    char *text_field, *label_field;
    int uses_text;   /* the template inserts the text field */
    int trunc_piece; /* template piece that may be cut, or -1 */
    int classification;
    sp_target_mode target; /* sp_format_options.target */
    sp_verbalizer verb;
    int32_t *verb_ids;
    int max_length;
    int32_t eos_id;  /* -1: no EOS appended */
    int32_t mask_id; /* the tokenizer's mask token ({mask}), -1: none */
    sp__buf text;    /* the segment being rendered */
    sp_token_buf tgt_all, scratch;
    char *warnings[MAX_WARNINGS]; /* see sp_formatter_warning */
    int n_warnings;
};

void sp_example_free(sp_example *ex) {
    if (!ex) return;
    sp_token_buf_free(&ex->tokens);
    free(ex->target_pos), free(ex->target_ids);
    memset(ex, 0, sizeof *ex);
}

static void segments_free(segments *g) {
    for (int i = 0; i < g->n; i++) sp_token_buf_free(&g->s[i].ids);
    free(g->s);
    memset(g, 0, sizeof *g);
}

void sp_formatter_free(sp_formatter *f) {
    if (!f) return;
    segments_free(&f->tseg), segments_free(&f->gseg);
    sp_token_buf_free(&f->tgt_all), sp_token_buf_free(&f->scratch);
    free(f->text.p);
    sp_template_free(&f->tpl), sp_template_free(&f->tgt);
    sp_verbalizer_free(&f->verb);
    free(f->verb_ids);
    free(f->tpl_spec), free(f->tgt_spec), free(f->text_field), free(f->label_field);
    for (int i = 0; i < f->n_warnings; i++) free(f->warnings[i]);
    free(f);
}

static char *dup_printf(const char *fmt, const char *a, const char *b) {
    size_t n = strlen(fmt) + strlen(a) + (b ? strlen(b) : 0) + 16;
    char *s = malloc(n);
    if (s) snprintf(s, n, fmt, a, b ? b : "");
    return s;
}

static segment *new_segment(segments *g, seg_kind kind) {
    if (sp__vec_resize(&g->s, (size_t)g->n + 1, sizeof *g->s) != 0) return NULL;
    segment *s = g->s;
    memset(&s[g->n], 0, sizeof s[g->n]);
    s[g->n].kind = kind;
    s[g->n].trunc_piece = -1;
    return &s[g->n++];
}

/* Cuts t into segments; encodes the literal-only ones once. */
static int build_segments(sp_formatter *f, const sp_template *t, segments *g, int trunc_piece,
                          const char *what, sp_error *err) {
    segment *run = NULL;
    sp_token_buf probe = {0};
    for (int i = 0; i < t->n_pieces; i++) {
        const sp_template_piece *p = &t->pieces[i];
        if (p->kind == SP_PIECE_SOFT) {
            segment *s = new_segment(g, SEG_SOFT);
            if (!s) goto oom;
            s->soft_first = p->soft_first, s->n_soft = p->n_soft;
            run = NULL;
            continue;
        }
        if (p->kind == SP_PIECE_MASK) {
            segment *s = new_segment(g, SEG_FIXED);
            if (!s || sp_token_buf_append(&s->ids, &f->mask_id, 1) != 0) goto oom;
            s->first = i, s->last = i + 1, s->is_mask = 1;
            run = NULL;
            continue;
        }
        if (p->kind == SP_PIECE_LITERAL) {
            probe.n = 0;
            if (sp_tokenizer_encode_append(f->tok, p->text, p->len, SP_TOK_ALLOW_SPECIAL, &probe,
                                           err) != 0) {
                sp_token_buf_free(&probe);
                return sp_fail_prefix(err, "%s column %d", what, p->column);
            }
            int special = 0;
            for (size_t k = 0; k < probe.n; k++)
                special |= sp_tokenizer_is_special(f->tok, probe.ids[k]);
            if (special) {
                segment *s = new_segment(g, SEG_FIXED);
                if (!s) goto oom;
                s->first = i, s->last = i + 1;
                s->ids = probe;
                probe = (sp_token_buf){0};
                run = NULL;
                continue;
            }
        }
        if (!run) {
            if (!(run = new_segment(g, SEG_TEXT))) goto oom;
            run->first = i;
        }
        run->last = i + 1;
        if (p->kind == SP_PIECE_FIELD) run->has_fields = 1;
        if (i == trunc_piece) run->trunc_piece = i;
    }
    sp_token_buf_free(&probe);
    for (int k = 0; k < g->n; k++) {
        segment *s = &g->s[k];
        if (s->kind != SEG_TEXT || s->has_fields) continue;
        sp__buf b = {0};
        for (int i = s->first; i < s->last; i++)
            if (sp__buf_add(&b, t->pieces[i].text, t->pieces[i].len) != 0) {
                free(b.p);
                goto oom;
            }
        int rc = sp_tokenizer_encode_append(f->tok, b.p, b.len, 0, &s->ids, err);
        free(b.p);
        if (rc != 0) return sp_fail_prefix(err, "%s", what);
    }
    return 0;
oom:
    sp_token_buf_free(&probe);
    return sp_fail(err, "%s: out of memory", what);
}

/* Single-token check of every verbalizer word; fills f->verb_ids. */
static int encode_verbalizer(sp_formatter *f, sp_error *err) {
    int n = f->verb.n_classes;
    if (!(f->verb_ids = calloc((size_t)n, sizeof *f->verb_ids)))
        return sp_fail(err, "--verbalizer: out of memory");
    for (int c = 0; c < n; c++) {
        const char *w = f->verb.words[c];
        int32_t *ids = NULL;
        size_t k = 0;
        if (sp_tokenizer_encode(f->tok, w, strlen(w), 0, &ids, &k, err) != 0)
            return sp_fail_prefix(err, "--verbalizer: class \"%s\"", f->verb.values[c]);
        if (k != 1) {
            char q[256], list[600] = "";
            size_t len = 0;
            for (size_t j = 0; j < k && len + 80 < sizeof list; j++) {
                char *s = NULL;
                size_t sl = 0;
                sp_error ignored;
                if (sp_tokenizer_decode(f->tok, &ids[j], 1, 0, &s, &sl, &ignored) == 0)
                    len += (size_t)snprintf(list + len, sizeof list - len, "%s%s (%d)",
                                            j ? " + " : "", quote(s, sl, q, 64), (int)ids[j]);
                free(s);
            }
            sp_fail(err,
                    "--verbalizer: the word %s of class \"%s\" is %zu tokens (%s); every word "
                    "must be exactly one token (GPT-2 words usually need their leading space, "
                    "e.g. \"1= great\" not \"1=great\")",
                    quote(w, strlen(w), q, sizeof q), f->verb.values[c], k, list);
            free(ids);
            return -1;
        }
        f->verb_ids[c] = ids[0];
        free(ids);
        for (int d = 0; d < c; d++)
            if (f->verb_ids[d] == f->verb_ids[c])
                return sp_fail(err,
                               "--verbalizer: classes \"%s\" and \"%s\" map to the same token "
                               "%d; each class needs its own word",
                               f->verb.values[d], f->verb.values[c], (int)f->verb_ids[c]);
    }
    return 0;
}

/* Tokens of the template that do not depend on the record. */
static int fixed_template_len(const sp_formatter *f) {
    int n = 0;
    for (int i = 0; i < f->tseg.n; i++) {
        const segment *s = &f->tseg.s[i];
        if (s->kind == SEG_SOFT)
            n += s->n_soft;
        else if (s->kind == SEG_FIXED || !s->has_fields)
            n += (int)s->ids.n;
    }
    return n;
}

/* sp_formatter_new, step by step. Each step returns 0, or -1 with err set; on failure the
 * caller frees the half-built formatter. */

/* Option values that cannot be valid whatever the template. */
static int check_options(const sp_format_options *o, int plen, sp_error *err) {
    if (o->max_length < 0) return sp_fail(err, "--max-length must be >= 0");
    if (plen > SP_TEMPLATE_MAX_SOFT)
        return sp_fail(err, "--prompt-length %d is more than %d", plen, SP_TEMPLATE_MAX_SOFT);
    return 0;
}

/* A template without soft tokens gets "{soft:plen}" in front; f->tpl and f->tpl_spec become the
 * effective ones, but piece columns keep referring to what the user wrote. */
static int prepend_soft(sp_formatter *f, int plen, sp_error *err) {
    char lead[32];
    snprintf(lead, sizeof lead, "{soft:%d}", plen);
    char *eff = dup_printf("%s%s", lead, f->tpl_spec);
    if (!eff) return sp_fail(err, "out of memory");
    sp_template shifted;
    if (sp_template_parse(&shifted, eff, 1, "--template", err) != 0) {
        free(eff);
        return -1;
    }
    int shift = (int)strlen(lead);
    for (int i = 0; i < shifted.n_pieces; i++)
        shifted.pieces[i].column =
            shifted.pieces[i].column > shift ? shifted.pieces[i].column - shift : 1;
    sp_template_free(&f->tpl);
    f->tpl = shifted;
    free(f->tpl_spec);
    f->tpl_spec = eff;
    return 0;
}

/* --template (default "{text_field}"), with the default soft slots prepended when it has none. */
static int parse_template(sp_formatter *f, const sp_format_options *o, const char *text_field,
                          int plen, sp_error *err) {
    f->tpl_spec =
        o->template_spec ? strdup(o->template_spec) : dup_printf("{%s}", text_field, NULL);
    if (!f->tpl_spec) return sp_fail(err, "out of memory");
    if (sp_template_parse(&f->tpl, f->tpl_spec, 1, "--template", err) != 0) return -1;
    if (f->tpl.n_soft == 0 && plen > 0) return prepend_soft(f, plen, err);
    return 0;
}

/* Checks a user --target; with a verbalizer it must be one field, which becomes the label
 * field (sets f->label_field; NULL when that copy fails, see resolve_fields). */
static int check_user_target(sp_formatter *f, const sp_format_options *o, const char *label_field,
                             sp_error *err) {
    sp_template t;
    if (sp_template_parse(&t, o->target_spec, 0, "--target", err) != 0) return -1;
    if (f->classification) {
        if (t.n_pieces != 1 || t.pieces[0].kind != SP_PIECE_FIELD) {
            sp_template_free(&t);
            return sp_fail(err,
                           "--target: with a verbalizer the target must be a single field such "
                           "as '{%s}' (the verbalizer maps its values to words)",
                           label_field);
        }
        if (o->label_field && strcmp(o->label_field, t.pieces[0].text) != 0) {
            sp_fail(err, "--target '%s' and --label-field '%s' name different fields",
                    o->target_spec, o->label_field);
            sp_template_free(&t);
            return -1;
        }
        f->label_field = strdup(t.pieces[0].text);
    }
    sp_template_free(&t);
    return 0;
}

/* The target spec (default "{label_field}"), the text and label field names, and f->tgt. */
static int resolve_fields(sp_formatter *f, const sp_format_options *o, const char *text_field,
                          const char *label_field, sp_error *err) {
    if (o->target_spec) {
        if (check_user_target(f, o, label_field, err) != 0) return -1;
        f->tgt_spec = strdup(o->target_spec);
    } else {
        f->tgt_spec = dup_printf("{%s}", label_field, NULL);
    }
    if (!f->label_field) f->label_field = strdup(label_field);
    f->text_field = strdup(text_field);
    if (!f->tgt_spec || !f->label_field || !f->text_field) return sp_fail(err, "out of memory");
    return sp_template_parse(&f->tgt, f->tgt_spec, 0, "--target", err);
}

/* f->uses_text and f->trunc_piece: the template piece of --truncate-field (which must appear
 * exactly once), or of the text field when it appears exactly once, else -1. */
static int resolve_truncation(sp_formatter *f, const sp_format_options *o, sp_error *err) {
    f->uses_text = sp_template_count_field(&f->tpl, f->text_field) > 0;
    if (o->truncate_field) {
        int c = sp_template_count_field(&f->tpl, o->truncate_field);
        if (c != 1)
            return sp_fail(err,
                           "--truncate-field '%s': the template %s (it must appear exactly once)",
                           o->truncate_field,
                           c == 0 ? "does not use that field" : "uses that field more than once");
    }
    const char *trunc = o->truncate_field ? o->truncate_field : f->text_field;
    if (sp_template_count_field(&f->tpl, trunc) == 1)
        for (int i = 0; i < f->tpl.n_pieces; i++)
            if (f->tpl.pieces[i].kind == SP_PIECE_FIELD && !strcmp(f->tpl.pieces[i].text, trunc))
                f->trunc_piece = i;
    return 0;
}

/* Classification: the verbalizer and its one-token words. Generation: the target's segments
 * and, with --eos, the id appended to every target. */
static int build_targets(sp_formatter *f, const sp_format_options *o, sp_error *err) {
    if (f->target == SP_TARGET_NONE) return 0;
    if (f->classification) {
        if (sp_verbalizer_parse(&f->verb, o->verbalizer_spec, err) != 0) return -1;
        return encode_verbalizer(f, err);
    }
    if (build_segments(f, &f->tgt, &f->gseg, -1, "--target", err) != 0) return -1;
    if (o->eos) {
        f->eos_id = sp_tokenizer_eos_id(f->tok);
        if (f->eos_id < 0)
            return sp_fail(err, "--eos: the tokenizer names no EOS token (tokenizer_config.json's "
                                "eos_token, the post-processor's last special token or "
                                "<|endoftext|>; use --no-eos)");
    }
    return 0;
}

/* Tokenizers that start every sequence with BOS (Llama: the post-processor or add_bos_token)
 * get it as a fixed segment before the template's first text, i.e. after soft tokens that
 * precede all text: where Hugging Face's tokenizer output begins when PEFT prepends the
 * prompt to it. GPT-2 tokenizers add none. */
static int insert_bos(sp_formatter *f, sp_error *err) {
    if (!sp_tokenizer_adds_bos(f->tok)) return 0;
    int32_t bos = sp_tokenizer_bos_id(f->tok);
    segments *g = &f->tseg;
    segment *b = new_segment(g, SEG_FIXED);
    if (!b || sp_token_buf_append(&b->ids, &bos, 1) != 0) goto oom;
    segment seg = *b;
    int at = 0;
    while (at < g->n - 1 && g->s[at].kind == SEG_SOFT) at++;
    memmove(&g->s[at + 1], &g->s[at], (size_t)(g->n - 1 - at) * sizeof *g->s);
    g->s[at] = seg;
    return 0;
oom:
    return sp_fail(err, "--template: out of memory");
}

/* {mask}: the tokenizer's mask token ([MASK] or <mask>, a special token) and a verbalizer; the
 * EOS a masked LM's tokenizer ends sequences with goes after the template. */
static int resolve_mask(sp_formatter *f, sp_error *err) {
    static const char *const names[] = {"[MASK]", "<mask>"};
    if (f->tpl.n_mask == 0) return 0;
    if (!f->classification && f->target != SP_TARGET_NONE)
        return sp_fail(err, "--template: {mask} needs --verbalizer (the class word is scored at "
                            "the mask)");
    for (size_t i = 0; i < sizeof names / sizeof *names && f->mask_id < 0; i++) {
        int32_t id = sp_tokenizer_token_to_id(f->tok, names[i], strlen(names[i]));
        if (id >= 0 && sp_tokenizer_is_special(f->tok, id)) f->mask_id = id;
    }
    if (f->mask_id < 0)
        return sp_fail(err, "--template: {mask}, but the tokenizer has no mask token (a special "
                            "[MASK] or <mask>): is it a masked LM's tokenizer?");
    return 0;
}

static int append_eos_after_mask(sp_formatter *f, sp_error *err) {
    if (f->tpl.n_mask == 0 || !sp_tokenizer_adds_eos(f->tok)) return 0;
    int32_t eos = sp_tokenizer_eos_id(f->tok);
    segment *e = new_segment(&f->tseg, SEG_FIXED);
    if (eos < 0 || !e || sp_token_buf_append(&e->ids, &eos, 1) != 0)
        return sp_fail(err, "--template: out of memory");
    return 0;
}

/* An encoder-decoder's input ends with EOS (input_eos): after the template, once (not again
 * when the template already ends with it, nor after a {mask} template, which has it). */
static int append_input_eos(sp_formatter *f, const sp_format_options *o, sp_error *err) {
    if (o->input_eos <= 0 || f->tpl.n_mask > 0) return 0;
    int32_t eos = sp_tokenizer_eos_id(f->tok);
    if (eos < 0)
        return sp_fail(err, "--input-eos: the tokenizer has no EOS token (use --no-input-eos)");
    const segments *g = &f->tseg;
    const segment *last = g->n > 0 ? &g->s[g->n - 1] : NULL;
    if (last && last->kind == SEG_FIXED && last->ids.n > 0 && last->ids.ids[last->ids.n - 1] == eos)
        return 0;
    segment *e = new_segment(&f->tseg, SEG_FIXED);
    if (!e || sp_token_buf_append(&e->ids, &eos, 1) != 0)
        return sp_fail(err, "--template: out of memory");
    return 0;
}

/* --max-length must leave room for at least one token of the truncate field (if any). */
static int check_limits(const sp_formatter *f, sp_error *err) {
    if (f->max_length <= 0) return 0;
    int fixed = fixed_template_len(f);
    if (fixed + (f->trunc_piece >= 0) > f->max_length)
        return sp_fail(err,
                       "--max-length %d: the template's soft tokens and literal text alone take "
                       "%d tokens",
                       f->max_length, fixed);
    return 0;
}

static int add_warning(sp_formatter *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int add_warning(sp_formatter *f, const char *fmt, ...) {
    if (f->n_warnings == MAX_WARNINGS) return 0;
    va_list ap;
    va_start(ap, fmt);
    int rc = vasprintf(&f->warnings[f->n_warnings], fmt, ap);
    va_end(ap);
    if (rc < 0) return -1;
    f->n_warnings++;
    return 0;
}

/* Templates that are valid but probably not what was meant: no field or not the text field in
 * the input, or a field of the target in the input too (the answer leaks into it). */
static int collect_warnings(sp_formatter *f, sp_error *err) {
    char spec[256], name[128];
    sp__escape(f->tpl_spec, spec, sizeof spec);
    int n_fields = 0, rc = 0;
    for (int i = 0; i < f->tpl.n_pieces; i++) n_fields += f->tpl.pieces[i].kind == SP_PIECE_FIELD;
    sp__escape(f->text_field, name, sizeof name);
    if (n_fields == 0)
        rc = add_warning(f,
                         "--template '%s' inserts no record field: every example gets the same "
                         "input, so the prompt cannot learn anything from the records (put {%s} "
                         "where the text goes)",
                         spec, name);
    else if (!f->uses_text)
        rc = add_warning(f,
                         "--template '%s' does not insert the text field {%s}: the records' "
                         "\"%s\" is not part of the input, and the empty-text check does not "
                         "apply (--text-field names the field that holds the text)",
                         spec, name, name);
    char target[128];
    sp__escape(f->tgt_spec, target, sizeof target);
    for (int i = 0; rc == 0 && f->target != SP_TARGET_NONE && i < f->tgt.n_pieces; i++) {
        const sp_template_piece *p = &f->tgt.pieces[i];
        if (p->kind != SP_PIECE_FIELD || sp_template_count_field(&f->tpl, p->text) == 0) continue;
        int first = 1; /* one warning per field */
        for (int j = 0; j < i; j++)
            first &=
                f->tgt.pieces[j].kind != SP_PIECE_FIELD || strcmp(f->tgt.pieces[j].text, p->text);
        if (first)
            rc = add_warning(f,
                             "--template '%s' inserts {%s}, which the target '%s' is made of: the "
                             "answer leaks into the input (the model can copy it instead of "
                             "learning the task)",
                             spec, sp__escape(p->text, name, sizeof name), target);
    }
    return rc == 0 ? 0 : sp_fail(err, "out of memory");
}

sp_formatter *sp_formatter_new(sp_tokenizer *tok, const sp_format_options *o, sp_error *err) {
    sp_formatter *f = calloc(1, sizeof *f);
    if (!f) {
        sp_fail(err, "out of memory");
        return NULL;
    }
    f->tok = tok;
    f->trunc_piece = -1;
    f->eos_id = -1;
    f->mask_id = -1;
    f->max_length = o->max_length;
    f->target = o->target;
    f->classification = o->verbalizer_spec != NULL && o->target != SP_TARGET_NONE;
    const char *text_field = o->text_field ? o->text_field : "text";
    const char *label_field = o->label_field ? o->label_field : "label";
    int plen = o->prompt_length < 0 ? SP_TEMPLATE_DEFAULT_SOFT : o->prompt_length;
    if (check_options(o, plen, err) != 0 || parse_template(f, o, text_field, plen, err) != 0 ||
        resolve_fields(f, o, text_field, label_field, err) != 0 ||
        resolve_truncation(f, o, err) != 0 || resolve_mask(f, err) != 0 ||
        build_segments(f, &f->tpl, &f->tseg, f->trunc_piece, "--template", err) != 0 ||
        insert_bos(f, err) != 0 || append_eos_after_mask(f, err) != 0 ||
        append_input_eos(f, o, err) != 0 || build_targets(f, o, err) != 0 ||
        check_limits(f, err) != 0 || collect_warnings(f, err) != 0) {
        sp_formatter_free(f);
        return NULL;
    }
    return f;
}

int sp_formatter_is_classification(const sp_formatter *f) {
    return f->classification;
}
int sp_formatter_n_soft(const sp_formatter *f) {
    return f->tpl.n_soft;
}
const char *sp_formatter_template_spec(const sp_formatter *f) {
    return f->tpl_spec;
}
const char *sp_formatter_target_spec(const sp_formatter *f) {
    return f->tgt_spec;
}
const sp_template *sp_formatter_template(const sp_formatter *f) {
    return &f->tpl;
}
int sp_formatter_n_warnings(const sp_formatter *f) {
    return f->n_warnings;
}
const char *sp_formatter_warning(const sp_formatter *f, int i) {
    return i >= 0 && i < f->n_warnings ? f->warnings[i] : NULL;
}
const sp_verbalizer *sp_formatter_verbalizer(const sp_formatter *f) {
    return f->classification ? &f->verb : NULL;
}
const int32_t *sp_formatter_verbalizer_ids(const sp_formatter *f) {
    return f->verb_ids;
}

/* ------------------------------------------------------------------------------------------ */
/* Records                                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* The text of field name, or an error naming it (missing: with the fields the record has). */
static int field_text(const sp_record *rec, const char *name, const char *where, const char **out,
                      sp_error *err) {
    for (int i = 0; i < rec->n_fields; i++) {
        if (strcmp(rec->names[i], name) != 0) continue;
        if (rec->values[i]) {
            *out = rec->values[i];
            return 0;
        }
        return sp_fail(err, "%s: field \"%s\": is %s, expected text", where, name,
                       rec->kinds && rec->kinds[i] ? rec->kinds[i] : "not text");
    }
    char have[400] = "";
    size_t n = 0;
    for (int j = 0; j < rec->n_fields && n + 4 < sizeof have; j++)
        n += (size_t)snprintf(have + n, sizeof have - n, "%s\"%s\"", j ? ", " : "", rec->names[j]);
    return sp_fail(err, "%s: field \"%s\": missing (the record has %s%s)", where, name,
                   rec->n_fields ? "fields " : "no fields", have);
}

static int has_field(const sp_record *rec, const char *name) {
    for (int i = 0; i < rec->n_fields; i++)
        if (strcmp(rec->names[i], name) == 0) return 1;
    return 0;
}

static int check_fields(const sp_template *t, const sp_record *rec, const char *where,
                        sp_error *err) {
    const char *v;
    for (int i = 0; i < t->n_pieces; i++)
        if (t->pieces[i].kind == SP_PIECE_FIELD &&
            field_text(rec, t->pieces[i].text, where, &v, err) != 0)
            return -1;
    return 0;
}

int sp_formatter_check(const sp_formatter *f, const sp_record *rec, const char *where, int *label,
                       sp_error *err) {
    const char *v;
    *label = -1;
    if (f->uses_text) {
        if (field_text(rec, f->text_field, where, &v, err) != 0) return -1;
        if (is_blank_text(v)) {
            sp_fail(err, "%s: field \"%s\": empty text%s", where, f->text_field,
                    v[0] ? " (only whitespace)" : "");
            return SP_REC_EMPTY_TEXT;
        }
    }
    if (check_fields(&f->tpl, rec, where, err) != 0) return -1;
    switch (f->target) {
    case SP_TARGET_NONE:
        return 0;
    case SP_TARGET_OPTIONAL:
        if (f->classification && !has_field(rec, f->label_field)) return 0; /* unlabelled */
        break;
    case SP_TARGET_REQUIRED:
        break;
    }
    if (!f->classification) return check_fields(&f->tgt, rec, where, err);
    if (field_text(rec, f->label_field, where, &v, err) != 0) return -1;
    int c = sp_verbalizer_find(&f->verb, v);
    if (c < 0) {
        char q[200], known[400] = "";
        size_t n = 0;
        for (int i = 0; i < f->verb.n_classes && n + 4 < sizeof known; i++)
            n += (size_t)snprintf(known + n, sizeof known - n, "%s\"%s\"", i ? ", " : "",
                                  f->verb.values[i]);
        sp_fail(err, "%s: field \"%s\": unknown label %s (the verbalizer has %s)", where,
                f->label_field, quote(v, strlen(v), q, sizeof q), known);
        return SP_REC_UNKNOWN_LABEL;
    }
    *label = c;
    return 0;
}

static int push_target(sp_example *ex, int32_t pos, int32_t id) {
    if (ex->n_targets == ex->cap_targets) {
        size_t cap = sp__vec_cap((size_t)ex->cap_targets, (size_t)ex->n_targets + 1, 64, 4);
        if (cap == 0 || cap > INT_MAX ||
            sp__vec_resize(&ex->target_pos, cap, sizeof *ex->target_pos) != 0 ||
            sp__vec_resize(&ex->target_ids, cap, sizeof *ex->target_ids) != 0)
            return -1;
        ex->cap_targets = (int)cap;
    }
    ex->target_pos[ex->n_targets] = pos;
    ex->target_ids[ex->n_targets] = id;
    ex->n_targets++;
    return 0;
}

/* Encodes text segment s of t for rec into s->ids. With trunc_bytes >= 0 the truncate field is
 * replaced by its first trunc_bytes bytes. */
static int encode_segment(sp_formatter *f, const sp_template *t, segment *s, const sp_record *rec,
                          const char *where, long trunc_bytes, sp_error *err) {
    f->text.len = 0;
    for (int i = s->first; i < s->last; i++) {
        const sp_template_piece *p = &t->pieces[i];
        const char *v = p->text;
        size_t n = p->len;
        if (p->kind == SP_PIECE_FIELD) {
            if (field_text(rec, p->text, where, &v, err) != 0) return -1;
            n = strlen(v);
            if (i == s->trunc_piece && trunc_bytes >= 0 && (size_t)trunc_bytes < n)
                n = (size_t)trunc_bytes;
        }
        if (sp__buf_add(&f->text, v, n) != 0) return sp_fail(err, "%s: out of memory", where);
    }
    s->ids.n = 0;
    /* Field values never produce special tokens: "<|endoftext|>" in data is plain text. */
    if (sp_tokenizer_encode_append(f->tok, f->text.p ? f->text.p : "", f->text.len, 0, &s->ids,
                                   err) != 0)
        return sp_fail_prefix(err, "%s", where);
    return 0;
}

/* Encodes every segment of g that depends on the record; returns the total length. */
static int encode_all(sp_formatter *f, const sp_template *t, segments *g, const sp_record *rec,
                      const char *where, size_t *total, sp_error *err) {
    *total = 0;
    for (int k = 0; k < g->n; k++) {
        segment *s = &g->s[k];
        if (s->kind == SEG_TEXT && s->has_fields &&
            encode_segment(f, t, s, rec, where, -1, err) != 0)
            return -1;
        *total += s->kind == SEG_SOFT ? (size_t)s->n_soft : s->ids.n;
    }
    return 0;
}

/* Shortens the truncate field until the example fits in limit tokens: the field's own tokens
 * give the first guess (keep its first k tokens, decoded to a byte prefix cut back to a whole
 * UTF-8 character), then the segment is re-encoded as a whole; boundary effects can leave it a
 * token or so over, so k shrinks until it fits. */
static int truncate_to_fit(sp_formatter *f, const sp_record *rec, const char *where, size_t *total,
                           size_t limit, size_t other, sp_error *err) {
    segment *s = NULL;
    for (int k = 0; k < f->tseg.n; k++)
        if (f->tseg.s[k].trunc_piece >= 0) s = &f->tseg.s[k];
    const char *name = f->tpl.pieces[f->trunc_piece].text, *v;
    if (field_text(rec, name, where, &v, err) != 0) return -1;
    f->scratch.n = 0;
    if (sp_tokenizer_encode_append(f->tok, v, strlen(v), 0, &f->scratch, err) != 0)
        return sp_fail_prefix(err, "%s: field \"%s\"", where, name);
    size_t seg_len = s->ids.n, rest = *total - seg_len; /* tokens outside the segment */
    long k = (long)f->scratch.n - (long)(*total + other - limit);
    for (;;) {
        if (k < 1)
            return sp_fail(err,
                           "%s: field \"%s\": cannot truncate enough: the rest of the example "
                           "(template, soft tokens, other fields, target) does not leave room "
                           "for one token of it within --max-length %zu",
                           where, name, limit);
        size_t bytes = 0;
        for (long j = 0; j < k; j++) {
            size_t tl = 0;
            char *piece = NULL;
            sp_error ignored;
            if (sp_tokenizer_decode(f->tok, &f->scratch.ids[j], 1, 0, &piece, &tl, &ignored) != 0)
                tl = 0;
            free(piece);
            bytes += tl;
        }
        /* Back up to a character boundary (a token may end inside a UTF-8 sequence). */
        size_t bad;
        while (bytes > 0 && !sp_utf8_check(v, bytes, &bad)) bytes = bad;
        if (bytes == 0) {
            k = 0;
            continue;
        }
        if (encode_segment(f, &f->tpl, s, rec, where, (long)bytes, err) != 0) return -1;
        size_t now = rest + s->ids.n;
        if (now + other <= limit) {
            *total = now;
            return 0;
        }
        k -= (long)(now + other - limit);
    }
}

int sp_formatter_render(sp_formatter *f, const sp_record *rec, const char *where, sp_example *ex,
                        sp_error *err) {
    int label;
    int rc = sp_formatter_check(f, rec, where, &label, err);
    if (rc != 0) return rc;
    ex->tokens.n = 0;
    ex->n_targets = 0;
    ex->label = label;
    ex->n_cut = 0;
    size_t tpl_len, m = 0;
    if (encode_all(f, &f->tpl, &f->tseg, rec, where, &tpl_len, err) != 0) return -1;

    /* Target tokens (generation). */
    if (!f->classification && f->target != SP_TARGET_NONE) {
        size_t tl;
        if (encode_all(f, &f->tgt, &f->gseg, rec, where, &tl, err) != 0) return -1;
        f->tgt_all.n = 0;
        for (int k = 0; k < f->gseg.n; k++)
            if (sp_token_buf_append(&f->tgt_all, f->gseg.s[k].ids.ids, f->gseg.s[k].ids.n) != 0)
                goto oom;
        if (f->tgt_all.n == 0)
            return sp_fail(err, "%s: field \"%s\": the target is empty", where,
                           f->tgt.n_pieces == 1 && f->tgt.pieces[0].kind == SP_PIECE_FIELD
                               ? f->tgt.pieces[0].text
                               : f->label_field);
        if (f->eos_id >= 0 && sp_token_buf_append(&f->tgt_all, &f->eos_id, 1) != 0) goto oom;
        m = f->tgt_all.n;
    }

    /* Length and truncation: the last target token is not an input. */
    size_t other = m ? m - 1 : 0;
    size_t limit = f->max_length > 0 ? (size_t)f->max_length : (size_t)(INT32_MAX / 2);
    if (tpl_len + other > limit) {
        if (f->trunc_piece < 0)
            return sp_fail(err,
                           "%s: the example is %zu tokens, more than --max-length %zu, and the "
                           "template has no field that may be truncated",
                           where, tpl_len + other, limit);
        size_t before = tpl_len;
        if (truncate_to_fit(f, rec, where, &tpl_len, limit, other, err) != 0) return -1;
        ex->n_cut = (int)(before - tpl_len);
    }
    if (tpl_len == 0)
        return sp_fail(err,
                       "%s: the template renders to no tokens (a target needs at least one "
                       "token before it)",
                       where);

    /* Assemble. */
    size_t answer = tpl_len - 1; /* the last position, or the mask's */
    for (int k = 0; k < f->tseg.n; k++) {
        const segment *s = &f->tseg.s[k];
        if (s->is_mask) answer = ex->tokens.n;
        if (s->kind == SEG_SOFT) {
            for (int j = 0; j < s->n_soft; j++) {
                int32_t id = SP_SOFT(s->soft_first + j);
                if (sp_token_buf_append(&ex->tokens, &id, 1) != 0) goto oom;
            }
        } else if (sp_token_buf_append(&ex->tokens, s->ids.ids, s->ids.n) != 0) {
            goto oom;
        }
    }
    if (f->target == SP_TARGET_NONE) return 0;
    if (f->classification) {
        /* unlabelled (SP_TARGET_OPTIONAL): class 0's word stands in; only the logits matter */
        if (push_target(ex, (int32_t)answer, f->verb_ids[label < 0 ? 0 : label]) != 0) goto oom;
        return 0;
    }
    if (sp_token_buf_append(&ex->tokens, f->tgt_all.ids, m - 1) != 0) goto oom;
    for (size_t j = 0; j < m; j++)
        if (push_target(ex, (int32_t)(tpl_len - 1 + j), f->tgt_all.ids[j]) != 0) goto oom;
    return 0;
oom:
    return sp_fail(err, "%s: out of memory", where);
}
