/* Reading PEFT prompt-tuning adapters (src/train/peft_read.c): adapter_config.json checked
 * against the method, task, submodules and the tensor's shape (what PEFT fills in accepted),
 * a missing or malformed config named, extra tensors, wrong shapes and non-finite values (also
 * after F16 conversion) refused. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

enum { NP = 4, DM = 16 };

START_TEST(adapters_are_validated_against_their_config) {
    char *model = tu_tiny_gpt2("model", 1);
    char *good = tu_write_adapter("good", model, NP, "random", NULL);
    struct {
        const char *name, *key;
        json_t *value;
        const char *want;
    } cases[] = {
        {"lora", "peft_type", json_string("LORA"),
         "peft_type is \"LORA\": softprompt reads PROMPT_TUNING and PREFIX_TUNING adapters only "
         "(that method changes the model's weights"},
        {"ptuning", "peft_type", json_string("P_TUNING"),
         "whose weights PEFT does not save: the file holds only that encoder's output"},
        {"prefix", "peft_type", json_string("PREFIX_TUNING"),
         "is [4, 16] but adapter_config.json says num_virtual_tokens 4, token_dim 16 "
         "(PREFIX_TUNING: rows of num_layers x 2 x token_dim)"},
        {"ctl", "peft_type", json_string("P\033[31mX"), "peft_type is \"P?[31mX\""},
        {"notype", "peft_type", NULL, "missing \"peft_type\""},
        {"seqcls", "task_type", json_string("SEQ_CLS"),
         "task_type is \"SEQ_CLS\": softprompt runs causal language models (CAUSAL_LM)"},
        {"two", "num_transformer_submodules", json_integer(2),
         "num_transformer_submodules is 2: the adapter holds a prompt for each of 2 stacks"},
        {"rows", "num_virtual_tokens", json_integer(NP + 1),
         "tensor \"prompt_embeddings\" is [4, 16] but adapter_config.json says "
         "num_virtual_tokens 5, token_dim 16"},
        {"width", "token_dim", json_integer(DM * 2), "num_virtual_tokens 4, token_dim 32"},
        {"word", "num_virtual_tokens", json_string("four"),
         "\"num_virtual_tokens\" must be an integer >= 1"},
        {"zero", "token_dim", json_integer(0), "\"token_dim\" must be an integer >= 1"},
        {"nonum", "num_virtual_tokens", NULL, "missing \"num_virtual_tokens\""},
        {"base", "base_model_name_or_path", json_integer(3),
         "\"base_model_name_or_path\" must be a string or null"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *dir = tu_copy_adapter(good, cases[i].name);
        tu_edit_adapter_config(dir, cases[i].key, cases[i].value);
        tu_prompt_load_fails(dir, dir, cases[i].want); /* names its config or its tensor file */
        free(dir);
    }
    /* What PEFT accepts: null token_dim, submodules and task_type (PEFT fills them in). */
    char *nulls = tu_copy_adapter(good, "nulls");
    tu_edit_adapter_config(nulls, "token_dim", json_null());
    tu_edit_adapter_config(nulls, "num_transformer_submodules", json_null());
    tu_edit_adapter_config(nulls, "task_type", json_null());
    sp_prompt_file pf = tu_prompt_load_ok(nulls, NP, DM);
    sp_prompt_file_free(&pf);

    /* Not JSON; not an object; no config at all. */
    char *bad = tu_copy_adapter(good, "badjson");
    char *cfg = tu_path(bad, "adapter_config.json");
    tu_write_file(cfg, "{\"peft_type\": ", strlen("{\"peft_type\": "));
    tu_prompt_load_fails(bad, cfg, "invalid JSON");
    tu_write_file(cfg, "[1]", 3);
    tu_prompt_load_fails(bad, cfg, "not a JSON object");
    ck_assert_int_eq(unlink(cfg), 0);
    char *st = tu_path(bad, "adapter_model.safetensors");
    tu_prompt_load_fails(
        st, cfg, "missing: PEFT needs adapter_config.json beside adapter_model.safetensors");
    free(model), free(good), free(nulls), free(bad), free(cfg), free(st);
}
END_TEST

START_TEST(adapter_tensors_are_checked) {
    char *model = tu_tiny_gpt2("model", 1);
    char *good = tu_write_adapter("good", model, NP, "random", NULL);
    float p[NP * DM], head[2 * DM];
    tu_fill_prompt(p, NP * DM, 0.1f);
    tu_fill_prompt(head, 2 * DM, 0.1f);
    sp_st_out t[4] = {{.name = "prompt_embeddings", .dtype = SP_DTYPE_F32, .ndim = 2, .data = p},
                      {.name = "score.weight", .dtype = SP_DTYPE_F32, .ndim = 2, .data = head},
                      {.name = "x1", .dtype = SP_DTYPE_F32, .ndim = 1, .data = head},
                      {.name = "x2", .dtype = SP_DTYPE_F32, .ndim = 1, .data = head}};
    t[0].shape[0] = NP, t[0].shape[1] = DM;
    t[1].shape[0] = 2, t[1].shape[1] = DM;
    t[2].shape[0] = t[3].shape[0] = 3;
    char *extra = tu_copy_adapter(good, "extra");
    char *extra_st = tu_path(extra, "adapter_model.safetensors");
    tu_write_adapter_tensors(extra, t, 2);
    tu_prompt_load_fails(
        extra, extra_st,
        "unexpected tensor \"score.weight\" beside \"prompt_embeddings\": a prompt-tuning "
        "adapter for a causal LM holds that tensor only");
    tu_write_adapter_tensors(extra, t, 4);
    tu_prompt_load_fails(extra, extra_st,
                         "unexpected tensors \"score.weight\", \"x1\", \"x2\" beside");
    tu_write_adapter_tensors(extra, t + 1, 1);
    tu_prompt_load_fails(extra, extra_st, "unexpected tensor \"score.weight\"");
    sp_st_out none = t[2];
    none.name = "prompt_embeddings"; /* 1-D */
    tu_write_adapter_tensors(extra, &none, 1);
    tu_prompt_load_fails(extra, extra_st,
                         "tensor \"prompt_embeddings\" is 1-D F32; expected 2-D floats");

    /* Non-finite values, as float32 and after conversion from F16. */
    p[1 * DM + 3] = NAN;
    tu_write_adapter_tensors(extra, t, 1);
    tu_prompt_load_fails(extra, extra_st, "tensor \"prompt_embeddings\" element [1, 3] is nan");
    uint16_t h[NP * DM] = {0};
    h[NP * DM - 1] = sp_f32_to_f16(-INFINITY);
    sp_st_out half = {.name = "prompt_embeddings", .dtype = SP_DTYPE_F16, .ndim = 2, .data = h};
    half.shape[0] = NP, half.shape[1] = DM;
    tu_write_adapter_tensors(extra, &half, 1);
    tu_prompt_load_fails(extra, extra_st, "element [3, 15] is -inf");
    free(model), free(good), free(extra), free(extra_st);
}
END_TEST

/* T5's SEQ_2_SEQ_LM adapters as PEFT writes them: num_transformer_submodules 2 (or null, PEFT's
 * default for the task) and [num_virtual_tokens x 2, d], of which the first num_virtual_tokens
 * rows (the encoder's, the only ones PEFT's prompt tuning reads) are the prompt; a tensor of one
 * stack is refused, and a prefix-tuning adapter of the task must hold P prefix rows. */
START_TEST(seq2seq_adapters_read_the_encoder_rows) {
    char *model = tu_tiny_gpt2("model", 1);
    char *good = tu_write_adapter("good", model, NP, "random", NULL);
    float rows[2 * NP * DM];
    for (int i = 0; i < 2 * NP * DM; i++) rows[i] = i < NP * DM ? 0.01f * (float)i : 99.0f;
    sp_st_out t = {.name = "prompt_embeddings", .dtype = SP_DTYPE_F32, .ndim = 2, .data = rows};
    t.shape[0] = 2 * NP, t.shape[1] = DM;
    for (int null_sub = 0; null_sub < 2; null_sub++) {
        char *dir = tu_copy_adapter(good, null_sub ? "s2s-null" : "s2s");
        tu_edit_adapter_config(dir, "task_type", json_string("SEQ_2_SEQ_LM"));
        tu_edit_adapter_config(dir, "num_transformer_submodules",
                               null_sub ? json_null() : json_integer(2));
        tu_write_adapter_tensors(dir, &t, 1);
        sp_prompt_file pf = tu_prompt_load_ok(dir, NP, DM);
        for (int i = 0; i < NP * DM; i++) ck_assert_float_eq(pf.prompt[i], rows[i]);
        sp_prompt_file_free(&pf);
        free(dir);
    }
    char *one = tu_copy_adapter(good, "s2s-one-stack");
    tu_edit_adapter_config(one, "task_type", json_string("SEQ_2_SEQ_LM"));
    tu_edit_adapter_config(one, "num_transformer_submodules", json_null());
    tu_prompt_load_fails(one, one,
                         "is [4, 16] but adapter_config.json says num_virtual_tokens 4 x "
                         "num_transformer_submodules 2, token_dim 16");
    /* prefix tuning for the task: P rows of num_layers x 2 x token_dim (the decoder's
     * self-attention prefix), not a prompt's [P x 2, d] */
    tu_edit_adapter_config(one, "peft_type", json_string("PREFIX_TUNING"));
    tu_prompt_load_fails(one, one, "(PREFIX_TUNING: rows of num_layers x 2 x token_dim)");
    free(model), free(good), free(one);
}
END_TEST

int main(void) {
    const TTest *tests[] = {adapters_are_validated_against_their_config,
                            adapter_tensors_are_checked, seq2seq_adapters_read_the_encoder_rows,
                            NULL};
    return tu_main("peft_read", tests, NULL, NULL);
}
