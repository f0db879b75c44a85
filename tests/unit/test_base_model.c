/* What an exported adapter records as its base model when none is named
 * (src/train/base_model.c): the model directory's absolute path, or the Hugging Face repository
 * and commit scripts/get-model downloaded it from while its files are unchanged. */
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

enum { NP = 4, DM = 16 };

/* scripts/get-model's record of a download: source and a manifest line per file with its
 * current size and mtime, as `stat -c '%s %.9Y'` prints them. */
static void fake_get_model(const char *dir, const char *repo, const char *commit) {
    char *state = tu_path(dir, ".get-model");
    mkdir(state, 0755);
    char *source = tu_path(state, "source"), *manifest = tu_path(state, "manifest.tsv");
    char text[512];
    int n = snprintf(text, sizeof text, "repository %s\nrevision main\ncommit %s\nendpoint %s\n",
                     repo, commit, "http://127.0.0.1:9");
    tu_write_file(source, text, (size_t)n);
    FILE *f = fopen(manifest, "w");
    const char *files[] = {"config.json", "model.safetensors"};
    for (int i = 0; i < 2; i++) {
        char *p = tu_path(dir, files[i]);
        struct stat st;
        ck_assert_int_eq(stat(p, &st), 0);
        fprintf(f, "%s\tsha256\t%064d\t%lld\t%lld.%09ld\n", files[i], 0, (long long)st.st_size,
                (long long)st.st_mtim.tv_sec, (long)st.st_mtim.tv_nsec);
        free(p);
    }
    fclose(f);
    free(state), free(source), free(manifest);
}

static char *base_of(const char *dir, char **revision, const char **origin) {
    sp_model m;
    tu_model_load_ok(&m, dir);
    sp_error err = {0};
    char *name = sp_peft_base_model(&m, revision, origin, &err);
    ck_assert_msg(name != NULL, "%s", err.msg);
    sp_model_free(&m);
    return name;
}

START_TEST(base_model_defaults_to_a_loadable_name) {
    char *model = tu_tiny_gpt2("model", 1);
    char *real = realpath(model, NULL), *rev = (char *)1;
    const char *origin = NULL;
    /* A relative --model: recorded absolute. */
    ck_assert_int_eq(chdir(tu_dir), 0);
    char *name = base_of("model", &rev, &origin);
    ck_assert_str_eq(name, real);
    ck_assert_ptr_null(rev);
    ck_assert_str_eq(origin, "the model directory's absolute path");
    free(name);
    /* config.json's _name_or_path names the model before fine-tuning: not used. */
    char *cfg_path = tu_path(model, "config.json");
    tu_json_edit(cfg_path, "_name_or_path", json_string("gpt2"));
    name = base_of(model, &rev, &origin);
    ck_assert_str_eq(name, real);
    free(name);
    /* Downloaded by get-model and unchanged: the repository, at its commit. */
    const char *commit = "0123456789abcdef0123456789abcdef01234567";
    fake_get_model(model, "acme/tiny-gpt2", commit);
    name = base_of(model, &rev, &origin);
    ck_assert_str_eq(name, "acme/tiny-gpt2");
    ck_assert_str_eq(rev, commit);
    ck_assert_str_eq(origin, "the Hugging Face repository scripts/get-model downloaded it from");
    free(name), free(rev);
    /* ...and the export records it. */
    sp_model m;
    tu_model_load_ok(&m, model);
    float prompt[NP * DM] = {0};
    char *out = tu_path(tu_dir, "out");
    sp_error err = {0};
    ck_assert_msg(sp_peft_export(out, prompt, NP, &m, NULL, "random", NULL, &err) == 0, "%s",
                  err.msg);
    char *out_cfg = tu_path(out, "adapter_config.json");
    json_t *cfg = tu_json_load(out_cfg);
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "base_model_name_or_path")),
                     "acme/tiny-gpt2");
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "tokenizer_name_or_path")),
                     "acme/tiny-gpt2");
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "revision")), commit);
    json_decref(cfg);
    /* An explicit --base-model is recorded as given, without a revision. */
    ck_assert_msg(sp_peft_export(out, prompt, NP, &m, "my/base", "random", NULL, &err) == 0, "%s",
                  err.msg);
    cfg = tu_json_load(out_cfg);
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "base_model_name_or_path")), "my/base");
    ck_assert(json_is_null(json_object_get(cfg, "revision")));
    json_decref(cfg);
    sp_model_free(&m);
    /* Weights changed since the download (here: only their mtime): the path again. */
    char *weights = tu_path(model, "model.safetensors");
    struct timespec times[2] = {{0, UTIME_OMIT}, {1000000000, 5}};
    ck_assert_int_eq(utimensat(AT_FDCWD, weights, times, 0), 0);
    name = base_of(model, &rev, &origin);
    ck_assert_str_eq(name, real);
    ck_assert_ptr_null(rev);
    free(name);
    /* A repository name that is not one. */
    fake_get_model(model, "../../etc", commit);
    name = base_of(model, &rev, &origin);
    ck_assert_str_eq(name, real);
    free(name);
    free(model), free(real), free(cfg_path), free(out), free(out_cfg), free(weights);
}
END_TEST

int main(void) {
    const TTest *tests[] = {base_model_defaults_to_a_loadable_name, NULL};
    return tu_main("base_model", tests, NULL, NULL);
}
