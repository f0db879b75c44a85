/* Encoding: UTF-8 check, added-token split, GPT-2 pre-tokenization (PCRE2), byte-level BPE. */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

/* GPT-2's pattern, byte for byte as in OpenAI's encoder.py. */
static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* Pieces longer than this are not cached: they are rare and would bloat the arenas. */
#define CACHE_MAX_KEY 64
/* The cache is emptied when it would hold more than half this many entries. */
#define CACHE_MAX_CAP (1u << 20)

int tok_compile_regex(sp_tokenizer *t, sp_error *err) {
    int ec;
    PCRE2_SIZE eo;
    t->re = pcre2_compile((PCRE2_SPTR)GPT2_PATTERN, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                          &ec, &eo, NULL);
    if (!t->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return sp_fail(err, "pre-tokenizer regex: %s at offset %zu", (const char *)msg, (size_t)eo);
    }
    /* JIT matching is several times faster; where JIT is unavailable pcre2_match interprets. */
    (void)pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE);
    t->md = pcre2_match_data_create(1, NULL);
    if (!t->md) return sp_fail(err, "out of memory");
    return 0;
}

void tok_free_encoder(sp_tokenizer *t) {
    pcre2_match_data_free(t->md);
    pcre2_code_free(t->re);
    free(t->s_id), free(t->s_next), free(t->s_prev), free(t->s_merged), free(t->s_heap);
    free(t->s_word);
    free(t->cache), free(t->cache_keys), free(t->cache_ids);
}

/* Offset of the first byte that does not begin a valid UTF-8 sequence (overlong forms,
 * surrogates and code points above U+10FFFF are invalid), or len if all is valid. */
static size_t utf8_invalid_at(const uint8_t *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t cp, min;
        if ((c & 0xE0) == 0xC0)
            n = 2, cp = c & 0x1Fu, min = 0x80;
        else if ((c & 0xF0) == 0xE0)
            n = 3, cp = c & 0x0Fu, min = 0x800;
        else if ((c & 0xF8) == 0xF0)
            n = 4, cp = c & 0x07u, min = 0x10000;
        else
            return i;
        if (len - i < n) return i;
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return i;
            cp = cp << 6 | (s[i + k] & 0x3Fu);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += n;
    }
    return len;
}

static int buf_push(sp_token_buf *out, const int32_t *ids, size_t n) {
    if (tok_reserve(&out->ids, &out->cap, out->n + n, sizeof *out->ids)) return -1;
    memcpy(out->ids + out->n, ids, n * sizeof *ids);
    out->n += n;
    return 0;
}

/* ---- word cache ---- */

static tok_cache_entry *cache_slot(const sp_tokenizer *t, const uint8_t *p, size_t n, uint64_t h) {
    size_t mask = t->cache_cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        tok_cache_entry *e = &t->cache[i];
        if (e->n_ids == 0) return e;
        if (e->hash == h && e->key_len == n && memcmp(t->cache_keys + e->key_off, p, n) == 0)
            return e;
    }
}

/* Makes room for one more entry: doubles the table, or empties it once it is at its cap. */
static int cache_make_room(sp_tokenizer *t) {
    if ((t->cache_used + 1) * 2 <= t->cache_cap) return 0;
    if (t->cache_cap >= CACHE_MAX_CAP) {
        memset(t->cache, 0, t->cache_cap * sizeof *t->cache);
        t->cache_used = t->cache_keys_len = t->cache_ids_len = 0;
        return 0;
    }
    size_t old_cap = t->cache_cap, cap = old_cap ? old_cap * 2 : 4096;
    tok_cache_entry *old = t->cache;
    t->cache = calloc(cap, sizeof *t->cache);
    if (!t->cache) {
        t->cache = old;
        return -1;
    }
    t->cache_cap = cap;
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].n_ids == 0) continue;
        size_t j = old[i].hash & (cap - 1);
        while (t->cache[j].n_ids) j = (j + 1) & (cap - 1);
        t->cache[j] = old[i];
    }
    free(old);
    return 0;
}

/* Remembers piece -> ids; failure to cache (out of memory) only costs speed. */
static void cache_put(sp_tokenizer *t, const uint8_t *p, size_t n, uint64_t h, const int32_t *ids,
                      size_t n_ids) {
    if (cache_make_room(t) ||
        tok_reserve(&t->cache_keys, &t->cache_keys_cap, t->cache_keys_len + n, 1) ||
        tok_reserve(&t->cache_ids, &t->cache_ids_cap, t->cache_ids_len + n_ids,
                    sizeof *t->cache_ids))
        return;
    tok_cache_entry *e = cache_slot(t, p, n, h);
    memcpy(t->cache_keys + t->cache_keys_len, p, n);
    memcpy(t->cache_ids + t->cache_ids_len, ids, n_ids * sizeof *ids);
    *e = (tok_cache_entry){h, (uint32_t)t->cache_keys_len, (uint32_t)n, (uint32_t)t->cache_ids_len,
                           (uint32_t)n_ids};
    t->cache_keys_len += n;
    t->cache_ids_len += n_ids;
    t->cache_used++;
}

/* ---- BPE ----
 * encoder.py repeatedly takes the adjacent pair of lowest merge rank and merges all its
 * occurrences in one left-to-right pass. Here a heap ordered by (rank, position) yields the same
 * result in O(n log n): all candidates of the lowest rank are applied in position order (stale
 * ones, whose symbols have changed since, are skipped) before the new neighbour pairs they create
 * are queued. A merge never recreates its own pair, so one batch per rank equals one pass. */

static void heap_push(tok_cand *h, size_t *n, tok_cand c) {
    size_t i = (*n)++;
    while (i > 0 && h[(i - 1) / 2].key > c.key) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = c;
}

static tok_cand heap_pop(tok_cand *h, size_t *n) {
    tok_cand top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && h[c + 1].key < h[c].key) c++;
        if (h[c].key >= last.key) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

/* Queues the pair starting at symbol i if it has a merge rank. */
static void queue_pair(sp_tokenizer *t, size_t *hn, int32_t i) {
    int32_t j = t->s_next[i], merged;
    if (j < 0) return;
    int32_t rank = tok_pair_rank(t, t->s_id[i], t->s_id[j], &merged);
    if (rank >= 0)
        heap_push(t->s_heap, hn,
                  (tok_cand){(uint64_t)rank << 32 | (uint32_t)i, t->s_id[i], t->s_id[j], merged});
}

static int reserve_scratch(sp_tokenizer *t, size_t n) {
    if (n <= t->s_cap) return 0;
    size_t cap = n > 2 * t->s_cap ? n : 2 * t->s_cap;
    if (cap < 64) cap = 64;
    /* Positions are int32 and the heap holds at most 3n candidates (n, plus 2 per merge). */
    if (cap > INT32_MAX / 4 || tok_resize(&t->s_id, cap, sizeof *t->s_id) ||
        tok_resize(&t->s_next, cap, sizeof *t->s_next) ||
        tok_resize(&t->s_prev, cap, sizeof *t->s_prev) ||
        tok_resize(&t->s_merged, cap, sizeof *t->s_merged) ||
        tok_resize(&t->s_heap, 3 * cap, sizeof *t->s_heap))
        return -1;
    t->s_cap = cap;
    return 0;
}

/* Merges the n bytes of one piece; leaves the surviving symbols linked from s_id[0]. */
static int bpe_merge(sp_tokenizer *t, const uint8_t *p, size_t n) {
    if (reserve_scratch(t, n)) return -1;
    int32_t *id = t->s_id, *next = t->s_next, *prev = t->s_prev;
    for (size_t i = 0; i < n; i++) {
        id[i] = t->byte_id[p[i]];
        next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
        prev[i] = (int32_t)i - 1;
    }
    size_t hn = 0;
    for (size_t i = 0; i + 1 < n; i++) queue_pair(t, &hn, (int32_t)i);
    while (hn) {
        uint64_t rank = t->s_heap[0].key >> 32;
        size_t n_merged = 0;
        while (hn && t->s_heap[0].key >> 32 == rank) {
            tok_cand c = heap_pop(t->s_heap, &hn);
            int32_t i = (int32_t)(uint32_t)c.key, j = next[i];
            if (id[i] != c.left || j < 0 || id[j] != c.right) continue; /* stale */
            id[i] = c.merged;
            id[j] = -1;
            next[i] = next[j];
            if (next[j] >= 0) prev[next[j]] = i;
            t->s_merged[n_merged++] = i;
        }
        for (size_t k = 0; k < n_merged; k++) {
            int32_t i = t->s_merged[k];
            if (prev[i] >= 0) queue_pair(t, &hn, prev[i]);
            queue_pair(t, &hn, i);
        }
    }
    return 0;
}

/* With ignore_merges a piece that is itself a vocabulary token is that token. */
static int32_t whole_piece_id(sp_tokenizer *t, const uint8_t *p, size_t n) {
    if (tok_reserve(&t->s_word, &t->s_word_cap, 2 * n, 1)) return -1;
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(t->s_word + len, t->byte_chr[p[i]], t->byte_chr_len[p[i]]);
        len += t->byte_chr_len[p[i]];
    }
    int32_t id = tok_lookup(t, t->s_word, len);
    return id >= 0 && t->kind[id] == TOK_NORMAL ? id : -1;
}

static int encode_piece(sp_tokenizer *t, const uint8_t *p, size_t n, sp_token_buf *out) {
    if (n == 1) return buf_push(out, &t->byte_id[p[0]], 1);
    uint64_t h = 0;
    if (n <= CACHE_MAX_KEY && t->cache_cap) {
        h = tok_fnv1a(p, n);
        tok_cache_entry *e = cache_slot(t, p, n, h);
        if (e->n_ids) return buf_push(out, t->cache_ids + e->ids_off, e->n_ids);
    }
    if (t->ignore_merges) {
        int32_t id = whole_piece_id(t, p, n);
        if (id >= 0) return buf_push(out, &id, 1);
    }
    if (bpe_merge(t, p, n)) return -1;
    size_t start = out->n;
    for (int32_t i = 0; i >= 0; i = t->s_next[i])
        if (buf_push(out, &t->s_id[i], 1)) return -1;
    if (n <= CACHE_MAX_KEY) {
        if (!h) h = tok_fnv1a(p, n);
        cache_put(t, p, n, h, out->ids + start, out->n - start);
    }
    return 0;
}

/* Pre-tokenizes one span (no added tokens inside) and encodes each piece. */
static int encode_span(sp_tokenizer *t, const char *s, size_t n, sp_token_buf *out, sp_error *err) {
    if (!t->cache_cap && cache_make_room(t)) return sp_fail(err, "encode: out of memory");
    const uint8_t *u = (const uint8_t *)s;
    for (size_t off = 0; off < n;) {
        int rc = pcre2_match(t->re, u, n, off, PCRE2_NO_UTF_CHECK, t->md, NULL);
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return sp_fail(err, "encode: pre-tokenizer failed at byte %zu: %s", off,
                           (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(t->md);
        /* Every character matches some alternative, so matches are contiguous and non-empty. */
        if (ov[0] != off || ov[1] <= off)
            return sp_fail(err, "encode: pre-tokenizer skipped text at byte %zu", off);
        if (encode_piece(t, u + off, ov[1] - off, out))
            return sp_fail(err, "encode: out of memory");
        off = ov[1];
    }
    return 0;
}

/* ---- added tokens ---- */

typedef struct added_match {
    int32_t id;
    const char *s;
    size_t len, next; /* next occurrence at or after the cursor; SIZE_MAX when none */
} added_match;

static size_t find_from(const char *text, size_t len, size_t from, const added_match *m) {
    const char *hit = memmem(text + from, len - from, m->s, m->len);
    return hit ? (size_t)(hit - text) : SIZE_MAX;
}

/* Splits the text at the leftmost (then longest) occurrence of a recognised added token,
 * encoding the text between them as ordinary spans. */
static int encode_with_added(sp_tokenizer *t, const char *text, size_t len, unsigned flags,
                             sp_token_buf *out, sp_error *err) {
    added_match *m = malloc((t->n_added ? t->n_added : 1) * sizeof *m);
    if (!m) return sp_fail(err, "encode: out of memory");
    size_t nm = 0;
    for (size_t k = 0; k < t->n_added; k++) {
        int32_t id = t->added[k];
        if (t->kind[id] == TOK_SPECIAL && !(flags & SP_TOK_ALLOW_SPECIAL)) continue;
        m[nm] = (added_match){id, t->strs + t->str_off[id], t->str_len[id], 0};
        m[nm].next = find_from(text, len, 0, &m[nm]);
        nm++;
    }
    int rc = 0;
    for (size_t at = 0; rc == 0;) {
        added_match *best = NULL;
        for (size_t k = 0; k < nm; k++) {
            if (m[k].next == SIZE_MAX) continue;
            if (!best || m[k].next < best->next ||
                (m[k].next == best->next && m[k].len > best->len))
                best = &m[k];
        }
        if (!best) {
            rc = encode_span(t, text + at, len - at, out, err);
            break;
        }
        rc = encode_span(t, text + at, best->next - at, out, err);
        if (rc == 0 && buf_push(out, &best->id, 1)) rc = sp_fail(err, "encode: out of memory");
        at = best->next + best->len;
        for (size_t k = 0; k < nm; k++)
            if (m[k].next != SIZE_MAX && m[k].next < at)
                m[k].next = find_from(text, len, at, &m[k]);
    }
    free(m);
    return rc;
}

int sp_tokenizer_encode_append(sp_tokenizer *t, const char *text, size_t len, unsigned flags,
                               sp_token_buf *out, sp_error *err) {
    if (!text && len) return sp_fail(err, "encode: NULL text");
    if (!text) text = "";
    size_t bad = utf8_invalid_at((const uint8_t *)text, len);
    if (bad < len)
        return sp_fail(err, "encode: invalid UTF-8 at byte offset %zu (byte 0x%02x)", bad,
                       (unsigned)(uint8_t)text[bad]);
    size_t n0 = out->n;
    int rc = t->n_added ? encode_with_added(t, text, len, flags, out, err)
                        : encode_span(t, text, len, out, err);
    if (rc) out->n = n0;
    return rc;
}

int sp_tokenizer_encode(sp_tokenizer *t, const char *text, size_t len, unsigned flags,
                        int32_t **ids, size_t *n, sp_error *err) {
    sp_token_buf b = {0};
    if (sp_tokenizer_encode_append(t, text, len, flags, &b, err)) {
        sp_token_buf_free(&b);
        return -1;
    }
    if (!b.ids && !(b.ids = malloc(sizeof *b.ids))) return sp_fail(err, "encode: out of memory");
    *ids = b.ids;
    *n = b.n;
    return 0;
}
