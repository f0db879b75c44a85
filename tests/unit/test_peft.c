/* Export of a prompt as a Hugging Face PEFT prompt-tuning adapter (src/train/peft.c): the
 * safetensors tensor and adapter_config.json PEFT loads (init kinds, base model, nested
 * directories created, no temporary left, a directory that cannot be made named), and every key
 * written is a PromptTuningConfig field in every PEFT release since 0.6 (the recorded field
 * lists, tests/fixtures/peft). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

enum { NP = 4, DM = 16 };

/* The model of the export test: a tiny GPT-2 with random norms and biases. */
static char *make_model(const char *name, uint64_t seed) {
    sp_init_options o = tu_gpt2_options(2, DM, 2, 64, 211, 24, seed);
    o.random_norms = 1;
    return tu_write_model(name, &o);
}

static int version_at_least(const char *v, int major, int minor) {
    int a = 0, b = 0;
    ck_assert_int_eq(sscanf(v, "%d.%d", &a, &b), 2);
    return a > major || (a == major && b >= minor);
}

static int has_string(json_t *array, const char *s) {
    for (size_t i = 0; i < json_array_size(array); i++) {
        json_t *v = json_array_get(array, i);
        if (json_is_string(v) && strcmp(json_string_value(v), s) == 0) return 1;
    }
    return 0;
}

START_TEST(peft_export_writes_a_loadable_adapter) {
    char *mdir = make_model("m", 3);
    sp_model m;
    sp_error err = {0};
    ck_assert_msg(sp_model_load(&m, mdir, &err) == 0, "%s", err.msg);
    float prompt[NP * 16];
    for (int i = 0; i < NP * 16; i++) prompt[i] = (float)i / 7.0f;
    char *out = tu_path(tu_dir, "export/nested/adapter");
    ck_assert_msg(
        sp_peft_export(out, prompt, NP, &m, "openai-community/gpt2", "vocab", NULL, &err) == 0,
        "%s", err.msg);

    char *st = tu_path(out, "adapter_model.safetensors");
    sp_st_file f;
    ck_assert_msg(sp_st_open(&f, st, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(f.n_tensors, 1);
    const sp_st_tensor *t = sp_st_find(&f, "prompt_embeddings");
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->dtype, SP_DTYPE_F32);
    ck_assert_int_eq(t->ndim, 2);
    ck_assert_int_eq(t->shape[0], NP);
    ck_assert_int_eq(t->shape[1], 16);
    ck_assert(memcmp(t->data, prompt, sizeof prompt) == 0);
    ck_assert_str_eq(sp_st_metadata(&f, "format"), "pt");
    sp_st_close(&f);

    char *cfg_path = tu_path(out, "adapter_config.json");
    json_error_t je;
    json_t *cfg = json_load_file(cfg_path, JSON_REJECT_DUPLICATES, &je);
    ck_assert_msg(cfg != NULL, "%s", je.text);
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "peft_type")), "PROMPT_TUNING");
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "task_type")), "CAUSAL_LM");
    ck_assert_int_eq(json_integer_value(json_object_get(cfg, "num_virtual_tokens")), NP);
    ck_assert_int_eq(json_integer_value(json_object_get(cfg, "token_dim")), 16);
    ck_assert_int_eq(json_integer_value(json_object_get(cfg, "num_transformer_submodules")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(cfg, "num_attention_heads")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(cfg, "num_layers")), 2);
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "prompt_tuning_init")), "SAMPLE_VOCAB");
    ck_assert(json_is_null(json_object_get(cfg, "prompt_tuning_init_text")));
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "base_model_name_or_path")),
                     "openai-community/gpt2");
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "tokenizer_name_or_path")),
                     "openai-community/gpt2");
    ck_assert(json_is_true(json_object_get(cfg, "inference_mode")));
    const char *nulls[] = {"revision", "auto_mapping"};
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(cfg, nulls[i]);
        ck_assert_msg(v && json_is_null(v), "%s should be null", nulls[i]);
    }
    /* PEFT <= 0.13 raises TypeError on it (test_prompt_file checks every key). */
    ck_assert_ptr_null(json_object_get(cfg, "modules_to_save"));
    json_decref(cfg);

    /* Text init: TEXT only with its text (PEFT refuses TEXT without prompt_tuning_init_text). */
    ck_assert_int_eq(sp_peft_export(out, prompt, NP, &m, "gpt2", "vocab-top", NULL, &err), 0);
    cfg = json_load_file(cfg_path, 0, &je);
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "prompt_tuning_init")), "SAMPLE_VOCAB");
    json_decref(cfg);
    ck_assert_int_eq(sp_peft_export(out, prompt, NP, &m, "gpt2", "labels", NULL, &err), 0);
    cfg = json_load_file(cfg_path, 0, &je);
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "prompt_tuning_init")), "RANDOM");
    json_decref(cfg);
    ck_assert_int_eq(sp_peft_export(out, prompt, NP, &m, NULL, "text", NULL, &err), 0);
    cfg = json_load_file(cfg_path, 0, &je);
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "prompt_tuning_init")), "RANDOM");
    char *real = realpath(mdir, NULL); /* the default when no base model is named */
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "base_model_name_or_path")), real);
    free(real);
    json_decref(cfg);
    ck_assert_int_eq(sp_peft_export(out, prompt, NP, &m, "gpt2", "text", "Classify:", &err), 0);
    cfg = json_load_file(cfg_path, 0, &je);
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "prompt_tuning_init")), "TEXT");
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "prompt_tuning_init_text")),
                     "Classify:");
    json_decref(cfg);
    ck_assert_int_eq(tu_count_entries(out, ".tmp."), 0);

    /* A directory that cannot be created. */
    char *file = tu_path(tu_dir, "file");
    tu_write_file(file, "x", 1);
    char *under = tu_path(file, "adapter");
    ck_assert_int_eq(sp_peft_export(under, prompt, NP, &m, NULL, NULL, NULL, &err), -1);
    ck_assert_msg(strstr(err.msg, under) != NULL, "%s", err.msg);
    sp_model_free(&m);
    free(mdir), free(out), free(st), free(cfg_path), free(file), free(under);
}
END_TEST

START_TEST(exported_keys_exist_in_every_peft_since_0_6) {
    json_t *fx = tu_json_load(SP_FIXTURES_DIR "/peft/prompt_tuning_config_fields.json");
    json_t *versions = json_object_get(fx, "versions");
    ck_assert_int_ge(json_object_size(versions), 20);
    ck_assert_ptr_nonnull(json_object_get(versions, "0.6.0"));
    /* The fixture says what broke PEFT <= 0.13: modules_to_save is a 0.17 field. */
    ck_assert(!has_string(json_object_get(json_object_get(versions, "0.13.2"), "fields"),
                          "modules_to_save"));
    char *model = tu_tiny_gpt2("model", 1);
    const char *inits[][2] = {
        {"random", NULL}, {"vocab", NULL}, {"text", "Classify:"}, {"labels", NULL}};
    int checked = 0;
    for (int k = 0; k < 4; k++) {
        char name[32];
        snprintf(name, sizeof name, "ad%d", k);
        char *dir = tu_write_adapter(name, model, NP, inits[k][0], inits[k][1]);
        char *cfg_path = tu_path(dir, "adapter_config.json");
        json_t *cfg = tu_json_load(cfg_path);
        const char *key, *version;
        json_t *v, *entry;
        json_object_foreach(cfg, key, v) {
            json_object_foreach(versions, version, entry) {
                if (!version_at_least(version, 0, 6)) continue;
                ck_assert_msg(has_string(json_object_get(entry, "fields"), key),
                              "adapter_config.json key \"%s\" is not a PromptTuningConfig field "
                              "in PEFT %s (PeftConfig.from_pretrained would %s)",
                              key, version,
                              version_at_least(version, 0, 14) ? "warn" : "raise TypeError");
                checked++;
            }
        }
        /* The init values are PEFT's: TEXT and RANDOM everywhere, SAMPLE_VOCAB in the newest
         * (older PEFT compares the value with TEXT only). */
        const char *init = json_string_value(json_object_get(cfg, "prompt_tuning_init"));
        json_object_foreach(versions, version, entry) {
            json_t *values = json_object_get(entry, "prompt_tuning_init");
            ck_assert(has_string(values, "TEXT") && has_string(values, "RANDOM"));
            if (version_at_least(version, 0, 18))
                ck_assert_msg(has_string(values, init), "%s: %s", version, init);
        }
        json_decref(cfg);
        free(dir), free(cfg_path);
    }
    ck_assert_int_gt(checked, 4 * 13 * 20);
    json_decref(fx);
    free(model);
}
END_TEST

int main(void) {
    const TTest *tests[] = {peft_export_writes_a_loadable_adapter,
                            exported_keys_exist_in_every_peft_since_0_6, NULL};
    return tu_main("peft", tests, NULL, NULL);
}
