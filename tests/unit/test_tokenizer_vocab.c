/* The vocabulary (src/tokenizer/vocab.c): GPT-2's tokens, ids and merges as the API shows them;
 * ids given once and in range, every byte-level token
 * present and every other token made of byte-level characters, and merges of tokens that
 * exist into tokens that exist, each merge once; whichever file format they come from. Needs
 * the GPT-2 files that scripts/fetch-data fetches. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil_tok.h"

/* sp_tokenizer_hash of GPT-2's vocabulary: pins the canonical form that dataset files record. */
#define GPT2_HASH "ebfc8890dd639225"

START_TEST(test_vocab_lookups) {
    sp_tokenizer *t = tu_tok_gpt2();
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

/* Ids (with "#version: 0.2\n" as merges.txt). */
static const tu_tok_bad_file BAD_IDS[] = {
    {"vocab.json", "{\"a\": 1, \"b\": 1}",
     "vocab.json: vocabulary: id 1 is given to both 'a' and 'b'", NULL},
    {"vocab.json", "{\"a\": -5}", "id -5 outside", NULL},
};

START_TEST(test_bad_vocab) {
    char *dir = tu_mkdtemp();
    tu_tok_write_str(dir, "merges.txt", "#version: 0.2\n");
    TU_TOK_EXPECT_FILE_ERRORS(dir, BAD_IDS);
    tu_tok_write_small_vocab(dir, 0x41, NULL);
    tu_tok_expect_load_error(
        dir, "vocab.json: the vocabulary lacks the byte-level token 'A' for byte 0x41", NULL);
    tu_tok_write_small_vocab(dir, -1, (const char *const[]){"\xe4\xb8\xad", NULL});
    tu_tok_expect_load_error(dir, "vocab.json: token '\xe4\xb8\xad' (id 256) is not byte-level",
                             NULL);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

/* Merges over a vocabulary of the bytes, "ab" and "abc". */
static const tu_tok_bad_file BAD_MERGES[] = {
    {"merges.txt", "#version: 0.2\na b\nab zz\n",
     "merges.txt:3: merge 'ab zz': 'zz' is not in the vocabulary", NULL},
    {"merges.txt", "#version: 0.2\nb c\n",
     "merges.txt:2: merge 'b c': the result 'bc' is not in the vocabulary", NULL},
    {"merges.txt", "#version: 0.2\na b\na b\n",
     "merges.txt:3: merge 'a b' repeats the merge of rank 0", NULL},
};

START_TEST(test_bad_merges) {
    char *dir = tu_mkdtemp();
    tu_tok_write_small_vocab(dir, -1, (const char *const[]){"ab", "abc", NULL});
    TU_TOK_EXPECT_FILE_ERRORS(dir, BAD_MERGES);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

/* The same rules for tokenizer.json: added tokens and the model's vocabulary. */
START_TEST(test_bad_tokenizer_json) {
    char *dir = tu_mkdtemp();
    json_t *extra = json_pack("[{s:i, s:s, s:b}]", "id", 7, "content", "<|clash|>", "special", 1);
    tu_tok_write_gpt2_json(dir, extra);
    json_decref(extra);
    tu_tok_expect_load_error(dir, "tokenizer.json: added_tokens[1]: id 7 is given to both",
                             "'<|clash|>'");
    tu_tok_write_str(dir, "tokenizer.json",
                     "{\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false}, "
                     "\"model\": {\"vocab\": "
                     "{\"a\": 0}, \"merges\": [[1, 2]]}}");
    tu_tok_expect_load_error(dir, "the vocabulary lacks the byte-level token", NULL);
    /* A byte-level vocabulary needs every byte token. */
    json_t *r = tu_tok_fixture_json("smollm");
    json_object_del(json_object_get(json_object_get(r, "model"), "vocab"), "A");
    json_object_set_new(r, "merges", json_array());
    json_object_set_new(json_object_get(r, "model"), "merges", json_array());
    tu_tok_expect_json_error(r, NULL, "the vocabulary lacks the byte-level token 'A' for byte 0x41",
                             NULL);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

int main(void) {
    const TTest *tests[] = {test_vocab_lookups, test_bad_vocab, test_bad_merges,
                            test_bad_tokenizer_json, NULL};
    return tu_main("tokenizer_vocab", tests, NULL, NULL);
}
