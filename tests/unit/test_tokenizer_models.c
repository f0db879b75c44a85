/* The models beyond BPE and their pieces (src/tokenizer/charsmap.c, unigram.c, wordpiece.c and
 * the normalizers they come with): the Precompiled charsmap parser against hand-built and hostile
 * blobs (truncated, bad sizes, offsets and values outside the blob, replacements that are not
 * UTF-8 or start inside a character, cycles), base64; Strip, Lowercase and BertNormalizer each
 * alone; what the Unigram and WordPiece loaders refuse and the encode errors without an unknown
 * token; the WordPiece decoder. The ids of whole tokenizers against Hugging Face's are in
 * test_tokenizer_pipeline.c (fixtures t5-unigram, bert-uncased, ...). Needs no downloaded file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil_tok.h"
#include "tokenizer/tok_internal.h"

/* ---- a hand-built charsmap: "a" -> "b", "ab" -> "X", "c" -> "" ----
 * Root at 0 with its children at base 1: 'a' at 1^0x61 = 96, 'c' at 1^0x63 = 98. Node 'a':
 * children at base 4 (its value at 4, 'b' at 4^0x62 = 102); node "ab": base 5; node 'c': base 6.
 * Values: "b" at 0, "X" at 2, "" at 4 of "b\0X\0\0". */
#define N_UNITS 103
static uint32_t U[N_UNITS];
static const char NORM[] = "b\0X\0"; /* and the terminating NUL: 5 bytes */

static void base_units(void) {
    memset(U, 0, sizeof U);
    U[0] = 1u << 10;
    U[96] = (96u ^ 4) << 10 | 1u << 8 | 0x61;
    U[102] = (102u ^ 5) << 10 | 1u << 8 | 0x62;
    U[98] = (98u ^ 6) << 10 | 1u << 8 | 0x63;
    U[4] = 0 | 1u << 31, U[5] = 2 | 1u << 31, U[6] = 4 | 1u << 31;
}

/* size (u32 LE) + units + norm; returns the length. */
static size_t blob(uint8_t *out, uint32_t size, const uint32_t *units, size_t n, const char *norm,
                   size_t norm_len) {
    for (int k = 0; k < 4; k++) out[k] = (uint8_t)(size >> (8 * k));
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 4; k++) out[4 + 4 * i + (size_t)k] = (uint8_t)(units[i] >> (8 * k));
    memcpy(out + 4 + 4 * n, norm, norm_len);
    return 4 + 4 * n + norm_len;
}

static uint8_t B[4 + 4 * N_UNITS + 64];

static size_t good_blob(void) {
    base_units();
    return blob(B, 4 * N_UNITS, U, N_UNITS, NORM, sizeof NORM);
}

static void expect_lookup(const tok_charsmap *m, const char *key, const char *want) {
    const char *r;
    size_t n;
    int found = tok_charsmap_lookup(m, key, strlen(key), &r, &n);
    if (!want) {
        ck_assert_msg(!found, "'%s' has a replacement", key);
        return;
    }
    ck_assert_msg(found && n == strlen(want) && !memcmp(r, want, n), "'%s' -> '%.*s', want '%s'",
                  key, found ? (int)n : 4, found ? r : "none", want);
}

START_TEST(charsmap_lookup) {
    tok_charsmap m;
    sp_error err = {0};
    size_t len = good_blob();
    ck_assert_msg(tok_charsmap_parse(&m, B, len, &err) == 0, "%s", err.msg);
    expect_lookup(&m, "a", "b");
    expect_lookup(&m, "ab", "b"); /* the shortest key that prefixes the text wins */
    expect_lookup(&m, "c", "");
    expect_lookup(&m, "cz", "");
    expect_lookup(&m, "b", NULL);
    expect_lookup(&m, "", NULL);
    expect_lookup(&m, "\x05", NULL); /* lands on a value unit: no label matches */
    expect_lookup(&m, "za", NULL);
    /* Hugging Face's normalizer: per grapheme (shorter than 6 bytes) the shortest key's
     * replacement, else per character. */
    sp__buf out = {0};
    ck_assert_int_eq(tok_charsmap_normalize(&m, "abcab xac", 9, &out, &err), 0);
    ck_assert_str_eq(out.p, "bbbb xb");
    sp__buf_free(&out);
    tok_charsmap_free(&m);
}
END_TEST

/* Only the keys 'a' and 'ab' exist below the root, so "ab" is found through 'a'. */
START_TEST(charsmap_value_of_longer_key) {
    tok_charsmap m;
    sp_error err = {0};
    base_units();
    U[96] &= ~(1u << 8); /* 'a' alone is no key: "ab" -> "X" */
    size_t len = blob(B, 4 * N_UNITS, U, N_UNITS, NORM, sizeof NORM);
    ck_assert_msg(tok_charsmap_parse(&m, B, len, &err) == 0, "%s", err.msg);
    expect_lookup(&m, "a", NULL);
    expect_lookup(&m, "ab", "X");
    expect_lookup(&m, "abc", "X");
    tok_charsmap_free(&m);
}
END_TEST

static void expect_bad(size_t len, const char *want) {
    tok_charsmap m;
    sp_error err = {0};
    ck_assert_int_ne(tok_charsmap_parse(&m, B, len, &err), 0);
    ck_assert_msg(strstr(err.msg, want) != NULL, "error '%s' lacks '%s'", err.msg, want);
    ck_assert_ptr_null(m.units); /* nothing is left allocated */
}

START_TEST(charsmap_hostile) {
    size_t len = good_blob();
    expect_bad(0, "0 bytes, too short for the trie size");
    expect_bad(3, "3 bytes, too short");
    expect_bad(4 + 4 * 10, "trie size 412 is not a positive multiple of 4 within the 40 bytes");
    B[0] = 0, B[1] = 0, B[2] = 0, B[3] = 0;
    expect_bad(len, "trie size 0 is not a positive multiple of 4");
    B[0] = 7;
    expect_bad(len, "trie size 7");
    len = good_blob();
    B[len - 5] = (uint8_t)0xff; /* "b" -> an invalid byte */
    expect_bad(len, "the replacement strings are not valid UTF-8");
    /* 'a' sends its value (and children) past the end. */
    base_units();
    U[96] = (96u ^ 200) << 10 | 1u << 8 | 0x61;
    len = blob(B, 4 * N_UNITS, U, N_UNITS, NORM, sizeof NORM);
    expect_bad(len, "a value lies outside the trie (unit 200 of 103)");
    /* a value past the replacements */
    base_units();
    U[5] = 6 | 1u << 31;
    len = blob(B, 4 * N_UNITS, U, N_UNITS, NORM, sizeof NORM);
    expect_bad(len, "unit 5 points at byte 6 of the 5-byte replacements");
    /* a value inside a character */
    base_units();
    U[4] = 1 | 1u << 31;
    len = blob(B, 4 * N_UNITS, U, N_UNITS, "\xc3\xa9\0", 3);
    expect_bad(len,
               "points at byte 1 of the 3-byte replacements, which does not start a character");
}
END_TEST

/* A node whose children are the root's again: parsing and lookups still end. */
START_TEST(charsmap_cycle) {
    tok_charsmap m;
    sp_error err = {0};
    base_units();
    U[96] = (96u ^ 1) << 10 | 0x61; /* 'a' -> the root's children, no value */
    size_t len = blob(B, 4 * N_UNITS, U, N_UNITS, NORM, sizeof NORM);
    ck_assert_msg(tok_charsmap_parse(&m, B, len, &err) == 0, "%s", err.msg);
    expect_lookup(&m, "aaaaaaaaaaaaaaaac", "");
    expect_lookup(&m, "aaaa", NULL);
    tok_charsmap_free(&m);
}
END_TEST

START_TEST(base64) {
    uint8_t *o;
    size_t n;
    ck_assert_int_eq(tok_base64_decode("aGk=", 4, &o, &n), 0);
    ck_assert(n == 2 && !memcmp(o, "hi", 2));
    free(o);
    ck_assert_int_eq(tok_base64_decode("aA==", 4, &o, &n), 0);
    ck_assert(n == 1 && o[0] == 'h');
    free(o);
    ck_assert_int_eq(tok_base64_decode("", 0, &o, &n), 0);
    ck_assert_uint_eq(n, 0);
    free(o);
    static const char *const bad[] = {
        "aGk", "a=Gk", "aG=k", "aGk=aGk=", "aG!=", "a===", "====", NULL};
    for (int i = 0; bad[i]; i++)
        ck_assert_msg(tok_base64_decode(bad[i], strlen(bad[i]), &o, &n) != 0, "'%s' accepted",
                      bad[i]);
}
END_TEST

/* The JSON path names the field; the blob's own message follows. */
START_TEST(precompiled_json_errors) {
    json_t *t5 = tu_tok_fixture_json("t5-unigram");
    json_t *norms = json_object_get(json_object_get(t5, "normalizer"), "normalizers");
    json_object_set_new(json_array_get(norms, 0), "precompiled_charsmap", json_string("AAAA!"));
    tu_tok_expect_json_error(json_deep_copy(t5), NULL,
                             "normalizer.normalizers[0].precompiled_charsmap: not valid base64",
                             NULL);
    json_object_set_new(json_array_get(norms, 0), "precompiled_charsmap", json_string("AAAAAA=="));
    tu_tok_expect_json_error(json_deep_copy(t5), NULL,
                             "normalizer.normalizers[0]: precompiled_charsmap: trie size 0", NULL);
    json_object_set_new(json_array_get(norms, 0), "precompiled_charsmap", json_integer(3));
    tu_tok_expect_json_error(t5, NULL,
                             "normalizer.normalizers[0].precompiled_charsmap: expected a base64 "
                             "string",
                             NULL);
}
END_TEST

/* ---- Strip, Lowercase, BertNormalizer: through a tokenizer whose decode is the text ---- */

static sp_tokenizer *with_normalizer(const char *normalizer) {
    tu_tok_write_pair_json(tu_dir, json_array());
    char *path = tu_path(tu_dir, "tokenizer.json");
    tu_json_edit(path, "normalizer", json_loads(normalizer, 0, NULL));
    free(path);
    return tu_tok_load_ok(tu_dir);
}

static void expect_normalized(sp_tokenizer *t, const char *in, size_t n, const char *want) {
    sp_token_buf ids = {0};
    tu_tok_encode_ok(t, in, n, 0, &ids);
    size_t len;
    char *out = tu_tok_decode_ok(t, ids.ids, ids.n, &len);
    ck_assert_msg(len == strlen(want) && memcmp(out, want, len) == 0,
                  "'%s' normalized to '%s', expected '%s'", in, out, want);
    free(out);
    sp_token_buf_free(&ids);
}

#define BERT(clean, chinese, accents, lower)                                                       \
    "{\"type\": \"BertNormalizer\", \"clean_text\": " clean ", \"handle_chinese_chars\": " chinese \
    ", \"strip_accents\": " accents ", \"lowercase\": " lower "}"

static const struct {
    const char *normalizer, *in, *want;
} CASES[] = {
    {"{\"type\": \"Strip\", \"strip_left\": true, \"strip_right\": false}", " \t a b \xe3\x80\x80",
     "a b \xe3\x80\x80"},
    {"{\"type\": \"Strip\", \"strip_left\": false, \"strip_right\": true}", " a b \xe3\x80\x80\n",
     " a b"},
    {"{\"type\": \"Strip\", \"strip_left\": true, \"strip_right\": true}", "   ", ""},
    /* U+0130 lowercases to i + combining dot (Rust's full mapping); final sigma is not special */
    {"{\"type\": \"Lowercase\"}", "ABC \xc4\xb0 \xce\xa3\xce\xa3",
     "abc i\xcc\x87 \xcf\x83\xcf\x83"},
    /* clean_text: controls, U+FFFD, U+200B (Cf) go; \t \n \r and Unicode spaces become " " */
    {BERT("true", "false", "false", "false"), "a\x01 b\xef\xbf\xbd\xe2\x80\x8b\tc\xc2\xa0\x0b",
     "a b c "},
    {BERT("false", "true", "false", "false"), "ab\xe9\x81\x93x", "ab \xe9\x81\x93 x"},
    /* strip_accents null follows lowercase */
    {BERT("false", "false", "null", "true"), "\xc3\x89t\xc3\xa9 NA\xc3\x8fVE", "ete naive"},
    {BERT("false", "false", "null", "false"), "\xc3\x89t\xc3\xa9", "\xc3\x89t\xc3\xa9"},
    {BERT("false", "false", "true", "false"), "\xc3\x89t\xc3\xa9", "Ete"},
    {BERT("false", "false", "false", "true"), "\xc3\x89t\xc3\xa9", "\xc3\xa9t\xc3\xa9"},
};

START_TEST(normalizers) {
    sp_tokenizer *t = with_normalizer(CASES[_i].normalizer);
    expect_normalized(t, CASES[_i].in, strlen(CASES[_i].in), CASES[_i].want);
    sp_tokenizer_free(t);
}
END_TEST

/* ---- what the loaders refuse ---- */

static const tu_tok_bad_edit MODEL_ERRORS[] = {
    {"t5-unigram", "model.unk_id", "9999", NULL,
     "tokenizer.json: model.unk_id: expected an index into model.vocab", NULL},
    {"t5-unigram", "model.unk_id", "\"2\"", NULL, "model.unk_id: expected an index", NULL},
    {"t5-unigram", "model.byte_fallback", "1", NULL, "model.byte_fallback is not a boolean", NULL},
    {"t5-unigram", "model.vocab", "[[\"a\", 0.5], [\"b\"]]", NULL,
     "model.vocab[1]: expected [piece, score]", NULL},
    {"t5-unigram", "model.vocab", "[[\"a\", 0.5], [\"a\", \"x\"]]", NULL,
     "model.vocab[1]: expected [piece, score]", NULL},
    {"t5-unigram", "model.vocab", "[[\"a\", 0.5], [\"a\", 0.1]]", NULL,
     "model.vocab[1]: token 'a' has two ids, 0 and 1", NULL},
    {"t5-unigram", "model.vocab", "{\"a\": 0}", NULL,
     "model.vocab: expected a non-empty array of [piece, score]", NULL},
    {"bert-uncased", "model.unk_token", "\"[NOPE]\"", NULL,
     "tokenizer.json: model.unk_token '[NOPE]' is not in model.vocab", NULL},
    {"bert-uncased", "model.continuing_subword_prefix", "\"@@\"", NULL,
     "decoder.prefix '##' differs from model.continuing_subword_prefix '@@'", NULL},
    {"bert-uncased", "model.max_input_chars_per_word", "-1", NULL,
     "model.max_input_chars_per_word is not a non-negative integer", NULL},
    {"bert-uncased", "normalizer", "{\"type\": \"BertNormalizer\", \"strip_accents\": 1}", NULL,
     "normalizer: clean_text, handle_chinese_chars, lowercase must be booleans", NULL},
    {"bert-uncased", "decoder",
     "{\"type\": \"Sequence\", \"decoders\": [{\"type\": \"ByteFallback\"}, {\"type\": "
     "\"WordPiece\"}]}",
     NULL, "decoder.decoders[1]: the WordPiece decoder is supported alone, with a WordPiece model",
     NULL},
    {"llama2", "decoder", "{\"type\": \"WordPiece\", \"prefix\": \"##\"}", NULL,
     "decoder: the WordPiece decoder is supported alone, with a WordPiece model", NULL},
    {"t5-unigram", "normalizer", "{\"type\": \"Strip\", \"strip_left\": 1}", NULL,
     "normalizer: strip_left and strip_right must be booleans", NULL},
};

START_TEST(model_errors) {
    TU_TOK_EXPECT_EDIT_ERRORS(MODEL_ERRORS);
}
END_TEST

static sp_tokenizer *fixture_with_model(const char *name, const char *key, const char *value) {
    json_t *root = tu_tok_fixture_json(name);
    root = tu_tok_with_model(root, key, json_loads(value, JSON_DECODE_ANY, NULL));
    char *path = tu_path(tu_dir, "tokenizer.json");
    ck_assert_int_eq(json_dump_file(root, path, 0), 0);
    json_decref(root);
    free(path);
    return tu_tok_load_ok(tu_dir);
}

/* Without unk_id a character outside the vocabulary is an encode error (as in Hugging Face). */
START_TEST(unigram_without_unk) {
    sp_tokenizer *t = fixture_with_model("t5-unigram", "unk_id", "null");
    int32_t *ids;
    size_t n;
    sp_error err = {0};
    ck_assert_int_eq(sp_tokenizer_encode(t, "the", 3, 0, &ids, &n, &err), 0);
    free(ids);
    ck_assert_int_ne(sp_tokenizer_encode(t, "the \xe8\x90\xac", 7, 0, &ids, &n, &err), 0);
    ck_assert_msg(
        strstr(err.msg, "U+842C is not in the Unigram vocabulary and model.unk_id is null"), "%s",
        err.msg);
    sp_tokenizer_free(t);
}
END_TEST

/* A word over max_input_chars_per_word is [UNK]; at the limit it is cut into pieces. */
START_TEST(wordpiece_limits_and_decoder) {
    sp_tokenizer *t = fixture_with_model("bert-uncased", "max_input_chars_per_word", "4");
    int32_t unk = sp_tokenizer_token_to_id(t, "[UNK]", 5);
    sp_token_buf ids = {0};
    tu_tok_encode_ok(t, "the truths", 10, 0, &ids);
    ck_assert_uint_ge(ids.n, 2);
    ck_assert_int_eq(ids.ids[ids.n - 1], unk);
    ck_assert_int_ne(ids.ids[0], unk);
    /* The decoder: the first token keeps a "##", later ones join; cleanup removes " ." */
    int32_t seq[3] = {sp_tokenizer_token_to_id(t, "##s", 3), sp_tokenizer_token_to_id(t, "##s", 3),
                      sp_tokenizer_token_to_id(t, ".", 1)};
    ck_assert(seq[0] >= 0 && seq[2] >= 0);
    size_t len;
    char *out = tu_tok_decode_ok(t, seq, 3, &len);
    ck_assert_str_eq(out, "##ss.");
    free(out);
    sp_token_buf_free(&ids);
    sp_tokenizer_free(t);
}
END_TEST

/* A word of 200000 characters under a limit that lets it through: cut as quickly as a short
 * one (no entry is longer than the vocabulary's longest), back to the same text. */
START_TEST(wordpiece_long_word) {
    sp_tokenizer *t = fixture_with_model("bert-uncased", "max_input_chars_per_word", "1000000000");
    size_t n = 200000;
    char *word = malloc(n + 1);
    memset(word, 'a', n);
    word[n] = '\0';
    sp_token_buf ids = {0};
    tu_tok_encode_ok(t, word, n, 0, &ids);
    ck_assert_uint_ge(ids.n, 2);
    size_t len;
    char *out = tu_tok_decode_ok(t, ids.ids, ids.n, &len);
    ck_assert(len == n && !memcmp(out, word, n));
    free(out), free(word);
    sp_token_buf_free(&ids);
    sp_tokenizer_free(t);
}
END_TEST

/* A vocabulary with a piece of 60000 bytes, and a word of 200000 other characters: the
 * search of each position stops at the first byte no piece continues with. */
START_TEST(unigram_long_piece) {
    size_t big = 60000, n = 200000;
    char *piece = malloc(big + 1), *word = malloc(n + 1);
    memset(piece, 'a', big), piece[big] = '\0';
    memset(word, 'b', n), word[n] = '\0';
    char vocab[256];
    snprintf(vocab, sizeof vocab, "[[\"<unk>\", 0], [\"b\", -1], [\"bb\", -1.5]]");
    json_t *v = json_loads(vocab, 0, NULL);
    json_array_append_new(v, json_pack("[s, f]", piece, -2.0));
    json_t *root = tu_tok_fixture_json("unigram-byte-fallback");
    root = tu_tok_with_model(root, "vocab", v);
    root = tu_tok_with_model(root, "unk_id", json_integer(0));
    root = tu_tok_with_model(root, "byte_fallback", json_false());
    json_object_set_new(root, "added_tokens", json_array());
    json_object_set_new(root, "post_processor", json_null());
    json_object_set_new(root, "pre_tokenizer", json_null());
    char *path = tu_path(tu_dir, "tokenizer.json");
    ck_assert_int_eq(json_dump_file(root, path, 0), 0);
    json_decref(root);
    sp_tokenizer *t = tu_tok_load_ok(tu_dir);
    sp_token_buf ids = {0};
    tu_tok_encode_ok(t, word, n, 0, &ids);
    ck_assert_uint_eq(ids.n, n / 2); /* "bb" pieces: -1.5 each beats two "b" at -1 */
    ck_assert_int_eq(ids.ids[0], 2);
    sp_token_buf_free(&ids);
    tu_tok_encode_ok(t, piece, big, 0, &ids);
    ck_assert_uint_eq(ids.n, 1);
    ck_assert_int_eq(ids.ids[0], 3);
    sp_token_buf_free(&ids);
    sp_tokenizer_free(t);
    free(path), free(piece), free(word);
}
END_TEST

int main(void) {
    Suite *s = suite_create("tokenizer_models");
    TCase *c = tu_tcase(s, "charsmap");
    tcase_add_test(c, charsmap_lookup);
    tcase_add_test(c, charsmap_value_of_longer_key);
    tcase_add_test(c, charsmap_hostile);
    tcase_add_test(c, charsmap_cycle);
    tcase_add_test(c, base64);
    tcase_add_test(c, precompiled_json_errors);
    TCase *m = tu_tcase(s, "models");
    tcase_add_loop_test(m, normalizers, 0, (int)(sizeof CASES / sizeof *CASES));
    tcase_add_test(m, model_errors);
    tcase_add_test(m, unigram_without_unk);
    tcase_add_test(m, wordpiece_limits_and_decoder);
    tcase_add_test(m, wordpiece_long_word);
    tcase_add_test(m, unigram_long_piece);
    return tu_run_suite(s);
}
