/* tokenizer.json's pipeline around the BPE model: normalizer, pre_tokenizer and decoder, and
 * the BOS/EOS policy of the post_processor and tokenizer_config.json. Each part is parsed into
 * the few forms the encoder implements; anything else is refused with a message that names the
 * file, the JSON path and what is supported, so no tokenizer is silently mis-applied. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/fileutil.h"
#include "tok_internal.h"

/* GPT-2's pattern, byte for byte as in OpenAI's encoder.py (ByteLevel's use_regex). */
static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static const char PRE_LIST[] = "supported: Sequence, Split, ByteLevel, Digits, Metaspace, "
                               "WhitespaceSplit, BertPreTokenizer";
static const char NORM_LIST[] = "supported: Sequence, NFC, NFD, NFKC, NFKD, Prepend, Replace, "
                                "Strip, Precompiled, BertNormalizer, Lowercase";

/* Unicode White_Space, which is what \s means to Oniguruma (Hugging Face tokenizers' regex
 * engine) and to Python's `regex`. PCRE2 10.42's \s differs (it has U+180E, lacks U+0085), so
 * \s and \S are rewritten into these explicit sets before compiling. */
#define WHITE_SPACE                                                                                \
    "\\t-\\r\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}" \
    "\\x{3000}"

/* One past the end of the POSIX class [:name:] at p[i] (name: letters), or 0 when there is none. */
static size_t posix_end(const char *p, size_t len, size_t i) {
    size_t j = i + 2;
    if (i + 1 >= len || p[i + 1] != ':') return 0;
    while (j < len && ((p[j] >= 'a' && p[j] <= 'z') || (p[j] >= 'A' && p[j] <= 'Z'))) j++;
    return j + 1 < len && p[j] == ':' && p[j + 1] == ']' && j > i + 2 ? j + 2 : 0;
}

/* Copies pattern with \s -> [WS] (inside a class: WS) and \S -> [^WS], and a class nested in a
 * class (Oniguruma's set union, as BLOOM's ` ?[^(\s|[.,!?])]+`: PCRE2 would end the class at the
 * inner `]`) flattened into its outer class. NULL with *why set for what has no flat equivalent
 * (\S inside a class, a negated or intersected nested class), or out of memory (*why NULL). */
static char *rewrite_spaces(const char *p, size_t len, size_t *out_len, const char **why) {
    size_t cap = len * (sizeof WHITE_SPACE + 3) + 1, n = 0;
    char *o = malloc(cap);
    int in_class = 0, nested = 0;
    *why = NULL;
    for (size_t i = 0; o && i < len; i++) {
        const char *bad = NULL;
        if (p[i] == '\\' && i + 1 < len && p[i + 1] == 'S' && in_class)
            bad = "\\S inside a character class";
        else if (in_class && p[i] == '&' && i + 1 < len && p[i + 1] == '&')
            bad = "a character class intersection (&&)";
        else if (in_class && p[i] == '[' && i + 1 < len && p[i + 1] == '^')
            bad = "a negated character class inside a character class";
        if (bad) {
            free(o);
            *why = bad;
            return NULL;
        }
        if (p[i] == '\\' && i + 1 < len && (p[i + 1] == 's' || p[i + 1] == 'S')) {
            n += (size_t)sprintf(o + n,
                                 in_class          ? "%s"
                                 : p[i + 1] == 's' ? "[%s]"
                                                   : "[^%s]",
                                 WHITE_SPACE);
            i++;
            continue;
        }
        if (p[i] == '\\' && i + 1 < len) { /* any other escape is copied whole */
            o[n++] = p[i++];
        } else if (p[i] == '[' && in_class && posix_end(p, len, i)) {
            size_t end = posix_end(p, len, i); /* a POSIX class [:name:] is copied whole */
            memcpy(o + n, p + i, end - i);
            n += end - i, i = end - 1;
            continue;
        } else if (p[i] == '[' && in_class) { /* a nested class: its members join the outer's */
            nested++;
            continue;
        } else if (p[i] == ']' && nested > 0) {
            nested--;
            continue;
        } else if (p[i] == '[' && !in_class) {
            in_class = 1;
            o[n++] = p[i];
            if (i + 1 < len && p[i + 1] == '^') o[n++] = p[++i];
            if (i + 1 < len && p[i + 1] == ']') o[n++] = p[++i]; /* a leading ] is literal */
            continue;
        } else if (p[i] == ']' && in_class) {
            in_class = 0;
        }
        o[n++] = p[i];
    }
    if (o) o[n] = '\0';
    *out_len = n;
    return o;
}

pcre2_code *tok_regex(const char *pattern, size_t len, int is_literal, sp_error *err) {
    int ec;
    PCRE2_SIZE eo;
    size_t n = len;
    const char *why = NULL;
    char *rw = is_literal ? NULL : rewrite_spaces(pattern, len, &n, &why);
    if (!is_literal && !rw) {
        sp_fail(err, "regex /%.*s/: %s is not supported", (int)(len < 200 ? len : 200), pattern,
                why ? why : "(out of memory)");
        return NULL;
    }
    /* UCP (Unicode \p, \w, \d, \b) is not allowed together with LITERAL. */
    uint32_t opts = PCRE2_UTF | (is_literal ? PCRE2_LITERAL : PCRE2_UCP);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)(rw ? rw : pattern), n, opts, &ec, &eo, NULL);
    free(rw);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        sp_fail(err, "regex /%.*s/: %s", (int)(len < 200 ? len : 200), pattern, (const char *)msg);
        return NULL;
    }
    /* JIT matching is several times faster; where JIT is unavailable pcre2_match interprets. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    return re;
}

int tok_desc(sp_tokenizer *t, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (sp__buf_vaddf(&t->desc, fmt, ap) != 0) t->desc_failed = 1;
    va_end(ap);
    return 0;
}

static const char *type_of(json_t *o) {
    const char *s = json_string_value(json_object_get(o, "type"));
    return s ? s : "(no type)";
}

/* A {"String": s} or {"Regex": s} pattern; *is_literal tells which. */
static const char *pattern_of(json_t *p, int *is_literal, size_t *len) {
    json_t *s = json_object_get(p, "String"), *r = json_object_get(p, "Regex");
    json_t *v = json_is_string(s) ? s : json_is_string(r) ? r : NULL;
    if (!v || json_object_size(p) != 1) return NULL;
    *is_literal = v == s;
    *len = json_string_length(v);
    return json_string_value(v);
}

/* A JSON boolean field with a default; -1 when present but not a boolean. */
static int bool_field(json_t *o, const char *key, int dflt) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return dflt;
    return json_is_boolean(v) ? json_is_true(v) : -1;
}

/* ---- normalizer ---- */

static tok_norm *new_norm(sp_tokenizer *t, const char *where, sp_error *err) {
    if (t->n_norm >= TOK_MAX_NORM) {
        sp_fail(err, "%s: more than %d normalizers", where, TOK_MAX_NORM);
        return NULL;
    }
    return &t->norm[t->n_norm++];
}

static char *dup_str(json_t *v, size_t *len) {
    size_t n = json_string_length(v);
    char *s = malloc(n + 1);
    if (s) memcpy(s, json_string_value(v), n + 1);
    *len = n;
    return s;
}

static int parse_replace_norm(sp_tokenizer *t, json_t *n, const char *where, sp_error *err) {
    int lit;
    size_t plen;
    const char *pat = pattern_of(json_object_get(n, "pattern"), &lit, &plen);
    json_t *content = json_object_get(n, "content");
    if (!pat || !json_is_string(content))
        return sp_fail(err,
                       "%s: Replace needs \"pattern\" {\"String\"|\"Regex\": ...} and a "
                       "\"content\" string",
                       where);
    if (plen == 0) return sp_fail(err, "%s: Replace: the pattern is empty", where);
    tok_norm *m = new_norm(t, where, err);
    if (!m) return -1;
    m->kind = NORM_REPLACE;
    m->b = dup_str(content, &m->blen);
    m->a = malloc(plen + 1);
    if (!m->a || !m->b) return sp_fail(err, "out of memory");
    memcpy(m->a, pat, plen + 1);
    m->alen = plen;
    if (!lit && !(m->re = tok_regex(pat, plen, 0, err)))
        return sp_fail_prefix(err, "%s.pattern", where);
    return tok_desc(t, "norm:replace(%s,%s->%s);", lit ? "str" : "re", pat, m->b);
}

typedef int (*step_parser)(sp_tokenizer *t, json_t *step, const char *where, sp_error *err);

/* A "Sequence" node: parse(t, step, "WHERE.KEY[i]") for each step of its array KEY, in order. */
static int parse_sequence(sp_tokenizer *t, json_t *node, const char *key, const char *where,
                          step_parser parse, sp_error *err) {
    json_t *list = json_object_get(node, key), *e;
    if (!json_is_array(list)) return sp_fail(err, "%s.%s is not an array", where, key);
    size_t i;
    json_array_foreach(list, i, e) {
        char w[256];
        snprintf(w, sizeof w, "%s.%s[%zu]", where, key, i);
        if (parse(t, e, w, err)) return -1;
    }
    return 0;
}

static int parse_strip_norm(sp_tokenizer *t, json_t *n, const char *where, sp_error *err) {
    int l = bool_field(n, "strip_left", 0), r = bool_field(n, "strip_right", 0);
    if (l < 0 || r < 0)
        return sp_fail(err, "%s: strip_left and strip_right must be booleans", where);
    tok_norm *m = new_norm(t, where, err);
    if (!m) return -1;
    m->kind = NORM_STRIP, m->left = l, m->right = r;
    return tok_desc(t, "norm:strip(%d,%d);", l, r);
}

static int parse_precompiled(sp_tokenizer *t, json_t *n, const char *where, sp_error *err) {
    json_t *v = json_object_get(n, "precompiled_charsmap");
    uint8_t *blob = NULL;
    size_t len = 0;
    if (!json_is_string(v))
        return sp_fail(err, "%s.precompiled_charsmap: expected a base64 string", where);
    if (tok_base64_decode(json_string_value(v), json_string_length(v), &blob, &len))
        return sp_fail(err, "%s.precompiled_charsmap: not valid base64 (standard, padded)", where);
    tok_norm *m = new_norm(t, where, err);
    if (m) m->kind = NORM_PRECOMPILED, m->cmap = calloc(1, sizeof *m->cmap);
    int rc = !m         ? -1
             : !m->cmap ? sp_fail(err, "out of memory")
                        : tok_charsmap_parse(m->cmap, blob, len, err);
    free(blob);
    if (rc) return m ? sp_fail_prefix(err, "%s", where) : -1;
    return tok_desc(t, "norm:precompiled(%016llx);", (unsigned long long)m->cmap->hash);
}

/* BertNormalizer (Hugging Face's defaults: all true, strip_accents null = follow lowercase). */
static int parse_bert_norm(sp_tokenizer *t, json_t *n, const char *where, sp_error *err) {
    int clean = bool_field(n, "clean_text", 1), chinese = bool_field(n, "handle_chinese_chars", 1);
    int lower = bool_field(n, "lowercase", 1), accents = bool_field(n, "strip_accents", -2);
    if (clean < 0 || chinese < 0 || lower < 0 || accents == -1)
        return sp_fail(err,
                       "%s: clean_text, handle_chinese_chars, lowercase must be booleans and "
                       "strip_accents a boolean or null",
                       where);
    tok_norm *m = new_norm(t, where, err);
    if (!m) return -1;
    m->kind = NORM_BERT, m->clean = clean, m->chinese = chinese, m->lower = lower;
    m->accents = accents == -2 ? lower : accents;
    return tok_desc(t, "norm:bert(%d,%d,%d,%d);", clean, chinese, m->accents, lower);
}

static int parse_normalizer(sp_tokenizer *t, json_t *n, const char *where, sp_error *err) {
    if (!n || json_is_null(n)) return 0;
    const char *type = type_of(n);
    static const char *const unicode[] = {"NFC", "NFD", "NFKC", "NFKD"};
    for (int k = 0; k < 4; k++) {
        if (strcmp(type, unicode[k]) != 0) continue;
        tok_norm *m = new_norm(t, where, err);
        if (!m) return -1;
        m->kind = NORM_NFC + k;
        return tok_desc(t, "norm:%s;", type);
    }
    if (!strcmp(type, "Sequence"))
        return parse_sequence(t, n, "normalizers", where, parse_normalizer, err);
    if (!strcmp(type, "Prepend")) {
        json_t *p = json_object_get(n, "prepend");
        if (!json_is_string(p))
            return sp_fail(err, "%s: Prepend needs a \"prepend\" string", where);
        tok_norm *m = new_norm(t, where, err);
        if (!m) return -1;
        m->kind = NORM_PREPEND;
        if (!(m->a = dup_str(p, &m->alen))) return sp_fail(err, "out of memory");
        return tok_desc(t, "norm:prepend(%s);", m->a);
    }
    if (!strcmp(type, "Replace")) return parse_replace_norm(t, n, where, err);
    if (!strcmp(type, "Strip")) return parse_strip_norm(t, n, where, err);
    if (!strcmp(type, "Precompiled")) return parse_precompiled(t, n, where, err);
    if (!strcmp(type, "BertNormalizer")) return parse_bert_norm(t, n, where, err);
    if (!strcmp(type, "Lowercase")) {
        tok_norm *m = new_norm(t, where, err);
        if (!m) return -1;
        m->kind = NORM_LOWERCASE, m->lower = 1;
        return tok_desc(t, "norm:lowercase;");
    }
    return sp_fail(err, "%s: normalizer type \"%s\" is not supported (%s)", where, type, NORM_LIST);
}

/* ---- pre_tokenizer ---- */

static tok_pre *new_pre(sp_tokenizer *t, int kind, const char *where, sp_error *err) {
    if (t->n_pre >= TOK_MAX_PRE) {
        sp_fail(err, "%s: more than %d pre-tokenizers", where, TOK_MAX_PRE);
        return NULL;
    }
    tok_pre *p = &t->pre[t->n_pre++];
    p->kind = kind;
    p->behavior = SPLIT_ISOLATED;
    return p;
}

static int parse_behavior(const char *s) {
    static const char *const names[] = {"Removed", "Isolated", "MergedWithPrevious",
                                        "MergedWithNext", "Contiguous"};
    for (int k = 0; k < 5; k++)
        if (s && !strcmp(s, names[k])) return k;
    return -1;
}

static int parse_split(sp_tokenizer *t, json_t *p, const char *where, sp_error *err) {
    int lit, inv = bool_field(p, "invert", 0);
    size_t plen;
    const char *pat = pattern_of(json_object_get(p, "pattern"), &lit, &plen);
    const char *bs = json_string_value(json_object_get(p, "behavior"));
    int beh = parse_behavior(bs);
    if (!pat || plen == 0)
        return sp_fail(err, "%s: Split needs a non-empty \"pattern\" {\"String\"|\"Regex\": ...}",
                       where);
    if (beh < 0)
        return sp_fail(err,
                       "%s.behavior: \"%s\" is not one of Removed, Isolated, "
                       "MergedWithPrevious, MergedWithNext, Contiguous",
                       where, bs ? bs : "(missing)");
    if (inv < 0) return sp_fail(err, "%s.invert is not a boolean", where);
    tok_pre *s = new_pre(t, PRE_SPLIT, where, err);
    if (!s) return -1;
    s->behavior = beh, s->invert = inv;
    if (!(s->re = tok_regex(pat, plen, lit, err))) return sp_fail_prefix(err, "%s.pattern", where);
    return tok_desc(t, "pre:split(%s,%s,b=%d,inv=%d);", lit ? "str" : "re", pat, beh, inv);
}

static int parse_bytelevel(sp_tokenizer *t, json_t *p, const char *where, sp_error *err) {
    /* Hugging Face's defaults: add_prefix_space true, use_regex true. */
    int aps = bool_field(p, "add_prefix_space", 1), ur = bool_field(p, "use_regex", 1);
    if (aps < 0 || ur < 0)
        return sp_fail(err, "%s: add_prefix_space and use_regex must be booleans", where);
    tok_pre *s = new_pre(t, PRE_BYTELEVEL, where, err);
    if (!s) return -1;
    s->add_prefix_space = aps;
    if (ur && !(s->re = tok_regex(GPT2_PATTERN, sizeof GPT2_PATTERN - 1, 0, err))) return -1;
    t->mode = TOK_MODE_BYTE;
    return tok_desc(t, "pre:bytelevel(aps=%d,re=%d);", aps, ur);
}

static int parse_digits(sp_tokenizer *t, json_t *p, const char *where, sp_error *err) {
    int ind = bool_field(p, "individual_digits", 0);
    if (ind < 0) return sp_fail(err, "%s.individual_digits is not a boolean", where);
    tok_pre *s = new_pre(t, PRE_SPLIT, where, err);
    if (!s) return -1;
    /* Rust's char::is_numeric is the N categories; a run of them isolated = Contiguous. */
    const char *pat = ind ? "\\p{N}" : "\\p{N}+";
    if (!(s->re = tok_regex(pat, strlen(pat), 0, err))) return -1;
    return tok_desc(t, "pre:digits(%d);", ind);
}

/* Metaspace: the legacy form has add_prefix_space, the current one prepend_scheme. */
static int parse_metaspace(sp_tokenizer *t, json_t *p, const char *where, sp_error *err) {
    json_t *r = json_object_get(p, "replacement");
    const char *ps = json_string_value(json_object_get(p, "prepend_scheme"));
    int aps = bool_field(p, "add_prefix_space", 1), split = bool_field(p, "split", 1);
    if (!json_is_string(r) || json_string_length(r) == 0 || json_string_length(r) > 4)
        return sp_fail(err, "%s: Metaspace needs a one-character \"replacement\"", where);
    if (aps < 0 || split < 0)
        return sp_fail(err, "%s: add_prefix_space and split must be booleans", where);
    int scheme = aps ? PREPEND_ALWAYS : PREPEND_NEVER;
    if (ps) {
        if (!strcmp(ps, "always"))
            scheme = PREPEND_ALWAYS;
        else if (!strcmp(ps, "first"))
            scheme = PREPEND_FIRST;
        else if (!strcmp(ps, "never"))
            scheme = PREPEND_NEVER;
        else
            return sp_fail(err, "%s.prepend_scheme: \"%s\" is not always, first or never", where,
                           ps);
    }
    tok_pre *s = new_pre(t, PRE_METASPACE, where, err);
    if (!s) return -1;
    s->repl_len = json_string_length(r);
    memcpy(s->repl, json_string_value(r), s->repl_len);
    s->prepend_scheme = scheme, s->split = split, s->behavior = SPLIT_MERGED_NEXT;
    if (split && !(s->re = tok_regex(s->repl, s->repl_len, 1, err))) return -1;
    return tok_desc(t, "pre:metaspace(%s,%d,%d);", s->repl, scheme, split);
}

/* A Split step made here from a fixed pattern (WhitespaceSplit, BertPreTokenizer). */
static int fixed_split(sp_tokenizer *t, const char *pat, int behavior, const char *where,
                       sp_error *err) {
    tok_pre *s = new_pre(t, PRE_SPLIT, where, err);
    if (!s) return -1;
    s->behavior = behavior;
    if (!(s->re = tok_regex(pat, strlen(pat), 0, err))) return -1;
    return tok_desc(t, "pre:split(re,%s,b=%d,inv=0);", pat, behavior);
}

/* Rust's char::is_whitespace is Unicode White_Space, which \s means here (tok_regex); BERT's
 * punctuation is ASCII punctuation or a P* category. */
static const char WS_RUNS[] = "\\s+";
static const char BERT_PUNCT[] = "[!-/:-@\\[-`{-~\\p{P}]";

static int parse_pre(sp_tokenizer *t, json_t *p, const char *where, sp_error *err) {
    if (!p || json_is_null(p)) return 0;
    const char *type = type_of(p);
    if (!strcmp(type, "Sequence"))
        return parse_sequence(t, p, "pretokenizers", where, parse_pre, err);
    if (!strcmp(type, "Split")) return parse_split(t, p, where, err);
    if (!strcmp(type, "ByteLevel")) return parse_bytelevel(t, p, where, err);
    if (!strcmp(type, "Digits")) return parse_digits(t, p, where, err);
    if (!strcmp(type, "Metaspace")) return parse_metaspace(t, p, where, err);
    if (!strcmp(type, "WhitespaceSplit")) return fixed_split(t, WS_RUNS, SPLIT_REMOVED, where, err);
    if (!strcmp(type, "BertPreTokenizer"))
        return fixed_split(t, WS_RUNS, SPLIT_REMOVED, where, err) ||
               fixed_split(t, BERT_PUNCT, SPLIT_ISOLATED, where, err);
    return sp_fail(err, "%s: pre-tokenizer type \"%s\" is not supported (%s)", where, type,
                   PRE_LIST);
}

/* ---- decoder ---- */

/* Replace (a literal string by a string) or Metaspace (its replacement by a space; the first
 * token loses them unless prepend_scheme is "never"): one replacement per decoder. */
static int decoder_replace(sp_tokenizer *t, json_t *d, const char *where, sp_error *err) {
    const char *type = type_of(d), *pat, *to = " ";
    int lit = 1;
    size_t plen = 0;
    if (type[0] == 'R') {
        pat = pattern_of(json_object_get(d, "pattern"), &lit, &plen);
        to = json_string_value(json_object_get(d, "content"));
    } else {
        pat = json_string_value(json_object_get(d, "replacement"));
        plen = pat ? strlen(pat) : 0;
        const char *ps = json_string_value(json_object_get(d, "prepend_scheme"));
        t->dec_meta_first =
            ps ? strcmp(ps, "never") != 0 : bool_field(d, "add_prefix_space", 1) == 1;
    }
    if (!pat || !lit || !to || plen == 0 || plen >= sizeof t->dec_from ||
        strlen(to) >= sizeof t->dec_to || t->dec_from_len)
        return sp_fail(err, "%s: only one %s of a literal string by a string is supported", where,
                       type);
    memcpy(t->dec_from, pat, plen);
    t->dec_from_len = plen;
    t->dec_to_len = strlen(to);
    memcpy(t->dec_to, to, t->dec_to_len);
    return 0;
}

/* WordPiece: alone, for a WordPiece model whose continuing_subword_prefix is its prefix. */
static int decoder_wordpiece(sp_tokenizer *t, json_t *d, const char *where, sp_error *err) {
    json_t *p = json_object_get(d, "prefix");
    int cleanup = bool_field(d, "cleanup", 1);
    const char *pre = p ? json_string_value(p) : "##";
    if (t->model != TOK_MODEL_WORDPIECE || t->dec_from_len || t->dec_byte_fallback ||
        t->dec_meta_first)
        return sp_fail(err, "%s: the WordPiece decoder is supported alone, with a WordPiece model",
                       where);
    if (!pre || strlen(pre) >= sizeof t->wp_prefix || cleanup < 0)
        return sp_fail(err, "%s: WordPiece needs a string prefix (< %zu bytes), boolean cleanup",
                       where, sizeof t->wp_prefix);
    t->dec_wordpiece = 1, t->dec_cleanup = cleanup;
    /* The decoder's prefix must be the model's: the model is parsed later and checks it. */
    memcpy(t->wp_prefix, pre, strlen(pre) + 1);
    t->wp_prefix_len = strlen(pre);
    return tok_desc(t, "dec:wordpiece(%s,%d);", pre, cleanup);
}

static int parse_char_decoder_step(sp_tokenizer *t, json_t *d, const char *where, int *fused,
                                   sp_error *err) {
    const char *type = type_of(d);
    if (!strcmp(type, "Fuse")) {
        *fused = 1;
        return 0;
    }
    /* After Fuse there is one token, the whole text, which ByteFallback leaves alone; after
     * ByteFallback a Replace would also see the bytes. This decoder does neither. */
    if (!strcmp(type, "ByteFallback")) {
        if (*fused) return sp_fail(err, "%s: ByteFallback is supported before Fuse only", where);
        t->dec_byte_fallback = 1;
        return 0;
    }
    if (!strcmp(type, "Replace") || !strcmp(type, "Metaspace")) {
        if (t->dec_byte_fallback)
            return sp_fail(err, "%s: %s is supported before ByteFallback only", where, type);
        return decoder_replace(t, d, where, err);
    }
    if (!strcmp(type, "WordPiece")) return decoder_wordpiece(t, d, where, err);
    if (!strcmp(type, "Strip")) {
        const char *c = json_string_value(json_object_get(d, "content"));
        json_t *a = json_object_get(d, "start"), *b = json_object_get(d, "stop");
        /* Strip applies to each token; after Fuse there is only one, the whole text. */
        if (!*fused || !c || strlen(c) != 1 || !json_is_integer(a) || !json_is_integer(b) ||
            json_integer_value(a) < 0 || json_integer_value(b) < 0)
            return sp_fail(err,
                           "%s: Strip is supported after Fuse, with a one-byte content and "
                           "integer start/stop",
                           where);
        t->dec_strip_chr = c[0];
        t->dec_strip_start = (int)json_integer_value(a);
        t->dec_strip_stop = (int)json_integer_value(b);
        return 0;
    }
    return sp_fail(err,
                   "%s: decoder type \"%s\" is not supported here (supported for a "
                   "character-level BPE or Unigram: Sequence of Replace, ByteFallback, Fuse, "
                   "Strip; Metaspace; for WordPiece: WordPiece)",
                   where, type);
}

static int parse_decoder(sp_tokenizer *t, json_t *d, const char *where, sp_error *err) {
    int none = !d || json_is_null(d);
    if (t->mode == TOK_MODE_BYTE) {
        if (none || !strcmp(type_of(d), "ByteLevel")) return 0;
        return sp_fail(err,
                       "%s: a byte-level tokenizer needs a ByteLevel decoder (or none), not "
                       "\"%s\"",
                       where, type_of(d));
    }
    if (none)
        return sp_fail(err,
                       "%s: a tokenizer without a ByteLevel pre-tokenizer needs a decoder "
                       "(supported: Sequence of Replace, ByteFallback, Fuse, Strip; "
                       "Metaspace)",
                       where);
    int fused = 0;
    if (strcmp(type_of(d), "Sequence") != 0)
        return parse_char_decoder_step(t, d, where, &fused, err);
    json_t *list = json_object_get(d, "decoders"), *e;
    if (!json_is_array(list)) return sp_fail(err, "%s.decoders is not an array", where);
    size_t i;
    json_array_foreach(list, i, e) {
        char w[256];
        snprintf(w, sizeof w, "%s.decoders[%zu]", where, i);
        if (parse_char_decoder_step(t, e, w, &fused, err)) return -1;
    }
    return 0;
}

int tok_parse_pipeline(sp_tokenizer *t, json_t *root, const char *path, sp_error *err) {
    t->mode = TOK_MODE_CHAR; /* unless a ByteLevel step says otherwise */
    if (parse_normalizer(t, json_object_get(root, "normalizer"), "normalizer", err) ||
        parse_pre(t, json_object_get(root, "pre_tokenizer"), "pre_tokenizer", err) ||
        parse_decoder(t, json_object_get(root, "decoder"), "decoder", err))
        return sp_fail_prefix(err, "%s", path);
    return 0;
}

/* ---- post_processor and tokenizer_config.json: BOS / EOS ---- */

/* The id of a special-token name in a TemplateProcessing's special_tokens map. */
static int template_token(sp_tokenizer *t, json_t *pp, json_t *item, int32_t *id, const char *where,
                          sp_error *err) {
    const char *name =
        json_string_value(json_object_get(json_object_get(item, "SpecialToken"), "id"));
    json_t *ids =
        json_object_get(json_object_get(json_object_get(pp, "special_tokens"), name), "ids");
    if (!name || json_array_size(ids) != 1 || !json_is_integer(json_array_get(ids, 0)))
        return sp_fail(err, "%s: special token '%s' needs one id in special_tokens", where,
                       name ? name : "?");
    *id = (int32_t)json_integer_value(json_array_get(ids, 0));
    if (*id < 0 || *id >= t->n_ids || t->kind[*id] == TOK_ABSENT)
        return sp_fail(err, "%s: special token '%s' has id %d, which is not in the vocabulary",
                       where, name, *id);
    return 0;
}

/* TemplateProcessing "single": [special?] $A [special?] -> BOS / EOS. */
static int parse_template(sp_tokenizer *t, json_t *pp, int32_t *bos, int32_t *eos,
                          const char *where, sp_error *err) {
    json_t *single = json_object_get(pp, "single"), *e;
    size_t i, n = json_array_size(single), seq = SIZE_MAX;
    json_array_foreach(single, i, e) if (json_object_get(e, "Sequence")) {
        const char *id = json_string_value(json_object_get(json_object_get(e, "Sequence"), "id"));
        if (seq != SIZE_MAX || !id || strcmp(id, "A") != 0)
            seq = SIZE_MAX - 1;
        else
            seq = i;
    }
    if (seq >= n || seq > 1 || n - seq > 2)
        return sp_fail(err,
                       "%s.single: only [BOS] $A [EOS] (each special token optional) is "
                       "supported",
                       where);
    char w[256];
    snprintf(w, sizeof w, "%s.single", where);
    if (seq == 1 && template_token(t, pp, json_array_get(single, 0), bos, w, err)) return -1;
    if (n - seq == 2 && template_token(t, pp, json_array_get(single, n - 1), eos, w, err))
        return -1;
    return 0;
}

/* BertProcessing / RobertaProcessing's "cls" or "sep": [token, id], the id in the vocabulary. */
static int processing_token(sp_tokenizer *t, json_t *pp, const char *key, int32_t *id,
                            const char *where, sp_error *err) {
    json_t *v = json_object_get(pp, key), *s = json_array_get(v, 0), *i = json_array_get(v, 1);
    if (json_array_size(v) != 2 || !json_is_string(s) || !json_is_integer(i))
        return sp_fail(err, "%s.%s: expected [token, id]", where, key);
    int64_t n = json_integer_value(i);
    if (n < 0 || n >= t->n_ids || t->kind[n] == TOK_ABSENT ||
        tok_lookup(t, json_string_value(s), json_string_length(s)) != n)
        return sp_fail(err, "%s.%s: '%s' with id %lld is not that vocabulary token", where, key,
                       json_string_value(s), (long long)n);
    *id = (int32_t)n;
    return 0;
}

static int parse_post(sp_tokenizer *t, json_t *pp, int32_t *bos, int32_t *eos, const char *where,
                      sp_error *err) {
    if (!pp || json_is_null(pp)) return 0;
    const char *type = type_of(pp);
    if (!strcmp(type, "ByteLevel")) return 0; /* it only adjusts offsets */
    /* [CLS] $A [SEP] / <s> $A </s> (RoBERTa's trim_offsets and add_prefix_space only move
     * offsets). */
    if (!strcmp(type, "BertProcessing") || !strcmp(type, "RobertaProcessing"))
        return processing_token(t, pp, "cls", bos, where, err) ||
               processing_token(t, pp, "sep", eos, where, err);
    if (!strcmp(type, "TemplateProcessing")) return parse_template(t, pp, bos, eos, where, err);
    if (!strcmp(type, "Sequence")) {
        json_t *list = json_object_get(pp, "processors"), *e;
        size_t i;
        json_array_foreach(list, i, e) {
            char w[256];
            snprintf(w, sizeof w, "%s.processors[%zu]", where, i);
            if (parse_post(t, e, bos, eos, w, err)) return -1;
        }
        return 0;
    }
    return sp_fail(err,
                   "%s: post-processor type \"%s\" is not supported (supported: "
                   "TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel, Sequence)",
                   where, type);
}

/* bos_token / eos_token: a string, {"content": ...} or null. -2 when absent. */
static int config_token(sp_tokenizer *t, json_t *cfg, const char *key, int32_t *id,
                        const char *path, sp_error *err) {
    json_t *v = json_object_get(cfg, key);
    *id = -2;
    if (!v) return 0;
    *id = -1;
    if (json_is_null(v)) return 0;
    if (json_is_object(v)) v = json_object_get(v, "content");
    if (!json_is_string(v))
        return sp_fail(err, "%s: %s is not a string or {\"content\": string}", path, key);
    *id = tok_lookup(t, json_string_value(v), json_string_length(v));
    if (*id < 0)
        return sp_fail(err, "%s: %s '%s' is not in the vocabulary", path, key,
                       json_string_value(v));
    return 0;
}

static int disagree(const char *cfg_path, const char *which, int says, sp_error *err) {
    return sp_fail(err, "%s: add_%s_token is %s but tokenizer.json's post_processor %s it",
                   cfg_path, which, says ? "true" : "false", says ? "does not add" : "adds");
}

/* What tokenizer_config.json says: add_bos_token / add_eos_token (absent: -2, not a boolean:
 * -1) and the ids of bos_token / eos_token (config_token's: -2 absent, -1 null). */
typedef struct tok_config {
    int add_bos, add_eos;
    int32_t bos, eos;
} tok_config;

static int read_config(sp_tokenizer *t, const char *cfg_path, tok_config *c, sp_error *err) {
    json_error_t je;
    if (sp__check_file_size(cfg_path, SP_MAX_CONFIG_FILE_BYTES, "tokenizer config", err) != 0)
        return -1;
    json_t *cfg = json_load_file(cfg_path, 0, &je);
    if (!cfg)
        return sp_fail(err, "%s:%d:%d: invalid JSON: %s", cfg_path, je.line, je.column, je.text);
    int rc = 0;
    if (!json_is_object(cfg)) {
        rc = sp_fail(err, "%s: the top level is not a JSON object", cfg_path);
    } else {
        c->add_bos = bool_field(cfg, "add_bos_token", -2);
        c->add_eos = bool_field(cfg, "add_eos_token", -2);
        rc = config_token(t, cfg, "bos_token", &c->bos, cfg_path, err) ||
             config_token(t, cfg, "eos_token", &c->eos, cfg_path, err);
    }
    json_decref(cfg);
    return rc ? -1 : 0;
}

/* tokenizer_config.json: bos_token, eos_token, add_bos_token, add_eos_token. Where both it and
 * the post-processor say whether BOS/EOS are added and disagree, loading fails. */
static int apply_config(sp_tokenizer *t, const char *cfg_path, int32_t tbos, int32_t teos,
                        sp_error *err) {
    tok_config c;
    if (read_config(t, cfg_path, &c, err)) return -1;
    int ab = c.add_bos, ae = c.add_eos;
    int32_t bos = c.bos, eos = c.eos;
    if (ab == -1 || ae == -1)
        return sp_fail(err, "%s: add_bos_token / add_eos_token must be booleans", cfg_path);
    if (bos >= 0) t->bos = bos;
    if (eos >= 0) t->eos_cfg = eos;
    if ((ab == 1 && tbos < 0 && bos < 0) || (ae == 1 && teos < 0 && eos < 0))
        return sp_fail(err, "%s: add_%s_token is true but no %s_token is named", cfg_path,
                       ab == 1 ? "bos" : "eos", ab == 1 ? "bos" : "eos");
    if (ab >= 0 && ab != (tbos >= 0)) return disagree(cfg_path, "bos", ab, err);
    if (ae >= 0 && ae != (teos >= 0)) return disagree(cfg_path, "eos", ae, err);
    if (tbos >= 0 && bos >= 0 && tbos != bos)
        return sp_fail(err, "%s: bos_token (id %d) differs from the post_processor's (id %d)",
                       cfg_path, bos, tbos);
    return 0;
}

int tok_apply_pair_config(sp_tokenizer *t, const char *cfg_path, sp_error *err) {
    tok_config c;
    if (read_config(t, cfg_path, &c, err)) return -1;
    if (c.add_bos == -1) return sp_fail(err, "%s: add_bos_token must be a boolean", cfg_path);
    int32_t bos = c.bos;
    if (bos >= 0) t->bos = bos;
    if (c.eos >= 0) t->eos_cfg = c.eos;
    if (c.add_bos != 1) return 0;
    if (bos == -1) return sp_fail(err, "%s: add_bos_token is true but bos_token is null", cfg_path);
    if (bos == -2) /* GPT2Tokenizer's default bos_token */
        bos = tok_lookup(t, "<|endoftext|>", strlen("<|endoftext|>"));
    if (bos < 0)
        return sp_fail(err,
                       "%s: add_bos_token is true but no bos_token is named and <|endoftext|> is "
                       "not in the vocabulary",
                       cfg_path);
    t->bos = bos, t->add_bos = 1;
    return 0;
}

int tok_parse_post(sp_tokenizer *t, json_t *root, const char *path, const char *config_path,
                   sp_error *err) {
    int32_t tbos = -1, teos = -1;
    if (parse_post(t, json_object_get(root, "post_processor"), &tbos, &teos, "post_processor", err))
        return sp_fail_prefix(err, "%s", path);
    if (tbos >= 0) t->bos = tbos, t->add_bos = 1;
    if (teos >= 0) t->eos_cfg = teos, t->add_eos = 1;
    if (config_path && apply_config(t, config_path, tbos, teos, err)) return -1;
    return 0;
}

void tok_free_pipeline(sp_tokenizer *t) {
    for (int i = 0; i < t->n_norm; i++) {
        free(t->norm[i].a), free(t->norm[i].b);
        tok_charsmap_free(t->norm[i].cmap), free(t->norm[i].cmap);
        pcre2_code_free(t->norm[i].re);
    }
    for (int i = 0; i < t->n_pre; i++) pcre2_code_free(t->pre[i].re);
    for (int i = 0; i < TOK_MAX_PRE; i++) free(t->lvl[i].buf), free(t->lvl[i].segs);
    free(t->nbuf[0]), free(t->nbuf[1]), free(t->u16[0]), free(t->u16[1]);
    sp__buf_free(&t->desc);
}
