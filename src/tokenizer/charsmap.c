/* SentencePiece's precompiled_charsmap, as tokenizer.json's Precompiled normalizer (T5, mT5,
 * XLM-R, ...) carries it: base64 of
 *   u32 LE  trie_size (bytes)
 *   trie_size bytes: a Darts double-array trie, u32 LE units
 *   the rest: replacement strings, each NUL-terminated (the trie's values are their offsets).
 * A unit holds a label (bits 0-7, bit 31 set on value units), a has-leaf flag (bit 8) and the
 * offset to its children ((unit >> 10) << ((unit & 0x200) >> 6)); a child with byte c sits at
 * position ^ offset ^ c, and a node's value at position ^ offset. The blob is outside input:
 * parsing checks every unit reachable from the root and every value, so that lookups stay in
 * bounds and replacements are whole UTF-8 strings. */
#include <stdlib.h>
#include <string.h>
#include <unicode/ubrk.h>
#include <unicode/utext.h>

#include "tok_internal.h"

static int b64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Standard base64 with padding (what Hugging Face writes and requires); 0, or -1 if s is not. */
int tok_base64_decode(const char *s, size_t n, uint8_t **out, size_t *out_len) {
    if (n % 4) return -1;
    uint8_t *o = malloc(n / 4 * 3 + 1);
    if (!o) return -1;
    size_t k = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int j = 0; j < 4; j++) {
            v[j] = b64_value((unsigned char)s[i + j]);
            if (s[i + j] == '=' && i + 4 == n && j >= 2 && (j == 3 || s[i + 3] == '='))
                v[j] = 0, pad++;
            else if (v[j] < 0 || pad)
                return free(o), -1;
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | v[3];
        o[k++] = (uint8_t)(w >> 16);
        if (pad < 2) o[k++] = (uint8_t)(w >> 8);
        if (pad < 1) o[k++] = (uint8_t)w;
    }
    *out = o, *out_len = k;
    return 0;
}

static uint32_t unit_offset(uint32_t u) {
    return (u >> 10) << ((u & (1u << 9)) >> 6);
}
static int unit_has_leaf(uint32_t u) {
    return (u >> 8) & 1;
}
static uint32_t unit_label(uint32_t u) {
    return u & (1u << 31 | 0xFF);
}
static uint32_t unit_value(uint32_t u) {
    return u & ((1u << 31) - 1);
}

static int utf8_valid(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t l = c < 0x80             ? 1
                   : (c & 0xE0) == 0xC0 ? 2
                   : (c & 0xF0) == 0xE0 ? 3
                   : (c & 0xF8) == 0xF0 ? 4
                                        : 0;
        if (!l || n - i < l) return 0;
        uint32_t cp = l == 1 ? c : c & (0x7Fu >> l);
        for (size_t k = 1; k < l; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (s[i + k] & 0x3Fu);
        }
        static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min[l] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        i += l;
    }
    return 1;
}

/* Checks the value of the node whose children start at base. */
static int check_value(const tok_charsmap *m, size_t base, sp_error *err) {
    if (base >= m->n_units)
        return sp_fail(err, "precompiled_charsmap: a value lies outside the trie (unit %zu of %zu)",
                       base, m->n_units);
    uint32_t v = unit_value(m->units[base]);
    if (v > m->norm_len || (v < m->norm_len && ((uint8_t)m->norm[v] & 0xC0) == 0x80))
        return sp_fail(err,
                       "precompiled_charsmap: unit %zu points at byte %u of the %zu-byte "
                       "replacements, which does not start a character",
                       base, v, m->norm_len);
    return 0;
}

/* Walks every node reachable from the root (each position once, so cycles end). */
static int check_trie(const tok_charsmap *m, sp_error *err) {
    size_t n = m->n_units, top = 0;
    uint8_t *seen = calloc(n, 1);
    size_t *stack = malloc(n * sizeof *stack);
    int rc = 0;
    if (!seen || !stack) rc = sp_fail(err, "out of memory");
    if (!rc) stack[top++] = (size_t)unit_offset(m->units[0]), seen[0] = 1;
    while (!rc && top) {
        size_t base = stack[--top];
        for (unsigned c = 1; c < 256 && !rc; c++) {
            size_t pos = base ^ c;
            if (pos >= n || unit_label(m->units[pos]) != c || seen[pos]) continue;
            seen[pos] = 1;
            size_t child = pos ^ unit_offset(m->units[pos]);
            if (unit_has_leaf(m->units[pos])) rc = check_value(m, child, err);
            if (!rc) stack[top++] = child;
        }
    }
    free(seen), free(stack);
    return rc;
}

int tok_charsmap_parse(tok_charsmap *m, const uint8_t *blob, size_t len, sp_error *err) {
    memset(m, 0, sizeof *m);
    if (len < 4)
        return sp_fail(err, "precompiled_charsmap: %zu bytes, too short for the trie size", len);
    uint32_t size = (uint32_t)blob[0] | (uint32_t)blob[1] << 8 | (uint32_t)blob[2] << 16 |
                    (uint32_t)blob[3] << 24;
    if (size == 0 || size % 4 || size > len - 4)
        return sp_fail(err,
                       "precompiled_charsmap: trie size %u is not a positive multiple of 4 "
                       "within the %zu bytes that follow it",
                       size, len - 4);
    m->n_units = size / 4;
    m->norm_len = len - 4 - size;
    m->units = malloc(m->n_units * sizeof *m->units);
    m->norm = malloc(m->norm_len + 1);
    if (!m->units || !m->norm) return tok_charsmap_free(m), sp_fail(err, "out of memory");
    for (size_t i = 0; i < m->n_units; i++) {
        const uint8_t *u = blob + 4 + 4 * i;
        m->units[i] =
            (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
    }
    memcpy(m->norm, blob + 4 + size, m->norm_len);
    m->norm[m->norm_len] = '\0';
    m->hash = tok_fnv1a(blob, len);
    if (!utf8_valid((const uint8_t *)m->norm, m->norm_len)) {
        tok_charsmap_free(m);
        return sp_fail(err, "precompiled_charsmap: the replacement strings are not valid UTF-8");
    }
    if (check_trie(m, err)) return tok_charsmap_free(m), -1;
    return 0;
}

void tok_charsmap_free(tok_charsmap *m) {
    if (!m) return;
    free(m->units), free(m->norm);
    if (m->brk) ubrk_close(m->brk);
    memset(m, 0, sizeof *m);
}

int tok_charsmap_lookup(const tok_charsmap *m, const char *s, size_t n, const char **out,
                        size_t *out_len) {
    size_t pos = unit_offset(m->units[0]);
    for (size_t i = 0; i < n && s[i]; i++) {
        uint8_t c = (uint8_t)s[i];
        pos ^= c;
        if (pos >= m->n_units || unit_label(m->units[pos]) != c) return 0;
        uint32_t u = m->units[pos];
        pos ^= unit_offset(u);
        if (unit_has_leaf(u) && pos < m->n_units) { /* checked when parsed */
            uint32_t v = unit_value(m->units[pos]);
            *out = m->norm + v;
            *out_len = strlen(m->norm + v);
            return 1;
        }
    }
    return 0;
}

/* One grapheme s[0, n): its replacement when shorter than 6 bytes and a key prefixes it, else
 * each character's replacement or the character itself. */
static int grapheme(const tok_charsmap *m, const char *s, size_t n, sp__buf *out) {
    const char *r;
    size_t rl;
    if (n < 6 && tok_charsmap_lookup(m, s, n, &r, &rl)) return sp__buf_add(out, r, rl);
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = tok_utf8_next((const uint8_t *)s + i, &cp);
        int rc = tok_charsmap_lookup(m, s + i, l, &r, &rl) ? sp__buf_add(out, r, rl)
                                                           : sp__buf_add(out, s + i, l);
        if (rc) return -1;
        i += l;
    }
    return 0;
}

int tok_charsmap_normalize(tok_charsmap *m, const char *s, size_t n, sp__buf *out, sp_error *err) {
    UErrorCode st = U_ZERO_ERROR;
    if (n > INT32_MAX) return sp_fail(err, "encode: %zu bytes are too many to normalize", n);
    if (!m->brk) m->brk = ubrk_open(UBRK_CHARACTER, "", NULL, 0, &st);
    UText *ut = U_FAILURE(st) ? NULL : utext_openUTF8(NULL, s, (int64_t)n, &st);
    if (ut) ubrk_setUText(m->brk, ut, &st);
    if (U_FAILURE(st)) {
        utext_close(ut);
        return sp_fail(err, "encode: Precompiled normalizer: grapheme breaks: %s", u_errorName(st));
    }
    int rc = 0;
    for (int32_t a = ubrk_first(m->brk), b; rc == 0 && (b = ubrk_next(m->brk)) != UBRK_DONE; a = b)
        rc = grapheme(m, s + a, (size_t)(b - a), out);
    utext_close(ut);
    return rc ? sp_fail(err, "encode: out of memory") : 0;
}
