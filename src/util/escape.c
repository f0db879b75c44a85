#include "util/escape.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Decodes the well-formed UTF-8 sequence at s (avail bytes) into *cp; returns its length, or 0
 * when s[0] does not start one (Unicode Table 3-7: no overlongs, surrogates or > U+10FFFF). */
static size_t utf8_decode(const unsigned char *s, size_t avail, uint32_t *cp) {
    unsigned c = s[0];
    size_t n;
    unsigned lo = 0x80, hi = 0xBF;
    if (c < 0x80) return *cp = c, 1;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2, *cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF)
        n = 3, *cp = c & 0x0F, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4)
        n = 4, *cp = c & 0x07, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else
        return 0;
    if (avail < n || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        *cp = (*cp << 6) | (s[i] & 0x3F);
    }
    return n;
}

/* Characters that are shown as \u{NNNN}: C1 controls and the invisible ones that reorder text
 * (bidirectional marks, embeddings, overrides and isolates) or break lines. */
static int is_hidden(uint32_t cp) {
    return (cp >= 0x80 && cp <= 0x9F) || cp == 0x061C || cp == 0x200E || cp == 0x200F ||
           (cp >= 0x2028 && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069);
}

/* The escape of one ASCII control byte or undecodable byte c into out (>= 5 bytes). */
static void escape_byte(unsigned c, char *out) {
    const char *named = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : NULL;
    if (named)
        snprintf(out, 5, "%s", named);
    else
        snprintf(out, 5, "\\x%02x", c & 0xFF);
}

/* The display form of the character at u[0] (avail bytes) into piece (>= 16 bytes); returns
 * its length and sets *n to the bytes it consumed. */
static size_t escape_one(const unsigned char *u, size_t avail, char *piece, size_t *n) {
    uint32_t cp = 0;
    *n = utf8_decode(u, avail, &cp);
    if (*n == 0 || cp < 0x20 || cp == 0x7F) {
        *n = 1;
        escape_byte(u[0], piece);
        return strlen(piece);
    }
    if (is_hidden(cp)) return (size_t)snprintf(piece, 16, "\\u{%04x}", (unsigned)cp);
    memcpy(piece, u, *n);
    return *n;
}

const char *sp__escape_n(const char *s, size_t len, char *buf, size_t cap) {
    const unsigned char *u = (const unsigned char *)s;
    char piece[16];
    size_t total = 0, n;
    for (size_t i = 0; i < len; i += n) total += escape_one(u + i, len - i, piece, &n);
    /* When it does not all fit, stop where "..." still fits after the last whole piece. */
    size_t limit = total + 1 <= cap ? cap : cap - 3, o = 0;
    for (size_t i = 0; i < len; i += n) {
        size_t plen = escape_one(u + i, len - i, piece, &n);
        if (o + plen + 1 > limit) break;
        memcpy(buf + o, piece, plen);
        o += plen;
    }
    snprintf(buf + o, cap - o, "%s", total + 1 <= cap ? "" : "...");
    return buf;
}

const char *sp__escape(const char *s, char *buf, size_t cap) {
    return sp__escape_n(s ? s : "", s ? strlen(s) : 0, buf, cap);
}
