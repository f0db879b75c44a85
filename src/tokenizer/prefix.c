/* Common-prefix search over the model's pieces (Unigram, WordPiece), as Hugging Face's trie
 * gives it: the pieces of model.vocab sorted by their bytes, and a walk that narrows the range of
 * pieces sharing the bytes read so far. Each byte costs two binary searches, and a walk ends as
 * soon as no piece continues, so a long word costs no more than its longest prefix match. Once
 * one piece is left, the rest of it is compared at once (a very long piece, repeated in the text,
 * costs a memcmp per position rather than two searches per byte). */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

typedef struct entry {
    const char *s;
    uint32_t len;
    int32_t id;
} entry;

/* Bytes (unsigned), then the shorter first: pieces sharing a prefix are contiguous, and the one
 * equal to it comes first. */
static int cmp_entry(const void *a, const void *b) {
    const entry *x = a, *y = b;
    int c = memcmp(x->s, y->s, x->len < y->len ? x->len : y->len);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

int tok_prefix_build(sp_tokenizer *t, sp_error *err) {
    size_t n = 0;
    for (int32_t id = 0; id < t->n_ids; id++) n += t->in_model[id];
    entry *e = malloc((n ? n : 1) * sizeof *e);
    free(t->sorted);
    t->sorted = malloc((n ? n : 1) * sizeof *t->sorted);
    if (!e || !t->sorted) return free(e), sp_fail(err, "out of memory");
    size_t k = 0;
    for (int32_t id = 0; id < t->n_ids; id++)
        if (t->in_model[id]) e[k++] = (entry){t->strs + t->str_off[id], t->str_len[id], id};
    qsort(e, n, sizeof *e, cmp_entry);
    for (k = 0; k < n; k++) t->sorted[k] = e[k].id;
    t->n_sorted = n;
    free(e);
    return 0;
}

void tok_prefix_start(const sp_tokenizer *t, tok_prefix_walk *w) {
    w->lo = 0, w->hi = t->n_sorted, w->len = 0;
}

/* The byte at position len of piece sorted[i], or -1 when the piece is that short. */
static int key(const sp_tokenizer *t, size_t i, size_t len) {
    int32_t id = t->sorted[i];
    return t->str_len[id] > len ? (uint8_t)t->strs[t->str_off[id] + len] : -1;
}

/* First index in [lo, hi) whose key is above (strict) or at least c. */
static size_t bound(const sp_tokenizer *t, size_t lo, size_t hi, size_t len, int c, int strict) {
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2, k = (size_t)(key(t, mid, len) + 1);
        if (strict ? k <= (size_t)c + 1 : k < (size_t)c + 1)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int tok_prefix_step(const sp_tokenizer *t, tok_prefix_walk *w, uint8_t c, int32_t *id) {
    size_t lo = bound(t, w->lo, w->hi, w->len, c, 0), hi = bound(t, lo, w->hi, w->len, c, 1);
    w->lo = lo, w->hi = hi, w->len++;
    *id = -1;
    if (lo == hi) return 0;
    if (t->str_len[t->sorted[lo]] == w->len) *id = t->sorted[lo];
    return 1;
}

int tok_prefix_next(const sp_tokenizer *t, tok_prefix_walk *w, const uint8_t *q, size_t skip,
                    size_t n, int32_t *id) {
    *id = -1;
    while (w->lo < w->hi && w->len < skip + n) {
        if (w->hi - w->lo == 1) {
            int32_t c = t->sorted[w->lo];
            size_t clen = t->str_len[c];
            w->hi = w->lo; /* the walk ends with this piece, matched or not */
            if (clen <= w->len || clen > skip + n ||
                memcmp(t->strs + t->str_off[c] + w->len, q + (w->len - skip), clen - w->len))
                return 0;
            w->len = clen, *id = c;
            return 1;
        }
        if (!tok_prefix_step(t, w, q[w->len - skip], id)) return 0;
        if (*id >= 0) return 1;
    }
    return 0;
}
