/* Vocabulary and merge tables: building them while loading, lookups, the vocabulary hash. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

/* ---- GPT-2's bytes_to_unicode, computed by its rule rather than pasted ----
 * Printable Latin-1 bytes ('!'..'~', 0xA1..0xAC, 0xAE..0xFF) stand for themselves; the other 68
 * bytes, in increasing order, take the code points 256, 257, ... so no token holds a control
 * character or a space. */
static int byte_is_printable(unsigned b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t tok_byte_to_cp(uint8_t b) {
    if (byte_is_printable(b)) return b;
    uint32_t n = 0;
    for (unsigned c = 0; c < b; c++) n += !byte_is_printable(c);
    return 256 + n;
}

int tok_cp_to_byte(uint32_t cp) {
    if (cp < 256) return byte_is_printable(cp) ? (int)cp : -1;
    uint32_t n = 256;
    for (unsigned b = 0; b < 256; b++) {
        if (byte_is_printable(b)) continue;
        if (n++ == cp) return (int)b;
    }
    return -1;
}

size_t tok_byte_char(uint8_t b, char out[2]) {
    uint32_t cp = tok_byte_to_cp(b); /* < 0x800, so one or two UTF-8 bytes */
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

uint64_t tok_fnv1a(const void *data, size_t len) {
    const uint8_t *p = data;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

sp_tokenizer *tok_new(void) {
    sp_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->eos = t->eos_cfg = t->bos = t->unk = -1;
    for (int b = 0; b < 256; b++) t->byte_id[b] = t->fallback_id[b] = -1;
    return t;
}

/* ---- token string -> id ---- */

static const char *tok_str(const sp_tokenizer *t, int32_t id) {
    return t->strs + t->str_off[id];
}

int32_t tok_lookup(const sp_tokenizer *t, const char *s, size_t len) {
    if (!t->smap_cap) return -1;
    size_t mask = t->smap_cap - 1;
    for (size_t i = tok_fnv1a(s, len) & mask;; i = (i + 1) & mask) {
        int32_t id = t->smap[i];
        if (id < 0) return -1;
        if (t->str_len[id] == len && memcmp(tok_str(t, id), s, len) == 0) return id;
    }
}

static void smap_put(sp_tokenizer *t, int32_t id) {
    size_t mask = t->smap_cap - 1;
    size_t i = tok_fnv1a(tok_str(t, id), t->str_len[id]) & mask;
    while (t->smap[i] >= 0) i = (i + 1) & mask;
    t->smap[i] = id;
}

/* Keeps the load factor at most 1/2 so probes stay short. */
static int smap_grow(sp_tokenizer *t) {
    if ((t->n_tokens + 1) * 2 <= t->smap_cap) return 0;
    size_t cap = t->smap_cap ? t->smap_cap * 2 : 1024;
    int32_t *m = malloc(cap * sizeof *m);
    if (!m) return -1;
    memset(m, 0xFF, cap * sizeof *m);
    free(t->smap);
    t->smap = m;
    t->smap_cap = cap;
    for (int32_t id = 0; id < t->n_ids; id++)
        if (t->kind[id] != TOK_ABSENT) smap_put(t, id);
    return 0;
}

/* Per-id arrays grow together, at least doubling so loading stays linear. */
static int grow_ids(sp_tokenizer *t, size_t need) {
    if (need <= t->ids_cap) return 0;
    size_t cap = sp__vec_cap(t->ids_cap, need, 1024, 1);
    if (cap == 0 || sp__vec_resize(&t->str_off, cap, sizeof *t->str_off) ||
        sp__vec_resize(&t->str_len, cap, sizeof *t->str_len) ||
        sp__vec_resize(&t->raw_off, cap, sizeof *t->raw_off) ||
        sp__vec_resize(&t->raw_len, cap, sizeof *t->raw_len) || sp__vec_resize(&t->kind, cap, 1) ||
        sp__vec_resize(&t->in_model, cap, 1) || sp__vec_resize(&t->lstrip, cap, 1) ||
        sp__vec_resize(&t->rstrip, cap, 1) || sp__vec_resize(&t->normed, cap, 1))
        return -1;
    memset(t->kind + t->ids_cap, TOK_ABSENT, cap - t->ids_cap);
    memset(t->in_model + t->ids_cap, 0, cap - t->ids_cap);
    memset(t->lstrip + t->ids_cap, 0, cap - t->ids_cap);
    memset(t->rstrip + t->ids_cap, 0, cap - t->ids_cap);
    memset(t->normed + t->ids_cap, 0, cap - t->ids_cap);
    t->ids_cap = cap;
    return 0;
}

/* Tokens are quoted in messages up to this many bytes. */
#define QUOTE_MAX 60

int tok_add_token(sp_tokenizer *t, const char *s, size_t len, int64_t id, int kind, sp_error *err) {
    if (id < 0 || id >= TOK_MAX_ID)
        return sp_fail(err, "token '%.*s': id %lld outside [0, %d)",
                       (int)(len < QUOTE_MAX ? len : QUOTE_MAX), s, (long long)id, TOK_MAX_ID);
    if (len == 0) return sp_fail(err, "empty token (id %lld)", (long long)id);
    if (len > 65536)
        return sp_fail(err, "token of %zu bytes (id %lld) is too long", len, (long long)id);
    int32_t have = tok_lookup(t, s, len);
    if (have == id) { /* the same token listed again, e.g. an added token also in the vocab */
        if (kind > t->kind[id]) t->kind[id] = (uint8_t)kind;
        return 0;
    }
    int q = (int)(len < QUOTE_MAX ? len : QUOTE_MAX);
    if (have >= 0)
        return sp_fail(err, "token '%.*s' has two ids, %d and %lld", q, s, have, (long long)id);
    if (id < t->n_ids && t->kind[id] != TOK_ABSENT)
        return sp_fail(err, "id %lld is given to both '%.*s' and '%.*s'", (long long)id, QUOTE_MAX,
                       tok_str(t, (int32_t)id), q, s);
    if (grow_ids(t, (size_t)id + 1) || smap_grow(t) ||
        sp__vec_reserve(&t->strs, &t->strs_cap, t->strs_len + len + 1, 1) ||
        t->strs_len + len + 1 > UINT32_MAX)
        return sp_fail(err, "out of memory storing the vocabulary");
    memcpy(t->strs + t->strs_len, s, len);
    t->strs[t->strs_len + len] = '\0';
    t->str_off[id] = (uint32_t)t->strs_len;
    t->str_len[id] = (uint32_t)len;
    t->strs_len += len + 1;
    t->kind[id] = (uint8_t)kind;
    t->in_model[id] = kind == TOK_NORMAL; /* only model.vocab adds normal tokens */
    if (id >= t->n_ids) t->n_ids = (int32_t)id + 1;
    t->n_tokens++;
    smap_put(t, (int32_t)id);
    return 0;
}

/* Decodes a byte-level token (UTF-8 of bytes_to_unicode characters) into out; returns the
 * number of bytes, or -1 if some character is not one of the 256. */
static long decode_byte_level(const char *s, size_t len, uint8_t *out) {
    const uint8_t *p = (const uint8_t *)s;
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        if (p[i] < 0x80) {
            cp = p[i++];
        } else if ((p[i] & 0xE0) == 0xC0 && i + 1 < len && (p[i + 1] & 0xC0) == 0x80) {
            cp = (uint32_t)(p[i] & 0x1F) << 6 | (p[i + 1] & 0x3F);
            i += 2;
        } else {
            return -1; /* every byte-level character is below U+0800 */
        }
        int b = tok_cp_to_byte(cp);
        if (b < 0) return -1;
        out[n++] = (uint8_t)b;
    }
    return (long)n;
}

/* "<0xNN>" (upper-case hex, as SentencePiece writes them) -> the byte, or -1. */
static int fallback_byte(const char *s, size_t len) {
    static const char hex[] = "0123456789ABCDEF";
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    const char *hi = memchr(hex, s[3], 16), *lo = memchr(hex, s[4], 16);
    return hi && lo && s[3] && s[4] ? (int)((hi - hex) << 4 | (lo - hex)) : -1;
}

/* Decoded bytes of a token of a character-level BPE: the decoder's Replace (e.g. U+2581 ->
 * space) and ByteFallback (<0xNN> -> that byte). Returns the length written to out. */
static size_t decode_char_level(const sp_tokenizer *t, const char *s, size_t len, uint8_t *out) {
    int b = t->dec_byte_fallback ? fallback_byte(s, len) : -1;
    if (b >= 0) {
        out[0] = (uint8_t)b;
        return 1;
    }
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        if (t->dec_from_len && len - i >= t->dec_from_len &&
            memcmp(s + i, t->dec_from, t->dec_from_len) == 0) {
            memcpy(out + n, t->dec_to, t->dec_to_len);
            n += t->dec_to_len, i += t->dec_from_len;
        } else {
            out[n++] = (uint8_t)s[i++];
        }
    }
    return n;
}

/* Byte-level vocabularies must hold all 256 byte tokens; their decoded bytes follow. */
static int byte_tokens(sp_tokenizer *t, sp_error *err) {
    for (int b = 0; b < 256; b++) {
        char c[2] = {0, 0};
        size_t n = tok_byte_char((uint8_t)b, c);
        memcpy(t->byte_chr[b], c, 2);
        t->byte_chr_len[b] = (uint8_t)n;
        t->byte_id[b] = tok_lookup(t, c, n);
        if (t->byte_id[b] < 0)
            return sp_fail(err, "the vocabulary lacks the byte-level token '%.*s' for byte 0x%02x",
                           (int)n, c, b);
    }
    return 0;
}

/* The raw (decoded) bytes of every token, into t->raw. */
static int decode_vocab(sp_tokenizer *t, sp_error *err) {
    /* Decoded bytes are never longer than the vocabulary form times the replacement growth. */
    size_t grow = t->dec_from_len && t->dec_to_len > t->dec_from_len ? t->dec_to_len : 1;
    /* (WordPiece's decoder puts a space before a token.) */
    t->raw = malloc(grow * t->strs_len + (size_t)t->n_ids + 1);
    if (!t->raw) return sp_fail(err, "out of memory decoding the vocabulary");
    size_t at = 0;
    for (int32_t id = 0; id < t->n_ids; id++) {
        if (t->kind[id] == TOK_ABSENT) continue;
        const char *s = tok_str(t, id);
        long n = t->str_len[id];
        if (t->dec_wordpiece) {
            n = (long)tok_wordpiece_decode(t, s, t->str_len[id], 0, (char *)t->raw + at);
        } else if (t->mode == TOK_MODE_CHAR) {
            n = (long)decode_char_level(t, s, t->str_len[id], t->raw + at);
        } else if (t->kind[id] == TOK_NORMAL) {
            n = decode_byte_level(s, t->str_len[id], t->raw + at);
            if (n < 0)
                return sp_fail(err,
                               "token '%.*s' (id %d) is not byte-level: it has characters outside "
                               "GPT-2's byte alphabet",
                               QUOTE_MAX, s, id);
        } else {
            memcpy(t->raw + at, s, (size_t)n); /* added tokens are plain text */
        }
        t->raw_off[id] = (uint32_t)at;
        t->raw_len[id] = (uint32_t)n;
        at += (size_t)n;
    }
    return 0;
}

int tok_finish_vocab(sp_tokenizer *t, sp_error *err) {
    if (t->mode == TOK_MODE_BYTE && byte_tokens(t, err)) return -1;
    if (t->mode == TOK_MODE_CHAR && t->byte_fallback) {
        for (int b = 0; b < 256; b++) {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", b);
            int32_t id = tok_lookup(t, name, 6);
            t->fallback_id[b] = id >= 0 && t->in_model[id] ? id : -1;
        }
    }
    if (decode_vocab(t, err)) return -1;
    t->eos = tok_lookup(t, "<|endoftext|>", 13);
    return 0;
}

/* ---- (left, right) -> rank ---- */

static size_t pair_slot(uint64_t key, size_t mask) {
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 20) & mask;
}

int32_t tok_pair_rank(const sp_tokenizer *t, int32_t left, int32_t right, int32_t *merged) {
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    size_t mask = t->pmap_cap - 1;
    if (!t->pmap_cap) return -1;
    for (size_t i = pair_slot(key, mask);; i = (i + 1) & mask) {
        if (t->pkeys[i] == key) {
            *merged = t->pmerged[i];
            return t->prank[i];
        }
        if (t->pkeys[i] == UINT64_MAX) return -1;
    }
}

static void pmap_put(sp_tokenizer *t, uint64_t key, int32_t rank, int32_t merged) {
    size_t mask = t->pmap_cap - 1, i = pair_slot(key, mask);
    while (t->pkeys[i] != UINT64_MAX) i = (i + 1) & mask;
    t->pkeys[i] = key;
    t->prank[i] = rank;
    t->pmerged[i] = merged;
}

static int pmap_grow(sp_tokenizer *t) {
    if ((t->n_merges + 1) * 2 <= t->pmap_cap) return 0;
    size_t old_cap = t->pmap_cap, cap = old_cap ? old_cap * 2 : 1024;
    uint64_t *k = malloc(cap * sizeof *k), *ok = t->pkeys;
    int32_t *r = malloc(cap * sizeof *r), *m = malloc(cap * sizeof *m), *orank = t->prank,
            *omerged = t->pmerged;
    if (!k || !r || !m) {
        free(k), free(r), free(m);
        return -1;
    }
    memset(k, 0xFF, cap * sizeof *k);
    t->pkeys = k, t->prank = r, t->pmerged = m, t->pmap_cap = cap;
    for (size_t i = 0; i < old_cap; i++)
        if (ok[i] != UINT64_MAX) pmap_put(t, ok[i], orank[i], omerged[i]);
    free(ok), free(orank), free(omerged);
    return 0;
}

int tok_add_merge(sp_tokenizer *t, const char *a, size_t alen, const char *b, size_t blen,
                  sp_error *err) {
    int qa = (int)(alen < QUOTE_MAX ? alen : QUOTE_MAX),
        qb = (int)(blen < QUOTE_MAX ? blen : QUOTE_MAX);
    int32_t left = tok_lookup(t, a, alen), right = tok_lookup(t, b, blen);
    if (left < 0)
        return sp_fail(err, "merge '%.*s %.*s': '%.*s' is not in the vocabulary", qa, a, qb, b, qa,
                       a);
    if (right < 0)
        return sp_fail(err, "merge '%.*s %.*s': '%.*s' is not in the vocabulary", qa, a, qb, b, qb,
                       b);
    if (sp__vec_reserve(&t->s_word, &t->s_word_cap, alen + blen, 1))
        return sp_fail(err, "out of memory reading merges");
    memcpy(t->s_word, a, alen);
    memcpy(t->s_word + alen, b, blen);
    int32_t merged = tok_lookup(t, t->s_word, alen + blen);
    if (merged < 0)
        return sp_fail(err, "merge '%.*s %.*s': the result '%.*s%.*s' is not in the vocabulary", qa,
                       a, qb, b, qa, a, qb, b);
    int32_t dummy;
    int32_t rank = tok_pair_rank(t, left, right, &dummy);
    if (rank >= 0)
        return sp_fail(err, "merge '%.*s %.*s' repeats the merge of rank %d", qa, a, qb, b, rank);
    if (t->n_merges >= INT32_MAX - 1 || pmap_grow(t) ||
        sp__vec_reserve(&t->merges, &t->merges_cap, t->n_merges + 1, sizeof *t->merges))
        return sp_fail(err, "out of memory reading merges");
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    t->merges[t->n_merges] = key;
    pmap_put(t, key, (int32_t)t->n_merges, merged);
    t->n_merges++;
    return 0;
}
