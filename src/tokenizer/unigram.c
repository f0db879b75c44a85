/* The Unigram model of tokenizer.json (SentencePiece's, as T5, mT5 and Flan-T5 use it): the
 * segmentation of a piece into vocabulary pieces with the highest total score, found as Hugging
 * Face tokenizers does (its encode_optimized, after SentencePiece):
 *   - at each character start, every vocabulary piece that starts there is a candidate edge,
 *     shortest first; a target position keeps the first edge of the best score (a later edge
 *     replaces it only with a strictly higher score);
 *   - where no piece is exactly the character at that start, an unknown edge of one character
 *     scores min(scores) - 10 (it needs unk_id);
 *   - the best path is read back; consecutive unknown edges are fused into one (Hugging Face's
 *     Unigram always fuses), and each resulting string is its vocabulary id, else its <0xNN>
 *     byte tokens with byte_fallback (when all exist), else unk_id. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

struct tok_uni_node {
    double score;  /* best total score of a path ending here */
    int64_t start; /* where that path's last edge starts; -1: no path yet */
    int32_t id;    /* the last edge's piece (unk_id for an unknown character) */
};

/* Unigram's penalty under the lowest score for a character outside the vocabulary. */
#define UNK_PENALTY 10.0

int tok_load_unigram(sp_tokenizer *t, json_t *model, const char *path, sp_error *err) {
    json_t *vocab = json_object_get(model, "vocab"), *e, *unk = json_object_get(model, "unk_id");
    json_t *bf = json_object_get(model, "byte_fallback");
    if (!json_is_array(vocab) || json_array_size(vocab) == 0)
        return sp_fail(err, "%s: model.vocab: expected a non-empty array of [piece, score]", path);
    if (json_array_size(vocab) >= TOK_MAX_ID)
        return sp_fail(err, "%s: model.vocab: %zu pieces, more than %d", path,
                       json_array_size(vocab), TOK_MAX_ID);
    if (bf && !json_is_null(bf) && !json_is_boolean(bf))
        return sp_fail(err, "%s: model.byte_fallback is not a boolean", path);
    t->byte_fallback = json_is_true(bf);
    t->score = malloc(json_array_size(vocab) * sizeof *t->score);
    if (!t->score) return sp_fail(err, "out of memory");
    t->min_score = INFINITY;
    t->n_score = json_array_size(vocab);
    size_t i;
    json_array_foreach(vocab, i, e) {
        json_t *p = json_array_get(e, 0), *s = json_array_get(e, 1);
        if (json_array_size(e) != 2 || !json_is_string(p) || !json_is_number(s))
            return sp_fail(err, "%s: model.vocab[%zu]: expected [piece, score]", path, i);
        if (tok_add_token(t, json_string_value(p), json_string_length(p), (int64_t)i, TOK_NORMAL,
                          err))
            return sp_fail_prefix(err, "%s: model.vocab[%zu]", path, i);
        t->score[i] = json_number_value(s);
        if (t->score[i] < t->min_score) t->min_score = t->score[i];
    }
    if (unk && !json_is_null(unk)) {
        if (!json_is_integer(unk) || json_integer_value(unk) < 0 ||
            json_integer_value(unk) >= (json_int_t)json_array_size(vocab))
            return sp_fail(err, "%s: model.unk_id: expected an index into model.vocab (0..%zu)",
                           path, json_array_size(vocab) - 1);
        t->unk = (int32_t)json_integer_value(unk);
    }
    return tok_prefix_build(t, err);
}

/* Best path scores over the character starts of p[0, n); fails only without unk_id. */
static int viterbi(sp_tokenizer *t, const uint8_t *p, size_t n, sp_error *err) {
    struct tok_uni_node *node = t->u_node;
    for (size_t i = 0; i <= n; i++) node[i] = (struct tok_uni_node){0.0, -1, 0};
    for (size_t at = 0; at < n;) {
        uint32_t cp;
        size_t mblen = tok_utf8_next(p + at, &cp);
        double here = node[at].score;
        int single = 0;
        tok_prefix_walk w;
        tok_prefix_start(t, &w);
        int32_t id;
        while (tok_prefix_next(t, &w, p + at, 0, n - at, &id)) {
            size_t len = w.len;
            struct tok_uni_node *to = &node[at + len];
            double s = t->score[id] + here;
            if (to->start < 0 || s > to->score) *to = (struct tok_uni_node){s, (int64_t)at, id};
            single |= len == mblen;
        }
        if (!single) {
            if (t->unk < 0)
                return sp_fail(err,
                               "encode: character U+%04X is not in the Unigram vocabulary and "
                               "model.unk_id is null",
                               cp);
            struct tok_uni_node *to = &node[at + mblen];
            double s = t->min_score - UNK_PENALTY + here;
            if (to->start < 0 || s > to->score) *to = (struct tok_uni_node){s, (int64_t)at, t->unk};
        }
        at += mblen;
    }
    return 0;
}

/* The id(s) of one string of the best path: its piece, its bytes or unk_id. */
static int emit(sp_tokenizer *t, const uint8_t *s, size_t n, sp_token_buf *out) {
    int32_t id = tok_model_lookup(t, (const char *)s, n);
    if (id >= 0) return sp_token_buf_append(out, &id, 1);
    size_t b = 0;
    while (t->byte_fallback && b < n && t->fallback_id[s[b]] >= 0) b++;
    if (t->byte_fallback && b == n) {
        for (b = 0; b < n; b++)
            if (sp_token_buf_append(out, &t->fallback_id[s[b]], 1)) return -1;
        return 0;
    }
    return sp_token_buf_append(out, &t->unk, 1);
}

int tok_unigram_piece(sp_tokenizer *t, const uint8_t *p, size_t n, sp_token_buf *out,
                      sp_error *err) {
    if (n + 1 > t->u_cap) {
        size_t cap = sp__vec_cap(t->u_cap, n + 1, 64, 1);
        if (cap == 0 || sp__vec_resize(&t->u_node, cap, sizeof *t->u_node))
            return sp_fail(err, "encode: out of memory");
        t->u_cap = cap;
    }
    if (viterbi(t, p, n, err)) return -1;
    /* The best path read backwards, consecutive unknown edges fused: string k is
     * [cut[k + 1], cut[k]), in reverse text order. */
    size_t *cut = malloc((n + 1) * sizeof *cut), nc = 0;
    if (!cut) return sp_fail(err, "encode: out of memory");
    cut[nc++] = n;
    for (size_t end = n; end > 0;) {
        size_t start = (size_t)t->u_node[end].start;
        while (t->unk >= 0 && t->u_node[end].id == t->unk && start > 0 &&
               t->u_node[start].id == t->unk)
            end = start, start = (size_t)t->u_node[end].start;
        cut[nc++] = start;
        end = start;
    }
    int rc = 0;
    for (size_t k = nc - 1; k > 0 && rc == 0; k--)
        rc = emit(t, p + cut[k], cut[k - 1] - cut[k], out);
    free(cut);
    return rc ? sp_fail(err, "encode: out of memory") : 0;
}
