/* Parsing the option strings of `prepare`: templates ("{soft:20}{text} It was") into pieces and
 * verbalizers ("0= terrible,1= great") into classes, with messages that give the column of the
 * problem. No tokenizer is involved; formatter.c turns the parsed pieces into token ids. The
 * syntax is described in template.h. */
#include "softprompt/template.h"

#include <stdlib.h>
#include <string.h>

#include "util/vec.h"

/* 1-based character column of byte offset i of s (UTF-8 continuation bytes do not count). */
static int column_of(const char *s, size_t i) {
    int col = 1;
    for (size_t k = 0; k < i; k++)
        if (((unsigned char)s[k] & 0xC0) != 0x80) col++;
    return col;
}

/* ------------------------------------------------------------------------------------------ */
/* Templates                                                                                  */
/* ------------------------------------------------------------------------------------------ */

static int add_piece(sp_template *t, sp_piece_kind kind, const char *text, size_t len, int n_soft,
                     int column) {
    /* Adjacent literals merge (e.g. "a{{b" is one literal). */
    if (kind == SP_PIECE_LITERAL && t->n_pieces > 0 &&
        t->pieces[t->n_pieces - 1].kind == SP_PIECE_LITERAL) {
        sp_template_piece *p = &t->pieces[t->n_pieces - 1];
        if (sp__vec_resize(&p->text, p->len + len + 1, 1) != 0) return -1;
        memcpy(p->text + p->len, text, len);
        p->len += len;
        p->text[p->len] = '\0';
        return 0;
    }
    if (sp__vec_resize(&t->pieces, (size_t)t->n_pieces + 1, sizeof *t->pieces) != 0) return -1;
    sp_template_piece *p = &t->pieces[t->n_pieces];
    memset(p, 0, sizeof *p);
    p->kind = kind;
    p->column = column;
    if (kind == SP_PIECE_MASK) {
        t->n_mask++;
    } else if (kind != SP_PIECE_SOFT) {
        if (!(p->text = malloc(len + 1))) return -1;
        memcpy(p->text, text, len);
        p->text[len] = '\0';
        p->len = len;
    } else {
        p->soft_first = t->n_soft;
        p->n_soft = n_soft;
        t->n_soft += n_soft;
    }
    t->n_pieces++;
    return 0;
}

/* Parses the inside of "{...}" (name[0:len), opened at byte open of spec). */
static int add_placeholder(sp_template *t, const char *spec, size_t open, const char *name,
                           size_t len, int allow_soft, const char *what, sp_error *err) {
    int col = column_of(spec, open);
    if (len == 0)
        return sp_fail(err,
                       "%s column %d: empty placeholder '{}' (write {{}} for literal braces, "
                       "{name} for a field, {soft:N} for soft tokens)",
                       what, col);
    if (len == 4 && !memcmp(name, "mask", 4)) {
        if (!allow_soft)
            return sp_fail(err, "%s column %d: {mask} is not allowed here (only in --template)",
                           what, col);
        if (t->n_mask > 0)
            return sp_fail(err, "%s column %d: a second {mask} (a template scores one mask)", what,
                           col);
        if (add_piece(t, SP_PIECE_MASK, NULL, 0, 0, col) != 0)
            return sp_fail(err, "%s: out of memory", what);
        return 0;
    }
    int is_soft = (len == 4 && !memcmp(name, "soft", 4)) || (len > 5 && !memcmp(name, "soft:", 5));
    if (len == 5 && !memcmp(name, "soft:", 5)) is_soft = 1;
    if (!is_soft) {
        if (add_piece(t, SP_PIECE_FIELD, name, len, 0, col) != 0)
            return sp_fail(err, "%s: out of memory", what);
        return 0;
    }
    if (!allow_soft)
        return sp_fail(err, "%s column %d: soft tokens are not allowed here (only in --template)",
                       what, col);
    long n = 1;
    if (len > 4) {
        n = 0;
        int ok = len > 5 && len <= 5 + 9;
        for (size_t i = 5; ok && i < len; i++) {
            if (name[i] < '0' || name[i] > '9')
                ok = 0;
            else
                n = n * 10 + (name[i] - '0');
        }
        if (!ok || n < 1 || n > SP_TEMPLATE_MAX_SOFT)
            return sp_fail(err,
                           "%s column %d: bad soft-token count in '{%.*s}' (expected {soft:N} "
                           "with 1 <= N <= %d, or {soft} for one)",
                           what, col, (int)(len < 40 ? len : 40), name, SP_TEMPLATE_MAX_SOFT);
    }
    if (t->n_soft + n > SP_TEMPLATE_MAX_SOFT)
        return sp_fail(err, "%s column %d: more than %d soft tokens in total", what, col,
                       SP_TEMPLATE_MAX_SOFT);
    if (add_piece(t, SP_PIECE_SOFT, NULL, 0, (int)n, col) != 0)
        return sp_fail(err, "%s: out of memory", what);
    return 0;
}

int sp_template_parse(sp_template *t, const char *spec, int allow_soft, const char *what,
                      sp_error *err) {
    memset(t, 0, sizeof *t);
    size_t n = strlen(spec), bad;
    if (!sp_utf8_check(spec, n, &bad))
        return sp_fail(err, "%s column %d: invalid UTF-8", what, column_of(spec, bad));
    if (n == 0) return sp_fail(err, "%s is empty", what);
    size_t lit_start = 0; /* start of the pending literal run (no braces inside) */
    size_t i = 0;
    while (i <= n) {
        char c = i < n ? spec[i] : '\0';
        int brace = c == '{' || c == '}';
        if (i < n && !brace) {
            i++;
            continue;
        }
        /* Flush the literal run [lit_start, i). */
        if (i > lit_start && add_piece(t, SP_PIECE_LITERAL, spec + lit_start, i - lit_start, 0,
                                       column_of(spec, lit_start)) != 0)
            goto oom;
        if (i == n) break;
        if (c == '}') {
            if (i + 1 < n && spec[i + 1] == '}') {
                if (add_piece(t, SP_PIECE_LITERAL, "}", 1, 0, column_of(spec, i)) != 0) goto oom;
                i += 2, lit_start = i;
                continue;
            }
            sp_fail(err, "%s column %d: unmatched '}' (write }} for a literal '}')", what,
                    column_of(spec, i));
            goto fail;
        }
        if (i + 1 < n && spec[i + 1] == '{') {
            if (add_piece(t, SP_PIECE_LITERAL, "{", 1, 0, column_of(spec, i)) != 0) goto oom;
            i += 2, lit_start = i;
            continue;
        }
        size_t j = i + 1;
        while (j < n && spec[j] != '}' && spec[j] != '{') j++;
        if (j == n) {
            sp_fail(err, "%s column %d: '{' is never closed (write {{ for a literal '{')", what,
                    column_of(spec, i));
            goto fail;
        }
        if (spec[j] == '{') {
            sp_fail(err,
                    "%s column %d: '{' inside the placeholder opened at column %d (field names "
                    "cannot contain braces; write {{ for a literal '{')",
                    what, column_of(spec, j), column_of(spec, i));
            goto fail;
        }
        if (add_placeholder(t, spec, i, spec + i + 1, j - i - 1, allow_soft, what, err) != 0)
            goto fail;
        i = j + 1, lit_start = i;
    }
    return 0;
oom:
    sp_fail(err, "%s: out of memory", what);
fail:
    sp_template_free(t);
    return -1;
}

void sp_template_free(sp_template *t) {
    if (!t) return;
    for (int i = 0; i < t->n_pieces; i++) free(t->pieces[i].text);
    free(t->pieces);
    memset(t, 0, sizeof *t);
}

int sp_template_count_field(const sp_template *t, const char *name) {
    int c = 0;
    for (int i = 0; i < t->n_pieces; i++)
        if (t->pieces[i].kind == SP_PIECE_FIELD && !strcmp(t->pieces[i].text, name)) c++;
    return c;
}

/* ------------------------------------------------------------------------------------------ */
/* Verbalizers                                                                                */
/* ------------------------------------------------------------------------------------------ */

void sp_verbalizer_free(sp_verbalizer *v) {
    if (!v) return;
    for (int i = 0; i < v->n_classes; i++) {
        free(v->values ? v->values[i] : NULL);
        free(v->words ? v->words[i] : NULL);
    }
    free(v->values), free(v->words);
    memset(v, 0, sizeof *v);
}

static char *trimmed_copy(const char *s, size_t n) {
    while (n > 0 && (*s == ' ' || *s == '\t')) s++, n--;
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
    char *r = malloc(n + 1);
    if (r) memcpy(r, s, n), r[n] = '\0';
    return r;
}

int sp_verbalizer_parse(sp_verbalizer *v, const char *spec, sp_error *err) {
    memset(v, 0, sizeof *v);
    size_t n = strlen(spec), bad;
    if (!sp_utf8_check(spec, n, &bad))
        return sp_fail(err, "--verbalizer column %d: invalid UTF-8", column_of(spec, bad));
    if (n == 0) return sp_fail(err, "--verbalizer is empty (expected e.g. '0= terrible,1= great')");
    sp__buf value = {0}, word = {0};
    int have_eq = 0, entry = 1;
    size_t entry_start = 0;
    for (size_t i = 0; i <= n; i++) {
        char c = i < n ? spec[i] : ',';
        int escaped = 0;
        if (c == '\\' && i + 1 < n && strchr(",=\\", spec[i + 1])) c = spec[++i], escaped = 1;
        if (c == ',' && !escaped) {
            int col = column_of(spec, entry_start);
            char *val = have_eq ? trimmed_copy(value.p ? value.p : "", value.len) : NULL;
            if (!have_eq) {
                if (value.len == 0 && i == n && entry > 1)
                    sp_fail(err, "--verbalizer column %d: empty entry after the last ','", col);
                else
                    sp_fail(err,
                            "--verbalizer column %d: entry %d has no '=' (expected "
                            "value=word, e.g. '1= great')",
                            col, entry);
                goto fail;
            }
            if (!val) goto oom;
            if (!val[0] || word.len == 0) {
                sp_fail(err, "--verbalizer column %d: entry %d has an empty %s", col, entry,
                        !val[0] ? "value (before '=')" : "word (after '=')");
                free(val);
                goto fail;
            }
            if (sp_verbalizer_find(v, val) >= 0) {
                sp_fail(err, "--verbalizer column %d: value \"%s\" appears twice", col, val);
                free(val);
                goto fail;
            }
            size_t n_new = (size_t)v->n_classes + 1;
            char *w = strdup(word.p);
            if (sp__vec_resize(&v->values, n_new, sizeof *v->values) != 0 ||
                sp__vec_resize(&v->words, n_new, sizeof *v->words) != 0 || !w) {
                free(val), free(w);
                goto oom;
            }
            v->values[v->n_classes] = val;
            v->words[v->n_classes] = w;
            v->n_classes++;
            value.len = word.len = 0;
            have_eq = 0;
            entry++;
            entry_start = i + 1;
            continue;
        }
        if (c == '=' && !escaped && !have_eq) {
            have_eq = 1;
            continue;
        }
        if (sp__buf_addc(have_eq ? &word : &value, c) != 0) goto oom;
    }
    free(value.p), free(word.p);
    return 0;
oom:
    sp_fail(err, "--verbalizer: out of memory");
fail:
    free(value.p), free(word.p);
    sp_verbalizer_free(v);
    return -1;
}

int sp_verbalizer_find(const sp_verbalizer *v, const char *value) {
    for (int i = 0; i < v->n_classes; i++)
        if (!strcmp(v->values[i], value)) return i;
    return -1;
}
