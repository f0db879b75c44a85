/* Encoding: UTF-8 check, added-token split, normalizers, pre-tokenizer steps (PCRE2), BPE over
 * GPT-2's byte alphabet or over characters with byte fallback. */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

/* Pieces longer than this are not cached: they are rare and would bloat the arenas. */
#define CACHE_MAX_KEY 64
/* The cache is emptied when it would hold more than half this many entries. */
#define CACHE_MAX_CAP (1u << 20)

/* vocab.json / encoder.json formats (and nothing else) get GPT-2's fixed pipeline: one
 * ByteLevel step with its regex and no prefix space. */
int tok_init_encoder(sp_tokenizer *t, sp_error *err) {
    if (!t->pipeline) {
        static const char gpt2[] = "{\"type\": \"ByteLevel\", \"add_prefix_space\": false}";
        json_t *pre = json_loads(gpt2, 0, NULL);
        json_t *root = json_pack("{s:o}", "pre_tokenizer", pre);
        int rc = root ? tok_parse_pipeline(t, root, "(GPT-2 defaults)", err)
                      : sp_fail(err, "out of memory");
        json_decref(root);
        if (rc) return -1;
    }
    t->md = pcre2_match_data_create(1, NULL);
    if (!t->md) return sp_fail(err, "out of memory");
    return 0;
}

void tok_free_encoder(sp_tokenizer *t) {
    pcre2_match_data_free(t->md);
    tok_free_pipeline(t);
    free(t->s_id), free(t->s_next), free(t->s_prev), free(t->s_merged), free(t->s_heap);
    free(t->s_word), free(t->score), free(t->u_node), free(t->sorted);
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
        sp__vec_reserve(&t->cache_keys, &t->cache_keys_cap, t->cache_keys_len + n, 1) ||
        sp__vec_reserve(&t->cache_ids, &t->cache_ids_cap, t->cache_ids_len + n_ids,
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
    size_t cap = sp__vec_cap(t->s_cap, n, 64, 1);
    /* Positions are int32 and the heap holds at most 3n candidates (n, plus 2 per merge). */
    if (cap == 0 || cap > INT32_MAX / 4 || sp__vec_resize(&t->s_id, cap, sizeof *t->s_id) ||
        sp__vec_resize(&t->s_next, cap, sizeof *t->s_next) ||
        sp__vec_resize(&t->s_prev, cap, sizeof *t->s_prev) ||
        sp__vec_resize(&t->s_merged, cap, sizeof *t->s_merged) ||
        sp__vec_resize(&t->s_heap, 3 * cap, sizeof *t->s_heap))
        return -1;
    t->s_cap = cap;
    return 0;
}

/* Runs BPE over the n symbols in s_id; leaves the survivors linked from s_id[0]. */
static void bpe_run(sp_tokenizer *t, size_t n) {
    int32_t *id = t->s_id, *next = t->s_next, *prev = t->s_prev;
    for (size_t i = 0; i < n; i++) {
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
}

size_t tok_utf8_next(const uint8_t *s, uint32_t *cp) {
    if (s[0] < 0x80) return *cp = s[0], 1;
    if ((s[0] & 0xE0) == 0xC0) return *cp = (uint32_t)(s[0] & 0x1F) << 6 | (s[1] & 0x3F), 2;
    if ((s[0] & 0xF0) == 0xE0)
        return *cp = (uint32_t)(s[0] & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (s[2] & 0x3F),
               3;
    *cp = (uint32_t)(s[0] & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 |
          (uint32_t)(s[2] & 0x3F) << 6 | (s[3] & 0x3F);
    return 4;
}

int32_t tok_model_lookup(const sp_tokenizer *t, const char *s, size_t n) {
    int32_t id = tok_lookup(t, s, n);
    return id >= 0 && t->in_model[id] ? id : -1;
}

/* Initial symbols of a character-level piece, as Hugging Face's BPE makes them: each
 * character's token, else its <0xNN> byte tokens (byte_fallback), else unk_token (one for a
 * run of unknown characters with fuse_unk). Without either an unknown character is an error
 * (Hugging Face would drop it silently). */
static int char_symbols(sp_tokenizer *t, const uint8_t *p, size_t n, size_t *n_sym, sp_error *err) {
    size_t k = 0;
    int prev_unk = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = tok_utf8_next(p + i, &cp), b = 0;
        int32_t id = tok_model_lookup(t, (const char *)p + i, l);
        if (id >= 0) {
            t->s_id[k++] = id, prev_unk = 0;
        } else if (t->byte_fallback) {
            while (b < l && t->fallback_id[p[i + b]] >= 0) b++;
        }
        if (id < 0 && b == l && l) {
            for (b = 0; b < l; b++) t->s_id[k++] = t->fallback_id[p[i + b]];
            prev_unk = 0;
        } else if (id < 0 && t->unk >= 0) {
            if (!(t->fuse_unk && prev_unk)) t->s_id[k++] = t->unk;
            prev_unk = 1;
        } else if (id < 0) {
            return sp_fail(err,
                           "encode: character U+%04X is not in the vocabulary, and the "
                           "tokenizer has neither byte_fallback nor an unk_token",
                           cp);
        }
        i += l;
    }
    *n_sym = k;
    return 0;
}

/* With ignore_merges a piece that is itself a vocabulary token is that token. */
static int32_t whole_piece_id(sp_tokenizer *t, const uint8_t *p, size_t n) {
    if (t->mode == TOK_MODE_CHAR) return tok_model_lookup(t, (const char *)p, n);
    if (sp__vec_reserve(&t->s_word, &t->s_word_cap, 2 * n, 1)) return -1;
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(t->s_word + len, t->byte_chr[p[i]], t->byte_chr_len[p[i]]);
        len += t->byte_chr_len[p[i]];
    }
    return tok_model_lookup(t, t->s_word, len);
}

/* BPE of one piece, appended to out. */
static int bpe_piece(sp_tokenizer *t, const uint8_t *p, size_t n, sp_token_buf *out,
                     sp_error *err) {
    if (reserve_scratch(t, n)) return sp_fail(err, "encode: out of memory");
    size_t n_sym = n;
    if (t->mode == TOK_MODE_CHAR) {
        if (char_symbols(t, p, n, &n_sym, err)) return -1;
    } else {
        for (size_t i = 0; i < n; i++) t->s_id[i] = t->byte_id[p[i]];
    }
    if (n_sym == 0) return 0;
    bpe_run(t, n_sym);
    for (int32_t i = 0; i >= 0; i = t->s_next[i])
        if (sp_token_buf_append(out, &t->s_id[i], 1)) return sp_fail(err, "encode: out of memory");
    return 0;
}

static int encode_piece(sp_tokenizer *t, const uint8_t *p, size_t n, sp_token_buf *out,
                        sp_error *err) {
    if (n == 1 && t->mode == TOK_MODE_BYTE) {
        if (sp_token_buf_append(out, &t->byte_id[p[0]], 1))
            return sp_fail(err, "encode: out of memory");
        return 0;
    }
    uint64_t h = 0;
    if (n <= CACHE_MAX_KEY && t->cache_cap) {
        h = tok_fnv1a(p, n);
        tok_cache_entry *e = cache_slot(t, p, n, h);
        if (e->n_ids) {
            if (sp_token_buf_append(out, t->cache_ids + e->ids_off, e->n_ids))
                return sp_fail(err, "encode: out of memory");
            return 0;
        }
    }
    size_t start = out->n;
    int32_t id = t->ignore_merges ? whole_piece_id(t, p, n) : -1;
    if (id >= 0) {
        if (sp_token_buf_append(out, &id, 1)) return sp_fail(err, "encode: out of memory");
    } else if (t->model == TOK_MODEL_UNIGRAM     ? tok_unigram_piece(t, p, n, out, err)
               : t->model == TOK_MODEL_WORDPIECE ? tok_wordpiece_piece(t, p, n, out, err)
                                                 : bpe_piece(t, p, n, out, err)) {
        return -1;
    }
    if (n <= CACHE_MAX_KEY && out->n > start) {
        if (!h) h = tok_fnv1a(p, n);
        cache_put(t, p, n, h, out->ids + start, out->n - start);
    }
    return 0;
}

/* ---- pre-tokenizer steps ----
 * Each step cuts every piece of the previous step; pieces are handed straight to the next step
 * (recursively, one scratch level per step), so no list of all pieces is ever built. */

static int push_seg(tok_level *L, size_t *ns, size_t a, size_t b, int match) {
    if (sp__vec_reserve(&L->segs, &L->segs_cap, *ns + 1, sizeof *L->segs)) return -1;
    L->segs[(*ns)++] = (tok_seg){a, b, match};
    return 0;
}

/* Cuts s[0, n) into matches of re and the gaps between them (Hugging Face's find_matches;
 * empty matches are skipped). */
static int find_segs(sp_tokenizer *t, const tok_pre *p, tok_level *L, const char *s, size_t n,
                     size_t *ns, sp_error *err) {
    size_t at = 0, off = 0;
    *ns = 0;
    while (off < n) {
        int rc = pcre2_match(p->re, (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK, t->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return sp_fail(err, "encode: pre-tokenizer regex failed at byte %zu: %s", off,
                           (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(t->md);
        size_t a = ov[0], b = ov[1];
        if (b == a) { /* step over one character */
            for (off = a + 1; off < n && ((uint8_t)s[off] & 0xC0) == 0x80;) off++;
            continue;
        }
        if ((a > at && push_seg(L, ns, at, a, 0)) || push_seg(L, ns, a, b, 1))
            return sp_fail(err, "encode: out of memory");
        at = off = b;
    }
    if (at < n && push_seg(L, ns, at, n, 0)) return sp_fail(err, "encode: out of memory");
    if (p->invert)
        for (size_t i = 0; i < *ns; i++) L->segs[i].match = !L->segs[i].match;
    return 0;
}

/* Applies a SplitDelimiterBehavior to segs in place (the folds of Hugging Face's
 * NormalizedString::split); the pieces are segs[*first, *first + return value). */
static size_t apply_behavior(tok_seg *g, size_t n, int behavior, size_t *first) {
    size_t w = 0;
    int prev = 0;
    *first = 0;
    for (size_t r = 0; behavior != SPLIT_MERGED_NEXT && r < n; r++) {
        int m = g[r].match;
        if (behavior == SPLIT_REMOVED && m) continue;
        int merge = behavior == SPLIT_MERGED_PREV  ? m && !prev
                    : behavior == SPLIT_CONTIGUOUS ? m == prev
                                                   : 0;
        if (merge && w)
            g[w - 1].end = g[r].end;
        else
            g[w++] = g[r];
        prev = m;
    }
    if (behavior != SPLIT_MERGED_NEXT) return w;
    w = n; /* MergedWithNext folds from the right */
    for (size_t r = n; r-- > 0;) {
        int m = g[r].match;
        if (m && !prev && w < n)
            g[w].start = g[r].start;
        else
            g[--w] = g[r];
        prev = m;
    }
    *first = w;
    return n - w;
}

/* Text-changing steps write the changed piece into their level's buffer. */
static int prefix_piece(tok_level *L, const char *pre, size_t plen, const char **s, size_t *n) {
    if (sp__vec_reserve(&L->buf, &L->buf_cap, plen + *n, 1)) return -1;
    memmove(L->buf + plen, *s, *n);
    memcpy(L->buf, pre, plen);
    *s = L->buf, *n += plen;
    return 0;
}

/* Metaspace: spaces become the replacement; it is prepended per prepend_scheme. */
static int metaspace_piece(const tok_pre *p, tok_level *L, int at_start, const char **s,
                           size_t *n) {
    size_t spaces = 0, len = 0;
    for (size_t i = 0; i < *n; i++) spaces += (*s)[i] == ' ';
    if (sp__vec_reserve(&L->buf, &L->buf_cap, *n + (spaces + 1) * p->repl_len, 1)) return -1;
    for (size_t i = 0; i < *n; i++) {
        if ((*s)[i] == ' ')
            memcpy(L->buf + len, p->repl, p->repl_len), len += p->repl_len;
        else
            L->buf[len++] = (*s)[i];
    }
    int starts = len >= p->repl_len && memcmp(L->buf, p->repl, p->repl_len) == 0;
    if (!starts &&
        (p->prepend_scheme == PREPEND_ALWAYS || (p->prepend_scheme == PREPEND_FIRST && at_start))) {
        memmove(L->buf + p->repl_len, L->buf, len);
        memcpy(L->buf, p->repl, p->repl_len);
        len += p->repl_len;
    }
    *s = L->buf, *n = len;
    return 0;
}

/* Runs pre-tokenizer step k (and the later ones) over s[0, n), then BPE. at_start: the piece
 * begins the text (Metaspace's "first" scheme). */
static int pre_step(sp_tokenizer *t, int k, const char *s, size_t n, int at_start,
                    sp_token_buf *out, sp_error *err) {
    if (n == 0) return 0;
    if (k == t->n_pre) return encode_piece(t, (const uint8_t *)s, n, out, err);
    const tok_pre *p = &t->pre[k];
    tok_level *L = &t->lvl[k];
    int rc = 0;
    if (p->kind == PRE_BYTELEVEL && p->add_prefix_space && s[0] != ' ')
        rc = prefix_piece(L, " ", 1, &s, &n);
    else if (p->kind == PRE_METASPACE)
        rc = metaspace_piece(p, L, at_start, &s, &n);
    if (rc) return sp_fail(err, "encode: out of memory");
    if (!p->re) return pre_step(t, k + 1, s, n, at_start, out, err);
    size_t ns, first;
    if (find_segs(t, p, L, s, n, &ns, err)) return -1;
    size_t np = apply_behavior(L->segs, ns, p->behavior, &first);
    for (size_t i = first; i < first + np; i++) {
        tok_seg g = L->segs[i]; /* deeper steps use their own levels */
        if (pre_step(t, k + 1, s + g.start, g.end - g.start, at_start && g.start == 0, out, err))
            return -1;
    }
    return 0;
}

/* Normalizes, pre-tokenizes and encodes one span (no added tokens inside). */
static int encode_span(sp_tokenizer *t, const char *s, size_t n, int at_start, sp_token_buf *out,
                       sp_error *err) {
    if (!t->cache_cap && cache_make_room(t)) return sp_fail(err, "encode: out of memory");
    if (n == 0) return 0;
    const char *norm;
    size_t nn;
    if (tok_normalize(t, s, n, &norm, &nn, err)) return -1;
    return pre_step(t, 0, norm, nn, at_start, out, err);
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

int tok_is_whitespace(uint32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000;
}

/* Start of the whitespace run that ends at end (not before floor). */
static size_t ws_before(const char *s, size_t floor, size_t end) {
    while (end > floor) {
        size_t b = end - 1;
        while (b > floor && ((uint8_t)s[b] & 0xC0) == 0x80) b--;
        uint32_t cp;
        tok_utf8_next((const uint8_t *)s + b, &cp);
        if (!tok_is_whitespace(cp)) break;
        end = b;
    }
    return end;
}

static size_t ws_after(const char *s, size_t len, size_t at) {
    while (at < len) {
        uint32_t cp;
        size_t l = tok_utf8_next((const uint8_t *)s + at, &cp);
        if (!tok_is_whitespace(cp)) break;
        at += l;
    }
    return at;
}

/* The leftmost (then longest) occurrence among the recognised added tokens, or NULL. */
static added_match *best_match(added_match *m, size_t nm) {
    added_match *best = NULL;
    for (size_t k = 0; k < nm; k++) {
        if (m[k].next == SIZE_MAX) continue;
        if (!best || m[k].next < best->next || (m[k].next == best->next && m[k].len > best->len))
            best = &m[k];
    }
    return best;
}

static int split_added(sp_tokenizer *t, const char *text, size_t len, unsigned flags, int normed,
                       int at_start, sp_token_buf *out, sp_error *err);

/* A span between added tokens of the text as given: normalized, then split at the added tokens
 * matched in normalized text, each piece pre-tokenized and encoded. */
static int encode_raw_span(sp_tokenizer *t, const char *s, size_t n, unsigned flags, int at_start,
                           sp_token_buf *out, sp_error *err) {
    if (!t->cache_cap && cache_make_room(t)) return sp_fail(err, "encode: out of memory");
    if (n == 0) return 0;
    const char *norm;
    size_t nn;
    if (tok_normalize(t, s, n, &norm, &nn, err)) return -1;
    return split_added(t, norm, nn, flags, 1, at_start, out, err);
}

/* Splits the text at the leftmost (then longest) occurrence of a recognised added token (those
 * matched in normalized text when normed, the others when not), encoding the text between them:
 * as a span of the text as given (encode_raw_span), or, normalized already, by the
 * pre-tokenizers. A token with lstrip/rstrip also takes the whitespace on that side (Unicode
 * White_Space, as Rust's char::is_whitespace). */
static int split_added(sp_tokenizer *t, const char *text, size_t len, unsigned flags, int normed,
                       int at_start, sp_token_buf *out, sp_error *err) {
    added_match *m = malloc((t->n_added ? t->n_added : 1) * sizeof *m);
    if (!m) return sp_fail(err, "encode: out of memory");
    size_t nm = 0;
    for (size_t k = 0; k < t->n_added; k++) {
        int32_t id = t->added[k];
        if (t->kind[id] == TOK_SPECIAL && !(flags & SP_TOK_ALLOW_SPECIAL)) continue;
        if (t->normed[id] != normed) continue;
        m[nm] = (added_match){id, t->strs + t->str_off[id], t->str_len[id], 0};
        m[nm].next = find_from(text, len, 0, &m[nm]);
        nm++;
    }
    int rc = 0;
    for (size_t at = 0; rc == 0;) {
        added_match *best = best_match(m, nm);
        size_t a = best ? best->next : len, b = best ? a + best->len : len;
        if (best && t->lstrip[best->id]) a = ws_before(text, at, a);
        if (best && t->rstrip[best->id]) b = ws_after(text, len, b);
        if (!normed)
            rc = encode_raw_span(t, text + at, a - at, flags, at_start && at == 0, out, err);
        else if (a > at)
            rc = pre_step(t, 0, text + at, a - at, at_start && at == 0, out, err);
        if (!best) break;
        if (rc == 0 && sp_token_buf_append(out, &best->id, 1))
            rc = sp_fail(err, "encode: out of memory");
        at = b;
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
    int rc = t->n_added ? split_added(t, text, len, flags, 0, 1, out, err)
                        : encode_span(t, text, len, 1, out, err);
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
