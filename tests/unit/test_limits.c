/* Size caps of the files readers load whole (io/fileutil.h): config.json, the shard index,
 * tokenizer.json, tokenizer_config.json, vocab.json and merges.txt over their limit are refused
 * by name and size before anything is read (sparse files: no disk space is used). The other
 * caps have their tests beside their readers: safetensors headers (test_safetensors), record
 * lines (test_records), soft slots (test_template). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/fileutil.h"
#include "softprompt/model.h"
#include "softprompt/tokenizer.h"
#include "testutil.h"

/* Copies fixture files SP_FIXTURES_DIR/from/<name> into a new directory tu_dir/to. */
static char *copy_fixture_dir(const char *from, const char *to, const char *const *names) {
    char *dir = tu_path(tu_dir, to);
    ck_assert_int_eq(mkdir(dir, 0755), 0);
    for (int i = 0; names[i]; i++) {
        char src[1024];
        snprintf(src, sizeof src, "%s/%s/%s", SP_FIXTURES_DIR, from, names[i]);
        char *dst = tu_path(dir, names[i]);
        tu_copy_file(src, dst);
        free(dst);
    }
    return dir;
}

/* Grows dir/name to limit + 1 bytes. */
static void oversize(const char *dir, const char *name, size_t limit) {
    char *p = tu_path(dir, name);
    ck_assert_int_eq(truncate(p, (off_t)limit + 1), 0);
    free(p);
}

static void expect_msg(const sp_error *err, const char *name, const char *what, size_t limit) {
    char want[256];
    snprintf(want, sizeof want, "/%s: %s of %zu bytes is larger than the limit of %zu MiB", name,
             what, limit + 1, limit >> 20);
    ck_assert_msg(strstr(err->msg, want) != NULL, "message \"%s\" lacks \"%s\"", err->msg, want);
}

/* With dir/name grown over limit, loading the tokenizer of dir is refused naming the file. */
static void tokenizer_refuses_oversize(const char *dir, const char *name, const char *what,
                                       size_t limit) {
    sp_error err;
    oversize(dir, name, limit);
    ck_assert_ptr_null(sp_tokenizer_load(dir, &err));
    expect_msg(&err, name, what, limit);
}

START_TEST(model_files) {
    const char *const single[] = {"config.json", "model.safetensors", NULL};
    char *dir = copy_fixture_dir("ref/l1_h1_d16_f32", "single", single);
    sp_model m;
    sp_error err;
    ck_assert_msg(sp_model_load(&m, dir, &err) == 0, "%s", err.msg);
    sp_model_free(&m);
    oversize(dir, "config.json", SP_MAX_CONFIG_FILE_BYTES);
    ck_assert_int_eq(sp_model_load(&m, dir, &err), -1);
    expect_msg(&err, "config.json", "config", SP_MAX_CONFIG_FILE_BYTES);
    sp_model_free(&m);
    free(dir);

    const char *const sharded[] = {"config.json", "model.safetensors.index.json",
                                   "model-00001-of-00002.safetensors",
                                   "model-00002-of-00002.safetensors", NULL};
    dir = copy_fixture_dir("ref/l2_h2_d24_sharded2_bf16", "sharded", sharded);
    ck_assert_msg(sp_model_load(&m, dir, &err) == 0, "%s", err.msg);
    sp_model_free(&m);
    oversize(dir, "model.safetensors.index.json", SP_MAX_INDEX_FILE_BYTES);
    ck_assert_int_eq(sp_model_load(&m, dir, &err), -1);
    expect_msg(&err, "model.safetensors.index.json", "index", SP_MAX_INDEX_FILE_BYTES);
    sp_model_free(&m);
    free(dir);
}
END_TEST

START_TEST(tokenizer_files) {
    const char *const names[] = {"tokenizer.json", "tokenizer_config.json", NULL};
    char *dir = copy_fixture_dir("tokenizer/hf/llama2", "tok", names);
    sp_error err;
    sp_tokenizer *tok = sp_tokenizer_load(dir, &err);
    ck_assert_msg(tok != NULL, "%s", err.msg);
    sp_tokenizer_free(tok);
    tokenizer_refuses_oversize(dir, "tokenizer_config.json", "tokenizer config",
                               SP_MAX_CONFIG_FILE_BYTES);
    tokenizer_refuses_oversize(dir, "tokenizer.json", "tokenizer file",
                               SP_MAX_TOKENIZER_FILE_BYTES);
    free(dir);

    dir = tu_path(tu_dir, "pair");
    ck_assert_int_eq(mkdir(dir, 0755), 0);
    char *vocab = tu_path(dir, "vocab.json"), *merges = tu_path(dir, "merges.txt");
    /* vocab.json + merges.txt of the byte-level fixture vocabulary. */
    char src[1024];
    snprintf(src, sizeof src, "%s/tokenizer/hf/smollm/tokenizer.json", SP_FIXTURES_DIR);
    json_t *root = json_load_file(src, 0, NULL), *model = json_object_get(root, "model");
    ck_assert_int_eq(json_dump_file(json_object_get(model, "vocab"), vocab, 0), 0);
    FILE *f = fopen(merges, "w");
    ck_assert_ptr_nonnull(f);
    size_t i;
    json_t *pair;
    json_array_foreach(json_object_get(model, "merges"), i, pair) {
        fprintf(f, "%s %s\n", json_string_value(json_array_get(pair, 0)),
                json_string_value(json_array_get(pair, 1)));
    }
    fclose(f);
    json_decref(root);
    tok = sp_tokenizer_load(dir, &err);
    ck_assert_msg(tok != NULL, "%s", err.msg);
    sp_tokenizer_free(tok);
    tokenizer_refuses_oversize(dir, "merges.txt", "tokenizer file", SP_MAX_TOKENIZER_FILE_BYTES);
    tokenizer_refuses_oversize(dir, "vocab.json", "tokenizer file", SP_MAX_TOKENIZER_FILE_BYTES);
    free(vocab), free(merges), free(dir);
}
END_TEST

int main(void) {
    const TTest *tests[] = {model_files, tokenizer_files, NULL};
    return tu_main("limits", tests, NULL, NULL);
}
