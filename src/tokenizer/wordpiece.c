/* The WordPiece model of tokenizer.json (BERT) and its decoder, as Hugging Face tokenizers does
 * them: a piece of more than max_input_chars_per_word characters is unk_token; otherwise it is
 * cut greedily into the longest vocabulary entries from the left, every entry after the first
 * written with continuing_subword_prefix ("##"); if some position has no entry, the whole piece
 * is unk_token. */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

int tok_load_wordpiece(sp_tokenizer *t, json_t *model, const char *path, sp_error *err) {
    json_t *unk = json_object_get(model, "unk_token"), *max;
    json_t *pre = json_object_get(model, "continuing_subword_prefix");
    const char *u = unk ? json_string_value(unk) : "[UNK]",
               *p = pre ? json_string_value(pre) : "##";
    if (!u) return sp_fail(err, "%s: model.unk_token is not a string", path);
    if (!p || strlen(p) >= sizeof t->wp_prefix)
        return sp_fail(err, "%s: model.continuing_subword_prefix: expected a string of < %zu bytes",
                       path, sizeof t->wp_prefix);
    if (t->dec_wordpiece && strcmp(p, t->wp_prefix) != 0)
        return sp_fail(err,
                       "%s: decoder.prefix '%s' differs from model.continuing_subword_prefix '%s'",
                       path, t->wp_prefix, p);
    memcpy(t->wp_prefix, p, strlen(p) + 1);
    t->wp_prefix_len = strlen(p);
    max = json_object_get(model, "max_input_chars_per_word");
    t->wp_max_chars = 100;
    if (max && (!json_is_integer(max) || json_integer_value(max) < 0))
        return sp_fail(err, "%s: model.max_input_chars_per_word is not a non-negative integer",
                       path);
    if (max) t->wp_max_chars = json_integer_value(max);
    t->unk = tok_model_lookup(t, u, strlen(u));
    if (t->unk < 0) return sp_fail(err, "%s: model.unk_token '%s' is not in model.vocab", path, u);
    return tok_prefix_build(t, err);
}

/* The longest vocabulary entry that p[start, ...) begins (with the prefix when start > 0):
 * its id and *end, or -1. */
static int32_t longest(const sp_tokenizer *t, const uint8_t *p, size_t start, size_t n,
                       size_t *end) {
    tok_prefix_walk w;
    int32_t id, best = -1;
    tok_prefix_start(t, &w);
    for (size_t k = 0; start && k < t->wp_prefix_len; k++)
        if (!tok_prefix_step(t, &w, (uint8_t)t->wp_prefix[k], &id)) return -1;
    size_t skip = start ? t->wp_prefix_len : 0;
    while (tok_prefix_next(t, &w, p + start, skip, n - start, &id))
        best = id, *end = start + w.len - skip;
    return best;
}

int tok_wordpiece_piece(sp_tokenizer *t, const uint8_t *p, size_t n, sp_token_buf *out,
                        sp_error *err) {
    size_t chars = 0, first = out->n;
    for (size_t i = 0; i < n; i++) chars += (p[i] & 0xC0) != 0x80;
    if ((int64_t)chars > t->wp_max_chars)
        return sp_token_buf_append(out, &t->unk, 1) ? sp_fail(err, "encode: out of memory") : 0;
    for (size_t start = 0, end = 0; start < n; start = end) {
        int32_t id = longest(t, p, start, n, &end);
        if (id < 0) { /* no entry here: the whole piece is unknown */
            out->n = first;
            break;
        }
        if (sp_token_buf_append(out, &id, 1)) return sp_fail(err, "encode: out of memory");
    }
    if (out->n == first && n && sp_token_buf_append(out, &t->unk, 1))
        return sp_fail(err, "encode: out of memory");
    return 0;
}

/* The decoder's cleanup, in Hugging Face's order: each replacement applied to all occurrences. */
static size_t cleanup(char *s, size_t n) {
    static const char *const rules[][2] = {{" .", "."},     {" ?", "?"},           {" !", "!"},
                                           {" ,", ","},     {" ' ", "'"},          {" n't", "n't"},
                                           {" 'm", "'m"},   {" do not", " don't"}, {" 's", "'s"},
                                           {" 've", "'ve"}, {" 're", "'re"}};
    for (size_t r = 0; r < sizeof rules / sizeof *rules; r++) {
        size_t fl = strlen(rules[r][0]), tl = strlen(rules[r][1]), w = 0;
        for (size_t i = 0; i < n;) { /* the replacement is never longer: in place */
            if (n - i >= fl && !memcmp(s + i, rules[r][0], fl)) {
                memmove(s + w, rules[r][1], tl), w += tl, i += fl;
            } else {
                s[w++] = s[i++];
            }
        }
        n = w;
    }
    return n;
}

size_t tok_wordpiece_decode(const sp_tokenizer *t, const char *s, size_t len, int first,
                            char *out) {
    size_t n = 0;
    if (first) {
        memcpy(out, s, len), n = len;
    } else if (len >= t->wp_prefix_len && !memcmp(s, t->wp_prefix, t->wp_prefix_len)) {
        memcpy(out, s + t->wp_prefix_len, len - t->wp_prefix_len), n = len - t->wp_prefix_len;
    } else {
        out[0] = ' ';
        memcpy(out + 1, s, len), n = len + 1;
    }
    return t->dec_cleanup ? cleanup(out, n) : n;
}
