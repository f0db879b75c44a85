/* The tokenizer object (src/tokenizer/tokenizer.c): decoding and its errors, and the hash that
 * datasets record, which covers everything that decides the ids (vocabulary, merges, pipeline,
 * tokenizer_config.json) and nothing else. Needs the GPT-2 files that scripts/fetch-data
 * fetches. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil_tok.h"

START_TEST(test_decode_errors) {
    sp_tokenizer *t = tu_tok_gpt2();
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
    tu_tok_encode_ok(t, "\xe2\x9c\x93", 3, 0, &ids);
    ck_assert_uint_gt(ids.n, 1);
    ck_assert_int_eq(sp_tokenizer_decode(t, ids.ids, 1, 0, &out, &len, &err), 0);
    ck_assert_uint_lt(len, 3);
    ck_assert(memcmp(out, "\xe2\x9c\x93", len) == 0);
    free(out);
    sp_token_buf_free(&ids);
    sp_tokenizer_free(t);
}
END_TEST

/* Pipelines that give different ids hash differently; loading is deterministic. */
START_TEST(test_hash_covers_pipeline) {
    uint64_t h[TU_TOK_N_FIXTURES];
    for (size_t k = 0; k < TU_TOK_N_FIXTURES; k++) {
        sp_tokenizer *t = tu_tok_fixture(TU_TOK_FIXTURES[k]),
                     *again = tu_tok_fixture(TU_TOK_FIXTURES[k]);
        h[k] = sp_tokenizer_hash(t);
        ck_assert_uint_eq(h[k], sp_tokenizer_hash(again));
        ck_assert_str_ne(sp_tokenizer_describe(t), "");
        /* The two Metaspace forms give the same ids (only their decoders are spelt
         * differently), and the hash covers what decides the ids. */
        for (size_t j = 0; j < k; j++) {
            int same = !strcmp(TU_TOK_FIXTURES[j], "sp-metaspace-split") &&
                       !strcmp(TU_TOK_FIXTURES[k], "sp-metaspace-legacy");
            ck_assert_msg((h[j] == h[k]) == same, "%s and %s: hashes %s", TU_TOK_FIXTURES[j],
                          TU_TOK_FIXTURES[k], same ? "differ" : "alike");
        }
        sp_tokenizer_free(t), sp_tokenizer_free(again);
    }
}
END_TEST

/* tokenizer_config.json alone changes the BOS policy, and with it the hash. */
START_TEST(test_config_changes_hash) {
    char *src = tu_tok_fixture_dir("llama2"), *dir = tu_mkdtemp();
    char *from = tu_path(src, "tokenizer.json");
    tu_tok_copy_into(from, dir, "tokenizer.json");
    sp_tokenizer *with = tu_tok_fixture("llama2"), *without = tu_tok_load_ok(dir);
    ck_assert_int_eq(sp_tokenizer_adds_bos(without), 1); /* from the post-processor */
    ck_assert_int_eq(sp_tokenizer_eos_id(without), -1);  /* only the config names </s> */
    ck_assert_uint_ne(sp_tokenizer_hash(with), sp_tokenizer_hash(without));
    sp_tokenizer_free(with), sp_tokenizer_free(without);
    free(src), free(from);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

int main(void) {
    const TTest *tests[] = {test_decode_errors, test_hash_covers_pipeline, test_config_changes_hash,
                            NULL};
    return tu_main("tokenizer", tests, NULL, NULL);
}
