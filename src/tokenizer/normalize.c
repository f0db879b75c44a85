/* Normalizers of tokenizer.json (NFC/NFD/NFKC/NFKD via ICU, Prepend, Replace, Strip,
 * Precompiled, BertNormalizer, Lowercase), applied in order to each span of text between added
 * tokens, as Hugging Face does. */
#include <stdlib.h>
#include <string.h>
#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include "tok_internal.h"

/* Grows scratch buffer k of t to n bytes. */
static char *scratch(sp_tokenizer *t, int k, size_t n) {
    if (sp__vec_reserve(&t->nbuf[k], &t->nbuf_cap[k], n + 1, 1)) return NULL;
    return t->nbuf[k];
}

static const UNormalizer2 *icu_form(int kind, UErrorCode *st) {
    switch (kind) {
    case NORM_NFC:
        return unorm2_getNFCInstance(st);
    case NORM_NFD:
        return unorm2_getNFDInstance(st);
    case NORM_NFKC:
        return unorm2_getNFKCInstance(st);
    default:
        return unorm2_getNFKDInstance(st);
    }
}

/* Normalizes the n16 UTF-16 units in t->u16[0] into t->u16[1]; returns the length or -1. ICU
 * reports the length needed when the output does not fit, so a second try always fits. */
static int32_t icu_normalize(sp_tokenizer *t, const UNormalizer2 *form, int32_t n16,
                             UErrorCode *st) {
    int32_t cap = n16 + 16;
    for (int tries = 0; tries < 2; tries++) {
        if (sp__vec_reserve(&t->u16[1], &t->u16_cap[1], (size_t)cap, 2)) return -1;
        *st = U_ZERO_ERROR;
        int32_t m = unorm2_normalize(form, (UChar *)t->u16[0], n16, (UChar *)t->u16[1], cap, st);
        if (*st != U_BUFFER_OVERFLOW_ERROR) return U_FAILURE(*st) ? -1 : m;
        cap = m;
    }
    return -1;
}

/* Unicode normalization through UTF-16 (ICU's native form). ASCII is unchanged by all four
 * forms, so it is passed through without a copy. */
static int unicode_norm(sp_tokenizer *t, int kind, const char *s, size_t n, int k, char **out,
                        size_t *out_len, sp_error *err) {
    size_t i = 0;
    while (i < n && (unsigned char)s[i] < 0x80) i++;
    if (i == n) {
        *out = (char *)s, *out_len = n;
        return 0;
    }
    if (n > INT32_MAX / 4) return sp_fail(err, "encode: %zu bytes are too many to normalize", n);
    UErrorCode st = U_ZERO_ERROR;
    const UNormalizer2 *form = icu_form(kind, &st);
    int32_t n16 = 0, m16 = -1, m8 = 0;
    if (form && !U_FAILURE(st) && !sp__vec_reserve(&t->u16[0], &t->u16_cap[0], n + 1, 2)) {
        u_strFromUTF8((UChar *)t->u16[0], (int32_t)n + 1, &n16, s, (int32_t)n, &st);
        if (!U_FAILURE(st)) m16 = icu_normalize(t, form, n16, &st);
    }
    /* Each UTF-16 unit is at most 3 UTF-8 bytes. */
    if (m16 < 0 || !scratch(t, k, 3 * (size_t)m16))
        return sp_fail(err, "encode: normalizer: %s",
                       U_FAILURE(st) ? u_errorName(st) : "out of memory");
    u_strToUTF8(t->nbuf[k], (int32_t)(3 * (size_t)m16 + 1), &m8, (UChar *)t->u16[1], m16, &st);
    if (U_FAILURE(st)) return sp_fail(err, "encode: normalizer: %s", u_errorName(st));
    *out = t->nbuf[k], *out_len = (size_t)m8;
    return 0;
}

/* Finds the next occurrence of m's pattern in s[from, n): 0 and [*a, *b), 1 for none, -1 on a
 * matching error. md: match data for m->re. */
static int find_next(const tok_norm *m, pcre2_match_data *md, const char *s, size_t n, size_t from,
                     size_t *a, size_t *b) {
    if (!m->re) {
        const char *hit = memmem(s + from, n - from, m->a, m->alen);
        if (!hit) return 1;
        *a = (size_t)(hit - s), *b = *a + m->alen;
        return 0;
    }
    for (size_t at = from; at <= n;) {
        int rc = pcre2_match(m->re, (PCRE2_SPTR)s, n, at, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) return 1;
        if (rc < 0) return -1;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        if (ov[1] > ov[0]) {
            *a = ov[0], *b = ov[1];
            return 0;
        }
        /* An empty match replaces nothing: step over one character. */
        at = ov[0] + 1;
        while (at < n && ((unsigned char)s[at] & 0xC0) == 0x80) at++;
    }
    return 1;
}

static int replace_all(sp_tokenizer *t, const tok_norm *m, const char *s, size_t n, int k,
                       char **out, size_t *out_len, sp_error *err) {
    pcre2_match_data *md = m->re ? pcre2_match_data_create(1, NULL) : NULL;
    if (m->re && !md) return sp_fail(err, "encode: out of memory");
    size_t len = 0, from = 0, a, b;
    int rc;
    char *o;
    while ((rc = find_next(m, md, s, n, from, &a, &b)) == 0) {
        if (!(o = scratch(t, k, len + (a - from) + m->blen))) break;
        memcpy(o + len, s + from, a - from), len += a - from;
        memcpy(o + len, m->b, m->blen), len += m->blen;
        from = b;
    }
    pcre2_match_data_free(md);
    if (rc < 0) return sp_fail(err, "encode: normalizer Replace: regex match failed");
    if (rc == 0 || !(o = scratch(t, k, len + (n - from))))
        return sp_fail(err, "encode: out of memory");
    memcpy(o + len, s + from, n - from), len += n - from;
    *out = o, *out_len = len;
    return 0;
}

/* ---- Strip, Lowercase, BertNormalizer (per character, as Rust's char functions) ---- */

static int strip(const tok_norm *m, const char *s, size_t n, char **out, size_t *out_len) {
    size_t a = 0, b = n;
    while (m->left && a < b) {
        uint32_t cp;
        size_t l = tok_utf8_next((const uint8_t *)s + a, &cp);
        if (!tok_is_whitespace(cp)) break;
        a += l;
    }
    while (m->right && b > a) {
        size_t k = b - 1;
        while (k > a && ((uint8_t)s[k] & 0xC0) == 0x80) k--;
        uint32_t cp;
        tok_utf8_next((const uint8_t *)s + k, &cp);
        if (!tok_is_whitespace(cp)) break;
        b = k;
    }
    *out = (char *)s + a, *out_len = b - a;
    return 0;
}

static int put_cp(sp__buf *o, uint32_t cp) {
    char u[4];
    size_t l = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    if (l == 1) u[0] = (char)cp;
    if (l == 2) u[0] = (char)(0xC0 | cp >> 6);
    if (l == 3) u[0] = (char)(0xE0 | cp >> 12);
    if (l == 4) u[0] = (char)(0xF0 | cp >> 18);
    for (size_t k = 1; k < l; k++) u[k] = (char)(0x80 | ((cp >> (6 * (l - 1 - k))) & 0x3F));
    return sp__buf_add(o, u, l);
}

/* Rust's char::to_lowercase: the full (context-free) lowercase mapping of one character. */
static int lower_cp(sp__buf *o, uint32_t cp) {
    if (cp < 0x80) return sp__buf_addc(o, (char)(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp));
    UChar in[2], low[8];
    int32_t n = 0, m;
    U16_APPEND_UNSAFE(in, n, cp);
    UErrorCode st = U_ZERO_ERROR;
    m = u_strToLower(low, 8, in, n, "", &st);
    if (U_FAILURE(st) || m > 8) return put_cp(o, cp);
    for (int32_t i = 0; i < m;) {
        UChar32 c;
        U16_NEXT(low, i, m, c);
        if (put_cp(o, (uint32_t)c)) return -1;
    }
    return 0;
}

/* Hugging Face's BertNormalizer character tests. Its "other" is Cc, Cf, Co and Cs, not the
 * unassigned Cn (which it keeps: U+0378 and U+10FFFF stay, as its own ids show). */
static int bert_control(uint32_t cp) {
    if (cp == '\t' || cp == '\n' || cp == '\r') return 0;
    int8_t ty = u_charType((UChar32)cp);
    return ty == U_CONTROL_CHAR || ty == U_FORMAT_CHAR || ty == U_PRIVATE_USE_CHAR ||
           ty == U_SURROGATE;
}
static int bert_chinese(uint32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
           (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
           (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/* clean_text, handle_chinese_chars (before accents and case, as Hugging Face orders them). */
static int bert_first(const tok_norm *m, const char *s, size_t n, sp__buf *o) {
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0;) {
        uint32_t cp;
        i += tok_utf8_next((const uint8_t *)s + i, &cp);
        if (m->clean && (cp == 0 || cp == 0xFFFD || bert_control(cp))) continue;
        if (m->clean && (cp == '\t' || cp == '\n' || cp == '\r' || tok_is_whitespace(cp))) cp = ' ';
        if (m->chinese && bert_chinese(cp))
            rc = sp__buf_addc(o, ' ') || put_cp(o, cp) || sp__buf_addc(o, ' ');
        else
            rc = put_cp(o, cp);
    }
    return rc;
}

/* Drops nonspacing marks (strip_accents, after NFD) and/or lowercases. */
static int bert_last(int accents, int lower, const char *s, size_t n, sp__buf *o) {
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0;) {
        uint32_t cp;
        i += tok_utf8_next((const uint8_t *)s + i, &cp);
        if (accents && u_charType((UChar32)cp) == U_NON_SPACING_MARK) continue;
        rc = lower ? lower_cp(o, cp) : put_cp(o, cp);
    }
    return rc;
}

/* The result of a buf-producing step goes to scratch k. */
static int from_buf(sp_tokenizer *t, sp__buf *b, int k, char **out, size_t *out_len) {
    char *o = scratch(t, k, b->len);
    if (o && b->len) memcpy(o, b->p, b->len);
    *out = o, *out_len = b->len;
    sp__buf_free(b);
    return o ? 0 : -1;
}

static int bert(sp_tokenizer *t, const tok_norm *m, const char *s, size_t n, int k, char **out,
                size_t *out_len, sp_error *err) {
    sp__buf b = {0};
    if (bert_first(m, s, n, &b) || from_buf(t, &b, k, out, out_len))
        return sp__buf_free(&b), sp_fail(err, "encode: out of memory");
    if (!m->accents && !m->lower) return 0;
    s = *out, n = *out_len;
    if (m->accents) { /* NFD into the other buffer */
        if (unicode_norm(t, NORM_NFD, s, n, !k, out, out_len, err)) return -1;
        s = *out, n = *out_len;
    }
    if (bert_last(m->accents, m->lower, s, n, &b) ||
        from_buf(t, &b, s == t->nbuf[k] ? !k : k, out, out_len))
        return sp__buf_free(&b), sp_fail(err, "encode: out of memory");
    return 0;
}

static int precompiled(sp_tokenizer *t, const tok_norm *m, const char *s, size_t n, int k,
                       char **out, size_t *out_len, sp_error *err) {
    sp__buf b = {0};
    if (tok_charsmap_normalize(m->cmap, s, n, &b, err)) return sp__buf_free(&b), -1;
    if (from_buf(t, &b, k, out, out_len)) return sp_fail(err, "encode: out of memory");
    return 0;
}

int tok_normalize(sp_tokenizer *t, const char *s, size_t n, const char **out, size_t *out_len,
                  sp_error *err) {
    for (int i = 0; i < t->n_norm; i++) {
        const tok_norm *m = &t->norm[i];
        /* write into the buffer that s is not in (Strip leaves s inside a buffer) */
        int k = t->nbuf[0] && s >= t->nbuf[0] && s <= t->nbuf[0] + t->nbuf_cap[0] ? 1 : 0;
        char *o = NULL;
        size_t len = 0;
        if (m->kind == NORM_PREPEND) {
            if (n == 0) continue; /* Prepend leaves empty text empty */
            if (!(o = scratch(t, k, m->alen + n))) return sp_fail(err, "encode: out of memory");
            memcpy(o, m->a, m->alen), memcpy(o + m->alen, s, n);
            len = m->alen + n;
        } else if (m->kind == NORM_REPLACE) {
            if (replace_all(t, m, s, n, k, &o, &len, err)) return -1;
        } else if (m->kind == NORM_STRIP) {
            strip(m, s, n, &o, &len);
        } else if (m->kind == NORM_PRECOMPILED) {
            if (precompiled(t, m, s, n, k, &o, &len, err)) return -1;
        } else if (m->kind == NORM_BERT || m->kind == NORM_LOWERCASE) {
            if (bert(t, m, s, n, k, &o, &len, err)) return -1;
        } else if (unicode_norm(t, m->kind, s, n, k, &o, &len, err)) {
            return -1;
        }
        s = o, n = len;
    }
    *out = s, *out_len = n;
    return 0;
}
